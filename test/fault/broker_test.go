package fault

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// TestBrokerRestart takes Mosquitto down under a busy agent, gracefully
// (SIGTERM, which saves persistence) and with kill -9, and starts it again
// on the same port with the same persistence file. Commands running when
// it went down finish during the outage and their results arrive once it
// is back (outbox); commands published after it is back run exactly once.
func TestBrokerRestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		down func(*harness.Mosquitto)
	}{
		{"graceful", func(m *harness.Mosquitto) { m.Stop() }},
		{"kill-9", func(m *harness.Mosquitto) { m.Kill() }},
	} {
		t.Run(tc.name, func(t *testing.T) { brokerRestart(t, tc.down) })
	}
}

func brokerRestart(t *testing.T, down func(*harness.Mosquitto)) {
	const (
		host    = "fault-br"
		workers = 4
		before  = 12 // commands running or queued when the broker goes down
		after   = 20 // commands published once it is back
	)
	mq := harness.StartMosquitto(t)
	bin := harness.BuildAgent(t)
	led := newLedger(t, mq.URL(), "")
	op := harness.NewOperator(t, mq.URL())
	cfg := agentConfig(t, host, mq.URL())
	section(cfg, "exec")["max_concurrent"] = workers
	a := harness.StartAgent(t, bin, cfg)
	first := led.waitAgentOnline(t, a, 0)
	// A kill -9 loses the broker's state since its last snapshot,
	// sessions and subscriptions included (TestBrokerKill9Loss): let one
	// snapshot hold the ledger's and the agent's, or the results delivered
	// after the restart could reach a broker that forgot who wants them.
	waitBrokerSave(t, mq, logSizeOf(mq.LogPath()))

	dir := t.TempDir()
	started, finished, ran := filepath.Join(dir, "started"), filepath.Join(dir, "finished"), filepath.Join(dir, "ran")
	var cmds []protocol.Command
	for range before {
		cmds = append(cmds, phased(host, started, "sleep 1.5", finished))
	}
	early := send(op, cmds...)
	// Every command is journaled (its queued state came back) and the
	// first ones run: the broker goes down under a busy agent.
	if !led.waitFor(wait, func() bool {
		for _, id := range early {
			if len(led.results[id]) == 0 {
				return false
			}
		}
		return true
	}) {
		t.Fatal("not every command was accepted before the outage")
	}
	waitLines(t, started, workers, wait)
	n := led.nStatuses(host)
	finishedBefore := total(lines(t, finished))
	wentDown := time.Now()
	down(mq)
	// During the outage the running commands finish (results into the
	// outbox) and the next ones start.
	waitLines(t, finished, workers, wait)
	waitLines(t, started, 2*workers, wait)
	duringOutage := total(lines(t, finished)) - finishedBefore
	outage := time.Since(wentDown)
	if duringOutage == 0 {
		t.Fatal("no command finished during the outage")
	}

	mq.Start()
	back := time.Now()
	again, _ := led.waitStatus(t, host, n, func(s protocol.Status) bool {
		return isOnline(s) && s.Session > first.Session
	}, wait)
	online := time.Since(back)
	op.WaitConnected(t, wait)
	led.waitOnline(t)
	late := make([]string, 0, after)
	for range after {
		late = append(late, send(op, marker(host, ran))...)
	}
	all := append(append([]string{}, early...), late...)
	res := led.waitFinals(t, all, wait)
	drained := time.Since(back)

	st, fin, r := lines(t, started), lines(t, finished), lines(t, ran)
	for _, id := range early {
		if res[id].State != protocol.StateSucceeded || st[id] != 1 || fin[id] != 1 {
			t.Errorf("command %s from before the outage: state %s (%q), started %d times, finished %d times; want succeeded, once",
				id, res[id].State, res[id].Error, st[id], fin[id])
		}
	}
	for _, id := range late {
		if res[id].State != protocol.StateSucceeded || r[id] != 1 {
			t.Errorf("command %s from after the outage: state %s (%q), ran %d times; want succeeded, once", id, res[id].State, res[id].Error, r[id])
		}
	}
	dups := checkOneFinal(t, led, all)
	t.Logf("outage %v: %d of %d commands finished while the broker was down, their results delivered after; agent online again (session %d→%d) %v after the restart; all %d results in %v; %d duplicate final deliveries",
		outage.Round(time.Millisecond), duringOutage, before, first.Session, again.Session, online.Round(time.Millisecond), len(all), drained.Round(time.Millisecond), dups)
}

// waitBrokerSave waits until Mosquitto's log shows a save of its
// in-memory database after byte offset off (autosave_interval 1 in the
// harness: one every 1-2 s).
func waitBrokerSave(t *testing.T, mq *harness.Mosquitto, off int64) {
	t.Helper()
	if !poll(wait, func() bool {
		b, err := os.ReadFile(mq.LogPath())
		return err == nil && int64(len(b)) >= off && strings.Contains(string(b[off:]), "Saving in-memory database")
	}) {
		t.Fatalf("mosquitto did not save its database within %v", wait)
	}
}

// logSizeOf is the size of the file at path (0 when missing).
func logSizeOf(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// checkOneFinal checks that every final result received for each id has
// the same state and timestamp (a re-delivery of the one final result, not
// a second outcome) and returns how many re-deliveries there were.
func checkOneFinal(t *testing.T, led *ledger, ids []string) int {
	t.Helper()
	dups := 0
	for _, id := range ids {
		fs := led.finals(id)
		for _, f := range fs[1:] {
			if f.State != fs[0].State || !f.TS.Equal(fs[0].TS.Time) {
				t.Errorf("command %s has two final results: %s at %v and %s at %v", id, fs[0].State, fs[0].TS, f.State, f.TS)
			}
		}
		dups += len(fs) - 1
	}
	return dups
}

// TestBrokerKill9Loss measures what a kill -9 of Mosquitto loses: its
// persistence is a snapshot (autosave_interval, or every
// autosave_interval changes with autosave_on_changes), and it acknowledges
// a publish before the snapshot holds it. Commands queued for an offline
// agent and results queued for an offline operator (persistent sessions)
// are lost when the broker dies before its next save. Each case publishes
// a batch of commands to the stopped agent and a batch of results to an
// offline operator, kills the broker, restarts it and counts what comes
// through.
func TestBrokerKill9Loss(t *testing.T) {
	const n = 40
	for _, tc := range []struct {
		name  string
		conf  []string
		pause time.Duration // between the last PUBACK and the kill
		// lo and hi bound the commands lost and the results lost.
		lo, hi int
	}{
		// No save before the kill: everything since the last graceful
		// stop is lost.
		{"autosave_interval 1800 (Mosquitto's default)", []string{"autosave_interval 1800"}, 0, n, n},
		// A save every 1-2 s: what was acknowledged since the last one is
		// lost (timing-dependent, only reported).
		{"autosave_interval 1, killed at once", nil, 0, 0, n},
		{"autosave_interval 1, killed after 3s", nil, 3 * time.Second, 0, 0},
		// A save after every change, but after the PUBACK of the publish
		// that made it: a publisher that awaits each PUBACK loses at most
		// its last message.
		{"autosave_on_changes true, autosave_interval 1", []string{"autosave_on_changes true"}, 0, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmdLost, resLost, got := kill9Loss(t, n, tc.pause, tc.conf...)
			t.Logf("kill -9 %v after the last PUBACK: lost %d of %d commands queued for the stopped agent and %d of %d results queued for the offline operator; %d lost results read back with result.get",
				tc.pause, cmdLost, n, resLost, n, got)
			for _, lost := range []int{cmdLost, resLost} {
				if lost < tc.lo || lost > tc.hi {
					t.Errorf("lost %d commands and %d results, want between %d and %d each", cmdLost, resLost, tc.lo, tc.hi)
					break
				}
			}
			if got != resLost {
				t.Errorf("result.get read back %d of the %d lost results", got, resLost)
			}
		})
	}
}

// kill9Loss runs one case of TestBrokerKill9Loss and returns how many
// commands and results were lost, and how many lost results the operator
// read back from the agent's journal with result.get.
func kill9Loss(t *testing.T, n int, pause time.Duration, conf ...string) (cmdLost, resLost, recovered int) {
	const host = "fault-loss"
	mq := harness.StartMosquitto(t, harness.WithMosquittoConfig(conf...))
	bin := harness.BuildAgent(t)
	op := harness.NewOperator(t, mq.URL())
	ledgerID := "ledger-" + harness.NewID()
	led := newLedger(t, mq.URL(), ledgerID)
	cfg := agentConfig(t, host, mq.URL())
	// One worker: commands finish in the order they were delivered, so the
	// result of a command sent last proves the earlier ones were handled.
	section(cfg, "exec")["max_concurrent"] = 1
	a := harness.StartAgent(t, bin, cfg)
	first := led.waitAgentOnline(t, a, 0)
	// A graceful restart saves the sessions of the agent and the ledger,
	// whatever the autosave settings.
	mq.Stop()
	mq.Start()
	op.WaitConnected(t, wait)
	led.waitOnline(t)
	led.waitStatus(t, host, 0, func(s protocol.Status) bool { return isOnline(s) && s.Session > first.Session }, wait)

	dir := t.TempDir()
	ran := filepath.Join(dir, "ran")
	// Results for an offline operator: the ledger leaves (its session
	// stays), the agent runs n commands, and an online clean-session
	// operator sees their results, so they reached the broker.
	led.close()
	var resIDs []string
	for range n {
		resIDs = append(resIDs, op.Send(marker(host, filepath.Join(dir, "first"))))
	}
	for _, id := range resIDs {
		if r := op.WaitFinal(t, id, host, wait); r.State != protocol.StateSucceeded {
			t.Fatalf("command %s: %s (%q), want succeeded", id, r.State, r.Error)
		}
	}
	// Commands for an offline agent.
	a.Stop()
	var cmds []protocol.Command
	for range n {
		cmds = append(cmds, marker(host, ran))
	}
	cmdIDs := send(op, cmds...)
	if pause > 0 {
		time.Sleep(pause) // the autosave's chance: the point of the case
	}
	mq.Kill()
	mq.Start()
	led = newLedger(t, mq.URL(), ledgerID)
	op.WaitConnected(t, wait)
	a.Start()
	// The fence: sent after the restart, handled after whatever survived.
	fence := send(op, marker(host, filepath.Join(dir, "fence")))
	if r := led.waitFinals(t, fence, wait)[fence[0]]; r.State != protocol.StateSucceeded || len(lines(t, filepath.Join(dir, "fence"))) != 1 {
		t.Fatalf("the fence command: %s (%q), want succeeded with its side effect", r.State, r.Error)
	}
	survived := lines(t, ran)
	var runIDs []string
	for _, id := range cmdIDs {
		switch survived[id] {
		case 0:
			cmdLost++
		case 1:
			runIDs = append(runIDs, id)
		default:
			t.Errorf("command %s ran %d times", id, survived[id])
		}
	}
	if total(survived) != len(runIDs) {
		t.Errorf("%d runs of %d surviving commands", total(survived), len(runIDs))
	}
	for id, r := range led.waitFinals(t, runIDs, wait) {
		if r.State != protocol.StateSucceeded {
			t.Errorf("command %s: %s (%q), want succeeded", id, r.State, r.Error)
		}
	}
	// The ledger's queue, if it survived, was delivered when it connected,
	// before the fence's result.
	for _, id := range resIDs {
		if len(led.finals(id)) == 0 {
			resLost++
			// The agent still has it: result.get reads its journal.
			g := op.WaitFinal(t, op.Send(protocol.Command{Kind: protocol.KindResultGet, Target: "host:" + host,
				Args: mustJSON(protocol.IDArgs{ID: id})}), host, wait)
			if g.State == protocol.StateSucceeded {
				recovered++
			}
		}
	}
	return cmdLost, resLost, recovered
}
