// Package process implements the command kinds that run host processes:
// exec (an argv), shell (a command line in a shell) and script (a script
// file written to a private temp directory and run by an interpreter).
package process

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/runner"
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
}

func run(ctx context.Context, call *dispatch.Call, l Limits, r execReq) dispatch.Outcome {
	spec := runner.Spec{Argv: r.argv, Dir: r.dir, Env: r.env, Stdin: r.stdin, MaxOutput: l.MaxOutput, OnOutput: call.Output}
	if call.Started != nil {
		spec.OnStart = func(p runner.Proc) { call.Started(p) }
	}
	res := runner.Run(ctx, spec)
	out := dispatch.Outcome{
		Stdout: res.Stdout, Stderr: res.Stderr,
		StdoutTruncated: res.StdoutTruncated, StderrTruncated: res.StderrTruncated,
		Started: res.Started,
	}
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
	return a, nil
}

// Summary is the argv, without env values or stdin.
func (Exec) Summary(req any) string { return strings.Join(req.(protocol.ExecArgs).Argv, " ") }

// Run runs the argv.
func (e Exec) Run(ctx context.Context, call *dispatch.Call) dispatch.Outcome {
	a := call.Req.(protocol.ExecArgs)
	r := execReq{argv: a.Argv, dir: a.Cwd, env: a.Env}
	if a.Stdin != "" {
		r.stdin = []byte(a.Stdin)
	}
	return run(ctx, call, e.Limits, r)
}

// Shell implements the shell kind.
type Shell struct{ Limits Limits }

type shellReq struct {
	args protocol.ShellArgs
	argv []string
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
	return shellReq{args: a, argv: argv}, nil
}

// Summary is the command line.
func (Shell) Summary(req any) string { return req.(shellReq).args.Command }

// Run runs the command line.
func (s Shell) Run(ctx context.Context, call *dispatch.Call) dispatch.Outcome {
	return run(ctx, call, s.Limits, execReq{argv: call.Req.(shellReq).argv})
}

// Script implements the script kind.
type Script struct{ Limits Limits }

var interpreters = map[string]bool{"": true, "sh": true, "bash": true, "cmd": true, "powershell": true, "pwsh": true, "python3": true}

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
	return a, nil
}

// Summary names the interpreter and size, not the content.
func (Script) Summary(req any) string {
	a := req.(protocol.ScriptArgs)
	in := a.Interpreter
	if in == "" {
		in = "default"
	}
	return fmt.Sprintf("script (%s, %d bytes) %s", in, len(a.Content), strings.Join(a.Args, " "))
}

// Run writes the script to a private file and runs it.
func (s Script) Run(ctx context.Context, call *dispatch.Call) dispatch.Outcome {
	a := call.Req.(protocol.ScriptArgs)
	dir := s.Limits.ScriptDir
	if dir == "" {
		dir = os.TempDir()
	}
	argv, cleanup, err := runner.WriteScript(dir, a.Interpreter, a.Content, a.Args)
	if err != nil {
		return dispatch.Outcome{State: protocol.StateFailed, Error: "could not write the script: " + err.Error()}
	}
	defer cleanup()
	return run(ctx, call, s.Limits, execReq{argv: argv})
}
