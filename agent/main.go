// Command mqagent is the mqagent host agent and its companion tools: the
// agent itself (run), the embedded broker (broker), a development setup in
// one command (dev), and a first operator command (send). The work is done
// in pkg/; this package only parses the command line.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

func main() {
	root := &cobra.Command{
		Use:           "mqagent",
		Short:         "A host agent managed over MQTT",
		Long:          "mqagent runs operators' commands on this host and publishes results, status and audit records over MQTT.\nThe wire contract is docs/PROTOCOL.md.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(runCmd(), devCmd(), brokerCmd(), sendCmd(), keygenCmd(), auditCmd(), statusCmd(), configCmd(), versionCmd())
	root.AddCommand(serviceCmd(), releaseCmd(), watchdogCmd())
	root.AddCommand(fleetCmds()...)
	root.AddCommand(dashboardCmd(), exporterCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "mqagent:", err)
		os.Exit(exitCode(err))
	}
}

// exitError carries a specific exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	if e, ok := err.(*exitError); ok {
		return e.code
	}
	return 1
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), version)
		},
	}
}

// envDefault returns the environment variable's value, or def.
func envDefault(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}
