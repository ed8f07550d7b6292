//go:build !windows

package runner

import "os"

// createPrivateDir creates a new directory under parent that only the
// agent's user can use (0700).
func createPrivateDir(parent string) (string, error) {
	return os.MkdirTemp(parent, "run-")
}
