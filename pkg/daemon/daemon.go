// Package daemon is the agent's composition root: it builds every
// subsystem from the configuration (state, audit log, verifier, command
// pipeline, MQTT session, outbox publisher), runs them under one context,
// and shuts them down in order: stop taking commands, let running ones
// finish (grace), flush the outbox, publish the offline status, disconnect.
package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqagent/mqagent/pkg/audit"
	"github.com/mqagent/mqagent/pkg/config"
	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/handlers/agentctl"
	"github.com/mqagent/mqagent/pkg/handlers/ping"
	"github.com/mqagent/mqagent/pkg/handlers/process"
	"github.com/mqagent/mqagent/pkg/outbox"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/runner"
	"github.com/mqagent/mqagent/pkg/security"
	"github.com/mqagent/mqagent/pkg/state"
	"github.com/mqagent/mqagent/pkg/sysinfo"
	"github.com/mqagent/mqagent/pkg/transport"
	"github.com/mqagent/mqagent/pkg/update"
)

// Options are what the agent runs with.
type Options struct {
	Config  *config.Config
	Version string
	Logger  *slog.Logger
	// Reason is the offline reason published on a graceful stop; default
	// "shutdown".
	Reason func() string
	// SysInfo reads the host for metrics and inventory; nil is the real
	// host (gopsutil). Tests supply a fixture.
	SysInfo sysinfo.Source
	// Update enables agent.update and finishes an update left by the
	// previous process (selfcontrol.go); nil: the kind is not handled.
	Update *update.Manager
	// Uninstall enables agent.uninstall: the caller carries it out once
	// RunUntil returns "uninstall" (see ReadUninstall).
	Uninstall bool
}

// File names in the data directory.
const (
	StateFile         = "state.db"
	AuditFile         = "audit.log"
	SubscriptionsFile = "subscriptions.json"
	ScriptDir         = "scripts"
)

// Run runs the agent until ctx ends, then stops it gracefully.
func Run(ctx context.Context, o Options) error {
	_, err := RunUntil(ctx, o)
	return err
}

// RunUntil runs the agent until ctx ends or an agent.stop / agent.restart
// command asks it to stop; it returns the offline reason it stopped with
// ("shutdown", "restart", …), so that the caller can restart it.
func RunUntil(parent context.Context, o Options) (reason string, err error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var reqMu sync.Mutex
	requested := ""
	request := func(r string) {
		reqMu.Lock()
		if requested == "" {
			requested = r
		}
		reqMu.Unlock()
		cancel()
	}
	cfg, log := o.Config, o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	started := time.Now()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return "", fmt.Errorf("data_dir: %w", err)
	}
	store, err := state.Open(filepath.Join(cfg.DataDir, StateFile), state.Options{
		Logger:      log.With("component", "state"),
		DefaultKeep: time.Duration(cfg.Security.DefaultTTL) + time.Duration(cfg.Security.MaxClockSkew),
	})
	if err != nil {
		return "", err
	}
	defer closeLogged(log, "state", store.Close)
	auditLog, err := audit.Open(filepath.Join(cfg.DataDir, AuditFile))
	if err != nil {
		return "", err
	}
	defer closeLogged(log, "audit log", auditLog.Close)
	stopReaper, err := runner.Init(log)
	if err != nil {
		log.Warn("process reaper not available", "err", err)
	} else {
		defer stopReaper()
	}
	verifier, err := newVerifier(cfg)
	if err != nil {
		return "", err
	}
	tlsCfg, err := tlsConfig(cfg, log)
	if err != nil {
		return "", err
	}
	topics := protocol.Topics{Prefix: cfg.TopicPrefix}
	subs, unsub, saveSubs := subscriptions(cfg, topics, log)

	var stallClient atomic.Pointer[transport.Client] // set once the client exists
	var disp *dispatch.Dispatcher
	tel, err := newTelemetry(cfg, o.SysInfo, topics, o.Version, log,
		health(func() *dispatch.Dispatcher { return disp }, store, stallClient.Load))
	if err != nil {
		return "", err
	}
	tel.buildFirst(ctx)
	limits := process.Limits{MaxOutput: cfg.Exec.MaxOutputBytes, ScriptDir: filepath.Join(cfg.DataDir, ScriptDir)}
	handlers := map[string]dispatch.Handler{
		protocol.KindPing:         ping.Handler{Version: o.Version, Started: started},
		protocol.KindExec:         process.Exec{Limits: limits},
		protocol.KindShell:        process.Shell{Limits: limits},
		protocol.KindScript:       process.Script{Limits: limits},
		protocol.KindAgentStop:    agentctl.Handler{Reason: protocol.ReasonShutdown, Request: request},
		protocol.KindAgentRestart: agentctl.Handler{Reason: protocol.ReasonRestart, Request: request},
	}
	tel.handlers(handlers, log.With("component", "inventory"))
	selfControlHandlers(o, handlers, request)
	disp = dispatch.New(dispatch.Options{
		HostID: cfg.HostID, Groups: cfg.Groups, Facts: cfg.Facts, FactsFunc: tel.inv.Facts, OS: runtime.GOOS, Topics: topics,
		Verifier: verifier, Store: store, Audit: auditLog,
		Handlers: handlers,
		OnStall: func() {
			if c := stallClient.Load(); c != nil {
				c.Reconnect(errors.New("a command could not be journaled: reconnecting so that the broker delivers it again"))
			}
		},
		KillOrphan: func(raw json.RawMessage) (bool, error) {
			var p runner.Proc
			if err := json.Unmarshal(raw, &p); err != nil {
				return false, err
			}
			return runner.KillOrphan(p)
		},
		MaxPayload:     cfg.Security.MaxPayloadBytes,
		DefaultTTL:     time.Duration(cfg.Security.DefaultTTL),
		MaxClockSkew:   time.Duration(cfg.Security.MaxClockSkew),
		DefaultTimeout: time.Duration(cfg.Exec.DefaultTimeout),
		MaxTimeout:     time.Duration(cfg.Exec.MaxTimeout),
		MaxConcurrent:  cfg.Exec.MaxConcurrent,
		MaxQueue:       cfg.Exec.MaxQueue,
		Logger:         log.With("component", "dispatch"),
	})

	status := func(st, reason string, session uint64) []byte {
		s := protocol.Status{V: protocol.Version, Host: cfg.HostID, State: st, Reason: reason, Session: session, TS: protocol.Now()}
		if st == protocol.StatusOnline {
			s.Version, s.OS, s.Arch, s.Groups, s.PID = o.Version, runtime.GOOS, runtime.GOARCH, cfg.Groups, os.Getpid()
			s.StartedAt = &protocol.Time{Time: started.UTC()}
		}
		b, _ := json.Marshal(s)
		return b
	}
	client, err := transport.New(transport.Options{
		ClientID: cfg.HostID, URLs: cfg.Broker.URLs,
		Username: cfg.Broker.Username, Password: cfg.Broker.Password, TLS: tlsCfg,
		KeepAlive:      time.Duration(cfg.Broker.KeepAlive),
		ConnectTimeout: time.Duration(cfg.Broker.ConnectTimeout),
		WriteTimeout:   time.Duration(cfg.Broker.WriteTimeout),
		ReconnectMin:   time.Duration(cfg.Broker.ReconnectMin),
		ReconnectMax:   time.Duration(cfg.Broker.ReconnectMax),
		Subscriptions:  subs, Unsubscribe: unsub,
		NextSession: store.NextSession,
		WillTopic:   topics.Status(cfg.HostID),
		Will:        func(s uint64) []byte { return status(protocol.StatusOffline, protocol.ReasonLost, s) },
		Birth:       func(s uint64) []byte { return status(protocol.StatusOnline, "", s) },
		OnMessage:   disp.Submit,
		OnConnect: func(ctx context.Context, first bool) {
			if first {
				saveSubs()
			}
			tel.onConnect(ctx, first)
		},
		Logger: log.With("component", "transport"),
	})
	if err != nil {
		return "", err
	}
	stallClient.Store(client)
	tel.start(client, topics)
	pub := &outbox.Publisher{Store: store, Client: client, Timeout: time.Duration(cfg.Broker.WriteTimeout), Logger: log.With("component", "outbox")}

	log.Info("agent starting", "version", o.Version, "host", cfg.HostID, "brokers", redactURLs(cfg.Broker.URLs),
		"groups", cfg.Groups, "data_dir", cfg.DataDir, "require_signed", cfg.RequireSigned(), "dev", cfg.Dev)

	// The session and the publisher outlive the pipeline, so that final
	// results and the offline status still go out while stopping.
	netCtx, stopNet := context.WithCancel(context.Background())
	defer stopNet()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := client.Run(netCtx); err != nil {
			log.Error("transport stopped", "err", err)
		}
	})
	pubCtx, stopPub := context.WithCancel(context.Background())
	pubDone := make(chan struct{})
	go func() { defer close(pubDone); pub.Run(pubCtx) }()

	sw := &statusWriter{path: filepath.Join(cfg.DataDir, StatusFile), client: client, disp: disp, store: store, every: 5 * time.Second,
		base: LocalStatus{Version: o.Version, PID: os.Getpid(), Host: cfg.HostID, StartedAt: started.UTC()}}
	swCtx, stopSW := context.WithCancel(context.Background())
	swDone := make(chan struct{})
	go func() { defer close(swDone); sw.run(swCtx) }()

	stopSelfControl := startSelfControl(o, disp, client, started, request, log)
	runErr := disp.Run(ctx, time.Duration(cfg.Exec.GracePeriod))
	stopSelfControl()
	tel.stop()
	stopSW()
	<-swDone

	// Graceful stop: the pipeline is done; flush what it produced (the
	// publisher goroutine first stops, so that only Drain publishes).
	stopPub()
	<-pubDone
	reason = protocol.ReasonShutdown
	reqMu.Lock()
	if requested != "" {
		reason = requested
	}
	reqMu.Unlock()
	if o.Reason != nil && parent.Err() != nil {
		if r := o.Reason(); r != "" {
			reason = r
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	offline := func(session uint64) error {
		pctx, cancel := context.WithDeadline(context.Background(), deadline.Add(2*time.Second))
		defer cancel()
		return client.PublishWait(pctx, topics.Status(cfg.HostID), 1, true, status(protocol.StatusOffline, reason, session))
	}
	var sent uint64 // the session whose offline status went out
	if st := client.State(); st.Connected {
		n := pub.Drain(deadline)
		if err := offline(st.Session); err != nil {
			log.Warn("offline status not published", "err", err)
		} else {
			sent = st.Session
		}
		log.Info("agent stopped", "reason", reason, "outbox_sent", n, "outbox_left", store.OutboxLen())
	} else {
		log.Info("agent stopped while disconnected", "reason", reason, "outbox_left", store.OutboxLen())
	}
	// Stop reconnecting before closing the connection: a reconnect that
	// completed after the check above would otherwise outlive Run, and its
	// birth would leave the host "online", so it gets its offline status.
	stopNet()
	wg.Wait()
	if st := client.State(); st.Connected && st.Session != sent {
		if err := offline(st.Session); err != nil {
			log.Warn("offline status not published", "err", err)
		}
	}
	if reason == protocol.ReasonUninstall {
		clearRetained(client, topics, cfg.HostID, log)
	}
	client.Disconnect()
	if syncErr := auditLog.Sync(); syncErr != nil {
		log.Warn("audit log sync failed", "err", syncErr)
	}
	sw.write("stopped")
	return reason, runErr
}

func closeLogged(log *slog.Logger, what string, fn func() error) {
	if err := fn(); err != nil {
		log.Error("close failed", "what", what, "err", err)
	}
}

func newVerifier(cfg *config.Config) (*security.Verifier, error) {
	p := security.Policy{AllowedKinds: cfg.Security.AllowedKinds, RequireSigned: cfg.RequireSigned()}
	for i, k := range cfg.Security.TrustedKeys {
		pub, err := config.ParseKey(k.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("security.trusted_keys[%d].public_key: %w", i, err)
		}
		p.Keys = append(p.Keys, security.Key{ID: k.ID, Public: pub, Kinds: k.Kinds})
	}
	return security.New(p)
}

func tlsConfig(cfg *config.Config, log *slog.Logger) (*tls.Config, error) {
	t := cfg.Broker.TLS
	if t == (config.TLS{}) {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.InsecureSkipVerify {
		log.Warn("TLS SERVER VERIFICATION IS OFF (broker.tls.insecure_skip_verify): any broker, or anyone in between, can impersonate yours and send this host commands")
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("broker.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("broker.tls.ca_file: no PEM certificate in %s", t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("broker.tls.cert_file/key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// subscriptions returns the command topics of this host and the topics of
// groups it had before but no longer has (to unsubscribe from its
// persistent session); it records the new set in the data directory.
func subscriptions(cfg *config.Config, topics protocol.Topics, log *slog.Logger) (subs, stale []string, save func()) {
	subs = []string{topics.HostCmd(cfg.HostID), topics.AllCmd()}
	for _, g := range cfg.Groups {
		subs = append(subs, topics.GroupCmd(g))
	}
	path := filepath.Join(cfg.DataDir, SubscriptionsFile)
	var old []string
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &old); err != nil {
			log.Warn("ignoring unreadable subscriptions file", "path", path, "err", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		log.Warn("cannot read subscriptions file", "path", path, "err", err)
	}
	for _, t := range old {
		if !slices.Contains(subs, t) {
			stale = append(stale, t)
		}
	}
	save = func() {
		b, _ := json.Marshal(subs)
		tmp := path + ".tmp"
		err := os.WriteFile(tmp, b, 0o600)
		if err == nil {
			err = os.Rename(tmp, path)
		}
		if err != nil {
			log.Warn("cannot record subscriptions", "err", err)
		}
	}
	return subs, stale, save
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}

func redactURLs(urls []string) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = redactURL(u)
	}
	return out
}
