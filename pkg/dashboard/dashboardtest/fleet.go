package dashboardtest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// SimFleet publishes what a fleet of agents would, from one MQTT client:
// a retained online status and inventory per host and metrics samples.
// Host ids are HostID(i).
type SimFleet struct {
	t      testing.TB
	c      mqtt.Client
	topics protocol.Topics
	n      int
	rnd    *rand.Rand

	mu       sync.Mutex
	sessions map[string]uint64
}

// HostID is the id of the i-th simulated host: sim-00000, sim-00001…
func HostID(i int) string { return fmt.Sprintf("sim-%05d", i) }

// NewSimFleet connects to brokerURL (disconnected when the test ends).
func NewSimFleet(t testing.TB, brokerURL string, n int) *SimFleet {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(brokerURL).SetClientID(fmt.Sprintf("simfleet-%d", time.Now().UnixNano())).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).SetWriteTimeout(30 * time.Second)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("simulated fleet: connect %s: %v", brokerURL, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(250) })
	return &SimFleet{t: t, c: c, topics: protocol.Topics{Prefix: protocol.DefaultPrefix}, n: n,
		rnd: rand.New(rand.NewPCG(1, 2)), sessions: map[string]uint64{}}
}

// Len is the number of hosts.
func (f *SimFleet) Len() int { return f.n }

// publish publishes and returns the token (QoS 1).
func (f *SimFleet) publish(topic string, retained bool, v any) mqtt.Token {
	b, err := json.Marshal(v)
	if err != nil {
		f.t.Fatalf("simulated fleet: %v", err)
	}
	return f.c.Publish(topic, 1, retained, b)
}

// waitAll waits for the broker to take every token.
func (f *SimFleet) waitAll(toks []mqtt.Token) {
	f.t.Helper()
	for _, tok := range toks {
		if !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
			f.t.Fatalf("simulated fleet: publish: %v", tok.Error())
		}
	}
}

// PublishAll publishes, for every host, its retained inventory, its
// retained online status and one metrics sample, and waits until the
// broker took them all.
func (f *SimFleet) PublishAll() {
	f.t.Helper()
	const batch = 2000
	toks := make([]mqtt.Token, 0, batch*3)
	for i := 0; i < f.n; i++ {
		h := HostID(i)
		toks = append(toks, f.publish(f.topics.Inventory(h), true, f.inventory(i)))
		toks = append(toks, f.publish(f.topics.Status(h), true, f.status(h, true)))
		toks = append(toks, f.publish(f.topics.Metrics(h), false, f.metrics(h, -1)))
		if len(toks) >= batch*3 {
			f.waitAll(toks)
			toks = toks[:0]
		}
	}
	f.waitAll(toks)
}

// SetOnline publishes a retained status for host (online, or offline
// with reason shutdown) and returns when the broker took it, with the
// time just before it was published.
func (f *SimFleet) SetOnline(host string, online bool) time.Time {
	f.t.Helper()
	st := f.status(host, online)
	start := time.Now()
	f.waitAll([]mqtt.Token{f.publish(f.topics.Status(host), true, st)})
	return start
}

// Metrics publishes one metrics sample of host with this CPU percent
// (negative: a random one) without waiting.
func (f *SimFleet) Metrics(host string, cpu float64) mqtt.Token {
	return f.publish(f.topics.Metrics(host), false, f.metrics(host, cpu))
}

func (f *SimFleet) status(host string, online bool) protocol.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := protocol.Status{V: protocol.Version, Host: host, TS: protocol.Now(), Session: f.sessions[host]}
	if online {
		f.sessions[host]++
		s.Session = f.sessions[host]
		start := protocol.Now()
		s.State, s.Version, s.OS, s.Arch, s.PID, s.StartedAt = protocol.StatusOnline, "1.0.0", "linux", "amd64", 1000, &start
		var i int
		_, _ = fmt.Sscanf(host, "sim-%d", &i)
		s.Groups = []string{"sim", fmt.Sprintf("rack-%d", i%7)}
	} else {
		s.State, s.Reason = protocol.StatusOffline, protocol.ReasonShutdown
	}
	return s
}

func (f *SimFleet) inventory(i int) protocol.Inventory {
	h := HostID(i)
	return protocol.Inventory{V: protocol.Version, Host: h, TS: protocol.Now(), Hostname: h + ".sim.example", OS: "linux",
		Platform: "debian", PlatformVersion: "12", KernelVersion: "6.1.0", Arch: "amd64", BootTime: protocol.Now(),
		CPU: protocol.InventoryCPU{Model: "Simulated CPU", Cores: 2, Threads: 4}, Mem: protocol.InventoryMem{Total: 8 << 30},
		Disks: []protocol.InventoryDisk{{Mount: "/", FSType: "ext4", Total: 100 << 30}}, Interfaces: []protocol.NetInterface{},
		Agent: protocol.InventoryAgent{Version: "1.0.0"}, Groups: []string{"sim", fmt.Sprintf("rack-%d", i%7)},
		Facts: map[string]string{"env": "sim"}}
}

func (f *SimFleet) metrics(host string, cpu float64) protocol.Metrics {
	f.mu.Lock()
	r := f.rnd.Float64()
	f.mu.Unlock()
	if cpu < 0 {
		cpu = r * 100
	}
	return protocol.Metrics{V: protocol.Version, Host: host, TS: protocol.Now(),
		CPU:   &protocol.CPUSample{Percent: cpu},
		Mem:   &protocol.MemSample{Total: 8 << 30, Used: uint64(r * float64(8<<30)), Available: uint64((1 - r) * float64(8<<30)), Percent: r * 100},
		Swap:  &protocol.SwapSample{},
		Disks: []protocol.DiskSample{{Mount: "/", Total: 100 << 30, Used: 40 << 30, Percent: 40}},
		Net:   []protocol.NetSample{{Name: "eth0", BytesRecv: uint64(time.Now().UnixMilli()), BytesSent: uint64(time.Now().UnixMilli() / 2)}},
		Procs: 100, UptimeMS: 1000, Agent: &protocol.AgentHealth{RSSBytes: 10 << 20, Goroutines: 20}}
}
