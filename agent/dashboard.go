package main

// mqagent dashboard: the live web dashboard (pkg/dashboard), with the
// Prometheus metrics of pkg/exporter at /metrics. docs/dashboard.md is the
// guide.

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/mqagent/mqagent/pkg/client"
	"github.com/mqagent/mqagent/pkg/dashboard"
	"github.com/mqagent/mqagent/pkg/exporter"
	"github.com/mqagent/mqagent/pkg/logging"
)

// dashboardFlags are the flags of mqagent dashboard.
type dashboardFlags struct {
	conn                   connFlags
	listen                 string
	users                  string
	requireLogin           bool
	httpsCert, httpsKey    string
	secureCookies          bool
	metrics                bool
	history                int
	interval               time.Duration
	staleAfter, metricsAge time.Duration
	commandTimeout         time.Duration
	level                  string
}

func dashboardCmd() *cobra.Command {
	f := &dashboardFlags{}
	c := &cobra.Command{
		Use:   "dashboard [flags]",
		Short: "Serve the live web dashboard of the fleet (and its Prometheus metrics)",
		Long: `Serve a web dashboard of the fleet: online/offline counts, every host with its CPU,
memory, disk, version and last contact (sortable, filterable, live), and a page per host
with charts of its recent metrics, its recent commands with their results, and its audit
records. Prometheus metrics are served at /metrics (as mqagent exporter does).

  mqagent dashboard --broker tcp://127.0.0.1:1883
  mqagent dashboard --listen 0.0.0.0:8443 --https-cert cert.pem --https-key key.pem \
      --broker ssl://broker:8883 --tls-ca ca.pem --users users.txt --key ops.key --kid ops

The dashboard is read-only unless --key (a signing key) AND --users (accounts that sign
in; see "mqagent dashboard passwd") are given: then a signed-in user can run commands on
a host, signed with the key, their name recorded as the operator.`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return runDashboardCmd(cmd, f) },
	}
	fs := c.Flags()
	f.conn.add(fs)
	_ = fs.MarkHidden("operator") // the signed-in user is the operator
	fs.StringVar(&f.listen, "listen", envDefault("MQAGENT_DASHBOARD_LISTEN", "127.0.0.1:8080"), "HTTP listen address (env MQAGENT_DASHBOARD_LISTEN)")
	fs.StringVar(&f.users, "users", envDefault("MQAGENT_DASHBOARD_USERS", ""), "users who may sign in: a file of name:bcrypt-hash lines (env MQAGENT_DASHBOARD_USERS)")
	fs.BoolVar(&f.requireLogin, "require-login", envBool("MQAGENT_DASHBOARD_REQUIRE_LOGIN"), "only signed-in users may watch the fleet (env MQAGENT_DASHBOARD_REQUIRE_LOGIN)")
	fs.StringVar(&f.httpsCert, "https-cert", envDefault("MQAGENT_DASHBOARD_CERT", ""), "serve HTTPS with this certificate (PEM) (env MQAGENT_DASHBOARD_CERT)")
	fs.StringVar(&f.httpsKey, "https-key", envDefault("MQAGENT_DASHBOARD_KEY", ""), "private key (PEM) of --https-cert (env MQAGENT_DASHBOARD_KEY)")
	fs.BoolVar(&f.secureCookies, "secure-cookies", envBool("MQAGENT_DASHBOARD_SECURE_COOKIES"), "mark the session cookie Secure (behind a proxy that terminates TLS)")
	fs.BoolVar(&f.metrics, "metrics", true, "serve Prometheus metrics at /metrics")
	fs.IntVar(&f.history, "history", dashboard.DefaultHistory, "metrics samples kept per host for the charts")
	fs.DurationVar(&f.interval, "interval", dashboard.DefaultInterval, "longest wait before a change reaches the browsers (changes are coalesced)")
	fs.DurationVar(&f.staleAfter, "stale-after", exporter.DefaultStaleAfter, "/metrics: drop an offline host not heard from for this long (negative: never)")
	fs.DurationVar(&f.metricsAge, "metrics-max-age", exporter.DefaultMetricsMaxAge, "/metrics: report a host's sample while it is younger than this (negative: always)")
	fs.DurationVar(&f.commandTimeout, "command-timeout", dashboard.DefaultCommandTimeout, "default run time limit of commands sent from the dashboard")
	fs.StringVar(&f.level, "log-level", envDefault("MQAGENT_LOG_LEVEL", "info"), "log level: debug, info, warn, error")
	c.AddCommand(dashboardPasswdCmd())
	return flagErrors(c)
}

func runDashboardCmd(cmd *cobra.Command, f *dashboardFlags) error {
	log, closer, err := logging.New(logging.Options{Level: f.level, Stderr: cmd.ErrOrStderr()})
	if err != nil {
		return usageErr("--log-level: %v", err)
	}
	defer closer.Close()
	if (f.httpsCert == "") != (f.httpsKey == "") {
		return usageErr("--https-cert and --https-key: give both or neither")
	}
	if f.httpsCert != "" {
		if _, err := tls.LoadX509KeyPair(f.httpsCert, f.httpsKey); err != nil {
			return usageErr("--https-cert/--https-key: %v", err)
		}
	}
	o := dashboard.Options{
		RequireLogin: f.requireLogin, SecureCookies: f.secureCookies || f.httpsCert != "",
		History: f.history, Interval: f.interval, CommandTimeout: f.commandTimeout, Logger: log.With("component", "dashboard"),
	}
	if f.users != "" {
		if o.Users, err = dashboard.ReadUsers(f.users); err != nil {
			return usageErr("--users: %v", err)
		}
	}
	if o.Signer, err = f.conn.signer(); err != nil {
		return err
	}
	switch {
	case o.Signer != nil && len(o.Users) == 0 && !cmd.Flags().Changed("key"):
		// MQAGENT_KEY set for the other commands: not a reason to fail.
		log.Warn("MQAGENT_KEY is set but there is no --users: the dashboard is read-only")
		o.Signer = nil
	case o.Signer != nil && len(o.Users) == 0:
		return usageErr("--key needs --users: commands can only be run by users who sign in")
	case f.requireLogin && len(o.Users) == 0:
		return usageErr("--require-login needs --users")
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return usageErr("--listen: %v", err)
	}
	if len(o.Users) > 0 && f.httpsCert == "" && !f.secureCookies && !isLoopback(ln.Addr()) {
		log.Warn("sign-in over plain HTTP on a non-loopback address: passwords and session cookies cross the network in clear; use --https-cert/--https-key or a TLS proxy with --secure-cookies")
	}
	ctx, stop := interruptible(cmd.Context())
	defer stop()
	setPahoLoggers(log) // before the client starts: paho's loggers are globals
	c, err := dialLongRunning(&f.conn, log)
	if err != nil {
		ln.Close()
		return err
	}
	defer c.Close()
	return serveDashboard(ctx, log, c, ln, o, f.httpsCert, f.httpsKey, exporter.Options{StaleAfter: f.staleAfter, MetricsMaxAge: f.metricsAge}, f.metrics)
}

// serveDashboard runs a dashboard on c, served on ln, until ctx ends.
func serveDashboard(ctx context.Context, log *slog.Logger, c *client.Client, ln net.Listener, o dashboard.Options, certFile, keyFile string, eo exporter.Options, metrics bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if metrics {
		// The same view as the dashboard's (Connect gets it again).
		v, err := c.Fleet(ctx, client.FleetOptions{Metrics: true})
		if err != nil {
			ln.Close()
			return fmt.Errorf("fleet view: %w", err)
		}
		o.Metrics = exporter.Handler(exporter.Registry(exporter.New(v, eo), true))
	}
	s, err := dashboard.Connect(ctx, c, o)
	if err != nil {
		ln.Close()
		return fmt.Errorf("dashboard: %w", err)
	}
	defer s.Wait()
	scheme := "http"
	if certFile != "" {
		scheme = "https"
	}
	log.Info("dashboard listening", "url", scheme+"://"+ln.Addr().String(), "commands", s.CanRun(), "hosts", c.FleetView().Len())
	err = s.Serve(ctx, ln, certFile, keyFile)
	cancel()
	if ctx.Err() != nil && err == nil {
		log.Info("dashboard stopped")
	}
	return err
}

// startDashboard starts a read-only dashboard of brokerURL on addr in the
// background (mqagent dev). It returns the address it listens on and a
// function that stops it.
func startDashboard(ctx context.Context, log *slog.Logger, addr, brokerURL string) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("dashboard: %w", err)
	}
	c, err := client.Dial(client.Options{URL: brokerURL, Reconnect: true, Logger: log})
	if err != nil {
		ln.Close()
		return "", nil, fmt.Errorf("dashboard: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := serveDashboard(ctx, log, c, ln, dashboard.Options{Logger: log}, "", "", exporter.Options{}, true); err != nil && ctx.Err() == nil {
			log.Error("dashboard stopped", "err", err)
		}
	}()
	var once sync.Once
	return ln.Addr().String(), func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			c.Close()
		})
	}, nil
}

// dialLongRunning connects as connFlags.dial does, with reconnection on
// (a dashboard or exporter outlives broker restarts) and connection events
// logged.
func dialLongRunning(f *connFlags, log *slog.Logger) (*client.Client, error) {
	o, err := f.options()
	if err != nil {
		return nil, err
	}
	o.Reconnect, o.Logger = true, log
	return dialWith(o)
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

func dashboardPasswdCmd() *cobra.Command {
	return flagErrors(&cobra.Command{
		Use:   "passwd USER",
		Short: "Print a users-file line (USER:bcrypt-hash) for a password read from the terminal or stdin",
		Long: `Read a password (twice on a terminal, else one line of stdin) and print
"USER:HASH" to append to the file given to mqagent dashboard --users.

  mqagent dashboard passwd alice >> users.txt`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			user := args[0]
			pw, err := readPassword(cmd.InOrStdin(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			h, err := dashboard.HashPassword(pw)
			if err != nil {
				return usageErr("%v", err)
			}
			line := user + ":" + h
			if _, err := dashboard.ParseUsers(strings.NewReader(line)); err != nil {
				return usageErr("%v", err)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), line)
			return err
		},
	})
}

// readPassword reads a password without echo from a terminal (twice), or
// one line from another stdin.
func readPassword(in io.Reader, prompt io.Writer) (string, error) {
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(prompt, "Password: ")
		a, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return "", err
		}
		fmt.Fprint(prompt, "Again: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return "", err
		}
		if string(a) != string(b) {
			return "", errors.New("the passwords differ")
		}
		return string(a), nil
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return "", fmt.Errorf("read password: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}
