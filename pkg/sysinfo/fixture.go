package sysinfo

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// FixtureData is what a Fixture returns. A nil Load or Software means the
// platform lacks it (errors.ErrUnsupported); an entry in Errors, keyed by
// operation (OpCPU, …, or "disk /mount" for one filesystem), makes that
// operation fail with it.
type FixtureData struct {
	CPU    CPUTimes   // all CPUs together
	PerCPU []CPUTimes // each logical CPU
	// CPUStep, when not zero, advances every logical CPU's times by it
	// (and CPU by their sum) before each CPUTimes call, as a running host
	// would: CPU percentages are then CPUStep's busy share.
	CPUStep    CPUTimes
	Load       *Load
	Memory     Memory
	Partitions []Partition
	Usage      map[string]Usage // by mount point
	DiskIO     []DiskIO
	NetIO      []NetIO
	Uptime     time.Duration
	Procs      int
	Self       Process
	Interfaces []Interface
	Host       HostInfo
	CPUInfo    CPUInfo
	Software   []Package
	Errors     map[string]error
}

// Fixture is a Source that returns fixed data, for tests of the packages
// that use a Source. It is safe for concurrent use; Update changes its
// data between samples.
type Fixture struct {
	mu    sync.Mutex
	d     FixtureData
	calls map[string]int
}

var _ Source = (*Fixture)(nil)

// NewFixture returns a Fixture serving d.
func NewFixture(d FixtureData) *Fixture {
	return &Fixture{d: d, calls: map[string]int{}}
}

// Update changes the fixture's data under its lock.
func (f *Fixture) Update(fn func(*FixtureData)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.d)
}

// Calls reports how many times operation op was called.
func (f *Fixture) Calls(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// begin counts a call of op and returns its configured error.
func (f *Fixture) begin(op string) error {
	f.calls[op]++
	return f.d.Errors[op]
}

// CPUTimes implements Sampler.
func (f *Fixture) CPUTimes(_ context.Context, perCPU bool) ([]CPUTimes, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(OpCPU); err != nil {
		return nil, err
	}
	if f.d.CPUStep != (CPUTimes{}) {
		for i := range f.d.PerCPU {
			f.d.PerCPU[i] = addTimes(f.d.PerCPU[i], f.d.CPUStep)
			f.d.CPU = addTimes(f.d.CPU, f.d.CPUStep)
		}
	}
	if perCPU {
		return slices.Clone(f.d.PerCPU), nil
	}
	return []CPUTimes{f.d.CPU}, nil
}

// Load implements Sampler.
func (f *Fixture) Load(context.Context) (Load, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(OpLoad); err != nil {
		return Load{}, err
	}
	if f.d.Load == nil {
		return Load{}, errors.ErrUnsupported
	}
	return *f.d.Load, nil
}

// Memory implements Sampler and Describer.
func (f *Fixture) Memory(context.Context) (Memory, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.d.Memory, f.begin(OpMemory)
}

// Partitions implements Sampler and Describer.
func (f *Fixture) Partitions(context.Context) ([]Partition, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(OpPartitions); err != nil {
		return nil, err
	}
	return slices.Clone(f.d.Partitions), nil
}

// Usage implements Sampler and Describer.
func (f *Fixture) Usage(_ context.Context, mount string) (Usage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	op := OpDisk + " " + mount
	if err := f.begin(op); err != nil {
		return Usage{}, err
	}
	u, ok := f.d.Usage[mount]
	if !ok {
		return Usage{}, fmt.Errorf("statfs %s: no such file or directory", mount)
	}
	return u, nil
}

// DiskIO implements Sampler.
func (f *Fixture) DiskIO(context.Context) ([]DiskIO, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(OpDiskIO); err != nil {
		return nil, err
	}
	return slices.Clone(f.d.DiskIO), nil
}

// NetIO implements Sampler.
func (f *Fixture) NetIO(context.Context) ([]NetIO, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(OpNet); err != nil {
		return nil, err
	}
	return slices.Clone(f.d.NetIO), nil
}

// Uptime implements Sampler.
func (f *Fixture) Uptime(context.Context) (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.d.Uptime, f.begin(OpUptime)
}

// Procs implements Sampler.
func (f *Fixture) Procs(context.Context) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.d.Procs, f.begin(OpProcs)
}

// Self implements Sampler.
func (f *Fixture) Self(context.Context) (Process, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.d.Self, f.begin(OpSelf)
}

// Interfaces implements Sampler and Describer.
func (f *Fixture) Interfaces(context.Context) ([]Interface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(OpInterfaces); err != nil {
		return nil, err
	}
	out := slices.Clone(f.d.Interfaces)
	for i := range out {
		out[i].Addrs = slices.Clone(out[i].Addrs)
	}
	return out, nil
}

// Host implements Describer.
func (f *Fixture) Host(context.Context) (HostInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.d.Host, f.begin(OpHost)
}

// CPUInfo implements Describer.
func (f *Fixture) CPUInfo(context.Context) (CPUInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.d.CPUInfo, f.begin(OpCPUInfo)
}

// Software implements Describer.
func (f *Fixture) Software(context.Context) ([]Package, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(OpSoftware); err != nil {
		return nil, err
	}
	if f.d.Software == nil {
		return nil, errNoPackageDB
	}
	return slices.Clone(f.d.Software), nil
}

// TypicalHost is the data of a typical Linux server: 4 threads on 2
// cores, 8 GiB of memory and 2 GiB of swap, an ext4 root, an xfs data
// disk, an NFS share, the usual pseudo filesystems, a bind-mounted file,
// a loopback and an Ethernet interface, and a few packages. Each call
// returns a fresh copy.
func TypicalHost() FixtureData {
	const gib = 1 << 30
	perCPU := []CPUTimes{
		{User: 1000, System: 500, Idle: 8000, Iowait: 100, Irq: 10, Softirq: 20},
		{User: 1100, System: 400, Idle: 8100, Iowait: 50, Irq: 10, Softirq: 10},
		{User: 900, System: 450, Idle: 8200, Iowait: 60, Irq: 5, Softirq: 15},
		{User: 1200, System: 550, Idle: 7900, Iowait: 70, Irq: 5, Softirq: 5},
	}
	var total CPUTimes
	for _, c := range perCPU {
		total = addTimes(total, c)
	}
	return FixtureData{
		CPU:    total,
		PerCPU: perCPU,
		Load:   &Load{L1: 0.52, L5: 0.61, L15: 0.58},
		Memory: Memory{Total: 8 * gib, Available: 5 * gib, Used: 3 * gib, SwapTotal: 2 * gib, SwapUsed: 256 << 20},
		Partitions: []Partition{
			{Device: "proc", Mount: "/proc", FSType: "proc"},
			{Device: "sysfs", Mount: "/sys", FSType: "sysfs"},
			{Device: "udev", Mount: "/dev", FSType: "devtmpfs"},
			{Device: "devpts", Mount: "/dev/pts", FSType: "devpts"},
			{Device: "tmpfs", Mount: "/run", FSType: "tmpfs"},
			{Device: "/dev/sda1", Mount: "/", FSType: "ext4", Opts: []string{"rw", "relatime"}},
			{Device: "cgroup2", Mount: "/sys/fs/cgroup", FSType: "cgroup2"},
			{Device: "tmpfs", Mount: "/dev/shm", FSType: "tmpfs"},
			{Device: "/dev/sdb1", Mount: "/data", FSType: "xfs"},
			{Device: "/dev/loop0", Mount: "/snap/core/17200", FSType: "squashfs"},
			{Device: "nas:/export/home", Mount: "/mnt/home", FSType: "nfs4"},
			{Device: "/dev/sda1", Mount: "/var/lib/docker/containers/abc/hosts", FSType: "ext4"},
			{Device: "overlay", Mount: "/var/lib/docker/overlay2/abc/merged", FSType: "overlay"},
		},
		Usage: map[string]Usage{
			"/":         {Total: 100 * gib, Used: 40 * gib, Free: 55 * gib, Percent: 42.105263157894735},
			"/data":     {Total: 500 * gib, Used: 125 * gib, Free: 375 * gib, Percent: 25},
			"/mnt/home": {Total: 1024 * gib, Used: 512 * gib, Free: 512 * gib, Percent: 50},
		},
		DiskIO: []DiskIO{
			{Name: "loop0", Reads: 120, ReadBytes: 1 << 20},
			{Name: "sda", ReadBytes: 9 * gib, WriteBytes: 21 * gib, Reads: 310000, Writes: 920000, IOTimeMS: 800000},
			{Name: "sda1", ReadBytes: 9 * gib, WriteBytes: 21 * gib, Reads: 309000, Writes: 919000, IOTimeMS: 799000},
			{Name: "sdb", ReadBytes: 2 * gib, WriteBytes: 1 * gib, Reads: 41000, Writes: 22000, IOTimeMS: 90000},
			{Name: "sdb1", ReadBytes: 2 * gib, WriteBytes: 1 * gib, Reads: 40900, Writes: 21900, IOTimeMS: 89000},
			{Name: "sr0"},
		},
		NetIO: []NetIO{
			{Name: "lo", BytesSent: 5 << 20, BytesRecv: 5 << 20, PacketsSent: 9000, PacketsRecv: 9000},
			{Name: "eth0", BytesSent: 3 * gib, BytesRecv: 12 * gib, PacketsSent: 4100000, PacketsRecv: 9800000, DropIn: 12},
		},
		Uptime: 36*time.Hour + 25*time.Minute,
		Procs:  187,
		Self:   Process{RSS: 9 << 20, CPU: 1500 * time.Millisecond},
		Interfaces: []Interface{
			{Name: "lo", Addrs: []string{"127.0.0.1/8", "::1/128"}, MTU: 65536, Up: true, Loopback: true},
			{Name: "eth0", MAC: "52:54:00:12:34:56", Addrs: []string{"192.0.2.10/24", "fe80::5054:ff:fe12:3456/64"}, MTU: 1500, Up: true},
		},
		Host: HostInfo{Hostname: "web-01", Platform: "debian", PlatformFamily: "debian", PlatformVersion: "12.5",
			KernelVersion: "6.1.0-18-amd64", KernelArch: "x86_64", BootTime: time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)},
		CPUInfo: CPUInfo{Model: "Intel(R) Xeon(R) Gold 6226R CPU @ 2.90GHz", Cores: 2, Threads: 4},
		Software: []Package{
			{Name: "openssl", Version: "3.0.11-1~deb12u2"},
			{Name: "bash", Version: "5.2.15-2+b2"},
			{Name: "libc6", Version: "2.36-9+deb12u4"},
			{Name: "curl", Version: "7.88.1-10+deb12u5"},
		},
		Errors: map[string]error{},
	}
}

// Clone returns a deep copy of d (lists and maps are not shared).
func (d FixtureData) Clone() FixtureData {
	c := d
	c.PerCPU = slices.Clone(d.PerCPU)
	if d.Load != nil {
		l := *d.Load
		c.Load = &l
	}
	c.Partitions = slices.Clone(d.Partitions)
	c.Usage = maps.Clone(d.Usage)
	c.DiskIO = slices.Clone(d.DiskIO)
	c.NetIO = slices.Clone(d.NetIO)
	c.Interfaces = slices.Clone(d.Interfaces)
	for i := range c.Interfaces {
		c.Interfaces[i].Addrs = slices.Clone(c.Interfaces[i].Addrs)
	}
	c.Software = slices.Clone(d.Software)
	c.Errors = maps.Clone(d.Errors)
	return c
}

// AddCPU advances the fixture's CPU times by busy and idle seconds per
// logical CPU (the total by their sum), as if that much time had passed.
func (d *FixtureData) AddCPU(busy, idle float64) {
	for i := range d.PerCPU {
		d.PerCPU[i].User += busy
		d.PerCPU[i].Idle += idle
	}
	n := float64(max(len(d.PerCPU), 1))
	d.CPU.User += busy * n
	d.CPU.Idle += idle * n
}

func addTimes(a, b CPUTimes) CPUTimes {
	return CPUTimes{User: a.User + b.User, System: a.System + b.System, Idle: a.Idle + b.Idle,
		Nice: a.Nice + b.Nice, Iowait: a.Iowait + b.Iowait, Irq: a.Irq + b.Irq,
		Softirq: a.Softirq + b.Softirq, Steal: a.Steal + b.Steal}
}
