//go:build windows

package service

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"
	"unsafe"

	kservice "github.com/kardianos/service"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/mgr"
)

// Recovery is what the Service Control Manager does when the agent
// fails (a crash, or a stop with an error): restart it after 5 s, 10 s,
// then 60 s; the count of failures is reset after a day without one.
func Recovery() []mgr.RecoveryAction {
	return []mgr.RecoveryAction{
		{Type: mgr.ServiceRestart, Delay: 5 * time.Second},
		{Type: mgr.ServiceRestart, Delay: 10 * time.Second},
		{Type: mgr.ServiceRestart, Delay: 60 * time.Second},
	}
}

// RecoveryResetPeriod is the failure-count reset period, in seconds.
const RecoveryResetPeriod = 24 * 60 * 60

// controlTimeout bounds a wait for the service to reach a state.
const controlTimeout = 60 * time.Second

// winService is the SCM backend for the service name (Name; tests use
// another so as not to touch an installed agent).
type winService struct{ name string }

func newBackend(Spec) (backend, error) { return winService{name: Name}, nil }

func (winService) platform() string { return kservice.Platform() }

// binaryPath is the command line the SCM runs, quoted like mgr does.
func binaryPath(spec Spec) string {
	s := syscall.EscapeArg(spec.Exe)
	for _, a := range spec.Args() {
		s += " " + syscall.EscapeArg(a)
	}
	return s
}

func (w winService) install(spec Spec) (changed bool, err error) {
	m, err := mgr.Connect()
	if err != nil {
		return false, err
	}
	defer m.Disconnect()
	s, err := m.OpenService(w.name)
	if err != nil {
		c := &kservice.Config{
			Name: w.name, DisplayName: DisplayName, Description: Description,
			Executable: spec.Exe, Arguments: spec.Args(),
			Option: kservice.KeyValue{kservice.StartType: kservice.ServiceStartAutomatic},
		}
		ks, err := kservice.New(nopProgram{}, c)
		if err != nil {
			return false, err
		}
		// Creates the service (LocalSystem, automatic start) and the event
		// log source.
		if err := ks.Install(); err != nil {
			return false, err
		}
		changed = true
		if s, err = m.OpenService(w.name); err != nil {
			return changed, err
		}
	}
	defer s.Close()
	cfg, err := queryConfig(s)
	if err != nil {
		return changed, err
	}
	want := binaryPath(spec)
	if cfg.BinaryPathName != want || cfg.StartType != mgr.StartAutomatic || cfg.DisplayName != DisplayName ||
		!strings.EqualFold(strings.TrimPrefix(cfg.ServiceStartName, `.\`), "LocalSystem") {
		if err := updateConfig(s, want); err != nil {
			return changed, fmt.Errorf("update the service: %w", err)
		}
		changed = true
	}
	set, err := ensureRecovery(s)
	return changed || set, err
}

// queryConfig reads the basic configuration (QueryServiceConfig only:
// mgr.Service.Config also reads optional levels that Wine lacks).
func queryConfig(s *mgr.Service) (mgr.Config, error) {
	n := uint32(1024)
	for {
		b := make([]byte, n)
		p := (*windows.QUERY_SERVICE_CONFIG)(unsafe.Pointer(&b[0]))
		err := windows.QueryServiceConfig(s.Handle, p, n, &n)
		if err == nil {
			return mgr.Config{
				ServiceType:      p.ServiceType,
				StartType:        p.StartType,
				BinaryPathName:   windows.UTF16PtrToString(p.BinaryPathName),
				ServiceStartName: windows.UTF16PtrToString(p.ServiceStartName),
				DisplayName:      windows.UTF16PtrToString(p.DisplayName),
			}, nil
		}
		if !errors.Is(err, windows.ERROR_INSUFFICIENT_BUFFER) || n <= uint32(len(b)) {
			return mgr.Config{}, err
		}
	}
}

// updateConfig sets the command line, automatic start, LocalSystem and the
// names.
func updateConfig(s *mgr.Service, binaryPath string) error {
	utf := func(v string) *uint16 {
		p, _ := windows.UTF16PtrFromString(v)
		return p
	}
	err := windows.ChangeServiceConfig(s.Handle, windows.SERVICE_NO_CHANGE, mgr.StartAutomatic, windows.SERVICE_NO_CHANGE,
		utf(binaryPath), nil, nil, nil, utf("LocalSystem"), utf(""), utf(DisplayName))
	if err != nil {
		return err
	}
	d := windows.SERVICE_DESCRIPTION{Description: utf(Description)}
	_ = windows.ChangeServiceConfig2(s.Handle, windows.SERVICE_CONFIG_DESCRIPTION, (*byte)(unsafe.Pointer(&d)))
	return nil
}

// ensureRecovery sets the recovery actions (Recovery(), also on a stop with
// an error) unless they are set already; it reports whether it changed
// them.
//
// The flag for failures other than crashes is a separate setting that some
// service managers lack (Wine answers ERROR_INVALID_LEVEL): there only
// crashes restart the agent.
func ensureRecovery(s *mgr.Service) (bool, error) {
	unsupported := func(err error) bool { return errors.Is(err, windows.ERROR_INVALID_LEVEL) }
	have, err := s.RecoveryActions()
	if unsupported(err) {
		// Cannot be read back (Wine): set them, changed or not.
		if err := s.SetRecoveryActions(Recovery(), RecoveryResetPeriod); err != nil {
			return false, fmt.Errorf("set recovery actions: %w", err)
		}
		_ = s.SetRecoveryActionsOnNonCrashFailures(true)
		return false, nil
	}
	period, perr := s.ResetPeriod()
	if err == nil && perr == nil && slices.Equal(have, Recovery()) && period == RecoveryResetPeriod {
		if on, err := s.RecoveryActionsOnNonCrashFailures(); err == nil && on || unsupported(err) {
			return false, nil
		}
	}
	if err := s.SetRecoveryActions(Recovery(), RecoveryResetPeriod); err != nil {
		return false, fmt.Errorf("set recovery actions: %w", err)
	}
	if err := s.SetRecoveryActionsOnNonCrashFailures(true); err != nil && !unsupported(err) {
		return true, fmt.Errorf("set recovery on failures: %w", err)
	}
	return true, nil
}

func (w winService) uninstall() error {
	ks, err := kservice.New(nopProgram{}, &kservice.Config{Name: w.name})
	if err != nil {
		return err
	}
	// Deletes the service (it goes once it has stopped) and the event log
	// source.
	return ks.Uninstall()
}

type nopProgram struct{}

func (nopProgram) Start(kservice.Service) error { return nil }
func (nopProgram) Stop(kservice.Service) error  { return nil }

// open opens the service name with the access control needs.
func open(name string, access uint32) (*mgr.Mgr, *mgr.Service, error) {
	h, err := windows.OpenSCManager(nil, nil, windows.SC_MANAGER_CONNECT)
	if err != nil {
		return nil, nil, err
	}
	m := &mgr.Mgr{Handle: h}
	n, _ := windows.UTF16PtrFromString(name)
	sh, err := windows.OpenService(h, n, access)
	if err != nil {
		m.Disconnect()
		return nil, nil, err
	}
	return m, &mgr.Service{Handle: sh, Name: name}, nil
}

// waitState polls the service until it is in state want.
func waitState(s *mgr.Service, want svc.State) error {
	deadline := time.Now().Add(controlTimeout)
	for {
		st, err := s.Query()
		if err != nil {
			return err
		}
		if st.State == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("service still in state %d after %v", st.State, controlTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (w winService) start() error {
	m, s, err := open(w.name, windows.SERVICE_START|windows.SERVICE_QUERY_STATUS)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	if st, err := s.Query(); err == nil {
		switch st.State {
		case svc.Running, svc.StartPending:
			return nil
		case svc.StopPending:
			if err := waitState(s, svc.Stopped); err != nil {
				return err
			}
		}
	}
	if err := s.Start(); err != nil && !errors.Is(err, windows.ERROR_SERVICE_ALREADY_RUNNING) {
		return err
	}
	return nil
}

func (w winService) stop() error {
	m, s, err := open(w.name, windows.SERVICE_STOP|windows.SERVICE_QUERY_STATUS)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	if st, err := s.Query(); err == nil && st.State == svc.Stopped {
		return nil
	}
	if _, err := s.Control(svc.Stop); err != nil && !errors.Is(err, windows.ERROR_SERVICE_NOT_ACTIVE) {
		return err
	}
	return waitState(s, svc.Stopped)
}

func (w winService) restart() error {
	if err := w.stop(); err != nil {
		return err
	}
	return w.start()
}

func (w winService) status() (Status, error) {
	m, s, err := open(w.name, windows.SERVICE_QUERY_STATUS)
	if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
		return StatusNotInstalled, nil
	}
	if err != nil {
		return StatusUnknown, err
	}
	defer m.Disconnect()
	defer s.Close()
	st, err := s.Query()
	if err != nil {
		return StatusUnknown, err
	}
	switch st.State {
	case svc.Running, svc.StartPending, svc.ContinuePending:
		return StatusRunning, nil
	case svc.Stopped, svc.StopPending, svc.Paused, svc.PausePending:
		return StatusStopped, nil
	}
	return StatusUnknown, nil
}

func (w winService) installedExe() (string, bool, error) {
	m, s, err := open(w.name, windows.SERVICE_QUERY_CONFIG)
	if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	defer m.Disconnect()
	defer s.Close()
	cfg, err := queryConfig(s)
	if err != nil {
		return "", false, err
	}
	exe := firstArg(cfg.BinaryPathName)
	return exe, exe != "", nil
}

// firstArg is the program of a Windows command line.
func firstArg(cmdline string) string {
	cmdline = strings.TrimSpace(cmdline)
	if strings.HasPrefix(cmdline, `"`) {
		end := strings.Index(cmdline[1:], `"`)
		if end < 0 {
			return cmdline[1:]
		}
		return cmdline[1 : end+1]
	}
	exe, _, _ := strings.Cut(cmdline, " ")
	return exe
}
