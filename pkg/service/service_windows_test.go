//go:build windows && wine

package service

// The Windows service lifecycle, run under Wine (build tag wine: see
// wine_windows.go). The service is this test binary: started by the
// Service Control Manager with the argument "run", TestMain runs
// serviceMain instead of the tests. Run with
//
//	PATH=$PATH:test/windows/wine GOOS=windows GOARCH=amd64 go test -tags wine ./pkg/service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc/mgr"
)

// testName is the test's service: an installed agent (the MSI tests share
// the Wine prefix) is never touched.
const testName = "mqagent-test"

func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "run" {
		os.Exit(serviceMain(os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

// serviceMain is the service: it records that it runs (and whether it
// knows it is a service), and ends when the SCM stops it or when the test
// drops an "exit" file (agent.stop's path: the service stops itself).
func serviceMain(dir string) int {
	err := run(context.Background(), testName, func(ctx context.Context) error {
		_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("started-%d", os.Getpid())), []byte("managed="+Managed()), 0o644)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("stopped-%d", os.Getpid())), nil, 0o644)
				return nil
			case <-t.C:
				if _, err := os.Stat(filepath.Join(dir, "exit")); err == nil {
					_ = os.Remove(filepath.Join(dir, "exit"))
					_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("exited-%d", os.Getpid())), nil, 0o644)
					return nil
				}
			}
		}
	})
	if err != nil {
		return 1
	}
	return 0
}

// tempDir is t.TempDir without os.RemoveAll (it fails under Wine 8 on a
// non-empty directory): files are removed one by one.
func tempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "mqagent-svc-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
		_ = os.Remove(dir)
	})
	return dir
}

// files lists the names in dir that start with prefix.
func files(dir, prefix string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitStatus(t *testing.T, m *Manager, want Status) {
	t.Helper()
	waitFor(t, "service "+string(want), func() bool {
		st, err := m.Status()
		return err == nil && st == want
	})
}

func TestWindowsServiceLifecycle(t *testing.T) {
	if !Privileged() {
		t.Skip("needs an elevated administrator (Wine runs as one)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := tempDir(t)
	m := &Manager{spec: Spec{Exe: exe, args: []string{"run", "--config", dir}}, b: winService{name: testName}}
	// A service left by an interrupted run of this test.
	if st, _ := m.Status(); st != StatusNotInstalled {
		_ = m.Stop()
		if err := m.Uninstall(); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, m, StatusNotInstalled)
	}
	t.Cleanup(func() {
		_ = m.Stop()
		_ = m.Uninstall()
	})

	if changed, err := m.Install(); err != nil || !changed {
		t.Fatalf("install: %v %v", changed, err)
	}
	if changed, err := m.Install(); err != nil || changed {
		t.Fatalf("install again: changed %v, %v; want an unchanged installation", changed, err)
	}
	checkConfig(t, exe, dir)
	if ok, err := m.InstalledFor(exe); err != nil || !ok {
		t.Fatalf("InstalledFor: %v %v", ok, err)
	}
	waitStatus(t, m, StatusStopped)

	// start / stop by the SCM
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "service process started", func() bool { return len(files(dir, "started-")) == 1 })
	if b, _ := os.ReadFile(filepath.Join(dir, files(dir, "started-")[0])); string(b) != "managed="+ManagerWindows {
		t.Fatalf("the service process says %q: it does not know it runs as a service", b)
	}
	waitStatus(t, m, StatusRunning)
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, m, StatusStopped)
	if len(files(dir, "stopped-")) != 1 {
		t.Fatalf("stop did not reach the service's context: %v", files(dir, ""))
	}

	// restart: a new process
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "second start", func() bool { return len(files(dir, "started-")) == 2 })
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "restart", func() bool { return len(files(dir, "started-")) == 3 })
	waitStatus(t, m, StatusRunning)

	// The service ends by itself (agent.stop): Run asks the SCM to stop it.
	if err := os.WriteFile(filepath.Join(dir, "exit"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the service's own exit", func() bool { return len(files(dir, "exited-")) == 1 })
	waitStatus(t, m, StatusStopped)

	if err := m.Uninstall(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, m, StatusNotInstalled)
	if err := m.Uninstall(); err != nil {
		t.Fatalf("uninstall of an uninstalled service: %v", err)
	}
	if err := m.Start(); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("start of an uninstalled service: %v", err)
	}
}

// checkConfig checks what the SCM holds: command line, LocalSystem,
// automatic start, recovery actions.
func checkConfig(t *testing.T, exe, dir string) {
	t.Helper()
	mg, err := mgr.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer mg.Disconnect()
	s, err := mg.OpenService(testName)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cfg, err := queryConfig(s)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DisplayName != DisplayName || cfg.StartType != mgr.StartAutomatic || !strings.EqualFold(cfg.ServiceStartName, "LocalSystem") {
		t.Errorf("service config %+v: want %q, automatic start, LocalSystem", cfg, DisplayName)
	}
	if firstArg(cfg.BinaryPathName) != exe || !strings.HasSuffix(cfg.BinaryPathName, " run --config "+quoteIfNeeded(dir)) {
		t.Errorf("command line %q", cfg.BinaryPathName)
	}
	actions, err := s.RecoveryActions()
	if errors.Is(err, windows.ERROR_INVALID_LEVEL) {
		t.Log("this service manager cannot read recovery actions back (Wine): not checked")
		return
	}
	if err != nil || !slices.Equal(actions, Recovery()) {
		t.Errorf("recovery actions %+v (%v), want %+v", actions, err, Recovery())
	}
	if period, err := s.ResetPeriod(); err != nil || period != RecoveryResetPeriod {
		t.Errorf("reset period %d (%v)", period, err)
	}
	if on, err := s.RecoveryActionsOnNonCrashFailures(); errors.Is(err, windows.ERROR_INVALID_LEVEL) {
		t.Log("this service manager has no recovery flag for non-crash failures (Wine)")
	} else if err != nil || !on {
		t.Errorf("recovery on failures: %v (%v)", on, err)
	}
}

func quoteIfNeeded(s string) string {
	if strings.ContainsAny(s, " \t") {
		return `"` + s + `"`
	}
	return s
}
