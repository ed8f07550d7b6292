package exporter_test

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mqagent/mqagent/pkg/exporter"
	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
)

var (
	topics = protocol.Topics{Prefix: protocol.DefaultPrefix}
	// now is one minute after the fixtures' newest message.
	now = time.Date(2026, 11, 25, 10, 1, 10, 0, time.UTC)
)

// feed applies testdata/{host}.{kind}.json for each name "host.kind".
func feed(t *testing.T, v *fleet.View, names ...string) {
	t.Helper()
	for _, n := range names {
		host, kind, _ := strings.Cut(n, ".")
		b, err := os.ReadFile(filepath.Join("testdata", n+".json"))
		if err != nil {
			t.Fatal(err)
		}
		topic := map[string]string{"status": topics.Status(host), "inventory": topics.Inventory(host), "metrics": topics.Metrics(host)}[kind]
		if !v.Apply(topic, b) {
			t.Fatalf("%s: the view did not take it (stats %+v)", n, v.Stats())
		}
	}
}

// scrape serves c over HTTP on 127.0.0.1, fetches /metrics in the text
// format and parses it with the Prometheus text parser.
func scrape(t *testing.T, c *exporter.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(exporter.Handler(exporter.Registry(c, false)))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type %q, want text/plain", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// series finds the value of name with exactly labels (name=value pairs).
func series(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		ok := true
		for _, l := range m.GetLabel() {
			if v, has := want[l.GetName()]; !has || v != l.GetValue() {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		default:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// hostsOf lists the host label values of a family.
func hostsOf(fams map[string]*dto.MetricFamily, name string) []string {
	var out []string
	for _, m := range fams[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "host" {
				out = append(out, l.GetValue())
			}
		}
	}
	sort.Strings(out)
	return out
}

type point struct {
	name   string
	labels []string
	value  float64
	typ    dto.MetricType
}

func g(name string, v float64, labels ...string) point {
	return point{name, labels, v, dto.MetricType_GAUGE}
}

func c(name string, v float64, labels ...string) point {
	return point{name, labels, v, dto.MetricType_COUNTER}
}

func ts(s string) float64 {
	tm, _ := time.Parse(time.RFC3339, s)
	return float64(tm.Unix())
}

func TestCollectValues(t *testing.T) {
	v := fleet.New()
	feed(t, v, "web-01.inventory", "web-01.status", "web-01.metrics", "db-01.metrics", "db-01.status")
	fams := scrape(t, exporter.New(v, exporter.Options{Now: func() time.Time { return now }}))
	const w = "web-01"
	want := []point{
		g("mqagent_host_up", 1, "host", w),
		g("mqagent_host_up", 0, "host", "db-01"),
		g("mqagent_host_info", 1, "host", w, "version", "1.2.0", "os", "linux", "arch", "amd64",
			"hostname", "web-01.example.com", "platform", "debian", "platform_version", "12.8"),
		g("mqagent_host_group", 1, "host", w, "group", "web"),
		g("mqagent_host_group", 1, "host", w, "group", "eu"),
		g("mqagent_host_last_seen_timestamp_seconds", ts("2026-11-25T10:00:10Z"), "host", w),
		g("mqagent_host_last_seen_timestamp_seconds", ts("2026-11-25T09:58:00Z"), "host", "db-01"),
		g("mqagent_agent_start_time_seconds", ts("2026-11-25T09:59:58Z"), "host", w),
		g("mqagent_host_cpus", 4, "host", w),
		g("mqagent_host_boot_time_seconds", ts("2026-11-20T08:00:00Z"), "host", w),
		g("mqagent_host_metrics_timestamp_seconds", ts("2026-11-25T10:00:10Z"), "host", w),
		g("mqagent_host_metrics_errors", 1, "host", w),
		g("mqagent_host_cpu_usage_ratio", 0.125, "host", w),
		g("mqagent_host_load1", 0.42, "host", w),
		g("mqagent_host_load5", 0.3, "host", w),
		g("mqagent_host_load15", 0.25, "host", w),
		g("mqagent_host_memory_total_bytes", 8221646848, "host", w),
		g("mqagent_host_memory_used_bytes", 2147483648, "host", w),
		g("mqagent_host_memory_available_bytes", 6074163200, "host", w),
		g("mqagent_host_swap_total_bytes", 1073737728, "host", w),
		g("mqagent_host_swap_used_bytes", 1048576, "host", w),
		// The fixture lists "/" twice: the first one is reported.
		g("mqagent_host_filesystem_size_bytes", 52521566208, "host", w, "mount", "/"),
		g("mqagent_host_filesystem_used_bytes", 10737418240, "host", w, "mount", "/"),
		g("mqagent_host_filesystem_usage_ratio", 0.2184, "host", w, "mount", "/"),
		g("mqagent_host_filesystem_size_bytes", 535805952, "host", w, "mount", "/boot/efi"),
		c("mqagent_host_disk_read_bytes_total", 123456789, "host", w, "device", "sda"),
		c("mqagent_host_disk_written_bytes_total", 987654321, "host", w, "device", "sda"),
		c("mqagent_host_disk_reads_completed_total", 1000, "host", w, "device", "sda"),
		c("mqagent_host_disk_writes_completed_total", 2000, "host", w, "device", "sda"),
		c("mqagent_host_disk_io_time_seconds_total", 4.5, "host", w, "device", "sda"),
		c("mqagent_host_network_receive_bytes_total", 9000000, "host", w, "device", "eth0"),
		c("mqagent_host_network_transmit_bytes_total", 5000000, "host", w, "device", "eth0"),
		c("mqagent_host_network_receive_packets_total", 9000, "host", w, "device", "eth0"),
		c("mqagent_host_network_transmit_packets_total", 5000, "host", w, "device", "eth0"),
		c("mqagent_host_network_receive_errors_total", 1, "host", w, "device", "eth0"),
		c("mqagent_host_network_transmit_errors_total", 2, "host", w, "device", "eth0"),
		c("mqagent_host_network_receive_drop_total", 3, "host", w, "device", "eth0"),
		c("mqagent_host_network_transmit_drop_total", 4, "host", w, "device", "eth0"),
		c("mqagent_host_network_receive_bytes_total", 100, "host", w, "device", "lo"),
		g("mqagent_host_uptime_seconds", 439210, "host", w),
		g("mqagent_host_processes", 187, "host", w),
		g("mqagent_agent_resident_memory_bytes", 9437184, "host", w),
		g("mqagent_agent_cpu_usage_ratio", 0.005, "host", w),
		g("mqagent_agent_goroutines", 23, "host", w),
		g("mqagent_agent_commands_running", 1, "host", w),
		g("mqagent_agent_commands_queued", 2, "host", w),
		g("mqagent_agent_outbox_messages", 3, "host", w),
		c("mqagent_agent_reconnects_total", 4, "host", w),
		g("mqagent_fleet_hosts", 1, "state", "online"),
		g("mqagent_fleet_hosts", 1, "state", "offline"),
		g("mqagent_fleet_hosts", 0, "state", "unknown"),
		c("mqagent_fleet_messages_total", 5),
		c("mqagent_fleet_malformed_messages_total", 0),
		c("mqagent_fleet_stale_statuses_total", 0),
	}
	for _, p := range want {
		got, ok := series(fams, p.name, p.labels...)
		if !ok {
			t.Errorf("%s%v: missing", p.name, p.labels)
			continue
		}
		if math.Abs(got-p.value) > 1e-9*math.Max(1, math.Abs(p.value)) {
			t.Errorf("%s%v = %v, want %v", p.name, p.labels, got, p.value)
		}
		if typ := fams[p.name].GetType(); typ != p.typ {
			t.Errorf("%s: type %v, want %v", p.name, typ, p.typ)
		}
	}
	// One series per mount, although the sample lists "/" twice.
	if n := len(fams["mqagent_host_filesystem_size_bytes"].GetMetric()); n != 2 {
		t.Errorf("filesystem series: %d, want 2", n)
	}
	// db-01 is offline: its last sample is not reported.
	if hosts := hostsOf(fams, "mqagent_host_cpu_usage_ratio"); !slices.Equal(hosts, []string{w}) {
		t.Errorf("cpu series for %v, want only %s", hosts, w)
	}
	if hosts := hostsOf(fams, "mqagent_host_info"); !slices.Equal(hosts, []string{"db-01", w}) {
		t.Errorf("info series for %v", hosts)
	}
}

func TestCollectLint(t *testing.T) {
	v := fleet.New()
	feed(t, v, "web-01.inventory", "web-01.status", "web-01.metrics")
	problems, err := testutil.CollectAndLint(exporter.New(v, exporter.Options{Now: func() time.Time { return now }}))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// TestStaleness: which hosts and samples are reported as time passes.
func TestStaleness(t *testing.T) {
	tests := []struct {
		name     string
		after    time.Duration // since the fixtures' newest message
		opts     exporter.Options
		up       []string // hosts with an up series
		withCPU  []string // hosts with a cpu series
		offlineN float64
	}{
		{name: "fresh", after: time.Minute, up: []string{"db-01", "web-01"}, withCPU: []string{"web-01"}, offlineN: 1},
		{name: "sample too old", after: 6 * time.Minute, up: []string{"db-01", "web-01"}, offlineN: 1},
		{name: "sample age unbounded", after: 6 * time.Minute, opts: exporter.Options{MetricsMaxAge: -1},
			up: []string{"db-01", "web-01"}, withCPU: []string{"web-01"}, offlineN: 1},
		{name: "offline host dropped after a day, online one kept", after: 25 * time.Hour, up: []string{"web-01"}},
		{name: "short staleness", after: 3 * time.Minute, opts: exporter.Options{StaleAfter: 2 * time.Minute},
			up: []string{"web-01"}, withCPU: []string{"web-01"}},
		{name: "kept forever", after: 1000 * time.Hour, opts: exporter.Options{StaleAfter: -1},
			up: []string{"db-01", "web-01"}, offlineN: 1},
	}
	newest, _ := time.Parse(time.RFC3339, "2026-11-25T10:00:10Z")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := fleet.New()
			feed(t, v, "web-01.inventory", "web-01.status", "web-01.metrics", "db-01.metrics", "db-01.status")
			o := tc.opts
			o.Now = func() time.Time { return newest.Add(tc.after) }
			fams := scrape(t, exporter.New(v, o))
			if got := hostsOf(fams, "mqagent_host_up"); !slices.Equal(got, tc.up) {
				t.Errorf("up for %v, want %v", got, tc.up)
			}
			if got := hostsOf(fams, "mqagent_host_cpu_usage_ratio"); !slices.Equal(got, tc.withCPU) {
				t.Errorf("cpu for %v, want %v", got, tc.withCPU)
			}
			if got, _ := series(fams, "mqagent_fleet_hosts", "state", "offline"); got != tc.offlineN {
				t.Errorf("offline hosts %v, want %v", got, tc.offlineN)
			}
		})
	}
}

// TestHostGone: a host whose retained status is cleared has no series
// left (no gauge vector keeps it).
func TestHostGone(t *testing.T) {
	v := fleet.New()
	feed(t, v, "web-01.inventory", "web-01.status", "web-01.metrics", "db-01.status")
	col := exporter.New(v, exporter.Options{Now: func() time.Time { return now }})
	if got := hostsOf(scrape(t, col), "mqagent_host_up"); !slices.Equal(got, []string{"db-01", "web-01"}) {
		t.Fatalf("before: %v", got)
	}
	v.Apply(topics.Status("web-01"), nil)
	fams := scrape(t, col)
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "host" && l.GetValue() == "web-01" {
					t.Errorf("%s still has web-01", name)
				}
			}
		}
	}
}

// TestUnknownState: a host known from its inventory only (no status yet)
// is up=0 and counted as unknown.
func TestUnknownState(t *testing.T) {
	v := fleet.New()
	feed(t, v, "web-01.inventory")
	fams := scrape(t, exporter.New(v, exporter.Options{Now: func() time.Time { return now }}))
	if up, ok := series(fams, "mqagent_host_up", "host", "web-01"); !ok || up != 0 {
		t.Errorf("up %v %v, want 0", up, ok)
	}
	if n, _ := series(fams, "mqagent_fleet_hosts", "state", "unknown"); n != 1 {
		t.Errorf("unknown hosts %v, want 1", n)
	}
}

// TestOddLabels: label values with quotes, backslashes, newlines and
// non-ASCII text survive the text format.
func TestOddLabels(t *testing.T) {
	v := fleet.New()
	mount := "C:\\Data \"x\"\né"
	b := fmt.Appendf(nil, `{"v":1,"host":"w","ts":"2026-11-25T10:00:10Z","cpu":{"percent":1},"disks":[{"mount":%q,"total":10,"used":5,"percent":50}]}`, mount)
	if !v.Apply(topics.Metrics("w"), b) {
		t.Fatal("not applied")
	}
	fams := scrape(t, exporter.New(v, exporter.Options{Now: func() time.Time { return now }}))
	if got, ok := series(fams, "mqagent_host_filesystem_used_bytes", "host", "w", "mount", mount); !ok || got != 5 {
		t.Errorf("odd mount: %v %v", got, ok)
	}
}

// BenchmarkCollect10k measures a scrape of 10,000 hosts.
func BenchmarkCollect10k(b *testing.B) {
	v := fleet.New()
	raw, err := os.ReadFile(filepath.Join("testdata", "web-01.metrics.json"))
	if err != nil {
		b.Fatal(err)
	}
	st, _ := os.ReadFile(filepath.Join("testdata", "web-01.status.json"))
	for i := range 10000 {
		h := fmt.Sprintf("h%05d", i)
		v.Apply(topics.Status(h), []byte(strings.ReplaceAll(string(st), "web-01", h)))
		v.Apply(topics.Metrics(h), []byte(strings.ReplaceAll(string(raw), "web-01", h)))
	}
	reg := exporter.Registry(exporter.New(v, exporter.Options{Now: func() time.Time { return now }}), false)
	b.ResetTimer()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestGrafanaDashboard: deploy/grafana/mqagent.json is valid JSON, reads
// its data source from a variable, and uses only metrics this exporter
// serves.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "mqagent.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title      string `json:"title"`
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Type, Name, Query any
			} `json:"list"`
		} `json:"templating"`
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("not valid JSON: %v", err)
	}
	hasDS := false
	for _, v := range dash.Templating.List {
		if v.Type == "datasource" && v.Name == "datasource" && v.Query == "prometheus" {
			hasDS = true
		}
	}
	if !hasDS || dash.UID == "" || len(dash.Panels) < 10 {
		t.Fatalf("dashboard %q: datasource variable %v, %d panels", dash.Title, hasDS, len(dash.Panels))
	}
	// Every panel reads the data source variable.
	if n := strings.Count(string(b), `"uid": "${datasource}"`); n < len(dash.Panels) {
		t.Errorf("%d references to ${datasource} for %d panels", n, len(dash.Panels))
	}
	ch := make(chan *prometheus.Desc, 128)
	exporter.New(fleet.New(), exporter.Options{}).Describe(ch)
	close(ch)
	known := map[string]bool{}
	for d := range ch {
		// Desc has no accessor for its name: read it from String().
		s := d.String()
		i := strings.Index(s, `fqName: "`) + len(`fqName: "`)
		known[s[i:i+strings.IndexByte(s[i:], '"')]] = true
	}
	used := regexp.MustCompile(`mqagent_[a-z0-9_]+`).FindAllString(string(b), -1)
	if len(used) == 0 {
		t.Fatal("no mqagent metric used")
	}
	for _, name := range used {
		if !known[name] {
			t.Errorf("the dashboard uses %s, which the exporter does not serve", name)
		}
	}
}
