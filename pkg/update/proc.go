package update

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/shirou/gopsutil/v4/process"
)

// SelfProc identifies the calling process.
func SelfProc() Proc { return ProcOf(os.Getpid()) }

// ProcOf identifies the process pid (Created is 0 when its start time
// cannot be read).
func ProcOf(pid int) Proc {
	p := Proc{PID: pid}
	if pr, err := process.NewProcess(int32(pid)); err == nil {
		if c, err := pr.CreateTime(); err == nil {
			p.Created = c
		}
	}
	return p
}

// Alive reports whether the process still exists (and is the same one:
// same start time; a zombie counts as gone).
func (p Proc) Alive() bool {
	if p.PID <= 0 {
		return false
	}
	pr, err := process.NewProcess(int32(p.PID))
	if err != nil {
		return false
	}
	if p.Created != 0 {
		if c, err := pr.CreateTime(); err != nil || c != p.Created {
			return false
		}
	}
	if st, err := pr.Status(); err == nil && slices.Contains(st, process.Zombie) {
		return false
	}
	return true
}

// WaitGone waits up to timeout for the process to end.
func (p Proc) WaitGone(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for p.Alive() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// errSelf refuses to terminate the calling process.
var errSelf = errors.New("refusing to terminate the calling process")

// Terminate stops the process: a graceful stop first (SIGTERM; Windows
// has none, so there it is killed at once), a kill after grace. It
// returns once the process is gone, or an error.
func (p Proc) Terminate(grace time.Duration) error {
	if p.PID == os.Getpid() {
		return errSelf
	}
	if !p.Alive() {
		return nil
	}
	if err := terminate(p.PID); err == nil && p.WaitGone(grace) {
		return nil
	}
	if err := kill(p.PID); err != nil && p.Alive() {
		return fmt.Errorf("kill pid %d: %w", p.PID, err)
	}
	if !p.WaitGone(10 * time.Second) {
		return fmt.Errorf("pid %d still running after a kill", p.PID)
	}
	return nil
}
