// Package client is the operator side of the protocol (the Go SDK):
// connect to the broker (with the agent's TLS options), keep a live view of
// the fleet (pkg/fleet) from the retained status and inventory, resolve a
// target to the hosts expected to answer, sign and publish a command, and
// follow its results and output chunks until every expected host has
// answered (Run). It depends on the protocol, security and fleet packages,
// never on agent internals. Rollouts over many hosts are pkg/rollout.
package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/security"
)

// Options configure a connection.
type Options struct {
	// URL is the broker (tcp://, ssl://, tls://, ws://, wss://, mqtt://,
	// mqtts://); URLs are more brokers tried in order after it (failover,
	// as the agent's broker.urls). At least one is required.
	URL      string
	URLs     []string
	ClientID string // "" = random
	Prefix   string // "" = protocol.DefaultPrefix
	Username string
	Password string
	// TLS is used for TLS URLs; when nil, TLSFiles builds it (the same
	// keys as the agent's broker.tls). Both empty: system roots.
	TLS      *tls.Config
	TLSFiles TLSFiles
	Timeout  time.Duration // connect and publish; default 10s
	// Reconnect makes the client reconnect by itself when the connection
	// is lost, and subscribe again (the fleet view included): for
	// long-running programs (dashboards, exporters). Commands in flight
	// may lose results published while it was away.
	Reconnect bool
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
}

// Client is an operator's connection. Its methods are safe for concurrent
// use.
type Client struct {
	c       mqtt.Client
	topics  protocol.Topics
	timeout time.Duration
	log     *slog.Logger

	subMu sync.Mutex
	subs  map[string]mqtt.MessageHandler // restored after a reconnect

	fleetMu sync.Mutex
	view    *fleet.View

	closeOnce sync.Once
	closing   chan struct{} // closed by Close
	wg        sync.WaitGroup
}

// Signer signs commands with an operator key.
type Signer struct {
	Kid string
	Key ed25519.PrivateKey
}

// Dial connects to the broker (clean session: an operator has no backlog).
func Dial(o Options) (*Client, error) {
	if o.Prefix == "" {
		o.Prefix = protocol.DefaultPrefix
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.ClientID == "" {
		o.ClientID = "mqagent-op-" + NewID()[16:]
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	urls := o.URLs
	if o.URL != "" {
		urls = append([]string{o.URL}, urls...)
	}
	if len(urls) == 0 {
		return nil, errors.New("broker: no URL given")
	}
	if o.TLS == nil && o.TLSFiles != (TLSFiles{}) {
		cfg, err := o.TLSFiles.Config()
		if err != nil {
			return nil, err
		}
		o.TLS = cfg
	}
	cl := &Client{topics: protocol.Topics{Prefix: o.Prefix}, timeout: o.Timeout, log: o.Logger, subs: map[string]mqtt.MessageHandler{}, closing: make(chan struct{})}
	// OrderMatters: a command's output chunks and its final result arrive
	// in the order the agent published them. The handlers never block.
	opts := mqtt.NewClientOptions().SetClientID(o.ClientID).SetCleanSession(true).
		SetAutoReconnect(o.Reconnect).SetConnectTimeout(o.Timeout).SetWriteTimeout(o.Timeout).SetOrderMatters(true).
		SetMaxReconnectInterval(30 * time.Second).
		SetOnConnectHandler(cl.onConnect).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { cl.log.Warn("broker connection lost", "err", err) })
	for _, u := range urls {
		opts.AddBroker(u)
	}
	if o.Username != "" {
		opts.SetUsername(o.Username).SetPassword(o.Password)
	}
	if o.TLS != nil {
		opts.SetTLSConfig(o.TLS)
	}
	c := mqtt.NewClient(opts)
	cl.c = c
	t := c.Connect()
	what := strings.Join(urls, ", ")
	if !t.WaitTimeout(o.Timeout*time.Duration(len(urls)) + time.Second) {
		c.Disconnect(0)
		return nil, fmt.Errorf("connect to %s: timed out", what)
	}
	if err := t.Error(); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", what, err)
	}
	return cl, nil
}

// onConnect subscribes again after a reconnect: with a clean session the
// broker forgot the subscriptions (on the first connect there are none).
func (c *Client) onConnect(mc mqtt.Client) {
	c.subMu.Lock()
	subs := make(map[string]mqtt.MessageHandler, len(c.subs))
	for f, h := range c.subs {
		subs[f] = h
	}
	c.subMu.Unlock()
	if len(subs) == 0 {
		return
	}
	c.log.Info("broker connection up again: subscribing again", "subscriptions", len(subs))
	for f, h := range subs {
		// Not waited for: this runs on paho's connection goroutine.
		mc.Subscribe(f, 1, h)
	}
}

// subscribe subscribes to filter and remembers it for reconnects.
func (c *Client) subscribe(filter string, h mqtt.MessageHandler) error {
	c.subMu.Lock()
	c.subs[filter] = h
	c.subMu.Unlock()
	// A broker may refuse a subscription (a SUBACK code above 2) and
	// paho reports no error for it. The embedded broker (mochi) does so,
	// with 0x91, when the SUBSCRIBE's packet id is that of a message it is
	// still sending us (retained ones right after an earlier
	// subscription): try again.
	delay := 10 * time.Millisecond
	for attempt := 1; ; attempt++ {
		tok := c.c.Subscribe(filter, 1, h)
		if err := c.wait(tok); err != nil {
			c.forget(filter)
			return fmt.Errorf("subscribe %s: %w", filter, err)
		}
		st, ok := tok.(*mqtt.SubscribeToken)
		if !ok || st.Result()[filter] <= 2 {
			return nil
		}
		if attempt == 5 {
			c.forget(filter)
			return fmt.Errorf("subscribe %s: refused by the broker", filter)
		}
		time.Sleep(delay)
		delay *= 2
	}
}

// unsubscribe ends a subscription made with subscribe (best effort).
func (c *Client) unsubscribe(filter string) {
	c.forget(filter)
	_ = c.wait(c.c.Unsubscribe(filter))
}

func (c *Client) forget(filter string) {
	c.subMu.Lock()
	delete(c.subs, filter)
	c.subMu.Unlock()
}

// Topics are the topic names under the client's prefix.
func (c *Client) Topics() protocol.Topics { return c.topics }

// Close ends every Run and Send still following results, then
// disconnects. It may be called more than once.
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		close(c.closing)
		c.wg.Wait()
		c.c.Disconnect(250)
	})
}

func (c *Client) wait(t mqtt.Token) error {
	if !t.WaitTimeout(c.timeout) {
		return errors.New("broker did not answer in time")
	}
	return t.Error()
}

// Statuses returns the retained status of every host the broker knows,
// collected for settle after the subscription is acknowledged. When the
// fleet view runs (Fleet), it answers from the view instead.
func (c *Client) Statuses(settle time.Duration) (map[string]protocol.Status, error) {
	if v := c.FleetView(); v != nil {
		return statusesFromView(v), nil
	}
	var mu sync.Mutex
	out := map[string]protocol.Status{}
	done := false // out belongs to the caller: late messages are dropped
	filter := c.topics.Status("+")
	err := c.wait(c.c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		var s protocol.Status
		if json.Unmarshal(m.Payload(), &s) == nil && s.Host != "" {
			mu.Lock()
			if !done {
				out[s.Host] = s
			}
			mu.Unlock()
		}
	}))
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", filter, err)
	}
	time.Sleep(settle) // retained messages arrive right after the SUBACK
	// Best effort: messages arriving later are dropped anyway.
	_ = c.wait(c.c.Unsubscribe(filter))
	mu.Lock()
	defer mu.Unlock()
	done = true
	return out, nil
}

// Event is a result or an output chunk of a command.
type Event struct {
	Result *protocol.Result
	Chunk  *protocol.Chunk
}

// Send subscribes to the command's results, then publishes it (signed when
// signer is set) on the topic its target names. Events arrive on the
// returned channel, in the order the agent published them, until ctx ends;
// the channel is then closed. Events wait in memory while the caller is
// not reading.
func (c *Client) Send(ctx context.Context, cmd protocol.Command, signer *Signer) (<-chan Event, error) {
	scope, name, err := protocol.ParseTarget(cmd.Target)
	if err != nil {
		return nil, err
	}
	if cmd.ID != "" && !protocol.ValidID(cmd.ID) {
		return nil, fmt.Errorf("id: %q is not a valid command id ([A-Za-z0-9._-]{1,64})", cmd.ID)
	}
	topic := map[protocol.Scope]string{
		protocol.ScopeHost: c.topics.HostCmd(name), protocol.ScopeGroup: c.topics.GroupCmd(name), protocol.ScopeAll: c.topics.AllCmd(),
	}[scope]
	if cmd.V == 0 {
		cmd.V = protocol.Version
	}
	if cmd.ID == "" {
		cmd.ID = NewID()
	}
	if cmd.IssuedAt.IsZero() {
		cmd.IssuedAt = protocol.Now()
	}
	payload, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	if signer != nil {
		if payload, err = json.Marshal(security.Sign(payload, signer.Kid, signer.Key)); err != nil {
			return nil, err
		}
	}
	q := &eventQueue{ready: make(chan struct{}, 1)}
	filter := c.topics.ResultsFilter(cmd.ID)
	err = c.subscribe(filter, func(_ mqtt.Client, m mqtt.Message) {
		var ev Event
		if strings.HasSuffix(m.Topic(), "/out") {
			var ch protocol.Chunk
			if json.Unmarshal(m.Payload(), &ch) != nil {
				return
			}
			ev.Chunk = &ch
		} else {
			var r protocol.Result
			if json.Unmarshal(m.Payload(), &r) != nil {
				return
			}
			ev.Result = &r
		}
		q.push(ev)
	})
	if err != nil {
		return nil, err
	}
	if err := c.wait(c.c.Publish(topic, 1, false, payload)); err != nil {
		c.unsubscribe(filter)
		return nil, fmt.Errorf("publish %s: %w", topic, err)
	}
	events := make(chan Event, 64)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(events)
		defer c.unsubscribe(filter)
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.closing:
				return
			case <-q.ready:
			}
			for _, ev := range q.take() {
				select {
				case events <- ev:
				case <-ctx.Done():
					return
				case <-c.closing:
					return
				}
			}
		}
	}()
	return events, nil
}

// eventQueue hands events from paho's message handler, which must not
// block, to the goroutine that feeds a Send channel, keeping their order.
type eventQueue struct {
	mu    sync.Mutex
	evs   []Event
	ready chan struct{} // capacity 1: a value means evs may be non-empty
}

func (q *eventQueue) push(ev Event) {
	q.mu.Lock()
	q.evs = append(q.evs, ev)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *eventQueue) take() []Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	evs := q.evs
	q.evs = nil
	return evs
}

// NewID returns a new command id: 26 characters of Crockford base32, a
// 48-bit millisecond time then 80 random bits (a ULID), so ids sort by time.
func NewID() string {
	const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	var b [16]byte
	ms := uint64(time.Now().UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	_, _ = rand.Read(b[6:])
	out := make([]byte, 26)
	// 128 bits -> 26 base32 digits, most significant first.
	var hi, lo uint64
	for i := 0; i < 8; i++ {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[i+8])
	}
	for i := 25; i >= 0; i-- {
		out[i] = alphabet[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out)
}
