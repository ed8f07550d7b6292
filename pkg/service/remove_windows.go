//go:build windows

package service

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/windows"
)

// removeExe deletes the executable. The running one cannot be deleted:
// it is scheduled for deletion at the next reboot (MoveFileEx
// MOVEFILE_DELAY_UNTIL_REBOOT), and a detached cmd.exe deletes it as soon
// as this process has exited.
func removeExe(exe string) error {
	err := os.Remove(exe)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	p, perr := windows.UTF16PtrFromString(exe)
	if perr != nil {
		return perr
	}
	reboot := windows.MoveFileEx(p, nil, windows.MOVEFILE_DELAY_UNTIL_REBOOT)
	later := deleteAfterExitErr(exe)
	if reboot != nil && later != nil {
		return fmt.Errorf("%w (delete at reboot: %v; delete after exit: %v)", err, reboot, later)
	}
	return nil
}

func deleteAfterExit(path string) { _ = deleteAfterExitErr(path) }

// deleteAfterExitErr starts a detached cmd.exe that retries deleting path
// for about 30 s.
func deleteAfterExitErr(path string) error {
	comspec := os.Getenv("ComSpec")
	if comspec == "" {
		comspec = filepath.Join(os.Getenv("SystemRoot"), "System32", "cmd.exe")
	}
	q := `"` + path + `"`
	script := `for /l %i in (1,1,30) do @(ping -n 2 127.0.0.1 >nul & del /f /q ` + q + ` >nul 2>&1 & if not exist ` + q + ` exit /b 0)`
	cmd := exec.Command(comspec)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		CmdLine:       `/d /q /c "` + script + `"`,
		HideWindow:    true,
		CreationFlags: windows.CREATE_NEW_PROCESS_GROUP | windows.DETACHED_PROCESS,
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}
