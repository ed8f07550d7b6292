package dispatch_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/audit"
	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/security"
	"github.com/mqagent/mqagent/pkg/state"
	"github.com/mqagent/mqagent/pkg/transport"
)

// countHandler succeeds at once, counting its runs.
type countHandler struct{ runs atomic.Int32 }

func (*countHandler) Decode(json.RawMessage) (any, error) { return nil, nil }

func (h *countHandler) Run(context.Context, *dispatch.Call) dispatch.Outcome {
	h.runs.Add(1)
	return dispatch.Outcome{}
}

// TestDriveWithoutRun drives a dispatcher through Recover, Handle and
// RunQueued, as the swarm simulator does: a queued kind runs once, a
// redelivery is a duplicate, every handled message is acknowledged, and
// after Stop nothing is handled or run.
func TestDriveWithoutRun(t *testing.T) {
	dir := t.TempDir()
	store, err := state.Open(filepath.Join(dir, "state.db"), state.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	al, err := audit.Open(filepath.Join(dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = al.Close() })
	v, err := security.New(security.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	h := &countHandler{}
	topics := protocol.Topics{Prefix: "p"}
	d := dispatch.New(dispatch.Options{
		HostID: "h1", OS: "linux", Topics: topics, Verifier: v, Store: store, Audit: al,
		Handlers:   map[string]dispatch.Handler{"count": h},
		MaxPayload: 1 << 16, DefaultTTL: time.Hour, MaxClockSkew: time.Minute, DefaultTimeout: time.Minute,
		MaxTimeout: time.Hour, MaxConcurrent: 1, MaxQueue: 4, IntakeSize: 1,
	})
	if err := d.Recover(); err != nil {
		t.Fatal(err)
	}
	var acks atomic.Int32
	msg := func(id string) transport.Message {
		b, _ := json.Marshal(protocol.Command{V: protocol.Version, ID: id, Kind: "count", Target: "host:h1", IssuedAt: protocol.Now()})
		return transport.Message{Topic: topics.HostCmd("h1"), Payload: b, Ack: func() { acks.Add(1) }}
	}
	ctx := context.Background()
	d.Handle(msg("c1"))
	if e, ok, err := store.Get("c1"); err != nil || !ok || e.State != protocol.StateQueued {
		t.Fatalf("after Handle: entry %+v ok=%v err=%v, want queued", e, ok, err)
	}
	if n := d.RunQueued(ctx); n != 1 || h.runs.Load() != 1 {
		t.Fatalf("RunQueued ran %d (handler %d runs), want 1", n, h.runs.Load())
	}
	if e, _, _ := store.Get("c1"); e.State != protocol.StateSucceeded {
		t.Fatalf("after RunQueued: state %q, want succeeded", e.State)
	}
	d.Handle(msg("c1")) // redelivery
	if n := d.RunQueued(ctx); n != 0 || h.runs.Load() != 1 {
		t.Fatalf("redelivery ran again: RunQueued %d, runs %d", n, h.runs.Load())
	}
	if st := d.Stats(); st.Received != 2 || st.Duplicates != 1 || acks.Load() != 2 {
		t.Fatalf("stats %+v, acks %d; want 2 received, 1 duplicate, 2 acks", st, acks.Load())
	}
	d.Handle(msg("c2"))
	d.Stop()
	if n := d.RunQueued(ctx); n != 0 || h.runs.Load() != 1 {
		t.Fatalf("after Stop RunQueued ran %d", n)
	}
	d.Handle(msg("c3"))
	if acks.Load() != 3 {
		t.Fatalf("acks %d after Stop, want 3 (c3 left unacknowledged)", acks.Load())
	}
	if _, ok, _ := store.Get("c3"); ok {
		t.Fatal("c3 was journaled after Stop")
	}
	if e, _, _ := store.Get("c2"); e.State != protocol.StateQueued {
		t.Fatalf("c2 state %q after Stop, want queued (runs after a restart)", e.State)
	}
}
