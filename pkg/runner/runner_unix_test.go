//go:build unix

package runner

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// run runs spec with a generous safety timeout.
func run(t *testing.T, spec Spec) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return Run(ctx, spec)
}

func sh(script string) []string { return []string{"sh", "-c", script} }

func TestRunExitCodes(t *testing.T) {
	tests := []struct {
		name string
		argv []string
		want int
	}{
		{"true", []string{"true"}, 0},
		{"false", []string{"false"}, 1},
		{"exit 3", sh("exit 3"), 3},
		{"exit 255", sh("exit 255"), 255},
		{"killed by SIGTERM from elsewhere", sh("kill -TERM $$"), 128 + int(syscall.SIGTERM)},
		{"killed by SIGKILL from elsewhere", sh("kill -KILL $$"), 128 + int(syscall.SIGKILL)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := run(t, Spec{Argv: tt.argv})
			if res.StartErr != nil || res.WaitErr != nil {
				t.Fatalf("StartErr=%v WaitErr=%v", res.StartErr, res.WaitErr)
			}
			if !res.Exited || res.ExitCode != tt.want {
				t.Fatalf("Exited=%v ExitCode=%d, want exited with %d", res.Exited, res.ExitCode, tt.want)
			}
			if res.Started.IsZero() || res.Finished.Before(res.Started) {
				t.Fatalf("bad times: started %v finished %v", res.Started, res.Finished)
			}
		})
	}
}

func TestRunCapturesOutput(t *testing.T) {
	res := run(t, Spec{Argv: sh("printf 'out 1\\n'; printf 'err 1\\n' >&2; printf 'out 2'; exit 4")})
	if got, want := string(res.Stdout), "out 1\nout 2"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if got, want := string(res.Stderr), "err 1\n"; got != want {
		t.Errorf("stderr = %q, want %q", got, want)
	}
	if res.StdoutTruncated || res.StderrTruncated {
		t.Errorf("truncated flags set on small output")
	}
	if !res.Exited || res.ExitCode != 4 {
		t.Errorf("Exited=%v ExitCode=%d, want 4", res.Exited, res.ExitCode)
	}
}

func TestRunStdin(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: more than a pipe buffer
	tests := []struct {
		name  string
		argv  []string
		stdin []byte
		want  string
	}{
		{"echoed", []string{"cat"}, []byte("hello\nworld"), "hello\nworld"},
		{"nil is the null device", []string{"cat"}, nil, ""},
		{"empty", []string{"cat"}, []byte{}, ""},
		{"larger than a pipe buffer", []string{"wc", "-c"}, big, strconv.Itoa(len(big))},
		{"not read at all", []string{"true"}, big, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := run(t, Spec{Argv: tt.argv, Stdin: tt.stdin})
			if !res.Exited || res.ExitCode != 0 {
				t.Fatalf("Exited=%v ExitCode=%d StartErr=%v stderr=%q", res.Exited, res.ExitCode, res.StartErr, res.Stderr)
			}
			if got := strings.TrimSpace(string(res.Stdout)); got != tt.want {
				t.Fatalf("stdout = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRunEnv(t *testing.T) {
	t.Setenv("RUNNER_TEST_INHERITED", "from-agent")
	t.Setenv("RUNNER_TEST_OVERRIDDEN", "old")
	res := run(t, Spec{
		Argv: sh(`printf '%s|%s|%s' "$RUNNER_TEST_INHERITED" "$RUNNER_TEST_OVERRIDDEN" "$RUNNER_TEST_ADDED"`),
		Env:  map[string]string{"RUNNER_TEST_OVERRIDDEN": "new", "RUNNER_TEST_ADDED": "a b=c"},
	})
	if got, want := string(res.Stdout), "from-agent|new|a b=c"; got != want {
		t.Fatalf("stdout = %q, want %q", got, want)
	}
}

func TestRunDir(t *testing.T) {
	dir := t.TempDir()
	res := run(t, Spec{Argv: []string{"pwd", "-P"}, Dir: dir})
	want, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(res.Stdout)); got != want {
		t.Fatalf("pwd = %q, want %q", got, want)
	}
}

func TestRunStartErrors(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\necho hi\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		spec Spec
		want string // in the StartErr message
	}{
		{"not found", Spec{Argv: []string{"nosuchcmd-runner-test"}}, `exec: "nosuchcmd-runner-test": executable file not found in $PATH`},
		{"no such path", Spec{Argv: []string{filepath.Join(dir, "missing")}}, "no such file or directory"},
		{"permission", Spec{Argv: []string{notExec}}, "permission denied"},
		{"missing dir", Spec{Argv: []string{"true"}, Dir: filepath.Join(dir, "nope")}, "working directory: stat " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{"dir is a file", Spec{Argv: []string{"true"}, Dir: notExec}, "is not a directory"},
		{"empty argv", Spec{}, "empty argv"},
		{"empty program", Spec{Argv: []string{""}}, "empty argv"},
		{"NUL in argv", Spec{Argv: []string{"echo", "a\x00b"}}, "argv[1] contains a NUL byte"},
		{"bad env name", Spec{Argv: []string{"true"}, Env: map[string]string{"A=B": "x"}}, `invalid environment variable name "A=B"`},
		{"empty env name", Spec{Argv: []string{"true"}, Env: map[string]string{"": "x"}}, `invalid environment variable name ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			started := false
			tt.spec.OnStart = func(Proc) { started = true }
			res := run(t, tt.spec)
			if res.StartErr == nil {
				t.Fatalf("StartErr = nil, want %q (Exited=%v)", tt.want, res.Exited)
			}
			if !strings.Contains(res.StartErr.Error(), tt.want) {
				t.Fatalf("StartErr = %q, want it to contain %q", res.StartErr, tt.want)
			}
			if res.Exited || started {
				t.Fatalf("Exited=%v OnStart called=%v for a command that could not start", res.Exited, started)
			}
		})
	}
}

func TestRunOutputCap(t *testing.T) {
	tests := []struct {
		name          string
		argv          []string
		max           int
		wantOut       int
		wantErr       int
		truncOut, tre bool
	}{
		{"stdout flood, default cap", []string{"head", "-c", "3000000", "/dev/zero"}, 0, DefaultMaxOutput, 0, true, false},
		{"stderr flood, default cap", sh("head -c 3000000 /dev/zero >&2"), 0, 0, DefaultMaxOutput, false, true},
		{"both over a small cap", sh("head -c 5000 /dev/zero; head -c 5000 /dev/zero >&2"), 1000, 1000, 1000, true, true},
		{"exactly at the cap", sh("printf 0123456789"), 10, 10, 0, false, false},
		{"one over the cap", sh("printf 0123456789X"), 10, 10, 0, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := run(t, Spec{Argv: tt.argv, MaxOutput: tt.max})
			if !res.Exited || res.ExitCode != 0 {
				t.Fatalf("Exited=%v ExitCode=%d StartErr=%v", res.Exited, res.ExitCode, res.StartErr)
			}
			if len(res.Stdout) != tt.wantOut || res.StdoutTruncated != tt.truncOut {
				t.Errorf("stdout: %d bytes truncated=%v, want %d truncated=%v", len(res.Stdout), res.StdoutTruncated, tt.wantOut, tt.truncOut)
			}
			if len(res.Stderr) != tt.wantErr || res.StderrTruncated != tt.tre {
				t.Errorf("stderr: %d bytes truncated=%v, want %d truncated=%v", len(res.Stderr), res.StderrTruncated, tt.wantErr, tt.tre)
			}
		})
	}
}

func TestRunOnOutput(t *testing.T) {
	tests := []struct {
		name string
		argv []string
		max  int
	}{
		{"interleaved small output", sh(`for i in 1 2 3 4 5 6 7 8 9 10; do echo "out $i"; echo "err $i" >&2; done`), 0},
		{"floods over the cap", sh("head -c 200000 /dev/urandom & head -c 200000 /dev/urandom >&2; wait"), 70000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				inFlight   atomic.Int32
				concurrent atomic.Bool
				mu         sync.Mutex // only for the race detector: calls must already be serialized
				got        = map[string]*bytes.Buffer{Stdout: {}, Stderr: {}}
			)
			res := run(t, Spec{Argv: tt.argv, MaxOutput: tt.max, OnOutput: func(stream string, data []byte) {
				if inFlight.Add(1) != 1 {
					concurrent.Store(true)
				}
				defer inFlight.Add(-1)
				mu.Lock()
				defer mu.Unlock()
				buf, ok := got[stream]
				if !ok {
					t.Errorf("unknown stream %q", stream)
					return
				}
				buf.Write(data)
			}})
			if concurrent.Load() {
				t.Error("OnOutput was called concurrently")
			}
			if !res.Exited {
				t.Fatalf("did not exit: %+v", res)
			}
			if !bytes.Equal(got[Stdout].Bytes(), res.Stdout) {
				t.Errorf("streamed stdout (%d bytes) differs from the result (%d bytes)", got[Stdout].Len(), len(res.Stdout))
			}
			if !bytes.Equal(got[Stderr].Bytes(), res.Stderr) {
				t.Errorf("streamed stderr (%d bytes) differs from the result (%d bytes)", got[Stderr].Len(), len(res.Stderr))
			}
			if tt.max > 0 {
				if got[Stdout].Len() != tt.max || got[Stderr].Len() != tt.max {
					t.Errorf("streamed %d/%d bytes, want exactly the cap %d each", got[Stdout].Len(), got[Stderr].Len(), tt.max)
				}
				if !res.StdoutTruncated || !res.StderrTruncated {
					t.Errorf("truncated flags not set")
				}
			}
		})
	}
}

func TestRunOnStartBeforeOutput(t *testing.T) {
	var started atomic.Int32
	var outputBeforeStart atomic.Bool
	res := run(t, Spec{
		Argv:     sh("echo hi"),
		OnStart:  func(Proc) { started.Add(1) },
		OnOutput: func(string, []byte) { outputBeforeStart.Store(started.Load() == 0) },
	})
	if started.Load() != 1 {
		t.Fatalf("OnStart called %d times, want 1", started.Load())
	}
	if outputBeforeStart.Load() {
		t.Fatal("OnOutput was called before OnStart")
	}
	if string(res.Stdout) != "hi\n" {
		t.Fatalf("stdout = %q", res.Stdout)
	}
}

// waitFor polls cond until it holds or d passed.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readPidFile waits for path to hold a pid.
func readPidFile(t *testing.T, path string) int {
	t.Helper()
	var pid int
	waitFor(t, 10*time.Second, "pid file "+path, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	})
	return pid
}

// gone reports whether pid no longer exists (it was reaped).
func gone(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }

func TestRunCancelKillsTree(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	errCanceled := errors.New("operator canceled")
	var proc Proc
	done := make(chan Result, 1)
	go func() {
		done <- Run(ctx, Spec{
			// The grandchild is written under a temp name and renamed, so a
			// partially written file is never read.
			Argv:    sh(`sleep 300 & echo $! > "$P.tmp" && mv "$P.tmp" "$P"; sleep 300`),
			Env:     map[string]string{"P": pidfile},
			OnStart: func(p Proc) { proc = p },
		})
	}()
	grandchild := readPidFile(t, pidfile)
	canceledAt := time.Now()
	cancel(errCanceled)
	var res Result
	select {
	case res = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of the cancel")
	}
	if took := time.Since(canceledAt); took > 2*time.Second {
		t.Errorf("Run took %v to return after the cancel", took)
	}
	if res.Exited || res.StartErr != nil {
		t.Fatalf("Exited=%v StartErr=%v, want killed", res.Exited, res.StartErr)
	}
	if !errors.Is(context.Cause(ctx), errCanceled) {
		t.Fatalf("cause = %v", context.Cause(ctx))
	}
	waitFor(t, 5*time.Second, "the grandchild to be killed", func() bool { return gone(grandchild) })
	waitFor(t, 5*time.Second, "the leader to be gone", func() bool { return gone(proc.PID) })
}

func TestRunTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := Run(ctx, Spec{Argv: sh("echo before; sleep 300")})
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Run took %v with a 200ms timeout", took)
	}
	if res.Exited {
		t.Fatalf("Exited = true, want killed")
	}
	if !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		t.Fatalf("cause = %v", context.Cause(ctx))
	}
	if string(res.Stdout) != "before\n" {
		t.Fatalf("output before the timeout lost: %q", res.Stdout)
	}
}

func TestRunContextAlreadyDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	started := false
	res := Run(ctx, Spec{Argv: []string{"true"}, OnStart: func(Proc) { started = true }})
	if res.Exited || res.StartErr != nil || started {
		t.Fatalf("Exited=%v StartErr=%v started=%v, want nothing run", res.Exited, res.StartErr, started)
	}
}

// A background child left in the group holds the pipes: when the leader
// exits, Run kills it (closing the pipes) instead of waiting for it.
func TestRunLeaderExitKillsBackground(t *testing.T) {
	start := time.Now()
	res := run(t, Spec{Argv: sh("sleep 300 & echo $!; exit 5")})
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Run took %v", took)
	}
	if !res.Exited || res.ExitCode != 5 {
		t.Fatalf("Exited=%v ExitCode=%d, want 5", res.Exited, res.ExitCode)
	}
	bg, err := strconv.Atoi(strings.TrimSpace(string(res.Stdout)))
	if err != nil {
		t.Fatalf("stdout %q: %v", res.Stdout, err)
	}
	waitFor(t, 5*time.Second, "the background child to be killed", func() bool { return gone(bg) })
}

// A process that left the group (setsid) is not killed, but even though it
// holds the pipes Run returns shortly after the leader exited.
func TestRunEscapedChildDoesNotHang(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "pid")
	start := time.Now()
	res := run(t, Spec{
		Argv: sh(`setsid sh -c 'echo $$ > "$P.tmp" && mv "$P.tmp" "$P"; exec sleep 300' &
			while [ ! -s "$P" ]; do sleep 0.01; done; echo leader done`),
		Env: map[string]string{"P": pidfile},
	})
	took := time.Since(start)
	escaped := readPidFile(t, pidfile)
	t.Cleanup(func() { _ = syscall.Kill(escaped, syscall.SIGKILL) })
	if took > 5*time.Second {
		t.Errorf("Run took %v: it waited for the escaped child's pipes", took)
	}
	if !res.Exited || res.ExitCode != 0 || string(res.Stdout) != "leader done\n" {
		t.Fatalf("Exited=%v ExitCode=%d stdout=%q", res.Exited, res.ExitCode, res.Stdout)
	}
	if gone(escaped) {
		t.Fatalf("the escaped (setsid) child was killed; only the group should be")
	}
}

func TestShellArgvRuns(t *testing.T) {
	tests := []struct {
		shell, command, want string
	}{
		{"", `printf '%s' "$0"`, "sh"},
		{"sh", `printf 'a b' | tr ' ' _`, "a_b"},
		{"bash", `printf '%s' "${BASH_VERSION:+bash}"`, "bash"},
	}
	for _, tt := range tests {
		t.Run(tt.shell, func(t *testing.T) {
			argv, err := ShellArgv(tt.shell, tt.command)
			if err != nil {
				t.Fatal(err)
			}
			res := run(t, Spec{Argv: argv})
			if got := string(res.Stdout); got != tt.want || res.ExitCode != 0 {
				t.Fatalf("stdout = %q exit %d, want %q", got, res.ExitCode, tt.want)
			}
		})
	}
}

func TestWriteScriptRuns(t *testing.T) {
	tests := []struct {
		interpreter, content, want string
	}{
		{"", "printf '%s,' \"$@\"\nexit 6\n", "a b,c,"},
		{"bash", "printf '%s,' \"${BASH_VERSION:+bash}\" \"$@\"\nexit 6\n", "bash,a b,c,"},
		{"python3", "import sys\nprint(','.join(sys.argv[1:]), end='')\nsys.exit(6)\n", "a b,c"},
	}
	for _, tt := range tests {
		t.Run(tt.interpreter, func(t *testing.T) {
			argv, cleanup, err := WriteScript(t.TempDir(), tt.interpreter, tt.content, []string{"a b", "c"})
			if err != nil {
				t.Fatal(err)
			}
			defer cleanup()
			res := run(t, Spec{Argv: argv})
			if errors.Is(res.StartErr, os.ErrNotExist) || (res.StartErr != nil && strings.Contains(res.StartErr.Error(), "not found")) {
				t.Skipf("interpreter not installed: %v", res.StartErr)
			}
			if got := string(res.Stdout); got != tt.want || res.ExitCode != 6 {
				t.Fatalf("stdout = %q exit %d (stderr %q), want %q exit 6", got, res.ExitCode, res.Stderr, tt.want)
			}
		})
	}
}

// BenchmarkRunTrue measures the whole overhead of one Run: pipes, start,
// wait, group kill, output collection.
func BenchmarkRunTrue(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		if res := Run(ctx, Spec{Argv: []string{"true"}}); !res.Exited || res.ExitCode != 0 {
			b.Fatalf("true: %+v", res)
		}
	}
}

func TestRunCallbackPanics(t *testing.T) {
	t.Run("OnStart", func(t *testing.T) {
		var pid int
		start := time.Now()
		res := run(t, Spec{Argv: sh("sleep 300"), OnStart: func(p Proc) {
			pid = p.PID
			panic("boom")
		}})
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("Run took %v", took)
		}
		if res.Exited || res.CallbackErr == nil || !strings.Contains(res.CallbackErr.Error(), "OnStart panicked: boom") {
			t.Fatalf("Exited=%v CallbackErr=%v, want killed with the panic", res.Exited, res.CallbackErr)
		}
		waitFor(t, 5*time.Second, "the command to be killed", func() bool { return gone(pid) })
	})
	t.Run("OnOutput", func(t *testing.T) {
		calls := 0
		res := run(t, Spec{Argv: sh("echo one; sleep 0.05; echo two >&2; exit 2"), OnOutput: func(string, []byte) {
			calls++
			panic("boom")
		}})
		if !res.Exited || res.ExitCode != 2 {
			t.Fatalf("Exited=%v ExitCode=%d, want 2", res.Exited, res.ExitCode)
		}
		if res.CallbackErr == nil || !strings.Contains(res.CallbackErr.Error(), "OnOutput panicked: boom") {
			t.Fatalf("CallbackErr = %v", res.CallbackErr)
		}
		if calls != 1 || string(res.Stdout) != "one\n" || string(res.Stderr) != "two\n" {
			t.Fatalf("calls=%d stdout=%q stderr=%q: want one call and the output still captured", calls, res.Stdout, res.Stderr)
		}
	})
}
