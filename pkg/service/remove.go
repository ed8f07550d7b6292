package service

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Removal is what agent.uninstall removes from the host (the service
// itself is removed with Manager.Uninstall, last).
type Removal struct {
	// Exe is the agent's executable; Leftovers other files of the
	// installation next to it (an update's previous or staged binary).
	Exe       string
	Leftovers []string
	// Purge also removes DataDir and LogFile with its rotated copies.
	Purge   bool
	DataDir string
	LogFile string
}

// Remove deletes the executable (on Windows, where a running executable
// cannot be deleted, it is deleted once this process has exited, or at
// the next reboot), the leftovers, and with Purge the data directory and
// the log files. It carries on after an error and returns them all. The
// caller must have closed the log file and the state first.
func Remove(r Removal) error {
	var errs []error
	for _, p := range r.Leftovers {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			deleteAfterExit(p)
		}
	}
	if r.Exe != "" {
		if err := removeExe(r.Exe); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", r.Exe, err))
		}
	}
	if !r.Purge {
		return errors.Join(errs...)
	}
	if r.LogFile != "" {
		for _, p := range logFiles(r.LogFile) {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove log %s: %w", p, err))
			}
		}
	}
	if r.DataDir != "" {
		if err := os.RemoveAll(r.DataDir); err != nil {
			errs = append(errs, fmt.Errorf("remove data directory %s: %w", r.DataDir, err))
		}
	}
	return errors.Join(errs...)
}

// logFiles is a log file and its rotated copies (lumberjack names them
// NAME-TIMESTAMP.EXT, optionally compressed).
func logFiles(path string) []string {
	files := []string{path}
	ext := filepath.Ext(path)
	prefix := strings.TrimSuffix(path, ext) + "-"
	matches, _ := filepath.Glob(globEscape(prefix) + "*" + globEscape(ext) + "*")
	for _, m := range matches {
		if rest := strings.TrimPrefix(m, prefix); len(rest) > 0 && rest[0] >= '0' && rest[0] <= '9' {
			files = append(files, m)
		}
	}
	return files
}

func globEscape(s string) string {
	return strings.NewReplacer(`[`, `[[]`, `*`, `[*]`, `?`, `[?]`).Replace(s)
}
