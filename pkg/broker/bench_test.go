package broker

import (
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkRoundTrip measures publish → broker → subscriber latency over
// loopback TCP with paho (QoS 1 both ways, one message in flight at a
// time) and reports its percentiles.
func BenchmarkRoundTrip(b *testing.B) {
	for _, dataDir := range []bool{false, true} {
		name := "memory"
		if dataDir {
			name = "datadir"
		}
		b.Run(name, func(b *testing.B) {
			opts := Options{Logger: slog.New(slog.DiscardHandler)}
			if dataDir {
				opts.DataDir = b.TempDir()
			}
			br := startBroker(b, opts)
			url := "tcp://" + br.TCPAddr()
			sub := dial(b, url, "bench-sub", dialOpts{}) // persistent, as an agent
			sub.subscribe(b, "bench/cmd", 1)
			pub := dial(b, url, "bench-pub", dialOpts{clean: true})
			lat := make([]time.Duration, 0, b.N)
			for i := 0; b.Loop(); i++ {
				start := time.Now()
				pub.Publish("bench/cmd", 1, false, strconv.Itoa(i))
				m := sub.next(b)
				lat = append(lat, time.Since(start))
				if string(m.Payload()) != strconv.Itoa(i) {
					b.Fatalf("got %q, want %d", m.Payload(), i)
				}
			}
			slices.Sort(lat)
			pct := func(p float64) float64 { return lat[int(p*float64(len(lat)-1))].Seconds() * 1e6 }
			b.ReportMetric(pct(0.50), "p50-µs")
			b.ReportMetric(pct(0.99), "p99-µs")
		})
	}
}
