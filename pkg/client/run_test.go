package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqagent/mqagent/pkg/client"
	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// simHost is a small in-test agent: it publishes a retained online status
// (and an inventory with facts), subscribes to its command topics, checks
// the filter on group and broadcast topics like the agent does, and
// answers every command with a final result whose state its answer
// function chooses ("" = stay silent).
type simHost struct {
	id     string
	groups []string
	facts  map[string]string
	answer func(cmd protocol.Command) string
	chunks int

	mu  sync.Mutex
	got []protocol.Command
}

func (h *simHost) commands() []protocol.Command {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.got)
}

func startSim(t *testing.T, url string, h *simHost) {
	t.Helper()
	c := rawClient(t, url, "sim-"+h.id)
	// The handler may still be called after the test ended (a copy sent
	// last): once stopped, it does nothing.
	var (
		wg      sync.WaitGroup
		stopMu  sync.Mutex
		stopped bool
	)
	t.Cleanup(func() {
		stopMu.Lock()
		stopped = true
		stopMu.Unlock()
		wg.Wait()
	})
	if h.facts != nil {
		b, _ := json.Marshal(protocol.Inventory{V: 1, Host: h.id, TS: protocol.Now(), OS: "linux", Groups: h.groups, Facts: h.facts})
		waitTok(t, "inventory", c.Publish(topics.Inventory(h.id), 1, true, b))
	}
	b, _ := json.Marshal(protocol.Status{V: 1, Host: h.id, State: protocol.StatusOnline, Session: 1, TS: protocol.Now(), OS: "linux", Groups: h.groups, Version: "1.0"})
	waitTok(t, "status", c.Publish(topics.Status(h.id), 1, true, b))
	handler := func(c paho.Client, m paho.Message) {
		stopMu.Lock()
		defer stopMu.Unlock()
		if stopped {
			return
		}
		var cmd protocol.Command
		if err := json.Unmarshal(m.Payload(), &cmd); err != nil {
			t.Errorf("sim %s: %v", h.id, err)
			return
		}
		scope, _ := topics.ParseCmdTopic(m.Topic())
		if scope != protocol.ScopeHost && cmd.Filter != nil && !simMatches(h, cmd.Filter) {
			return
		}
		h.mu.Lock()
		h.got = append(h.got, cmd)
		h.mu.Unlock()
		state := h.answer(cmd)
		if state == "" {
			return
		}
		wg.Go(func() {
			q, _ := json.Marshal(protocol.Result{V: 1, ID: cmd.ID, Host: h.id, State: protocol.StateQueued, TS: protocol.Now()})
			c.Publish(topics.Result(h.id, cmd.ID), 1, false, q)
			for i := range h.chunks {
				ch, _ := json.Marshal(protocol.Chunk{V: 1, ID: cmd.ID, Host: h.id, Seq: uint64(i), Stream: "stdout", Data: fmt.Sprintf("%s %d\n", h.id, i)})
				c.Publish(topics.Output(h.id, cmd.ID), 1, false, ch)
			}
			r, _ := json.Marshal(protocol.Result{V: 1, ID: cmd.ID, Host: h.id, Kind: cmd.Kind, State: state, Stdout: h.id, TS: protocol.Now()})
			c.Publish(topics.Result(h.id, cmd.ID), 1, false, r).WaitTimeout(waitTimeout)
			// Delivered twice (at least once): must be counted once.
			c.Publish(topics.Result(h.id, cmd.ID), 1, false, r).WaitTimeout(waitTimeout)
		})
	}
	subs := map[string]byte{topics.HostCmd(h.id): 1, topics.AllCmd(): 1}
	for _, g := range h.groups {
		subs[topics.GroupCmd(g)] = 1
	}
	waitTok(t, "sim subscribe", c.SubscribeMultiple(subs, handler))
}

func simMatches(h *simHost, f *protocol.Filter) bool {
	if len(f.Hosts) > 0 && !slices.Contains(f.Hosts, h.id) {
		return false
	}
	if len(f.Groups) > 0 && !slices.ContainsFunc(f.Groups, func(g string) bool { return slices.Contains(h.groups, g) }) {
		return false
	}
	if f.OS != "" && f.OS != "linux" {
		return false
	}
	for k, v := range f.Facts {
		if h.facts[k] != v {
			return false
		}
	}
	return true
}

func always(state string) func(protocol.Command) string {
	return func(protocol.Command) string { return state }
}

// simFleet: web-1, web-2 (group web, env prod/dev), db-1 (group db, env
// prod, fails), mute-1 (group web, env prod, never answers).
func simFleet(t *testing.T, url string) map[string]*simHost {
	hosts := map[string]*simHost{
		"web-1":  {id: "web-1", groups: []string{"web"}, facts: map[string]string{"env": "prod"}, answer: always(protocol.StateSucceeded), chunks: 3},
		"web-2":  {id: "web-2", groups: []string{"web"}, facts: map[string]string{"env": "dev"}, answer: always(protocol.StateSucceeded), chunks: 3},
		"db-1":   {id: "db-1", groups: []string{"db"}, facts: map[string]string{"env": "prod"}, answer: always(protocol.StateFailed)},
		"mute-1": {id: "mute-1", groups: []string{"web"}, facts: map[string]string{"env": "prod"}, answer: always("")},
	}
	for _, h := range hosts {
		startSim(t, url, h)
	}
	return hosts
}

func ping() protocol.Command { return protocol.Command{Kind: protocol.KindPing} }

func TestRunTargets(t *testing.T) {
	url := startBroker(t, nil)
	hosts := simFleet(t, url)
	c := dial(t, url, "op-run")
	tests := []struct {
		name      string
		target    string
		filter    *protocol.Filter
		expected  []string
		succeeded []string
		failed    []string
		noAnswer  []string
		ok        bool
	}{
		{name: "one host", target: "host:web-1", expected: []string{"web-1"}, succeeded: []string{"web-1"}, ok: true},
		{name: "list", target: "host:web-1,db-1", expected: []string{"db-1", "web-1"}, succeeded: []string{"web-1"}, failed: []string{"db-1"}},
		{name: "group", target: "group:web", expected: []string{"mute-1", "web-1", "web-2"}, succeeded: []string{"web-1", "web-2"}, noAnswer: []string{"mute-1"}},
		{name: "all with a facts filter", target: "all", filter: &protocol.Filter{Facts: map[string]string{"env": "dev"}},
			expected: []string{"web-2"}, succeeded: []string{"web-2"}, ok: true},
		{name: "group with a hosts filter", target: "group:web", filter: &protocol.Filter{Hosts: []string{"web-1", "db-1"}},
			expected: []string{"web-1"}, succeeded: []string{"web-1"}, ok: true},
		{name: "list with a filter applied by the SDK", target: "host:web-1,web-2", filter: &protocol.Filter{Facts: map[string]string{"env": "dev"}},
			expected: []string{"web-2"}, succeeded: []string{"web-2"}, ok: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target, err := fleet.ParseTarget(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			// mute-1 never answers: bound the wait.
			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			defer cancel()
			r, err := c.Run(ctx, client.Request{Command: ping(), Target: target, Filter: tc.filter})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if !slices.Equal(r.Expected(), tc.expected) {
				t.Fatalf("expected %v, want %v", r.Expected(), tc.expected)
			}
			s := r.Wait()
			if !slices.Equal(s.Succeeded, nonNil(tc.succeeded)) || !slices.Equal(s.Failed, nonNil(tc.failed)) || !slices.Equal(s.NoAnswer, nonNil(tc.noAnswer)) {
				t.Fatalf("summary succeeded %v failed %v no answer %v", s.Succeeded, s.Failed, s.NoAnswer)
			}
			if s.OK() != tc.ok || !slices.Equal(r.Missing(), nonNil(tc.noAnswer)) && len(tc.noAnswer)+len(r.Missing()) > 0 {
				t.Fatalf("OK %v, missing %v", s.OK(), r.Missing())
			}
		})
	}
	// Each host's copy of a list command names that host and carries no
	// filter; the group command carries its filter.
	for _, cmd := range hosts["web-1"].commands() {
		if strings.HasPrefix(cmd.Target, "host:") && (cmd.Target != "host:web-1" || cmd.Filter != nil) {
			t.Fatalf("web-1 got a host command %+v", cmd)
		}
	}
	if n := len(hosts["web-1"].commands()); n != 4 {
		t.Fatalf("web-1 got %d commands, want 4", n)
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func TestRunEventsAndDone(t *testing.T) {
	url := startBroker(t, nil)
	simFleet(t, url)
	c := dial(t, url, "op-events")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := ping()
	cmd.Stream = true
	r, err := c.Run(ctx, client.Request{Command: cmd, Target: fleet.Target{Hosts: []string{"web-1", "web-2"}}})
	if err != nil {
		t.Fatal(err)
	}
	chunks := map[string][]uint64{}
	var states []string
	for ev := range r.Events() {
		switch {
		case ev.Chunk != nil:
			chunks[ev.Chunk.Host] = append(chunks[ev.Chunk.Host], ev.Chunk.Seq)
		case ev.Result != nil:
			states = append(states, ev.Result.Host+":"+ev.Result.State)
			if protocol.IsFinal(ev.Result.State) && len(chunks[ev.Result.Host]) != 3 {
				t.Fatalf("final result of %s before its chunks (%v)", ev.Result.Host, chunks)
			}
		}
	}
	select {
	case <-r.Done():
	default:
		t.Fatal("Events closed before Done")
	}
	slices.Sort(states)
	if !slices.Equal(states, []string{"web-1:queued", "web-1:succeeded", "web-2:queued", "web-2:succeeded"}) {
		t.Fatalf("states %v (duplicates must be dropped)", states)
	}
	for _, h := range []string{"web-1", "web-2"} {
		if !slices.Equal(chunks[h], []uint64{0, 1, 2}) {
			t.Fatalf("chunks of %s: %v", h, chunks[h])
		}
	}
	if a, e := r.Progress(); a != 2 || e != 2 || len(r.Results()) != 2 {
		t.Fatalf("progress %d/%d", a, e)
	}
}

func TestRunErrors(t *testing.T) {
	url := startBroker(t, nil)
	simFleet(t, url)
	c := dial(t, url, "op-errors")
	ctx := context.Background()
	if _, err := c.Run(ctx, client.Request{Command: ping(), Target: fleet.Target{Group: "nobody"}}); !errors.Is(err, client.ErrNoHosts) {
		t.Fatalf("empty group: %v", err)
	}
	if _, err := c.Run(ctx, client.Request{Command: ping()}); err == nil {
		t.Fatal("no target accepted")
	}
	if _, err := c.Run(ctx, client.Request{Command: protocol.Command{Kind: "ping", ID: "a/b"}, Target: fleet.Target{All: true}}); err == nil {
		t.Fatal("bad id accepted")
	}
	if _, err := c.Run(ctx, client.Request{Command: protocol.Command{}, Target: fleet.Target{All: true}}); err == nil {
		t.Fatal("no kind accepted")
	}
}

// A Run whose context ends stops waiting and reports who did not answer;
// Call returns the same summary.
func TestCallTimesOutOnSilentHost(t *testing.T) {
	url := startBroker(t, nil)
	simFleet(t, url)
	c := dial(t, url, "op-call")
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	s, err := c.Call(ctx, client.Request{Command: ping(), Target: fleet.Target{Hosts: []string{"mute-1", "web-1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Call took %v", d)
	}
	if !slices.Equal(s.NoAnswer, []string{"mute-1"}) || !slices.Equal(s.Succeeded, []string{"web-1"}) || s.OK() || s.Expected != 2 {
		t.Fatalf("summary %+v", s)
	}
	var noAnswer *client.Outcome
	for i := range s.Outcomes {
		if s.Outcomes[i].Host == "mute-1" {
			noAnswer = &s.Outcomes[i]
		}
	}
	if noAnswer == nil || noAnswer.Outcome != client.OutcomeNoAnswer || noAnswer.Result != nil || !noAnswer.Expected {
		t.Fatalf("mute-1 outcome %+v", noAnswer)
	}
}

func TestFleetView(t *testing.T) {
	url := startBroker(t, nil)
	simFleet(t, url)
	c := dial(t, url, "op-fleet")
	v, err := c.Fleet(context.Background(), client.FleetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v.Len() != 4 {
		t.Fatalf("view has %d hosts after the initial load, want 4", v.Len())
	}
	h, ok := v.Host("web-2")
	if !ok || !h.Online || h.Facts["env"] != "dev" || !slices.Equal(h.Groups, []string{"web"}) {
		t.Fatalf("web-2: %+v", h)
	}
	// Statuses answers from the view now.
	st, err := c.Statuses(0)
	if err != nil || len(st) != 4 || st["db-1"].State != protocol.StatusOnline {
		t.Fatalf("Statuses %v, %v", st, err)
	}
	// Live: a host goes offline.
	pub := rawClient(t, url, "late")
	b, _ := json.Marshal(protocol.Status{V: 1, Host: "db-1", State: protocol.StatusOffline, Reason: protocol.ReasonShutdown, Session: 1, TS: protocol.Now()})
	waitTok(t, "offline", pub.Publish(topics.Status("db-1"), 1, true, b))
	deadline := time.Now().Add(waitTimeout)
	for {
		if h, _ := v.Host("db-1"); !h.Online && h.Reason == protocol.ReasonShutdown {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("db-1 never went offline in the view")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Same view on a second call.
	if v2, _ := c.Fleet(context.Background(), client.FleetOptions{}); v2 != v {
		t.Fatal("a second Fleet call made another view")
	}
}
