//go:build windows

package service

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	kservice "github.com/kardianos/service"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
)

// stopTimeout bounds the agent's graceful stop when the SCM asks for it
// (its grace period for commands is 10 s by default).
const stopTimeout = 60 * time.Second

// Run runs the agent function fn. In the foreground it calls fn directly.
// Started by the Service Control Manager, it speaks the SCM protocol
// (kardianos/service): a stop request cancels fn's context; when fn
// returns by itself (agent.stop, agent.restart, agent.update,
// agent.uninstall) Run asks the SCM to stop the service, so that it ends
// in the SCM's books as a clean stop; an error from fn ends the service
// with an error, which the recovery actions answer with a restart. It also
// makes sure the recovery actions and the event log source are set (an
// installer such as the MSI cannot set recovery actions).
func Run(ctx context.Context, fn func(context.Context) error) error { return run(ctx, Name, fn) }

// run is Run for the service name.
func run(ctx context.Context, name string, fn func(context.Context) error) error {
	if kservice.Interactive() {
		return fn(ctx)
	}
	ensureServiceSetup(name)
	p := &program{name: name, fn: fn, parent: ctx, done: make(chan struct{}), stuck: make(chan struct{})}
	s, err := kservice.New(p, &kservice.Config{Name: name, DisplayName: DisplayName})
	if err != nil {
		return err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run() }()
	select {
	case err := <-runErr:
		return err
	case <-p.stuck:
		// fn ended but the SCM could not be asked to stop us: exit; the
		// SCM sees the process end and applies the recovery actions.
		return p.result()
	}
}

type program struct {
	name   string
	fn     func(context.Context) error
	parent context.Context

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	// stuck is closed when fn ended but the SCM could not be asked to stop.
	stuck chan struct{}
}

func (p *program) result() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Start starts fn and returns at once.
func (p *program) Start(kservice.Service) error {
	ctx, cancel := context.WithCancel(p.parent)
	p.mu.Lock()
	p.cancel = cancel
	p.mu.Unlock()
	go func() {
		err := p.fn(ctx)
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
		if ctx.Err() == nil {
			// Ended by itself: have the SCM send us a stop.
			if serr := stopSelf(p.name); serr != nil {
				close(p.stuck)
			}
		}
	}()
	return nil
}

// Stop cancels fn and waits for it; fn's error becomes the service's
// failure.
func (p *program) Stop(kservice.Service) error {
	p.mu.Lock()
	cancel := p.cancel
	p.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		return fmt.Errorf("the agent did not stop within %v", stopTimeout)
	}
	return p.result()
}

// stopSelf sends the service name (this process) a stop request without
// waiting for it.
func stopSelf(name string) error {
	m, s, err := open(name, windows.SERVICE_STOP)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	_, err = s.Control(svc.Stop)
	return err
}

// ensureServiceSetup sets the recovery actions and the event log source
// when they are missing (best effort: LocalSystem may change its own
// service).
func ensureServiceSetup(name string) {
	if m, s, err := open(name, windows.SERVICE_QUERY_CONFIG|windows.SERVICE_CHANGE_CONFIG|windows.SERVICE_START); err == nil {
		_, _ = ensureRecovery(s)
		s.Close()
		m.Disconnect()
	}
	if err := eventlog.InstallAsEventCreate(name, eventlog.Error|eventlog.Warning|eventlog.Info); err != nil && !strings.Contains(err.Error(), "exists") {
		_ = err // the log still works, with generic message descriptions
	}
}
