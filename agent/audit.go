package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/mqagent/mqagent/pkg/audit"
)

func auditCmd() *cobra.Command {
	c := &cobra.Command{Use: "audit", Short: "Work with the local audit log"}
	var rotated bool
	verify := &cobra.Command{
		Use:   "verify FILE [FILE...]",
		Short: "Check the hash chain of an audit log; name the first bad line",
		Long: "Check that no record of the audit log was edited, deleted or reordered: every record carries the\n" +
			"sha256 of the one before. Give several files oldest first to check across rotations, or --rotated\n" +
			"with the current log (FILE.N … FILE.1 FILE). Exit status 0 when the chain is intact, 1 otherwise.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			files := args
			if rotated {
				if len(args) != 1 {
					return fmt.Errorf("--rotated takes the current log file only")
				}
				files = audit.Files(args[0])
			}
			n, err := audit.VerifyFiles(files...)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("audit chain broken after %d good records: %w", n, err)}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d records, chain intact (%d file(s))\n", n, len(files))
			return nil
		},
	}
	verify.Flags().BoolVar(&rotated, "rotated", false, "also check the rotated files FILE.1, FILE.2, …")
	c.AddCommand(verify)
	return c
}
