// Package client is the operator side of the protocol: connect to the
// broker, read the fleet's retained status, sign and publish a command, and
// receive its results and output chunks. It depends on the protocol and
// security packages only, never on agent internals. The full SDK (fleet
// view, targeting, rollouts) grows here.
package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/security"
)

// Options configure a connection.
type Options struct {
	URL      string
	ClientID string // "" = random
	Prefix   string // "" = protocol.DefaultPrefix
	Username string
	Password string
	TLS      *tls.Config
	Timeout  time.Duration // connect and publish; default 10s
}

// Client is an operator's connection.
type Client struct {
	c       mqtt.Client
	topics  protocol.Topics
	timeout time.Duration
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
	// OrderMatters: a command's output chunks and its final result arrive
	// in the order the agent published them. The handlers never block.
	opts := mqtt.NewClientOptions().AddBroker(o.URL).SetClientID(o.ClientID).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(o.Timeout).SetWriteTimeout(o.Timeout).SetOrderMatters(true)
	if o.Username != "" {
		opts.SetUsername(o.Username).SetPassword(o.Password)
	}
	if o.TLS != nil {
		opts.SetTLSConfig(o.TLS)
	}
	c := mqtt.NewClient(opts)
	t := c.Connect()
	if !t.WaitTimeout(o.Timeout + time.Second) {
		return nil, fmt.Errorf("connect to %s: timed out", o.URL)
	}
	if err := t.Error(); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", o.URL, err)
	}
	return &Client{c: c, topics: protocol.Topics{Prefix: o.Prefix}, timeout: o.Timeout}, nil
}

// Close disconnects.
func (c *Client) Close() { c.c.Disconnect(250) }

func (c *Client) wait(t mqtt.Token) error {
	if !t.WaitTimeout(c.timeout) {
		return errors.New("broker did not answer in time")
	}
	return t.Error()
}

// Statuses returns the retained status of every host the broker knows,
// collected for settle after the subscription is acknowledged.
func (c *Client) Statuses(settle time.Duration) (map[string]protocol.Status, error) {
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
	err = c.wait(c.c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
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
	}))
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", filter, err)
	}
	if err := c.wait(c.c.Publish(topic, 1, false, payload)); err != nil {
		c.c.Unsubscribe(filter)
		return nil, fmt.Errorf("publish %s: %w", topic, err)
	}
	events := make(chan Event, 64)
	go func() {
		defer close(events)
		defer c.c.Unsubscribe(filter)
		for {
			select {
			case <-ctx.Done():
				return
			case <-q.ready:
			}
			for _, ev := range q.take() {
				select {
				case events <- ev:
				case <-ctx.Done():
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
