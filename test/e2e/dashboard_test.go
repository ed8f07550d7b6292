package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mqagent/mqagent/pkg/dashboard"
	"github.com/mqagent/mqagent/pkg/dashboard/dashboardtest"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// dashJSQ quotes a string for a JavaScript expression.
func dashJSQ(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestDashboardBrowser loads the dashboard in headless Chromium against a
// real Mosquitto and three real agents: the hosts appear live, one goes
// offline when its agent stops, a host page draws its metrics chart, and a
// signed-in user runs a signed command whose result and audit record show
// up. Screenshots are kept (MQAGENT_ARTIFACTS, else the test's temporary
// directory).
func TestDashboardBrowser(t *testing.T) {
	bctx := dashboardtest.Browser(t, 90*time.Second)
	artifacts := dashboardtest.ArtifactDir(t)
	e := newEnv(t, false)
	keyFile, key := dashKey(t)
	const kid, user, password = "dash-ops", "alice", "correct horse battery"
	users := dashUsers(t, map[string]string{user: password})
	signed := withSecurity(nil, trustedKey(kid, key))
	agents := map[string]*harness.Agent{}
	for _, h := range []string{"dash-a", "dash-b", "dash-c"} {
		agents[h] = e.agent(h, signed, dashMetricsEvery("1s"), withGroups("web"))
	}
	srv := startDashServer(t, e.bin, "dashboard", "--listen", "127.0.0.1:0", "--broker", e.broker.URL(),
		"--users", users, "--key", keyFile, "--kid", kid, "--interval", "200ms", "--log-level", "debug")

	// The page itself: security headers.
	resp, _ := srv.get("/")
	for h, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("%s: %q, want %q", h, got, want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("Content-Security-Policy %q", csp)
	}

	// CSP violations and script errors would show in the console: none
	// may happen.
	if err := chromedp.Do(bctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatal(err)
	}
	const rows = `[...document.querySelectorAll('#tbody .row[data-host]')].map(r => r.dataset.host + '=' + r.dataset.state).join(',')`
	online := func(h string) string {
		return fmt.Sprintf(`document.querySelector('#tbody .row[data-host=%s][data-state="online"]')`, dashJSQ(h))
	}
	dashboardtest.WaitJS(t, bctx, wait, "three hosts online",
		online("dash-a")+" && "+online("dash-b")+" && "+online("dash-c")+` && document.getElementById('count-online').textContent === '3'`, rows)
	// CPU values arrive with the first metrics samples.
	dashboardtest.WaitJS(t, bctx, wait, "cpu column filled",
		`document.querySelector('#tbody .row[data-host="dash-a"] .pct span').textContent !== '–'`, rows)

	// An agent stops: its row goes offline, live.
	agents["dash-c"].Stop()
	dashboardtest.WaitJS(t, bctx, wait, "dash-c offline",
		`document.querySelector('#tbody .row[data-host="dash-c"][data-state="offline"]') && document.getElementById('count-offline').textContent === '1' && document.getElementById('count-online').textContent === '2'`, rows)

	// The filter narrows the table.
	if err := chromedp.Do(bctx, chromedp.SendKeys(chromedp.ID("filter"), "state:offline")); err != nil {
		t.Fatal(err)
	}
	dashboardtest.WaitJS(t, bctx, wait, "filtered to dash-c",
		`document.querySelectorAll('#tbody .row[data-host]:not([hidden])').length === 1 && document.querySelector('#tbody .row[data-host]:not([hidden])').dataset.host === 'dash-c'`, rows)
	if err := chromedp.Do(bctx, chromedp.Evaluate[chromedp.Void](`(f => { f.value = ''; f.dispatchEvent(new Event('input')); })(document.getElementById('filter'))`)); err != nil {
		t.Fatal(err)
	}
	dashboardtest.WaitJS(t, bctx, wait, "filter cleared", `document.querySelectorAll('#tbody .row[data-host]:not([hidden])').length === 3`, rows)
	dashboardtest.Screenshot(t, bctx, artifacts, "overview")

	// The host page: a chart with points, then a command run by a
	// signed-in user.
	if err := chromedp.Do(bctx, chromedp.Click(chromedp.CSS(`#tbody .row[data-host="dash-a"]`))); err != nil {
		t.Fatal(err)
	}
	dashboardtest.WaitJS(t, bctx, wait, "host page", `location.pathname === '/hosts/dash-a' && document.getElementById('host-title').textContent === 'dash-a' && document.getElementById('host-state').dataset.state === 'online'`, `location.pathname`)
	dashboardtest.WaitJS(t, bctx, wait, "cpu chart with two points or more", `Number(document.getElementById('chart-cpu').dataset.points) >= 2`, `document.getElementById('chart-cpu').dataset.points`)
	dashboardtest.WaitJS(t, bctx, wait, "read-only until signed in", `!document.getElementById('run-hint').hidden && document.getElementById('run').hidden`, `document.getElementById('run-hint').textContent`)

	if err := chromedp.Do(bctx,
		chromedp.Click(chromedp.ID("btn-login")),
		chromedp.WaitVisible(chromedp.ID("login-user")),
		chromedp.SendKeys(chromedp.ID("login-user"), user),
		chromedp.SendKeys(chromedp.ID("login-password"), password),
		chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)),
	); err != nil {
		t.Fatal(err)
	}
	dashboardtest.WaitJS(t, bctx, wait, "signed in", `document.getElementById('user-name').textContent === 'alice' && !document.getElementById('run').hidden`, `document.getElementById('login-error').textContent`)

	token := fmt.Sprintf("dash-%d", time.Now().UnixNano())
	if err := chromedp.Do(bctx,
		chromedp.SetValue(chromedp.ID("run-kind"), "shell"),
		chromedp.SendKeys(chromedp.ID("run-command"), "echo "+token),
		chromedp.Click(chromedp.ID("run-submit")),
	); err != nil {
		t.Fatal(err)
	}
	dashboardtest.WaitJS(t, bctx, wait, "command sent", `document.getElementById('run-status').textContent.startsWith('sent ')`, `document.getElementById('run-status').textContent`)
	id, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.getElementById('run-status').textContent.slice(5)`))
	if err != nil || !protocol.ValidID(id) {
		t.Fatalf("command id %q: %v", id, err)
	}
	dashboardtest.WaitJS(t, bctx, wait, "command succeeded with its output",
		fmt.Sprintf(`document.querySelector('#cmd-table tr.cmd[data-id=%s][data-state="succeeded"]') && [...document.querySelectorAll('#cmd-table tr.out[data-id=%s] pre.stdout')].some(p => p.textContent.includes(%s))`, dashJSQ(id), dashJSQ(id), dashJSQ(token)),
		`document.querySelector('#cmd-table tbody').innerText`)
	dashboardtest.WaitJS(t, bctx, wait, "audit records of the command",
		fmt.Sprintf(`document.querySelectorAll('#audit-table tr[data-id=%s]').length >= 2`, dashJSQ(id)), `document.querySelector('#audit-table tbody').innerText`)
	// The agent ran it as alice's signed command.
	fin := e.op.WaitAudit(t, "dash-a", func(r protocol.Audit) bool { return r.ID == id && r.Event == protocol.EventFinished }, wait)
	if fin.Operator != user || fin.Kid != kid || fin.State != protocol.StateSucceeded {
		t.Errorf("finished audit record: operator %q kid %q state %q, want %s, %s, succeeded", fin.Operator, fin.Kid, fin.State, user, kid)
	}
	dashboardtest.Screenshot(t, bctx, artifacts, "host")
}

// TestDashboardReadOnly: without a key the dashboard sends nothing, even
// for a signed-in user, and state-changing requests need the session's
// CSRF token.
func TestDashboardReadOnly(t *testing.T) {
	e := newEnv(t, false)
	e.agent("ro-1")
	srv := startDashServer(t, e.bin, "dashboard", "--listen", "127.0.0.1:0", "--broker", e.broker.URL())
	var snap dashboard.Snapshot
	deadline := time.Now().Add(wait)
	for {
		_, b := srv.get("/api/overview")
		if err := json.Unmarshal(b, &snap); err != nil {
			t.Fatalf("overview: %v: %s", err, b)
		}
		if len(snap.Hosts) == 1 && snap.Hosts[0].ID == "ro-1" && snap.Hosts[0].State == protocol.StatusOnline {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("overview: %+v", snap)
		}
		time.Sleep(50 * time.Millisecond)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/hosts/ro-1/commands", strings.NewReader(`{"kind":"ping"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("command on a read-only dashboard: %s, want 403", resp.Status)
	}
	_, b := srv.get("/api/session")
	var s dashboard.SessionInfo
	if err := json.Unmarshal(b, &s); err != nil || s.Commands || s.Login {
		t.Fatalf("session %s (%v): want no commands, no login", b, err)
	}
}

// TestDashboardDev: `mqagent dev` serves the dashboard, which shows the
// development agent (the README's "run it" line).
func TestDashboardDev(t *testing.T) {
	bin := harness.BuildAgent(t)
	port, dport := freePort(t), freePort(t)
	srv := startDashServer(t, bin, "dev", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--ws-listen", "",
		"--data-dir", t.TempDir(), "--host-id", "dev-dash", "--dashboard", fmt.Sprintf("127.0.0.1:%d", dport))
	if want := fmt.Sprintf("http://127.0.0.1:%d", dport); srv.URL != want {
		t.Fatalf("dashboard at %s, want %s", srv.URL, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for {
		_, b := srv.get("/api/overview")
		var snap dashboard.Snapshot
		if json.Unmarshal(b, &snap) == nil && len(snap.Hosts) == 1 && snap.Hosts[0].ID == "dev-dash" && snap.Hosts[0].State == protocol.StatusOnline {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("dev agent not on the dashboard: %s", b)
		case <-time.After(50 * time.Millisecond):
		}
	}
	resp, b := srv.get("/metrics")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `mqagent_host_up{host="dev-dash"} 1`) {
		t.Fatalf("/metrics: %s\n%s", resp.Status, b)
	}
}
