package outbox_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/outbox"
	"github.com/mqagent/mqagent/pkg/transport"
)

// runPublisher runs p.Run in a goroutine; the returned stop cancels it and
// fails the test if Run does not return promptly.
func runPublisher(t *testing.T, p *outbox.Publisher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx)
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(waitTimeout):
			t.Fatalf("Publisher.Run did not return within %v of cancel", waitTimeout)
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestRunPublishesInOrderOnceConnected(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0", t.TempDir())
	url := "tcp://" + b.TCPAddr()
	sub := startSubscriber(t, url, "sub")
	store := openStore(t)

	// Queued before there is any connection: more than two windows.
	n := 2*outbox.Window + 22
	pushN(t, store, 0, n)
	ac := startClient(t, url)
	stop := runPublisher(t, &outbox.Publisher{Store: store, Client: ac.Client, Logger: testLogger(t)})

	eventually(t, "all messages delivered", func() bool { return len(sub.received()) >= n })
	if got, want := sub.received(), seq(0, n); !slices.Equal(got, want) {
		t.Fatalf("delivered out of order or duplicated:\n got %v\nwant %v", got, want)
	}
	eventually(t, "outbox emptied", func() bool { return store.OutboxLen() == 0 })

	// A message pushed while the publisher idles goes out without delay
	// (Notify), well before the 5 s idle poll.
	start := time.Now()
	pushN(t, store, n, 3)
	eventually(t, "late messages delivered", func() bool { return len(sub.received()) == n+3 })
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("late messages took %v: the publisher did not wake on Notify", d)
	}
	if got, want := sub.received(), seq(0, n+3); !slices.Equal(got, want) {
		t.Fatalf("late messages: got %v, want %v", got[n:], want[n:])
	}
	eventually(t, "outbox emptied again", func() bool { return store.OutboxLen() == 0 })
	stop()
}

func TestFlushWhileDisconnectedKeepsEverything(t *testing.T) {
	store := openStore(t)
	pushN(t, store, 0, 3)
	c, err := transport.New(transport.Options{ClientID: "h", URLs: []string{"tcp://127.0.0.1:1"},
		NextSession: func() (uint64, error) { return 1, nil },
		Will:        func(uint64) []byte { return nil }, Birth: func(uint64) []byte { return nil },
		OnMessage: func(transport.Message) {}})
	if err != nil {
		t.Fatal(err)
	}
	p := &outbox.Publisher{Store: store, Client: c}
	n, err := p.Flush(time.Second)
	if !errors.Is(err, transport.ErrNotConnected) || n != 0 {
		t.Fatalf("Flush while disconnected = %d, %v; want 0, ErrNotConnected", n, err)
	}
	if got := store.OutboxLen(); got != 3 {
		t.Fatalf("outbox has %d messages after a failed flush, want 3", got)
	}
	start := time.Now()
	if n := p.Drain(time.Now().Add(5 * time.Second)); n != 0 {
		t.Fatalf("Drain while disconnected sent %d", n)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Drain while disconnected took %v, want an immediate return", d)
	}

	// Run waits for a connection and returns on cancel.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	cancel()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return after cancel while disconnected")
	}
	if got := store.OutboxLen(); got != 3 {
		t.Fatalf("outbox has %d messages, want 3", got)
	}
}

func TestAckedOnlyAfterBrokerAcknowledged(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0", t.TempDir())
	url := "tcp://" + b.TCPAddr()
	sub := startSubscriber(t, url, "sub")
	px := startProxy(t, b.TCPAddr())
	ac := startClient(t, px.url())
	waitOnline(t, ac.Client, sub)
	store := openStore(t)
	p := &outbox.Publisher{Store: store, Client: ac.Client, Logger: testLogger(t)}
	pushN(t, store, 0, 5)

	// The broker receives the messages but its PUBACKs are held back.
	px.holdBack()
	n, err := p.Flush(300 * time.Millisecond)
	if err == nil || n != 0 {
		t.Fatalf("Flush without PUBACKs = %d, %v; want 0 and an error", n, err)
	}
	eventually(t, "broker got the messages", func() bool { return len(sub.received()) == 5 })
	if got := store.OutboxLen(); got != 5 {
		t.Fatalf("outbox has %d messages, want 5: a message was acked without a PUBACK", got)
	}
	if pend, _ := store.Pending(10); len(pend) != 5 {
		t.Fatalf("Pending returns %d messages, want 5", len(pend))
	}

	// Flush again on the same connection: the messages are still in
	// flight there, so it waits for their PUBACKs rather than publishing
	// them a second time. A fence published after it arrives right after
	// the first copies.
	n, err = p.Flush(300 * time.Millisecond)
	if !errors.Is(err, transport.ErrAckTimeout) || n != 0 {
		t.Fatalf("second Flush without PUBACKs = %d, %v; want 0 and ErrAckTimeout", n, err)
	}
	ac.Publish("t/data/fence", 1, false, []byte("fence"))
	eventually(t, "broker got the fence", func() bool { return len(sub.received()) >= 6 })
	if got, want := sub.received(), append(seq(0, 5), "fence"); !slices.Equal(got, want) {
		t.Fatalf("broker got %v, want %v: a message was published twice on one connection", got, want)
	}

	// Then the connection dies before any PUBACK reaches the client. paho
	// keeps a persistent session's tokens open, so the flush must end
	// without acking anything.
	res := make(chan error, 1)
	var sent int
	go func() {
		var err error
		sent, err = p.Flush(time.Second)
		res <- err
	}()
	px.cut()
	px.release()
	select {
	case err := <-res:
		if err == nil || sent != 0 {
			t.Fatalf("Flush across a dropped connection = %d, %v; want 0 and an error", sent, err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Flush did not return after the connection dropped")
	}
	if got := store.OutboxLen(); got != 5 {
		t.Fatalf("outbox has %d messages after a dropped connection, want 5", got)
	}

	// After the reconnect the publisher sends them again (at least once)
	// and only then empties the outbox.
	stop := runPublisher(t, p)
	eventually(t, "outbox emptied after reconnect", func() bool { return store.OutboxLen() == 0 })
	eventually(t, "second copies delivered", func() bool { return len(sub.received()) >= 11 })
	if got := sub.received()[6:11]; !slices.Equal(got, seq(0, 5)) {
		t.Fatalf("after reconnect: got %v, want %v", got, seq(0, 5))
	}
	if st := ac.State(); st.Session < 2 {
		t.Fatalf("session %d: the client did not reconnect", st.Session)
	}
	stop()
}

func TestNothingLostAcrossBrokerRestart(t *testing.T) {
	dir := t.TempDir()
	b1 := startBroker(t, "127.0.0.1:0", dir)
	addr := b1.TCPAddr()
	sub := startSubscriber(t, "tcp://"+addr, "sub")
	px := startProxy(t, addr)
	store := openStore(t)
	ac := startClient(t, px.url())
	waitOnline(t, ac.Client, sub)
	// A short window timeout: paho does not complete the tokens of a
	// persistent session when its connection drops, so a window in flight
	// when the broker goes away is given up only after Timeout.
	runPublisher(t, &outbox.Publisher{Store: store, Client: ac.Client, Timeout: 500 * time.Millisecond, Logger: testLogger(t)})

	// The broker takes the first window but its PUBACKs never reach the
	// agent before it goes away: those messages are in flight, not acked.
	const first, second = 300, 200
	px.holdBack()
	pushN(t, store, 0, first)
	eventually(t, "first deliveries", func() bool { return len(sub.received()) > 0 })
	if err := b1.Close(); err != nil {
		t.Fatalf("close broker: %v", err)
	}
	px.cut() // the PUBACKs held back never reach the agent
	px.release()
	if got := store.OutboxLen(); got != first {
		t.Fatalf("outbox has %d messages, want %d: acked without a PUBACK", got, first)
	}
	// Pushed while no broker is up.
	pushN(t, store, first, second)

	b2 := startBroker(t, addr, dir) // same address, same persisted sessions
	deadline := time.Now().Add(waitTimeout)
	for {
		missing := missingFrom(sub.received(), seq(0, first+second))
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages lost after the broker restart (outbox holds %d, broker stats %+v): %v",
				len(missing), store.OutboxLen(), b2.Stats(), missing)
		}
		time.Sleep(5 * time.Millisecond)
	}
	eventually(t, "outbox emptied", func() bool { return store.OutboxLen() == 0 })
	if st := ac.State(); st.Session < 2 {
		t.Fatalf("session %d: the client did not reconnect", st.Session)
	}
}

func TestDrainStopsAtDeadline(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0", t.TempDir())
	sub := startSubscriber(t, "tcp://"+b.TCPAddr(), "sub")
	px := startProxy(t, b.TCPAddr())
	ac := startClient(t, px.url())
	waitOnline(t, ac.Client, sub)
	store := openStore(t)
	p := &outbox.Publisher{Store: store, Client: ac.Client}

	if n := p.Drain(time.Now().Add(time.Second)); n != 0 {
		t.Fatalf("Drain of an empty outbox = %d", n)
	}

	pushN(t, store, 0, 5)
	px.holdBack()
	start := time.Now()
	n := p.Drain(start.Add(300 * time.Millisecond))
	elapsed := time.Since(start)
	if n != 0 {
		t.Fatalf("Drain without PUBACKs sent %d", n)
	}
	if elapsed < 250*time.Millisecond || elapsed > 2*time.Second {
		t.Fatalf("Drain with a 300ms deadline returned after %v", elapsed)
	}
	if got := store.OutboxLen(); got != 5 {
		t.Fatalf("outbox has %d, want 5", got)
	}
	px.release()

	// Connected and acknowledged: Drain empties the outbox over several
	// windows and returns as soon as it is empty.
	pushN(t, store, 5, 2*outbox.Window)
	start = time.Now()
	if n := p.Drain(start.Add(waitTimeout)); n != 5+2*outbox.Window {
		t.Fatalf("Drain sent %d, want %d", n, 5+2*outbox.Window)
	}
	if d := time.Since(start); d > waitTimeout/2 {
		t.Fatalf("Drain took %v", d)
	}
	if got := store.OutboxLen(); got != 0 {
		t.Fatalf("outbox has %d after Drain, want 0", got)
	}
	// Once each: the first five waited in flight through the held
	// PUBACKs, and were not published again on the same connection.
	eventually(t, "subscriber got every message", func() bool {
		return len(sub.received()) >= 5+2*outbox.Window
	})
	if got, want := sub.received(), seq(0, 5+2*outbox.Window); !slices.Equal(got, want) {
		t.Fatalf("subscriber got %d messages %v…, want %d, each once in order", len(got), got[:min(len(got), 8)], len(want))
	}
}

// missingFrom returns the elements of want that got lacks.
func missingFrom(got, want []string) []string {
	have := make(map[string]bool, len(got))
	for _, g := range got {
		have[g] = true
	}
	var missing []string
	for _, w := range want {
		if !have[w] {
			missing = append(missing, w)
		}
	}
	return missing
}
