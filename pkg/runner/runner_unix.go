//go:build unix

package runner

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
)

// pgTree is a command's process group. The group id is the leader's pid.
type pgTree struct {
	pid int

	mu     sync.Mutex
	exited bool // the leader exited; the group has been (or is being) killed by wait
}

// startTree starts cmd as the leader of a new process group.
func startTree(cmd *exec.Cmd, _ Spec) (osTree, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := startLeader(cmd); err != nil {
		return nil, err
	}
	return &pgTree{pid: cmd.Process.Pid}, nil
}

func (t *pgTree) proc() Proc {
	ticks, _ := startTicks(t.pid)
	return Proc{PID: t.pid, PGID: t.pid, StartTicks: ticks}
}

// wait kills the rest of the group once the leader exited. Where the OS lets
// us wait without reaping (Linux), the group is killed while the leader is
// still a zombie, so the group id cannot have been reused; elsewhere it is
// killed right after the reap (a negligible window: the id is only reused
// once the group is empty and a new process made itself leader of it).
func (t *pgTree) wait(cmd *exec.Cmd) error {
	if awaitExit(t.pid) {
		t.killRest()
		return cmd.Wait()
	}
	err := cmd.Wait()
	t.killRest()
	return err
}

func (t *pgTree) killRest() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.exited = true
	_ = syscall.Kill(-t.pid, syscall.SIGKILL) // ESRCH: nothing left
}

func (t *pgTree) kill() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.exited {
		return false
	}
	_ = syscall.Kill(-t.pid, syscall.SIGKILL)
	return true
}

func (t *pgTree) release() { releaseLeader(t.pid) }

// exitCode is the exit status, or 128+signal for a process killed by a signal.
func exitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// KillOrphan kills what is left of a process tree started by a previous agent
// process (crash recovery). It must never kill an unrelated process that reused the PID:
// on Linux, if a process with pid == p.PGID exists and its start ticks differ from p.StartTicks, do nothing;
// otherwise SIGKILL the group -p.PGID if any process is still in it. On other OSes, best effort with the same caution
// (do nothing when unsure). Returns whether something was killed.
//
// It refuses (with an error) a Proc without a process group, and the
// agent's own group.
func KillOrphan(p Proc) (bool, error) {
	switch {
	case p.PGID <= 1:
		return false, fmt.Errorf("kill orphan (pid %d, pgid %d): no usable process group id", p.PID, p.PGID)
	case p.PGID == syscall.Getpgrp() || p.PGID == os.Getpid():
		return false, fmt.Errorf("kill orphan (pid %d, pgid %d): refusing to kill the agent's own process group", p.PID, p.PGID)
	}
	return killOrphanGroup(p)
}

// killGroup sends SIGKILL to the group; ESRCH (already gone) is not an error.
func killGroup(pgid int) (bool, error) {
	err := syscall.Kill(-pgid, syscall.SIGKILL)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, syscall.ESRCH):
		return false, nil
	default:
		return false, fmt.Errorf("kill process group %d: %w", pgid, err)
	}
}
