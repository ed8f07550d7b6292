//go:build windows

package main

import (
	"fmt"
	"os"
	"os/exec"
)

// restartSelf starts a new agent process with the same arguments and lets
// this one exit (Windows has no exec in place); the new process reports its
// pid in its online status.
func restartSelf() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	return cmd.Process.Release()
}
