package state

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/mqagent/mqagent/pkg/protocol"
	bolt "go.etcd.io/bbolt"
)

// topics returns the topics of msgs, checking that seqs increase.
func topics(t *testing.T, msgs []Message) string {
	t.Helper()
	var out []string
	for i, m := range msgs {
		if i > 0 && m.Seq <= msgs[i-1].Seq {
			t.Errorf("seq %d after %d", m.Seq, msgs[i-1].Seq)
		}
		out = append(out, m.Topic)
	}
	return strings.Join(out, " ")
}

func pending(t *testing.T, s *Store) string {
	t.Helper()
	msgs, err := s.Pending(1000)
	if err != nil {
		t.Fatal(err)
	}
	return topics(t, msgs)
}

func TestOutboxOrderAckPersistence(t *testing.T) {
	s := open(t, statePath(t), Options{})
	in := []Message{
		{Topic: "a", Payload: []byte("1"), QoS: 1, Retain: true},
		{Topic: "b", Payload: nil, QoS: 0},
		{Topic: "c", Payload: []byte("3"), QoS: 2, Droppable: true},
		{Topic: "d", Payload: bytes.Repeat([]byte{0, 255}, 1000)},
	}
	if err := s.Push(in[:2]...); err != nil {
		t.Fatal(err)
	}
	if err := s.Push(in[2:]...); err != nil {
		t.Fatal(err)
	}
	msgs, err := s.Pending(10)
	if err != nil || len(msgs) != 4 {
		t.Fatalf("Pending = %d msgs, %v", len(msgs), err)
	}
	for i, m := range msgs {
		w := in[i]
		if m.Topic != w.Topic || !bytes.Equal(m.Payload, w.Payload) || m.QoS != w.QoS || m.Retain != w.Retain || m.Droppable != w.Droppable {
			t.Errorf("message %d = %+v, want %+v", i, m, w)
		}
	}
	if got, _ := s.Pending(2); topics(t, got) != "a b" {
		t.Errorf("Pending(2) = %s", topics(t, got))
	}
	if got, _ := s.Pending(0); len(got) != 0 {
		t.Errorf("Pending(0) returned %d", len(got))
	}
	if err := s.Ack(msgs[1].Seq, msgs[1].Seq, 99999); err != nil { // duplicate and unknown seqs are ignored
		t.Fatal(err)
	}
	if got := pending(t, s); got != "a c d" {
		t.Errorf("after Ack(b): %s", got)
	}
	st := s.Stats()
	if st.OutboxMessages != 3 || s.OutboxLen() != 3 {
		t.Errorf("Stats = %+v", st)
	}
	lastSeq := msgs[3].Seq
	s = reopen(t, s, Options{})
	if got := pending(t, s); got != "a c d" {
		t.Errorf("after reopen: %s", got)
	}
	if got := s.Stats(); got.OutboxMessages != st.OutboxMessages || got.OutboxBytes != st.OutboxBytes {
		t.Errorf("Stats after reopen = %+v, before %+v", got, st)
	}
	if err := s.Push(Message{Topic: "e"}); err != nil {
		t.Fatal(err)
	}
	msgs, _ = s.Pending(10)
	if topics(t, msgs) != "a c d e" || msgs[3].Seq <= lastSeq {
		t.Errorf("after push: %s, new seq %d <= %d", topics(t, msgs), msgs[3].Seq, lastSeq)
	}
	checkConsistent(t, s)
}

func TestAckFlush(t *testing.T) {
	s := open(t, statePath(t), Options{})
	msgs := make([]Message, ackFlushAt+10)
	for i := range msgs {
		msgs[i] = Message{Topic: fmt.Sprintf("t%d", i)}
	}
	if err := s.Push(msgs...); err != nil {
		t.Fatal(err)
	}
	stored, _ := s.Pending(len(msgs))
	onDisk := func() int {
		n := 0
		_ = s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketOutbox).Stats().KeyN; return nil })
		return n
	}
	// A few acks stay in memory, until the next transaction.
	if err := s.Ack(stored[0].Seq, stored[1].Seq); err != nil {
		t.Fatal(err)
	}
	if onDisk() != len(msgs) || s.OutboxLen() != len(msgs)-2 {
		t.Fatalf("after 2 acks: %d on disk, OutboxLen %d", onDisk(), s.OutboxLen())
	}
	if _, err := s.NextSession(); err != nil {
		t.Fatal(err)
	}
	if onDisk() != len(msgs)-2 {
		t.Fatalf("after a transaction: %d on disk", onDisk())
	}
	// Many acks are written at once.
	for _, m := range stored[2 : 2+ackFlushAt] {
		if err := s.Ack(m.Seq); err != nil {
			t.Fatal(err)
		}
	}
	if want := len(msgs) - 2 - ackFlushAt; onDisk() != want || s.OutboxLen() != want {
		t.Fatalf("after %d acks: %d on disk, OutboxLen %d; want %d", ackFlushAt, onDisk(), s.OutboxLen(), want)
	}
	// Close writes the rest.
	if err := s.Ack(stored[len(stored)-1].Seq); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, Options{})
	if got := s.OutboxLen(); got != 7 {
		t.Fatalf("after reopen OutboxLen = %d, want 7", got)
	}
	checkConsistent(t, s)
}

func TestOutboxLimits(t *testing.T) {
	d := func(topic string) Message { return Message{Topic: topic, Droppable: true} }
	r := func(topic string) Message { return Message{Topic: topic} }
	size := int64(len(encodeMessage(&Message{Topic: "x1"}))) // every topic below has 2 bytes
	tests := []struct {
		name        string
		opts        Options
		pushes      [][]Message
		wantErrs    []bool // per push: ErrOutboxFull
		wantPending string
		wantDropped uint64
	}{
		{
			name:        "droppable refused when full",
			opts:        Options{OutboxMaxMessages: 3},
			pushes:      [][]Message{{d("d1"), d("d2"), d("d3")}, {d("d4")}},
			wantErrs:    []bool{false, true},
			wantPending: "d1 d2 d3",
			wantDropped: 1,
		},
		{
			name:        "droppable refused when bytes full",
			opts:        Options{OutboxMaxBytes: 2 * size},
			pushes:      [][]Message{{d("d1"), r("r1")}, {d("d2")}},
			wantErrs:    []bool{false, true},
			wantPending: "d1 r1",
			wantDropped: 1,
		},
		{
			name:        "result evicts oldest droppable",
			opts:        Options{OutboxMaxMessages: 3},
			pushes:      [][]Message{{d("d1"), r("r1"), d("d2")}, {r("r2")}, {r("r3")}},
			wantErrs:    []bool{false, false, false},
			wantPending: "r1 r2 r3",
			wantDropped: 2,
		},
		{
			name:        "result over the limit up to the hard cap",
			opts:        Options{OutboxMaxMessages: 2},
			pushes:      [][]Message{{r("r1"), r("r2")}, {r("r3")}, {r("r4")}, {r("r5")}},
			wantErrs:    []bool{false, false, false, true},
			wantPending: "r1 r2 r3 r4",
		},
		{
			name:        "bytes hard cap",
			opts:        Options{OutboxMaxBytes: 2 * size},
			pushes:      [][]Message{{r("r1"), r("r2"), r("r3"), r("r4")}, {r("r5")}},
			wantErrs:    []bool{false, true},
			wantPending: "r1 r2 r3 r4",
		},
		{
			name:        "partial push keeps what fits",
			opts:        Options{OutboxMaxMessages: 2},
			pushes:      [][]Message{{d("d1"), d("d2")}, {d("d3"), r("r1"), d("d4")}},
			wantErrs:    []bool{false, true},
			wantPending: "d2 r1",
			wantDropped: 3, // d3, d1 (evicted), d4
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t, statePath(t), tt.opts)
			for i, p := range tt.pushes {
				err := s.Push(p...)
				if got := errors.Is(err, ErrOutboxFull); got != tt.wantErrs[i] || (err != nil && !got) {
					t.Errorf("push %d: %v, want ErrOutboxFull %v", i, err, tt.wantErrs[i])
				}
			}
			if got := pending(t, s); got != tt.wantPending {
				t.Errorf("pending = %q, want %q", got, tt.wantPending)
			}
			if got := s.Stats().OutboxDropped; got != tt.wantDropped {
				t.Errorf("dropped = %d, want %d", got, tt.wantDropped)
			}
			checkConsistent(t, s)
			// Acked messages no longer count against the limits.
			msgs, _ := s.Pending(100)
			for _, m := range msgs {
				_ = s.Ack(m.Seq)
			}
			if err := s.Push(d("z1")); err != nil {
				t.Errorf("push after acking all: %v", err)
			}
			checkConsistent(t, s)
		})
	}
}

func TestJournalWriteWithOutboxFull(t *testing.T) {
	s := open(t, statePath(t), Options{OutboxMaxMessages: 1})
	if err := s.Push(Message{Topic: "r0"}, Message{Topic: "r1"}); err != nil {
		t.Fatal(err)
	}
	// Admitted although its audit record does not fit.
	e, ok, err := s.Admit(Entry{ID: "c"}, Message{Topic: "audit"})
	if !errors.Is(err, ErrOutboxFull) || !ok || e.ID != "c" {
		t.Fatalf("Admit = %v, %v; want admitted with ErrOutboxFull", ok, err)
	}
	// The result stays in the journal for result.get.
	if err := s.Finish("c", protocol.StateSucceeded, []byte("res"), Message{Topic: "result"}); !errors.Is(err, ErrOutboxFull) {
		t.Fatalf("Finish = %v; want ErrOutboxFull", err)
	}
	if e, _, _ := s.Get("c"); e.State != protocol.StateSucceeded || string(e.Result) != "res" {
		t.Fatalf("journal entry = %+v", e)
	}
	if got := pending(t, s); got != "r0 r1" {
		t.Errorf("pending = %q", got)
	}
	// A droppable message that does not fit is dropped without an error:
	// a full outbox of telemetry must not fail journal writes.
	dropped := s.Stats().OutboxDropped
	if _, ok, err := s.Admit(Entry{ID: "d"}, Message{Topic: "status", Droppable: true}); err != nil || !ok {
		t.Fatalf("Admit with droppable message = %v, %v", ok, err)
	}
	if err := s.SetRunning("d", nil, Message{Topic: "status", Droppable: true}); err != nil {
		t.Fatalf("SetRunning with droppable message: %v", err)
	}
	if got := s.Stats().OutboxDropped - dropped; got != 2 {
		t.Errorf("dropped %d droppable messages, want 2", got)
	}
	if e, _, _ := s.Get("d"); e.State != protocol.StateRunning {
		t.Errorf("state = %s, want running", e.State)
	}
	checkConsistent(t, s)
}

func TestMessageValidation(t *testing.T) {
	s := open(t, statePath(t), Options{})
	tests := []struct {
		name string
		msg  Message
	}{
		{"empty topic", Message{}},
		{"plus wildcard", Message{Topic: "a/+/b"}},
		{"hash wildcard", Message{Topic: "a/#"}},
		{"nul", Message{Topic: "a\x00"}},
		{"qos 3", Message{Topic: "a", QoS: 3}},
		{"long topic", Message{Topic: strings.Repeat("a", maxTopicLen+1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Push(Message{Topic: "ok"}, tt.msg); err == nil || errors.Is(err, ErrOutboxFull) {
				t.Errorf("Push = %v; want a validation error", err)
			}
		})
	}
	if s.OutboxLen() != 0 {
		t.Error("a push with an invalid message stored something")
	}
}

func TestDecodeBadValues(t *testing.T) {
	for _, v := range [][]byte{nil, {1}, {2, 0, 0}, {1, 0, 0xff}, {1, 0, 5, 'a'}} {
		if _, err := decodeMessage(1, v); err == nil {
			t.Errorf("decodeMessage(%x) succeeded", v)
		}
	}
	for _, v := range [][]byte{nil, {2}, {1, 5, '{'}, {1, 2, '{', '}', 0, 0, 9}, {1, 0, 0, 0}} {
		if _, err := decodeEntry(v, true); err == nil {
			t.Errorf("decodeEntry(%x) succeeded", v)
		}
	}
}

// TestDroppableIndexForgetsAcked: the index of droppable messages does not
// grow with every droppable message ever acked (it did, by 8 bytes each:
// the soak test's anonymous memory slope, docs/soak.md), and still hands
// out the oldest live one for eviction.
func TestDroppableIndexForgetsAcked(t *testing.T) {
	s := open(t, statePath(t), Options{NoSync: true})
	if err := s.Push(Message{Topic: "oldest", Droppable: true}); err != nil {
		t.Fatal(err)
	}
	first, err := s.Pending(1)
	if err != nil || len(first) != 1 {
		t.Fatalf("pending: %v %v", first, err)
	}
	for range 50 {
		msgs := make([]Message, 100)
		for i := range msgs {
			msgs[i] = Message{Topic: "t", Droppable: true}
		}
		if err := s.Push(msgs...); err != nil {
			t.Fatal(err)
		}
		stored, err := s.Pending(1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range stored[1:] { // all but the oldest
			if err := s.Ack(m.Seq); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.mu.Lock()
	n, count := len(s.out.droppable), s.out.count
	oldest, ok := s.out.oldestDroppable()
	s.mu.Unlock()
	if count != 1 || n > 2*count+64 {
		t.Errorf("after 5000 droppable messages acked: %d live, %d in the droppable index; want 1 and at most %d", count, n, 2*count+64)
	}
	if !ok || oldest != first[0].Seq {
		t.Errorf("oldest droppable: %d %v, want %d", oldest, ok, first[0].Seq)
	}
}
