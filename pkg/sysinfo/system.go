package sysinfo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/shirou/gopsutil/v4/common"
	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/host"
	psnet "github.com/shirou/gopsutil/v4/net"
)

// Options configure a System.
type Options struct {
	// Proc, Sys, Etc, Var, Run and Dev replace /proc, /sys, /etc, /var,
	// /run and /dev where the host's files are read (Linux): an agent in a
	// container watching its host, or tests reading a fixture tree. Empty
	// means gopsutil's default (the HOST_PROC, … environment variables, or
	// the real paths).
	Proc, Sys, Etc, Var, Run, Dev string
}

// System reads the real host through gopsutil. It implements Source and is
// safe for concurrent use.
type System struct {
	env  common.EnvMap // nil: gopsutil's defaults
	self selfState     // per OS
}

var _ Source = (*System)(nil)

// New returns a System.
func New(o Options) *System {
	s := &System{}
	for k, v := range map[common.EnvKeyType]string{
		common.HostProcEnvKey: o.Proc, common.HostSysEnvKey: o.Sys, common.HostEtcEnvKey: o.Etc,
		common.HostVarEnvKey: o.Var, common.HostRunEnvKey: o.Run, common.HostDevEnvKey: o.Dev,
	} {
		if v != "" {
			if s.env == nil {
				s.env = common.EnvMap{}
			}
			s.env[k] = v
		}
	}
	return s
}

// ctx gives gopsutil the configured roots.
func (s *System) ctx(ctx context.Context) context.Context {
	if s.env == nil {
		return ctx
	}
	return context.WithValue(ctx, common.EnvKey, s.env)
}

// hostPath is a host file under one of the roots: the option, else the
// environment variable gopsutil reads, else def.
func (s *System) hostPath(key common.EnvKeyType, def string, elem ...string) string {
	root := s.env[key]
	if root == "" {
		root = os.Getenv(string(key))
	}
	if root == "" {
		root = def
	}
	return filepath.Join(append([]string{root}, elem...)...)
}

// notImplemented maps gopsutil's "not implemented" error (its type is
// internal) to errors.ErrUnsupported.
func notImplemented(err error) error {
	if err != nil && strings.Contains(err.Error(), "not implemented yet") {
		return fmt.Errorf("%w: %v", errors.ErrUnsupported, err)
	}
	return err
}

// CPUTimes implements Sampler.
func (s *System) CPUTimes(ctx context.Context, perCPU bool) ([]CPUTimes, error) {
	ts, err := cpu.TimesWithContext(s.ctx(ctx), perCPU)
	if err != nil {
		return nil, notImplemented(err)
	}
	out := make([]CPUTimes, len(ts))
	for i, t := range ts {
		out[i] = CPUTimes{User: t.User, System: t.System, Idle: t.Idle, Nice: t.Nice,
			Iowait: t.Iowait, Irq: t.Irq, Softirq: t.Softirq, Steal: t.Steal}
	}
	if len(out) == 0 {
		return nil, errors.New("no cpu times")
	}
	return out, nil
}

// Partitions implements Sampler and Describer.
func (s *System) Partitions(ctx context.Context) ([]Partition, error) {
	ps, err := disk.PartitionsWithContext(s.ctx(ctx), true)
	if err != nil && len(ps) == 0 {
		return nil, notImplemented(err)
	}
	// Windows returns the drives it could read together with warnings
	// about the others: the drives are worth having.
	out := make([]Partition, len(ps))
	for i, p := range ps {
		out[i] = Partition{Device: p.Device, Mount: p.Mountpoint, FSType: p.Fstype, Opts: p.Opts}
	}
	return out, nil
}

// Usage implements Sampler and Describer.
func (s *System) Usage(ctx context.Context, mount string) (Usage, error) {
	u, err := disk.UsageWithContext(s.ctx(ctx), mount)
	if err != nil {
		return Usage{}, notImplemented(err)
	}
	return Usage{Total: u.Total, Used: u.Used, Free: u.Free, Percent: u.UsedPercent}, nil
}

// NetIO implements Sampler.
func (s *System) NetIO(ctx context.Context) ([]NetIO, error) {
	cs, err := psnet.IOCountersWithContext(s.ctx(ctx), true)
	if err != nil {
		return nil, notImplemented(err)
	}
	out := make([]NetIO, len(cs))
	for i, c := range cs {
		out[i] = NetIO{Name: c.Name, BytesSent: c.BytesSent, BytesRecv: c.BytesRecv,
			PacketsSent: c.PacketsSent, PacketsRecv: c.PacketsRecv,
			ErrIn: c.Errin, ErrOut: c.Errout, DropIn: c.Dropin, DropOut: c.Dropout}
	}
	return out, nil
}

// Uptime implements Sampler.
func (s *System) Uptime(ctx context.Context) (time.Duration, error) {
	sec, err := host.UptimeWithContext(s.ctx(ctx))
	if err != nil {
		return 0, notImplemented(err)
	}
	return time.Duration(sec) * time.Second, nil
}

// Interfaces implements Sampler and Describer with the standard library.
func (s *System) Interfaces(context.Context) ([]Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]Interface, 0, len(ifs))
	for _, ifi := range ifs {
		i := Interface{Name: ifi.Name, MAC: ifi.HardwareAddr.String(), MTU: ifi.MTU,
			Up: ifi.Flags&net.FlagUp != 0, Loopback: ifi.Flags&net.FlagLoopback != 0}
		if addrs, err := ifi.Addrs(); err == nil {
			for _, a := range addrs {
				i.Addrs = append(i.Addrs, a.String())
			}
		}
		out = append(out, i)
	}
	return out, nil
}

// Host implements Describer.
func (s *System) Host(ctx context.Context) (HostInfo, error) {
	ctx = s.ctx(ctx)
	var h HostInfo
	var errs []error
	var err error
	if h.Hostname, err = os.Hostname(); err != nil {
		errs = append(errs, fmt.Errorf("hostname: %w", err))
	}
	if h.Platform, h.PlatformFamily, h.PlatformVersion, err = host.PlatformInformationWithContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("platform: %w", notImplemented(err)))
	}
	if h.KernelVersion, err = host.KernelVersionWithContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("kernel version: %w", notImplemented(err)))
	}
	if h.KernelArch, err = host.KernelArch(); err != nil {
		errs = append(errs, fmt.Errorf("kernel arch: %w", notImplemented(err)))
	}
	boot, err := host.BootTimeWithContext(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("boot time: %w", notImplemented(err)))
	} else {
		h.BootTime = time.Unix(int64(boot), 0).UTC()
	}
	return h, errors.Join(errs...)
}

// CPUInfo implements Describer.
func (s *System) CPUInfo(ctx context.Context) (CPUInfo, error) {
	ctx = s.ctx(ctx)
	var c CPUInfo
	var errs []error
	infos, err := cpu.InfoWithContext(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("model: %w", notImplemented(err)))
	}
	for _, i := range infos {
		if m := strings.TrimSpace(i.ModelName); m != "" {
			c.Model = m
			break
		}
	}
	if c.Cores, err = cpu.CountsWithContext(ctx, false); err != nil {
		errs = append(errs, fmt.Errorf("cores: %w", notImplemented(err)))
	}
	if c.Threads, err = cpu.CountsWithContext(ctx, true); err != nil {
		errs = append(errs, fmt.Errorf("threads: %w", notImplemented(err)))
	}
	return c, errors.Join(errs...)
}

// DiskIO implements Sampler.
func (s *System) DiskIO(ctx context.Context) ([]DiskIO, error) {
	return s.diskIO(s.ctx(ctx))
}

// fromGopsutilDiskIO converts gopsutil's counters, sorted by name.
func fromGopsutilDiskIO(m map[string]disk.IOCountersStat) []DiskIO {
	out := make([]DiskIO, 0, len(m))
	for name, c := range m {
		if c.Name != "" {
			name = c.Name
		}
		out = append(out, DiskIO{Name: name, ReadBytes: c.ReadBytes, WriteBytes: c.WriteBytes,
			Reads: c.ReadCount, Writes: c.WriteCount, IOTimeMS: c.IoTime})
	}
	slices.SortFunc(out, func(a, b DiskIO) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (s *System) diskIO(ctx context.Context) ([]DiskIO, error) {
	m, err := disk.IOCountersWithContext(ctx)
	if err != nil {
		return nil, notImplemented(err)
	}
	return fromGopsutilDiskIO(m), nil
}
