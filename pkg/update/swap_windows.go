//go:build windows

package update

import (
	"os"

	"golang.org/x/sys/windows"
)

// install renames the running executable aside (Windows lets a running
// image be renamed, not overwritten), then moves the staged one in.
func install(exe, staged, backup string) error {
	if err := os.Rename(exe, backup); err != nil {
		return err
	}
	if err := os.Rename(staged, exe); err != nil {
		_ = os.Rename(backup, exe)
		return err
	}
	return nil
}

// restore moves the failed binary aside (it may still be mapped by a
// process that is exiting), puts the backup back, and deletes the failed
// one now or at the next reboot.
func restore(exe, backup string) error {
	failed := Sibling(exe, "failed")
	_ = os.Remove(failed)
	if exists(exe) {
		if err := os.Rename(exe, failed); err != nil {
			return err
		}
	}
	if err := os.Rename(backup, exe); err != nil {
		return err
	}
	DeleteLater(failed)
	return nil
}

// DeleteLater deletes path now, or schedules its deletion at the next
// reboot when it is in use (MoveFileEx MOVEFILE_DELAY_UNTIL_REBOOT, which
// needs administrator rights).
func DeleteLater(path string) {
	if err := os.Remove(path); err == nil || !exists(path) {
		return
	}
	if p, err := windows.UTF16PtrFromString(path); err == nil {
		_ = windows.MoveFileEx(p, nil, windows.MOVEFILE_DELAY_UNTIL_REBOOT)
	}
}
