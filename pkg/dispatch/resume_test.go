package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// detachHandler ends every command Detached (its result comes later, like
// agent.update's) and resumes the ids in owned after a restart.
type detachHandler struct{ owned map[string]bool }

func (detachHandler) Decode(json.RawMessage) (any, error) { return nil, nil }
func (detachHandler) Run(context.Context, *Call) Outcome  { return Outcome{Detached: true} }
func (h detachHandler) Resume(id string) bool             { return h.owned[id] }
func withDetach(owned ...string) func(*Options) {
	m := map[string]bool{}
	for _, id := range owned {
		m[id] = true
	}
	return func(o *Options) { o.Handlers["detach"] = detachHandler{owned: m} }
}

func TestDetachedCommandOutlivesTheProcess(t *testing.T) {
	f := newFixture(t, withDetach("d1"))
	for _, id := range []string{"d1", "d2"} {
		f.submit(topics.HostCmd(host), cmdJSON(id, "detach", "", nil))
	}
	f.waitAcks(2)
	waitRunning := func(id string) {
		t.Helper()
		for range 500 {
			if e, ok, _ := f.store.Get(id); ok && e.State == protocol.StateRunning && f.d.Stats().Running == 0 {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("%s is not left running", id)
	}
	waitRunning("d1")
	waitRunning("d2")
	if fs := finals(f.results("d1")); len(fs) != 0 {
		t.Fatalf("a detached command got a final result: %+v", fs)
	}

	// After a restart the owner keeps d1; d2, which nobody owns, ends
	// interrupted as usual.
	f.restart(withDetach("d1"))
	if r := f.waitFinal("d2"); r.State != protocol.StateFailed || r.Error != protocol.ErrInterrupted {
		t.Fatalf("d2: %s %q", r.State, r.Error)
	}
	if e, _, _ := f.store.Get("d1"); e.State != protocol.StateRunning {
		t.Fatalf("d1 after the restart: %s, want running", e.State)
	}

	if err := f.d.Complete("d1", Outcome{Data: map[string]string{"from": "1.0.0", "to": "2.0.0"}}); err != nil {
		t.Fatal(err)
	}
	r := f.waitFinal("d1")
	if r.State != protocol.StateSucceeded || string(r.Data) != `{"from":"1.0.0","to":"2.0.0"}` || r.Kind != "detach" || r.StartedAt == nil {
		t.Fatalf("d1: %+v", r)
	}
	if err := f.d.Complete("d1", Outcome{Error: "late"}); err != nil {
		t.Fatalf("completing a final command again: %v", err)
	}
	if fs := finals(f.results("d1")); len(fs) != 1 {
		t.Fatalf("d1 has %d final results", len(fs))
	}
	finished := 0
	for _, a := range f.audits() {
		if a.ID == "d1" && a.Event == protocol.EventFinished {
			finished++
		}
	}
	if finished != 1 {
		t.Fatalf("d1 has %d finished audit records", finished)
	}
	if err := f.d.Complete("nope", Outcome{}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Complete of an unknown id: %v", err)
	}
	if err := f.d.Complete("d3", Outcome{Error: "x"}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Complete of an unknown id: %v", err)
	}
}
