package protocol_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
)

func TestTopicsBuilders(t *testing.T) {
	tp := protocol.Topics{Prefix: protocol.DefaultPrefix}
	tests := []struct{ got, want string }{
		{tp.HostCmd("web-01"), "mqagent/v1/hosts/web-01/cmd"},
		{tp.GroupCmd("web"), "mqagent/v1/groups/web/cmd"},
		{tp.AllCmd(), "mqagent/v1/all/cmd"},
		{tp.Status("web-01"), "mqagent/v1/hosts/web-01/status"},
		{tp.Inventory("web-01"), "mqagent/v1/hosts/web-01/inventory"},
		{tp.Metrics("web-01"), "mqagent/v1/hosts/web-01/metrics"},
		{tp.Result("web-01", "01JD"), "mqagent/v1/hosts/web-01/results/01JD"},
		{tp.Output("web-01", "01JD"), "mqagent/v1/hosts/web-01/results/01JD/out"},
		{tp.Audit("web-01"), "mqagent/v1/hosts/web-01/audit"},
		{tp.ResultsFilter("01JD"), "mqagent/v1/hosts/+/results/01JD/#"},
		{protocol.Topics{Prefix: "acme/prod/mq"}.HostCmd("db.1"), "acme/prod/mq/hosts/db.1/cmd"},
		{protocol.Topics{Prefix: "x"}.AllCmd(), "x/all/cmd"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestParseCmdTopic(t *testing.T) {
	tp := protocol.Topics{Prefix: protocol.DefaultPrefix}
	tests := []struct {
		topic string
		scope protocol.Scope
		name  string
	}{
		{tp.HostCmd("web-01"), protocol.ScopeHost, "web-01"},
		{tp.GroupCmd("web"), protocol.ScopeGroup, "web"},
		{tp.AllCmd(), protocol.ScopeAll, ""},
		{"mqagent/v1/hosts/a.b_c/cmd", protocol.ScopeHost, "a.b_c"},
		// Prefix mismatch.
		{"other/v1/hosts/web-01/cmd", protocol.ScopeUnknown, ""},
		{"mqagent/v2/all/cmd", protocol.ScopeUnknown, ""},
		{"mqagent/v1x/all/cmd", protocol.ScopeUnknown, ""},
		{"mqagent/all/cmd", protocol.ScopeUnknown, ""},
		{"xmqagent/v1/all/cmd", protocol.ScopeUnknown, ""},
		{"MQAGENT/v1/all/cmd", protocol.ScopeUnknown, ""},
		{"hosts/web-01/cmd", protocol.ScopeUnknown, ""},
		{"", protocol.ScopeUnknown, ""},
		{"mqagent/v1", protocol.ScopeUnknown, ""},
		{"mqagent/v1/", protocol.ScopeUnknown, ""},
		// Extra slashes and levels.
		{"mqagent/v1//all/cmd", protocol.ScopeUnknown, ""},
		{"/mqagent/v1/all/cmd", protocol.ScopeUnknown, ""},
		{"mqagent/v1/all/cmd/", protocol.ScopeUnknown, ""},
		{"mqagent/v1/all//cmd", protocol.ScopeUnknown, ""},
		{"mqagent/v1/hosts//cmd", protocol.ScopeUnknown, ""},
		{"mqagent/v1/groups//cmd", protocol.ScopeUnknown, ""},
		{"mqagent/v1/hosts/web-01//cmd", protocol.ScopeUnknown, ""},
		{"mqagent/v1/hosts//web-01/cmd", protocol.ScopeUnknown, ""},
		{"mqagent/v1/hosts/web-01/cmd/", protocol.ScopeUnknown, ""},
		{"mqagent/v1/hosts/a/b/cmd", protocol.ScopeUnknown, ""},
		{"mqagent/v1/groups/a/b/cmd", protocol.ScopeUnknown, ""},
		{"mqagent/v1/hosts/cmd", protocol.ScopeUnknown, ""},
		// Other topics of the tree.
		{tp.Status("web-01"), protocol.ScopeUnknown, ""},
		{tp.Result("web-01", "x"), protocol.ScopeUnknown, ""},
		{tp.Output("web-01", "cmd"), protocol.ScopeUnknown, ""},
		{"mqagent/v1/host/web-01/cmd", protocol.ScopeUnknown, ""},
		{"mqagent/v1/all/cmds", protocol.ScopeUnknown, ""},
		{"mqagent/v1/all", protocol.ScopeUnknown, ""},
	}
	for _, tc := range tests {
		scope, name := tp.ParseCmdTopic(tc.topic)
		if scope != tc.scope || name != tc.name {
			t.Errorf("ParseCmdTopic(%q) = %v, %q; want %v, %q", tc.topic, scope, name, tc.scope, tc.name)
		}
	}

	multi := protocol.Topics{Prefix: "acme/prod"}
	if s, n := multi.ParseCmdTopic("acme/prod/groups/db/cmd"); s != protocol.ScopeGroup || n != "db" {
		t.Errorf("multi-level prefix: got %v, %q", s, n)
	}
	if s, _ := multi.ParseCmdTopic("mqagent/v1/all/cmd"); s != protocol.ScopeUnknown {
		t.Errorf("default-prefix topic parsed under another prefix: %v", s)
	}
}

func TestTargetFor(t *testing.T) {
	tests := []struct {
		scope protocol.Scope
		name  string
		want  string
	}{
		{protocol.ScopeHost, "web-01", "host:web-01"},
		{protocol.ScopeGroup, "web", "group:web"},
		{protocol.ScopeAll, "", "all"},
		{protocol.ScopeAll, "ignored", "all"},
		{protocol.ScopeUnknown, "web", ""},
		{protocol.Scope(99), "web", ""},
	}
	for _, tc := range tests {
		if got := protocol.TargetFor(tc.scope, tc.name); got != tc.want {
			t.Errorf("TargetFor(%v, %q) = %q, want %q", tc.scope, tc.name, got, tc.want)
		}
	}
}

func TestDefaultHostID(t *testing.T) {
	tests := []struct{ hostname, want string }{
		{"web-01", "web-01"},
		{"WEB-01", "web-01"},
		{"Web01.Example.COM", "web01.example.com"},
		{"Mac_Book", "mac_book"},
		{"my host", "my-host"},
		{"  two  spaces ", "h--two--spaces-"},
		{"tab\there", "tab-here"},
		{"höst", "h-st"},
		{"ÄRGER", "h-rger"},
		{"日本-server", "h---server"},
		{"emoji🚀box", "emoji-box"},
		{"-leading-dash", "h-leading-dash"},
		{".leading.dot", "h.leading.dot"},
		{"_under", "h_under"},
		{"a:b@c", "a-b-c"},
		{"", "h"},
		{"\xff\xfe", "h--"},
		{strings.Repeat("a", 100), strings.Repeat("a", 63)},
		{strings.Repeat("A", 63), strings.Repeat("a", 63)},
		{"-" + strings.Repeat("b", 100), "h-" + strings.Repeat("b", 61)},
		{strings.Repeat("é", 70), "h" + strings.Repeat("-", 62)},
	}
	for _, tc := range tests {
		got := protocol.DefaultHostID(tc.hostname)
		if got != tc.want {
			t.Errorf("DefaultHostID(%q) = %q, want %q", tc.hostname, got, tc.want)
		}
		if !protocol.ValidHostID(got) {
			t.Errorf("DefaultHostID(%q) = %q is not a valid host id", tc.hostname, got)
		}
	}
}

func FuzzDefaultHostID(f *testing.F) {
	for _, s := range []string{"web-01", "WEB", "höst", "", "-x", strings.Repeat("é", 70), "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, hostname string) {
		id := protocol.DefaultHostID(hostname)
		if !protocol.ValidHostID(id) {
			t.Fatalf("DefaultHostID(%q) = %q is not a valid host id", hostname, id)
		}
		if protocol.ValidHostID(hostname) && id != hostname {
			t.Fatalf("DefaultHostID changed the valid id %q to %q", hostname, id)
		}
	})
}

func TestTimeMarshal(t *testing.T) {
	tests := []struct {
		name string
		t    time.Time
		want string
	}{
		{"UTC", time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), `"2026-11-25T10:00:00.000Z"`},
		{"other zone", time.Date(2026, 11, 25, 12, 0, 0, 0, time.FixedZone("CEST", 2*3600)), `"2026-11-25T10:00:00.000Z"`},
		{"negative offset", time.Date(2026, 11, 25, 5, 30, 0, 0, time.FixedZone("", -(4*3600+1800))), `"2026-11-25T10:00:00.000Z"`},
		{"milliseconds kept, finer cut", time.Date(2026, 11, 25, 10, 0, 0, 123999999, time.UTC), `"2026-11-25T10:00:00.123Z"`},
		{"zero", time.Time{}, `"0001-01-01T00:00:00.000Z"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(protocol.Time{Time: tc.t})
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("Marshal = %s, want %s", b, tc.want)
			}
		})
	}
	// Inside a payload struct, by value and by pointer.
	ts := protocol.Time{Time: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	b, err := json.Marshal(protocol.Status{V: 1, Host: "h", State: protocol.StatusOnline, TS: ts, StartedAt: &ts})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"ts":"2026-11-25T10:00:00.000Z"`) || !strings.Contains(string(b), `"started_at":"2026-11-25T10:00:00.000Z"`) {
		t.Errorf("status = %s", b)
	}
}

func TestTimeUnmarshal(t *testing.T) {
	want := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{`"2026-11-25T10:00:00Z"`, want, true},
		{`"2026-11-25T10:00:00.000Z"`, want, true},
		{`"2026-11-25T12:00:00+02:00"`, want, true},
		{`"2026-11-25T05:30:00-04:30"`, want, true},
		{`"2026-11-26T00:00:00+14:00"`, want, true},
		{`"2026-11-25T10:00:00.123456789Z"`, want.Add(123456789), true},
		{`"2026-11-25T10:00:00"`, time.Time{}, false},
		{`"2026-11-25"`, time.Time{}, false},
		{`"2026-11-25 10:00:00Z"`, time.Time{}, false},
		{`"2026-13-25T10:00:00Z"`, time.Time{}, false},
		{`""`, time.Time{}, false},
		{`1764064800000`, time.Time{}, false},
		{`null`, time.Time{}, false},
		{`{}`, time.Time{}, false},
	}
	for _, tc := range tests {
		var got protocol.Time
		err := json.Unmarshal([]byte(tc.in), &got)
		if (err == nil) != tc.ok {
			t.Errorf("Unmarshal(%s) error = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		if !got.Equal(tc.want) || got.Location() != time.UTC {
			t.Errorf("Unmarshal(%s) = %v (%v), want %v in UTC", tc.in, got.Time, got.Location(), tc.want)
		}
	}
}

func TestTimeRoundTrip(t *testing.T) {
	in := protocol.Time{Time: time.Date(2026, 11, 25, 10, 0, 0, 42_000_000, time.UTC)}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out protocol.Time
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !out.Equal(in.Time) {
		t.Errorf("round trip: %v != %v", out, in)
	}
	now := protocol.Now()
	if now.Location() != time.UTC || time.Since(now.Time) > time.Minute || time.Since(now.Time) < 0 {
		t.Errorf("Now() = %v", now)
	}
}

// A Result with no exit code and no times must omit them, as the contract
// says exit_code is absent when the process did not exit by itself.
func TestResultOmitsAbsentFields(t *testing.T) {
	b, err := json.Marshal(protocol.Result{V: 1, ID: "x", Host: "h", State: protocol.StateTimedOut})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"exit_code", "started_at", "finished_at", "data"} {
		if _, ok := m[k]; ok {
			t.Errorf("%s present in %s", k, b)
		}
	}
	for _, k := range []string{"v", "id", "host", "state", "stdout", "stderr", "stdout_truncated", "stderr_truncated", "duration_ms", "error"} {
		if _, ok := m[k]; !ok {
			t.Errorf("%s missing from %s", k, b)
		}
	}
	zero := 0
	b, err = json.Marshal(protocol.Result{V: 1, ID: "x", Host: "h", State: protocol.StateSucceeded, ExitCode: &zero})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"exit_code":0`) {
		t.Errorf("exit code 0 omitted: %s", b)
	}
}
