package runner

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// jobTree is a command's Job Object. The job is created with
// JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE and without breakaway, so every process
// the command starts is in it, and the kernel kills them all when the last
// handle to the job closes (release, or the agent dying).
//
// The process is created suspended, assigned to the job, and only then
// resumed: it cannot start a child before it is in the job.
type jobTree struct {
	pid     int
	job     windows.Handle
	process windows.Handle

	mu     sync.Mutex
	exited bool
}

// processAccess is what the tree needs on the leader's process handle.
const processAccess = windows.PROCESS_SET_QUOTA | windows.PROCESS_TERMINATE |
	windows.SYNCHRONIZE | windows.PROCESS_QUERY_LIMITED_INFORMATION | windows.PROCESS_SUSPEND_RESUME

var (
	ntdll               = windows.NewLazySystemDLL("ntdll.dll")
	procNtResumeProcess = ntdll.NewProc("NtResumeProcess")
)

// startTree starts cmd suspended in a new, hidden console of its own (so a
// chcp or a console control event never reaches the agent), assigns it to
// a new Job Object, then resumes it.
func startTree(cmd *exec.Cmd, spec Spec) (osTree, error) {
	attr := &syscall.SysProcAttr{
		HideWindow:    true,
		CreationFlags: windows.CREATE_NEW_CONSOLE | windows.CREATE_SUSPENDED,
		CmdLine:       spec.WindowsCmdLine,
	}
	if attr.CmdLine == "" {
		attr.CmdLine, _ = cmdExeCmdLine(cmd.Args)
	}
	cmd.SysProcAttr = attr

	job, err := newKillOnCloseJob()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		_ = windows.CloseHandle(job)
		return nil, err
	}
	pid := cmd.Process.Pid
	h, err := windows.OpenProcess(processAccess, false, uint32(pid))
	if err == nil {
		if err = windows.AssignProcessToJobObject(job, h); err != nil {
			err = fmt.Errorf("put %q in a job object: %w", cmd.Args[0], err)
		} else if err = resumeProcess(h, uint32(pid)); err != nil {
			err = fmt.Errorf("resume %q: %w", cmd.Args[0], err)
		}
		if err != nil {
			_ = windows.CloseHandle(h)
		}
	} else {
		err = fmt.Errorf("open process %q: %w", cmd.Args[0], err)
	}
	if err != nil {
		_ = cmd.Process.Kill() // it never ran: still suspended
		_ = cmd.Wait()
		_ = windows.CloseHandle(job)
		return nil, err
	}
	return &jobTree{pid: pid, job: job, process: h}, nil
}

// resumeProcess resumes a process created suspended: NtResumeProcess, or
// where that is missing or fails, ResumeThread on its threads (a process
// created suspended has just its main thread).
func resumeProcess(h windows.Handle, pid uint32) error {
	if procNtResumeProcess.Find() == nil {
		if status, _, _ := procNtResumeProcess.Call(uintptr(h)); status == 0 {
			return nil
		}
	}
	return resumeThreads(pid)
}

// resumeThreads resumes the threads of process pid found with a Toolhelp32
// snapshot.
func resumeThreads(pid uint32) error {
	snap, err := windows.CreateToolhelp32Snapshot(windows.TH32CS_SNAPTHREAD, 0)
	if err != nil {
		return fmt.Errorf("thread snapshot: %w", err)
	}
	defer windows.CloseHandle(snap)
	te := windows.ThreadEntry32{Size: uint32(unsafe.Sizeof(windows.ThreadEntry32{}))}
	resumed := 0
	for err = windows.Thread32First(snap, &te); err == nil; err = windows.Thread32Next(snap, &te) {
		if te.OwnerProcessID != pid {
			continue
		}
		th, err := windows.OpenThread(windows.THREAD_SUSPEND_RESUME, false, te.ThreadID)
		if err != nil {
			return fmt.Errorf("open thread %d: %w", te.ThreadID, err)
		}
		_, err = windows.ResumeThread(th)
		_ = windows.CloseHandle(th)
		if err != nil {
			return fmt.Errorf("resume thread %d: %w", te.ThreadID, err)
		}
		resumed++
	}
	if resumed == 0 {
		return errors.New("no thread found to resume")
	}
	return nil
}

func newKillOnCloseJob() (windows.Handle, error) {
	job, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return 0, fmt.Errorf("create job object: %w", err)
	}
	var info windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION
	info.BasicLimitInformation.LimitFlags = windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
	if _, err := windows.SetInformationJobObject(job, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info))); err != nil {
		_ = windows.CloseHandle(job)
		return 0, fmt.Errorf("configure job object: %w", err)
	}
	return job, nil
}

func (t *jobTree) proc() Proc {
	ticks, _ := creationTime(t.process)
	return Proc{PID: t.pid, StartTicks: ticks}
}

// wait waits on our own handle (which does not reap anything on Windows),
// terminates the rest of the job, then lets os/exec collect the status.
func (t *jobTree) wait(cmd *exec.Cmd) error {
	_, _ = windows.WaitForSingleObject(t.process, windows.INFINITE)
	t.mu.Lock()
	t.exited = true
	_ = windows.TerminateJobObject(t.job, 1)
	t.mu.Unlock()
	return cmd.Wait()
}

func (t *jobTree) kill() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.exited {
		return false
	}
	_ = windows.TerminateJobObject(t.job, 1)
	return true
}

func (t *jobTree) release() {
	_ = windows.CloseHandle(t.job)
	_ = windows.CloseHandle(t.process)
}

func exitCode(ps *os.ProcessState) int { return ps.ExitCode() }

// creationTime is the process creation time as a FILETIME number.
func creationTime(h windows.Handle) (uint64, error) {
	var created, exited, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(h, &created, &exited, &kernel, &user); err != nil {
		return 0, err
	}
	return uint64(created.HighDateTime)<<32 | uint64(created.LowDateTime), nil
}

// KillOrphan kills what is left of a process tree started by a previous agent
// process (crash recovery). It must never kill an unrelated process that reused the PID.
// Returns whether something was killed.
//
// On Windows the tree's Job Object dies with the agent (kill on job close),
// so normally nothing is left. KillOrphan terminates the leader only if it
// still runs with the recorded creation time (StartTicks); with StartTicks 0
// it does nothing.
func KillOrphan(p Proc) (bool, error) {
	if p.PID <= 0 {
		return false, fmt.Errorf("kill orphan (pid %d): invalid pid", p.PID)
	}
	if p.PID == os.Getpid() {
		return false, fmt.Errorf("kill orphan (pid %d): refusing to kill the agent", p.PID)
	}
	if p.StartTicks == 0 {
		return false, nil // unsure
	}
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION|windows.PROCESS_TERMINATE|windows.SYNCHRONIZE, false, uint32(p.PID))
	if errors.Is(err, windows.ERROR_INVALID_PARAMETER) {
		return false, nil // no such process
	}
	if err != nil {
		return false, fmt.Errorf("kill orphan (pid %d): %w", p.PID, err)
	}
	defer windows.CloseHandle(h)
	created, err := creationTime(h)
	if err != nil {
		return false, fmt.Errorf("kill orphan (pid %d): %w", p.PID, err)
	}
	if created != p.StartTicks {
		return false, nil // the pid was reused
	}
	if ev, err := windows.WaitForSingleObject(h, 0); err == nil && ev == windows.WAIT_OBJECT_0 {
		return false, nil // already exited
	}
	if err := windows.TerminateProcess(h, 1); err != nil {
		return false, fmt.Errorf("kill orphan (pid %d): %w", p.PID, err)
	}
	return true, nil
}

// Init is a no-op on Windows: Job Objects need no process-wide setup.
func Init(*slog.Logger) (stop func(), err error) { return func() {}, nil }
