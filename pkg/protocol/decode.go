package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrMalformed marks a payload that has no readable command id: it gets no
// result, only a count and a "malformed" audit record.
var ErrMalformed = errors.New("malformed command")

// FieldError is a validation error that names the offending field.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, a ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// Envelope is a received payload after the first decoding stage: the command
// bytes (unwrapped from a signed wrapper), the id, and the fields that the
// agent checks before full validation (filter, target). Decode fails only
// when the payload has no readable, unambiguous id; full validation is
// Envelope.Command.
type Envelope struct {
	// Raw is the exact command JSON: the payload itself, or the decoded
	// bytes of a signed wrapper.
	Raw    []byte
	Signed bool
	Kid    string
	Sig    []byte // decoded signature; nil when not signed or unreadable
	// SigErr is set when the wrapper's kid/sig are missing or unreadable.
	SigErr error

	ID       string
	Kind     string // as given; "" when missing or not a string
	Operator string // as given, cut to 256 bytes
	// Target as given ("" when absent); TargetErr when it is ill-typed.
	Target    string
	TargetErr error
	// Filter as given (nil when absent); FilterErr when it is ill-typed.
	Filter    *Filter
	FilterErr error

	fields rawFields
	// keyErr is the first ambiguous key of the command (see strict.go)
	// outside id, signed, target and filter; Command returns it.
	keyErr error
}

type rawFields struct {
	V         json.RawMessage `json:"v"`
	ID        json.RawMessage `json:"id"`
	Kind      json.RawMessage `json:"kind"`
	Args      json.RawMessage `json:"args"`
	Target    json.RawMessage `json:"target"`
	IssuedAt  json.RawMessage `json:"issued_at"`
	ExpiresAt json.RawMessage `json:"expires_at"`
	TimeoutMS json.RawMessage `json:"timeout_ms"`
	Stream    json.RawMessage `json:"stream"`
	Filter    json.RawMessage `json:"filter"`
	Operator  json.RawMessage `json:"operator"`

	// Signed wrapper fields.
	Signed json.RawMessage `json:"signed"`
	Kid    json.RawMessage `json:"kid"`
	Sig    json.RawMessage `json:"sig"`
}

func present(r json.RawMessage) bool { return len(r) > 0 && !bytes.Equal(r, []byte("null")) }

// Decode performs the first decoding stage of a received payload. It returns
// an error wrapping ErrMalformed when the payload is not a JSON object or has
// no readable id (it would make a wrong result topic), or when which
// command it carries is ambiguous (see below).
//
// Keys must be unambiguous (see strict.go): a duplicate key, or a key that
// differs only in case from a field name, makes
//   - the payload malformed when it is "id" or "signed" (which command it
//     is, is itself ambiguous);
//   - in a signed wrapper (outside the signed bytes, so anyone on the way
//     can add it), Envelope.SigErr: the command is rejected before its id
//     enters the journal, so such a message cannot use up a real id;
//   - under "target", Envelope.TargetErr; under "filter",
//     Envelope.FilterErr;
//   - anywhere else in the command (args included), an error from
//     Envelope.Command: the command is rejected, naming the key.
func Decode(payload []byte) (*Envelope, error) {
	var f rawFields
	if err := json.Unmarshal(payload, &f); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrMalformed, jsonErrText(err))
	}
	var probs keyProblems
	if err := scanKeys(payload, commandSchema, &probs); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if probs.critical != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, probs.critical)
	}
	env := &Envelope{Raw: payload}
	if present(f.Signed) {
		env.Signed = true
		var s string
		if err := json.Unmarshal(f.Signed, &s); err != nil {
			return nil, fmt.Errorf("%w: signed: not a string", ErrMalformed)
		}
		inner, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: signed: not standard base64", ErrMalformed)
		}
		var g rawFields
		if err := json.Unmarshal(inner, &g); err != nil {
			return nil, fmt.Errorf("%w: signed: %s", ErrMalformed, jsonErrText(err))
		}
		if present(g.Signed) {
			return nil, fmt.Errorf("%w: signed: nested signed wrapper", ErrMalformed)
		}
		wrapper := probs
		probs = keyProblems{}
		if err := scanKeys(inner, commandSchema, &probs); err != nil {
			return nil, fmt.Errorf("%w: signed: %v", ErrMalformed, err)
		}
		if probs.critical != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, probs.critical)
		}
		env.Raw = inner
		env.SigErr = decodeSig(&f, env)
		if fe := wrapper.first(); fe != nil {
			env.SigErr = &FieldError{Field: fe.Field, Msg: fe.Msg + " in the signed wrapper"}
		}
		f = g
	}
	env.fields = f
	if !present(f.ID) {
		return nil, fmt.Errorf("%w: id: missing", ErrMalformed)
	}
	if err := json.Unmarshal(f.ID, &env.ID); err != nil {
		return nil, fmt.Errorf("%w: id: not a string", ErrMalformed)
	}
	if !ValidID(env.ID) {
		return nil, fmt.Errorf("%w: id: must match [A-Za-z0-9._-]{1,64}", ErrMalformed)
	}
	_ = json.Unmarshal(f.Kind, &env.Kind)
	if present(f.Operator) {
		_ = json.Unmarshal(f.Operator, &env.Operator)
		if len(env.Operator) > 256 {
			env.Operator = strings.ToValidUTF8(env.Operator[:256], "")
		}
	}
	if probs.target != nil {
		env.TargetErr = probs.target
	} else if present(f.Target) {
		if err := json.Unmarshal(f.Target, &env.Target); err != nil {
			env.TargetErr = fieldErr("target", "must be a string")
		} else if _, _, err := ParseTarget(env.Target); err != nil {
			env.TargetErr = err
		}
	}
	if probs.filter != nil {
		env.FilterErr = probs.filter
	} else if present(f.Filter) {
		env.Filter, env.FilterErr = decodeFilter(f.Filter)
	}
	if probs.other != nil {
		env.keyErr = probs.other
	}
	return env, nil
}

func decodeSig(f *rawFields, env *Envelope) error {
	if !present(f.Kid) {
		return fieldErr("kid", "missing")
	}
	if err := json.Unmarshal(f.Kid, &env.Kid); err != nil {
		return fieldErr("kid", "must be a string")
	}
	if !present(f.Sig) {
		return fieldErr("sig", "missing")
	}
	var s string
	if err := json.Unmarshal(f.Sig, &s); err != nil {
		return fieldErr("sig", "must be a string")
	}
	sig, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return fieldErr("sig", "not standard base64")
	}
	env.Sig = sig
	return nil
}

func decodeFilter(raw json.RawMessage) (*Filter, error) {
	var f Filter
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, typeErr("filter", err)
	}
	for i, h := range f.Hosts {
		if !ValidHostID(h) {
			return nil, fieldErr(fmt.Sprintf("filter.hosts[%d]", i), "invalid host id %q", h)
		}
	}
	for i, g := range f.Groups {
		if !ValidHostID(g) {
			return nil, fieldErr(fmt.Sprintf("filter.groups[%d]", i), "invalid group name %q", g)
		}
	}
	return &f, nil
}

// ParseTarget splits a target into its scope and name.
func ParseTarget(target string) (Scope, string, error) {
	switch {
	case target == "all":
		return ScopeAll, "", nil
	case strings.HasPrefix(target, "host:"):
		if name := target[5:]; ValidHostID(name) {
			return ScopeHost, name, nil
		}
	case strings.HasPrefix(target, "group:"):
		if name := target[6:]; ValidHostID(name) {
			return ScopeGroup, name, nil
		}
	}
	return ScopeUnknown, "", fieldErr("target", "must be host:{id}, group:{name} or all, got %q", target)
}

// Command fully validates the envelope's command and returns it. The error
// is a *FieldError naming the first offending field. ttl is used only to
// fill a missing expires_at (issued_at + ttl).
func (e *Envelope) Command(ttl time.Duration) (*Command, error) {
	f := &e.fields
	if e.keyErr != nil {
		return nil, e.keyErr
	}
	if !utf8.Valid(e.Raw) {
		return nil, fieldErr("payload", "not valid UTF-8")
	}
	c := &Command{ID: e.ID, Target: e.Target, Operator: e.Operator}
	if !present(f.V) {
		return nil, fieldErr("v", "missing")
	}
	if err := json.Unmarshal(f.V, &c.V); err != nil {
		return nil, fieldErr("v", "must be the integer %d", Version)
	}
	if c.V != Version {
		return nil, fieldErr("v", "unsupported version %d (want %d)", c.V, Version)
	}
	if !present(f.Kind) {
		return nil, fieldErr("kind", "missing")
	}
	if err := json.Unmarshal(f.Kind, &c.Kind); err != nil || c.Kind == "" {
		return nil, fieldErr("kind", "must be a non-empty string")
	}
	if present(f.Args) {
		if t := firstByte(f.Args); t != '{' {
			return nil, fieldErr("args", "must be an object")
		}
		c.Args = f.Args
	}
	if e.TargetErr != nil {
		return nil, e.TargetErr
	}
	if e.Signed && c.Target == "" {
		return nil, fieldErr("target", "required in a signed command")
	}
	if !present(f.IssuedAt) {
		return nil, fieldErr("issued_at", "missing")
	}
	if err := json.Unmarshal(f.IssuedAt, &c.IssuedAt); err != nil {
		return nil, fieldErr("issued_at", "must be an RFC 3339 time string")
	}
	if present(f.ExpiresAt) {
		var t Time
		if err := json.Unmarshal(f.ExpiresAt, &t); err != nil {
			return nil, fieldErr("expires_at", "must be an RFC 3339 time string")
		}
		c.ExpiresAt = &t
	} else {
		c.ExpiresAt = &Time{c.IssuedAt.Add(ttl)}
	}
	if present(f.TimeoutMS) {
		var ms float64
		if err := json.Unmarshal(f.TimeoutMS, &ms); err != nil || ms != math.Trunc(ms) || ms < 0 || ms > math.MaxInt64/2 {
			return nil, fieldErr("timeout_ms", "must be a non-negative integer")
		}
		c.TimeoutMS = int64(ms)
	}
	if present(f.Stream) {
		if err := json.Unmarshal(f.Stream, &c.Stream); err != nil {
			return nil, fieldErr("stream", "must be a boolean")
		}
	}
	if present(f.Operator) {
		var s string
		if err := json.Unmarshal(f.Operator, &s); err != nil {
			return nil, fieldErr("operator", "must be a string")
		}
	}
	if e.FilterErr != nil {
		return nil, e.FilterErr
	}
	c.Filter = e.Filter
	return c, nil
}

// DecodeArgs decodes a command's args into v (a pointer to one of the *Args
// types, or any struct or map), turning JSON errors into a FieldError under
// "args". As in Decode, keys must be unambiguous: a duplicate key (at any
// depth), or a key that differs only in case from one of v's JSON field
// names, is a FieldError naming it.
func DecodeArgs(args json.RawMessage, v any) error {
	if len(args) == 0 {
		args = []byte("{}")
	}
	if err := json.Unmarshal(args, v); err != nil {
		return typeErr("args", err)
	}
	var probs keyProblems
	if err := scanKeys(args, structSchema(v), &probs); err != nil {
		return fieldErr("args", "%v", err)
	}
	if fe := probs.first(); fe != nil {
		return &FieldError{Field: "args." + fe.Field, Msg: fe.Msg}
	}
	return nil
}

func firstByte(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}

func typeErr(prefix string, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := prefix
		if te.Field != "" {
			field = prefix + "." + te.Field
		}
		return fieldErr(field, "must be %s, got %s", jsonType(te.Type.Kind().String()), te.Value)
	}
	return fieldErr(prefix, "%s", jsonErrText(err))
}

func jsonType(goKind string) string {
	switch goKind {
	case "slice", "array":
		return "a list"
	case "map", "struct":
		return "an object"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int64", "int32", "uint", "uint64", "float64":
		return "a number"
	}
	return goKind
}

func jsonErrText(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("invalid JSON at byte %d: %s", se.Offset, se.Error())
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return "payload must be a JSON object"
		}
		return te.Field + ": wrong type " + te.Value
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// Argument types of the built-in kinds.

// ExecArgs are the args of exec.
type ExecArgs struct {
	Argv  []string          `json:"argv"`
	Cwd   string            `json:"cwd,omitempty"`
	Env   map[string]string `json:"env,omitempty"`
	Stdin string            `json:"stdin,omitempty"`
}

// ShellArgs are the args of shell.
type ShellArgs struct {
	Command string `json:"command"`
	Shell   string `json:"shell,omitempty"`
}

// ScriptArgs are the args of script.
type ScriptArgs struct {
	Content     string   `json:"content"`
	Interpreter string   `json:"interpreter,omitempty"`
	Args        []string `json:"args,omitempty"`
}

// IDArgs are the args of cancel and result.get.
type IDArgs struct {
	ID string `json:"id"`
}

// UpdateArgs are the args of agent.update.
type UpdateArgs struct {
	Version   string `json:"version"`
	URL       string `json:"url"`
	SHA256    string `json:"sha256"`
	Signature string `json:"signature"`
	// AllowDowngrade permits a version lower than the running one.
	AllowDowngrade bool `json:"allow_downgrade,omitempty"`
}

// UninstallArgs are the args of agent.uninstall.
type UninstallArgs struct {
	Purge bool `json:"purge"`
}

// PingData is the data of a ping result.
type PingData struct {
	Version  string `json:"version"`
	UptimeMS int64  `json:"uptime_ms"`
}

// CancelData is the data of a cancel result.
type CancelData struct {
	Canceled bool `json:"canceled"`
}
