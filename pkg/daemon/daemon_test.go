package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/mqagent/mqagent/pkg/broker"
	"github.com/mqagent/mqagent/pkg/config"
	"github.com/mqagent/mqagent/pkg/daemon"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// waitTimeout bounds every wait in these tests.
const waitTimeout = 15 * time.Second

const version = "9.9.9-test"

func TestMain(m *testing.M) {
	// paho's Disconnect leaves a goroutine that waits out its quiesce time.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/eclipse/paho.mqtt.golang.(*client).Disconnect.func1"))
}

var topics = protocol.Topics{Prefix: protocol.DefaultPrefix}

// resultsAll matches every result of host d-1. (Not ".../results/+/#":
// mochi does not let "+/#" match the parent level, so that filter misses
// every result.)
const resultsAll = protocol.DefaultPrefix + "/hosts/d-1/results/#"

// syncBuffer is a log sink written by the agent's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startBroker(t *testing.T) string {
	t.Helper()
	b, err := broker.New(broker.Options{TCPAddr: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return "tcp://" + b.TCPAddr()
}

func testConfig(t *testing.T, url string) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.HostID = "d-1"
	cfg.DataDir = t.TempDir()
	cfg.Broker.URLs = []string{url}
	cfg.Dev = true
	return cfg
}

// agent is one daemon.RunUntil in a goroutine.
type agent struct {
	cancel context.CancelFunc
	done   chan struct{}
	reason string
	err    error
	log    *syncBuffer
}

func startAgent(t *testing.T, o daemon.Options) *agent {
	t.Helper()
	a := &agent{done: make(chan struct{}), log: &syncBuffer{}}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(a.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if o.Version == "" {
		o.Version = version
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() {
		defer close(a.done)
		a.reason, a.err = daemon.RunUntil(ctx, o)
	}()
	t.Cleanup(func() {
		cancel()
		<-a.done
		if t.Failed() {
			t.Logf("agent log:\n%s", a.log.String())
		}
	})
	return a
}

// wait waits for Run to return and gives its result.
func (a *agent) wait(t *testing.T) (string, error) {
	t.Helper()
	select {
	case <-a.done:
		return a.reason, a.err
	case <-time.After(waitTimeout):
		t.Fatalf("the agent did not stop within %v", waitTimeout)
		return "", nil
	}
}

// stop cancels the agent's context and waits for Run to return.
func (a *agent) stop(t *testing.T) (string, error) {
	t.Helper()
	a.cancel()
	return a.wait(t)
}

// watcher is an operator-side raw paho client that records what it gets.
type watcher struct {
	paho.Client
	msgs chan paho.Message
}

func newWatcher(t *testing.T, url, id string, filters ...string) *watcher {
	t.Helper()
	w := &watcher{msgs: make(chan paho.Message, 256)}
	w.Client = paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { w.msgs <- m }))
	waitTok(t, "connect "+id, w.Connect())
	t.Cleanup(func() { w.Disconnect(50) })
	for _, f := range filters {
		waitTok(t, "subscribe "+f, w.Subscribe(f, 1, nil))
	}
	return w
}

func waitTok(t *testing.T, what string, tok paho.Token) {
	t.Helper()
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("%s: timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// status waits for a status on the host's status topic that satisfies ok.
func (w *watcher) status(t *testing.T, what string, ok func(protocol.Status) bool) protocol.Status {
	t.Helper()
	deadline := time.After(waitTimeout)
	var seen []string
	for {
		select {
		case m := <-w.msgs:
			if !strings.HasSuffix(m.Topic(), "/status") {
				continue
			}
			var s protocol.Status
			if err := json.Unmarshal(m.Payload(), &s); err != nil {
				t.Fatalf("status %q: %v", m.Payload(), err)
			}
			if ok(s) {
				return s
			}
			seen = append(seen, string(m.Payload()))
		case <-deadline:
			t.Fatalf("%s: no such status within %v; saw %v", what, waitTimeout, seen)
		}
	}
}

// retainedStatus reads the retained status of host with a new connection.
func retainedStatus(t *testing.T, url, host string) protocol.Status {
	t.Helper()
	w := newWatcher(t, url, "retained-"+protocol.Now().Format("150405.000000"), topics.Status(host))
	select {
	case m := <-w.msgs:
		if !m.Retained() {
			t.Fatalf("status %s is not retained", m.Payload())
		}
		var s protocol.Status
		if err := json.Unmarshal(m.Payload(), &s); err != nil {
			t.Fatal(err)
		}
		return s
	case <-time.After(waitTimeout):
		t.Fatalf("no retained status for %s", host)
		return protocol.Status{}
	}
}

// final waits for the final result of id.
func (w *watcher) final(t *testing.T, id string) protocol.Result {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case m := <-w.msgs:
			if m.Topic() != topics.Result("d-1", id) {
				continue
			}
			var r protocol.Result
			if err := json.Unmarshal(m.Payload(), &r); err != nil {
				t.Fatalf("result %q: %v", m.Payload(), err)
			}
			if protocol.IsFinal(r.State) {
				return r
			}
		case <-deadline:
			t.Fatalf("no final result for %s within %v", id, waitTimeout)
		}
	}
}

func (w *watcher) send(t *testing.T, host, id, kind, args string) {
	t.Helper()
	cmd := fmt.Sprintf(`{"v":1,"id":%q,"kind":%q,"target":"host:%s","issued_at":%q`, id, kind, host, protocol.Now().Format(protocol.TimeFormat))
	if args != "" {
		cmd += `,"args":` + args
	}
	cmd += "}"
	waitTok(t, "send "+id, w.Publish(topics.HostCmd(host), 1, false, cmd))
}

func TestRunOnlinePingShutdownRestart(t *testing.T) {
	url := startBroker(t)
	cfg := testConfig(t, url)
	// A damaged subscriptions file from an earlier run is tolerated.
	subsPath := filepath.Join(cfg.DataDir, daemon.SubscriptionsFile)
	if err := os.WriteFile(subsPath, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := newWatcher(t, url, "op-1", topics.Status("d-1"), resultsAll)

	a := startAgent(t, daemon.Options{Config: cfg})
	on := w.status(t, "online, session 1", func(s protocol.Status) bool { return s.State == protocol.StatusOnline })
	if on.Session != 1 || on.PID != os.Getpid() || on.Version != version || on.Host != "d-1" ||
		on.OS != runtime.GOOS || on.Arch != runtime.GOARCH || on.StartedAt == nil || on.V != protocol.Version {
		t.Fatalf("online status %+v", on)
	}
	if !strings.Contains(a.log.String(), "ignoring unreadable subscriptions file") {
		t.Errorf("no warning about the damaged subscriptions file:\n%s", a.log.String())
	}

	w.send(t, "d-1", "ping-1", protocol.KindPing, "")
	r := w.final(t, "ping-1")
	if r.State != protocol.StateSucceeded || r.Host != "d-1" || r.Kind != protocol.KindPing {
		t.Fatalf("ping result %+v", r)
	}
	var pd protocol.PingData
	if err := json.Unmarshal(r.Data, &pd); err != nil || pd.Version != version || pd.UptimeMS < 0 {
		t.Fatalf("ping data %s (%v)", r.Data, err)
	}

	// An exec runs a real process (the handlers are wired in): this test
	// binary, running no test.
	argv, _ := json.Marshal([]string{os.Args[0], "-test.run=^$"})
	w.send(t, "d-1", "exec-1", protocol.KindExec, `{"argv":`+string(argv)+`}`)
	if r := w.final(t, "exec-1"); r.State != protocol.StateSucceeded || !strings.Contains(r.Stdout, "PASS") || r.ExitCode == nil || *r.ExitCode != 0 {
		t.Fatalf("exec result %+v", r)
	}

	// The subscriptions file was rewritten with this session's topics.
	b, err := os.ReadFile(subsPath)
	if err != nil {
		t.Fatal(err)
	}
	var subs []string
	if err := json.Unmarshal(b, &subs); err != nil {
		t.Fatalf("subscriptions file %q: %v", b, err)
	}
	if !slices.Contains(subs, topics.HostCmd("d-1")) || !slices.Contains(subs, topics.AllCmd()) {
		t.Fatalf("subscriptions file lists %v", subs)
	}

	start := time.Now()
	reason, err := a.stop(t)
	if err != nil || reason != protocol.ReasonShutdown {
		t.Fatalf("RunUntil = %q, %v; want shutdown, nil", reason, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stopping an idle agent took %v", d)
	}
	off := retainedStatus(t, url, "d-1")
	if off.State != protocol.StatusOffline || off.Reason != protocol.ReasonShutdown || off.Session != 1 || off.Host != "d-1" {
		t.Fatalf("retained status after stop %+v, want offline / shutdown / session 1", off)
	}
	// The audit log has the commands.
	audit, err := os.ReadFile(filepath.Join(cfg.DataDir, daemon.AuditFile))
	if err != nil || !strings.Contains(string(audit), `"id":"ping-1"`) {
		t.Fatalf("audit log (%v):\n%s", err, audit)
	}

	// A second run on the same data directory is session 2.
	a2 := startAgent(t, daemon.Options{Config: cfg})
	on2 := w.status(t, "online, session 2", func(s protocol.Status) bool { return s.State == protocol.StatusOnline })
	if on2.Session != 2 {
		t.Fatalf("second run: session %d, want 2", on2.Session)
	}
	// ping-1 is a duplicate now: the stored result is published again,
	// nothing runs twice.
	w.send(t, "d-1", "ping-1", protocol.KindPing, "")
	if r2 := w.final(t, "ping-1"); r2.State != protocol.StateSucceeded || string(r2.Data) != string(r.Data) {
		t.Fatalf("duplicate ping: %+v, want the stored result %s", r2, r.Data)
	}
	if err := daemonRunErr(a2.stop(t)); err != nil {
		t.Fatal(err)
	}
	if off := retainedStatus(t, url, "d-1"); off.State != protocol.StatusOffline || off.Session != 2 {
		t.Fatalf("retained status after the second stop %+v", off)
	}
}

func daemonRunErr(reason string, err error) error {
	if err != nil {
		return err
	}
	if reason != protocol.ReasonShutdown {
		return fmt.Errorf("reason %q, want shutdown", reason)
	}
	return nil
}

// Run (not RunUntil) returns nil on a graceful stop.
func TestRunReturnsNil(t *testing.T) {
	url := startBroker(t)
	cfg := testConfig(t, url)
	w := newWatcher(t, url, "op-run", topics.Status("d-1"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- daemon.Run(ctx, daemon.Options{Config: cfg, Version: version}) }()
	w.status(t, "online", func(s protocol.Status) bool { return s.State == protocol.StatusOnline })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return after cancel")
	}
	off := w.status(t, "offline", func(s protocol.Status) bool { return s.State == protocol.StatusOffline })
	if off.Reason != protocol.ReasonShutdown {
		t.Fatalf("offline reason %q", off.Reason)
	}
}

func TestStopAndRestartCommands(t *testing.T) {
	cases := []struct {
		kind, reason string
	}{
		{protocol.KindAgentStop, protocol.ReasonShutdown},
		{protocol.KindAgentRestart, protocol.ReasonRestart},
	}
	for _, c := range cases {
		t.Run(c.kind, func(t *testing.T) {
			url := startBroker(t)
			cfg := testConfig(t, url)
			w := newWatcher(t, url, "op-ctl", topics.Status("d-1"), resultsAll)
			// Options.Reason is for a stop from outside (ctx); a command
			// names its own reason.
			a := startAgent(t, daemon.Options{Config: cfg, Reason: func() string { return protocol.ReasonUpdate }})
			w.status(t, "online", func(s protocol.Status) bool { return s.State == protocol.StatusOnline })
			w.send(t, "d-1", "ctl-1", c.kind, "")
			if r := w.final(t, "ctl-1"); r.State != protocol.StateSucceeded {
				t.Fatalf("%s result %+v", c.kind, r)
			}
			reason, err := a.wait(t) // no cancel: the command stops it
			if err != nil || reason != c.reason {
				t.Fatalf("RunUntil = %q, %v; want %q", reason, err, c.reason)
			}
			off := w.status(t, "offline", func(s protocol.Status) bool { return s.State == protocol.StatusOffline })
			if off.Reason != c.reason || off.Session != 1 {
				t.Fatalf("offline status %+v, want reason %q session 1", off, c.reason)
			}
		})
	}
}

func TestReasonFromOptionsOnExternalStop(t *testing.T) {
	url := startBroker(t)
	cfg := testConfig(t, url)
	w := newWatcher(t, url, "op-reason", topics.Status("d-1"))
	a := startAgent(t, daemon.Options{Config: cfg, Reason: func() string { return protocol.ReasonUpdate }})
	w.status(t, "online", func(s protocol.Status) bool { return s.State == protocol.StatusOnline })
	reason, err := a.stop(t)
	if err != nil || reason != protocol.ReasonUpdate {
		t.Fatalf("RunUntil = %q, %v; want update", reason, err)
	}
	if off := w.status(t, "offline", func(s protocol.Status) bool { return s.State == protocol.StatusOffline }); off.Reason != protocol.ReasonUpdate {
		t.Fatalf("offline reason %q, want update", off.Reason)
	}
}

// Stopping while the broker is unreachable neither hangs nor fails.
func TestStopWhileDisconnected(t *testing.T) {
	cfg := testConfig(t, "tcp://127.0.0.1:1") // nothing listens on port 1
	cfg.Broker.ConnectTimeout = config.Duration(time.Second)
	a := startAgent(t, daemon.Options{Config: cfg})
	deadline := time.Now().Add(waitTimeout)
	for !strings.Contains(a.log.String(), "broker connection failed") {
		if time.Now().After(deadline) {
			t.Fatalf("no connection attempt logged:\n%s", a.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if err := daemonRunErr(a.stop(t)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stop while disconnected took %v", d)
	}
	if !strings.Contains(a.log.String(), "agent stopped while disconnected") {
		t.Errorf("log does not say it stopped while disconnected:\n%s", a.log.String())
	}
}

func TestRunSetupErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		mod  func(*config.Config)
		want string
	}{
		{"data dir is a file", func(c *config.Config) { c.DataDir = file }, "data_dir"},
		{"signed required without keys", func(c *config.Config) { c.Dev = false }, "no trusted key"},
		{"bad trusted key", func(c *config.Config) {
			c.Security.TrustedKeys = []config.TrustedKey{{ID: "ops", PublicKey: "not base64!"}}
		}, "security.trusted_keys[0].public_key"},
		{"missing CA file", func(c *config.Config) {
			c.Broker.TLS.CAFile = filepath.Join(t.TempDir(), "missing.pem")
		}, "broker.tls.ca_file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(t, "tcp://127.0.0.1:1")
			c.mod(cfg)
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			err := daemon.Run(ctx, daemon.Options{Config: cfg})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Run = %v, want an error naming %q", err, c.want)
			}
			if ctx.Err() != nil {
				t.Fatal("Run ran until its context ended instead of failing")
			}
		})
	}
}

// A state file held by another agent is an error, not a second agent.
func TestStateFileLocked(t *testing.T) {
	url := startBroker(t)
	cfg := testConfig(t, url)
	w := newWatcher(t, url, "op-lock", topics.Status("d-1"))
	startAgent(t, daemon.Options{Config: cfg})
	w.status(t, "online", func(s protocol.Status) bool { return s.State == protocol.StatusOnline })
	cfg2 := *cfg
	cfg2.HostID = "d-2"
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	err := daemon.Run(ctx, daemon.Options{Config: &cfg2})
	if err == nil || ctx.Err() != nil {
		t.Fatalf("second Run on a locked data dir = %v", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Run waited for its context: %v", err)
	}
}
