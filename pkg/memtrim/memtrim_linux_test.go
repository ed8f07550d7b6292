package memtrim

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestReadOnlyMappings(t *testing.T) {
	maps := []byte(`00400000-008ec000 r-xp 00000000 08:01 123 /opt/mq agent/mqagent
008ec000-00e02000 r--p 004ec000 08:01 123 /opt/mq agent/mqagent
00e02000-00e63000 rw-p 00a02000 08:01 123 /opt/mq agent/mqagent
00f00000-00f10000 r--s 00000000 08:01 123 /opt/mq agent/mqagent
7f00-7f10 r-xp 00000000 08:01 99 /usr/lib/libc.so.6
zz-yy r-xp 00000000 08:01 123 /opt/mq agent/mqagent
c000000000-c000400000 rw-p 00000000 00:00 0
`)
	got := readOnlyMappings(maps, "/opt/mq agent/mqagent")
	want := []mapping{{0x400000, 0x8ec000}, {0x8ec000, 0xe02000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("mappings = %x, want %x (writable, shared, other files and bad lines left out)", got, want)
	}
}

// Trimming the test binary's own code and data leaves it running, with a
// smaller file-backed resident set, and its code still works afterwards.
func TestTrimKeepsTheProcessWorking(t *testing.T) {
	before := rssFile(t)
	n, err := Trim()
	if err != nil || n == 0 {
		t.Fatalf("Trim() = %d, %v", n, err)
	}
	after := rssFile(t)
	if after >= before {
		t.Errorf("RssFile %d kB before, %d kB after trimming: want less", before, after)
	}
	// Code that ran before runs again (its pages come back).
	if s := strconv.Itoa(42) + strings.Repeat("x", 2); s != "42xx" {
		t.Fatal(s)
	}
}

func rssFile(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Skip("no RssFile in /proc/self/status")
	return 0
}
