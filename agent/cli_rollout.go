package main

// Rollouts from the command line: the rollout flags of exec, shell,
// script and agent update, and `mqagent rollout list|show`.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/mqagent/mqagent/pkg/client"
	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/rollout"
)

// rolloutFlags are the rollout flags; any of them makes a command a
// rollout.
type rolloutFlags struct {
	batch, rate, maxRate, abortOn string
	canary, rateEvery, abortMin   int
	rateFactor                    float64
	resume, stateDir              string
	hostTimeout                   time.Duration
}

var rolloutFlagNames = []string{"batch", "canary", "rate", "rate-factor", "rate-every", "max-rate", "abort-on", "abort-min", "resume", "host-timeout"}

func (r *rolloutFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&r.batch, "batch", "", "rollout: at most N (or P%) hosts running at once, a rolling window")
	fs.IntVar(&r.canary, "canary", 0, "rollout: run on N hosts first; go on only if all of them succeed")
	fs.StringVar(&r.rate, "rate", "", "rollout: at most N starts per minute (N/min, N/s, N/h)")
	fs.Float64Var(&r.rateFactor, "rate-factor", 0, "rollout: multiply --rate by this after every --rate-every successes (exponential growth)")
	fs.IntVar(&r.rateEvery, "rate-every", 10, "rollout: successes between rate increases")
	fs.StringVar(&r.maxRate, "max-rate", "", "rollout: cap of the growing rate (N/min)")
	fs.StringVar(&r.abortOn, "abort-on", "", "rollout: stop starting hosts when failures reach P% of the finished hosts")
	fs.IntVar(&r.abortMin, "abort-min", 1, "rollout: apply --abort-on only after this many hosts finished")
	fs.DurationVar(&r.hostTimeout, "host-timeout", 0, "rollout: a host without a final result this long after its start counts as not answering (default: the wait)")
	fs.StringVar(&r.resume, "resume", "", "resume the interrupted or aborted rollout ID (its command and hosts are kept)")
	fs.StringVar(&r.stateDir, "state-dir", envDefault("MQAGENT_STATE_DIR", ""), "where rollout states are kept (env MQAGENT_STATE_DIR; default: the user cache dir /mqagent/rollouts)")
}

// active reports whether any rollout flag was given.
func (r *rolloutFlags) active(fs *pflag.FlagSet) bool {
	for _, n := range rolloutFlagNames {
		if f := fs.Lookup(n); f != nil && f.Changed {
			return true
		}
	}
	return false
}

func (r *rolloutFlags) store() (rollout.Store, error) {
	if r.stateDir != "" {
		return rollout.Store{Dir: r.stateDir}, nil
	}
	return rollout.DefaultStore()
}

// config applies the flags that were given to cfg.
func (r *rolloutFlags) config(fs *pflag.FlagSet, cfg *rollout.Config) error {
	changed := func(n string) bool { f := fs.Lookup(n); return f != nil && f.Changed }
	var err error
	if changed("batch") {
		if cfg.Batch, err = rollout.ParseSize(r.batch); err != nil {
			return usageErr("--batch %v", err)
		}
	}
	if changed("canary") {
		cfg.Canary = r.canary
	}
	if changed("rate") {
		if cfg.Rate, err = rollout.ParseRate(r.rate); err != nil {
			return usageErr("--%v", err)
		}
	}
	if changed("rate-factor") {
		cfg.RateFactor = r.rateFactor
	}
	if changed("rate-every") || cfg.RateFactor > 1 && cfg.RateEvery == 0 {
		cfg.RateEvery = r.rateEvery
	}
	if changed("max-rate") {
		if cfg.MaxRate, err = rollout.ParseRate(r.maxRate); err != nil {
			return usageErr("--max-%v", err)
		}
	}
	if changed("abort-on") {
		p, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(r.abortOn), "%"), 64)
		if err != nil || p <= 0 || p > 100 {
			return usageErr("--abort-on %q: want a percentage in (0, 100]", r.abortOn)
		}
		cfg.AbortPercent = p
	}
	if changed("abort-min") || cfg.AbortMin == 0 {
		cfg.AbortMin = r.abortMin
	}
	if changed("host-timeout") {
		cfg.HostTimeout = r.hostTimeout
	}
	if err := cfg.Validate(); err != nil {
		return usageErr("rollout: %v", err)
	}
	return nil
}

// rolloutOnFleet runs (or resumes) a rollout of pc.
func rolloutOnFleet(cmd *cobra.Command, f *runFlags, pc protocol.Command, filter *protocol.Filter, signer *client.Signer, v view) error {
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	store, err := f.ro.store()
	if err != nil {
		return err
	}
	var st *rollout.State
	if f.ro.resume != "" {
		if st, err = store.Load(f.ro.resume); err != nil {
			return usageErr("--resume: %v", err)
		}
		if st.Command.Kind != pc.Kind {
			fmt.Fprintf(stderr, "note: rollout %s runs %s; resuming it as it was\n", st.ID, st.Command.Kind)
		}
		if err := f.ro.config(cmd.Flags(), &st.Config); err != nil {
			return err
		}
	}
	c, err := f.conn.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, stop := interruptible(cmd.Context())
	defer stop()
	if st == nil {
		target, _ := parseTarget(f.target)
		view, err := c.Fleet(ctx, client.FleetOptions{})
		if err != nil {
			return err
		}
		res, err := view.Resolve(target, filter, fleet.ResolveOptions{IncludeOffline: f.includeOffline})
		if err != nil {
			return usageErr("%v", err)
		}
		if len(res.Uncertain) > 0 {
			fmt.Fprintf(stderr, "note: %d host(s) left out: no inventory yet, so the filter could not be checked: %s\n", len(res.Uncertain), listShort(res.Uncertain))
		}
		if len(res.Offline) > 0 {
			fmt.Fprintf(stderr, "note: %d offline host(s) left out (--include-offline to roll out to them too): %s\n", len(res.Offline), listShort(res.Offline))
		}
		if len(res.Expected) == 0 {
			return &exitError{code: exitNoHosts, err: fmt.Errorf("%s: %w", target, client.ErrNoHosts)}
		}
		cfg := rollout.Config{HostTimeout: f.waitFor()}
		if err := f.ro.config(cmd.Flags(), &cfg); err != nil {
			return err
		}
		pc.ID = client.NewID()
		pc.V = protocol.Version
		pc.IssuedAt = protocol.Now()
		if st, err = rollout.NewState(pc, res.Expected, cfg, time.Now()); err != nil {
			return usageErr("rollout: %v", err)
		}
		st.Target, st.Filter = target.String(), filter
	}
	e, err := rollout.NewEngine(st)
	if err != nil {
		return err
	}
	b, err := rollout.NewClientBackend(ctx, c, st.Command, signer)
	if err != nil {
		return err
	}
	defer b.Close()
	if f.output == outTable {
		// Each host's output as it finishes (streamed with --stream).
		streams := newStreamPrinter(stdout, stderr)
		b.OnEvent = func(ev client.Event) {
			switch {
			case ev.Chunk != nil && f.stream:
				streams.chunk(ev.Chunk)
			case ev.Result != nil && protocol.IsFinal(ev.Result.State):
				streams.flush(ev.Result.Host)
				if v.output && !f.stream {
					printResult(stdout, ev.Result)
				}
			}
		}
	}
	cfg := st.Config
	fmt.Fprintf(stderr, "rollout %s: %s to %d host(s)%s; state in %s (resume with --resume %s)\n",
		st.ID, st.Command.Kind, len(st.Hosts), describeConfig(cfg), store.Dir, st.ID)
	prog := newRolloutProgress(stderr, f.output == outTable && !f.stream, e.Report())
	rep, err := rollout.Execute(ctx, e, b, rollout.Options{
		Store:    store,
		Resume:   f.ro.resume != "",
		OnStart:  prog.start,
		OnFinish: prog.finish,
	})
	prog.done()
	if err != nil && !errors.Is(err, rollout.ErrAborted) && ctx.Err() == nil {
		return err
	}
	if perr := printReport(stdout, f.output, rep); perr != nil {
		return perr
	}
	if f.output == outTable {
		fmt.Fprintln(stderr, reportLine(rep))
	}
	switch {
	case ctx.Err() != nil:
		fmt.Fprintf(stderr, "interrupted: resume with --resume %s\n", rep.ID)
		return &exitError{code: exitInterrupted, err: errors.New("rollout interrupted")}
	case rep.Aborted:
		fmt.Fprintf(stderr, "aborted (%s): after fixing the cause, resume with --resume %s\n", rep.AbortReason, rep.ID)
		return &exitError{code: exitAborted, err: fmt.Errorf("rollout aborted: %s", rep.AbortReason)}
	case len(rep.Failed)+len(rep.TimedOut) > 0:
		return &exitError{code: exitFailed, err: fmt.Errorf("%d host(s) failed, %d timed out", len(rep.Failed), len(rep.TimedOut))}
	case len(rep.NoAnswer) > 0:
		return &exitError{code: exitNoAnswer, err: fmt.Errorf("%d host(s) did not answer: %s", len(rep.NoAnswer), listShort(rep.NoAnswer))}
	}
	return nil
}

func describeConfig(c rollout.Config) string {
	var parts []string
	if c.Canary > 0 {
		parts = append(parts, fmt.Sprintf("canary %d", c.Canary))
	}
	if !c.Batch.IsZero() {
		parts = append(parts, "batch "+c.Batch.String())
	}
	if c.Rate > 0 {
		r := fmt.Sprintf("rate %g/min", c.Rate)
		if c.RateFactor > 1 {
			r += fmt.Sprintf(" x%g every %d successes", c.RateFactor, c.RateEvery)
			if c.MaxRate > 0 {
				r += fmt.Sprintf(" up to %g/min", c.MaxRate)
			}
		}
		parts = append(parts, r)
	}
	if c.AbortPercent > 0 {
		parts = append(parts, fmt.Sprintf("abort at %g%% failures after %d", c.AbortPercent, max(1, c.AbortMin)))
	}
	parts = append(parts, fmt.Sprintf("host timeout %v", c.HostTimeout))
	return " (" + strings.Join(parts, ", ") + ")"
}

func reportLine(r rollout.Report) string {
	return fmt.Sprintf("rollout %s: %d succeeded, %d failed, %d timed out, %d no answer, %d not started, of %d",
		r.ID, len(r.Succeeded), len(r.Failed), len(r.TimedOut), len(r.NoAnswer), len(r.NotStarted)+len(r.Running), r.Total)
}

// reportDoc is the JSON/YAML form of a rollout report.
type reportDoc struct {
	OK bool `json:"ok"`
	rollout.Report
}

// printReport prints what ran where.
func printReport(w io.Writer, format string, r rollout.Report) error {
	if format != outTable {
		return writeDoc(w, format, reportDoc{OK: r.OK(), Report: r})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tSTATUS\tSTATE\tEXIT\tSTARTED\tFINISHED\tERROR")
	for _, h := range r.Hosts {
		exit := "-"
		if h.ExitCode != nil {
			exit = fmt.Sprint(*h.ExitCode)
		}
		status := h.Status
		if h.Canary {
			status += " (canary)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Host, status, orDash(h.State), exit, clock(h.StartedAt), clock(h.FinishedAt), oneLine(h.Error))
	}
	return tw.Flush()
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("15:04:05")
}

// rolloutProgress shows finished/total: a bar on a terminal, else a line
// per start and finish.
type rolloutProgress struct {
	w        io.Writer
	bar      *progressbar.ProgressBar
	plain    bool
	finished int
}

func newRolloutProgress(w io.Writer, enabled bool, r rollout.Report) *rolloutProgress {
	p := &rolloutProgress{w: w, finished: len(r.Succeeded) + len(r.Failed) + len(r.TimedOut) + len(r.NoAnswer)}
	if !enabled {
		return p
	}
	if !isTerminal(w) {
		p.plain = true
		return p
	}
	p.bar = progressbar.NewOptions(r.Total, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription("finished"),
		progressbar.OptionShowCount(), progressbar.OptionSetElapsedTime(true), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(), progressbar.OptionSetRenderBlankState(true))
	_ = p.bar.Set(p.finished)
	return p
}

func (p *rolloutProgress) start(h rollout.HostState) {
	if p.plain {
		fmt.Fprintf(p.w, "%s: started\n", h.Host)
	}
}

func (p *rolloutProgress) finish(h rollout.HostState) {
	p.finished++
	switch {
	case p.bar != nil:
		_ = p.bar.Set(p.finished)
	case p.plain:
		fmt.Fprintf(p.w, "%s: %s\n", h.Host, h.Status)
	}
}

func (p *rolloutProgress) done() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}

// rolloutCmd lists and shows saved rollouts.
func rolloutCmd() *cobra.Command {
	var stateDir, output string
	storeOf := func() (rollout.Store, error) {
		if stateDir != "" {
			return rollout.Store{Dir: stateDir}, nil
		}
		return rollout.DefaultStore()
	}
	c := &cobra.Command{
		Use:   "rollout list|show ID",
		Short: "List and show saved rollouts (resume one with the command's --resume ID)",
		Args:  argsUsage(cobra.NoArgs),
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.PersistentFlags().StringVar(&stateDir, "state-dir", envDefault("MQAGENT_STATE_DIR", ""), "where rollout states are kept (env MQAGENT_STATE_DIR)")
	addOutputFlag(c.PersistentFlags(), &output)
	list := &cobra.Command{
		Use:   "list",
		Short: "List saved rollouts",
		Args:  argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			store, err := storeOf()
			if err != nil {
				return err
			}
			ids, err := store.List()
			if err != nil {
				return err
			}
			var reps []rollout.Report
			for _, id := range ids {
				st, err := store.Load(id)
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "skipping %s: %v\n", id, err)
					continue
				}
				e, _ := rollout.NewEngine(st)
				rep := e.Report()
				rep.Hosts = nil
				reps = append(reps, rep)
			}
			if output != outTable {
				return writeDoc(cmd.OutOrStdout(), output, reps)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tPHASE\tHOSTS\tSUCCEEDED\tFAILED\tNO ANSWER\tNOT STARTED\tABORTED")
			for _, r := range reps {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", r.ID, r.Phase, r.Total, len(r.Succeeded), len(r.Failed)+len(r.TimedOut),
					len(r.NoAnswer), len(r.NotStarted)+len(r.Running), orDash(r.AbortReason))
			}
			return tw.Flush()
		},
	}
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a saved rollout: what ran where",
		Args:  argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			store, err := storeOf()
			if err != nil {
				return err
			}
			st, err := store.Load(args[0])
			if err != nil {
				if errors.Is(err, rollout.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
					return usageErr("%v", err)
				}
				return err
			}
			e, _ := rollout.NewEngine(st)
			rep := e.Report()
			if err := printReport(cmd.OutOrStdout(), output, rep); err != nil {
				return err
			}
			if output == outTable {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s; %s%s\n", reportLine(rep), st.Command.Kind, describeConfig(st.Config))
			}
			return nil
		},
	}
	c.AddCommand(flagErrors(list), flagErrors(show))
	return flagErrors(c)
}
