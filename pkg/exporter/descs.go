package exporter

import "github.com/prometheus/client_golang/prometheus"

// Label names.
const (
	lHost   = "host"
	lMount  = "mount"
	lDevice = "device"
)

// descs are the descriptors of every metric, built once per Collector.
type descs struct {
	up, info, group, lastSeen, agentStart, cpus, bootTime    *prometheus.Desc
	sampleTime, sampleErrors                                 *prometheus.Desc
	cpuUsage, load1, load5, load15                           *prometheus.Desc
	memTotal, memUsed, memAvailable, swapTotal, swapUsed     *prometheus.Desc
	fsSize, fsUsed, fsUsage                                  *prometheus.Desc
	diskRead, diskWritten, diskReads, diskWrites, diskIOTime *prometheus.Desc
	netRxBytes, netTxBytes, netRxPackets, netTxPackets       *prometheus.Desc
	netRxErrors, netTxErrors, netRxDrop, netTxDrop           *prometheus.Desc
	uptime, procs                                            *prometheus.Desc
	agentRSS, agentCPU, agentGoroutines, agentRunning        *prometheus.Desc
	agentQueued, agentOutbox, agentReconnects                *prometheus.Desc
	fleetHosts, fleetMessages, fleetMalformed, fleetStale    *prometheus.Desc
	fleetLastMessage                                         *prometheus.Desc
	allDescs                                                 []*prometheus.Desc
}

func newDescs() descs {
	var d descs
	add := func(name, help string, labels ...string) *prometheus.Desc {
		x := prometheus.NewDesc(name, help, labels, nil)
		d.allDescs = append(d.allDescs, x)
		return x
	}
	host := func(name, help string, extra ...string) *prometheus.Desc {
		return add(name, help, append([]string{lHost}, extra...)...)
	}
	d.up = host("mqagent_host_up", "1 when the host's agent is online (its retained status), 0 when it is offline or its status is unknown.")
	d.info = host("mqagent_host_info", "Identity of the host: agent version, OS (GOOS), architecture, hostname and platform; always 1.",
		"version", "os", "arch", "hostname", "platform", "platform_version")
	d.group = host("mqagent_host_group", "Groups of the host, one series per group; always 1.", "group")
	d.lastSeen = host("mqagent_host_last_seen_timestamp_seconds", "When the host last published a status, inventory or metrics sample (its own clock), in seconds since the epoch.")
	d.agentStart = host("mqagent_agent_start_time_seconds", "When the running agent process started, in seconds since the epoch (online hosts only).")
	d.cpus = host("mqagent_host_cpus", "Logical CPUs of the host, from its inventory.")
	d.bootTime = host("mqagent_host_boot_time_seconds", "When the host booted, from its inventory, in seconds since the epoch.")
	d.sampleTime = host("mqagent_host_metrics_timestamp_seconds", "Time of the metrics sample the host_* values come from, in seconds since the epoch.")
	d.sampleErrors = host("mqagent_host_metrics_errors", "Parts of the last metrics sample that failed or were skipped.")
	d.cpuUsage = host("mqagent_host_cpu_usage_ratio", "Busy share of all CPUs since the previous sample (0-1).")
	d.load1 = host("mqagent_host_load1", "1-minute load average (where the OS has one).")
	d.load5 = host("mqagent_host_load5", "5-minute load average (where the OS has one).")
	d.load15 = host("mqagent_host_load15", "15-minute load average (where the OS has one).")
	d.memTotal = host("mqagent_host_memory_total_bytes", "Physical memory.")
	d.memUsed = host("mqagent_host_memory_used_bytes", "Physical memory in use (total minus available).")
	d.memAvailable = host("mqagent_host_memory_available_bytes", "Physical memory available for new work without swapping.")
	d.swapTotal = host("mqagent_host_swap_total_bytes", "Swap space (page file).")
	d.swapUsed = host("mqagent_host_swap_used_bytes", "Swap space in use.")
	d.fsSize = host("mqagent_host_filesystem_size_bytes", "Size of a mounted filesystem.", lMount)
	d.fsUsed = host("mqagent_host_filesystem_used_bytes", "Space used on a mounted filesystem.", lMount)
	d.fsUsage = host("mqagent_host_filesystem_usage_ratio", "Used share of a filesystem as df shows it: used over used plus the space available to unprivileged users (0-1).", lMount)
	d.diskRead = host("mqagent_host_disk_read_bytes_total", "Bytes read from a disk since boot.", lDevice)
	d.diskWritten = host("mqagent_host_disk_written_bytes_total", "Bytes written to a disk since boot.", lDevice)
	d.diskReads = host("mqagent_host_disk_reads_completed_total", "Reads completed by a disk since boot.", lDevice)
	d.diskWrites = host("mqagent_host_disk_writes_completed_total", "Writes completed by a disk since boot.", lDevice)
	d.diskIOTime = host("mqagent_host_disk_io_time_seconds_total", "Time a disk was busy since boot (where the OS reports it).", lDevice)
	d.netRxBytes = host("mqagent_host_network_receive_bytes_total", "Bytes received by a network interface.", lDevice)
	d.netTxBytes = host("mqagent_host_network_transmit_bytes_total", "Bytes sent by a network interface.", lDevice)
	d.netRxPackets = host("mqagent_host_network_receive_packets_total", "Packets received by a network interface.", lDevice)
	d.netTxPackets = host("mqagent_host_network_transmit_packets_total", "Packets sent by a network interface.", lDevice)
	d.netRxErrors = host("mqagent_host_network_receive_errors_total", "Receive errors of a network interface.", lDevice)
	d.netTxErrors = host("mqagent_host_network_transmit_errors_total", "Transmit errors of a network interface.", lDevice)
	d.netRxDrop = host("mqagent_host_network_receive_drop_total", "Received packets dropped by a network interface.", lDevice)
	d.netTxDrop = host("mqagent_host_network_transmit_drop_total", "Outgoing packets dropped by a network interface.", lDevice)
	d.uptime = host("mqagent_host_uptime_seconds", "Uptime of the host.")
	d.procs = host("mqagent_host_processes", "Processes on the host.")
	d.agentRSS = host("mqagent_agent_resident_memory_bytes", "Resident memory of the agent process.")
	d.agentCPU = host("mqagent_agent_cpu_usage_ratio", "CPU used by the agent process since the previous sample, as a share of one core (0-1 per core).")
	d.agentGoroutines = host("mqagent_agent_goroutines", "Goroutines of the agent process.")
	d.agentRunning = host("mqagent_agent_commands_running", "Commands the agent is running.")
	d.agentQueued = host("mqagent_agent_commands_queued", "Commands waiting in the agent's queue.")
	d.agentOutbox = host("mqagent_agent_outbox_messages", "Messages waiting in the agent's outbox to be published.")
	d.agentReconnects = host("mqagent_agent_reconnects_total", "Broker connections the agent lost since it started.")
	d.fleetHosts = add("mqagent_fleet_hosts", "Hosts reported, by state: online, offline, unknown (known from inventory or metrics only).", "state")
	d.fleetMessages = add("mqagent_fleet_messages_total", "Telemetry messages (status, inventory, metrics) received.")
	d.fleetMalformed = add("mqagent_fleet_malformed_messages_total", "Telemetry messages that could not be read (bad JSON, wrong version, host not matching the topic).")
	d.fleetStale = add("mqagent_fleet_stale_statuses_total", "Statuses ignored because an earlier session's (a late last will).")
	d.fleetLastMessage = add("mqagent_fleet_last_message_timestamp_seconds", "When the last telemetry message was received, in seconds since the epoch.")
	return d
}

func (d *descs) all() []*prometheus.Desc { return d.allDescs }
