package rollout

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// Statuses of a host in a rollout. Succeeded, Failed, TimedOut and
// NoAnswer are final.
const (
	StatusPending   = "pending"
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"    // failed, rejected, expired, canceled
	StatusTimedOut  = "timed_out" // the agent killed it at its timeout
	StatusNoAnswer  = "no_answer" // no final result within HostTimeout
)

// Phases of a rollout.
const (
	PhaseCanary = "canary"
	PhaseMain   = "main"
	PhaseDone   = "done"
)

// HostState is one host's part of a rollout.
type HostState struct {
	Host   string `json:"host"`
	Status string `json:"status"`
	// State is the final state the agent reported ("" without one).
	State      string    `json:"state,omitempty"`
	Canary     bool      `json:"canary,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	ExitCode   *int      `json:"exit_code,omitempty"`
	Error      string    `json:"error,omitempty"`
	// Sends counts how many times the command was published to the host
	// (more than one after a resume; the agent runs an id only once).
	Sends int `json:"sends,omitempty"`
}

func isFinal(status string) bool {
	switch status {
	case StatusSucceeded, StatusFailed, StatusTimedOut, StatusNoAnswer:
		return true
	}
	return false
}

func isFailure(status string) bool {
	return status == StatusFailed || status == StatusTimedOut || status == StatusNoAnswer
}

// statusOf maps an agent's final state to a rollout status.
func statusOf(state string) string {
	switch state {
	case protocol.StateSucceeded:
		return StatusSucceeded
	case protocol.StateTimedOut:
		return StatusTimedOut
	}
	return StatusFailed
}

// StateVersion is the version of the state file format.
const StateVersion = 1

// State is everything about a rollout, saved as JSON so that it can be
// resumed: the command, the rules, and every host's status.
type State struct {
	Version   int       `json:"version"`
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Command is the command sent to every host (its id is the rollout
	// id; its target is set per host).
	Command protocol.Command `json:"command"`
	// Target and Filter say how the hosts were chosen (for the record).
	Target string           `json:"target,omitempty"`
	Filter *protocol.Filter `json:"filter,omitempty"`
	Config Config           `json:"config"`
	Hosts  []HostState      `json:"hosts"`
	Phase  string           `json:"phase"`
	// Rate is the current start rate (per minute) after growth.
	Rate        float64 `json:"rate_per_min,omitempty"`
	Aborted     bool    `json:"aborted,omitempty"`
	AbortReason string  `json:"abort_reason,omitempty"`
	// AbortBase are the finished and failed counts when the rollout was
	// last resumed: the abort threshold applies to what happened since.
	AbortBaseFinished int `json:"abort_base_finished,omitempty"`
	AbortBaseFailed   int `json:"abort_base_failed,omitempty"`
	// Resumes counts the resumes.
	Resumes int `json:"resumes,omitempty"`
}

// NewState starts a rollout of cmd over hosts (in that order; duplicates
// are an error). The command's ID must be set: it is the rollout's id.
func NewState(cmd protocol.Command, hosts []string, cfg Config, now time.Time) (*State, error) {
	if !protocol.ValidID(cmd.ID) {
		return nil, fmt.Errorf("id: %q is not a valid command id", cmd.ID)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(hosts) == 0 {
		return nil, errors.New("hosts: none to roll out to")
	}
	st := &State{Version: StateVersion, ID: cmd.ID, CreatedAt: now, UpdatedAt: now, Command: cmd, Config: cfg,
		Phase: PhaseMain, Rate: cfg.Rate}
	seen := map[string]bool{}
	for i, h := range hosts {
		if !protocol.ValidHostID(h) {
			return nil, fmt.Errorf("hosts[%d]: invalid host id %q", i, h)
		}
		if seen[h] {
			return nil, fmt.Errorf("hosts[%d]: %s given twice", i, h)
		}
		seen[h] = true
		st.Hosts = append(st.Hosts, HostState{Host: h, Status: StatusPending, Canary: i < cfg.Canary})
	}
	if cfg.Canary > 0 {
		st.Phase = PhaseCanary
	}
	return st, nil
}

// Engine schedules a rollout. It holds no clock and starts no goroutine:
// the caller tells it the time and the results (Execute does).
type Engine struct {
	st        *State
	idx       map[string]int
	nextStart time.Time // the rate limiter's next slot
	growth    int       // successes since the last rate increase
}

// NewEngine takes over a state (new, or loaded to resume).
func NewEngine(st *State) (*Engine, error) {
	if st == nil || st.Version != StateVersion {
		return nil, errors.New("rollout state: unknown version")
	}
	if err := st.Config.Validate(); err != nil {
		return nil, fmt.Errorf("rollout state: %w", err)
	}
	e := &Engine{st: st, idx: make(map[string]int, len(st.Hosts))}
	for i, h := range st.Hosts {
		if _, dup := e.idx[h.Host]; dup || !protocol.ValidHostID(h.Host) {
			return nil, fmt.Errorf("rollout state: host %q invalid or listed twice", h.Host)
		}
		e.idx[h.Host] = i
	}
	return e, nil
}

// State is the engine's state (owned by the engine: save it, do not
// change it).
func (e *Engine) State() *State { return e.st }

// Resume prepares a loaded rollout to go on at now and returns the hosts
// whose command may still be running (started, no final result): the
// caller sends the command to them again (the agent does not run an id
// twice; it re-publishes the stored final result). An aborted rollout is
// resumed too: the abort threshold then counts only what finishes from
// now on.
func (e *Engine) Resume(now time.Time) []string {
	st := e.st
	st.Resumes++
	st.Aborted, st.AbortReason = false, ""
	st.AbortBaseFinished, st.AbortBaseFailed = e.counts()
	if st.Phase == PhaseDone {
		st.Phase = PhaseMain
	}
	var again []string
	for i := range st.Hosts {
		h := &st.Hosts[i]
		if h.Status == StatusRunning {
			h.StartedAt = now // a new deadline
			h.Sends++
			again = append(again, h.Host)
		}
	}
	return again
}

// counts returns the number of finished hosts and of failed ones.
func (e *Engine) counts() (finished, failed int) {
	for _, h := range e.st.Hosts {
		if isFinal(h.Status) {
			finished++
			if isFailure(h.Status) {
				failed++
			}
		}
	}
	return finished, failed
}

func (e *Engine) running() int {
	n := 0
	for _, h := range e.st.Hosts {
		if h.Status == StatusRunning {
			n++
		}
	}
	return n
}

// window is how many hosts may run at once in the current phase.
func (e *Engine) window() int {
	if e.st.Phase == PhaseCanary {
		return e.st.Config.Canary
	}
	if w := e.st.Config.Batch.Of(len(e.st.Hosts)); w > 0 {
		return w
	}
	return math.MaxInt
}

// Next starts what may start at now (their status becomes running) and
// returns them, with the time at which Next should be called again if no
// result arrives before (zero: only a result can move the rollout on).
// Hosts past their HostTimeout are marked no_answer first.
func (e *Engine) Next(now time.Time) (start []string, wake time.Time) {
	st := e.st
	e.expire(now)
	e.advancePhase()
	if st.Aborted || st.Phase == PhaseDone {
		return nil, e.nextDeadline()
	}
	win := e.window()
	running := e.running()
	rateInterval := time.Duration(0)
	if st.Rate > 0 {
		rateInterval = time.Duration(float64(time.Minute) / st.Rate)
	}
	for i := range st.Hosts {
		h := &st.Hosts[i]
		if h.Status != StatusPending || (st.Phase == PhaseCanary && !h.Canary) {
			continue
		}
		if running >= win {
			break
		}
		if rateInterval > 0 && now.Before(e.nextStart) {
			wake = e.nextStart
			break
		}
		h.Status, h.StartedAt = StatusRunning, now
		h.Sends++
		start = append(start, h.Host)
		running++
		if rateInterval > 0 {
			e.nextStart = maxTime(e.nextStart, now).Add(rateInterval)
		}
	}
	if len(start) > 0 {
		st.UpdatedAt = now
	}
	if d := e.nextDeadline(); !d.IsZero() && (wake.IsZero() || d.Before(wake)) {
		wake = d
	}
	return start, wake
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// nextDeadline is the earliest HostTimeout of a running host.
func (e *Engine) nextDeadline() time.Time {
	var d time.Time
	for _, h := range e.st.Hosts {
		if h.Status == StatusRunning {
			if t := h.StartedAt.Add(e.st.Config.HostTimeout); d.IsZero() || t.Before(d) {
				d = t
			}
		}
	}
	return d
}

// expire marks running hosts past their deadline no_answer.
func (e *Engine) expire(now time.Time) {
	for i := range e.st.Hosts {
		h := &e.st.Hosts[i]
		if h.Status == StatusRunning && !now.Before(h.StartedAt.Add(e.st.Config.HostTimeout)) {
			h.Status, h.FinishedAt = StatusNoAnswer, now
			h.Error = fmt.Sprintf("no final result within %v", e.st.Config.HostTimeout)
			e.st.UpdatedAt = now
			e.checkAbort()
		}
	}
}

// advancePhase ends the canary phase once every canary finished (aborting
// when one did not succeed), and the rollout once nothing is left to do.
func (e *Engine) advancePhase() {
	st := e.st
	if st.Phase == PhaseCanary {
		var failed []string
		for _, h := range st.Hosts {
			if !h.Canary {
				continue
			}
			if !isFinal(h.Status) {
				return
			}
			if h.Status != StatusSucceeded {
				failed = append(failed, h.Host+" "+h.Status)
			}
		}
		if len(failed) > 0 && !st.Aborted {
			st.Aborted, st.AbortReason = true, "canary failed: "+strings.Join(failed, ", ")
		}
		st.Phase = PhaseMain
	}
	if st.Phase == PhaseMain && e.running() == 0 {
		pending := slices.ContainsFunc(st.Hosts, func(h HostState) bool { return h.Status == StatusPending })
		if !pending || st.Aborted {
			st.Phase = PhaseDone
		}
	}
}

// Finish records a host's final result. A result for a host that is not
// running is recorded if the host had been given up on (no_answer: the
// late answer is the truth), else ignored (a duplicate).
func (e *Engine) Finish(host, state string, exitCode *int, errText string, now time.Time) {
	i, ok := e.idx[host]
	if !ok || !protocol.IsFinal(state) {
		return
	}
	h := &e.st.Hosts[i]
	if h.Status != StatusRunning && h.Status != StatusNoAnswer {
		return
	}
	late := h.Status == StatusNoAnswer
	h.Status, h.State, h.ExitCode, h.Error, h.FinishedAt = statusOf(state), state, exitCode, errText, now
	e.st.UpdatedAt = now
	if h.Status == StatusSucceeded && !late {
		e.grow()
	}
	if !late {
		e.checkAbort()
	}
	e.advancePhase()
}

// grow applies the exponential rate growth after a success.
func (e *Engine) grow() {
	c := e.st.Config
	if c.RateFactor <= 1 || c.RateEvery < 1 || e.st.Rate <= 0 {
		return
	}
	e.growth++
	if e.growth < c.RateEvery {
		return
	}
	e.growth = 0
	e.st.Rate *= c.RateFactor
	if c.MaxRate > 0 && e.st.Rate > c.MaxRate {
		e.st.Rate = c.MaxRate
	}
	// The slot already planned stays; the ones after it use the new rate.
}

func (e *Engine) checkAbort() {
	st := e.st
	c := st.Config
	if st.Aborted || c.AbortPercent <= 0 {
		return
	}
	finished, failed := e.counts()
	finished -= st.AbortBaseFinished
	failed -= st.AbortBaseFailed
	if finished < max(1, c.AbortMin) {
		return
	}
	if float64(failed)*100 >= c.AbortPercent*float64(finished) {
		st.Aborted = true
		st.AbortReason = fmt.Sprintf("%d of %d finished hosts failed (%.0f%%, threshold %g%%)", failed, finished,
			100*float64(failed)/float64(finished), c.AbortPercent)
	}
}

// Done reports whether the rollout is over: nothing running, and nothing
// left to start (or aborted).
func (e *Engine) Done() bool {
	e.advancePhase()
	return e.st.Phase == PhaseDone
}

// Report is the outcome of a rollout: what ran where.
type Report struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
	Phase string `json:"phase"`
	// Hosts by status, in rollout order.
	Succeeded  []string `json:"succeeded"`
	Failed     []string `json:"failed"`
	TimedOut   []string `json:"timed_out"`
	NoAnswer   []string `json:"no_answer"`
	Running    []string `json:"running"`
	NotStarted []string `json:"not_started"`
	Aborted    bool     `json:"aborted"`
	// AbortReason says why it was aborted.
	AbortReason string  `json:"abort_reason,omitempty"`
	RatePerMin  float64 `json:"rate_per_min,omitempty"`
	// Hosts is every host's state, in rollout order.
	Hosts []HostState `json:"hosts"`
}

// OK reports whether every host succeeded.
func (r Report) OK() bool { return r.Total > 0 && len(r.Succeeded) == r.Total }

// Report returns the rollout's report now.
func (e *Engine) Report() Report {
	st := e.st
	r := Report{ID: st.ID, Total: len(st.Hosts), Phase: st.Phase, Aborted: st.Aborted, AbortReason: st.AbortReason, RatePerMin: st.Rate,
		Succeeded: []string{}, Failed: []string{}, TimedOut: []string{}, NoAnswer: []string{}, Running: []string{}, NotStarted: []string{},
		Hosts: slices.Clone(st.Hosts)}
	for _, h := range st.Hosts {
		switch h.Status {
		case StatusSucceeded:
			r.Succeeded = append(r.Succeeded, h.Host)
		case StatusFailed:
			r.Failed = append(r.Failed, h.Host)
		case StatusTimedOut:
			r.TimedOut = append(r.TimedOut, h.Host)
		case StatusNoAnswer:
			r.NoAnswer = append(r.NoAnswer, h.Host)
		case StatusRunning:
			r.Running = append(r.Running, h.Host)
		default:
			r.NotStarted = append(r.NotStarted, h.Host)
		}
	}
	return r
}

// SortedHosts returns hosts sorted, as a rollout orders them by default.
func SortedHosts(hosts []string) []string {
	out := slices.Clone(hosts)
	sort.Strings(out)
	return out
}
