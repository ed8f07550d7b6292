package runner

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	tail := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22"
	tests := []struct {
		name    string
		in      string
		want    procStat
		wantErr bool
	}{
		{"plain", "42 (sleep) S 7 42" + tail, procStat{pid: 42, state: 'S', ppid: 7, pgrp: 42, start: 17}, false},
		{"name with spaces and parens", "43 (a) b (c)) Z 1 9" + tail, procStat{pid: 43, state: 'Z', ppid: 1, pgrp: 9, start: 17}, false},
		{"no name", "43 S 1 9" + tail, procStat{}, true},
		{"too short", "43 (x) S 1 9 1 2", procStat{}, true},
		{"bad ppid", "43 (x) S x 9" + tail, procStat{}, true},
		{"empty", "", procStat{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	st, err := readStat(pid)
	return err == nil && st.state != 'Z'
}

func TestOnStartProc(t *testing.T) {
	var p Proc
	var st procStat
	var statErr error
	res := run(t, Spec{Argv: sh("echo x"), OnStart: func(got Proc) {
		p = got
		st, statErr = readStat(got.PID) // not reaped before Run's wait
	}})
	if !res.Exited {
		t.Fatalf("%+v", res)
	}
	if statErr != nil {
		t.Fatal(statErr)
	}
	if p.PID <= 0 || p.PGID != p.PID || p.StartTicks == 0 || p.StartTicks != st.start || st.pgrp != p.PID {
		t.Fatalf("Proc %+v, stat %+v", p, st)
	}
	if p.PGID == syscall.Getpgrp() {
		t.Fatal("command runs in the agent's process group")
	}
}

// startOrphan runs a fake agent that starts `sh` with a background sleep and
// then crashes (SIGKILL), leaving the tree behind. The tree is re-parented
// to this process (a subreaper, see TestMain).
func startOrphan(t *testing.T) (p Proc, grandchild int) {
	t.Helper()
	pidfile := filepath.Join(t.TempDir(), "pid")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=orphan", "PIDFILE="+pidfile)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(out).Decode(&p); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("read Proc from the helper: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-p.PGID, syscall.SIGKILL) })
	grandchild = readPidFile(t, pidfile)
	_ = cmd.Process.Kill() // the crash
	_ = cmd.Wait()
	waitFor(t, 5*time.Second, "the orphan to be re-parented to the test process", func() bool {
		st, err := readStat(p.PID)
		return err == nil && st.ppid == os.Getpid()
	})
	if !alive(p.PID) || !alive(grandchild) {
		t.Fatalf("the orphaned tree is not running")
	}
	return p, grandchild
}

func TestKillOrphan(t *testing.T) {
	t.Run("kills the tree", func(t *testing.T) {
		p, grandchild := startOrphan(t)
		killed, err := KillOrphan(p)
		if err != nil || !killed {
			t.Fatalf("KillOrphan = %v, %v; want true", killed, err)
		}
		waitFor(t, 5*time.Second, "the tree to die", func() bool { return !alive(p.PID) && !alive(grandchild) })
		// Reaped by the reaper: gone from /proc altogether.
		waitFor(t, 5*time.Second, "the tree to be reaped", func() bool { return gone(p.PID) && gone(grandchild) })
		killed, err = KillOrphan(p)
		if err != nil || killed {
			t.Fatalf("second KillOrphan = %v, %v; want false", killed, err)
		}
	})
	t.Run("refuses mismatched start ticks", func(t *testing.T) {
		p, grandchild := startOrphan(t)
		for _, ticks := range []uint64{p.StartTicks + 1, p.StartTicks - 1, 0} {
			q := p
			q.StartTicks = ticks
			killed, err := KillOrphan(q)
			if err != nil || killed {
				t.Fatalf("KillOrphan with start ticks %d (real %d) = %v, %v; want false", ticks, p.StartTicks, killed, err)
			}
		}
		if !alive(p.PID) || !alive(grandchild) {
			t.Fatal("KillOrphan killed a tree it should have refused")
		}
	})
	t.Run("kills members when the leader is gone", func(t *testing.T) {
		p, grandchild := startOrphan(t)
		if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the leader to be reaped", func() bool { return gone(p.PID) })
		if !alive(grandchild) {
			t.Fatal("grandchild died with the leader")
		}
		killed, err := KillOrphan(p)
		if err != nil || !killed {
			t.Fatalf("KillOrphan = %v, %v; want true", killed, err)
		}
		waitFor(t, 5*time.Second, "the grandchild to die", func() bool { return !alive(grandchild) })
	})
	t.Run("refuses a group older than the leader", func(t *testing.T) {
		p, grandchild := startOrphan(t)
		if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the leader to be reaped", func() bool { return gone(p.PID) })
		q := p
		q.StartTicks = 1 << 62 // "the leader started after every member": not our group
		killed, err := KillOrphan(q)
		if err != nil || killed {
			t.Fatalf("KillOrphan = %v, %v; want false", killed, err)
		}
		if !alive(grandchild) {
			t.Fatal("KillOrphan killed a group it should have refused")
		}
	})
	t.Run("nothing left", func(t *testing.T) {
		killed, err := KillOrphan(Proc{PID: 1 << 22, PGID: 1<<22 + 1, StartTicks: 5}) // above pid_max's default
		if err != nil || killed {
			t.Fatalf("KillOrphan = %v, %v; want false, nil", killed, err)
		}
	})
	t.Run("bad input", func(t *testing.T) {
		for _, p := range []Proc{{}, {PID: 5}, {PID: 1, PGID: 1}, {PID: -3, PGID: -3}, {PGID: syscall.Getpgrp()}, {PGID: os.Getpid()}} {
			if killed, err := KillOrphan(p); err == nil || killed {
				t.Errorf("KillOrphan(%+v) = %v, %v; want an error", p, killed, err)
			}
		}
	})
}

func TestReaperReapsOrphans(t *testing.T) {
	t.Run("escaped child that exits later", func(t *testing.T) {
		pidfile := filepath.Join(t.TempDir(), "pid")
		res := run(t, Spec{
			Argv: sh(`setsid sh -c 'echo $$ > "$P.tmp" && mv "$P.tmp" "$P"; exec sleep 1' >/dev/null 2>&1 &
				while [ ! -s "$P" ]; do sleep 0.01; done`),
			Env: map[string]string{"P": pidfile},
		})
		if !res.Exited {
			t.Fatalf("%+v", res)
		}
		orphan := readPidFile(t, pidfile)
		t.Cleanup(func() { _ = syscall.Kill(orphan, syscall.SIGKILL) })
		st, err := readStat(orphan)
		if err == nil && st.state != 'Z' && st.ppid != os.Getpid() {
			t.Fatalf("orphan ppid = %d, want the test process %d (subreaper)", st.ppid, os.Getpid())
		}
		waitFor(t, 10*time.Second, "the orphan to exit and be reaped", func() bool { return gone(orphan) })
	})
	t.Run("background child killed with its group", func(t *testing.T) {
		res := run(t, Spec{Argv: sh("sleep 300 & echo $!")})
		bg, err := strconv.Atoi(strings.TrimSpace(string(res.Stdout)))
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the killed background child to be reaped", func() bool { return gone(bg) })
	})
}

// Many short commands make many SIGCHLDs and reaper scans; every exit
// status must still reach its Run.
func TestReaperNeverStealsExitStatus(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for w := range 4 {
		wg.Go(func() {
			for i := range 10 {
				code := (w*10+i)%250 + 1
				res := Run(context.Background(), Spec{Argv: sh("sleep 0.0$((RANDOM%3)) 2>/dev/null & exit " + strconv.Itoa(code))})
				if !res.Exited || res.ExitCode != code || res.WaitErr != nil {
					errs <- errors.New("exit " + strconv.Itoa(code) + ": got " + strconv.Itoa(res.ExitCode) + " exited=" + strconv.FormatBool(res.Exited) + " " + errString(res.WaitErr))
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestInitTwice(t *testing.T) {
	// TestMain already called Init.
	stop, err := Init(nil)
	if err == nil {
		stop()
		t.Fatal("second Init succeeded")
	}
}

func TestReadStatMissing(t *testing.T) {
	if _, err := readStat(1 << 22); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want ErrNotExist", err)
	}
}
