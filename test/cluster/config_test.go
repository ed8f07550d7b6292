package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/mqagent/mqagent/test/integration/harness"
)

// shippedDevPorts are the ports of node1..node3 in
// broker-config/nats/dev/node{1,2,3}.conf.
var shippedDevPorts = []harness.NATSPorts{
	{Client: 4222, HTTP: 8222, Cluster: 6222, MQTT: 1883},
	{Client: 4223, HTTP: 8223, Cluster: 6223, MQTT: 1884},
	{Client: 4224, HTTP: 8224, Cluster: 6224, MQTT: 1885},
}

// natsDir is broker-config/nats of this repository.
func natsDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "broker-config", "nats"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// shippedDev reads the three shipped development node files.
func shippedDev(t testing.TB) []string {
	t.Helper()
	var out []string
	for i := range shippedDevPorts {
		b, err := os.ReadFile(filepath.Join(natsDir(t), "dev", fmt.Sprintf("node%d.conf", i+1)))
		if err != nil {
			t.Fatalf("shipped dev config: %v", err)
		}
		out = append(out, string(b))
	}
	return out
}

// loopbackPort matches a loopback address with its port.
var loopbackPort = regexp.MustCompile(`127\.0\.0\.1:([0-9]+)`)

// rewriteDev rewrites shipped node file src of node i for a test: every
// shipped port becomes the test's port of the same node and listener, and
// the JetStream store moves to dir. A port the shipped files do not
// define, or a missing listener or store, is an error: a setting the test
// does not know cannot slip through.
func rewriteDev(src string, i int, dir string, ports []harness.NATSPorts) (string, error) {
	if len(ports) != len(shippedDevPorts) {
		return "", fmt.Errorf("want %d nodes, got %d", len(shippedDevPorts), len(ports))
	}
	mapping := map[int]int{}
	for j, p := range shippedDevPorts {
		mapping[p.Client] = ports[j].Client
		mapping[p.HTTP] = ports[j].HTTP
		mapping[p.Cluster] = ports[j].Cluster
		mapping[p.MQTT] = ports[j].MQTT
	}
	var bad []string
	seen := map[int]bool{}
	out := loopbackPort.ReplaceAllStringFunc(src, func(s string) string {
		old, _ := strconv.Atoi(loopbackPort.FindStringSubmatch(s)[1])
		p, ok := mapping[old]
		if !ok {
			bad = append(bad, s)
			return s
		}
		seen[old] = true
		return "127.0.0.1:" + strconv.Itoa(p)
	})
	if len(bad) > 0 {
		return "", fmt.Errorf("unknown addresses %v", bad)
	}
	own := shippedDevPorts[i]
	for _, p := range []int{own.Client, own.HTTP, own.Cluster, own.MQTT} {
		line := regexp.MustCompile(`(?m)^\s*(listen|http): 127\.0\.0\.1:` + strconv.Itoa(p) + `\s*$`)
		if !line.MatchString(src) {
			return "", fmt.Errorf("node%d.conf does not listen on its port %d", i+1, p)
		}
	}
	for j := range shippedDevPorts {
		if !seen[shippedDevPorts[j].Cluster] {
			return "", fmt.Errorf("node%d.conf has no route to node%d", i+1, j+1)
		}
	}
	store := fmt.Sprintf(`store_dir: "./data/node%d"`, i+1)
	if strings.Count(out, store) != 1 {
		return "", fmt.Errorf("node%d.conf: want one %s", i+1, store)
	}
	out = strings.Replace(out, store, "store_dir: "+strconv.Quote(filepath.Join(dir, "jetstream")), 1)
	return out, nil
}

// devConf is the harness configuration maker for the shipped dev files.
func devConf(t testing.TB) harness.NATSConf {
	t.Helper()
	srcs := shippedDev(t)
	return func(i int, dir string, ports []harness.NATSPorts) string {
		conf, err := rewriteDev(srcs[i], i, dir, ports)
		if err != nil {
			t.Fatalf("rewrite broker-config/nats/dev/node%d.conf: %v", i+1, err)
		}
		return conf
	}
}

// TestDevNodeFilesAgree: the three shipped development node files are one
// file with only the per-node values changed (server name, ports, store),
// so a setting changed in one cannot be forgotten in the others.
func TestDevNodeFilesAgree(t *testing.T) {
	srcs := shippedDev(t)
	normal := func(i int) string {
		s := srcs[i]
		p := shippedDevPorts[i]
		for _, r := range []struct{ from, to string }{
			{fmt.Sprintf("Node %d of", i+1), "Node N of"},
			{fmt.Sprintf("node%d\n", i+1), "nodeN\n"},
			{fmt.Sprintf("./data/node%d", i+1), "./data/nodeN"},
			{fmt.Sprintf("listen: 127.0.0.1:%d\n", p.Client), "listen: CLIENT\n"},
			{fmt.Sprintf("http: 127.0.0.1:%d\n", p.HTTP), "http: HTTP\n"},
			{fmt.Sprintf("  listen: 127.0.0.1:%d\n", p.Cluster), "  listen: CLUSTER\n"},
			{fmt.Sprintf("  listen: 127.0.0.1:%d\n", p.MQTT), "  listen: MQTT\n"},
		} {
			if !strings.Contains(s, r.from) {
				t.Errorf("node%d.conf: no %q", i+1, r.from)
			}
			s = strings.ReplaceAll(s, r.from, r.to)
		}
		return s
	}
	want := normal(0)
	for i := 1; i < len(srcs); i++ {
		if got := normal(i); got != want {
			t.Errorf("node%d.conf differs from node1.conf beyond the per-node values:\n%s", i+1, lineDiff(want, got))
		}
	}
}

// lineDiff lists the lines that differ between two texts of the same
// length in lines (enough for files that should be equal).
func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for i := range max(len(al), len(bl)) {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			out = append(out, fmt.Sprintf("line %d:\n  - %s\n  + %s", i+1, x, y))
		}
	}
	return strings.Join(out, "\n")
}

// TestRewriteDev: the rewrite refuses a file that drifted from what the
// test knows.
func TestRewriteDev(t *testing.T) {
	srcs := shippedDev(t)
	ports := []harness.NATSPorts{
		{Client: 1, HTTP: 2, Cluster: 3, MQTT: 4},
		{Client: 5, HTTP: 6, Cluster: 7, MQTT: 8},
		{Client: 9, HTTP: 10, Cluster: 11, MQTT: 12},
	}
	got, err := rewriteDev(srcs[1], 1, "/tmp/x", ports)
	if err != nil {
		t.Fatalf("shipped node2.conf: %v", err)
	}
	for _, want := range []string{"127.0.0.1:5\n", "127.0.0.1:6\n", "127.0.0.1:7\n", "127.0.0.1:8\n",
		"nats-route://127.0.0.1:3\n", "nats-route://127.0.0.1:11\n", `store_dir: "/tmp/x/jetstream"`} {
		if !strings.Contains(got, want) {
			t.Errorf("rewritten node2.conf lacks %q", want)
		}
	}
	for name, src := range map[string]string{
		"unknown port":   srcs[0] + "\nhttps: 127.0.0.1:9999\n",
		"missing route":  strings.Replace(srcs[0], "nats-route://127.0.0.1:6224", "", 1),
		"missing store":  strings.Replace(srcs[0], `store_dir: "./data/node1"`, `store_dir: "/var/x"`, 1),
		"missing listen": strings.Replace(srcs[0], "listen: 127.0.0.1:1883", "listen: 0.0.0.0:1", 1),
	} {
		if _, err := rewriteDev(src, 0, "/tmp/x", ports); err == nil {
			t.Errorf("%s: rewrite accepted it", name)
		}
	}
}
