package dashboard_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/dashboard"
	"github.com/mqagent/mqagent/pkg/fleet"
)

// BenchmarkSnapshot10k measures the first message a browser gets for
// 10,000 hosts (every row, encoded), served over HTTP on 127.0.0.1.
// test/bench BenchmarkDashboard10k measures the whole page in Chromium.
func BenchmarkSnapshot10k(b *testing.B) {
	v := fleet.New()
	for i := range 10000 {
		h := hostN(i)
		v.Apply(topics.Status(h), status(h, true, 1, 0))
		v.Apply(topics.Metrics(h), metrics(h, 1, float64(i%100), uint64(i)))
	}
	r := newRig(b, dashboard.Options{View: v, Interval: 50 * time.Millisecond})
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, b2 := r.get("/api/overview")
		if resp.StatusCode == http.StatusOK && len(b2) > 1_000_000 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the dashboard did not load the hosts")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.ResetTimer()
	var size int
	for b.Loop() {
		_, body := r.get("/api/overview")
		size = len(body)
	}
	b.ReportMetric(float64(size)/(1<<20), "MiB")
}
