package state

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// TestCrash kills a process that is writing to the store and checks that
// the reopened store is consistent and has every change whose call had
// returned. It repeats on the same file, so later rounds start from a
// file that was itself left by a crash.
func TestCrash(t *testing.T) {
	path := statePath(t)
	admitted := map[string]bool{}
	finished := map[string]bool{}
	for round := range 3 {
		cmd, sc, _ := helper(t, "crash", path)
		lines := 0
		for lines < 150 && sc.Scan() {
			kind, id, _ := strings.Cut(sc.Text(), " ")
			switch kind {
			case "A":
				admitted[id] = true
			case "F":
				finished[id] = true
			default:
				t.Fatalf("round %d: helper said %q", round, sc.Text())
			}
			lines++
		}
		if lines < 150 {
			t.Fatalf("round %d: helper stopped after %d lines: %v", round, lines, sc.Err())
		}
		// SIGKILL on Unix, TerminateProcess on Windows: no cleanup runs.
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()

		s := open(t, path, Options{})
		checkConsistent(t, s)
		for id := range admitted {
			e, ok, err := s.Get(id)
			if err != nil || !ok {
				t.Fatalf("round %d: admitted %s missing after crash: %v", round, id, err)
			}
			if finished[id] && (e.State != protocol.StateSucceeded || string(e.Result) != fmt.Sprintf(`{"r":"%s"}`, id)) {
				t.Errorf("round %d: finished %s is %+v", round, id, e)
			}
			if !protocol.IsFinal(e.State) && string(e.Payload) != `{"id":"`+id+`"}` {
				t.Errorf("round %d: queued %s lost its payload: %q", round, id, e.Payload)
			}
		}
		unfinished, err := s.Unfinished()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range unfinished {
			if finished[e.ID] {
				t.Errorf("round %d: finished %s is unfinished", round, e.ID)
			}
		}
		// Every acknowledged outbox message is there.
		msgs, err := s.Pending(1 << 20)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, m := range msgs {
			have[m.Topic+" "+string(m.Payload)] = true
		}
		for id := range admitted {
			if !have["t/audit received "+id] {
				t.Errorf("round %d: audit message of %s missing", round, id)
			}
			if finished[id] && !have["t/results/"+id+" result "+id] {
				t.Errorf("round %d: result message of %s missing", round, id)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
