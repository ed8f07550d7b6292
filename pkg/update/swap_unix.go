//go:build !windows

package update

import (
	"os"
	"path/filepath"
)

// install keeps the current binary as a hard link (a copy where links are
// not possible), then renames the staged binary over exe: exe is never
// missing, and a running process keeps its own inode.
func install(exe, staged, backup string) error {
	if err := os.Link(exe, backup); err != nil {
		fi, serr := os.Stat(exe)
		if serr != nil {
			return serr
		}
		if err := copyFile(exe, backup, fi.Mode().Perm()); err != nil {
			return err
		}
	}
	if err := os.Rename(staged, exe); err != nil {
		os.Remove(backup)
		return err
	}
	syncDir(filepath.Dir(exe))
	return nil
}

func restore(exe, backup string) error {
	if err := os.Rename(backup, exe); err != nil {
		return err
	}
	syncDir(filepath.Dir(exe))
	return nil
}

// DeleteLater deletes path (Unix lets a file in use be deleted).
func DeleteLater(path string) { _ = os.Remove(path) }
