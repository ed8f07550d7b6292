package runner

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/windows"
)

// createPrivateDir creates a new directory under parent with a protected
// DACL (no inherited entries) that grants full control, inherited by what
// is created inside, to the agent's user and to SYSTEM only. The directory
// is created with that DACL, so it is never accessible to anyone else.
func createPrivateDir(parent string) (string, error) {
	sa, err := privateSecurity()
	if err != nil {
		return "", err
	}
	for range 100 {
		var rnd [8]byte
		_, _ = rand.Read(rnd[:])
		dir := filepath.Join(parent, "run-"+hex.EncodeToString(rnd[:]))
		p, err := windows.UTF16PtrFromString(dir)
		if err != nil {
			return "", err
		}
		err = windows.CreateDirectory(p, sa)
		if errors.Is(err, windows.ERROR_ALREADY_EXISTS) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("mkdir %s: %w", dir, err)
		}
		return dir, nil
	}
	return "", errors.New("no free directory name")
}

// privateSDDL is the security descriptor of createPrivateDir for the SID
// of the agent's user: protected DACL, full access for SYSTEM and that
// user, inherited by files and directories inside.
func privateSDDL(user string) string {
	return "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;" + user + ")"
}

func privateSecurity() (*windows.SecurityAttributes, error) {
	tu, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return nil, fmt.Errorf("agent user: %w", err)
	}
	sd, err := windows.SecurityDescriptorFromString(privateSDDL(tu.User.Sid.String()))
	if err != nil {
		return nil, fmt.Errorf("security descriptor: %w", err)
	}
	sa := &windows.SecurityAttributes{SecurityDescriptor: sd}
	sa.Length = uint32(unsafe.Sizeof(*sa))
	return sa, nil
}
