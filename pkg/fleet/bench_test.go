package fleet_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
)

const benchHosts = 10000

// benchFleet is a view of 10,000 online hosts with inventory and metrics,
// and the metrics payloads to feed it.
func benchFleet(b *testing.B) (*fleet.View, []string, [][]byte) {
	b.Helper()
	v := fleet.New()
	topicsM := make([]string, benchHosts)
	payloads := make([][]byte, benchHosts)
	for i := range benchHosts {
		id := fmt.Sprintf("host-%05d", i)
		v.Apply(topics.Status(id), online(id, 1, 0, "web"))
		v.Apply(topics.Inventory(id), inventory(id, 0, map[string]string{"env": "prod"}, "web"))
		topicsM[i] = topics.Metrics(id)
		payloads[i] = realisticMetrics(id)
	}
	return v, topicsM, payloads
}

// realisticMetrics is a sample about the size an agent publishes (~1 KiB).
func realisticMetrics(id string) []byte {
	return fmt.Appendf(nil, `{"v":1,"host":%q,"ts":"2026-11-25T10:00:01.000Z","cpu":{"percent":12.5},"load":{"l1":0.5,"l5":0.4,"l15":0.3},`+
		`"mem":{"total":8589934592,"used":4294967296,"available":4294967296,"percent":50},"swap":{"total":0,"used":0},`+
		`"disks":[{"mount":"/","total":107374182400,"used":53687091200,"percent":50},{"mount":"/boot","total":1073741824,"used":107374182,"percent":10}],`+
		`"net":[{"name":"eth0","bytes_sent":123456789,"bytes_recv":987654321,"packets_sent":12345,"packets_recv":54321}],`+
		`"uptime_ms":123456789,"procs":210,"agent":{"rss_bytes":10485760,"cpu_percent":0.1,"goroutines":20,"running":0,"queued":0}}`, id)
}

// BenchmarkApplyMetrics feeds metrics samples (~1 KiB, as an agent
// publishes them) to a view of 10,000 hosts, one sample per op, each newer
// than its host's last one.
func BenchmarkApplyMetrics(b *testing.B) {
	v, topicsM, _ := benchFleet(b)
	const rounds = 8 // pre-built samples: rounds x hosts
	payloads := make([][]byte, rounds*benchHosts)
	for r := range rounds {
		for k := range benchHosts {
			payloads[r*benchHosts+k] = realisticMetricsAt(fmt.Sprintf("host-%05d", k), r+2)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		j := i % len(payloads)
		if j == 0 && i > 0 {
			b.StopTimer()
			v, _, _ = benchFleet(b) // start again from older samples
			b.StartTimer()
		}
		if !v.Apply(topicsM[j%benchHosts], payloads[j]) {
			b.Fatal("sample not applied")
		}
	}
}

func realisticMetricsAt(id string, sec int) []byte {
	ts := fmt.Sprintf("2026-11-25T10:00:%02d.000Z", sec)
	return []byte(strings.Replace(string(realisticMetrics(id)), "2026-11-25T10:00:01.000Z", ts, 1))
}

// BenchmarkApplyStatus applies a status change (online <-> offline) to a
// view of 10,000 hosts, with one subscriber that is not reading.
func BenchmarkApplyStatus(b *testing.B) {
	v, _, _ := benchFleet(b)
	_, cancel := v.Subscribe(0)
	defer cancel()
	on := make([][]byte, benchHosts)
	off := make([][]byte, benchHosts)
	st := make([]string, benchHosts)
	for i := range benchHosts {
		id := fmt.Sprintf("host-%05d", i)
		st[i] = topics.Status(id)
		on[i] = online(id, 2, 100)
		off[i] = offline(id, protocol.ReasonShutdown, 2, 101)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		j := i % benchHosts
		p := on[j]
		if (i/benchHosts)%2 == 1 {
			p = off[j]
		}
		v.Apply(st[j], p)
	}
}

// BenchmarkSnapshot copies and sorts a view of 10,000 hosts.
func BenchmarkSnapshot(b *testing.B) {
	v, _, _ := benchFleet(b)
	b.ReportAllocs()
	for b.Loop() {
		if len(v.Snapshot()) != benchHosts {
			b.Fatal("wrong size")
		}
	}
}

// BenchmarkResolveFacts resolves a facts filter over 10,000 hosts.
func BenchmarkResolveFacts(b *testing.B) {
	v, _, _ := benchFleet(b)
	f := &protocol.Filter{Facts: map[string]string{"env": "prod"}}
	b.ReportAllocs()
	for b.Loop() {
		r, _ := v.Resolve(fleet.Target{Group: "web"}, f, fleet.ResolveOptions{})
		if len(r.Expected) != benchHosts {
			b.Fatal("wrong size")
		}
	}
}
