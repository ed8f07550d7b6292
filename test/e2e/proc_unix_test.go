//go:build unix

package e2e

import (
	"os"
	osexec "os/exec"
	"syscall"
)

// asNobody makes cmd run as the unprivileged user nobody when the tests run
// as root.
func asNobody(cmd *osexec.Cmd) {
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
}

// processAlive reports an error when no process has pid.
func processAlive(pid int) error { return syscall.Kill(pid, 0) }
