// Package dispatch is the agent's command pipeline: it takes command
// messages from the transport, checks them in the contract's order (filter,
// target, signature and policy, validation, expiry), records each id in the
// on-disk journal before anything runs (so a redelivery or replay never runs
// twice, across restarts too), queues accepted commands under a bounded
// queue and a worker limit, runs them through the registered handlers with
// timeouts, and writes every state change, result and audit record to the
// outbox, from which the publisher sends them when the broker is reachable.
package dispatch

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqagent/mqagent/pkg/audit"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/security"
	"github.com/mqagent/mqagent/pkg/state"
	"github.com/mqagent/mqagent/pkg/transport"
)

// Handler runs one kind of command.
type Handler interface {
	// Decode validates a command's args and returns the typed request that
	// Run receives. Errors should be *protocol.FieldError.
	Decode(args json.RawMessage) (any, error)
	// Run executes the request. It must return promptly once ctx ends.
	Run(ctx context.Context, call *Call) Outcome
}

// Pure is implemented by handlers whose Run has no side effects and returns
// at once (ping, result.get): they run on the intake path and their result
// is journaled together with the id, in one write.
type Pure interface{ Pure() }

// Immediate is implemented by handlers that act on the pipeline itself and
// must not wait behind busy workers (cancel): they run on the intake path,
// journaled as running first.
type Immediate interface{ Immediate() }

// Summarizer is implemented by handlers that can describe a request for the
// audit log ("uname -a"). Secrets (env values, stdin) must be left out.
type Summarizer interface{ Summary(req any) string }

// Call is one command given to a handler.
type Call struct {
	Cmd     *protocol.Command
	Req     any
	Timeout time.Duration
	// Output publishes output chunks; nil unless the command asked for
	// "stream": true. Calls must be serialized.
	Output func(stream string, data []byte)
	// Started records process identity (JSON-serialisable) so that what is
	// left of the process can be killed after an agent crash.
	Started func(proc any)
}

// Outcome is what a handler produced. State is a final state; when empty
// the dispatcher derives it (succeeded, or failed when Error is set).
type Outcome struct {
	State           string
	ExitCode        *int
	Stdout, Stderr  []byte
	StdoutTruncated bool
	StderrTruncated bool
	Error           string
	Data            any
	Started         time.Time
	// Detached: the final result comes later, through Complete (agent.update:
	// from the new agent process); the journal entry stays running.
	Detached bool
	// Output that was not UTF-8: the encoding it was decoded from, and the
	// raw bytes in base64 when that decoding was a guess (protocol.Result).
	StdoutEncoding, StderrEncoding string
	StdoutBase64, StderrBase64     string
}

// Causes of a command's context ending.
var (
	ErrTimeout     = errors.New("timed out")
	ErrCanceled    = errors.New("canceled")
	ErrInterrupted = errors.New(protocol.ErrInterrupted)
)

// Store is the journal and outbox the pipeline writes to. *state.Store
// implements it and is what the agent uses; the swarm simulator
// (test/swarm) supplies an in-memory one to run thousands of simulated
// hosts in one process.
type Store interface {
	Admit(e state.Entry, out ...state.Message) (existing state.Entry, admitted bool, err error)
	SetRunning(id string, proc json.RawMessage, out ...state.Message) error
	Finish(id, st string, result []byte, out ...state.Message) error
	Push(msgs ...state.Message) error
	Get(id string) (e state.Entry, ok bool, err error)
	Unfinished() ([]state.Entry, error)
	Prune(now time.Time) (int, error)
}

var _ Store = (*state.Store)(nil)

// Verifier checks a command's signature and kind against the host's
// policy. *security.Verifier implements it and is what the agent uses.
type Verifier interface {
	Verify(env *protocol.Envelope) (kid string, err error)
	Allow(kid, kind string) error
}

var _ Verifier = (*security.Verifier)(nil)

// Options configure a Dispatcher.
type Options struct {
	HostID string
	Groups []string
	Facts  map[string]string
	// FactsFunc, when set, supplies the current facts (config plus the
	// facts directory, refreshed with the inventory) instead of Facts.
	FactsFunc func() map[string]string
	OS        string
	Topics    protocol.Topics

	Verifier Verifier
	Store    Store
	Audit    *audit.Log
	Handlers map[string]Handler
	// KillOrphan kills what is left of an interrupted command's processes.
	KillOrphan OrphanKiller
	// OnStall is called when a message had to be left unacknowledged (the
	// journal could not be written): the broker does not deliver it again
	// before the next session, so the caller should reconnect.
	OnStall func()

	MaxPayload     int
	DefaultTTL     time.Duration
	MaxClockSkew   time.Duration
	DefaultTimeout time.Duration
	MaxTimeout     time.Duration
	MaxConcurrent  int
	MaxQueue       int
	// IntakeSize is how many received messages may wait for the intake
	// goroutine (0: 64). The swarm simulator, which calls Handle itself
	// and never Submit, sets 1.
	IntakeSize int

	Logger *slog.Logger
	Now    func() time.Time // nil = time.Now
}

// Stats are counters for health reports.
type Stats struct {
	Running, Queued int
	Received        uint64
	Malformed       uint64
	Rejected        uint64
	Duplicates      uint64
	Overflow        uint64
}

// Dispatcher is the command pipeline.
type Dispatcher struct {
	o        Options
	log      *slog.Logger
	groups   map[string]bool
	handlers map[string]Handler

	in       chan transport.Message
	queue    chan *job
	stopping atomic.Bool
	stopped  chan struct{} // closed when the pipeline stops taking messages
	stopOnce sync.Once

	mu      sync.Mutex
	jobs    map[string]*job // queued and running
	running int

	received, malformed, rejected, duplicates, overflow atomic.Uint64
}

type job struct {
	cmd     *protocol.Command
	env     *protocol.Envelope
	kid     string
	topic   string
	handler Handler
	req     any
	summary string

	// guarded by Dispatcher.mu
	started  bool
	canceled bool
	cancel   context.CancelCauseFunc
}

// intakeSize is how many received messages may wait for the intake. Each
// is at most the broker's message size limit.
const intakeSize = 64

// New builds a Dispatcher. The handlers for cancel and result.get are
// built in; the others come from o.Handlers.
func New(o Options) *Dispatcher {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	d := &Dispatcher{
		o:        o,
		log:      o.Logger,
		groups:   map[string]bool{},
		handlers: map[string]Handler{},
		in:       make(chan transport.Message, cmp.Or(max(o.IntakeSize, 0), intakeSize)),
		stopped:  make(chan struct{}),
		queue:    make(chan *job, o.MaxQueue+o.MaxConcurrent+1),
		jobs:     map[string]*job{},
	}
	for _, g := range o.Groups {
		d.groups[g] = true
	}
	for k, h := range o.Handlers {
		d.handlers[k] = h
	}
	d.handlers[protocol.KindCancel] = cancelHandler{d}
	d.handlers[protocol.KindResultGet] = resultGetHandler{d}
	return d
}

// Submit takes a received message. It returns at once while the intake
// has room; when it is full it waits for room (backpressure: the broker
// connection stops delivering until the agent catches up) or for the
// pipeline to stop. A message it does not take is left unacknowledged and
// the broker delivers it again to the next session.
func (d *Dispatcher) Submit(m transport.Message) {
	d.received.Add(1)
	if d.stopping.Load() {
		return
	}
	select {
	case d.in <- m:
		return
	default:
	}
	if d.overflow.Add(1)%1000 == 1 {
		d.log.Warn("command intake full: holding back the broker until it drains", "times", d.overflow.Load())
	}
	select {
	case d.in <- m:
	case <-d.stopped:
	}
}

// Stats returns the pipeline's counters.
func (d *Dispatcher) Stats() Stats {
	d.mu.Lock()
	running, queued := d.running, len(d.jobs)-d.running
	d.mu.Unlock()
	return Stats{
		Running: running, Queued: queued,
		Received: d.received.Load(), Malformed: d.malformed.Load(), Rejected: d.rejected.Load(),
		Duplicates: d.duplicates.Load(), Overflow: d.overflow.Load(),
	}
}

// Run recovers the journal (commands interrupted by a crash end failed /
// interrupted; commands still queued are queued again), then takes
// messages and runs commands until ctx ends. Then it stops taking messages
// (those not yet journaled stay unacknowledged), leaves queued commands
// queued on disk, gives running commands grace, and interrupts them.
func (d *Dispatcher) Run(ctx context.Context, grace time.Duration) error {
	if err := d.recover(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	intakeCtx, stopIntake := context.WithCancel(context.Background())
	// One intake goroutine: commands are handled in the order the broker
	// delivered them (a cancel right after its command finds it queued).
	wg.Go(func() { d.intake(intakeCtx) })
	runCtx, interrupt := context.WithCancelCause(context.Background())
	var workers sync.WaitGroup
	for range max(d.o.MaxConcurrent, 1) {
		workers.Go(func() { d.worker(ctx, runCtx) })
	}
	pruneT := time.NewTicker(10 * time.Minute)
	defer pruneT.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-pruneT.C:
			if n, err := d.o.Store.Prune(d.o.Now()); err != nil {
				d.log.Error("journal prune failed", "err", err)
			} else if n > 0 {
				d.log.Debug("journal pruned", "entries", n)
			}
		}
	}
	d.Stop()
	stopIntake()
	wg.Wait()
	done := make(chan struct{})
	go func() { workers.Wait(); close(done) }()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		d.log.Warn("grace period over: interrupting running commands", "grace", grace)
		interrupt(ErrInterrupted)
		<-done
	}
	interrupt(nil)
	return nil
}

// Stop stops taking new messages at once (before Run's ctx ends), so that a
// restart or update never handles a message twice.
func (d *Dispatcher) Stop() {
	d.stopOnce.Do(func() {
		d.stopping.Store(true)
		close(d.stopped)
	})
}

func (d *Dispatcher) intake(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-d.in:
			if d.stopping.Load() {
				continue // not acknowledged: redelivered to the next session
			}
			d.handle(m)
		}
	}
}

// handle checks one message and journals it. The message is acknowledged
// once the outcome is on disk, or when it is to be dropped for good.
func (d *Dispatcher) handle(m transport.Message) {
	ack := true
	defer func() {
		if r := recover(); r != nil {
			d.log.Error("panic while handling a command", "panic", r, "topic", m.Topic)
		}
		if ack && m.Ack != nil {
			m.Ack()
		}
	}()
	ack = d.check(m)
	if !ack && d.o.OnStall != nil {
		d.o.OnStall()
	}
}

// received builds the "received" audit record of a command.
func (d *Dispatcher) record(env *protocol.Envelope, topic, decision, reason string) *protocol.Audit {
	a := &protocol.Audit{V: protocol.Version, TS: protocol.Time{Time: d.o.Now().UTC()}, Host: d.o.HostID,
		Event: protocol.EventReceived, Decision: decision, Reason: reason, Topic: topic}
	if env != nil {
		a.ID, a.Kind, a.Kid, a.Operator = env.ID, env.Kind, env.Kid, env.Operator
	}
	return a
}

func (d *Dispatcher) check(m transport.Message) bool {
	scope, name := d.o.Topics.ParseCmdTopic(m.Topic)
	if !d.mine(scope, name) {
		d.auditLocal(d.record(nil, m.Topic, protocol.DecisionIgnored, "not a command topic of this host"))
		return true
	}
	if len(m.Payload) > 4*d.o.MaxPayload {
		// Far over the limit: not worth parsing for an id.
		d.malformed.Add(1)
		d.publishAudit(d.record(nil, m.Topic, protocol.DecisionMalformed, fmt.Sprintf("payload: %d bytes, far over security.max_payload_bytes (%d)", len(m.Payload), d.o.MaxPayload)))
		return true
	}
	env, err := protocol.Decode(m.Payload)
	if err != nil {
		d.malformed.Add(1)
		d.publishAudit(d.record(nil, m.Topic, protocol.DecisionMalformed, truncate(err.Error(), 300)))
		return true
	}
	if len(m.Payload) > d.o.MaxPayload {
		return d.reject(env, m.Topic, "", fmt.Sprintf("payload: %d bytes exceeds security.max_payload_bytes (%d)", len(m.Payload), d.o.MaxPayload), false)
	}
	// On group and broadcast topics the filter comes first: a host that
	// does not match stays silent even if the rest is invalid.
	if scope != protocol.ScopeHost && env.Filter != nil && env.FilterErr == nil && !d.matches(env.Filter) {
		d.auditLocal(d.record(env, m.Topic, protocol.DecisionIgnored, "filter does not match"))
		return true
	}
	if env.TargetErr != nil {
		return d.reject(env, m.Topic, "", env.TargetErr.Error(), false)
	}
	if want := protocol.TargetFor(scope, name); env.Target != "" && env.Target != want {
		return d.reject(env, m.Topic, "", fmt.Sprintf("target mismatch: command for %q arrived on %s", env.Target, m.Topic), false)
	}
	kid, err := d.o.Verifier.Verify(env)
	if err != nil {
		return d.reject(env, m.Topic, "", err.Error(), false)
	}
	// From here the command is authentic: its id enters the journal.
	cmd, err := env.Command(d.o.DefaultTTL)
	if err != nil {
		return d.reject(env, m.Topic, kid, err.Error(), true)
	}
	h, ok := d.handlers[cmd.Kind]
	if !ok {
		return d.reject(env, m.Topic, kid, fmt.Sprintf("kind: unknown kind %q", cmd.Kind), true)
	}
	if err := d.o.Verifier.Allow(kid, cmd.Kind); err != nil {
		return d.reject(env, m.Topic, kid, err.Error(), true)
	}
	req, err := h.Decode(cmd.Args)
	if err != nil {
		return d.reject(env, m.Topic, kid, err.Error(), true)
	}
	now := d.o.Now()
	if skew := cmd.IssuedAt.Sub(now); skew > d.o.MaxClockSkew {
		return d.reject(env, m.Topic, kid, fmt.Sprintf("issued_at: %s in the future (more than security.max_clock_skew %s)", skew.Round(time.Second), d.o.MaxClockSkew), true)
	}
	if timeout := time.Duration(cmd.TimeoutMS) * time.Millisecond; d.o.MaxTimeout > 0 && timeout > d.o.MaxTimeout {
		return d.reject(env, m.Topic, kid, fmt.Sprintf("timeout_ms: %d exceeds exec.max_timeout (%s)", cmd.TimeoutMS, d.o.MaxTimeout), true)
	}
	j := &job{cmd: cmd, env: env, kid: kid, topic: m.Topic, handler: h, req: req}
	if s, ok := h.(Summarizer); ok {
		j.summary = truncate(s.Summary(req), 200)
	}
	if now.After(cmd.ExpiresAt.Time) {
		return d.finishAtOnce(j, protocol.DecisionExpired, "expired before it started", Outcome{State: protocol.StateExpired, Error: "expired before it started"})
	}
	if _, pure := h.(Pure); pure {
		out := d.runHandler(context.Background(), j, nil)
		return d.finishAtOnce(j, protocol.DecisionAccepted, "", out)
	}
	if _, now := h.(Immediate); now {
		return d.runImmediate(j)
	}
	return d.accept(j)
}

// runImmediate journals a command as running, runs it on the spot and
// finishes it.
func (d *Dispatcher) runImmediate(j *job) bool {
	now := d.o.Now()
	e := state.Entry{ID: j.env.ID, State: protocol.StateRunning, Kind: j.cmd.Kind, Topic: j.topic,
		Received: now, KeepUntil: d.keepUntil(j.cmd)}
	ok, fresh := d.admit(j, e, d.receivedMsg(j, protocol.DecisionAccepted, ""))
	if !ok || !fresh {
		return ok
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d.finish(j, d.runHandler(ctx, j, nil), now)
	return true
}

func (d *Dispatcher) mine(scope protocol.Scope, name string) bool {
	switch scope {
	case protocol.ScopeHost:
		return name == d.o.HostID
	case protocol.ScopeGroup:
		return d.groups[name]
	case protocol.ScopeAll:
		return true
	}
	return false
}

func (d *Dispatcher) matches(f *protocol.Filter) bool {
	if len(f.Hosts) > 0 && !contains(f.Hosts, d.o.HostID) {
		return false
	}
	if len(f.Groups) > 0 {
		in := false
		for _, g := range f.Groups {
			in = in || d.groups[g]
		}
		if !in {
			return false
		}
	}
	if f.OS != "" && f.OS != d.o.OS {
		return false
	}
	facts := d.o.Facts
	if len(f.Facts) > 0 && d.o.FactsFunc != nil {
		facts = d.o.FactsFunc()
	}
	for k, v := range f.Facts {
		if have, ok := facts[k]; !ok || have != v {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

func (d *Dispatcher) keepUntil(cmd *protocol.Command) time.Time {
	until := d.o.Now()
	if cmd != nil && cmd.ExpiresAt != nil && cmd.ExpiresAt.After(until) {
		until = cmd.ExpiresAt.Time
	}
	return until.Add(d.o.DefaultTTL + d.o.MaxClockSkew)
}

// reject ends a command with state rejected. Authentic commands (journal
// true) enter the journal, so a replay of the same id is a duplicate;
// others do not, so a forged message cannot use up a real command's id.
func (d *Dispatcher) reject(env *protocol.Envelope, topic, kid, reason string, journal bool) bool {
	d.rejected.Add(1)
	env.Kid = kid
	j := &job{env: env, kid: kid, topic: topic, cmd: &protocol.Command{ID: env.ID, Kind: env.Kind, Operator: env.Operator}}
	out := Outcome{State: protocol.StateRejected, Error: reason}
	if journal {
		return d.finishAtOnce(j, protocol.DecisionRejected, reason, out)
	}
	res := d.result(j, out, time.Time{})
	rec := d.record(env, topic, protocol.DecisionRejected, reason)
	// Not authenticated: anyone who can publish here can send these, so
	// they may be dropped when the outbox is full rather than crowd out
	// real results (the local audit log keeps the record).
	resMsg, audMsg := d.resultMsg(j.env.ID, res), d.auditMsg(rec)
	resMsg.Droppable, audMsg.Droppable = true, true
	if err := d.o.Store.Push(resMsg, audMsg); err != nil {
		if errors.Is(err, state.ErrOutboxFull) {
			d.log.Warn("outbox full: rejection of an unauthenticated command kept in the local audit log only", "id", env.ID)
			return true // nothing was admitted; acknowledge it
		}
		d.log.Error("cannot store a rejection for publishing", "id", env.ID, "err", err)
		return false
	}
	d.log.Info("command rejected", "id", env.ID, "kind", env.Kind, "reason", reason)
	return true
}

// finishAtOnce journals a command that ends without being queued
// (rejected, expired, or a pure built-in that already ran), unless its id
// was seen before.
func (d *Dispatcher) finishAtOnce(j *job, decision, reason string, out Outcome) bool {
	now := d.o.Now()
	res := d.result(j, out, now)
	resMsg := d.resultMsg(j.env.ID, res)
	msgs := []state.Message{d.receivedMsg(j, decision, reason), resMsg}
	if decision == protocol.DecisionAccepted {
		msgs = append(msgs, d.auditMsg(d.finishedRecord(j, res)))
	}
	// The journal keeps the result's bytes as published (never modified).
	e := state.Entry{ID: j.env.ID, State: res.State, Kind: j.env.Kind, Topic: j.topic, Received: now,
		KeepUntil: d.keepUntil(j.cmd), Result: resMsg.Payload}
	ok, _ := d.admit(j, e, msgs...)
	return ok
}

// receivedMsg is the "received" audit record of j, for the audit topic.
func (d *Dispatcher) receivedMsg(j *job, decision, reason string) state.Message {
	rec := d.record(j.env, j.topic, decision, reason)
	rec.Summary = j.summary
	return d.auditMsg(rec)
}

// admit puts j's id in the journal as e, with msgs to publish, unless the
// id was seen before: then the duplicate is handled here and fresh is
// false. ok is false when the journal could not be written (the message
// then stays unacknowledged, for the broker to deliver again).
func (d *Dispatcher) admit(j *job, e state.Entry, msgs ...state.Message) (ok, fresh bool) {
	existing, admitted, err := d.o.Store.Admit(e, msgs...)
	if err = d.journaled(err, e.ID); err != nil {
		d.log.Error("journal write failed; command left unacknowledged", "id", e.ID, "err", err)
		return false, false
	}
	if !admitted {
		d.duplicate(j, existing)
	}
	return true, admitted
}

// accept journals and queues a command.
func (d *Dispatcher) accept(j *job) bool {
	d.mu.Lock()
	full := len(d.jobs) >= d.o.MaxQueue+d.o.MaxConcurrent
	d.mu.Unlock()
	if full {
		return d.finishAtOnce(j, protocol.DecisionRejected, "queue full", Outcome{State: protocol.StateRejected, Error: "queue full"})
	}
	e := state.Entry{ID: j.env.ID, State: protocol.StateQueued, Kind: j.cmd.Kind, Topic: j.topic,
		Payload: j.env.Raw, Received: d.o.Now(), KeepUntil: d.keepUntil(j.cmd)}
	ok, fresh := d.admit(j, e, d.receivedMsg(j, protocol.DecisionAccepted, ""), d.stateMsg(j, protocol.StateQueued, time.Time{}))
	if fresh {
		d.enqueue(j)
	}
	return ok
}

func (d *Dispatcher) enqueue(j *job) {
	d.mu.Lock()
	d.jobs[j.cmd.ID] = j
	d.mu.Unlock()
	d.queue <- j // capacity MaxQueue+MaxConcurrent+1 > jobs admitted by accept
}

// duplicate handles an id that is already in the journal: the stored
// final result is published again (same final state), else nothing more.
func (d *Dispatcher) duplicate(j *job, e state.Entry) {
	d.duplicates.Add(1)
	rec := d.record(j.env, j.topic, protocol.DecisionDuplicate, "id already seen (state "+e.State+")")
	msgs := []state.Message{d.auditMsg(rec)}
	if protocol.IsFinal(e.State) && len(e.Result) > 0 {
		msgs = append(msgs, state.Message{Topic: d.o.Topics.Result(d.o.HostID, e.ID), Payload: e.Result, QoS: 1})
	}
	if err := d.o.Store.Push(msgs...); err != nil {
		d.log.Error("cannot store a duplicate's result for publishing", "id", e.ID, "err", err)
	}
}

func (d *Dispatcher) worker(ctx, runCtx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-d.queue:
			if ctx.Err() != nil {
				// Stopping: leave it queued on disk; it runs after the restart.
				d.mu.Lock()
				delete(d.jobs, j.cmd.ID)
				d.mu.Unlock()
				return
			}
			d.execute(runCtx, j)
		}
	}
}

// execute runs a queued job to its final state.
func (d *Dispatcher) execute(runCtx context.Context, j *job) {
	id := j.cmd.ID
	d.mu.Lock()
	if j.canceled {
		delete(d.jobs, id)
		d.mu.Unlock()
		return // the cancel command already finished it
	}
	ctx, cancel := context.WithCancelCause(runCtx)
	defer cancel(nil)
	j.cancel, j.started = cancel, true
	d.running++
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.running--
		delete(d.jobs, id)
		d.mu.Unlock()
	}()

	started := d.o.Now()
	if started.After(j.cmd.ExpiresAt.Time) {
		d.finish(j, Outcome{State: protocol.StateExpired, Error: "expired while queued"}, time.Time{})
		return
	}
	// Written before the process starts: after a crash from here on, the
	// command is reported interrupted and never run again.
	if err := d.journaled(d.o.Store.SetRunning(id, nil, d.stateMsg(j, protocol.StateRunning, started)), id); err != nil {
		d.log.Error("journal write failed; command not started", "id", id, "err", err)
		d.finish(j, Outcome{State: protocol.StateFailed, Error: "journal unavailable: " + err.Error()}, time.Time{})
		return
	}
	timeout := time.Duration(j.cmd.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = d.o.DefaultTimeout
	}
	tctx, tcancel := context.WithTimeoutCause(ctx, timeout, ErrTimeout)
	defer tcancel()
	var output func(string, []byte)
	flush := func() {}
	if j.cmd.Stream {
		output, flush = d.chunker(j)
	}
	out := d.runHandler(tctx, j, output)
	flush() // the final result follows the last chunk
	if out.Started.IsZero() {
		out.Started = started
	}
	d.finish(j, out, out.Started)
}

func (d *Dispatcher) runHandler(ctx context.Context, j *job, output func(string, []byte)) (out Outcome) {
	defer func() {
		if r := recover(); r != nil {
			d.log.Error("command handler panicked", "id", j.cmd.ID, "kind", j.cmd.Kind, "panic", r)
			out = Outcome{State: protocol.StateFailed, Error: fmt.Sprintf("internal error: handler panicked: %v", r)}
		}
	}()
	call := &Call{Cmd: j.cmd, Req: j.req, Output: output, Timeout: time.Duration(j.cmd.TimeoutMS) * time.Millisecond,
		Started: func(proc any) {
			if err := d.o.Store.SetRunning(j.cmd.ID, mustJSON(proc)); err != nil {
				d.log.Warn("cannot record process identity", "id", j.cmd.ID, "err", err)
			}
		}}
	out = j.handler.Run(ctx, call)
	if out.State == "" {
		switch cause := context.Cause(ctx); {
		case out.Error == "" && ctx.Err() == nil:
			out.State = protocol.StateSucceeded
		case errors.Is(cause, ErrTimeout):
			out.State, out.Error = protocol.StateTimedOut, "timed out: the process tree was killed"
		case errors.Is(cause, ErrCanceled):
			out.State, out.Error = protocol.StateCanceled, "canceled"
		case errors.Is(cause, ErrInterrupted):
			out.State, out.Error = protocol.StateFailed, protocol.ErrInterrupted
		default:
			out.State = protocol.StateFailed
		}
	}
	return out
}

// chunker returns the Output func of a streaming command, and a flush for
// its end: every piece becomes an output chunk with a gap-free seq. A UTF-8
// character split across two reads is held back and sent whole.
func (d *Dispatcher) chunker(j *job) (output func(string, []byte), flush func()) {
	var seq uint64
	rest := map[string][]byte{}
	topic := d.o.Topics.Output(d.o.HostID, j.cmd.ID)
	emit := func(stream string, data []byte) {
		if len(data) == 0 {
			return
		}
		c := protocol.Chunk{V: protocol.Version, ID: j.cmd.ID, Host: d.o.HostID, Seq: seq, Stream: stream, Data: string(data)}
		seq++
		if err := d.o.Store.Push(state.Message{Topic: topic, Payload: mustJSON(c), QoS: 1, Droppable: true}); err != nil {
			d.log.Warn("output chunk dropped", "id", j.cmd.ID, "seq", c.Seq, "err", err)
		}
	}
	output = func(stream string, data []byte) {
		buf := append(rest[stream], data...)
		cut := len(buf) - partialRune(buf)
		emit(stream, buf[:cut])
		rest[stream] = append(rest[stream][:0], buf[cut:]...)
	}
	flush = func() {
		for _, s := range []string{"stdout", "stderr"} {
			emit(s, rest[s])
			rest[s] = nil
		}
	}
	return output, flush
}

// partialRune is the length of an incomplete UTF-8 sequence at the end of
// b (0 when b ends on a character boundary or with invalid bytes).
func partialRune(b []byte) int {
	for i := 1; i <= 3 && i <= len(b); i++ {
		c := b[len(b)-i]
		if c&0xC0 != 0x80 { // a lead byte (or ASCII)
			need := 0
			switch {
			case c&0xE0 == 0xC0:
				need = 2
			case c&0xF0 == 0xE0:
				need = 3
			case c&0xF8 == 0xF0:
				need = 4
			}
			if need > i {
				return i
			}
			return 0
		}
	}
	return 0
}

// finish journals a command's final result with its audit record.
func (d *Dispatcher) finish(j *job, out Outcome, started time.Time) {
	if out.Detached {
		d.log.Info("command continues: its final result comes later", "id", j.cmd.ID, "kind", j.cmd.Kind)
		return
	}
	res := d.result(j, out, started)
	resMsg := d.resultMsg(j.cmd.ID, res)
	msgs := []state.Message{resMsg, d.auditMsg(d.finishedRecord(j, res))}
	err := d.journaled(d.o.Store.Finish(j.cmd.ID, res.State, resMsg.Payload, msgs...), j.cmd.ID)
	if errors.Is(err, state.ErrAlreadyFinal) {
		d.log.Debug("command already final", "id", j.cmd.ID, "state", res.State)
		return
	}
	if err != nil {
		d.log.Error("cannot journal a final result", "id", j.cmd.ID, "state", res.State, "err", err)
		return
	}
	d.log.Info("command finished", "id", j.cmd.ID, "kind", j.cmd.Kind, "state", res.State, "duration_ms", res.DurationMS)
}

func (d *Dispatcher) finishedRecord(j *job, res *protocol.Result) *protocol.Audit {
	a := d.record(j.env, j.topic, "", "")
	a.Event, a.Decision = protocol.EventFinished, ""
	a.Summary, a.State, a.ExitCode, a.DurationMS = j.summary, res.State, res.ExitCode, res.DurationMS
	if j.cmd != nil {
		a.Kind = j.cmd.Kind
	}
	a.Reason = res.Error
	if res.Stdout != "" {
		a.StdoutBytes, a.StdoutSHA256 = len(res.Stdout), sha256Hex(res.Stdout)
	}
	if res.Stderr != "" {
		a.StderrBytes, a.StderrSHA256 = len(res.Stderr), sha256Hex(res.Stderr)
	}
	return a
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func (d *Dispatcher) result(j *job, out Outcome, started time.Time) *protocol.Result {
	now := d.o.Now().UTC()
	state := out.State
	if state == "" {
		state = protocol.StateSucceeded
		if out.Error != "" {
			state = protocol.StateFailed
		}
	}
	r := &protocol.Result{
		V: protocol.Version, ID: j.env.ID, Host: d.o.HostID, Kind: j.env.Kind, State: state,
		ExitCode: out.ExitCode, Stdout: string(out.Stdout), Stderr: string(out.Stderr),
		StdoutTruncated: out.StdoutTruncated, StderrTruncated: out.StderrTruncated,
		StdoutEncoding: out.StdoutEncoding, StderrEncoding: out.StderrEncoding,
		StdoutBase64: out.StdoutBase64, StderrBase64: out.StderrBase64,
		Error: out.Error, TS: protocol.Time{Time: now},
	}
	if j.cmd != nil && j.cmd.Kind != "" {
		r.Kind = j.cmd.Kind
	}
	if !started.IsZero() {
		s := protocol.Time{Time: started.UTC()}
		f := protocol.Time{Time: now}
		r.StartedAt, r.FinishedAt = &s, &f
		r.DurationMS = now.Sub(started).Milliseconds()
	}
	if out.Data != nil {
		if raw, ok := out.Data.(json.RawMessage); ok {
			r.Data = raw
		} else {
			r.Data = mustJSON(out.Data)
		}
	}
	return r
}

func (d *Dispatcher) stateMsg(j *job, st string, started time.Time) state.Message {
	r := &protocol.Result{V: protocol.Version, ID: j.cmd.ID, Host: d.o.HostID, Kind: j.cmd.Kind, State: st, TS: protocol.Now()}
	if !started.IsZero() {
		r.StartedAt = &protocol.Time{Time: started.UTC()}
	}
	return state.Message{Topic: d.o.Topics.Result(d.o.HostID, j.cmd.ID), Payload: mustJSON(r), QoS: 1, Droppable: true}
}

func (d *Dispatcher) resultMsg(id string, r *protocol.Result) state.Message {
	return state.Message{Topic: d.o.Topics.Result(d.o.HostID, id), Payload: mustJSON(r), QoS: 1}
}

// auditMsg appends rec to the local audit log and returns its message for
// the audit topic.
func (d *Dispatcher) auditMsg(rec *protocol.Audit) state.Message {
	line, err := d.o.Audit.Append(rec)
	if err != nil {
		d.log.Error("audit log write failed", "err", err)
		line = mustJSON(rec)
	}
	return state.Message{Topic: d.o.Topics.Audit(d.o.HostID), Payload: line, QoS: 1}
}

// auditLocal records in the local log only (commands ignored by a filter:
// a broadcast must not make every non-matching host publish).
func (d *Dispatcher) auditLocal(rec *protocol.Audit) {
	if _, err := d.o.Audit.Append(rec); err != nil {
		d.log.Error("audit log write failed", "err", err)
	}
}

// publishAudit queues an audit record of an unauthenticated message
// (malformed): droppable, like its rejection.
func (d *Dispatcher) publishAudit(rec *protocol.Audit) {
	m := d.auditMsg(rec)
	m.Droppable = true
	if err := d.o.Store.Push(m); err != nil {
		d.log.Warn("audit record not queued for publishing", "err", err)
	}
}

// journaled filters a journal write's error: ErrOutboxFull means the
// journal change was committed and only a message to publish was refused
// (the outbox is at its hard cap): the result stays in the journal for
// result.get, so the pipeline carries on.
func (d *Dispatcher) journaled(err error, id string) error {
	if errors.Is(err, state.ErrOutboxFull) {
		d.log.Error("outbox full: a result or audit record was not queued for publishing; it stays in the journal (result.get)", "id", id)
		return nil
	}
	return err
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types are marshalled; this cannot happen with them.
		return []byte(fmt.Sprintf(`{"error":%q}`, err.Error()))
	}
	return b
}
