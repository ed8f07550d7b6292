// Package memtrim gives back the pages of the agent's own executable that
// the kernel mapped in but the agent no longer uses.
//
// On Linux a page fault on a file mapping maps the neighbouring pages too
// ("fault-around", 64 KiB), and start-up runs code that is never run again
// (package initialisation, configuration, the first inventory). Those pages
// count in the process's resident set (VmRSS) although they are clean
// copies of the executable in the page cache. Trim drops the process's
// mappings of them with madvise(MADV_DONTNEED) on the executable's
// read-only mappings; a page still in use is mapped again from the page
// cache on its next access (a minor fault, no disk read). Writable
// mappings, the heap and the stacks are never touched, so nothing the
// agent holds is lost. Elsewhere Trim does nothing.
//
// This is the Linux counterpart of trimming a Windows process's working
// set. The figures the agent reports (docs/telemetry.md) give both the
// resident set and its anonymous part, which trimming does not change.
package memtrim

import (
	"context"
	"log/slog"
	"time"
)

// Schedule is when Run trims: once After start-up, then Every.
type Schedule struct {
	After, Every time.Duration
}

// DefaultSchedule trims once the start-up work is done (the first
// inventory and metrics samples), then every minute: what the agent still
// uses comes back through a few hundred minor faults (well under a
// millisecond of CPU), what it does not stays out.
var DefaultSchedule = Schedule{After: 45 * time.Second, Every: time.Minute}

// Run trims on schedule until ctx ends.
func Run(ctx context.Context, s Schedule, log *slog.Logger) {
	t := time.NewTimer(s.After)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := Trim(); err != nil {
			log.Debug("working set not trimmed", "err", err)
		} else {
			log.Debug("working set trimmed", "mapped_bytes", n)
		}
		if s.Every <= 0 {
			return
		}
		t.Reset(s.Every)
	}
}
