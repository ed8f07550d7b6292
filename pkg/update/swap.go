package update

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// copyFile copies src to a new dst with mode, synced.
func copyFile(src, dst string, mode os.FileMode) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return err
	}
	if err := out.Chmod(mode); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	return out.Sync()
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Install puts the staged binary at exe and keeps the current one at
// backup. On failure exe is left as it was.
func Install(exe, staged, backup string) error {
	if !exists(staged) {
		return fmt.Errorf("swap: staged binary %s is missing", staged)
	}
	if err := removeIfExists(backup); err != nil {
		return fmt.Errorf("swap: remove an old backup: %w", err)
	}
	if err := install(exe, staged, backup); err != nil {
		return fmt.Errorf("swap: %w", err)
	}
	return nil
}

// Restore puts the backup back at exe. When there is no backup, exe is
// taken to be restored already.
func Restore(exe, backup string) error {
	if !exists(backup) {
		return nil
	}
	if err := restore(exe, backup); err != nil {
		return fmt.Errorf("restore %s: %w", exe, err)
	}
	return nil
}
