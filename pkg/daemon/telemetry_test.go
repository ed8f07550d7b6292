package daemon_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/config"
	"github.com/mqagent/mqagent/pkg/daemon"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/sysinfo"
)

// hungDisk is a host whose "/data" filesystem never answers, like a dead
// NFS mount: Usage blocks and ignores its context, as statfs does.
type hungDisk struct {
	*sysinfo.Fixture
	release chan struct{}
	entered atomic.Int32
}

func (h *hungDisk) Usage(ctx context.Context, mount string) (sysinfo.Usage, error) {
	if mount == "/data" {
		h.entered.Add(1)
		<-h.release
	}
	return h.Fixture.Usage(ctx, mount)
}

// A collector that blocks forever never stalls the agent: it comes
// online, its inventory is published with the hung disk reported, commands
// (a metrics command too) are answered, samples keep coming, and it stops
// promptly.
func TestHungCollectorDoesNotStallTheAgent(t *testing.T) {
	src := &hungDisk{Fixture: sysinfo.NewFixture(sysinfo.TypicalHost()), release: make(chan struct{})}
	// Registered first, so it runs last: after the agent stopped, the OS
	// "lets go" of the read, and goleak finds no goroutine left.
	t.Cleanup(func() { close(src.release) })
	url := startBroker(t)
	cfg := testConfig(t, url)
	cfg.Metrics.Interval = config.Duration(time.Second)
	w := newWatcher(t, url, "op-hung", topics.Status("d-1"), topics.Inventory("d-1"), topics.Metrics("d-1"), resultsAll)

	a := startAgent(t, daemon.Options{Config: cfg, SysInfo: src})
	w.status(t, "online despite the hung disk", func(s protocol.Status) bool { return s.State == protocol.StatusOnline })

	w.send(t, "d-1", "ping-h", protocol.KindPing, "")
	if r := w.final(t, "ping-h"); r.State != protocol.StateSucceeded {
		t.Fatalf("ping while a read hangs: %+v", r)
	}
	w.send(t, "d-1", "metrics-h", protocol.KindMetrics, "")
	r := w.final(t, "metrics-h")
	var m protocol.Metrics
	if err := json.Unmarshal(r.Data, &m); err != nil || r.State != protocol.StateSucceeded {
		t.Fatalf("metrics command: %+v (%v)", r, err)
	}
	if !hasPrefix(m.Errors, "disk /data:") || m.Mem == nil || m.Agent == nil || len(m.Disks) == 0 {
		t.Fatalf("metrics command data: errors %q disks %v mem %v agent %v", m.Errors, m.Disks, m.Mem, m.Agent)
	}
	// Two periodic samples arrive, each with the rest of the data.
	for i := 0; i < 2; i++ {
		b := w.next(t, topics.Metrics("d-1"))
		var s protocol.Metrics
		if err := json.Unmarshal(b, &s); err != nil || s.Mem == nil || !hasPrefix(s.Errors, "disk /data:") {
			t.Fatalf("sample %d: %s (%v)", i, b, err)
		}
	}
	if n := src.entered.Load(); n != 1 {
		t.Errorf("the hung read was entered %d times, want 1 (later reads are skipped while it hangs)", n)
	}
	start := time.Now()
	if _, err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("stopping took %v with a hung read", d)
	}
}

func hasPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

// next returns the payload of the next message on topic.
func (w *watcher) next(t *testing.T, topic string) []byte {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case m := <-w.msgs:
			if m.Topic() == topic {
				return m.Payload()
			}
		case <-deadline:
			t.Fatalf("no message on %s within %v", topic, waitTimeout)
		}
	}
}
