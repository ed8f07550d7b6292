//go:build !windows

package config

import (
	"os"
)

// restrictFile makes path readable and writable by its owner only.
func restrictFile(path string) error { return os.Chmod(path, 0o600) }

// restrictDir makes dir accessible to its owner only.
func restrictDir(dir string) error { return os.Chmod(dir, 0o700) }

// rename moves from to to; when to exists it is replaced if replace is
// set, else the error matches fs.ErrExist (a hard link is created
// atomically or not at all).
func rename(from, to string, replace bool) error {
	if replace {
		return os.Rename(from, to)
	}
	if err := os.Link(from, to); err != nil {
		return err
	}
	return os.Remove(from)
}

// syncDir flushes a directory's entries (a rename) to disk; errors are
// ignored, as some file systems cannot sync a directory.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}
