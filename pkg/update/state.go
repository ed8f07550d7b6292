package update

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Phase is where an update stands. The state file holds one update at a
// time; it is removed once the update's final result is journaled.
type Phase string

// Phases, in the order an update goes through them.
const (
	// PhaseStaged: the new binary is verified and waits next to the
	// executable; nothing was changed yet.
	PhaseStaged Phase = "staged"
	// PhaseSwapped: the new binary is (being) put at the executable's path,
	// the previous one kept at Backup; the new version must come online
	// within the health timeout.
	PhaseSwapped Phase = "swapped"
	// PhaseConfirmed: the new version came online; the update succeeded.
	PhaseConfirmed Phase = "confirmed"
	// PhaseRollingBack: the new version did not come online; the previous
	// binary is being restored.
	PhaseRollingBack Phase = "rolling_back"
	// PhaseRolledBack: the previous binary is back; the update failed.
	PhaseRolledBack Phase = "rolled_back"
	// PhaseFailed: the update ended before the new version ran (the agent
	// stopped in between); the previous binary was never replaced.
	PhaseFailed Phase = "failed"
)

// Final reports whether the update has ended (its result is known).
func (p Phase) Final() bool {
	return p == PhaseConfirmed || p == PhaseRolledBack || p == PhaseFailed
}

// Proc identifies a process across pid reuse.
type Proc struct {
	PID int `json:"pid"`
	// Created is the process's start time (ms since the epoch), 0 unknown.
	Created int64 `json:"created_ms,omitempty"`
}

// State is the persisted state of the update in progress.
type State struct {
	// ID is the agent.update command, finished by whichever process ends
	// the update.
	ID    string `json:"id"`
	From  string `json:"from"`
	To    string `json:"to"`
	Phase Phase  `json:"phase"`
	// Exe is the agent's executable; Backup the previous binary while the
	// update is not confirmed; Staged the verified new binary before the
	// swap.
	Exe    string `json:"exe"`
	Backup string `json:"backup"`
	Staged string `json:"staged"`
	// Args is the agent's command line, to start it again in the
	// foreground; Service the service manager it runs under ("" for none).
	Args    []string `json:"args"`
	Service string   `json:"service,omitempty"`
	// Proc is the process that runs (or is about to run) the new version,
	// watched in the foreground.
	Proc Proc `json:"proc"`
	// StartService: the watchdog starts the service once Proc has exited
	// (Windows services, where the new version cannot replace the old
	// process in place).
	StartService bool `json:"start_service,omitempty"`
	// Attempts counts the starts of the new version without confirmation.
	Attempts int `json:"attempts"`
	// HealthTimeoutMS is how long the new version has to come online.
	HealthTimeoutMS int64 `json:"health_timeout_ms"`
	// HandedOver is when the old process restarted into the new version.
	HandedOver time.Time `json:"handed_over,omitzero"`
	// Error says why the update failed or was rolled back.
	Error   string    `json:"error,omitempty"`
	Updated time.Time `json:"updated"`
}

// HealthTimeout is HealthTimeoutMS as a duration.
func (s State) HealthTimeout() time.Duration {
	return time.Duration(s.HealthTimeoutMS) * time.Millisecond
}

// Result is the data of agent.update's final result.
type Result struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// File names in the state directory.
const (
	stateFile    = "state.json"
	lockFile     = "lock"
	downloadFile = "download.tmp"
	// WatchdogLog is the watchdog's log in the state directory.
	WatchdogLog = "watchdog.log"
)

// store reads and writes the state file of a directory.
type store struct{ dir string }

func (s store) path() string { return filepath.Join(s.dir, stateFile) }

// load returns the state; ok is false when there is none. A state file
// that cannot be parsed is an error (it is never silently dropped).
func (s store) load() (st State, ok bool, err error) {
	b, err := os.ReadFile(s.path())
	if errors.Is(err, fs.ErrNotExist) {
		return st, false, nil
	}
	if err != nil {
		return st, false, fmt.Errorf("update state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, false, fmt.Errorf("update state %s: %w", s.path(), err)
	}
	return st, true, nil
}

// save replaces the state file atomically and durably.
func (s store) save(st State) error {
	st.Updated = time.Now().UTC()
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("update state: %w", err)
	}
	if err := WriteFileSync(s.path(), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("update state: %w", err)
	}
	return nil
}

// remove deletes the state file.
func (s store) remove() error {
	if err := os.Remove(s.path()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("update state: %w", err)
	}
	syncDir(s.dir)
	return nil
}

// lock takes the state directory's lock (other processes included) and
// returns its release.
func (s store) lock() (func(), error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("update state: %w", err)
	}
	return lockPath(filepath.Join(s.dir, lockFile))
}

// WriteFileSync writes path through a fresh, synced temporary file and a
// rename, then syncs the directory: after a power cut the file is the old
// one or the new one, never a mix.
func WriteFileSync(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	// A fresh file (never through a link left there).
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	syncDir(filepath.Dir(path))
	return nil
}

// lockWait bounds the wait for the state lock: holders only read or write
// the state file and rename files.
const lockWait = 30 * time.Second
