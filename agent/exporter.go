package main

// mqagent exporter: Prometheus metrics of the fleet (pkg/exporter).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqagent/mqagent/pkg/client"
	"github.com/mqagent/mqagent/pkg/exporter"
	"github.com/mqagent/mqagent/pkg/logging"
)

// exporterLanding is the page at / (Prometheus exporters conventionally
// link to their metrics).
const exporterLanding = `<!doctype html><html><head><meta charset="utf-8"><title>mqagent exporter</title></head>
<body><h1>mqagent exporter</h1><p><a href="/metrics">Metrics</a> · <a href="/healthz">Health</a></p></body></html>
`

func exporterCmd() *cobra.Command {
	var (
		conn                   connFlags
		listen, level          string
		staleAfter, metricsAge time.Duration
	)
	c := &cobra.Command{
		Use:   "exporter [flags]",
		Short: "Serve Prometheus metrics of every host (presence, CPU, memory, filesystems, network, agent)",
		Long: `Follow what the agents publish (status, inventory, metrics samples) and serve it in the
Prometheus format at /metrics: mqagent_host_up{host}, mqagent_host_info{host,version,os,…},
mqagent_host_cpu_usage_ratio, mqagent_host_memory_used_bytes,
mqagent_host_filesystem_size_bytes{host,mount}, mqagent_host_network_receive_bytes_total{host,device},
mqagent_agent_resident_memory_bytes, mqagent_fleet_hosts{state}… (docs/dashboard.md lists them).

  mqagent exporter --listen :9108 --broker tcp://broker:1883

Offline hosts stay with mqagent_host_up 0 until nothing was heard from them for
--stale-after; the values of a sample are reported while it is younger than
--metrics-max-age and the host is not offline. deploy/grafana/mqagent.json is a Grafana
dashboard of these metrics.`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, closer, err := logging.New(logging.Options{Level: level, Stderr: cmd.ErrOrStderr()})
			if err != nil {
				return usageErr("--log-level: %v", err)
			}
			defer closer.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return usageErr("--listen: %v", err)
			}
			defer ln.Close()
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			setPahoLoggers(log) // before the client starts: paho's loggers are globals
			c, err := dialLongRunning(&conn, log)
			if err != nil {
				return err
			}
			defer c.Close()
			v, err := c.Fleet(ctx, client.FleetOptions{Metrics: true})
			if err != nil {
				return fmt.Errorf("fleet view: %w", err)
			}
			reg := exporter.Registry(exporter.New(v, exporter.Options{StaleAfter: staleAfter, MetricsMaxAge: metricsAge}), true)
			mux := http.NewServeMux()
			mux.Handle("GET /metrics", exporter.Handler(reg))
			mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
				st := v.Stats()
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"ok":true,"hosts":%d,"messages":%d}`+"\n", st.Hosts, st.Messages)
			})
			mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				fmt.Fprint(w, exporterLanding)
			})
			srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second}
			log.Info("exporter listening", "url", "http://"+ln.Addr().String()+"/metrics", "hosts", v.Len())
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ln) }()
			select {
			case err := <-done:
				return fmt.Errorf("exporter: %w", err)
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = srv.Shutdown(sctx)
			if e := <-done; !errors.Is(e, http.ErrServerClosed) && err == nil {
				err = e
			}
			log.Info("exporter stopped")
			return err
		},
	}
	fs := c.Flags()
	conn.add(fs)
	for _, name := range []string{"key", "kid", "operator"} {
		_ = fs.MarkHidden(name) // the exporter sends no command
	}
	fs.StringVar(&listen, "listen", envDefault("MQAGENT_EXPORTER_LISTEN", ":9108"), "HTTP listen address (env MQAGENT_EXPORTER_LISTEN)")
	fs.DurationVar(&staleAfter, "stale-after", exporter.DefaultStaleAfter, "drop an offline host not heard from for this long (negative: never)")
	fs.DurationVar(&metricsAge, "metrics-max-age", exporter.DefaultMetricsMaxAge, "report a host's sample while it is younger than this (negative: always)")
	fs.StringVar(&level, "log-level", envDefault("MQAGENT_LOG_LEVEL", "info"), "log level: debug, info, warn, error")
	return flagErrors(c)
}
