package sysinfo

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// selfState: nothing to keep on Linux.
type selfState struct{}

// pageSize converts /proc/self/statm's pages to bytes.
var pageSize = uint64(os.Getpagesize())

// Self implements Sampler with one small read and one system call:
// resident pages from /proc/self/statm (always the agent's own /proc, not
// a configured host root) and CPU time from getrusage. gopsutil's process
// package would parse /proc/self/stat and more, and its code would stay
// resident in an agent that wants to stay small.
func (s *System) Self(context.Context) (Process, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return Process{}, err
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return Process{}, fmt.Errorf("/proc/self/statm: unexpected %q", b)
	}
	pages, err := strconv.ParseUint(string(f[1]), 10, 64)
	if err != nil {
		return Process{}, fmt.Errorf("/proc/self/statm: %w", err)
	}
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return Process{}, fmt.Errorf("getrusage: %w", err)
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return Process{RSS: pages * pageSize, CPU: cpu}, nil
}
