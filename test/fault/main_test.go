// Package fault breaks things under a running agent with real processes:
// the real mqagent binary, a real Mosquitto, and test/fault/faultproxy
// between them when the network itself must fail. Each test proves one
// promise of docs/DESIGN.md under one fault (broker restart and kill -9,
// agent kill -9 at random points, network partition, stalled broker);
// docs/faults.md says what each proves and the figures measured.
//
// Every test is bounded in count and time and cleans up its processes. The
// slow-broker stall lasts 8 s, or 30 s with MQAGENT_FAULT_LONG=1. Tests
// that need Mosquitto skip without it, except under CI=true, where they
// fail.
package fault

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// wait bounds an ordinary wait (an agent coming online, a result).
const wait = 20 * time.Second

// agentConfig is the harness's default agent config for host, with a
// broker session tuned for fault tests: a short keepalive (the smallest
// the config allows) and quick reconnects, so that a test sees a fault
// and the recovery in seconds.
func agentConfig(t *testing.T, host, brokerURL string) map[string]any {
	cfg := harness.DefaultConfig(host, brokerURL, filepath.Join(t.TempDir(), "data"))
	b := cfg["broker"].(map[string]any)
	b["keepalive"] = "5s"
	b["connect_timeout"] = "3s"
	b["reconnect_min"] = "200ms"
	b["reconnect_max"] = "1s"
	return cfg
}

func section(cfg map[string]any, name string) map[string]any { return cfg[name].(map[string]any) }

// shell is a shell command for host.
func shell(host, command string) protocol.Command {
	args, _ := json.Marshal(protocol.ShellArgs{Command: command})
	return protocol.Command{V: protocol.Version, ID: harness.NewID(), Kind: protocol.KindShell,
		Target: "host:" + host, Args: args, IssuedAt: protocol.Now()}
}

// marker is a command that appends its own id to file: the side effect
// that proves how many times it ran.
func marker(host, file string) protocol.Command {
	c := shell(host, "")
	return withBody(c, fmt.Sprintf("echo %s >> %s", c.ID, quote(file)))
}

// quote makes s one word for sh, whatever it holds (test directories are
// named after subtests: parentheses, quotes, spaces).
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// phased is a command that appends its id to started, runs body, then
// appends its id to finished.
func phased(host, started, body, finished string) protocol.Command {
	c := shell(host, "")
	return withBody(c, fmt.Sprintf("echo %s >> %s; %s; echo %s >> %s", c.ID, quote(started), body, c.ID, quote(finished)))
}

func withBody(c protocol.Command, command string) protocol.Command {
	c.Args, _ = json.Marshal(protocol.ShellArgs{Command: command})
	return c
}

// send publishes commands to their host's topic (QoS 1, PUBACK awaited).
func send(op *harness.Operator, cmds ...protocol.Command) []string {
	ids := make([]string, len(cmds))
	for i, c := range cmds {
		b, err := json.Marshal(c)
		if err != nil {
			panic(err) // our own types
		}
		op.SendRaw(op.Topics().HostCmd(strings.TrimPrefix(c.Target, "host:")), b)
		ids[i] = c.ID
	}
	return ids
}

// lines counts the lines of a side-effect file by content; a missing file
// is empty.
func lines(t *testing.T, path string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out[l]++
		}
	}
	return out
}

// waitLines waits until path holds at least n lines.
func waitLines(t *testing.T, path string, n int, timeout time.Duration) {
	t.Helper()
	if !poll(timeout, func() bool { return total(lines(t, path)) >= n }) {
		t.Fatalf("%s: %d lines within %v, want %d", path, total(lines(t, path)), timeout, n)
	}
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// poll checks cond every 20 ms until it holds or timeout passes: for
// conditions with no event to wait on (a file growing, a process's memory).
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ledger is an operator's persistent record of what hosts publish: a
// client with a persistent session (clean session false, QoS 1), so that
// results published while it is away from a restarted broker wait for it
// in the broker's queue. It subscribes again on every connection (a broker
// killed before its autosave forgets the session).
type ledger struct {
	t      *testing.T
	client mqtt.Client
	topics protocol.Topics

	mu       sync.Mutex
	changed  harness.Notifier
	results  map[string][]protocol.Result
	statuses map[string][]stamped[protocol.Status]
	online   bool
}

// stamped is something received and when.
type stamped[T any] struct {
	v  T
	at time.Time
}

// newLedger connects a ledger to url and subscribes to every host's
// results and status. id is its client id ("" for a new one): a new
// ledger with the id of one that disconnected resumes its session.
func newLedger(t *testing.T, url, id string) *ledger {
	t.Helper()
	if id == "" {
		id = "ledger-" + strings.ToLower(harness.NewID())
	}
	l := &ledger{t: t, topics: protocol.Topics{Prefix: protocol.DefaultPrefix},
		results: map[string][]protocol.Result{}, statuses: map[string][]stamped[protocol.Status]{}}
	filters := map[string]byte{l.topics.Result("+", "+"): 1, l.topics.Status("+"): 1}
	opts := mqtt.NewClientOptions().AddBroker(url).
		SetClientID(id).
		SetCleanSession(false).
		SetOrderMatters(true).
		SetKeepAlive(10 * time.Second).
		SetConnectTimeout(3 * time.Second).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(250 * time.Millisecond).
		SetDefaultPublishHandler(l.handle).
		SetConnectionLostHandler(func(mqtt.Client, error) { l.setOnline(false) }).
		SetOnConnectHandler(func(c mqtt.Client) {
			tok := c.SubscribeMultiple(filters, nil)
			ok := tok.WaitTimeout(10*time.Second) && tok.Error() == nil
			l.setOnline(ok)
		})
	l.client = mqtt.NewClient(opts)
	if tok := l.client.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("ledger: connect to %s: %v", url, tok.Error())
	}
	t.Cleanup(l.close)
	l.waitOnline(t)
	return l
}

// close disconnects the ledger; its session stays on the broker.
func (l *ledger) close() { l.client.Disconnect(100) }

func (l *ledger) setOnline(v bool) {
	l.mu.Lock()
	l.online = v
	l.notifyLocked()
	l.mu.Unlock()
}

func (l *ledger) notifyLocked() { l.changed.Notify() }

// waitOnline waits until the ledger is connected and subscribed.
func (l *ledger) waitOnline(t *testing.T) {
	t.Helper()
	if !l.waitFor(wait, func() bool { return l.online }) {
		t.Fatalf("ledger: not connected within %v", wait)
	}
}

func (l *ledger) handle(_ mqtt.Client, m mqtt.Message) {
	parts := strings.Split(m.Topic(), "/")
	if len(m.Payload()) == 0 || len(parts) < 2 {
		return
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	switch parts[len(parts)-1] {
	case "status":
		var s protocol.Status
		if json.Unmarshal(m.Payload(), &s) == nil {
			l.statuses[s.Host] = append(l.statuses[s.Host], stamped[protocol.Status]{s, now})
		}
	default:
		if len(parts) >= 2 && parts[len(parts)-2] == "results" {
			var r protocol.Result
			if json.Unmarshal(m.Payload(), &r) == nil {
				l.results[r.ID] = append(l.results[r.ID], r)
			}
		}
	}
	l.notifyLocked()
}

// waitFor waits until cond (called with l.mu held) holds, waking on every
// message.
func (l *ledger) waitFor(timeout time.Duration, cond func() bool) bool {
	return l.changed.Await(&l.mu, timeout, cond)
}

// finalLocked is the first final result of id.
func (l *ledger) finalLocked(id string) (protocol.Result, bool) {
	for _, r := range l.results[id] {
		if protocol.IsFinal(r.State) {
			return r, true
		}
	}
	return protocol.Result{}, false
}

// waitFinals waits for a final result of every id and returns them by id.
func (l *ledger) waitFinals(t *testing.T, ids []string, timeout time.Duration) map[string]protocol.Result {
	t.Helper()
	out := map[string]protocol.Result{}
	var missing []string
	ok := l.waitFor(timeout, func() bool {
		missing = missing[:0]
		for _, id := range ids {
			if r, ok := l.finalLocked(id); ok {
				out[id] = r
			} else {
				missing = append(missing, id)
			}
		}
		return len(missing) == 0
	})
	if !ok {
		l.mu.Lock()
		var seen []string
		for _, id := range missing[:min(len(missing), 5)] {
			var states []string
			for _, r := range l.results[id] {
				states = append(states, r.State)
			}
			seen = append(seen, fmt.Sprintf("%s: %v", id, states))
		}
		l.mu.Unlock()
		t.Fatalf("ledger: no final result within %v for %d of %d commands; e.g. %s", timeout, len(missing), len(ids), strings.Join(seen, "; "))
	}
	return out
}

// finals is every final result received for id (at least once delivery:
// the same final result may arrive twice).
func (l *ledger) finals(id string) []protocol.Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []protocol.Result
	for _, r := range l.results[id] {
		if protocol.IsFinal(r.State) {
			out = append(out, r)
		}
	}
	return out
}

// waitStatus waits for a status of host after the first after ones that
// satisfies pred, and returns it with its arrival time.
func (l *ledger) waitStatus(t *testing.T, host string, after int, pred func(protocol.Status) bool, timeout time.Duration) (protocol.Status, time.Time) {
	t.Helper()
	var got stamped[protocol.Status]
	ok := l.waitFor(timeout, func() bool {
		list := l.statuses[host]
		for i := after; i < len(list); i++ {
			if pred(list[i].v) {
				got = list[i]
				return true
			}
		}
		return false
	})
	if !ok {
		l.mu.Lock()
		var seen []string
		for _, s := range l.statuses[host] {
			seen = append(seen, fmt.Sprintf("%s/%s/session=%d", s.v.State, s.v.Reason, s.v.Session))
		}
		l.mu.Unlock()
		t.Fatalf("ledger: no matching status of %s within %v (after %d); seen %v", host, timeout, after, seen)
	}
	return got.v, got.at
}

// nStatuses is how many statuses of host were received so far.
func (l *ledger) nStatuses(host string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.statuses[host])
}

// waitAgentOnline waits for the online status of the agent's current
// process, after the first after statuses of its host, and returns it.
func (l *ledger) waitAgentOnline(t *testing.T, a *harness.Agent, after int) protocol.Status {
	t.Helper()
	pid := a.PID()
	s, _ := l.waitStatus(t, a.HostID(), after, func(s protocol.Status) bool {
		return s.State == protocol.StatusOnline && s.PID == pid
	}, wait)
	return s
}

func isOnline(s protocol.Status) bool  { return s.State == protocol.StatusOnline }
func isOffline(s protocol.Status) bool { return s.State == protocol.StatusOffline }

// logSize is the current size of the agent's log, an offset for logEvent.
func logSize(a *harness.Agent) int64 {
	st, err := os.Stat(a.LogPath())
	if err != nil {
		return 0
	}
	return st.Size()
}

// logEvent finds the first line of the agent's log after byte offset off
// with msg="MSG" and returns the time the agent logged it.
func logEvent(a *harness.Agent, off int64, msg string) (time.Time, bool) {
	b, err := os.ReadFile(a.LogPath())
	if err != nil || int64(len(b)) < off {
		return time.Time{}, false
	}
	needle := `msg="` + msg + `"`
	for _, line := range strings.Split(string(b[off:]), "\n") {
		if !strings.Contains(line, needle) {
			continue
		}
		ts, ok := strings.CutPrefix(line, "time=")
		if !ok {
			continue
		}
		ts, _, _ = strings.Cut(ts, " ")
		if at, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			return at, true
		}
	}
	return time.Time{}, false
}

// waitLogEvent waits for logEvent to find msg.
func waitLogEvent(t *testing.T, a *harness.Agent, off int64, msg string, timeout time.Duration) time.Time {
	t.Helper()
	var at time.Time
	if !poll(timeout, func() bool {
		var ok bool
		at, ok = logEvent(a, off, msg)
		return ok
	}) {
		t.Fatalf("agent %s did not log %q within %v", a.HostID(), msg, timeout)
	}
	return at
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // our own types
	}
	return b
}
