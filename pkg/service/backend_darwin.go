//go:build darwin

package service

func newBackend(spec Spec) (backend, error) {
	return newKardianos(spec, "/Library/LaunchDaemons/"+Name+".plist", LaunchdPlist)
}
