package swarm

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// Operator is the operator side of a scale run: one MQTT client that
// broadcasts (signed) commands and counts the final results per host id,
// and optionally follows every host's retained status.
type Operator struct {
	c      mqtt.Client
	topics protocol.Topics
	kid    string
	key    ed25519.PrivateKey

	mu       sync.Mutex
	round    *round
	statuses map[string]HostStatus
	watchSt  bool
	// baseline: hosts whose reconnection is being timed (their session
	// before); back: when each showed a newer online session.
	baseline map[string]uint64
	back     map[string]time.Time
	changed  chan struct{} // signalled on every round or status progress
}

// HostStatus is the last retained status seen for a host.
type HostStatus struct {
	State   string
	Session uint64
	At      time.Time // when the operator received it
}

// OperatorOptions configure an Operator.
type OperatorOptions struct {
	URL      string
	ClientID string // default "swarm-operator-RANDOM"
	Prefix   string // topic prefix, default protocol.DefaultPrefix
	// Kid and Key sign commands; without a key commands are bare.
	Kid string
	Key ed25519.PrivateKey
	// Statuses subscribes to every host's retained status.
	Statuses bool
	// ConnectTimeout bounds the first connect (default 10s).
	ConnectTimeout time.Duration
}

// NewOperator connects an operator. It reconnects on its own (a broker
// restart) and subscribes again each time.
func NewOperator(o OperatorOptions) (*Operator, error) {
	if o.Prefix == "" {
		o.Prefix = protocol.DefaultPrefix
	}
	if o.ClientID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		o.ClientID = "swarm-operator-" + hex.EncodeToString(b[:])
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	op := &Operator{topics: protocol.Topics{Prefix: o.Prefix}, kid: o.Kid, key: o.Key,
		statuses: map[string]HostStatus{}, watchSt: o.Statuses, changed: make(chan struct{}, 1)}
	subscribed := make(chan error, 1)
	opts := mqtt.NewClientOptions().AddBroker(o.URL).SetClientID(o.ClientID).
		SetCleanSession(true).SetProtocolVersion(4).SetOrderMatters(true).
		SetAutoReconnect(true).SetMaxReconnectInterval(250 * time.Millisecond).
		SetConnectRetry(true).SetConnectRetryInterval(250 * time.Millisecond).
		SetKeepAlive(30 * time.Second).SetConnectTimeout(o.ConnectTimeout).
		SetOnConnectHandler(func(c mqtt.Client) {
			filters := map[string]byte{
				o.Prefix + "/hosts/+/results/+": 1,
				o.Prefix + "/hosts/+/echo":      1,
			}
			if o.Statuses {
				filters[op.topics.Status("+")] = 1
			}
			t := c.SubscribeMultiple(filters, op.handle)
			go func() {
				t.WaitTimeout(30 * time.Second)
				select {
				case subscribed <- t.Error():
				default:
				}
			}()
		})
	op.c = mqtt.NewClient(opts)
	op.c.Connect()
	select {
	case err := <-subscribed:
		if err != nil {
			op.c.Disconnect(0)
			return nil, fmt.Errorf("operator: subscribe: %w", err)
		}
	case <-time.After(o.ConnectTimeout + 30*time.Second):
		op.c.Disconnect(0)
		return nil, fmt.Errorf("operator: not connected to %s", o.URL)
	}
	return op, nil
}

// Close disconnects.
func (o *Operator) Close() { o.c.Disconnect(250) }

func (o *Operator) signal() {
	select {
	case o.changed <- struct{}{}:
	default:
	}
}

// handle takes results, echoes and statuses. It never blocks.
func (o *Operator) handle(_ mqtt.Client, m mqtt.Message) {
	now := time.Now()
	rest, ok := strings.CutPrefix(m.Topic(), o.topics.Prefix+"/hosts/")
	if !ok {
		return
	}
	host, what, ok := strings.Cut(rest, "/")
	if !ok {
		return
	}
	switch {
	case what == "status":
		var s struct {
			State   string `json:"state"`
			Session uint64 `json:"session"`
		}
		if json.Unmarshal(m.Payload(), &s) != nil {
			return
		}
		o.mu.Lock()
		o.statuses[host] = HostStatus{State: s.State, Session: s.Session, At: now}
		if old, ok := o.baseline[host]; ok && s.State == protocol.StatusOnline && s.Session > old {
			if _, seen := o.back[host]; !seen {
				o.back[host] = now
			}
		}
		o.mu.Unlock()
		o.signal()
	case what == "echo":
		o.mu.Lock()
		if r := o.round; r != nil && r.echo != nil && bytes.Equal(m.Payload(), r.echo) {
			r.add(host, protocol.StateSucceeded, now)
		}
		o.mu.Unlock()
		o.signal()
	case strings.HasPrefix(what, "results/") && !strings.HasSuffix(what, "/out"):
		var res struct {
			ID    string `json:"id"`
			Host  string `json:"host"`
			State string `json:"state"`
		}
		if json.Unmarshal(m.Payload(), &res) != nil || !protocol.IsFinal(res.State) {
			return
		}
		o.mu.Lock()
		if r := o.round; r != nil && r.id == res.ID && res.Host == host {
			r.add(host, res.State, now)
		}
		o.mu.Unlock()
		o.signal()
	}
}

// round is one broadcast being counted.
type round struct {
	id     string
	echo   []byte
	start  time.Time
	index  map[string]int // expected host -> slot
	state  []string       // first final state per slot
	at     []time.Duration
	got    int
	dups   int
	extra  int // results from hosts not expected
	extras []string
	others map[string]int
}

func (r *round) add(host, st string, now time.Time) {
	i, ok := r.index[host]
	if !ok {
		r.extra++
		if len(r.extras) < 20 {
			r.extras = append(r.extras, host+": "+st)
		}
		return
	}
	if r.state[i] != "" {
		r.dups++ // at least once: a result may arrive twice
		if r.state[i] != st {
			r.others[host+": "+r.state[i]+" then "+st]++
		}
		return
	}
	r.state[i], r.at[i] = st, now.Sub(r.start)
	r.got++
}

// RoundResult is what a broadcast produced.
type RoundResult struct {
	ID        string
	Expected  int
	Got       int // hosts with a final result
	Succeeded int
	Dups      int // results received again (allowed: at least once)
	Extra     int // results from hosts that were not expected
	// ExtraHosts are up to 20 of them, with their state.
	ExtraHosts []string
	// Conflicts are hosts that sent two different final states (a bug).
	Conflicts []string
	States    map[string]int // final states other than succeeded, counted
	Missing   []string       // up to 20 hosts without a result
	// Time from the publish to the first result, to 50%, 99% and 100%
	// of the expected hosts (0 when not reached).
	First, P50, P99, All time.Duration
}

// Complete reports whether every expected host succeeded, without
// conflicting final states. Duplicates (at least once) and results from
// other hosts (Extra: another client on the broker) are reported apart.
func (r RoundResult) Complete() bool {
	return r.Got == r.Expected && r.Succeeded == r.Expected && len(r.Conflicts) == 0
}

// String is a one-line report of the round.
func (r RoundResult) String() string {
	s := fmt.Sprintf("%d/%d succeeded (dups %d, extra %d, conflicts %d, other %v), first %s, 50%% %s, 99%% %s, 100%% %s",
		r.Succeeded, r.Expected, r.Dups, r.Extra, len(r.Conflicts), r.States, ms(r.First), ms(r.P50), ms(r.P99), ms(r.All))
	if len(r.ExtraHosts) > 0 {
		s += fmt.Sprintf("; extra hosts %v", r.ExtraHosts)
	}
	if len(r.Conflicts) > 0 {
		s += fmt.Sprintf("; conflicts %v", r.Conflicts)
	}
	return s
}

func ms(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }

// Command builds a command (v, id, issued_at filled in).
func Command(kind string, args any) (protocol.Command, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	cmd := protocol.Command{V: protocol.Version, ID: "swarm-" + hex.EncodeToString(b[:12]), Kind: kind, Target: "all", IssuedAt: protocol.Now()}
	if args != nil {
		raw, err := json.Marshal(args)
		if err != nil {
			return cmd, err
		}
		cmd.Args = raw
	}
	return cmd, nil
}

// Encode returns the bytes to publish for cmd: signed with the
// operator's key when it has one.
func (o *Operator) Encode(cmd protocol.Command) ([]byte, error) {
	b, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	if o.key == nil {
		return b, nil
	}
	w := protocol.Signed{
		Signed: base64.StdEncoding.EncodeToString(b),
		Kid:    o.kid,
		Sig:    base64.StdEncoding.EncodeToString(ed25519.Sign(o.key, b)),
	}
	return json.Marshal(w)
}

// Run broadcasts cmd on the all topic and counts final results from
// hosts until each has one or timeout passes.
func (o *Operator) Run(cmd protocol.Command, hosts []string, timeout time.Duration) (RoundResult, error) {
	payload, err := o.Encode(cmd)
	if err != nil {
		return RoundResult{}, err
	}
	return o.run(cmd.ID, nil, payload, o.topics.AllCmd(), hosts, timeout)
}

// Echo broadcasts payload to raw hosts and counts their echoes.
func (o *Operator) Echo(payload []byte, hosts []string, timeout time.Duration) (RoundResult, error) {
	return o.run("", payload, payload, o.topics.AllCmd(), hosts, timeout)
}

func (o *Operator) run(id string, echo, payload []byte, topic string, hosts []string, timeout time.Duration) (RoundResult, error) {
	r := &round{id: id, echo: echo, index: make(map[string]int, len(hosts)), state: make([]string, len(hosts)),
		at: make([]time.Duration, len(hosts)), others: map[string]int{}}
	for i, h := range hosts {
		r.index[h] = i
	}
	o.mu.Lock()
	o.round = r
	r.start = time.Now()
	o.mu.Unlock()
	t := o.c.Publish(topic, 1, false, payload)
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		o.mu.Lock()
		o.round = nil
		o.mu.Unlock()
		return RoundResult{}, fmt.Errorf("operator: publish: %v", t.Error())
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		o.mu.Lock()
		done := r.got == len(hosts)
		o.mu.Unlock()
		if done {
			break
		}
		select {
		case <-o.changed:
			continue
		case <-deadline.C:
		}
		break
	}
	// Results that arrive right after the last one are duplicates or
	// extras: give them a moment to be counted.
	time.Sleep(50 * time.Millisecond)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.round = nil
	return r.result(hosts), nil
}

func (r *round) result(hosts []string) RoundResult {
	res := RoundResult{ID: r.id, Expected: len(hosts), Got: r.got, Dups: r.dups, Extra: r.extra, ExtraHosts: r.extras, States: map[string]int{}}
	var times []time.Duration
	for i, st := range r.state {
		switch st {
		case "":
			if len(res.Missing) < 20 {
				res.Missing = append(res.Missing, hosts[i])
			}
			continue
		case protocol.StateSucceeded:
			res.Succeeded++
		default:
			res.States[st]++
		}
		times = append(times, r.at[i])
	}
	for c := range r.others {
		res.Conflicts = append(res.Conflicts, c)
	}
	slices.Sort(res.Conflicts)
	slices.Sort(times)
	n := len(hosts)
	at := func(frac float64) time.Duration {
		k := int(frac*float64(n)+0.999999) - 1
		if k < 0 {
			k = 0
		}
		if k >= len(times) {
			return 0
		}
		return times[k]
	}
	if len(times) > 0 {
		res.First = times[0]
	}
	res.P50, res.P99 = at(0.50), at(0.99)
	if len(times) == n {
		res.All = times[n-1]
	}
	return res
}

// Statuses returns a copy of the last status of every host seen.
func (o *Operator) Statuses() map[string]HostStatus {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := make(map[string]HostStatus, len(o.statuses))
	for k, v := range o.statuses {
		m[k] = v
	}
	return m
}

// WaitStatuses waits until cond holds for the statuses seen (checked on
// every change, at least every 100 ms) or timeout passes.
func (o *Operator) WaitStatuses(timeout time.Duration, cond func(map[string]HostStatus) bool) error {
	if !o.watchSt {
		return errors.New("operator: statuses are not followed (OperatorOptions.Statuses)")
	}
	deadline := time.Now().Add(timeout)
	for {
		o.mu.Lock()
		ok := cond(o.statuses)
		o.mu.Unlock()
		if ok {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("operator: condition on statuses not met within %s", timeout)
		}
		select {
		case <-o.changed:
		case <-time.After(min(left, 100*time.Millisecond)):
		}
	}
}

// TrackReconnects starts timing the reconnection of the hosts in
// baseline (host -> session before): a host is back when its status is
// online with a newer session. It replaces an earlier baseline.
func (o *Operator) TrackReconnects(baseline map[string]uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.baseline = baseline
	o.back = make(map[string]time.Time, len(baseline))
}

// Reconnected returns how many tracked hosts are back, and when each came
// back, in order.
func (o *Operator) Reconnected() (int, []time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	times := make([]time.Time, 0, len(o.back))
	for _, t := range o.back {
		times = append(times, t)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	return len(o.back), times
}

// WaitReconnected waits until n tracked hosts are back or timeout passes;
// it returns how many are back.
func (o *Operator) WaitReconnected(n int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		o.mu.Lock()
		got := len(o.back)
		o.mu.Unlock()
		left := time.Until(deadline)
		if got >= n || left <= 0 {
			return got
		}
		select {
		case <-o.changed:
		case <-time.After(min(left, 100*time.Millisecond)):
		}
	}
}
