package swarm_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/state"
	"github.com/mqagent/mqagent/test/swarm"
)

// journals are the two Journal implementations, with an outbox limit of
// max messages.
func journals(t *testing.T, max int) map[string]swarm.Journal {
	st, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{NoSync: true, OutboxMaxMessages: max})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return map[string]swarm.Journal{"memory": swarm.NewMemJournal(max), "bolt": st}
}

func msg(topic string, droppable bool) state.Message {
	return state.Message{Topic: topic, Payload: []byte(`{"x":1}`), QoS: 1, Droppable: droppable}
}

// TestJournalConformance runs the same operations on MemJournal and on the
// agent's state.Store and requires the same outcomes: the simulator's
// journal must keep the promises the pipeline relies on.
func TestJournalConformance(t *testing.T) {
	now := time.Now()
	keep := now.Add(time.Hour)
	for name, j := range journals(t, 4) {
		t.Run(name, func(t *testing.T) {
			var trace []string
			rec := func(format string, args ...any) { trace = append(trace, fmt.Sprintf(format, args...)) }
			errName := func(err error) string {
				for _, e := range []error{state.ErrNotFound, state.ErrAlreadyFinal, state.ErrOutboxFull} {
					if errors.Is(err, e) {
						return e.Error()
					}
				}
				if err != nil {
					return "other error"
				}
				return "ok"
			}

			s1, _ := j.NextSession()
			s2, _ := j.NextSession()
			if s1 != 1 || s2 != 2 {
				t.Fatalf("sessions %d, %d; want 1, 2", s1, s2)
			}
			e, admitted, err := j.Admit(state.Entry{ID: "a", Kind: "exec", Payload: []byte(`{}`), Received: now, KeepUntil: keep}, msg("t/1", false))
			if err != nil || !admitted || e.State != protocol.StateQueued {
				t.Fatalf("first Admit: %+v %v %v", e, admitted, err)
			}
			select {
			case <-j.Notify():
			default:
				t.Fatal("no Notify after a message was stored")
			}
			e, admitted, err = j.Admit(state.Entry{ID: "a", State: protocol.StateSucceeded, Received: now, KeepUntil: keep}, msg("t/dup", false))
			if err != nil || admitted || e.State != protocol.StateQueued {
				t.Fatalf("second Admit: %+v admitted=%v err=%v; want the stored queued entry", e, admitted, err)
			}
			rec("setrunning unknown: %s", errName(j.SetRunning("zz", nil)))
			rec("setrunning a: %s", errName(j.SetRunning("a", []byte(`{"pid":1}`), msg("t/2", true))))
			rec("finish a: %s", errName(j.Finish("a", protocol.StateSucceeded, []byte(`{"r":1}`), msg("t/3", false))))
			rec("finish a again: %s", errName(j.Finish("a", protocol.StateFailed, nil)))
			rec("setrunning final: %s", errName(j.SetRunning("a", nil)))
			rec("finish unknown: %s", errName(j.Finish("b", protocol.StateRejected, []byte(`{"r":2}`))))
			for _, id := range []string{"a", "b", "c"} {
				e, ok, err := j.Get(id)
				rec("get %s: ok=%v state=%s result=%s payload=%d err=%v", id, ok, e.State, e.Result, len(e.Payload), err)
			}
			_, _, _ = j.Admit(state.Entry{ID: "q2", State: protocol.StateQueued, Received: now.Add(time.Second), KeepUntil: keep})
			_, _, _ = j.Admit(state.Entry{ID: "q1", State: protocol.StateQueued, Received: now, KeepUntil: keep})
			un, err := j.Unfinished()
			rec("unfinished: %d err=%v", len(un), err)
			for _, e := range un {
				rec("  %s %s", e.ID, e.State)
			}

			// Outbox: t/1, t/2 (droppable), t/3 are pending.
			p, err := j.PendingUpTo(10, 0)
			rec("pending: %d err=%v", len(p), err)
			for _, m := range p {
				rec("  %s droppable=%v", m.Topic, m.Droppable)
			}
			if len(p) == 3 {
				rec("ack first two: %s", errName(j.Ack(p[0].Seq, p[1].Seq, 999)))
			}
			p, _ = j.PendingUpTo(10, 0)
			rec("pending after ack: %d", len(p))
			// Fill to the limit (4), then past it.
			rec("push 3: %s", errName(j.Push(msg("t/4", false), msg("t/5", true), msg("t/6", false))))
			rec("push droppable over the limit: %s", errName(j.Push(msg("t/7", true))))
			rec("push result over the limit: %s", errName(j.Push(msg("t/8", false))))
			for range 4 {
				_ = j.Push(msg("t/9", false))
			}
			rec("push past twice the limit: %s", errName(j.Push(msg("t/10", false))))
			p, _ = j.PendingUpTo(100, 0)
			rec("pending at the cap: %d", len(p))
			p, _ = j.PendingUpTo(100, 1)
			rec("pending with a 1-byte budget: %d", len(p))

			n, err := j.Prune(now.Add(2 * time.Hour))
			rec("prune: %d err=%v", n, err)
			_, ok, _ := j.Get("a")
			rec("a after prune: %v", ok)

			want := expectedTrace
			if len(trace) != len(want) {
				t.Fatalf("trace has %d lines, want %d:\n%s", len(trace), len(want), join(trace))
			}
			for i := range want {
				if trace[i] != want[i] {
					t.Errorf("line %d: got %q, want %q", i, trace[i], want[i])
				}
			}
		})
	}
}

func join(lines []string) string {
	s := ""
	for _, l := range lines {
		s += l + "\n"
	}
	return s
}

// expectedTrace is what state.Store does; MemJournal must do the same.
var expectedTrace = []string{
	"setrunning unknown: not found",
	"setrunning a: ok",
	"finish a: ok",
	"finish a again: command already has a final state",
	"setrunning final: command already has a final state",
	"finish unknown: ok",
	`get a: ok=true state=succeeded result={"r":1} payload=0 err=<nil>`,
	`get b: ok=true state=rejected result={"r":2} payload=0 err=<nil>`,
	"get c: ok=false state= result= payload=0 err=<nil>",
	"unfinished: 2 err=<nil>",
	"  q1 queued",
	"  q2 queued",
	"pending: 3 err=<nil>",
	"  t/1 droppable=false",
	"  t/2 droppable=true",
	"  t/3 droppable=false",
	"ack first two: ok",
	"pending after ack: 1",
	"push 3: ok",
	"push droppable over the limit: outbox full",
	"push result over the limit: ok",
	"push past twice the limit: outbox full",
	"pending at the cap: 8",
	"pending with a 1-byte budget: 1",
	"prune: 2 err=<nil>",
	"a after prune: false",
}
