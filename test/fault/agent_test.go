package fault

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// killSeed is the seed of TestAgentKill9's schedule; MQAGENT_FAULT_SEED
// replaces it (the seed is logged, so a failure can be replayed).
const killSeed = 7

// TestAgentKill9 kills the agent with SIGKILL at seeded random points
// while 500 commands stream in, and restarts it each time on the same data
// directory. Every command runs at most once (side-effect files), and
// every command ends with exactly one final state: succeeded, or, for a
// command that was running at a kill, failed / interrupted (never run
// again). Nothing is rejected or lost.
func TestAgentKill9(t *testing.T) {
	const (
		host     = "fault-k9"
		commands = 500
		maxKills = 12
		pace     = 15 * time.Millisecond // between two commands sent
	)
	seed := uint64(killSeed)
	if s := os.Getenv("MQAGENT_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("MQAGENT_FAULT_SEED=%q: %v", s, err)
		}
		seed = v
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	mq := harness.StartMosquitto(t)
	bin := harness.BuildAgent(t)
	led := newLedger(t, mq.URL(), "")
	op := harness.NewOperator(t, mq.URL())
	cfg := agentConfig(t, host, mq.URL())
	// Room for everything that piles up at the broker while the agent is
	// down: a full queue would reject commands (a final state, but not the
	// point here).
	section(cfg, "exec")["max_queue"] = commands
	a := harness.StartAgent(t, bin, cfg)
	led.waitAgentOnline(t, a, 0)

	dir := t.TempDir()
	started, finished := filepath.Join(dir, "started"), filepath.Join(dir, "finished")
	ids := make([]string, 0, commands)
	// upFor is how long the agent runs before the next kill: from a kill
	// during recovery to one in the thick of the load.
	upFor := func() time.Duration { return time.Duration(50+rng.IntN(1500)) * time.Millisecond }
	nextKill := time.Now().Add(upFor())
	kills := 0
	var restarts []time.Duration
	begin := time.Now()
	for len(ids) < commands || (kills < 3 && time.Since(begin) < 30*time.Second) {
		if len(ids) < commands {
			// Each command sleeps 0-99 ms between its two side effects, so
			// kills land before, inside and after processes; one in 20
			// sleeps 1 s, and outlives the agent when killed (the restart
			// kills what is left of it).
			body := fmt.Sprintf("sleep 0.%03d", rng.IntN(100))
			if rng.IntN(20) == 0 {
				body = "sleep 1"
			}
			ids = append(ids, send(op, phased(host, started, body, finished))...)
		}
		if time.Now().After(nextKill) && kills < maxKills {
			a.Kill()
			kills++
			// Down for 0-300 ms while commands keep queueing at the broker.
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
			n := led.nStatuses(host)
			a.Start()
			t0 := time.Now()
			led.waitAgentOnline(t, a, n)
			restarts = append(restarts, time.Since(t0))
			nextKill = time.Now().Add(upFor())
		}
		time.Sleep(pace)
	}
	sent := time.Since(begin)
	res := led.waitFinals(t, ids, 60*time.Second)
	elapsed := time.Since(begin)

	st, fin := lines(t, started), lines(t, finished)
	var succeeded, interrupted, orphanFinished, orphanKilled, neverStarted int
	for _, id := range ids {
		r := res[id]
		switch {
		case st[id] > 1:
			t.Errorf("command %s started %d times", id, st[id])
		case fin[id] > st[id]:
			t.Errorf("command %s finished %d times but started %d times", id, fin[id], st[id])
		case r.State == protocol.StateSucceeded:
			succeeded++
			if st[id] != 1 || fin[id] != 1 {
				t.Errorf("command %s succeeded but started %d and finished %d times", id, st[id], fin[id])
			}
		case r.State == protocol.StateFailed && r.Error == protocol.ErrInterrupted:
			interrupted++
			switch {
			case st[id] == 0:
				neverStarted++ // killed between the journal's running and the process
			case fin[id] == 1:
				// The process outlived the agent and completed before
				// the restart could kill what was left of it.
				orphanFinished++
			default:
				orphanKilled++ // by the kill, or by the restart's recovery
			}
		default:
			t.Errorf("command %s ended %s (%q), want succeeded or failed/interrupted", id, r.State, r.Error)
		}
	}
	dups := checkOneFinal(t, led, ids)
	if kills == 0 {
		t.Fatal("the agent was never killed")
	}
	var worst time.Duration
	for _, d := range restarts {
		worst = max(worst, d)
	}
	t.Logf("seed %d: %d commands sent in %v across %d kill -9s (restart to online: worst %v); all final in %v: %d succeeded, %d failed/interrupted (%d before their process started, %d whose process completed after the kill, %d whose process was killed); %d duplicate final deliveries; none ran twice",
		seed, len(ids), sent.Round(time.Millisecond), kills, worst.Round(time.Millisecond), elapsed.Round(time.Millisecond),
		succeeded, interrupted, neverStarted, orphanFinished, orphanKilled, dups)
}
