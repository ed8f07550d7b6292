package update

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// ServiceControl stops and starts the agent's service, for a watchdog of
// an agent that runs under a service manager.
type ServiceControl interface {
	Start() error
	Stop() error
}

// Watchdog watches an update from outside the agent: it is started from
// the previous binary (the backup) when the old process hands over, and
// restores that binary when the new version does not confirm in time,
// whether it crashed, exits at once, or runs but cannot connect.
type Watchdog struct {
	// Dir is the update state directory.
	Dir string
	// Service controls the agent's service when State.Service is set.
	Service ServiceControl
	// Stdout and Stderr are given to an agent started in the foreground.
	Stdout, Stderr *os.File
	// Poll is the interval between two reads of the state (default 200ms).
	Poll time.Duration
	// Margin is how much longer than the health timeout the watchdog
	// waits before it rolls back (default: a quarter of the health
	// timeout, at least 5 s), so that a new version that runs but is
	// offline rolls back by itself first, gracefully.
	Margin time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// margin is the default Margin; takeover is how long a rollback begun by
// the new version may take before the watchdog finishes it.
func margin(health time.Duration) time.Duration { return max(5*time.Second, health/4) }

const takeover = time.Minute

// Run watches until the update is confirmed or has ended, or rolls it back
// at the deadline. It returns nil when the update ended either way.
func (w *Watchdog) Run(ctx context.Context) error {
	log := w.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	poll := w.Poll
	if poll <= 0 {
		poll = 200 * time.Millisecond
	}
	s := store{dir: w.Dir}
	st, ok, err := s.load()
	if err != nil {
		return err
	}
	if !ok {
		return errNoState
	}
	log = log.With("update", st.ID, "from", st.From, "to", st.To)
	from := st.HandedOver
	if from.IsZero() {
		from = time.Now()
	}
	wait := st.HealthTimeout() + w.Margin
	if w.Margin <= 0 {
		wait = st.HealthTimeout() + margin(st.HealthTimeout())
	}
	deadline := from.Add(wait)
	log.Info("watching the update", "deadline", deadline.UTC().Format(time.RFC3339), "proc", st.Proc.PID, "service", st.Service)
	started := !st.StartService
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		st, ok, err = s.load()
		switch {
		case err != nil:
			log.Warn("cannot read the update state", "err", err)
		case !ok || st.Phase.Final():
			log.Info("update ended", "phase", st.Phase)
			return nil
		case st.Phase == PhaseSwapped && !started && !st.Proc.Alive():
			// A Windows service: the old process has exited; start the
			// service, which now runs the new version.
			started = true
			deadline = time.Now().Add(wait)
			if w.Service == nil {
				log.Error("cannot start the service: no service control")
			} else if err := w.Service.Start(); err != nil {
				log.Error("cannot start the service with the new version", "err", err)
			} else {
				log.Info("service started with the new version")
			}
		case st.Phase == PhaseSwapped && st.Service == "" && st.Proc.PID > 0 && !st.Proc.Alive():
			// In the foreground nobody starts a new version that exited.
			return w.rollback(log, s, fmt.Sprintf("version %s exited before it came online", st.To))
		case st.Phase == PhaseSwapped && time.Now().After(deadline):
			return w.rollback(log, s, fmt.Sprintf("version %s did not come online within %s", st.To, wait))
		case st.Phase == PhaseRollingBack && time.Now().After(deadline.Add(takeover)):
			return w.rollback(log, s, st.Error)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// rollback stops the new version, restores the previous binary and starts
// it.
func (w *Watchdog) rollback(log *slog.Logger, s store, reason string) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	st, ok, err := s.load()
	if err != nil || !ok || (st.Phase != PhaseSwapped && st.Phase != PhaseRollingBack) {
		unlock()
		return err
	}
	if st.Phase == PhaseSwapped {
		st.Phase, st.Error = PhaseRollingBack, reason
		if err := s.save(st); err != nil {
			unlock()
			return err
		}
	}
	unlock()
	log.Warn("the new version did not come online: rolling back", "reason", st.Error)
	if st.Service != "" && w.Service != nil {
		if err := w.Service.Stop(); err != nil {
			log.Warn("cannot stop the service", "err", err)
		}
	}
	if err := st.Proc.Terminate(10 * time.Second); err != nil && err != errSelf {
		log.Warn("cannot stop the new version", "pid", st.Proc.PID, "err", err)
	}
	unlock, err = s.lock()
	if err != nil {
		return err
	}
	if err := Restore(st.Exe, st.Backup); err != nil {
		unlock()
		return err
	}
	st.Phase = PhaseRolledBack
	err = s.save(st)
	unlock()
	if err != nil {
		return err
	}
	log.Info("previous binary restored: starting it", "exe", st.Exe)
	if st.Service != "" {
		if w.Service == nil {
			return fmt.Errorf("cannot start the %s service: no service control", st.Service)
		}
		return w.Service.Start()
	}
	argv := append([]string{st.Exe}, st.Args[min(1, len(st.Args)):]...)
	p, err := StartDetached(argv, w.Stdout, w.Stderr)
	if err != nil {
		return fmt.Errorf("start %s: %w", st.Exe, err)
	}
	log.Info("previous version started", "pid", p.PID)
	return nil
}

// SpawnWatchdog starts the watchdog from the previous binary (st.Backup:
// `BACKUP update-watchdog --state-dir DIR`), detached so that it outlives
// this process. Under systemd it runs in a transient unit of its own
// (systemd-run), so that stopping or restarting the agent's unit does not
// take it down.
func (m *Manager) SpawnWatchdog(st State, stdout, stderr *os.File) (Proc, error) {
	argv := []string{st.Backup, "update-watchdog", "--state-dir", m.Dir}
	argv = wrapSystemd(st, argv)
	p, err := StartDetached(argv, stdout, stderr)
	if err != nil {
		return p, fmt.Errorf("start the update watchdog: %w", err)
	}
	return p, nil
}
