//go:build !windows

package service

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRemove(t *testing.T) {
	for _, purge := range []bool{false, true} {
		root := t.TempDir()
		p := func(rel string) string { return filepath.Join(root, rel) }
		files := []string{"bin/mqagent", "bin/mqagent.old", "data/state.db", "data/sub/x", "log/agent.log",
			"log/agent-2026-01-02T03-04-05.000.log", "log/agent-2026-01-03T03-04-05.000.log.gz", "log/agent-notes.log", "log/other.log"}
		for _, f := range files {
			if err := os.MkdirAll(filepath.Dir(p(f)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p(f), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		err := Remove(Removal{Exe: p("bin/mqagent"), Leftovers: []string{p("bin/mqagent.old"), p("bin/mqagent.new")},
			Purge: purge, DataDir: p("data"), LogFile: p("log/agent.log")})
		if err != nil {
			t.Fatalf("purge %v: %v", purge, err)
		}
		gone := map[string]bool{"bin/mqagent": true, "bin/mqagent.old": true}
		if purge {
			for _, f := range []string{"data/state.db", "data/sub/x", "log/agent.log", "log/agent-2026-01-02T03-04-05.000.log", "log/agent-2026-01-03T03-04-05.000.log.gz"} {
				gone[f] = true
			}
		}
		for _, f := range files {
			if _, err := os.Stat(p(f)); (err == nil) == gone[f] {
				t.Errorf("purge %v: %s exists %v, want %v", purge, f, err == nil, !gone[f])
			}
		}
	}
}
