package client_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/broker"
	"github.com/mqagent/mqagent/pkg/client"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// A Sender sends one id to hosts on demand; a host sent to twice (a
// resumed rollout) is reported once.
func TestSender(t *testing.T) {
	url := startBroker(t, nil)
	hosts := simFleet(t, url)
	c := dial(t, url, "op-sender")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	s, err := c.NewSender(ctx, ping(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Send("web-1", "db-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Send("web-1"); err != nil { // again
		t.Fatal(err)
	}
	if err := s.Send("Bad/Host"); err == nil {
		t.Fatal("invalid host accepted")
	}
	finals := map[string]string{}
	for len(finals) < 2 {
		select {
		case ev := <-s.Events():
			if r := ev.Result; r != nil && protocol.IsFinal(r.State) {
				if _, dup := finals[r.Host]; dup {
					t.Fatalf("final of %s twice", r.Host)
				}
				finals[r.Host] = r.State
			}
		case <-ctx.Done():
			t.Fatalf("finals %v", finals)
		}
	}
	if finals["web-1"] != protocol.StateSucceeded || finals["db-1"] != protocol.StateFailed {
		t.Fatalf("finals %v", finals)
	}
	// Every copy named its host and had the same id.
	for _, h := range []string{"web-1", "db-1"} {
		for _, cmd := range hosts[h].commands() {
			if cmd.ID != s.ID() || cmd.Target != "host:"+h {
				t.Fatalf("%s got %+v", h, cmd)
			}
		}
	}
	// The second copy to web-1 arrives (and is answered, as a duplicate
	// would be) without a second final event.
	deadline := time.Now().Add(waitTimeout)
	for len(hosts["web-1"].commands()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("web-1 got %d copies, want 2", len(hosts["web-1"].commands()))
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case ev := <-s.Events():
		if ev.Result != nil && protocol.IsFinal(ev.Result.State) {
			t.Fatalf("a second final event: %+v", ev.Result)
		}
	case <-time.After(100 * time.Millisecond):
	}
}

func TestMessages(t *testing.T) {
	url := startBroker(t, nil)
	c := dial(t, url, "op-messages")
	ctx, cancel := context.WithCancel(context.Background())
	msgs, err := c.Messages(ctx, topics.Audit("+"))
	if err != nil {
		t.Fatal(err)
	}
	pub := rawClient(t, url, "auditor")
	for i := range 20 {
		b, _ := json.Marshal(protocol.Audit{V: 1, Host: "h1", Event: "received", ID: string(rune('a' + i))})
		waitTok(t, "publish", pub.Publish(topics.Audit("h1"), 1, false, b))
	}
	var ids []string
	for len(ids) < 20 {
		select {
		case m := <-msgs:
			var a protocol.Audit
			if err := json.Unmarshal(m.Payload, &a); err != nil || m.Topic != topics.Audit("h1") {
				t.Fatalf("message %+v", m)
			}
			ids = append(ids, a.ID)
		case <-time.After(waitTimeout):
			t.Fatalf("got %v", ids)
		}
	}
	for i, id := range ids {
		if id != string(rune('a'+i)) {
			t.Fatalf("out of order: %v", ids)
		}
	}
	cancel()
	for range msgs { // closed once ctx ended
	}
}

// With Reconnect, the fleet view follows the broker across a restart.
func TestReconnectKeepsFleetView(t *testing.T) {
	b1, err := broker.New(broker.Options{TCPAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b1.Start(); err != nil {
		t.Fatal(err)
	}
	addr := b1.TCPAddr()
	url := "tcp://" + addr
	c, err := client.Dial(client.Options{URL: url, ClientID: "op-reconnect", Timeout: 2 * time.Second, Reconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	v, err := c.Fleet(context.Background(), client.FleetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}
	b2, err := broker.New(broker.Options{TCPAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Start(); err != nil {
		t.Skipf("port %s not free again: %v", addr, err)
	}
	t.Cleanup(func() { _ = b2.Close() })
	pub := rawClient(t, url, "late-host")
	st, _ := json.Marshal(protocol.Status{V: 1, Host: "late", State: protocol.StatusOnline, Session: 1, TS: protocol.Now()})
	waitTok(t, "status", pub.Publish(topics.Status("late"), 1, true, st))
	deadline := time.Now().Add(20 * time.Second)
	for {
		if h, ok := v.Host("late"); ok && h.Online {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the view never saw the status published after the restart: %d hosts known", v.Len())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
