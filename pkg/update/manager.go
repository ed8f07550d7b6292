package update

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// MaxAttempts is how many times the new version may start without coming
// online before the one after rolls back at once.
const MaxAttempts = 3

// preflightTimeout bounds `NEW version` before the swap.
const preflightTimeout = 15 * time.Second

// Action is what the caller must do after Boot or a rollback.
type Action int

// Actions.
const (
	// Continue: run the agent.
	Continue Action = iota
	// Restart: the executable was changed back; start it again (the
	// running process is the version that failed).
	Restart
)

// Manager applies and follows the updates of one agent installation. Its
// methods may be called from several goroutines and processes: the state
// file is guarded by a file lock.
type Manager struct {
	// Dir holds the state file, the lock and downloads (data_dir/update).
	Dir string
	// Exe is the agent's executable, resolved when the process started
	// (os.Executable changes once the file is renamed).
	Exe string
	// Version is the running version.
	Version string
	// PublicKey is update.public_key; empty refuses every update.
	PublicKey ed25519.PublicKey
	// MaxBytes is update.max_bytes.
	MaxBytes int64
	// HealthTimeout is how long the new version has to come online.
	HealthTimeout time.Duration
	// AllowHTTP permits plain http to any host (development mode).
	AllowHTTP bool
	// Service names the service manager the agent runs under ("systemd",
	// "launchd", "windows"); "" in the foreground.
	Service string
	// Args is the agent's command line (os.Args), to start it again.
	Args []string
	// Client downloads; nil is NewHTTPClient(AllowHTTP).
	Client *http.Client
	// Logger; nil discards.
	Logger *slog.Logger

	mu   sync.Mutex
	busy bool
}

func (m *Manager) store() store { return store{dir: m.Dir} }

func (m *Manager) log() *slog.Logger {
	if m.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Logger
}

// Apply runs an update up to the swap: checks the version, downloads,
// verifies, runs the new binary once (`version` must print r.Version),
// stages it and swaps it in (PhaseSwapped). On success the caller stops
// the agent and restarts into the new version; the update's result is
// published later by whichever process ends it. On error nothing was
// changed.
func (m *Manager) Apply(ctx context.Context, id string, r Request) (err error) {
	if len(m.PublicKey) == 0 {
		return ErrNoKey
	}
	if r.Version == m.Version {
		return fmt.Errorf("%w: version %s is already running", ErrVersion, m.Version)
	}
	if ValidVersion(m.Version) && CompareVersions(r.Version, m.Version) < 0 && !r.AllowDowngrade {
		return fmt.Errorf("%w: %s is older than the running %s (set allow_downgrade to downgrade)", ErrVersion, r.Version, m.Version)
	}
	m.mu.Lock()
	if m.busy {
		m.mu.Unlock()
		return ErrBusy
	}
	m.busy = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.busy = false
		m.mu.Unlock()
	}()
	s := m.store()
	if st, ok, err := m.Pending(); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("%w (update %s, phase %s)", ErrBusy, st.ID, st.Phase)
	}
	if err := os.MkdirAll(m.Dir, 0o700); err != nil {
		return fmt.Errorf("update directory: %w", err)
	}
	tmp := filepath.Join(m.Dir, downloadFile)
	defer os.Remove(tmp)
	client := m.Client
	if client == nil {
		client = NewHTTPClient(m.AllowHTTP)
	}
	started := time.Now()
	n, err := Fetch(ctx, client, r.URL, tmp, m.MaxBytes)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(tmp)
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	if err := Verify(data, r.SHA256, r.Signature, m.PublicKey); err != nil {
		return err
	}
	m.log().Info("update downloaded and verified", "id", id, "to", r.Version, "bytes", n, "took", time.Since(started).Round(time.Millisecond))
	st := State{
		ID: id, From: m.Version, To: r.Version, Phase: PhaseStaged,
		Exe: m.Exe, Backup: BackupPath(m.Exe), Staged: StagedPath(m.Exe),
		Args: m.Args, Service: m.Service, HealthTimeoutMS: m.HealthTimeout.Milliseconds(),
	}
	if err := removeIfExists(st.Staged); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	if err := WriteFileSync(st.Staged, data, 0o755); err != nil {
		return fmt.Errorf("stage next to %s: %w", m.Exe, err)
	}
	data = nil
	defer func() {
		if err != nil {
			_ = os.Remove(st.Staged)
		}
	}()
	if err := preflight(ctx, st.Staged, r.Version); err != nil {
		return err
	}
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.save(st); err != nil {
		return err
	}
	// Recorded before the renames: a process that starts after a crash
	// tells by its own version whether the swap happened (see Boot).
	st.Phase = PhaseSwapped
	if err := s.save(st); err != nil {
		_ = s.remove()
		return err
	}
	if err := Install(st.Exe, st.Staged, st.Backup); err != nil {
		_ = s.remove()
		return err
	}
	m.log().Info("update installed: restarting into the new version", "id", id, "from", st.From, "to", st.To, "exe", st.Exe, "backup", st.Backup)
	return nil
}

// preflight runs `path version` and checks that it prints want.
func preflight(ctx context.Context, path, want string) error {
	ctx, cancel := context.WithTimeout(ctx, preflightTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "version")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("the new binary does not run here (`version`: %v; output %q)", err, clip(out.String(), 200))
	}
	if got := strings.TrimSpace(out.String()); got != want {
		return fmt.Errorf("%w: the new binary reports version %q, not %q", ErrVerify, clip(got, 100), want)
	}
	return nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Pending returns the state of the update in progress, if any.
func (m *Manager) Pending() (State, bool, error) { return m.store().load() }

// Owns reports whether the command id is the update in progress (its
// owner finishes it; the pipeline must not end it interrupted).
func (m *Manager) Owns(id string) bool {
	st, ok, err := m.Pending()
	return err == nil && ok && st.ID == id
}

// Boot settles the update state when the agent starts, before it
// connects: an update interrupted before the swap has failed; the new
// version counts its starts and rolls back after MaxAttempts; a rollback
// that was interrupted is finished. Restart means the executable now holds
// the previous version, which the caller must start instead of running.
func (m *Manager) Boot() (Action, error) {
	s := m.store()
	unlock, err := s.lock()
	if err != nil {
		return Continue, err
	}
	defer unlock()
	st, ok, err := s.load()
	if err != nil || !ok {
		return Continue, err
	}
	switch st.Phase {
	case PhaseStaged:
		_ = removeIfExists(st.Staged)
		st.Phase, st.Error = PhaseFailed, "the agent stopped before the new binary was installed"
		return Continue, s.save(st)
	case PhaseSwapped:
		switch m.Version {
		case st.To:
			st.Attempts++
			st.Proc = SelfProc()
			if st.Attempts > MaxAttempts {
				return m.rollbackLocked(s, st, fmt.Sprintf("version %s started %d times without coming online", st.To, st.Attempts-1))
			}
			m.log().Info("new version starting: it must come online to confirm the update", "id", st.ID, "from", st.From, "to", st.To, "attempt", st.Attempts, "health_timeout", st.HealthTimeout())
			return Continue, s.save(st)
		case st.From:
			// The swap did not happen: the previous binary is at Exe.
			_ = removeIfExists(st.Staged)
			if exists(st.Exe) {
				_ = removeIfExists(st.Backup)
			}
			st.Phase, st.Error = PhaseFailed, "the agent stopped before the new version started"
		default:
			st.Phase, st.Error = PhaseFailed, fmt.Sprintf("version %s is running, neither %s nor %s", m.Version, st.From, st.To)
		}
		return Continue, s.save(st)
	case PhaseRollingBack:
		if m.Version == st.To {
			return m.rollbackLocked(s, st, st.Error)
		}
		st.Phase = PhaseRolledBack
		return Continue, s.save(st)
	}
	return Continue, nil
}

// rollbackLocked restores the previous binary (the lock is held).
func (m *Manager) rollbackLocked(s store, st State, reason string) (Action, error) {
	st.Phase, st.Error = PhaseRollingBack, reason
	if err := s.save(st); err != nil {
		return Continue, err
	}
	if err := Restore(st.Exe, st.Backup); err != nil {
		return Continue, err
	}
	st.Phase = PhaseRolledBack
	m.log().Warn("update rolled back: the previous version is restored", "id", st.ID, "from", st.From, "to", st.To, "reason", reason)
	return Restart, s.save(st)
}

// Confirm records that the new version is online (PhaseConfirmed) and
// returns the state; ok is false when this process is not a new version
// awaiting confirmation (e.g. a rollback won the race).
func (m *Manager) Confirm() (st State, ok bool, err error) {
	s := m.store()
	unlock, err := s.lock()
	if err != nil {
		return st, false, err
	}
	defer unlock()
	st, ok, err = s.load()
	if err != nil || !ok || m.Version != st.To {
		return st, false, err
	}
	switch st.Phase {
	case PhaseConfirmed:
		return st, true, nil
	case PhaseSwapped:
		st.Phase, st.Error = PhaseConfirmed, ""
		if err := s.save(st); err != nil {
			return st, false, err
		}
		m.log().Info("update confirmed: the new version is online", "id", st.ID, "from", st.From, "to", st.To)
		return st, true, nil
	}
	return st, false, nil
}

// GiveUp marks the update for rollback when this process, the new
// version, did not come online in time; the caller stops the agent and
// calls Rollback. It returns false when there is nothing to give up.
func (m *Manager) GiveUp(reason string) (bool, error) {
	s := m.store()
	unlock, err := s.lock()
	if err != nil {
		return false, err
	}
	defer unlock()
	st, ok, err := s.load()
	if err != nil || !ok || st.Phase != PhaseSwapped || m.Version != st.To {
		return false, err
	}
	st.Phase, st.Error = PhaseRollingBack, reason
	return true, s.save(st)
}

// Rollback restores the previous binary when the update is rolling back
// and this process is the new version. Restart means the caller must start
// the executable again (it now holds the previous version).
func (m *Manager) Rollback() (Action, error) {
	s := m.store()
	unlock, err := s.lock()
	if err != nil {
		return Continue, err
	}
	defer unlock()
	st, ok, err := s.load()
	if err != nil || !ok || st.Phase != PhaseRollingBack || m.Version != st.To {
		return Continue, err
	}
	return m.rollbackLocked(s, st, st.Error)
}

// HandOver is called by the previous version once it has stopped after a
// successful Apply: it records proc, the process that will run the new
// version (itself when it re-executes in place), and the hand-over time
// from which the watchdog counts. ok is false when there is no swapped
// update to hand over.
func (m *Manager) HandOver(proc Proc, startService bool) (st State, ok bool, err error) {
	s := m.store()
	unlock, err := s.lock()
	if err != nil {
		return st, false, err
	}
	defer unlock()
	st, ok, err = s.load()
	if err != nil || !ok || st.Phase != PhaseSwapped || m.Version != st.From {
		return st, false, err
	}
	st.Proc, st.StartService, st.HandedOver = proc, startService, time.Now().UTC()
	return st, true, s.save(st)
}

// Finish removes the state of update id once its final result is
// journaled, and what is left of it (the previous binary after a
// confirmed update).
func (m *Manager) Finish(id string) error {
	s := m.store()
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	st, ok, err := s.load()
	if err != nil || !ok || st.ID != id {
		return err
	}
	if !st.Phase.Final() {
		return fmt.Errorf("update %s: phase %s is not final", id, st.Phase)
	}
	_ = removeIfExists(st.Staged)
	if st.Phase == PhaseConfirmed {
		// The watchdog may still run from it for a moment: on Windows it
		// is then deleted at the next reboot.
		DeleteLater(st.Backup)
	}
	return s.remove()
}

// Outcome is the final result of an ended update: its data, and the error
// when it failed.
func Outcome(st State) (data Result, errText string) {
	data = Result{From: st.From, To: st.To}
	switch st.Phase {
	case PhaseConfirmed:
		return data, ""
	case PhaseRolledBack:
		return data, "rolled back to " + st.From + ": " + st.Error
	}
	if st.Error == "" {
		return data, "update ended in phase " + string(st.Phase)
	}
	return data, st.Error
}

// errNoState: there is no update to watch.
var errNoState = errors.New("no update in progress")
