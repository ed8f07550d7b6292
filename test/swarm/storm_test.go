package swarm_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/security"
	"github.com/mqagent/mqagent/test/integration/harness"
	"github.com/mqagent/mqagent/test/swarm"
)

// bigEnv enables the runs with thousands of hosts (a benchmark's size, not
// the default test run's).
const bigEnv = "MQAGENT_SWARM_BIG"

// TestReconnectStorm restarts the broker under a fleet and measures how the
// hosts come back: each reconnects on its own after a jittered delay
// (pkg/transport: the first retry within reconnect_min, then full-jitter
// exponential backoff), with the agent's default reconnect_min (1 s) and
// reconnect_max (60 s). It reports the time from the broker accepting
// connections again to 50%, 99% and 100% of the hosts online with a new
// session, and requires every host's retained status to end online with a
// session newer than before the restart: no host stays offline.
//
// By default 200 hosts run in the test process. With MQAGENT_SWARM_BIG=1,
// 10,000 hosts run in a child process (test/swarm/cmd/swarm) and the test
// restarts the broker MQAGENT_SWARM_STORMS times (default 3).
func TestReconnectStorm(t *testing.T) {
	n, storms := 200, 1
	big := os.Getenv(bigEnv) == "1"
	if big {
		n, storms = 10000, 3
		if v, err := strconv.Atoi(os.Getenv("MQAGENT_SWARM_STORMS")); err == nil && v > 0 {
			storms = v
		}
		if raceEnabled {
			t.Skip("10,000 hosts under the race detector: run it without -race")
		}
	}
	mq := harness.StartMosquitto(t, harness.WithMosquittoConfig(
		"connection_messages false", "autosave_interval 1800", "max_connections -1"))
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const prefix = "storm-"
	if big {
		bin := harness.BuildMain(t, "./test/swarm/cmd/swarm", "")
		args := []string{"-hosts", strconv.Itoa(n), "-id-prefix", prefix, "-brokers", mq.URL(),
			"-source-addrs", "127.0.0.2,127.0.0.3", "-data-dir", filepath.Join(dir, "data"),
			"-key", "op=" + base64.StdEncoding.EncodeToString(pub), "-require-signed"}
		p, err := swarm.StartProc(bin, args, filepath.Join(dir, "swarm.log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := p.Stop(30 * time.Second); err != nil {
				t.Logf("swarm: %v", err)
			}
		})
		if _, err := p.WaitUp(3 * time.Minute); err != nil {
			t.Fatal(err)
		}
	} else {
		sw, err := swarm.Start(swarm.Config{Mode: swarm.ModeAgent, Hosts: n, IDPrefix: prefix, Brokers: []string{mq.URL()},
			Keys: []security.Key{{ID: "op", Public: pub}}, RequireSigned: true, DataDir: filepath.Join(dir, "data")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sw.Close)
		if _, err := sw.WaitUp(time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	hosts := swarm.HostIDs(prefix, 0, n)
	op, err := swarm.NewOperator(swarm.OperatorOptions{URL: mq.URL(), Kid: "op", Key: priv, Statuses: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(op.Close)

	session := map[string]uint64{}
	for range storms {
		// Every host online, and its session before the restart.
		if err := op.WaitStatuses(time.Minute, func(m map[string]swarm.HostStatus) bool {
			for _, h := range hosts {
				if s := m[h]; s.State != protocol.StatusOnline || s.Session <= session[h] {
					return false
				}
			}
			return true
		}); err != nil {
			t.Fatalf("hosts online before the restart: %v", err)
		}
		for h, s := range op.Statuses() {
			session[h] = s.Session
		}
		base := make(map[string]uint64, n)
		for _, h := range hosts {
			base[h] = session[h]
		}
		op.TrackReconnects(base)
		down := time.Now()
		mq.Stop()
		mq.Start()
		back := time.Now()
		got := op.WaitReconnected(n, 3*time.Minute)
		_, times := op.Reconnected()
		if got < n {
			t.Fatalf("%d of %d hosts back online within 3 minutes of the broker's restart", got, n)
		}
		at := func(frac float64) time.Duration {
			k := max(int(frac*float64(n)+0.999999)-1, 0)
			return times[k].Sub(back).Round(time.Millisecond)
		}
		t.Logf("reconnect storm: %d hosts, broker down %s; back online after the broker: 50%% %s, 99%% %s, 100%% %s",
			n, back.Sub(down).Round(time.Millisecond), at(0.5), at(0.99), at(1))
		if big {
			fmt.Printf("STORM hosts=%d down_ms=%d p50_ms=%d p99_ms=%d all_ms=%d\n", n, back.Sub(down).Milliseconds(),
				at(0.5).Milliseconds(), at(0.99).Milliseconds(), at(1).Milliseconds())
		}
	}

	// The retained statuses, as a new operator sees them: every host
	// online with its new session.
	fresh, err := swarm.NewOperator(swarm.OperatorOptions{URL: mq.URL(), Statuses: true})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	var bad []string
	if err := fresh.WaitStatuses(time.Minute, func(m map[string]swarm.HostStatus) bool {
		bad = bad[:0]
		for _, h := range hosts {
			if s := m[h]; s.State != protocol.StatusOnline || s.Session <= session[h] {
				if len(bad) < 10 {
					bad = append(bad, fmt.Sprintf("%s %s/%d", h, s.State, s.Session))
				}
			}
		}
		return len(bad) == 0
	}); err != nil {
		t.Fatalf("retained statuses after the storm: %v; e.g. %v", err, bad)
	}
}
