package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/spf13/cobra"

	"github.com/mqagent/mqagent/pkg/config"
	"github.com/mqagent/mqagent/pkg/daemon"
	"github.com/mqagent/mqagent/pkg/logging"
	"github.com/mqagent/mqagent/pkg/protocol"
)

func runCmd() *cobra.Command {
	var cfgPath string
	c := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the agent in the foreground",
		Long: "Run the agent in the foreground until SIGTERM or SIGINT, which stop it gracefully (exit status 0).\n" +
			"Logs go to stderr unless log.file is set.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			reason, err := runAgent(cmd.Context(), cfg, os.Stderr)
			if err == nil && reason == protocol.ReasonRestart {
				return restartSelf()
			}
			return err
		},
	}
	c.Flags().StringVarP(&cfgPath, "config", "c", envDefault("MQAGENT_CONFIG", ""), "config file (env MQAGENT_CONFIG)")
	_ = c.MarkFlagRequired("config")
	return c
}

// runAgent runs the agent until SIGTERM/SIGINT, ctx ends, or an
// agent.stop/agent.restart command; it returns the offline reason.
func runAgent(parent context.Context, cfg *config.Config, stderr io.Writer) (string, error) {
	log, closer, err := logging.New(logging.Options{
		Level: cfg.Log.Level, File: cfg.Log.File, MaxSizeMB: cfg.Log.MaxSizeMB, MaxBackups: cfg.Log.MaxBackups, Stderr: stderr,
	})
	if err != nil {
		return "", fmt.Errorf("log: %w", err)
	}
	defer closer.Close()
	setPahoLoggers(log)
	if parent == nil {
		parent = context.Background()
	}
	ctx, stop := signal.NotifyContext(parent, syscall.SIGTERM, os.Interrupt)
	defer stop()
	reason, err := daemon.RunUntil(ctx, daemon.Options{Config: cfg, Version: version, Logger: log})
	if err != nil {
		log.Error("agent failed", "err", err)
		return reason, err
	}
	if reason == protocol.ReasonRestart {
		log.Info("restarting")
	}
	return reason, nil
}

// setPahoLoggers routes paho's own warnings and errors to our log. Set
// once here, in main: paho's loggers are package globals.
func setPahoLoggers(log *slog.Logger) {
	l := log
	mqtt.ERROR = logging.Paho(l, slog.LevelError)
	mqtt.CRITICAL = logging.Paho(l, slog.LevelError)
	mqtt.WARN = logging.Paho(l, slog.LevelDebug) // paho warns about routine session housekeeping
}
