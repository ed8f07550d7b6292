package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/shirou/gopsutil/v4/process"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// Footprint goals of the telemetry issue, for the whole agent at a 10 s
// metrics interval.
const (
	goalRSS        = 12 << 20
	goalCPUPerMin  = 30 * time.Millisecond
	goalSampleSize = 2048
)

// BenchmarkTelemetryFootprint runs the real agent (./agent, built without
// the race detector) against a real Mosquitto with metrics every 10 s,
// lets it settle, then watches it for a window and reports:
//
//	rss_MiB          steady resident memory (median of one reading a second)
//	rss_max_MiB      the largest reading
//	rss_anon_MiB     the anonymous part at the end (heap, stacks; the rest
//	                 is the binary's code and data pages), Linux only
//	cpu_ms/min       CPU time (user + system) per minute of the window
//	bytes/sample     mean size of the metrics samples received
//	samples          how many arrived in the window
//
// Settling takes 150 s after the first sample: for the first minutes
// after start the runtime still returns the start-up heap to the OS and
// collects its garbage, which is not the steady state (it doubled the CPU
// figure in a 60 s window taken right away). The window is 60 s. The
// environment variables MQAGENT_FOOTPRINT_SETTLE and
// MQAGENT_FOOTPRINT_WINDOW (Go durations) change them. It runs once
// whatever b.N is, in about four minutes:
//
//	go test -run '^$' -bench TelemetryFootprint -timeout 30m ./test/bench
//
// It fails when no metrics sample arrives (telemetry not wired) or one is
// over 2 KiB; readings over the RSS and CPU goals are logged, since a
// shared machine makes them noisy.
func BenchmarkTelemetryFootprint(b *testing.B) {
	if raceBuild || os.Getenv("MQAGENT_TEST_RACE") == "1" {
		b.Skip("footprint needs an agent built without -race")
	}
	window := envDuration(b, "MQAGENT_FOOTPRINT_WINDOW", 60*time.Second)
	settle := envDuration(b, "MQAGENT_FOOTPRINT_SETTLE", 150*time.Second)
	const host, interval = "footprint-1", 10 * time.Second
	bin := harness.BuildAgent(b)
	mq := harness.StartMosquitto(b, harness.WithMosquittoConfig("autosave_interval 1800"))
	cfg := harness.DefaultConfig(host, mq.URL(), filepath.Join(b.TempDir(), "data"))
	cfg["metrics"] = map[string]any{"interval": interval.String(), "qos": 0, "retain": false}
	cfg["inventory"] = map[string]any{"interval": "24h"}
	cfg["log"].(map[string]any)["level"] = "info" // debug logging is not the production cost

	topics := protocol.Topics{Prefix: protocol.DefaultPrefix}
	var (
		mu       sync.Mutex
		sizes    []int
		counting bool
		bad      []string
	)
	online := make(chan struct{}, 1)
	first := make(chan struct{}, 1)
	op := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(mq.URL()).SetClientID("footprint-op").SetCleanSession(true))
	if t := op.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		b.Fatal("connect", t.Error())
	}
	b.Cleanup(func() { op.Disconnect(100) })
	op.Subscribe(topics.Status(host), 1, func(_ mqtt.Client, m mqtt.Message) {
		var s protocol.Status
		if json.Unmarshal(m.Payload(), &s) == nil && s.State == protocol.StatusOnline {
			select {
			case online <- struct{}{}:
			default:
			}
		}
	}).Wait()
	op.Subscribe(topics.Metrics(host), 0, func(_ mqtt.Client, m mqtt.Message) {
		var s protocol.Metrics
		mu.Lock()
		defer mu.Unlock()
		if err := json.Unmarshal(m.Payload(), &s); err != nil || s.Host != host {
			bad = append(bad, string(m.Payload()))
			return
		}
		if len(m.Payload()) > goalSampleSize {
			bad = append(bad, "over 2 KiB: "+string(m.Payload()))
		}
		if counting {
			sizes = append(sizes, len(m.Payload()))
		}
		select {
		case first <- struct{}{}:
		default:
		}
	}).Wait()

	agent := harness.StartAgent(b, bin, cfg)
	select {
	case <-online:
	case <-time.After(30 * time.Second):
		b.Fatal("agent did not come online")
	}
	// Settle: start-up (inventory, first connect, the runtime returning
	// the start-up heap) is not the steady state.
	select {
	case <-first:
	case <-time.After(3 * interval):
		b.Log("no metrics sample within 3 intervals of start; measuring anyway")
	}
	time.Sleep(settle)
	proc, err := process.NewProcess(int32(agent.PID()))
	if err != nil {
		b.Fatal(err)
	}
	cpuTime := func() time.Duration {
		// Linux counts a task's CPU time in nanoseconds in schedstat; the
		// user and system times elsewhere are in 10 ms ticks, too coarse
		// for a few milliseconds a minute.
		if d, ok := schedstat(agent.PID()); ok {
			return d
		}
		t, err := proc.Times()
		if err != nil {
			b.Fatal(err)
		}
		return time.Duration((t.User + t.System) * float64(time.Second))
	}
	mu.Lock()
	counting = true
	mu.Unlock()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	var rss []uint64
	tick := time.NewTicker(time.Second)
	for time.Since(start) < window {
		<-tick.C
		mi, err := proc.MemoryInfo()
		if err != nil {
			b.Fatalf("agent gone? %v\n%s", err, agent.LogTail())
		}
		rss = append(rss, mi.RSS)
	}
	tick.Stop()
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	mu.Lock()
	counting = false
	n, total := len(sizes), 0
	for _, s := range sizes {
		total += s
	}
	badCopy := slices.Clone(bad)
	mu.Unlock()

	slices.Sort(rss)
	const mib = 1 << 20
	cpuPerMin := time.Duration(float64(cpu) * float64(time.Minute) / float64(elapsed))
	b.ReportMetric(float64(rss[len(rss)/2])/mib, "rss_MiB")
	b.ReportMetric(float64(rss[len(rss)-1])/mib, "rss_max_MiB")
	b.ReportMetric(float64(cpuPerMin.Microseconds())/1000, "cpu_ms/min")
	b.ReportMetric(float64(n), "samples")
	if n > 0 {
		b.ReportMetric(float64(total)/float64(n), "bytes/sample")
	}
	anon, haveAnon := anonRSS(agent.PID())
	if haveAnon {
		b.ReportMetric(float64(anon)/mib, "rss_anon_MiB")
	}
	b.Logf("window %s: rss median %.1f MiB (max %.1f, anonymous %.1f), cpu %s (%s per minute), %d samples, %d bytes each on average",
		elapsed.Round(time.Second), float64(rss[len(rss)/2])/mib, float64(rss[len(rss)-1])/mib, float64(anon)/mib,
		cpu, cpuPerMin, n, total/max(n, 1))
	if rss[len(rss)/2] > goalRSS {
		b.Logf("over the RSS goal (%d MiB)", goalRSS/mib)
	}
	if cpuPerMin > goalCPUPerMin {
		b.Logf("over the CPU goal (%s per minute)", goalCPUPerMin)
	}
	if len(badCopy) > 0 {
		b.Errorf("bad metrics samples: %q", badCopy)
	}
	if n == 0 {
		b.Errorf("no metrics sample arrived on %s in %s: is telemetry wired into the daemon?", topics.Metrics(host), elapsed.Round(time.Second))
	}
	if code := agent.Stop(); code != 0 {
		b.Errorf("agent exit status %d", code)
	}
}

// schedstat is the CPU time of every thread of process pid so far, from
// /proc/PID/task/*/schedstat (nanoseconds); ok is false where there is
// none.
func schedstat(pid int) (time.Duration, bool) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, false
	}
	var total time.Duration
	for _, path := range tasks {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // a thread that just ended
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return 0, false
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, false
		}
		total += time.Duration(ns)
	}
	return total, true
}

// anonRSS is the anonymous resident memory of process pid, from
// /proc/PID/smaps_rollup.
func anonRSS(pid int) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Anonymous:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseUint(f[0], 10, 64)
				return kb << 10, err == nil
			}
		}
	}
	return 0, false
}

func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		b.Fatalf("%s=%q: want a Go duration", name, s)
	}
	return d
}
