package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/sysinfo"
)

const gib = 1 << 30

func newCollector(t testing.TB, o Options) *Collector {
	t.Helper()
	if o.HostID == "" {
		o.HostID = "web-01"
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	c.minWindow = 20 * time.Millisecond // keeps the tests fast
	return c
}

// twoSamples takes a sample, advances the fixture's CPU by busy/idle
// seconds per CPU, and takes the sample that is checked.
func twoSamples(t *testing.T, c *Collector, f *sysinfo.Fixture, busy, idle float64) *protocol.Metrics {
	t.Helper()
	ctx := context.Background()
	if _, err := c.Sample(ctx); err != nil {
		t.Fatal(err)
	}
	f.Update(func(d *sysinfo.FixtureData) {
		d.AddCPU(busy, idle)
		d.Self.CPU += 10 * time.Millisecond
	})
	m, err := c.Sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSampleFieldMapping(t *testing.T) {
	f := sysinfo.NewFixture(sysinfo.TypicalHost())
	health := Health{Running: 2, Queued: 5, Outbox: 7, Reconnects: 3}
	c := newCollector(t, Options{Source: f, PerCPU: true, Health: func() Health { return health }})
	before := time.Now().UTC()
	m := twoSamples(t, c, f, 1, 3) // 25% busy on every CPU

	if m.V != 1 || m.Host != "web-01" || m.TS.Before(before.Truncate(time.Millisecond)) || m.TS.After(time.Now()) {
		t.Errorf("header: v=%d host=%q ts=%v", m.V, m.Host, m.TS)
	}
	if m.CPU == nil || m.CPU.Percent != 25 || !slices.Equal(m.CPU.PerCPU, []float64{25, 25, 25, 25}) {
		t.Errorf("cpu = %+v, want 25%% on each of 4 CPUs", m.CPU)
	}
	if m.Load == nil || *m.Load != (protocol.LoadSample{L1: 0.52, L5: 0.61, L15: 0.58}) {
		t.Errorf("load = %+v", m.Load)
	}
	if m.Mem == nil || *m.Mem != (protocol.MemSample{Total: 8 * gib, Used: 3 * gib, Available: 5 * gib, Percent: 37.5}) {
		t.Errorf("mem = %+v", m.Mem)
	}
	if m.Swap == nil || *m.Swap != (protocol.SwapSample{Total: 2 * gib, Used: 256 << 20}) {
		t.Errorf("swap = %+v", m.Swap)
	}
	wantDisks := []protocol.DiskSample{
		{Mount: "/", Total: 100 * gib, Used: 40 * gib, Percent: 42.11},
		{Mount: "/data", Total: 500 * gib, Used: 125 * gib, Percent: 25},
		{Mount: "/mnt/home", Total: 1024 * gib, Used: 512 * gib, Percent: 50},
	}
	if !slices.Equal(m.Disks, wantDisks) {
		t.Errorf("disks = %+v\nwant %+v (pseudo filesystems, bind mounts, overlays and snaps left out)", m.Disks, wantDisks)
	}
	wantIO := []protocol.DiskIOSample{
		{Name: "sda", ReadBytes: 9 * gib, WriteBytes: 21 * gib, Reads: 310000, Writes: 920000, IOTimeMS: 800000},
		{Name: "sdb", ReadBytes: 2 * gib, WriteBytes: 1 * gib, Reads: 41000, Writes: 22000, IOTimeMS: 90000},
	}
	if !slices.Equal(m.DiskIO, wantIO) {
		t.Errorf("diskio = %+v\nwant %+v (whole disks only)", m.DiskIO, wantIO)
	}
	wantNet := []protocol.NetSample{{Name: "eth0", BytesSent: 3 * gib, BytesRecv: 12 * gib, PacketsSent: 4100000, PacketsRecv: 9800000, DropIn: 12}}
	if !slices.Equal(m.Net, wantNet) {
		t.Errorf("net = %+v\nwant %+v (loopback left out)", m.Net, wantNet)
	}
	if m.UptimeMS != (36*time.Hour+25*time.Minute).Milliseconds() || m.Procs != 187 {
		t.Errorf("uptime_ms = %d procs = %d", m.UptimeMS, m.Procs)
	}
	a := m.Agent
	if a == nil || a.RSSBytes != 9<<20 || a.Goroutines < 1 || a.Running != 2 || a.Queued != 5 || a.Outbox != 7 || a.Reconnects != 3 {
		t.Fatalf("agent = %+v", a)
	}
	// 10ms of CPU over at least the 20ms window: at most 50%.
	if a.CPUPercent <= 0 || a.CPUPercent > 50 {
		t.Errorf("agent cpu_percent = %v, want in (0, 50]", a.CPUPercent)
	}
	if m.Errors != nil {
		t.Errorf("errors = %q", m.Errors)
	}
}

func TestSampleCPUWithoutPerCPU(t *testing.T) {
	f := sysinfo.NewFixture(sysinfo.TypicalHost())
	c := newCollector(t, Options{Source: f})
	m := twoSamples(t, c, f, 3, 1)
	if m.CPU == nil || m.CPU.Percent != 75 || m.CPU.PerCPU != nil {
		t.Fatalf("cpu = %+v, want 75%% and no per-CPU list", m.CPU)
	}
	if f.Calls(sysinfo.OpCPU) < 2 {
		t.Fatal("cpu was not read")
	}
}

// The first sample has no earlier reading: it measures over a short
// window rather than leaving CPU out.
func TestFirstSampleMeasuresAShortWindow(t *testing.T) {
	f := sysinfo.NewFixture(sysinfo.TypicalHost())
	c := newCollector(t, Options{Source: f})
	c.minWindow = MinWindow
	start := time.Now()
	m, err := c.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < MinWindow {
		t.Fatalf("first sample took %s, want at least MinWindow (%s)", el, MinWindow)
	}
	if n := f.Calls(sysinfo.OpCPU); n != 2 {
		t.Fatalf("cpu read %d times, want 2 (before and after the window)", n)
	}
	// The fixture's counters did not move: the CPU did not advance.
	if m.CPU != nil {
		t.Fatalf("cpu = %+v from counters that did not advance", m.CPU)
	}
	if !slices.Contains(m.Errors, "cpu: cpu times did not advance") {
		t.Fatalf("errors = %q", m.Errors)
	}
}

func TestSampleLeavesOutWhatThePlatformLacks(t *testing.T) {
	d := sysinfo.TypicalHost()
	d.Load = nil // Windows
	c := newCollector(t, Options{Source: sysinfo.NewFixture(d)})
	m, err := c.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m)
	if m.Load != nil || bytes.Contains(b, []byte(`"load"`)) {
		t.Fatalf("load present: %s", b)
	}
	for _, e := range m.Errors {
		if strings.HasPrefix(e, "load") {
			t.Fatalf("an unsupported part is not an error: %q", m.Errors)
		}
	}
}

// ticking is a typical host whose CPUs are 25% busy.
func ticking() sysinfo.FixtureData {
	d := sysinfo.TypicalHost()
	d.CPUStep = sysinfo.CPUTimes{User: 0.1, System: 0.05, Idle: 0.45}
	return d
}

func TestSampleReportsFailedParts(t *testing.T) {
	d := ticking()
	d.Errors[sysinfo.OpNet] = errors.New("open /proc/net/dev: permission denied")
	d.Errors[sysinfo.OpDisk+" /data"] = errors.New("statfs /data: input/output error")
	d.Errors[sysinfo.OpProcs] = errors.New("no /proc")
	c := newCollector(t, Options{Source: sysinfo.NewFixture(d)})
	m, err := c.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"disk /data: statfs /data: input/output error",
		"net: open /proc/net/dev: permission denied",
		"procs: no /proc",
	}
	if !slices.Equal(m.Errors, want) {
		t.Fatalf("errors = %q\nwant %q", m.Errors, want)
	}
	if m.Net != nil || m.Procs != 0 || len(m.Disks) != 2 || m.Mem == nil || m.Agent == nil {
		t.Fatalf("failed parts must be left out and the rest kept: %+v", m)
	}
}

func TestPartitionListIsCached(t *testing.T) {
	f := sysinfo.NewFixture(sysinfo.TypicalHost())
	c := newCollector(t, Options{Source: f, RefreshEvery: 3})
	for range 7 {
		if _, err := c.Sample(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Read on samples 1, 4 and 7.
	if n := f.Calls(sysinfo.OpPartitions); n != 3 {
		t.Fatalf("partitions read %d times in 7 samples, want 3", n)
	}
	if n := f.Calls(sysinfo.OpInterfaces); n != 3 {
		t.Fatalf("interfaces read %d times in 7 samples, want 3", n)
	}
	if n := f.Calls(sysinfo.OpDisk + " /"); n != 7 {
		t.Fatalf("usage of / read %d times, want every sample", n)
	}
}

// requiredMetrics are the contract's required fields ("[]" steps into
// every element of a list).
var requiredMetrics = []string{
	"v", "host", "ts",
	"cpu.percent",
	"mem.total", "mem.used", "mem.available", "mem.percent",
	"swap.total", "swap.used",
	"disks[].mount", "disks[].total", "disks[].used", "disks[].percent",
	"net[].name", "net[].bytes_sent", "net[].bytes_recv",
	"uptime_ms", "procs",
	"agent.rss_bytes", "agent.cpu_percent", "agent.goroutines", "agent.running", "agent.queued",
	"load.l1", "load.l5", "load.l15",
}

// integerMetrics must be JSON integers.
var integerMetrics = []string{
	"v", "mem.total", "mem.used", "mem.available", "swap.total", "swap.used",
	"disks[].total", "disks[].used", "net[].bytes_sent", "net[].bytes_recv",
	"uptime_ms", "procs", "agent.rss_bytes", "agent.goroutines", "agent.running", "agent.queued",
}

// lookup returns every value at path in a decoded JSON document; ok is
// false when the path is missing anywhere.
func lookup(doc any, path string) (vals []any, ok bool) {
	if path == "" {
		return []any{doc}, true
	}
	step, rest, _ := strings.Cut(path, ".")
	list := strings.HasSuffix(step, "[]")
	obj, isObj := doc.(map[string]any)
	if !isObj {
		return nil, false
	}
	v, found := obj[strings.TrimSuffix(step, "[]")]
	if !found {
		return nil, false
	}
	if !list {
		return lookup(v, rest)
	}
	elems, isList := v.([]any)
	if !isList || len(elems) == 0 {
		return nil, false
	}
	for _, e := range elems {
		got, ok := lookup(e, rest)
		if !ok {
			return nil, false
		}
		vals = append(vals, got...)
	}
	return vals, true
}

func TestSampleJSONHasTheContractsFields(t *testing.T) {
	f := sysinfo.NewFixture(sysinfo.TypicalHost())
	c := newCollector(t, Options{Source: f}) // Health nil: running and queued still present
	m := twoSamples(t, c, f, 1, 1)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	for _, p := range requiredMetrics {
		if _, ok := lookup(doc, p); !ok {
			t.Errorf("required field %s missing in %s", p, b)
		}
	}
	for _, p := range integerMetrics {
		vals, _ := lookup(doc, p)
		for _, v := range vals {
			n, isNum := v.(json.Number)
			if _, err := strconv.ParseUint(string(n), 10, 64); !isNum || err != nil {
				t.Errorf("%s = %v, want an integer", p, v)
			}
		}
	}
	ts, _ := lookup(doc, "ts")
	if _, err := time.Parse(protocol.TimeFormat, ts[0].(string)); err != nil || !strings.HasSuffix(ts[0].(string), "Z") {
		t.Errorf("ts %v is not RFC 3339 UTC with milliseconds", ts[0])
	}
	if len(b) > 2048 {
		t.Errorf("a typical host's sample is %d bytes, over 2 KiB: %s", len(b), b)
	}
	t.Logf("typical sample: %d bytes", len(b))
}

func TestNewValidates(t *testing.T) {
	f := sysinfo.NewFixture(sysinfo.TypicalHost())
	for name, o := range map[string]Options{
		"no source":         {HostID: "h"},
		"bad host":          {HostID: "Bad Host", Source: f},
		"negative interval": {HostID: "h", Source: f, Interval: -time.Second},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s: New accepted %+v", name, o)
		}
	}
}

// blockingDisk is a Sampler whose usage read of one mount never returns
// until released, like statfs on a dead NFS server.
type blockingDisk struct {
	*sysinfo.Fixture
	mount   string
	release chan struct{}
	entered atomic.Int32
}

func (b *blockingDisk) Usage(ctx context.Context, mount string) (sysinfo.Usage, error) {
	if mount == b.mount {
		b.entered.Add(1)
		<-b.release // ignores ctx
	}
	return b.Fixture.Usage(ctx, mount)
}

// A collector that blocks forever is skipped and reported, the hung read
// holds one goroutine however many samples are taken, a sample on demand
// (the metrics command) is not held up, and Run stops cleanly.
func TestHungCollectorIsSkipped(t *testing.T) {
	src := &blockingDisk{Fixture: sysinfo.NewFixture(ticking()), mount: "/mnt/home", release: make(chan struct{})}
	c := newCollector(t, Options{Source: src, Guard: sysinfo.NewGuard(100 * time.Millisecond), Interval: 250 * time.Millisecond})
	samples := make(chan []byte, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx, func(b []byte) { samples <- b })
	}()
	var got []protocol.Metrics
	deadline := time.After(10 * time.Second)
	for len(got) < 4 {
		select {
		case b := <-samples:
			var m protocol.Metrics
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			got = append(got, m)
		case <-deadline:
			t.Fatalf("only %d samples in 10s", len(got))
		}
	}
	for i, m := range got {
		if i == 0 && !slices.Contains(m.Errors, "disk /mnt/home: timed out after 100ms") {
			t.Errorf("sample 0 errors = %q, want the timeout", m.Errors)
		}
		if i > 0 && (len(m.Errors) != 1 || !strings.HasPrefix(m.Errors[0], "disk /mnt/home: skipped: an earlier call has not returned")) {
			t.Errorf("sample %d errors = %q, want the skip", i, m.Errors)
		}
		mounts := []string{}
		for _, d := range m.Disks {
			mounts = append(mounts, d.Mount)
		}
		if !slices.Equal(mounts, []string{"/", "/data"}) || m.CPU == nil || m.CPU.Percent != 25 || m.Mem == nil || m.Agent == nil {
			t.Errorf("sample %d: the other parts must be there: disks %q cpu %v mem %v", i, mounts, m.CPU, m.Mem)
		}
	}
	if n := src.entered.Load(); n != 1 {
		t.Fatalf("the hung read was started %d times over %d samples, want 1", n, len(got))
	}
	// A sample on demand while the read is stuck returns at once.
	start := time.Now()
	m, err := c.Sample(context.Background())
	if err != nil || time.Since(start) > 2*time.Second || len(m.Disks) != 2 {
		t.Fatalf("sample on demand: %v after %s, %d disks", err, time.Since(start), len(m.Disks))
	}
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not stop within 2s of its context ending")
	}
	// The one hung goroutine is the read itself; once the OS lets it go,
	// nothing is left.
	close(src.release)
	goleak.VerifyNone(t)
}

// Run stops while a sample is waiting on a read.
func TestRunStopsDuringASample(t *testing.T) {
	src := &blockingDisk{Fixture: sysinfo.NewFixture(sysinfo.TypicalHost()), mount: "/", release: make(chan struct{})}
	c := newCollector(t, Options{Source: src, Guard: sysinfo.NewGuard(time.Hour), Interval: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx, func([]byte) { t.Error("a sample cut short by the end of Run was published") })
	}()
	deadline := time.Now().Add(5 * time.Second)
	for src.entered.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sample never reached the disk read")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not stop")
	}
	close(src.release)
	goleak.VerifyNone(t)
}

// The real host: a sample fills cpu, mem, disks and net.
func TestSampleRealHost(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the smoke test knows Linux")
	}
	c := newCollector(t, Options{Source: sysinfo.New(sysinfo.Options{}), PerCPU: true})
	m, err := c.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m)
	if m.CPU == nil || len(m.CPU.PerCPU) != runtime.NumCPU() && len(m.CPU.PerCPU) == 0 {
		t.Errorf("cpu = %+v", m.CPU)
	}
	if m.Mem == nil || m.Mem.Total == 0 || m.Swap == nil || m.Load == nil {
		t.Errorf("mem %+v swap %+v load %+v", m.Mem, m.Swap, m.Load)
	}
	if !slices.ContainsFunc(m.Disks, func(d protocol.DiskSample) bool { return d.Mount == "/" && d.Total > 0 }) {
		t.Errorf("disks = %+v, want / among them", m.Disks)
	}
	if hasTraffic(t) && len(m.Net) == 0 {
		t.Errorf("net is empty although a non-loopback interface has traffic")
	}
	if m.UptimeMS <= 0 || m.Procs < 1 || m.Agent == nil || m.Agent.RSSBytes == 0 {
		t.Errorf("uptime %d procs %d agent %+v", m.UptimeMS, m.Procs, m.Agent)
	}
	if m.Errors != nil {
		t.Errorf("errors on a healthy host: %q", m.Errors)
	}
	t.Logf("%d bytes: %s", len(b), b)
}

// hasTraffic reads /proc/net/dev itself: does a non-loopback interface
// show any bytes?
func hasTraffic(t *testing.T) bool {
	b, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for _, l := range lines[min(2, len(lines)):] {
		name, rest, ok := strings.Cut(l, ":")
		f := strings.Fields(rest)
		if !ok || strings.TrimSpace(name) == "lo" || len(f) < 9 {
			continue
		}
		if f[0] != "0" || f[8] != "0" {
			return true
		}
	}
	return false
}

func TestDelays(t *testing.T) {
	iv := 10 * time.Second
	seenLow, seenHigh := false, false
	for range 1000 {
		if d := firstDelay(iv, MinWindow); d < MinWindow || d >= iv {
			t.Fatalf("first delay %s outside [%s, %s)", d, MinWindow, iv)
		}
		d := nextDelay(iv, 0)
		if d < 9*time.Second || d > 11*time.Second {
			t.Fatalf("next delay %s outside 10s ± 1s", d)
		}
		seenLow = seenLow || d < 9500*time.Millisecond
		seenHigh = seenHigh || d > 10500*time.Millisecond
		if d := nextDelay(iv, 30*time.Second); d != 5*time.Second {
			t.Fatalf("after a slow sample: %s, want half the interval", d)
		}
	}
	if !seenLow || !seenHigh {
		t.Fatal("the delay is not jittered")
	}
}

// swapFails is a host whose memory reads but whose swap does not (the
// non-Linux Memory returns both and an error).
type swapFails struct{ *sysinfo.Fixture }

func (s swapFails) Memory(ctx context.Context) (sysinfo.Memory, error) {
	m, _ := s.Fixture.Memory(ctx)
	m.SwapTotal, m.SwapUsed = 0, 0
	return m, errors.New("swap: no page file counters")
}

func TestSampleMemoryWithoutSwap(t *testing.T) {
	c := newCollector(t, Options{Source: swapFails{sysinfo.NewFixture(ticking())}})
	m, err := c.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if m.Mem == nil || m.Mem.Total != 8*gib || m.Swap != nil || !slices.Equal(m.Errors, []string{"mem: swap: no page file counters"}) {
		t.Fatalf("mem %+v swap %+v errors %q", m.Mem, m.Swap, m.Errors)
	}
}
