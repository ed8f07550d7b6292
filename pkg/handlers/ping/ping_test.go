package ping_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/handlers/ping"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// ping runs on the intake path: it must be marked Pure.
var (
	_ dispatch.Handler    = ping.Handler{}
	_ dispatch.Pure       = ping.Handler{}
	_ dispatch.Summarizer = ping.Handler{}
)

func TestPureMarker(t *testing.T) {
	var h dispatch.Handler = ping.Handler{}
	if _, ok := h.(dispatch.Pure); !ok {
		t.Fatal("ping.Handler is not dispatch.Pure")
	}
	if _, ok := h.(dispatch.Immediate); ok {
		t.Fatal("ping.Handler is also Immediate: the dispatcher would journal it as running first")
	}
}

func TestDecodeAcceptsAnyArgs(t *testing.T) {
	for _, args := range []string{``, `null`, `{}`, `{"x":1}`, `[1]`} {
		if _, err := (ping.Handler{}).Decode(json.RawMessage(args)); err != nil {
			t.Errorf("Decode(%s): %v", args, err)
		}
	}
	if got := (ping.Handler{}).Summary(nil); got != "ping" {
		t.Errorf("Summary = %q, want ping", got)
	}
}

func TestRun(t *testing.T) {
	cases := []struct {
		name    string
		started time.Time
		min     int64 // lower bound of uptime_ms
		max     int64 // upper bound of uptime_ms
	}{
		{"just started", time.Now(), 0, 5_000},
		{"up for a while", time.Now().Add(-90 * time.Second), 90_000, 95_000},
		// A start time from a wall clock that was later set back (no
		// monotonic reading): the uptime is never negative.
		{"start in the future", time.Now().Round(0).Add(time.Hour), 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := ping.Handler{Version: "1.2.3-test", Started: c.started}
			out := h.Run(context.Background(), &dispatch.Call{Cmd: &protocol.Command{ID: "p", Kind: protocol.KindPing}})
			if out.State != "" || out.Error != "" || out.ExitCode != nil {
				t.Fatalf("outcome %+v: want no state (the dispatcher marks it succeeded) and no error", out)
			}
			data, ok := out.Data.(protocol.PingData)
			if !ok {
				t.Fatalf("Data is %T, want protocol.PingData", out.Data)
			}
			if data.Version != "1.2.3-test" {
				t.Errorf("version %q", data.Version)
			}
			if data.UptimeMS < c.min || data.UptimeMS > c.max {
				t.Errorf("uptime_ms %d, want within [%d, %d]", data.UptimeMS, c.min, c.max)
			}
			// The wire form has both fields.
			b, err := json.Marshal(out.Data)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			if _, ok := m["version"]; !ok {
				t.Errorf("data %s lacks version", b)
			}
			if _, ok := m["uptime_ms"]; !ok {
				t.Errorf("data %s lacks uptime_ms", b)
			}
		})
	}
}
