//go:build !linux

package sysinfo

import (
	"context"

	"github.com/shirou/gopsutil/v4/process"
)

// Procs implements Sampler.
func (s *System) Procs(ctx context.Context) (int, error) {
	pids, err := process.PidsWithContext(s.ctx(ctx))
	if err != nil {
		return 0, notImplemented(err)
	}
	return len(pids), nil
}
