//go:build !linux

package sysinfo

import (
	"context"
	"fmt"

	"github.com/shirou/gopsutil/v4/mem"
)

// Memory implements Sampler and Describer.
func (s *System) Memory(ctx context.Context) (Memory, error) {
	ctx = s.ctx(ctx)
	vm, err := mem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return Memory{}, notImplemented(err)
	}
	m := Memory{Total: vm.Total, Available: vm.Available, Used: vm.Total - min(vm.Available, vm.Total)}
	sw, err := mem.SwapMemoryWithContext(ctx)
	if err != nil {
		return m, fmt.Errorf("swap: %w", notImplemented(err))
	}
	m.SwapTotal, m.SwapUsed = sw.Total, sw.Used
	return m, nil
}
