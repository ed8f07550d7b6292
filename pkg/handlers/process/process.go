// Package process implements the command kinds that run host processes:
// exec (an argv), shell (a command line in a shell) and script (a script
// file written to a private temp directory and run by an interpreter).
//
// Output is published as UTF-8 (pkg/textenc): valid UTF-8 unchanged, other
// output decoded from the encoding named by the command's "encoding" arg,
// or else from the one detected (the system's code pages or locale first).
// The result names that encoding (stdout_encoding, stderr_encoding) and,
// when the choice was a guess or the decoding lossy, carries the raw bytes
// (stdout_base64, stderr_base64). Streamed chunks are decoded the same way,
// never splitting a character.
package process

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/runner"
	"github.com/mqagent/mqagent/pkg/textenc"
)

// Limits shared by the three kinds.
type Limits struct {
	MaxOutput int    // per stream
	ScriptDir string // private directory for script files
}

type execReq struct {
	argv  []string
	dir   string
	env   map[string]string
	stdin []byte
	enc   textenc.Encoding // zero: detect
}

// encodingField is the arg that forces the output encoding, on every kind.
const encodingField = "args.encoding"

// decodeEncoding reads the encoding arg of any kind and resolves it ("" or
// absent: detect).
func decodeEncoding(args json.RawMessage) (textenc.Encoding, error) {
	var a struct {
		Encoding string `json:"encoding"`
	}
	if err := protocol.DecodeArgs(args, &a); err != nil {
		return textenc.Encoding{}, err
	}
	name := a.Encoding
	if name == "" {
		return textenc.Encoding{}, nil
	}
	e, err := textenc.Lookup(name)
	if err != nil {
		return e, &protocol.FieldError{Field: encodingField,
			Msg: fmt.Sprintf("unknown encoding %q (use a name such as utf-8, gbk, shift_jis, big5, euc-kr, cp866, cp437, windows-1252, koi8-r, utf-16le, or a Windows code page number)", name)}
	}
	return e, nil
}

// decoder is the output decoder for a request: the forced encoding, or
// detection preferring the system's encodings (on Unix the locale of the
// command's environment: its env args over the agent's).
func decoder(r execReq) *textenc.Decoder {
	if !r.enc.IsZero() {
		return &textenc.Decoder{Forced: r.enc}
	}
	getenv := func(k string) string {
		if v, ok := r.env[k]; ok {
			return v
		}
		return os.Getenv(k)
	}
	return &textenc.Decoder{Priors: textenc.SystemPriors(getenv)}
}

func run(ctx context.Context, call *dispatch.Call, l Limits, r execReq) dispatch.Outcome {
	dec := decoder(r)
	spec := runner.Spec{Argv: r.argv, Dir: r.dir, Env: r.env, Stdin: r.stdin, MaxOutput: l.MaxOutput}
	var streams map[string]*textenc.Stream
	if call.Output != nil {
		streams = map[string]*textenc.Stream{runner.Stdout: dec.Stream(), runner.Stderr: dec.Stream()}
		spec.OnOutput = func(stream string, data []byte) {
			if text := streams[stream].Write(data); len(text) > 0 {
				call.Output(stream, text)
			}
		}
	}
	if call.Started != nil {
		spec.OnStart = func(p runner.Proc) { call.Started(p) }
	}
	res := runner.Run(ctx, spec)
	if streams != nil { // Run no longer calls OnOutput
		for _, s := range []struct {
			name      string
			truncated bool
		}{{runner.Stdout, res.StdoutTruncated}, {runner.Stderr, res.StderrTruncated}} {
			if text := streams[s.name].Flush(s.truncated); len(text) > 0 {
				call.Output(s.name, text)
			}
		}
	}
	out := dispatch.Outcome{
		StdoutTruncated: res.StdoutTruncated, StderrTruncated: res.StderrTruncated,
		Started: res.Started,
	}
	out.Stdout, out.StdoutEncoding, out.StdoutBase64 = decodeOutput(dec, res.Stdout, res.StdoutTruncated)
	out.Stderr, out.StderrEncoding, out.StderrBase64 = decodeOutput(dec, res.Stderr, res.StderrTruncated)
	switch {
	case res.StartErr != nil:
		out.State, out.Error = protocol.StateFailed, "could not start: "+res.StartErr.Error()
	case res.WaitErr != nil:
		out.State, out.Error = protocol.StateFailed, "exit status lost: "+res.WaitErr.Error()
	case !res.Exited:
		// Killed because ctx ended: the dispatcher names the cause.
	case res.ExitCode == 0:
		code := 0
		out.State, out.ExitCode = protocol.StateSucceeded, &code
	default:
		code := res.ExitCode
		out.State, out.ExitCode = protocol.StateFailed, &code
		out.Error = fmt.Sprintf("exit status %d", code)
	}
	return out
}

// decodeOutput decodes one captured stream: the UTF-8 text, the encoding
// it was decoded from ("" when it was valid UTF-8 already), and the raw
// bytes in base64 when the decoding is not trustworthy.
func decodeOutput(dec *textenc.Decoder, raw []byte, truncated bool) (text []byte, enc, b64 string) {
	if len(raw) == 0 {
		return raw, "", ""
	}
	r := dec.Decode(raw, truncated)
	if r.Encoding.Name() != textenc.UTF8.Name() || !r.Confident {
		enc = r.Encoding.Name()
	}
	if !r.Confident {
		b64 = base64.StdEncoding.EncodeToString(raw)
	}
	return r.Text, enc, b64
}

type execRequest struct {
	args protocol.ExecArgs
	enc  textenc.Encoding
}

// Exec implements the exec kind.
type Exec struct{ Limits Limits }

// Decode validates exec args.
func (Exec) Decode(args json.RawMessage) (any, error) {
	var a protocol.ExecArgs
	if err := protocol.DecodeArgs(args, &a); err != nil {
		return nil, err
	}
	if len(a.Argv) == 0 || a.Argv[0] == "" {
		return nil, &protocol.FieldError{Field: "args.argv", Msg: "required: a non-empty list whose first element names the program"}
	}
	for i, v := range a.Argv {
		if strings.IndexByte(v, 0) >= 0 {
			return nil, &protocol.FieldError{Field: "args.argv", Msg: fmt.Sprintf("element %d contains a NUL byte", i)}
		}
	}
	if strings.IndexByte(a.Cwd, 0) >= 0 {
		return nil, &protocol.FieldError{Field: "args.cwd", Msg: "contains a NUL byte"}
	}
	for k, v := range a.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, &protocol.FieldError{Field: "args.env", Msg: fmt.Sprintf("invalid variable name %q", k)}
		}
		if strings.IndexByte(v, 0) >= 0 {
			return nil, &protocol.FieldError{Field: "args.env", Msg: fmt.Sprintf("the value of %q contains a NUL byte", k)}
		}
	}
	enc, err := decodeEncoding(args)
	if err != nil {
		return nil, err
	}
	return execRequest{args: a, enc: enc}, nil
}

// Summary is the argv, without env values or stdin.
func (Exec) Summary(req any) string { return strings.Join(req.(execRequest).args.Argv, " ") }

// Run runs the argv.
func (e Exec) Run(ctx context.Context, call *dispatch.Call) dispatch.Outcome {
	q := call.Req.(execRequest)
	r := execReq{argv: q.args.Argv, dir: q.args.Cwd, env: q.args.Env, enc: q.enc}
	if q.args.Stdin != "" {
		r.stdin = []byte(q.args.Stdin)
	}
	return run(ctx, call, e.Limits, r)
}

// Shell implements the shell kind.
type Shell struct{ Limits Limits }

type shellReq struct {
	args protocol.ShellArgs
	argv []string
	enc  textenc.Encoding
}

// Decode validates shell args.
func (Shell) Decode(args json.RawMessage) (any, error) {
	var a protocol.ShellArgs
	if err := protocol.DecodeArgs(args, &a); err != nil {
		return nil, err
	}
	if strings.TrimSpace(a.Command) == "" {
		return nil, &protocol.FieldError{Field: "args.command", Msg: "required"}
	}
	if strings.IndexByte(a.Command, 0) >= 0 {
		return nil, &protocol.FieldError{Field: "args.command", Msg: "contains a NUL byte"}
	}
	argv, err := runner.ShellArgv(a.Shell, a.Command)
	if err != nil {
		return nil, &protocol.FieldError{Field: "args.shell", Msg: err.Error()}
	}
	enc, err := decodeEncoding(args)
	if err != nil {
		return nil, err
	}
	return shellReq{args: a, argv: argv, enc: enc}, nil
}

// Summary is the command line.
func (Shell) Summary(req any) string { return req.(shellReq).args.Command }

// Run runs the command line.
func (s Shell) Run(ctx context.Context, call *dispatch.Call) dispatch.Outcome {
	q := call.Req.(shellReq)
	return run(ctx, call, s.Limits, execReq{argv: q.argv, enc: q.enc})
}

// Script implements the script kind.
type Script struct{ Limits Limits }

var interpreters = map[string]bool{"": true, "sh": true, "bash": true, "cmd": true, "powershell": true, "pwsh": true, "python3": true}

type scriptReq struct {
	args protocol.ScriptArgs
	enc  textenc.Encoding
}

// Decode validates script args.
func (Script) Decode(args json.RawMessage) (any, error) {
	var a protocol.ScriptArgs
	if err := protocol.DecodeArgs(args, &a); err != nil {
		return nil, err
	}
	if a.Content == "" {
		return nil, &protocol.FieldError{Field: "args.content", Msg: "required"}
	}
	if !interpreters[a.Interpreter] {
		return nil, &protocol.FieldError{Field: "args.interpreter", Msg: fmt.Sprintf("unknown interpreter %q (want sh, bash, cmd, powershell, pwsh or python3)", a.Interpreter)}
	}
	for i, v := range a.Args {
		if strings.IndexByte(v, 0) >= 0 {
			return nil, &protocol.FieldError{Field: "args.args", Msg: fmt.Sprintf("element %d contains a NUL byte", i)}
		}
	}
	enc, err := decodeEncoding(args)
	if err != nil {
		return nil, err
	}
	return scriptReq{args: a, enc: enc}, nil
}

// Summary names the interpreter and size, not the content.
func (Script) Summary(req any) string {
	a := req.(scriptReq).args
	in := a.Interpreter
	if in == "" {
		in = "default"
	}
	return fmt.Sprintf("script (%s, %d bytes) %s", in, len(a.Content), strings.Join(a.Args, " "))
}

// Run writes the script to a private file and runs it.
func (s Script) Run(ctx context.Context, call *dispatch.Call) dispatch.Outcome {
	q := call.Req.(scriptReq)
	dir := s.Limits.ScriptDir
	if dir == "" {
		dir = os.TempDir()
	}
	argv, cleanup, err := runner.WriteScript(dir, q.args.Interpreter, q.args.Content, q.args.Args)
	if err != nil {
		return dispatch.Outcome{State: protocol.StateFailed, Error: "could not write the script: " + err.Error()}
	}
	defer cleanup()
	return run(ctx, call, s.Limits, execReq{argv: argv, enc: q.enc})
}
