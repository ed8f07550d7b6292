//go:build unix && !linux

package runner

import (
	"errors"
	"log/slog"
	"os/exec"
	"syscall"
)

// Elsewhere than Linux there is no subreaper, no way to wait for a child
// without reaping it, and no cheap process start time: the package falls back
// to plain process-group handling and a cautious KillOrphan.

func startLeader(cmd *exec.Cmd) error { return cmd.Start() }

func releaseLeader(int) {}

// awaitExit cannot wait without reaping here.
func awaitExit(int) bool { return false }

// startTicks is unknown here.
func startTicks(int) (uint64, error) { return 0, errors.ErrUnsupported }

// killOrphanGroup cannot tell a reused pid from the original leader, so it
// does nothing while a process with pid == PGID exists. Without one, the
// group id cannot have been reused as long as the group has members (the
// kernel does not hand out an id in use as a group id), so the members are
// what is left of our tree.
func killOrphanGroup(p Proc) (bool, error) {
	if err := syscall.Kill(p.PGID, 0); err == nil || errors.Is(err, syscall.EPERM) {
		return false, nil // a leader (or a process that reused its pid) exists: unsure
	}
	if err := syscall.Kill(-p.PGID, 0); err != nil {
		return false, nil // no member left (ESRCH), or not ours to signal (EPERM)
	}
	return killGroup(p.PGID)
}

// Init is a no-op here: there is no child subreaper outside Linux.
func Init(*slog.Logger) (stop func(), err error) { return func() {}, nil }
