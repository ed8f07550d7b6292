//go:build !windows

package inventory

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

func errStrings(errs []error) []string {
	return sortedErrs(errs)
}

func TestLoadFactsDir(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "10-base.txt"), "env=dev\nrack=r1\nrole=web\n", 0o644)
	writeFile(t, filepath.Join(dir, "20-site.json"), `{"env":"staging","dc":"fra","cores":8}`, 0o644)
	writeFile(t, filepath.Join(dir, "30-probe.sh"), "#!/bin/sh\necho kernel_major=6\necho role=db\n", 0o755)
	writeFile(t, filepath.Join(dir, "35-json.sh"), "#!/bin/sh\nprintf '{\"gpu\":\"none\"}'\n", 0o700)
	writeFile(t, filepath.Join(dir, "40-bad.txt"), "this is not a fact\n", 0o644)
	writeFile(t, filepath.Join(dir, "50-fail.sh"), "#!/bin/sh\necho role=never\necho 'probe broke' >&2\nexit 3\n", 0o755)
	writeFile(t, filepath.Join(dir, ".hidden"), "hidden=yes\n", 0o644)
	writeFile(t, filepath.Join(dir, "10-base.txt~"), "backup=yes\n", 0o644)
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	facts, errs := LoadFactsDir(context.Background(), dir, 5*time.Second)
	want := map[string]string{
		"env": "staging", "rack": "r1", "dc": "fra", "cores": "8", // 20 overrides 10
		"role": "db", "kernel_major": "6", "gpu": "none", // executables, 30 overrides 10
	}
	if !maps.Equal(facts, want) {
		t.Errorf("facts = %v\nwant %v", facts, want)
	}
	got := errStrings(errs)
	if len(got) != 2 || !strings.HasPrefix(got[0], "facts 40-bad.txt: bad facts: line 1") ||
		!strings.HasPrefix(got[1], "facts 50-fail.sh: exit status 3: probe broke") {
		t.Errorf("errors = %q, want one for 40-bad.txt and one for 50-fail.sh", got)
	}
}

// An executable that never ends is killed at the timeout and reported;
// the sources after it are reported as not run, the ones before kept.
func TestLoadFactsDirTimeout(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "10-ok.txt"), "a=1\n", 0o644)
	writeFile(t, filepath.Join(dir, "20-hang.sh"), "#!/bin/sh\necho b=2\nexec sleep 30\n", 0o755)
	writeFile(t, filepath.Join(dir, "30-late.sh"), "#!/bin/sh\necho c=3\n", 0o755)
	writeFile(t, filepath.Join(dir, "40-file.txt"), "d=4\n", 0o644)
	start := time.Now()
	facts, errs := LoadFactsDir(context.Background(), dir, 300*time.Millisecond)
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("took %s with a 300ms timeout", el)
	}
	if !maps.Equal(facts, map[string]string{"a": "1", "d": "4"}) {
		t.Errorf("facts = %v", facts)
	}
	got := errStrings(errs)
	if len(got) != 2 || !strings.Contains(got[0], "20-hang.sh: killed") || !strings.Contains(got[1], "30-late.sh: not run") {
		t.Errorf("errors = %q", got)
	}
}

// An executable someone else could have written is not run.
func TestLoadFactsDirRefusesWritableExecutables(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "group.sh"), "#!/bin/sh\necho x=1\n", 0o775)
	writeFile(t, filepath.Join(dir, "world.sh"), "#!/bin/sh\necho y=1\n", 0o757)
	writeFile(t, filepath.Join(dir, "ok.sh"), "#!/bin/sh\necho z=1\n", 0o755)
	facts, errs := LoadFactsDir(context.Background(), dir, 5*time.Second)
	if !maps.Equal(facts, map[string]string{"z": "1"}) {
		t.Errorf("facts = %v", facts)
	}
	got := errStrings(errs)
	if len(got) != 2 || !strings.Contains(got[0], "group.sh: not run: group.sh is writable by group or others") {
		t.Errorf("errors = %q", got)
	}
	// A world-writable directory makes every executable in it suspect.
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	_, errs = LoadFactsDir(context.Background(), dir, 5*time.Second)
	if got := errStrings(errs); !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "facts ok.sh: not run") }) {
		t.Errorf("errors = %q, want ok.sh refused in a world-writable directory", got)
	}
}

func TestLoadFactsDirOversize(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "big.txt"), "k="+strings.Repeat("v", MaxFactsOutput), 0o644)
	writeFile(t, filepath.Join(dir, "loud.sh"), "#!/bin/sh\nhead -c 70000 /dev/zero | tr '\\0' 'x'\n", 0o755)
	facts, errs := LoadFactsDir(context.Background(), dir, 5*time.Second)
	got := errStrings(errs)
	if len(facts) != 0 || len(got) != 2 || !strings.Contains(got[0], "larger than") || !strings.Contains(got[1], "output larger than") {
		t.Fatalf("facts %v errors %q", facts, got)
	}
}
