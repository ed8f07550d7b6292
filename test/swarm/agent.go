package swarm

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/handlers/ping"
	"github.com/mqagent/mqagent/pkg/outbox"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/state"
	"github.com/mqagent/mqagent/pkg/transport"
)

// agentHost is a simulated host running the agent's pipeline, wired as
// pkg/daemon wires it (without telemetry, process handlers and self
// control).
type agentHost struct {
	hostID  string
	index   int
	sh      *shared
	journal Journal
	closeJ  func() error
	disp    *dispatch.Dispatcher
	client  *transport.Client
	pub     *outbox.Publisher

	statusFn func(st, reason string, session uint64) []byte

	flush flushState // with the shared flusher

	// busy counts messages submitted to the pool and not yet processed.
	busy     atomic.Int64
	runCtx   context.Context // commands run under it
	firstUp  chan struct{}
	upOnce   sync.Once
	stopRun  context.CancelFunc
	stopNet  context.CancelFunc
	stopPub  context.CancelFunc
	netDone  chan struct{}
	pubDone  chan struct{}
	started  bool
	stopOnce sync.Once
}

func newAgentHost(cfg *Config, sh *shared, index int, id string, urls []string, dialer *net.Dialer) (*agentHost, error) {
	h := &agentHost{hostID: id, index: index, sh: sh, firstUp: make(chan struct{})}
	switch cfg.Journal {
	case JournalBolt:
		st, err := state.Open(filepath.Join(cfg.DataDir, "hosts", id+".db"), state.Options{
			NoSync: true, OutboxMaxMessages: cfg.MaxOutbox,
		})
		if err != nil {
			return nil, fmt.Errorf("swarm: host %s: %w", id, err)
		}
		h.journal, h.closeJ = st, st.Close
	default:
		mj := NewMemJournal(cfg.MaxOutbox)
		if sh.flusher != nil {
			mj.OnPush(func() { sh.flusher.schedule(h) })
		}
		h.journal = mj
	}
	log := slog.New(slog.DiscardHandler)
	if cfg.HostLogger != nil {
		log = cfg.HostLogger.With("host", id)
	}
	topics := sh.topics
	handlers := map[string]dispatch.Handler{
		protocol.KindPing: ping.Handler{Version: Version, Started: sh.started},
		protocol.KindExec: cheapExec{},
	}
	if cfg.OnRun != nil {
		for kind, hd := range handlers {
			handlers[kind] = counted(hd, id, cfg.OnRun)
		}
	}
	h.disp = dispatch.New(dispatch.Options{
		HostID: id, Groups: cfg.Groups, OS: runtime.GOOS, Topics: topics,
		Verifier: sh.verifier, Store: h.journal, Audit: sh.audit, Handlers: handlers,
		OnStall: func() {
			h.client.Reconnect(fmt.Errorf("a command could not be journaled"))
		},
		MaxPayload:     262144,
		DefaultTTL:     time.Hour,
		MaxClockSkew:   5 * time.Minute,
		DefaultTimeout: time.Minute,
		MaxTimeout:     time.Hour,
		MaxConcurrent:  cfg.MaxConcurrent,
		MaxQueue:       cfg.MaxQueue,
		IntakeSize:     1, // Submit is not used: the pool calls Handle
		Logger:         log,
	})
	subs := []string{topics.HostCmd(id), topics.AllCmd()}
	for _, g := range cfg.Groups {
		subs = append(subs, topics.GroupCmd(g))
	}
	status := func(st, reason string, session uint64) []byte {
		s := protocol.Status{V: protocol.Version, Host: id, State: st, Reason: reason, Session: session, TS: protocol.Now()}
		if st == protocol.StatusOnline {
			s.Version, s.OS, s.Arch, s.Groups = Version, runtime.GOOS, runtime.GOARCH, cfg.Groups
			s.StartedAt = &protocol.Time{Time: sh.started.UTC()}
		}
		return mustJSON(s)
	}
	var err error
	h.client, err = transport.New(transport.Options{
		ClientID: id, URLs: urls, Dialer: dialer,
		KeepAlive: cfg.KeepAlive, ConnectTimeout: cfg.ConnectTimeout, WriteTimeout: cfg.WriteTimeout,
		ReconnectMin: cfg.ReconnectMin, ReconnectMax: cfg.ReconnectMax,
		Subscriptions: subs,
		NextSession:   h.journal.NextSession,
		WillTopic:     topics.Status(id),
		Will:          func(s uint64) []byte { return status(protocol.StatusOffline, protocol.ReasonLost, s) },
		Birth:         func(s uint64) []byte { return status(protocol.StatusOnline, "", s) },
		OnMessage:     h.submit,
		OnConnect: func(context.Context, bool) {
			h.upOnce.Do(func() { close(h.firstUp) })
			if sh.flusher != nil {
				sh.flusher.schedule(h) // what waited for the connection
			}
		},
		Logger: log,
	})
	if err != nil {
		if h.closeJ != nil {
			_ = h.closeJ()
		}
		return nil, fmt.Errorf("swarm: host %s: %w", id, err)
	}
	h.pub = &outbox.Publisher{Store: h.journal, Client: h.client, Timeout: cfg.WriteTimeout, Logger: log}
	h.statusFn = status
	return h, nil
}

func (h *agentHost) id() string          { return h.hostID }
func (h *agentHost) up() <-chan struct{} { return h.firstUp }
func (h *agentHost) connected() bool     { return h.client.State().Connected }

// start runs the session and, with a bolt journal, the publisher; the
// pool runs the pipeline and the flusher publishes a memory journal.
func (h *agentHost) start(parent context.Context) {
	runCtx, stopRun := context.WithCancel(context.Background())
	netCtx, stopNet := context.WithCancel(context.Background())
	pubCtx, stopPub := context.WithCancel(context.Background())
	h.runCtx, h.stopRun, h.stopNet, h.stopPub = runCtx, stopRun, stopNet, stopPub
	h.netDone, h.pubDone = make(chan struct{}), make(chan struct{})
	h.started = true
	if err := h.disp.Recover(); err != nil {
		h.sh.log.Error("swarm: journal recovery failed", "host", h.hostID, "err", err)
	}
	go func() { defer close(h.netDone); _ = h.client.Run(netCtx) }()
	if h.sh.flusher == nil {
		go func() { defer close(h.pubDone); h.pub.Run(pubCtx) }()
	} else {
		close(h.pubDone)
	}
}

// submit is the session's OnMessage: the message goes to the host's
// shard of the pool.
func (h *agentHost) submit(m transport.Message) {
	h.sh.pool.submit(h.sh.ctx, h.index, h, m)
}

// process is what the agent's intake goroutine and workers do with one
// message, on a pool goroutine.
func (h *agentHost) process(m transport.Message) {
	defer h.busy.Add(-1)
	h.disp.Handle(m)
	h.disp.RunQueued(h.runCtx)
}

// stop is the daemon's graceful stop, bounded to a few seconds: the
// pipeline stops taking messages (unacknowledged ones are delivered again
// to the next session), the outbox is flushed, the offline status
// published, the session closed.
func (h *agentHost) stop() {
	h.stopOnce.Do(func() {
		defer func() {
			if h.closeJ != nil {
				_ = h.closeJ()
			}
		}()
		if !h.started {
			return
		}
		h.disp.Stop()
		for deadline := time.Now().Add(5 * time.Second); h.busy.Load() > 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond) // the pool is finishing this host's message
		}
		h.stopRun()
		h.stopPub()
		<-h.pubDone
		if h.sh.flusher != nil {
			h.sh.flusher.stop(h)
		}
		if st := h.client.State(); st.Connected {
			deadline := time.Now().Add(2 * time.Second)
			h.pub.Drain(deadline)
			ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(time.Second))
			_ = h.client.PublishWait(ctx, h.sh.topics.Status(h.hostID), 1, true, h.statusFn(protocol.StatusOffline, protocol.ReasonShutdown, st.Session))
			cancel()
		}
		h.stopNet()
		<-h.netDone
		h.client.Disconnect()
	})
}

// countedHandler reports every run of a handler to OnRun. It keeps the
// Pure marker of the handler it wraps (ping runs on the intake path).
type countedHandler struct {
	dispatch.Handler
	host string
	on   func(host, id, kind string)
}

// Run reports the run, then runs the wrapped handler.
func (c countedHandler) Run(ctx context.Context, call *dispatch.Call) dispatch.Outcome {
	c.on(c.host, call.Cmd.ID, call.Cmd.Kind)
	return c.Handler.Run(ctx, call)
}

// Summary is the wrapped handler's summary, if it has one.
func (c countedHandler) Summary(req any) string {
	if s, ok := c.Handler.(dispatch.Summarizer); ok {
		return s.Summary(req)
	}
	return ""
}

type countedPure struct{ countedHandler }

func (countedPure) Pure() {}

func counted(h dispatch.Handler, host string, on func(host, id, kind string)) dispatch.Handler {
	c := countedHandler{Handler: h, host: host, on: on}
	if _, ok := h.(dispatch.Pure); ok {
		return countedPure{c}
	}
	return c
}
