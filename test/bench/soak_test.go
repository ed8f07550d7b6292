package bench

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	bolt "go.etcd.io/bbolt"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// Soak parameters (docs/soak.md).
const (
	soakHost = "soak-1"
	soakKid  = "ops"
	// soakCycle is the number of slots of the command mix (soakLoad.step);
	// pauses for a rest measurement happen only between two cycles, so
	// that no sleep waiting for its cancel is left running.
	soakCycle = 24
	// soakSampleEvery is the interval of the /proc readings.
	soakSampleEvery = 10 * time.Second
	// soakMinWarmup is the shortest warm-up; it is otherwise 20 % of the
	// run.
	soakMinWarmup = time.Minute
	// soakDrain bounds the wait for every outstanding final result when
	// the load pauses (the longest command is a 1 s timeout).
	soakDrain = 60 * time.Second
	// soakFDSlack and soakGoroutineSlack are how many more descriptors and
	// goroutines the idle agent may have after the run than after the
	// warm-up before the benchmark fails (a leak of one per command would
	// be thousands).
	soakFDSlack        = 3
	soakGoroutineSlack = 10
	// soakProblems is how many problem messages are kept for the report.
	soakProblems = 20
	// soakMarkers is how many finished marker commands are kept as
	// candidates for a duplicate.
	soakMarkers = 16
)

// BenchmarkSoak runs the real agent (built without the race detector)
// against a real Mosquitto for MQAGENT_SOAK (a Go duration, at least 2m;
// unset: the benchmark is skipped) with metrics every second (the smallest
// interval the configuration allows) and a steady, bounded command load
// from an operator: MQAGENT_SOAK_RATE messages a second (default 10), a
// mix of signed commands that succeed, fail, time out, are canceled, are
// refused, are re-sent (duplicates, which must not run again) and
// malformed payloads (soakLoad.step lists them).
//
// Every 10 s it reads the agent's VmRSS, RssAnon, RssFile and threads
// (/proc/PID/status), open descriptors (/proc/PID/fd), CPU time, the size
// of its data directory, and its goroutine count (agent.goroutines of its
// own metrics). After the warm-up (20 % of the run, at least a minute)
// and after the run the load pauses until the agent is idle (every final
// result in, nothing running or queued) for a rest reading. It reports the
// least-squares slope per hour of RSS, anonymous RSS, goroutines and
// descriptors over the readings after the warm-up, with start (rest after
// warm-up), end (rest after the run) and maximum values, and writes every
// reading as CSV to MQAGENT_SOAK_CSV when set.
//
// It fails when a command does not end with exactly one final result
// (two for a command re-sent once: the stored result is published
// again), a final state is not the expected one, a command ran twice, the
// idle agent has more than soakFDSlack more descriptors or more than
// soakGoroutineSlack more goroutines after the run than after the
// warm-up, or child processes are left over. Journal retention is cut to
// MQAGENT_SOAK_TTL (security.default_ttl, default 2m, with a 1m clock
// skew: entries are kept 5 minutes) so that the journal reaches its
// steady state (pruning every 10 minutes) within the run; MQAGENT_SOAK_TTL=1h
// is the production default. MQAGENT_SOAK_AGENT names an agent executable
// to soak instead of building ./agent (a release build, or one with a
// profiling endpoint). Run it with test/bench/soak.sh, or
//
//	MQAGENT_SOAK=30m go test -run '^$' -bench '^BenchmarkSoak$' -benchtime 1x -timeout 50m ./test/bench
func BenchmarkSoak(b *testing.B) {
	dur := soakDuration(b)
	if raceBuild || os.Getenv("MQAGENT_TEST_RACE") == "1" {
		b.Skip("soak needs an agent built without -race: run it without -race")
	}
	if runtime.GOOS != "linux" {
		b.Skip("soak reads /proc: Linux only")
	}
	rate := soakRate(b)
	ttl := envDuration(b, "MQAGENT_SOAK_TTL", 2*time.Minute)
	warmup := max(dur/5, soakMinWarmup)

	bin := os.Getenv("MQAGENT_SOAK_AGENT")
	if bin == "" {
		bin = harness.BuildAgent(b)
	} else if st, err := os.Stat(bin); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		b.Fatalf("MQAGENT_SOAK_AGENT=%q: want an agent executable (%v)", bin, err)
	}
	mq := harness.StartMosquitto(b, harness.WithMosquittoConfig("autosave_interval 1800"))
	tmp := b.TempDir()
	dataDir := filepath.Join(tmp, "data")
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x5a}, ed25519.SeedSize))
	cfg := harness.DefaultConfig(soakHost, mq.URL(), dataDir)
	cfg["metrics"] = map[string]any{"interval": "1s", "qos": 0, "retain": false}
	cfg["inventory"] = map[string]any{"interval": "24h"}
	cfg["log"].(map[string]any)["level"] = "info" // debug logging is not the production cost
	ex := cfg["exec"].(map[string]any)
	ex["max_concurrent"], ex["max_queue"] = 8, 256 // the production defaults
	sec := cfg["security"].(map[string]any)
	sec["require_signed"] = true
	sec["trusted_keys"] = []map[string]any{{
		"id": soakKid, "public_key": base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)), "kinds": []string{"*"},
	}}
	sec["default_ttl"], sec["max_clock_skew"] = ttl.String(), "1m"

	led := newSoakLedger()
	topics := protocol.Topics{Prefix: protocol.DefaultPrefix}
	online := make(chan struct{}, 1)
	op := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(mq.URL()).
		SetClientID("soak-op-" + strings.ToLower(harness.NewID())).SetCleanSession(true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { led.problem("operator connection lost: %v", err) }))
	if t := op.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		b.Fatal("operator connect:", t.Error())
	}
	b.Cleanup(func() { op.Disconnect(250) })
	subscribe := func(topic string, qos byte, h mqtt.MessageHandler) {
		if t := op.Subscribe(topic, qos, h); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
			b.Fatalf("subscribe %s: %v", topic, t.Error())
		}
	}
	subscribe(topics.Status(soakHost), 1, func(_ mqtt.Client, m mqtt.Message) {
		var s protocol.Status
		if err := json.Unmarshal(m.Payload(), &s); err != nil {
			led.problem("status: %v", err)
			return
		}
		if s.State == protocol.StatusOnline {
			select {
			case online <- struct{}{}:
			default:
			}
		}
		led.status(s)
	})
	resultsPrefix := topics.Prefix + "/hosts/" + soakHost + "/results/"
	subscribe(resultsPrefix+"#", 1, func(_ mqtt.Client, m mqtt.Message) {
		if strings.HasSuffix(m.Topic(), "/out") {
			led.chunk()
			return
		}
		var r protocol.Result
		if err := json.Unmarshal(m.Payload(), &r); err != nil || r.ID != strings.TrimPrefix(m.Topic(), resultsPrefix) {
			led.problem("result on %s: bad payload (%v): %.200s", m.Topic(), err, m.Payload())
			return
		}
		led.result(r, time.Now())
	})
	subscribe(topics.Metrics(soakHost), 0, func(_ mqtt.Client, m mqtt.Message) {
		var s protocol.Metrics
		if err := json.Unmarshal(m.Payload(), &s); err != nil || s.Agent == nil {
			led.problem("metrics sample without agent health (%v): %.200s", err, m.Payload())
			return
		}
		led.metrics(*s.Agent, time.Now())
	})
	subscribe(topics.Audit(soakHost), 1, func(_ mqtt.Client, m mqtt.Message) {
		var a protocol.Audit
		if err := json.Unmarshal(m.Payload(), &a); err != nil {
			led.problem("audit: %v", err)
			return
		}
		led.audit(a)
	})

	agent := harness.StartAgent(b, bin, cfg)
	select {
	case <-online:
	case <-time.After(30 * time.Second):
		b.Fatalf("agent did not come online\n%s", agent.LogTail())
	}
	pid := agent.PID()
	load := &soakLoad{b: b, c: op, topic: topics.HostCmd(soakHost), key: key, led: led, marks: filepath.Join(tmp, "marks")}

	var samples []soakSample
	start := time.Now()
	read := func(phase string) soakSample {
		s, err := readSoakSample(pid, dataDir)
		if err != nil {
			b.Fatalf("reading the agent (pid %d): %v (did it exit?)\n%s", pid, err, agent.LogTail())
		}
		s.at, s.phase = time.Since(start), phase
		led.fill(&s)
		samples = append(samples, s)
		return s
	}
	rest := func() soakSample {
		led.drain(b, soakDrain)
		led.waitIdle(b, 30*time.Second)
		return read("rest")
	}

	b.ResetTimer()
	read("warmup")
	loadT := time.NewTicker(time.Second / time.Duration(rate))
	sampleT := time.NewTicker(soakSampleEvery)
	var restWarm soakSample
	warm := false
	for {
		atCycleStart := load.n%soakCycle == 0
		if atCycleStart && !warm && time.Since(start) >= warmup {
			restWarm, warm = rest(), true
		}
		if atCycleStart && time.Since(start) >= dur {
			break
		}
		select {
		case <-loadT.C:
			load.step()
		case <-sampleT.C:
			phase := "run"
			if !warm {
				phase = "warmup"
			}
			read(phase)
		}
	}
	loadT.Stop()
	sampleT.Stop()
	restEnd := rest()
	elapsed := time.Since(start)
	b.StopTimer()

	// The summary is taken before the stop: its offline status is expected.
	sum := led.summary()
	children, err := childProcesses(pid)
	if err != nil {
		b.Errorf("child processes: %v", err)
	}
	if code := agent.Stop(); code != 0 {
		b.Errorf("agent exit status %d", code)
	}
	if p := os.Getenv("MQAGENT_SOAK_CSV"); p != "" {
		if err := writeSoakCSV(p, samples); err != nil {
			b.Errorf("MQAGENT_SOAK_CSV: %v", err)
		}
	}
	soakReport(b, samples, restWarm, restEnd, warmup, elapsed, sum)
	if err := load.checkMarks(sum.markers); err != nil {
		b.Error(err)
	}

	// Verdicts.
	if len(sum.problems) > 0 {
		b.Errorf("%d problem(s) with the commands, the first ones:\n%s", sum.nProblems, strings.Join(sum.problems, "\n"))
	}
	if restEnd.fds > restWarm.fds+soakFDSlack {
		b.Errorf("descriptor leak: %d open descriptors idle after the run, %d after the warm-up (allowed: +%d)\n%s",
			restEnd.fds, restWarm.fds, soakFDSlack, fdTargets(pid))
	}
	if restEnd.goroutines > restWarm.goroutines+soakGoroutineSlack {
		b.Errorf("goroutine leak: %d goroutines idle after the run, %d after the warm-up (allowed: +%d)",
			restEnd.goroutines, restWarm.goroutines, soakGoroutineSlack)
	}
	if len(children) > 0 {
		b.Errorf("child processes of the idle agent left over: %s", strings.Join(children, "; "))
	}
	if sum.commands == 0 || sum.metrics == 0 {
		b.Errorf("%d commands sent, %d metrics samples received: the load or telemetry did not run", sum.commands, sum.metrics)
	}
}

// soakDuration is MQAGENT_SOAK; the benchmark is skipped without it.
func soakDuration(b *testing.B) time.Duration {
	s := os.Getenv("MQAGENT_SOAK")
	if s == "" {
		b.Skip("soak test: set MQAGENT_SOAK to a duration, e.g. " +
			"MQAGENT_SOAK=30m go test -run '^$' -bench '^BenchmarkSoak$' -benchtime 1x -timeout 50m ./test/bench " +
			"(or test/bench/soak.sh)")
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 2*time.Minute {
		b.Fatalf("MQAGENT_SOAK=%q: want a Go duration of at least 2m, e.g. 30m", s)
	}
	return d
}

// soakRate is MQAGENT_SOAK_RATE, messages a second (default 10).
func soakRate(b *testing.B) int {
	s := os.Getenv("MQAGENT_SOAK_RATE")
	if s == "" {
		return 10
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 200 {
		b.Fatalf("MQAGENT_SOAK_RATE=%q: want messages a second, 1 to 200", s)
	}
	return n
}

// soakCmd is one command of the load and what came back for it.
type soakCmd struct {
	label     string                       // what it exercises, e.g. "exec-false"
	want      string                       // the expected final state
	check     func(protocol.Result) string // more checks of the first final result; "" when fine
	sent      time.Time                    // when it was published
	journaled bool                         // signed: the agent keeps its result (result.get)
	payload   []byte                       // the bytes sent, kept while it may be re-sent
	finals    int                          // final results received
	running   int                          // running states received
	state     string                       // the first final state
	dups      int                          // times the same bytes were sent again
}

// soakSummary is what the ledger counted, for the report.
type soakSummary struct {
	commands, finals, dups, malformed int
	malformedAudits, duplicateAudits  int
	chunks, metrics                   int
	byLabel                           map[string]int
	pingRTT                           []time.Duration
	markers                           []string // marker commands that succeeded
	problems                          []string
	nProblems                         int
}

// soakLedger records the commands sent and checks what the agent
// publishes for them. Its methods are called from paho's goroutine and the
// benchmark's.
type soakLedger struct {
	mu          sync.Mutex
	changed     harness.Notifier // wakes wait on every change
	cmds        map[string]*soakCmd
	outstanding int // final results still owed
	malformed   int
	dups        int
	// lastDone is a journaled command that has its final result, for
	// result.get; markers are finished markers that were not re-sent.
	lastDone string
	markers  []string
	// health is the agent's last metrics sample, received at healthAt.
	health          protocol.AgentHealth
	healthAt        time.Time
	nMetrics        int
	chunks          int
	malformedAudits int
	duplicateAudits int
	session         uint64
	pingRTT         []time.Duration // send to final result, of every ping
	problems        []string
	nProblems       int
}

func newSoakLedger() *soakLedger {
	return &soakLedger{cmds: make(map[string]*soakCmd)}
}

// notifyLocked wakes the waiters. l.mu must be held.
func (l *soakLedger) notifyLocked() {
	l.changed.Notify()
}

func (l *soakLedger) problem(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.problemLocked(format, args...)
}

func (l *soakLedger) problemLocked(format string, args ...any) {
	l.nProblems++
	if len(l.problems) < soakProblems {
		l.problems = append(l.problems, time.Now().Format("15:04:05 ")+fmt.Sprintf(format, args...))
	}
}

// add records a command about to be published.
func (l *soakLedger) add(id string, c *soakCmd) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cmds[id] = c
	l.outstanding++
}

// takeMarker returns the most recently finished marker command that was
// not re-sent yet, with its bytes, and counts the re-send; ok is false
// when there is none.
func (l *soakLedger) takeMarker() (id string, payload []byte, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.markers) == 0 {
		return "", nil, false
	}
	id = l.markers[len(l.markers)-1]
	l.markers = l.markers[:len(l.markers)-1]
	c := l.cmds[id]
	payload, c.payload = c.payload, nil
	c.dups++
	l.dups++
	l.outstanding++
	return id, payload, true
}

// resultTarget is the command result.get asks for: a journaled command
// with its final result, or "" when there is none yet.
func (l *soakLedger) resultTarget() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastDone
}

func (l *soakLedger) result(r protocol.Result, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	defer l.notifyLocked()
	c := l.cmds[r.ID]
	switch {
	case c == nil:
		l.problemLocked("result for id %s, which was never sent (state %s)", r.ID, r.State)
	case r.Host != soakHost || r.V != protocol.Version:
		l.problemLocked("%s (%s): result with host %q v %d", r.ID, c.label, r.Host, r.V)
	case r.State == protocol.StateRunning:
		c.running++
		if c.running > 1 {
			l.problemLocked("%s (%s) ran twice: running state %d times", r.ID, c.label, c.running)
		}
	case protocol.IsFinal(r.State):
		c.finals++
		if c.finals > 1+c.dups {
			l.problemLocked("%s (%s): %d final results (%s then %s), want %d", r.ID, c.label, c.finals, c.state, r.State, 1+c.dups)
			return
		}
		l.outstanding--
		if c.finals > 1 {
			if r.State != c.state {
				l.problemLocked("%s (%s): the duplicate's final state is %s, the first was %s", r.ID, c.label, r.State, c.state)
			}
			return
		}
		c.state = r.State
		if r.State != c.want {
			l.problemLocked("%s (%s): final state %s (error %q), want %s", r.ID, c.label, r.State, r.Error, c.want)
		} else if c.check != nil {
			if msg := c.check(r); msg != "" {
				l.problemLocked("%s (%s): %s", r.ID, c.label, msg)
			}
		}
		if c.label == "ping" {
			l.pingRTT = append(l.pingRTT, at.Sub(c.sent))
		}
		if c.journaled && r.State == protocol.StateSucceeded && c.want == protocol.StateSucceeded {
			l.lastDone = r.ID
		}
		if c.label == "marker" && r.State == protocol.StateSucceeded && c.dups == 0 {
			l.markers = append(l.markers, r.ID)
			if len(l.markers) > soakMarkers {
				l.cmds[l.markers[0]].payload = nil
				l.markers = l.markers[1:]
			}
		} else {
			c.payload = nil
		}
		c.check = nil
	}
}

func (l *soakLedger) chunk() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.chunks++
}

func (l *soakLedger) metrics(h protocol.AgentHealth, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.health, l.healthAt = h, at
	l.nMetrics++
	l.notifyLocked()
}

func (l *soakLedger) audit(a protocol.Audit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch a.Decision {
	case protocol.DecisionMalformed:
		l.malformedAudits++
	case protocol.DecisionDuplicate:
		l.duplicateAudits++
	}
}

func (l *soakLedger) status(s protocol.Status) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case s.State != protocol.StatusOnline:
		l.problemLocked("agent status %s (%s), session %d", s.State, s.Reason, s.Session)
	case l.session != 0 && s.Session != l.session:
		l.problemLocked("agent reconnected: session %d after %d", s.Session, l.session)
	}
	l.session = s.Session
}

// wait waits until cond (called with l.mu held) is true or timeout
// passes, waking on every change.
func (l *soakLedger) wait(timeout time.Duration, cond func() bool) bool {
	return l.changed.Await(&l.mu, timeout, cond)
}

// drain waits for every final result owed.
func (l *soakLedger) drain(b *testing.B, timeout time.Duration) {
	if !l.wait(timeout, func() bool { return l.outstanding <= 0 }) {
		l.mu.Lock()
		var missing []string
		for id, c := range l.cmds {
			if c.finals < 1+c.dups && len(missing) < soakProblems {
				missing = append(missing, fmt.Sprintf("%s (%s, sent %s, %d of %d finals)", id, c.label, c.sent.Format("15:04:05.000"), c.finals, 1+c.dups))
			}
		}
		n := l.outstanding
		l.mu.Unlock()
		b.Fatalf("%d final result(s) missing %s after the load paused: %s", n, timeout, strings.Join(missing, ", "))
	}
}

// waitIdle waits for a metrics sample, produced after the call, that says
// nothing is running, queued or waiting in the outbox.
func (l *soakLedger) waitIdle(b *testing.B, timeout time.Duration) {
	since := time.Now()
	if !l.wait(timeout, func() bool {
		h := l.health
		return l.healthAt.After(since) && h.Running == 0 && h.Queued == 0 && h.Outbox == 0
	}) {
		l.mu.Lock()
		h, at := l.health, l.healthAt
		l.mu.Unlock()
		b.Fatalf("agent not idle within %s: last metrics at %s: %+v", timeout, at.Format("15:04:05"), h)
	}
}

// fill copies the counters into a sample.
func (l *soakLedger) fill(s *soakSample) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.goroutines, s.running, s.queued, s.outbox = l.health.Goroutines, l.health.Running, l.health.Queued, l.health.Outbox
	s.commands = len(l.cmds)
	s.owed = l.outstanding
}

func (l *soakLedger) summary() soakSummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := soakSummary{
		commands: len(l.cmds), dups: l.dups, malformed: l.malformed,
		malformedAudits: l.malformedAudits, duplicateAudits: l.duplicateAudits,
		chunks: l.chunks, metrics: l.nMetrics, byLabel: map[string]int{},
		problems: slices.Clone(l.problems), nProblems: l.nProblems,
	}
	for id, c := range l.cmds {
		s.finals += c.finals
		s.byLabel[c.label]++
		if c.label == "marker" && c.state == protocol.StateSucceeded {
			s.markers = append(s.markers, id)
		}
	}
	s.pingRTT = slices.Clone(l.pingRTT)
	return s
}

// soakLoad publishes the command mix.
type soakLoad struct {
	b     *testing.B
	c     mqtt.Client
	topic string
	key   ed25519.PrivateKey
	led   *soakLedger
	marks string // file the marker commands append their id to
	n     int    // steps taken
	sleep string // the sleep the next cancel stops
}

// publish sends payload on the agent's command topic, QoS 1.
func (s *soakLoad) publish(payload []byte) {
	t := s.c.Publish(s.topic, 1, false, payload)
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		s.b.Fatalf("publish: %v", t.Error())
	}
}

// send records and publishes cmd (signed unless bare) under id; it
// expects the final state want and, when check is not nil, what check
// says.
func (s *soakLoad) send(id, label string, cmd protocol.Command, bare bool, want string, check func(protocol.Result) string) {
	cmd.V, cmd.ID, cmd.IssuedAt, cmd.Target = protocol.Version, id, protocol.Now(), "host:"+soakHost
	raw, err := json.Marshal(cmd)
	if err != nil {
		s.b.Fatal(err)
	}
	payload := raw
	if !bare {
		payload = harness.Sign(raw, soakKid, s.key)
	}
	c := &soakCmd{label: label, want: want, check: check, sent: time.Now(), journaled: !bare}
	if label == "marker" {
		c.payload = payload
	}
	s.led.add(id, c)
	s.publish(payload)
}

// execCmd is an exec command.
func execCmd(args protocol.ExecArgs) protocol.Command {
	b, _ := json.Marshal(args) // cannot fail: strings only
	return protocol.Command{Kind: protocol.KindExec, Args: b}
}

// kindCmd is a command of kind with args marshalled (nil: none).
func kindCmd(kind string, args any) protocol.Command {
	c := protocol.Command{Kind: kind}
	if args != nil {
		c.Args, _ = json.Marshal(args) // cannot fail: our own types
	}
	return c
}

// step publishes the next message of the mix, a cycle of soakCycle slots:
// 5 pings; exec of true, echo, cat with stdin, a marker (appends its id
// to a file: a command that ran twice would be there twice), sh -c
// printing 10 kB, a streamed command; exec of false and of a missing
// binary (failed); a hung sleep with a 1 s timeout (timed_out); a sleep
// then its cancel (canceled, succeeded); result.get of a finished
// command; the exact bytes of a finished marker again (a duplicate: the
// stored result is published again, nothing runs); a shell and a script
// command; a bare (unsigned) ping and an exec without argv (rejected); a
// malformed payload (no result, audited); metrics, or every tenth cycle
// inventory.
func (s *soakLoad) step() {
	slot, cycle := s.n%soakCycle, s.n/soakCycle
	s.n++
	id := harness.NewID()
	ok := protocol.StateSucceeded
	switch slot {
	case 0, 5, 10, 15, 20:
		s.send(id, "ping", kindCmd(protocol.KindPing, nil), false, ok, func(r protocol.Result) string {
			var d protocol.PingData
			if json.Unmarshal(r.Data, &d) != nil || d.Version == "" {
				return fmt.Sprintf("ping data %s", r.Data)
			}
			return ""
		})
	case 1:
		s.send(id, "exec-true", execCmd(protocol.ExecArgs{Argv: []string{"true"}}), false, ok, exitCode(0))
	case 2:
		s.send(id, "exec-echo", execCmd(protocol.ExecArgs{Argv: []string{"echo", "soak", id}}), false, ok, stdoutIs("soak "+id+"\n"))
	case 3:
		s.send(id, "marker", execCmd(protocol.ExecArgs{
			Argv: []string{"sh", "-c", `echo "$SOAK_ID" >> "$SOAK_MARKS"`},
			Env:  map[string]string{"SOAK_ID": id, "SOAK_MARKS": s.marks},
		}), false, ok, exitCode(0))
	case 4:
		s.send(id, "exec-10k", execCmd(protocol.ExecArgs{Argv: []string{"sh", "-c", "head -c 10240 /dev/zero | tr '\\0' x"}}), false, ok,
			stdoutIs(strings.Repeat("x", 10240)))
	case 6:
		s.send(id, "exec-false", execCmd(protocol.ExecArgs{Argv: []string{"false"}}), false, protocol.StateFailed, exitCode(1))
	case 7:
		s.send(id, "exec-missing", execCmd(protocol.ExecArgs{Argv: []string{"/nonexistent/mqagent-soak-missing"}}), false, protocol.StateFailed,
			func(r protocol.Result) string {
				if r.ExitCode != nil || r.Error == "" {
					return fmt.Sprintf("exit code %v, error %q: want none and a reason", r.ExitCode, r.Error)
				}
				return ""
			})
	case 8:
		s.send(id, "shell", kindCmd(protocol.KindShell, protocol.ShellArgs{Command: "for i in 1 2 3; do echo $i; done; echo err >&2"}), false, ok,
			func(r protocol.Result) string {
				if r.Stdout != "1\n2\n3\n" || r.Stderr != "err\n" {
					return fmt.Sprintf("stdout %q stderr %q", r.Stdout, r.Stderr)
				}
				return ""
			})
	case 9:
		c := execCmd(protocol.ExecArgs{Argv: []string{"sleep", "30"}})
		c.TimeoutMS = 1000
		s.send(id, "timeout", c, false, protocol.StateTimedOut, noExitCode)
	case 11:
		s.sleep = id
		s.send(id, "sleep-canceled", execCmd(protocol.ExecArgs{Argv: []string{"sleep", "30"}}), false, protocol.StateCanceled, noExitCode)
	case 12:
		s.send(id, "cancel", kindCmd(protocol.KindCancel, protocol.IDArgs{ID: s.sleep}), false, ok, func(r protocol.Result) string {
			var d protocol.CancelData
			if json.Unmarshal(r.Data, &d) != nil || !d.Canceled {
				return fmt.Sprintf("cancel data %s", r.Data)
			}
			return ""
		})
	case 13:
		target := s.led.resultTarget()
		if target == "" {
			s.send(id, "result.get-unknown", kindCmd(protocol.KindResultGet, protocol.IDArgs{ID: "unknown-" + id}), false, protocol.StateFailed, nil)
			return
		}
		s.send(id, "result.get", kindCmd(protocol.KindResultGet, protocol.IDArgs{ID: target}), false, ok, func(r protocol.Result) string {
			var stored protocol.Result
			if json.Unmarshal(r.Data, &stored) != nil || stored.ID != target || !protocol.IsFinal(stored.State) {
				return fmt.Sprintf("result.get %s data %.200s", target, r.Data)
			}
			return ""
		})
	case 14:
		if _, payload, found := s.led.takeMarker(); found {
			s.publish(payload)
			return
		}
		s.send(id, "ping", kindCmd(protocol.KindPing, nil), false, ok, nil)
	case 16:
		bad := [][]byte{
			[]byte(`{"v":1,"kind":"ping"`),
			[]byte(`{"v":1,"id":"bad id/` + id + `","kind":"ping","issued_at":"` + time.Now().UTC().Format(protocol.TimeFormat) + `"}`),
			[]byte(`not json at all ` + id),
		}
		s.led.mu.Lock()
		s.led.malformed++
		s.led.mu.Unlock()
		s.publish(bad[cycle%len(bad)])
	case 17:
		s.send(id, "unsigned", kindCmd(protocol.KindPing, nil), true, protocol.StateRejected, errorSays("sign"))
	case 18:
		s.send(id, "bad-args", execCmd(protocol.ExecArgs{}), false, protocol.StateRejected, errorSays("argv"))
	case 19:
		s.send(id, "script", kindCmd(protocol.KindScript, protocol.ScriptArgs{Content: `echo "script $1"`, Interpreter: "sh", Args: []string{id}}), false, ok,
			stdoutIs("script "+id+"\n"))
	case 21:
		if cycle%10 == 0 {
			s.send(id, "inventory", kindCmd(protocol.KindInventory, nil), false, ok, nil)
		} else {
			s.send(id, "metrics", kindCmd(protocol.KindMetrics, nil), false, ok, nil)
		}
	case 22:
		s.send(id, "exec-stdin", execCmd(protocol.ExecArgs{Argv: []string{"cat"}, Stdin: "stdin " + id}), false, ok, stdoutIs("stdin "+id))
	case 23:
		c := execCmd(protocol.ExecArgs{Argv: []string{"sh", "-c", "echo a; echo b"}})
		c.Stream = true
		s.send(id, "stream", c, false, ok, stdoutIs("a\nb\n"))
	}
}

// checkMarks checks that every marker command that succeeded appended its
// id exactly once, and nothing else is in the file.
func (s *soakLoad) checkMarks(markers []string) error {
	b, err := os.ReadFile(s.marks)
	if err != nil && !(os.IsNotExist(err) && len(markers) == 0) {
		return fmt.Errorf("marker file: %w", err)
	}
	seen := map[string]int{}
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line != "" {
			seen[line]++
		}
	}
	var bad []string
	for _, id := range markers {
		if seen[id] != 1 {
			bad = append(bad, fmt.Sprintf("%s ran %d times", id, seen[id]))
		}
		delete(seen, id)
	}
	for id, n := range seen {
		bad = append(bad, fmt.Sprintf("%s (%d times) has no successful result", id, n))
	}
	if len(bad) > 0 {
		return fmt.Errorf("marker commands (must run exactly once): %s", strings.Join(bad[:min(len(bad), soakProblems)], "; "))
	}
	return nil
}

// exitCode checks a result's exit code.
func exitCode(want int) func(protocol.Result) string {
	return func(r protocol.Result) string {
		if r.ExitCode == nil || *r.ExitCode != want {
			return fmt.Sprintf("exit code %s, want %d (error %q)", fmtExit(r.ExitCode), want, r.Error)
		}
		return ""
	}
}

// noExitCode checks that a result has no exit code (the process was
// killed).
func noExitCode(r protocol.Result) string {
	if r.ExitCode != nil {
		return fmt.Sprintf("exit code %d, want none", *r.ExitCode)
	}
	return ""
}

// stdoutIs checks exit code 0, the whole stdout and that nothing was cut.
func stdoutIs(want string) func(protocol.Result) string {
	return func(r protocol.Result) string {
		if r.ExitCode == nil || *r.ExitCode != 0 || r.Stdout != want || r.StdoutTruncated {
			return fmt.Sprintf("exit code %s, stdout %.60q (%d bytes, truncated %v), want %.60q (%d bytes)",
				fmtExit(r.ExitCode), r.Stdout, len(r.Stdout), r.StdoutTruncated, want, len(want))
		}
		return ""
	}
}

// errorSays checks that a result's error mentions part.
func errorSays(part string) func(protocol.Result) string {
	return func(r protocol.Result) string {
		if !strings.Contains(r.Error, part) {
			return fmt.Sprintf("error %q does not mention %q", r.Error, part)
		}
		return ""
	}
}

func fmtExit(c *int) string {
	if c == nil {
		return "none"
	}
	return strconv.Itoa(*c)
}

// soakSample is one reading of the agent.
type soakSample struct {
	at                    time.Duration // since the load started
	phase                 string        // warmup, run or rest
	rssKB, anonKB, fileKB int64         // VmRSS, RssAnon, RssFile
	// dbMapKB and exeKB split RssFile: the resident pages of the
	// state.db mapping (bbolt maps the whole file) and of the executable.
	dbMapKB, exeKB      int64
	threads, fds        int
	goroutines          int // agent.goroutines of the last metrics sample
	running, queued     int // agent.running, agent.queued
	outbox              int // agent.outbox
	dbBytes, auditBytes int64
	dataBytes           int64         // the whole data directory
	cpu, childCPU       time.Duration // the agent's own CPU time; its reaped children's
	commands, owed      int           // commands sent; final results still owed
	scriptsLeft         int           // files in data_dir/scripts
}

// readSoakSample reads the agent's /proc entries and its data directory.
func readSoakSample(pid int, dataDir string) (soakSample, error) {
	var s soakSample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		name, val, found := strings.Cut(line, ":")
		if !found {
			continue
		}
		f := strings.Fields(val)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmRSS":
			s.rssKB = n
		case "RssAnon":
			s.anonKB = n
		case "RssFile":
			s.fileKB = n
		case "Threads":
			s.threads = int(n)
		}
	}
	if s.dbMapKB, s.exeKB, err = mappedKB(pid); err != nil {
		return s, err
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.fds = len(fds)
	if cpu, ok := schedstat(pid); ok {
		s.cpu = cpu
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command name: state is 0, utime 11, stime 12,
	// cutime 13, cstime 14, in clock ticks (USER_HZ, 100 on Linux).
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 {
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 14 {
			cu, _ := strconv.ParseInt(f[13], 10, 64)
			cs, _ := strconv.ParseInt(f[14], 10, 64)
			s.childCPU = time.Duration(cu+cs) * 10 * time.Millisecond
			if s.cpu == 0 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				s.cpu = time.Duration(u+st) * 10 * time.Millisecond
			}
		}
	}
	err = filepath.WalkDir(dataDir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil // a file removed while walking (a script)
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		s.dataBytes += info.Size()
		switch rel, _ := filepath.Rel(dataDir, path); {
		case rel == "state.db":
			s.dbBytes = info.Size()
		case rel == "audit.log" || strings.HasPrefix(rel, "audit.log."):
			s.auditBytes += info.Size()
		case strings.HasPrefix(rel, "scripts"+string(filepath.Separator)):
			s.scriptsLeft++
		}
		return nil
	})
	return s, err
}

// mappedKB sums the resident pages (Rss, kB) of process pid's mappings of
// a file named state.db and of its executable, from /proc/PID/smaps.
func mappedKB(pid int) (db, exe int64, err error) {
	exePath, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return 0, 0, err
	}
	smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, 0, err
	}
	var into *int64
	for _, line := range strings.Split(string(smaps), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			// A mapping's header: range perms offset dev inode [path].
			into = nil
			if len(f) >= 6 {
				switch path := strings.Join(f[5:], " "); {
				case path == exePath:
					into = &exe
				case filepath.Base(path) == "state.db":
					into = &db
				}
			}
		case len(f) == 3 && f[0] == "Rss:" && into != nil:
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("smaps: %q: %w", line, err)
			}
			*into += n
		}
	}
	return db, exe, nil
}

// childProcesses lists the processes whose parent is pid, from /proc.
func childProcesses(pid int) ([]string, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil {
			continue // gone
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, fmt.Sprintf("pid %d %s state %s", child, stat[bytes.IndexByte(stat, '('):i+1], f[0]))
		}
	}
	return out, nil
}

// fdTargets lists what the agent's descriptors point at, for a leak
// report.
func fdTargets(pid int) string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	counts := map[string]int{}
	for _, e := range entries {
		t, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if i := strings.Index(t, ":["); i > 0 {
			t = t[:i] // socket:[123] -> socket
		}
		counts[t]++
	}
	var lines []string
	for t, n := range counts {
		lines = append(lines, fmt.Sprintf("%4d %s", n, t))
	}
	slices.Sort(lines)
	return "descriptors now:\n" + strings.Join(lines, "\n")
}

// slopePerHour is the least-squares slope of y over the samples' times,
// per hour.
func slopePerHour(s []soakSample, y func(soakSample) float64) float64 {
	if len(s) < 2 {
		return math.NaN()
	}
	var mt, my float64
	for _, x := range s {
		mt += x.at.Hours()
		my += y(x)
	}
	mt /= float64(len(s))
	my /= float64(len(s))
	var num, den float64
	for _, x := range s {
		dt := x.at.Hours() - mt
		num += dt * (y(x) - my)
		den += dt * dt
	}
	if den == 0 {
		return math.NaN()
	}
	return num / den
}

// maxOf is the largest y over the samples.
func maxOf(s []soakSample, y func(soakSample) float64) float64 {
	m := math.Inf(-1)
	for _, x := range s {
		m = max(m, y(x))
	}
	return m
}

// soakReport reports the figures of the readings after the warm-up.
func soakReport(b *testing.B, all []soakSample, warm, end soakSample, warmup, elapsed time.Duration, sum soakSummary) {
	var after []soakSample
	for _, s := range all {
		if s.at >= warm.at {
			after = append(after, s)
		}
	}
	const mib = 1024.0 // kB per MiB
	rss := func(s soakSample) float64 { return float64(s.rssKB) }
	anon := func(s soakSample) float64 { return float64(s.anonKB) }
	file := func(s soakSample) float64 { return float64(s.fileKB) }
	noDB := func(s soakSample) float64 { return float64(s.rssKB - s.dbMapKB) }
	gor := func(s soakSample) float64 { return float64(s.goroutines) }
	fds := func(s soakSample) float64 { return float64(s.fds) }
	thr := func(s soakSample) float64 { return float64(s.threads) }
	data := func(s soakSample) float64 { return float64(s.dataBytes) / (1 << 20) }
	metrics := []struct {
		v    float64
		unit string
	}{
		{slopePerHour(after, rss), "rss_kB/h"},
		{slopePerHour(after, anon), "anon_kB/h"},
		{slopePerHour(after, file), "file_kB/h"},
		{slopePerHour(after, noDB), "rss_without_db_kB/h"},
		{slopePerHour(after, gor), "goroutines/h"},
		{slopePerHour(after, fds), "fds/h"},
		{slopePerHour(after, data), "data_MiB/h"},
		{float64(warm.rssKB) / mib, "rss_start_MiB"},
		{float64(end.rssKB) / mib, "rss_end_MiB"},
		{maxOf(after, rss) / mib, "rss_max_MiB"},
		{float64(warm.anonKB) / mib, "anon_start_MiB"},
		{float64(end.anonKB) / mib, "anon_end_MiB"},
		{maxOf(after, anon) / mib, "anon_max_MiB"},
		{float64(warm.dbMapKB) / mib, "db_mapped_start_MiB"},
		{float64(end.dbMapKB) / mib, "db_mapped_end_MiB"},
		{float64(end.exeKB) / mib, "exe_end_MiB"},
		{float64(warm.goroutines), "goroutines_start"},
		{float64(end.goroutines), "goroutines_end"},
		{maxOf(after, gor), "goroutines_max"},
		{float64(warm.fds), "fds_start"},
		{float64(end.fds), "fds_end"},
		{maxOf(after, fds), "fds_max"},
		{float64(end.threads), "threads_end"},
		{maxOf(after, thr), "threads_max"},
		{float64(warm.dbBytes) / (1 << 20), "db_start_MiB"},
		{float64(end.dbBytes) / (1 << 20), "db_end_MiB"},
		{float64(end.auditBytes) / (1 << 20), "audit_end_MiB"},
		{float64(end.dataBytes) / (1 << 20), "data_end_MiB"},
		{float64(sum.commands), "commands"},
		{float64(sum.commands+sum.dups+sum.malformed) / elapsed.Seconds(), "msgs/s"},
		{float64(sum.finals), "finals"},
		{float64(sum.dups), "duplicates"},
		{float64(sum.malformed), "malformed"},
		{100 * (end.cpu - warm.cpu).Seconds() / (end.at - warm.at).Seconds(), "cpu_%"},
		{100 * (end.childCPU - warm.childCPU).Seconds() / (end.at - warm.at).Seconds(), "child_cpu_%"},
		{end.cpu.Seconds(), "cpu_s"},
	}
	if n := len(sum.pingRTT); n > 0 {
		slices.Sort(sum.pingRTT)
		q := func(p float64) float64 { return float64(sum.pingRTT[int(p*float64(n-1))].Microseconds()) / 1000 }
		metrics = append(metrics, struct {
			v    float64
			unit string
		}{q(0.5), "ping_p50_ms"}, struct {
			v    float64
			unit string
		}{q(0.99), "ping_p99_ms"})
	}
	// The figures are logged too: a failed benchmark prints no metrics.
	figures := make([]string, 0, len(metrics))
	for _, m := range metrics {
		if !math.IsNaN(m.v) && !math.IsInf(m.v, 0) {
			b.ReportMetric(m.v, m.unit)
			figures = append(figures, m.unit+"="+strconv.FormatFloat(m.v, 'f', -1, 64))
		}
	}
	b.Logf("figures: %s", strings.Join(figures, " "))
	labels := make([]string, 0, len(sum.byLabel))
	for l, n := range sum.byLabel {
		labels = append(labels, fmt.Sprintf("%s=%d", l, n))
	}
	slices.Sort(labels)
	b.Logf("soak %s (warm-up %s, %d readings after it): %d commands (%s), %d duplicates, %d malformed; "+
		"%d final results, %d output chunks, %d metrics samples; audit: %d malformed, %d duplicate",
		elapsed.Round(time.Second), warmup, len(after), sum.commands, strings.Join(labels, " "), sum.dups, sum.malformed,
		sum.finals, sum.chunks, sum.metrics, sum.malformedAudits, sum.duplicateAudits)
	b.Logf("idle after warm-up → after run: VmRSS %d → %d kB, RssAnon %d → %d kB, RssFile %d → %d kB (state.db mapping %d → %d, executable %d → %d), goroutines %d → %d, fds %d → %d, threads %d → %d, state.db %d → %d B, audit %d → %d B, scripts left %d",
		warm.rssKB, end.rssKB, warm.anonKB, end.anonKB, warm.fileKB, end.fileKB, warm.dbMapKB, end.dbMapKB, warm.exeKB, end.exeKB, warm.goroutines, end.goroutines,
		warm.fds, end.fds, warm.threads, end.threads, warm.dbBytes, end.dbBytes, warm.auditBytes, end.auditBytes, end.scriptsLeft)
	if sum.malformedAudits != sum.malformed || sum.duplicateAudits != sum.dups {
		b.Logf("note: %d malformed and %d duplicates sent, %d and %d audit records received", sum.malformed, sum.dups, sum.malformedAudits, sum.duplicateAudits)
	}
	if end.scriptsLeft > 0 {
		b.Errorf("%d script file(s) left in data_dir/scripts", end.scriptsLeft)
	}
}

// writeSoakCSV writes the readings to path.
func writeSoakCSV(path string, samples []soakSample) error {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	_ = w.Write([]string{"t_s", "phase", "vmrss_kb", "rss_anon_kb", "rss_file_kb", "db_map_kb", "exe_kb", "threads", "fds", "goroutines",
		"running", "queued", "outbox", "state_db_bytes", "audit_bytes", "data_dir_bytes", "cpu_ms", "child_cpu_ms", "commands", "owed"})
	for _, s := range samples {
		i := func(n int64) string { return strconv.FormatInt(n, 10) }
		_ = w.Write([]string{
			strconv.FormatFloat(s.at.Seconds(), 'f', 1, 64), s.phase, i(s.rssKB), i(s.anonKB), i(s.fileKB), i(s.dbMapKB), i(s.exeKB),
			i(int64(s.threads)), i(int64(s.fds)), i(int64(s.goroutines)), i(int64(s.running)), i(int64(s.queued)), i(int64(s.outbox)),
			i(s.dbBytes), i(s.auditBytes), i(s.dataBytes), i(s.cpu.Milliseconds()), i(s.childCPU.Milliseconds()),
			i(int64(s.commands)), i(int64(s.owed)),
		})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// TestSoakSlope checks the least-squares slope the soak reports.
func TestSoakSlope(t *testing.T) {
	at := func(mins ...int) []soakSample {
		s := make([]soakSample, len(mins))
		for i, m := range mins {
			s[i] = soakSample{at: time.Duration(m) * time.Minute, rssKB: int64(m)}
		}
		return s
	}
	rss := func(s soakSample) float64 { return float64(s.rssKB) }
	for _, tc := range []struct {
		name    string
		samples []soakSample
		y       func(soakSample) float64
		want    float64 // per hour; NaN: undefined
	}{
		{"one a minute is 60 an hour", at(0, 10, 20, 30), rss, 60},
		{"flat", at(5, 10, 15), func(soakSample) float64 { return 7 }, 0},
		{"falling", at(0, 30, 60), func(s soakSample) float64 { return 100 - 2*s.at.Hours() }, -2},
		{"noise around a line", []soakSample{{at: 0}, {at: 30 * time.Minute, rssKB: 10}, {at: time.Hour, rssKB: 2}}, rss, 2},
		{"one sample", at(3), rss, math.NaN()},
		{"no time span", []soakSample{{at: time.Minute}, {at: time.Minute, rssKB: 5}}, rss, math.NaN()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := slopePerHour(tc.samples, tc.y)
			if math.IsNaN(tc.want) != math.IsNaN(got) || !math.IsNaN(got) && math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("slope %v, want %v", got, tc.want)
			}
		})
	}
}

// TestReadSoakSample reads this test process and a data directory made
// for it.
func TestReadSoakSample(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc: Linux only")
	}
	dir := t.TempDir()
	files := map[string]int{"state.db": 4096, "audit.log": 100, "audit.log.1": 50, "subscriptions.json": 7, "scripts/run.sh": 3}
	for name, size := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err := readSoakSample(os.Getpid(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.rssKB <= 0 || s.anonKB <= 0 || s.anonKB > s.rssKB || s.exeKB <= 0 || s.exeKB > s.fileKB || s.dbMapKB != 0 ||
		s.threads < 1 || s.fds < 3 || s.cpu <= 0 {
		t.Errorf("implausible reading of this process: %+v", s)
	}
	if s.dbBytes != 4096 || s.auditBytes != 150 || s.dataBytes != 4096+100+50+7+3 || s.scriptsLeft != 1 {
		t.Errorf("data dir: db %d audit %d total %d scripts %d; want 4096, 150, 4256, 1", s.dbBytes, s.auditBytes, s.dataBytes, s.scriptsLeft)
	}
	// A bbolt database maps its file, as the agent's journal does.
	db, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if s, err = readSoakSample(os.Getpid(), dir); err != nil {
		t.Fatal(err)
	}
	if s.dbMapKB <= 0 {
		t.Errorf("state.db mapping: %d kB resident, want some", s.dbMapKB)
	}
	if _, err := readSoakSample(1<<30, dir); err == nil {
		t.Error("reading a process that does not exist: no error")
	}
}
