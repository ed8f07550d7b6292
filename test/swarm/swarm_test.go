package swarm_test

import (
	"crypto/ed25519"
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
	"github.com/mqagent/mqagent/pkg/security"
	"github.com/mqagent/mqagent/test/integration/harness"
	"github.com/mqagent/mqagent/test/swarm"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// wait bounds a round in the small tests.
const wait = 30 * time.Second

// runs counts handler runs per host and command id.
type runs struct {
	mu sync.Mutex
	n  map[string]int // host + " " + id
}

func (r *runs) add(host, id, _ string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[host+" "+id]++
}

// of returns, for id, how many hosts ran it once and the hosts that ran
// it more than once.
func (r *runs) of(id string) (once int, twice []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, n := range r.n {
		host, kid, _ := strings.Cut(k, " ")
		if kid != id {
			continue
		}
		if n == 1 {
			once++
		} else {
			twice = append(twice, fmt.Sprintf("%s ran %d times", host, n))
		}
	}
	return once, twice
}

// fleet is a Mosquitto, an in-process swarm and an operator.
type fleet struct {
	mq    *harness.Mosquitto
	sw    *swarm.Swarm
	op    *swarm.Operator
	key   ed25519.PrivateKey
	hosts []string
	runs  *runs
}

func startFleet(t *testing.T, n int, journal swarm.JournalKind, mod func(*swarm.Config)) *fleet {
	t.Helper()
	mq := harness.StartMosquitto(t, harness.WithMosquittoConfig("connection_messages false", "autosave_interval 1800"))
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{mq: mq, key: priv, runs: &runs{n: map[string]int{}}}
	cfg := swarm.Config{
		Mode: swarm.ModeAgent, Hosts: n, IDPrefix: "t-", Brokers: []string{mq.URL()},
		SourceAddrs: []string{"127.0.0.1", "127.0.0.2"},
		Keys:        []security.Key{{ID: "op", Public: pub}}, RequireSigned: true,
		DataDir: filepath.Join(t.TempDir(), "data"), Journal: journal,
		ReconnectMin: 100 * time.Millisecond, ReconnectMax: time.Second, KeepAlive: 10 * time.Second,
		OnRun: f.runs.add,
	}
	if mod != nil {
		mod(&cfg)
	}
	sw, err := swarm.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.sw = sw
	t.Cleanup(sw.Close) // before the broker stops (cleanups run last-in first-out)
	if _, err := sw.WaitUp(wait); err != nil {
		t.Fatal(err)
	}
	f.hosts = swarm.HostIDs("t-", 0, n)
	f.op, err = swarm.NewOperator(swarm.OperatorOptions{URL: mq.URL(), Kid: "op", Key: priv, Statuses: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.op.Close)
	return f
}

// round runs cmd on every host and checks each answered once, with state.
func (f *fleet) round(t *testing.T, op *swarm.Operator, cmd protocol.Command, state string) swarm.RoundResult {
	t.Helper()
	res, err := op.Run(cmd, f.hosts, wait)
	if err != nil {
		t.Fatal(err)
	}
	if res.Got != len(f.hosts) || res.Extra != 0 || len(res.Conflicts) != 0 {
		t.Fatalf("%s %s: %s; missing e.g. %v", cmd.Kind, cmd.ID, res, res.Missing)
	}
	got := res.Succeeded
	if state != protocol.StateSucceeded {
		got = res.States[state]
	}
	if got != len(f.hosts) {
		t.Fatalf("%s %s: want %s from every host: %s", cmd.Kind, cmd.ID, state, res)
	}
	return res
}

// TestSwarm runs signed commands through a few hundred simulated hosts:
// every host answers each broadcast once with the right final state, a
// replay of the same signed command runs nowhere again (the journal's
// dedup; the stored result is published again), unsigned and forged
// commands are rejected everywhere and run nowhere, and the hosts' retained
// statuses go online then offline.
func TestSwarm(t *testing.T) {
	for _, tc := range []struct {
		journal swarm.JournalKind
		hosts   int
	}{
		{swarm.JournalMemory, 200},
		{swarm.JournalBolt, 50},
	} {
		t.Run(string(tc.journal), func(t *testing.T) {
			f := startFleet(t, tc.hosts, tc.journal, nil)
			if err := f.op.WaitStatuses(wait, func(m map[string]swarm.HostStatus) bool {
				for _, h := range f.hosts {
					if s := m[h]; s.State != protocol.StatusOnline || s.Session != 1 {
						return false
					}
				}
				return true
			}); err != nil {
				t.Fatalf("every host online with session 1: %v", err)
			}

			ping, _ := swarm.Command(protocol.KindPing, nil)
			f.round(t, f.op, ping, protocol.StateSucceeded)
			exec, _ := swarm.Command(protocol.KindExec, protocol.ExecArgs{Argv: []string{"echo", "hi"}})
			f.round(t, f.op, exec, protocol.StateSucceeded)
			fail, _ := swarm.Command(protocol.KindExec, protocol.ExecArgs{Argv: []string{"false"}})
			f.round(t, f.op, fail, protocol.StateFailed)

			// The same signed bytes again: a duplicate everywhere.
			res := f.round(t, f.op, exec, protocol.StateSucceeded)
			if res.Dups != 0 {
				t.Logf("replay: %d results delivered twice (at least once)", res.Dups)
			}
			for _, id := range []string{ping.ID, exec.ID, fail.ID} {
				once, twice := f.runs.of(id)
				if once != len(f.hosts) || len(twice) > 0 {
					t.Fatalf("command %s ran once on %d of %d hosts; %v", id, once, len(f.hosts), twice)
				}
			}

			// Unsigned, and signed by a key the hosts do not trust.
			bare, err := swarm.NewOperator(swarm.OperatorOptions{URL: f.mq.URL()})
			if err != nil {
				t.Fatal(err)
			}
			defer bare.Close()
			unsigned, _ := swarm.Command(protocol.KindExec, protocol.ExecArgs{Argv: []string{"true"}})
			f.round(t, bare, unsigned, protocol.StateRejected)
			_, other, _ := ed25519.GenerateKey(nil)
			forger, err := swarm.NewOperator(swarm.OperatorOptions{URL: f.mq.URL(), Kid: "op", Key: other})
			if err != nil {
				t.Fatal(err)
			}
			defer forger.Close()
			forged, _ := swarm.Command(protocol.KindExec, protocol.ExecArgs{Argv: []string{"true"}})
			f.round(t, forger, forged, protocol.StateRejected)
			for _, id := range []string{unsigned.ID, forged.ID} {
				if once, twice := f.runs.of(id); once != 0 || len(twice) > 0 {
					t.Fatalf("rejected command %s ran on %d hosts", id, once+len(twice))
				}
			}

			st := f.sw.Stats()
			if st.Connected != len(f.hosts) || st.Outbox > len(f.hosts) {
				t.Fatalf("stats after the rounds: %+v", st)
			}
			f.sw.Close()
			if err := f.op.WaitStatuses(wait, func(m map[string]swarm.HostStatus) bool {
				for _, h := range f.hosts {
					if m[h].State != protocol.StatusOffline {
						return false
					}
				}
				return true
			}); err != nil {
				t.Fatalf("every host offline after Close: %v", err)
			}
		})
	}
}

// TestSwarmConfig checks that bad configurations are refused with a
// message naming the problem.
func TestSwarmConfig(t *testing.T) {
	ok := swarm.Config{Mode: swarm.ModeAgent, Hosts: 1, Brokers: []string{"tcp://127.0.0.1:1"}, DataDir: t.TempDir()}
	for _, tc := range []struct {
		name string
		mod  func(*swarm.Config)
		want string
	}{
		{"no hosts", func(c *swarm.Config) { c.Hosts = 0 }, "hosts must be"},
		{"too many hosts", func(c *swarm.Config) { c.Hosts = swarm.MaxHosts + 1 }, "hosts must be"},
		{"no broker", func(c *swarm.Config) { c.Brokers = nil }, "broker"},
		{"bad mode", func(c *swarm.Config) { c.Mode = "x" }, "mode"},
		{"no data dir", func(c *swarm.Config) { c.DataDir = "" }, "data directory"},
		{"bad journal", func(c *swarm.Config) { c.Journal = "disk" }, "journal"},
		{"bad source", func(c *swarm.Config) { c.SourceAddrs = []string{"localhost"} }, "not an IP"},
		{"bad key", func(c *swarm.Config) { c.Keys = []security.Key{{ID: "k", Public: []byte{1}}} }, "not an ed25519"},
		{"signed without keys", func(c *swarm.Config) { c.RequireSigned = true }, "no trusted key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			s, err := swarm.Start(c)
			if err == nil {
				s.Close()
				t.Fatal("Start accepted the configuration")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// TestSwarmMetrics checks the metrics traffic: every host publishes a
// metrics message of the contract's shape at the configured interval.
func TestSwarmMetrics(t *testing.T) {
	const n = 20
	mq := harness.StartMosquitto(t, harness.WithMosquittoConfig("connection_messages false"))
	var mu sync.Mutex
	got := map[string]int{}
	var bad []string
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(mq.URL()).SetClientID("metrics-watch").SetCleanSession(true))
	if tok := sub.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	topics := protocol.Topics{Prefix: protocol.DefaultPrefix}
	tok := sub.Subscribe(topics.Metrics("+"), 0, func(_ mqtt.Client, m mqtt.Message) {
		var s protocol.Metrics
		err := json.Unmarshal(m.Payload(), &s)
		mu.Lock()
		defer mu.Unlock()
		if err != nil || s.Host == "" || m.Topic() != topics.Metrics(s.Host) || s.CPU == nil || s.Mem == nil || len(m.Payload()) < 400 {
			bad = append(bad, string(m.Payload()))
			return
		}
		got[s.Host]++
	})
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	sw, err := swarm.Start(swarm.Config{Mode: swarm.ModeAgent, Hosts: n, IDPrefix: "m-", Brokers: []string{mq.URL()},
		DataDir: t.TempDir(), Metrics: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	if _, err := sw.WaitUp(wait); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for {
		mu.Lock()
		ok := len(got) == n
		for _, c := range got {
			ok = ok && c >= 3
		}
		b := len(bad)
		mu.Unlock()
		if b > 0 {
			t.Fatalf("metrics message not of the contract's shape: %.300s", bad[0])
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, metrics per host: %v (want 3 from each of %d)", wait, got, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
