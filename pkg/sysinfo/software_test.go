package sysinfo

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParseDpkgStatus(t *testing.T) {
	f, err := os.Open("testdata/linux/var/lib/dpkg/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := parseDpkgStatus(f)
	if err != nil {
		t.Fatal(err)
	}
	want := []Package{{"bash", "5.2.15-2+b2"}, {"curl", "7.88.1-10+deb12u5"}, {"libc6", "2.36-9+deb12u4"}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v\nwant %v (removed and half-installed packages left out)", got, want)
	}
}

func TestParseDpkgStatusNoTrailingBlankLine(t *testing.T) {
	got, err := parseDpkgStatus(strings.NewReader("Package: a\nStatus: install ok installed\nVersion: 1"))
	if err != nil || !slices.Equal(got, []Package{{"a", "1"}}) {
		t.Fatalf("%v %v", got, err)
	}
}

func TestParseNameVersionLines(t *testing.T) {
	got, err := parseNameVersionLines(strings.NewReader("bash\t5.1.8-6.el9\n\nkernel\t5.14.0-362.el9\n  \t\ngpg-pubkey\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Package{{"bash", "5.1.8-6.el9"}, {"kernel", "5.14.0-362.el9"}, {"gpg-pubkey", ""}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
