// Package swarm simulates a fleet of mqagent hosts in one process, for the
// scale benchmarks (test/bench/fanout*) and the reconnect storm test.
//
// In ModeAgent each simulated host runs the agent's real command pipeline:
// its own MQTT session (pkg/transport: client id = host id, clean session
// false, QoS 1, retained birth and will with a session number, jittered
// reconnects), the real dispatcher (pkg/dispatch: decode, filter, target,
// ed25519 signature, policy, journal dedup, audit records, built-in kinds,
// queue and worker), and the real outbox publisher (pkg/outbox). What the
// hosts of one process share, and a real host would not, is listed in
// docs/scale.md: the verifier (read-only), one audit log file, one metrics
// timer, and the journal, which is in memory (MemJournal) unless
// JournalBolt is chosen (a real bbolt state file per host, without fsync).
// exec is answered without processes (cheapExec).
//
// In ModeRaw each host is a plain paho client that echoes every broadcast
// back: the floor the pipeline is compared with.
//
// Everything is bounded: the number of hosts, concurrent connects, and
// every wait in Close.
package swarm

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqagent/mqagent/pkg/audit"
	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/security"
)

// Mode says what a simulated host runs.
type Mode string

// Modes.
const (
	// ModeAgent runs the agent's pipeline.
	ModeAgent Mode = "agent"
	// ModeRaw runs a paho client that echoes broadcasts.
	ModeRaw Mode = "raw"
)

// JournalKind says where a simulated host keeps its journal and outbox.
type JournalKind string

// Journal kinds.
const (
	// JournalMemory is MemJournal: no disk, no descriptor.
	JournalMemory JournalKind = "memory"
	// JournalBolt is the agent's state.Store, one bbolt file per host
	// under DataDir, opened with NoSync (a real host fsyncs its own disk;
	// hundreds of hosts fsyncing one disk would measure that disk). It
	// costs a file descriptor and ~20 kB per host: for small swarms.
	JournalBolt JournalKind = "bolt"
)

// MaxHosts bounds one Swarm: one process has 20,000 file descriptors
// here, and each host holds a TCP connection.
const MaxHosts = 19000

// Config describes a swarm.
type Config struct {
	Mode  Mode
	Hosts int // number of simulated hosts, 1..MaxHosts
	// First is the index of the first host: several processes split one
	// fleet (process k simulates hosts First..First+Hosts-1).
	First int
	// IDPrefix: host i is IDPrefix + i in 6 digits ("sim-000042").
	IDPrefix string
	// Brokers are MQTT URLs; host i tries Brokers[i%len] first, then the
	// next ones (failover), which spreads a fleet over a cluster.
	Brokers []string
	// SourceAddrs are local IPs to dial from (127.0.0.2, …); host i uses
	// SourceAddrs[i%len]. Each address has its own ~28,000 ephemeral
	// ports. Empty: the kernel's choice.
	SourceAddrs []string
	// TopicPrefix of every topic (protocol.DefaultPrefix when empty).
	TopicPrefix string
	Groups      []string

	// Keys are the trusted operator keys; with RequireSigned every
	// command must be signed by one of them.
	Keys          []security.Key
	RequireSigned bool

	// DataDir holds the shared audit log and, with JournalBolt, one state
	// file per host. Required in ModeAgent.
	DataDir string
	Journal JournalKind
	// MaxOutbox is each host's outbox limit in messages (default 1000).
	MaxOutbox int

	// Metrics: when > 0 every host publishes a metrics-sized JSON (about
	// 700 bytes) at this interval, at a random phase (QoS MetricsQoS).
	Metrics    time.Duration
	MetricsQoS byte

	KeepAlive      time.Duration // default 30s
	ReconnectMin   time.Duration // default 1s
	ReconnectMax   time.Duration // default 60s
	ConnectTimeout time.Duration // default 10s
	WriteTimeout   time.Duration // default 10s
	// ConnectParallel bounds the connects in flight while the swarm
	// starts (default 64): Mosquitto listens with a backlog of 100, and
	// a connection refused by a full backlog waits a second for its retry.
	ConnectParallel int
	// MaxConcurrent and MaxQueue of each host's pipeline (default 1 and
	// 16; the agent's defaults are 8 and 256, idle workers cost memory).
	MaxConcurrent int
	MaxQueue      int
	// Workers is the number of goroutines that run every host's pipeline
	// (default 4 per CPU, 32 with JournalBolt, whose commits wait for the
	// disk).
	Workers int
	// Flushers is the number of goroutines that publish the outboxes of
	// every host (JournalMemory; default min(Hosts, 1024)). A flush waits
	// for the broker's acknowledgements.
	Flushers int
	// VerifyOnce verifies each distinct signed command once per process
	// instead of once per host (see onceVerifier): the fleet's hosts
	// verify in parallel on their own CPUs.
	VerifyOnce bool

	// OnRun, when set, is called every time a simulated host runs a
	// command's handler (ping, exec): tests count executions with it.
	OnRun func(host, id, kind string)
	// HostLogger, when set, receives the pipelines' logs (with a host
	// attribute); nil discards them.
	HostLogger *slog.Logger
	Logger     *slog.Logger
}

// Version is the agent version simulated hosts report.
const Version = "swarm"

// HostID is the id of host i of a swarm whose ids start with prefix.
func HostID(prefix string, i int) string { return fmt.Sprintf("%s%06d", prefix, i) }

// HostIDs are the ids of hosts first..first+n-1.
func HostIDs(prefix string, first, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = HostID(prefix, first+i)
	}
	return ids
}

func (c *Config) defaults() error {
	switch {
	case c.Hosts < 1 || c.Hosts > MaxHosts:
		return fmt.Errorf("swarm: hosts must be 1..%d, got %d", MaxHosts, c.Hosts)
	case c.First < 0:
		return fmt.Errorf("swarm: first host index must be >= 0, got %d", c.First)
	case len(c.Brokers) == 0:
		return errors.New("swarm: at least one broker url is required")
	case c.Mode != ModeAgent && c.Mode != ModeRaw:
		return fmt.Errorf("swarm: mode must be %q or %q, got %q", ModeAgent, ModeRaw, c.Mode)
	case c.Mode == ModeAgent && c.DataDir == "":
		return errors.New("swarm: a data directory is required in agent mode")
	}
	for _, k := range c.Keys {
		if len(k.Public) != ed25519.PublicKeySize {
			return fmt.Errorf("swarm: key %q: not an ed25519 public key", k.ID)
		}
	}
	if c.IDPrefix == "" {
		c.IDPrefix = "sim-"
	}
	if c.TopicPrefix == "" {
		c.TopicPrefix = protocol.DefaultPrefix
	}
	switch c.Journal {
	case "":
		c.Journal = JournalMemory
	case JournalMemory, JournalBolt:
	default:
		return fmt.Errorf("swarm: journal must be %q or %q, got %q", JournalMemory, JournalBolt, c.Journal)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.KeepAlive, 30*time.Second)
	def(&c.ReconnectMin, time.Second)
	def(&c.ReconnectMax, 60*time.Second)
	def(&c.ConnectTimeout, 10*time.Second)
	def(&c.WriteTimeout, 10*time.Second)
	if c.ConnectParallel <= 0 {
		c.ConnectParallel = 64
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = 1
	}
	if c.MaxQueue <= 0 {
		c.MaxQueue = 16
	}
	if c.Workers <= 0 {
		c.Workers = 4 * runtime.GOMAXPROCS(0)
		if c.Journal == JournalBolt {
			c.Workers = 32
		}
	}
	if c.Flushers <= 0 {
		c.Flushers = min(c.Hosts, 1024)
	}
	if c.MaxOutbox <= 0 {
		c.MaxOutbox = 1000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// host is one simulated host.
type host interface {
	id() string
	start(ctx context.Context)
	// connected reports whether its MQTT connection is up.
	connected() bool
	// up is closed once the first connection is up.
	up() <-chan struct{}
	// stop ends it gracefully (bounded) and releases what it holds.
	stop()
}

// Swarm is a running simulated fleet.
type Swarm struct {
	cfg     Config
	hosts   []host
	dialers []*net.Dialer
	shared  *shared

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup // starter, metrics and waiting goroutines
	stopPool context.CancelFunc
	poolWG   sync.WaitGroup

	started   time.Time
	allUp     chan struct{} // closed when every host connected once
	upCount   atomic.Int64
	allUpTime atomic.Int64 // ns from start to all up
	closeOnce sync.Once
}

// shared is what the hosts of one process share.
type shared struct {
	ctx      context.Context // ends when the swarm closes
	log      *slog.Logger
	verifier dispatch.Verifier
	audit    *audit.Log
	topics   protocol.Topics
	started  time.Time
	metrics  *metricsWheel
	pool     *pool
	flusher  *flusher // nil: each host runs its own outbox.Publisher
}

// Start builds the swarm and starts connecting its hosts in the
// background, ConnectParallel at a time; WaitUp waits for them.
func Start(cfg Config) (*Swarm, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	s := &Swarm{cfg: cfg, allUp: make(chan struct{}), started: time.Now()}
	for _, a := range cfg.SourceAddrs {
		ip := net.ParseIP(a)
		if ip == nil {
			return nil, fmt.Errorf("swarm: source address %q is not an IP address", a)
		}
		s.dialers = append(s.dialers, &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Control: sourceControl})
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	// The pool outlives the hosts' stop (a stopping host waits for its
	// messages in the pool).
	poolCtx, stopPool := context.WithCancel(context.Background())
	s.stopPool = stopPool
	s.shared = &shared{ctx: poolCtx, log: cfg.Logger, topics: protocol.Topics{Prefix: cfg.TopicPrefix}, started: s.started}
	if cfg.Mode == ModeAgent {
		v, err := security.New(security.Policy{Keys: cfg.Keys, RequireSigned: cfg.RequireSigned})
		if err != nil {
			return nil, fmt.Errorf("swarm: %w", err)
		}
		s.shared.verifier = v
		if cfg.VerifyOnce {
			s.shared.verifier = &onceVerifier{v: v}
		}
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("swarm: data dir: %w", err)
		}
		// One log for every host of the process (one descriptor, one
		// hash chain); rotation bounds it on disk.
		al, err := audit.OpenRotating(filepath.Join(cfg.DataDir, "audit.log"), 16<<20, 2)
		if err != nil {
			return nil, fmt.Errorf("swarm: %w", err)
		}
		s.shared.audit = al
		if cfg.Metrics > 0 {
			s.shared.metrics = newMetricsWheel(cfg.Metrics, cfg.MetricsQoS, s.shared.topics)
		}
		s.shared.pool = newPool(cfg.Workers)
		if cfg.Journal == JournalMemory {
			s.shared.flusher = newFlusher(cfg.Hosts, cfg.WriteTimeout)
		}
	}
	s.hosts = make([]host, cfg.Hosts)
	for i := range s.hosts {
		idx := cfg.First + i
		id := HostID(cfg.IDPrefix, idx)
		urls := make([]string, len(cfg.Brokers))
		for k := range urls {
			urls[k] = cfg.Brokers[(idx+k)%len(cfg.Brokers)]
		}
		var dialer *net.Dialer
		if len(s.dialers) > 0 {
			dialer = s.dialers[idx%len(s.dialers)]
		}
		var err error
		switch cfg.Mode {
		case ModeAgent:
			s.hosts[i], err = newAgentHost(&s.cfg, s.shared, i, id, urls, dialer)
		case ModeRaw:
			s.hosts[i] = newRawHost(&s.cfg, s.shared, id, urls, dialer)
		}
		if err != nil {
			for _, h := range s.hosts[:i] {
				h.stop()
			}
			s.cancel()
			s.stopPool()
			s.closeShared()
			return nil, err
		}
	}
	if s.shared.pool != nil {
		s.shared.pool.run(poolCtx, &s.poolWG)
	}
	if s.shared.flusher != nil {
		s.shared.flusher.run(poolCtx, cfg.Flushers, &s.poolWG)
	}
	if s.shared.metrics != nil {
		s.wg.Go(func() { s.shared.metrics.run(s.ctx) })
	}
	s.wg.Go(s.startAll)
	return s, nil
}

// startAll starts the hosts, at most ConnectParallel connecting at once.
func (s *Swarm) startAll() {
	sem := make(chan struct{}, s.cfg.ConnectParallel)
	for _, h := range s.hosts {
		select {
		case sem <- struct{}{}:
		case <-s.ctx.Done():
			return
		}
		h.start(s.ctx)
		if s.shared.metrics != nil {
			if ah, ok := h.(*agentHost); ok {
				s.shared.metrics.add(ah)
			}
		}
		s.wg.Go(func() {
			// A host that cannot connect releases its slot after a
			// while; it keeps retrying on its own.
			t := time.NewTimer(s.cfg.ConnectTimeout + 2*time.Second)
			defer t.Stop()
			select {
			case <-h.up():
				if s.upCount.Add(1) == int64(len(s.hosts)) {
					s.allUpTime.Store(int64(time.Since(s.started)))
					close(s.allUp)
				}
				<-sem
				return
			case <-t.C:
			case <-s.ctx.Done():
				<-sem
				return
			}
			<-sem
			select {
			case <-h.up():
				if s.upCount.Add(1) == int64(len(s.hosts)) {
					s.allUpTime.Store(int64(time.Since(s.started)))
					close(s.allUp)
				}
			case <-s.ctx.Done():
			}
		})
	}
}

// WaitUp waits until every host has connected once; it returns how long
// that took from Start.
func (s *Swarm) WaitUp(timeout time.Duration) (time.Duration, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.allUp:
		return time.Duration(s.allUpTime.Load()), nil
	case <-t.C:
		return 0, fmt.Errorf("swarm: %d of %d hosts connected after %s", s.upCount.Load(), len(s.hosts), timeout)
	}
}

// Stats describe the swarm's process.
type Stats struct {
	Hosts      int    `json:"hosts"`
	Up         int    `json:"up"`        // hosts that connected at least once
	Connected  int    `json:"connected"` // hosts connected now
	Goroutines int    `json:"goroutines"`
	RSSKB      int64  `json:"rss_kb"`  // resident set of the process (Linux), else 0
	HeapKB     uint64 `json:"heap_kb"` // Go heap in use
	StackKB    uint64 `json:"stack_kb"`
	SysKB      uint64 `json:"sys_kb"` // memory the Go runtime holds from the OS
	// Outbox and Journal are the messages waiting to be published and
	// the journal entries, summed over the hosts (JournalMemory).
	Outbox  int `json:"outbox"`
	Journal int `json:"journal"`
}

// Stats returns the current figures; it reads runtime statistics, which
// stops the world briefly.
func (s *Swarm) Stats() Stats {
	st := Stats{Hosts: len(s.hosts), Up: int(s.upCount.Load()), Goroutines: runtime.NumGoroutine()}
	for _, h := range s.hosts {
		if h.connected() {
			st.Connected++
		}
		if ah, ok := h.(*agentHost); ok {
			if mj, ok := ah.journal.(*MemJournal); ok {
				st.Outbox += mj.OutboxLen()
				st.Journal += mj.Len()
			}
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st.HeapKB, st.StackKB, st.SysKB = ms.HeapInuse>>10, ms.StackInuse>>10, ms.Sys>>10
	st.RSSKB, _ = RSSKB(os.Getpid())
	return st
}

// Close stops every host gracefully (offline status, bounded) and waits.
func (s *Swarm) Close() {
	s.closeOnce.Do(func() {
		s.cancel()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 512)
		for _, h := range s.hosts {
			sem <- struct{}{}
			wg.Go(func() { defer func() { <-sem }(); h.stop() })
		}
		wg.Wait()
		s.wg.Wait()
		s.stopPool()
		s.poolWG.Wait()
		s.closeShared()
	})
}

func (s *Swarm) closeShared() {
	if s.shared.audit != nil {
		if err := s.shared.audit.Close(); err != nil {
			s.cfg.Logger.Warn("swarm: close audit log", "err", err)
		}
	}
}

// jitter returns d ± 10%.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + time.Duration(rand.Int64N(int64(d/5)+1))
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(`{}`)
	}
	return b
}
