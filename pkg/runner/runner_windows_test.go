package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"

	"github.com/mqagent/mqagent/test/windows/wintest"
)

// waitLimit bounds every wait of these tests.
const waitLimit = 20 * time.Second

func runWin(t *testing.T, spec Spec) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	return Run(ctx, spec)
}

func cmdArgv(t *testing.T, command string) []string {
	t.Helper()
	argv, err := ShellArgv("cmd", command)
	if err != nil {
		t.Fatal(err)
	}
	return argv
}

// TestCmdExitCodes checks that cmd's exit status is the command's, whether
// or not the UTF-8 code page switch worked (it fails under Wine, where the
// output is a pipe with no console).
func TestCmdExitCodes(t *testing.T) {
	tests := []struct {
		command string
		code    int
		stdout  string // trimmed; "-" = not checked
	}{
		{"echo hi", 0, "hi"},
		{"exit 3", 3, ""},
		{"exit /b 4", 4, ""},
		{"cmd /c exit 7", 7, ""},
		{"echo %ERRORLEVEL%", 0, "0"},
		{"if errorlevel 1 (echo failed) else (echo clean)", 0, "clean"},
		{`echo "a b" & exit 5`, 5, `"a b"`},
		{"echo a && echo b", 0, "a \r\nb"},
		{"nosuchprogram-xyz", 9009, ""},
		{"ver >nul", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.command, func(t *testing.T) {
			res := runWin(t, Spec{Argv: cmdArgv(t, tt.command)})
			if res.StartErr != nil || res.WaitErr != nil {
				t.Fatalf("StartErr=%v WaitErr=%v", res.StartErr, res.WaitErr)
			}
			if !res.Exited || res.ExitCode != tt.code {
				t.Fatalf("Exited=%v ExitCode=%d, want %d (stdout %q, stderr %q)", res.Exited, res.ExitCode, tt.code, res.Stdout, res.Stderr)
			}
			if got := strings.TrimSpace(string(res.Stdout)); tt.stdout != "-" && got != tt.stdout {
				t.Fatalf("stdout = %q, want %q", got, tt.stdout)
			}
		})
	}
}

func TestExecNotFound(t *testing.T) {
	res := runWin(t, Spec{Argv: []string{"no-such-program-mqagent.exe"}})
	if res.StartErr == nil || res.Exited {
		t.Fatalf("StartErr=%v Exited=%v, want a start error", res.StartErr, res.Exited)
	}
}

// treeSpec runs the test binary in helper mode under cmd, writing its pids
// to a file in dir.
func treeSpec(t *testing.T, dir, mode string) (Spec, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "pids")
	return Spec{
		Argv: cmdArgv(t, `"`+exe+`"`),
		Env:  map[string]string{helperEnv: mode, pidFileEnv: pidFile},
	}, pidFile
}

// readPids waits for the helper's pid file.
func readPids(t *testing.T, file string, done <-chan struct{}) []int {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(file); err == nil {
			var child, grandchild int
			if _, err := fmt.Sscanf(string(b), "%d %d", &child, &grandchild); err != nil {
				t.Fatalf("pid file %q: %v", b, err)
			}
			return []int{child, grandchild}
		}
		select {
		case <-done:
			if _, err := os.Stat(file); err == nil {
				continue
			}
			t.Fatal("the command ended before writing its pids")
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no pid file after %v", waitLimit)
	return nil
}

// requireGone fails unless every pid is gone (or exits within waitLimit).
func requireGone(t *testing.T, pids []int) {
	t.Helper()
	for _, pid := range pids {
		h, err := windows.OpenProcess(windows.SYNCHRONIZE|windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
		if err != nil {
			continue // no such process
		}
		ev, err := windows.WaitForSingleObject(h, uint32(waitLimit/time.Millisecond))
		_ = windows.CloseHandle(h)
		if err != nil || ev != windows.WAIT_OBJECT_0 {
			t.Errorf("process %d still alive %v after the kill (wait: %d, %v)", pid, waitLimit, ev, err)
			// Do not leak it past the test.
			if h, err := windows.OpenProcess(windows.PROCESS_TERMINATE, false, uint32(pid)); err == nil {
				_ = windows.TerminateProcess(h, 1)
				_ = windows.CloseHandle(h)
			}
		}
	}
}

// TestTimeoutKillsTree: cmd starts a child that starts a grandchild; when
// the context ends, the Job Object takes all three down.
func TestTimeoutKillsTree(t *testing.T) {
	dir := wintest.TempDir(t)
	spec, pidFile := treeSpec(t, dir, "child")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var leader Proc
	spec.OnStart = func(p Proc) { leader = p }
	done := make(chan Result, 1)
	go func() { done <- Run(ctx, spec) }()
	stopped := make(chan struct{})
	pids := readPids(t, pidFile, stopped)
	cancel()
	var res Result
	select {
	case res = <-done:
	case <-time.After(waitLimit):
		t.Fatalf("Run did not return %v after cancel", waitLimit)
	}
	close(stopped)
	if res.Exited {
		t.Fatalf("Exited=true (code %d), want killed", res.ExitCode)
	}
	if leader.PID == 0 || leader.StartTicks == 0 {
		t.Errorf("OnStart got %+v, want a pid and a creation time", leader)
	}
	requireGone(t, append(pids, leader.PID))
}

// TestLeaderExitKillsRest: the leader's child exits at once, leaving the
// grandchild; when the leader exits, the rest of the job is killed too.
func TestLeaderExitKillsRest(t *testing.T) {
	dir := wintest.TempDir(t)
	spec, pidFile := treeSpec(t, dir, "spawn-exit")
	res := runWin(t, spec)
	if !res.Exited || res.ExitCode != 0 {
		t.Fatalf("Exited=%v ExitCode=%d StartErr=%v stderr=%q", res.Exited, res.ExitCode, res.StartErr, res.Stderr)
	}
	done := make(chan struct{})
	close(done)
	requireGone(t, readPids(t, pidFile, done))
}

// TestChildrenAreInTheJob: the leader is created suspended and resumed only
// once it is in the job, so what it starts at once is in the job too.
func TestChildrenAreInTheJob(t *testing.T) {
	dir := wintest.TempDir(t)
	spec, pidFile := treeSpec(t, dir, "child")
	cmd, tree := startForTest(t, spec)
	jt := tree.(*jobTree)
	defer func() {
		jt.kill()
		_ = cmd.Process.Kill() // in case it is not in the job: the test must not hang
		_ = tree.wait(cmd)
		tree.release()
	}()
	stopped := make(chan struct{})
	pids := readPids(t, pidFile, stopped)
	in := jobPids(t, jt.job)
	for _, pid := range append(pids, jt.pid) {
		if !in[pid] {
			t.Errorf("process %d is not in the job (job has %v)", pid, in)
		}
	}
}

// startForTest starts spec with startTree, as Run does, without waiting.
func startForTest(t *testing.T, spec Spec) (*exec.Cmd, osTree) {
	t.Helper()
	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Env = mergeEnv(os.Environ(), spec.Env)
	tree, err := startTree(cmd, spec)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, tree
}

// jobPids lists the processes in a job.
func jobPids(t *testing.T, job windows.Handle) map[int]bool {
	t.Helper()
	var buf struct {
		Assigned, InList uint32
		IDs              [64]uintptr
	}
	if err := windows.QueryInformationJobObject(job, windows.JobObjectBasicProcessIdList,
		uintptr(unsafe.Pointer(&buf)), uint32(unsafe.Sizeof(buf)), nil); err != nil {
		t.Fatalf("query job: %v", err)
	}
	out := map[int]bool{}
	for _, id := range buf.IDs[:min(buf.InList, uint32(len(buf.IDs)))] {
		out[int(id)] = true
	}
	return out
}

func TestKillOrphanWindows(t *testing.T) {
	if _, err := KillOrphan(Proc{PID: os.Getpid(), StartTicks: 1}); err == nil {
		t.Fatal("KillOrphan of the agent itself: no error")
	}
	if killed, err := KillOrphan(Proc{PID: 0}); err == nil || killed {
		t.Fatalf("KillOrphan(pid 0) = %v, %v; want an error", killed, err)
	}
	// A pid that was reused (creation time differs) is left alone.
	if killed, err := KillOrphan(Proc{PID: os.Getpid() + 4, StartTicks: 12345}); err != nil && !errors.Is(err, windows.ERROR_ACCESS_DENIED) || killed {
		t.Fatalf("KillOrphan with a wrong start time = %v, %v; want nothing killed", killed, err)
	}
}

// Both ways of resuming a process created suspended work: NtResumeProcess
// and, its fallback, ResumeThread on the threads of a snapshot.
func TestResumeSuspended(t *testing.T) {
	for name, resume := range map[string]func(h windows.Handle, pid uint32) error{
		"NtResumeProcess": resumeProcess,
		"threads":         func(_ windows.Handle, pid uint32) error { return resumeThreads(pid) },
	} {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command("cmd.exe")
			cmd.SysProcAttr = &syscall.SysProcAttr{CmdLine: "cmd.exe /d /c exit 5", CreationFlags: windows.CREATE_SUSPENDED}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			h, err := windows.OpenProcess(windows.SYNCHRONIZE|windows.PROCESS_SUSPEND_RESUME, false, uint32(cmd.Process.Pid))
			if err != nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatal(err)
			}
			defer windows.CloseHandle(h)
			if ev, _ := windows.WaitForSingleObject(h, 0); ev != uint32(windows.WAIT_TIMEOUT) {
				_ = cmd.Wait()
				t.Fatalf("a process created suspended has exited (wait %d)", ev)
			}
			if err := resume(h, uint32(cmd.Process.Pid)); err != nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatal(err)
			}
			if err := cmd.Wait(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 5 {
				t.Fatalf("after resume: %v, want exit status 5", err)
			}
		})
	}
}
