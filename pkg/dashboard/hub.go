package dashboard

import (
	"encoding/json"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// Row is one host as the overview table shows it. Percentages are 0–100;
// a nil one is unknown (no metrics sample yet, or the host is offline).
// Times are Unix milliseconds (0: never).
type Row struct {
	ID       string   `json:"id"`                 // host id
	State    string   `json:"state"`              // online, offline, "" (unknown)
	Reason   string   `json:"reason,omitempty"`   // offline reason
	Version  string   `json:"version,omitempty"`  // agent version
	OS       string   `json:"os,omitempty"`       // GOOS
	Arch     string   `json:"arch,omitempty"`     // GOARCH
	Groups   []string `json:"groups,omitempty"`   // groups of the host
	Hostname string   `json:"hostname,omitempty"` // from the inventory
	Platform string   `json:"platform,omitempty"` // platform and its version, from the inventory
	CPU      *float64 `json:"cpu,omitempty"`      // busy CPU percent
	Mem      *float64 `json:"mem,omitempty"`      // memory used percent
	// Disk is the usage of the fullest filesystem, DiskMount its mount.
	Disk      *float64 `json:"disk,omitempty"`
	DiskMount string   `json:"disk_mount,omitempty"` // mount of the fullest filesystem
	Load1     *float64 `json:"load1,omitempty"`      // 1-minute load average
	LastSeen  int64    `json:"seen,omitempty"`       // latest ts of anything the host published
	MetricsAt int64    `json:"metrics_at,omitempty"` // ts of the sample the percentages come from
}

// Stats are the fleet totals sent with every snapshot and delta.
type Stats struct {
	Hosts   int `json:"hosts"`   // every host known
	Online  int `json:"online"`  // hosts whose status is online
	Offline int `json:"offline"` // hosts whose status is offline
	Unknown int `json:"unknown"` // hosts without a status yet
	// Versions and OSes count the hosts per agent version and per OS.
	Versions map[string]int `json:"versions"`
	OSes     map[string]int `json:"oses"` // hosts per OS
	// Messages is how many telemetry messages the view received;
	// LastMessage when the last one arrived (Unix ms).
	Messages    uint64 `json:"messages"`               // telemetry messages received
	LastMessage int64  `json:"last_message,omitempty"` // when the last one arrived (Unix ms)
}

// Snapshot is the first message of the overview stream: every host.
type Snapshot struct {
	Seq   uint64 `json:"seq"`   // message number (deltas follow with higher ones)
	Now   int64  `json:"now"`   // the server's clock, Unix ms
	Hosts []Row  `json:"hosts"` // every host, by id
	Stats Stats  `json:"stats"` // the totals
}

// Delta is a later message: the hosts added or changed since the previous
// one, and the ones removed.
type Delta struct {
	Seq    uint64   `json:"seq"`              // message number
	Now    int64    `json:"now"`              // the server's clock, Unix ms
	Upsert []Row    `json:"upsert,omitempty"` // hosts added or changed
	Remove []string `json:"remove,omitempty"` // ids of hosts gone
	Stats  Stats    `json:"stats"`            // the totals
}

// rowOf builds the table row of a host.
func rowOf(h *fleet.Host) Row {
	r := Row{ID: h.ID, State: h.State, Reason: h.Reason, Version: h.Version, OS: h.OS, Arch: h.Arch,
		Groups: h.Groups, Hostname: h.Hostname, LastSeen: ms(h.LastSeen)}
	if h.Platform != "" {
		r.Platform = h.Platform
		if h.PlatformVersion != "" {
			r.Platform += " " + h.PlatformVersion
		}
	}
	if m := h.Metrics; m != nil && h.State != protocol.StatusOffline {
		r.MetricsAt = ms(h.MetricsAt)
		if m.CPU != nil {
			r.CPU = ptr(round2(m.CPU.Percent))
		}
		if m.Mem != nil {
			r.Mem = ptr(round2(m.Mem.Percent))
		}
		if d, mount, ok := fullest(m.Disks); ok {
			r.Disk, r.DiskMount = ptr(round2(d)), mount
		}
		if m.Load != nil {
			r.Load1 = ptr(round2(m.Load.L1))
		}
	}
	return r
}

// fullest is the highest filesystem usage of a sample.
func fullest(disks []protocol.DiskSample) (float64, string, bool) {
	best, mount, ok := 0.0, "", false
	for _, d := range disks {
		if !ok || d.Percent > best {
			best, mount, ok = d.Percent, d.Mount, true
		}
	}
	return best, mount, ok
}

func ptr(f float64) *float64 { return &f }

func round2(f float64) float64 {
	if f != f { // NaN cannot be sent as JSON
		return 0
	}
	return float64(int64(f*100+0.5)) / 100
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// hub keeps the rows of every host and the streams of the browsers that
// follow them. Changes mark rows dirty; flush sends one Delta with the
// dirty rows to every stream.
type hub struct {
	now     func() time.Time
	history *history

	mu      sync.Mutex
	rows    map[string]Row
	dirty   map[string]bool
	seq     uint64
	stats   Stats
	vs      fleet.Stats // the view's counters at the last flush
	clients map[*stream]struct{}
	// versions count the changes of each host (the host page's streams
	// poll them).
	versions map[string]uint64
}

// stream is one browser following the overview. Messages are complete
// SSE events; when the browser falls behind by more than the channel's
// capacity the stream is ended (the browser reconnects and gets a fresh
// snapshot) rather than hold the hub.
type stream struct {
	ch   chan []byte
	done chan struct{}
	once sync.Once
}

func (s *stream) close() { s.once.Do(func() { close(s.done) }) }

func newHub(historyLen int, now func() time.Time) *hub {
	return &hub{now: now, history: newHistory(historyLen), rows: map[string]Row{}, dirty: map[string]bool{},
		clients: map[*stream]struct{}{}, versions: map[string]uint64{}}
}

// apply takes one change of the fleet view.
func (h *hub) apply(c fleet.Change) {
	if c.Kind != fleet.Removed && c.Parts&fleet.PartMetrics != 0 && c.Host.Metrics != nil {
		h.history.add(c.ID, c.Host.Metrics)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.versions[c.ID]++
	if c.Kind == fleet.Removed {
		delete(h.rows, c.ID)
		delete(h.versions, c.ID)
		h.history.remove(c.ID)
	} else {
		h.rows[c.ID] = rowOf(&c.Host)
	}
	h.dirty[c.ID] = true
}

// version is the change counter of one host.
func (h *hub) version(id string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.versions[id]
}

// statsLocked recomputes the totals (a pass over the rows; cheap next to
// encoding them).
func (h *hub) statsLocked(vs fleet.Stats) Stats {
	s := Stats{Hosts: len(h.rows), Versions: map[string]int{}, OSes: map[string]int{}, Messages: vs.Messages, LastMessage: ms(vs.LastApply)}
	for _, r := range h.rows {
		switch r.State {
		case protocol.StatusOnline:
			s.Online++
		case protocol.StatusOffline:
			s.Offline++
		default:
			s.Unknown++
		}
		if r.Version != "" {
			s.Versions[r.Version]++
		}
		if r.OS != "" {
			s.OSes[r.OS]++
		}
	}
	return s
}

// flush sends the dirty rows to every stream; with nothing dirty, only
// when the totals changed (the message count moves with every sample).
func (h *hub) flush(vs fleet.Stats) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.vs = vs
	stats := h.statsLocked(vs)
	if len(h.dirty) == 0 && stats.Messages == h.stats.Messages {
		return
	}
	h.stats = stats
	h.seq++
	if len(h.clients) == 0 {
		clear(h.dirty)
		return
	}
	d := Delta{Seq: h.seq, Now: h.now().UnixMilli(), Stats: stats}
	ids := slices.Sorted(maps.Keys(h.dirty))
	for _, id := range ids {
		if r, ok := h.rows[id]; ok {
			d.Upsert = append(d.Upsert, r)
		} else {
			d.Remove = append(d.Remove, id)
		}
	}
	clear(h.dirty)
	msg := sseEvent("delta", d)
	for c := range h.clients {
		select {
		case c.ch <- msg:
		default:
			// Too far behind: end it; the browser reconnects.
			delete(h.clients, c)
			c.close()
		}
	}
}

// subscribe registers a stream and returns it with the snapshot to send
// first; deltas after it follow on the stream's channel.
func (h *hub) subscribe(buf int) (*stream, []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &stream{ch: make(chan []byte, buf), done: make(chan struct{})}
	h.clients[s] = struct{}{}
	return s, sseEvent("snapshot", h.snapshotLocked())
}

// snapshot returns every row (the /api/overview document).
func (h *hub) snapshot() Snapshot {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.snapshotLocked()
}

func (h *hub) snapshotLocked() Snapshot {
	// Sorting the ids moves strings, not rows.
	ids := slices.Sorted(maps.Keys(h.rows))
	rows := make([]Row, len(ids))
	for i, id := range ids {
		rows[i] = h.rows[id]
	}
	return Snapshot{Seq: h.seq, Now: h.now().UnixMilli(), Hosts: rows, Stats: h.statsLocked(h.vs)}
}

func (h *hub) unsubscribe(s *stream) {
	h.mu.Lock()
	delete(h.clients, s)
	h.mu.Unlock()
	s.close()
}

// closeClients ends every stream (the server stops).
func (h *hub) closeClients() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		delete(h.clients, c)
		c.close()
	}
}

// sseEvent encodes one Server-Sent Event. JSON has no raw newline, so the
// data fits one line.
func sseEvent(name string, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{}`)
	}
	out := make([]byte, 0, len(b)+len(name)+16)
	out = append(out, "event: "...)
	out = append(out, name...)
	out = append(out, "\ndata: "...)
	out = append(out, b...)
	return append(out, "\n\n"...)
}
