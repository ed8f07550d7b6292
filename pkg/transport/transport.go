// Package transport owns the agent's persistent MQTT session over
// paho.mqtt.golang: client id = host id, clean session false, QoS 1
// subscriptions made again on every connect, a retained last will and birth
// carrying a session number that grows with every connection (a new will
// before each reconnect), several broker URLs with failover, and reconnects
// with capped, jittered backoff.
//
// Messages are never acknowledged by paho on its own: the receiver calls
// Message.Ack once the command is safely in the journal, so a message that
// arrives while the agent is stopping is redelivered by the broker to the
// next session instead of being lost. Handlers registered here never block.
package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// ErrNotConnected is returned by Publish while there is no connection.
var ErrNotConnected = errors.New("not connected to the broker")

// ErrAckTimeout is returned by Token.Wait when the broker has not
// acknowledged a publish in time on a connection that is still up: the
// broker is slow, and the publish is still in flight.
var ErrAckTimeout = errors.New("publish not acknowledged in time")

// Message is a received command message. Ack must be called once it has
// been handled (or durably taken over); until then the broker keeps it.
type Message struct {
	Topic   string
	Payload []byte
	Dup     bool
	Ack     func()
}

// Options configure a Client.
type Options struct {
	ClientID       string
	URLs           []string
	Username       string
	Password       string
	TLS            *tls.Config // nil: no TLS settings (plain tcp/ws, or system roots)
	KeepAlive      time.Duration
	ConnectTimeout time.Duration
	WriteTimeout   time.Duration
	ReconnectMin   time.Duration
	ReconnectMax   time.Duration

	// Subscriptions are the command topics, subscribed at QoS 1 on every
	// connect. Unsubscribe are topics of the persistent session to drop
	// (groups the host no longer has); they are unsubscribed once.
	Subscriptions []string
	Unsubscribe   []string

	// NextSession returns the next session number (persisted by the caller).
	NextSession func() (uint64, error)
	// WillTopic is the retained status topic; Will and Birth build the
	// offline ("lost") and online payloads of one session.
	WillTopic string
	Will      func(session uint64) []byte
	Birth     func(session uint64) []byte
	// OnConnect runs after subscribing and before the birth is published,
	// on every connection (first is true the first time). It may publish.
	OnConnect func(ctx context.Context, first bool)
	// OnMessage receives every command message. It must not block.
	OnMessage func(Message)

	// Dialer, when set, opens tcp/tls connections (a copy is used, with
	// ConnectTimeout): e.g. a LocalAddr, so that the swarm simulator can
	// spread thousands of sessions over several source addresses.
	Dialer *net.Dialer

	Logger *slog.Logger
}

// State is a snapshot of the connection for status and health reports.
type State struct {
	Connected  bool
	Broker     string
	Session    uint64
	Reconnects uint64
	LastError  string
}

// Client is a persistent MQTT session. Publish is safe for concurrent use.
type Client struct {
	o   Options
	log *slog.Logger

	mu        sync.Mutex
	cur       mqtt.Client   // nil while disconnected
	down      chan struct{} // closed when cur's connection is lost
	lostCh    chan error    // cur's loss channel, for Reconnect
	session   uint64
	broker    string
	lastErr   string
	connected chan struct{} // closed while connected; replaced on loss

	reconnects atomic.Uint64
}

// New validates opts and returns a Client; Run connects it.
func New(o Options) (*Client, error) {
	switch {
	case o.ClientID == "":
		return nil, errors.New("transport: client id is required")
	case len(o.URLs) == 0:
		return nil, errors.New("transport: at least one broker url is required")
	case o.NextSession == nil || o.Will == nil || o.Birth == nil || o.OnMessage == nil:
		return nil, errors.New("transport: NextSession, Will, Birth and OnMessage are required")
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 30 * time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.ReconnectMin <= 0 {
		o.ReconnectMin = time.Second
	}
	if o.ReconnectMax < o.ReconnectMin {
		o.ReconnectMax = max(60*time.Second, o.ReconnectMin)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Client{o: o, log: o.Logger, connected: make(chan struct{})}, nil
}

// Connected returns a channel that is closed while a connection is up (it
// is replaced by an open one when the connection is lost).
func (c *Client) Connected() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

// State returns a snapshot of the connection.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return State{
		Connected:  c.cur != nil,
		Broker:     c.broker,
		Session:    c.session,
		Reconnects: c.reconnects.Load(),
		LastError:  c.lastErr,
	}
}

// Run keeps the session connected until ctx ends. It returns nil on ctx end;
// the caller then publishes its offline status and calls Disconnect.
func (c *Client) Run(ctx context.Context) error {
	first := true
	attempt := 0
	for ctx.Err() == nil {
		lost, err := c.connect(ctx, first)
		if err != nil {
			c.setErr(err)
			attempt++
			d := c.backoff(attempt)
			c.log.Warn("broker connection failed", "err", err, "retry_in", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				break
			}
			continue
		}
		first, attempt = false, 0
		select {
		case <-ctx.Done():
		case err := <-lost:
			c.setErr(err)
			if cl := c.markLost(); cl != nil && cl.IsConnectionOpen() {
				cl.Disconnect(100) // Reconnect: drop it ourselves
			}
			c.reconnects.Add(1)
			// Jitter even the first retry so a fleet does not reconnect
			// in lockstep after a broker restart.
			d := time.Duration(rand.Int64N(int64(c.o.ReconnectMin) + 1))
			c.log.Warn("broker connection lost", "err", err, "retry_in", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				return nil
			}
		}
	}
	return nil
}

// backoff is "full jitter" exponential backoff capped at ReconnectMax.
func (c *Client) backoff(attempt int) time.Duration {
	ceil := c.o.ReconnectMin << min(attempt, 20)
	if ceil > c.o.ReconnectMax || ceil <= 0 {
		ceil = c.o.ReconnectMax
	}
	return c.o.ReconnectMin/2 + time.Duration(rand.Int64N(int64(ceil)))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (c *Client) setErr(err error) {
	c.mu.Lock()
	c.lastErr = err.Error()
	c.mu.Unlock()
}

// markLost forgets the current connection and returns it.
func (c *Client) markLost() mqtt.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.cur
	if cl != nil {
		c.cur, c.lostCh = nil, nil
		c.connected = make(chan struct{})
	}
	return cl
}

// Reconnect drops the current connection as if it was lost, so that the
// broker delivers again what was not acknowledged; Run reconnects after a
// jittered delay. It never blocks.
func (c *Client) Reconnect(reason error) {
	c.mu.Lock()
	lost := c.lostCh
	c.mu.Unlock()
	if lost == nil {
		return
	}
	select {
	case lost <- reason:
	default:
	}
}

// connect makes one connection: a new paho client with this session's will,
// subscriptions, OnConnect, birth. It returns a channel that receives the
// reason when the connection is lost.
func (c *Client) connect(ctx context.Context, first bool) (<-chan error, error) {
	session, err := c.o.NextSession()
	if err != nil {
		return nil, fmt.Errorf("session counter: %w", err)
	}
	lost := make(chan error, 1)
	down := make(chan struct{}) // closed when this connection is lost
	var downOnce sync.Once
	var attempted atomic.Value // the broker URL of the last connection attempt
	attempted.Store("")
	handler := func(_ mqtt.Client, m mqtt.Message) {
		c.o.OnMessage(Message{Topic: m.Topic(), Payload: m.Payload(), Dup: m.Duplicate(), Ack: m.Ack})
	}
	opts := mqtt.NewClientOptions().
		SetClientID(c.o.ClientID).
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		// MQTT 3.1.1 only: left unset, paho retries every failed attempt
		// with MQTT 3.1, which doubles an attempt against a broker that
		// does not answer, outlasts the wait below, and can leave a
		// session on the older protocol.
		SetProtocolVersion(4).
		SetOrderMatters(true).
		SetAutoAckDisabled(true).
		SetResumeSubs(false).
		SetKeepAlive(c.o.KeepAlive).
		SetPingTimeout(min(c.o.KeepAlive/2, 10*time.Second)).
		SetConnectTimeout(c.o.ConnectTimeout).
		SetWriteTimeout(c.o.WriteTimeout).
		SetMaxResumePubInFlight(64).
		SetDefaultPublishHandler(handler).
		SetBinaryWill(c.o.WillTopic, c.o.Will(session), 1, true).
		SetConnectionAttemptHandler(func(u *url.URL, cfg *tls.Config) *tls.Config {
			attempted.Store(u.Redacted())
			return cfg
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			downOnce.Do(func() { close(down) })
			select {
			case lost <- err:
			default:
			}
		})
	for _, u := range c.o.URLs {
		opts.AddBroker(u)
	}
	if c.o.Username != "" {
		opts.SetUsername(c.o.Username).SetPassword(c.o.Password)
	}
	if c.o.TLS != nil {
		opts.SetTLSConfig(c.o.TLS)
	}
	if c.o.Dialer != nil {
		d := *c.o.Dialer
		d.Timeout = c.o.ConnectTimeout
		opts.SetDialer(&d)
	}
	cl := mqtt.NewClient(opts)
	tok := cl.Connect()
	if !tok.WaitTimeout(c.o.ConnectTimeout + time.Second) {
		cl.Disconnect(0)
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	drop := func(err error) (<-chan error, error) {
		cl.Disconnect(100)
		return nil, err
	}
	// Subscriptions persist in the broker's session, but subscribing again
	// on every connect heals a broker that lost its state.
	if len(c.o.Subscriptions) > 0 {
		filters := make(map[string]byte, len(c.o.Subscriptions))
		for _, t := range c.o.Subscriptions {
			filters[t] = 1
		}
		st := cl.SubscribeMultiple(filters, handler)
		if err := c.wait(ctx, st); err != nil {
			return drop(fmt.Errorf("subscribe: %w", err))
		}
		if st, ok := st.(*mqtt.SubscribeToken); ok {
			for topic, code := range st.Result() {
				switch {
				case code == 0x80:
					return drop(fmt.Errorf("subscribe %s: refused by the broker", topic))
				case code > 0x80:
					// Not a 3.1.1 code: mochi (the embedded broker) answers
					// 0x91 "packet identifier in use" when our SUBSCRIBE's id
					// equals one of its own in-flight deliveries (it shares
					// one id space for both directions). The persistent
					// session keeps the subscription from before, so going
					// on is right; dropping would loop forever, since the
					// same deliveries are in flight at every reconnect.
					c.log.Warn("broker answered a subscribe with a non-3.1.1 code; the session's subscription is kept", "topic", topic, "code", fmt.Sprintf("%#x", code))
				}
			}
		}
	}
	if first && len(c.o.Unsubscribe) > 0 {
		if err := c.wait(ctx, cl.Unsubscribe(c.o.Unsubscribe...)); err != nil {
			c.log.Warn("unsubscribe from old groups failed", "topics", c.o.Unsubscribe, "err", err)
		}
	}
	broker := attempted.Load().(string)
	c.mu.Lock()
	c.cur, c.down, c.lostCh, c.session, c.broker = cl, down, lost, session, broker
	close(c.connected)
	c.mu.Unlock()
	if c.o.OnConnect != nil {
		c.o.OnConnect(ctx, first)
	}
	if err := c.PublishWait(ctx, c.o.WillTopic, 1, true, c.o.Birth(session)); err != nil {
		// The birth may have reached the broker, and a clean disconnect
		// discards the will: say offline ourselves while we still can (if
		// the connection is broken, the broker publishes the will anyway).
		_ = c.PublishWait(ctx, c.o.WillTopic, 1, true, c.o.Will(session))
		c.markLost()
		return drop(fmt.Errorf("publish birth: %w", err))
	}
	c.log.Info("connected to broker", "broker", broker, "session", session)
	return lost, nil
}

func (c *Client) wait(ctx context.Context, t mqtt.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(c.o.WriteTimeout):
		return errors.New("timed out waiting for the broker")
	}
}

// Token is an in-flight publish.
type Token struct {
	t    mqtt.Token
	cl   mqtt.Client
	down <-chan struct{}
}

// Wait waits up to d for the broker's acknowledgement. It reports success
// only when the broker acknowledged the message on a connection that is
// still up, and fails at once when that connection is lost: with a
// persistent session paho leaves such tokens pending (or, in other
// setups, completes them without error), so a token alone proves nothing.
func (t Token) Wait(d time.Duration) error {
	if t.t == nil {
		return ErrNotConnected
	}
	select {
	case <-t.t.Done():
	default:
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-t.t.Done():
		case <-t.down:
			return ErrNotConnected
		case <-timer.C:
			return ErrAckTimeout
		}
	}
	if err := t.t.Error(); err != nil {
		return err
	}
	if !t.cl.IsConnectionOpen() {
		return ErrNotConnected
	}
	return nil
}

// Publish starts a publish on the current connection. It never blocks for
// long: when disconnected the returned Token fails with ErrNotConnected.
func (c *Client) Publish(topic string, qos byte, retain bool, payload []byte) Token {
	c.mu.Lock()
	cl, down := c.cur, c.down
	c.mu.Unlock()
	if cl == nil {
		return Token{}
	}
	return Token{t: cl.Publish(topic, qos, retain, payload), cl: cl, down: down}
}

// PublishWait publishes and waits for the acknowledgement (WriteTimeout).
func (c *Client) PublishWait(ctx context.Context, topic string, qos byte, retain bool, payload []byte) error {
	t := c.Publish(topic, qos, retain, payload)
	if t.t == nil {
		return ErrNotConnected
	}
	select {
	case <-t.t.Done():
	case <-t.down:
		return ErrNotConnected
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(c.o.WriteTimeout):
	}
	return t.Wait(0)
}

// Disconnect closes the connection cleanly (no will is published).
func (c *Client) Disconnect() {
	c.mu.Lock()
	cl := c.cur
	c.cur = nil
	c.mu.Unlock()
	if cl != nil {
		cl.Disconnect(500)
	}
}
