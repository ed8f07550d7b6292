package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/security"
)

// Request is one command for one or many hosts.
type Request struct {
	// Command is what to run: Kind, Args, TimeoutMS, ExpiresAt, Stream
	// and Operator are sent as given; ID is filled in (NewID) when empty;
	// V and IssuedAt are filled in; Target and Filter are set from the
	// fields below.
	Command protocol.Command
	// Target names the hosts. A list of hosts is sent as one message per
	// host (on its own topic); a group or all as one message.
	Target fleet.Target
	// Filter narrows the target (os, groups, facts, hosts), as the agent
	// checks it on group and broadcast topics. For a host list the agent
	// does not check it, so Run applies it from the fleet view and sends
	// only to the hosts that match.
	Filter *protocol.Filter
	// IncludeOffline waits for offline hosts of a group or all too (the
	// broker queues the command for them).
	IncludeOffline bool
	// Signer signs the command; nil sends it bare (development agents
	// only).
	Signer *Signer
}

// ErrNoHosts is returned by Run when the target resolves to no host at
// all (none expected, none uncertain, none offline).
var ErrNoHosts = errors.New("no host matches the target")

// Run publishes a command and follows its results. It starts the fleet
// view if needed (Fleet with default options), resolves the target to the
// hosts expected to answer, subscribes to the command's results and only
// then publishes the command. The returned Run collects every host's final
// result until every expected host has answered, or ctx ends, or Close.
//
// The caller must either read Events until it is closed, or call Close.
func (c *Client) Run(ctx context.Context, req Request) (*Run, error) {
	cmd := req.Command
	if err := req.Target.Valid(); err != nil {
		return nil, err
	}
	if cmd.Kind == "" {
		return nil, errors.New("kind: required")
	}
	if cmd.ID == "" {
		cmd.ID = NewID()
	}
	if !protocol.ValidID(cmd.ID) {
		return nil, fmt.Errorf("id: %q is not a valid command id ([A-Za-z0-9._-]{1,64})", cmd.ID)
	}
	cmd.V = protocol.Version
	if cmd.IssuedAt.IsZero() {
		cmd.IssuedAt = protocol.Now()
	}
	view, err := c.Fleet(ctx, FleetOptions{})
	if err != nil {
		return nil, fmt.Errorf("fleet view: %w", err)
	}
	res, err := view.Resolve(req.Target, req.Filter, fleet.ResolveOptions{IncludeOffline: req.IncludeOffline})
	if err != nil {
		return nil, err
	}
	if len(res.Expected)+len(res.Uncertain)+len(res.Offline) == 0 {
		return nil, fmt.Errorf("%s: %w", req.Target, ErrNoHosts)
	}
	type message struct {
		topic   string
		payload []byte
	}
	var msgs []message
	add := func(topic, target string, f *protocol.Filter) error {
		m := cmd
		m.Target, m.Filter = target, f
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		if req.Signer != nil {
			if b, err = json.Marshal(security.Sign(b, req.Signer.Kid, req.Signer.Key)); err != nil {
				return err
			}
		}
		msgs = append(msgs, message{topic, b})
		return nil
	}
	switch {
	case len(req.Target.Hosts) > 0:
		// Only the hosts the filter lets through: the agent does not
		// check a filter on its own topic. Uncertain ones are skipped.
		for _, h := range res.Expected {
			err = errors.Join(err, add(c.topics.HostCmd(h), "host:"+h, nil))
		}
		cmd.Target = req.Target.String()
	case req.Target.Group != "":
		err = add(c.topics.GroupCmd(req.Target.Group), "group:"+req.Target.Group, req.Filter)
		cmd.Target = "group:" + req.Target.Group
	default:
		err = add(c.topics.AllCmd(), "all", req.Filter)
		cmd.Target = "all"
	}
	if err != nil {
		return nil, err
	}
	cmd.Filter = req.Filter

	r := newRun(c, cmd, res, len(req.Target.Hosts) > 0)
	if err := c.subscribe(r.filter, r.handle); err != nil {
		return nil, err
	}
	toks := make([]mqtt.Token, len(msgs))
	for i, m := range msgs {
		toks[i] = c.c.Publish(m.topic, 1, false, m.payload)
	}
	for i, t := range toks {
		if err := c.wait(t); err != nil {
			r.Close()
			c.unsubscribe(r.filter)
			return nil, fmt.Errorf("publish %s: %w", msgs[i].topic, err)
		}
	}
	r.mu.Lock()
	r.sent = time.Now()
	r.mu.Unlock()
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		r.forward()
	}()
	go func() {
		defer c.wg.Done()
		select {
		case <-ctx.Done():
			r.finish()
		case <-c.closing:
			r.Close()
		case <-r.done:
		}
		c.unsubscribe(r.filter)
	}()
	r.mu.Lock()
	if len(r.expected) == 0 || r.answeredLocked() {
		r.finishLocked()
	}
	r.mu.Unlock()
	return r, nil
}

// Call is Run, then waits until every expected host answered or ctx ended,
// and returns the summary. Events are not delivered.
func (c *Client) Call(ctx context.Context, req Request) (Summary, error) {
	r, err := c.Run(ctx, req)
	if err != nil {
		return Summary{}, err
	}
	defer r.Close()
	return r.Wait(), nil
}

// Run follows one command sent to many hosts.
type Run struct {
	// ID is the command id.
	ID string
	// Command is the command as sent (Target is the run's target, e.g.
	// "host:a,b" for a list; each host's copy names that host only).
	Command protocol.Command
	// Resolution is who was expected to answer when it was sent.
	Resolution fleet.Resolution

	c      *Client
	filter string
	sent   time.Time
	list   bool // sent per host: only expected hosts can answer

	mu       sync.Mutex
	expected map[string]bool
	finals   map[string]protocol.Result
	states   map[string]string // last non-final state seen per host
	nextSeq  map[string]uint64 // per host: output chunks below it are duplicates
	q        eventQueue
	done     chan struct{}
	finished bool
	doneAt   time.Time

	closeOnce sync.Once
	closed    chan struct{}
	events    chan Event
}

func newRun(c *Client, cmd protocol.Command, res fleet.Resolution, list bool) *Run {
	r := &Run{
		ID: cmd.ID, Command: cmd, Resolution: res,
		c: c, filter: c.topics.ResultsFilter(cmd.ID), list: list,
		expected: make(map[string]bool, len(res.Expected)),
		finals:   map[string]protocol.Result{},
		states:   map[string]string{},
		nextSeq:  map[string]uint64{},
		q:        eventQueue{ready: make(chan struct{}, 1)},
		done:     make(chan struct{}),
		closed:   make(chan struct{}),
		events:   make(chan Event, 64),
	}
	for _, h := range res.Expected {
		r.expected[h] = true
	}
	return r
}

// topicHost is the {host} level of P/hosts/{host}/results/{id}[/out].
func (r *Run) topicHost(topic string) string {
	rest, ok := strings.CutPrefix(topic, r.c.topics.Prefix+"/hosts/")
	if !ok {
		return ""
	}
	h, _, _ := strings.Cut(rest, "/")
	return h
}

// handle runs on paho's goroutine: it records and queues, never blocks.
func (r *Run) handle(_ mqtt.Client, m mqtt.Message) {
	host := r.topicHost(m.Topic())
	var ev Event
	if strings.HasSuffix(m.Topic(), "/out") {
		var ch protocol.Chunk
		if json.Unmarshal(m.Payload(), &ch) != nil || ch.ID != r.ID || ch.Host != host {
			return
		}
		ev.Chunk = &ch
	} else {
		var res protocol.Result
		if json.Unmarshal(m.Payload(), &res) != nil || res.ID != r.ID || res.Host != host {
			return
		}
		ev.Result = &res
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished {
		return
	}
	if r.list && !r.expected[host] {
		return // not sent to it: a stale result of an earlier use of the id
	}
	if ch := ev.Chunk; ch != nil {
		if _, final := r.finals[host]; final || ch.Seq < r.nextSeq[host] {
			return // a redelivered chunk
		}
		r.nextSeq[host] = ch.Seq + 1
		r.q.push(ev)
		return
	}
	res := ev.Result
	if _, final := r.finals[host]; final {
		return // delivered again (at least once)
	}
	if !protocol.IsFinal(res.State) {
		if r.states[host] == res.State {
			return
		}
		r.states[host] = res.State
		r.q.push(ev)
		return
	}
	r.finals[host] = *res
	r.q.push(ev)
	if r.expected[host] && r.answeredLocked() {
		r.finishLocked()
	}
}

func (r *Run) answeredLocked() bool {
	for h := range r.expected {
		if _, ok := r.finals[h]; !ok {
			return false
		}
	}
	return true
}

func (r *Run) finish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finishLocked()
}

func (r *Run) finishLocked() {
	if !r.finished {
		r.finished = true
		r.doneAt = time.Now()
		close(r.done)
	}
}

// forward hands queued events to the Events channel, in order, and closes
// it once the run is done and every event before that was delivered.
func (r *Run) forward() {
	defer close(r.events)
	for {
		var doneNow bool
		select {
		case <-r.closed:
			return
		case <-r.c.closing:
			return
		case <-r.q.ready:
		case <-r.done:
			doneNow = true
		}
		for _, ev := range r.q.take() {
			select {
			case r.events <- ev:
			case <-r.closed:
				return
			case <-r.c.closing:
				return
			}
		}
		if doneNow {
			// Nothing is queued after done; take what came in between.
			for _, ev := range r.q.take() {
				select {
				case r.events <- ev:
				case <-r.closed:
					return
				case <-r.c.closing:
					return
				}
			}
			return
		}
	}
}

// Events delivers every state change, final result and output chunk, in
// the order each host published them (duplicates dropped), and is closed
// once the run is done and everything before was delivered (or on Close).
func (r *Run) Events() <-chan Event { return r.events }

// Done is closed when every expected host has sent a final result, or
// the context given to Run ended, or Close was called.
func (r *Run) Done() <-chan struct{} { return r.done }

// Close stops following the command (it keeps running on the hosts) and
// closes Events. It may be called more than once.
func (r *Run) Close() {
	r.finish()
	r.closeOnce.Do(func() { close(r.closed) })
}

// Wait waits until Done and returns the summary.
func (r *Run) Wait() Summary {
	<-r.done
	return r.Summary()
}

// Missing lists the expected hosts that have sent no final result (yet).
func (r *Run) Missing() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for h := range r.expected {
		if _, ok := r.finals[h]; !ok {
			out = append(out, h)
		}
	}
	sort.Strings(out)
	return out
}

// Expected lists the hosts expected to answer.
func (r *Run) Expected() []string { return slices.Clone(r.Resolution.Expected) }

// Results returns a copy of the final results received so far, by host.
func (r *Run) Results() map[string]protocol.Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]protocol.Result, len(r.finals))
	for h, res := range r.finals {
		out[h] = res
	}
	return out
}

// Answered and Expected counts, for progress displays.
func (r *Run) Progress() (answered, expected int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for h := range r.expected {
		if _, ok := r.finals[h]; ok {
			answered++
		}
	}
	return answered, len(r.expected)
}

// Outcome categories of a host in a Summary.
const (
	OutcomeSucceeded = "succeeded"
	OutcomeFailed    = "failed" // failed, rejected, expired, canceled
	OutcomeTimedOut  = "timed_out"
	OutcomeNoAnswer  = "no_answer"
)

// Outcome is one host's part of a run.
type Outcome struct {
	Host string `json:"host"`
	// Outcome is succeeded, failed, timed_out or no_answer.
	Outcome string `json:"outcome"`
	// State is the final state; for no_answer the last state seen
	// (queued, running) or "".
	State string `json:"state,omitempty"`
	// Expected is false for a host that answered without being expected
	// (its facts were unknown, or the fleet view was behind).
	Expected bool             `json:"expected"`
	Result   *protocol.Result `json:"result,omitempty"`
}

// Summary is the outcome of a run.
type Summary struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	Target   string `json:"target"`
	Expected int    `json:"expected"`
	// Host lists by outcome, sorted.
	Succeeded []string `json:"succeeded"`
	Failed    []string `json:"failed"`
	TimedOut  []string `json:"timed_out"`
	NoAnswer  []string `json:"no_answer"`
	// Offline are matching hosts that were offline and not waited for:
	// the broker keeps the command for them and they run it when they come
	// back, unless it expired.
	Offline []string `json:"offline,omitempty"`
	// Skipped are hosts of a host list the filter could not be checked
	// for (no inventory): nothing was sent to them.
	Skipped  []string      `json:"skipped,omitempty"`
	Outcomes []Outcome     `json:"hosts"`
	Duration time.Duration `json:"-"`
}

// OK reports whether every host that was expected or answered succeeded,
// and there was at least one.
func (s Summary) OK() bool {
	return len(s.Succeeded) > 0 && len(s.Failed) == 0 && len(s.TimedOut) == 0 && len(s.NoAnswer) == 0
}

// Categorize maps a final state to an outcome category.
func Categorize(state string) string {
	switch state {
	case protocol.StateSucceeded:
		return OutcomeSucceeded
	case protocol.StateTimedOut:
		return OutcomeTimedOut
	case "":
		return OutcomeNoAnswer
	}
	if protocol.IsFinal(state) {
		return OutcomeFailed
	}
	return OutcomeNoAnswer
}

// Summary is the run's outcome so far (final once Done is closed).
func (r *Run) Summary() Summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Summary{ID: r.ID, Kind: r.Command.Kind, Target: r.Command.Target, Expected: len(r.expected),
		Succeeded: []string{}, Failed: []string{}, TimedOut: []string{}, NoAnswer: []string{},
		Offline: slices.Clone(r.Resolution.Offline)}
	if r.list {
		s.Skipped = slices.Clone(r.Resolution.Uncertain)
	}
	end := r.doneAt
	if end.IsZero() {
		end = time.Now()
	}
	if !r.sent.IsZero() {
		s.Duration = end.Sub(r.sent)
	}
	hosts := map[string]bool{}
	for h := range r.expected {
		hosts[h] = true
	}
	for h := range r.finals {
		hosts[h] = true
	}
	for h := range hosts {
		o := Outcome{Host: h, Expected: r.expected[h]}
		if res, ok := r.finals[h]; ok {
			o.State, o.Result = res.State, &res
		} else {
			o.State = r.states[h]
		}
		o.Outcome = Categorize(o.State)
		if o.Result == nil {
			o.Outcome = OutcomeNoAnswer
		}
		s.Outcomes = append(s.Outcomes, o)
		switch o.Outcome {
		case OutcomeSucceeded:
			s.Succeeded = append(s.Succeeded, h)
		case OutcomeFailed:
			s.Failed = append(s.Failed, h)
		case OutcomeTimedOut:
			s.TimedOut = append(s.TimedOut, h)
		default:
			s.NoAnswer = append(s.NoAnswer, h)
		}
	}
	sort.Slice(s.Outcomes, func(i, j int) bool { return s.Outcomes[i].Host < s.Outcomes[j].Host })
	for _, l := range [][]string{s.Succeeded, s.Failed, s.TimedOut, s.NoAnswer} {
		sort.Strings(l)
	}
	return s
}
