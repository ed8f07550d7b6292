//go:build windows

package config

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/windows"
)

// writeTempDir is t.TempDir without its cleanup, which fails under Wine
// (os.RemoveAll of a non-empty directory): the directory is removed depth
// first.
func writeTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mqagent-config-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeTree(t, dir) })
	return dir
}

func removeTree(t *testing.T, path string) {
	entries, _ := os.ReadDir(path)
	for _, e := range entries {
		removeTree(t, filepath.Join(path, e.Name()))
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		t.Errorf("cleanup: %v", err)
	}
}

// dacl returns the DACL of path in SDDL.
func dacl(t *testing.T, path string) string {
	t.Helper()
	sd, err := windows.GetNamedSecurityInfo(path, windows.SE_FILE_OBJECT, windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		t.Fatalf("GetNamedSecurityInfo(%s): %v", path, err)
	}
	return sd.String()
}

// underWine reports whether ntdll.dll has wine_get_version.
func underWine() bool {
	return windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}

// TestWritePrivateFileACL: the file gets a protected DACL granting SYSTEM
// and Administrators only, and a directory it creates the inheritable one.
func TestWritePrivateFileACL(t *testing.T) {
	if underWine() {
		// Wine accepts SetNamedSecurityInfo but keeps no file DACL: it
		// reports one made from the Unix mode. Only real Windows can tell.
		t.Skip("Wine does not store file ACLs: this test needs real Windows")
	}
	dir := filepath.Join(writeTempDir(t), "mqagent")
	// A file in a new subdirectory first (the TLS copies), then in the
	// directory that already exists by then: both directories are private.
	key := filepath.Join(dir, "tls", "key.pem")
	if err := WritePrivateFile(key, []byte("key"), WriteOptions{}); err != nil {
		t.Fatalf("WritePrivateFile: %v", err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := WritePrivateFile(path, []byte("x: 1\n"), WriteOptions{}); err != nil {
		t.Fatalf("WritePrivateFile: %v", err)
	}
	for _, f := range []string{key, path} {
		if got := dacl(t, f); got != privateFileSDDL {
			t.Errorf("%s: DACL = %s, want %s", f, got, privateFileSDDL)
		}
	}
	for _, d := range []string{dir, filepath.Dir(key)} {
		if got := dacl(t, d); got != privateDirSDDL {
			t.Errorf("%s: DACL = %s, want %s", d, got, privateDirSDDL)
		}
	}
	// Replacing keeps the restriction.
	if err := WritePrivateFile(path, []byte("x: 2\n"), WriteOptions{Overwrite: true}); err != nil {
		t.Fatalf("WritePrivateFile with Overwrite: %v", err)
	}
	if got := dacl(t, path); got != privateFileSDDL {
		t.Errorf("file DACL after replace = %s, want %s", got, privateFileSDDL)
	}
	if got, _ := os.ReadFile(path); string(got) != "x: 2\n" {
		t.Errorf("file = %q", got)
	}
}
