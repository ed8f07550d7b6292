package inventory

import (
	"context"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strings"
)

// isExecutable: by extension, as Windows decides what it can run.
func isExecutable(name string, _ fs.FileInfo) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".exe", ".bat", ".cmd", ".ps1":
		return true
	}
	return false
}

// runnable: Windows ACLs are not checked; the facts directory must be
// protected like the agent's data directory.
func runnable(_, _ fs.FileInfo) error { return nil }

// command runs .ps1 scripts with PowerShell for that invocation only
// (the machine's execution policy is not changed), anything else
// directly.
func command(ctx context.Context, path string) *exec.Cmd {
	if strings.EqualFold(filepath.Ext(path), ".ps1") {
		return exec.CommandContext(ctx, "powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-File", path)
	}
	return exec.CommandContext(ctx, path)
}
