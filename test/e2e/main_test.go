// Package e2e runs the real mqagent binary against a real Mosquitto (and
// the embedded broker, `mqagent broker`) with real processes and files:
// presence and will, every command kind, limits, targeting, restarts and
// broker outages. Tests that need Mosquitto skip without it, except under
// CI=true, where they fail.
package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

const wait = 15 * time.Second

// env is one test's broker, agent binary and operator.
type env struct {
	t      *testing.T
	bin    string
	broker harness.TestBroker
	op     *harness.Operator
}

// newEnv starts a Mosquitto (or, with embedded, `mqagent broker`) and an
// operator connected to it.
func newEnv(t *testing.T, embedded bool) *env {
	t.Helper()
	bin := harness.BuildAgent(t)
	var b harness.TestBroker
	if embedded {
		b = harness.EmbeddedBroker(t, bin)
	} else {
		b = harness.StartMosquitto(t)
	}
	return &env{t: t, bin: bin, broker: b, op: harness.NewOperator(t, b.URL())}
}

// both runs a test against Mosquitto and the embedded broker.
func both(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("mosquitto", func(t *testing.T) { fn(t, newEnv(t, false)) })
	t.Run("embedded", func(t *testing.T) { fn(t, newEnv(t, true)) })
}

// config is the harness's default agent config for host in a fresh data
// directory, changed by mods.
func (e *env) config(host string, mods ...func(map[string]any)) map[string]any {
	cfg := harness.DefaultConfig(host, e.broker.URL(), filepath.Join(e.t.TempDir(), "data"))
	for _, m := range mods {
		m(cfg)
	}
	return cfg
}

// agent starts an agent and waits until it is online.
func (e *env) agent(host string, mods ...func(map[string]any)) *harness.Agent {
	e.t.Helper()
	e.op.WatchStatus(host)
	e.op.WatchAudit(host)
	a := harness.StartAgent(e.t, e.bin, e.config(host, mods...))
	e.waitOnline(a)
	return a
}

// waitOnline waits for an online status of the agent's current process.
func (e *env) waitOnline(a *harness.Agent) protocol.Status {
	e.t.Helper()
	pid := a.PID()
	return e.op.WaitStatus(e.t, a.HostID(), func(s protocol.Status) bool {
		return s.State == protocol.StatusOnline && s.PID == pid
	}, wait)
}

func section(cfg map[string]any, name string) map[string]any { return cfg[name].(map[string]any) }

func withGroups(groups ...string) func(map[string]any) {
	return func(c map[string]any) { c["groups"] = groups }
}

func withExec(key string, v any) func(map[string]any) {
	return func(c map[string]any) { section(c, "exec")[key] = v }
}

func withFacts(facts map[string]any) func(map[string]any) {
	return func(c map[string]any) { c["facts"] = facts }
}

func exec(host string, argv ...string) protocol.Command {
	args, _ := json.Marshal(protocol.ExecArgs{Argv: argv})
	return protocol.Command{Kind: protocol.KindExec, Target: "host:" + host, Args: args}
}

func shell(target, command string) protocol.Command {
	args, _ := json.Marshal(protocol.ShellArgs{Command: command})
	return protocol.Command{Kind: protocol.KindShell, Target: target, Args: args}
}

func kind(target, k string, args any) protocol.Command {
	c := protocol.Command{Kind: k, Target: target}
	if args != nil {
		c.Args, _ = json.Marshal(args)
	}
	return c
}

func expectState(t *testing.T, r protocol.Result, state string) {
	t.Helper()
	if r.State != state {
		t.Fatalf("command %s on %s: state %s (error %q, stdout %q, stderr %q), want %s", r.ID, r.Host, r.State, r.Error, r.Stdout, r.Stderr, state)
	}
}

// readLines reads a file of lines, "" lines dropped; a missing file is empty.
func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// waitGone waits until pid no longer exists (or is a zombie).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("process %d still alive", pid)
}

// waitFile waits until path exists with content and returns it.
func waitFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			return strings.TrimSpace(string(b))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s not written", path)
	return ""
}
