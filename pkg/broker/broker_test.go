package broker

import (
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"
)

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no listener", Options{}, "no listener"},
		{"tcp without port", Options{TCPAddr: "127.0.0.1"}, "TCPAddr"},
		{"ws port not a number", Options{WSAddr: "127.0.0.1:http"}, "WSAddr"},
		{"port too big", Options{TCPAddr: "127.0.0.1:65536"}, "0..65535"},
		{"negative port", Options{TCPAddr: "127.0.0.1:-1"}, "0..65535"},
		{"negative queue", Options{TCPAddr: ":0", MaxQueuedPerClient: -1}, "MaxQueuedPerClient"},
		{"queue beyond packet ids", Options{TCPAddr: ":0", MaxQueuedPerClient: 65536}, "MaxQueuedPerClient"},
		{"negative pending writes", Options{TCPAddr: ":0", MaxPendingWrites: -5}, "MaxPendingWrites"},
		{"tiny message limit", Options{TCPAddr: ":0", MaxMessageBytes: 10}, "MaxMessageBytes"},
		{"message limit beyond MQTT", Options{TCPAddr: ":0", MaxMessageBytes: 1 << 30}, "MaxMessageBytes"},
		{"negative session expiry", Options{TCPAddr: ":0", SessionExpiry: -time.Hour}, "SessionExpiry"},
		{"sub-second session expiry", Options{TCPAddr: ":0", SessionExpiry: time.Millisecond}, "SessionExpiry"},
		{"session expiry beyond MQTT", Options{TCPAddr: ":0", SessionExpiry: MaxSessionExpiry + time.Second}, "SessionExpiry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(tt.opts)
			if err == nil {
				t.Fatalf("New(%+v) = %v, want error", tt.opts, b)
			}
			if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v; want ErrInvalidOptions mentioning %q", err, tt.want)
			}
		})
	}
}

func TestNewAppliesDefaults(t *testing.T) {
	b, err := New(Options{TCPAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	o := b.opts
	if o.MaxQueuedPerClient != 10000 || o.MaxPendingWrites != 10000 || o.MaxMessageBytes != 1<<20 ||
		o.SessionExpiry != 30*24*time.Hour || o.Authorizer == nil {
		t.Fatalf("defaults not applied: %+v", o)
	}
	c := o.capabilities()
	if c.MaximumInflight != 10000 || c.MaximumClientWritesPending != 10000 || c.MaximumPacketSize != 1<<20 ||
		c.MaximumSessionExpiryInterval != 30*24*3600 || c.MaximumMessageExpiryInterval != 0 || c.ReceiveMaximum != 65535 {
		t.Fatalf("capabilities: %+v", c)
	}
	if b.TCPAddr() != "" || b.WSAddr() != "" || b.Stats() != (Stats{}) {
		t.Fatal("a broker not started reports addresses or stats")
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close before Start: %v", err)
	}
	if err := b.Start(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: %v, want ErrClosed", err)
	}
}

func TestTCPAndWebSocketOnPortZero(t *testing.T) {
	b := startBroker(t, Options{WSAddr: "127.0.0.1:0"})
	for name, addr := range map[string]string{"tcp": b.TCPAddr(), "ws": b.WSAddr()} {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host != "127.0.0.1" || port == "0" {
			t.Fatalf("%s address %q: want 127.0.0.1 and the chosen port", name, addr)
		}
	}
	if b.TCPAddr() == b.WSAddr() {
		t.Fatalf("tcp and ws share %s", b.TCPAddr())
	}
	if err := b.Start(); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start: %v, want ErrStarted", err)
	}

	tcpSub := dial(t, "tcp://"+b.TCPAddr(), "tcp-sub", dialOpts{clean: true})
	tcpSub.subscribe(t, "t/#", 1)
	wsRoot := dial(t, "ws://"+b.WSAddr()+"/", "ws-root", dialOpts{clean: true})
	wsMQTT := dial(t, "ws://"+b.WSAddr()+"/mqtt", "ws-mqtt", dialOpts{clean: true})
	wsMQTT.subscribe(t, "t/#", 1)

	wsRoot.publish(t, "t/from-ws", 1, false, "hello over ws")
	tcpSub.publish(t, "t/from-tcp", 1, false, "hello over tcp")
	for _, c := range []*client{tcpSub, wsMQTT} {
		got := map[string]string{}
		for range 2 {
			m := c.next(t)
			got[m.Topic()] = string(m.Payload())
		}
		if got["t/from-ws"] != "hello over ws" || got["t/from-tcp"] != "hello over tcp" {
			t.Fatalf("received %v", got)
		}
	}
	if s := b.Stats(); s.ClientsConnected != 3 {
		t.Fatalf("ClientsConnected = %d, want 3", s.ClientsConnected)
	}
}

func TestWebSocketListenerRefusesPlainHTTP(t *testing.T) {
	b := startBroker(t, Options{WSAddr: "127.0.0.1:0"})
	hc := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get("http://" + b.WSAddr() + "/mqtt")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET: %s, want 400", resp.Status)
	}
	dial(t, "ws://"+b.WSAddr()+"/mqtt", "after", dialOpts{clean: true}).publish(t, "x", 1, false, "still serving")
}

func TestRetainedMessageReachesLateSubscriber(t *testing.T) {
	b := startBroker(t, Options{})
	url := "tcp://" + b.TCPAddr()
	pub := dial(t, url, "pub", dialOpts{clean: true})
	pub.subscribe(t, "P/hosts/+/status", 1)
	pub.publish(t, "P/hosts/web-01/status", 1, true, `{"state":"online"}`)
	pub.publish(t, "P/hosts/web-02/status", 1, true, `{"state":"online"}`)
	pub.publish(t, "P/hosts/web-02/status", 1, true, "") // clears it
	for range 3 {
		// A PUBACK comes before the broker forwards the message: wait for
		// the forwarded copies, so that late subscribes after them.
		pub.next(t)
	}

	late := dial(t, url, "late", dialOpts{clean: true})
	late.subscribe(t, "P/hosts/+/status", 1)
	m := late.next(t)
	if m.Topic() != "P/hosts/web-01/status" || string(m.Payload()) != `{"state":"online"}` || !m.Retained() {
		t.Fatalf("got %s %q retained=%v", m.Topic(), m.Payload(), m.Retained())
	}
	pub.publish(t, "P/hosts/web-03/status", 1, false, "live") // proves delivery caught up
	if m := late.next(t); m.Topic() != "P/hosts/web-03/status" || m.Retained() {
		t.Fatalf("got %s %q retained=%v, want the live message", m.Topic(), m.Payload(), m.Retained())
	}
	late.expectNone(t) // the cleared web-02 status never came
	if got := b.Stats().Retained; got != 1 {
		t.Fatalf("Stats.Retained = %d, want 1", got)
	}
}

func TestLastWillWhenConnectionKilled(t *testing.T) {
	b := startBroker(t, Options{})
	url := "tcp://" + b.TCPAddr()
	watcher := dial(t, url, "watcher", dialOpts{clean: true})
	watcher.subscribe(t, "P/hosts/+/status", 1)

	p := startProxy(t, b.TCPAddr())
	lastWill := `{"state":"offline","reason":"lost"}`
	agent := dial(t, "tcp://"+p.addr(), "web-01", dialOpts{will: &willMsg{
		topic: "P/hosts/web-01/status", payload: []byte(lastWill), qos: 1, retained: true,
	}})
	agent.publish(t, "P/hosts/web-01/status", 1, true, `{"state":"online"}`)
	if m := watcher.next(t); string(m.Payload()) != `{"state":"online"}` {
		t.Fatalf("birth: got %q", m.Payload())
	}

	p.kill() // no DISCONNECT: the broker sees the connection die
	m := watcher.next(t)
	if m.Topic() != "P/hosts/web-01/status" || string(m.Payload()) != lastWill {
		t.Fatalf("will: got %s %q", m.Topic(), m.Payload())
	}
	select {
	case <-agent.lost:
	case <-time.After(waitTimeout):
		t.Fatal("the agent did not notice its connection died")
	}

	late := dial(t, url, "late", dialOpts{clean: true})
	late.subscribe(t, "P/hosts/web-01/status", 1)
	if m := late.next(t); string(m.Payload()) != lastWill || !m.Retained() {
		t.Fatalf("retained will: got %q retained=%v", m.Payload(), m.Retained())
	}
}

func TestGracefulDisconnectSendsNoWill(t *testing.T) {
	b := startBroker(t, Options{})
	url := "tcp://" + b.TCPAddr()
	watcher := dial(t, url, "watcher", dialOpts{clean: true})
	watcher.subscribe(t, "P/hosts/#", 1)
	agent := dial(t, url, "web-01", dialOpts{will: &willMsg{topic: "P/hosts/web-01/status", payload: []byte("lost"), qos: 1, retained: true}})
	agent.Disconnect(250)
	waitConnected(t, b, 1) // the broker is done with the agent's connection
	other := dial(t, url, "web-02", dialOpts{clean: true})
	other.publish(t, "P/hosts/web-02/status", 1, false, "after")
	if m := watcher.next(t); m.Topic() != "P/hosts/web-02/status" {
		t.Fatalf("got %s %q before the marker: a will on graceful disconnect", m.Topic(), m.Payload())
	}
}

// An agent with a persistent session is offline while 500 commands are
// published; on reconnect it gets all of them, in order, once.
func TestOfflineSessionReceivesQueuedMessagesInOrder(t *testing.T) {
	b := startBroker(t, Options{})
	url := "tcp://" + b.TCPAddr()
	agent := dial(t, url, "web-01", dialOpts{})
	agent.subscribe(t, "P/hosts/web-01/cmd", 1)
	agent.Disconnect(250)
	waitConnected(t, b, 0)

	op := dial(t, url, "operator", dialOpts{clean: true})
	op.publishSeq(t, "P/hosts/web-01/cmd", 500)
	eventually(t, "500 messages queued", func() bool { return b.Stats().Inflight == 500 })

	again := dial(t, url, "web-01", dialOpts{})
	again.expectSeq(t, "P/hosts/web-01/cmd", 500)
	op.publish(t, "P/hosts/web-01/cmd", 1, false, "live") // the subscription is still there
	if m := again.next(t); string(m.Payload()) != "live" {
		t.Fatalf("after the queue: got %q, want live (a duplicate?)", m.Payload())
	}
	if s := b.Stats(); s.QueueDropped != 0 || s.WriteDropped != 0 {
		t.Fatalf("drops: %+v", s)
	}
}

// The same across a restart: sessions, subscriptions, queued and retained
// messages survive Close + New + Start on the same DataDir.
func TestPersistenceAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	b1 := startBroker(t, Options{DataDir: dir})
	url := "tcp://" + b1.TCPAddr()
	agent := dial(t, url, "web-01", dialOpts{})
	agent.subscribe(t, "P/hosts/web-01/cmd", 1)
	agent.subscribe(t, "P/hosts/all/cmd", 1)
	agent.publish(t, "P/hosts/web-01/status", 1, true, "online")
	agent.Disconnect(250)
	// A session that a clean connection replaced must not come back.
	gone := dial(t, url, "gone", dialOpts{})
	gone.subscribe(t, "P/hosts/all/cmd", 1)
	gone.Disconnect(250)
	dial(t, url, "gone", dialOpts{clean: true}).Disconnect(250)
	waitConnected(t, b1, 0)

	op := dial(t, url, "operator", dialOpts{clean: true})
	op.publishSeq(t, "P/hosts/web-01/cmd", 500)
	op.publish(t, "P/hosts/all/cmd", 1, false, "broadcast")
	op.Disconnect(250)
	eventually(t, "501 messages queued", func() bool { return b1.Stats().Inflight == 501 })
	if err := b1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	b2 := startBroker(t, Options{DataDir: dir})
	if s := b2.Stats(); s.Sessions != 1 || s.Inflight != 501 || s.Retained != 1 || s.Subscriptions != 2 {
		t.Fatalf("after restart: %+v, want 1 session, 501 queued, 1 retained, 2 subscriptions", s)
	}
	url = "tcp://" + b2.TCPAddr()
	again := dial(t, url, "web-01", dialOpts{})
	again.expectSeq(t, "P/hosts/web-01/cmd", 500)
	if m := again.next(t); m.Topic() != "P/hosts/all/cmd" || string(m.Payload()) != "broadcast" {
		t.Fatalf("got %s %q, want the broadcast", m.Topic(), m.Payload())
	}
	op = dial(t, url, "operator", dialOpts{clean: true})
	op.publish(t, "P/hosts/web-01/cmd", 1, false, "after restart") // subscription survived
	if m := again.next(t); string(m.Payload()) != "after restart" {
		t.Fatalf("got %q", m.Payload())
	}
	op.subscribe(t, "P/hosts/+/status", 1)
	if m := op.next(t); string(m.Payload()) != "online" || !m.Retained() {
		t.Fatalf("retained status: got %q retained=%v", m.Payload(), m.Retained())
	}
	eventually(t, "queue acknowledged", func() bool { return b2.Stats().Inflight == 0 })
	if err := b2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// Acknowledged messages are gone from the file too.
	b3 := startBroker(t, Options{DataDir: dir})
	if s := b3.Stats(); s.Sessions != 1 || s.Inflight != 0 || s.Retained != 1 {
		t.Fatalf("after second restart: %+v", s)
	}
}

// A burst of 2,000 QoS 1 messages to one connected subscriber under the
// default limits: nothing dropped, order kept.
func TestBurstToConnectedSubscriber(t *testing.T) {
	b := startBroker(t, Options{})
	url := "tcp://" + b.TCPAddr()
	sub := dial(t, url, "collector", dialOpts{clean: true})
	sub.subscribe(t, "P/results/#", 1)
	pub := dial(t, url, "fleet", dialOpts{clean: true})
	pub.publishSeq(t, "P/results/x", 2000)
	sub.expectSeq(t, "P/results/x", 2000)
	if s := b.Stats(); s.WriteDropped != 0 || s.QueueDropped != 0 {
		t.Fatalf("drops: %+v", s)
	}
}

func TestQueueLimitDropsAndCounts(t *testing.T) {
	b := startBroker(t, Options{MaxQueuedPerClient: 10})
	url := "tcp://" + b.TCPAddr()
	agent := dial(t, url, "web-01", dialOpts{})
	agent.subscribe(t, "cmd", 1)
	agent.Disconnect(250)
	waitConnected(t, b, 0)
	op := dial(t, url, "operator", dialOpts{clean: true})
	op.publishSeq(t, "cmd", 15)
	eventually(t, "10 queued and 5 dropped", func() bool { s := b.Stats(); return s.Inflight == 10 && s.QueueDropped == 5 })
	again := dial(t, url, "web-01", dialOpts{})
	again.expectSeq(t, "cmd", 10) // the oldest are kept
}

func TestSessionExpiry(t *testing.T) {
	dir := t.TempDir()
	b := startBroker(t, Options{DataDir: dir, SessionExpiry: time.Second})
	url := "tcp://" + b.TCPAddr()
	agent := dial(t, url, "web-01", dialOpts{})
	agent.subscribe(t, "cmd", 1)
	agent.Disconnect(250)
	waitConnected(t, b, 0)
	op := dial(t, url, "operator", dialOpts{clean: true})
	op.publish(t, "cmd", 1, false, "stale")
	eventually(t, "session expired", func() bool { s := b.Stats(); return s.Sessions == 1 && s.Subscriptions == 0 })

	again := dial(t, url, "web-01", dialOpts{})
	again.subscribe(t, "marker", 1)
	op.publish(t, "cmd", 1, false, "after expiry")
	op.publish(t, "marker", 1, false, "m")
	// Neither the queued message nor the old subscription delivered anything
	// before the marker.
	if m := again.next(t); m.Topic() != "marker" {
		t.Fatalf("got %s %q, want only the marker", m.Topic(), m.Payload())
	}
	eventually(t, "marker acknowledged", func() bool { return b.Stats().Inflight == 0 })
	again.Disconnect(250)
	op.Disconnect(250)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2 := startBroker(t, Options{DataDir: dir, SessionExpiry: time.Hour})
	if s := b2.Stats(); s.Subscriptions != 1 || s.Inflight != 0 { // only "marker"
		t.Fatalf("expired session came back: %+v", s)
	}
}

func TestOversizeMessageDisconnectsPublisher(t *testing.T) {
	b := startBroker(t, Options{MaxMessageBytes: 1024})
	url := "tcp://" + b.TCPAddr()
	sub := dial(t, url, "sub", dialOpts{clean: true})
	sub.subscribe(t, "big", 1)
	pub := dial(t, url, "pub", dialOpts{clean: true})
	pub.Publish("big", 1, false, strings.Repeat("x", 2000))
	select {
	case <-pub.lost:
	case <-time.After(waitTimeout):
		t.Fatal("the publisher of an oversize message was not disconnected")
	}
	sub.publish(t, "big", 1, false, strings.Repeat("y", 900))
	if m := sub.next(t); len(m.Payload()) != 900 {
		t.Fatalf("got %d bytes, want the 900-byte message only", len(m.Payload()))
	}
}

// denyAuthorizer refuses the user "mallory" and the topic filter "secret/#".
type denyAuthorizer struct{}

func (denyAuthorizer) Authenticate(c ClientInfo, _ []byte) bool { return c.Username != "mallory" }
func (denyAuthorizer) Allow(_ ClientInfo, topic string, _ bool) bool {
	return !strings.HasPrefix(topic, "secret/")
}

func TestAuthorizerSeam(t *testing.T) {
	b := startBroker(t, Options{Authorizer: denyAuthorizer{}})
	url := "tcp://" + b.TCPAddr()
	if _, err := tryDial(t, url, "m", dialOpts{clean: true, username: "mallory"}); err == nil {
		t.Fatal("mallory connected")
	}
	c := dial(t, url, "alice", dialOpts{clean: true, username: "alice"})
	tok := c.Subscribe("secret/#", 1, nil)
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatal("subscribe timed out")
	}
	if code := tok.(*paho.SubscribeToken).Result()["secret/#"]; code != 0x80 {
		t.Fatalf("SUBACK for a refused filter = %#x, want 0x80", code)
	}
	c.subscribe(t, "public/#", 1)
}

func TestAddressInUse(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	addr := held.Addr().String()
	dir := t.TempDir()
	for _, opts := range []Options{{TCPAddr: addr, DataDir: dir}, {TCPAddr: "127.0.0.1:0", WSAddr: addr, DataDir: dir}} {
		b, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		err = b.Start()
		var opErr *net.OpError
		if err == nil || !strings.Contains(err.Error(), addr) || !errors.As(err, &opErr) {
			t.Fatalf("Start on a used address: %v; want a *net.OpError naming %s", err, addr)
		}
		if b.TCPAddr() != "" {
			t.Fatal("a failed broker reports an address")
		}
		if b.tcp != nil { // opened before the WebSocket listener failed
			if c, err := net.Dial("tcp", b.tcp.Address()); err == nil {
				c.Close()
				t.Fatal("the TCP listener of a failed Start is still open")
			}
		}
		if err := b.Start(); !errors.Is(err, ErrClosed) {
			t.Fatalf("Start after a failed Start: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// The failed Starts released the data file.
	startBroker(t, Options{DataDir: dir})
}

func TestDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	startBroker(t, Options{DataDir: dir})
	b, err := New(Options{TCPAddr: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	b.lockTimeout = 50 * time.Millisecond
	if err := b.Start(); !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Start on a locked data dir: %v; want ErrDataDirInUse naming %s", err, dir)
	}
}

func TestCloseIsIdempotentAndLeavesNoGoroutines(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	b, err := New(Options{TCPAddr: "127.0.0.1:0", WSAddr: "127.0.0.1:0", DataDir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	tcp := dial(t, "tcp://"+b.TCPAddr(), "tcp", dialOpts{})
	tcp.subscribe(t, "x", 1)
	ws := dial(t, "ws://"+b.WSAddr()+"/mqtt", "ws", dialOpts{clean: true})
	ws.publish(t, "x", 1, true, "retained")
	tcp.next(t)
	// A connection that never sends CONNECT must not hold Close up.
	raw, err := net.Dial("tcp", b.TCPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()

	done := make(chan error, 1)
	go func() { done <- b.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Close hung")
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, c := range []*client{tcp, ws} {
		select {
		case <-c.lost:
		case <-time.After(waitTimeout):
			t.Fatal("a client was not disconnected by Close")
		}
	}
	if _, err := net.Dial("tcp", b.TCPAddr()); err == nil {
		t.Fatal("still accepting after Close")
	}
	goleak.VerifyNone(t, ignore)
}

func TestSilentConnectionTimesOut(t *testing.T) {
	b, err := New(Options{TCPAddr: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	b.connectTimeout = 100 * time.Millisecond
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	raw, err := net.Dial("tcp", b.TCPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetReadDeadline(time.Now().Add(waitTimeout))
	_, err = raw.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("read from a connection that never sent CONNECT: %v; want it closed by the broker", err)
	}
}

func TestStatsCountSessions(t *testing.T) {
	b := startBroker(t, Options{})
	url := "tcp://" + b.TCPAddr()
	for i := range 3 {
		c := dial(t, url, "h"+strconv.Itoa(i), dialOpts{})
		c.subscribe(t, "cmd/"+strconv.Itoa(i), 1)
		c.Disconnect(250)
	}
	eventually(t, "3 offline sessions", func() bool {
		s := b.Stats()
		return s.Sessions == 3 && s.ClientsConnected == 0 && s.Subscriptions == 3
	})
}

// waitConnected waits until n clients are connected to b.
func waitConnected(t *testing.T, b *Broker, n int64) {
	t.Helper()
	eventually(t, strconv.FormatInt(n, 10)+" clients connected", func() bool { return b.Stats().ClientsConnected == n })
}
