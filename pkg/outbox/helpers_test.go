package outbox_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/mqagent/mqagent/pkg/broker"
	"github.com/mqagent/mqagent/pkg/state"
	"github.com/mqagent/mqagent/pkg/transport"
)

// waitTimeout bounds every wait in these tests.
const waitTimeout = 10 * time.Second

func TestMain(m *testing.M) {
	// paho's Disconnect leaves a goroutine that waits out its quiesce time.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/eclipse/paho.mqtt.golang.(*client).Disconnect.func1"))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startBroker starts an embedded broker on addr ("127.0.0.1:0" for a free
// port) persisting to dir. The caller closes it (also done at cleanup).
func startBroker(t testing.TB, addr, dir string) *broker.Broker {
	t.Helper()
	b, err := broker.New(broker.Options{TCPAddr: addr, DataDir: dir, Logger: testLogger(t).With("component", "broker")})
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	if err := b.Start(); err != nil {
		t.Fatalf("broker Start: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func openStore(t testing.TB) *state.Store {
	t.Helper()
	s, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatalf("state.Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// agentClient is a transport.Client connected (by Run in a goroutine) to
// url; it is stopped at cleanup.
type agentClient struct {
	*transport.Client
	sessions atomic.Uint64
}

func startClient(t testing.TB, url string) *agentClient {
	t.Helper()
	ac := &agentClient{}
	c, err := transport.New(transport.Options{
		ClientID:       "h-1",
		URLs:           []string{url},
		ConnectTimeout: 2 * time.Second,
		WriteTimeout:   500 * time.Millisecond,
		ReconnectMin:   20 * time.Millisecond,
		ReconnectMax:   100 * time.Millisecond,
		NextSession:    func() (uint64, error) { return ac.sessions.Add(1), nil },
		WillTopic:      "t/status",
		Will:           func(s uint64) []byte { return fmt.Appendf(nil, `{"state":"offline","session":%d}`, s) },
		Birth:          func(s uint64) []byte { return fmt.Appendf(nil, `{"state":"online","session":%d}`, s) },
		OnMessage:      func(transport.Message) {},
		Logger:         testLogger(t).With("component", "transport"),
	})
	if err != nil {
		t.Fatalf("transport.New: %v", err)
	}
	ac.Client = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		c.Disconnect()
	})
	return ac
}

// waitOnline waits until c is connected and sub has seen its birth (the
// connection is set up completely: nothing of it still waits for the
// broker).
func waitOnline(t testing.TB, c *transport.Client, sub *subscriber) {
	t.Helper()
	select {
	case <-c.Connected():
	case <-time.After(waitTimeout):
		t.Fatalf("client not connected within %v (state %+v)", waitTimeout, c.State())
	}
	want := fmt.Sprintf(`{"state":"online","session":%d}`, c.State().Session)
	eventually(t, "birth "+want, func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		return sub.status == want
	})
}

// subscriber is a raw paho client with a persistent session that records
// the payloads it receives on t/data/#.
type subscriber struct {
	paho.Client
	mu     sync.Mutex
	msgs   []string
	status string // last payload on t/status
}

func startSubscriber(t testing.TB, url, id string) *subscriber {
	t.Helper()
	s := &subscriber{}
	opts := paho.NewClientOptions().AddBroker(url).SetClientID(id).
		SetCleanSession(false).SetOrderMatters(true).
		SetAutoReconnect(true).SetMaxReconnectInterval(50 * time.Millisecond).
		SetConnectTimeout(2 * time.Second).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if m.Topic() == "t/status" {
				s.status = string(m.Payload())
				return
			}
			s.msgs = append(s.msgs, string(m.Payload()))
		})
	s.Client = paho.NewClient(opts)
	waitToken(t, "subscriber connect", s.Connect())
	waitToken(t, "subscribe", s.SubscribeMultiple(map[string]byte{"t/data/#": 1, "t/status": 1}, nil))
	t.Cleanup(func() { s.Disconnect(50) })
	return s
}

func (s *subscriber) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

func waitToken(t testing.TB, what string, tok paho.Token) {
	t.Helper()
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("%s: timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eventually polls cond until it holds, failing after waitTimeout.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v", what, waitTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pushN pushes messages "0".."n-1" on t/data/{i} (QoS 1) to s.
func pushN(t testing.TB, s *state.Store, from, n int) {
	t.Helper()
	msgs := make([]state.Message, 0, n)
	for i := from; i < from+n; i++ {
		msgs = append(msgs, state.Message{Topic: fmt.Sprintf("t/data/%d", i), QoS: 1, Payload: fmt.Appendf(nil, "%d", i)})
	}
	if err := s.Push(msgs...); err != nil {
		t.Fatalf("Push: %v", err)
	}
}

func seq(from, n int) []string {
	out := make([]string, 0, n)
	for i := from; i < from+n; i++ {
		out = append(out, fmt.Sprint(i))
	}
	return out
}

// proxy forwards TCP connections to a broker. It can hold back everything
// the broker sends (PUBACKs included) and cut every connection abruptly.
type proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
	hold  chan struct{} // non-nil: broker-to-client data waits until closed
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
		p.release()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) url() string { return "tcp://" + p.ln.Addr().String() }

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
		go p.pipe(out, in, false)
		go p.pipe(in, out, true)
	}
}

func (p *proxy) pipe(dst, src net.Conn, held bool) {
	defer p.wg.Done()
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if held {
				p.mu.Lock()
				h := p.hold
				p.mu.Unlock()
				if h != nil {
					<-h
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// holdBack makes broker-to-client data wait until release.
func (p *proxy) holdBack() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hold == nil {
		p.hold = make(chan struct{})
	}
}

func (p *proxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hold != nil {
		close(p.hold)
		p.hold = nil
	}
}

// cut closes every proxied connection on both sides.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}
