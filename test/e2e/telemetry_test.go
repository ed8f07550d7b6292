package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// The contract's required fields (docs/PROTOCOL.md, "Inventory" and
// "Metrics"). A path ending in [] is a list whose every element must have
// the fields after it; "{}" is an object.
var (
	inventoryRequired = []string{
		"v", "host", "ts", "hostname", "os", "platform", "platform_version",
		"kernel_version", "arch", "boot_time", "cpu.model", "cpu.cores", "cpu.threads",
		"mem.total", "disks[].mount", "disks[].fstype", "disks[].total",
		"interfaces[].name", "interfaces[].mac", "interfaces[].addrs",
		"agent.version", "groups", "facts",
	}
	metricsRequired = []string{
		"v", "host", "ts", "cpu.percent", "mem.total", "mem.used", "mem.available", "mem.percent",
		"swap.total", "swap.used", "disks[].mount", "disks[].total", "disks[].used", "disks[].percent",
		"net[].name", "net[].bytes_sent", "net[].bytes_recv", "uptime_ms", "procs",
		"agent.rss_bytes", "agent.cpu_percent", "agent.goroutines", "agent.running", "agent.queued",
	}
	// Byte counts are integers.
	metricsIntegers = []string{
		"mem.total", "mem.used", "mem.available", "swap.total", "swap.used",
		"disks[].total", "disks[].used", "net[].bytes_sent", "net[].bytes_recv",
		"uptime_ms", "procs", "agent.rss_bytes", "agent.goroutines",
	}
)

// requireFields checks that every path is present (and, with integers,
// that it is a whole number) in a JSON document, decoded with UseNumber.
func requireFields(t *testing.T, what string, doc []byte, paths, integers []string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("%s: %v: %s", what, err, doc)
	}
	isInt := map[string]bool{}
	for _, p := range integers {
		isInt[p] = true
	}
	for _, p := range paths {
		for _, v := range lookup(t, what, m, p) {
			if n, ok := v.(json.Number); isInt[p] && (!ok || strings.ContainsAny(n.String(), ".eE")) {
				t.Errorf("%s: %s = %v, want an integer", what, p, v)
			}
		}
	}
	return m
}

// lookup returns the values at a path like "disks[].mount", failing the
// test when a part is missing or a list is empty.
func lookup(t *testing.T, what string, v any, path string) []any {
	t.Helper()
	vals := []any{v}
	for _, part := range strings.Split(path, ".") {
		list := strings.HasSuffix(part, "[]")
		key := strings.TrimSuffix(part, "[]")
		var next []any
		for _, cur := range vals {
			obj, ok := cur.(map[string]any)
			if !ok {
				t.Errorf("%s: %s: parent of %q is %T, not an object", what, path, key, cur)
				return nil
			}
			x, ok := obj[key]
			if !ok || x == nil {
				t.Errorf("%s: required field %s is missing", what, path)
				return nil
			}
			if !list {
				next = append(next, x)
				continue
			}
			l, ok := x.([]any)
			if !ok || len(l) == 0 {
				t.Errorf("%s: %s must be a non-empty list, is %v", what, key, x)
				return nil
			}
			next = append(next, l...)
		}
		vals = next
	}
	return vals
}

// Every required field of the inventory and the metrics is published
// against a real broker; the inventory is retained and out before the
// online status; facts come from the config and the facts directory (a
// file and an executable) and feed the command filter; the inventory and
// metrics commands answer with fresh data.
func TestTelemetryContract(t *testing.T) {
	both(t, func(t *testing.T, e *env) {
		host := "tel-" + strings.ReplaceAll(t.Name()[len("TestTelemetryContract/"):], "/", "-")
		data := filepath.Join(t.TempDir(), "data")
		factsDir := filepath.Join(data, "facts.d")
		if err := os.MkdirAll(factsDir, 0o700); err != nil {
			t.Fatal(err)
		}
		write := func(name, content string, mode os.FileMode) {
			if err := os.WriteFile(filepath.Join(factsDir, name), []byte(content), mode); err != nil {
				t.Fatal(err)
			}
		}
		write("rack.txt", "rack=r12\n# comment\n", 0o600)
		write("role.sh", "#!/bin/sh\necho '{\"role\": \"db\"}'\n", 0o700)

		topics := e.op.Topics()
		e.op.Watch(topics.Inventory(host))
		e.op.Watch(topics.Metrics(host))
		cfg := e.config(host, withGroups("tel"), withFacts(map[string]any{"env": "prod"}))
		cfg["data_dir"] = data
		section(cfg, "metrics")["interval"] = "1s"
		e.op.WatchStatus(host)
		a := harness.StartAgent(t, e.bin, cfg)
		e.waitOnline(a)

		inv := e.op.WaitMessage(t, topics.Inventory(host), nil, wait)
		if inv.At.After(statusAt(t, e, host)) {
			t.Errorf("the inventory came after the online status")
		}
		m := requireFields(t, "inventory", inv.Payload, inventoryRequired, nil)
		if m["host"] != host || m["os"] != runtime.GOOS || m["arch"] != runtime.GOARCH {
			t.Errorf("inventory host/os/arch = %v/%v/%v", m["host"], m["os"], m["arch"])
		}
		facts, _ := m["facts"].(map[string]any)
		if facts["env"] != "prod" || facts["rack"] != "r12" || facts["role"] != "db" {
			t.Errorf("inventory facts = %v, want env=prod (config), rack=r12 (file), role=db (executable)", facts)
		}
		if agent, _ := m["agent"].(map[string]any); agent["version"] == "" {
			t.Errorf("inventory agent = %v", m["agent"])
		}

		// A retained copy is what a dashboard that connects later gets.
		late := harness.NewOperator(t, e.broker.URL())
		late.Watch(topics.Inventory(host))
		if got := late.WaitMessage(t, topics.Inventory(host), nil, wait); !got.Retained {
			t.Errorf("the inventory is not retained")
		}

		sample := e.op.WaitMessage(t, topics.Metrics(host), nil, wait)
		requireFields(t, "metrics", sample.Payload, metricsRequired, metricsIntegers)
		if runtime.GOOS == "linux" {
			requireFields(t, "metrics", sample.Payload, []string{"load.l1", "load.l5", "load.l15"}, nil)
		}
		if len(sample.Payload) > 2048 {
			t.Errorf("one sample is %d bytes of JSON, goal ≤ 2 KiB: %s", len(sample.Payload), sample.Payload)
		}

		// A fact from the facts directory feeds the filter: a group
		// command for role=db runs, one for role=web is ignored.
		match := shell("group:tel", "echo matched")
		match.Filter = &protocol.Filter{Facts: map[string]string{"role": "db", "env": "prod"}}
		miss := shell("group:tel", "echo missed")
		miss.Filter = &protocol.Filter{Facts: map[string]string{"role": "web"}}
		idMiss := e.op.Send(miss)
		idMatch := e.op.Send(match)
		expectState(t, e.op.WaitFinal(t, idMatch, host, wait), protocol.StateSucceeded)
		e.op.AssertNoResult(t, idMiss, 0)

		// The inventory command answers with a fresh inventory and
		// publishes it again, retained.
		sentAt := time.Now()
		r := e.op.WaitFinal(t, e.op.Send(kind("host:"+host, protocol.KindInventory, nil)), host, wait)
		expectState(t, r, protocol.StateSucceeded)
		requireFields(t, "inventory command data", r.Data, inventoryRequired, nil)
		e.op.WaitMessage(t, topics.Inventory(host), func(m harness.Message) bool { return m.At.After(sentAt) }, wait)

		r = e.op.WaitFinal(t, e.op.Send(kind("host:"+host, protocol.KindMetrics, nil)), host, wait)
		expectState(t, r, protocol.StateSucceeded)
		requireFields(t, "metrics command data", r.Data, metricsRequired, metricsIntegers)
	})
}

// statusAt is when the operator saw the host's first online status.
func statusAt(t *testing.T, e *env, host string) (at time.Time) {
	t.Helper()
	for _, m := range e.op.Messages(e.op.Topics().Status(host)) {
		var s protocol.Status
		if json.Unmarshal(m.Payload, &s) == nil && s.State == protocol.StatusOnline {
			return m.At
		}
	}
	t.Fatalf("no online status seen for %s", host)
	return time.Time{}
}
