package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// sbinDirs are where Debian and local installs put daemons (mosquitto,
// nats-server): not on a normal user's PATH.
var sbinDirs = []string{"/usr/sbin", "/usr/local/sbin", "/usr/local/bin"}

// findTool finds the command name: PATH first, then sbinDirs.
func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH nor in /usr/sbin", name)
}

// RequireTool returns the path of the command name (see findTool). When
// there is none it skips the test, or fails it when the environment
// variable CI is "true": CI must not silently skip a test because an
// install step is missing. hint says how to install it, if not obvious.
func RequireTool(t testing.TB, name, hint string) string {
	t.Helper()
	p, err := findTool(name)
	if err == nil {
		return p
	}
	if hint != "" {
		err = fmt.Errorf("%w (%s)", err, hint)
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: %v", err)
	}
	t.Skipf("skipping: %v", err)
	return ""
}
