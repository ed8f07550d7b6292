//go:build !windows

package sysinfo

import (
	"context"

	"github.com/shirou/gopsutil/v4/load"
)

// Load implements Sampler.
func (s *System) Load(ctx context.Context) (Load, error) {
	a, err := load.AvgWithContext(s.ctx(ctx))
	if err != nil {
		return Load{}, notImplemented(err)
	}
	return Load{L1: a.Load1, L5: a.Load5, L15: a.Load15}, nil
}
