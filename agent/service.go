package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqagent/mqagent/pkg/config"
	"github.com/mqagent/mqagent/pkg/service"
	"github.com/mqagent/mqagent/pkg/update"
)

// afterPidWait bounds `service start --after-pid`'s wait for the old
// service process to exit.
const afterPidWait = 2 * time.Minute

// defaultConfigPath is where installers put the configuration.
func defaultConfigPath() string {
	if v := os.Getenv("MQAGENT_CONFIG"); v != "" {
		return v
	}
	switch runtime.GOOS {
	case "windows":
		return filepath.Join(config.DefaultDataDir(), "config.yaml")
	case "darwin":
		return "/usr/local/etc/mqagent/config.yaml"
	}
	return "/etc/mqagent/config.yaml"
}

func serviceCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "service install|uninstall|start|stop|restart|status",
		Short: "Install and control the agent as a system service (systemd, launchd, Windows service)",
		Long: "The service runs `" + "EXE run --config CONFIG" + "` as root / LocalSystem, starts at boot and is restarted\n" +
			"after a failure. Installing and controlling it needs administrator rights.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var cfgPath string
	var start bool
	install := &cobra.Command{
		Use:   "install [--config FILE] [--start]",
		Short: "Install (or update) the service for this executable and config, enabled at boot",
		Long: "Install the service that runs this executable with the config file (checked first).\n" +
			"Installing again is harmless: an installation that is up to date is left alone, another\n" +
			"one is brought up to date.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			abs, err := filepath.Abs(cfgPath)
			if err != nil {
				return err
			}
			if _, err := config.Load(abs); err != nil {
				return fmt.Errorf("the service would not start: %w", err)
			}
			exe, err := executable()
			if err != nil {
				return err
			}
			m, err := service.New(service.Spec{Exe: exe, Config: abs})
			if err != nil {
				return err
			}
			changed, err := m.Install()
			if err != nil {
				return err
			}
			if changed {
				fmt.Fprintf(cmd.OutOrStdout(), "service %s installed (%s): %s run --config %s\n", service.Name, m.Platform(), exe, abs)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "service %s already installed (%s), up to date\n", service.Name, m.Platform())
			}
			if start {
				if err := m.Start(); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "service %s started\n", service.Name)
			}
			return nil
		},
	}
	install.Flags().StringVarP(&cfgPath, "config", "c", defaultConfigPath(), "config file the service runs with (env MQAGENT_CONFIG)")
	install.Flags().BoolVar(&start, "start", false, "start the service once installed")

	uninstall := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop and remove the service (the binary, config and data stay; see agent.uninstall)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := service.New(service.Spec{})
			if err != nil {
				return err
			}
			if !service.Privileged() {
				return fmt.Errorf("uninstall the %s service: %w", service.Name, service.ErrNotPrivileged)
			}
			if st, err := m.Status(); err == nil && st == service.StatusNotInstalled {
				fmt.Fprintf(cmd.OutOrStdout(), "service %s is not installed\n", service.Name)
				return nil
			} else if err == nil && st == service.StatusRunning {
				if err := m.Stop(); err != nil {
					return err
				}
			}
			if err := m.Uninstall(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "service %s removed\n", service.Name)
			return nil
		},
	}

	var afterPID int
	startCmd := &cobra.Command{
		Use:   "start",
		Short: "Start the service",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if afterPID > 0 {
				// Restart of a Windows service by itself: wait for the old
				// process to be gone first.
				update.ProcOf(afterPID).WaitGone(afterPidWait)
			}
			return control(cmd.OutOrStdout(), "started", (*service.Manager).Start)
		},
	}
	startCmd.Flags().IntVar(&afterPID, "after-pid", 0, "wait for this process to exit first")
	_ = startCmd.Flags().MarkHidden("after-pid")

	var statusCfg, output string
	status := &cobra.Command{
		Use:   "status [--config FILE]",
		Short: "Show the service's state and the agent's own status (exit status 3 when not running)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := service.New(service.Spec{})
			if err != nil {
				return err
			}
			st, serr := m.Status()
			line := string(st)
			if serr != nil {
				line += " (" + serr.Error() + ")"
			}
			w := cmd.OutOrStdout()
			if output != "json" {
				fmt.Fprintf(w, "%-12s%s (%s)\n", "service", line, m.Platform())
			}
			var running bool
			if cfg, err := config.Load(statusCfg); err == nil {
				running, err = printLocalStatus(w, cfg, output)
				if err != nil && output != "json" {
					fmt.Fprintf(w, "agent\t%v\n", err)
				}
			} else if cmd.Flags().Changed("config") {
				return err
			}
			if st != service.StatusRunning && !running {
				return &exitError{code: 3, err: fmt.Errorf("service %s is %s", service.Name, st)}
			}
			return nil
		},
	}
	status.Flags().StringVarP(&statusCfg, "config", "c", defaultConfigPath(), "the agent's config file, for its own status (env MQAGENT_CONFIG)")
	status.Flags().StringVarP(&output, "output", "o", "text", "output format of the agent's status: text or json")

	c.AddCommand(install, uninstall, startCmd,
		&cobra.Command{Use: "stop", Short: "Stop the service (a graceful stop: the agent publishes its offline status)", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return control(cmd.OutOrStdout(), "stopped", (*service.Manager).Stop)
			}},
		&cobra.Command{Use: "restart", Short: "Restart the service", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return control(cmd.OutOrStdout(), "restarted", (*service.Manager).Restart)
			}},
		status)
	return c
}

// control runs one control action on the service.
func control(w io.Writer, done string, fn func(*service.Manager) error) error {
	m, err := service.New(service.Spec{})
	if err != nil {
		return err
	}
	if err := fn(m); err != nil {
		if errors.Is(err, service.ErrNotInstalled) {
			return &exitError{code: 3, err: err}
		}
		return err
	}
	fmt.Fprintf(w, "service %s %s\n", service.Name, done)
	return nil
}
