package dashboard_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/mqagent/mqagent/pkg/dashboard"
	"github.com/mqagent/mqagent/pkg/protocol"
)

type msg struct {
	topic   string
	payload []byte
}

func audit(host, id, event, decision, state string, sec int) msg {
	return msg{topics.Audit(host), mustJSON(protocol.Audit{V: 1, TS: at(sec), Host: host, ID: id, Kind: "shell", Event: event,
		Decision: decision, State: state, Operator: "alice", Summary: "echo hi", Reason: map[bool]string{true: "bad signature"}[decision == "rejected"]})}
}

func result(host, id, state, stdout string, sec int) msg {
	r := protocol.Result{V: 1, ID: id, Host: host, Kind: "shell", State: state, Stdout: stdout, TS: at(sec)}
	if protocol.IsFinal(state) {
		code := 0
		r.ExitCode = &code
	}
	return msg{topics.Result(host, id), mustJSON(r)}
}

func chunk(host, id, stream, data string, seq uint64) msg {
	return msg{topics.Output(host, id), mustJSON(protocol.Chunk{V: 1, ID: id, Host: host, Seq: seq, Stream: stream, Data: data})}
}

// detail reads the host's commands and audits through the API.
func detail(t *testing.T, r *rig, host string) dashboard.HostDetail {
	t.Helper()
	resp, b := r.get("/api/hosts/" + host)
	var d dashboard.HostDetail
	if resp.StatusCode != 200 || json.Unmarshal(b, &d) != nil {
		t.Fatalf("GET /api/hosts/%s: %s %s", host, resp.Status, b)
	}
	return d
}

func TestActivity(t *testing.T) {
	tests := []struct {
		name   string
		msgs   []msg
		state  string
		stdout string
		audits int
	}{
		{"in order", []msg{audit("h", "c1", "received", "accepted", "", 0), result("h", "c1", "queued", "", 0),
			result("h", "c1", "running", "", 1), result("h", "c1", "succeeded", "hi\n", 2), audit("h", "c1", "finished", "", "succeeded", 2)},
			"succeeded", "hi\n", 2},
		{"late running after the final result", []msg{result("h", "c1", "succeeded", "hi\n", 2), result("h", "c1", "running", "", 1)},
			"succeeded", "hi\n", 0},
		{"duplicate final result", []msg{result("h", "c1", "succeeded", "hi\n", 2), result("h", "c1", "succeeded", "other", 3)},
			"succeeded", "hi\n", 0},
		{"finished audit first, then the result fills the output", []msg{audit("h", "c1", "finished", "", "failed", 2), result("h", "c1", "failed", "oops", 2)},
			"failed", "oops", 1},
		{"rejected", []msg{audit("h", "c1", "received", "rejected", "", 0)}, "rejected", "", 1},
		{"streamed output before the result", []msg{result("h", "c1", "running", "", 0), chunk("h", "c1", "stdout", "a", 0), chunk("h", "c1", "stdout", "b", 1)},
			"running", "ab", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, dashboard.Options{})
			for _, m := range tc.msgs {
				if !r.s.Apply(m.topic, m.payload) {
					t.Fatalf("refused %s %s", m.topic, m.payload)
				}
			}
			d := detail(t, r, "h")
			if len(d.Commands) != 1 {
				t.Fatalf("commands %+v", d.Commands)
			}
			c := d.Commands[0]
			if c.State != tc.state || c.Stdout != tc.stdout || len(d.Audits) != tc.audits {
				t.Errorf("state %q stdout %q audits %d, want %q %q %d", c.State, c.Stdout, len(d.Audits), tc.state, tc.stdout, tc.audits)
			}
			if tc.audits > 0 && (c.Operator != "alice" || c.Summary != "echo hi" || c.Kind != "shell") {
				t.Errorf("from the audit record: %+v", c)
			}
		})
	}
}

func TestActivityRefuses(t *testing.T) {
	r := newRig(t, dashboard.Options{})
	big := strings.Repeat("x", 100)
	tests := []struct {
		name string
		m    msg
	}{
		{"other prefix", msg{"other/v1/hosts/h/audit", audit("h", "c", "received", "accepted", "", 0).payload}},
		{"host differs from the topic", msg{topics.Audit("g"), audit("h", "c", "received", "accepted", "", 0).payload}},
		{"bad host id", msg{"mqagent/v1/hosts/a b/audit", audit("a b", "c", "received", "accepted", "", 0).payload}},
		{"not JSON", msg{topics.Audit("h"), []byte("{")}},
		{"no event", msg{topics.Audit("h"), []byte(`{"v":1,"host":"h"}`)}},
		{"bad command id", msg{"mqagent/v1/hosts/h/results/" + big + "!", result("h", big+"!", "queued", "", 0).payload}},
		{"result id differs", msg{topics.Result("h", "c2"), result("h", "c1", "queued", "", 0).payload}},
		{"no state", msg{topics.Result("h", "c1"), []byte(`{"v":1,"host":"h","id":"c1"}`)}},
		{"unknown sub-topic", msg{topics.Result("h", "c1") + "/x", result("h", "c1", "queued", "", 0).payload}},
		{"metrics topic", msg{topics.Metrics("h"), metrics("h", 0, 1, 0)}},
	}
	for _, tc := range tests {
		if r.s.Apply(tc.m.topic, tc.m.payload) {
			t.Errorf("%s: kept", tc.name)
		}
	}
	if resp, _ := r.get("/api/hosts/h"); resp.StatusCode != 404 {
		t.Errorf("host h known after bad messages only: %s", resp.Status)
	}
}

func TestActivityBounds(t *testing.T) {
	r := newRig(t, dashboard.Options{Commands: 3, Audits: 4, MaxActivityHosts: 2})
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("c%d", i)
		r.s.Apply(topics.Audit("h"), audit("h", id, "received", "accepted", "", i).payload)
		r.s.Apply(topics.Result("h", id), result("h", id, "succeeded", strings.Repeat("y", 20_000), i).payload)
	}
	d := detail(t, r, "h")
	if len(d.Commands) != 3 || d.Commands[0].ID != "c9" || d.Commands[2].ID != "c7" {
		t.Errorf("commands %d, first %s", len(d.Commands), d.Commands[0].ID)
	}
	if len(d.Audits) != 4 || d.Audits[0].ID != "c9" {
		t.Errorf("audits %d", len(d.Audits))
	}
	if c := d.Commands[0]; len(c.Stdout) > 8<<10 || !c.Truncated {
		t.Errorf("stdout kept %d bytes, truncated %v", len(c.Stdout), c.Truncated)
	}
	// A third host pushes out the least recently active.
	r.s.Apply(topics.Audit("g"), audit("g", "x", "received", "accepted", "", 0).payload)
	r.s.Apply(topics.Audit("h"), audit("h", "y", "received", "accepted", "", 0).payload)
	r.s.Apply(topics.Audit("k"), audit("k", "z", "received", "accepted", "", 0).payload)
	if resp, _ := r.get("/api/hosts/g"); resp.StatusCode != 404 {
		t.Errorf("g kept: %s", resp.Status)
	}
	for _, h := range []string{"h", "k"} {
		if resp, _ := r.get("/api/hosts/" + h); resp.StatusCode != 200 {
			t.Errorf("%s: %s", h, resp.Status)
		}
	}
}

// TestClip: output cut at the limit stays valid UTF-8.
func TestClip(t *testing.T) {
	r := newRig(t, dashboard.Options{})
	out := strings.Repeat("é", 5000) // 10,000 bytes
	r.s.Apply(topics.Result("h", "c1"), result("h", "c1", "succeeded", out, 0).payload)
	c := detail(t, r, "h").Commands[0]
	if !strings.HasPrefix(out, c.Stdout) || len(c.Stdout) > 8<<10 || len(c.Stdout)%2 != 0 {
		t.Errorf("clipped to %d bytes", len(c.Stdout))
	}
}
