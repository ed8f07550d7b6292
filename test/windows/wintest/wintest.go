// Package wintest has helpers for tests that run on Windows, and under
// Wine on Linux (see docs/windows.md): a temporary directory that Wine can
// remove, and Wine detection. The helpers work on every OS.
package wintest

import (
	"os"
	"path/filepath"
	"testing"
)

// TempDir is t.TempDir for Windows tests: under Wine 8 with Go 1.26,
// os.RemoveAll of a non-empty directory fails ("Invalid function"), so
// t.TempDir's cleanup fails the test. TempDir creates the directory with
// os.MkdirTemp and removes it depth-first with os.Remove; a failure to
// remove is logged, not fatal.
func TempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mqagent-test-")
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	t.Cleanup(func() {
		if err := RemoveTree(dir); err != nil {
			t.Logf("remove temp dir: %v", err)
		}
	})
	return dir
}

// RemoveTree removes dir and everything in it, depth first, with
// os.Remove only (what works under Wine). A missing dir is not an error.
func RemoveTree(dir string) error {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if e.IsDir() {
			if err := RemoveTree(p); err != nil {
				return err
			}
			continue
		}
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// SkipUnderWine skips the test when it runs under Wine, with the reason.
func SkipUnderWine(t testing.TB, why string) {
	t.Helper()
	if v, ok := WineVersion(); ok {
		t.Skipf("under Wine %s: %s", v, why)
	}
}
