package faultproxy

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Bounds of the test's waits. quiet is the deliberate negative wait ("no
// byte arrives"): on loopback a forwarded byte takes microseconds.
const (
	wait  = 5 * time.Second
	quiet = 150 * time.Millisecond
)

// end is one end of a TCP connection whose reads are collected by a
// goroutine.
type end struct {
	conn net.Conn
	in   chan []byte
	done chan struct{} // closed when a read failed; err says why
	err  error
	buf  []byte
}

func newEnd(t *testing.T, c net.Conn) *end {
	e := &end{conn: c, in: make(chan []byte, 1024), done: make(chan struct{})}
	go func() {
		defer close(e.done)
		for {
			b := make([]byte, 64<<10)
			n, err := c.Read(b)
			if n > 0 {
				e.in <- b[:n]
			}
			if err != nil {
				e.err = err
				return
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-e.done })
	return e
}

func (e *end) write(t *testing.T, b []byte) {
	t.Helper()
	if err := e.conn.SetWriteDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.conn.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// expect waits until the bytes read so far start with want, and consumes
// them.
func (e *end) expect(t *testing.T, want []byte) {
	t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for len(e.buf) < len(want) {
		select {
		case b := <-e.in:
			e.buf = append(e.buf, b...)
		case <-timer.C:
			t.Fatalf("got %d of %d bytes within %v", len(e.buf), len(want), wait)
		}
	}
	if !bytes.Equal(e.buf[:len(want)], want) {
		t.Fatalf("bytes differ from what was sent (got %d bytes)", len(want))
	}
	e.buf = e.buf[len(want):]
}

// expectNothing checks that no byte arrives and the connection stays open
// for quiet.
func (e *end) expectNothing(t *testing.T) {
	t.Helper()
	select {
	case b := <-e.in:
		t.Fatalf("got %d bytes, want none", len(b))
	case <-e.done:
		t.Fatalf("connection ended: %v", e.err)
	case <-time.After(quiet):
	}
}

// expectReset waits for the connection to be reset (not closed).
func (e *end) expectReset(t *testing.T) {
	t.Helper()
	select {
	case <-e.done:
	case <-time.After(wait):
		t.Fatal("connection not reset")
	}
	if !errors.Is(e.err, syscall.ECONNRESET) {
		t.Fatalf("connection ended with %v, want a reset", e.err)
	}
}

// expectEOF waits for the connection to be closed gracefully.
func (e *end) expectEOF(t *testing.T) {
	t.Helper()
	select {
	case <-e.done:
	case <-time.After(wait):
		t.Fatal("connection not closed")
	}
	if e.err == nil || errors.Is(e.err, syscall.ECONNRESET) {
		t.Fatalf("connection ended with %v, want EOF", e.err)
	}
}

// upstream is the proxy's target: it hands over each accepted
// connection.
type upstream struct {
	ln       net.Listener
	accepted chan net.Conn
	wg       sync.WaitGroup
}

func startUpstream(t *testing.T) *upstream {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{ln: ln, accepted: make(chan net.Conn, 16)}
	u.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.accepted <- c
		}
	})
	t.Cleanup(func() {
		ln.Close()
		u.wg.Wait()
		for {
			select {
			case c := <-u.accepted:
				c.Close()
			default:
				return
			}
		}
	})
	return u
}

// next waits for the next connection the proxy makes.
func (u *upstream) next(t *testing.T) *end {
	t.Helper()
	select {
	case c := <-u.accepted:
		return newEnd(t, c)
	case <-time.After(wait):
		t.Fatal("the proxy did not connect to the target")
		return nil
	}
}

// none checks that the proxy makes no connection for quiet.
func (u *upstream) none(t *testing.T) {
	t.Helper()
	select {
	case c := <-u.accepted:
		c.Close()
		t.Fatal("the proxy connected to the target")
	case <-time.After(quiet):
	}
}

// setup starts a target and a proxy to it.
func setup(t *testing.T) (*Proxy, *upstream) {
	t.Helper()
	u := startUpstream(t)
	p, err := Start(u.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return p, u
}

// dial connects a client through p.
func dial(t *testing.T, p *Proxy) *end {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), wait)
	if err != nil {
		t.Fatal(err)
	}
	return newEnd(t, c)
}

// dialReset connects through p and expects the connection to be reset:
// while connecting (the reset can beat the end of the handshake) or on the
// first read.
func dialReset(t *testing.T, p *Proxy) {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), wait)
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	newEnd(t, c).expectReset(t)
}

// connected dials through p and returns both ends once the proxy has
// connected to the target.
func connected(t *testing.T, p *Proxy, u *upstream) (client, server *end) {
	t.Helper()
	client = dial(t, p)
	return client, u.next(t)
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + i>>9)
	}
	return b
}

func TestStartRejectsABadTarget(t *testing.T) {
	for _, target := range []string{"", "no-port", "127.0.0.1"} {
		if p, err := Start(target); err == nil {
			p.Close()
			t.Errorf("Start(%q): no error", target)
		}
	}
}

func TestPassForwardsBothWays(t *testing.T) {
	p, u := setup(t)
	c, s := connected(t, p, u)
	big := payload(3 << 20)
	go func() { _, _ = c.conn.Write(big) }() // larger than the socket buffers
	s.expect(t, big)
	s.write(t, []byte("pong"))
	c.expect(t, []byte("pong"))
	// The counter follows the write that delivered the bytes.
	want := Stats{Accepted: 1, Open: 1, Forwarded: uint64(len(big) + 4)}
	deadline := time.Now().Add(wait)
	for p.Stats() != want {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want %+v", p.Stats(), want)
		}
		time.Sleep(time.Millisecond)
	}
	// A graceful close on one side closes the other.
	c.conn.Close()
	s.expectEOF(t)
}

func TestBlackhole(t *testing.T) {
	tests := []struct {
		name string
		// during acts while the proxy is blackholed; after checks once it
		// passes again.
		during func(t *testing.T, p *Proxy, u *upstream, c, s *end)
		after  func(t *testing.T, p *Proxy, u *upstream, c, s *end)
	}{{
		name: "bytes dropped both ways, then the broken connection is reset",
		during: func(t *testing.T, p *Proxy, u *upstream, c, s *end) {
			c.write(t, []byte("to server"))
			s.write(t, []byte("to client"))
			s.expectNothing(t)
			c.expectNothing(t)
			if st := p.Stats(); st.Dropped != 18 {
				t.Fatalf("dropped %d bytes, want 18", st.Dropped)
			}
		},
		after: func(t *testing.T, p *Proxy, u *upstream, c, s *end) {
			c.expectReset(t)
			s.expectReset(t)
		},
	}, {
		name: "an idle connection carries on",
		during: func(t *testing.T, p *Proxy, u *upstream, c, s *end) {
			c.expectNothing(t)
		},
		after: func(t *testing.T, p *Proxy, u *upstream, c, s *end) {
			c.write(t, []byte("still here"))
			s.expect(t, []byte("still here"))
		},
	}, {
		name: "the target's close is hidden until the partition heals",
		during: func(t *testing.T, p *Proxy, u *upstream, c, s *end) {
			s.conn.Close()
			c.expectNothing(t)
		},
		after: func(t *testing.T, p *Proxy, u *upstream, c, s *end) {
			c.expectReset(t)
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, u := setup(t)
			c, s := connected(t, p, u)
			c.write(t, []byte("hello"))
			s.expect(t, []byte("hello"))
			p.SetMode(Blackhole)
			if p.Mode() != Blackhole {
				t.Fatalf("mode %v", p.Mode())
			}
			tt.during(t, p, u, c, s)
			p.SetMode(Pass)
			tt.after(t, p, u, c, s)
		})
	}
}

func TestBlackholeAcceptsAndForgets(t *testing.T) {
	p, u := setup(t)
	c, s := connected(t, p, u)
	p.SetMode(Blackhole)
	n := dial(t, p)
	n.write(t, []byte("CONNECT"))
	u.none(t)
	n.expectNothing(t)
	if st := p.Stats(); st.Accepted != 2 || st.Open != 2 {
		t.Fatalf("stats %+v", st)
	}
	p.SetMode(Pass)
	n.expectReset(t)
	waitOpen(t, p, 1)
	// The old, idle connection still works.
	c.write(t, []byte("x"))
	s.expect(t, []byte("x"))
}

// waitOpen waits until the proxy holds n connections.
func waitOpen(t *testing.T, p *Proxy, n int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for p.Stats().Open != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open, want %d", p.Stats().Open, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPauseHoldsAndResumes(t *testing.T) {
	p, u := setup(t)
	c, s := connected(t, p, u)
	p.SetMode(Pause)
	// More than the socket buffers hold: the writer blocks, nothing is
	// lost.
	big := payload(8 << 20)
	wrote := make(chan error, 1)
	go func() { _, err := c.conn.Write(big); wrote <- err }()
	s.write(t, []byte("down"))
	s.expectNothing(t)
	c.expectNothing(t)
	select {
	case err := <-wrote:
		t.Fatalf("an 8 MiB write through a paused link returned (%v)", err)
	default:
	}
	// A connection made during the pause reaches the target only after.
	n := dial(t, p)
	n.write(t, []byte("CONNECT"))
	u.none(t)
	p.SetMode(Pass)
	s.expect(t, big)
	c.expect(t, []byte("down"))
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	ns := u.next(t)
	ns.expect(t, []byte("CONNECT"))
	if st := p.Stats(); st.Dropped != 0 || st.Resets != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPauseHidesTheTargetsClose(t *testing.T) {
	p, u := setup(t)
	c, s := connected(t, p, u)
	p.SetMode(Pause)
	s.conn.Close()
	c.expectNothing(t)
	p.SetMode(Pass)
	c.expectReset(t)
}

func TestReset(t *testing.T) {
	p, u := setup(t)
	c, s := connected(t, p, u)
	if n := p.Reset(); n != 1 {
		t.Fatalf("reset %d connections, want 1", n)
	}
	c.expectReset(t)
	s.expectReset(t)
	// The mode is still Pass: a new connection works.
	c2, s2 := connected(t, p, u)
	c2.write(t, []byte("again"))
	s2.expect(t, []byte("again"))

	// In Reset mode, open connections and new ones are reset.
	p.SetMode(Reset)
	c2.expectReset(t)
	s2.expectReset(t)
	dialReset(t, p)
	u.none(t)
	if st := p.Stats(); st.Resets != 3 || st.Open != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestResetWhilePaused(t *testing.T) {
	p, u := setup(t)
	c, s := connected(t, p, u)
	p.SetMode(Pause)
	pending := dial(t, p) // waits for the pause to end
	c.write(t, []byte("held"))
	waitOpen(t, p, 2)
	if n := p.Reset(); n != 2 {
		t.Fatalf("reset %d connections, want 2", n)
	}
	c.expectReset(t)
	s.expectReset(t)
	pending.expectReset(t)
	p.SetMode(Pass)
	u.none(t)
}

func TestUnreachableTarget(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The proxy takes its port while the target's is still held, so that
	// it cannot get the same one.
	p, err := Start(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ln.Close() // nothing listens there now
	dialReset(t, p)
}

func TestCloseResetsEverything(t *testing.T) {
	modes := []Mode{Pass, Blackhole, Pause}
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			u := startUpstream(t)
			p, err := Start(u.ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c, s := connected(t, p, u)
			p.SetMode(m)
			n := dial(t, p) // accepted in mode m
			c.write(t, []byte("x"))
			waitOpen(t, p, 2)
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			c.expectReset(t)
			s.expectReset(t)
			n.expectReset(t)
			if err := p.Close(); err != nil {
				t.Fatalf("second close: %v", err)
			}
			// Closed: nothing listens any more.
			if c, err := net.DialTimeout("tcp", p.Addr(), wait); err == nil {
				c.Close()
				t.Fatal("a closed proxy accepted a connection")
			}
		})
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{Pass: "pass", Blackhole: "blackhole", Pause: "pause", Reset: "reset", Mode(9): "mode(9)"} {
		if got := m.String(); got != want {
			t.Errorf("%d: %q, want %q", int(m), got, want)
		}
	}
}
