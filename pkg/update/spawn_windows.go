//go:build windows

package update

import (
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/windows"
)

// StartDetached starts argv as a detached process in a new process group
// (out of the caller's job when the job allows it), with stdout and stderr
// as given (nil: none), and returns its identity.
func StartDetached(argv []string, stdout, stderr *os.File) (Proc, error) {
	start := func(flags uint32) (*exec.Cmd, error) {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{CreationFlags: flags, HideWindow: true}
		if stdout != nil {
			cmd.Stdout = stdout
		}
		if stderr != nil {
			cmd.Stderr = stderr
		}
		return cmd, cmd.Start()
	}
	base := uint32(windows.CREATE_NEW_PROCESS_GROUP | windows.DETACHED_PROCESS)
	cmd, err := start(base | windows.CREATE_BREAKAWAY_FROM_JOB)
	if err != nil {
		// A job that does not allow breakaway refuses the flag.
		if cmd, err = start(base); err != nil {
			return Proc{}, err
		}
	}
	p := ProcOf(cmd.Process.Pid)
	_ = cmd.Process.Release()
	return p, nil
}

func wrapSystemd(_ State, argv []string) []string { return argv }
