package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqagent/mqagent/pkg/config"
	"github.com/mqagent/mqagent/pkg/daemon"
	"github.com/mqagent/mqagent/pkg/update"
)

func statusCmd() *cobra.Command {
	var cfgPath, output string
	c := &cobra.Command{
		Use:   "status --config FILE",
		Short: "Show the local agent's status: version, connection, broker, session, queue, outbox, last error",
		Long: "Show the status the local agent keeps in data_dir/status.json (written every few seconds),\n" +
			"and an update in progress. Exit status 3 when the agent is not running.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			running, err := printLocalStatus(cmd.OutOrStdout(), cfg, output)
			if err != nil {
				return &exitError{code: 3, err: err}
			}
			if !running {
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

// localStatus is `mqagent status -o json`: the status file, and the
// update in progress if any.
type localStatus struct {
	daemon.LocalStatus
	Update *update.State `json:"update,omitempty"`
}

// printLocalStatus prints the agent's own status (status.json in its data
// directory) and reports whether the agent is running.
func printLocalStatus(w io.Writer, cfg *config.Config, output string) (bool, error) {
	s, err := daemon.ReadStatus(cfg.DataDir)
	if err != nil {
		return false, err
	}
	if s.State == "running" && !processAlive(s.PID) {
		s.State = "dead (status file left by pid " + fmt.Sprint(s.PID) + ")"
	}
	ls := localStatus{LocalStatus: s}
	m := update.Manager{Dir: filepath.Join(cfg.DataDir, "update")}
	if st, ok, err := m.Pending(); err == nil && ok {
		ls.Update = &st
	}
	if output == "json" {
		b, _ := json.MarshalIndent(ls, "", "  ")
		fmt.Fprintln(w, string(b))
		return s.State == "running", nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "host\t%s\nversion\t%s\nstate\t%s (pid %d, since %s)\n", s.Host, s.Version, s.State, s.PID, s.StartedAt.Format(time.RFC3339))
	fmt.Fprintf(tw, "connected\t%v\nbroker\t%s\nsession\t%d\nreconnects\t%d\n", s.Connected, s.Broker, s.Session, s.Reconnects)
	fmt.Fprintf(tw, "running\t%d\nqueued\t%d\noutbox\t%d\njournal\t%d\n", s.Running, s.Queued, s.Outbox, s.Journal)
	if s.LastError != "" {
		fmt.Fprintf(tw, "last error\t%s\n", s.LastError)
	}
	if u := ls.Update; u != nil {
		fmt.Fprintf(tw, "update\t%s → %s: %s (command %s)", u.From, u.To, u.Phase, u.ID)
		if u.Error != "" {
			fmt.Fprintf(tw, ": %s", u.Error)
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(tw, "updated\t%s (%s ago)\n", s.UpdatedAt.Format(time.RFC3339), time.Since(s.UpdatedAt).Round(time.Second))
	tw.Flush()
	return s.State == "running", nil
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
