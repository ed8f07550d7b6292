// Package exporter exposes the live fleet view (pkg/fleet) as Prometheus
// metrics: one series per host for presence (mqagent_host_up), identity
// (mqagent_host_info) and the last metrics sample each agent published
// (CPU, memory, filesystems, disks, network, the agent's own footprint),
// plus fleet totals.
//
// Collector is a custom prometheus.Collector that reads a snapshot of the
// view at scrape time, so a host that is gone simply stops being reported:
// no gauge vector keeps series of hosts that left. Hosts the view knows are
// reported with up=0 while offline, until nothing was heard from them for
// Options.StaleAfter; the values of a metrics sample are reported only
// while the host is not offline and the sample is younger than
// Options.MetricsMaxAge (a stale value is worse than a gap in a graph).
// docs/dashboard.md lists every metric.
package exporter

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// Source is what the collector reads at scrape time. *fleet.View
// implements it.
type Source interface {
	// Snapshot returns every host known, sorted by id.
	Snapshot() []fleet.Host
	// Stats returns the view's counters.
	Stats() fleet.Stats
}

// Defaults of Options.
const (
	DefaultStaleAfter    = 24 * time.Hour
	DefaultMetricsMaxAge = 5 * time.Minute
)

// Options configure a Collector. The zero value uses the defaults.
type Options struct {
	// StaleAfter drops a host that is not online from the metrics once
	// nothing was heard from it (fleet.Host.LastSeen, else its status
	// time) for this long. 0 means DefaultStaleAfter; negative keeps
	// every host the view knows (offline ones with up=0) forever. Online
	// hosts are always reported.
	StaleAfter time.Duration
	// MetricsMaxAge is how long a host's last metrics sample is reported
	// (by its ts). 0 means DefaultMetricsMaxAge; negative reports the
	// last sample whatever its age, as long as the host is not offline.
	MetricsMaxAge time.Duration
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Collector is a prometheus.Collector reading a Source at scrape time.
// It is safe for concurrent scrapes.
type Collector struct {
	src Source
	o   Options
	d   descs
}

// New returns a Collector of src.
func New(src Source, o Options) *Collector {
	if o.StaleAfter == 0 {
		o.StaleAfter = DefaultStaleAfter
	}
	if o.MetricsMaxAge == 0 {
		o.MetricsMaxAge = DefaultMetricsMaxAge
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Collector{src: src, o: o, d: newDescs()}
}

// Describe sends the descriptor of every metric the collector may report.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.d.all() {
		ch <- d
	}
}

// Collect reads a snapshot of the source and sends its metrics. Values
// that cannot be turned into a metric are skipped, never a panic.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	now := c.o.Now()
	st := c.src.Stats()
	e := emitter{ch: ch}
	var online, offline, unknown float64
	for _, h := range c.src.Snapshot() {
		if !c.reported(h, now) {
			continue
		}
		switch {
		case h.Online:
			online++
		case h.State == protocol.StatusOffline:
			offline++
		default:
			unknown++
		}
		c.collectHost(&e, h, now)
	}
	d := &c.d
	e.gauge(d.fleetHosts, online, "online")
	e.gauge(d.fleetHosts, offline, "offline")
	e.gauge(d.fleetHosts, unknown, "unknown")
	e.counter(d.fleetMessages, float64(st.Messages))
	e.counter(d.fleetMalformed, float64(st.Malformed))
	e.counter(d.fleetStale, float64(st.Stale))
	if !st.LastApply.IsZero() {
		e.gauge(d.fleetLastMessage, unixSeconds(st.LastApply))
	}
}

// reported says whether h is in the metrics at all.
func (c *Collector) reported(h fleet.Host, now time.Time) bool {
	if h.Online || c.o.StaleAfter < 0 {
		return true
	}
	last := h.LastSeen
	if h.StatusAt.After(last) {
		last = h.StatusAt
	}
	return !last.IsZero() && now.Sub(last) <= c.o.StaleAfter
}

// sampleFresh says whether h's metrics sample is reported.
func (c *Collector) sampleFresh(h fleet.Host, now time.Time) bool {
	if h.Metrics == nil || h.State == protocol.StatusOffline {
		return false
	}
	return c.o.MetricsMaxAge < 0 || now.Sub(h.MetricsAt) <= c.o.MetricsMaxAge
}

func (c *Collector) collectHost(e *emitter, h fleet.Host, now time.Time) {
	d := &c.d
	id := h.ID
	e.gauge(d.up, b2f(h.Online), id)
	e.gauge(d.info, 1, id, h.Version, h.OS, h.Arch, h.Hostname, h.Platform, h.PlatformVersion)
	seen := map[string]bool{}
	for _, g := range h.Groups {
		if !seen[g] {
			seen[g] = true
			e.gauge(d.group, 1, id, g)
		}
	}
	if !h.LastSeen.IsZero() {
		e.gauge(d.lastSeen, unixSeconds(h.LastSeen), id)
	}
	if h.Online && !h.StartedAt.IsZero() {
		e.gauge(d.agentStart, unixSeconds(h.StartedAt), id)
	}
	if inv := h.Inventory; inv != nil {
		if inv.CPU.Threads > 0 {
			e.gauge(d.cpus, float64(inv.CPU.Threads), id)
		}
		if !inv.BootTime.IsZero() {
			e.gauge(d.bootTime, unixSeconds(inv.BootTime.Time), id)
		}
	}
	if !c.sampleFresh(h, now) {
		return
	}
	m := h.Metrics
	e.gauge(d.sampleTime, unixSeconds(h.MetricsAt), id)
	e.gauge(d.sampleErrors, float64(len(m.Errors)), id)
	if m.CPU != nil {
		e.gauge(d.cpuUsage, m.CPU.Percent/100, id)
	}
	if m.Load != nil {
		e.gauge(d.load1, m.Load.L1, id)
		e.gauge(d.load5, m.Load.L5, id)
		e.gauge(d.load15, m.Load.L15, id)
	}
	if m.Mem != nil {
		e.gauge(d.memTotal, float64(m.Mem.Total), id)
		e.gauge(d.memUsed, float64(m.Mem.Used), id)
		e.gauge(d.memAvailable, float64(m.Mem.Available), id)
	}
	if m.Swap != nil {
		e.gauge(d.swapTotal, float64(m.Swap.Total), id)
		e.gauge(d.swapUsed, float64(m.Swap.Used), id)
	}
	mounts := map[string]bool{}
	for _, fs := range m.Disks {
		if fs.Mount == "" || mounts[fs.Mount] {
			continue // two series with the same labels would fail the scrape
		}
		mounts[fs.Mount] = true
		e.gauge(d.fsSize, float64(fs.Total), id, fs.Mount)
		e.gauge(d.fsUsed, float64(fs.Used), id, fs.Mount)
		e.gauge(d.fsUsage, fs.Percent/100, id, fs.Mount)
	}
	disks := map[string]bool{}
	for _, io := range m.DiskIO {
		if io.Name == "" || disks[io.Name] {
			continue
		}
		disks[io.Name] = true
		e.counter(d.diskRead, float64(io.ReadBytes), id, io.Name)
		e.counter(d.diskWritten, float64(io.WriteBytes), id, io.Name)
		e.counter(d.diskReads, float64(io.Reads), id, io.Name)
		e.counter(d.diskWrites, float64(io.Writes), id, io.Name)
		if io.IOTimeMS > 0 {
			e.counter(d.diskIOTime, float64(io.IOTimeMS)/1000, id, io.Name)
		}
	}
	nics := map[string]bool{}
	for _, n := range m.Net {
		if n.Name == "" || nics[n.Name] {
			continue
		}
		nics[n.Name] = true
		e.counter(d.netRxBytes, float64(n.BytesRecv), id, n.Name)
		e.counter(d.netTxBytes, float64(n.BytesSent), id, n.Name)
		e.counter(d.netRxPackets, float64(n.PacketsRecv), id, n.Name)
		e.counter(d.netTxPackets, float64(n.PacketsSent), id, n.Name)
		e.counter(d.netRxErrors, float64(n.ErrIn), id, n.Name)
		e.counter(d.netTxErrors, float64(n.ErrOut), id, n.Name)
		e.counter(d.netRxDrop, float64(n.DropIn), id, n.Name)
		e.counter(d.netTxDrop, float64(n.DropOut), id, n.Name)
	}
	if m.UptimeMS > 0 {
		e.gauge(d.uptime, float64(m.UptimeMS)/1000, id)
	}
	if m.Procs > 0 {
		e.gauge(d.procs, float64(m.Procs), id)
	}
	if a := m.Agent; a != nil {
		e.gauge(d.agentRSS, float64(a.RSSBytes), id)
		e.gauge(d.agentCPU, a.CPUPercent/100, id)
		e.gauge(d.agentGoroutines, float64(a.Goroutines), id)
		e.gauge(d.agentRunning, float64(a.Running), id)
		e.gauge(d.agentQueued, float64(a.Queued), id)
		e.gauge(d.agentOutbox, float64(a.Outbox), id)
		e.counter(d.agentReconnects, float64(a.Reconnects), id)
	}
}

// emitter sends const metrics, skipping the ones the client library
// refuses (it checks label counts and UTF-8).
type emitter struct{ ch chan<- prometheus.Metric }

func (e *emitter) gauge(d *prometheus.Desc, v float64, labels ...string) {
	if m, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...); err == nil {
		e.ch <- m
	}
}

func (e *emitter) counter(d *prometheus.Desc, v float64, labels ...string) {
	if m, err := prometheus.NewConstMetric(d, prometheus.CounterValue, v, labels...); err == nil {
		e.ch <- m
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// Registry returns a registry holding c and, with process true, the Go
// runtime and process collectors of the program serving it (go_*,
// process_*).
func Registry(c *Collector, process bool) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(c)
	if process {
		r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return r
}

// Handler serves g in the Prometheus exposition formats (text, or
// OpenMetrics/protobuf when the scraper asks). A metric that fails is
// left out and the rest is served.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, MaxRequestsInFlight: 4, Timeout: 30 * time.Second})
}
