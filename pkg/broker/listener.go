package broker

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The listeners implement mochi's listeners.Listener around a net.Listener
// the broker opened itself. mochi's own TCP and WebSocket listeners cannot
// report the port chosen for port 0 (WebSocket), stop serving for good on
// the first accept error (EMFILE at the fd limit), never time out a
// connection that sends no CONNECT, and do not wait for their connections
// on Close.

var (
	_ listeners.Listener = (*tcpListener)(nil)
	_ listeners.Listener = (*wsListener)(nil)
)

// Accept back-off after an error such as EMFILE.
const (
	minAcceptDelay = 5 * time.Millisecond
	maxAcceptDelay = time.Second
)

// tracker counts a listener's connection goroutines and closes their
// connections on shutdown. Once closed it admits nothing new, so wait never
// races with a late admission.
type tracker struct {
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// enter admits one connection goroutine; false once the tracker is closed.
func (t *tracker) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

// track registers c to be closed by closeAll; false (c is closed) once the
// tracker is closed. Only call it between enter and exit.
func (t *tracker) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		_ = c.Close()
		return false
	}
	if t.conns == nil {
		t.conns = make(map[net.Conn]struct{})
	}
	t.conns[c] = struct{}{}
	return true
}

// exit ends a goroutine admitted by enter; c (may be nil) is forgotten.
func (t *tracker) exit(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	t.wg.Done()
}

// closeAll refuses new connections, closes the tracked ones and waits
// for every admitted goroutine to exit.
func (t *tracker) closeAll() {
	t.mu.Lock()
	t.closed = true
	for c := range t.conns {
		_ = c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
}

// serveState lets Close wait for a Serve that mochi runs in its own goroutine,
// even when Close comes before that goroutine started.
type serveState struct {
	mu      sync.Mutex
	closed  bool
	started bool
	done    chan struct{} // closed when Serve returns
	stop    chan struct{} // closed by close
}

func newServeState() serveState {
	return serveState{done: make(chan struct{}), stop: make(chan struct{})}
}

// begin reports whether Serve may run; false after close.
func (s *serveState) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.started = true
	return true
}

// close marks the state closed (true the first time) and reports whether
// Serve started (so its end must be awaited on done).
func (s *serveState) close() (first, started bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, s.started
	}
	s.closed = true
	close(s.stop)
	return true, s.started
}

func (s *serveState) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// tuneConn sets TCP_NODELAY (Go's default, made explicit: with Nagle every
// command round trip costs ~40 ms) and the deadline for the CONNECT packet;
// mochi replaces the deadline with 1.5 × keepalive once connected.
func tuneConn(c net.Conn, connectTimeout time.Duration) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	_ = c.SetDeadline(time.Now().Add(connectTimeout))
}

// logEstablish logs how a client connection ended, when that is news:
// ordinary ends (EOF, closed, reset, timeout) are logged by mochi at Debug.
func logEstablish(log *slog.Logger, listener, remote string, err error) {
	if err == nil || ordinaryEnd(err) {
		return
	}
	log.Warn("client connection ended with an error", "listener", listener, "remote", remote, "error", err)
}

func ordinaryEnd(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, packets.ErrSessionTakenOver) || errors.Is(err, packets.ErrServerShuttingDown) ||
		errors.Is(err, packets.CodeDisconnect) ||
		(errors.As(err, &ne) && ne.Timeout()) ||
		websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived, websocket.CloseAbnormalClosure)
}

// acceptDelay doubles d within [minAcceptDelay, maxAcceptDelay].
func acceptDelay(d time.Duration) time.Duration {
	if d == 0 {
		return minAcceptDelay
	}
	return min(2*d, maxAcceptDelay)
}

// tcpListener serves MQTT over TCP from a net.Listener.
type tcpListener struct {
	id             string
	ln             net.Listener
	connectTimeout time.Duration
	log            *slog.Logger
	conns          tracker
	serve          serveState
}

func newTCPListener(id string, ln net.Listener, connectTimeout time.Duration) *tcpListener {
	return &tcpListener{
		id:             id,
		ln:             ln,
		connectTimeout: connectTimeout,
		log:            slog.New(slog.DiscardHandler),
		serve:          newServeState(),
	}
}

// Init implements listeners.Listener; the socket is already open.
func (l *tcpListener) Init(log *slog.Logger) error {
	if log != nil {
		l.log = log
	}
	return nil
}

// ID implements listeners.Listener.
func (l *tcpListener) ID() string { return l.id }

// Address implements listeners.Listener: the actual host:port.
func (l *tcpListener) Address() string { return l.ln.Addr().String() }

// Protocol implements listeners.Listener.
func (l *tcpListener) Protocol() string { return "tcp" }

// Serve implements listeners.Listener: it accepts connections until Close.
func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	if !l.serve.begin() {
		return
	}
	defer close(l.serve.done)
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if l.serve.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			delay = acceptDelay(delay)
			l.log.Warn("accept failed; retrying", "error", err, "retry_in", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.serve.stop:
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		if !l.conns.enter() {
			_ = c.Close()
			return
		}
		tuneConn(c, l.connectTimeout)
		if !l.conns.track(c) {
			l.conns.exit(nil)
			return
		}
		go func() {
			defer l.conns.exit(c)
			defer func() { _ = c.Close() }()
			logEstablish(l.log, l.id, c.RemoteAddr().String(), establish(l.id, c))
		}()
	}
}

// Close implements listeners.Listener: it stops accepting, lets mochi
// disconnect its clients, closes what is left (connections still in the
// CONNECT handshake) and waits for every connection goroutine and Serve.
func (l *tcpListener) Close(closeClients listeners.CloseFn) {
	first, started := l.serve.close()
	if !first {
		return
	}
	_ = l.ln.Close()
	closeClients(l.id)
	l.conns.closeAll()
	if started {
		<-l.serve.done
	}
}

// closeListener closes a listener that was never attached to mochi.
func (l *tcpListener) closeListener() { l.Close(func(string) {}) }

// wsListener serves MQTT over WebSocket (subprotocol "mqtt", binary
// messages) on every request path.
type wsListener struct {
	id             string
	ln             net.Listener
	connectTimeout time.Duration
	readLimit      int64
	log            *slog.Logger
	httpSrv        *http.Server
	upgrader       websocket.Upgrader
	conns          tracker
	serve          serveState

	mu        sync.Mutex
	establish listeners.EstablishFn
}

func newWSListener(id string, ln net.Listener, connectTimeout time.Duration, maxPacket int64) *wsListener {
	l := &wsListener{
		id:             id,
		ln:             ln,
		connectTimeout: connectTimeout,
		// An MQTT packet is at most maxPacket plus its fixed header (≤ 5 bytes).
		readLimit: maxPacket + 16,
		log:       slog.New(slog.DiscardHandler),
		serve:     newServeState(),
		upgrader: websocket.Upgrader{
			Subprotocols: []string{"mqtt", "mqttv3.1"},
			// Dashboards are served from other origins. The security issue
			// will restrict this together with authentication.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	l.httpSrv = &http.Server{
		Handler:           http.HandlerFunc(l.handle),
		ReadHeaderTimeout: connectTimeout,
		IdleTimeout:       connectTimeout, // between plain HTTP requests
	}
	return l
}

// Init implements listeners.Listener; the socket is already open.
func (l *wsListener) Init(log *slog.Logger) error {
	if log != nil {
		l.log = log
	}
	l.httpSrv.ErrorLog = slog.NewLogLogger(l.log.Handler(), slog.LevelDebug)
	return nil
}

// ID implements listeners.Listener.
func (l *wsListener) ID() string { return l.id }

// Address implements listeners.Listener: the actual host:port.
func (l *wsListener) Address() string { return l.ln.Addr().String() }

// Protocol implements listeners.Listener.
func (l *wsListener) Protocol() string { return "ws" }

// Serve implements listeners.Listener: it serves HTTP until Close.
func (l *wsListener) Serve(establish listeners.EstablishFn) {
	if !l.serve.begin() {
		return
	}
	defer close(l.serve.done)
	l.mu.Lock()
	l.establish = establish
	l.mu.Unlock()
	err := l.httpSrv.Serve(l.ln)
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !l.serve.isClosed() {
		l.log.Error("websocket listener stopped", "error", err)
	}
}

// handle upgrades one request and runs the MQTT connection on it.
func (l *wsListener) handle(w http.ResponseWriter, r *http.Request) {
	if !l.conns.enter() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	var tracked net.Conn
	defer func() { l.conns.exit(tracked) }()
	l.mu.Lock()
	establish := l.establish
	l.mu.Unlock()
	ws, err := l.upgrader.Upgrade(w, r, nil) // writes the HTTP error itself
	if err != nil {
		l.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "error", err)
		return
	}
	ws.SetReadLimit(l.readLimit)
	c := &wsConn{Conn: ws.NetConn(), ws: ws}
	tuneConn(ws.NetConn(), l.connectTimeout)
	if !l.conns.track(c) {
		return
	}
	tracked = c
	defer func() { _ = c.Close() }()
	logEstablish(l.log, l.id, c.RemoteAddr().String(), establish(l.id, c))
}

// Close implements listeners.Listener, like tcpListener.Close.
func (l *wsListener) Close(closeClients listeners.CloseFn) {
	first, started := l.serve.close()
	if !first {
		return
	}
	// Closes the socket and every connection not yet upgraded; handlers of
	// upgraded (hijacked) ones are ended below.
	_ = l.httpSrv.Close()
	_ = l.ln.Close() // in case Serve never ran
	closeClients(l.id)
	l.conns.closeAll()
	if started {
		<-l.serve.done
	}
}

// closeListener closes a listener that was never attached to mochi.
func (l *wsListener) closeListener() { l.Close(func(string) {}) }

// wsConn is a WebSocket connection seen as the byte stream mochi reads MQTT
// packets from: every binary message continues the stream, every Write is
// one binary message. Adapted from mochi's listeners/websocket.go (MIT).
type wsConn struct {
	net.Conn // the underlying connection, for addresses, deadlines and Close
	ws       *websocket.Conn
	r        io.Reader // the message being read, nil between messages
}

// Read reads from the current binary message, moving on to the next one
// when it is used up.
func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			op, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, listeners.ErrInvalidMessage
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			err = nil
			if n == 0 {
				continue // empty message or end of one: read the next
			}
		}
		return n, err
	}
}

// Write sends p as one binary message.
func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
