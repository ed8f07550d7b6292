package main

// mqagent hosts and mqagent inventory HOST: read the live fleet view.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqagent/mqagent/pkg/client"
	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// hostRow is a host as `hosts -o json` prints it.
type hostRow struct {
	fleet.Host
	CPUPercent *float64 `json:"cpu_percent,omitempty"`
	MemPercent *float64 `json:"mem_percent,omitempty"`
}

func hostsCmd() *cobra.Command {
	var (
		conn             connFlags
		filter           filterFlags
		target, output   string
		online, offline  bool
		version          string
		settle           time.Duration
		withMetricsTable bool
	)
	c := &cobra.Command{
		Use:   "hosts [flags]",
		Short: "List the hosts the broker knows: online/offline, version, OS, groups, last seen",
		Long: `List the hosts from their retained status and inventory (and, with --metrics, their latest
metrics sample).

  mqagent hosts
  mqagent hosts --offline
  mqagent hosts -t group:web --fact env=prod      # the hosts a command with this target would reach
  mqagent hosts -o json | jq -r '.[] | select(.online) | .id'

Exit status: 0, also when no host matches; 2 bad usage; 6 broker unreachable.`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if online && offline {
				return usageErr("--online and --offline: give at most one")
			}
			pf, err := filter.filter()
			if err != nil {
				return err
			}
			t := fleet.Target{All: true}
			if target != "" {
				if t, err = parseTarget(target); err != nil {
					return err
				}
			}
			c, err := conn.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			v, err := c.Fleet(ctx, client.FleetOptions{Metrics: withMetricsTable, Settle: settle})
			if err != nil {
				return err
			}
			if withMetricsTable {
				// Metrics are not retained by default: wait for a sample.
				waitMetrics(ctx, v, 3*time.Second)
			}
			res, err := v.Resolve(t, pf, fleet.ResolveOptions{IncludeOffline: true})
			if err != nil {
				return usageErr("%v", err)
			}
			var rows []hostRow
			for _, id := range res.All() {
				h, ok := v.Host(id)
				if !ok {
					h = fleet.Host{ID: id}
				}
				if online && !h.Online || offline && h.Online || version != "" && h.Version != version {
					continue
				}
				row := hostRow{Host: h}
				if m := h.Metrics; m != nil {
					if m.CPU != nil {
						row.CPUPercent = &m.CPU.Percent
					}
					if m.Mem != nil {
						row.MemPercent = &m.Mem.Percent
					}
				}
				rows = append(rows, row)
			}
			if output != outTable {
				if rows == nil {
					rows = []hostRow{}
				}
				return writeDoc(cmd.OutOrStdout(), output, rows)
			}
			printHosts(cmd.OutOrStdout(), rows, withMetricsTable, time.Now())
			st := v.Stats()
			fmt.Fprintf(cmd.ErrOrStderr(), "%d host(s) shown; fleet: %d known, %d online, %d offline\n", len(rows), st.Hosts, st.Online, st.Offline)
			return nil
		},
	}
	fs := c.Flags()
	conn.add(fs)
	filter.add(fs)
	fs.StringVarP(&target, "target", "t", "", "only the hosts of this target: all, host:ID[,ID…] or group:NAME")
	fs.BoolVar(&online, "online", false, "only online hosts")
	fs.BoolVar(&offline, "offline", false, "only offline hosts")
	fs.StringVar(&version, "agent-version", "", "only hosts running this agent version")
	fs.BoolVar(&withMetricsTable, "metrics", false, "also show CPU and memory from the latest metrics sample")
	fs.DurationVar(&settle, "settle", 200*time.Millisecond, "how long the broker may stay quiet before the retained statuses count as all received")
	addOutputFlag(fs, &output)
	return flagErrors(c)
}

// waitMetrics waits until every online host has a metrics sample, or d.
func waitMetrics(ctx context.Context, v *fleet.View, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		missing := false
		for _, h := range v.Snapshot() {
			if h.Online && h.Metrics == nil {
				missing = true
				break
			}
		}
		if !missing {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func printHosts(w io.Writer, rows []hostRow, metrics bool, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "HOST\tSTATE\tVERSION\tOS\tPLATFORM\tGROUPS\tLAST SEEN")
	if metrics {
		fmt.Fprint(tw, "\tCPU%\tMEM%")
	}
	fmt.Fprintln(tw, "\tFACTS")
	for _, r := range rows {
		state := orDash(r.State)
		if r.Reason != "" {
			state += " (" + r.Reason + ")"
		}
		platform := strings.TrimSpace(r.Platform + " " + r.PlatformVersion)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s", r.ID, state, orDash(r.Version), orDash(r.OS), orDash(platform),
			orDash(strings.Join(r.Groups, ",")), ago(r.LastSeen, now))
		if metrics {
			cpu, mem := "-", "-"
			if r.CPUPercent != nil {
				cpu = fmt.Sprintf("%.1f", *r.CPUPercent)
			}
			if r.MemPercent != nil {
				mem = fmt.Sprintf("%.1f", *r.MemPercent)
			}
			fmt.Fprintf(tw, "\t%s\t%s", cpu, mem)
		}
		facts := "-"
		if r.HasInventory {
			facts = orDash(sortedKV(r.Facts))
		}
		fmt.Fprintf(tw, "\t%s\n", facts)
	}
	tw.Flush()
}

func inventoryCmd() *cobra.Command {
	var (
		conn    connFlags
		output  string
		refresh bool
		wait    time.Duration
	)
	c := &cobra.Command{
		Use:   "inventory HOST [flags]",
		Short: "Show a host's inventory (OS, hardware, disks, network, groups, facts)",
		Long: `Show the inventory a host published (retained on the broker). With --refresh, or when the
broker has none, ask the host for a fresh one.

  mqagent inventory web-01
  mqagent inventory web-01 --refresh -o json

Exit status: 0; 1 no inventory could be had; 2 bad usage; 6 broker unreachable.`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			host := args[0]
			if !protocol.ValidHostID(host) {
				return usageErr("inventory: invalid host id %q", host)
			}
			if err := checkOutput(output); err != nil {
				return err
			}
			signer, err := conn.signer()
			if err != nil {
				return err
			}
			c, err := conn.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			v, err := c.Fleet(ctx, client.FleetOptions{})
			if err != nil {
				return err
			}
			var inv *protocol.Inventory
			if h, ok := v.Host(host); ok && !refresh {
				inv = h.Inventory
			}
			if inv == nil {
				wctx, cancel := context.WithTimeout(ctx, wait)
				defer cancel()
				s, err := c.Call(wctx, client.Request{Command: protocol.Command{Kind: protocol.KindInventory, Operator: conn.operator},
					Target: fleet.Target{Hosts: []string{host}}, Signer: signer})
				if err != nil {
					return err
				}
				if len(s.Outcomes) == 0 || s.Outcomes[0].Result == nil {
					return &exitError{code: exitFailed, err: fmt.Errorf("%s: no inventory retained and no answer within %v", host, wait)}
				}
				r := s.Outcomes[0].Result
				if r.State != protocol.StateSucceeded {
					return &exitError{code: exitFailed, err: fmt.Errorf("%s: inventory %s: %s", host, r.State, r.Error)}
				}
				inv = new(protocol.Inventory)
				if err := json.Unmarshal(r.Data, inv); err != nil {
					return fmt.Errorf("%s: inventory data: %w", host, err)
				}
			}
			if output != outTable {
				return writeDoc(cmd.OutOrStdout(), output, inv)
			}
			return printInventory(cmd.OutOrStdout(), inv)
		},
	}
	conn.add(c.Flags())
	addOutputFlag(c.Flags(), &output)
	c.Flags().BoolVar(&refresh, "refresh", false, "ask the host for a fresh inventory")
	c.Flags().DurationVar(&wait, "wait", 30*time.Second, "how long to wait for the host's answer")
	return flagErrors(c)
}

func printInventory(w io.Writer, inv *protocol.Inventory) error {
	if inv == nil {
		return errors.New("no inventory")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, orDash(v)) }
	row("host", inv.Host)
	row("hostname", inv.Hostname)
	row("collected", inv.TS.UTC().Format(time.RFC3339))
	row("os", strings.TrimSpace(inv.OS+" "+inv.Arch))
	row("platform", strings.TrimSpace(inv.Platform+" "+inv.PlatformVersion+" "+inv.PlatformFamily))
	row("kernel", strings.TrimSpace(inv.KernelVersion+" "+inv.KernelArch))
	row("boot time", inv.BootTime.UTC().Format(time.RFC3339))
	row("cpu", fmt.Sprintf("%s (%d cores, %d threads)", inv.CPU.Model, inv.CPU.Cores, inv.CPU.Threads))
	row("memory", humanBytes(inv.Mem.Total))
	row("agent", inv.Agent.Version)
	row("groups", strings.Join(inv.Groups, ", "))
	row("facts", sortedKV(inv.Facts))
	for _, d := range inv.Disks {
		row("disk "+d.Mount, fmt.Sprintf("%s %s", d.FSType, humanBytes(d.Total)))
	}
	for _, n := range inv.Interfaces {
		row("net "+n.Name, strings.TrimSpace(n.MAC+" "+strings.Join(n.Addrs, " ")))
	}
	if len(inv.Software) > 0 {
		row("software", fmt.Sprintf("%d packages (-o json lists them)", len(inv.Software)))
	}
	for _, e := range inv.Errors {
		row("error", e)
	}
	return tw.Flush()
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
