package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/client"
	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/rollout"
)

// The Go SDK (pkg/client, pkg/fleet, pkg/rollout) against real agents.

func (f *cliFleet) sdk() *client.Client {
	f.t.Helper()
	c, err := client.Dial(client.Options{URL: f.broker.URL(), Timeout: 5 * time.Second})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(c.Close)
	return c
}

func shellCmd(command string) protocol.Command {
	args, _ := json.Marshal(protocol.ShellArgs{Command: command})
	return protocol.Command{Kind: protocol.KindShell, Args: args}
}

func TestSDKFleetView(t *testing.T) {
	f := newCLIFleet(t)
	c := f.sdk()
	ctx := context.Background()
	v, err := c.Fleet(ctx, client.FleetOptions{Metrics: true})
	if err != nil {
		t.Fatal(err)
	}
	snap := v.Snapshot()
	if len(snap) != 4 {
		t.Fatalf("snapshot %d hosts", len(snap))
	}
	for _, h := range snap {
		if !h.Online || !h.HasInventory || h.Session < 1 || h.Version == "" || h.Inventory == nil || h.Facts["env"] == "" {
			t.Fatalf("host %+v", h)
		}
	}
	changes, cancel := v.Subscribe(16)
	defer cancel()
	for range 4 { // the known hosts first
		if ch := <-changes; ch.Kind != fleet.Added {
			t.Fatalf("initial change %+v", ch)
		}
	}
	// Live: a metrics sample (interval 2 s), then a host killed: its will.
	deadline := time.After(wait)
	gotMetrics := false
	for !gotMetrics {
		select {
		case ch := <-changes:
			gotMetrics = ch.Parts&fleet.PartMetrics != 0 && ch.Host.Metrics != nil && ch.Host.Metrics.CPU != nil
		case <-deadline:
			t.Fatal("no metrics sample")
		}
	}
	birth, _ := v.Host("web-2")
	f.agents["web-2"].Kill()
	for {
		select {
		case ch := <-changes:
			if ch.ID == "web-2" && ch.Parts&fleet.PartStatus != 0 && !ch.Host.Online {
				if ch.Host.Reason != protocol.ReasonLost || ch.Host.Session != birth.Session {
					t.Fatalf("will %+v", ch.Host)
				}
				return
			}
		case <-time.After(wait):
			t.Fatal("web-2 never went offline in the view")
		}
	}
}

func TestSDKRunAccounting(t *testing.T) {
	f := newCLIFleet(t)
	c := f.sdk()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	// Streaming: chunks of each host in order, before its final result.
	cmd := shellCmd("for i in 1 2 3; do echo $i; sleep 0.05; done")
	cmd.Stream = true
	r, err := c.Run(ctx, client.Request{Command: cmd, Target: fleet.Target{Group: "web"}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	finals := 0
	for ev := range r.Events() {
		if ch := ev.Chunk; ch != nil {
			out[ch.Host] += ch.Data
		}
		if res := ev.Result; res != nil && protocol.IsFinal(res.State) {
			finals++
			if out[res.Host] != "1\n2\n3\n" || res.Stdout != "1\n2\n3\n" {
				t.Fatalf("%s: streamed %q, final stdout %q", res.Host, out[res.Host], res.Stdout)
			}
		}
	}
	if finals != 2 || len(r.Missing()) != 0 || !r.Summary().OK() {
		t.Fatalf("finals %d, missing %v, summary %+v", finals, r.Missing(), r.Summary())
	}

	// A frozen host: expected, never answers; Done when ctx ends.
	freeze(t, f.agents["db-2"])
	short, cancelShort := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancelShort()
	r, err = c.Run(short, client.Request{Command: protocol.Command{Kind: protocol.KindPing}, Target: fleet.Target{All: true},
		Filter: &protocol.Filter{Facts: map[string]string{"env": "prod"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !slices.Equal(r.Expected(), []string{"db-1", "db-2", "web-1"}) {
		t.Fatalf("expected %v", r.Expected())
	}
	select {
	case <-r.Done():
	case <-time.After(wait):
		t.Fatal("Done not closed after the context ended")
	}
	s := r.Summary()
	if !slices.Equal(r.Missing(), []string{"db-2"}) || !slices.Equal(s.Succeeded, []string{"db-1", "web-1"}) || !slices.Equal(s.NoAnswer, []string{"db-2"}) {
		t.Fatalf("missing %v, summary %+v", r.Missing(), s)
	}
	// web-2 (env=dev) got it and stayed silent: not expected, no result.
	if _, ok := r.Results()["web-2"]; ok {
		t.Fatal("web-2 answered a command its facts exclude")
	}
	if _, err := c.Run(ctx, client.Request{Command: protocol.Command{Kind: protocol.KindPing}, Target: fleet.Target{Group: "nope"}}); !errors.Is(err, client.ErrNoHosts) {
		t.Fatalf("empty group: %v", err)
	}
}

// pkg/rollout's Execute through ClientBackend, with real agents, some of
// which fail.
func TestSDKRolloutAbort(t *testing.T) {
	f := newCLIFleet(t)
	c := f.sdk()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := shellCmd("exit 1")
	cmd.ID = client.NewID()
	st, err := rollout.NewState(cmd, []string{"web-1", "db-1", "db-2", "web-2"}, rollout.Config{Batch: rollout.Size{N: 1}, AbortPercent: 60, AbortMin: 2, HostTimeout: 10 * time.Second}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e, err := rollout.NewEngine(st)
	if err != nil {
		t.Fatal(err)
	}
	b, err := rollout.NewClientBackend(ctx, c, st.Command, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var seen []string
	b.OnEvent = func(ev client.Event) {
		if ev.Result != nil && protocol.IsFinal(ev.Result.State) {
			seen = append(seen, ev.Result.Host)
		}
	}
	rep, err := rollout.Execute(ctx, e, b, rollout.Options{Store: rollout.Store{Dir: f.stateDir}})
	// Every host fails: abort after the first two (2 of 2 >= 60%).
	if !errors.Is(err, rollout.ErrAborted) || !slices.Equal(rep.Failed, []string{"web-1", "db-1"}) || !slices.Equal(rep.NotStarted, []string{"db-2", "web-2"}) {
		t.Fatalf("report %+v, %v", rep, err)
	}
	if !slices.Equal(seen, []string{"web-1", "db-1"}) {
		t.Fatalf("results seen %v", seen)
	}
	if !strings.Contains(rep.AbortReason, "2 of 2") {
		t.Fatalf("reason %q", rep.AbortReason)
	}
}
