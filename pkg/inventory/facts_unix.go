//go:build !windows

package inventory

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"syscall"
)

// isExecutable: any execute bit.
func isExecutable(_ string, info fs.FileInfo) bool { return info.Mode()&0o111 != 0 }

// runnable refuses an executable, or a directory, that someone other than
// root or the agent's user owns or may write: it would run with the
// agent's privileges.
func runnable(dir, file fs.FileInfo) error {
	for _, fi := range []fs.FileInfo{dir, file} {
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return errors.New("cannot read its owner")
		}
		if st.Uid != 0 && int(st.Uid) != os.Getuid() {
			return errors.New(fi.Name() + " is owned by another user")
		}
		if fi.Mode().Perm()&0o022 != 0 {
			return errors.New(fi.Name() + " is writable by group or others")
		}
	}
	return nil
}

func command(ctx context.Context, path string) *exec.Cmd { return exec.CommandContext(ctx, path) }
