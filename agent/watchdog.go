package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqagent/mqagent/pkg/service"
	"github.com/mqagent/mqagent/pkg/update"
)

// watchdogLimit bounds a watchdog's life whatever the state says.
const watchdogLimit = 2 * time.Hour

// watchdogCmd is `mqagent update-watchdog`, run by an agent that hands
// over to a new version, from its previous binary (see pkg/update).
func watchdogCmd() *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:    "update-watchdog --state-dir DIR",
		Short:  "Watch an update and roll it back if the new version does not come online (started by the agent)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var w io.Writer = os.Stderr
			if f, err := os.OpenFile(filepath.Join(dir, update.WatchdogLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
				defer f.Close()
				w = io.MultiWriter(os.Stderr, f)
			}
			log := slog.New(slog.NewTextHandler(w, nil)).With("component", "update-watchdog", "pid", os.Getpid())
			wd := &update.Watchdog{Dir: dir, Stdout: os.Stdout, Stderr: os.Stderr, Logger: log}
			if m, err := service.New(service.Spec{}); err == nil {
				wd.Service = service.Control{M: m}
			}
			ctx, cancel := context.WithTimeout(context.Background(), watchdogLimit)
			defer cancel()
			if err := wd.Run(ctx); err != nil {
				log.Error("watchdog failed", "err", err)
				return err
			}
			return nil
		},
	}
	c.Flags().StringVar(&dir, "state-dir", "", "the update state directory (data_dir/update)")
	_ = c.MarkFlagRequired("state-dir")
	return c
}
