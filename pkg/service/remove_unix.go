//go:build !windows

package service

import (
	"errors"
	"io/fs"
	"os"
)

// removeExe deletes the executable (a running one keeps its inode).
func removeExe(exe string) error {
	if err := os.Remove(exe); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func deleteAfterExit(string) {}
