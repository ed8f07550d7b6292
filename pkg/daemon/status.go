package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/state"
	"github.com/mqagent/mqagent/pkg/transport"
)

// StatusFile is the local status snapshot in the data directory that
// `mqagent status` reads: the agent writes it every few seconds.
const StatusFile = "status.json"

// LocalStatus is what `mqagent status` shows.
type LocalStatus struct {
	Version    string    `json:"version"`
	PID        int       `json:"pid"`
	Host       string    `json:"host"`
	State      string    `json:"state"` // running, stopped
	Connected  bool      `json:"connected"`
	Broker     string    `json:"broker,omitempty"`
	Session    uint64    `json:"session"`
	Reconnects uint64    `json:"reconnects"`
	LastError  string    `json:"last_error,omitempty"`
	Running    int       `json:"running"`
	Queued     int       `json:"queued"`
	Outbox     int       `json:"outbox"`
	Journal    int       `json:"journal"`
	StartedAt  time.Time `json:"started_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

type statusWriter struct {
	path    string
	base    LocalStatus
	client  *transport.Client
	disp    *dispatch.Dispatcher
	store   *state.Store
	every   time.Duration
	lastErr error
}

func (w *statusWriter) snapshot(st string) LocalStatus {
	s := w.base
	c := w.client.State()
	d := w.disp.Stats()
	ss := w.store.Stats()
	s.State, s.Connected, s.Broker, s.Session, s.Reconnects, s.LastError = st, c.Connected, c.Broker, c.Session, c.Reconnects, c.LastError
	s.Running, s.Queued, s.Outbox, s.Journal = d.Running, d.Queued, ss.OutboxMessages, ss.Journal
	s.UpdatedAt = time.Now().UTC()
	return s
}

// write replaces the status file atomically.
func (w *statusWriter) write(st string) {
	b, _ := json.MarshalIndent(w.snapshot(st), "", "  ")
	tmp := w.path + ".tmp"
	err := os.WriteFile(tmp, append(b, '\n'), 0o600)
	if err == nil {
		err = os.Rename(tmp, w.path)
	}
	w.lastErr = err
}

func (w *statusWriter) run(ctx context.Context) {
	t := time.NewTicker(w.every)
	defer t.Stop()
	w.write("running")
	conn := w.client.Connected() // closed once connected: write at once then
	for {
		select {
		case <-ctx.Done():
			return
		case <-conn:
			w.write("running")
			conn = nil
		case <-t.C:
			w.write("running")
			if conn == nil && !w.client.State().Connected {
				conn = w.client.Connected()
			}
		}
	}
}

// ReadStatus reads the status file of a data directory.
func ReadStatus(dataDir string) (LocalStatus, error) {
	var s LocalStatus
	b, err := os.ReadFile(filepath.Join(dataDir, StatusFile))
	if err != nil {
		return s, fmt.Errorf("no status from an agent in %s: %w", dataDir, err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", filepath.Join(dataDir, StatusFile), err)
	}
	return s, nil
}
