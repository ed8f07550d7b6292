package harness

import (
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// mqttTimeout bounds every MQTT handshake the operator waits for (connect,
// subscribe, publish).
const mqttTimeout = 10 * time.Second

// Message is one MQTT message the operator received.
type Message struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Retained bool
	At       time.Time
}

// OperatorOption changes how NewOperator connects.
type OperatorOption func(*operatorOptions)

type operatorOptions struct {
	prefix   string
	username string
	password string
	tls      *tls.Config
}

// WithPrefix sets the topic prefix (default protocol.DefaultPrefix).
func WithPrefix(prefix string) OperatorOption {
	return func(o *operatorOptions) { o.prefix = prefix }
}

// WithCredentials sets the MQTT username and password.
func WithCredentials(username, password string) OperatorOption {
	return func(o *operatorOptions) { o.username, o.password = username, password }
}

// WithTLSConfig sets the TLS configuration for ssl:// and wss:// broker
// URLs (e.g. PKI.ClientTLS with an operator certificate).
func WithTLSConfig(c *tls.Config) OperatorOption {
	return func(o *operatorOptions) { o.tls = c }
}

// hostResult is a result with the host named by its topic.
type hostResult struct {
	host string
	r    protocol.Result
}

// Operator is an MQTT client playing the operator in a test: it sends
// commands and records what agents publish. It connects with a unique
// client id and a clean session, re-subscribes after a reconnect (the
// broker forgets a clean session's subscriptions), and disconnects in the
// test's cleanup.
//
// Every received message on a contract topic is decoded and indexed;
// payloads that break the contract (not JSON, "v" not 1, a host or id
// differing from the topic's) are recorded as problems, and any problem
// fails the test at cleanup.
//
// Waits are event-driven and bounded: a wait fails the test with what was
// seen so far when its timeout passes.
type Operator struct {
	t      testing.TB
	client mqtt.Client
	topics protocol.Topics

	mu        sync.Mutex
	changed   Notifier // wakes waitFor on every change
	filters   []string // subscriptions, restored on reconnect
	connected bool
	losses    int // connections lost so far
	results   map[string][]hostResult
	chunks    map[string][]protocol.Chunk
	statuses  map[string][]protocol.Status
	audits    map[string][]protocol.Audit
	messages  map[string][]Message
	problems  []string
}

// NewOperator connects an operator to brokerURL (tcp://, ws://, …).
func NewOperator(t testing.TB, brokerURL string, opts ...OperatorOption) *Operator {
	t.Helper()
	o := operatorOptions{prefix: protocol.DefaultPrefix}
	for _, opt := range opts {
		opt(&o)
	}
	op := &Operator{
		t:        t,
		topics:   protocol.Topics{Prefix: o.prefix},
		results:  make(map[string][]hostResult),
		chunks:   make(map[string][]protocol.Chunk),
		statuses: make(map[string][]protocol.Status),
		audits:   make(map[string][]protocol.Audit),
		messages: make(map[string][]Message),
	}
	copts := mqtt.NewClientOptions().
		AddBroker(brokerURL).
		SetClientID("op-" + strings.ToLower(NewID())).
		SetUsername(o.username).
		SetPassword(o.password).
		SetCleanSession(true).
		SetOrderMatters(true).
		SetConnectTimeout(5 * time.Second).
		SetKeepAlive(10 * time.Second).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(500 * time.Millisecond).
		SetDefaultPublishHandler(op.handle).
		SetOnConnectHandler(op.onConnect).
		SetConnectionLostHandler(op.onLost)
	if o.tls != nil {
		copts.SetTLSConfig(o.tls)
	}
	op.client = mqtt.NewClient(copts)
	tok := op.client.Connect()
	if !tok.WaitTimeout(mqttTimeout) {
		t.Fatalf("operator: connect to %s: no answer within %v", brokerURL, mqttTimeout)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("operator: connect to %s: %v", brokerURL, err)
	}
	op.mu.Lock()
	op.connected = true
	op.notifyLocked()
	op.mu.Unlock()
	t.Cleanup(op.close)
	return op
}

// Topics is the operator's topic builder.
func (o *Operator) Topics() protocol.Topics { return o.topics }

// Client is the underlying paho client, for what the helpers do not cover.
func (o *Operator) Client() mqtt.Client { return o.client }

func (o *Operator) close() {
	o.client.Disconnect(250)
	o.mu.Lock()
	problems := slices.Clone(o.problems)
	o.mu.Unlock()
	if len(problems) > 0 {
		o.t.Errorf("operator: %d payload(s) broke the protocol contract:\n%s", len(problems), strings.Join(problems, "\n"))
	}
}

// notifyLocked wakes every waiter. o.mu must be held.
func (o *Operator) notifyLocked() { o.changed.Notify() }

// onConnect restores the subscriptions after a reconnect. paho runs it in
// its own goroutine.
func (o *Operator) onConnect(c mqtt.Client) {
	o.mu.Lock()
	if o.losses == 0 {
		// The first connection: NewOperator handles it, and subscribing
		// again here would repeat the retained messages of a Watch
		// racing with this goroutine.
		o.mu.Unlock()
		return
	}
	filters := slices.Clone(o.filters)
	o.mu.Unlock()
	ok := true
	for _, f := range filters {
		tok := c.Subscribe(f, 1, o.handle)
		if !tok.WaitTimeout(mqttTimeout) || tok.Error() != nil {
			ok = false
		}
	}
	o.mu.Lock()
	o.connected = ok && c.IsConnectionOpen()
	o.notifyLocked()
	o.mu.Unlock()
}

func (o *Operator) onLost(mqtt.Client, error) {
	o.mu.Lock()
	o.connected = false
	o.losses++
	o.notifyLocked()
	o.mu.Unlock()
}

// WaitConnected waits until the operator is connected with its
// subscriptions restored, e.g. after the broker was restarted.
func (o *Operator) WaitConnected(t testing.TB, timeout time.Duration) {
	t.Helper()
	if !o.waitFor(timeout, func() bool { return o.connected }) {
		t.Fatalf("operator: not reconnected within %v", timeout)
	}
}

// Watch subscribes (QoS 1) to a topic filter and waits for the broker's
// acknowledgement; messages are then available through Messages and the
// typed accessors. Watching a filter twice is harmless.
func (o *Operator) Watch(filter string) {
	o.t.Helper()
	o.mu.Lock()
	if slices.Contains(o.filters, filter) {
		o.mu.Unlock()
		return
	}
	o.filters = append(o.filters, filter)
	o.mu.Unlock()
	// Right after a broker restart paho may still be reconnecting and
	// refuse to subscribe: wait for the connection and try again.
	deadline := time.Now().Add(mqttTimeout)
	for {
		tok := o.client.Subscribe(filter, 1, o.handle)
		var err error
		if !tok.WaitTimeout(time.Until(deadline)) {
			err = fmt.Errorf("no answer within %v", mqttTimeout)
		} else {
			err = tok.Error()
		}
		if err == nil {
			return
		}
		left := time.Until(deadline)
		if left <= 0 {
			o.t.Fatalf("operator: subscribe %s: %v", filter, err)
		}
		o.waitFor(min(left, 200*time.Millisecond), func() bool { return o.connected && o.client.IsConnectionOpen() })
	}
}

// Track watches the results and output chunks of command id from every
// host. Send does it; call it before SendRaw.
func (o *Operator) Track(id string) { o.t.Helper(); o.Watch(o.topics.ResultsFilter(id)) }

// WatchStatus watches the retained status of host ("+" for every host).
func (o *Operator) WatchStatus(host string) { o.t.Helper(); o.Watch(o.topics.Status(host)) }

// WatchAudit watches the audit records of host ("+" for every host).
func (o *Operator) WatchAudit(host string) { o.t.Helper(); o.Watch(o.topics.Audit(host)) }

// topicFor is the command topic for a target value.
func (o *Operator) topicFor(target string) (string, error) { return CmdTopic(o.topics, target) }

// CmdTopic is the command topic a target value (host:ID, group:NAME or
// all) names under topics.
func CmdTopic(topics protocol.Topics, target string) (string, error) {
	switch {
	case target == "all":
		return topics.AllCmd(), nil
	case strings.HasPrefix(target, "host:"):
		return topics.HostCmd(strings.TrimPrefix(target, "host:")), nil
	case strings.HasPrefix(target, "group:"):
		return topics.GroupCmd(strings.TrimPrefix(target, "group:")), nil
	}
	return "", fmt.Errorf("target %q is not host:ID, group:NAME or all", target)
}

// Fill sets the fields a test usually leaves out: v, id and issued_at.
func Fill(cmd *protocol.Command) {
	if cmd.V == 0 {
		cmd.V = protocol.Version
	}
	if cmd.ID == "" {
		cmd.ID = NewID()
	}
	if cmd.IssuedAt.IsZero() {
		cmd.IssuedAt = protocol.Now()
	}
}

// Send publishes cmd as a bare command on the topic its Target names and
// returns its id. A zero V, ID or IssuedAt is filled in. The results of
// the id are tracked before the command is published.
func (o *Operator) Send(cmd protocol.Command) string {
	o.t.Helper()
	topic, err := o.topicFor(cmd.Target)
	if err != nil {
		o.t.Fatalf("operator: send: %v", err)
	}
	return o.SendTo(topic, cmd)
}

// SendTo is Send on an explicit topic, e.g. to test a target mismatch.
func (o *Operator) SendTo(topic string, cmd protocol.Command) string {
	o.t.Helper()
	Fill(&cmd)
	b, err := json.Marshal(cmd)
	if err != nil {
		o.t.Fatalf("operator: send: %v", err)
	}
	o.Track(cmd.ID)
	o.publish(topic, b, false)
	return cmd.ID
}

// SendSigned publishes cmd (filled in as by Send) inside a signed wrapper
// made with key, named kid, on the topic its Target names; it returns the
// id.
func (o *Operator) SendSigned(cmd protocol.Command, kid string, key ed25519.PrivateKey) string {
	o.t.Helper()
	topic, err := o.topicFor(cmd.Target)
	if err != nil {
		o.t.Fatalf("operator: send: %v", err)
	}
	Fill(&cmd)
	b, err := json.Marshal(cmd)
	if err != nil {
		o.t.Fatalf("operator: send: %v", err)
	}
	o.Track(cmd.ID)
	o.publish(topic, Sign(b, kid, key), false)
	return cmd.ID
}

// Sign wraps payload (the exact command bytes) in the signed wrapper of
// the contract, signed by key and naming kid.
func Sign(payload []byte, kid string, key ed25519.PrivateKey) []byte {
	w := protocol.Signed{
		Signed: base64.StdEncoding.EncodeToString(payload),
		Kid:    kid,
		Sig:    base64.StdEncoding.EncodeToString(ed25519.Sign(key, payload)),
	}
	b, _ := json.Marshal(w) // three strings cannot fail to marshal
	return b
}

// SendRaw publishes payload as is (QoS 1, not retained). Call Track first
// to see results.
func (o *Operator) SendRaw(topic string, payload []byte) {
	o.t.Helper()
	o.publish(topic, payload, false)
}

// Publish publishes payload with the given retain flag (QoS 1).
func (o *Operator) Publish(topic string, payload []byte, retained bool) {
	o.t.Helper()
	o.publish(topic, payload, retained)
}

func (o *Operator) publish(topic string, payload []byte, retained bool) {
	o.t.Helper()
	tok := o.client.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(mqttTimeout) {
		o.t.Fatalf("operator: publish %s: no PUBACK within %v", topic, mqttTimeout)
	}
	if err := tok.Error(); err != nil {
		o.t.Fatalf("operator: publish %s: %v", topic, err)
	}
}

// handle records one message. paho calls it in order, one at a time.
func (o *Operator) handle(_ mqtt.Client, m mqtt.Message) {
	msg := Message{
		Topic:    m.Topic(),
		Payload:  slices.Clone(m.Payload()),
		QoS:      m.Qos(),
		Retained: m.Retained(),
		At:       time.Now(),
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.messages[msg.Topic] = append(o.messages[msg.Topic], msg)
	o.index(msg)
	o.notifyLocked()
}

// index decodes a message on a contract topic. o.mu must be held.
func (o *Operator) index(m Message) {
	rest, ok := strings.CutPrefix(m.Topic, o.topics.Prefix+"/hosts/")
	if !ok || len(m.Payload) == 0 {
		// Not an agent topic, or a cleared retained message.
		return
	}
	parts := strings.Split(rest, "/")
	host := parts[0]
	problem := func(format string, args ...any) {
		o.problems = append(o.problems, fmt.Sprintf("%s: %s: %s", m.Topic, fmt.Sprintf(format, args...), truncate(m.Payload)))
	}
	switch {
	case len(parts) == 3 && parts[1] == "results":
		id := parts[2]
		var r protocol.Result
		if err := json.Unmarshal(m.Payload, &r); err != nil {
			problem("result: %v", err)
			return
		}
		if r.V != protocol.Version || r.Host != host || r.ID != id {
			problem("result: want v=%d host=%q id=%q", protocol.Version, host, id)
		}
		o.results[id] = append(o.results[id], hostResult{host: host, r: r})
	case len(parts) == 4 && parts[1] == "results" && parts[3] == "out":
		id := parts[2]
		var c protocol.Chunk
		if err := json.Unmarshal(m.Payload, &c); err != nil {
			problem("chunk: %v", err)
			return
		}
		if c.V != protocol.Version || c.Host != host || c.ID != id {
			problem("chunk: want v=%d host=%q id=%q", protocol.Version, host, id)
		}
		o.chunks[id] = append(o.chunks[id], c)
	case len(parts) == 2 && parts[1] == "status":
		var s protocol.Status
		if err := json.Unmarshal(m.Payload, &s); err != nil {
			problem("status: %v", err)
			return
		}
		if s.V != protocol.Version || s.Host != host {
			problem("status: want v=%d host=%q", protocol.Version, host)
		}
		o.statuses[host] = append(o.statuses[host], s)
	case len(parts) == 2 && parts[1] == "audit":
		var a protocol.Audit
		if err := json.Unmarshal(m.Payload, &a); err != nil {
			problem("audit: %v", err)
			return
		}
		if a.V != protocol.Version || a.Host != host {
			problem("audit: want v=%d host=%q", protocol.Version, host)
		}
		o.audits[host] = append(o.audits[host], a)
	}
}

// truncate shortens a payload for a message.
func truncate(b []byte) string {
	const limit = 300
	if len(b) > limit {
		return string(b[:limit]) + "…"
	}
	return string(b)
}

// waitFor waits until cond (called with o.mu held) is true or timeout
// passes, waking on every received message or connection change.
func (o *Operator) waitFor(timeout time.Duration, cond func() bool) bool {
	return o.changed.Await(&o.mu, timeout, cond)
}

// finalLocked is the first final result of id from host ("" for any).
func (o *Operator) finalLocked(id, host string) (protocol.Result, bool) {
	for _, hr := range o.results[id] {
		if (host == "" || hr.host == host) && protocol.IsFinal(hr.r.State) {
			return hr.r, true
		}
	}
	return protocol.Result{}, false
}

// seenLocked describes what arrived for id, for failure messages.
func (o *Operator) seenLocked(id string) string {
	var b strings.Builder
	for _, hr := range o.results[id] {
		fmt.Fprintf(&b, "\n  %s: state=%s error=%q", hr.host, hr.r.State, hr.r.Error)
	}
	if n := len(o.chunks[id]); n > 0 {
		fmt.Fprintf(&b, "\n  %d output chunk(s)", n)
	}
	if b.Len() == 0 {
		return " nothing"
	}
	return b.String()
}

// WaitFinal waits for the final result of command id from host and
// returns it (the first one, should a duplicate follow). It fails the test
// with what was seen for the id when timeout passes.
func (o *Operator) WaitFinal(t testing.TB, id, host string, timeout time.Duration) protocol.Result {
	t.Helper()
	var r protocol.Result
	ok := o.waitFor(timeout, func() bool {
		var found bool
		r, found = o.finalLocked(id, host)
		return found
	})
	if !ok {
		o.mu.Lock()
		seen, connected := o.seenLocked(id), o.connected
		o.mu.Unlock()
		t.Fatalf("operator: no final result of command %s from host %q within %v (operator connected: %v); seen for this id:%s",
			id, host, timeout, connected, seen)
	}
	return r
}

// WaitFinalAll waits for a final result of command id from each of hosts
// and returns them by host.
func (o *Operator) WaitFinalAll(t testing.TB, id string, hosts []string, timeout time.Duration) map[string]protocol.Result {
	t.Helper()
	out := make(map[string]protocol.Result, len(hosts))
	var missing []string
	ok := o.waitFor(timeout, func() bool {
		missing = missing[:0]
		for _, h := range hosts {
			if r, found := o.finalLocked(id, h); found {
				out[h] = r
			} else {
				missing = append(missing, h)
			}
		}
		return len(missing) == 0
	})
	if !ok {
		t.Fatalf("operator: no final result of command %s within %v from %d of %d hosts: %v",
			id, timeout, len(missing), len(hosts), missing)
	}
	return out
}

// Results is every result (state changes included) seen for id, from all
// hosts, in arrival order.
func (o *Operator) Results(id string) []protocol.Result {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]protocol.Result, 0, len(o.results[id]))
	for _, hr := range o.results[id] {
		out = append(out, hr.r)
	}
	return out
}

// Chunks is every output chunk seen for id, in arrival order.
func (o *Operator) Chunks(id string) []protocol.Chunk {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.chunks[id])
}

// AssertNoResult checks that no result at all (from any host) arrives for
// id within d. It is the one deliberate negative wait of the harness, for
// commands that must stay unanswered (filtered out, malformed): keep d
// short (500 ms is plenty on loopback) and send something that is answered
// afterwards when the order of processing allows a positive check too.
func (o *Operator) AssertNoResult(t testing.TB, id string, d time.Duration) {
	t.Helper()
	if o.waitFor(d, func() bool { return len(o.results[id]) > 0 }) {
		o.mu.Lock()
		seen := o.seenLocked(id)
		o.mu.Unlock()
		t.Errorf("operator: command %s must get no result, got:%s", id, seen)
	}
}

// Statuses is every status of host seen so far, in arrival order (a
// retained one first).
func (o *Operator) Statuses(host string) []protocol.Status {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.statuses[host])
}

// WaitStatus waits for a status of host, among all seen since
// WatchStatus, that satisfies pred, and returns the first one. Include the
// session in pred, or use WaitNextStatus, when an older status could match.
func (o *Operator) WaitStatus(t testing.TB, host string, pred func(protocol.Status) bool, timeout time.Duration) protocol.Status {
	t.Helper()
	return o.WaitNextStatus(t, host, 0, pred, timeout)
}

// WaitNextStatus is WaitStatus ignoring the first after statuses of host,
// e.g. after := len(op.Statuses(host)) taken before a restart.
func (o *Operator) WaitNextStatus(t testing.TB, host string, after int, pred func(protocol.Status) bool, timeout time.Duration) protocol.Status {
	t.Helper()
	var s protocol.Status
	ok := o.waitFor(timeout, func() bool {
		list := o.statuses[host]
		for i := after; i < len(list); i++ {
			if pred(list[i]) {
				s = list[i]
				return true
			}
		}
		return false
	})
	if !ok {
		o.mu.Lock()
		var seen []string
		for _, st := range o.statuses[host] {
			seen = append(seen, fmt.Sprintf("%s/%s/session=%d", st.State, st.Reason, st.Session))
		}
		o.mu.Unlock()
		t.Fatalf("operator: no matching status of host %q within %v (skipping the first %d); seen: %v", host, timeout, after, seen)
	}
	return s
}

// Audits is every audit record of host seen so far, in arrival order.
func (o *Operator) Audits(host string) []protocol.Audit {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.audits[host])
}

// WaitAudit waits for an audit record of host that satisfies pred and
// returns the first one.
func (o *Operator) WaitAudit(t testing.TB, host string, pred func(protocol.Audit) bool, timeout time.Duration) protocol.Audit {
	t.Helper()
	var a protocol.Audit
	ok := o.waitFor(timeout, func() bool {
		for _, x := range o.audits[host] {
			if pred(x) {
				a = x
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("operator: no matching audit record of host %q within %v; %d seen", host, timeout, len(o.Audits(host)))
	}
	return a
}

// Messages is every message seen on topic (an exact topic, not a filter),
// in arrival order.
func (o *Operator) Messages(topic string) []Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.messages[topic])
}

// WaitMessage waits for a message on topic (exact) that satisfies pred
// (nil accepts any) and returns the first one. Watch a matching filter
// first.
func (o *Operator) WaitMessage(t testing.TB, topic string, pred func(Message) bool, timeout time.Duration) Message {
	t.Helper()
	var m Message
	ok := o.waitFor(timeout, func() bool {
		for _, x := range o.messages[topic] {
			if pred == nil || pred(x) {
				m = x
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("operator: no matching message on %s within %v; %d seen", topic, timeout, len(o.Messages(topic)))
	}
	return m
}

// Problems is every contract violation seen so far (see Operator).
func (o *Operator) Problems() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.problems)
}
