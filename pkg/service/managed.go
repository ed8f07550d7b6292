package service

// Service manager kinds returned by Managed.
const (
	ManagerSystemd = "systemd"
	ManagerLaunchd = "launchd"
	ManagerWindows = "windows"
)
