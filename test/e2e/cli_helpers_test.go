package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// cliFleet is a Mosquitto with several real agents of different groups
// and facts, and the mqagent binary used as the operator's CLI.
//
//	db-1   group db   env=prod  marker
//	db-2   group db   env=prod
//	web-1  group web  env=prod  marker
//	web-2  group web  env=dev
//
// "marker" is a file {data_dir}/marker: markerScript succeeds only where it
// exists.
type cliFleet struct {
	*env
	agents   map[string]*harness.Agent
	stateDir string // rollout states
}

// markerScript succeeds on a host whose data directory holds "marker":
// the agent runs scripts from a directory under {data_dir}, found by
// walking up to the directory that holds state.db.
const markerScript = `#!/bin/sh
d=$(dirname "$0")
while [ "$d" != / ] && [ ! -e "$d/state.db" ]; do d=$(dirname "$d"); done
test -f "$d/marker"
`

type cliHost struct {
	id     string
	groups []string
	env    string
	marker bool
}

var cliHosts = []cliHost{
	{"db-1", []string{"db"}, "prod", true},
	{"db-2", []string{"db"}, "prod", false},
	{"web-1", []string{"web"}, "prod", true},
	{"web-2", []string{"web"}, "dev", false},
}

func newCLIFleet(t *testing.T, mods ...func(map[string]any)) *cliFleet {
	t.Helper()
	f := &cliFleet{env: newEnv(t, false), agents: map[string]*harness.Agent{}, stateDir: t.TempDir()}
	for _, h := range cliHosts {
		data := filepath.Join(t.TempDir(), "data")
		if err := os.MkdirAll(data, 0o700); err != nil {
			t.Fatal(err)
		}
		if h.marker {
			f.mark(data)
		}
		f.env.op.WatchStatus(h.id)
		ms := append([]func(map[string]any){withGroups(h.groups...), withFacts(map[string]any{"env": h.env}),
			func(c map[string]any) { c["data_dir"] = data }}, mods...)
		f.agents[h.id] = harness.StartAgent(t, f.bin, f.config(h.id, ms...))
	}
	for _, h := range cliHosts {
		f.waitOnline(f.agents[h.id])
	}
	// The inventory (facts) is retained before the birth status; wait
	// until the broker has every host's, as the CLI will read it.
	for _, h := range cliHosts {
		f.op.Watch(f.op.Topics().Inventory(h.id))
		f.op.WaitMessage(t, f.op.Topics().Inventory(h.id), func(m harness.Message) bool { return len(m.Payload) > 0 }, wait)
	}
	return f
}

func (f *cliFleet) mark(dataDir string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(dataDir, "marker"), nil, 0o600); err != nil {
		f.t.Fatal(err)
	}
}

// cliResult is one run of the CLI.
type cliResult struct {
	stdout, stderr string
	code           int
}

// cli runs the mqagent binary with args against the fleet's broker (given
// through MQAGENT_BROKER, as an operator's shell would) and returns its
// output and exit status. It fails the test if the CLI runs for more than
// 60 s.
func (f *cliFleet) cli(args ...string) cliResult {
	f.t.Helper()
	return runCLI(f.t, f.bin, []string{"MQAGENT_BROKER=" + f.broker.URL(), "MQAGENT_STATE_DIR=" + f.stateDir}, args...)
}

func runCLI(t *testing.T, bin string, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := osexec.CommandContext(ctx, bin, args...)
	cmd.Env = append(cliEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := cliResult{stdout: out.String(), stderr: errb.String()}
	var ee *osexec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("mqagent %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("mqagent %s: still running after 60 s\nstderr: %s", strings.Join(args, " "), r.stderr)
	}
	return r
}

// cliEnv is the test's environment without MQAGENT_ variables (a
// developer's own settings must not leak into the tests).
func cliEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MQAGENT_") {
			env = append(env, kv)
		}
	}
	return append(env, "GORACE=atexit_sleep_ms=0")
}

// must fails the test unless the CLI exited with code.
func (r cliResult) must(t *testing.T, code int, what string) cliResult {
	t.Helper()
	if r.code != code {
		t.Fatalf("%s: exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", what, r.code, code, r.stdout, r.stderr)
	}
	return r
}

// runDoc is the JSON a run command prints with -o json.
type runDoc struct {
	OK        bool     `json:"ok"`
	ID        string   `json:"id"`
	Kind      string   `json:"kind"`
	Target    string   `json:"target"`
	Expected  int      `json:"expected"`
	Succeeded []string `json:"succeeded"`
	Failed    []string `json:"failed"`
	TimedOut  []string `json:"timed_out"`
	NoAnswer  []string `json:"no_answer"`
	Offline   []string `json:"offline"`
	Hosts     []struct {
		Host     string           `json:"host"`
		Outcome  string           `json:"outcome"`
		State    string           `json:"state"`
		Expected bool             `json:"expected"`
		Result   *protocol.Result `json:"result"`
	} `json:"hosts"`
}

func parseJSON[T any](t *testing.T, r cliResult) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("output is not the JSON expected: %v\nstdout:\n%s\nstderr:\n%s", err, r.stdout, r.stderr)
	}
	return v
}

// result finds a host's result in a run document.
func (d runDoc) result(host string) *protocol.Result {
	for _, h := range d.Hosts {
		if h.Host == host {
			return h.Result
		}
	}
	return nil
}
