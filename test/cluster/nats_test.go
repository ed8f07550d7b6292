package cluster

import (
	"bytes"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// Time limits of the tests.
const (
	// clusterWait bounds the formation of the cluster (routes, JetStream
	// meta leader).
	clusterWait = 30 * time.Second
	// wait bounds one expected event on a healthy cluster.
	wait = 15 * time.Second
	// failoverWait bounds the failover of an agent whose node died: the
	// surviving nodes elect new leaders for the MQTT streams and
	// consumers, and the agent reconnects with its backoff.
	failoverWait = 30 * time.Second
)

// opsKey signs the commands of the tests (a fixed seed, so a failure
// reproduces); opsKid names it in the agents' trusted_keys.
var (
	opsKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x5c}, ed25519.SeedSize))
	opsKid = "cluster-ops"
)

// agentConfig is the harness's default configuration for host, with
// urls as its broker list, signed commands required (as in production),
// and a short reconnect backoff so that a failover is quick.
func agentConfig(t *testing.T, host string, urls []string) map[string]any {
	t.Helper()
	cfg := harness.DefaultConfig(host, urls[0], filepath.Join(t.TempDir(), "data"))
	b := cfg["broker"].(map[string]any)
	b["urls"] = urls
	b["reconnect_min"] = "100ms"
	b["reconnect_max"] = "1s"
	s := cfg["security"].(map[string]any)
	s["require_signed"] = true
	s["trusted_keys"] = []map[string]any{{
		"id":         opsKid,
		"public_key": base64.StdEncoding.EncodeToString(opsKey.Public().(ed25519.PublicKey)),
		"kinds":      []string{"*"},
	}}
	return cfg
}

// appendLine is an exec command for target that appends line to file:
// how many times it ran is how many times the line is in the file.
func appendLine(target, file, line string) protocol.Command {
	args, _ := json.Marshal(protocol.ExecArgs{Argv: []string{"sh", "-c", `printf '%s\n' "$1" >> "$2"`, "sh", line, file}})
	return protocol.Command{Kind: protocol.KindExec, Target: target, Args: args}
}

// online matches an online status with a session above after.
func online(after uint64) func(protocol.Status) bool {
	return func(s protocol.Status) bool { return s.State == protocol.StatusOnline && s.Session > after }
}

// waitConnectedTo waits until node lists host among its MQTT clients.
func waitConnectedTo(t *testing.T, node *harness.NATS, host string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ids, err := node.MQTTClients()
		if err == nil && slices.Contains(ids, host) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not connected to node %s within %v (clients %v, err %v)", host, node.URL(), timeout, ids, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nodeOf waits until one of nodes lists host among its MQTT clients and
// returns that node's index.
func nodeOf(t *testing.T, nodes []*harness.NATS, host string, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for i, n := range nodes {
			if ids, err := n.MQTTClients(); err == nil && slices.Contains(ids, host) {
				return i
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is connected to no node within %v", host, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// warmMQTT connects a throwaway MQTT client (clean session) to each node
// until one is accepted. The first MQTT client of an account makes a node
// create or look up the MQTT streams; on a cluster that has just formed
// that can outlast nats-server's 4 s JetStream request timeout and the
// CONNECT is refused ("unable to connect: lookup messages stream …
// timeout"). The agents would fail over to another URL and retry, but the
// test wants them on their first node. tlsConf is nil for plain tcp.
func warmMQTT(t *testing.T, nodes []*harness.NATS, url func(*harness.NATS) string, tlsConf *tls.Config, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, n := range nodes {
		for attempt := 1; ; attempt++ {
			opts := mqtt.NewClientOptions().AddBroker(url(n)).
				SetClientID("warm-" + strings.ToLower(harness.NewID())).
				SetCleanSession(true).SetAutoReconnect(false).
				SetConnectRetry(false).SetConnectTimeout(6 * time.Second)
			if tlsConf != nil {
				opts.SetTLSConfig(tlsConf)
			}
			c := mqtt.NewClient(opts)
			tok := c.Connect()
			ok := tok.WaitTimeout(8 * time.Second)
			err := tok.Error()
			if ok && err == nil {
				c.Disconnect(100)
				break
			}
			c.Disconnect(0)
			if time.Now().After(deadline) {
				t.Fatalf("MQTT on %s not ready within %v after %d attempts: %v", url(n), timeout, attempt, err)
			}
			// A refusal can be quick: do not hammer the node.
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// publisher is an MQTT client (clean session, QoS 1) that sends signed
// commands and publishes again until the broker acknowledges. nats-server
// stores every QoS 1 message in JetStream before its PUBACK; while the
// stream's leader is being replaced (a node died) the store times out
// after 4 s and nats-server closes the publisher's connection. A command
// sent again has the same id: the agent runs it once (a duplicate id only
// publishes the stored result again), so retrying is safe.
type publisher struct {
	t      *testing.T
	url    string
	tls    *tls.Config
	client mqtt.Client
	topics protocol.Topics
	// retries counts publishes sent again.
	retries int
}

// newPublisher makes a publisher for url; tlsConf is nil for tcp://.
func newPublisher(t *testing.T, url string, tlsConf *tls.Config) *publisher {
	p := &publisher{t: t, url: url, tls: tlsConf, topics: protocol.Topics{Prefix: protocol.DefaultPrefix}}
	t.Cleanup(func() {
		if p.client != nil {
			p.client.Disconnect(100)
		}
	})
	return p
}

// connect connects the client unless it is connected.
func (p *publisher) connect() error {
	if p.client != nil && p.client.IsConnectionOpen() {
		return nil
	}
	if p.client != nil {
		p.client.Disconnect(0)
	}
	opts := mqtt.NewClientOptions().AddBroker(p.url).
		SetClientID("pub-" + strings.ToLower(harness.NewID())).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(6 * time.Second).SetKeepAlive(10 * time.Second)
	if p.tls != nil {
		opts.SetTLSConfig(p.tls)
	}
	p.client = mqtt.NewClient(opts)
	tok := p.client.Connect()
	if !tok.WaitTimeout(8 * time.Second) {
		return errors.New("connect: no CONNACK")
	}
	return tok.Error()
}

// send signs cmd (filled in: v, id, issued_at) and publishes it on the
// topic its target names, retrying until timeout; it returns the id.
func (p *publisher) send(cmd protocol.Command, timeout time.Duration) string {
	p.t.Helper()
	harness.Fill(&cmd)
	topic, err := harness.CmdTopic(p.topics, cmd.Target)
	if err != nil {
		p.t.Fatalf("publisher: %v", err)
	}
	b, err := json.Marshal(cmd)
	if err != nil {
		p.t.Fatalf("publisher: %v", err)
	}
	payload := harness.Sign(b, opsKid, opsKey)
	deadline := time.Now().Add(timeout)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			p.retries++
		}
		err := p.connect()
		if err == nil {
			tok := p.client.Publish(topic, 1, false, payload)
			switch {
			case !tok.WaitTimeout(6 * time.Second):
				err = errors.New("no PUBACK")
			case tok.Error() != nil:
				err = tok.Error()
			case !p.client.IsConnectionOpen():
				// paho completes pending tokens when the connection drops.
				err = errors.New("connection lost")
			}
		}
		if err == nil {
			return cmd.ID
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("publisher: %s not acknowledged within %v (%d attempts): %v", topic, timeout, attempt+1, err)
		}
	}
}

// TestNATSClusterFailover runs two agents on a 3-node NATS cluster (the
// shipped development configuration): agent A prefers node1, agent B
// node2, the operator is on node3. A signed broadcast reaches both. Then
// node1 is killed (SIGKILL); commands sent to A right away, while it is
// disconnected, must all run exactly once after A has failed over to
// another node, and B must not notice.
//
// The operator subscribes once, before the kill: with a node down, every
// new QoS 1 subscription is a new R3 JetStream consumer whose creation can
// outlast nats-server's 4 s JetStream timeout (docs/cluster.md).
func TestNATSClusterFailover(t *testing.T) {
	nodes := harness.StartNATSCluster(t, 3, devConf(t), clusterWait)
	warmMQTT(t, nodes, (*harness.NATS).URL, nil, clusterWait)
	bin := harness.BuildAgent(t)
	url := func(i int) string { return nodes[i].URL() }

	const hostA, hostB = "host-a", "host-b"
	a := harness.StartAgent(t, bin, agentConfig(t, hostA, []string{url(0), url(1), url(2)}))
	harness.StartAgent(t, bin, agentConfig(t, hostB, []string{url(1), url(2), url(0)}))
	op := harness.NewOperator(t, url(2))
	op.WatchStatus("+")
	op.WatchAudit("+")
	op.Watch(op.Topics().Prefix + "/hosts/+/results/+")
	pub := newPublisher(t, url(2), nil)
	stA := op.WaitStatus(t, hostA, online(0), wait)
	stB := op.WaitStatus(t, hostB, online(0), wait)
	// A node still setting up its MQTT streams can refuse a CONNECT
	// (warmMQTT makes it rare): an agent then fails over to its next URL.
	// The test wants A on node1; a restart makes it start again from its
	// first URL (bounded).
	for attempt := 1; nodeOf(t, nodes, hostA, wait) != 0; attempt++ {
		if attempt > 3 {
			t.Fatalf("%s is not on node1 (its first URL) after %d restarts", hostA, attempt-1)
		}
		t.Logf("%s started on another node than node1; restarting it (%d)", hostA, attempt)
		a.Restart()
		stA = op.WaitStatus(t, hostA, online(stA.Session), wait)
	}
	waitConnectedTo(t, nodes[1], hostB, wait)

	// A broadcast reaches both agents, over three nodes.
	id := pub.send(protocol.Command{Kind: protocol.KindPing, Target: "all"}, wait)
	for host, r := range op.WaitFinalAll(t, id, []string{hostA, hostB}, wait) {
		if r.State != protocol.StateSucceeded {
			t.Fatalf("broadcast ping on %s: %s %q", host, r.State, r.Error)
		}
	}
	// The "finished" audit record is the last thing an agent publishes
	// for a command: after it, neither agent publishes anything at QoS 1
	// until the next command (metrics are QoS 0). A QoS 1 publish while
	// the MQTT streams elect new leaders would cost the publisher its
	// connection (docs/cluster.md), and this test wants to see B keep
	// its own.
	for _, h := range []string{hostA, hostB} {
		op.WaitAudit(t, h, func(a protocol.Audit) bool { return a.ID == id && a.Event == protocol.EventFinished }, wait)
	}

	// Kill agent A's node and queue commands for A at once. Each appends
	// its own line to a file: the file says how often each one ran.
	const queued = 5
	ranFile := filepath.Join(t.TempDir(), "ran.txt")
	statusesB := len(op.Statuses(hostB))
	killed := time.Now()
	nodes[0].Kill()
	var ids []string
	for i := range queued {
		ids = append(ids, pub.send(appendLine("host:"+hostA, ranFile, "cmd-"+strconv.Itoa(i)), failoverWait))
	}
	queuedAt := time.Since(killed)

	// A comes back on another node with a new session.
	back := op.WaitStatus(t, hostA, online(stA.Session), failoverWait)
	failover := time.Since(killed)
	var now []string
	for _, n := range nodes[1:] {
		ids, err := n.MQTTClients()
		if err != nil {
			t.Fatalf("connz: %v", err)
		}
		now = append(now, ids...)
	}
	if !slices.Contains(now, hostA) {
		t.Errorf("after the failover %s is connected to neither node2 nor node3 (clients %v)", hostA, now)
	}

	// Every queued command ran once, and A's results reach the operator
	// on node3.
	for i, id := range ids {
		r := op.WaitFinal(t, id, hostA, failoverWait)
		if r.State != protocol.StateSucceeded {
			t.Errorf("queued command %d: %s %q", i, r.State, r.Error)
		}
	}
	allDone := time.Since(killed)
	b, err := os.ReadFile(ranFile)
	if err != nil {
		t.Fatalf("queued commands: %v", err)
	}
	for i := range queued {
		if n := strings.Count("\n"+string(b), "\ncmd-"+strconv.Itoa(i)+"\n"); n != 1 {
			t.Errorf("queued command %d ran %d times; file:\n%s", i, n, b)
		}
	}
	if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) != queued {
		t.Errorf("%d lines for %d queued commands:\n%s", len(lines), queued, b)
	}

	// B did not notice: same session, still answering.
	id = pub.send(protocol.Command{Kind: protocol.KindPing, Target: "host:" + hostB}, wait)
	if r := op.WaitFinal(t, id, hostB, wait); r.State != protocol.StateSucceeded {
		t.Errorf("ping %s after the kill: %s %q", hostB, r.State, r.Error)
	}
	for _, s := range op.Statuses(hostB)[statusesB:] {
		t.Errorf("%s published a status after node1 died: %s/%s session %d (was %d)", hostB, s.State, s.Reason, s.Session, stB.Session)
	}
	if !a.Running() {
		t.Errorf("agent %s exited", hostA)
	}
	t.Logf("failover: %d commands for %s published %v after the kill (%d publishes sent again); %s online again (session %d -> %d) after %v; all final after %v",
		queued, hostA, queuedAt.Round(time.Millisecond), pub.retries, hostA, stA.Session, back.Session, failover.Round(time.Millisecond), allDone.Round(time.Millisecond))
}
