package rollout

import (
	"context"
	"errors"
	"time"
)

// Result is a host's final result, as a Backend reports it.
type Result struct {
	Host     string
	State    string // a final state of the protocol
	ExitCode *int
	Error    string
}

// Backend sends the rollout's command and reports results. Execute calls
// it from one goroutine.
type Backend interface {
	// Now is the current time.
	Now() time.Time
	// Send publishes the command to hosts.
	Send(ctx context.Context, hosts []string) error
	// Wait returns the final results that arrived since the last call,
	// waiting until at least one is there, or until (when not zero), or
	// ctx ends (then with ctx's error).
	Wait(ctx context.Context, until time.Time) ([]Result, error)
}

// Options change Execute.
type Options struct {
	// Store saves the state after every change (nothing saved when Dir is
	// "").
	Store Store
	// OnStart and OnFinish are told about every host started and every
	// host finished (results, no_answer included).
	OnStart  func(HostState)
	OnFinish func(HostState)
	// Resume sends the command again to the hosts a loaded state says are
	// running (see Engine.Resume).
	Resume bool
}

// ErrAborted is returned (wrapped) by Execute when the rollout was
// aborted.
var ErrAborted = errors.New("rollout aborted")

// Execute drives e until the rollout is done, ctx ends, or sending fails,
// saving the state after every change. It returns the report; the error is
// ctx's (the rollout can be resumed), a send or save error, or ErrAborted.
func Execute(ctx context.Context, e *Engine, b Backend, o Options) (Report, error) {
	save := func() error {
		if o.Store.Dir == "" {
			return nil
		}
		e.st.UpdatedAt = b.Now()
		return o.Store.Save(e.st)
	}
	status := map[string]string{}
	notify := func() {
		for _, h := range e.st.Hosts {
			if status[h.Host] == h.Status {
				continue
			}
			old := status[h.Host]
			status[h.Host] = h.Status
			switch {
			case old == "":
			case h.Status == StatusRunning && o.OnStart != nil:
				o.OnStart(h)
			case isFinal(h.Status) && o.OnFinish != nil:
				o.OnFinish(h)
			}
		}
	}
	for _, h := range e.st.Hosts {
		status[h.Host] = h.Status
	}
	if o.Resume {
		if again := e.Resume(b.Now()); len(again) > 0 {
			if err := b.Send(ctx, again); err != nil {
				return e.Report(), errors.Join(err, save())
			}
		}
	}
	if err := save(); err != nil {
		return e.Report(), err
	}
	for !e.Done() {
		start, wake := e.Next(b.Now())
		notify()
		if len(start) > 0 {
			// Saved as running before sending: if this process dies in
			// between, a resume sends again, which is harmless.
			if err := save(); err != nil {
				return e.Report(), err
			}
			if err := b.Send(ctx, start); err != nil {
				return e.Report(), errors.Join(err, save())
			}
			continue
		}
		if e.Done() {
			break
		}
		results, err := b.Wait(ctx, wake)
		now := b.Now()
		for _, r := range results {
			e.Finish(r.Host, r.State, r.ExitCode, r.Error, now)
		}
		notify()
		if serr := save(); serr != nil && err == nil {
			err = serr
		}
		if err != nil {
			return e.Report(), err
		}
	}
	// Late answers of hosts given up on may still be in; take them.
	notify()
	if err := save(); err != nil {
		return e.Report(), err
	}
	rep := e.Report()
	if rep.Aborted {
		return rep, ErrAborted
	}
	return rep, nil
}
