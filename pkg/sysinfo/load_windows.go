package sysinfo

import (
	"context"
	"errors"
)

// Load implements Sampler. Windows has no load average (gopsutil emulates
// one from the processor queue length, which is not the same measure), so
// it is left out rather than faked.
func (s *System) Load(context.Context) (Load, error) {
	return Load{}, errors.ErrUnsupported
}
