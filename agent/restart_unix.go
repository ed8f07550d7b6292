//go:build !windows

package main

import (
	"fmt"
	"os"
	"syscall"
)

// restartSelf re-executes the agent in place (same pid, same arguments):
// everything it held (state file, log, sockets) was closed before.
func restartSelf() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	if err := syscall.Exec(exe, os.Args, os.Environ()); err != nil {
		return fmt.Errorf("restart: exec %s: %w", exe, err)
	}
	return nil // not reached
}
