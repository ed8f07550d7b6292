package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// NATSPorts are the loopback ports of one nats-server node.
type NATSPorts struct {
	// Client is the NATS protocol listener.
	Client int
	// HTTP is the monitoring endpoint (/healthz, /routez, /jsz, /connz).
	HTTP int
	// Cluster is the route listener.
	Cluster int
	// MQTT is the MQTT listener.
	MQTT int
}

// NATSConf makes the configuration file of node i (0-based) of a cluster:
// dir is the node's own directory (for its JetStream store and files) and
// ports holds every node's ports, ports[i] its own. It returns the whole
// file; the node must listen on 127.0.0.1 on its ports and log to stderr
// (nats-server's default).
type NATSConf func(i int, dir string, ports []NATSPorts) string

// NATS is one nats-server node run for one test: it implements
// TestBroker with its MQTT listener as URL (tcp:// even when the
// configuration puts TLS on it).
type NATS struct {
	serverProc
	dir   string
	ports NATSPorts
}

// Dir is the node's directory: its configuration file (server.conf) and
// whatever the configuration writes there.
func (n *NATS) Dir() string { return n.dir }

// Ports are the node's ports.
func (n *NATS) Ports() NATSPorts { return n.ports }

// ConfPath is the node's configuration file.
func (n *NATS) ConfPath() string { return filepath.Join(n.dir, "server.conf") }

// natsHTTP bounds one request to a monitoring endpoint.
var natsHTTP = &http.Client{Timeout: 2 * time.Second}

// monitor GETs path from the node's monitoring endpoint and decodes the
// JSON answer into v (when v is not nil). Any status but 200 is an error
// carrying the body.
func (n *NATS) monitor(path string, v any) error {
	resp, err := natsHTTP.Get(fmt.Sprintf("http://%s%s", hostPort(n.ports.HTTP), path))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, truncate(body))
	}
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// Healthy reports why the node is not healthy, nil when it is: /healthz
// answers 200 once the node accepts connections and, with JetStream in a
// cluster, once there is a meta leader, this node is current with it and
// every stream and consumer replica it holds is current.
func (n *NATS) Healthy() error { return n.monitor("/healthz", nil) }

// Routes is the number of routes the node has to other nodes.
func (n *NATS) Routes() (int, error) {
	var rz struct {
		NumRoutes int `json:"num_routes"`
	}
	if err := n.monitor("/routez", &rz); err != nil {
		return 0, err
	}
	return rz.NumRoutes, nil
}

// MQTTClients are the MQTT client ids connected to this node right now.
func (n *NATS) MQTTClients() ([]string, error) {
	var cz struct {
		Connections []struct {
			MQTTClient string `json:"mqtt_client"`
		} `json:"connections"`
	}
	if err := n.monitor("/connz?limit=10000", &cz); err != nil {
		return nil, err
	}
	var ids []string
	for _, c := range cz.Connections {
		if c.MQTTClient != "" {
			ids = append(ids, c.MQTTClient)
		}
	}
	return ids, nil
}

// RequireNATS returns the path of the nats-server binary, or skips the
// test (fails it under CI=true): see RequireTool.
func RequireNATS(t testing.TB) string {
	t.Helper()
	return RequireTool(t, "nats-server", "apt-get install -y nats-server")
}

// StartNATSCluster starts an n-node nats-server cluster on free loopback
// ports, each node with the configuration conf makes for it in a
// temporary directory of the test, and stops every node in the test's
// cleanup. It returns once every node is up (see WaitNATSCluster), within
// timeout. A port can be taken by someone else between the probe and the
// bind: when a node exits during the start, the whole cluster is started
// again on other ports (three tries). It skips or fails like RequireNATS
// without nats-server.
func StartNATSCluster(t testing.TB, n int, conf NATSConf, timeout time.Duration) []*NATS {
	t.Helper()
	bin := RequireNATS(t)
	if n < 1 {
		t.Fatalf("nats: a cluster needs at least one node, got %d", n)
	}
	var err error
	for range 3 {
		var nodes []*NATS
		nodes, err = startNATSNodes(t, bin, n, conf)
		if err == nil {
			WaitNATSCluster(t, timeout, nodes...)
			return nodes
		}
		for _, node := range nodes {
			node.Kill()
		}
		if !errors.Is(err, errExited) {
			break
		}
	}
	t.Fatalf("nats: %v", err)
	return nil
}

// startNATSNodes writes every node's configuration and starts the nodes;
// each is up once it logged "Server is ready" and accepts TCP connections
// on its MQTT port. The nodes started so far are returned with an error.
func startNATSNodes(t testing.TB, bin string, n int, conf NATSConf) ([]*NATS, error) {
	free, err := freePorts(4 * n)
	if err != nil {
		return nil, err
	}
	ports := make([]NATSPorts, n)
	for i := range ports {
		ports[i] = NATSPorts{Client: free[4*i], HTTP: free[4*i+1], Cluster: free[4*i+2], MQTT: free[4*i+3]}
	}
	var nodes []*NATS
	for i := range n {
		dir := t.TempDir()
		node := &NATS{
			serverProc: serverProc{
				t:         t,
				name:      fmt.Sprintf("nats node %d", i+1),
				bin:       bin,
				logPath:   filepath.Join(dir, "nats.log"),
				port:      ports[i].MQTT,
				readyLine: "Server is ready",
			},
			dir:   dir,
			ports: ports[i],
		}
		node.args = []string{"-c", node.ConfPath()}
		if err := os.WriteFile(node.ConfPath(), []byte(conf(i, dir, ports)), 0o600); err != nil {
			return nodes, fmt.Errorf("node %d: %w", i+1, err)
		}
		t.Cleanup(node.cleanup)
		if err := node.start(); err != nil {
			return nodes, fmt.Errorf("node %d: %w\nlog:\n%s", i+1, err, node.LogTail())
		}
		nodes = append(nodes, node)
	}
	return nodes, nil
}

// WaitNATSCluster waits until every running node of nodes has a route to
// each other running node and is healthy (Healthy: a JetStream meta leader
// that it is current with), e.g. after a node was killed or restarted. It
// polls the monitoring endpoints (a cluster sends no event) and fails the
// test with each node's last answer when timeout passes.
func WaitNATSCluster(t testing.TB, timeout time.Duration, nodes ...*NATS) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var running []*NATS
		for _, n := range nodes {
			if n.PID() != 0 {
				running = append(running, n)
			}
		}
		var problems []error
		for _, n := range running {
			routes, err := n.Routes()
			switch {
			case err != nil:
				problems = append(problems, fmt.Errorf("%s: %w", n.name, err))
			case routes < len(running)-1:
				problems = append(problems, fmt.Errorf("%s: %d route(s), want %d", n.name, routes, len(running)-1))
			default:
				if err := n.Healthy(); err != nil {
					problems = append(problems, fmt.Errorf("%s: %w", n.name, err))
				}
			}
		}
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats: cluster not ready within %v: %v", timeout, errors.Join(problems...))
		}
		time.Sleep(pollInterval * 5)
	}
}

// Interface check.
var _ TestBroker = (*NATS)(nil)
