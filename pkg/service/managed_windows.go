//go:build windows

package service

import kservice "github.com/kardianos/service"

// Managed names the service manager that started this process ("" when
// it runs in the foreground): "windows" when the Service Control Manager
// started it (kardianos' Interactive is false).
func Managed() string {
	if !kservice.Interactive() {
		return ManagerWindows
	}
	return ""
}
