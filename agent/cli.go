package main

import "github.com/spf13/cobra"

// fleetCmds are the operator commands (docs/operators.md): they talk to
// the fleet through the broker with pkg/client.
func fleetCmds() []*cobra.Command {
	return []*cobra.Command{
		hostsCmd(), execCmd(), shellCmd(), scriptCmd(), pingCmd(), cancelCmd(), resultCmd(),
		inventoryCmd(), watchCmd(), agentCtlCmd(), rolloutCmd(),
	}
}
