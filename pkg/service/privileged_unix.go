//go:build !windows

package service

import "os"

// Privileged reports whether the process may install and control services
// (root).
func Privileged() bool { return os.Geteuid() == 0 }
