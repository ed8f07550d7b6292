//go:build !windows

package service

import (
	"errors"
	"io/fs"
	"os"

	kservice "github.com/kardianos/service"
)

// kardianosBackend is kardianos/service's own support for the platform
// (launchd, and Linux init systems other than systemd).
type kardianosBackend struct {
	s kservice.Service
	// defPath is the installed definition and render the wanted one, to
	// tell an up-to-date installation (both empty: never compared).
	defPath string
	render  func(Spec) string
	exeOf   func(def string) (string, bool)
}

// nopProgram is the kardianos program of a Manager: it only controls.
type nopProgram struct{}

func (nopProgram) Start(kservice.Service) error { return nil }
func (nopProgram) Stop(kservice.Service) error  { return nil }

func kardianosConfig(spec Spec) *kservice.Config {
	return &kservice.Config{
		Name: Name, DisplayName: DisplayName, Description: Description,
		Executable: spec.Exe, Arguments: spec.Args(),
		Option: kservice.KeyValue{},
	}
}

func newKardianos(spec Spec, defPath string, render func(Spec) string) (*kardianosBackend, error) {
	c := kardianosConfig(spec)
	if render != nil && spec.Exe != "" {
		c.Option["LaunchdConfig"] = render(spec)
	}
	s, err := kservice.New(nopProgram{}, c)
	if err != nil {
		return nil, err
	}
	return &kardianosBackend{s: s, defPath: defPath, render: render, exeOf: plistExe}, nil
}

func (k *kardianosBackend) platform() string { return k.s.Platform() }

func (k *kardianosBackend) install(spec Spec) (bool, error) {
	st, err := k.status()
	if err != nil {
		return false, err
	}
	if st == StatusNotInstalled {
		return true, k.s.Install()
	}
	if k.defPath == "" || k.render == nil {
		return false, nil // installed; its definition cannot be compared here
	}
	if have, err := os.ReadFile(k.defPath); err == nil && string(have) == k.render(spec) {
		return false, nil
	}
	if err := k.s.Uninstall(); err != nil {
		return false, err
	}
	if err := k.s.Install(); err != nil {
		return true, err
	}
	if st == StatusRunning {
		return true, k.s.Start()
	}
	return true, nil
}

func (k *kardianosBackend) uninstall() error { return k.s.Uninstall() }
func (k *kardianosBackend) start() error     { return k.s.Start() }
func (k *kardianosBackend) stop() error      { return k.s.Stop() }
func (k *kardianosBackend) restart() error   { return k.s.Restart() }

func (k *kardianosBackend) status() (Status, error) {
	if k.defPath != "" {
		if _, err := os.Stat(k.defPath); errors.Is(err, fs.ErrNotExist) {
			return StatusNotInstalled, nil
		}
	}
	st, err := k.s.Status()
	switch {
	case errors.Is(err, kservice.ErrNotInstalled):
		return StatusNotInstalled, nil
	case err != nil:
		return StatusUnknown, err
	case st == kservice.StatusRunning:
		return StatusRunning, nil
	case st == kservice.StatusStopped:
		return StatusStopped, nil
	}
	return StatusUnknown, nil
}

func (k *kardianosBackend) installedExe() (string, bool, error) {
	if k.defPath == "" {
		return "", false, nil
	}
	b, err := os.ReadFile(k.defPath)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	exe, ok := k.exeOf(string(b))
	return exe, ok, nil
}
