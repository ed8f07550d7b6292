package harness

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// DefaultConfig is an agent configuration for tests (keys as in the
// configuration section of docs/PROTOCOL.md): development security
// (unsigned commands allowed), debug logging to stderr, a short metrics
// interval and a 30 s default command timeout so a hung command cannot
// outlive a test. Nested sections are map[string]any and lists []string, so
// a test can change one key, e.g.
//
//	cfg["security"].(map[string]any)["require_signed"] = true
func DefaultConfig(hostID, brokerURL, dataDir string) map[string]any {
	return map[string]any{
		"host_id":      hostID,
		"data_dir":     dataDir,
		"topic_prefix": protocol.DefaultPrefix,
		"broker": map[string]any{
			"urls": []string{brokerURL},
		},
		"groups": []string{},
		"facts":  map[string]any{},
		"metrics": map[string]any{
			"interval": "2s",
			"qos":      0,
			"retain":   false,
		},
		"inventory": map[string]any{
			"interval": "1h",
		},
		"exec": map[string]any{
			"max_concurrent":   4,
			"max_queue":        64,
			"default_timeout":  "30s",
			"max_output_bytes": 1 << 20,
		},
		"security": map[string]any{
			"require_signed":    false,
			"allowed_kinds":     []string{"*"},
			"max_payload_bytes": 262144,
			"default_ttl":       "1h",
			"max_clock_skew":    "5m",
		},
		"log": map[string]any{
			"level": "debug",
			"file":  "",
		},
	}
}

// Agent is an agent process (`mqagent run --config FILE`) run for one
// test. Its config file and log live in a directory of the test; its
// output (stdout and stderr, every run appended) goes to the log. Methods
// report problems on the test that started it and must be called from its
// goroutine (or from a cleanup).
type Agent struct {
	t       testing.TB
	bin     string
	dir     string
	cfgPath string
	logPath string
	dataDir string
	hostID  string

	mu   sync.Mutex
	proc *process
}

// StartAgent writes cfg as YAML and starts `bin run --config FILE`. When
// cfg has no data_dir, a temporary directory of the test is used. The
// test's cleanup kills the agent if it is still running, fails the test if
// the agent reported a data race (MQAGENT_TEST_RACE=1 builds), and shows
// the end of its log when the test failed. StartAgent does not wait for the agent
// to connect: wait for its online status with an Operator.
func StartAgent(t testing.TB, bin string, cfg map[string]any) *Agent {
	t.Helper()
	dir := t.TempDir()
	a := &Agent{
		t:       t,
		bin:     bin,
		dir:     dir,
		cfgPath: filepath.Join(dir, "agent.yaml"),
		logPath: filepath.Join(dir, "agent.log"),
	}
	t.Cleanup(a.cleanup)
	a.WriteConfig(cfg)
	a.Start()
	return a
}

// WriteConfig replaces the agent's config file; the next Start or Restart
// uses it. A missing data_dir is filled in as in StartAgent; cfg itself is
// not modified.
func (a *Agent) WriteConfig(cfg map[string]any) {
	a.t.Helper()
	cfg = maps.Clone(cfg)
	if cfg == nil {
		cfg = map[string]any{}
	}
	dataDir, _ := cfg["data_dir"].(string)
	if dataDir == "" {
		dataDir = filepath.Join(a.dir, "data")
		cfg["data_dir"] = dataDir
	}
	hostID, _ := cfg["host_id"].(string)
	b, err := yaml.Marshal(cfg)
	if err != nil {
		a.t.Fatalf("agent config: %v", err)
	}
	if err := os.WriteFile(a.cfgPath, b, 0o600); err != nil {
		a.t.Fatalf("agent config: %v", err)
	}
	a.mu.Lock()
	a.dataDir, a.hostID = dataDir, hostID
	a.mu.Unlock()
}

// Start starts the agent again (after Stop, Kill or its own exit) with the
// current config file.
func (a *Agent) Start() {
	a.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc != nil && !a.proc.exited() {
		a.t.Fatalf("agent %s: start: already running (pid %d)", a.hostID, a.proc.pid())
	}
	p, err := startProcess(a.logPath, a.bin, "run", "--config", a.cfgPath)
	if err != nil {
		a.t.Fatalf("agent %s: %v", a.hostID, err)
	}
	a.proc = p
}

// Stop sends SIGTERM and waits for the agent to exit, killing it if it
// takes longer than 20 s (which fails the test). It returns the exit code:
// 0 for a graceful stop, -1 when the process ended by a signal, and the
// last exit code when the agent was not running.
func (a *Agent) Stop() int {
	a.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc == nil {
		return -1
	}
	if a.proc.exited() {
		return a.proc.exitCode()
	}
	appendLog(a.logPath, "SIGTERM")
	code, err := a.proc.stop(stopTimeout)
	if err != nil {
		a.t.Errorf("agent %s: stop: %v\nlog:\n%s", a.hostID, err, a.Log())
	}
	return code
}

// Kill ends the agent with SIGKILL and waits until it is gone. Processes
// the agent started are not killed.
func (a *Agent) Kill() {
	a.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc == nil || a.proc.exited() {
		return
	}
	appendLog(a.logPath, "SIGKILL")
	if err := a.proc.kill(); err != nil {
		a.t.Errorf("agent %s: kill: %v", a.hostID, err)
	}
}

// Restart is Stop then Start; it returns the exit code of the stop.
func (a *Agent) Restart() int {
	a.t.Helper()
	code := a.Stop()
	a.Start()
	return code
}

// Wait waits up to timeout for the agent to exit by itself (after
// agent.stop, for example). It returns the exit code and whether it exited.
func (a *Agent) Wait(timeout time.Duration) (int, bool) {
	a.mu.Lock()
	p := a.proc
	a.mu.Unlock()
	if p == nil {
		return -1, true
	}
	return p.wait(timeout)
}

// Running reports whether the process the harness started is still
// running. After agent.restart or agent.update the agent may continue in a
// new process the harness did not start: check its status instead.
func (a *Agent) Running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.proc != nil && !a.proc.exited()
}

// PID is the process id of the last process the harness started (it may
// have exited).
func (a *Agent) PID() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc == nil {
		return 0
	}
	return a.proc.pid()
}

// Log is the agent's whole output so far, every run included.
func (a *Agent) Log() string {
	b, err := os.ReadFile(a.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// LogTail is the end of the agent's output, for failure messages.
func (a *Agent) LogTail() string { return logTail(a.logPath) }

// LogPath is the file that receives the agent's output.
func (a *Agent) LogPath() string { return a.logPath }

// DataDir is the agent's data_dir.
func (a *Agent) DataDir() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.dataDir
}

// HostID is the host_id of the config ("" when the config leaves it to the
// agent).
func (a *Agent) HostID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hostID
}

// ConfigPath is the agent's config file.
func (a *Agent) ConfigPath() string { return a.cfgPath }

// cleanup kills the agent if it still runs, fails the test when the agent
// (built with -race) reported a data race, and shows its log when the test
// failed.
func (a *Agent) cleanup() {
	a.Kill()
	if strings.Contains(a.Log(), raceReport) {
		a.t.Errorf("agent %s: data race reported in %s", a.HostID(), a.logPath)
	}
	if a.t.Failed() {
		a.t.Logf("agent %s log (%s):\n%s", a.HostID(), a.logPath, a.LogTail())
	}
}
