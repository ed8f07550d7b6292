package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mqagent/mqagent/pkg/client"
	"github.com/mqagent/mqagent/pkg/dashboard"
	"github.com/mqagent/mqagent/pkg/dashboard/dashboardtest"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// watchJS installs window.__watch(id, state): a promise of the time
// (Date.now()) at which the table row of host id shows that state,
// observed with a MutationObserver (no polling).
const watchJS = `window.__watch = (id, want) => new Promise(resolve => {
  const body = document.getElementById('tbody');
  const check = () => {
    const el = body.querySelector('.row[data-host="' + id + '"]');
    return el && el.dataset.state === want;
  };
  if (check()) { resolve(Date.now()); return; }
  const mo = new MutationObserver(() => { if (check()) { mo.disconnect(); resolve(Date.now()); } });
  mo.observe(body, { subtree: true, attributes: true, childList: true, attributeFilter: ['data-state', 'data-host'] });
}); true`

// BenchmarkDashboard10k measures the dashboard with a large simulated
// fleet (MQAGENT_DASHBOARD_HOSTS, default 10,000) in headless Chromium,
// against a real Mosquitto: one MQTT client publishes a retained status
// and inventory and a metrics sample per host, then keeps publishing
// metrics samples (MQAGENT_DASHBOARD_CHURN per second, default 1,000: the
// whole fleet at the agents' default 10 s interval) while the page is
// measured. It reports:
//
//	load_ms          page opened until every host is counted and rows drawn
//	latency_p50_ms   a status change published until the host's row shows
//	latency_p95_ms     it (MutationObserver in the page), over 20 changes
//	latency_max_ms
//	js_heap_MiB      the page's JavaScript heap after a garbage collection
//	renderer_MiB     memory of the renderer processes (Linux: proportional
//	                 set size, shared pages divided between processes)
//	dom_nodes        elements in the page (the table draws only what is in view)
//	snapshot_MiB     size of the first message (every host)
//	server_heap_MiB  Go heap in use of this process: the dashboard, its
//	                 MQTT client and the simulated fleet's
//
// It runs once whatever b.N is, in about a minute:
//
//	go test -run '^$' -bench Dashboard10k -benchtime 1x -timeout 10m ./test/bench
//
// It skips without Chromium (fails under CI=true).
func BenchmarkDashboard10k(b *testing.B) {
	n := dashEnvInt(b, "MQAGENT_DASHBOARD_HOSTS", 10000)
	if n < 100 {
		b.Fatalf("MQAGENT_DASHBOARD_HOSTS=%d: want 100 or more", n)
	}
	churn := dashEnvInt(b, "MQAGENT_DASHBOARD_CHURN", 1000)
	bctx := dashboardtest.Browser(b, 5*time.Minute, chromedp.Flag("js-flags", "--expose-gc"))
	mq := harness.StartMosquitto(b)

	sim := dashboardtest.NewSimFleet(b, mq.URL(), n)
	t0 := time.Now()
	sim.PublishAll()
	b.Logf("published %d hosts (3 messages each) in %v", n, time.Since(t0).Round(time.Millisecond))

	ctx, cancel := context.WithCancel(context.Background())
	c, err := client.Dial(client.Options{URL: mq.URL(), Timeout: 30 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	srvDone := make(chan struct{})
	var s *dashboard.Server
	b.Cleanup(func() {
		cancel()
		<-srvDone
		if s != nil {
			s.Wait()
		}
		c.Close()
	})
	t0 = time.Now()
	s, err = dashboard.Connect(ctx, c, dashboard.Options{})
	if err != nil {
		close(srvDone)
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		close(srvDone)
		b.Fatal(err)
	}
	go func() {
		defer close(srvDone)
		_ = s.Serve(ctx, ln, "", "")
	}()
	base := "http://" + ln.Addr().String()
	view := c.FleetView()
	dashWaitCond(b, time.Minute, "the dashboard's view to hold every host", func() bool { return view.Len() == n })
	b.Logf("dashboard view loaded %d hosts in %v", n, time.Since(t0).Round(time.Millisecond))

	// Metrics churn while the page is measured.
	var wg sync.WaitGroup
	churnCtx, stopChurn := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if churn <= 0 {
			return
		}
		rnd := rand.New(rand.NewPCG(3, 4))
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-churnCtx.Done():
				return
			case <-tick.C:
			}
			for i := 0; i < churn/10; i++ {
				// Not the hosts whose status the latency test flips.
				sim.Metrics(dashboardtest.HostID(20+rnd.IntN(n-20)), -1)
			}
		}
	}()
	defer func() { stopChurn(); wg.Wait() }()

	// Page load.
	msgs0 := view.Stats().Messages
	t0 = time.Now()
	if err := chromedp.Do(bctx, chromedp.Navigate(base+"/")); err != nil {
		b.Fatal(err)
	}
	dashboardtest.WaitJS(b, bctx, time.Minute, "every host counted and drawn",
		fmt.Sprintf(`document.getElementById('count-total').textContent === '%d' && document.querySelector('#tbody .row[data-host="%s"]')`, n, dashboardtest.HostID(0)),
		`document.getElementById('count-total').textContent`)
	load := time.Since(t0)

	// The first message's size (what the page just loaded).
	resp, err := http.Get(base + "/api/overview")
	if err != nil {
		b.Fatal(err)
	}
	snap, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	// Update latency: flip the status of hosts in view.
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](watchJS)); err != nil {
		b.Fatal(err)
	}
	var lat []float64
	rnd := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 20; i++ {
		h := dashboardtest.HostID(i)
		// A random phase: the deltas leave on a 500 ms tick, and a loop
		// in step with it would always measure the same point of it.
		time.Sleep(time.Duration(rnd.IntN(500)) * time.Millisecond)
		if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](fmt.Sprintf(`window.__p = __watch(%q, "offline"); true`, h))); err != nil {
			b.Fatal(err)
		}
		start := sim.SetOnline(h, false)
		wctx, wcancel := context.WithTimeout(bctx, 30*time.Second)
		seen, err := chromedp.Run(wctx, chromedp.Evaluate[int64](`window.__p`, chromedp.EvalAwaitPromise))
		wcancel()
		if err != nil {
			b.Fatalf("%s never shown offline: %v", h, err)
		}
		lat = append(lat, float64(seen-start.UnixMilli()))
		sim.SetOnline(h, true) // back online, not measured
	}
	slices.Sort(lat)

	// Memory.
	heap, err := chromedp.Run(bctx, chromedp.Evaluate[float64](`(window.gc && gc(), performance.memory.usedJSHeapSize)`))
	if err != nil {
		b.Fatal(err)
	}
	nodes, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.getElementsByTagName('*').length`))
	if err != nil {
		b.Fatal(err)
	}
	rss, renderers, rssErr := dashboardtest.RendererRSS(bctx)
	stopChurn()
	wg.Wait()
	b.Logf("the dashboard received %.0f telemetry messages/s while measured", float64(view.Stats().Messages-msgs0)/time.Since(t0).Seconds())
	dashboardtest.Screenshot(b, bctx, dashboardtest.ArtifactDir(b), fmt.Sprintf("%d-hosts", n))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)

	probe, _ := chromedp.Run(bctx, chromedp.Evaluate[map[string]any](`window.__mqagent`))
	b.Logf("page counters: %v", probe)
	b.ReportMetric(float64(load.Milliseconds()), "load_ms")
	b.ReportMetric(lat[len(lat)/2], "latency_p50_ms")
	b.ReportMetric(lat[len(lat)*95/100], "latency_p95_ms")
	b.ReportMetric(lat[len(lat)-1], "latency_max_ms")
	b.ReportMetric(heap/(1<<20), "js_heap_MiB")
	if rssErr == nil {
		b.ReportMetric(float64(rss)/(1<<20), "renderer_MiB")
		b.Logf("renderer processes: %d", renderers)
	} else {
		b.Logf("renderer memory: %v", rssErr)
	}
	b.ReportMetric(float64(nodes), "dom_nodes")
	b.ReportMetric(float64(len(snap))/(1<<20), "snapshot_MiB")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "server_heap_MiB")
	var st dashboard.Snapshot
	if err := json.Unmarshal(snap, &st); err != nil || len(st.Hosts) != n {
		b.Errorf("overview: %d hosts (%v)", len(st.Hosts), err)
	}
}

func dashEnvInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		b.Fatalf("%s=%q: want a number", name, s)
	}
	return v
}

// dashWaitCond polls cond every 20 ms until it holds or timeout passes.
func dashWaitCond(b *testing.B, timeout time.Duration, what string, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
