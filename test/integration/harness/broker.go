package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// TestBroker is an MQTT broker process run for one test. Mosquitto and the
// agent's embedded broker both implement it, so a scenario can run against
// each. Methods report problems on the test that created the broker and
// must be called from its goroutine (or from a cleanup).
type TestBroker interface {
	// URL is the broker's MQTT address, tcp://127.0.0.1:PORT.
	URL() string
	// Start starts the broker again on the same port and data after Stop
	// or Kill.
	Start()
	// Stop ends the broker gracefully (SIGTERM), which saves persistence.
	Stop()
	// Kill ends the broker with SIGKILL: what it acknowledged since its
	// last save is lost.
	Kill()
	// LogTail is the end of the broker's log, for failure messages.
	LogTail() string
}

// WebsocketBroker is a TestBroker started with WithWebsocket.
type WebsocketBroker interface {
	// WSURL is the broker's MQTT-over-websocket address,
	// ws://127.0.0.1:PORT/mqtt.
	WSURL() string
}

// BrokerOption changes how StartMosquitto or EmbeddedBroker starts a
// broker.
type BrokerOption func(*brokerOptions)

type brokerOptions struct {
	websocket bool
	tls       []TLSListener
	lines     []string
	args      []string
}

// WithWebsocket adds a websocket listener on another free loopback port.
// With a Mosquitto built without websocket support, StartMosquitto skips
// the test.
func WithWebsocket() BrokerOption {
	return func(o *brokerOptions) { o.websocket = true }
}

// WithMosquittoConfig appends lines to the generated mosquitto.conf, after
// the harness's own settings, e.g. "message_size_limit 1024". For
// single-valued options the later line wins. EmbeddedBroker ignores it.
func WithMosquittoConfig(lines ...string) BrokerOption {
	return func(o *brokerOptions) { o.lines = append(o.lines, lines...) }
}

// WithBrokerArgs appends command-line arguments to `mqagent broker`.
// StartMosquitto ignores it.
func WithBrokerArgs(args ...string) BrokerOption {
	return func(o *brokerOptions) { o.args = append(o.args, args...) }
}

// serverProc is the process management shared by both brokers.
type serverProc struct {
	t       testing.TB
	name    string
	bin     string
	args    []string
	logPath string
	port    int
	wsPort  int
	// readyLine, when set, must appear in the log (after the start) before
	// the broker counts as up.
	readyLine string

	mu   sync.Mutex
	proc *process
}

// URL implements TestBroker.
func (s *serverProc) URL() string { return "tcp://" + hostPort(s.port) }

// WSURL implements WebsocketBroker; it is empty without WithWebsocket.
func (s *serverProc) WSURL() string {
	if s.wsPort == 0 {
		return ""
	}
	return "ws://" + hostPort(s.wsPort) + "/mqtt"
}

// Port is the broker's MQTT TCP port on 127.0.0.1.
func (s *serverProc) Port() int { return s.port }

// LogTail implements TestBroker.
func (s *serverProc) LogTail() string { return logTail(s.logPath) }

// LogPath is the file that receives the broker's output.
func (s *serverProc) LogPath() string { return s.logPath }

// PID is the broker's process id, 0 when it is not running.
func (s *serverProc) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.exited() {
		return 0
	}
	return s.proc.pid()
}

// Start implements TestBroker.
func (s *serverProc) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("%s: %v\nlog:\n%s", s.name, err, s.LogTail())
	}
}

func (s *serverProc) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil && !s.proc.exited() {
		return errors.New("start: already running")
	}
	off := fileSize(s.logPath)
	p, err := startProcess(s.logPath, s.bin, s.args...)
	if err != nil {
		return err
	}
	s.proc = p
	ready := func() bool {
		if s.readyLine != "" && !fileContainsAfter(s.logPath, off, s.readyLine) {
			return false
		}
		if s.wsPort != 0 && !accepts(hostPort(s.wsPort)) {
			return false
		}
		return accepts(hostPort(s.port))
	}
	if err := waitReady(p, startTimeout, ready); err != nil {
		_ = p.kill()
		return fmt.Errorf("start on port %d: %w", s.port, err)
	}
	return nil
}

// Stop implements TestBroker.
func (s *serverProc) Stop() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.exited() {
		return
	}
	appendLog(s.logPath, "SIGTERM")
	if _, err := s.proc.stop(stopTimeout); err != nil {
		s.t.Errorf("%s: stop: %v\nlog:\n%s", s.name, err, s.LogTail())
	}
}

// Kill implements TestBroker.
func (s *serverProc) Kill() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.exited() {
		return
	}
	appendLog(s.logPath, "SIGKILL")
	if err := s.proc.kill(); err != nil {
		s.t.Errorf("%s: kill: %v", s.name, err)
	}
}

// cleanup stops the broker at the end of the test, fails the test when
// the broker (built with -race) reported a data race, and shows its log
// when the test failed.
func (s *serverProc) cleanup() {
	s.Stop()
	if b, err := os.ReadFile(s.logPath); err == nil && strings.Contains(string(b), raceReport) {
		s.t.Errorf("%s: data race reported in %s", s.name, s.logPath)
	}
	if s.t.Failed() {
		s.t.Logf("%s log (%s):\n%s", s.name, s.logPath, s.LogTail())
	}
}

// Mosquitto is a Mosquitto broker run for one test, on a free loopback
// port, with persistence in the test's temporary directory.
type Mosquitto struct {
	serverProc
	dir string
	// tls are the listeners added by WithTLS, tlsPorts their ports.
	tls      []TLSListener
	tlsPorts []int
	// ports are all the ports of StartMosquittoConfig.
	ports []int
}

// Dir is the directory holding mosquitto.conf and the persistence file.
func (m *Mosquitto) Dir() string { return m.dir }

// RequireMosquitto returns the path of the mosquitto binary, or skips
// the test (fails it under CI=true): see RequireTool.
func RequireMosquitto(t testing.TB) string {
	t.Helper()
	return RequireTool(t, "mosquitto", "apt-get install -y mosquitto")
}

// StartMosquitto starts a Mosquitto for the test (see RequireMosquitto for
// when it skips) and stops it in the test's cleanup. It returns once the
// broker accepts connections.
func StartMosquitto(t testing.TB, opts ...BrokerOption) *Mosquitto {
	t.Helper()
	bin := RequireMosquitto(t)
	var o brokerOptions
	for _, opt := range opts {
		opt(&o)
	}
	m := newMosquitto(t, bin)
	m.tls = o.tls
	websocket := o.websocket
	for _, l := range o.tls {
		websocket = websocket || l.Websocket
	}
	m.run(websocket, func() (string, error) {
		if err := m.pickPorts(o.websocket); err != nil {
			return "", err
		}
		return mosquittoConf(m.dir, m.port, m.wsPort, m.tls, m.tlsPorts, o.lines), nil
	})
	return m
}

// StartMosquittoConfig starts a Mosquitto with a configuration of the
// test's own, e.g. a shipped file with its paths and ports rewritten: conf
// gets the broker's directory (for persistence and files) and nPorts
// distinct free loopback ports, and returns the whole mosquitto.conf. The
// broker counts as up once it logs that it is running (Mosquitto does
// after opening every listener) and accepts TCP connections on ports[0],
// so the configuration must listen there and log to stderr ("log_dest
// stderr", the harness's log). URL is tcp://127.0.0.1:ports[0] whatever
// the listener's protocol; Ports lists them all. It skips or fails like
// StartMosquitto without Mosquitto.
func StartMosquittoConfig(t testing.TB, nPorts int, conf func(dir string, ports []int) string) *Mosquitto {
	t.Helper()
	bin := RequireMosquitto(t)
	if nPorts < 1 {
		t.Fatalf("mosquitto: StartMosquittoConfig needs at least one port, got %d", nPorts)
	}
	m := newMosquitto(t, bin)
	m.run(false, func() (string, error) {
		ports, err := freePorts(nPorts)
		if err != nil {
			return "", err
		}
		m.ports, m.port = ports, ports[0]
		return conf(m.dir, ports), nil
	})
	return m
}

func newMosquitto(t testing.TB, bin string) *Mosquitto {
	dir := t.TempDir()
	m := &Mosquitto{
		serverProc: serverProc{
			t:       t,
			name:    "mosquitto",
			bin:     bin,
			logPath: filepath.Join(dir, "mosquitto.log"),
			// Printed once every listener is open.
			readyLine: " running",
		},
		dir: dir,
	}
	m.args = []string{"-c", filepath.Join(dir, "mosquitto.conf")}
	t.Cleanup(m.cleanup)
	return m
}

// run writes the configuration made by conf (which picks the ports) and
// starts the broker. A free port can be taken by someone else between the
// probe and Mosquitto's bind: it tries a few times.
func (m *Mosquitto) run(websocket bool, conf func() (string, error)) {
	m.t.Helper()
	var err error
	for range 3 {
		var text string
		if text, err = conf(); err != nil {
			break
		}
		if err = os.WriteFile(m.args[1], []byte(text), 0o644); err != nil {
			break
		}
		if err = m.start(); err == nil || !errors.Is(err, errExited) {
			break
		}
		if websocket && strings.Contains(m.LogTail(), "Websockets support not available") {
			m.t.Skipf("skipping: %s was built without websocket support", m.bin)
		}
	}
	if err != nil {
		m.t.Fatalf("mosquitto: %v\nlog:\n%s", err, m.LogTail())
	}
}

func (m *Mosquitto) pickPorts(websocket bool) error {
	n := 1 + len(m.tls)
	if websocket {
		n++
	}
	ports, err := freePorts(n)
	if err != nil {
		return err
	}
	m.port, m.tlsPorts, m.wsPort = ports[0], ports[1:1+len(m.tls)], 0
	if websocket {
		m.wsPort = ports[n-1]
	}
	return nil
}

// mosquittoConf is the test broker configuration. See
// broker-config/README.md for why each setting matters.
func mosquittoConf(dir string, port, wsPort int, tlsListeners []TLSListener, tlsPorts []int, extra []string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# Generated by test/integration/harness for one test.")
	// Running as root, Mosquitto would drop to user mosquitto and then fail
	// to write persistence into a root-owned temporary directory.
	w("user root")
	w("allow_anonymous true")
	// Nagle adds ~40 ms to every round trip.
	w("set_tcp_nodelay true")
	w("persistence true")
	w("persistence_location %s%c", dir, filepath.Separator)
	// Persistence is a periodic snapshot; a short interval keeps what a test
	// acknowledged a second ago across a kill -9. SIGTERM always saves.
	w("autosave_interval 1")
	// The default (1000) silently drops replies and commands queued for
	// offline clients. 0 would mean "no limit", which 2.0.16 treats as
	// "drop everything": never use it.
	w("max_queued_messages 100000")
	w("max_queued_bytes 0")
	// Log to stderr, which the harness captures into mosquitto.log: one
	// file that also holds errors printed before the config is read.
	w("log_dest stderr")
	w("log_type error")
	w("log_type warning")
	w("log_type notice")
	w("log_type information")
	w("connection_messages true")
	w("log_timestamp true")
	w("log_timestamp_format %%Y-%%m-%%dT%%H:%%M:%%S")
	// The websocket listener comes first so that it has been opened (or
	// has failed) by the time the MQTT listener accepts connections.
	if wsPort != 0 {
		// Mosquitto 2.0.11 (libwebsockets) ignores a bind address on a
		// websocket listener and listens on every interface; an interface
		// name is honoured.
		host := "127.0.0.1"
		if runtime.GOOS == "linux" {
			host = "lo"
		}
		w("listener %d %s", wsPort, host)
		w("protocol websockets")
	}
	for i, l := range tlsListeners {
		l.conf(w, tlsPorts[i])
	}
	w("listener %d 127.0.0.1", port)
	w("protocol mqtt")
	for _, l := range extra {
		w("%s", l)
	}
	return b.String()
}

// Broker is the agent's embedded broker (`mqagent broker`) run for one
// test.
type Broker struct {
	serverProc
	dataDir string
}

// DataDir is the broker's --data-dir.
func (b *Broker) DataDir() string { return b.dataDir }

// EmbeddedBroker starts `bin broker --listen 127.0.0.1:PORT --data-dir DIR`
// (plus --ws-listen with WithWebsocket) for the test and stops it in the
// test's cleanup. It returns once the broker accepts connections.
func EmbeddedBroker(t testing.TB, bin string, opts ...BrokerOption) *Broker {
	t.Helper()
	var o brokerOptions
	for _, opt := range opts {
		opt(&o)
	}
	dir := t.TempDir()
	b := &Broker{
		serverProc: serverProc{
			t:       t,
			name:    "embedded broker",
			bin:     bin,
			logPath: filepath.Join(dir, "broker.log"),
		},
		dataDir: filepath.Join(dir, "data"),
	}
	t.Cleanup(b.cleanup)
	var err error
	for range 3 {
		if b.port, err = freePort(); err != nil {
			break
		}
		b.args = []string{"broker", "--listen", hostPort(b.port), "--data-dir", b.dataDir}
		if o.websocket {
			b.wsPort = 0
			for b.wsPort == 0 || b.wsPort == b.port {
				if b.wsPort, err = freePort(); err != nil {
					break
				}
			}
			if err != nil {
				break
			}
			b.args = append(b.args, "--ws-listen", hostPort(b.wsPort))
		}
		b.args = append(b.args, o.args...)
		if err = b.start(); err == nil || !errors.Is(err, errExited) {
			break
		}
	}
	if err != nil {
		t.Fatalf("embedded broker: %v\nlog:\n%s", err, b.LogTail())
	}
	return b
}

// Interface checks.
var (
	_ TestBroker      = (*Mosquitto)(nil)
	_ TestBroker      = (*Broker)(nil)
	_ WebsocketBroker = (*Mosquitto)(nil)
	_ WebsocketBroker = (*Broker)(nil)
)
