//go:build !windows

package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/mqagent/mqagent/pkg/update"
)

// restartProcess re-executes exe in place (same pid, same arguments):
// everything the agent held (state file, log, sockets) was closed before,
// and the rest is closed on exec. It returns only on error.
func restartProcess(exe string) (update.Proc, error) {
	if err := syscall.Exec(exe, os.Args, os.Environ()); err != nil {
		return update.Proc{}, fmt.Errorf("restart: exec %s: %w", exe, err)
	}
	return update.SelfProc(), nil // not reached
}

// startServiceAfterExit is for Windows services only.
func startServiceAfterExit(string) error {
	return errors.New("restart: a Unix service restarts in place")
}
