package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// The fleet CLI, run as the real binary against real agents on a real
// Mosquitto.

type hostDoc struct {
	ID           string            `json:"id"`
	Online       bool              `json:"online"`
	State        string            `json:"state"`
	Reason       string            `json:"reason"`
	Version      string            `json:"version"`
	OS           string            `json:"os"`
	Groups       []string          `json:"groups"`
	Facts        map[string]string `json:"facts"`
	HasInventory bool              `json:"has_inventory"`
	LastSeen     string            `json:"last_seen"`
}

func ids(hosts []hostDoc) []string {
	var out []string
	for _, h := range hosts {
		out = append(out, h.ID)
	}
	return out
}

func TestCLIHosts(t *testing.T) {
	f := newCLIFleet(t)
	all := parseJSON[[]hostDoc](t, f.cli("hosts", "-o", "json").must(t, 0, "hosts"))
	if !slices.Equal(ids(all), []string{"db-1", "db-2", "web-1", "web-2"}) {
		t.Fatalf("hosts %v", ids(all))
	}
	for _, h := range all {
		if !h.Online || h.State != "online" || h.Version == "" || h.OS == "" || h.LastSeen == "" || !h.HasInventory {
			t.Fatalf("host %+v", h)
		}
	}
	if h := all[3]; !slices.Equal(h.Groups, []string{"web"}) || h.Facts["env"] != "dev" {
		t.Fatalf("web-2: %+v", h)
	}
	// Filters: the same as a command's.
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"-t", "group:web"}, []string{"web-1", "web-2"}},
		{[]string{"--fact", "env=prod"}, []string{"db-1", "db-2", "web-1"}},
		{[]string{"-t", "group:db", "--fact", "env=prod", "--only", "db-2,web-1"}, []string{"db-2"}},
		{[]string{"--os", "plan9"}, nil},
		{[]string{"-t", "host:web-2,nobody"}, []string{"nobody", "web-2"}},
	} {
		got := parseJSON[[]hostDoc](t, f.cli(append([]string{"hosts", "-o", "json"}, tc.args...)...).must(t, 0, "hosts"))
		if !slices.Equal(ids(got), tc.want) {
			t.Fatalf("hosts %v: %v, want %v", tc.args, ids(got), tc.want)
		}
	}
	// Table: a header and one line per host; YAML parses too.
	tab := f.cli("hosts", "--in-group", "db").must(t, 0, "hosts table")
	lines := strings.Split(strings.TrimSpace(tab.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "HOST") || !strings.HasPrefix(lines[1], "db-1 ") || !strings.Contains(lines[2], "online") {
		t.Fatalf("table:\n%s", tab.stdout)
	}
	if y := f.cli("hosts", "-o", "yaml").must(t, 0, "hosts yaml"); !strings.Contains(y.stdout, "id: web-2") {
		t.Fatalf("yaml:\n%s", y.stdout)
	}
	// A graceful stop: offline with its reason.
	if code := f.agents["web-2"].Stop(); code != 0 {
		t.Fatalf("stop: %d", code)
	}
	f.op.WaitStatus(t, "web-2", func(s protocol.Status) bool { return s.State == protocol.StatusOffline }, wait)
	off := parseJSON[[]hostDoc](t, f.cli("hosts", "--offline", "-o", "json").must(t, 0, "hosts --offline"))
	if len(off) != 1 || off[0].ID != "web-2" || off[0].Reason != "shutdown" || off[0].Online {
		t.Fatalf("offline: %+v", off)
	}
	// Bad usage: exit 2.
	f.cli("hosts", "--online", "--offline").must(t, 2, "conflicting flags")
	f.cli("hosts", "-o", "xml").must(t, 2, "bad output")
	f.cli("hosts", "--fact", "novalue").must(t, 2, "bad fact")
	f.cli("hosts", "--no-such-flag").must(t, 2, "unknown flag")
}

func TestCLITargeting(t *testing.T) {
	f := newCLIFleet(t)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"one host", []string{"-t", "host:web-1"}, []string{"web-1"}},
		{"list", []string{"-t", "host:web-1,db-2"}, []string{"db-2", "web-1"}},
		{"group", []string{"-t", "group:db"}, []string{"db-1", "db-2"}},
		{"all", []string{"-t", "all"}, []string{"db-1", "db-2", "web-1", "web-2"}},
		{"all with a facts filter", []string{"-t", "all", "--fact", "env=prod"}, []string{"db-1", "db-2", "web-1"}},
		{"group with os and fact", []string{"-t", "group:web", "--os", "linux", "--fact", "env=dev"}, []string{"web-2"}},
		{"groups filter", []string{"-t", "all", "--in-group", "web,nope"}, []string{"web-1", "web-2"}},
		{"list with a filter", []string{"-t", "host:web-1,web-2,db-1", "--fact", "env=prod"}, []string{"db-1", "web-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.cli(append([]string{"ping", "-o", "json"}, tc.args...)...).must(t, 0, "ping")
			d := parseJSON[runDoc](t, r)
			if !d.OK || d.Expected != len(tc.want) || !slices.Equal(d.Succeeded, tc.want) || len(d.Hosts) != len(tc.want) {
				t.Fatalf("ping %v: %+v\nstderr: %s", tc.args, d, r.stderr)
			}
			for _, h := range d.Hosts {
				var pd protocol.PingData
				if h.Result == nil || json.Unmarshal(h.Result.Data, &pd) != nil || pd.Version == "" || h.Result.ID != d.ID {
					t.Fatalf("ping result of %s: %+v", h.Host, h.Result)
				}
			}
		})
	}
	// Only the hosts the filter selects ran it: the others stayed silent
	// (their audit says "ignored" locally only).
	r := f.cli("shell", "-t", "all", "--fact", "env=dev", "-o", "json", "echo $((40+2))").must(t, 0, "shell with a filter")
	d := parseJSON[runDoc](t, r)
	if !slices.Equal(d.Succeeded, []string{"web-2"}) || d.result("web-2").Stdout != "42\n" {
		t.Fatalf("filtered shell: %+v", d)
	}
	for id, a := range f.agents {
		want := protocol.DecisionIgnored
		if id == "web-2" {
			want = protocol.DecisionAccepted
		}
		if got := localDecision(t, a.DataDir(), d.ID); got != want {
			t.Fatalf("%s: local audit decision %q for the filtered command, want %q", id, got, want)
		}
	}

	f.cli("ping", "-t", "group:nobody").must(t, 4, "empty group")
	f.cli("ping", "-t", "all", "--fact", "env=staging").must(t, 4, "no host matches")
	f.cli("ping", "-t", "everyone").must(t, 2, "bad target")
	f.cli("ping").must(t, 2, "no target")
	f.cli("ping", "-t", "all", "--broker", "tcp://127.0.0.1:1", "--connect-timeout", "2s").must(t, 6, "no broker")
}

func TestCLIExecShellScript(t *testing.T) {
	f := newCLIFleet(t)
	// exec: argv, env and stdin reach the program; output in the result.
	in := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(in, []byte("from stdin"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := f.cli("exec", "-t", "host:db-1", "-o", "json", "--env", "GREETING=hej", "--stdin", in, "--",
		"sh", "-c", `printf "%s|" "$GREETING"; cat`).must(t, 0, "exec")
	if d := parseJSON[runDoc](t, r); d.result("db-1") == nil || d.result("db-1").Stdout != "hej|from stdin" {
		t.Fatalf("exec: %+v", d)
	}
	// Table mode prints each host's output, then the summary.
	r = f.cli("exec", "-t", "host:web-1", "--", "echo", "hello table").must(t, 0, "exec table")
	if !strings.Contains(r.stdout, "== web-1: succeeded") || !strings.Contains(r.stdout, "hello table\n") || !strings.Contains(r.stdout, "HOST") {
		t.Fatalf("table output:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "1 succeeded, 0 failed") {
		t.Fatalf("stderr:\n%s", r.stderr)
	}

	// shell: a failing host makes the exit status 1 and is listed.
	r = f.cli("shell", "-t", "group:web", "-o", "json", `test "$(hostname)" = never`).must(t, 1, "failing shell")
	d := parseJSON[runDoc](t, r)
	if d.OK || !slices.Equal(d.Failed, []string{"web-1", "web-2"}) || d.result("web-1").ExitCode == nil || *d.result("web-1").ExitCode != 1 {
		t.Fatalf("failing shell: %+v", d)
	}

	// script: succeeds where the marker is.
	script := filepath.Join(t.TempDir(), "marker.sh")
	if err := os.WriteFile(script, []byte(markerScript), 0o600); err != nil {
		t.Fatal(err)
	}
	r = f.cli("script", "-t", "all", "-o", "json", script).must(t, 1, "marker script")
	d = parseJSON[runDoc](t, r)
	if !slices.Equal(d.Succeeded, []string{"db-1", "web-1"}) || !slices.Equal(d.Failed, []string{"db-2", "web-2"}) {
		t.Fatalf("marker script: %+v", d)
	}
	// Script arguments.
	args := filepath.Join(t.TempDir(), "args.sh")
	if err := os.WriteFile(args, []byte("#!/bin/sh\necho \"$#:$1:$2\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = f.cli("script", "-t", "host:web-2", "-o", "json", args, "--", "a", "b c").must(t, 0, "script args")
	if d := parseJSON[runDoc](t, r); d.result("web-2").Stdout != "2:a:b c\n" {
		t.Fatalf("script args: %+v", d.result("web-2"))
	}

	// --timeout: the host kills it; timed_out is a failure.
	r = f.cli("shell", "-t", "host:db-2", "--timeout", "500ms", "-o", "json", "sleep 30").must(t, 1, "timeout")
	if d := parseJSON[runDoc](t, r); !slices.Equal(d.TimedOut, []string{"db-2"}) {
		t.Fatalf("timeout: %+v", d)
	}
	f.cli("exec", "-t", "all").must(t, 2, "exec without a program")
	f.cli("script", "-t", "all", filepath.Join(t.TempDir(), "missing.sh")).must(t, 2, "missing script")
}

func TestCLIStream(t *testing.T) {
	f := newCLIFleet(t)
	r := f.cli("shell", "-t", "group:db", "--stream", `for i in 1 2 3; do echo "line $i"; sleep 0.1; done; printf partial; echo oops >&2`).must(t, 0, "stream")
	for _, h := range []string{"db-1", "db-2"} {
		var got []string
		for _, l := range strings.Split(r.stdout, "\n") {
			if rest, ok := strings.CutPrefix(l, h+": "); ok {
				got = append(got, rest)
			}
		}
		if !slices.Equal(got, []string{"line 1", "line 2", "line 3", "partial"}) {
			t.Fatalf("%s streamed %q\nstdout:\n%s", h, got, r.stdout)
		}
		if !strings.Contains(r.stderr, h+": oops\n") {
			t.Fatalf("%s stderr not streamed:\n%s", h, r.stderr)
		}
	}
	// The output is not printed a second time after the stream.
	if strings.Count(r.stdout, "line 1") != 2 {
		t.Fatalf("stdout:\n%s", r.stdout)
	}
}

// A host that never answers: online (its status says so) but frozen.
func TestCLIHostThatNeverAnswers(t *testing.T) {
	f := newCLIFleet(t)
	freeze(t, f.agents["web-2"])
	r := f.cli("ping", "-t", "all", "--wait", "2s", "-o", "json").must(t, 3, "ping with a silent host")
	d := parseJSON[runDoc](t, r)
	if d.Expected != 4 || !slices.Equal(d.NoAnswer, []string{"web-2"}) || len(d.Succeeded) != 3 || d.OK {
		t.Fatalf("silent host: %+v", d)
	}
	// In table mode it is listed too.
	r = f.cli("ping", "-t", "group:web", "--wait", "1s").must(t, 3, "ping table")
	if !strings.Contains(r.stdout, "web-2") || !strings.Contains(r.stdout, "no_answer") || !strings.Contains(r.stderr, "1 no answer") {
		t.Fatalf("table:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	// A host that is offline is not expected: reported, not waited for.
	if code := f.agents["db-2"].Stop(); code != 0 {
		t.Fatalf("stop: %d", code)
	}
	f.op.WaitStatus(t, "db-2", func(s protocol.Status) bool { return s.State == protocol.StatusOffline }, wait)
	r = f.cli("ping", "-t", "group:db", "-o", "json").must(t, 0, "ping with an offline host")
	if d := parseJSON[runDoc](t, r); !slices.Equal(d.Succeeded, []string{"db-1"}) || !slices.Equal(d.Offline, []string{"db-2"}) || d.Expected != 1 {
		t.Fatalf("offline host: %+v", d)
	}
	// Named explicitly, an offline host is expected (and does not answer).
	r = f.cli("ping", "-t", "host:db-2", "--wait", "1s", "-o", "json").must(t, 3, "ping an offline host")
	if d := parseJSON[runDoc](t, r); !slices.Equal(d.NoAnswer, []string{"db-2"}) {
		t.Fatalf("named offline host: %+v", d)
	}
}

func TestCLICancelAndResult(t *testing.T) {
	f := newCLIFleet(t)
	// Give up waiting after 1 s: the command still runs there.
	r := f.cli("shell", "-t", "host:web-1", "--wait", "1s", "-o", "json", "sleep 30").must(t, 3, "long command")
	d := parseJSON[runDoc](t, r)
	if !slices.Equal(d.NoAnswer, []string{"web-1"}) || d.Hosts[0].State != protocol.StateRunning {
		t.Fatalf("long command: %+v", d)
	}
	c := parseJSON[runDoc](t, f.cli("cancel", d.ID, "-t", "host:web-1", "-o", "json").must(t, 0, "cancel"))
	var cd protocol.CancelData
	if res := c.result("web-1"); res == nil || json.Unmarshal(res.Data, &cd) != nil || !cd.Canceled {
		t.Fatalf("cancel: %+v", c)
	}
	// result: the stored final result, canceled.
	g := parseJSON[runDoc](t, f.cli("result", d.ID, "-t", "host:web-1", "-o", "json").must(t, 0, "result"))
	var stored protocol.Result
	if res := g.result("web-1"); res == nil || json.Unmarshal(res.Data, &stored) != nil || stored.ID != d.ID || stored.State != protocol.StateCanceled {
		t.Fatalf("result: %+v", g)
	}
	// Cancel of a command that is not running: failed, canceled=false.
	f.cli("cancel", d.ID, "-t", "host:web-1").must(t, 1, "cancel again")
	f.cli("cancel", "a/b", "-t", "host:web-1").must(t, 2, "bad id")
	f.cli("result").must(t, 2, "no id")
}

func TestCLIAgentControl(t *testing.T) {
	f := newCLIFleet(t)
	f.cli("agent", "stop", "-t", "group:db").must(t, 2, "stop without --yes")
	f.cli("agent", "uninstall", "-t", "host:db-1").must(t, 2, "uninstall without --yes")
	f.cli("agent", "update", "-t", "all", "--version", "9").must(t, 2, "update without url")
	before := f.op.Statuses("db-2")
	r := f.cli("agent", "restart", "-t", "host:db-2", "-o", "json").must(t, 0, "restart")
	if d := parseJSON[runDoc](t, r); !slices.Equal(d.Succeeded, []string{"db-2"}) {
		t.Fatalf("restart: %+v", d)
	}
	last := before[len(before)-1]
	s := f.op.WaitNextStatus(t, "db-2", len(before), func(s protocol.Status) bool {
		return s.State == protocol.StatusOnline && s.Session > last.Session
	}, wait)
	// The restarted host answers again.
	f.cli("ping", "-t", "host:db-2").must(t, 0, "ping after restart")
	r = f.cli("agent", "stop", "-t", "host:db-2", "-o", "json").must(t, 0, "stop one host")
	if d := parseJSON[runDoc](t, r); !slices.Equal(d.Succeeded, []string{"db-2"}) {
		t.Fatalf("stop: %+v", d)
	}
	off := f.op.WaitStatus(t, "db-2", func(st protocol.Status) bool { return st.State == protocol.StatusOffline && st.Session == s.Session }, wait)
	if off.Reason != protocol.ReasonShutdown {
		t.Fatalf("offline after stop: %+v", off)
	}
}

// Signed commands and a TLS broker: the CLI takes the key from
// MQAGENT_KEY and the TLS files as the agent does (CA, client
// certificate).
func TestCLISignedOverTLS(t *testing.T) {
	pki := harness.NewPKI(t, "fleet")
	srv := pki.Server("127.0.0.1")
	mq := harness.StartMosquitto(t, harness.WithTLS(harness.TLSListener{CertFile: srv.CertFile, KeyFile: srv.KeyFile, CAFile: pki.CAFile(), RequireCertificate: true}))
	bin := harness.BuildAgent(t)
	keyFile := filepath.Join(t.TempDir(), "ops.key")
	pub := strings.TrimSpace(runCLI(t, bin, nil, "keygen", "--out", keyFile).must(t, 0, "keygen").stdout)
	op := harness.NewOperator(t, mq.URL())
	op.WatchStatus("sec-1")
	cfg := harness.DefaultConfig("sec-1", mq.URL(), filepath.Join(t.TempDir(), "data"))
	sec := cfg["security"].(map[string]any)
	sec["require_signed"] = true
	sec["trusted_keys"] = []map[string]any{{"id": "ops", "public_key": pub}}
	harness.StartAgent(t, bin, cfg)
	op.WaitStatus(t, "sec-1", func(s protocol.Status) bool { return s.State == protocol.StatusOnline }, wait)

	opCert := pki.Client("operator")
	tlsEnv := []string{"MQAGENT_BROKER=" + mq.TLSURL(0), "MQAGENT_TLS_CA=" + pki.CAFile(), "MQAGENT_TLS_CERT=" + opCert.CertFile, "MQAGENT_TLS_KEY=" + opCert.KeyFile}
	r := runCLI(t, bin, append(tlsEnv, "MQAGENT_KEY="+keyFile), "shell", "-t", "host:sec-1", "-o", "json", "echo signed").must(t, 0, "signed over TLS")
	var d runDoc
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || d.result("sec-1") == nil || d.result("sec-1").Stdout != "signed\n" {
		t.Fatalf("signed: %v %s", err, r.stdout)
	}
	// Without the key: rejected, a failure.
	r = runCLI(t, bin, tlsEnv, "shell", "-t", "host:sec-1", "-o", "json", "echo bare").must(t, 1, "bare command")
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || d.result("sec-1") == nil || d.result("sec-1").State != protocol.StateRejected {
		t.Fatalf("bare: %v %s", err, r.stdout)
	}
	// Without a client certificate the broker refuses the connection.
	runCLI(t, bin, []string{"MQAGENT_BROKER=" + mq.TLSURL(0), "MQAGENT_TLS_CA=" + pki.CAFile()}, "hosts", "--connect-timeout", "3s").must(t, 6, "no client certificate")
	// A CA that is not a PEM file: a usage error naming the setting.
	bad := runCLI(t, bin, []string{"MQAGENT_BROKER=" + mq.TLSURL(0), "MQAGENT_TLS_CA=" + keyFile}, "hosts")
	if bad.code != 2 || !strings.Contains(bad.stderr, "tls ca file") {
		t.Fatalf("bad CA: %d %s", bad.code, bad.stderr)
	}
}

// localDecision is the decision of the "received" record of command id in
// the agent's local audit log ("" when there is none).
func localDecision(t *testing.T, dataDir, id string) string {
	t.Helper()
	for _, l := range readLines(t, filepath.Join(dataDir, "audit.log")) {
		var a protocol.Audit
		if json.Unmarshal([]byte(l), &a) == nil && a.ID == id && a.Event == protocol.EventReceived {
			return a.Decision
		}
	}
	return ""
}

func TestCLIWatchAndInventory(t *testing.T) {
	f := newCLIFleet(t)
	// watch status: the current state of every host first.
	r := f.cli("watch", "status", "--count", "4", "-o", "json").must(t, 0, "watch status")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	var seen []string
	for _, l := range lines {
		var doc struct {
			Change string  `json:"change"`
			Host   hostDoc `json:"host"`
		}
		if err := json.Unmarshal([]byte(l), &doc); err != nil || doc.Change != "added" || !doc.Host.Online {
			t.Fatalf("watch status line %q: %v", l, err)
		}
		seen = append(seen, doc.Host.ID)
	}
	if !slices.Equal(seen, []string{"db-1", "db-2", "web-1", "web-2"}) {
		t.Fatalf("watch status saw %v", seen)
	}
	// watch metrics of one group: samples come every 2 s.
	r = f.cli("watch", "metrics", "-t", "group:web", "--count", "2", "--for", "20s", "-o", "json").must(t, 0, "watch metrics")
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var m protocol.Metrics
		if err := json.Unmarshal([]byte(l), &m); err != nil || !strings.HasPrefix(m.Host, "web-") || m.CPU == nil {
			t.Fatalf("metrics line %q: %v", l, err)
		}
	}
	// watch audit of one host while a command runs there.
	watch := osexec.Command(f.bin, "watch", "audit", "-t", "host:db-1", "--count", "2", "--for", "20s")
	watch.Env = append(cliEnv(), "MQAGENT_BROKER="+f.broker.URL())
	var wout, werr bytes.Buffer
	watch.Stdout, watch.Stderr = &wout, &werr
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- watch.Wait() }()
	var werrv error
	deadline := time.After(30 * time.Second)
loop:
	for {
		f.cli("ping", "-t", "host:db-1").must(t, 0, "ping")
		select {
		case werrv = <-done:
			break loop
		case <-deadline:
			_ = watch.Process.Kill()
			t.Fatal("watch audit saw nothing")
		case <-time.After(200 * time.Millisecond):
		}
	}
	if werrv != nil || strings.Count(wout.String(), " db-1 ") != 2 || !strings.Contains(wout.String(), `kind="ping"`) {
		t.Fatalf("watch audit: %v\n%s\n%s", werrv, wout.String(), werr.String())
	}

	// inventory: the retained one, and a fresh one.
	var inv protocol.Inventory
	r = f.cli("inventory", "web-2", "-o", "json").must(t, 0, "inventory")
	if err := json.Unmarshal([]byte(r.stdout), &inv); err != nil || inv.Host != "web-2" || inv.Facts["env"] != "dev" || inv.OS == "" {
		t.Fatalf("inventory: %v %s", err, r.stdout)
	}
	r = f.cli("inventory", "web-2", "--refresh", "-o", "json").must(t, 0, "inventory --refresh")
	var fresh protocol.Inventory
	if err := json.Unmarshal([]byte(r.stdout), &fresh); err != nil || fresh.Host != "web-2" || fresh.TS.Before(inv.TS.Time) {
		t.Fatalf("fresh inventory: %v %s", err, r.stdout)
	}
	if tab := f.cli("inventory", "web-2").must(t, 0, "inventory table"); !strings.Contains(tab.stdout, "env=dev") || !strings.Contains(tab.stdout, "hostname") {
		t.Fatalf("inventory table:\n%s", tab.stdout)
	}
	f.cli("inventory", "nobody", "--wait", "1s").must(t, 1, "inventory of an unknown host")
	f.cli("inventory", "Bad/Host").must(t, 2, "bad host id")
}
