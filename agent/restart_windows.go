//go:build windows

package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"

	"github.com/mqagent/mqagent/pkg/update"
)

// restartProcess starts a new agent process from exe with the same
// arguments and lets this one exit (Windows has no exec in place); the new
// process reports its pid in its online status.
func restartProcess(exe string) (update.Proc, error) {
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return update.Proc{}, fmt.Errorf("restart: %w", err)
	}
	p := update.ProcOf(cmd.Process.Pid)
	return p, cmd.Process.Release()
}

// startServiceAfterExit has a detached `EXE service start --after-pid PID`
// start the service again once this process (the service) has exited.
func startServiceAfterExit(exe string) error {
	_, err := update.StartDetached([]string{exe, "service", "start", "--after-pid", strconv.Itoa(os.Getpid())}, nil, nil)
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	return nil
}
