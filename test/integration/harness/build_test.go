package harness

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

const versioned = "./test/integration/harness/testdata/versioned"

func TestBuildMain(t *testing.T) {
	tests := []struct {
		version string
		want    string
	}{
		{"", "none"},
		{"1.2.3-test", "1.2.3-test"},
		{"v0.0.0-20260101-dirty", "v0.0.0-20260101-dirty"},
	}
	paths := map[string]bool{}
	for _, tt := range tests {
		bin := BuildMain(t, versioned, tt.version)
		out, err := exec.Command(bin).Output()
		if err != nil {
			t.Fatalf("run %s: %v", bin, err)
		}
		if got := strings.TrimSpace(string(out)); got != tt.want {
			t.Errorf("version %q: binary prints %q, want %q", tt.version, got, tt.want)
		}
		if again := BuildMain(t, versioned, tt.version); again != bin {
			t.Errorf("version %q: second build at %s, want the cached %s", tt.version, again, bin)
		}
		paths[bin] = true
	}
	if len(paths) != len(tests) {
		t.Errorf("versions share binaries: %v", paths)
	}
}

func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root + "/go.mod"); err != nil {
		t.Errorf("ModuleRoot %s has no go.mod: %v", root, err)
	}
}

func TestEncodeULID(t *testing.T) {
	var ones [16]byte
	for i := range ones {
		ones[i] = 0xff
	}
	tests := []struct {
		name string
		in   [16]byte
		want string
	}{
		{"zero", [16]byte{}, "00000000000000000000000000"},
		{"max", ones, "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"},
		{"one", [16]byte{15: 1}, "00000000000000000000000001"},
		{"32", [16]byte{15: 32}, "00000000000000000000000010"},
		// The ULID spec's example timestamp 1469918176385 ms.
		{"time", [16]byte{0x01, 0x56, 0x3d, 0xf3, 0x64, 0x81}, "01ARYZ6S410000000000000000"},
	}
	for _, tt := range tests {
		if got := encodeULID(tt.in); got != tt.want {
			t.Errorf("%s: encodeULID = %s, want %s", tt.name, got, tt.want)
		}
	}
}
