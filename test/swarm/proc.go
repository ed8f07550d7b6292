package swarm

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// Event is one line printed by the swarm command.
type Event struct {
	Event string `json:"event"` // up, stats, error, stopped
	MS    int64  `json:"ms"`    // up: from start to every host connected
	Error string `json:"error"`
	GC    bool   `json:"gc"`
	Stats Stats  `json:"stats"`
}

// Proc is a swarm command (test/swarm/cmd/swarm) run as a child process:
// one process holds at most MaxHosts connections, so big fleets take
// several.
type Proc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan Event
	done   chan struct{}
	err    error // Wait's result, set before done is closed
	mu     sync.Mutex
	closed bool
}

// StartProc starts bin with args; its stderr goes to logPath (appended).
func StartProc(bin string, args []string, logPath string) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("swarm proc: %w", err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logf
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("swarm proc: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("swarm proc: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("swarm proc: start %s: %w", bin, err)
	}
	p := &Proc{cmd: cmd, stdin: stdin, events: make(chan Event, 64), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var e Event
			if json.Unmarshal(sc.Bytes(), &e) != nil {
				continue
			}
			select {
			case p.events <- e:
			default: // nobody is reading: drop rather than block the child
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the child's process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// next waits for an event of one of the kinds.
func (p *Proc) next(timeout time.Duration, kinds ...string) (Event, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case e := <-p.events:
			if e.Event == "error" {
				return e, fmt.Errorf("swarm proc %d: %s", p.PID(), e.Error)
			}
			for _, k := range kinds {
				if e.Event == k {
					return e, nil
				}
			}
		case <-p.done:
			return Event{}, fmt.Errorf("swarm proc %d exited: %v", p.PID(), p.err)
		case <-t.C:
			return Event{}, fmt.Errorf("swarm proc %d: no %v event within %s", p.PID(), kinds, timeout)
		}
	}
}

// WaitUp waits for every host of the process to have connected.
func (p *Proc) WaitUp(timeout time.Duration) (Event, error) { return p.next(timeout, "up") }

// Stats asks for the process's figures; with gc it first collects
// garbage and returns free memory to the OS.
func (p *Proc) Stats(gc bool, timeout time.Duration) (Stats, error) {
	cmd := "stats\n"
	if gc {
		cmd = "gc\n"
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return Stats{}, errors.New("swarm proc: stopping")
	}
	if _, err := io.WriteString(p.stdin, cmd); err != nil {
		return Stats{}, fmt.Errorf("swarm proc: %w", err)
	}
	e, err := p.next(timeout, "stats")
	return e.Stats, err
}

// Stop closes the child's stdin (a graceful stop) and waits up to
// timeout, then kills it. It is safe to call more than once.
func (p *Proc) Stop(timeout time.Duration) error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		_ = p.stdin.Close()
	}
	p.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("swarm proc %d: killed after %s", p.PID(), timeout)
	}
}
