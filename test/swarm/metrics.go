package swarm

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// metricsTick is the resolution of the metrics wheel.
const metricsTick = 100 * time.Millisecond

// metricsWheel publishes every host's metrics from one goroutine: host h
// is in one slot of the wheel (a random phase), and a slot comes round
// once per interval. A real agent has its own timer and sampler; here one
// timer serves the whole process.
type metricsWheel struct {
	interval time.Duration
	qos      byte
	topics   protocol.Topics

	mu    sync.Mutex
	slots [][]*agentHost
	sent  uint64
}

func newMetricsWheel(interval time.Duration, qos byte, topics protocol.Topics) *metricsWheel {
	n := max(int(interval/metricsTick), 1)
	return &metricsWheel{interval: interval, qos: qos, topics: topics, slots: make([][]*agentHost, n)}
}

func (w *metricsWheel) add(h *agentHost) {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := rand.IntN(len(w.slots))
	w.slots[i] = append(w.slots[i], h)
}

func (w *metricsWheel) run(ctx context.Context) {
	t := time.NewTicker(metricsTick)
	defer t.Stop()
	slot := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		hosts := w.slots[slot]
		w.mu.Unlock()
		slot = (slot + 1) % len(w.slots)
		for _, h := range hosts {
			if ctx.Err() != nil {
				return
			}
			if !h.connected() {
				continue // a real agent samples and drops: QoS 0 telemetry
			}
			h.client.Publish(w.topics.Metrics(h.hostID), w.qos, false, sample(h.hostID))
			w.mu.Lock()
			w.sent++
			w.mu.Unlock()
		}
	}
}

// sample is a metrics message of the size and shape a real agent sends
// (cpu, load, memory, swap, two disks, disk I/O, two interfaces, agent
// health), with plausible moving values.
func sample(host string) []byte {
	r := rand.Float64
	gib := uint64(1 << 30)
	m := protocol.Metrics{
		V: protocol.Version, Host: host, TS: protocol.Now(),
		CPU:  &protocol.CPUSample{Percent: 100 * r()},
		Load: &protocol.LoadSample{L1: 2 * r(), L5: 1.5 * r(), L15: r()},
		Mem:  &protocol.MemSample{Total: 8 * gib, Used: uint64(r() * float64(6*gib)), Available: 2 * gib, Percent: 100 * r()},
		Swap: &protocol.SwapSample{Total: 2 * gib, Used: uint64(r() * float64(gib))},
		Disks: []protocol.DiskSample{
			{Mount: "/", Total: 100 * gib, Used: 40 * gib, Percent: 40},
			{Mount: "/var", Total: 50 * gib, Used: uint64(r() * float64(50*gib)), Percent: 100 * r()},
		},
		DiskIO: []protocol.DiskIOSample{{Name: "sda", ReadBytes: rand.Uint64N(1 << 40), WriteBytes: rand.Uint64N(1 << 40), Reads: rand.Uint64N(1 << 30), Writes: rand.Uint64N(1 << 30)}},
		Net: []protocol.NetSample{
			{Name: "eth0", BytesSent: rand.Uint64N(1 << 40), BytesRecv: rand.Uint64N(1 << 40), PacketsSent: rand.Uint64N(1 << 32), PacketsRecv: rand.Uint64N(1 << 32)},
			{Name: "lo", BytesSent: rand.Uint64N(1 << 30), BytesRecv: rand.Uint64N(1 << 30), PacketsSent: rand.Uint64N(1 << 24), PacketsRecv: rand.Uint64N(1 << 24)},
		},
		UptimeMS: rand.Int64N(1 << 33), Procs: 100 + rand.IntN(300),
		Agent: &protocol.AgentHealth{RSSBytes: 18<<20 + rand.Uint64N(4<<20), CPUPercent: r(), Goroutines: 20 + rand.IntN(5)},
	}
	return mustJSON(m)
}

// Sent is how many metrics messages went out.
func (w *metricsWheel) Sent() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sent
}
