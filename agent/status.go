package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqagent/mqagent/pkg/config"
	"github.com/mqagent/mqagent/pkg/daemon"
)

func statusCmd() *cobra.Command {
	var cfgPath, output string
	c := &cobra.Command{
		Use:   "status --config FILE",
		Short: "Show the local agent's status: version, connection, broker, session, queue, outbox, last error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			s, err := daemon.ReadStatus(cfg.DataDir)
			if err != nil {
				return &exitError{code: 3, err: err}
			}
			if s.State == "running" && !processAlive(s.PID) {
				s.State = "dead (status file left by pid " + fmt.Sprint(s.PID) + ")"
			}
			if output == "json" {
				b, _ := json.MarshalIndent(s, "", "  ")
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
			} else {
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintf(w, "host\t%s\nversion\t%s\nstate\t%s (pid %d, since %s)\n", s.Host, s.Version, s.State, s.PID, s.StartedAt.Format(time.RFC3339))
				fmt.Fprintf(w, "connected\t%v\nbroker\t%s\nsession\t%d\nreconnects\t%d\n", s.Connected, s.Broker, s.Session, s.Reconnects)
				fmt.Fprintf(w, "running\t%d\nqueued\t%d\noutbox\t%d\njournal\t%d\n", s.Running, s.Queued, s.Outbox, s.Journal)
				if s.LastError != "" {
					fmt.Fprintf(w, "last error\t%s\n", s.LastError)
				}
				fmt.Fprintf(w, "updated\t%s (%s ago)\n", s.UpdatedAt.Format(time.RFC3339), time.Since(s.UpdatedAt).Round(time.Second))
				w.Flush()
			}
			if s.State != "running" {
				return &exitError{code: 3, err: fmt.Errorf("agent is not running")}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&cfgPath, "config", "c", envDefault("MQAGENT_CONFIG", ""), "config file (env MQAGENT_CONFIG)")
	c.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	_ = c.MarkFlagRequired("config")
	return c
}

// processAlive reports whether a process with pid exists.
func processAlive(pid int) bool {
	p, err := os.FindProcess(pid) // on Windows this opens the process: an error means it is gone
	if err != nil {
		return false
	}
	if runtime.GOOS == "windows" {
		return true
	}
	return p.Signal(syscall.Signal(0)) == nil
}
