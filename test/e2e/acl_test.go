package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// shippedDir is broker-config/mosquitto of this repository.
func shippedDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "broker-config", "mosquitto"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// The listener ports of the shipped mosquitto.conf.
const (
	portAgents     = 8883
	portDashboards = 8884
	portOperators  = 8885
)

// prodFiles are the files the shipped mosquitto.conf names, by base name.
type prodFiles struct {
	FleetCA, OperatorCA, BrokerCert, BrokerKey, ACL string
}

// prodBroker is the shipped mosquitto.conf with its paths and ports
// rewritten for a test, and the shipped (or a given) acl.
type prodBroker struct {
	mq                           *harness.Mosquitto
	agents, dashboards, operator string // URLs of the three listeners
	dashPassword                 string
}

// rewriteProdConf rewrites the shipped configuration for a test: the
// listeners move to free loopback ports (the websocket one to the "lo"
// interface, see the conf), the files to the test's copies, persistence
// to dir, logging to stderr (the harness's log), and Mosquitto keeps
// running as root (it would otherwise drop to user mosquitto, which cannot
// write dir). Anything else stays as shipped; a path the test does not
// know fails the test, so a new setting cannot slip through untested.
func rewriteProdConf(src, dir string, ports map[int]int, files map[string]string) (string, error) {
	lines := strings.Split(src, "\n")
	// The protocol of each listener block, to bind websockets by interface.
	proto := map[int]string{}
	cur := -1
	for i, l := range lines {
		f := strings.Fields(l)
		switch {
		case len(f) >= 2 && f[0] == "listener":
			cur = i
		case len(f) == 2 && f[0] == "protocol" && cur >= 0:
			proto[cur] = f[1]
		}
	}
	var out []string
	logged := false
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			out = append(out, l)
			continue
		}
		switch f[0] {
		case "user":
			l = "user root"
		case "listener":
			n, err := strconv.Atoi(f[1])
			if err != nil || ports[n] == 0 {
				return "", fmt.Errorf("line %d: listener %q is not one the test knows", i+1, f[1])
			}
			bind := "127.0.0.1"
			if proto[i] == "websockets" {
				bind = "lo"
			}
			l = fmt.Sprintf("listener %d %s", ports[n], bind)
		case "cafile", "certfile", "keyfile", "password_file", "acl_file":
			p, ok := files[filepath.Base(f[1])]
			if !ok {
				return "", fmt.Errorf("line %d: no test file for %s", i+1, f[1])
			}
			l = f[0] + " " + p
		case "persistence_location":
			l = "persistence_location " + dir + "/"
		case "log_dest":
			if logged {
				continue
			}
			l, logged = "log_dest stderr", true
		case "pid_file":
			continue
		default:
			if strings.Contains(l, "/") && f[0] != "log_timestamp_format" {
				return "", fmt.Errorf("line %d: %q names a path the test does not rewrite", i+1, l)
			}
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n"), nil
}

// startProduction starts Mosquitto with the shipped mosquitto.conf and
// the given files; the password file holds the user "dashboard".
func startProduction(t *testing.T, f prodFiles) *prodBroker {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(shippedDir(t), "mosquitto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	pb := &prodBroker{dashPassword: "dash-" + harness.NewID()}
	filesDir := t.TempDir()
	pwFile := filepath.Join(filesDir, "passwords")
	harness.WriteMosquittoPasswords(t, pwFile, map[string]string{"dashboard": pb.dashPassword})
	files := map[string]string{
		"fleet-ca.pem": f.FleetCA, "operator-ca.pem": f.OperatorCA,
		"broker.pem": f.BrokerCert, "broker.key": f.BrokerKey,
		"acl": f.ACL, "passwords": pwFile,
	}
	var ports map[int]int
	pb.mq = harness.StartMosquittoConfig(t, 3, func(dir string, p []int) string {
		ports = map[int]int{portAgents: p[0], portDashboards: p[1], portOperators: p[2]}
		conf, err := rewriteProdConf(string(src), dir, ports, files)
		if err != nil {
			t.Fatalf("shipped mosquitto.conf: %v", err)
		}
		return conf
	})
	pb.agents = fmt.Sprintf("ssl://127.0.0.1:%d", ports[portAgents])
	pb.dashboards = fmt.Sprintf("wss://127.0.0.1:%d/mqtt", ports[portDashboards])
	pb.operator = fmt.Sprintf("ssl://127.0.0.1:%d", ports[portOperators])
	return pb
}

// aclEnv is the shipped configuration and acl with test certificates: a
// fleet CA (broker, hosts, dashboard) and an operator CA, an operator
// connected to the operators' listener watching the whole tree, and the
// agent binary.
type aclEnv struct {
	*env
	pb          *prodBroker
	fleet, opCA *harness.PKI
}

func newACLEnv(t *testing.T) *aclEnv {
	t.Helper()
	fleet := harness.NewPKI(t, "fleet CA")
	opCA := harness.NewPKI(t, "operator CA")
	server := fleet.Server("127.0.0.1", "localhost")
	pb := startProduction(t, prodFiles{
		FleetCA: fleet.CAFile(), OperatorCA: opCA.CAFile(),
		BrokerCert: server.CertFile, BrokerKey: server.KeyFile,
		ACL: filepath.Join(shippedDir(t), "acl"),
	})
	opCert := opCA.Client("operator")
	// Operators verify the broker with the fleet CA and present a
	// certificate from the operator CA.
	opTLS := fleet.ClientTLS(nil)
	opTLS.Certificates = []tls.Certificate{opCert.TLS(t)}
	op := harness.NewOperator(t, pb.operator, harness.WithTLSConfig(opTLS))
	op.Watch(protocol.DefaultPrefix + "/#")
	return &aclEnv{env: &env{t: t, bin: harness.BuildAgent(t), broker: pb.mq, op: op}, pb: pb, fleet: fleet, opCA: opCA}
}

// hostAgent starts the real agent for host on the agents' listener with a
// fleet certificate and waits until it is online.
func (e *aclEnv) hostAgent(host string, mods ...func(map[string]any)) *harness.Agent {
	e.t.Helper()
	cert := e.fleet.Client(host)
	return e.agent(host, append([]func(map[string]any){withBroker(e.pb.agents, clientTLS(e.fleet.CAFile(), &cert))}, mods...)...)
}

// host connects a raw MQTT client with a fleet certificate for cn to the
// agents' listener.
func (e *aclEnv) host(cn string, opts ...rawOption) *rawClient {
	e.t.Helper()
	cert := e.fleet.Client(cn)
	return dialRaw(e.t, e.pb.agents, e.fleet.ClientTLS(&cert), append([]rawOption{withID(cn)}, opts...)...)
}

// rawClient is a bare paho client recording what it receives, for the
// tests that need control over the client id, will, subscriptions and
// the connection itself.
type rawClient struct {
	t    *testing.T
	name string
	c    mqtt.Client

	mu      sync.Mutex
	msgs    []harness.Message
	lost    error
	conn    net.Conn
	changed chan struct{}
}

type rawOption func(*mqtt.ClientOptions)

func withID(id string) rawOption { return func(o *mqtt.ClientOptions) { o.SetClientID(id) } }

func withWill(topic string, payload []byte) rawOption {
	return func(o *mqtt.ClientOptions) { o.SetBinaryWill(topic, payload, 1, true) }
}

func withLogin(user, password string) rawOption {
	return func(o *mqtt.ClientOptions) { o.SetUsername(user).SetPassword(password) }
}

func persistent(o *mqtt.ClientOptions) { o.SetCleanSession(false) }

// dialRaw connects; it fails the test when the connection is refused.
func dialRaw(t *testing.T, brokerURL string, tlsCfg *tls.Config, opts ...rawOption) *rawClient {
	t.Helper()
	r, err := tryDialRaw(t, brokerURL, tlsCfg, opts...)
	if err != nil {
		t.Fatalf("connect to %s: %v", brokerURL, err)
	}
	return r
}

// tryDialRaw connects and returns the connection error, if any.
func tryDialRaw(t *testing.T, brokerURL string, tlsCfg *tls.Config, opts ...rawOption) (*rawClient, error) {
	t.Helper()
	r := &rawClient{t: t, changed: make(chan struct{})}
	o := mqtt.NewClientOptions().AddBroker(brokerURL).
		SetClientID("raw-" + strings.ToLower(harness.NewID())).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetOrderMatters(true).SetConnectTimeout(5 * time.Second).SetKeepAlive(30 * time.Second).
		SetTLSConfig(tlsCfg).
		SetDefaultPublishHandler(r.handle).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			r.mu.Lock()
			r.lost = err
			r.notifyLocked()
			r.mu.Unlock()
		})
	if strings.HasPrefix(brokerURL, "ssl://") {
		// Keep the connection, so that kill can drop it without a
		// DISCONNECT (the broker then publishes the will).
		o.SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", u.Host, tlsCfg)
			if err != nil {
				return nil, err
			}
			r.mu.Lock()
			r.conn = c
			r.mu.Unlock()
			return c, nil
		})
	}
	for _, opt := range opts {
		opt(o)
	}
	r.name = o.ClientID
	r.c = mqtt.NewClient(o)
	tok := r.c.Connect()
	if !tok.WaitTimeout(wait) {
		return nil, errors.New("no CONNACK")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { r.c.Disconnect(0) })
	return r, nil
}

func (r *rawClient) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *rawClient) handle(_ mqtt.Client, m mqtt.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, harness.Message{Topic: m.Topic(), Payload: slices.Clone(m.Payload()), QoS: m.Qos(), Retained: m.Retained(), At: time.Now()})
	r.notifyLocked()
}

// subscribe subscribes at QoS 1 and returns the granted QoS (0x80: refused).
func (r *rawClient) subscribe(filter string) byte {
	r.t.Helper()
	tok := r.c.Subscribe(filter, 1, nil)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		r.t.Fatalf("%s: subscribe %s: %v", r.name, filter, tok.Error())
	}
	return tok.(*mqtt.SubscribeToken).Result()[filter]
}

// publish publishes at QoS 1 and waits for the PUBACK: the broker has then
// processed the message (and, if it accepted it, queued it for every
// subscriber), whatever it decided.
func (r *rawClient) publish(topic string, payload []byte, retained bool) {
	r.t.Helper()
	tok := r.c.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		r.t.Fatalf("%s: publish %s: %v", r.name, topic, tok.Error())
	}
}

// messages is everything received so far.
func (r *rawClient) messages() []harness.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

func (r *rawClient) waitFor(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok, ch := cond(), r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			r.t.Fatalf("%s: no %s within %v; received %v", r.name, what, wait, topicsOf(r.messages()))
		}
	}
}

// waitMessage waits for a message on topic.
func (r *rawClient) waitMessage(topic string) {
	r.t.Helper()
	r.waitFor("message on "+topic, func() bool {
		return slices.ContainsFunc(r.msgs, func(m harness.Message) bool { return m.Topic == topic })
	})
}

// waitLost waits until the broker closed the connection.
func (r *rawClient) waitLost() {
	r.t.Helper()
	r.waitFor("connection loss", func() bool { return r.lost != nil })
}

// kill drops the connection without a DISCONNECT, as a crash would (paho
// does not report a connection it was told is closed).
func (r *rawClient) kill() {
	r.t.Helper()
	r.mu.Lock()
	c := r.conn
	r.mu.Unlock()
	if c == nil {
		r.t.Fatalf("%s: no connection to kill", r.name)
	}
	_ = c.Close()
}

func topicsOf(msgs []harness.Message) []string {
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, m.Topic)
	}
	return out
}

func cmdPayload(t *testing.T, target string) []byte {
	t.Helper()
	b, err := json.Marshal(protocol.Command{V: protocol.Version, ID: harness.NewID(), Kind: protocol.KindPing, Target: target, IssuedAt: protocol.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func statusPayload(t *testing.T, host, state string) []byte {
	t.Helper()
	b, err := json.Marshal(protocol.Status{V: protocol.Version, Host: host, State: state, Reason: protocol.ReasonLost, Session: 1, TS: protocol.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// control publishes a marker on host's metrics topic (which every host may
// write and operators and dashboards may read) and waits until the
// operator has it. Mosquitto is single-threaded and delivers to a
// subscriber in order: anything the broker accepted before the marker was
// published has reached the operator by then.
func (e *aclEnv) control(from *rawClient, host string) {
	e.t.Helper()
	topic := e.op.Topics().Metrics(host)
	payload := fmt.Appendf(nil, `{"v":1,"host":%q,"marker":%q}`, host, harness.NewID())
	from.publish(topic, payload, false)
	e.op.WaitMessage(e.t, topic, func(m harness.Message) bool { return string(m.Payload) == string(payload) }, wait)
}

// forged is a payload published where it must not get through.
type forged struct{ topic, payload string }

// noneArrived fails when the operator received one of the forged
// payloads on its topic.
func (e *aclEnv) noneArrived(why string, list []forged) {
	e.t.Helper()
	for _, f := range list {
		for _, m := range e.op.Messages(f.topic) {
			if string(m.Payload) == f.payload {
				e.t.Errorf("%s: the operator received %s on %s", why, m.Payload, f.topic)
			}
		}
	}
}

// TestMosquittoProductionConfig: the shipped mosquitto.conf (paths and
// ports rewritten only) starts; an agent comes online over mTLS on the
// agents' listener and answers an operator on the operators' listener; a
// dashboard logs in with a password over websockets and sees the host's
// status; every client without the right credential is refused.
func TestMosquittoProductionConfig(t *testing.T) {
	e := newACLEnv(t)
	e.hostAgent("prod-1")
	e.ping("prod-1")

	dash := dialRaw(t, e.pb.dashboards, e.fleet.ClientTLS(nil), withLogin("dashboard", e.pb.dashPassword))
	if q := dash.subscribe(e.op.Topics().Status("+")); q != 1 {
		t.Fatalf("dashboard status subscription granted QoS %d", q)
	}
	dash.waitMessage(e.op.Topics().Status("prod-1"))

	opCert := e.opCA.Client("operator")
	hostCert := e.fleet.Client("prod-2")
	dashCert := e.fleet.Client("dashboard")
	withCert := func(c harness.CertPair) *tls.Config { return e.fleet.ClientTLS(&c) }
	refusals := []struct {
		name string
		url  string
		tls  *tls.Config
		opts []rawOption
		want string
	}{
		{"agents listener without certificate", e.pb.agents, e.fleet.ClientTLS(nil), nil, ""},
		{"agents listener with an operator-CA certificate", e.pb.agents, withCert(opCert), nil, ""},
		{"agents listener with a username and password instead of a certificate", e.pb.agents, e.fleet.ClientTLS(nil), []rawOption{withLogin("dashboard", e.pb.dashPassword)}, ""},
		{"operators listener without certificate", e.pb.operator, e.fleet.ClientTLS(nil), nil, ""},
		{"operators listener with a host certificate", e.pb.operator, withCert(hostCert), nil, ""},
		{"operators listener with the dashboard certificate", e.pb.operator, withCert(dashCert), nil, ""},
		{"websockets without username", e.pb.dashboards, e.fleet.ClientTLS(nil), nil, "not Authorized"},
		{"websockets with a wrong password", e.pb.dashboards, e.fleet.ClientTLS(nil), []rawOption{withLogin("dashboard", "wrong")}, "not Authorized"},
		{"websockets with an unknown user", e.pb.dashboards, e.fleet.ClientTLS(nil), []rawOption{withLogin("prod-1", "x")}, "not Authorized"},
	}
	for _, r := range refusals {
		c, err := tryDialRaw(t, r.url, r.tls, r.opts...)
		switch {
		case err == nil:
			c.c.Disconnect(0)
			t.Errorf("%s: connected, want refused", r.name)
		case r.want != "" && !strings.Contains(err.Error(), r.want):
			t.Errorf("%s: %v, want %q", r.name, err, r.want)
		default:
			t.Logf("%s: refused: %v", r.name, err)
		}
	}

	// Persistence goes where the configuration says (rewritten to the
	// test's directory): SIGTERM saves.
	e.pb.mq.Stop()
	if _, err := os.Stat(filepath.Join(e.pb.mq.Dir(), "mosquitto.db")); err != nil {
		t.Fatalf("no persistence file after a graceful stop: %v", err)
	}
}

// TestACLHostConfinement: with the shipped acl, host A (a raw client with
// A's certificate) cannot publish on any command topic nor as host B, and
// receives nothing of B's (commands, results, status, even retained)
// although Mosquitto grants it a subscription to "#".
func TestACLHostConfinement(t *testing.T) {
	e := newACLEnv(t)
	e.hostAgent("acl-b", withGroups("web"))
	tp := e.op.Topics()

	a := e.host("acl-a")
	// Mosquitto 2.0's acl file does not check subscriptions: "#" is
	// granted (QoS 1, not 0x80) and filtered message by message.
	if q := a.subscribe("#"); q != 1 {
		t.Fatalf("subscription to # granted QoS %d, want 1 (Mosquitto filters deliveries, not subscriptions)", q)
	}

	// Writes outside mqagent/v1/hosts/acl-a/: none reaches the operator,
	// which watches the whole tree.
	denied := []forged{
		{tp.HostCmd("acl-b"), string(cmdPayload(t, "host:acl-b"))},
		{tp.GroupCmd("web"), string(cmdPayload(t, "group:web"))},
		{tp.AllCmd(), string(cmdPayload(t, "all"))},
		{tp.HostCmd("acl-a"), string(cmdPayload(t, "host:acl-a"))},
		{tp.Status("acl-b"), string(statusPayload(t, "acl-b", protocol.StatusOffline))},
		{tp.Result("acl-b", "forged"), `{"v":1,"id":"forged","host":"acl-b","state":"succeeded"}`},
		{tp.Audit("acl-b"), `{"v":1,"host":"acl-b","forged":true}`},
		{tp.Prefix + "/other", `{"forged":true}`},
		{"elsewhere/topic", `{"forged":true}`},
	}
	for _, d := range denied {
		a.publish(d.topic, []byte(d.payload), d.topic == tp.Status("acl-b"))
	}
	e.control(a, "acl-a")
	e.noneArrived("host acl-a publishing", denied)

	// B works normally (its retained status, its results), and A sees
	// none of it; A does receive what is addressed to it, its groups'
	// topics (any group, see the acl) and broadcasts, in order.
	e.ping("acl-b")
	e.op.Publish(tp.GroupCmd("db"), cmdPayload(t, "group:db"), false)
	e.op.Publish(tp.AllCmd(), cmdPayload(t, "all"), false)
	e.op.Publish(tp.HostCmd("acl-a"), cmdPayload(t, "host:acl-a"), false)
	a.waitMessage(tp.HostCmd("acl-a"))
	got := topicsOf(a.messages())
	want := []string{tp.GroupCmd("db"), tp.AllCmd(), tp.HostCmd("acl-a")}
	if !slices.Equal(got, want) {
		t.Fatalf("host acl-a subscribed to # received %v, want exactly %v", got, want)
	}

	// A second subscription by A to B's subtree: granted, and B's
	// retained status is still not delivered.
	if q := a.subscribe(tp.Prefix + "/hosts/acl-b/#"); q != 1 {
		t.Fatalf("subscription to B's subtree granted QoS %d", q)
	}
	e.op.Publish(tp.HostCmd("acl-a"), cmdPayload(t, "host:acl-a"), false)
	a.waitFor("second command", func() bool { return len(a.msgs) >= 4 })
	if got := topicsOf(a.messages()); len(got) != 4 || got[3] != tp.HostCmd("acl-a") {
		t.Fatalf("after subscribing to B's subtree host acl-a received %v", got)
	}

	// B's retained status is intact (A's forged offline was not stored).
	if st := e.op.Statuses("acl-b"); len(st) == 0 || st[len(st)-1].State != protocol.StatusOnline {
		t.Fatalf("statuses of acl-b: %+v", st)
	}
	fresh := harness.NewOperator(t, e.pb.operator, harness.WithTLSConfig(e.operatorTLS()))
	fresh.WatchStatus("acl-b")
	s := fresh.WaitStatus(t, "acl-b", func(protocol.Status) bool { return true }, wait)
	if s.State != protocol.StatusOnline {
		t.Fatalf("retained status of acl-b is %+v after host acl-a published a forged one", s)
	}
}

// undisturbed fails when the operator saw a status of host other than
// online in session: an offline will (the connection was taken over) or
// a new session (it reconnected). The operator may see a status several
// times (overlapping subscriptions), so count nothing.
func (e *aclEnv) undisturbed(why, host string, session uint64) {
	e.t.Helper()
	for _, s := range e.op.Statuses(host) {
		if s.State != protocol.StatusOnline || s.Session != session {
			e.t.Fatalf("%s: host %s status %s/%s session %d (online in session %d before)", why, host, s.State, s.Reason, s.Session, session)
		}
	}
}

// waitBrokerLog waits until the broker's log holds needle n times.
func waitBrokerLog(t *testing.T, mq *harness.Mosquitto, needle string, n int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for strings.Count(readFile(t, mq.LogPath()), needle) < n {
		if time.Now().After(deadline) {
			t.Fatalf("broker log: %q not seen %d times within %v", needle, n, wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// operatorTLS is a TLS configuration with a new operator certificate.
func (e *aclEnv) operatorTLS() *tls.Config {
	c := e.opCA.Client("operator")
	cfg := e.fleet.ClientTLS(nil)
	cfg.Certificates = []tls.Certificate{c.TLS(e.t)}
	return cfg
}

// TestACLClientIDBinding: on the agents' listener the client id is the
// certificate's CN whatever the client sends: host A connecting with
// client id "acl-b" neither disconnects B nor takes over B's session; it
// is host A (and displaces A's own connection).
func TestACLClientIDBinding(t *testing.T) {
	e := newACLEnv(t)
	b := e.hostAgent("acl-b")
	birth := e.waitOnline(b)

	a := e.host("acl-a")
	imposter := e.host("acl-a", withID("acl-b"), persistent)
	// The broker renamed the imposter to acl-a: A's first connection is
	// taken over ...
	a.waitLost()
	// ... and B's is not: no will (offline "lost") and no new session of
	// B before the imposter's marker reached the operator.
	e.control(imposter, "acl-a")
	e.undisturbed("imposter with client id acl-b", "acl-b", birth.Session)
	// B's commands go to B, none to the imposter; the imposter gets A's.
	for _, f := range []string{e.op.Topics().HostCmd("acl-b"), e.op.Topics().HostCmd("acl-a")} {
		if q := imposter.subscribe(f); q != 1 {
			t.Fatalf("imposter subscription to %s granted QoS %d", f, q)
		}
	}
	e.ping("acl-b")
	e.op.Publish(e.op.Topics().HostCmd("acl-a"), cmdPayload(t, "host:acl-a"), false)
	imposter.waitMessage(e.op.Topics().HostCmd("acl-a"))
	if got := topicsOf(imposter.messages()); !slices.Equal(got, []string{e.op.Topics().HostCmd("acl-a")}) {
		t.Fatalf("imposter received %v", got)
	}
	e.undisturbed("imposter with client id acl-b", "acl-b", birth.Session)
	log := readFile(t, e.pb.mq.LogPath())
	if !strings.Contains(log, "as acl-a (p2, c0") {
		t.Errorf("broker log shows no persistent connection renamed to acl-a")
	}
}

// TestACLWill: Mosquitto 2.0 accepts a will on another host's status topic
// at CONNECT but checks it when it would be published: host A's forged
// will for B never reaches anyone, its will on its own topic does.
func TestACLWill(t *testing.T) {
	e := newACLEnv(t)
	birth := e.waitOnline(e.hostAgent("acl-b"))
	tp := e.op.Topics()

	forged := e.host("acl-a", withWill(tp.Status("acl-b"), statusPayload(t, "acl-b", protocol.StatusOffline)))
	forged.kill()
	// The broker handles the will as it notices the lost connection (not
	// on a later take-over by the next connection).
	waitBrokerLog(t, e.pb.mq, "Client acl-a closed its connection", 1)
	own := e.host("acl-a", withWill(tp.Status("acl-a"), statusPayload(t, "acl-a", protocol.StatusOffline)))
	own.kill()
	e.op.WaitStatus(t, "acl-a", func(s protocol.Status) bool { return s.State == protocol.StatusOffline }, wait)
	e.undisturbed("host acl-a's will on acl-b's status", "acl-b", birth.Session)
	e.ping("acl-b")
}

// TestACLDashboardReadOnly: the dashboard user (password over websockets,
// or its certificate on the agents' listener) reads statuses, inventories,
// metrics and audit records, but no command or result, cannot publish
// anything, and cannot push a host off with its client id.
func TestACLDashboardReadOnly(t *testing.T) {
	e := newACLEnv(t)
	b := e.hostAgent("acl-b")
	birth := e.waitOnline(b)
	tp := e.op.Topics()
	a := e.host("acl-a")
	// The agent does not publish an inventory (yet): A's will do, it is
	// retained and readable by dashboards as any host's.
	a.publish(tp.Inventory("acl-a"), []byte(`{"v":1,"host":"acl-a"}`), true)
	dashCert := e.fleet.Client("dashboard")

	// Both dashboards ask for client id "acl-b"; both listeners replace
	// it by the username "dashboard" (so the two cannot be connected at
	// the same time: one connection per user).
	dashboards := []struct {
		name string
		dial func() *rawClient
	}{
		{"websockets", func() *rawClient {
			return dialRaw(t, e.pb.dashboards, e.fleet.ClientTLS(nil), withLogin("dashboard", e.pb.dashPassword), withID("acl-b"))
		}},
		{"certificate", func() *rawClient {
			return dialRaw(t, e.pb.agents, e.fleet.ClientTLS(&dashCert), withID("acl-b"))
		}},
	}
	for _, dash := range dashboards {
		d := dash.dial()
		if q := d.subscribe("#"); q != 1 {
			t.Fatalf("dashboard (%s): # granted QoS %d", dash.name, q)
		}
		// Retained statuses and inventories.
		d.waitMessage(tp.Status("acl-b"))
		d.waitMessage(tp.Inventory("acl-a"))

		// A command and its results: the dashboard sees the audit
		// records, not the command nor the results.
		id := e.op.Send(kind("host:acl-b", protocol.KindPing, nil))
		e.op.WaitFinal(t, id, "acl-b", wait)
		e.op.WaitAudit(t, "acl-b", func(r protocol.Audit) bool { return r.ID == id && r.Event == protocol.EventFinished }, wait)
		e.control(a, "acl-a")
		d.waitMessage(tp.Metrics("acl-a"))
		for _, m := range d.messages() {
			if strings.HasSuffix(m.Topic, "/cmd") || strings.Contains(m.Topic, "/results/") {
				t.Errorf("dashboard (%s) received %s", dash.name, m.Topic)
			}
		}
		if !slices.Contains(topicsOf(d.messages()), tp.Audit("acl-b")) {
			t.Errorf("dashboard (%s) received no audit record: %v", dash.name, topicsOf(d.messages()))
		}

		// Nothing it publishes gets through, not even the status of a
		// fake host named after it.
		var published []forged
		for _, topic := range []string{tp.HostCmd("acl-b"), tp.AllCmd(), tp.GroupCmd("web"), tp.Status("acl-b"), tp.Status("dashboard"), tp.Metrics("dashboard"), tp.Result("acl-b", "x")} {
			f := forged{topic, fmt.Sprintf(`{"v":1,"forged":%q}`, harness.NewID())}
			d.publish(f.topic, []byte(f.payload), false)
			published = append(published, f)
		}
		e.control(a, "acl-a")
		e.noneArrived("dashboard ("+dash.name+") publishing", published)
		// Host B was never pushed off (no will, no new session).
		e.undisturbed("dashboard ("+dash.name+") with client id acl-b", "acl-b", birth.Session)
		d.c.Disconnect(250)
	}
}

// TestACLStrictGroups: with the strict acl gen-certs.sh writes (and its
// openssl certificates), a host reads only its own groups' command topics;
// an agent configured with a group its acl does not grant still connects
// (the subscription is granted) but never receives that group's commands.
func TestACLStrictGroups(t *testing.T) {
	pki := runGenCerts(t, "-s", "127.0.0.1", "-G", writeTemp(t, "groups.txt", "web-1 web\ndb-1 db\nsolo-1\n"))
	pb := startProduction(t, prodFiles{
		FleetCA: filepath.Join(pki, "fleet-ca.pem"), OperatorCA: filepath.Join(pki, "operator-ca.pem"),
		BrokerCert: filepath.Join(pki, "broker.pem"), BrokerKey: filepath.Join(pki, "broker.key"),
		ACL: filepath.Join(pki, "acl.strict"),
	})
	fleetPool := certPool(t, filepath.Join(pki, "fleet-ca.pem"))
	tlsFor := func(name string) *tls.Config {
		cert, err := tls.LoadX509KeyPair(filepath.Join(pki, name+".pem"), filepath.Join(pki, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Config{RootCAs: fleetPool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	op := harness.NewOperator(t, pb.operator, harness.WithTLSConfig(tlsFor("operator")))
	tp := op.Topics()

	web := dialRaw(t, pb.agents, tlsFor("hosts/web-1"), withID("web-1"))
	db := dialRaw(t, pb.agents, tlsFor("hosts/db-1"), withID("db-1"))
	solo := dialRaw(t, pb.agents, tlsFor("hosts/solo-1"), withID("solo-1"))
	for _, c := range []*rawClient{web, db, solo} {
		for _, f := range []string{tp.GroupCmd("+"), tp.AllCmd()} {
			if q := c.subscribe(f); q != 1 {
				t.Fatalf("%s: %s granted QoS %d", c.name, f, q)
			}
		}
	}
	op.Publish(tp.GroupCmd("db"), cmdPayload(t, "group:db"), false)
	op.Publish(tp.GroupCmd("web"), cmdPayload(t, "group:web"), false)
	op.Publish(tp.GroupCmd("other"), cmdPayload(t, "group:other"), false)
	op.Publish(tp.AllCmd(), cmdPayload(t, "all"), false)
	for c, want := range map[*rawClient][]string{
		web:  {tp.GroupCmd("web"), tp.AllCmd()},
		db:   {tp.GroupCmd("db"), tp.AllCmd()},
		solo: {tp.AllCmd()},
	} {
		c.waitMessage(tp.AllCmd())
		if got := topicsOf(c.messages()); !slices.Equal(got, want) {
			t.Errorf("%s received %v, want %v", c.name, got, want)
		}
	}

	// The real agent of web-1, configured with groups web and db.
	web.c.Disconnect(0)
	e := &env{t: t, bin: harness.BuildAgent(t), broker: pb.mq, op: op}
	e.agent("web-1", withGroups("web", "db"), withBroker(pb.agents, map[string]any{
		"ca_file":   filepath.Join(pki, "fleet-ca.pem"),
		"cert_file": filepath.Join(pki, "hosts", "web-1.pem"),
		"key_file":  filepath.Join(pki, "hosts", "web-1.key"),
	}))
	dbID := op.Send(kind("group:db", protocol.KindPing, nil))
	webID := op.Send(kind("group:web", protocol.KindPing, nil))
	expectState(t, op.WaitFinal(t, webID, "web-1", wait), protocol.StateSucceeded)
	// Unavoidable negative wait: the broker dropped the db command, so
	// nothing could signal its absence. The web command, published after
	// it on the same connection, has been answered already.
	op.AssertNoResult(t, dbID, 300*time.Millisecond)
}

// certPool reads a CA file.
func certPool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(readFile(t, path))) {
		t.Fatalf("no certificate in %s", path)
	}
	return pool
}

// writeTemp writes content to a new file in a temporary directory.
func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
