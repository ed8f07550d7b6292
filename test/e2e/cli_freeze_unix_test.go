//go:build unix

package e2e

import (
	"syscall"
	"testing"

	"github.com/mqagent/mqagent/test/integration/harness"
)

// freeze stops an agent with SIGSTOP: it stays connected (online) for the
// broker until its keepalive runs out, but answers nothing. The test's
// cleanup lets it go on.
func freeze(t *testing.T, a *harness.Agent) {
	t.Helper()
	pid := a.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %d: %v", pid, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
}
