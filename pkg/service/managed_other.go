//go:build !linux && !darwin && !windows

package service

// Managed names the service manager that started this process; on this
// platform the agent always runs in the foreground.
func Managed() string { return "" }
