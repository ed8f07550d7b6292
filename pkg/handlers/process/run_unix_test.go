//go:build unix

package process_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/handlers/process"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/runner"
)

// waitTimeout bounds every wait in these tests.
const waitTimeout = 10 * time.Second

// recorder keeps what a Call's Started and Output receive.
type recorder struct {
	mu     sync.Mutex
	procs  []runner.Proc
	chunks map[string]string
}

// newCall decodes args with h and returns the Call a dispatcher would pass;
// with rec, Started and Output are recorded in it.
func newCall(t *testing.T, h dispatch.Handler, kind, args string, rec *recorder) *dispatch.Call {
	t.Helper()
	req, err := h.Decode(json.RawMessage(args))
	if err != nil {
		t.Fatalf("Decode(%s): %v", args, err)
	}
	c := &dispatch.Call{Cmd: &protocol.Command{V: 1, ID: "c1", Kind: kind}, Req: req}
	if rec != nil {
		rec.chunks = map[string]string{}
		c.Started = func(p any) {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			rec.procs = append(rec.procs, p.(runner.Proc))
		}
		c.Output = func(stream string, data []byte) {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			rec.chunks[stream] += string(data)
		}
	}
	return c
}

func run(t *testing.T, h dispatch.Handler, kind, args string) dispatch.Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return h.Run(ctx, newCall(t, h, kind, args, nil))
}

func exitCode(o dispatch.Outcome) string {
	if o.ExitCode == nil {
		return "none"
	}
	return strconv.Itoa(*o.ExitCode)
}

func TestRunStates(t *testing.T) {
	cases := []struct {
		name      string
		h         dispatch.Handler
		kind      string
		args      string
		state     string
		code      string // exit code digit, or "none"
		stdout    string
		stderr    string
		errPrefix string
	}{
		{"exec succeeds", process.Exec{}, protocol.KindExec,
			`{"argv":["sh","-c","printf out; printf err >&2"]}`, protocol.StateSucceeded, "0", "out", "err", ""},
		{"exec exits non-zero", process.Exec{}, protocol.KindExec,
			`{"argv":["sh","-c","echo partial; exit 3"]}`, protocol.StateFailed, "3", "partial\n", "", "exit status 3"},
		{"exec program not found", process.Exec{}, protocol.KindExec,
			`{"argv":["/nonexistent/mqagent-no-such-program"]}`, protocol.StateFailed, "none", "", "", "could not start: "},
		{"exec bad cwd", process.Exec{}, protocol.KindExec,
			`{"argv":["true"],"cwd":"/nonexistent/mqagent-no-such-dir"}`, protocol.StateFailed, "none", "", "", "could not start: "},
		{"exec env added", process.Exec{}, protocol.KindExec,
			`{"argv":["sh","-c","printf %s \"$MQA_TEST\"; test -n \"$PATH\""],"env":{"MQA_TEST":"v a l"}}`, protocol.StateSucceeded, "0", "v a l", "", ""},
		{"exec stdin", process.Exec{}, protocol.KindExec,
			`{"argv":["cat"],"stdin":"line 1\nline 2\n"}`, protocol.StateSucceeded, "0", "line 1\nline 2\n", "", ""},
		{"exec no stdin reads EOF", process.Exec{}, protocol.KindExec,
			`{"argv":["cat"]}`, protocol.StateSucceeded, "0", "", "", ""},
		{"exec cwd", process.Exec{}, protocol.KindExec,
			`{"argv":["sh","-c","pwd -P"],"cwd":"/"}`, protocol.StateSucceeded, "0", "/\n", "", ""},
		{"shell succeeds", process.Shell{}, protocol.KindShell,
			`{"command":"echo hi | tr a-z A-Z"}`, protocol.StateSucceeded, "0", "HI\n", "", ""},
		{"shell sh exits non-zero", process.Shell{}, protocol.KindShell,
			`{"command":"echo before; exit 2; echo after","shell":"sh"}`, protocol.StateFailed, "2", "before\n", "", "exit status 2"},
		{"script sh with args", process.Script{}, protocol.KindScript,
			`{"content":"#!/bin/sh\necho \"$1-$2\"\nexit 4\n","interpreter":"sh","args":["a b","c"]}`, protocol.StateFailed, "4", "a b-c\n", "", "exit status 4"},
		{"script default interpreter", process.Script{}, protocol.KindScript,
			`{"content":"echo ok"}`, protocol.StateSucceeded, "0", "ok\n", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := run(t, c.h, c.kind, c.args)
			if o.State != c.state {
				t.Errorf("state %q, want %q (error %q)", o.State, c.state, o.Error)
			}
			if got := exitCode(o); got != c.code {
				t.Errorf("exit code %s, want %s", got, c.code)
			}
			if string(o.Stdout) != c.stdout || string(o.Stderr) != c.stderr {
				t.Errorf("stdout %q stderr %q, want %q %q", o.Stdout, o.Stderr, c.stdout, c.stderr)
			}
			if c.errPrefix == "" && o.Error != "" {
				t.Errorf("error %q, want none", o.Error)
			}
			if c.errPrefix != "" && !strings.HasPrefix(o.Error, c.errPrefix) {
				t.Errorf("error %q, want prefix %q", o.Error, c.errPrefix)
			}
			if o.StdoutTruncated || o.StderrTruncated {
				t.Errorf("output reported truncated")
			}
			if o.Started.IsZero() {
				t.Errorf("Started not set")
			}
		})
	}
}

func TestRunStartedAndStreamedOutput(t *testing.T) {
	rec := &recorder{}
	h := process.Exec{}
	call := newCall(t, h, protocol.KindExec, `{"argv":["sh","-c","echo $$; echo oops >&2"]}`, rec)
	o := h.Run(context.Background(), call)
	if o.State != protocol.StateSucceeded {
		t.Fatalf("state %q (%s)", o.State, o.Error)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.procs) != 1 || rec.procs[0].PID <= 0 {
		t.Fatalf("Started got %+v, want one process", rec.procs)
	}
	if want := strings.TrimSpace(string(o.Stdout)); want != strconv.Itoa(rec.procs[0].PID) {
		t.Errorf("Started pid %d, the process printed %s", rec.procs[0].PID, want)
	}
	if rec.chunks[runner.Stdout] != string(o.Stdout) || rec.chunks[runner.Stderr] != "oops\n" {
		t.Errorf("streamed %q, result stdout %q stderr %q", rec.chunks, o.Stdout, o.Stderr)
	}
}

func TestRunOutputCap(t *testing.T) {
	h := process.Exec{Limits: process.Limits{MaxOutput: 10}}
	o := run(t, h, protocol.KindExec, `{"argv":["sh","-c","printf 0123456789abcdef; printf 0123456789abcdef >&2"]}`)
	if string(o.Stdout) != "0123456789" || !o.StdoutTruncated {
		t.Errorf("stdout %q truncated=%v, want the first 10 bytes and truncated", o.Stdout, o.StdoutTruncated)
	}
	if string(o.Stderr) != "0123456789" || !o.StderrTruncated {
		t.Errorf("stderr %q truncated=%v, want the first 10 bytes and truncated", o.Stderr, o.StderrTruncated)
	}
	if o.State != protocol.StateSucceeded {
		t.Errorf("state %q", o.State)
	}
}

func gone(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }

// When ctx ends the process tree is killed and the outcome has no state:
// the dispatcher names the cause (timed_out, canceled, interrupted).
func TestRunKilledWhenContextEnds(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		h    dispatch.Handler
		kind string
		args string
	}{
		{"exec", process.Exec{}, protocol.KindExec, `{"argv":["sh","-c","echo started; sleep 30"]}`},
		{"shell", process.Shell{}, protocol.KindShell, `{"command":"echo started; sleep 30"}`},
		{"script", process.Script{Limits: process.Limits{ScriptDir: dir}}, protocol.KindScript, `{"content":"echo started\nsleep 30\n"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := &recorder{}
			call := newCall(t, c.h, c.kind, c.args, rec)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			o := c.h.Run(ctx, call)
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("Run returned %v after its context ended", d)
			}
			if o.State != "" || o.ExitCode != nil || o.Error != "" {
				t.Fatalf("outcome state %q exit %s error %q; want all empty for the dispatcher to map", o.State, exitCode(o), o.Error)
			}
			if string(o.Stdout) != "started\n" {
				t.Errorf("stdout %q, want the output before the kill", o.Stdout)
			}
			rec.mu.Lock()
			procs := rec.procs
			rec.mu.Unlock()
			if len(procs) != 1 {
				t.Fatalf("Started got %d processes", len(procs))
			}
			if !gone(procs[0].PID) {
				t.Errorf("process %d still exists after Run returned", procs[0].PID)
			}
		})
	}
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("script dir still holds %d files after a killed script", len(left))
	}
}

func TestScriptFileRemovedAfterRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "scripts") // created by the handler
	h := process.Script{Limits: process.Limits{ScriptDir: dir}}
	// The script reports its own path, so the test knows which file it was.
	o := run(t, h, protocol.KindScript, `{"content":"echo \"$0\"; test -f \"$0\" && exit 5"}`)
	if o.State != protocol.StateFailed || exitCode(o) != "5" {
		t.Fatalf("state %q exit %s (%s): the script did not see its own file", o.State, exitCode(o), o.Error)
	}
	path := strings.TrimSpace(string(o.Stdout))
	if filepath.Dir(filepath.Dir(path)) != dir {
		t.Fatalf("script ran from %s, want a file in a private directory in %s", path, dir)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("script file %s still there after the run (stat: %v)", path, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("script dir mode %v, want 0700", fi.Mode().Perm())
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 0 {
		t.Errorf("script dir still holds %d entries", len(left))
	}
}

func TestScriptCannotBeWritten(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h := process.Script{Limits: process.Limits{ScriptDir: file}}
	o := run(t, h, protocol.KindScript, `{"content":"echo hi"}`)
	if o.State != protocol.StateFailed || !strings.HasPrefix(o.Error, "could not write the script: ") || o.ExitCode != nil {
		t.Fatalf("outcome %q %q exit %s, want failed / could not write the script", o.State, o.Error, exitCode(o))
	}
}

// An interpreter of another OS is refused: by Decode (args.interpreter)
// or, at the latest, when the script is written (failed, naming it).
func TestScriptInterpreterUnavailableOnThisOS(t *testing.T) {
	h := process.Script{Limits: process.Limits{ScriptDir: t.TempDir()}}
	req, err := h.Decode(json.RawMessage(`{"content":"echo hi","interpreter":"cmd"}`))
	if err != nil {
		var fe *protocol.FieldError
		if !errors.As(err, &fe) || fe.Field != "args.interpreter" {
			t.Fatalf("Decode error %v, want one naming args.interpreter", err)
		}
		return
	}
	o := h.Run(context.Background(), &dispatch.Call{Cmd: &protocol.Command{ID: "c1", Kind: protocol.KindScript}, Req: req})
	if o.State != protocol.StateFailed || !strings.Contains(o.Error, `"cmd"`) || o.ExitCode != nil {
		t.Fatalf("outcome %q %q, want failed naming cmd", o.State, o.Error)
	}
}
