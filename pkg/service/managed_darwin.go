//go:build darwin

package service

import "os"

// Managed names the service manager that started this process ("" when
// it runs in the foreground): launchd starts its jobs as children of pid 1
// with XPC_SERVICE_NAME set to the job's label.
func Managed() string {
	if os.Getppid() == 1 && os.Getenv("XPC_SERVICE_NAME") == Name {
		return ManagerLaunchd
	}
	return ""
}
