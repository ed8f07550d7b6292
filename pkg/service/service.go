// Package service installs, controls and runs the agent as an operating
// system service, through github.com/kardianos/service where it does the
// job: a systemd unit on Linux (written by this package, see SystemdUnit),
// a launchd daemon on macOS (LaunchdPlist), and a Windows service running
// as LocalSystem with automatic start and restart-on-failure recovery
// actions. Every platform runs the same command line, `EXE run --config
// CONFIG` (Spec), and `mqagent run` finds out with Managed whether a
// service manager started it. The package also removes an installation
// (Remove, for agent.uninstall) and copies the agent's errors to the
// service manager's log (ErrorHandler).
package service

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
)

// Identity of the service on every platform: the MSI relies on these.
const (
	// Name is the service name (systemd unit mqagent.service, launchd label
	// mqagent, Windows service mqagent).
	Name = "mqagent"
	// DisplayName is the Windows display name.
	DisplayName = "mqagent host agent"
	// Description describes the service.
	Description = "mqagent host agent: runs operators' commands on this host and publishes results, status and telemetry over MQTT"
)

// Errors.
var (
	// ErrNotPrivileged: installing or controlling the service needs root
	// (Unix) or an elevated administrator (Windows).
	ErrNotPrivileged = errors.New("this needs administrator rights: run it as root (sudo) or from an elevated prompt on Windows")
	// ErrNotInstalled: the service is not installed.
	ErrNotInstalled = errors.New("the service is not installed")
)

// Spec is what the service runs: Exe run --config Config.
type Spec struct {
	// Exe is the agent's executable (absolute).
	Exe string
	// Config is the agent's configuration file (absolute).
	Config string

	// args replaces the arguments (tests run the test binary as the
	// service).
	args []string
}

// Args is the service's command line after the executable.
func (s Spec) Args() []string {
	if s.args != nil {
		return slices.Clone(s.args)
	}
	return []string{"run", "--config", s.Config}
}

// Validate checks that both paths are absolute.
func (s Spec) Validate() error {
	if s.Exe == "" || !filepath.IsAbs(s.Exe) {
		return fmt.Errorf("service executable %q: must be an absolute path", s.Exe)
	}
	if s.args == nil && (s.Config == "" || !filepath.IsAbs(s.Config)) {
		return fmt.Errorf("service config %q: must be an absolute path", s.Config)
	}
	return nil
}

// Status is the service's state as the service manager reports it.
type Status string

// Statuses.
const (
	StatusRunning      Status = "running"
	StatusStopped      Status = "stopped"
	StatusNotInstalled Status = "not installed"
	StatusUnknown      Status = "unknown"
)

// backend is one platform's service manager.
type backend interface {
	install(Spec) (changed bool, err error)
	uninstall() error
	start() error
	stop() error
	restart() error
	status() (Status, error)
	// installedExe is the executable the installed service runs.
	installedExe() (exe string, ok bool, err error)
	platform() string
}

// Manager controls the agent's service on this machine.
type Manager struct {
	spec Spec
	b    backend
}

// New returns the Manager of this machine's service manager. spec is
// needed by Install only; control and status work with a zero Spec.
func New(spec Spec) (*Manager, error) {
	b, err := newBackend(spec)
	if err != nil {
		return nil, err
	}
	return &Manager{spec: spec, b: b}, nil
}

// Platform names the service manager ("linux-systemd", "darwin-launchd",
// "windows-service", …).
func (m *Manager) Platform() string { return m.b.platform() }

// Install installs the service and enables it at boot, or brings an
// installed one up to date; changed is false when it was installed as
// wanted already. It does not start the service.
func (m *Manager) Install() (changed bool, err error) {
	if err := m.spec.Validate(); err != nil {
		return false, err
	}
	if !Privileged() {
		return false, fmt.Errorf("install the %s service: %w", Name, ErrNotPrivileged)
	}
	changed, err = m.b.install(m.spec)
	if err != nil {
		return changed, fmt.Errorf("install the %s service (%s): %w", Name, m.Platform(), err)
	}
	return changed, nil
}

// Uninstall removes the service (a running one goes on running until it
// stops). Removing a service that is not installed is not an error.
func (m *Manager) Uninstall() error {
	if !Privileged() {
		return fmt.Errorf("uninstall the %s service: %w", Name, ErrNotPrivileged)
	}
	if st, err := m.b.status(); err == nil && st == StatusNotInstalled {
		return nil
	}
	if err := m.b.uninstall(); err != nil {
		return fmt.Errorf("uninstall the %s service (%s): %w", Name, m.Platform(), err)
	}
	return nil
}

// Start starts the service.
func (m *Manager) Start() error { return m.control("start", m.b.start) }

// Stop stops the service and waits until it has stopped.
func (m *Manager) Stop() error { return m.control("stop", m.b.stop) }

// Restart stops and starts the service.
func (m *Manager) Restart() error { return m.control("restart", m.b.restart) }

func (m *Manager) control(what string, fn func() error) error {
	if st, err := m.b.status(); err == nil && st == StatusNotInstalled {
		return fmt.Errorf("%s the %s service: %w", what, Name, ErrNotInstalled)
	}
	if err := fn(); err != nil {
		if !Privileged() {
			return fmt.Errorf("%s the %s service: %w (%w)", what, Name, err, ErrNotPrivileged)
		}
		return fmt.Errorf("%s the %s service: %w", what, Name, err)
	}
	return nil
}

// Status is the service's state.
func (m *Manager) Status() (Status, error) { return m.b.status() }

// InstalledFor reports whether the installed service runs exe (so that an
// agent removes only its own installation).
func (m *Manager) InstalledFor(exe string) (bool, error) {
	got, ok, err := m.b.installedExe()
	if err != nil || !ok {
		return false, err
	}
	return samePath(got, exe), nil
}

// Control stops and starts the service (for the update watchdog).
type Control struct{ M *Manager }

// Start starts the service.
func (c Control) Start() error { return c.M.Start() }

// Stop stops the service.
func (c Control) Stop() error { return c.M.Stop() }
