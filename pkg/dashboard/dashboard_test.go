package dashboard_test

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/dashboard"
	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
)

func TestOverviewSnapshotThenDeltas(t *testing.T) {
	r := newRig(t, dashboard.Options{})
	r.apply(topics.Status("a"), status("a", true, 1, 0))
	r.apply(topics.Metrics("a"), metrics("a", 1, 12.345, 1000))
	s := r.stream("/api/events")
	if ct := s.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	// The host may still be on its way from the view to the hub: the
	// snapshot, then deltas, bring it complete.
	complete := func(rows []dashboard.Row) bool { return len(rows) == 1 && rows[0].CPU != nil }
	rows := until(s, "snapshot", func(dashboard.Snapshot) bool { return true }).Hosts
	if !complete(rows) {
		rows = until(s, "delta", func(d dashboard.Delta) bool { return complete(d.Upsert) }).Upsert
	}
	a := rows[0]
	if a.ID != "a" || a.State != "online" || a.Version != "1.2.0" || a.CPU == nil || *a.CPU != 12.35 ||
		a.Disk == nil || *a.Disk != 90 || a.DiskMount != "/var" || a.Mem == nil || *a.Mem != 25 {
		t.Fatalf("row %+v", a)
	}

	// A new host, then a burst of samples: coalesced into few deltas
	// with each host at most once.
	r.apply(topics.Status("b"), status("b", true, 1, 0))
	for i := 2; i < 50; i++ {
		r.apply(topics.Metrics("a"), metrics("a", i, float64(i), uint64(1000*i)))
	}
	d := until(s, "delta", func(d dashboard.Delta) bool {
		ids := map[string]int{}
		for _, u := range d.Upsert {
			if ids[u.ID]++; ids[u.ID] > 1 {
				t.Fatalf("host %s twice in one delta", u.ID)
			}
		}
		for _, u := range d.Upsert {
			if u.ID == "a" && u.CPU != nil && *u.CPU == 49 {
				return true
			}
		}
		return false
	})
	if d.Stats.Hosts != 2 || d.Stats.Online != 2 || d.Stats.Versions["1.2.0"] != 2 {
		t.Errorf("stats %+v", d.Stats)
	}

	// Offline: the metrics columns empty, the counts move.
	r.apply(topics.Status("b"), status("b", false, 1, 60))
	d = until(s, "delta", func(d dashboard.Delta) bool { return len(d.Upsert) > 0 && d.Upsert[0].ID == "b" })
	if b := d.Upsert[0]; b.State != "offline" || b.Reason != "shutdown" || b.CPU != nil {
		t.Errorf("offline row %+v", b)
	}
	if d.Stats.Offline != 1 || d.Stats.Online != 1 {
		t.Errorf("stats %+v", d.Stats)
	}

	// A cleared retained status removes the host.
	r.view.Apply(topics.Status("b"), nil)
	d = until(s, "delta", func(d dashboard.Delta) bool { return len(d.Remove) > 0 })
	if !slices.Equal(d.Remove, []string{"b"}) || d.Stats.Hosts != 1 {
		t.Errorf("remove %v, stats %+v", d.Remove, d.Stats)
	}
}

// TestCoalescing: however many changes arrive within an interval, the
// browser gets at most one message per interval.
func TestCoalescing(t *testing.T) {
	const interval = 100 * time.Millisecond
	r := newRig(t, dashboard.Options{Interval: interval})
	s := r.stream("/api/events")
	s.next("snapshot")
	start := time.Now()
	stop := start.Add(600 * time.Millisecond)
	n := 0
	for sec := 1; time.Now().Before(stop); sec++ {
		for h := 0; h < 20; h++ {
			r.apply(topics.Metrics(hostN(h)), metrics(hostN(h), sec, 1, 0))
			n++
		}
	}
	elapsed := time.Since(start)
	deltas := 0
	for {
		select {
		case ev := <-s.events:
			if ev.name == "delta" {
				deltas++
			}
			continue
		case <-time.After(2 * interval):
		}
		break
	}
	if max := int(elapsed/interval) + 3; deltas > max || deltas == 0 {
		t.Fatalf("%d deltas for %d changes in %v, want 1..%d", deltas, n, elapsed, max)
	}
}

func TestHostDetailAndHistory(t *testing.T) {
	r := newRig(t, dashboard.Options{History: 5})
	r.apply(topics.Status("a"), status("a", true, 1, 0))
	var d dashboard.HostDetail
	// One sample at a time: samples of one host arriving faster than the
	// dashboard takes them are coalesced (the chart gets the latest).
	for i := 1; i <= 8; i++ {
		r.apply(topics.Metrics("a"), metrics("a", i*10, float64(i), uint64(i)*10_000))
		deadline := time.Now().Add(waitFor)
		for {
			resp, b := r.get("/api/hosts/a")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /api/hosts/a: %s %s", resp.Status, b)
			}
			d = dashboard.HostDetail{}
			if err := json.Unmarshal(b, &d); err != nil {
				t.Fatal(err)
			}
			if n := len(d.History.T); n > 0 && d.History.T[n-1] == at(i*10).UnixMilli() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sample %d: history %+v", i, d.History)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if len(d.History.T) != 5 {
		t.Fatalf("%d samples kept, want 5", len(d.History.T))
	}
	// The ring keeps the last five, oldest first.
	if d.History.T[0] != at(40).UnixMilli() || *d.History.CPU[0] != 4 || *d.History.CPU[4] != 8 {
		t.Errorf("history t %v cpu[0] %v", d.History.T, *d.History.CPU[0])
	}
	// 10,000 bytes more every 10 s on eth0 (lo is left out): 1000 B/s.
	if d.History.RxBps[4] == nil || *d.History.RxBps[4] != 1000 || *d.History.TxBps[4] != 500 {
		t.Errorf("rx %v tx %v", d.History.RxBps[4], d.History.TxBps[4])
	}
	if *d.History.Disk[0] != 90 || *d.History.AgentMB[0] != 8 {
		t.Errorf("disk %v agent %v", *d.History.Disk[0], *d.History.AgentMB[0])
	}
	if !d.Known || d.Host.ID != "a" || d.Metrics == nil || d.Metrics.TS.Time != at(80).Time {
		t.Errorf("detail %+v", d)
	}

	for path, want := range map[string]int{"/api/hosts/nobody": 404, "/api/hosts/bad%20id": 400, "/api/hosts/bad%20id/events": 400} {
		if resp, b := r.get(path); resp.StatusCode != want {
			t.Errorf("GET %s: %s %s, want %d", path, resp.Status, b, want)
		}
	}
}

func TestHostStream(t *testing.T) {
	r := newRig(t, dashboard.Options{})
	r.apply(topics.Status("a"), status("a", true, 1, 0))
	s := r.stream("/api/hosts/a/events")
	until(s, "host", func(d dashboard.HostDetail) bool { return d.Known })
	r.apply(topics.Metrics("a"), metrics("a", 1, 5, 0))
	until(s, "host", func(d dashboard.HostDetail) bool { return len(d.History.T) == 1 })
	// Activity counts as a change too.
	r.s.Apply(topics.Audit("a"), mustJSON(protocol.Audit{V: 1, TS: at(2), Host: "a", ID: "c1", Kind: "ping", Event: "received", Decision: "accepted"}))
	d := until(s, "host", func(d dashboard.HostDetail) bool { return len(d.Audits) == 1 })
	if len(d.Commands) != 1 || d.Commands[0].ID != "c1" || d.Commands[0].State != "queued" {
		t.Errorf("commands %+v", d.Commands)
	}
}

func TestStreamLimit(t *testing.T) {
	r := newRig(t, dashboard.Options{MaxClients: 1})
	s := r.stream("/api/events")
	s.next("snapshot")
	resp, b := r.get("/api/events")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second stream: %s %s, want 503", resp.Status, b)
	}
	s.cancel()
	// The slot is freed when the first one ends.
	deadline := time.Now().Add(waitFor)
	for {
		s2 := r.stream("/api/events")
		if s2.resp.StatusCode == http.StatusOK {
			s2.next("snapshot")
			return
		}
		s2.cancel()
		if time.Now().After(deadline) {
			t.Fatal("the stream's slot was not freed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSecurityHeaders(t *testing.T) {
	r := newRig(t, dashboard.Options{})
	for _, path := range []string{"/", "/hosts/a", "/assets/app.js", "/assets/app.css", "/assets/nope.js", "/api/session", "/api/overview", "/healthz", "/nope"} {
		resp, _ := r.get(path)
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") ||
			!strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe") {
			t.Errorf("%s: CSP %q", path, csp)
		}
		for k, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"} {
			if got := h.Get(k); got != want {
				t.Errorf("%s: %s %q, want %q", path, k, got, want)
			}
		}
	}
	resp, b := r.get("/assets/app.js")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/javascript; charset=utf-8" || resp.Header.Get("ETag") == "" {
		t.Errorf("app.js: %s %q %q", resp.Status, resp.Header.Get("Content-Type"), resp.Header.Get("ETag"))
	}
	// Nothing is fetched from elsewhere, no inline script or style.
	_, page := r.get("/")
	for _, bad := range []string{"http://", "https://", "<script>", "style=", "onclick", "onload"} {
		if strings.Contains(string(page), bad) {
			t.Errorf("index.html contains %q", bad)
		}
	}
	for _, bad := range []string{"innerHTML", "eval(", "new Function", "http://", "https://"} {
		if strings.Contains(string(b), bad) {
			t.Errorf("app.js contains %q", bad)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, r.srv.URL+"/assets/app.js", nil)
	req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
	if resp, _ := r.do(req); resp.StatusCode != http.StatusNotModified {
		t.Errorf("revalidation: %s, want 304", resp.Status)
	}
}

func TestNewChecks(t *testing.T) {
	v := fleet.New()
	users := users(t, "u", "long enough")
	tests := []struct {
		name string
		o    dashboard.Options
		ok   bool
	}{
		{"no view", dashboard.Options{}, false},
		{"read-only", dashboard.Options{View: v}, true},
		{"signer without sender", dashboard.Options{View: v, Signer: signer(), Users: users}, false},
		{"sender without signer", dashboard.Options{View: v, Sender: &fakeSender{}, Users: users}, false},
		{"commands without users", dashboard.Options{View: v, Sender: &fakeSender{}, Signer: signer()}, false},
		{"require login without users", dashboard.Options{View: v, RequireLogin: true}, false},
		{"commands", dashboard.Options{View: v, Sender: &fakeSender{}, Signer: signer(), Users: users}, true},
	}
	for _, tc := range tests {
		s, err := dashboard.New(tc.o)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v", tc.name, err)
		}
		if s != nil && s.CanRun() != (tc.o.Sender != nil) {
			t.Errorf("%s: CanRun %v", tc.name, s.CanRun())
		}
	}
}

func TestActivityTopics(t *testing.T) {
	if got := dashboard.ActivityTopics(""); !slices.Equal(got, []string{"mqagent/v1/hosts/+/audit", "mqagent/v1/hosts/+/results/#"}) {
		t.Errorf("%v", got)
	}
}

// TestStreamEncoding: streams are gzip-compressed for browsers that
// accept it, plain otherwise.
func TestStreamEncoding(t *testing.T) {
	r := newRig(t, dashboard.Options{})
	r.apply(topics.Status("a"), status("a", true, 1, 0))
	for _, tc := range []struct{ accept, encoding string }{{"identity", ""}, {"gzip, deflate, br", "gzip"}, {"gzip;q=0", ""}} {
		req, _ := http.NewRequest(http.MethodGet, r.srv.URL+"/api/events", nil)
		req.Header.Set("Accept-Encoding", tc.accept)
		resp, err := r.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var first []byte
		if tc.encoding == "gzip" {
			zr, err := gzip.NewReader(resp.Body)
			if err != nil {
				t.Fatalf("%s: %v", tc.accept, err)
			}
			first = make([]byte, 5)
			_, err = io.ReadFull(zr, first)
			if err != nil {
				t.Fatalf("%s: %v", tc.accept, err)
			}
		} else {
			first = make([]byte, 5)
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				t.Fatalf("%s: %v", tc.accept, err)
			}
		}
		resp.Body.Close()
		if got := resp.Header.Get("Content-Encoding"); got != tc.encoding || string(first) != "retry" {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q, starts %q", tc.accept, got, first)
		}
	}
}
