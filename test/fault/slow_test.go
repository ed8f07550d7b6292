//go:build linux

package fault

import (
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// anonBound bounds the agent's anonymous resident memory (RssAnon: heap,
// stacks) through a broker stall. Its resident size (VmRSS) also counts
// pages of mapped files, the executable and state.db (bbolt maps it; its
// outbox is capped at 64 MiB), which the kernel reclaims at will: reported,
// not bounded here. A binary built with the race detector carries its
// shadow memory: its bound is larger.
const (
	anonBound     = 60 << 20
	anonBoundRace = 240 << 20
)

// stallFor is how long TestSlowBroker stops the broker: 8 s, or 30 s with
// MQAGENT_FAULT_LONG=1.
func stallFor() time.Duration {
	if os.Getenv("MQAGENT_FAULT_LONG") == "1" {
		return 30 * time.Second
	}
	return 8 * time.Second
}

// TestSlowBroker stops Mosquitto (SIGSTOP) while the agent is busy with
// commands that produce output (streamed and in results) and while the
// operator keeps publishing commands that cannot arrive. The agent writes
// into a socket nobody reads: its memory must stay bounded, it must keep
// running its commands (no deadlock), and after SIGCONT every result
// arrives and new commands are served. It runs with the default keepalive
// (30 s: the stalled connection is held for the whole stall) and with 5 s
// (once its ping gets no answer, up to 10 s into the stall, the agent
// gives up on the connection and keeps trying to connect to a broker whose
// kernel accepts connections that never get an answer).
func TestSlowBroker(t *testing.T) {
	for _, ka := range []string{"30s", "5s"} {
		t.Run("keepalive "+ka, func(t *testing.T) { slowBroker(t, ka) })
	}
}

func slowBroker(t *testing.T, keepalive string) {
	const (
		host    = "fault-slow"
		workers = 4
	)
	stall := stallFor()
	mq := harness.StartMosquitto(t)
	bin := harness.BuildAgent(t)
	race := builtWithRace(t, bin)
	led := newLedger(t, mq.URL(), "")
	op := harness.NewOperator(t, mq.URL())
	cfg := agentConfig(t, host, mq.URL())
	section(cfg, "broker")["keepalive"] = keepalive
	section(cfg, "exec")["max_concurrent"] = workers
	section(cfg, "exec")["max_queue"] = 1000
	a := harness.StartAgent(t, bin, cfg)
	first := led.waitAgentOnline(t, a, 0)
	pid := a.PID()

	dir := t.TempDir()
	started, finished, late := filepath.Join(dir, "started"), filepath.Join(dir, "finished"), filepath.Join(dir, "late")
	// Work for the whole stall: rounds of four commands, each busy ~4 s.
	// Half stream ~320 KiB of output in chunks, half print 1 MiB (the
	// output cap) into their result.
	rounds := int(stall/(4*time.Second)) + 1
	var cmds []protocol.Command
	for i := range rounds * workers {
		body := "for i in $(seq 20); do head -c 12000 /dev/urandom | base64 -w 0; echo; sleep 0.2; done"
		c := phased(host, started, body, finished)
		if i%2 == 1 {
			c = phased(host, started, "sleep 4; head -c 1000000 /dev/urandom | base64 -w 0", finished)
		} else {
			c.Stream = true
		}
		cmds = append(cmds, c)
	}
	ids := send(op, cmds...)
	waitLines(t, started, workers, wait)
	mem := sampleMemory(t, pid)

	// The stall. Whatever happens, the broker is woken up before the
	// harness stops it.
	mqPID := mq.PID()
	if err := syscall.Kill(mqPID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	var contOnce sync.Once
	cont := func() { contOnce.Do(func() { _ = syscall.Kill(mqPID, syscall.SIGCONT) }) }
	t.Cleanup(cont)
	doneBefore := total(lines(t, finished))
	// Commands that cannot arrive: published without waiting for a
	// PUBACK, one every 500 ms.
	var pending []mqtt.Token
	var blocked []string
	tick := time.NewTicker(500 * time.Millisecond)
	for time.Since(stopped) < stall {
		<-tick.C
		c := marker(host, late)
		pending = append(pending, op.Client().Publish(op.Topics().HostCmd(host), 1, false, mustJSON(c)))
		blocked = append(blocked, c.ID)
		procStatus(t, pid) // fails the test if the agent died
	}
	tick.Stop()
	doneAt := lines(t, finished)
	doneDuring := total(doneAt) - doneBefore
	inStall := mem.peak()
	cont()
	resumed := time.Now()
	// The results that waited in the outbox through the stall arrive first.
	var waited []string
	for _, id := range ids {
		if doneAt[id] > 0 {
			waited = append(waited, id)
		}
	}
	led.waitFinals(t, waited, wait)
	drained := time.Since(resumed)

	// Recovery: everything arrives, new commands are served.
	for _, tok := range pending {
		if !tok.WaitTimeout(wait) || tok.Error() != nil {
			t.Fatalf("a command published during the stall was not acknowledged after it: %v", tok.Error())
		}
	}
	after := send(op, marker(host, late), marker(host, late))
	all := append(append(append([]string{}, ids...), blocked...), after...)
	res := led.waitFinals(t, all, 60*time.Second)
	recovered := time.Since(resumed)
	end := mem.stop()

	st, fin, l := lines(t, started), lines(t, finished), lines(t, late)
	for _, id := range ids {
		if res[id].State != protocol.StateSucceeded || st[id] != 1 || fin[id] != 1 {
			t.Errorf("command %s: %s (%q), started %d, finished %d times; want succeeded, once", id, res[id].State, res[id].Error, st[id], fin[id])
		}
	}
	for _, id := range append(append([]string{}, blocked...), after...) {
		if res[id].State != protocol.StateSucceeded || l[id] != 1 {
			t.Errorf("command %s: %s (%q), ran %d times; want succeeded, once", id, res[id].State, res[id].Error, l[id])
		}
	}
	if doneDuring == 0 {
		t.Errorf("no command finished during the %v stall: the agent is stuck behind the broker", stall)
	}
	if a.PID() != pid || !a.Running() {
		t.Errorf("the agent process changed or exited")
	}
	bound := int64(anonBound)
	if race {
		bound = anonBoundRace
	}
	if end.anon > bound {
		t.Errorf("agent anonymous memory peaked at %s, want under %s (race detector: %v)", mib(end.anon), mib(bound), race)
	}
	dups := checkOneFinal(t, led, all)
	var dbSize int64
	if fi, err := os.Stat(filepath.Join(a.DataDir(), "state.db")); err == nil {
		dbSize = fi.Size()
	}
	t.Logf("keepalive %s, broker stopped %v: %d commands finished during the stall, %d published into it; agent memory (resident / anonymous): %s / %s before, peak %s / %s in the stall, peak %s / %s overall (VmHWM %s), state.db %s (race detector: %v); session %d→%d; after SIGCONT: the %d results that waited in %v, all %d (%d duplicate final deliveries) in %v",
		keepalive, stall, doneDuring, len(blocked), mib(mem.base.rss), mib(mem.base.anon), mib(inStall.rss), mib(inStall.anon),
		mib(end.rss), mib(end.anon), mib(end.hwm), mib(dbSize), race,
		first.Session, lastSession(led, host, first.Session), len(waited), drained.Round(time.Millisecond), len(all), dups, recovered.Round(time.Millisecond))
}

// memSampler samples a process's memory every 50 ms and keeps the peaks.
type memSampler struct {
	base   memStatus
	stopCh chan struct{}
	done   chan struct{}

	mu  sync.Mutex
	max memStatus
}

// sampleMemory starts sampling pid; stop ends it (also at cleanup).
func sampleMemory(t *testing.T, pid int) *memSampler {
	t.Helper()
	m := &memSampler{base: procStatus(t, pid), stopCh: make(chan struct{}), done: make(chan struct{})}
	m.max = m.base
	go func() {
		defer close(m.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-m.stopCh:
				return
			case <-tick.C:
			}
			st, err := readProcStatus(pid)
			if err != nil {
				return // gone: the test's own checks report it
			}
			m.mu.Lock()
			m.max = memStatus{rss: max(m.max.rss, st.rss), anon: max(m.max.anon, st.anon), hwm: max(m.max.hwm, st.hwm)}
			m.mu.Unlock()
		}
	}()
	t.Cleanup(func() { m.stop() })
	return m
}

// peak returns the peaks so far.
func (m *memSampler) peak() memStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.max
}

// stop ends the sampling and returns the peaks.
func (m *memSampler) stop() memStatus {
	select {
	case <-m.stopCh:
	default:
		close(m.stopCh)
	}
	<-m.done
	return m.peak()
}

// lastSession is the highest session seen online for host.
func lastSession(l *ledger, host string, min uint64) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := min
	for _, st := range l.statuses[host] {
		if st.v.State == protocol.StatusOnline {
			s = max(s, st.v.Session)
		}
	}
	return s
}

// memStatus is the memory of a process from /proc/PID/status, in bytes:
// resident (VmRSS), its peak so far (VmHWM), and the anonymous part of
// the resident memory (RssAnon: the heap and stacks, without the pages of
// mapped files such as the agent's state.db).
type memStatus struct{ rss, hwm, anon int64 }

// procStatus reads the memory of pid; it fails the test when the process
// is gone.
func procStatus(t *testing.T, pid int) memStatus {
	t.Helper()
	m, err := readProcStatus(pid)
	if err != nil {
		t.Fatalf("agent process %d: %v", pid, err)
	}
	return m
}

// readProcStatus reads VmRSS, VmHWM and RssAnon from /proc/PID/status.
func readProcStatus(pid int) (memStatus, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memStatus{}, err
	}
	var m memStatus
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			m.rss = n << 10
		case "VmHWM":
			m.hwm = n << 10
		case "RssAnon":
			m.anon = n << 10
		}
	}
	if m.rss == 0 {
		return m, errors.New("no VmRSS (a zombie?)")
	}
	return m, nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// builtWithRace reports whether the binary at path was built with the race
// detector.
func builtWithRace(t *testing.T, path string) bool {
	t.Helper()
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		t.Fatalf("build info of %s: %v", path, err)
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}
