//go:build windows

package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/windows"
)

// Security descriptors of private files and directories: a protected DACL
// (nothing inherited from the parent) granting full control to
// LocalSystem (SY) and the Administrators group (BA) only; for a
// directory, inherited by the files and directories created in it.
const (
	privateFileSDDL = "D:P(A;;FA;;;SY)(A;;FA;;;BA)"
	privateDirSDDL  = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"
)

// restrictFile sets the private file DACL on path.
func restrictFile(path string) error { return setDACL(path, privateFileSDDL) }

// restrictDir sets the private directory DACL on dir.
func restrictDir(dir string) error { return setDACL(dir, privateDirSDDL) }

func setDACL(path, sddl string) error {
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return fmt.Errorf("security descriptor: %w", err)
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return fmt.Errorf("security descriptor: %w", err)
	}
	return windows.SetNamedSecurityInfo(path, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil)
}

// rename moves from to to, through to the disk; when to exists it is
// replaced if replace is set, else the error matches fs.ErrExist.
func rename(from, to string, replace bool) error {
	f, err := windows.UTF16PtrFromString(from)
	if err != nil {
		return err
	}
	t, err := windows.UTF16PtrFromString(to)
	if err != nil {
		return err
	}
	flags := uint32(windows.MOVEFILE_WRITE_THROUGH)
	if replace {
		flags |= windows.MOVEFILE_REPLACE_EXISTING
	}
	if err := windows.MoveFileEx(f, t, flags); err != nil {
		if errors.Is(err, windows.ERROR_ALREADY_EXISTS) || errors.Is(err, windows.ERROR_FILE_EXISTS) {
			return &os.LinkError{Op: "rename", Old: from, New: to, Err: fs.ErrExist}
		}
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}

// syncDir does nothing: MOVEFILE_WRITE_THROUGH already waits for the
// rename to reach the disk.
func syncDir(string) {}
