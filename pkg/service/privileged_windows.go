//go:build windows

package service

import "golang.org/x/sys/windows"

// Privileged reports whether the process may install and control services
// (an elevated administrator, or LocalSystem).
func Privileged() bool { return windows.GetCurrentProcessToken().IsElevated() }
