package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/mqagent/mqagent/pkg/broker"
	"github.com/mqagent/mqagent/pkg/config"
	"github.com/mqagent/mqagent/pkg/logging"
	"github.com/mqagent/mqagent/pkg/protocol"
)

func defaultDevDir() string {
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".mqagent", "dev")
	}
	return filepath.Join(os.TempDir(), "mqagent-dev")
}

func brokerCmd() *cobra.Command {
	var listen, wsListen, dataDir, level string
	c := &cobra.Command{
		Use:   "broker",
		Short: "Run the embedded MQTT broker (persistent sessions, TCP and WebSocket)",
		Long: "Run the embedded MQTT broker until SIGTERM or SIGINT. With --data-dir, sessions, subscriptions,\n" +
			"retained and queued messages survive a restart. Every client is allowed: bind it to loopback or a\n" +
			"trusted network (broker ACLs come with production configs).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, closer, err := logging.New(logging.Options{Level: level, Stderr: cmd.ErrOrStderr()})
			if err != nil {
				return err
			}
			defer closer.Close()
			b, err := broker.New(broker.Options{TCPAddr: listen, WSAddr: wsListen, DataDir: dataDir, Logger: log})
			if err != nil {
				return err
			}
			if err := b.Start(); err != nil {
				return err
			}
			log.Info("broker listening", "tcp", b.TCPAddr(), "ws", b.WSAddr(), "data_dir", dataDir)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			<-ctx.Done()
			return b.Close()
		},
	}
	f := c.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:1883", "TCP listen address (\"\" disables)")
	f.StringVar(&wsListen, "ws-listen", "127.0.0.1:1884", "WebSocket listen address for dashboards (\"\" disables)")
	f.StringVar(&dataDir, "data-dir", "", "persist sessions and messages here (\"\" = memory only)")
	f.StringVar(&level, "log-level", "info", "log level: debug, info, warn, error")
	return c
}

func devCmd() *cobra.Command {
	var listen, wsListen, dataDir, hostID, dashboardAddr string
	c := &cobra.Command{
		Use:   "dev",
		Short: "Run the embedded broker and this host's agent in development mode",
		Long: "Development mode: the embedded broker on loopback and this host's agent, which accepts unsigned\n" +
			"commands. Never use it on a host that others can reach. Stop with Ctrl-C.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd.Context(), listen, wsListen, dataDir, hostID, dashboardAddr)
		},
	}
	f := c.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:1883", "broker TCP address (loopback only)")
	f.StringVar(&wsListen, "ws-listen", "127.0.0.1:1884", "broker WebSocket address (loopback only)")
	f.StringVar(&dataDir, "data-dir", defaultDevDir(), "where the broker and the agent keep their state")
	f.StringVar(&hostID, "host-id", "", "this host's id (default: from the hostname)")
	f.StringVar(&dashboardAddr, "dashboard", "127.0.0.1:8080", "web dashboard address (\"\" disables it)")
	return c
}

func runDev(parent context.Context, listen, wsListen, dataDir, hostID, dashboardAddr string) error {
	log, closer, err := logging.New(logging.Options{Level: "info"})
	if err != nil {
		return err
	}
	defer closer.Close()
	if dataDir, err = filepath.Abs(dataDir); err != nil {
		return err
	}
	b, err := broker.New(broker.Options{TCPAddr: listen, WSAddr: wsListen, DataDir: filepath.Join(dataDir, "broker"), Logger: log.With("component", "broker")})
	if err != nil {
		return err
	}
	if err := b.Start(); err != nil {
		return err
	}
	defer b.Close()
	cfg := config.Default()
	cfg.Dev = true
	if hostID != "" {
		cfg.HostID = hostID
	}
	cfg.DataDir = filepath.Join(dataDir, "agent")
	cfg.Broker.URLs = []string{"tcp://" + b.TCPAddr()}
	cfg.Groups = []string{"dev"}
	if err := cfg.Validate(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, `
mqagent dev: embedded broker on tcp://%[1]s (WebSocket ws://%[2]s), agent %[3]q (development mode: unsigned commands accepted)

Send a first command from another terminal:
    mqagent send --broker tcp://%[1]s --host %[3]s -- uname -a
    mqagent send --broker tcp://%[1]s --all --shell 'echo hello from $(hostname)'
    mqagent send --broker tcp://%[1]s --group dev --kind ping
or with any MQTT client: publish a command (docs/PROTOCOL.md) to mqagent/v1/hosts/%[3]s/cmd
and subscribe to mqagent/v1/hosts/+/results/#

`, b.TCPAddr(), b.WSAddr(), cfg.HostID)
	stopDashboard := func() {}
	if dashboardAddr != "" {
		setPahoLoggers(log) // before any MQTT client runs: they are paho's globals
		addr, stop, err := startDashboard(parent, log.With("component", "dashboard"), dashboardAddr, "tcp://"+b.TCPAddr())
		if err != nil {
			log.Warn("no dashboard (--dashboard changes its address)", "err", err)
		} else {
			stopDashboard = stop
			defer stop()
			fmt.Fprintf(os.Stderr, "Dashboard: http://%s\n\n", addr)
		}
	}
	reason, err := runAgent(parent, cfg, os.Stderr)
	if err == nil && reason == protocol.ReasonRestart {
		stopDashboard()
		b.Close()
		return restartSelf()
	}
	return err
}
