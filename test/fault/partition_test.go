package fault

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/fault/faultproxy"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// keepalive is the agent's broker.keepalive in agentConfig.
const keepalive = 5 * time.Second

// partitioned is one host cut off from its broker by a fault proxy: the
// agent's broker URL is the proxy; the operator and the ledger talk to
// the broker directly.
type partitioned struct {
	t     *testing.T
	host  string
	mq    *harness.Mosquitto
	proxy *faultproxy.Proxy
	agent *harness.Agent
	op    *harness.Operator
	led   *ledger
	dir   string
	// online is the agent's online status before the fault.
	online protocol.Status
}

func newPartitioned(t *testing.T, host string) *partitioned {
	t.Helper()
	mq := harness.StartMosquitto(t)
	bin := harness.BuildAgent(t)
	proxy, err := faultproxy.Start("127.0.0.1:" + strconv.Itoa(mq.Port()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	p := &partitioned{t: t, host: host, mq: mq, proxy: proxy, dir: t.TempDir(),
		op: harness.NewOperator(t, mq.URL()), led: newLedger(t, mq.URL(), "")}
	p.agent = harness.StartAgent(t, bin, agentConfig(t, host, proxy.URL()))
	p.online = p.led.waitAgentOnline(t, p.agent, 0)
	return p
}

// TestPartition cuts the network between an agent and its broker with the
// fault proxy in three ways, each while a command runs that finishes
// during the fault and while commands are published for the host:
//
//   - blackhole: the agent detects the dead link within its keepalive
//     bounds and the broker publishes its will (1.5 × keepalive);
//   - a long pause (a stalled link, past the keepalive): the same, with
//     the bytes held instead of dropped;
//   - reset: detected at once.
//
// After the network heals, every command published during the fault runs
// exactly once (the broker kept them in the agent's persistent session),
// and the result of the command that finished during the fault arrives
// (outbox).
func TestPartition(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode faultproxy.Mode
		// detect bounds the agent's detection of the dead link, will the
		// broker's publishing of the agent's will, both from the cut.
		detect, will time.Duration
	}{
		// paho checks every keepalive/4: it pings once nothing came in
		// for a keepalive, and gives up when no answer came keepalive/2
		// later, seen at the next check: at most 2 × keepalive (plus
		// scheduling). Mosquitto 2.0 drops a client silent for more than
		// 1.5 × keepalive (whole seconds), but checks only every 6 s.
		{"blackhole", faultproxy.Blackhole, 2*keepalive + time.Second, 3*keepalive/2 + 7*time.Second},
		{"pause", faultproxy.Pause, 2*keepalive + time.Second, 3*keepalive/2 + 7*time.Second},
		{"reset", faultproxy.Reset, time.Second, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPartitioned(t, "fault-part-"+tc.name)
			p.partition(tc.mode, tc.detect, tc.will)
		})
	}
}

func (p *partitioned) partition(mode faultproxy.Mode, detectBound, willBound time.Duration) {
	t, host := p.t, p.host
	started, finished, ran := filepath.Join(p.dir, "started"), filepath.Join(p.dir, "finished"), filepath.Join(p.dir, "ran")
	long := send(p.op, phased(host, started, "sleep 2", finished))
	waitLines(t, started, 1, wait)
	off := logSize(p.agent)
	n := p.led.nStatuses(host)

	cut := time.Now()
	p.proxy.SetMode(mode)
	var during []string
	during = append(during, send(p.op, marker(host, ran), marker(host, ran))...)
	detected := waitLogEvent(t, p.agent, off, "broker connection lost", detectBound+time.Second)
	_, willAt := p.led.waitStatus(t, host, n, func(s protocol.Status) bool {
		return isOffline(s) && s.Reason == protocol.ReasonLost && s.Session == p.online.Session
	}, willBound+time.Second)
	// Commands published once the broker has dropped the agent wait in its
	// persistent session.
	during = append(during, send(p.op, marker(host, ran), marker(host, ran), marker(host, ran))...)
	waitLines(t, finished, 1, wait) // the long command ended during the fault
	lasted := time.Since(cut)
	p.proxy.SetMode(faultproxy.Pass)
	healed := time.Now()

	back, _ := p.led.waitStatus(t, host, n, func(s protocol.Status) bool {
		return isOnline(s) && s.Session > p.online.Session
	}, wait)
	online := time.Since(healed)
	all := append(long, during...)
	res := p.led.waitFinals(t, all, wait)
	drained := time.Since(healed)
	r := lines(t, ran)
	for _, id := range all {
		if res[id].State != protocol.StateSucceeded {
			t.Errorf("command %s: %s (%q), want succeeded", id, res[id].State, res[id].Error)
		}
	}
	for _, id := range during {
		if r[id] != 1 {
			t.Errorf("command %s published during the fault ran %d times, want once", id, r[id])
		}
	}
	dups := checkOneFinal(t, p.led, all)
	p.checkProtocol()
	detect, will := detected.Sub(cut), willAt.Sub(cut)
	// The agent's log has milliseconds: a detection in the same
	// millisecond as the cut can read as a hair before it.
	if detect < -time.Millisecond || detect > detectBound {
		t.Errorf("the agent detected the fault %v after it began, want within %v", detect, detectBound)
	}
	if will > willBound {
		t.Errorf("the broker published the will %v after the fault began, want within %v", will, willBound)
	}
	t.Logf("keepalive %v: agent detected the fault after %v, broker published the will after %v; fault lasted %v; after healing: online (session %d→%d) in %v, all %d results in %v (%d duplicate final deliveries); proxy %+v",
		keepalive, detect.Round(time.Millisecond), will.Round(time.Millisecond), lasted.Round(time.Millisecond),
		p.online.Session, back.Session, online.Round(time.Millisecond), len(all), drained.Round(time.Millisecond), dups, p.proxy.Stats())
}

// TestShortPause stalls the link for less than the ping timeout
// (keepalive/2): the session survives (no reconnect, no will), and the
// commands and results held by the stalled link go through once it moves
// again.
func TestShortPause(t *testing.T) {
	p := newPartitioned(t, "fault-shortpause")
	t0, host := time.Now(), p.host
	ran := filepath.Join(p.dir, "ran")
	off := logSize(p.agent)
	p.proxy.SetMode(faultproxy.Pause)
	ids := send(p.op, marker(host, ran), marker(host, ran), marker(host, ran))
	time.Sleep(time.Second) // the stall itself: the fault being tested
	p.proxy.SetMode(faultproxy.Pass)
	res := p.led.waitFinals(t, ids, wait)
	r := lines(t, ran)
	for _, id := range ids {
		if res[id].State != protocol.StateSucceeded || r[id] != 1 {
			t.Errorf("command %s: %s, ran %d times; want succeeded, once", id, res[id].State, r[id])
		}
	}
	if at, lost := logEvent(p.agent, off, "broker connection lost"); lost {
		t.Errorf("a 1 s stall dropped the session (at %v)", at.Sub(t0))
	}
	p.led.mu.Lock()
	for _, s := range p.led.statuses[host] {
		if s.v.Session != p.online.Session {
			t.Errorf("status of another session after a 1 s stall: %+v", s.v)
		}
	}
	p.led.mu.Unlock()
	t.Logf("1 s stall: %d commands held by the link ran once after it, results %v after the stall began; proxy %+v",
		len(ids), time.Since(t0).Round(time.Millisecond), p.proxy.Stats())
}

// checkProtocol fails the test when the agent connected with anything but
// MQTT 3.1.1: Mosquitto logs each connection's protocol as "p2" (3.1.1) or
// "p1" (3.1, what paho falls back to after a failed attempt unless told
// otherwise).
func (p *partitioned) checkProtocol() {
	p.t.Helper()
	b, err := os.ReadFile(p.mq.LogPath())
	if err != nil {
		p.t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, " as "+p.host+" (") {
			continue
		}
		n++
		if !strings.Contains(line, " as "+p.host+" (p2,") {
			p.t.Errorf("the agent connected with another protocol than MQTT 3.1.1: %s", line)
		}
	}
	if n == 0 {
		p.t.Errorf("no connection of %s in the broker log", p.host)
	}
}
