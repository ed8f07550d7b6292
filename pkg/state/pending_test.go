package state

import (
	"bytes"
	"fmt"
	"testing"
)

func TestPendingUpToByteBudget(t *testing.T) {
	s := open(t, statePath(t), Options{})
	// Five messages of 1000-byte payloads, encoded a little larger.
	var msgs []Message
	for i := range 5 {
		msgs = append(msgs, Message{Topic: fmt.Sprintf("t/%d", i), QoS: 1, Payload: bytes.Repeat([]byte{'a' + byte(i)}, 1000)})
	}
	if err := s.Push(msgs...); err != nil {
		t.Fatal(err)
	}
	enc := int64(len(encodeMessage(&msgs[0]))) // every one has the same size
	tests := []struct {
		name     string
		max      int
		maxBytes int64
		want     int
	}{
		{"no budget", 10, 0, 5},
		{"negative budget is none", 10, -1, 5},
		{"count first", 2, 1 << 20, 2},
		{"exactly three", 10, 3 * enc, 3},
		{"a byte short of three", 10, 3*enc - 1, 2},
		{"the first always goes", 10, 1, 1},
		{"no count", 0, 1 << 20, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.PendingUpTo(tt.max, tt.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.want {
				t.Fatalf("%d messages, want %d", len(got), tt.want)
			}
			for i, m := range got {
				if m.Topic != msgs[i].Topic || !bytes.Equal(m.Payload, msgs[i].Payload) {
					t.Fatalf("message %d is %s, want %s (oldest first)", i, m.Topic, msgs[i].Topic)
				}
			}
		})
	}
	// Acknowledged messages do not count against the budget.
	first, _ := s.Pending(1)
	if err := s.Ack(first[0].Seq); err != nil {
		t.Fatal(err)
	}
	got, err := s.PendingUpTo(10, 2*enc)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Topic != "t/1" {
		t.Fatalf("after an ack: %d messages from %v, want 2 from t/1", len(got), got)
	}
}
