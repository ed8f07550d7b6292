package e2e

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
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

func TestPresenceAndWill(t *testing.T) {
	both(t, func(t *testing.T, e *env) {
		a := e.agent("pres-1", withGroups("web", "db"))
		birth := e.waitOnline(a)
		if birth.Session < 1 || birth.Version == "" || birth.OS == "" || birth.StartedAt == nil || !slices.Equal(birth.Groups, []string{"web", "db"}) {
			t.Fatalf("birth status incomplete: %+v", birth)
		}
		// kill -9: the broker publishes the will of that session.
		n := len(e.op.Statuses("pres-1"))
		a.Kill()
		will := e.op.WaitNextStatus(t, "pres-1", n, func(s protocol.Status) bool { return s.State == protocol.StatusOffline }, wait)
		if will.Reason != protocol.ReasonLost || will.Session != birth.Session {
			t.Fatalf("will %+v, want reason lost and session %d", will, birth.Session)
		}
		// A restart is a new session; a graceful stop says shutdown.
		a.Start()
		again := e.waitOnline(a)
		if again.Session <= birth.Session {
			t.Fatalf("session did not grow: %d then %d", birth.Session, again.Session)
		}
		n = len(e.op.Statuses("pres-1"))
		if code := a.Stop(); code != 0 {
			t.Fatalf("graceful stop exit status %d", code)
		}
		off := e.op.WaitNextStatus(t, "pres-1", n, func(s protocol.Status) bool { return s.State == protocol.StatusOffline }, wait)
		if off.Reason != protocol.ReasonShutdown || off.Session != again.Session {
			t.Fatalf("offline status %+v, want reason shutdown session %d", off, again.Session)
		}
	})
}

func TestEveryKind(t *testing.T) {
	both(t, func(t *testing.T, e *env) {
		e.agent("kinds-1")
		const h = "kinds-1"
		target := "host:" + h

		r := e.op.WaitFinal(t, e.op.Send(kind(target, protocol.KindPing, nil)), h, wait)
		expectState(t, r, protocol.StateSucceeded)
		var pd protocol.PingData
		if err := json.Unmarshal(r.Data, &pd); err != nil || pd.Version == "" || pd.UptimeMS < 0 {
			t.Fatalf("ping data %s (%v)", r.Data, err)
		}

		r = e.op.WaitFinal(t, e.op.Send(exec(h, "sh", "-c", "echo out; echo err >&2; exit 7")), h, wait)
		expectState(t, r, protocol.StateFailed)
		if r.ExitCode == nil || *r.ExitCode != 7 || r.Stdout != "out\n" || r.Stderr != "err\n" {
			t.Fatalf("exec result %+v", r)
		}
		cmd := kind(target, protocol.KindExec, protocol.ExecArgs{Argv: []string{"sh", "-c", `printf "%s:%s:" "$GREETING" "$(pwd)"; cat`}, Cwd: "/tmp", Env: map[string]string{"GREETING": "hej"}, Stdin: "from stdin"})
		r = e.op.WaitFinal(t, e.op.Send(cmd), h, wait)
		expectState(t, r, protocol.StateSucceeded)
		if r.Stdout != "hej:/tmp:from stdin" {
			t.Fatalf("exec with env/cwd/stdin: %q", r.Stdout)
		}
		r = e.op.WaitFinal(t, e.op.Send(exec(h, "/no/such/program")), h, wait)
		expectState(t, r, protocol.StateFailed)
		if r.ExitCode != nil || !strings.Contains(r.Error, "no/such/program") {
			t.Fatalf("not-found result: exit %v error %q", r.ExitCode, r.Error)
		}

		r = e.op.WaitFinal(t, e.op.Send(shell(target, "echo $((6*7)) | tr 4 X")), h, wait)
		expectState(t, r, protocol.StateSucceeded)
		if r.Stdout != "X2\n" || r.ExitCode == nil || *r.ExitCode != 0 || r.StartedAt == nil || r.FinishedAt == nil {
			t.Fatalf("shell result %+v", r)
		}
		bash := kind(target, protocol.KindShell, protocol.ShellArgs{Command: "echo ${BASH_VERSION:+bash}", Shell: "bash"})
		r = e.op.WaitFinal(t, e.op.Send(bash), h, wait)
		expectState(t, r, protocol.StateSucceeded)
		if r.Stdout != "bash\n" {
			t.Fatalf("shell bash: %q", r.Stdout)
		}

		sc := kind(target, protocol.KindScript, protocol.ScriptArgs{Content: "#!/bin/sh\necho \"script $1 $2\"\necho \"$0\" | grep -c '\\.sh$'\n", Args: []string{"a", "b c"}})
		r = e.op.WaitFinal(t, e.op.Send(sc), h, wait)
		expectState(t, r, protocol.StateSucceeded)
		if r.Stdout != "script a b c\n1\n" {
			t.Fatalf("script: %q", r.Stdout)
		}

		// result.get returns the stored final result of the script.
		g := e.op.WaitFinal(t, e.op.Send(kind(target, protocol.KindResultGet, protocol.IDArgs{ID: r.ID})), h, wait)
		expectState(t, g, protocol.StateSucceeded)
		var stored protocol.Result
		if err := json.Unmarshal(g.Data, &stored); err != nil || stored.ID != r.ID || stored.Stdout != r.Stdout {
			t.Fatalf("result.get data %s (%v)", g.Data, err)
		}
		g = e.op.WaitFinal(t, e.op.Send(kind(target, protocol.KindResultGet, protocol.IDArgs{ID: "never-seen"})), h, wait)
		expectState(t, g, protocol.StateFailed)

		// cancel of a running command kills its whole tree.
		dir := t.TempDir()
		long := e.op.Send(shell(target, fmt.Sprintf("sleep 300 & echo $! > %s/child; sleep 300", dir)))
		child, _ := strconv.Atoi(waitFile(t, filepath.Join(dir, "child")))
		c := e.op.WaitFinal(t, e.op.Send(kind(target, protocol.KindCancel, protocol.IDArgs{ID: long})), h, wait)
		expectState(t, c, protocol.StateSucceeded)
		if string(c.Data) != `{"canceled":true}` {
			t.Fatalf("cancel data %s", c.Data)
		}
		expectState(t, e.op.WaitFinal(t, long, h, wait), protocol.StateCanceled)
		waitGone(t, child)
		c = e.op.WaitFinal(t, e.op.Send(kind(target, protocol.KindCancel, protocol.IDArgs{ID: long})), h, wait)
		expectState(t, c, protocol.StateFailed)
		if string(c.Data) != `{"canceled":false}` {
			t.Fatalf("cancel of a finished command: %s", c.Data)
		}

		// Every command got received and finished audit records.
		e.op.WaitAudit(t, h, func(a protocol.Audit) bool {
			return a.ID == long && a.Event == protocol.EventFinished && a.State == protocol.StateCanceled
		}, wait)
	})
}

func TestTimeoutKillsTheWholeTree(t *testing.T) {
	e := newEnv(t, false)
	e.agent("tmo-1")
	dir := t.TempDir()
	cmd := shell("host:tmo-1", fmt.Sprintf("sh -c 'sleep 300 & echo $! > %s/grandchild; wait' & sleep 300", dir))
	cmd.TimeoutMS = 700
	id := e.op.Send(cmd)
	gc, _ := strconv.Atoi(waitFile(t, filepath.Join(dir, "grandchild")))
	r := e.op.WaitFinal(t, id, "tmo-1", wait)
	expectState(t, r, protocol.StateTimedOut)
	if r.ExitCode != nil {
		t.Fatalf("timed out command has exit code %d", *r.ExitCode)
	}
	if r.DurationMS < 600 || r.DurationMS > 5000 {
		t.Fatalf("duration %d ms for a 700 ms timeout", r.DurationMS)
	}
	waitGone(t, gc)
}

func TestOutputCaps(t *testing.T) {
	e := newEnv(t, false)
	e.agent("cap-1", withExec("max_output_bytes", 1024))
	r := e.op.WaitFinal(t, e.op.Send(shell("host:cap-1", "head -c 300000 /dev/zero | tr '\\0' a; head -c 100 /dev/zero | tr '\\0' b >&2")), "cap-1", wait)
	expectState(t, r, protocol.StateSucceeded)
	if len(r.Stdout) != 1024 || !r.StdoutTruncated {
		t.Fatalf("stdout %d bytes truncated=%v, want 1024 and true", len(r.Stdout), r.StdoutTruncated)
	}
	if len(r.Stderr) != 100 || r.StderrTruncated {
		t.Fatalf("stderr %d bytes truncated=%v, want 100 and false", len(r.Stderr), r.StderrTruncated)
	}
}

func TestConcurrencyLimit(t *testing.T) {
	e := newEnv(t, false)
	e.agent("conc-1", withExec("max_concurrent", 2))
	var ids []string
	for range 6 {
		ids = append(ids, e.op.Send(shell("host:conc-1", "sleep 0.3")))
	}
	for _, id := range ids {
		expectState(t, e.op.WaitFinal(t, id, "conc-1", wait), protocol.StateSucceeded)
	}
	// The agent publishes state changes in order: replay them.
	type ev struct {
		at    time.Time
		delta int
	}
	var evs []ev
	for _, id := range ids {
		for _, r := range e.op.Results(id) {
			switch {
			case r.State == protocol.StateRunning:
				evs = append(evs, ev{r.StartedAt.Time, +1})
			case protocol.IsFinal(r.State):
				evs = append(evs, ev{r.FinishedAt.Time, -1})
			}
		}
	}
	slices.SortFunc(evs, func(a, b ev) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta // a finish before a start at the same instant
	})
	running, peak := 0, 0
	for _, v := range evs {
		running += v.delta
		peak = max(peak, running)
	}
	if peak != 2 {
		t.Fatalf("peak concurrency %d, want 2 (max_concurrent)", peak)
	}
}

func TestStreaming(t *testing.T) {
	both(t, func(t *testing.T, e *env) {
		e.agent("str-1")
		cmd := shell("host:str-1", "for i in 1 2 3 4 5; do echo line$i; echo e$i >&2; sleep 0.05; done")
		cmd.Stream = true
		id := e.op.Send(cmd)
		r := e.op.WaitFinal(t, id, "str-1", wait)
		expectState(t, r, protocol.StateSucceeded)
		chunks := e.op.Chunks(id)
		var out, errs strings.Builder
		for i, c := range chunks {
			if c.Seq != uint64(i) {
				t.Fatalf("chunk %d has seq %d: gap or reorder", i, c.Seq)
			}
			if c.Stream == "stdout" {
				out.WriteString(c.Data)
			} else {
				errs.WriteString(c.Data)
			}
		}
		if out.String() != r.Stdout || errs.String() != r.Stderr || !strings.Contains(r.Stdout, "line5") {
			t.Fatalf("chunks do not add up to the result: %q/%q vs %q/%q", out.String(), errs.String(), r.Stdout, r.Stderr)
		}
		// A character split across two writes arrives whole.
		cmd = shell("host:str-1", `printf '\342\202'; sleep 0.2; printf '\254 ok\n'`)
		cmd.Stream = true
		id = e.op.Send(cmd)
		expectState(t, e.op.WaitFinal(t, id, "str-1", wait), protocol.StateSucceeded)
		out.Reset()
		for _, c := range e.op.Chunks(id) {
			out.WriteString(c.Data)
		}
		if out.String() != "€ ok\n" {
			t.Fatalf("split character: chunks %q", out.String())
		}
	})
}

func TestCommandsQueuedWhileAgentStopped(t *testing.T) {
	both(t, func(t *testing.T, e *env) {
		// One worker: commands run in the order the broker delivers them.
		a := e.agent("q-1", withExec("max_concurrent", 1))
		a.Stop()
		dir := t.TempDir()
		var ids []string
		for i := range 5 {
			ids = append(ids, e.op.Send(shell("host:q-1", fmt.Sprintf("echo %d >> %s/ran", i, dir))))
		}
		exp := shell("host:q-1", "echo expired >> "+dir+"/ran")
		exp.ExpiresAt = &protocol.Time{Time: time.Now().Add(300 * time.Millisecond)}
		expID := e.op.Send(exp)
		time.Sleep(400 * time.Millisecond) // let the command expire while the agent is down (the point of the test)
		a.Start()
		for _, id := range ids {
			expectState(t, e.op.WaitFinal(t, id, "q-1", wait), protocol.StateSucceeded)
		}
		expectState(t, e.op.WaitFinal(t, expID, "q-1", wait), protocol.StateExpired)
		if got := readLines(t, filepath.Join(dir, "ran")); !slices.Equal(got, []string{"0", "1", "2", "3", "4"}) {
			t.Fatalf("ran %v, want 0..4 once each in order", got)
		}
	})
}

func TestNoDoubleExecutionAcrossRestart(t *testing.T) {
	both(t, func(t *testing.T, e *env) {
		a := e.agent("dup-1")
		dir := t.TempDir()
		cmd := shell("host:dup-1", "echo ran >> "+dir+"/ran")
		cmd.V, cmd.ID, cmd.IssuedAt = protocol.Version, harness.NewID(), protocol.Now()
		payload, _ := json.Marshal(cmd)
		topic := e.op.Topics().HostCmd("dup-1")
		e.op.Track(cmd.ID)
		e.op.SendRaw(topic, payload)
		first := e.op.WaitFinal(t, cmd.ID, "dup-1", wait)
		expectState(t, first, protocol.StateSucceeded)
		// Replay the exact bytes, before and after a restart.
		e.op.SendRaw(topic, payload)
		e.op.WaitAudit(t, "dup-1", func(r protocol.Audit) bool { return r.ID == cmd.ID && r.Decision == protocol.DecisionDuplicate }, wait)
		a.Stop()
		a.Start()
		e.waitOnline(a)
		e.op.SendRaw(topic, payload)
		deadline := time.Now().Add(wait)
		for len(finalsOf(e.op.Results(cmd.ID))) < 3 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		fs := finalsOf(e.op.Results(cmd.ID))
		if len(fs) != 3 {
			t.Fatalf("final results %d, want 3 (the stored result re-published per receipt)", len(fs))
		}
		for _, r := range fs {
			if r.State != first.State || !r.TS.Equal(first.TS.Time) {
				t.Fatalf("replay got another final result: %+v", r)
			}
		}
		if got := readLines(t, filepath.Join(dir, "ran")); len(got) != 1 {
			t.Fatalf("command ran %d times", len(got))
		}
	})
}

func finalsOf(rs []protocol.Result) []protocol.Result {
	var out []protocol.Result
	for _, r := range rs {
		if protocol.IsFinal(r.State) {
			out = append(out, r)
		}
	}
	return out
}

func TestInterruptedCommandAfterCrash(t *testing.T) {
	e := newEnv(t, false)
	a := e.agent("crash-1")
	dir := t.TempDir()
	id := e.op.Send(shell("host:crash-1", fmt.Sprintf("echo started >> %s/ran; sleep 300 & echo $! > %s/child; wait", dir, dir)))
	child, _ := strconv.Atoi(waitFile(t, filepath.Join(dir, "child")))
	a.Kill()
	a.Start()
	r := e.op.WaitFinal(t, id, "crash-1", wait)
	expectState(t, r, protocol.StateFailed)
	if r.Error != protocol.ErrInterrupted {
		t.Fatalf("error %q, want interrupted", r.Error)
	}
	waitGone(t, child) // what was left of the tree was killed
	if got := readLines(t, filepath.Join(dir, "ran")); len(got) != 1 {
		t.Fatalf("interrupted command ran %d times", len(got))
	}
}

func TestTargeting(t *testing.T) {
	e := newEnv(t, false)
	e.agent("tg-a", withGroups("web"), withFacts(map[string]any{"env": "prod"}))
	e.agent("tg-b", withGroups("db"), withFacts(map[string]any{"env": "dev"}))
	ping := func(target string, filter *protocol.Filter) string {
		c := kind(target, protocol.KindPing, nil)
		c.Filter = filter
		return e.op.Send(c)
	}
	answered := func(id string, want ...string) {
		t.Helper()
		e.op.WaitFinalAll(t, id, want, wait)
		// Each other host either was not addressed or stayed silent: a
		// command to both that follows proves they have processed it.
		probe := ping("all", nil)
		e.op.WaitFinalAll(t, probe, []string{"tg-a", "tg-b"}, wait)
		var hosts []string
		for _, r := range finalsOf(e.op.Results(id)) {
			hosts = append(hosts, r.Host)
		}
		slices.Sort(hosts)
		if !slices.Equal(hosts, want) {
			t.Fatalf("answered by %v, want %v", hosts, want)
		}
	}
	answered(ping("group:web", nil), "tg-a")
	answered(ping("group:db", nil), "tg-b")
	answered(ping("all", nil), "tg-a", "tg-b")
	answered(ping("all", &protocol.Filter{Hosts: []string{"tg-b"}}), "tg-b")
	answered(ping("all", &protocol.Filter{Facts: map[string]string{"env": "prod"}}), "tg-a")
	answered(ping("all", &protocol.Filter{Groups: []string{"db", "x"}, OS: "linux"}), "tg-b")
	answered(ping("all", &protocol.Filter{OS: "windows"}))
	// A command signed for one target and replayed elsewhere: target
	// mismatch is rejected even for a bare command that names it.
	c := kind("host:tg-a", protocol.KindPing, nil)
	id := e.op.SendTo(e.op.Topics().AllCmd(), c)
	for _, h := range []string{"tg-a", "tg-b"} {
		r := e.op.WaitFinal(t, id, h, wait)
		expectState(t, r, protocol.StateRejected)
		if !strings.Contains(r.Error, "target mismatch") {
			t.Fatalf("%s: error %q", h, r.Error)
		}
	}
}

func TestMalformedPayloadsLeaveTheAgentServing(t *testing.T) {
	both(t, func(t *testing.T, e *env) {
		e.agent("mal-1")
		topic := e.op.Topics().HostCmd("mal-1")
		// Over max_payload_bytes but under the embedded broker's packet
		// limit (1 MiB), so the agent, not the broker, must deal with it.
		garbage := make([]byte, 900<<10)
		for i := range garbage {
			garbage[i] = byte(i*7 + i>>8)
		}
		bad := [][]byte{
			{},
			[]byte(`{`),
			[]byte(`{"v":1,"id":"m1","kind":"ping","issued_at":"2026-`),
			[]byte(`[1,2,3]`),
			[]byte(`"just a string"`),
			[]byte(`null`),
			[]byte(`{"v":1,"kind":"ping"}`),
			[]byte(`{"v":1,"id":42,"kind":"ping"}`),
			[]byte(`{"v":1,"id":"a/b","kind":"ping"}`),
			[]byte("{\"v\":1,\"id\":\"\xff\xfe\",\"kind\":\"ping\"}"),
			[]byte("\xff\xfe\xfd"),
			garbage,
			[]byte(`{"signed":"!!!","kid":"x","sig":"y"}`),
			[]byte(`{"signed":"bm90IGpzb24=","kid":"x","sig":"y"}`),
		}
		for _, p := range bad {
			e.op.SendRaw(topic, p)
		}
		// Wrong types with a readable id: rejected with the field named.
		typed := map[string]string{
			"w1": `{"v":"1","id":"w1","kind":"ping","issued_at":"2026-01-01T00:00:00Z"}`,
			"w2": `{"v":1,"id":"w2","kind":["ping"],"issued_at":"2026-01-01T00:00:00Z"}`,
			"w3": `{"v":1,"id":"w3","kind":"exec","args":{"argv":"ls"},"issued_at":"2026-01-01T00:00:00Z"}`,
			"w4": `{"v":1,"id":"w4","kind":"ping","issued_at":12}`,
			"w5": `{"v":1,"id":"w5","kind":"exec","args":[],"issued_at":"2026-01-01T00:00:00Z"}`,
			"w6": `{"v":1,"id":"w6","kind":"shell","args":{"command":"true"},"timeout_ms":-5,"issued_at":"2026-01-01T00:00:00Z"}`,
		}
		fields := map[string]string{"w1": "v", "w2": "kind", "w3": "args.argv", "w4": "issued_at", "w5": "args", "w6": "timeout_ms"}
		for id, p := range typed {
			e.op.Track(id)
			e.op.SendRaw(topic, []byte(p))
		}
		for id, field := range fields {
			r := e.op.WaitFinal(t, id, "mal-1", wait)
			expectState(t, r, protocol.StateRejected)
			if !strings.HasPrefix(r.Error, field+":") {
				t.Fatalf("%s: error %q does not name field %s", id, r.Error, field)
			}
		}
		r := e.op.WaitFinal(t, e.op.Send(kind("host:mal-1", protocol.KindPing, nil)), "mal-1", wait)
		expectState(t, r, protocol.StateSucceeded)
		n := 0
		for _, a := range e.op.Audits("mal-1") {
			if a.Decision == protocol.DecisionMalformed {
				n++
			}
		}
		if n != len(bad) {
			t.Fatalf("malformed audit records %d, want %d", n, len(bad))
		}
	})
}

// TestBrokerRestartMidRun: results produced while the broker is down wait
// in the outbox; commands sent after it is back run exactly once.
func TestBrokerRestartMidRun(t *testing.T) {
	both(t, func(t *testing.T, e *env) {
		e.agent("br-1")
		dir := t.TempDir()
		// A persistent-session subscriber proves the result reached the broker.
		sub := persistentSubscriber(t, e.broker.URL(), e.op.Topics().Result("br-1", "+"))
		id := e.op.Send(shell("host:br-1", fmt.Sprintf("echo run >> %s/ran; sleep 1.5; echo done; echo 1 > %s/finished", dir, dir)))
		waitFile(t, filepath.Join(dir, "ran"))
		e.broker.Stop()
		// The command finishes while the broker is down; the agent then
		// writes its result to the outbox.
		waitFile(t, filepath.Join(dir, "finished"))
		e.broker.Start()
		sub.reconnect(t)
		got := sub.waitFinal(t, id, wait)
		if got.State != protocol.StateSucceeded || got.Stdout != "done\n" {
			t.Fatalf("result after the outage: %+v", got)
		}
		e.op.WaitConnected(t, wait)
		var ids []string
		for i := range 10 {
			ids = append(ids, e.op.Send(shell("host:br-1", fmt.Sprintf("echo %d >> %s/after", i, dir))))
		}
		for _, id := range ids {
			expectState(t, e.op.WaitFinal(t, id, "br-1", wait), protocol.StateSucceeded)
		}
		if got := readLines(t, filepath.Join(dir, "after")); len(got) != 10 {
			t.Fatalf("after the restart %d commands ran, want 10 exactly once", len(got))
		}
		if got := readLines(t, filepath.Join(dir, "ran")); len(got) != 1 {
			t.Fatalf("the command that ran during the outage ran %d times", len(got))
		}
	})
}

// subscriber is a raw paho client with a persistent session.
type subscriber struct {
	c       mqtt.Client
	results chan protocol.Result
}

func persistentSubscriber(t *testing.T, url, filter string) *subscriber {
	s := &subscriber{results: make(chan protocol.Result, 1000)}
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID("sub-" + strings.ToLower(harness.NewID())).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	opts.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		var r protocol.Result
		if json.Unmarshal(m.Payload(), &r) == nil {
			s.results <- r
		}
	})
	s.c = mqtt.NewClient(opts)
	if tok := s.c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	if tok := s.c.Subscribe(filter, 1, nil); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { s.c.Disconnect(100) })
	return s
}

func (s *subscriber) reconnect(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		if tok := s.c.Connect(); tok.WaitTimeout(wait) && tok.Error() == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("subscriber could not reconnect")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *subscriber) waitFinal(t *testing.T, id string, d time.Duration) protocol.Result {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case r := <-s.results:
			if r.ID == id && protocol.IsFinal(r.State) {
				return r
			}
		case <-timer.C:
			t.Fatalf("no final result for %s", id)
		}
	}
}

func TestSignedCommands(t *testing.T) {
	e := newEnv(t, false)
	pub, priv, _ := ed25519.GenerateKey(nil)
	e.agent("sig-1", func(c map[string]any) {
		s := section(c, "security")
		s["require_signed"] = true
		s["trusted_keys"] = []map[string]any{{"id": "ops", "public_key": base64.StdEncoding.EncodeToString(pub), "kinds": []string{"ping"}}}
	})
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	r := e.op.WaitFinal(t, e.op.Send(shell("host:sig-1", "touch "+marker)), "sig-1", wait)
	expectState(t, r, protocol.StateRejected)
	if !strings.Contains(r.Error, "unsigned") {
		t.Fatalf("unsigned: %q", r.Error)
	}
	r = e.op.WaitFinal(t, e.op.SendSigned(kind("host:sig-1", protocol.KindPing, nil), "ops", priv), "sig-1", wait)
	expectState(t, r, protocol.StateSucceeded)
	r = e.op.WaitFinal(t, e.op.SendSigned(shell("host:sig-1", "touch "+marker), "ops", priv), "sig-1", wait)
	expectState(t, r, protocol.StateRejected)
	if !strings.Contains(r.Error, "may not sign") {
		t.Fatalf("kind not allowed for key: %q", r.Error)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("a rejected command ran")
	}
}

// TestBrokerFailover: the first broker URL is dead; the agent connects to
// the second, and moves back to the first when the second goes away.
func TestBrokerFailover(t *testing.T) {
	bin := harness.BuildAgent(t)
	a1 := harness.StartMosquitto(t)
	a2 := harness.StartMosquitto(t)
	a1.Stop()
	op2 := harness.NewOperator(t, a2.URL())
	op2.WatchStatus("fo-1")
	cfg := harness.DefaultConfig("fo-1", a1.URL(), filepath.Join(t.TempDir(), "data"))
	section(cfg, "broker")["urls"] = []string{a1.URL(), a2.URL()}
	section(cfg, "broker")["reconnect_min"] = "100ms"
	section(cfg, "broker")["reconnect_max"] = "500ms"
	ag := harness.StartAgent(t, bin, cfg)
	first := op2.WaitStatus(t, "fo-1", func(s protocol.Status) bool { return s.State == protocol.StatusOnline && s.PID == ag.PID() }, wait)
	expectState(t, op2.WaitFinal(t, op2.Send(kind("host:fo-1", protocol.KindPing, nil)), "fo-1", wait), protocol.StateSucceeded)
	a1.Start()
	op1 := harness.NewOperator(t, a1.URL())
	op1.WatchStatus("fo-1")
	a2.Stop()
	again := op1.WaitStatus(t, "fo-1", func(s protocol.Status) bool { return s.State == protocol.StatusOnline }, wait)
	if again.Session <= first.Session {
		t.Fatalf("session %d after failover, want > %d", again.Session, first.Session)
	}
	expectState(t, op1.WaitFinal(t, op1.Send(kind("host:fo-1", protocol.KindPing, nil)), "fo-1", wait), protocol.StateSucceeded)
}

// TestDevAndSend runs the README's first commands: `mqagent dev`, then
// `mqagent send` against it.
func TestDevAndSend(t *testing.T) {
	bin := harness.BuildAgent(t)
	port := freePort(t)
	dir := t.TempDir()
	dev := osexec.Command(bin, "dev", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--ws-listen", "", "--data-dir", dir, "--host-id", "dev-1")
	var out strings.Builder
	dev.Stderr, dev.Stdout = &syncWriter{w: &out}, &syncWriter{w: &out}
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dev.Process.Kill(); _ = dev.Wait() })
	url := fmt.Sprintf("tcp://127.0.0.1:%d", port)
	waitPort(t, port)
	op := harness.NewOperator(t, url)
	op.WatchStatus("dev-1")
	op.WaitStatus(t, "dev-1", func(s protocol.Status) bool { return s.State == protocol.StatusOnline }, wait)
	send := osexec.Command(bin, "send", "--broker", url, "--host", "dev-1", "--", "echo", "hello")
	got, err := send.CombinedOutput()
	if err != nil || !strings.Contains(string(got), "hello") || !strings.Contains(string(got), "1 succeeded") {
		t.Fatalf("send: %v\n%s", err, got)
	}
	send = osexec.Command(bin, "send", "--broker", url, "--all", "--shell", "exit 4")
	got, err = send.CombinedOutput()
	if err == nil || !strings.Contains(string(got), "exit=4") {
		t.Fatalf("send of a failing command: err %v\n%s", err, got)
	}
	if err := dev.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := dev.Wait(); err != nil {
		t.Fatalf("dev did not stop cleanly: %v\n%s", err, out.String())
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitPort waits until something accepts connections on the port.
func waitPort(t *testing.T, port int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing listens on port %d", port)
}

// TestAuditLog: the local audit log records every command, chains its
// lines, and `mqagent audit verify` names the first tampered line.
func TestAuditLog(t *testing.T) {
	e := newEnv(t, false)
	a := e.agent("aud-1")
	id := e.op.Send(shell("host:aud-1", "echo secret-free output"))
	expectState(t, e.op.WaitFinal(t, id, "aud-1", wait), protocol.StateSucceeded)
	fin := e.op.WaitAudit(t, "aud-1", func(r protocol.Audit) bool { return r.ID == id && r.Event == protocol.EventFinished }, wait)
	if fin.StdoutBytes != len("secret-free output\n") || len(fin.StdoutSHA256) != 64 || fin.Summary != "echo secret-free output" || fin.Prev == "" {
		t.Fatalf("finished audit record %+v", fin)
	}
	env := kind("host:aud-1", protocol.KindExec, protocol.ExecArgs{Argv: []string{"true"}, Env: map[string]string{"TOKEN": "hunter2"}})
	expectState(t, e.op.WaitFinal(t, e.op.Send(env), "aud-1", wait), protocol.StateSucceeded)
	a.Stop()
	log := filepath.Join(a.DataDir(), "audit.log")
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "hunter2") {
		t.Fatal("an env value reached the audit log")
	}
	if st, _ := os.Stat(log); st.Mode().Perm() != 0o600 {
		t.Fatalf("audit log mode %v", st.Mode().Perm())
	}
	out, err := osexec.Command(e.bin, "audit", "verify", log).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "chain intact") {
		t.Fatalf("verify of an intact log: %v %s", err, out)
	}
	lines := strings.SplitAfter(string(b), "\n")
	lines[1] = strings.Replace(lines[1], `"host":"aud-1"`, `"host":"aud-2"`, 1)
	if err := os.WriteFile(log, []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = osexec.Command(e.bin, "audit", "verify", log).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "line 3") {
		t.Fatalf("verify of an edited log: %v %s", err, out)
	}
}

// TestRemoteStopAndRestart: agent.stop and agent.restart publish their
// final result and the offline status with the reason before going;
// commands sent during the restart are handled once after it.
func TestRemoteStopAndRestart(t *testing.T) {
	e := newEnv(t, false)
	a := e.agent("ctl-1")
	before := e.waitOnline(a)
	n := len(e.op.Statuses("ctl-1"))
	id := e.op.Send(kind("host:ctl-1", protocol.KindAgentRestart, nil))
	expectState(t, e.op.WaitFinal(t, id, "ctl-1", wait), protocol.StateSucceeded)
	off := e.op.WaitNextStatus(t, "ctl-1", n, func(s protocol.Status) bool { return s.State == protocol.StatusOffline }, wait)
	if off.Reason != protocol.ReasonRestart || off.Session != before.Session {
		t.Fatalf("offline status %+v, want reason restart", off)
	}
	// Sent while the agent restarts: queued by the broker, run once after.
	dir := t.TempDir()
	during := e.op.Send(shell("host:ctl-1", "echo x >> "+dir+"/ran"))
	after := e.op.WaitNextStatus(t, "ctl-1", n, func(s protocol.Status) bool { return s.State == protocol.StatusOnline }, wait)
	if after.Session <= before.Session || after.PID != before.PID {
		t.Fatalf("after restart %+v (before %+v): want a new session, same pid (exec in place)", after, before)
	}
	expectState(t, e.op.WaitFinal(t, during, "ctl-1", wait), protocol.StateSucceeded)
	if got := readLines(t, filepath.Join(dir, "ran")); len(got) != 1 {
		t.Fatalf("command sent during the restart ran %d times", len(got))
	}
	if rs := finalsOf(e.op.Results(id)); len(rs) != 1 {
		t.Fatalf("agent.restart has %d final results, want 1 (not run again after the restart)", len(rs))
	}

	n = len(e.op.Statuses("ctl-1"))
	id = e.op.Send(kind("host:ctl-1", protocol.KindAgentStop, nil))
	expectState(t, e.op.WaitFinal(t, id, "ctl-1", wait), protocol.StateSucceeded)
	off = e.op.WaitNextStatus(t, "ctl-1", n, func(s protocol.Status) bool { return s.State == protocol.StatusOffline }, wait)
	if off.Reason != protocol.ReasonShutdown {
		t.Fatalf("offline status %+v, want reason shutdown", off)
	}
	code, ok := a.Wait(wait)
	if !ok || code != 0 {
		t.Fatalf("agent.stop: exited %v with %d, want 0", ok, code)
	}
}

// TestLocalStatus: `mqagent status` shows the running agent's state.
func TestLocalStatus(t *testing.T) {
	e := newEnv(t, false)
	a := e.agent("st-1")
	var out []byte
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) { // the status file is written at start and every 5 s
		var err error
		out, err = osexec.Command(e.bin, "status", "--config", a.ConfigPath(), "-o", "json").Output()
		if err == nil && strings.Contains(string(out), `"connected": true`) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var s struct {
		Host, State, Version string
		PID                  int
		Connected            bool
		Session              uint64
	}
	if err := json.Unmarshal(out, &s); err != nil || s.Host != "st-1" || s.State != "running" || !s.Connected || s.PID != a.PID() || s.Session < 1 {
		t.Fatalf("status %s (%v)", out, err)
	}
	a.Stop()
	cmd := osexec.Command(e.bin, "status", "--config", a.ConfigPath())
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 3 || !strings.Contains(string(out), "stopped") {
		t.Fatalf("status of a stopped agent: %v %s", err, out)
	}
}
