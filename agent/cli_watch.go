package main

// mqagent watch metrics|audit|status: follow what the agents publish.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqagent/mqagent/pkg/client"
	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// watchFlags are shared by the watch subcommands.
type watchFlags struct {
	conn    connFlags
	filter  filterFlags
	target  string
	output  string
	count   int
	forTime time.Duration
}

func watchCmd() *cobra.Command {
	wf := &watchFlags{}
	c := &cobra.Command{
		Use:   "watch metrics|audit|status [flags]",
		Short: "Follow metrics samples, audit records or status changes as the agents publish them",
		Long: `Print what the agents publish as it arrives, one line per message (-o json: one JSON
object per line; -o yaml: one document each), until interrupted, --count or --for.

  mqagent watch status
  mqagent watch metrics -t group:web
  mqagent watch audit -t host:web-01 -o json

Exit status: 0; 2 bad usage; 6 broker unreachable.`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	pf := c.PersistentFlags()
	wf.conn.add(pf)
	wf.filter.add(pf)
	pf.StringVarP(&wf.target, "target", "t", "", "only these hosts: all, host:ID[,ID…] or group:NAME (default all)")
	pf.IntVar(&wf.count, "count", 0, "stop after this many messages")
	pf.DurationVar(&wf.forTime, "for", 0, "stop after this long")
	addOutputFlag(pf, &wf.output)
	c.AddCommand(
		flagErrors(&cobra.Command{Use: "metrics", Short: "Follow metrics samples", Args: argsUsage(cobra.NoArgs),
			RunE: func(cmd *cobra.Command, _ []string) error { return watchTopic(cmd, wf, "metrics") }}),
		flagErrors(&cobra.Command{Use: "audit", Short: "Follow audit records", Args: argsUsage(cobra.NoArgs),
			RunE: func(cmd *cobra.Command, _ []string) error { return watchTopic(cmd, wf, "audit") }}),
		flagErrors(&cobra.Command{Use: "status", Short: "Follow hosts going online and offline (the current state first)", Args: argsUsage(cobra.NoArgs),
			RunE: func(cmd *cobra.Command, _ []string) error { return watchStatus(cmd, wf) }}),
	)
	return flagErrors(c)
}

// setup checks the flags, connects, starts the fleet view and returns a
// predicate telling whether a host is selected.
func (wf *watchFlags) setup(cmd *cobra.Command) (*client.Client, *fleet.View, context.Context, func(), func(string) bool, error) {
	if err := checkOutput(wf.output); err != nil {
		return nil, nil, nil, nil, nil, err
	}
	pf, err := wf.filter.filter()
	if err != nil {
		return nil, nil, nil, nil, nil, err
	}
	t := fleet.Target{All: true}
	if wf.target != "" {
		if t, err = parseTarget(wf.target); err != nil {
			return nil, nil, nil, nil, nil, err
		}
	}
	c, err := wf.conn.dial()
	if err != nil {
		return nil, nil, nil, nil, nil, err
	}
	ctx, stop := interruptible(cmd.Context())
	cancel := func() {}
	if wf.forTime > 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeout(ctx, wf.forTime)
		cancel = c2
	}
	done := func() { cancel(); stop(); c.Close() }
	v, err := c.Fleet(ctx, client.FleetOptions{})
	if err != nil {
		done()
		return nil, nil, nil, nil, nil, err
	}
	selected := func(id string) bool {
		if len(t.Hosts) > 0 && !slices.Contains(t.Hosts, id) {
			return false
		}
		if t.Group == "" && pf == nil {
			return true
		}
		h, ok := v.Host(id)
		if !ok {
			return false
		}
		if t.Group != "" && !slices.Contains(h.Groups, t.Group) {
			return false
		}
		m, known := fleet.Matches(h, pf)
		return m || !known
	}
	return c, v, ctx, done, selected, nil
}

// printer writes one message in the chosen format.
type printer struct {
	w      io.Writer
	format string
	n      int
}

func (p *printer) doc(v any, line string) error {
	p.n++
	switch p.format {
	case outJSON:
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(p.w, string(b))
		return err
	case outYAML:
		if p.n > 1 {
			fmt.Fprintln(p.w, "---")
		}
		return writeDoc(p.w, outYAML, v)
	}
	_, err := fmt.Fprintln(p.w, line)
	return err
}

func watchTopic(cmd *cobra.Command, wf *watchFlags, kind string) error {
	c, _, ctx, done, selected, err := wf.setup(cmd)
	if err != nil {
		return err
	}
	defer done()
	topics := c.Topics()
	var filters []string
	t, _ := fleet.ParseTarget(wf.target)
	hosts := t.Hosts
	if len(hosts) == 0 {
		hosts = []string{"+"}
	}
	for _, h := range hosts {
		if kind == "metrics" {
			filters = append(filters, topics.Metrics(h))
		} else {
			filters = append(filters, topics.Audit(h))
		}
	}
	// The fleet view already follows status and inventory, not these.
	msgs, err := c.Messages(ctx, filters...)
	if err != nil {
		return err
	}
	p := &printer{w: cmd.OutOrStdout(), format: wf.output}
	for m := range msgs {
		host := topicHost(topics.Prefix, m.Topic)
		if !selected(host) {
			continue
		}
		var doc any
		var line string
		if kind == "metrics" {
			var s protocol.Metrics
			if json.Unmarshal(m.Payload, &s) != nil {
				continue
			}
			doc, line = json.RawMessage(m.Payload), metricsLine(&s)
		} else {
			var a protocol.Audit
			if json.Unmarshal(m.Payload, &a) != nil {
				continue
			}
			doc, line = json.RawMessage(m.Payload), auditLine(&a)
		}
		if err := p.doc(doc, line); err != nil {
			return err
		}
		if wf.count > 0 && p.n >= wf.count {
			return nil
		}
	}
	return nil
}

func topicHost(prefix, topic string) string {
	rest, _ := strings.CutPrefix(topic, prefix+"/hosts/")
	h, _, _ := strings.Cut(rest, "/")
	return h
}

func stamp(t time.Time) string { return t.Local().Format("15:04:05.000") }

func metricsLine(m *protocol.Metrics) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", stamp(m.TS.Time), m.Host)
	if m.CPU != nil {
		fmt.Fprintf(&b, " cpu %.1f%%", m.CPU.Percent)
	}
	if m.Mem != nil {
		fmt.Fprintf(&b, " mem %.1f%%", m.Mem.Percent)
	}
	if m.Load != nil {
		fmt.Fprintf(&b, " load %.2f %.2f %.2f", m.Load.L1, m.Load.L5, m.Load.L15)
	}
	for _, d := range m.Disks {
		fmt.Fprintf(&b, " disk %s %.0f%%", d.Mount, d.Percent)
	}
	if m.Procs > 0 {
		fmt.Fprintf(&b, " procs %d", m.Procs)
	}
	if a := m.Agent; a != nil {
		fmt.Fprintf(&b, " agent rss %s running %d queued %d", humanBytes(a.RSSBytes), a.Running, a.Queued)
	}
	return b.String()
}

func auditLine(a *protocol.Audit) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s", stamp(a.TS.Time), a.Host, a.Event)
	for _, kv := range [][2]string{{"decision", a.Decision}, {"kind", a.Kind}, {"id", a.ID}, {"state", a.State}, {"operator", a.Operator}, {"kid", a.Kid}, {"summary", a.Summary}, {"reason", a.Reason}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, " %s=%q", kv[0], kv[1])
		}
	}
	if a.ExitCode != nil {
		fmt.Fprintf(&b, " exit=%d", *a.ExitCode)
	}
	return b.String()
}

func watchStatus(cmd *cobra.Command, wf *watchFlags) error {
	_, v, ctx, done, selected, err := wf.setup(cmd)
	if err != nil {
		return err
	}
	defer done()
	changes, cancel := v.Subscribe(64)
	defer cancel()
	p := &printer{w: cmd.OutOrStdout(), format: wf.output}
	for {
		var ch fleet.Change
		select {
		case <-ctx.Done():
			return nil
		case ch = <-changes:
		}
		if ch.Parts&fleet.PartStatus == 0 || !selected(ch.ID) {
			continue
		}
		doc := map[string]any{"change": ch.Kind.String(), "host": ch.Host}
		if ch.Kind == fleet.Removed {
			doc["host"] = fleet.Host{ID: ch.ID}
		}
		if err := p.doc(doc, statusLine(ch)); err != nil {
			return err
		}
		if wf.count > 0 && p.n >= wf.count {
			return nil
		}
	}
}

func statusLine(ch fleet.Change) string {
	h := ch.Host
	if ch.Kind == fleet.Removed {
		return fmt.Sprintf("%s %s removed (status cleared)", stamp(time.Now()), ch.ID)
	}
	at := h.StatusAt
	if at.IsZero() {
		at = time.Now()
	}
	switch {
	case h.Online:
		return fmt.Sprintf("%s %s online session %d version %s os %s groups %s pid %d", stamp(at), h.ID, h.Session, orDash(h.Version), orDash(h.OS), orDash(strings.Join(h.Groups, ",")), h.PID)
	case h.State == protocol.StatusOffline:
		return fmt.Sprintf("%s %s offline (%s) session %d", stamp(at), h.ID, orDash(h.Reason), h.Session)
	}
	return fmt.Sprintf("%s %s known (no status yet)", stamp(at), h.ID)
}
