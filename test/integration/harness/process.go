package harness

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Time limits shared by the process helpers. Every wait in the package is
// bounded by one of these.
const (
	// startTimeout bounds how long a broker may take to accept connections.
	startTimeout = 15 * time.Second
	// stopTimeout bounds a graceful stop (SIGTERM) before SIGKILL follows.
	// The agent's default grace period for running commands is 10 s.
	stopTimeout = 20 * time.Second
	// reapTimeout bounds the wait for a SIGKILLed process to be reaped.
	reapTimeout = 10 * time.Second
	// pollInterval is the pause between two checks of a condition that
	// has no event to wait on (a TCP port starting to listen).
	pollInterval = 20 * time.Millisecond
	// tailBytes is how much of a log LogTail returns.
	tailBytes = 8 << 10
)

// process is one run of a child process whose stdout and stderr are
// appended to a log file.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	// waitErr is written before done is closed and read only after.
	waitErr error
}

// startProcess starts bin with args, appending its output to logPath.
func startProcess(logPath, bin string, args ...string) (*process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	// The child keeps its own copy of the descriptor.
	defer f.Close()
	fmt.Fprintf(f, "=== harness %s: start %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv()
	cmd.Stdout = f
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// childEnv is the environment of a child process: the test's, and for
// binaries built with -race no 1 s pause at exit (the race detector's
// default), unless GORACE is set already.
func childEnv() []string {
	env := os.Environ()
	if os.Getenv("GORACE") == "" {
		env = append(env, "GORACE=atexit_sleep_ms=0")
	}
	return env
}

// raceReport is what a binary built with -race prints on a data race.
const raceReport = "WARNING: DATA RACE"

// pid is the process id.
func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode is the exit status once the process has ended: -1 when it was
// ended by a signal.
func (p *process) exitCode() int {
	<-p.done
	if p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// wait waits up to timeout for the process to end by itself.
func (p *process) wait(timeout time.Duration) (int, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.exitCode(), true
	case <-timer.C:
		return 0, false
	}
}

// errStopTimeout says a process ignored SIGTERM and was killed.
var errStopTimeout = errors.New("did not exit after SIGTERM, killed")

// stop sends SIGTERM (a kill where signals do not exist), waits up to
// timeout, then kills. It returns the exit code and errStopTimeout when it
// had to kill.
func (p *process) stop(timeout time.Duration) (int, error) {
	if p.exited() {
		return p.exitCode(), nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		// Windows has no SIGTERM; the process may also have just exited.
		_ = p.cmd.Process.Kill()
	}
	if code, ok := p.wait(timeout); ok {
		return code, nil
	}
	if err := p.kill(); err != nil {
		return -1, err
	}
	return p.exitCode(), errStopTimeout
}

// kill sends SIGKILL and waits for the process to be reaped.
func (p *process) kill() error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Kill()
	if _, ok := p.wait(reapTimeout); !ok {
		return fmt.Errorf("process %d not reaped %v after SIGKILL", p.pid(), reapTimeout)
	}
	return nil
}

// appendLog writes a harness note into a process log.
func appendLog(path, format string, args ...any) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "=== harness %s: %s\n", time.Now().UTC().Format(time.RFC3339Nano), fmt.Sprintf(format, args...))
}

// logTail returns the last tailBytes of the file at path, starting at a
// line boundary.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	off := st.Size() - tailBytes
	if off < 0 {
		off = 0
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return fmt.Sprintf("(log unreadable: %v)", err)
	}
	s := string(b)
	if off > 0 {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = "…\n" + s[i+1:]
		}
	}
	return s
}

// fileSize is the size of the file at path, 0 when it does not exist.
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// fileContainsAfter reports whether the file at path contains needle at
// or after byte offset off.
func fileContainsAfter(path string, off int64, needle string) bool {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < off {
		return false
	}
	return strings.Contains(string(b[off:]), needle)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freePorts returns n distinct TCP ports on 127.0.0.1 that were free a
// moment ago (all are held open until every one is picked).
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// hostPort is "127.0.0.1:port".
func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// errExited says a process ended while it was expected to come up.
var errExited = errors.New("process exited during start")

// waitReady polls until ready returns true, the process exits or timeout
// passes. Polling is the only option: a port starting to listen sends no
// event.
func waitReady(p *process, timeout time.Duration, ready func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if p.exited() {
			return fmt.Errorf("%w (exit code %d)", errExited, p.exitCode())
		}
		if ready() {
			return nil
		}
		select {
		case <-p.done:
		case <-tick.C:
		case <-deadline.C:
			return fmt.Errorf("not ready within %v", timeout)
		}
	}
}

// accepts reports whether something accepts TCP connections on addr.
func accepts(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
