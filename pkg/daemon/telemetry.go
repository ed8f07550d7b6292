package daemon

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqagent/mqagent/pkg/config"
	"github.com/mqagent/mqagent/pkg/dispatch"
	invcmd "github.com/mqagent/mqagent/pkg/handlers/inventory"
	metricscmd "github.com/mqagent/mqagent/pkg/handlers/metrics"
	"github.com/mqagent/mqagent/pkg/inventory"
	"github.com/mqagent/mqagent/pkg/memtrim"
	"github.com/mqagent/mqagent/pkg/metrics"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/state"
	"github.com/mqagent/mqagent/pkg/sysinfo"
	"github.com/mqagent/mqagent/pkg/transport"
)

// FactsDir is the default custom facts directory, in the data directory.
const FactsDir = "facts.d"

// firstInventoryTimeout bounds building the start-up inventory: a hung
// read (a dead NFS mount) must not keep the agent from coming online.
const firstInventoryTimeout = 15 * time.Second

// telemetry is the agent's metrics collector and inventory builder. The
// two share one Guard, so a hung filesystem holds one goroutine, not two.
type telemetry struct {
	inv *inventory.Builder
	col *metrics.Collector
	cfg *config.Config
	log *slog.Logger
	// client is the MQTT session, set by start (the session is built after
	// the handlers, whose inventory command publishes through it).
	client atomic.Pointer[transport.Client]

	stop func() // ends the background loops and waits for them
}

// newTelemetry builds the collector and the inventory builder; nothing is
// read yet. health is read under the Guard at every sample.
func newTelemetry(cfg *config.Config, src sysinfo.Source, topics protocol.Topics, version string, log *slog.Logger, health func() metrics.Health) (*telemetry, error) {
	if src == nil {
		src = sysinfo.New(sysinfo.Options{})
	}
	guard := sysinfo.NewGuard(sysinfo.DefaultTimeout)
	factsDir := cfg.Inventory.FactsDir
	switch factsDir {
	case "":
		factsDir = filepath.Join(cfg.DataDir, FactsDir)
	case "-":
		factsDir = ""
	}
	t := &telemetry{cfg: cfg, log: log}
	var err error
	t.inv, err = inventory.New(inventory.Options{
		HostID: cfg.HostID, Version: version, Groups: cfg.Groups, Facts: cfg.Facts,
		FactsDir: factsDir, Software: cfg.Inventory.Software,
		Source: src, Guard: guard, Interval: time.Duration(cfg.Inventory.Interval),
		Publish: func(ctx context.Context, p []byte) error {
			c := t.client.Load()
			if c == nil {
				return transport.ErrNotConnected
			}
			return c.PublishWait(ctx, topics.Inventory(cfg.HostID), 1, true, p)
		},
		Logger: log.With("component", "inventory"),
	})
	if err != nil {
		return nil, err
	}
	t.col, err = metrics.New(metrics.Options{
		HostID: cfg.HostID, Source: src, Guard: guard,
		Interval: time.Duration(cfg.Metrics.Interval), PerCPU: cfg.Metrics.PerCPU,
		Health: health, Logger: log.With("component", "metrics"),
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// handlers are the telemetry command kinds.
func (t *telemetry) handlers(h map[string]dispatch.Handler, log *slog.Logger) {
	h[protocol.KindInventory] = invcmd.Handler{Refresher: t.inv, Logger: log}
	h[protocol.KindMetrics] = metricscmd.Handler{Sampler: t.col}
}

// health reads the pipeline's state for the metrics samples.
func health(disp func() *dispatch.Dispatcher, store *state.Store, client func() *transport.Client) func() metrics.Health {
	return func() metrics.Health {
		var st dispatch.Stats
		if d := disp(); d != nil {
			st = d.Stats()
		}
		h := metrics.Health{Running: st.Running, Queued: st.Queued, Outbox: store.OutboxLen()}
		if c := client(); c != nil {
			h.Reconnects = c.State().Reconnects
		}
		return h
	}
}

// buildFirst reads the start-up inventory (bounded), so that the facts of
// the facts directory are known before the first command is checked and
// the first connect publishes at once.
func (t *telemetry) buildFirst(ctx context.Context) {
	bctx, cancel := context.WithTimeout(ctx, firstInventoryTimeout)
	defer cancel()
	if _, err := t.inv.Build(bctx); err != nil {
		t.log.Warn("start-up inventory not built in time; published once it is", "err", err)
	}
}

// onConnect publishes the inventory (retained) before the birth: on the
// first connect always, later only when the broker may have missed it.
func (t *telemetry) onConnect(ctx context.Context, first bool) {
	if err := t.inv.Publish(ctx, first); err != nil && ctx.Err() == nil {
		t.log.Warn("inventory not published at connect; retried at the next check", "err", err)
	}
}

// start runs the periodic metrics and inventory loops until stop is
// called. Metrics go out at metrics.qos / metrics.retain, fire and forget:
// a sample that cannot go out now is stale by the next one, so it is
// dropped rather than queued (results have the outbox; samples do not).
func (t *telemetry) start(client *transport.Client, topics protocol.Topics) {
	ctx, cancel := context.WithCancel(context.Background())
	t.client.Store(client)
	metricsTopic := topics.Metrics(t.cfg.HostID)
	qos, retain := byte(t.cfg.Metrics.QoS), t.cfg.Metrics.Retain
	var wg sync.WaitGroup
	wg.Go(func() {
		t.col.Run(ctx, func(p []byte) { client.Publish(metricsTopic, qos, retain, p) })
	})
	wg.Go(func() { t.inv.Run(ctx) })
	// Start-up and fault-around leave pages of the binary mapped that the
	// agent no longer uses: give them back (docs/telemetry.md).
	wg.Go(func() { memtrim.Run(ctx, memtrim.DefaultSchedule, t.log) })
	t.stop = func() { cancel(); wg.Wait() }
}
