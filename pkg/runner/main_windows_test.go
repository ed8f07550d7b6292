package runner

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// helperEnv makes the test binary act as a process of a test tree (see
// runHelper); pidFileEnv names the file it writes pids to.
const (
	helperEnv  = "RUNNER_TEST_HELPER"
	pidFileEnv = "RUNNER_TEST_PIDFILE"
)

// TestMain runs the helper modes, or the tests with a goroutine leak check.
func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// runHelper is one process of a test tree:
//   - "child": starts a grandchild, writes "childpid grandchildpid" to the
//     pid file and waits (to be killed);
//   - "spawn-exit": the same, but exits at once after writing;
//   - "grandchild": waits (to be killed).
//
// Waiting is bounded (5 min) so a leak cannot live forever.
func runHelper(mode string) int {
	switch mode {
	case "grandchild":
		time.Sleep(5 * time.Minute)
		return 0
	case "child", "spawn-exit":
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		gc := exec.Command(exe)
		gc.Env = append(os.Environ(), helperEnv+"=grandchild")
		if err := gc.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		file := os.Getenv(pidFileEnv)
		if err := os.WriteFile(file+".tmp", fmt.Appendf(nil, "%d %d", os.Getpid(), gc.Process.Pid), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if err := os.Rename(file+".tmp", file); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if mode == "spawn-exit" {
			return 0
		}
		time.Sleep(5 * time.Minute)
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}
