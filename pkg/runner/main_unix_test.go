//go:build unix

package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// helperEnv makes the test binary act as a fake agent (see runHelper).
const helperEnv = "RUNNER_TEST_HELPER"

// TestMain runs every test with Init active, as in the agent: the reaper
// then runs alongside every Run, so each exit status checked by the tests
// also checks that the reaper never steals one. It also checks for leaked
// goroutines.
func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	stop, err := Init(logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, "runner init:", err)
		os.Exit(2)
	}
	code := m.Run()
	stop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// runHelper is a fake agent that starts a command tree and then hangs until
// it is killed (a crash). "orphan": the tree is `sh` with a background
// `sleep`; the Proc is printed as JSON on stdout and the sleep's pid written
// to $PIDFILE.
func runHelper(mode string) int {
	if mode != "orphan" {
		fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
		return 2
	}
	res := Run(context.Background(), Spec{
		Argv: []string{"sh", "-c", `sleep 300 & echo $! > "$PIDFILE.tmp" && mv "$PIDFILE.tmp" "$PIDFILE"; wait`},
		OnStart: func(p Proc) {
			_ = json.NewEncoder(os.Stdout).Encode(p)
		},
	})
	fmt.Fprintf(os.Stderr, "helper: command ended unexpectedly: %+v\n", res)
	return 1
}
