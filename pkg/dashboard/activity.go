package dashboard

import (
	"container/list"
	"encoding/json"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// maxText bounds the output kept per command and stream: the page shows
// the start of the output (`mqagent result` fetches all of it).
const maxText = 8 << 10

// Command is one command of a host as the host page shows it: what its
// audit records and results said, the latest state winning (a final state
// is never replaced by an earlier one arriving late).
type Command struct {
	ID       string `json:"id"`                 // command id
	Kind     string `json:"kind,omitempty"`     // command kind
	Summary  string `json:"summary,omitempty"`  // what it runs, from the audit record
	Operator string `json:"operator,omitempty"` // who sent it, from the audit record
	Kid      string `json:"kid,omitempty"`      // the key that signed it
	// Decision is the audit decision (accepted, rejected…) when known.
	Decision string `json:"decision,omitempty"`
	// State is the last state: sent (from this dashboard, no answer
	// yet), queued, running, or a final state.
	State      string `json:"state"`
	ExitCode   *int   `json:"exit_code,omitempty"`   // exit status of a finished process
	Error      string `json:"error,omitempty"`       // the result's error, or the rejection reason
	Stdout     string `json:"stdout,omitempty"`      // start of the output (8 KiB)
	Stderr     string `json:"stderr,omitempty"`      // start of the error output (8 KiB)
	Truncated  bool   `json:"truncated,omitempty"`   // the output was longer than kept
	DurationMS int64  `json:"duration_ms,omitempty"` // run time
	// First is when the dashboard first heard of it, Updated its last
	// change, both Unix ms of the agent's clock where it said.
	First   int64 `json:"first"`   // first heard of
	Updated int64 `json:"updated"` // last change
	// Streamed counts the output bytes received as chunks.
	Streamed int `json:"streamed,omitempty"`

	final bool // a final result was received
}

// hostActivity is one host's recent commands and audit records.
type hostActivity struct {
	version  uint64
	commands []*Command // oldest first
	byID     map[string]*Command
	audits   []protocol.Audit // oldest first
	elem     *list.Element    // in activity.lru
}

// activity keeps the recent commands and audit records of the hosts, for
// at most maxHosts hosts (the least recently active leave first).
type activity struct {
	maxCommands, maxAudits, maxHosts int

	mu    sync.Mutex
	hosts map[string]*hostActivity
	lru   *list.List // host ids, most recent at the front
}

func newActivity(maxCommands, maxAudits, maxHosts int) *activity {
	return &activity{maxCommands: maxCommands, maxAudits: maxAudits, maxHosts: maxHosts,
		hosts: map[string]*hostActivity{}, lru: list.New()}
}

// hostLocked returns the host's record, creating it (and evicting the
// least recently active host beyond maxHosts).
func (a *activity) hostLocked(id string) *hostActivity {
	h := a.hosts[id]
	if h != nil {
		a.lru.MoveToFront(h.elem)
		return h
	}
	h = &hostActivity{byID: map[string]*Command{}}
	h.elem = a.lru.PushFront(id)
	a.hosts[id] = h
	for a.lru.Len() > a.maxHosts {
		old := a.lru.Back()
		a.lru.Remove(old)
		delete(a.hosts, old.Value.(string))
	}
	return h
}

// commandLocked returns the host's command id, creating it (and dropping
// the oldest beyond maxCommands).
func (a *activity) commandLocked(h *hostActivity, id string, ts int64) *Command {
	if c := h.byID[id]; c != nil {
		return c
	}
	c := &Command{ID: id, First: ts, Updated: ts}
	h.commands = append(h.commands, c)
	h.byID[id] = c
	if len(h.commands) > a.maxCommands {
		drop := h.commands[0]
		h.commands = dropFirst(h.commands)
		delete(h.byID, drop.ID)
	}
	return c
}

// dropFirst removes cs[0] in place.
func dropFirst(cs []*Command) []*Command {
	copy(cs, cs[1:])
	cs[len(cs)-1] = nil
	return cs[:len(cs)-1]
}

// apply parses one message of P/hosts/{host}/audit,
// P/hosts/{host}/results/{id} or …/out and records it.
func (a *activity) apply(t protocol.Topics, topic string, payload []byte) bool {
	rest, ok := strings.CutPrefix(topic, t.Prefix+"/hosts/")
	if !ok {
		return false
	}
	host, rest, ok := strings.Cut(rest, "/")
	if !ok || !protocol.ValidHostID(host) {
		return false
	}
	switch {
	case rest == "audit":
		var r protocol.Audit
		if json.Unmarshal(payload, &r) != nil || r.Host != host || r.Event == "" {
			return false
		}
		a.addAudit(host, r)
		return true
	case strings.HasPrefix(rest, "results/"):
		id, out, _ := strings.Cut(rest[len("results/"):], "/")
		if !protocol.ValidID(id) {
			return false
		}
		switch out {
		case "":
			var r protocol.Result
			if json.Unmarshal(payload, &r) != nil || r.Host != host || r.ID != id || r.State == "" {
				return false
			}
			a.addResult(host, &r)
			return true
		case "out":
			var c protocol.Chunk
			if json.Unmarshal(payload, &c) != nil || c.Host != host || c.ID != id {
				return false
			}
			a.addChunk(host, &c)
			return true
		}
	}
	return false
}

func (a *activity) addAudit(host string, r protocol.Audit) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.hostLocked(host)
	r.Summary = clip(r.Summary, 512)
	r.Reason = clip(r.Reason, 512)
	h.audits = append(h.audits, r)
	if len(h.audits) > a.maxAudits {
		h.audits = append(h.audits[:0], h.audits[len(h.audits)-a.maxAudits:]...)
	}
	if r.ID != "" && protocol.ValidID(r.ID) {
		c := a.commandLocked(h, r.ID, r.TS.UnixMilli())
		setIf(&c.Kind, r.Kind)
		setIf(&c.Summary, clip(r.Summary, 512))
		setIf(&c.Operator, r.Operator)
		setIf(&c.Kid, r.Kid)
		if r.Decision != "" && r.Decision != "duplicate" {
			c.Decision = r.Decision
		}
		if c.State == "" || c.State == stateSent {
			switch r.Decision {
			case "rejected", "expired", "malformed":
				c.State = r.Decision
				setIf(&c.Error, r.Reason)
			case "accepted":
				c.State = protocol.StateQueued
			}
		}
		if r.Event == "finished" && r.State != "" && !protocol.IsFinal(c.State) {
			c.State, c.ExitCode, c.DurationMS = r.State, r.ExitCode, r.DurationMS
		}
		c.Updated = max(c.Updated, r.TS.UnixMilli())
	}
	h.version++
}

// stateSent is the state of a command sent from the dashboard before any
// answer.
const stateSent = "sent"

func (a *activity) addResult(host string, r *protocol.Result) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.hostLocked(host)
	c := a.commandLocked(h, r.ID, r.TS.UnixMilli())
	// The final result wins: duplicates and late state changes are
	// dropped. A final state known from an audit record only (no output)
	// is completed by the result.
	if c.final || protocol.IsFinal(c.State) && !protocol.IsFinal(r.State) {
		return
	}
	setIf(&c.Kind, r.Kind)
	c.State = r.State
	if protocol.IsFinal(r.State) {
		c.final = true
		c.ExitCode, c.Error, c.DurationMS = r.ExitCode, clip(r.Error, 1024), r.DurationMS
		c.Stdout, c.Stderr = clip(r.Stdout, maxText), clip(r.Stderr, maxText)
		c.Truncated = r.StdoutTruncated || r.StderrTruncated || len(r.Stdout) > maxText || len(r.Stderr) > maxText
	}
	c.Updated = max(c.Updated, r.TS.UnixMilli())
	h.version++
}

func (a *activity) addChunk(host string, ch *protocol.Chunk) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.hostLocked(host)
	c := a.commandLocked(h, ch.ID, 0)
	c.Streamed += len(ch.Data)
	if protocol.IsFinal(c.State) {
		return // the result has the whole output
	}
	switch ch.Stream {
	case "stderr":
		if len(c.Stderr) < maxText {
			c.Stderr = clip(c.Stderr+ch.Data, maxText)
		}
	default:
		if len(c.Stdout) < maxText {
			c.Stdout = clip(c.Stdout+ch.Data, maxText)
		}
	}
	h.version++
}

// sent records a command sent from the dashboard.
func (a *activity) sent(host string, cmd *protocol.Command) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.hostLocked(host)
	c := a.commandLocked(h, cmd.ID, cmd.IssuedAt.UnixMilli())
	if c.State == "" {
		c.State = stateSent
	}
	setIf(&c.Kind, cmd.Kind)
	setIf(&c.Operator, cmd.Operator)
	h.version++
}

// version is the change counter of one host's activity.
func (a *activity) version(host string) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if h := a.hosts[host]; h != nil {
		return h.version
	}
	return 0
}

// of returns copies of a host's commands (newest first) and audit
// records (newest first).
func (a *activity) of(host string) ([]Command, []protocol.Audit) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.hosts[host]
	if h == nil {
		return []Command{}, []protocol.Audit{}
	}
	cmds := make([]Command, 0, len(h.commands))
	for i := len(h.commands) - 1; i >= 0; i-- {
		cmds = append(cmds, *h.commands[i])
	}
	audits := make([]protocol.Audit, 0, len(h.audits))
	for i := len(h.audits) - 1; i >= 0; i-- {
		audits = append(audits, h.audits[i])
	}
	return cmds, audits
}

func setIf(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

// clip cuts s to at most n bytes at a character boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
