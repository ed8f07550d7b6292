// Package protocol holds the mqagent wire contract (v1): topic names, the
// payloads the agent receives and publishes, and the decoding and validation
// of commands. It has no dependency on the rest of the agent, so operator
// tools (SDK, CLI, dashboard) can use it too. docs/PROTOCOL.md is the
// human-readable form of what this package implements.
package protocol

import (
	"encoding/json"
	"regexp"
	"strings"
	"time"
)

// Version is the protocol version carried as "v" in every payload.
const Version = 1

// DefaultPrefix is the default topic prefix (config key topic_prefix).
const DefaultPrefix = "mqagent/v1"

// TimeFormat is the RFC 3339 layout, UTC with millisecond precision, used for
// every timestamp the agent publishes.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// Kinds of command defined by the contract.
const (
	KindPing           = "ping"
	KindExec           = "exec"
	KindShell          = "shell"
	KindScript         = "script"
	KindInventory      = "inventory"
	KindMetrics        = "metrics"
	KindCancel         = "cancel"
	KindResultGet      = "result.get"
	KindAgentRestart   = "agent.restart"
	KindAgentStop      = "agent.stop"
	KindAgentUpdate    = "agent.update"
	KindAgentUninstall = "agent.uninstall"
)

// States of a command. Queued and Running are not final.
const (
	StateQueued    = "queued"
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
	StateTimedOut  = "timed_out"
	StateCanceled  = "canceled"
	StateRejected  = "rejected"
	StateExpired   = "expired"
)

// IsFinal reports whether state ends a command.
func IsFinal(state string) bool {
	switch state {
	case StateSucceeded, StateFailed, StateTimedOut, StateCanceled, StateRejected, StateExpired:
		return true
	}
	return false
}

// Audit decisions and events.
const (
	DecisionAccepted  = "accepted"
	DecisionRejected  = "rejected"
	DecisionExpired   = "expired"
	DecisionIgnored   = "ignored"
	DecisionMalformed = "malformed"
	DecisionDuplicate = "duplicate"

	EventReceived = "received"
	EventFinished = "finished"
)

// Status states and offline reasons.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"

	ReasonLost      = "lost"
	ReasonShutdown  = "shutdown"
	ReasonRestart   = "restart"
	ReasonUpdate    = "update"
	ReasonUninstall = "uninstall"
)

// ErrInterrupted is the error text of a command that was running when the
// agent died or was stopped past the grace period.
const ErrInterrupted = "interrupted"

var (
	idPattern   = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	hostPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
)

// ValidID reports whether id is a valid command id.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// ValidHostID reports whether id is a valid host id (also used for groups).
func ValidHostID(id string) bool { return hostPattern.MatchString(id) }

// DefaultHostID derives the default host id from a hostname: lower-cased,
// every character outside the host id set replaced by '-', cut to 63
// characters, and made to start with a letter or digit.
func DefaultHostID(hostname string) string {
	// Per character (rune), not per byte: "höst" is "h-st", as an operator
	// applying the documented rule would expect.
	b := make([]byte, 0, len(hostname))
	for _, c := range strings.ToLower(hostname) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			c = '-'
		}
		b = append(b, byte(c))
	}
	s := string(b)
	if len(s) > 63 {
		s = s[:63]
	}
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= '0' && s[0] <= '9') {
		s = "h" + s
		if len(s) > 63 {
			s = s[:63]
		}
	}
	return s
}

// Time is a timestamp that marshals as RFC 3339 UTC with milliseconds.
type Time struct{ time.Time }

// Now returns the current time as a Time.
func Now() Time { return Time{time.Now().UTC()} }

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, len(TimeFormat)+2)
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, TimeFormat)
	return append(b, '"'), nil
}

// UnmarshalJSON implements json.Unmarshaler: any RFC 3339 time is accepted.
func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return err
	}
	t.Time = v.UTC()
	return nil
}

// Filter narrows a group or broadcast command to the hosts that match all of
// its conditions.
type Filter struct {
	Hosts  []string          `json:"hosts,omitempty"`
	Groups []string          `json:"groups,omitempty"`
	OS     string            `json:"os,omitempty"`
	Facts  map[string]string `json:"facts,omitempty"`
}

// Command is an operator's request to a host (the bare form; see Signed).
type Command struct {
	V         int             `json:"v"`
	ID        string          `json:"id"`
	Kind      string          `json:"kind"`
	Args      json.RawMessage `json:"args,omitempty"`
	Target    string          `json:"target,omitempty"`
	IssuedAt  Time            `json:"issued_at"`
	ExpiresAt *Time           `json:"expires_at,omitempty"`
	TimeoutMS int64           `json:"timeout_ms,omitempty"`
	Stream    bool            `json:"stream,omitempty"`
	Filter    *Filter         `json:"filter,omitempty"`
	Operator  string          `json:"operator,omitempty"`
}

// Signed is the signed wrapper: Signed is the base64 of the exact command
// bytes, Sig the base64 ed25519 signature of those bytes by key Kid.
type Signed struct {
	Signed string `json:"signed"`
	Kid    string `json:"kid"`
	Sig    string `json:"sig"`
}

// Result is a command's state change or final result.
type Result struct {
	V               int             `json:"v"`
	ID              string          `json:"id"`
	Host            string          `json:"host"`
	Kind            string          `json:"kind,omitempty"`
	State           string          `json:"state"`
	ExitCode        *int            `json:"exit_code,omitempty"`
	Stdout          string          `json:"stdout"`
	Stderr          string          `json:"stderr"`
	StdoutTruncated bool            `json:"stdout_truncated"`
	StderrTruncated bool            `json:"stderr_truncated"`
	StdoutEncoding  string          `json:"stdout_encoding,omitempty"` // output was not UTF-8: decoded from this (pkg/textenc)
	StderrEncoding  string          `json:"stderr_encoding,omitempty"`
	StdoutBase64    string          `json:"stdout_base64,omitempty"` // raw bytes when the decoding was a guess or lossy
	StderrBase64    string          `json:"stderr_base64,omitempty"`
	StartedAt       *Time           `json:"started_at,omitempty"`
	FinishedAt      *Time           `json:"finished_at,omitempty"`
	DurationMS      int64           `json:"duration_ms"`
	Error           string          `json:"error"`
	Data            json.RawMessage `json:"data,omitempty"`
	TS              Time            `json:"ts"`
}

// Chunk is a piece of a streaming command's output.
type Chunk struct {
	V      int    `json:"v"`
	ID     string `json:"id"`
	Host   string `json:"host"`
	Seq    uint64 `json:"seq"`
	Stream string `json:"stream"`
	Data   string `json:"data"`
}

// Status is the retained presence of a host: birth, graceful death or will.
type Status struct {
	V         int      `json:"v"`
	Host      string   `json:"host"`
	State     string   `json:"state"`
	Reason    string   `json:"reason,omitempty"`
	Session   uint64   `json:"session"`
	TS        Time     `json:"ts"`
	Version   string   `json:"version,omitempty"`
	OS        string   `json:"os,omitempty"`
	Arch      string   `json:"arch,omitempty"`
	Groups    []string `json:"groups,omitempty"`
	StartedAt *Time    `json:"started_at,omitempty"`
	PID       int      `json:"pid,omitempty"`
}

// Audit is one audit record.
type Audit struct {
	V          int    `json:"v"`
	TS         Time   `json:"ts"`
	Host       string `json:"host"`
	ID         string `json:"id,omitempty"`
	Kind       string `json:"kind,omitempty"`
	Event      string `json:"event"`
	Decision   string `json:"decision,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Kid        string `json:"kid,omitempty"`
	Operator   string `json:"operator,omitempty"`
	Topic      string `json:"topic,omitempty"`
	Summary    string `json:"summary,omitempty"`
	State      string `json:"state,omitempty"`
	ExitCode   *int   `json:"exit_code,omitempty"`
	DurationMS int64  `json:"duration_ms,omitempty"`
	// Output sizes (bytes captured, at most exec.max_output_bytes) and
	// sha256 (hex) of a finished command's stdout and stderr.
	StdoutBytes  int    `json:"stdout_bytes,omitempty"`
	StderrBytes  int    `json:"stderr_bytes,omitempty"`
	StdoutSHA256 string `json:"stdout_sha256,omitempty"`
	StderrSHA256 string `json:"stderr_sha256,omitempty"`
	// Prev is the sha256 (hex) of the previous record's line in the local
	// log, making the log tamper-evident. Empty for the first record.
	Prev string `json:"prev,omitempty"`
}
