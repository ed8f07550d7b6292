// Package bench holds the agent's end-to-end benchmarks: the real agent
// binary against a real Mosquitto on loopback. Run them with
//
//	go test -run '^$' -bench . -benchtime 2000x ./test/bench
//
// (or `task bench`). Each benchmark reports p50/p99 latencies or a rate as
// custom metrics; the raw MQTT round trip is measured in the same run as the
// floor the agent is compared with.
package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// rig is a Mosquitto, an agent and a raw operator client.
type rig struct {
	topics  protocol.Topics
	c       mqtt.Client
	mu      sync.Mutex
	waiters map[string]chan protocol.Result
	agent   *harness.Agent
}

func newRig(b *testing.B, workers int) *rig {
	bin := harness.BuildAgent(b)
	// The harness saves every second for kill -9 tests; a benchmark wants
	// the production default.
	mq := harness.StartMosquitto(b, harness.WithMosquittoConfig("autosave_interval 1800"))
	cfg := harness.DefaultConfig("bench-1", mq.URL(), filepath.Join(b.TempDir(), "data"))
	cfg["exec"].(map[string]any)["max_concurrent"] = workers
	cfg["exec"].(map[string]any)["max_queue"] = 10000
	cfg["log"].(map[string]any)["level"] = "info"
	r := &rig{topics: protocol.Topics{Prefix: protocol.DefaultPrefix}, waiters: map[string]chan protocol.Result{}}
	opts := mqtt.NewClientOptions().AddBroker(mq.URL()).SetClientID("bench-op").SetCleanSession(true).SetOrderMatters(false)
	r.c = mqtt.NewClient(opts)
	if t := r.c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		b.Fatal("connect", t.Error())
	}
	b.Cleanup(func() { r.c.Disconnect(100) })
	online := make(chan struct{}, 1)
	r.c.Subscribe(r.topics.Status("bench-1"), 1, func(_ mqtt.Client, m mqtt.Message) {
		var s protocol.Status
		if json.Unmarshal(m.Payload(), &s) == nil && s.State == protocol.StatusOnline {
			select {
			case online <- struct{}{}:
			default:
			}
		}
	}).Wait()
	r.c.Subscribe(r.topics.Prefix+"/hosts/bench-1/results/+", 1, func(_ mqtt.Client, m mqtt.Message) {
		var res protocol.Result
		if json.Unmarshal(m.Payload(), &res) != nil || !protocol.IsFinal(res.State) {
			return
		}
		r.mu.Lock()
		ch := r.waiters[res.ID]
		delete(r.waiters, res.ID)
		r.mu.Unlock()
		if ch != nil {
			ch <- res
		}
	}).Wait()
	r.agent = harness.StartAgent(b, bin, cfg)
	select {
	case <-online:
	case <-time.After(15 * time.Second):
		b.Fatal("agent did not come online")
	}
	return r
}

// send publishes a command and returns the channel its final result
// arrives on.
func (r *rig) send(b *testing.B, cmd protocol.Command) <-chan protocol.Result {
	cmd.V, cmd.ID, cmd.IssuedAt, cmd.Target = 1, harness.NewID(), protocol.Now(), "host:bench-1"
	payload, _ := json.Marshal(cmd)
	ch := make(chan protocol.Result, 1)
	r.mu.Lock()
	r.waiters[cmd.ID] = ch
	r.mu.Unlock()
	if t := r.c.Publish(r.topics.HostCmd("bench-1"), 1, false, payload); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		b.Fatal("publish", t.Error())
	}
	return ch
}

func (r *rig) roundTrip(b *testing.B, cmd protocol.Command) time.Duration {
	start := time.Now()
	select {
	case res := <-r.send(b, cmd):
		if res.State != protocol.StateSucceeded {
			b.Fatalf("%s: %s %s", cmd.Kind, res.State, res.Error)
		}
	case <-time.After(10 * time.Second):
		b.Fatal("no result")
	}
	return time.Since(start)
}

func report(b *testing.B, name string, d []time.Duration) {
	slices.Sort(d)
	q := func(p float64) float64 { return float64(d[int(p*float64(len(d)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), name+"_p50_ms")
	b.ReportMetric(q(0.99), name+"_p99_ms")
}

// rawRoundTrip is the floor: operator -> echo client -> operator through
// the same broker, QoS 1 both ways, as the agent's command and result are.
func rawRoundTrip(b *testing.B, r *rig, n int) []time.Duration {
	opts := r.c.OptionsReader()
	url := opts.Servers()[0].String()
	echo := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("bench-echo").SetOrderMatters(false))
	if t := echo.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		b.Fatal(t.Error())
	}
	defer echo.Disconnect(100)
	echo.Subscribe("bench/ping", 1, func(c mqtt.Client, m mqtt.Message) {
		c.Publish("bench/pong", 1, false, m.Payload())
	}).Wait()
	pong := make(chan struct{}, 1)
	r.c.Subscribe("bench/pong", 1, func(mqtt.Client, mqtt.Message) { pong <- struct{}{} }).Wait()
	defer r.c.Unsubscribe("bench/pong")
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		r.c.Publish("bench/ping", 1, false, []byte(`{"v":1}`))
		select {
		case <-pong:
		case <-time.After(10 * time.Second):
			b.Fatal("no pong")
		}
		out = append(out, time.Since(start))
	}
	return out
}

// BenchmarkPingRoundTrip: sequential pings, operator -> agent -> operator,
// with the raw MQTT round trip measured in the same run.
func BenchmarkPingRoundTrip(b *testing.B) {
	r := newRig(b, 8)
	for range 50 { // warm up
		r.roundTrip(b, protocol.Command{Kind: protocol.KindPing})
	}
	b.ResetTimer()
	d := make([]time.Duration, 0, b.N)
	for range b.N {
		d = append(d, r.roundTrip(b, protocol.Command{Kind: protocol.KindPing}))
	}
	b.StopTimer()
	report(b, "ping", d)
	report(b, "raw", rawRoundTrip(b, r, max(b.N, 200)))
}

// BenchmarkExecTrueRoundTrip: `exec true`, sequential.
func BenchmarkExecTrueRoundTrip(b *testing.B) {
	r := newRig(b, 8)
	args, _ := json.Marshal(protocol.ExecArgs{Argv: []string{"true"}})
	cmd := protocol.Command{Kind: protocol.KindExec, Args: args}
	for range 20 {
		r.roundTrip(b, cmd)
	}
	b.ResetTimer()
	d := make([]time.Duration, 0, b.N)
	for range b.N {
		d = append(d, r.roundTrip(b, cmd))
	}
	b.StopTimer()
	report(b, "exec_true", d)
}

// BenchmarkPingThroughput: b.N pings in flight at once (8 workers); the
// rate at which final results come back.
func BenchmarkPingThroughput(b *testing.B) {
	r := newRig(b, 8)
	chans := make([]<-chan protocol.Result, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		chans = append(chans, r.send(b, protocol.Command{Kind: protocol.KindPing}))
	}
	for i, ch := range chans {
		select {
		case <-ch:
		case <-time.After(60 * time.Second):
			b.Fatalf("results missing: %d of %d arrived", i, len(chans))
		}
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "cmds/s")
}

// BenchmarkIdleRSS: the agent's resident memory after it has idled for
// MQAGENT_BENCH_IDLE (default 60s). Run with -benchtime 1x.
func BenchmarkIdleRSS(b *testing.B) {
	idle := 60 * time.Second
	if v := os.Getenv("MQAGENT_BENCH_IDLE"); v != "" {
		var err error
		if idle, err = time.ParseDuration(v); err != nil {
			b.Fatal(err)
		}
	}
	r := newRig(b, 8)
	r.roundTrip(b, protocol.Command{Kind: protocol.KindPing})
	time.Sleep(idle) // the point of the benchmark: memory after idling
	st, err := os.ReadFile("/proc/" + strconv.Itoa(r.agent.PID()) + "/status")
	if err != nil {
		b.Skip("no /proc: ", err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.Atoi(strings.Fields(l)[1])
			b.ReportMetric(float64(kb)/1024, "rss_MiB")
		}
	}
}
