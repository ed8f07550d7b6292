package sysinfo

import (
	"context"

	"github.com/shirou/gopsutil/v4/mem"
)

// Memory implements Sampler and Describer. On Linux /proc/meminfo has swap
// too, so one read serves both (SwapMemory would also read /proc/vmstat).
func (s *System) Memory(ctx context.Context) (Memory, error) {
	vm, err := mem.VirtualMemoryWithContext(s.ctx(ctx))
	if err != nil {
		return Memory{}, err
	}
	m := Memory{Total: vm.Total, Available: vm.Available, Used: vm.Used, SwapTotal: vm.SwapTotal}
	if vm.SwapTotal > vm.SwapFree {
		m.SwapUsed = vm.SwapTotal - vm.SwapFree
	}
	return m, nil
}
