package update

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// testDir is t.TempDir, except on Windows, where Wine 8 fails to remove a
// non-empty directory with os.RemoveAll: there it is removed depth first.
func testDir(t *testing.T) string {
	t.Helper()
	if runtime.GOOS != "windows" {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp("", "mqagent-update-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeTree(dir) })
	return dir
}

func removeTree(p string) {
	if entries, err := os.ReadDir(p); err == nil {
		for _, e := range entries {
			removeTree(filepath.Join(p, e.Name()))
		}
	}
	_ = os.Remove(p)
}
