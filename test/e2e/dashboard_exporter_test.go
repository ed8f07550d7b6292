package e2e

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// dashScrape fetches /metrics in the text format and parses it with the
// Prometheus text parser.
func dashScrape(t *testing.T, s *dashServer) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/metrics", nil)
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// dashValue finds a series by its labels (every one given must match, the
// others are ignored) and returns its value.
func dashValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, map[string]string, bool) {
	for _, m := range fams[name].GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		ok := true
		for k, v := range labels {
			if got[k] != v {
				ok = false
			}
		}
		if !ok {
			continue
		}
		switch {
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), got, true
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), got, true
		default:
			return m.GetUntyped().GetValue(), got, true
		}
	}
	return 0, nil, false
}

// TestDashboardExporter runs `mqagent exporter` against real agents
// on a real Mosquitto and checks its metrics against what the agents
// published: presence, identity, and every value of the metrics sample the
// exporter reports (found by its timestamp).
func TestDashboardExporter(t *testing.T) {
	e := newEnv(t, false)
	hosts := []string{"exp-a", "exp-b"}
	e.op.Watch(e.op.Topics().Metrics("+"))
	agents := map[string]*harness.Agent{}
	statuses := map[string]protocol.Status{}
	for _, h := range hosts {
		agents[h] = e.agent(h, dashMetricsEvery("1s"), withGroups("db", "eu"))
		statuses[h] = e.waitOnline(agents[h])
	}
	srv := startDashServer(t, e.bin, "exporter", "--listen", "127.0.0.1:0", "--broker", e.broker.URL())

	// Wait until the exporter reports a sample of each host, then check
	// that sample's values against the one the agent published.
	var fams map[string]*dto.MetricFamily
	deadline := time.Now().Add(wait)
	for {
		fams = dashScrape(t, srv)
		n := 0
		for _, h := range hosts {
			if _, _, ok := dashValue(fams, "mqagent_host_metrics_timestamp_seconds", map[string]string{"host": h}); ok {
				n++
			}
		}
		if n == len(hosts) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sample reported for every host within %v", wait)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, h := range hosts {
		l := map[string]string{"host": h}
		if v, _, _ := dashValue(fams, "mqagent_host_up", l); v != 1 {
			t.Errorf("%s: up %v", h, v)
		}
		_, info, ok := dashValue(fams, "mqagent_host_info", l)
		st := statuses[h]
		if !ok || info["version"] != st.Version || info["os"] != runtime.GOOS || info["arch"] != st.Arch || info["hostname"] == "" {
			t.Errorf("%s: info %v, status %+v", h, info, st)
		}
		for _, g := range []string{"db", "eu"} {
			if v, _, ok := dashValue(fams, "mqagent_host_group", map[string]string{"host": h, "group": g}); !ok || v != 1 {
				t.Errorf("%s: group %s missing", h, g)
			}
		}
		ts, _, _ := dashValue(fams, "mqagent_host_metrics_timestamp_seconds", l)
		m := dashSampleAt(t, e, h, ts)
		check := func(name string, labels map[string]string, want float64) {
			t.Helper()
			got, _, ok := dashValue(fams, name, labels)
			if !ok {
				t.Errorf("%s %v: missing", name, labels)
				return
			}
			if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
				t.Errorf("%s %v = %v, the agent published %v", name, labels, got, want)
			}
		}
		check("mqagent_host_cpu_usage_ratio", l, m.CPU.Percent/100)
		check("mqagent_host_memory_total_bytes", l, float64(m.Mem.Total))
		check("mqagent_host_memory_used_bytes", l, float64(m.Mem.Used))
		check("mqagent_host_memory_available_bytes", l, float64(m.Mem.Available))
		check("mqagent_host_swap_used_bytes", l, float64(m.Swap.Used))
		check("mqagent_host_processes", l, float64(m.Procs))
		check("mqagent_host_uptime_seconds", l, float64(m.UptimeMS)/1000)
		check("mqagent_agent_resident_memory_bytes", l, float64(m.Agent.RSSBytes))
		check("mqagent_agent_goroutines", l, float64(m.Agent.Goroutines))
		if m.Load != nil {
			check("mqagent_host_load1", l, m.Load.L1)
		}
		if len(m.Disks) == 0 || len(m.Net) == 0 {
			t.Fatalf("%s: the sample has no filesystem or interface: %+v", h, m)
		}
		seen := map[string]bool{}
		for _, d := range m.Disks {
			if seen[d.Mount] {
				continue
			}
			seen[d.Mount] = true
			fl := map[string]string{"host": h, "mount": d.Mount}
			check("mqagent_host_filesystem_size_bytes", fl, float64(d.Total))
			check("mqagent_host_filesystem_used_bytes", fl, float64(d.Used))
			check("mqagent_host_filesystem_usage_ratio", fl, d.Percent/100)
		}
		for _, n := range m.Net {
			nl := map[string]string{"host": h, "device": n.Name}
			check("mqagent_host_network_receive_bytes_total", nl, float64(n.BytesRecv))
			check("mqagent_host_network_transmit_bytes_total", nl, float64(n.BytesSent))
		}
		if typ := fams["mqagent_host_network_receive_bytes_total"].GetType(); typ != dto.MetricType_COUNTER {
			t.Errorf("network bytes: %v, want a counter", typ)
		}
	}
	if v, _, _ := dashValue(fams, "mqagent_fleet_hosts", map[string]string{"state": "online"}); v != 2 {
		t.Errorf("fleet online %v", v)
	}

	// A host that stops: up 0, no sample values any more.
	agents["exp-b"].Stop()
	deadline = time.Now().Add(wait)
	for {
		fams = dashScrape(t, srv)
		up, _, ok := dashValue(fams, "mqagent_host_up", map[string]string{"host": "exp-b"})
		_, _, cpu := dashValue(fams, "mqagent_host_cpu_usage_ratio", map[string]string{"host": "exp-b"})
		off, _, _ := dashValue(fams, "mqagent_fleet_hosts", map[string]string{"state": "offline"})
		if ok && up == 0 && !cpu && off == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("exp-b not reported offline: up %v (%v), cpu series %v, offline %v", up, ok, cpu, off)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, _, ok := dashValue(fams, "mqagent_host_cpu_usage_ratio", map[string]string{"host": "exp-a"}); !ok {
		t.Error("exp-a lost its cpu series")
	}
	// The landing page and the health check.
	if resp, b := srv.get("/"); resp.StatusCode != 200 || !bytes.Contains(b, []byte(`href="/metrics"`)) {
		t.Errorf("/: %s %s", resp.Status, b)
	}
	if resp, b := srv.get("/healthz"); resp.StatusCode != 200 || !strings.Contains(string(b), `"hosts":2`) {
		t.Errorf("/healthz: %s %s", resp.Status, b)
	}
}

// dashSampleAt returns the metrics sample host published with this ts
// (seconds since the epoch, as the exporter reports it), waiting for the
// operator to receive it too.
func dashSampleAt(t *testing.T, e *env, host string, ts float64) protocol.Metrics {
	t.Helper()
	var m protocol.Metrics
	e.op.WaitMessage(t, e.op.Topics().Metrics(host), func(msg harness.Message) bool {
		m = protocol.Metrics{}
		return json.Unmarshal(msg.Payload, &m) == nil && math.Abs(float64(m.TS.UnixNano())/1e9-ts) < 1e-3
	}, wait)
	return m
}
