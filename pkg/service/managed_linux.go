//go:build linux

package service

import (
	"fmt"
	"os"
	"syscall"
)

// Managed names the service manager that started this process ("" when
// it runs in the foreground). A systemd service is a child of pid 1 with
// INVOCATION_ID set; when JOURNAL_STREAM is set it must name this
// process's stderr (a process that inherited the variables, e.g. started
// by a command the agent ran and re-parented to pid 1, has another
// stderr).
func Managed() string {
	if os.Getppid() != 1 || os.Getenv("INVOCATION_ID") == "" {
		return ""
	}
	if js := os.Getenv("JOURNAL_STREAM"); js != "" {
		var st syscall.Stat_t
		if err := syscall.Fstat(2, &st); err != nil || js != fmt.Sprintf("%d:%d", st.Dev, st.Ino) {
			return ""
		}
	}
	return ManagerSystemd
}
