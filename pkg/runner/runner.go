// Package runner runs operator commands as OS processes: the exec, shell and
// script command kinds of docs/PROTOCOL.md.
//
// Run starts one process, captures its output (capped per stream, optionally
// streamed through a callback), and waits for it. Every command runs as the
// root of its own process tree, and Run never leaves that tree behind:
//
//   - Unix: the command runs in its own process group (Setpgid). When the
//     context ends, the whole group gets SIGKILL at once (grandchildren
//     included). When the leader exits by itself, whatever is left in its
//     group is killed too, so a command cannot leak background processes. A
//     command that really means to leave a daemon behind must detach it from
//     the group itself (setsid, systemd-run, a service manager); such a
//     process is not killed, and if it still holds the output pipes Run stops
//     reading them shortly after the leader exited instead of hanging.
//   - Windows: the command runs in a Job Object created with
//     JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE, which is terminated when the context
//     ends or the leader exits (and by the kernel if the agent dies).
//
// The OS-specific parts sit behind the unexported osTree interface and a few
// per-OS functions (runner_unix.go, runner_linux.go, runner_unix_other.go,
// runner_windows.go); shell.go builds the argv for the shell and script kinds.
//
// Crash recovery: OnStart reports a Proc that the agent stores on disk; after
// a restart KillOrphan kills what is left of that tree, guarded against PID
// reuse. On Linux, Init makes the agent a child subreaper so that orphaned
// grandchildren are re-parented to it, and reaps them when they die.
//
// Process state is process-global by nature, so the package keeps one piece
// of package-level state: the set of process leaders that Run is waiting on,
// which the Linux reaper must leave alone.
package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultMaxOutput is the per-stream output cap used when Spec.MaxOutput <= 0.
const DefaultMaxOutput = 1 << 20

const (
	// pipeGrace bounds how long Run keeps reading output after the leader
	// exited (or was killed) and its process tree was killed. Only a process
	// that left the tree (setsid) and still holds a pipe makes Run wait that
	// long; normally the pipes reach EOF at once.
	pipeGrace = 500 * time.Millisecond
	// killWait bounds how long Run waits for the killed leader to be reaped
	// (a process in uninterruptible sleep may take longer; Run then returns
	// anyway and the wait finishes in the background).
	killWait = 2 * time.Second
	// readBufSize is the size of the pooled read buffers.
	readBufSize = 32 << 10
)

// Stream names passed to Spec.OnOutput.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// Spec describes one process to run.
type Spec struct {
	Argv      []string          // required; Argv[0] is looked up in PATH
	Dir       string            // working directory; "" = the agent's
	Env       map[string]string // added to (overriding) the agent's environment
	Stdin     []byte            // nil = no stdin (null device)
	MaxOutput int               // cap per stream, bytes; <= 0 means 1 MiB
	// OnOutput, when set, receives output as it is produced, for streaming.
	// Calls are serialized (never concurrent, across both streams) in the order
	// the data was read; data must not be retained after return. Per stream it
	// receives at most MaxOutput bytes in total (the same cap as the result).
	// A slow OnOutput slows the command down (the pipes fill up); it is never
	// called after Run returned.
	OnOutput func(stream string, data []byte) // stream is "stdout" or "stderr"
	// OnStart, when set, is called once right after the process started,
	// before any call to OnOutput.
	OnStart func(Proc)
	// WindowsCmdLine, Windows only (ignored elsewhere): when non-empty, the
	// raw command line passed to CreateProcess instead of one built from
	// Argv; Argv[0] still names the program to run. Without it, Run builds
	// the command line with the usual MSVC quoting, except for cmd.exe, whose
	// arguments after /c (or /k) are passed verbatim (wrapped in one pair of
	// quotes when /s is given), so that the argv from ShellArgv and
	// WriteScript runs exactly as written.
	WindowsCmdLine string
}

// Proc identifies a started process tree well enough to kill what is left of
// it after the agent crashed and restarted (JSON-serialisable; the agent stores it on disk).
type Proc struct {
	PID  int `json:"pid"`
	PGID int `json:"pgid,omitempty"` // Unix process group (== PID); 0 on Windows
	// StartTicks guards against PID reuse; 0 = unknown. Linux: field 22 of
	// /proc/PID/stat (clock ticks since boot). Windows: the process creation
	// time (FILETIME, 100 ns units since 1601). Other OSes: 0.
	StartTicks uint64 `json:"start_ticks,omitempty"`
}

// Result is what a run produced.
type Result struct {
	Exited          bool   // the process exited by itself (false: could not start, or killed by us because ctx ended)
	ExitCode        int    // valid when Exited; a process killed by a signal not sent by us reports 128+signal
	Stdout, Stderr  []byte // at most MaxOutput bytes each
	StdoutTruncated bool
	StderrTruncated bool
	StartErr        error // non-nil when the process could not be started (not found, permission, bad Dir); clear message
	// WaitErr is non-nil when the process started but waiting for it failed
	// (its exit status was lost); Exited is false then. It should not happen.
	WaitErr error
	// CallbackErr is non-nil when OnStart or OnOutput panicked (the panic is
	// recovered). After a panic in OnStart the process tree is killed at once
	// (Exited=false); after one in OnOutput, streaming stops but the output
	// is still captured.
	CallbackErr       error
	Started, Finished time.Time
}

// osTree is the per-OS handle on the process tree rooted at one started
// command (Unix: its process group; Windows: its Job Object).
type osTree interface {
	// proc describes the tree for crash recovery.
	proc() Proc
	// wait waits for the leader to exit, kills whatever else is left of the
	// tree, and reaps the leader (cmd.Wait). Called once.
	wait(cmd *exec.Cmd) error
	// kill kills the whole tree now, leader included. It reports false when
	// the leader had already exited by itself (the kill came too late to
	// matter for the result).
	kill() bool
	// release frees what the tree holds; called once, after wait returned.
	release()
}

// bufPool holds read buffers shared by all runs.
var bufPool = sync.Pool{New: func() any { return new([readBufSize]byte) }}

// Run runs spec and waits for it. When ctx ends (timeout or cancel) the WHOLE
// process tree is killed (Unix: its own process group, SIGKILL to -pgid; Windows: its Job Object), and Run returns
// promptly with Exited=false; the caller tells timeout from cancel with context.Cause(ctx).
// If ctx has already ended, nothing is started (Exited=false, StartErr nil).
func Run(ctx context.Context, spec Spec) Result {
	if err := validate(spec); err != nil {
		return startFailed(err)
	}
	if ctx.Err() != nil {
		now := time.Now()
		return Result{Started: now, Finished: now}
	}
	maxOut := spec.MaxOutput
	if maxOut <= 0 {
		maxOut = DefaultMaxOutput
	}

	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	if cmd.Err != nil {
		return startFailed(cmd.Err)
	}
	cmd.Dir = spec.Dir
	if len(spec.Env) > 0 {
		cmd.Env = mergeEnv(os.Environ(), spec.Env)
	}

	p, err := openPipes(spec.Stdin != nil)
	if err != nil {
		return startFailed(err)
	}
	cmd.Stdout, cmd.Stderr = p.outW, p.errW
	if p.inR != nil {
		cmd.Stdin = p.inR
	}
	tree, err := startTree(cmd, spec)
	p.closeChildEnds()
	if err != nil {
		p.closeParentEnds()
		return startFailed(err)
	}
	res := Result{Started: time.Now()}
	killed := false
	if spec.OnStart != nil {
		if err := callOnStart(spec.OnStart, tree.proc()); err != nil {
			res.CallbackErr = err
			killed = tree.kill()
		}
	}

	// The process is running: feed stdin, drain both pipes, wait.
	sink := &sink{max: maxOut, onOutput: spec.OnOutput, out: stream{name: Stdout}, err: stream{name: Stderr}}
	var readers sync.WaitGroup
	readers.Add(2)
	go sink.drain(&readers, p.outR, &sink.out)
	go sink.drain(&readers, p.errR, &sink.err)
	writerDone := make(chan struct{})
	if p.inW != nil {
		go func() {
			defer close(writerDone)
			_, _ = p.inW.Write(spec.Stdin) // EPIPE when the command does not read it all: fine
			_ = p.inW.Close()
		}()
	} else {
		close(writerDone)
	}
	waitDone := make(chan error, 1) // buffered: the waiter never blocks, even after Run returned
	go func() {
		err := tree.wait(cmd)
		tree.release()
		waitDone <- err
	}()

	var waitErr error
	waited := false
	if !killed {
		select {
		case waitErr = <-waitDone:
			waited = true
		case <-ctx.Done():
			select {
			case waitErr = <-waitDone: // exited by itself just as ctx ended
				waited = true
			default:
				killed = tree.kill()
			}
		}
	}
	if !waited { // killed: the leader dies at once, unless stuck in the kernel
		t := time.NewTimer(killWait)
		select {
		case waitErr = <-waitDone:
			waited = true
		case <-t.C:
		}
		t.Stop()
	}

	// The tree is dead (or detached from the pipes): collect the rest of
	// the output, but do not wait for pipes held by escaped processes.
	finishPipes(&readers, p.outR, p.errR)
	if p.inW != nil {
		_ = p.inW.Close() // unblocks a writer stuck on a pipe nobody reads
		waitWithin(writerDone, pipeGrace)
	}
	res.Finished = time.Now()

	sink.mu.Lock()
	sink.frozen = true // a reader that could not be stopped can no longer touch the result
	res.Stdout, res.StdoutTruncated = sink.out.data, sink.out.truncated
	res.Stderr, res.StderrTruncated = sink.err.data, sink.err.truncated
	if sink.callbackErr != nil {
		res.CallbackErr = sink.callbackErr
	}
	sink.mu.Unlock()

	switch {
	case killed:
	case !waited:
		// Only reachable when ctx ended and the leader had exited by
		// itself but was not reaped within killWait: report it as killed.
	case cmd.ProcessState != nil:
		res.Exited = true
		res.ExitCode = exitCode(cmd.ProcessState)
	default:
		res.WaitErr = fmt.Errorf("wait for %q: %w", spec.Argv[0], waitErr)
	}
	return res
}

// validate checks what exec would reject with an unclear message.
func validate(spec Spec) error {
	if len(spec.Argv) == 0 || spec.Argv[0] == "" {
		return errors.New("empty argv: no program to run")
	}
	for i, a := range spec.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("argv[%d] contains a NUL byte", i)
		}
	}
	for k, v := range spec.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fmt.Errorf("invalid environment variable name %q", k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("environment variable %q contains a NUL byte", k)
		}
	}
	if spec.Dir != "" {
		fi, err := os.Stat(spec.Dir)
		if err != nil {
			return fmt.Errorf("working directory: %w", err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("working directory %q is not a directory", spec.Dir)
		}
	}
	return nil
}

// callOnStart calls f, turning a panic into an error.
func callOnStart(f func(Proc), p Proc) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("OnStart panicked: %v", r)
		}
	}()
	f(p)
	return nil
}

func startFailed(err error) Result {
	now := time.Now()
	return Result{StartErr: err, Started: now, Finished: now}
}

// mergeEnv returns base with extra added; extra wins (os/exec keeps the last
// of duplicate names, case-insensitively on Windows). Extra is appended in
// sorted order so the environment is deterministic.
func mergeEnv(base []string, extra map[string]string) []string {
	env := make([]string, 0, len(base)+len(extra))
	env = append(env, base...)
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		env = append(env, k+"="+extra[k])
	}
	return env
}

// pipes are the parent and child ends of the command's standard streams.
type pipes struct {
	outR, outW, errR, errW *os.File
	inR, inW               *os.File // nil without stdin
}

func openPipes(stdin bool) (*pipes, error) {
	p := &pipes{}
	var err error
	if p.outR, p.outW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("create stdout pipe: %w", err)
	}
	if p.errR, p.errW, err = os.Pipe(); err != nil {
		p.closeChildEnds()
		p.closeParentEnds()
		return nil, fmt.Errorf("create stderr pipe: %w", err)
	}
	if stdin {
		if p.inR, p.inW, err = os.Pipe(); err != nil {
			p.closeChildEnds()
			p.closeParentEnds()
			return nil, fmt.Errorf("create stdin pipe: %w", err)
		}
	}
	return p, nil
}

func (p *pipes) closeChildEnds() {
	for _, f := range []*os.File{p.outW, p.errW, p.inR} {
		if f != nil {
			_ = f.Close()
		}
	}
}

func (p *pipes) closeParentEnds() {
	for _, f := range []*os.File{p.outR, p.errR, p.inW} {
		if f != nil {
			_ = f.Close()
		}
	}
}

// finishPipes waits for both readers to reach EOF, at most pipeGrace. Then it
// stops them: a read deadline where the OS supports it (the readers return
// at once), else it closes the pipes and leaves the readers behind (the sink
// is frozen by then, so they cannot change the result).
func finishPipes(readers *sync.WaitGroup, files ...*os.File) {
	done := make(chan struct{})
	go func() {
		readers.Wait()
		close(done)
	}()
	if !waitWithin(done, pipeGrace) {
		stoppable := true
		for _, f := range files {
			if f.SetReadDeadline(time.Now()) != nil {
				stoppable = false
			}
		}
		if stoppable {
			<-done
		} else {
			for _, f := range files {
				_ = f.Close()
			}
			waitWithin(done, pipeGrace)
		}
	}
	for _, f := range files {
		_ = f.Close()
	}
}

// waitWithin reports whether ch was closed within d.
func waitWithin(ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// sink collects both output streams under one lock, which also serializes
// OnOutput.
type sink struct {
	mu          sync.Mutex
	max         int
	onOutput    func(stream string, data []byte)
	out, err    stream
	frozen      bool  // set when Run collected the result
	callbackErr error // OnOutput panicked
}

type stream struct {
	name      string // Stdout or Stderr
	data      []byte
	truncated bool
}

// drain reads f until EOF or error, keeping at most s.max bytes and
// discarding (but still reading) the rest, so a flood of output neither
// blocks the command nor grows memory.
func (s *sink) drain(wg *sync.WaitGroup, f *os.File, st *stream) {
	defer wg.Done()
	buf := bufPool.Get().(*[readBufSize]byte)
	defer bufPool.Put(buf)
	for {
		n, err := f.Read(buf[:])
		if n > 0 {
			s.write(st, buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func (s *sink) write(st *stream, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.frozen {
		return
	}
	keep := min(len(data), s.max-len(st.data))
	if keep < len(data) {
		st.truncated = true
	}
	if keep <= 0 {
		return
	}
	st.data = append(st.data, data[:keep]...)
	if s.onOutput != nil {
		s.callOnOutput(st.name, data[:keep])
	}
}

// callOnOutput calls OnOutput (with s.mu held); after a panic it is not
// called again.
func (s *sink) callOnOutput(name string, data []byte) {
	defer func() {
		if r := recover(); r != nil {
			s.onOutput = nil
			s.callbackErr = fmt.Errorf("OnOutput panicked: %v", r)
		}
	}()
	s.onOutput(name, data)
}
