//go:build !linux

package sysinfo

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v4/process"
)

// selfState is the agent's process handle, made on first use.
type selfState struct {
	once sync.Once
	p    *process.Process
	err  error
}

// Self implements Sampler.
func (s *System) Self(ctx context.Context) (Process, error) {
	ctx = s.ctx(ctx)
	s.self.once.Do(func() {
		s.self.p, s.self.err = process.NewProcessWithContext(ctx, int32(os.Getpid()))
	})
	if s.self.err != nil {
		return Process{}, notImplemented(s.self.err)
	}
	mi, err := s.self.p.MemoryInfoWithContext(ctx)
	if err != nil {
		return Process{}, notImplemented(err)
	}
	t, err := s.self.p.TimesWithContext(ctx)
	if err != nil {
		return Process{}, notImplemented(err)
	}
	return Process{RSS: mi.RSS, CPU: time.Duration((t.User + t.System) * float64(time.Second))}, nil
}
