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

// Fan-out benchmarks (docs/scale.md): a signed ping broadcast to N
// simulated hosts (test/swarm) and every final result counted per host by
// an operator client. In the same run, the raw limit: N plain paho
// clients that echo the same broadcast.
//
//	MQAGENT_FANOUT_SIZES=1000,5000,10000 go test -run '^$' -bench 'Fanout$' -benchtime 1x -timeout 60m ./test/bench
//	MQAGENT_FANOUT_CLUSTER=50000 go test -run '^$' -bench FanoutCluster -benchtime 1x -timeout 60m ./test/bench
//
// test/bench/fanout.sh runs both and prints tables. Without
// MQAGENT_FANOUT_SIZES only N=1000 runs; without MQAGENT_FANOUT_CLUSTER
// the cluster benchmark is skipped. MQAGENT_FANOUT_ROUNDS sets the
// measured rounds (default 5, after one warm-up round).
//
// Three fleets are measured per size, each with its own fresh broker(s):
//   - raw: paho clients that echo (the floor);
//   - agent: the agent pipeline, every host verifying the ed25519
//     signature (all the fleet's CPU on this machine's 2 cores);
//   - agent1: the same, with each distinct signed command verified once
//     per simulator process (a real fleet verifies on 10,000 CPUs in
//     parallel; see swarm.Config.VerifyOnce).

// fanoutEnv reads a comma-separated list of positive ints.
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

// scaleConf is the Mosquitto configuration a fleet needs (BROKERS.md):
// no Nagle (the harness sets it), queues sized for the replies of the
// whole fleet, no connection limit, production autosave.
var scaleConf = []string{
	"autosave_interval 1800",
	"connection_messages false",
	"max_connections -1",
	"max_queued_messages 1000000",
}

// brokerConf is scaleConf plus MQAGENT_FANOUT_BROKER_CONF (lines
// separated by ";"), for experiments with the broker's settings
// (MQAGENT_FANOUT_SIM_ARGS adds arguments to the simulator's).
func brokerConf() []string {
	c := slices.Clone(scaleConf)
	for _, l := range strings.Split(os.Getenv("MQAGENT_FANOUT_BROKER_CONF"), ";") {
		if l = strings.TrimSpace(l); l != "" {
			c = append(c, l)
		}
	}
	return c
}

// topology is where the simulator processes connect.
type topology struct {
	name    string
	procs   [][]string // broker URLs of each simulator process
	opURL   string     // the operator's broker
	brokers []int      // broker PIDs (memory, CPU)
}

// oneMosquitto is a single Mosquitto: one simulator process (up to
// swarm.MaxHosts hosts).
func oneMosquitto(b *testing.B, n int) topology {
	mq := harness.StartMosquitto(b, harness.WithMosquittoConfig(brokerConf()...))
	procs := make([][]string, (n+swarm.MaxHosts-1)/swarm.MaxHosts)
	for i := range procs {
		procs[i] = []string{mq.URL()}
	}
	return topology{name: "mosquitto", procs: procs, opURL: mq.URL(), brokers: []int{mq.PID()}}
}

// bridgedMosquittos is a root Mosquitto (the operator's) and leaves
// Mosquittos bridged to it, one simulator process per leaf: broadcasts
// and host commands flow root → leaves, results and echoes leaves →
// root. Each Mosquitto is one thread and at most ~19,990 connections
// here (20,000 descriptors per process).
func bridgedMosquittos(b *testing.B, leaves int) topology {
	root := harness.StartMosquitto(b, harness.WithMosquittoConfig(brokerConf()...))
	top := topology{name: fmt.Sprintf("mosquitto-bridged-%d", leaves), opURL: root.URL(), brokers: []int{root.PID()}}
	p := protocol.DefaultPrefix
	for i := range leaves {
		leaf := harness.StartMosquittoConfig(b, 1, func(dir string, ports []int) string {
			lines := []string{
				"user root", "allow_anonymous true", "set_tcp_nodelay true",
				"persistence true", "persistence_location " + dir + string(filepath.Separator),
				"log_dest stderr", "log_type error", "log_type warning", "log_type notice", "log_type information",
				"log_timestamp true",
			}
			lines = append(lines, brokerConf()...)
			lines = append(lines, fmt.Sprintf("listener %d 127.0.0.1", ports[0]),
				"connection root",
				fmt.Sprintf("address 127.0.0.1:%d", root.Port()),
				"bridge_protocol_version mqttv311",
				fmt.Sprintf("remote_clientid bridge-leaf-%d", i),
				"cleansession false", "try_private true", "notifications false",
				"topic "+p+"/all/cmd in 1",
				"topic "+p+"/groups/+/cmd in 1",
				"topic "+p+"/hosts/+/cmd in 1",
				"topic "+p+"/hosts/+/results/# out 1",
				"topic "+p+"/hosts/+/echo out 1",
			)
			return strings.Join(lines, "\n") + "\n"
		})
		top.procs = append(top.procs, []string{leaf.URL()})
		top.brokers = append(top.brokers, leaf.PID())
	}
	return top
}

// phase is one measured fleet.
type phase struct {
	connect              time.Duration
	first, p50, p99, all []time.Duration
	brokerRSSKB          int64
	simUpKB              int64 // RSS once every host connected
	simRSSKB, simIdleKB  int64
	goroutines           int
	brokerCPU, simCPU    time.Duration // per round
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

func cpuOf(pids []int) time.Duration {
	var t time.Duration
	for _, p := range pids {
		c, _ := swarm.CPUTime(p)
		t += c
	}
	return t
}

// runPhase starts n hosts in mode over the processes of top (hosts split
// evenly), runs a warm-up round and rounds measured broadcasts, and
// returns the figures.
func runPhase(b *testing.B, bin string, top topology, mode swarm.Mode, n, rounds int, extra ...string) phase {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	idPrefix := string(mode) + "-"
	var procs []*swarm.Proc
	var simPIDs []int
	for k, urls := range top.procs {
		first, last := k*n/len(top.procs), (k+1)*n/len(top.procs)
		// Each process dials from its own source addresses (~28,000
		// ephemeral ports each, shared with the rest of the machine).
		srcs := fmt.Sprintf("127.0.0.%d,127.0.0.%d", 2+2*k, 3+2*k)
		args := []string{"-mode", string(mode), "-hosts", strconv.Itoa(last - first), "-first", strconv.Itoa(first),
			"-brokers", strings.Join(urls, ","), "-source-addrs", srcs, "-data-dir", filepath.Join(dir, fmt.Sprintf("data%d", k)),
			"-key", "op=" + base64.StdEncoding.EncodeToString(pub), "-require-signed", "-id-prefix", idPrefix}
		args = append(args, extra...)
		args = append(args, strings.Fields(os.Getenv("MQAGENT_FANOUT_SIM_ARGS"))...)
		logPath := filepath.Join(dir, fmt.Sprintf("swarm%d.log", k))
		p, err := swarm.StartProc(bin, args, logPath)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			if err := p.Stop(60 * time.Second); err != nil {
				b.Logf("swarm stop: %v", err)
			}
		})
		procs = append(procs, p)
		simPIDs = append(simPIDs, p.PID())
	}
	ph := phase{}
	for k, p := range procs {
		up, err := p.WaitUp(10 * time.Minute)
		if err != nil {
			b.Fatalf("%s: %v\n%s", mode, err, tail(filepath.Join(dir, fmt.Sprintf("swarm%d.log", k))))
		}
		ph.connect = max(ph.connect, time.Duration(up.MS)*time.Millisecond)
		ph.simUpKB += up.Stats.RSSKB
	}
	op, err := swarm.NewOperator(swarm.OperatorOptions{URL: top.opURL, Kid: "op", Key: priv})
	if err != nil {
		b.Fatal(err)
	}
	defer op.Close()
	hosts := swarm.HostIDs(idPrefix, 0, n)
	timeout := 2*time.Minute + time.Duration(n)*time.Millisecond
	var bcpu, scpu time.Duration
	for r := range rounds + 1 {
		cmd, err := swarm.Command(protocol.KindPing, nil)
		if err != nil {
			b.Fatal(err)
		}
		b0, s0 := cpuOf(top.brokers), cpuOf(simPIDs)
		var res swarm.RoundResult
		if mode == swarm.ModeRaw {
			payload, err := op.Encode(cmd)
			if err != nil {
				b.Fatal(err)
			}
			res, err = op.Echo(payload, hosts, timeout)
			if err != nil {
				b.Fatal(err)
			}
		} else if res, err = op.Run(cmd, hosts, timeout); err != nil {
			b.Fatal(err)
		}
		b.Logf("%s %s n=%d round %d: %s", top.name, mode, n, r, res)
		if !res.Complete() {
			b.Fatalf("%s n=%d round %d incomplete: %s; missing e.g. %v", mode, n, r, res, res.Missing)
		}
		// The rest of the round (the audit records after the results)
		// drains before the next broadcast; it is counted in the CPU.
		drained(b, procs, time.Minute)
		if r > 0 { // round 0 warms up
			ph.first = append(ph.first, res.First)
			ph.p50 = append(ph.p50, res.P50)
			ph.p99 = append(ph.p99, res.P99)
			ph.all = append(ph.all, res.All)
			bcpu += cpuOf(top.brokers) - b0
			scpu += cpuOf(simPIDs) - s0
		}
	}
	ph.brokerCPU, ph.simCPU = bcpu/time.Duration(rounds), scpu/time.Duration(rounds)
	for _, p := range procs {
		st, err := p.Stats(false, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		ph.simRSSKB += st.RSSKB
		ph.goroutines += st.Goroutines
		if st, err = p.Stats(true, 2*time.Minute); err == nil {
			ph.simIdleKB += st.RSSKB
		}
	}
	for _, pid := range top.brokers {
		kb, _ := swarm.RSSKB(pid)
		ph.brokerRSSKB += kb
	}
	for _, p := range procs {
		if err := p.Stop(60 * time.Second); err != nil {
			b.Logf("swarm stop: %v", err)
		}
	}
	return ph
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// reportPhase reports a phase's figures with a name prefix.
func reportPhase(b *testing.B, name string, n int, ph phase) {
	b.ReportMetric(msf(ph.connect), name+"_connect_ms")
	b.ReportMetric(msf(med(ph.first)), name+"_first_ms")
	b.ReportMetric(msf(med(ph.p50)), name+"_p50_ms")
	b.ReportMetric(msf(med(ph.p99)), name+"_p99_ms")
	b.ReportMetric(msf(med(ph.all)), name+"_all_ms")
	b.ReportMetric(float64(ph.brokerRSSKB)/1024, name+"_broker_MB")
	b.ReportMetric(float64(ph.simUpKB)/float64(n), name+"_up_kB/host")
	b.ReportMetric(float64(ph.simRSSKB)/float64(n), name+"_kB/host")
	b.ReportMetric(float64(ph.simIdleKB)/float64(n), name+"_idle_kB/host")
	b.ReportMetric(float64(ph.goroutines)/float64(n), name+"_goroutines/host")
	b.ReportMetric(msf(ph.brokerCPU), name+"_broker_cpu_ms")
	b.ReportMetric(msf(ph.simCPU), name+"_sim_cpu_ms")
	b.Logf("%s n=%d: 100%% in each round %v", name, n, ph.all)
}

func fanoutPreflight(b *testing.B) string {
	if raceBuild {
		b.Skip("fan-out figures under the race detector mean nothing")
	}
	if _, err := swarm.RSSKB(os.Getpid()); err != nil {
		b.Skipf("needs /proc to measure memory and CPU: %v", err)
	}
	harness.RequireMosquitto(b)
	return harness.BuildMain(b, "./test/swarm/cmd/swarm", "")
}

// phases are the fleets to measure: MQAGENT_FANOUT_PHASES, a
// comma-separated list of raw, agent and agent1, else def.
func phases(b *testing.B, def string) []string {
	v := os.Getenv("MQAGENT_FANOUT_PHASES")
	if v == "" {
		v = def
	}
	out := strings.Split(v, ",")
	for _, p := range out {
		if p != "raw" && p != "agent" && p != "agent1" {
			b.Fatalf("MQAGENT_FANOUT_PHASES: unknown phase %q (raw, agent, agent1)", p)
		}
	}
	return out
}

// measure runs the phases on fresh brokers made by top and reports them.
func measure(b *testing.B, bin string, n, rounds int, names []string, top func() topology) {
	all := map[string]time.Duration{}
	for _, name := range names {
		var ph phase
		switch name {
		case "raw":
			ph = runPhase(b, bin, top(), swarm.ModeRaw, n, rounds)
		case "agent":
			ph = runPhase(b, bin, top(), swarm.ModeAgent, n, rounds)
		case "agent1":
			ph = runPhase(b, bin, top(), swarm.ModeAgent, n, rounds, "-verify-once")
		}
		reportPhase(b, name, n, ph)
		all[name] = med(ph.all)
	}
	if raw, ok := all["raw"]; ok && raw > 0 {
		for _, name := range []string{"agent", "agent1"} {
			if d, ok := all[name]; ok {
				b.ReportMetric(float64(d)/float64(raw), name+"_vs_raw")
			}
		}
	}
}

// BenchmarkFanout is the fan-out through one Mosquitto at each size of
// MQAGENT_FANOUT_SIZES (default 1000), for the phases raw, agent and
// agent1 (MQAGENT_FANOUT_PHASES).
// drained waits until no simulated host has a message left in its outbox
// (every one acknowledged by the broker), polling each process's stats.
func drained(b *testing.B, procs []*swarm.Proc, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		left := 0
		for _, p := range procs {
			st, err := p.Stats(false, timeout)
			if err != nil {
				b.Fatal(err)
			}
			left += st.Outbox
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d messages still in the simulated hosts' outboxes after %v", left, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func BenchmarkFanout(b *testing.B) {
	bin := fanoutPreflight(b)
	sizes := fanoutEnv(b, "MQAGENT_FANOUT_SIZES", []int{1000})
	rounds := fanoutEnv(b, "MQAGENT_FANOUT_ROUNDS", []int{5})[0]
	names := phases(b, "raw,agent,agent1")
	for _, n := range sizes {
		if n > swarm.MaxHosts {
			b.Fatalf("one Mosquitto takes at most ~%d connections here; use BenchmarkFanoutCluster", swarm.MaxHosts)
		}
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			for range b.N {
				measure(b, bin, n, rounds, names, func() topology { return oneMosquitto(b, n) })
			}
		})
	}
}

// BenchmarkFanoutCluster is the moonshot: MQAGENT_FANOUT_CLUSTER hosts
// (e.g. 50000) over bridged Mosquittos, one leaf per ~17,000 hosts
// (MQAGENT_FANOUT_LEAVES sets it), one simulator process per leaf, the
// operator on the root. It measures agent1 unless MQAGENT_FANOUT_PHASES
// says otherwise, over 3 rounds unless MQAGENT_FANOUT_ROUNDS does.
func BenchmarkFanoutCluster(b *testing.B) {
	ns := fanoutEnv(b, "MQAGENT_FANOUT_CLUSTER", nil)
	if len(ns) == 0 {
		b.Skip("set MQAGENT_FANOUT_CLUSTER=50000 to run it")
	}
	bin := fanoutPreflight(b)
	rounds := fanoutEnv(b, "MQAGENT_FANOUT_ROUNDS", []int{3})[0]
	names := phases(b, "agent1")
	for _, n := range ns {
		leaves := (n + 16999) / 17000
		if v := fanoutEnv(b, "MQAGENT_FANOUT_LEAVES", nil); len(v) > 0 {
			leaves = v[0]
		}
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			for range b.N {
				measure(b, bin, n, rounds, names, func() topology { return bridgedMosquittos(b, leaves) })
			}
		})
	}
}
