package bench

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
	"github.com/mqagent/mqagent/test/swarm"
)

// Fan-out benchmark (docs/scale.md): a signed ping broadcast to N
// simulated hosts through one Mosquitto on loopback, and in the same run
// the raw limit: N plain paho clients that echo the same broadcast.
//
//	MQAGENT_FANOUT_SIZES=1000,5000,10000 go test -run '^$' -bench Fanout -benchtime 1x -timeout 60m ./test/bench
//
// (test/bench/fanout.sh runs that and prints a table). Without
// MQAGENT_FANOUT_SIZES only N=1000 runs. Each size reports, as the median
// of MQAGENT_FANOUT_ROUNDS rounds (default 5, after one warm-up round):
// the time from the publish to the first, 50%, 99% and 100% of results,
// for the agent pipeline and for raw echo, their ratio, the connect time,
// Mosquitto's RSS and the simulator's RSS per host.

// fanoutEnv reads a comma-separated list of ints.
func fanoutEnv(b *testing.B, name string, def []int) []int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			b.Fatalf("%s: %q is not a list of positive numbers", name, v)
		}
		out = append(out, n)
	}
	return out
}

// sourceAddrs spreads n connections over 127.0.0.x source addresses, one
// per 5,000 (each has ~28,000 ephemeral ports, shared with every other
// test on the machine).
func sourceAddrs(n int) string {
	var a []string
	for i := range n/5000 + 1 {
		a = append(a, fmt.Sprintf("127.0.0.%d", 2+i))
	}
	return strings.Join(a, ",")
}

// scaleMosquitto starts a Mosquitto configured as BROKERS.md says a fleet
// needs: no Nagle (the harness sets it), queues sized for the replies of
// the whole fleet, no connection limit, production autosave.
func scaleMosquitto(b *testing.B) *harness.Mosquitto {
	return harness.StartMosquitto(b, harness.WithMosquittoConfig(
		"autosave_interval 1800",
		"connection_messages false",
		"max_connections -1",
		"max_queued_messages 1000000",
	))
}

// phase is one measured fleet: raw echo or the agent pipeline.
type phase struct {
	connect              time.Duration
	first, p50, p99, all []time.Duration
	brokerRSSKB          int64
	simRSSKB, simIdleKB  int64
	goroutines           int
}

func med(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func msf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// runPhase starts a broker and a swarm of n hosts in mode, runs warm-up +
// rounds broadcasts and returns the figures.
func runPhase(b *testing.B, bin string, mode swarm.Mode, n, rounds int) phase {
	mq := scaleMosquitto(b)
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	args := []string{"-mode", string(mode), "-hosts", strconv.Itoa(n), "-brokers", mq.URL(),
		"-source-addrs", sourceAddrs(n), "-data-dir", filepath.Join(dir, "data"),
		"-key", "op=" + base64.StdEncoding.EncodeToString(pub), "-require-signed",
		"-id-prefix", string(mode) + "-"}
	proc, err := swarm.StartProc(bin, args, filepath.Join(dir, "swarm.log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := proc.Stop(30 * time.Second); err != nil {
			b.Logf("swarm stop: %v", err)
		}
	})
	up, err := proc.WaitUp(5 * time.Minute)
	if err != nil {
		b.Fatalf("%s: %v\n%s", mode, err, tail(filepath.Join(dir, "swarm.log")))
	}
	op, err := swarm.NewOperator(swarm.OperatorOptions{URL: mq.URL(), Kid: "op", Key: priv})
	if err != nil {
		b.Fatal(err)
	}
	defer op.Close()
	hosts := swarm.HostIDs(string(mode)+"-", 0, n)
	ph := phase{connect: time.Duration(up.MS) * time.Millisecond}
	for r := range rounds + 1 {
		cmd, err := swarm.Command(protocol.KindPing, nil)
		if err != nil {
			b.Fatal(err)
		}
		var res swarm.RoundResult
		if mode == swarm.ModeRaw {
			payload, err := op.Encode(cmd)
			if err != nil {
				b.Fatal(err)
			}
			res, err = op.Echo(payload, hosts, 2*time.Minute)
			if err != nil {
				b.Fatal(err)
			}
		} else {
			res, err = op.Run(cmd, hosts, 2*time.Minute)
			if err != nil {
				b.Fatal(err)
			}
		}
		b.Logf("%s n=%d round %d: %s", mode, n, r, res)
		if !res.Complete() {
			b.Fatalf("%s n=%d round %d incomplete: %s; missing e.g. %v", mode, n, r, res, res.Missing)
		}
		if r > 0 { // round 0 warms up
			ph.first = append(ph.first, res.First)
			ph.p50 = append(ph.p50, res.P50)
			ph.p99 = append(ph.p99, res.P99)
			ph.all = append(ph.all, res.All)
		}
		// Let the rest of the round (audit records after the results)
		// drain before the next broadcast.
		time.Sleep(time.Second)
	}
	st, err := proc.Stats(false, 30*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	ph.simRSSKB, ph.goroutines = st.RSSKB, st.Goroutines
	if st, err = proc.Stats(true, 60*time.Second); err == nil {
		ph.simIdleKB = st.RSSKB
	}
	ph.brokerRSSKB, _ = swarm.RSSKB(mq.PID())
	return ph
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func BenchmarkFanout(b *testing.B) {
	if raceBuild {
		b.Skip("fan-out figures under the race detector mean nothing")
	}
	if _, err := swarm.RSSKB(os.Getpid()); err != nil {
		b.Skipf("needs /proc to measure memory: %v", err)
	}
	sizes := fanoutEnv(b, "MQAGENT_FANOUT_SIZES", []int{1000})
	rounds := fanoutEnv(b, "MQAGENT_FANOUT_ROUNDS", []int{5})[0]
	bin := harness.BuildMain(b, "./test/swarm/cmd/swarm", "")
	for _, n := range sizes {
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			for range b.N {
				raw := runPhase(b, bin, swarm.ModeRaw, n, rounds)
				agent := runPhase(b, bin, swarm.ModeAgent, n, rounds)
				b.ReportMetric(msf(raw.connect), "raw_connect_ms")
				b.ReportMetric(msf(med(raw.first)), "raw_first_ms")
				b.ReportMetric(msf(med(raw.p50)), "raw_p50_ms")
				b.ReportMetric(msf(med(raw.p99)), "raw_p99_ms")
				b.ReportMetric(msf(med(raw.all)), "raw_all_ms")
				b.ReportMetric(msf(agent.connect), "agent_connect_ms")
				b.ReportMetric(msf(med(agent.first)), "agent_first_ms")
				b.ReportMetric(msf(med(agent.p50)), "agent_p50_ms")
				b.ReportMetric(msf(med(agent.p99)), "agent_p99_ms")
				b.ReportMetric(msf(med(agent.all)), "agent_all_ms")
				b.ReportMetric(float64(med(agent.all))/float64(max(med(raw.all), 1)), "all_ratio")
				b.ReportMetric(float64(raw.brokerRSSKB)/1024, "raw_broker_MB")
				b.ReportMetric(float64(agent.brokerRSSKB)/1024, "agent_broker_MB")
				b.ReportMetric(float64(raw.simRSSKB)/float64(n), "raw_kB/host")
				b.ReportMetric(float64(agent.simRSSKB)/float64(n), "agent_kB/host")
				b.ReportMetric(float64(agent.simIdleKB)/float64(n), "agent_idle_kB/host")
				b.ReportMetric(float64(agent.goroutines)/float64(n), "agent_goroutines/host")
				b.Logf("raw rounds (all): %v; agent rounds (all): %v", raw.all, agent.all)
			}
		})
	}
}
