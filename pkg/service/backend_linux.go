//go:build linux

package service

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	kservice "github.com/kardianos/service"
)

// unitDir is where system units are installed.
const unitDir = "/etc/systemd/system"

func newBackend(spec Spec) (backend, error) {
	if kservice.Platform() == "linux-systemd" || isDir("/run/systemd/system") {
		return &systemd{unitPath: filepath.Join(unitDir, Name+".service"), systemctl: systemctl}, nil
	}
	k, err := newKardianos(spec, "", nil)
	if err != nil {
		return nil, err
	}
	// Other init systems: kardianos' own scripts.
	switch k.platform() {
	case "unix-systemv", "linux-openrc":
		k.defPath = "/etc/init.d/" + Name
	case "linux-upstart":
		k.defPath = "/etc/init/" + Name + ".conf"
	}
	k.exeOf = scriptExe
	return k, nil
}

// scriptExe is the executable of a kardianos init script (sysv cmd="…",
// OpenRC command=…, upstart exec …).
func scriptExe(script string) (string, bool) {
	for _, line := range strings.Split(script, "\n") {
		line = strings.TrimSpace(line)
		for _, p := range []string{`cmd="`, "command=", "exec "} {
			if v, ok := strings.CutPrefix(line, p); ok {
				v = strings.Trim(v, `"'`)
				exe, _, _ := strings.Cut(v, " ")
				if filepath.IsAbs(exe) {
					return exe, true
				}
			}
		}
	}
	return "", false
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// systemctl runs systemctl with args and returns its output.
func systemctl(args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command("systemctl", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// systemd installs the unit written by SystemdUnit.
type systemd struct {
	unitPath  string
	systemctl func(args ...string) (string, error)
}

func (s *systemd) platform() string { return "linux-systemd" }

func (s *systemd) unit() string { return filepath.Base(s.unitPath) }

func (s *systemd) install(spec Spec) (bool, error) {
	want := SystemdUnit(spec)
	have, err := os.ReadFile(s.unitPath)
	if err == nil && string(have) == want {
		if _, err := s.systemctl("is-enabled", "--quiet", s.unit()); err == nil {
			return false, nil
		}
		_, err := s.systemctl("enable", s.unit())
		return true, err
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	tmp := s.unitPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(want), 0o644); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, s.unitPath); err != nil {
		os.Remove(tmp)
		return false, err
	}
	if _, err := s.systemctl("daemon-reload"); err != nil {
		return true, err
	}
	_, err = s.systemctl("enable", s.unit())
	return true, err
}

func (s *systemd) uninstall() error {
	_, _ = s.systemctl("disable", s.unit())
	if err := os.Remove(s.unitPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	_, err := s.systemctl("daemon-reload")
	return err
}

func (s *systemd) start() error {
	_, err := s.systemctl("start", s.unit())
	return err
}

func (s *systemd) stop() error {
	_, err := s.systemctl("stop", s.unit())
	return err
}

func (s *systemd) restart() error {
	_, err := s.systemctl("restart", s.unit())
	return err
}

func (s *systemd) status() (Status, error) {
	if _, err := os.Stat(s.unitPath); errors.Is(err, fs.ErrNotExist) {
		return StatusNotInstalled, nil
	}
	out, _ := s.systemctl("is-active", s.unit()) // exit status 3 when inactive
	switch strings.TrimSpace(out) {
	case "active", "activating", "deactivating", "reloading":
		return StatusRunning, nil
	case "inactive", "failed":
		return StatusStopped, nil
	}
	return StatusUnknown, fmt.Errorf("systemctl is-active %s: %q", s.unit(), strings.TrimSpace(out))
}

func (s *systemd) installedExe() (string, bool, error) {
	b, err := os.ReadFile(s.unitPath)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	exe, ok := execStartExe(string(b))
	return exe, ok, nil
}
