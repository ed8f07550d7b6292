package dashboard

import (
	"strings"
	"sync"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// sample is one point of a host's charts, kept small (40 bytes): float32
// is plenty for a chart.
type sample struct {
	t       int64   // Unix ms
	cpu     float32 // percent, -1 unknown
	mem     float32 // percent, -1 unknown
	disk    float32 // fullest filesystem, percent, -1 unknown
	load1   float32 // -1 unknown
	rx, tx  float32 // bytes/s over every interface but loopback, -1 unknown
	agentMB float32 // agent RSS in MiB, -1 unknown
}

// ring is the recent samples of one host. The buffer grows up to its
// capacity, so a host with few samples costs little.
type ring struct {
	buf   []sample
	start int // index of the oldest when full
	// counters of the previous sample, for the network rates
	prevT      int64
	prevRx     uint64
	prevTx     uint64
	prevCounts bool
}

func (r *ring) push(s sample, capacity int) {
	if len(r.buf) < capacity {
		r.buf = append(r.buf, s)
		return
	}
	r.buf[r.start] = s
	r.start = (r.start + 1) % len(r.buf)
}

func (r *ring) last() (sample, bool) {
	if len(r.buf) == 0 {
		return sample{}, false
	}
	return r.buf[(r.start+len(r.buf)-1)%len(r.buf)], true
}

// ordered returns the samples oldest first.
func (r *ring) ordered() []sample {
	out := make([]sample, 0, len(r.buf))
	out = append(out, r.buf[r.start:]...)
	return append(out, r.buf[:r.start]...)
}

// history keeps a bounded ring of samples per host.
type history struct {
	capacity int
	mu       sync.Mutex
	hosts    map[string]*ring
}

func newHistory(capacity int) *history {
	return &history{capacity: capacity, hosts: map[string]*ring{}}
}

// add appends m to its host's ring, unless it is not newer than the last
// sample kept.
func (h *history) add(host string, m *protocol.Metrics) {
	t := m.TS.UnixMilli()
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.hosts[host]
	if r == nil {
		r = &ring{}
		h.hosts[host] = r
	}
	if l, ok := r.last(); ok && t <= l.t {
		return
	}
	s := sample{t: t, cpu: -1, mem: -1, disk: -1, load1: -1, rx: -1, tx: -1, agentMB: -1}
	if m.CPU != nil {
		s.cpu = float32(m.CPU.Percent)
	}
	if m.Mem != nil {
		s.mem = float32(m.Mem.Percent)
	}
	if d, _, ok := fullest(m.Disks); ok {
		s.disk = float32(d)
	}
	if m.Load != nil {
		s.load1 = float32(m.Load.L1)
	}
	if m.Agent != nil {
		s.agentMB = float32(float64(m.Agent.RSSBytes) / (1 << 20))
	}
	if len(m.Net) > 0 {
		var rx, tx uint64
		for _, n := range m.Net {
			if isLoopback(n.Name) {
				continue
			}
			rx += n.BytesRecv
			tx += n.BytesSent
		}
		// A counter that went down (a reboot, an interface gone) gives no
		// rate for this sample.
		if r.prevCounts && t > r.prevT && rx >= r.prevRx && tx >= r.prevTx {
			secs := float64(t-r.prevT) / 1000
			s.rx = float32(float64(rx-r.prevRx) / secs)
			s.tx = float32(float64(tx-r.prevTx) / secs)
		}
		r.prevT, r.prevRx, r.prevTx, r.prevCounts = t, rx, tx, true
	}
	r.push(s, h.capacity)
}

func isLoopback(name string) bool {
	return name == "lo" || strings.HasPrefix(name, "lo0") || strings.HasPrefix(strings.ToLower(name), "loopback")
}

func (h *history) remove(host string) {
	h.mu.Lock()
	delete(h.hosts, host)
	h.mu.Unlock()
}

// Series are a host's recent samples, oldest first, one array per
// measure (null where unknown), ready for the charts.
type Series struct {
	T       []int64    `json:"t"`        // sample ts, Unix ms
	CPU     []*float32 `json:"cpu"`      // busy CPU percent
	Mem     []*float32 `json:"mem"`      // memory used percent
	Disk    []*float32 `json:"disk"`     // fullest filesystem's use percent
	Load1   []*float32 `json:"load1"`    // 1-minute load average
	RxBps   []*float32 `json:"rx"`       // bytes received per second (loopback excluded)
	TxBps   []*float32 `json:"tx"`       // bytes sent per second (loopback excluded)
	AgentMB []*float32 `json:"agent_mb"` // agent resident memory, MiB
}

// series returns a host's samples.
func (h *history) series(host string) Series {
	h.mu.Lock()
	var samples []sample
	if r := h.hosts[host]; r != nil {
		samples = r.ordered()
	}
	h.mu.Unlock()
	n := len(samples)
	s := Series{T: make([]int64, n), CPU: make([]*float32, n), Mem: make([]*float32, n), Disk: make([]*float32, n),
		Load1: make([]*float32, n), RxBps: make([]*float32, n), TxBps: make([]*float32, n), AgentMB: make([]*float32, n)}
	opt := func(v float32) *float32 {
		if v < 0 || v != v {
			return nil
		}
		return &v
	}
	for i, p := range samples {
		s.T[i] = p.t
		s.CPU[i], s.Mem[i], s.Disk[i], s.Load1[i] = opt(p.cpu), opt(p.mem), opt(p.disk), opt(p.load1)
		s.RxBps[i], s.TxBps[i], s.AgentMB[i] = opt(p.rx), opt(p.tx), opt(p.agentMB)
	}
	return s
}

// len is the number of samples kept for host.
func (h *history) len(host string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r := h.hosts[host]; r != nil {
		return len(r.buf)
	}
	return 0
}
