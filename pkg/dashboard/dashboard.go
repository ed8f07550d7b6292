// Package dashboard is the fleet's live web dashboard: an HTTP server with
// its assets embedded in the binary (plain JavaScript and CSS, nothing
// fetched from elsewhere) that shows every host of a fleet view
// (pkg/fleet) and follows it as the agents publish.
//
// The work is done on the server: the browser first receives a snapshot of
// every host as table rows, then deltas over Server-Sent Events, coalesced
// (at most one message per Options.Interval, only the hosts that changed),
// with the online/offline counts computed here; its table renders only the
// rows in view, so 10,000 hosts stay fast. A host page shows charts of the
// recent metrics samples (a bounded ring per host, kept here), the host's
// recent commands with their results, and its audit records (fed to Apply
// from P/hosts/+/audit and P/hosts/+/results/#, bounded per host).
//
// The dashboard is read-only unless a signing key (Options.Signer) and
// users (Options.Users, bcrypt hashes) are configured: then a signed-in
// user may run commands on a host. Sessions are server-side, named by a
// random token in an HttpOnly, SameSite=Strict cookie; every state-changing
// request must carry the session's CSRF token and come from the same
// origin. Every response carries security headers (a Content-Security-Policy
// without inline scripts or styles, frame-ancestors 'none', nosniff…).
//
// docs/dashboard.md is the operator's guide.
package dashboard

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/mqagent/mqagent/pkg/client"
	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// Defaults of Options.
const (
	DefaultInterval       = 500 * time.Millisecond
	DefaultHistory        = 120
	DefaultCommands       = 50
	DefaultAudits         = 100
	DefaultMaxClients     = 256
	DefaultSessionTTL     = 12 * time.Hour
	DefaultCommandTimeout = 60 * time.Second
)

// Sender publishes a command and delivers its results until ctx ends
// (*client.Client does).
type Sender interface {
	Send(ctx context.Context, cmd protocol.Command, signer *client.Signer) (<-chan client.Event, error)
}

// Options configure a Server.
type Options struct {
	// View is the fleet the dashboard shows (required). Feed it metrics
	// too (client.FleetOptions.Metrics) for the charts and the CPU, memory
	// and disk columns.
	View *fleet.View
	// Prefix is the topic prefix of the messages given to Apply (""
	// means protocol.DefaultPrefix).
	Prefix string
	// Interval is the longest a change waits before it is sent to the
	// browsers (changes within it are coalesced). Default 500 ms.
	Interval time.Duration
	// History is how many metrics samples are kept per host for the
	// charts (default 120: 20 minutes at the agents' default 10 s).
	History int
	// Commands and Audits are how many commands and audit records are
	// kept per host (defaults 50 and 100); MaxActivityHosts bounds the
	// hosts they are kept for (default: 100,000), least recently active
	// first out.
	Commands, Audits, MaxActivityHosts int
	// MaxClients bounds the live connections (Server-Sent Events streams)
	// served at once (default 256).
	MaxClients int

	// Sender and Signer enable commands from the browser: both must be
	// set, and Users too. Without them the dashboard is read-only.
	Sender Sender         // publishes the commands
	Signer *client.Signer // signs them
	// Users are the accounts that may sign in: name to bcrypt hash
	// (ReadUsers reads them from a file).
	Users map[string][]byte
	// RequireLogin makes every page and API need a signed-in user (the
	// default lets anyone who can reach the server watch the fleet).
	RequireLogin bool
	// SecureCookies marks the session cookie Secure (serve over HTTPS, or
	// behind a proxy that terminates TLS). Serve sets it for TLS.
	SecureCookies bool
	// SessionTTL is how long a session lasts (default 12 h).
	SessionTTL time.Duration
	// CommandTimeout is the default run time limit of commands sent from
	// the browser (default 60 s; the form may ask for up to 1 h).
	CommandTimeout time.Duration

	// Metrics, when set, is served at /metrics (pkg/exporter's Handler).
	Metrics http.Handler
	// Logger receives the server's events; nil discards them.
	Logger *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Server is the dashboard. Create it with New (or Connect), run it with
// Run (Connect does), and serve Handler.
type Server struct {
	o        Options
	log      *slog.Logger
	topics   protocol.Topics
	hub      *hub
	activity *activity
	auth     *auth
	handler  http.Handler
	clients  chan struct{} // semaphore of live streams

	// life ends when Run returns: live streams and the commands sent
	// from the browser stop with it.
	life    context.Context
	endLife context.CancelFunc
	wg      sync.WaitGroup
}

// ErrNoView is returned by New without Options.View.
var ErrNoView = errors.New("dashboard: no fleet view")

// New checks o and returns a Server. Nothing runs until Run.
func New(o Options) (*Server, error) {
	if o.View == nil {
		return nil, ErrNoView
	}
	if o.Prefix == "" {
		o.Prefix = protocol.DefaultPrefix
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.History <= 0 {
		o.History = DefaultHistory
	}
	if o.Commands <= 0 {
		o.Commands = DefaultCommands
	}
	if o.Audits <= 0 {
		o.Audits = DefaultAudits
	}
	if o.MaxActivityHosts <= 0 {
		o.MaxActivityHosts = 100_000
	}
	if o.MaxClients <= 0 {
		o.MaxClients = DefaultMaxClients
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	if o.CommandTimeout <= 0 {
		o.CommandTimeout = DefaultCommandTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if (o.Signer == nil) != (o.Sender == nil) {
		return nil, errors.New("dashboard: commands need both a sender and a signer")
	}
	if o.Signer != nil && len(o.Users) == 0 {
		return nil, errors.New("dashboard: commands need users who can sign in (a users file)")
	}
	if o.RequireLogin && len(o.Users) == 0 {
		return nil, errors.New("dashboard: requiring a login needs users (a users file)")
	}
	s := &Server{
		o:        o,
		log:      o.Logger,
		topics:   protocol.Topics{Prefix: o.Prefix},
		hub:      newHub(o.History, o.Now),
		activity: newActivity(o.Commands, o.Audits, o.MaxActivityHosts),
		auth:     newAuth(o.Users, o.SessionTTL, o.SecureCookies, o.Now),
		clients:  make(chan struct{}, o.MaxClients),
	}
	s.life, s.endLife = context.WithCancel(context.Background())
	s.handler = s.routes()
	return s, nil
}

// CanRun reports whether commands may be sent from the browser (by a
// signed-in user).
func (s *Server) CanRun() bool { return s.o.Signer != nil && s.o.Sender != nil && len(s.o.Users) > 0 }

// Run follows the fleet view and sends its changes to the browsers until
// ctx ends.
func (s *Server) Run(ctx context.Context) {
	defer s.endLife()
	changes, stop := s.o.View.Subscribe(256)
	defer stop()
	tick := time.NewTicker(s.o.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			s.hub.closeClients()
			return
		case c, ok := <-changes:
			if !ok {
				return
			}
			s.hub.apply(c)
		case <-tick.C:
			s.hub.flush(s.o.View.Stats())
		}
	}
}

// ActivityTopics are the subscriptions whose messages Apply reads: every
// host's audit records and command results (output chunks included).
func ActivityTopics(prefix string) []string {
	if prefix == "" {
		prefix = protocol.DefaultPrefix
	}
	return []string{prefix + "/hosts/+/audit", prefix + "/hosts/+/results/#"}
}

// Apply feeds one message of ActivityTopics (an audit record, a result
// or an output chunk) and reports whether it was kept. Bad messages are
// ignored; Apply never blocks on the network.
func (s *Server) Apply(topic string, payload []byte) bool {
	return s.activity.apply(s.topics, topic, payload)
}

// Handler is the dashboard's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Conn is the broker connection Connect uses (*client.Client implements
// it).
type Conn interface {
	Sender
	Fleet(ctx context.Context, o client.FleetOptions) (*fleet.View, error)
	Messages(ctx context.Context, filters ...string) (<-chan client.Message, error)
	Topics() protocol.Topics
}

// Connect starts the fleet view of c (with metrics), subscribes to the
// audit records and results, and returns a running Server that follows
// them until ctx ends (Wait then returns). o.View, o.Prefix and, when
// o.Signer is set, o.Sender are taken from c.
func Connect(ctx context.Context, c Conn, o Options) (*Server, error) {
	v, err := c.Fleet(ctx, client.FleetOptions{Metrics: true})
	if err != nil {
		return nil, fmt.Errorf("fleet view: %w", err)
	}
	o.View, o.Prefix = v, c.Topics().Prefix
	if o.Signer != nil {
		o.Sender = c
	}
	s, err := New(o)
	if err != nil {
		return nil, err
	}
	msgs, err := c.Messages(ctx, ActivityTopics(o.Prefix)...)
	if err != nil {
		return nil, err
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.Run(ctx)
	}()
	go func() {
		defer s.wg.Done()
		for m := range msgs {
			s.Apply(m.Topic, m.Payload)
		}
	}()
	return s, nil
}

// Wait waits for the goroutines Connect started (they end with its ctx)
// and for the commands sent from the browser to stop being followed.
func (s *Server) Wait() { s.wg.Wait() }

// Serve serves the dashboard on ln until ctx ends, then shuts down
// (waiting up to 5 s for requests in progress; live streams end at once).
// With certFile and keyFile it serves HTTPS (and marks cookies Secure).
func (s *Server) Serve(ctx context.Context, ln net.Listener, certFile, keyFile string) error {
	if certFile != "" {
		s.auth.secure = true
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second, // streams lift it for themselves
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12},
	}
	done := make(chan error, 1)
	go func() {
		if certFile != "" {
			done <- srv.ServeTLS(ln, certFile, keyFile)
		} else {
			done <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-done:
		return fmt.Errorf("dashboard: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close()
	}
	<-done
	return err
}
