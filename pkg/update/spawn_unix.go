//go:build !windows

package update

import (
	"os"
	"os/exec"
	"syscall"
)

// StartDetached starts argv in a session of its own (it outlives the
// caller and its process group), with stdin on /dev/null and stdout and
// stderr as given (nil: /dev/null), and returns its identity.
func StartDetached(argv []string, stdout, stderr *os.File) (Proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if stderr != nil {
		cmd.Stderr = stderr
	}
	if err := cmd.Start(); err != nil {
		return Proc{}, err
	}
	p := ProcOf(cmd.Process.Pid)
	// Not waited for: the caller exits or re-executes soon, and whoever
	// inherits the child (the new agent's reaper, or init) reaps it.
	_ = cmd.Process.Release()
	return p, nil
}

// wrapSystemd runs argv through systemd-run when the agent is a systemd
// service (its unit's processes are killed when the unit stops).
func wrapSystemd(st State, argv []string) []string {
	if st.Service != "systemd" {
		return argv
	}
	run, err := exec.LookPath("systemd-run")
	if err != nil {
		return argv
	}
	unit := "mqagent-update-" + st.ID
	return append([]string{run, "--quiet", "--collect", "--unit", unit, "--"}, argv...)
}
