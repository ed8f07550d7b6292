//go:build !unix

package e2e

import (
	"os"
	osexec "os/exec"
)

// asNobody does nothing here: the tests do not run as root.
func asNobody(*osexec.Cmd) {}

// processAlive reports an error when no process has pid.
func processAlive(pid int) error {
	p, err := os.FindProcess(pid)
	if err == nil {
		_ = p.Release()
	}
	return err
}
