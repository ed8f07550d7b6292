// Package metrics takes the agent's metrics samples (docs/PROTOCOL.md,
// "Metrics"): CPU, load, memory, swap, filesystems, disk and network
// counters, uptime, process count and the agent's own health, read from a
// sysinfo.Sampler. Run publishes one every interval, jittered so a fleet
// does not sample in step; Sample takes one on demand (the metrics
// command).
//
// A hung read never stalls anything: every read goes through a
// sysinfo.Guard, so it gets a deadline (sysinfo.DefaultTimeout), a read
// past it is left out of the sample and named in the sample's errors, and
// while it stays stuck later samples skip it at once instead of piling up
// goroutines. A sample as a whole never takes longer than the interval.
//
// CPU percentages are the busy share of CPU time between two readings: the
// previous sample's (taken by Run or Sample alike) and this one's. When
// there is no previous reading, or it is less than MinWindow old, Sample
// first waits until MinWindow has passed since it, so the first sample
// measures over a short window instead of leaving CPU out.
package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/sysinfo"
)

// Defaults.
const (
	DefaultInterval = 10 * time.Second
	// DefaultRefreshEvery is how many samples the lists of filesystems and
	// network interfaces are kept before they are read again (5 minutes at
	// the default interval).
	DefaultRefreshEvery = 30
	// MinWindow is the shortest time CPU percentages are measured over.
	MinWindow = 250 * time.Millisecond
)

// OpHealth is the operation name of the Health callback in errors.
const OpHealth = "health"

// Health is the state of the agent's pipeline, supplied by the daemon.
type Health struct {
	Running, Queued int
	// Outbox is the number of messages waiting to be published.
	Outbox int
	// Reconnects counts broker connections lost since the agent started.
	Reconnects uint64
}

// Options configure a Collector.
type Options struct {
	// HostID is the "host" of every sample (required).
	HostID string
	// Source reads the host (required): sysinfo.New in the agent, a
	// sysinfo.Fixture in tests.
	Source sysinfo.Sampler
	// Guard runs the reads under deadlines; nil: a Guard of its own with
	// sysinfo.DefaultTimeout. Share one with the inventory so a hung
	// filesystem holds one goroutine, not two.
	Guard *sysinfo.Guard
	// Interval between samples in Run; default DefaultInterval.
	Interval time.Duration
	// PerCPU adds each logical CPU's percentage (config metrics.per_cpu).
	PerCPU bool
	// Health returns the pipeline's state; nil leaves running and queued
	// at 0. It is called under the Guard, so a blocked one is skipped.
	Health func() Health
	// RefreshEvery: the filesystem and interface lists are read again
	// every this many samples; default DefaultRefreshEvery.
	RefreshEvery int
	// Logger receives warnings when a read starts or stops failing.
	Logger *slog.Logger
}

// Collector takes metrics samples. Its methods are safe for concurrent
// use; samples are taken one at a time.
type Collector struct {
	o         Options
	log       *slog.Logger
	guard     *sysinfo.Guard
	minWindow time.Duration // MinWindow; shorter in tests

	mu       sync.Mutex // one sample at a time; guards what follows
	cpuAt    time.Time  // when prevCPU was read (zero: never)
	prevCPU  []sysinfo.CPUTimes
	selfAt   time.Time
	prevSelf sysinfo.Process
	disks    []sysinfo.Partition // real filesystems, refreshed every RefreshEvery samples
	loopback map[string]bool     // loopback interface names, refreshed likewise
	listsAge int                 // samples since the lists were read; -1: never read
	failing  map[string]string   // op → kind of failure last logged
}

// New returns a Collector.
func New(o Options) (*Collector, error) {
	switch {
	case o.Source == nil:
		return nil, errors.New("metrics: a source is required")
	case !protocol.ValidHostID(o.HostID):
		return nil, fmt.Errorf("metrics: invalid host id %q", o.HostID)
	case o.Interval < 0 || o.RefreshEvery < 0:
		return nil, errors.New("metrics: interval and refresh must not be negative")
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.RefreshEvery == 0 {
		o.RefreshEvery = DefaultRefreshEvery
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	g := o.Guard
	if g == nil {
		g = sysinfo.NewGuard(0)
	}
	return &Collector{o: o, log: o.Logger, guard: g, minWindow: MinWindow, listsAge: -1, failing: map[string]string{}}, nil
}

// Sample takes one sample now. Parts that fail are left out and listed in
// the sample's Errors; the error is non-nil only when ctx ended first.
func (c *Collector) Sample(ctx context.Context) (*protocol.Metrics, error) {
	m := &protocol.Metrics{}
	if err := c.sample(ctx, m); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return m, nil
}

// Run publishes a sample, encoded as JSON, about every interval until ctx
// ends: the first after a random part of the interval, the next ones an
// interval later give or take a tenth. publish gets a new slice each time
// and may keep it; it must not block for long (a metrics publish that
// cannot go out should be dropped, not queued). A sample that fails only
// because ctx ended is not published.
func (c *Collector) Run(ctx context.Context, publish func(payload []byte)) {
	c.prime(ctx)
	iv := c.o.Interval
	t := time.NewTimer(firstDelay(iv, c.minWindow))
	defer t.Stop()
	m := &protocol.Metrics{} // reused: its lists keep their capacity
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		sctx, cancel := context.WithTimeout(ctx, iv) // never overlap the next sample
		// Past the budget, the reads not made yet are listed in the
		// sample's errors; what was read is still worth publishing.
		err := c.sample(sctx, m)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			if b, err := json.Marshal(m); err != nil {
				c.log.Error("metrics sample not encoded", "err", err)
			} else {
				publish(b)
			}
		}
		t.Reset(nextDelay(iv, time.Since(start)))
	}
}

// firstDelay is a random part of the interval, at least window: agents
// started together (a fleet rollout) do not sample in step.
func firstDelay(iv, window time.Duration) time.Duration {
	return window + rand.N(max(iv-window, 1))
}

// nextDelay is the wait before the next sample, given how long the last
// one took: the interval give or take a tenth, never less than half an
// interval.
func nextDelay(iv, took time.Duration) time.Duration {
	jitter := rand.N(iv/5+1) - iv/10
	return max(iv+jitter-took, iv/2)
}

// prime takes the first CPU readings, so that Run's first sample has a
// window to measure over.
func (c *Collector) prime(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cpuAt.IsZero() {
		c.readCPU(ctx, nil, nil)
	}
	if c.selfAt.IsZero() {
		c.readSelf(ctx, nil, nil)
	}
}

// sample fills m, reusing its lists.
func (c *Collector) sample(ctx context.Context, m *protocol.Metrics) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	*m = protocol.Metrics{V: protocol.Version, Host: c.o.HostID,
		Disks: m.Disks[:0], DiskIO: m.DiskIO[:0], Net: m.Net[:0], Errors: m.Errors[:0]}
	errs := map[string]error{}

	// CPU first: when it needs a short window, the wait comes before
	// everything else is read.
	if c.cpuAt.IsZero() {
		c.readCPU(ctx, nil, errs)
		c.readSelf(ctx, nil, errs)
	}
	if wait := time.Until(c.cpuAt.Add(c.minWindow)); wait > 0 && !c.cpuAt.IsZero() {
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
	m.TS = protocol.Now()
	c.readCPU(ctx, m, errs)

	if l, err := call(ctx, c, sysinfo.OpLoad, c.o.Source.Load); err == nil {
		m.Load = &protocol.LoadSample{L1: round2(l.L1), L5: round2(l.L5), L15: round2(l.L15)}
	} else {
		errs[sysinfo.OpLoad] = err
	}
	mem, err := call(ctx, c, sysinfo.OpMemory, c.o.Source.Memory)
	if err != nil {
		errs[sysinfo.OpMemory] = err
	}
	if mem.Total > 0 { // swap may have failed alone
		m.Mem = &protocol.MemSample{Total: mem.Total, Used: mem.Used, Available: mem.Available, Percent: percent(mem.Used, mem.Total)}
		if err == nil {
			m.Swap = &protocol.SwapSample{Total: mem.SwapTotal, Used: mem.SwapUsed}
		}
	}
	c.refreshLists(ctx, errs)
	for _, p := range c.disks {
		op := sysinfo.OpDisk + " " + p.Mount
		u, err := call(ctx, c, op, func(ctx context.Context) (sysinfo.Usage, error) { return c.o.Source.Usage(ctx, p.Mount) })
		switch {
		case err != nil:
			errs[op] = err
		case u.Total > 0: // a filesystem with no size holds nothing
			m.Disks = append(m.Disks, protocol.DiskSample{Mount: p.Mount, Total: u.Total, Used: u.Used, Percent: round2(u.Percent)})
		}
	}
	if io, err := call(ctx, c, sysinfo.OpDiskIO, c.o.Source.DiskIO); err == nil {
		for _, d := range sysinfo.WholeDisks(io) {
			m.DiskIO = append(m.DiskIO, protocol.DiskIOSample{Name: d.Name, ReadBytes: d.ReadBytes, WriteBytes: d.WriteBytes,
				Reads: d.Reads, Writes: d.Writes, IOTimeMS: d.IOTimeMS})
		}
	} else {
		errs[sysinfo.OpDiskIO] = err
	}
	if nics, err := call(ctx, c, sysinfo.OpNet, c.o.Source.NetIO); err == nil {
		for _, n := range nics {
			if c.isLoopback(n.Name) || n.BytesSent == 0 && n.BytesRecv == 0 {
				continue
			}
			m.Net = append(m.Net, protocol.NetSample{Name: n.Name, BytesSent: n.BytesSent, BytesRecv: n.BytesRecv,
				PacketsSent: n.PacketsSent, PacketsRecv: n.PacketsRecv,
				ErrIn: n.ErrIn, ErrOut: n.ErrOut, DropIn: n.DropIn, DropOut: n.DropOut})
		}
		slices.SortFunc(m.Net, func(a, b protocol.NetSample) int { return strings.Compare(a.Name, b.Name) })
	} else {
		errs[sysinfo.OpNet] = err
	}
	if up, err := call(ctx, c, sysinfo.OpUptime, c.o.Source.Uptime); err == nil {
		m.UptimeMS = up.Milliseconds()
	} else {
		errs[sysinfo.OpUptime] = err
	}
	if n, err := call(ctx, c, sysinfo.OpProcs, c.o.Source.Procs); err == nil {
		m.Procs = n
	} else {
		errs[sysinfo.OpProcs] = err
	}
	c.readSelf(ctx, m, errs)
	c.report(errs, m)
	return nil
}

// readCPU reads the CPU times and, when m is not nil and there is an
// earlier reading, sets m.CPU from the difference.
func (c *Collector) readCPU(ctx context.Context, m *protocol.Metrics, errs map[string]error) {
	ts, err := call(ctx, c, sysinfo.OpCPU, func(ctx context.Context) ([]sysinfo.CPUTimes, error) {
		return c.o.Source.CPUTimes(ctx, c.o.PerCPU)
	})
	if err == nil && len(ts) == 0 {
		err = errors.New("no cpu times")
	}
	if err != nil {
		if errs != nil {
			errs[sysinfo.OpCPU] = err
		}
		return
	}
	now := time.Now()
	if m != nil && !c.cpuAt.IsZero() {
		total, prevTotal := sum(ts), sum(c.prevCPU)
		if p, ok := busyPercent(prevTotal, total); ok {
			m.CPU = &protocol.CPUSample{Percent: p}
			if c.o.PerCPU && len(ts) == len(c.prevCPU) { // not across a CPU hotplug
				m.CPU.PerCPU = make([]float64, len(ts))
				for i := range ts {
					m.CPU.PerCPU[i], _ = busyPercent(c.prevCPU[i], ts[i])
				}
			}
		} else if errs != nil {
			errs[sysinfo.OpCPU] = errors.New("cpu times did not advance")
		}
	}
	c.prevCPU, c.cpuAt = append(c.prevCPU[:0], ts...), now
}

// readSelf reads the agent's own process and, when m is not nil, fills
// m.Agent.
func (c *Collector) readSelf(ctx context.Context, m *protocol.Metrics, errs map[string]error) {
	p, err := call(ctx, c, sysinfo.OpSelf, c.o.Source.Self)
	now := time.Now()
	if m != nil {
		m.Agent = &protocol.AgentHealth{Goroutines: runtime.NumGoroutine()}
		if err == nil {
			m.Agent.RSSBytes = p.RSS
			if !c.selfAt.IsZero() && p.CPU >= c.prevSelf.CPU {
				if wall := now.Sub(c.selfAt); wall > 0 {
					m.Agent.CPUPercent = round2(float64(p.CPU-c.prevSelf.CPU) / float64(wall) * 100)
				}
			}
		}
		if c.o.Health != nil {
			h, herr := call(ctx, c, OpHealth, func(context.Context) (Health, error) { return c.o.Health(), nil })
			if herr == nil {
				m.Agent.Running, m.Agent.Queued, m.Agent.Outbox, m.Agent.Reconnects = h.Running, h.Queued, h.Outbox, h.Reconnects
			} else if errs != nil {
				errs[OpHealth] = herr
			}
		}
	}
	if err != nil {
		if errs != nil {
			errs[sysinfo.OpSelf] = err
		}
		return
	}
	c.prevSelf, c.selfAt = p, now
}

// refreshLists reads the filesystem and interface lists when they are
// due. On failure the previous lists stay in use.
func (c *Collector) refreshLists(ctx context.Context, errs map[string]error) {
	if c.listsAge >= 0 && c.listsAge < c.o.RefreshEvery {
		c.listsAge++
		return
	}
	ok := true
	if parts, err := call(ctx, c, sysinfo.OpPartitions, c.o.Source.Partitions); err == nil {
		c.disks = sysinfo.RealDisks(parts)
	} else {
		errs[sysinfo.OpPartitions], ok = err, false
	}
	if ifs, err := call(ctx, c, sysinfo.OpInterfaces, c.o.Source.Interfaces); err == nil {
		c.loopback = map[string]bool{}
		for _, i := range ifs {
			if i.Loopback {
				c.loopback[i.Name] = true
			}
		}
	} else {
		errs[sysinfo.OpInterfaces], ok = err, false
	}
	if ok {
		c.listsAge = 1
	}
}

// isLoopback tells loopback interfaces by the interface list, or by name
// while there is none.
func (c *Collector) isLoopback(name string) bool {
	if c.loopback != nil {
		return c.loopback[name]
	}
	return name == "lo" || strings.HasPrefix(name, "lo0") || strings.HasPrefix(name, "Loopback")
}

// report puts the errors in the sample, leaving out what the platform
// lacks, and logs when a part starts or stops failing.
func (c *Collector) report(errs map[string]error, m *protocol.Metrics) {
	for op, err := range errs {
		if errors.Is(err, errors.ErrUnsupported) {
			continue
		}
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			err = errSkipped
		}
		m.Errors = append(m.Errors, op+": "+err.Error())
		kind := "error: " + err.Error()
		if errors.Is(err, sysinfo.ErrTimeout) || errors.Is(err, sysinfo.ErrStuck) {
			kind = "hung"
		}
		if c.failing[op] != kind {
			if kind == "hung" {
				c.log.Warn("metrics read hung: it is left out until it returns", "op", op, "err", err)
			} else {
				c.log.Warn("metrics read failed", "op", op, "err", err)
			}
			c.failing[op] = kind
		}
	}
	for op := range c.failing {
		if _, still := errs[op]; !still {
			c.log.Info("metrics read recovered", "op", op)
			delete(c.failing, op)
		}
	}
	slices.Sort(m.Errors)
	if len(m.Errors) == 0 {
		m.Errors = nil
	}
	if len(m.Disks) == 0 {
		m.Disks = nil
	}
	if len(m.DiskIO) == 0 {
		m.DiskIO = nil
	}
	if len(m.Net) == 0 {
		m.Net = nil
	}
}

// errSkipped replaces the context error of reads that were not made
// because the sample ran out of time.
var errSkipped = errors.New("skipped: the sample ran out of time")

// call runs a read under the collector's guard.
func call[T any](ctx context.Context, c *Collector, op string, fn func(context.Context) (T, error)) (T, error) {
	return sysinfo.Call(ctx, c.guard, op, fn)
}

func sum(ts []sysinfo.CPUTimes) sysinfo.CPUTimes {
	if len(ts) == 1 {
		return ts[0]
	}
	var s sysinfo.CPUTimes
	for _, t := range ts {
		s.User += t.User
		s.System += t.System
		s.Idle += t.Idle
		s.Nice += t.Nice
		s.Iowait += t.Iowait
		s.Irq += t.Irq
		s.Softirq += t.Softirq
		s.Steal += t.Steal
	}
	return s
}

// busyPercent is the busy share of the CPU time between two readings; ok
// is false when no time passed or the counters went backwards.
func busyPercent(prev, cur sysinfo.CPUTimes) (float64, bool) {
	dt := cur.Total() - prev.Total()
	if dt <= 0 {
		return 0, false
	}
	busy := cur.Busy() - prev.Busy()
	return round2(math.Min(math.Max(busy/dt*100, 0), 100)), true
}

func percent(part, total uint64) float64 {
	if total == 0 {
		return 0
	}
	return round2(float64(part) / float64(total) * 100)
}

// round2 rounds to two decimals, which keeps samples short.
func round2(x float64) float64 { return math.Round(x*100) / 100 }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
