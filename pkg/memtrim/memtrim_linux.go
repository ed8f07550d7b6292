package memtrim

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Trim drops the process's mappings of the pages of its executable's
// read-only mappings and returns how many bytes of mappings it covered.
func Trim() (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("memtrim: %w", err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("memtrim: %w", err)
	}
	total := 0
	for _, m := range readOnlyMappings(maps, exe) {
		// The raw call: the range is not Go memory, so it is passed as
		// numbers rather than as a slice made from a uintptr.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); errno != 0 {
			return total, fmt.Errorf("memtrim: madvise %#x-%#x: %w", m.start, m.end, errno)
		}
		total += int(m.end - m.start)
	}
	return total, nil
}

type mapping struct{ start, end uintptr }

// readOnlyMappings returns the mappings of file path in a /proc/PID/maps
// listing that are neither writable nor shared: the executable's code and
// read-only data.
func readOnlyMappings(maps []byte, path string) []mapping {
	var out []mapping
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// address perms offset dev inode pathname
		f := bytes.Fields(sc.Bytes())
		if len(f) < 6 || string(bytes.Join(f[5:], []byte(" "))) != path {
			continue
		}
		perms := f[1]
		if len(perms) != 4 || perms[0] != 'r' || perms[1] != '-' || perms[3] != 'p' {
			continue
		}
		lo, hi, ok := bytes.Cut(f[0], []byte("-"))
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(string(lo), 16, 64)
		end, err2 := strconv.ParseUint(string(hi), 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		out = append(out, mapping{uintptr(start), uintptr(end)})
	}
	return out
}
