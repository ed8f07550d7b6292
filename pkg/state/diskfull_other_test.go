//go:build !linux

package state

// runOSHelper runs helper modes that need a particular OS; there are none
// here.
func runOSHelper(mode, path string, say func(string, ...any)) (bool, error) {
	return false, nil
}
