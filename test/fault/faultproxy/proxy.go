// Package faultproxy is a TCP proxy for fault tests: it forwards
// connections from a loopback port to a target (an MQTT broker) and, on
// command, simulates what a network does to them when it breaks.
//
// The proxy is in one mode at a time (SetMode):
//
//   - Pass forwards bytes both ways.
//   - Blackhole is a partition: connections stay open but every byte is
//     read and dropped, in both directions, without a sound; a new
//     connection is accepted (the local end cannot tell) and never reaches
//     the target. When the proxy leaves Blackhole, the connections that
//     lost bytes (their stream has a hole), that were accepted during it,
//     or whose other end closed during it are reset, as a real peer that
//     gave up on them would; a connection that was idle throughout
//     carries on.
//   - Pause is a stalled link: nothing is read, so the senders' buffers
//     fill and their writes block; nothing is lost. When the proxy leaves
//     Pause, forwarding resumes where it stopped, and connections accepted
//     during it are then connected to the target.
//   - Reset resets (TCP RST) every connection, and every new one at once.
//
// Reset, outside the modes, resets the current connections once and leaves
// the mode as it is.
//
// Every goroutine of the proxy ends with Close, which resets what is still
// open.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what the proxy does to traffic.
type Mode int

// The modes; see the package documentation.
const (
	Pass Mode = iota
	Blackhole
	Pause
	Reset
)

// String names the mode.
func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Blackhole:
		return "blackhole"
	case Pause:
		return "pause"
	case Reset:
		return "reset"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// dialTimeout bounds the connection to the target.
const dialTimeout = 5 * time.Second

// bufSize is how much one direction reads at a time.
const bufSize = 32 << 10

// Stats are the proxy's counters.
type Stats struct {
	// Accepted is the number of connections accepted so far.
	Accepted uint64
	// Open is the number of connections open now.
	Open int
	// Forwarded and Dropped count bytes, both directions together.
	Forwarded uint64
	Dropped   uint64
	// Resets is the number of connections the proxy reset.
	Resets uint64
}

// Proxy is a running fault proxy. Its methods are safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener

	mu      sync.Mutex
	mode    Mode
	changed chan struct{} // closed and replaced on every mode change
	conns   map[*pair]struct{}
	closed  bool

	wg sync.WaitGroup

	accepted, forwarded, dropped, resets atomic.Uint64
}

// pair is one proxied connection: down is the accepted end, up the
// connection to the target (nil until it is made).
type pair struct {
	down *net.TCPConn
	up   *net.TCPConn
	// limbo is set (under Proxy.mu) when the connection must be reset as
	// soon as the proxy leaves the mode it is in: accepted while
	// blackholed, or one end closed while not passing.
	limbo bool
	once  sync.Once
	done  chan struct{} // closed once the pair is closed or reset
}

// Start listens on a free port of 127.0.0.1 and forwards to target
// (host:port), starting in Pass.
func Start(target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("faultproxy: target %q: %w", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{target: target, ln: ln, changed: make(chan struct{}), conns: map[*pair]struct{}{}}
	p.wg.Go(p.acceptLoop)
	return p, nil
}

// Addr is the proxy's address, 127.0.0.1:PORT.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is the proxy's address as an MQTT broker URL, tcp://127.0.0.1:PORT.
func (p *Proxy) URL() string { return "tcp://" + p.Addr() }

// Mode is the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// SetMode switches the proxy to m (see the package documentation for what
// each mode does to open connections). Switching to the current mode
// changes nothing.
func (p *Proxy) SetMode(m Mode) {
	p.mu.Lock()
	if p.closed || p.mode == m {
		p.mu.Unlock()
		return
	}
	p.mode = m
	close(p.changed)
	p.changed = make(chan struct{})
	var reset []*pair
	for c := range p.conns {
		if m == Reset || c.limbo {
			reset = append(reset, c)
		}
	}
	p.mu.Unlock()
	for _, c := range reset {
		p.reset(c)
	}
}

// Reset resets every open connection once; the mode stays as it is. It
// returns how many connections it reset.
func (p *Proxy) Reset() int {
	p.mu.Lock()
	list := make([]*pair, 0, len(p.conns))
	for c := range p.conns {
		list = append(list, c)
	}
	p.mu.Unlock()
	for _, c := range list {
		p.reset(c)
	}
	return len(list)
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	open := len(p.conns)
	p.mu.Unlock()
	return Stats{
		Accepted: p.accepted.Load(), Open: open,
		Forwarded: p.forwarded.Load(), Dropped: p.dropped.Load(), Resets: p.resets.Load(),
	}
}

// Close stops accepting, resets every connection and waits for the
// proxy's goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.changed) // wake every waiter; they see closed
	p.changed = make(chan struct{})
	p.mu.Unlock()
	err := p.ln.Close()
	p.Reset()
	p.wg.Wait()
	return err
}

// state returns the mode, the channel closed on its next change, and
// whether the proxy is closed.
func (p *Proxy) state() (Mode, <-chan struct{}, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.changed, p.closed
}

func (p *Proxy) acceptLoop() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.accepted.Add(1)
		c2 := &pair{down: c.(*net.TCPConn), done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			p.rst(c2.down)
			continue
		}
		p.conns[c2] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.serve(c2) })
	}
}

// serve connects an accepted connection to the target once the mode
// allows it.
func (p *Proxy) serve(c *pair) {
	for {
		mode, changed, closed := p.state()
		if closed {
			p.reset(c)
			return
		}
		switch mode {
		case Reset:
			p.reset(c)
			return
		case Pause:
			// Not read: the client's CONNECT waits in its socket.
			select {
			case <-changed:
			case <-c.done:
				return
			}
			continue
		case Blackhole:
			// Accepted, read and dropped, never connected; reset when
			// the proxy leaves Blackhole (SetMode).
			p.mu.Lock()
			c.limbo = true
			p.mu.Unlock()
			if p.Mode() != Blackhole {
				p.reset(c)
				return
			}
			p.discard(c.down)
			p.reset(c)
			return
		}
		d := net.Dialer{Timeout: dialTimeout}
		up, err := d.Dial("tcp", p.target)
		if err != nil {
			p.reset(c)
			return
		}
		p.mu.Lock()
		c.up = up.(*net.TCPConn)
		p.mu.Unlock()
		select {
		case <-c.done: // reset while dialing
			p.rst(c.up)
			return
		default:
		}
		p.wg.Go(func() { p.pipe(c, c.up, c.down) })
		p.pipe(c, c.down, c.up)
		return
	}
}

// discard reads and drops from conn until it fails (closed or reset).
func (p *Proxy) discard(conn net.Conn) {
	buf := make([]byte, bufSize)
	for {
		n, err := conn.Read(buf)
		p.dropped.Add(uint64(n))
		if err != nil {
			return
		}
	}
}

// pipe copies src to dst as the mode allows, until src ends.
func (p *Proxy) pipe(c *pair, src, dst *net.TCPConn) {
	buf := make([]byte, bufSize)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.forward(c, dst, buf[:n]) {
			return
		}
		if err != nil {
			p.ended(c, err)
			return
		}
	}
}

// forward hands one read to dst as the mode says. It returns false when
// the connection is finished.
func (p *Proxy) forward(c *pair, dst *net.TCPConn, b []byte) bool {
	for {
		mode, changed, closed := p.state()
		if closed {
			p.reset(c)
			return false
		}
		switch mode {
		case Pass:
			if _, err := dst.Write(b); err != nil {
				p.reset(c)
				return false
			}
			p.forwarded.Add(uint64(len(b)))
			return true
		case Blackhole:
			// The stream has a hole now: reset when the partition heals.
			p.dropped.Add(uint64(len(b)))
			p.mu.Lock()
			c.limbo = true
			p.mu.Unlock()
			return true
		case Reset:
			p.reset(c)
			return false
		case Pause:
			select { // held: resumes with the next mode
			case <-changed:
			case <-c.done:
				return false
			}
		}
	}
}

// ended handles the end of one direction: while passing, the other end is
// closed too (a FIN, or a reset when the end was reset); otherwise the
// other end must not notice until the proxy leaves its mode.
func (p *Proxy) ended(c *pair, err error) {
	p.mu.Lock()
	if p.mode == Pass || p.closed {
		p.mu.Unlock()
		if errors.Is(err, io.EOF) {
			p.closePair(c)
		} else {
			p.reset(c)
		}
		return
	}
	c.limbo = true
	p.mu.Unlock()
	// SetMode resets c when the mode changes; Close resets it too.
}

// closePair closes both ends gracefully and forgets the pair.
func (p *Proxy) closePair(c *pair) {
	c.once.Do(func() {
		p.forget(c)
		close(c.done)
		_ = c.down.Close()
		if up := p.upOf(c); up != nil {
			_ = up.Close()
		}
	})
}

// reset resets both ends (RST, not FIN) and forgets the pair.
func (p *Proxy) reset(c *pair) {
	c.once.Do(func() {
		p.forget(c)
		close(c.done)
		p.resets.Add(1)
		p.rst(c.down)
		if up := p.upOf(c); up != nil {
			p.rst(up)
		}
	})
}

func (p *Proxy) upOf(c *pair) *net.TCPConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return c.up
}

func (p *Proxy) forget(c *pair) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// rst closes conn with a reset: linger 0 makes the kernel send RST.
func (p *Proxy) rst(conn *net.TCPConn) {
	_ = conn.SetLinger(0)
	_ = conn.Close()
}
