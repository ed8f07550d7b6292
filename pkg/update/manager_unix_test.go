//go:build !windows

package update

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The "binaries" of these tests are shell scripts: they answer `version`
// like the agent, and otherwise record their arguments in a marker file.
func agentScript(version, marker string) []byte {
	return []byte("#!/bin/sh\nif [ \"$1\" = version ]; then echo " + version + "; exit 0; fi\necho \"$@\" > '" + marker + "'\n")
}

type rig struct {
	t      *testing.T
	dir    string
	exe    string
	marker string
	old    []byte // the 1.0.0 binary
	key    ed25519.PrivateKey
	pub    ed25519.PublicKey
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{t: t, dir: t.TempDir()}
	r.pub, r.key, _ = ed25519.GenerateKey(nil)
	r.exe = filepath.Join(r.dir, "bin", "mqagent")
	r.marker = filepath.Join(r.dir, "started")
	r.old = agentScript("1.0.0", r.marker)
	r.write(r.exe, r.old)
	return r
}

func (r *rig) write(path string, data []byte) {
	r.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o755); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) read(path string) string {
	r.t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return "(missing)"
	}
	return string(b)
}

// manager is the Manager of the installation for a process of version.
func (r *rig) manager(version string) *Manager {
	return &Manager{
		Dir: filepath.Join(r.dir, "data", "update"), Exe: r.exe, Version: version, PublicKey: r.pub,
		MaxBytes: 1 << 20, HealthTimeout: time.Second, Args: []string{r.exe, "run", "--config", "agent.yaml"},
	}
}

// offer publishes data as a file URL and returns a signed request.
func (r *rig) offer(version string, data []byte) Request {
	r.t.Helper()
	path := filepath.Join(r.dir, "dist", version)
	r.write(path, data)
	return Request{Version: version, URL: &url.URL{Scheme: "file", Path: path}, SHA256: sha256.Sum256(data), Signature: ed25519.Sign(r.key, data)}
}

func (r *rig) state() State {
	r.t.Helper()
	st, ok, err := store{dir: filepath.Join(r.dir, "data", "update")}.load()
	if err != nil || !ok {
		r.t.Fatalf("no update state: %v", err)
	}
	return st
}

func (r *rig) save(st State) {
	r.t.Helper()
	if err := os.MkdirAll(filepath.Join(r.dir, "data", "update"), 0o700); err != nil {
		r.t.Fatal(err)
	}
	if err := (store{dir: filepath.Join(r.dir, "data", "update")}).save(st); err != nil {
		r.t.Fatal(err)
	}
}

func TestApply(t *testing.T) {
	r := newRig(t)
	m := r.manager("1.0.0")
	v2 := agentScript("2.0.0", r.marker)
	if err := m.Apply(context.Background(), "u-1", r.offer("2.0.0", v2)); err != nil {
		t.Fatal(err)
	}
	st := r.state()
	if st.Phase != PhaseSwapped || st.ID != "u-1" || st.From != "1.0.0" || st.To != "2.0.0" || st.Exe != r.exe || st.HealthTimeoutMS != 1000 {
		t.Fatalf("state %+v", st)
	}
	if r.read(r.exe) != string(v2) || r.read(BackupPath(r.exe)) != string(r.old) {
		t.Fatal("exe is not the new binary, or the backup not the old one")
	}
	if _, err := os.Stat(StagedPath(r.exe)); !os.IsNotExist(err) {
		t.Fatal("staged binary left")
	}
	if err := m.Apply(context.Background(), "u-2", r.offer("3.0.0", agentScript("3.0.0", r.marker))); !errors.Is(err, ErrBusy) {
		t.Fatalf("second update while one is pending: %v, want ErrBusy", err)
	}
}

func TestApplyRefuses(t *testing.T) {
	r := newRig(t)
	cases := []struct {
		name string
		req  func() Request
		key  bool
		err  string
	}{
		{"wrong version inside", func() Request { return r.offer("2.0.0", agentScript("2.0.1", r.marker)) }, true, `reports version "2.0.1", not "2.0.0"`},
		{"does not run", func() Request { return r.offer("2.0.0", []byte("\x7fELF garbage")) }, true, "does not run here"},
		{"downgrade", func() Request { return r.offer("0.9.0", agentScript("0.9.0", r.marker)) }, true, "older than the running 1.0.0"},
		{"same version", func() Request { return r.offer("1.0.0", agentScript("1.0.0", r.marker)) }, true, "already running"},
		{"tampered", func() Request {
			q := r.offer("2.0.0", agentScript("2.0.0", r.marker))
			q.Signature[0] ^= 1
			return q
		}, true, "signature is not by update.public_key"},
		{"no key", func() Request { return r.offer("2.0.0", agentScript("2.0.0", r.marker)) }, false, "update.public_key is not configured"},
	}
	for _, c := range cases {
		m := r.manager("1.0.0")
		if !c.key {
			m.PublicKey = nil
		}
		err := m.Apply(context.Background(), "u-"+c.name, c.req())
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: %v, want %q", c.name, err, c.err)
		}
		if r.read(r.exe) != string(r.old) {
			t.Fatalf("%s: the executable changed", c.name)
		}
		for _, p := range []string{BackupPath(r.exe), StagedPath(r.exe), filepath.Join(m.Dir, stateFile)} {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Fatalf("%s: %s left behind", c.name, p)
			}
		}
	}
	// A downgrade is allowed when asked for.
	q := r.offer("0.9.0", agentScript("0.9.0", r.marker))
	q.AllowDowngrade = true
	if err := r.manager("1.0.0").Apply(context.Background(), "u-down", q); err != nil {
		t.Fatalf("allowed downgrade: %v", err)
	}
}

// TestBoot: whatever the point where the agent stopped (a power cut), the
// next start ends up with a working binary and a known outcome.
func TestBoot(t *testing.T) {
	type files struct{ exe, backup, staged string } // "old", "new" or ""
	cases := []struct {
		name     string
		phase    Phase
		attempts int
		running  string // the version that starts
		files    files
		act      Action
		want     Phase
		after    files
		err      string
	}{
		{"staged", PhaseStaged, 0, "1.0.0", files{"old", "", "new"}, Continue, PhaseFailed, files{"old", "", ""}, "before the new binary was installed"},
		{"swapped, before the renames", PhaseSwapped, 0, "1.0.0", files{"old", "old", "new"}, Continue, PhaseFailed, files{"old", "", ""}, "before the new version started"},
		{"swapped, new version starts", PhaseSwapped, 0, "2.0.0", files{"new", "old", ""}, Continue, PhaseSwapped, files{"new", "old", ""}, ""},
		{"swapped, crash loop", PhaseSwapped, MaxAttempts, "2.0.0", files{"new", "old", ""}, Restart, PhaseRolledBack, files{"old", "", ""}, "started 3 times without coming online"},
		{"swapped, a third version", PhaseSwapped, 0, "7.0.0", files{"new", "old", ""}, Continue, PhaseFailed, files{"new", "old", ""}, "neither"},
		{"rolling back, not restored yet", PhaseRollingBack, 1, "2.0.0", files{"new", "old", ""}, Restart, PhaseRolledBack, files{"old", "", ""}, "offline"},
		{"rolling back, restored", PhaseRollingBack, 1, "1.0.0", files{"old", "", ""}, Continue, PhaseRolledBack, files{"old", "", ""}, "offline"},
		{"confirmed", PhaseConfirmed, 1, "2.0.0", files{"new", "old", ""}, Continue, PhaseConfirmed, files{"new", "old", ""}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			content := map[string][]byte{"old": r.old, "new": agentScript("2.0.0", r.marker)}
			put := func(path, which string) {
				if which != "" {
					r.write(path, content[which])
				} else {
					_ = os.Remove(path)
				}
			}
			put(r.exe, c.files.exe)
			put(BackupPath(r.exe), c.files.backup)
			put(StagedPath(r.exe), c.files.staged)
			errText := ""
			if c.phase == PhaseRollingBack {
				errText = "version 2.0.0 stayed offline"
			}
			r.save(State{ID: "u-1", From: "1.0.0", To: "2.0.0", Phase: c.phase, Exe: r.exe, Backup: BackupPath(r.exe), Staged: StagedPath(r.exe), Attempts: c.attempts, Error: errText})
			act, err := r.manager(c.running).Boot()
			if err != nil || act != c.act {
				t.Fatalf("Boot = %v, %v; want %v", act, err, c.act)
			}
			st := r.state()
			if st.Phase != c.want || !strings.Contains(st.Error, c.err) {
				t.Fatalf("state %s %q, want %s with %q", st.Phase, st.Error, c.want, c.err)
			}
			for path, which := range map[string]string{r.exe: c.after.exe, BackupPath(r.exe): c.after.backup, StagedPath(r.exe): c.after.staged} {
				want := "(missing)"
				if which != "" {
					want = string(content[which])
				}
				if got := r.read(path); got != want {
					t.Errorf("%s: %q, want %s", filepath.Base(path), got, which)
				}
			}
			if c.name == "swapped, new version starts" && (st.Attempts != 1 || st.Proc.PID != os.Getpid()) {
				t.Fatalf("attempt not counted: %+v", st)
			}
		})
	}
	t.Run("no update", func(t *testing.T) {
		r := newRig(t)
		if act, err := r.manager("1.0.0").Boot(); act != Continue || err != nil {
			t.Fatalf("Boot = %v %v", act, err)
		}
	})
	t.Run("unreadable state", func(t *testing.T) {
		r := newRig(t)
		r.write(filepath.Join(r.dir, "data", "update", stateFile), []byte("{"))
		if act, err := r.manager("1.0.0").Boot(); act != Continue || err == nil {
			t.Fatalf("Boot = %v %v, want an error and Continue", act, err)
		}
	})
}

// swapped leaves the installation as after a successful Apply of 2.0.0.
func (r *rig) swapped() {
	r.t.Helper()
	if err := r.manager("1.0.0").Apply(context.Background(), "u-1", r.offer("2.0.0", agentScript("2.0.0", r.marker))); err != nil {
		r.t.Fatal(err)
	}
}

func TestConfirmAndFinish(t *testing.T) {
	r := newRig(t)
	r.swapped()
	if _, ok, _ := r.manager("1.0.0").Confirm(); ok {
		t.Fatal("the old version confirmed the update")
	}
	m := r.manager("2.0.0")
	st, ok, err := m.Confirm()
	if err != nil || !ok || st.Phase != PhaseConfirmed {
		t.Fatalf("Confirm = %+v %v %v", st, ok, err)
	}
	if gave, _ := m.GiveUp("late"); gave {
		t.Fatal("gave up a confirmed update")
	}
	data, errText := Outcome(st)
	if errText != "" || data != (Result{From: "1.0.0", To: "2.0.0"}) {
		t.Fatalf("Outcome = %+v %q", data, errText)
	}
	if !m.Owns("u-1") || m.Owns("u-2") {
		t.Fatal("Owns")
	}
	if err := m.Finish("u-1"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := m.Pending(); ok {
		t.Fatal("state left after Finish")
	}
	if _, err := os.Stat(BackupPath(r.exe)); !os.IsNotExist(err) {
		t.Fatal("previous binary left after a confirmed update")
	}
	if m.Owns("u-1") {
		t.Fatal("Owns after Finish")
	}
}

func TestGiveUpAndRollback(t *testing.T) {
	r := newRig(t)
	r.swapped()
	if gave, _ := r.manager("1.0.0").GiveUp("x"); gave {
		t.Fatal("the old version gave up the update")
	}
	m := r.manager("2.0.0")
	if gave, err := m.GiveUp("version 2.0.0 did not come online within 1s"); err != nil || !gave {
		t.Fatalf("GiveUp = %v %v", gave, err)
	}
	if _, ok, _ := m.Confirm(); ok {
		t.Fatal("confirmed an update that is rolling back")
	}
	act, err := m.Rollback()
	if err != nil || act != Restart {
		t.Fatalf("Rollback = %v %v", act, err)
	}
	st := r.state()
	if st.Phase != PhaseRolledBack || r.read(r.exe) != string(r.old) {
		t.Fatalf("after rollback: %s, exe restored %v", st.Phase, r.read(r.exe) == string(r.old))
	}
	if _, e := Outcome(st); e != "rolled back to 1.0.0: version 2.0.0 did not come online within 1s" {
		t.Fatalf("Outcome error %q", e)
	}
	if act, _ := m.Rollback(); act != Continue {
		t.Fatal("a second Rollback did something")
	}
}

func TestHandOver(t *testing.T) {
	r := newRig(t)
	r.swapped()
	if _, ok, _ := r.manager("2.0.0").HandOver(SelfProc(), false); ok {
		t.Fatal("the new version handed over")
	}
	st, ok, err := r.manager("1.0.0").HandOver(Proc{PID: 4242, Created: 7}, true)
	if err != nil || !ok || st.Proc.PID != 4242 || !st.StartService || st.HandedOver.IsZero() {
		t.Fatalf("HandOver = %+v %v %v", st, ok, err)
	}
	if got := r.state(); got.Proc != st.Proc || !got.StartService {
		t.Fatalf("hand-over not saved: %+v", got)
	}
}

// serviceLog is a ServiceControl that records calls (there is no service
// manager to drive here; pkg/service tests the real ones).
type serviceLog struct {
	mu    sync.Mutex
	calls []string
	exe   string
	seen  []string // exe's content at each call
}

func (s *serviceLog) record(c string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, _ := os.ReadFile(s.exe)
	s.calls = append(s.calls, c)
	s.seen = append(s.seen, string(b))
	return nil
}
func (s *serviceLog) Start() error { return s.record("start") }
func (s *serviceLog) Stop() error  { return s.record("stop") }

func startSleep(t *testing.T) Proc {
	t.Helper()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return ProcOf(cmd.Process.Pid)
}

func exitedProc(t *testing.T) Proc {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := ProcOf(cmd.Process.Pid)
	_ = cmd.Wait()
	return p
}

func TestWatchdog(t *testing.T) {
	cases := []struct {
		name    string
		service string
		proc    func(t *testing.T) Proc
		confirm bool
		why     string
	}{
		{"exited at start", "", exitedProc, false, "exited before it came online"},
		{"never online", "", startSleep, false, "did not come online within"},
		{"confirmed", "", startSleep, true, ""},
		{"service never online", "systemd", startSleep, false, "did not come online within"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			r.swapped()
			m := r.manager("1.0.0")
			m.HealthTimeout = 200 * time.Millisecond
			st := r.state()
			st.HealthTimeoutMS, st.Service = 200, c.service
			r.save(st)
			proc := c.proc(t)
			if _, _, err := m.HandOver(proc, false); err != nil {
				t.Fatal(err)
			}
			svc := &serviceLog{exe: r.exe}
			w := &Watchdog{Dir: m.Dir, Service: svc, Poll: 20 * time.Millisecond, Margin: 100 * time.Millisecond}
			if c.confirm {
				if _, ok, err := r.manager("2.0.0").Confirm(); !ok || err != nil {
					t.Fatal(ok, err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			if err := w.Run(ctx); err != nil {
				t.Fatal(err)
			}
			st = r.state()
			if c.confirm {
				if st.Phase != PhaseConfirmed || r.read(r.exe) == string(r.old) || !proc.Alive() {
					t.Fatalf("a confirmed update was touched: %s", st.Phase)
				}
				return
			}
			if st.Phase != PhaseRolledBack || !strings.Contains(st.Error, c.why) || r.read(r.exe) != string(r.old) {
				t.Fatalf("state %s %q; exe restored %v", st.Phase, st.Error, r.read(r.exe) == string(r.old))
			}
			if c.name == "exited at start" && time.Since(start) > 2*time.Second {
				t.Fatalf("rollback of a version that exited took %v", time.Since(start))
			}
			if c.service == "" {
				if proc.Alive() {
					t.Fatal("the new version still runs")
				}
				// The previous version was started with the same arguments.
				deadline := time.Now().Add(5 * time.Second)
				for r.read(r.marker) != "run --config agent.yaml\n" {
					if time.Now().After(deadline) {
						t.Fatalf("previous version not started: marker %q", r.read(r.marker))
					}
					time.Sleep(20 * time.Millisecond)
				}
				return
			}
			if strings.Join(svc.calls, ",") != "stop,start" || svc.seen[1] != string(r.old) {
				t.Fatalf("service calls %v; restored before start: %v", svc.calls, svc.seen[len(svc.seen)-1] == string(r.old))
			}
		})
	}
}

func TestWatchdogStartsWindowsService(t *testing.T) {
	r := newRig(t)
	r.swapped()
	m := r.manager("1.0.0")
	old := startSleep(t) // the old service process, still exiting
	if _, _, err := m.HandOver(old, true); err != nil {
		t.Fatal(err)
	}
	st := r.state()
	st.Service = "windows"
	r.save(st)
	svc := &serviceLog{exe: r.exe}
	w := &Watchdog{Dir: m.Dir, Service: svc, Poll: 20 * time.Millisecond, Margin: time.Second}
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	time.Sleep(100 * time.Millisecond) // let it see the old process alive
	svc.mu.Lock()
	n := len(svc.calls)
	svc.mu.Unlock()
	if n != 0 {
		t.Fatal("service started before the old process exited")
	}
	if err := old.Terminate(time.Second); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		svc.mu.Lock()
		n = len(svc.calls)
		svc.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("service not started after the old process exited")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok, _ := r.manager("2.0.0").Confirm(); !ok {
		t.Fatal("confirm")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if strings.Join(svc.calls, ",") != "start" || svc.seen[0] == string(r.old) {
		t.Fatalf("calls %v", svc.calls)
	}
}

func TestProc(t *testing.T) {
	if !SelfProc().Alive() {
		t.Fatal("this process is not alive")
	}
	if p := exitedProc(t); p.Alive() {
		t.Fatal("an exited process is alive")
	}
	if p := (Proc{PID: os.Getpid(), Created: SelfProc().Created + 1000}); p.Alive() {
		t.Fatal("a process with another start time (a reused pid) is alive")
	}
	p := startSleep(t)
	if err := p.Terminate(2 * time.Second); err != nil || p.Alive() {
		t.Fatalf("Terminate: %v", err)
	}
	if err := SelfProc().Terminate(time.Second); !errors.Is(err, errSelf) {
		t.Fatalf("Terminate self: %v", err)
	}
}

func TestLockExcludes(t *testing.T) {
	s := store{dir: t.TempDir()}
	unlock, err := s.lock()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{})
	go func() {
		u, err := s.lock()
		if err == nil {
			u()
		}
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("a second holder got the lock")
	case <-time.After(100 * time.Millisecond):
	}
	unlock()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the lock was not released")
	}
}
