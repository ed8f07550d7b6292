//go:build !windows

package wintest

// WineVersion reports the Wine version when the process runs under Wine;
// never outside Windows builds.
func WineVersion() (string, bool) { return "", false }
