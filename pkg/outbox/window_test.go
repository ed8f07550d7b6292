package outbox_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/mqagent/mqagent/pkg/outbox"
	"github.com/mqagent/mqagent/pkg/state"
)

// TestWindowByteBudget: a window holds at most MaxBytes of encoded
// messages (one larger message goes alone), so a backlog of big results
// does not load 64 of them into memory at once; everything still goes out
// once, in order.
func TestWindowByteBudget(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0", t.TempDir())
	url := "tcp://" + b.TCPAddr()
	sub := startSubscriber(t, url, "sub")
	ac := startClient(t, url)
	waitOnline(t, ac.Client, sub)
	store := openStore(t)
	// Ten 1000-byte messages and, in the middle, one of 5000 bytes; the
	// budget fits three small ones (encoded a little over 1000 bytes).
	var msgs []state.Message
	var want []string
	for i := range 11 {
		size := 1000
		if i == 5 {
			size = 5000
		}
		payload := fmt.Appendf(nil, "%02d", i)
		payload = append(payload, bytes.Repeat([]byte{'x'}, size-len(payload))...)
		msgs = append(msgs, state.Message{Topic: fmt.Sprintf("t/data/%d", i), QoS: 1, Payload: payload})
		want = append(want, string(payload))
	}
	if err := store.Push(msgs...); err != nil {
		t.Fatal(err)
	}
	p := &outbox.Publisher{Store: store, Client: ac.Client, MaxBytes: 3100, Logger: testLogger(t)}
	var sizes []int
	for range len(msgs) {
		n, err := p.Flush(waitTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		sizes = append(sizes, n)
	}
	// 3 small, 2 small (the big one does not fit behind them), the big one
	// alone, then the rest three at a time.
	if wantSizes := []int{3, 2, 1, 3, 2}; !slices.Equal(sizes, wantSizes) {
		t.Fatalf("windows of %v messages, want %v", sizes, wantSizes)
	}
	eventually(t, "subscriber got everything", func() bool { return len(sub.received()) >= len(want) })
	if got := sub.received(); !slices.Equal(got, want) {
		t.Fatalf("subscriber got %d messages, want %d, each once in order", len(got), len(want))
	}
}
