package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
)

func TestAdmitDedup(t *testing.T) {
	s := open(t, statePath(t), Options{})
	recv := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	e := Entry{ID: "01JDX4", Kind: "exec", Topic: "p/hosts/h/cmd", Payload: []byte(`{"v":1}`), Received: recv, KeepUntil: recv.Add(time.Hour)}
	got, ok, err := s.Admit(e, Message{Topic: "p/hosts/h/audit", Payload: []byte("accepted")})
	if err != nil || !ok || got.State != protocol.StateQueued {
		t.Fatalf("first Admit = %+v, %v, %v", got, ok, err)
	}
	dup := e
	dup.Payload = []byte("other")
	for _, when := range []string{"same process", "after reopen"} {
		if when == "after reopen" {
			s = reopen(t, s, Options{})
		}
		got, ok, err = s.Admit(dup, Message{Topic: "p/hosts/h/audit", Payload: []byte("dup")})
		if err != nil || ok {
			t.Fatalf("%s: duplicate Admit = %v, %v; want not admitted", when, ok, err)
		}
		if got.ID != e.ID || string(got.Payload) != `{"v":1}` || !got.Received.Equal(recv) || got.Kind != "exec" {
			t.Errorf("%s: duplicate Admit returned %+v; want the first entry", when, got)
		}
		if n := s.OutboxLen(); n != 1 {
			t.Errorf("%s: OutboxLen = %d; the duplicate must write nothing", when, n)
		}
		if n := s.JournalLen(); n != 1 {
			t.Errorf("%s: JournalLen = %d", when, n)
		}
	}
	checkConsistent(t, s)
}

func TestAdmitConcurrentSameID(t *testing.T) {
	s := open(t, statePath(t), Options{})
	const n = 32
	var admitted atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			got, ok, err := s.Admit(Entry{ID: "same", Payload: fmt.Appendf(nil, "%d", i)}, Message{Topic: "a"})
			if err != nil {
				t.Error(err)
				return
			}
			if got.ID != "same" {
				t.Errorf("got entry %q", got.ID)
			}
			if ok {
				admitted.Add(1)
			}
		})
	}
	wg.Wait()
	if got := admitted.Load(); got != 1 {
		t.Fatalf("admitted %d times, want exactly 1", got)
	}
	if s.JournalLen() != 1 || s.OutboxLen() != 1 {
		t.Fatalf("JournalLen %d OutboxLen %d, want 1 and 1", s.JournalLen(), s.OutboxLen())
	}
	checkConsistent(t, s)
}

func TestAdmitConcurrentManyIDs(t *testing.T) {
	s := open(t, statePath(t), Options{})
	const workers, each = 8, 10
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				if _, ok, err := s.Admit(Entry{ID: id}, Message{Topic: "audit"}); err != nil || !ok {
					t.Errorf("Admit %s = %v, %v", id, ok, err)
				}
				if err := s.Finish(id, protocol.StateSucceeded, []byte("{}"), Message{Topic: "result"}); err != nil {
					t.Errorf("Finish %s: %v", id, err)
				}
			}
		})
	}
	wg.Wait()
	if s.JournalLen() != workers*each || s.OutboxLen() != 2*workers*each {
		t.Fatalf("JournalLen %d OutboxLen %d", s.JournalLen(), s.OutboxLen())
	}
	checkConsistent(t, s)
}

func TestEntryValidation(t *testing.T) {
	s := open(t, statePath(t), Options{})
	tests := []struct {
		name  string
		entry Entry
		msgs  []Message
		want  string
	}{
		{"empty id", Entry{}, nil, "empty"},
		{"long id", Entry{ID: strings.Repeat("x", maxIDLen+1)}, nil, "over"},
		{"unknown state", Entry{ID: "a", State: "weird"}, nil, "unknown state"},
		{"bad proc", Entry{ID: "a", Proc: json.RawMessage("{")}, nil, "proc"},
		{"bad message", Entry{ID: "a"}, []Message{{Topic: "a/#"}}, "wildcard"},
		{"time out of range", Entry{ID: "a", KeepUntil: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, nil, "encode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := s.Admit(tt.entry, tt.msgs...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Admit = %v; want an error with %q", err, tt.want)
			}
			if err := s.Record(tt.entry, tt.msgs...); err == nil {
				t.Error("Record accepted it")
			}
		})
	}
	if s.JournalLen() != 0 || s.OutboxLen() != 0 {
		t.Fatal("a rejected entry was written")
	}
	if err := s.SetRunning("", nil); err == nil {
		t.Error("SetRunning with empty id succeeded")
	}
	if err := s.Finish("a", protocol.StateRunning, nil); err == nil {
		t.Error("Finish with a non-final state succeeded")
	}
}

func TestLifecycle(t *testing.T) {
	s := open(t, statePath(t), Options{})
	keep := time.Now().Add(DefaultKeep + time.Hour).UTC() // later than Finish's minimum
	if _, _, err := s.Admit(Entry{ID: "c1", Kind: "exec", Payload: []byte("payload"), KeepUntil: keep}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRunning("nope", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetRunning of unknown id = %v; want ErrNotFound", err)
	}
	proc := json.RawMessage(`{"pid":1234}`)
	if err := s.SetRunning("c1", proc, Message{Topic: "status"}); err != nil {
		t.Fatal(err)
	}
	e, ok, err := s.Get("c1")
	if err != nil || !ok || e.State != protocol.StateRunning || string(e.Proc) != string(proc) || string(e.Payload) != "payload" {
		t.Fatalf("after SetRunning: %+v %v %v", e, ok, err)
	}
	result := []byte(`{"v":1,"id":"c1","state":"succeeded"}`)
	if err := s.Finish("c1", protocol.StateSucceeded, result, Message{Topic: "results/c1", Payload: result}); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, Options{})
	e, ok, err = s.Get("c1")
	if err != nil || !ok {
		t.Fatalf("Get: %v %v", ok, err)
	}
	if e.State != protocol.StateSucceeded || !bytes.Equal(e.Result, result) || e.Payload != nil || e.Proc != nil || e.Kind != "exec" || !e.KeepUntil.Equal(keep) {
		t.Errorf("after Finish: %+v; want final, result kept, payload and proc dropped", e)
	}
	// A command has exactly one final state.
	out := s.OutboxLen()
	if err := s.Finish("c1", protocol.StateFailed, nil, Message{Topic: "results/c1"}); !errors.Is(err, ErrAlreadyFinal) {
		t.Errorf("second Finish = %v; want ErrAlreadyFinal", err)
	}
	if err := s.SetRunning("c1", nil); !errors.Is(err, ErrAlreadyFinal) {
		t.Errorf("SetRunning of a final entry = %v; want ErrAlreadyFinal", err)
	}
	if s.OutboxLen() != out {
		t.Error("a refused Finish appended its messages")
	}
	if e, _, _ := s.Get("c1"); e.State != protocol.StateSucceeded {
		t.Errorf("state changed to %s", e.State)
	}
	checkConsistent(t, s)
}

func TestFinishUnknown(t *testing.T) {
	s := open(t, statePath(t), Options{DefaultKeep: 10 * time.Minute})
	before := time.Now()
	if err := s.Finish("rej", protocol.StateRejected, []byte("r")); err != nil {
		t.Fatal(err)
	}
	e, ok, err := s.Get("rej")
	if err != nil || !ok || e.State != protocol.StateRejected || string(e.Result) != "r" {
		t.Fatalf("Get = %+v %v %v", e, ok, err)
	}
	if e.KeepUntil.Before(before.Add(10*time.Minute)) || e.KeepUntil.After(time.Now().Add(10*time.Minute)) {
		t.Errorf("KeepUntil %v, want now + DefaultKeep", e.KeepUntil)
	}
	// Finish keeps an entry at least DefaultKeep from now.
	if _, _, err := s.Admit(Entry{ID: "short", KeepUntil: before}); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish("short", protocol.StateSucceeded, nil); err != nil {
		t.Fatal(err)
	}
	if e, _, _ := s.Get("short"); e.KeepUntil.Before(before.Add(10 * time.Minute)) {
		t.Errorf("KeepUntil after Finish %v, want extended to now + DefaultKeep", e.KeepUntil)
	}
	// FinishEntry gives the fields itself, and only extends KeepUntil.
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		existing *Entry
		finish   Entry
		wantKeep time.Time
		wantKind string
	}{
		{"insert", nil, Entry{ID: "f1", Kind: "ping", State: protocol.StateExpired, KeepUntil: t0}, t0, "ping"},
		{"extend", &Entry{ID: "f2", Kind: "exec", KeepUntil: t0}, Entry{ID: "f2", Kind: "x", State: protocol.StateFailed, KeepUntil: t0.Add(time.Hour)}, t0.Add(time.Hour), "exec"},
		{"keep later", &Entry{ID: "f3", Kind: "exec", KeepUntil: t0.Add(time.Hour)}, Entry{ID: "f3", State: protocol.StateFailed, KeepUntil: t0}, t0.Add(time.Hour), "exec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.existing != nil {
				if _, _, err := s.Admit(*tt.existing); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.FinishEntry(tt.finish); err != nil {
				t.Fatal(err)
			}
			e, _, err := s.Get(tt.finish.ID)
			if err != nil || e.State != tt.finish.State || !e.KeepUntil.Equal(tt.wantKeep) || e.Kind != tt.wantKind {
				t.Errorf("got %+v, %v; want state %s keep %v kind %s", e, err, tt.finish.State, tt.wantKeep, tt.wantKind)
			}
		})
	}
	checkConsistent(t, s)
}

func TestRecordReplaces(t *testing.T) {
	s := open(t, statePath(t), Options{})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := s.Record(Entry{ID: "r", State: protocol.StateRejected, Result: []byte("1"), KeepUntil: t0}); err != nil {
		t.Fatal(err)
	}
	if err := s.Record(Entry{ID: "r", State: protocol.StateRejected, Result: []byte("2"), Payload: []byte("dropped"), KeepUntil: t0.Add(time.Hour)}, Message{Topic: "audit"}); err != nil {
		t.Fatal(err)
	}
	e, _, err := s.Get("r")
	if err != nil || string(e.Result) != "2" || e.Payload != nil || !e.KeepUntil.Equal(t0.Add(time.Hour)) {
		t.Fatalf("got %+v %v", e, err)
	}
	if s.JournalLen() != 1 || s.OutboxLen() != 1 {
		t.Fatalf("JournalLen %d OutboxLen %d", s.JournalLen(), s.OutboxLen())
	}
	checkConsistent(t, s) // the old expiry key is gone
}

func TestUnfinishedAfterReopen(t *testing.T) {
	s := open(t, statePath(t), Options{})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	entries := []struct {
		id       string
		received time.Duration
		state    string
	}{
		{"d", 4 * time.Second, protocol.StateQueued},
		{"a", 3 * time.Second, protocol.StateRunning},
		{"z", 1 * time.Second, protocol.StateQueued},
		{"done", 0, protocol.StateSucceeded},
		{"b", 3 * time.Second, protocol.StateQueued}, // same time as a: by id
		{"rej", 2 * time.Second, protocol.StateRejected},
	}
	for _, e := range entries {
		if err := s.Record(Entry{ID: e.id, State: e.state, Payload: []byte("p-" + e.id), Received: t0.Add(e.received)}); err != nil {
			t.Fatal(err)
		}
	}
	s = reopen(t, s, Options{})
	list, err := s.Unfinished()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range list {
		got = append(got, e.ID+":"+e.State)
		if string(e.Payload) != "p-"+e.ID {
			t.Errorf("%s: payload %q", e.ID, e.Payload)
		}
	}
	want := "z:queued a:running b:queued d:queued"
	if strings.Join(got, " ") != want {
		t.Errorf("Unfinished = %v; want %s", got, want)
	}
}

func TestPrune(t *testing.T) {
	s := open(t, statePath(t), Options{})
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		id    string
		state string
		keep  time.Time
		kept  bool
	}{
		{"final-past", protocol.StateSucceeded, now.Add(-time.Second), false},
		{"final-long-past", protocol.StateRejected, now.Add(-100 * time.Hour), false},
		{"final-zero-keep", protocol.StateFailed, time.Time{}, false},
		{"final-at-now", protocol.StateFailed, now, true}, // not before now
		{"final-future", protocol.StateSucceeded, now.Add(time.Second), true},
		{"queued-past", protocol.StateQueued, now.Add(-time.Hour), true},
		{"running-past", protocol.StateRunning, now.Add(-time.Hour), true},
	}
	for _, tt := range tests {
		if err := s.Record(Entry{ID: tt.id, State: tt.state, KeepUntil: tt.keep}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.Prune(now)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("Prune = %d, want 3", n)
	}
	for _, tt := range tests {
		_, ok, err := s.Get(tt.id)
		if err != nil || ok != tt.kept {
			t.Errorf("%s: kept = %v (%v), want %v", tt.id, ok, err, tt.kept)
		}
	}
	if s.JournalLen() != 4 {
		t.Errorf("JournalLen = %d, want 4", s.JournalLen())
	}
	// A pruned id is admitted again.
	if _, ok, err := s.Admit(Entry{ID: "final-past"}); err != nil || !ok {
		t.Errorf("Admit of a pruned id = %v, %v", ok, err)
	}
	checkConsistent(t, s)
}

func TestPruneManyChunks(t *testing.T) {
	s := open(t, statePath(t), Options{})
	const n = 2*pruneChunk + 17
	now := time.Now()
	// One transaction for speed.
	err := s.update(func(w *wtx) error {
		j := w.journal()
		for i := range n {
			e := Entry{ID: fmt.Sprintf("e%05d", i), State: protocol.StateSucceeded, Received: now, KeepUntil: now.Add(-time.Duration(i) * time.Second)}
			if i%100 == 0 {
				e.State = protocol.StateQueued // never pruned
			}
			val, err := encodeEntry(&e)
			if err != nil {
				return err
			}
			if err := j.put(&e, val, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	queued := (n + 99) / 100
	got, err := s.Prune(now)
	if err != nil || got != n-queued {
		t.Fatalf("Prune = %d, %v; want %d", got, err, n-queued)
	}
	if s.JournalLen() != queued {
		t.Fatalf("JournalLen = %d, want %d", s.JournalLen(), queued)
	}
	if got, err := s.Prune(now); err != nil || got != 0 {
		t.Fatalf("second Prune = %d, %v", got, err)
	}
	checkConsistent(t, s)
}
