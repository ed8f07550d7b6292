package service

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// systemctlLog records systemctl calls: this machine has no running
// systemd, so the unit file handling is tested with the real files and a
// recorded systemctl.
type systemctlLog struct {
	calls   []string
	enabled bool
	active  string
}

func (s *systemctlLog) run(args ...string) (string, error) {
	s.calls = append(s.calls, strings.Join(args, " "))
	switch args[0] {
	case "is-enabled":
		if !s.enabled {
			return "disabled", os.ErrNotExist
		}
	case "enable":
		s.enabled = true
	case "disable":
		s.enabled = false
	case "is-active":
		return s.active + "\n", nil
	}
	return "", nil
}

func TestSystemdInstallIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	rec := &systemctlLog{active: "inactive"}
	s := &systemd{unitPath: filepath.Join(dir, "mqagent.service"), systemctl: rec.run}
	spec := Spec{Exe: "/usr/local/bin/mqagent", Config: "/etc/mqagent/config.yaml"}
	step := func(name string, fn func() (bool, error), changed bool, calls ...string) {
		t.Helper()
		rec.calls = nil
		got, err := fn()
		if err != nil || got != changed || !slices.Equal(rec.calls, calls) {
			t.Fatalf("%s: changed %v err %v calls %q; want changed %v calls %q", name, got, err, rec.calls, changed, calls)
		}
	}
	if st, err := s.status(); err != nil || st != StatusNotInstalled {
		t.Fatalf("status before install: %v %v", st, err)
	}
	step("install", func() (bool, error) { return s.install(spec) }, true, "daemon-reload", "enable mqagent.service")
	step("again", func() (bool, error) { return s.install(spec) }, false, "is-enabled --quiet mqagent.service")
	b, err := os.ReadFile(s.unitPath)
	if err != nil || string(b) != SystemdUnit(spec) {
		t.Fatalf("unit file: %v", err)
	}
	if exe, ok, err := s.installedExe(); err != nil || !ok || exe != spec.Exe {
		t.Fatalf("installedExe = %q %v %v", exe, ok, err)
	}
	rec.enabled = false
	step("disabled by hand", func() (bool, error) { return s.install(spec) }, true, "is-enabled --quiet mqagent.service", "enable mqagent.service")
	spec2 := Spec{Exe: "/opt/mqagent/mqagent", Config: "/etc/mqagent/config.yaml"}
	step("moved binary", func() (bool, error) { return s.install(spec2) }, true, "daemon-reload", "enable mqagent.service")
	if exe, _, _ := s.installedExe(); exe != spec2.Exe {
		t.Fatalf("installedExe after update = %q", exe)
	}
	if st, err := s.status(); err != nil || st != StatusStopped {
		t.Fatalf("status: %v %v", st, err)
	}
	rec.active = "active"
	if st, err := s.status(); err != nil || st != StatusRunning {
		t.Fatalf("status: %v %v", st, err)
	}
	step("uninstall", func() (bool, error) { return false, s.uninstall() }, false, "disable mqagent.service", "daemon-reload")
	if _, err := os.Stat(s.unitPath); !os.IsNotExist(err) {
		t.Fatalf("unit file left: %v", err)
	}
	if _, ok, err := s.installedExe(); ok || err != nil {
		t.Fatalf("installedExe after uninstall: %v %v", ok, err)
	}
}

func TestScriptExe(t *testing.T) {
	for _, c := range []struct{ script, exe string }{
		{"#!/bin/sh\ncmd=\"/usr/bin/mqagent run --config /etc/c.yaml\"\n", "/usr/bin/mqagent"},
		{"#!/sbin/openrc-run\ncommand=/usr/bin/mqagent\n", "/usr/bin/mqagent"},
		{"start on runlevel\nexec /opt/mqagent run\n", "/opt/mqagent"},
		{"nothing here\n", ""},
	} {
		if got, ok := scriptExe(c.script); got != c.exe || ok != (c.exe != "") {
			t.Errorf("scriptExe(%q) = %q %v", c.script, got, ok)
		}
	}
}
