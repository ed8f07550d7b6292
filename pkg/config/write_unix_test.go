//go:build !windows

package config

import "testing"

// writeTempDir is t.TempDir (see write_windows_test.go for why the write
// tests have their own).
func writeTempDir(t *testing.T) string { return t.TempDir() }
