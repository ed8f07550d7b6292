package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// runScript runs a shipped script of broker-config/nats/prod in dir.
func runScript(t *testing.T, dir, script string, args ...string) {
	t.Helper()
	bash := harness.RequireTool(t, "bash", "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, append([]string{filepath.Join(natsDir(t), "prod", script)}, args...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", script, args, err, out)
	}
}

// prodFiles are the files the shipped nats.conf names under
// /etc/nats/mqagent, all in one directory of the test.
var prodFiles = []string{"broker.pem", "broker.key", "clients-ca.pem", "route.pem", "route.key", "route-ca.pem"}

// etcPath matches the absolute paths of the shipped nats.conf.
var etcPath = regexp.MustCompile(`"(/[^"]*)"`)

// rewriteProd rewrites the shipped production nats.conf for node i of a
// loopback test: listeners on the test's ports, routes to the other nodes
// on 127.0.0.1, the files of files (by base name), the JetStream store in
// dir. Anything else stays as shipped; a path or listener the test does
// not know is an error, so a new setting cannot slip through untested.
func rewriteProd(src string, i int, dir, files string, ports []harness.NATSPorts) (string, error) {
	me := ports[i]
	reps := []struct{ from, to string }{
		{"listen: 127.0.0.1:4222\n", fmt.Sprintf("listen: 127.0.0.1:%d\n", me.Client)},
		{"http: 127.0.0.1:8222\n", fmt.Sprintf("http: 127.0.0.1:%d\n", me.HTTP)},
		{"  listen: 0.0.0.0:6222\n", fmt.Sprintf("  listen: 127.0.0.1:%d\n", me.Cluster)},
		{"  listen: 0.0.0.0:8883\n", fmt.Sprintf("  listen: 127.0.0.1:%d\n", me.MQTT)},
	}
	for n := range ports {
		reps = append(reps, struct{ from, to string }{
			fmt.Sprintf("nats-route://mqtt-%d.example.com:6222\n", n+1),
			fmt.Sprintf("nats-route://127.0.0.1:%d\n", ports[n].Cluster),
		})
	}
	out := src
	for _, r := range reps {
		if strings.Count(out, r.from) != 1 {
			return "", fmt.Errorf("want one %q", strings.TrimSpace(r.from))
		}
		out = strings.Replace(out, r.from, r.to, 1)
	}
	var bad []string
	out = etcPath.ReplaceAllStringFunc(out, func(s string) string {
		p := strings.Trim(s, `"`)
		switch {
		case p == "/var/lib/nats":
			return strconv.Quote(filepath.Join(dir, "jetstream"))
		case filepath.Dir(p) == "/etc/nats/mqagent":
			for _, f := range prodFiles {
				if filepath.Base(p) == f {
					return strconv.Quote(filepath.Join(files, f))
				}
			}
		}
		bad = append(bad, p)
		return s
	})
	if len(bad) > 0 {
		return "", fmt.Errorf("unknown paths %v", bad)
	}
	if m := regexp.MustCompile(`(?m)^\s*(listen|http|https|port|websocket|leafnodes|gateway)\b.*$`).FindAllString(out, -1); len(m) != 4 {
		return "", fmt.Errorf("want the 4 known listeners, got %q", m)
	}
	return out, nil
}

// prodCluster is the shipped production configuration on three loopback
// nodes, with the test's certificates: a fleet CA (broker, hosts,
// dashboard), an operator CA, and the route certificates of
// gen-route-certs.sh; users.conf from gen-users.sh.
type prodCluster struct {
	nodes        []*harness.NATS
	fleet, opCA  *harness.PKI
	operatorCert harness.CertPair
}

// url is node i's MQTT-over-TLS address.
func (c *prodCluster) url(i int) string {
	return fmt.Sprintf("ssl://127.0.0.1:%d", c.nodes[i].Ports().MQTT)
}

// tlsFor is a client TLS configuration presenting cert (nil: none).
func (c *prodCluster) tlsFor(cert *harness.CertPair) *tls.Config { return c.fleet.ClientTLS(cert) }

func startProdCluster(t *testing.T, hosts []string, usersArgs ...string) *prodCluster {
	t.Helper()
	harness.RequireTool(t, "openssl", "apt-get install -y openssl")
	files := t.TempDir()
	c := &prodCluster{fleet: harness.NewPKI(t, "fleet CA"), opCA: harness.NewPKI(t, "operator CA")}
	broker := c.fleet.Server("127.0.0.1")
	c.operatorCert = c.opCA.Client("operator")
	copyFile := func(from, to string) {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(files, to), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(broker.CertFile, "broker.pem")
	copyFile(broker.KeyFile, "broker.key")
	fleetCA, err := os.ReadFile(c.fleet.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	opCA, err := os.ReadFile(c.opCA.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(files, "clients-ca.pem"), append(fleetCA, opCA...), 0o600); err != nil {
		t.Fatal(err)
	}
	runScript(t, files, "gen-route-certs.sh", "-d", "pki", "127.0.0.1")
	copyFile(filepath.Join(files, "pki", "route-127.0.0.1.pem"), "route.pem")
	copyFile(filepath.Join(files, "pki", "route-127.0.0.1.key"), "route.key")
	copyFile(filepath.Join(files, "pki", "route-ca.pem"), "route-ca.pem")
	// The harness PKI's certificates are /O=mqagent test/CN=NAME.
	runScript(t, files, "gen-users.sh", append(append([]string{"-O", "mqagent test", "-f", "users.conf"}, usersArgs...), hosts...)...)

	src, err := os.ReadFile(filepath.Join(natsDir(t), "prod", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	users, err := os.ReadFile(filepath.Join(files, "users.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := func(i int, dir string, ports []harness.NATSPorts) string {
		node, err := os.ReadFile(filepath.Join(natsDir(t), "prod", fmt.Sprintf("node%d.conf", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		// nats.conf includes node.conf and users.conf from its own
		// directory, as installed.
		if err := os.WriteFile(filepath.Join(dir, "node.conf"), node, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "users.conf"), users, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := rewriteProd(string(src), i, dir, files, ports)
		if err != nil {
			t.Fatalf("rewrite broker-config/nats/prod/nats.conf: %v", err)
		}
		return out
	}
	c.nodes = harness.StartNATSCluster(t, 3, conf, clusterWait)
	opTLS := c.tlsFor(&c.operatorCert)
	warmMQTT(t, c.nodes, func(n *harness.NATS) string { return fmt.Sprintf("ssl://127.0.0.1:%d", n.Ports().MQTT) }, opTLS, clusterWait)
	return c
}

// tlsAgentConfig is agentConfig over TLS with host's certificate.
func (c *prodCluster) tlsAgentConfig(t *testing.T, host string, urls []string) map[string]any {
	t.Helper()
	cert := c.fleet.Client(host)
	cfg := agentConfig(t, host, urls)
	cfg["broker"].(map[string]any)["tls"] = map[string]any{
		"ca_file":   c.fleet.CAFile(),
		"cert_file": cert.CertFile,
		"key_file":  cert.KeyFile,
	}
	return cfg
}

// rawClient is a plain MQTT client connected with cert to node i. It
// records every message it receives.
type rawClient struct {
	c    mqtt.Client
	msgs chan mqtt.Message
}

func (c *prodCluster) connect(t *testing.T, i int, cert *harness.CertPair) (*rawClient, error) {
	t.Helper()
	rc := &rawClient{msgs: make(chan mqtt.Message, 100)}
	opts := mqtt.NewClientOptions().AddBroker(c.url(i)).
		SetClientID("raw-" + strings.ToLower(harness.NewID())).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).
		SetTLSConfig(c.tlsFor(cert)).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			select {
			case rc.msgs <- m:
			default:
			}
		})
	rc.c = mqtt.NewClient(opts)
	tok := rc.c.Connect()
	if !tok.WaitTimeout(8 * time.Second) {
		rc.c.Disconnect(0)
		return nil, errors.New("no CONNACK")
	}
	if err := tok.Error(); err != nil {
		rc.c.Disconnect(0)
		return nil, err
	}
	t.Cleanup(func() { rc.c.Disconnect(100) })
	return rc, nil
}

// subscribe returns the broker's SUBACK code for filter at QoS 1 (0x80:
// refused).
func (rc *rawClient) subscribe(t *testing.T, filter string) byte {
	t.Helper()
	tok := rc.c.Subscribe(filter, 1, nil)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return tok.(*mqtt.SubscribeToken).Result()[filter]
}

// publish publishes at QoS 1 and waits for the PUBACK (which an MQTT
// 3.1.1 broker sends for a denied publish too).
func (rc *rawClient) publish(t *testing.T, topic string, retained bool, payload string) {
	t.Helper()
	tok := rc.c.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// TestNATSProductionConfig runs the shipped production configuration
// (broker-config/nats/prod: TLS with client certificates mapped to the
// users of gen-users.sh, TLS routes from gen-route-certs.sh) on three
// loopback nodes: agents on different nodes answer a signed broadcast,
// and the permissions give each identity what the Mosquitto acl gives it
// and nothing more.
func TestNATSProductionConfig(t *testing.T) {
	const host1, host2 = "prod-1", "prod-2"
	c := startProdCluster(t, []string{host1, host2})
	bin := harness.BuildAgent(t)
	harness.StartAgent(t, bin, c.tlsAgentConfig(t, host1, []string{c.url(0), c.url(1), c.url(2)}))
	harness.StartAgent(t, bin, c.tlsAgentConfig(t, host2, []string{c.url(1), c.url(2), c.url(0)}))
	op := harness.NewOperator(t, c.url(2), harness.WithTLSConfig(c.tlsFor(&c.operatorCert)))
	op.WatchStatus("+")
	op.Watch(op.Topics().Prefix + "/hosts/+/results/+")
	op.Watch(op.Topics().AllCmd())
	op.WaitStatus(t, host1, online(0), wait)
	op.WaitStatus(t, host2, online(0), wait)
	pub := newPublisher(t, c.url(2), c.tlsFor(&c.operatorCert))
	id := pub.send(protocol.Command{Kind: protocol.KindPing, Target: "all"}, wait)
	for host, r := range op.WaitFinalAll(t, id, []string{host1, host2}, wait) {
		if r.State != protocol.StateSucceeded {
			t.Fatalf("broadcast ping on %s: %s %q", host, r.State, r.Error)
		}
	}

	tp := op.Topics()
	h2cert := c.fleet.Client(host2)
	h2, err := c.connect(t, 0, &h2cert)
	if err != nil {
		t.Fatalf("%s connect: %v", host2, err)
	}
	dashCert := c.fleet.Client("dashboard")
	dash, err := c.connect(t, 1, &dashCert)
	if err != nil {
		t.Fatalf("dashboard connect: %v", err)
	}

	// Subscriptions are checked when made: refused with 0x80.
	for _, s := range []struct {
		who    string
		rc     *rawClient
		filter string
		want   byte
	}{
		{host2, h2, tp.HostCmd(host2), 1},
		{host2, h2, tp.AllCmd(), 1},
		{host2, h2, tp.GroupCmd("web"), 1},
		{host2, h2, tp.HostCmd(host1), 0x80},
		{host2, h2, tp.Status(host1), 0x80},
		{host2, h2, tp.Result(host1, "x"), 0x80},
		{host2, h2, "#", 0x80},
		{host2, h2, tp.Prefix + "/hosts/+/cmd", 0x80},
		{"dashboard", dash, tp.Status("+"), 1},
		{"dashboard", dash, tp.Metrics("+"), 1},
		{"dashboard", dash, tp.Result("+", "+"), 0x80},
		{"dashboard", dash, tp.AllCmd(), 0x80},
		{"dashboard", dash, tp.Prefix + "/#", 0x80},
	} {
		if got := s.rc.subscribe(t, s.filter); got != s.want {
			t.Errorf("%s subscribing to %s: SUBACK %#x, want %#x", s.who, s.filter, got, s.want)
		}
	}

	// Denied publishes are acknowledged and dropped: host2 forging host1's
	// status, a command, a result; the dashboard sending a command. The
	// operator reads all of these topics; host2's own metrics, published
	// last, prove the forgeries had their chance to arrive.
	forged := `{"v":1,"host":"` + host1 + `","state":"offline","session":99}`
	h2.publish(t, tp.Status(host1), true, forged)
	h2.publish(t, tp.AllCmd(), false, `{"v":1,"id":"forged-1","kind":"ping","target":"all"}`)
	h2.publish(t, tp.Result(host1, "forged-2"), false, `{"v":1,"id":"forged-2","host":"`+host1+`","state":"succeeded"}`)
	dash.publish(t, tp.AllCmd(), false, `{"v":1,"id":"forged-3","kind":"ping","target":"all"}`)
	op.Watch(tp.Metrics(host2))
	marker := `"sync":"` + harness.NewID() + `"`
	h2.publish(t, tp.Metrics(host2), false, `{"v":1,"host":"`+host2+`",`+marker+`}`)
	op.WaitMessage(t, tp.Metrics(host2), func(m harness.Message) bool { return strings.Contains(string(m.Payload), marker) }, wait)
	op.AssertNoResult(t, "forged-2", 500*time.Millisecond)
	for _, s := range op.Statuses(host1) {
		if s.Session == 99 {
			t.Errorf("forged status of %s delivered: %+v", host1, s)
		}
	}
	if n := len(op.Messages(tp.AllCmd())); n != 1 {
		t.Errorf("%d messages on %s, want the operator's broadcast only", n, tp.AllCmd())
	}

	// No certificate, or one of an unknown CA: no connection.
	if _, err := c.connect(t, 0, nil); err == nil {
		t.Errorf("a client without a certificate connected")
	}
	stranger := harness.NewPKI(t, "stranger CA").Client(host1)
	if _, err := c.connect(t, 0, &stranger); err == nil {
		t.Errorf("a client with a certificate of an unknown CA connected")
	}
	// A certificate of a trusted CA whose subject has no user.
	nobody := c.fleet.Client("nobody")
	if _, err := c.connect(t, 0, &nobody); err == nil {
		t.Errorf("a client whose certificate subject has no user connected")
	}
}

// TestRewriteProd: the rewrite of the production nats.conf refuses a file
// that drifted from what the test knows.
func TestRewriteProd(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(natsDir(t), "prod", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	ports := []harness.NATSPorts{
		{Client: 1, HTTP: 2, Cluster: 3, MQTT: 4},
		{Client: 5, HTTP: 6, Cluster: 7, MQTT: 8},
		{Client: 9, HTTP: 10, Cluster: 11, MQTT: 12},
	}
	got, err := rewriteProd(src, 1, "/n", "/f", ports)
	if err != nil {
		t.Fatalf("shipped nats.conf: %v", err)
	}
	for _, want := range []string{"listen: 127.0.0.1:5\n", "http: 127.0.0.1:6\n", "  listen: 127.0.0.1:7\n", "  listen: 127.0.0.1:8\n",
		"nats-route://127.0.0.1:3\n", "nats-route://127.0.0.1:11\n", `store_dir: "/n/jetstream"`, `ca_file: "/f/clients-ca.pem"`, `cert_file: "/f/route.pem"`} {
		if !strings.Contains(got, want) {
			t.Errorf("rewritten nats.conf lacks %q", want)
		}
	}
	for name, bad := range map[string]string{
		"unknown file":  strings.Replace(src, "/etc/nats/mqagent/route-ca.pem", "/etc/nats/mqagent/other.pem", 1),
		"unknown path":  src + "\npid_file: \"/run/nats.pid\"\n",
		"new listener":  src + "\nwebsocket { port: 8443 }\n",
		"missing route": strings.Replace(src, "nats-route://mqtt-3.example.com:6222\n", "", 1),
	} {
		if _, err := rewriteProd(bad, 0, "/n", "/f", ports); err == nil {
			t.Errorf("%s: rewrite accepted it", name)
		}
	}
}

// TestGenUsers: gen-users.sh refuses host ids NATS MQTT cannot carry or
// that are reserved, and in strict mode grants each host its own groups
// only.
func TestGenUsers(t *testing.T) {
	bash := harness.RequireTool(t, "bash", "")
	run := func(args ...string) (string, error) {
		dir := t.TempDir()
		cmd := exec.Command(bash, append([]string{filepath.Join(natsDir(t), "prod", "gen-users.sh"), "-f", filepath.Join(dir, "users.conf")}, args...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), err
		}
		b, rerr := os.ReadFile(filepath.Join(dir, "users.conf"))
		if rerr != nil {
			t.Fatal(rerr)
		}
		return string(b), nil
	}
	for _, args := range [][]string{{"web.example.com"}, {"operator"}, {"dashboard"}, {"Web-01"}, {}, {"-P", "a/+/b", "web-01"}} {
		if out, err := run(args...); err == nil {
			t.Errorf("gen-users.sh %q succeeded:\n%s", args, out)
		}
	}
	groups := filepath.Join(t.TempDir(), "groups.txt")
	if err := os.WriteFile(groups, []byte("web-01 frontend eu # comment\ndb-01\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run("-G", groups, "-o", "alice", "-P", "acme/v1")
	if err != nil {
		t.Fatalf("strict: %v\n%s", err, out)
	}
	for _, want := range []string{
		`user: "CN=web-01,O=mqagent"`,
		`subscribe: { allow: ["acme.v1.hosts.web-01.cmd", "acme.v1.all.cmd", "acme.v1.groups.frontend.cmd", "acme.v1.groups.eu.cmd", "$MQTT.sub.>"] }`,
		`subscribe: { allow: ["acme.v1.hosts.db-01.cmd", "acme.v1.all.cmd", "$MQTT.sub.>"] }`,
		`publish: { allow: ["acme.v1.hosts.db-01.status", "acme.v1.hosts.db-01.inventory", "acme.v1.hosts.db-01.metrics", "acme.v1.hosts.db-01.audit", "acme.v1.hosts.db-01.results.*", "acme.v1.hosts.db-01.results.*.out"] }`,
		`user: "CN=operator,OU=alice,O=mqagent"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("strict users.conf lacks %s:\n%s", want, out)
		}
	}
	// Only the two operators (which publish commands) name every group.
	if n := strings.Count(out, `"acme.v1.groups.*.cmd"`); n != 2 {
		t.Errorf("strict users.conf names every group's topic %d times, want 2 (the operators):\n%s", n, out)
	}
}
