// Package broker is the embedded MQTT broker that `mqagent broker` and
// `mqagent dev` run. It wraps github.com/mochi-mqtt/server/v2 with settings
// that suit an agent fleet (MQTT 3.1.1, persistent sessions, QoS 1, retained
// status and last wills) and with fixes for the mochi defaults and bugs that
// would lose or reorder a fleet's messages:
//
//   - its own TCP and WebSocket listeners, so port 0 works (TCPAddr and
//     WSAddr report the real port), TCP_NODELAY is set explicitly, a client
//     that never sends CONNECT is dropped after a timeout, an accept error
//     such as "too many open files" is retried instead of killing the
//     listener, and Close ends every connection and waits for it;
//   - limits sized for a fleet: a client may have MaxQueuedPerClient QoS 1/2
//     messages queued (offline or unacknowledged) and MaxPendingWrites
//     messages waiting for its socket; mochi's forced one-day expiry of queued
//     and retained messages is switched off (a host status stays retained
//     until replaced) and disconnected sessions live for SessionExpiry;
//   - queued messages are re-sent in the order they were queued when a
//     session resumes (mochi sorts them by a 16-bit truncated second, which
//     shuffles them);
//   - persistence (DataDir) in a bbolt file written by one background
//     goroutine in batches, which, unlike mochi's bolt hook, keeps the packet
//     ids of queued messages (mochi's collapses them all into one after a
//     restart) and does not put a disk write on the publish path.
//
// A QoS 1 or 2 message dropped for lack of room (MaxQueuedPerClient,
// MaxPendingWrites) is logged at Warn and counted in Stats; an expired
// session's queue is logged at Info.
package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// Defaults applied by New to zero fields of Options.
const (
	DefaultMaxQueuedPerClient = 10000
	DefaultMaxMessageBytes    = 1 << 20
	DefaultSessionExpiry      = 30 * 24 * time.Hour
)

// Limits checked by New.
const (
	// MaxQueuedLimit is the largest MaxQueuedPerClient: a session's queued
	// messages each hold one of the 65,535 MQTT packet ids.
	MaxQueuedLimit = math.MaxUint16
	// MinMessageBytes and MaxMessageBytesLimit bound MaxMessageBytes; the
	// upper bound is the largest packet MQTT can encode.
	MinMessageBytes      = 256
	MaxMessageBytesLimit = 268435455
	// MaxSessionExpiry is the longest SessionExpiry (MQTT's 32-bit seconds).
	MaxSessionExpiry = time.Duration(math.MaxUint32) * time.Second
)

// Internal timings.
const (
	defaultConnectTimeout = 10 * time.Second // a new connection must send CONNECT within this
	defaultLockTimeout    = 2 * time.Second  // wait this long for another process to release DataDir
	sysTopicInterval      = 10               // seconds between $SYS updates
	dbFileName            = "broker.db"
)

// Errors returned by Start and New.
var (
	// ErrInvalidOptions is wrapped by every error New returns.
	ErrInvalidOptions = errors.New("invalid broker options")
	// ErrClosed is returned by Start after Close or after a failed Start.
	ErrClosed = errors.New("broker closed")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("broker already started")
	// ErrDataDirInUse is wrapped when another broker holds DataDir's lock.
	ErrDataDirInUse = errors.New("data dir in use by another broker")
)

// Options configure the embedded broker. Zero values are safe defaults.
type Options struct {
	// TCPAddr is the MQTT over TCP listen address, e.g. "127.0.0.1:1883";
	// port 0 picks a free port (see Broker.TCPAddr); "" disables TCP.
	TCPAddr string
	// WSAddr is the MQTT over WebSocket listen address for dashboards, e.g.
	// "127.0.0.1:1884"; every request path ("/", "/mqtt", ...) is served;
	// "" disables WebSocket. At least one of TCPAddr and WSAddr is required.
	WSAddr string
	// DataDir, when set, persists sessions, subscriptions, retained and
	// queued messages to DataDir/broker.db so they survive a restart; ""
	// keeps them in memory only. Writes reach the file a few milliseconds
	// after the event (a background goroutine commits them in batches); Close
	// writes everything. The file is locked: two brokers cannot share it.
	DataDir string
	// Logger receives the broker's logs; nil discards them.
	Logger *slog.Logger
	// Authorizer decides who may connect and which topics they may use;
	// nil allows everything (development, see AllowAll).
	Authorizer Authorizer
	// MaxQueuedPerClient is how many QoS 1/2 messages a session may hold
	// unacknowledged, offline or not (default 10,000, at most 65,535).
	// Past it, new messages for that client are dropped and logged at Warn.
	MaxQueuedPerClient int
	// MaxPendingWrites is how many messages a connected client may have
	// waiting for its socket (default MaxQueuedPerClient). Past it, messages
	// are dropped and logged at Warn. Each session reserves 8 bytes per slot
	// up front (80 KB at the default), which the garbage collector scans:
	// lower it for fleets of many thousands of hosts.
	MaxPendingWrites int
	// MaxMessageBytes is the largest MQTT packet accepted (payload, topic
	// and headers; default 1 MiB). A client sending a bigger one is
	// disconnected (its will is published).
	MaxMessageBytes int
	// SessionExpiry is how long a disconnected persistent session (clean
	// session false), with its subscriptions and queued messages, is kept
	// (default 30 days, whole seconds, at least 1 s).
	SessionExpiry time.Duration
}

// Stats are counters of a running broker.
type Stats struct {
	ClientsConnected int64 // clients connected now
	Sessions         int64 // sessions known: connected clients and kept offline sessions
	Subscriptions    int64 // subscriptions of all sessions
	Retained         int64 // retained messages
	Inflight         int64 // QoS 1/2 messages queued or unacknowledged, all sessions (O(sessions) to count)
	WriteDropped     int64 // messages dropped because a client had MaxPendingWrites waiting
	QueueDropped     int64 // messages dropped because a session held MaxQueuedPerClient
}

// Broker is an embedded MQTT broker. Create it with New, then Start it;
// a Broker runs once: after Close (or a failed Start) make a new one.
type Broker struct {
	opts           Options
	log            *slog.Logger // silenced by logGate once closed
	logGate        logGate
	connectTimeout time.Duration
	lockTimeout    time.Duration

	mu      sync.Mutex
	state   int // stateNew, stateStarted, stateClosed
	srv     *mqtt.Server
	tcp     *tcpListener
	ws      *wsListener
	store   *store
	session *sessionHook
}

const (
	stateNew = iota
	stateStarted
	stateClosed
)

// New validates opts, applies defaults and returns a broker that is not yet
// listening. Errors wrap ErrInvalidOptions.
func New(opts Options) (*Broker, error) {
	if err := opts.normalize(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	h := slog.DiscardHandler
	if opts.Logger != nil {
		h = opts.Logger.Handler()
	}
	b := &Broker{
		opts:           opts,
		connectTimeout: defaultConnectTimeout,
		lockTimeout:    defaultLockTimeout,
	}
	b.log = slog.New(gateHandler{h: h, gate: &b.logGate})
	return b, nil
}

// normalize checks o and fills defaults in place.
func (o *Options) normalize() error {
	if o.TCPAddr == "" && o.WSAddr == "" {
		return errors.New("no listener: set TCPAddr or WSAddr")
	}
	if err := checkAddr("TCPAddr", o.TCPAddr); err != nil {
		return err
	}
	if err := checkAddr("WSAddr", o.WSAddr); err != nil {
		return err
	}
	if o.DataDir != "" {
		o.DataDir = filepath.Clean(o.DataDir)
	}
	if o.Authorizer == nil {
		o.Authorizer = AllowAll{}
	}
	switch {
	case o.MaxQueuedPerClient < 0 || o.MaxQueuedPerClient > MaxQueuedLimit:
		return fmt.Errorf("MaxQueuedPerClient %d out of range 0..%d", o.MaxQueuedPerClient, MaxQueuedLimit)
	case o.MaxQueuedPerClient == 0:
		o.MaxQueuedPerClient = DefaultMaxQueuedPerClient
	}
	switch {
	case o.MaxPendingWrites < 0 || o.MaxPendingWrites > math.MaxInt32:
		return fmt.Errorf("MaxPendingWrites %d out of range 0..%d", o.MaxPendingWrites, math.MaxInt32)
	case o.MaxPendingWrites == 0:
		o.MaxPendingWrites = o.MaxQueuedPerClient
	}
	switch {
	case o.MaxMessageBytes == 0:
		o.MaxMessageBytes = DefaultMaxMessageBytes
	case o.MaxMessageBytes < MinMessageBytes || o.MaxMessageBytes > MaxMessageBytesLimit:
		return fmt.Errorf("MaxMessageBytes %d out of range %d..%d", o.MaxMessageBytes, MinMessageBytes, MaxMessageBytesLimit)
	}
	switch {
	case o.SessionExpiry == 0:
		o.SessionExpiry = DefaultSessionExpiry
	case o.SessionExpiry < time.Second || o.SessionExpiry > MaxSessionExpiry:
		return fmt.Errorf("SessionExpiry %v out of range 1s..%v", o.SessionExpiry, MaxSessionExpiry)
	}
	return nil
}

// checkAddr accepts "" or host:port with a numeric port (host may be empty).
func checkAddr(name, addr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: %w", name, addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > math.MaxUint16 {
		return fmt.Errorf("%s %q: port must be a number 0..65535", name, addr)
	}
	return nil
}

// capabilities are mochi's limits derived from o.
func (o *Options) capabilities() *mqtt.Capabilities {
	c := mqtt.NewDefaultServerCapabilities()
	// mochi deletes queued and retained messages older than this (default
	// one day): a retained host status must outlive a quiet day, and queued
	// commands carry their own expiry (expires_at).
	c.MaximumMessageExpiryInterval = 0
	c.MaximumSessionExpiryInterval = uint32(o.SessionExpiry / time.Second)
	c.MaximumInflight = uint16(o.MaxQueuedPerClient)
	c.MaximumClientWritesPending = int32(o.MaxPendingWrites)
	c.MaximumPacketSize = uint32(o.MaxMessageBytes)
	// Inbound QoS 2 flows a client may have open before being disconnected;
	// a QoS 2 burst past mochi's 1024 would cut the publisher off.
	c.ReceiveMaximum = math.MaxUint16
	return c
}

// Start opens the listeners and the data file and serves clients. It
// returns once the listeners accept connections, or an error naming the
// address or file that failed (wrapping ErrDataDirInUse when DataDir is
// locked by another broker). After a failed Start, the broker is closed.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case stateStarted:
		return ErrStarted
	case stateClosed:
		return ErrClosed
	}
	b.state = stateClosed // until everything below succeeded
	if err := b.start(); err != nil {
		b.cleanupFailedStart()
		b.logGate.close()
		return err
	}
	b.state = stateStarted
	return nil
}

func (b *Broker) start() error {
	o := &b.opts
	b.srv = mqtt.New(&mqtt.Options{
		Capabilities:           o.capabilities(),
		Logger:                 b.log,
		SysTopicResendInterval: sysTopicInterval,
	})
	if err := b.srv.AddHook(&authHook{auth: o.Authorizer}, nil); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	b.session = &sessionHook{srv: b.srv, log: b.log, pendingWrites: o.MaxPendingWrites}
	if err := b.srv.AddHook(b.session, nil); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	if o.DataDir != "" {
		if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
			return fmt.Errorf("broker: create data dir: %w", err)
		}
		st, err := openStore(filepath.Join(o.DataDir, dbFileName), b.lockTimeout, b.log)
		if err != nil {
			return err
		}
		if err := b.srv.AddHook(st, nil); err != nil {
			_ = st.Stop()
			return fmt.Errorf("broker: %w", err)
		}
		b.store = st
	}
	if o.TCPAddr != "" {
		ln, err := net.Listen("tcp", o.TCPAddr)
		if err != nil {
			return fmt.Errorf("broker: tcp listener on %s: %w", o.TCPAddr, err)
		}
		b.tcp = newTCPListener("tcp", ln, b.connectTimeout)
		if err := b.srv.AddListener(b.tcp); err != nil {
			return fmt.Errorf("broker: %w", err)
		}
	}
	if o.WSAddr != "" {
		ln, err := net.Listen("tcp", o.WSAddr)
		if err != nil {
			return fmt.Errorf("broker: websocket listener on %s: %w", o.WSAddr, err)
		}
		b.ws = newWSListener("ws", ln, b.connectTimeout, int64(o.MaxMessageBytes))
		if err := b.srv.AddListener(b.ws); err != nil {
			return fmt.Errorf("broker: %w", err)
		}
	}
	if err := b.srv.Serve(); err != nil {
		return fmt.Errorf("broker: load persisted state: %w", err)
	}
	return nil
}

// cleanupFailedStart releases whatever start opened.
func (b *Broker) cleanupFailedStart() {
	if b.srv != nil {
		// Closes the attached listeners and stops the hooks (the store).
		_ = b.srv.Close()
	}
	// Listeners created but not attached (AddListener failed); closing
	// twice is harmless.
	if b.tcp != nil {
		b.tcp.closeListener()
	}
	if b.ws != nil {
		b.ws.closeListener()
	}
}

// TCPAddr returns the TCP listener's actual host:port after Start, or "" if
// TCP is disabled or the broker is not running.
func (b *Broker) TCPAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != stateStarted || b.tcp == nil {
		return ""
	}
	return b.tcp.Address()
}

// WSAddr returns the WebSocket listener's actual host:port after Start, or ""
// if WebSocket is disabled or the broker is not running.
func (b *Broker) WSAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != stateStarted || b.ws == nil {
		return ""
	}
	return b.ws.Address()
}

// Stats returns the broker's counters; zero before Start.
func (b *Broker) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv == nil {
		return Stats{}
	}
	info := b.srv.Info
	s := Stats{
		ClientsConnected: atomic.LoadInt64(&info.ClientsConnected),
		Sessions:         int64(b.srv.Clients.Len()),
		Subscriptions:    atomic.LoadInt64(&info.Subscriptions),
		Retained:         countRetained(b.srv),
		Inflight:         countInflight(b.srv),
		QueueDropped:     atomic.LoadInt64(&info.InflightDropped),
	}
	if b.session != nil {
		s.WriteDropped = b.session.dropped.Load()
	}
	return s
}

// countInflight counts the queued messages of all sessions (mochi's own
// counter, Info.Inflight, drifts: a session takeover subtracts the queue it
// hands over).
func countInflight(srv *mqtt.Server) int64 {
	var n int64
	for _, cl := range srv.Clients.GetAll() {
		n += int64(cl.State.Inflight.Len())
	}
	return n
}

// countRetained counts retained messages, leaving out mochi's $SYS topics.
func countRetained(srv *mqtt.Server) int64 {
	var n int64
	for topic := range srv.Topics.Retained.GetAll() {
		if !strings.HasPrefix(topic, mqtt.SysPrefix) {
			n++
		}
	}
	return n
}

// Close stops the listeners, disconnects every client (their wills are
// published, as for any lost connection), waits for their goroutines and
// writes all pending state to DataDir. It is idempotent; the error is that
// of the data file, if any.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != stateStarted {
		b.state = stateClosed
		return nil
	}
	b.state = stateClosed
	_ = b.srv.Close() // always nil; closes listeners, then stops hooks
	b.logGate.close()
	if b.store != nil {
		return b.store.Err()
	}
	return nil
}
