package broker

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"
)

const waitTimeout = 10 * time.Second // bound on every wait in these tests

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger writes the broker's logs to the test log, so a failing test
// shows what the broker said.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// startBroker starts a broker on 127.0.0.1 port 0 (TCP, and WebSocket
// unless opts says otherwise) and closes it when the test ends.
func startBroker(t testing.TB, opts Options) *Broker {
	t.Helper()
	if opts.TCPAddr == "" {
		opts.TCPAddr = "127.0.0.1:0"
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	b, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := b.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// client is a paho MQTT 3.1.1 client that records every message it receives.
type client struct {
	paho.Client
	msgs chan paho.Message
	lost chan error
}

type dialOpts struct {
	clean    bool
	username string
	will     *willMsg
}

// dial connects a paho client to url (tcp://… or ws://…) and disconnects it
// when the test ends; a connection error fails the test.
func dial(t testing.TB, url, id string, o dialOpts) *client {
	t.Helper()
	c, err := tryDial(t, url, id, o)
	if err != nil {
		t.Fatalf("connect %s as %q: %v", url, id, err)
	}
	return c
}

func tryDial(t testing.TB, url, id string, o dialOpts) (*client, error) {
	t.Helper()
	c := &client{msgs: make(chan paho.Message, 20000), lost: make(chan error, 1)}
	po := paho.NewClientOptions().
		AddBroker(url).
		SetClientID(id).
		SetProtocolVersion(4).
		SetCleanSession(o.clean).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(waitTimeout).
		SetKeepAlive(30 * time.Second).
		SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { c.msgs <- m }).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case c.lost <- err:
			default:
			}
		})
	if o.username != "" {
		po.SetUsername(o.username).SetPassword("pw")
	}
	if w := o.will; w != nil {
		po.SetBinaryWill(w.topic, w.payload, w.qos, w.retained)
	}
	c.Client = paho.NewClient(po)
	tok := c.Connect()
	if !tok.WaitTimeout(waitTimeout) {
		c.Disconnect(0)
		t.Fatalf("connect %s as %q: timed out", url, id)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

// willMsg is a client's last will.
type willMsg struct {
	topic    string
	payload  []byte
	qos      byte
	retained bool
}

func wait(t testing.TB, what string, tok paho.Token) {
	t.Helper()
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("%s: timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func (c *client) subscribe(t testing.TB, filter string, qos byte) {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	wait(t, "subscribe "+filter, tok)
	if code := tok.(*paho.SubscribeToken).Result()[filter]; code != qos {
		t.Fatalf("subscribe %s: granted %#x, want %#x", filter, code, qos)
	}
	// mochi sends SUBACK before the retained messages of the filter, and
	// the subscription is live before both: a message retained meanwhile
	// would arrive twice (retained and live). The broker handles a client's
	// packets in order, so the PUBACK of this publish means that the
	// retained messages were sent.
	c.publish(t, "test/sync", 1, false, "")
}

func (c *client) publish(t testing.TB, topic string, qos byte, retained bool, payload string) {
	t.Helper()
	wait(t, "publish "+topic, c.Publish(topic, qos, retained, payload))
}

// publishSeq publishes payloads "0".."n-1" at QoS 1 without waiting for each
// acknowledgement, then waits for all of them.
func (c *client) publishSeq(t testing.TB, topic string, n int) {
	t.Helper()
	toks := make([]paho.Token, n)
	for i := range n {
		toks[i] = c.Publish(topic, 1, false, strconv.Itoa(i))
	}
	for i, tok := range toks {
		wait(t, "publish #"+strconv.Itoa(i), tok)
	}
}

// next returns the next message received, failing after waitTimeout.
func (c *client) next(t testing.TB) paho.Message {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(waitTimeout):
		t.Fatalf("no message within %v", waitTimeout)
		return nil
	}
}

// expectSeq checks that the next n messages are on topic with payloads
// "0".."n-1" in order.
func (c *client) expectSeq(t testing.TB, topic string, n int) {
	t.Helper()
	for i := range n {
		m := c.next(t)
		if m.Topic() != topic || string(m.Payload()) != strconv.Itoa(i) {
			t.Fatalf("message %d: got %s %q, want %s %q", i, m.Topic(), m.Payload(), topic, strconv.Itoa(i))
		}
	}
}

// expectNone checks that no message is waiting (used to assert an absence
// after a later message proved that delivery has caught up).
func (c *client) expectNone(t testing.TB) {
	t.Helper()
	select {
	case m := <-c.msgs:
		t.Fatalf("unexpected message %s %q", m.Topic(), m.Payload())
	default:
	}
}

// proxy forwards TCP connections to a target and can cut them all abruptly,
// to make a client's connection die without a DISCONNECT.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		_ = p.ln.Close()
		p.kill()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
}

// kill closes every proxied connection on both sides at once.
func (p *proxy) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v", what, waitTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
