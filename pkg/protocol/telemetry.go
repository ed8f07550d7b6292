package protocol

// This file holds the telemetry payloads: the metrics sample published on
// P/hosts/{host}/metrics and the retained inventory published on
// P/hosts/{host}/inventory. JSON names follow the "Metrics" and "Inventory"
// sections of docs/PROTOCOL.md; fields beyond the required ones are
// extensions and always optional. Byte counts are integers (bytes);
// percentages are 0–100 with two decimals.

// Metrics is one metrics sample. A part the host could not provide in time,
// or that its platform lacks (load on Windows), is left out rather than
// faked; Errors says what failed or was skipped.
type Metrics struct {
	V    int    `json:"v"`
	Host string `json:"host"`
	TS   Time   `json:"ts"`

	CPU   *CPUSample   `json:"cpu,omitempty"`
	Load  *LoadSample  `json:"load,omitempty"`
	Mem   *MemSample   `json:"mem,omitempty"`
	Swap  *SwapSample  `json:"swap,omitempty"`
	Disks []DiskSample `json:"disks,omitempty"`
	// DiskIO holds cumulative counters of whole disks (an extension).
	DiskIO []DiskIOSample `json:"diskio,omitempty"`
	Net    []NetSample    `json:"net,omitempty"`
	// UptimeMS is the host's uptime; 0 (left out) when unknown.
	UptimeMS int64 `json:"uptime_ms,omitempty"`
	// Procs is the number of processes on the host; 0 (left out) when
	// unknown.
	Procs int          `json:"procs,omitempty"`
	Agent *AgentHealth `json:"agent,omitempty"`
	// Errors lists the parts of the sample that failed or were skipped
	// ("disk /mnt/nfs: timed out after 2s"), an extension.
	Errors []string `json:"errors,omitempty"`
}

// CPUSample is the busy share of the CPUs since the previous sample.
type CPUSample struct {
	// Percent is the busy share of all CPUs together (0–100).
	Percent float64 `json:"percent"`
	// PerCPU is the busy share of each logical CPU (metrics.per_cpu).
	PerCPU []float64 `json:"per_cpu,omitempty"`
}

// LoadSample is the load average, where the OS has one.
type LoadSample struct {
	L1  float64 `json:"l1"`
	L5  float64 `json:"l5"`
	L15 float64 `json:"l15"`
}

// MemSample is physical memory. Used is Total minus Available.
type MemSample struct {
	Total     uint64  `json:"total"`
	Used      uint64  `json:"used"`
	Available uint64  `json:"available"`
	Percent   float64 `json:"percent"`
}

// SwapSample is swap space (or the page file).
type SwapSample struct {
	Total uint64 `json:"total"`
	Used  uint64 `json:"used"`
}

// DiskSample is the usage of one mounted filesystem. Percent is Used over
// the space available to unprivileged users plus Used, as df shows it.
type DiskSample struct {
	Mount   string  `json:"mount"`
	Total   uint64  `json:"total"`
	Used    uint64  `json:"used"`
	Percent float64 `json:"percent"`
}

// DiskIOSample holds the cumulative I/O counters of one disk since boot.
type DiskIOSample struct {
	Name       string `json:"name"`
	ReadBytes  uint64 `json:"read_bytes"`
	WriteBytes uint64 `json:"write_bytes"`
	Reads      uint64 `json:"reads"`
	Writes     uint64 `json:"writes"`
	// IOTimeMS is the time the disk was busy, where the OS reports it.
	IOTimeMS uint64 `json:"io_time_ms,omitempty"`
}

// NetSample holds the cumulative counters of one network interface.
type NetSample struct {
	Name        string `json:"name"`
	BytesSent   uint64 `json:"bytes_sent"`
	BytesRecv   uint64 `json:"bytes_recv"`
	PacketsSent uint64 `json:"packets_sent"`
	PacketsRecv uint64 `json:"packets_recv"`
	ErrIn       uint64 `json:"err_in,omitempty"`
	ErrOut      uint64 `json:"err_out,omitempty"`
	DropIn      uint64 `json:"drop_in,omitempty"`
	DropOut     uint64 `json:"drop_out,omitempty"`
}

// AgentHealth is the agent's own footprint and pipeline state.
type AgentHealth struct {
	RSSBytes uint64 `json:"rss_bytes"`
	// CPUPercent is percent of one core since the previous sample.
	CPUPercent float64 `json:"cpu_percent"`
	Goroutines int     `json:"goroutines"`
	Running    int     `json:"running"`
	Queued     int     `json:"queued"`
	// Outbox is the number of messages waiting to be published.
	Outbox int `json:"outbox,omitempty"`
	// Reconnects counts broker connections lost since the agent started.
	Reconnects uint64 `json:"reconnects,omitempty"`
}

// Inventory describes a host; it is published retained. Every required
// field is always present (an unknown string is ""), lists and facts are
// [] and {} rather than null.
type Inventory struct {
	V               int    `json:"v"`
	Host            string `json:"host"`
	TS              Time   `json:"ts"`
	Hostname        string `json:"hostname"`
	OS              string `json:"os"` // GOOS value, as in the command filter
	Platform        string `json:"platform"`
	PlatformFamily  string `json:"platform_family,omitempty"`
	PlatformVersion string `json:"platform_version"`
	KernelVersion   string `json:"kernel_version"`
	// Arch is the agent's GOARCH (as in the status); KernelArch is what
	// the kernel reports (x86_64, aarch64).
	Arch       string            `json:"arch"`
	KernelArch string            `json:"kernel_arch,omitempty"`
	BootTime   Time              `json:"boot_time"`
	CPU        InventoryCPU      `json:"cpu"`
	Mem        InventoryMem      `json:"mem"`
	Disks      []InventoryDisk   `json:"disks"`
	Interfaces []NetInterface    `json:"interfaces"`
	Agent      InventoryAgent    `json:"agent"`
	Groups     []string          `json:"groups"`
	Facts      map[string]string `json:"facts"`
	// Software is the installed software (an option), sorted by name;
	// SoftwareTruncated says the list was cut at its cap.
	Software          []SoftwarePackage `json:"software,omitempty"`
	SoftwareTruncated bool              `json:"software_truncated,omitempty"`
	// Errors lists the parts that could not be read (an extension).
	Errors []string `json:"errors,omitempty"`
}

// InventoryCPU describes the processors.
type InventoryCPU struct {
	Model string `json:"model"`
	// Cores is the number of physical cores, Threads of logical CPUs.
	Cores   int `json:"cores"`
	Threads int `json:"threads"`
}

// InventoryMem is the size of physical memory and swap.
type InventoryMem struct {
	Total     uint64 `json:"total"`
	SwapTotal uint64 `json:"swap_total,omitempty"`
}

// InventoryDisk is one mounted filesystem.
type InventoryDisk struct {
	Mount  string `json:"mount"`
	FSType string `json:"fstype"`
	Total  uint64 `json:"total"`
	Device string `json:"device,omitempty"`
}

// NetInterface is a network interface with its addresses (CIDR notation).
type NetInterface struct {
	Name  string   `json:"name"`
	MAC   string   `json:"mac"`
	Addrs []string `json:"addrs"`
	MTU   int      `json:"mtu,omitempty"`
	Up    bool     `json:"up,omitempty"`
}

// InventoryAgent describes the agent itself.
type InventoryAgent struct {
	Version string `json:"version"`
}

// SoftwarePackage is one installed software package.
type SoftwarePackage struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}
