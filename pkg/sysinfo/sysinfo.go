// Package sysinfo reads the host's state — CPU times, memory, filesystems,
// disks, network, processes, platform, installed software — behind two
// small interfaces, Sampler (what a metrics sample needs) and Describer
// (what an inventory needs). System implements both with
// github.com/shirou/gopsutil/v4 and a few per-OS readers; Fixture
// implements both with fixed data for tests.
//
// Calls into the OS can hang (statfs on a dead NFS mount blocks forever,
// whatever the context says): run them through a Guard, which puts each
// call under a deadline and never starts a second call of an operation
// while the first is still stuck.
//
// A platform that lacks something (load average on Windows, a package
// database on macOS) returns an error matching errors.ErrUnsupported;
// callers leave that part out instead of faking it.
package sysinfo

import (
	"context"
	"time"
)

// Operation names, used as Guard operations, Fixture error keys and in the
// error entries of samples.
const (
	OpCPU        = "cpu"
	OpLoad       = "load"
	OpMemory     = "mem"
	OpPartitions = "partitions"
	OpDisk       = "disk" // one filesystem's usage: "disk /mnt/data"
	OpDiskIO     = "diskio"
	OpNet        = "net"
	OpUptime     = "uptime"
	OpProcs      = "procs"
	OpSelf       = "agent"
	OpHost       = "host"
	OpCPUInfo    = "cpuinfo"
	OpInterfaces = "interfaces"
	OpSoftware   = "software"
)

// Sampler reads what changes from one metrics sample to the next.
// Implementations must be safe for concurrent use.
type Sampler interface {
	// CPUTimes returns the cumulative CPU times of all CPUs together (one
	// element) or, with perCPU, of each logical CPU.
	CPUTimes(ctx context.Context, perCPU bool) ([]CPUTimes, error)
	// Load returns the load average; errors.ErrUnsupported where the OS
	// has none.
	Load(ctx context.Context) (Load, error)
	// Memory returns physical memory and swap.
	Memory(ctx context.Context) (Memory, error)
	// Partitions returns every mounted filesystem, pseudo ones included
	// (see RealDisks). It cannot hang: it does not touch the filesystems.
	Partitions(ctx context.Context) ([]Partition, error)
	// Usage returns the usage of the filesystem mounted at mount. It may
	// block forever on a dead network filesystem.
	Usage(ctx context.Context, mount string) (Usage, error)
	// DiskIO returns the cumulative I/O counters of every block device.
	DiskIO(ctx context.Context) ([]DiskIO, error)
	// NetIO returns the cumulative counters of every network interface.
	NetIO(ctx context.Context) ([]NetIO, error)
	// Uptime returns how long the host has been up.
	Uptime(ctx context.Context) (time.Duration, error)
	// Procs returns the number of processes on the host.
	Procs(ctx context.Context) (int, error)
	// Self returns the agent process's resident memory and CPU time.
	Self(ctx context.Context) (Process, error)
	// Interfaces returns the network interfaces with their addresses.
	Interfaces(ctx context.Context) ([]Interface, error)
}

// Describer reads what describes the host and rarely changes.
// Implementations must be safe for concurrent use.
type Describer interface {
	// Host returns the platform, kernel and boot time.
	Host(ctx context.Context) (HostInfo, error)
	// CPUInfo returns the processor model and counts.
	CPUInfo(ctx context.Context) (CPUInfo, error)
	Memory(ctx context.Context) (Memory, error)
	Partitions(ctx context.Context) ([]Partition, error)
	Usage(ctx context.Context, mount string) (Usage, error)
	Interfaces(ctx context.Context) ([]Interface, error)
	// Software returns the installed packages (dpkg or rpm on Linux, the
	// uninstall registry keys on Windows), in no particular order;
	// errors.ErrUnsupported where there is no package database.
	Software(ctx context.Context) ([]Package, error)
}

// Source is both a Sampler and a Describer.
type Source interface {
	Sampler
	Describer
}

// CPUTimes are cumulative CPU times in seconds.
type CPUTimes struct {
	User, System, Idle, Nice, Iowait, Irq, Softirq, Steal float64
}

// Total is the sum of all times (guest time is already part of user time).
func (t CPUTimes) Total() float64 {
	return t.User + t.System + t.Idle + t.Nice + t.Iowait + t.Irq + t.Softirq + t.Steal
}

// Busy is the time not spent idle or waiting for I/O.
func (t CPUTimes) Busy() float64 { return t.Total() - t.Idle - t.Iowait }

// Load is the 1, 5 and 15 minute load average.
type Load struct{ L1, L5, L15 float64 }

// Memory is physical memory and swap in bytes. Used is Total minus
// Available (what cannot be reclaimed without swapping).
type Memory struct {
	Total, Available, Used uint64
	SwapTotal, SwapUsed    uint64
}

// Partition is one mounted filesystem.
type Partition struct {
	Device string
	Mount  string
	FSType string
	Opts   []string
}

// Usage is a filesystem's size and use in bytes. Percent is Used over
// Used plus the space free for unprivileged users, as df shows it.
type Usage struct {
	Total, Used, Free uint64
	Percent           float64
}

// DiskIO holds a block device's cumulative counters.
type DiskIO struct {
	Name                    string
	ReadBytes, WriteBytes   uint64
	Reads, Writes, IOTimeMS uint64
}

// NetIO holds a network interface's cumulative counters.
type NetIO struct {
	Name                     string
	BytesSent, BytesRecv     uint64
	PacketsSent, PacketsRecv uint64
	ErrIn, ErrOut            uint64
	DropIn, DropOut          uint64
}

// Process is a process's resident memory and total (user + system) CPU
// time.
type Process struct {
	RSS uint64
	CPU time.Duration
}

// HostInfo describes the platform.
type HostInfo struct {
	Hostname        string
	Platform        string // "debian", "Microsoft Windows Server 2022 Standard", "darwin"
	PlatformFamily  string
	PlatformVersion string
	KernelVersion   string
	KernelArch      string // "x86_64", "aarch64"
	BootTime        time.Time
}

// CPUInfo describes the processors.
type CPUInfo struct {
	Model   string
	Cores   int // physical cores
	Threads int // logical CPUs
}

// Interface is a network interface. Addrs are in CIDR notation.
type Interface struct {
	Name     string
	MAC      string
	Addrs    []string
	MTU      int
	Up       bool
	Loopback bool
}

// Package is an installed software package.
type Package struct {
	Name, Version string
}
