//go:build !unix

package e2e

import (
	"testing"

	"github.com/mqagent/mqagent/test/integration/harness"
)

// freeze needs SIGSTOP: the tests that use it are skipped here.
func freeze(t *testing.T, _ *harness.Agent) {
	t.Helper()
	t.Skip("freezing an agent needs SIGSTOP (Unix)")
}
