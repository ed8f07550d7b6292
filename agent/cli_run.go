package main

// The commands that run something on hosts: exec, shell, script, ping,
// cancel, result and agent restart|stop|update|uninstall. They share one
// flow (runOnFleet): resolve the target from the live fleet view, send the
// command (or roll it out, cli_rollout.go), follow the results with a
// progress bar on a terminal, print the outcome, and exit with a status
// that says whether every targeted host succeeded.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/mqagent/mqagent/pkg/client"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// runFlags are the flags of every command that runs something on hosts.
type runFlags struct {
	conn           connFlags
	filter         filterFlags
	ro             rolloutFlags
	target         string
	timeout        time.Duration
	wait           time.Duration
	expires        time.Duration
	stream         bool
	includeOffline bool
	output         string
	defaultWait    time.Duration
}

func (f *runFlags) add(c *cobra.Command, stream, rollouts bool) {
	fs := c.Flags()
	f.conn.add(fs)
	f.filter.add(fs)
	fs.StringVarP(&f.target, "target", "t", "", "hosts to run on: all, host:ID[,ID…] or group:NAME")
	fs.DurationVar(&f.timeout, "timeout", 0, "run-time limit on each host (default: the agents' exec.default_timeout)")
	fs.DurationVar(&f.wait, "wait", 0, "how long to wait for answers (default: --timeout + 15s, else "+f.defaultWait.String()+")")
	fs.DurationVar(&f.expires, "expires", 0, "a host that gets the command later than this (it was offline) does not run it (default: the agents' security.default_ttl)")
	fs.BoolVar(&f.includeOffline, "include-offline", false, "also wait for offline hosts of a group or all (the broker keeps the command for them)")
	addOutputFlag(fs, &f.output)
	if stream {
		fs.BoolVar(&f.stream, "stream", false, "print output while the command runs, each line prefixed by its host")
	}
	if rollouts {
		f.ro.add(fs)
	}
	flagErrors(c)
}

// waitFor is how long to wait for answers.
func (f *runFlags) waitFor() time.Duration {
	switch {
	case f.wait > 0:
		return f.wait
	case f.timeout > 0:
		return f.timeout + 15*time.Second
	}
	return f.defaultWait
}

// view decides how a kind's results are shown.
type view struct {
	// columns adds columns to the summary table.
	header  []string
	columns func(o client.Outcome) []string
	// output prints the per-host details (stdout/stderr) in table mode.
	output bool
}

// fill completes the command from the common flags.
func (f *runFlags) fill(pc *protocol.Command) {
	if f.timeout > 0 {
		pc.TimeoutMS = f.timeout.Milliseconds()
	}
	pc.Stream = f.stream
	pc.Operator = f.conn.operator
	if f.expires > 0 {
		t := protocol.Time{Time: time.Now().UTC().Add(f.expires)}
		pc.ExpiresAt = &t
	}
}

// runOnFleet sends pc to the target and reports. It is the body of every
// running command.
func runOnFleet(cmd *cobra.Command, f *runFlags, pc protocol.Command, v view) error {
	if err := checkOutput(f.output); err != nil {
		return err
	}
	signer, err := f.conn.signer()
	if err != nil {
		return err
	}
	if f.ro.resume == "" || f.target != "" {
		if _, err := parseTarget(f.target); err != nil {
			return err
		}
	}
	filter, err := f.filter.filter()
	if err != nil {
		return err
	}
	f.fill(&pc)
	if f.ro.active(cmd.Flags()) {
		return rolloutOnFleet(cmd, f, pc, filter, signer, v)
	}
	target, _ := parseTarget(f.target)
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	c, err := f.conn.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, stop := interruptible(cmd.Context())
	defer stop()
	wctx, cancel := context.WithTimeout(ctx, f.waitFor())
	defer cancel()
	r, err := c.Run(wctx, client.Request{Command: pc, Target: target, Filter: filter, IncludeOffline: f.includeOffline, Signer: signer})
	if errors.Is(err, client.ErrNoHosts) {
		return &exitError{code: exitNoHosts, err: err}
	}
	if err != nil {
		return err
	}
	defer r.Close()
	announce(stderr, r)

	prog := newProgress(stderr, f.output == outTable && !f.stream, len(r.Resolution.Expected))
	streams := newStreamPrinter(stdout, stderr)
	for ev := range r.Events() {
		if ev.Chunk != nil {
			if f.stream && f.output == outTable {
				streams.chunk(ev.Chunk)
			}
			continue
		}
		res := ev.Result
		if res == nil || !protocol.IsFinal(res.State) {
			continue
		}
		streams.flush(res.Host)
		answered, _ := r.Progress()
		prog.answer(res, answered)
	}
	prog.done()
	s := r.Summary()
	interrupted := ctx.Err() != nil
	if err := printSummary(stdout, f.output, s, v, !f.stream); err != nil {
		return err
	}
	if f.output == outTable {
		fmt.Fprintln(stderr, summaryLine(s))
	}
	if interrupted {
		fmt.Fprintf(stderr, "interrupted: hosts that did not answer may still run it (mqagent cancel %s -t %s)\n", s.ID, hostList(s.NoAnswer))
		return &exitError{code: exitInterrupted, err: errors.New("interrupted")}
	}
	return summaryExit(s)
}

// announce says what was sent to whom (on stderr).
func announce(w io.Writer, r *client.Run) {
	res := r.Resolution
	fmt.Fprintf(w, "sent %s %s to %s: expecting %d host(s)\n", r.Command.Kind, r.ID, r.Command.Target, len(res.Expected))
	if len(res.Unknown) > 0 {
		fmt.Fprintf(w, "warning: never heard of %s (waiting for them anyway)\n", strings.Join(res.Unknown, ", "))
	}
	if len(res.Offline) > 0 {
		fmt.Fprintf(w, "note: %d matching host(s) offline, not waited for (the broker keeps the command for them): %s\n", len(res.Offline), listShort(res.Offline))
	}
	if len(res.Uncertain) > 0 {
		fmt.Fprintf(w, "note: %d host(s) published no inventory yet, so the filter could not be checked for them: %s\n", len(res.Uncertain), listShort(res.Uncertain))
	}
}

func listShort(hosts []string) string {
	if len(hosts) > 10 {
		return strings.Join(hosts[:10], ", ") + fmt.Sprintf(", … (%d more)", len(hosts)-10)
	}
	return strings.Join(hosts, ", ")
}

func hostList(hosts []string) string {
	if len(hosts) == 0 {
		return "host:…"
	}
	return "host:" + strings.Join(hosts, ",")
}

// summaryExit maps a summary to the exit status.
func summaryExit(s client.Summary) error {
	switch {
	case len(s.Failed) > 0 || len(s.TimedOut) > 0:
		return &exitError{code: exitFailed, err: fmt.Errorf("%d host(s) failed, %d timed out", len(s.Failed), len(s.TimedOut))}
	case len(s.NoAnswer) > 0:
		return &exitError{code: exitNoAnswer, err: fmt.Errorf("%d host(s) did not answer: %s", len(s.NoAnswer), listShort(s.NoAnswer))}
	case len(s.Succeeded) == 0:
		return &exitError{code: exitNoHosts, err: errors.New("no host answered (none expected)")}
	}
	return nil
}

func summaryLine(s client.Summary) string {
	line := fmt.Sprintf("%d succeeded, %d failed, %d timed out, %d no answer", len(s.Succeeded), len(s.Failed), len(s.TimedOut), len(s.NoAnswer))
	if len(s.Offline) > 0 {
		line += fmt.Sprintf(", %d offline (not waited for)", len(s.Offline))
	}
	if len(s.Skipped) > 0 {
		line += fmt.Sprintf(", %d skipped (filter unknown)", len(s.Skipped))
	}
	return line + fmt.Sprintf(" in %v", s.Duration.Round(time.Millisecond))
}

// summaryDoc is the JSON/YAML form of a run.
type summaryDoc struct {
	OK bool `json:"ok"`
	client.Summary
	DurationMS int64 `json:"duration_ms"`
}

// printSummary prints the run's outcome: per-host output (table mode,
// when details) and the summary table, or one JSON/YAML document.
func printSummary(w io.Writer, format string, s client.Summary, v view, details bool) error {
	if format != outTable {
		return writeDoc(w, format, summaryDoc{OK: s.OK(), Summary: s, DurationMS: s.Duration.Milliseconds()})
	}
	if details && v.output {
		for _, o := range s.Outcomes {
			if o.Result != nil {
				printResult(w, o.Result)
			}
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "HOST\tOUTCOME\tSTATE\tEXIT\tDURATION")
	for _, h := range v.header {
		fmt.Fprint(tw, "\t"+h)
	}
	fmt.Fprintln(tw, "\tERROR")
	for _, o := range s.Outcomes {
		exit, dur, errText := "-", "-", ""
		if r := o.Result; r != nil {
			if r.ExitCode != nil {
				exit = fmt.Sprint(*r.ExitCode)
			}
			dur = (time.Duration(r.DurationMS) * time.Millisecond).String()
			errText = r.Error
		}
		state := orDash(o.State)
		if o.Outcome == client.OutcomeNoAnswer && o.State != "" {
			state = o.State + " (last seen)"
		}
		host := o.Host
		if !o.Expected {
			host += " (unexpected)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s", host, o.Outcome, state, exit, dur)
		if v.columns != nil {
			for _, col := range v.columns(o) {
				fmt.Fprint(tw, "\t"+col)
			}
		}
		fmt.Fprintf(tw, "\t%s\n", oneLine(errText))
	}
	return tw.Flush()
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

// progress shows answered/expected: a bar on a terminal, else one plain
// line per answer.
type progress struct {
	w     io.Writer
	bar   *progressbar.ProgressBar
	plain bool
}

func newProgress(w io.Writer, enabled bool, expected int) *progress {
	p := &progress{w: w}
	if !enabled {
		return p
	}
	if !isTerminal(w) {
		p.plain = true
		return p
	}
	p.bar = progressbar.NewOptions(expected,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("answered"),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetRenderBlankState(true),
	)
	return p
}

func (p *progress) answer(r *protocol.Result, answered int) {
	switch {
	case p.bar != nil:
		_ = p.bar.Set(answered)
	case p.plain:
		detail := fmt.Sprintf("%d ms", r.DurationMS)
		if r.ExitCode != nil {
			detail = fmt.Sprintf("exit %d, %s", *r.ExitCode, detail)
		}
		fmt.Fprintf(p.w, "%s: %s (%s)\n", r.Host, r.State, detail)
	}
}

func (p *progress) done() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}

// streamPrinter prints output chunks line by line, each prefixed with its
// host; a line split across chunks is kept until it is complete (or the
// host's final result arrives).
type streamPrinter struct {
	stdout, stderr io.Writer
	partial        map[string]*strings.Builder // host + "\x00" + stream
}

func newStreamPrinter(stdout, stderr io.Writer) *streamPrinter {
	return &streamPrinter{stdout: stdout, stderr: stderr, partial: map[string]*strings.Builder{}}
}

func (s *streamPrinter) chunk(ch *protocol.Chunk) {
	key := ch.Host + "\x00" + ch.Stream
	b := s.partial[key]
	if b == nil {
		b = &strings.Builder{}
		s.partial[key] = b
	}
	b.WriteString(ch.Data)
	text := b.String()
	last := strings.LastIndexByte(text, '\n')
	if last < 0 {
		return
	}
	w := s.stdout
	if ch.Stream == "stderr" {
		w = s.stderr
	}
	for _, line := range strings.Split(text[:last], "\n") {
		fmt.Fprintf(w, "%s: %s\n", ch.Host, line)
	}
	b.Reset()
	b.WriteString(text[last+1:])
}

func (s *streamPrinter) flush(host string) {
	for _, stream := range []string{"stdout", "stderr"} {
		key := host + "\x00" + stream
		if b := s.partial[key]; b != nil && b.Len() > 0 {
			w := s.stdout
			if stream == "stderr" {
				w = s.stderr
			}
			fmt.Fprintf(w, "%s: %s\n", host, b.String())
			b.Reset()
		}
	}
}

// --- the commands ---------------------------------------------------------

const targetHelp = `
Targets (--target, -t): all, host:ID, host:ID,ID,… (a list), group:NAME.
Filters narrow a target as the agents check them: --os, --in-group, --fact
KEY=VALUE, --only ID. Only online hosts are expected to answer (offline
hosts of a group get the command when they come back); --include-offline
waits for them too.

Exit status: 0 every targeted host succeeded; 1 a host failed or timed out;
2 bad usage; 3 some hosts did not answer in time; 4 no host matched;
5 rollout aborted; 6 broker unreachable; 130 interrupted.`

func execCmd() *cobra.Command {
	f := &runFlags{defaultWait: 60 * time.Second}
	var (
		cwd, stdin string
		env        []string
	)
	c := &cobra.Command{
		Use:   "exec -t TARGET [flags] -- PROGRAM [ARG...]",
		Short: "Run a program (no shell) on hosts and report every host's result",
		Long: `Run a program with its arguments on every targeted host (no shell is involved).

  mqagent exec -t host:web-01 -- uname -a
  mqagent exec -t group:web --fact env=prod --stream -- journalctl -n 20
  mqagent exec -t all --batch 10% --abort-on 20% -- /usr/local/bin/upgrade.sh
` + targetHelp,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) == 0 && f.ro.resume == "" {
				return usageErr("exec: give the program and its arguments after --")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, argv []string) error {
			a := protocol.ExecArgs{Argv: argv, Cwd: cwd}
			if stdin != "" {
				b, err := readArgFile(stdin)
				if err != nil {
					return usageErr("--stdin: %v", err)
				}
				a.Stdin = string(b)
			}
			for _, kv := range env {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageErr("--env %q: want NAME=VALUE", kv)
				}
				if a.Env == nil {
					a.Env = map[string]string{}
				}
				a.Env[k] = v
			}
			args, _ := json.Marshal(a)
			return runOnFleet(cmd, f, protocol.Command{Kind: protocol.KindExec, Args: args}, view{output: true})
		},
	}
	f.add(c, true, true)
	c.Flags().StringVar(&cwd, "cwd", "", "working directory on the host")
	c.Flags().StringArrayVar(&env, "env", nil, "environment variable NAME=VALUE added on the host (repeatable)")
	c.Flags().StringVar(&stdin, "stdin", "", "file whose content is the program's standard input (- for this process's)")
	return c
}

func shellCmd() *cobra.Command {
	f := &runFlags{defaultWait: 60 * time.Second}
	var shell string
	c := &cobra.Command{
		Use:   "shell -t TARGET [flags] COMMAND...",
		Short: "Run a command line in a shell on hosts and report every host's result",
		Long: `Run a command line in the host's shell (sh on Unix, cmd on Windows, unless --shell).

  mqagent shell -t all 'df -h / | tail -1'
  mqagent shell -t group:db --shell bash --stream 'for i in 1 2 3; do echo $i; sleep 1; done'
  mqagent shell -t all --canary 2 --batch 5 --rate 20/min 'apt-get -y upgrade'
` + targetHelp,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) == 0 && f.ro.resume == "" {
				return usageErr("shell: give the command line")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			a, _ := json.Marshal(protocol.ShellArgs{Command: strings.Join(args, " "), Shell: shell})
			return runOnFleet(cmd, f, protocol.Command{Kind: protocol.KindShell, Args: a}, view{output: true})
		},
	}
	f.add(c, true, true)
	c.Flags().StringVar(&shell, "shell", "", "sh, bash, cmd, powershell or pwsh (default: sh on Unix, cmd on Windows)")
	return c
}

func scriptCmd() *cobra.Command {
	f := &runFlags{defaultWait: 60 * time.Second}
	var interpreter string
	c := &cobra.Command{
		Use:   "script -t TARGET [flags] FILE [-- ARG...]",
		Short: "Send a script file to hosts, run it there and report every host's result",
		Long: `Send the content of FILE (- for standard input) to every targeted host and run it with
--interpreter (sh, bash, cmd, powershell, pwsh, python3; default: sh on Unix, cmd on Windows).

  mqagent script -t group:web ./check.sh -- --verbose
  mqagent script -t all --interpreter python3 --batch 20 ./inventory.py
` + targetHelp,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) == 0 && f.ro.resume == "" {
				return usageErr("script: give the script file")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var a protocol.ScriptArgs
			if len(args) > 0 {
				b, err := readArgFile(args[0])
				if err != nil {
					return usageErr("script: %v", err)
				}
				const limit = 200 << 10 // the agents refuse payloads over 256 KiB by default
				if len(b) > limit {
					return usageErr("script %s: %d bytes; the agents take commands up to 256 KiB (security.max_payload_bytes)", args[0], len(b))
				}
				a = protocol.ScriptArgs{Content: string(b), Interpreter: interpreter, Args: args[1:]}
			}
			b, _ := json.Marshal(a)
			return runOnFleet(cmd, f, protocol.Command{Kind: protocol.KindScript, Args: b}, view{output: true})
		},
	}
	f.add(c, true, true)
	c.Flags().StringVar(&interpreter, "interpreter", "", "sh, bash, cmd, powershell, pwsh or python3")
	return c
}

// readArgFile reads a file named on the command line; "-" is stdin.
func readArgFile(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}

func pingCmd() *cobra.Command {
	f := &runFlags{defaultWait: 15 * time.Second}
	c := &cobra.Command{
		Use:   "ping -t TARGET [flags]",
		Short: "Check that hosts answer commands; show their agent version and uptime",
		Long:  "Send a ping to every targeted host and wait for the answers.\n\n  mqagent ping -t all\n  mqagent ping -t group:web -o json\n" + targetHelp,
		Args:  argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runOnFleet(cmd, f, protocol.Command{Kind: protocol.KindPing}, view{
				header: []string{"VERSION", "UPTIME"},
				columns: func(o client.Outcome) []string {
					var d protocol.PingData
					if o.Result == nil || json.Unmarshal(o.Result.Data, &d) != nil {
						return []string{"-", "-"}
					}
					return []string{orDash(d.Version), (time.Duration(d.UptimeMS) * time.Millisecond).Round(time.Second).String()}
				},
			})
		},
	}
	f.add(c, false, false)
	return c
}

func cancelCmd() *cobra.Command {
	f := &runFlags{defaultWait: 15 * time.Second}
	c := &cobra.Command{
		Use:   "cancel ID -t TARGET [flags]",
		Short: "Stop a queued or running command on hosts",
		Long: `Ask every targeted host to stop command ID (its whole process tree is killed; it ends "canceled").
A host where ID is not queued or running answers failed with canceled=false.

  mqagent cancel 01JDX4T0Q8M4S0ZB0E9J6Q3N1C -t host:web-01,web-02
` + targetHelp,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !protocol.ValidID(args[0]) {
				return usageErr("cancel: %q is not a command id", args[0])
			}
			a, _ := json.Marshal(protocol.IDArgs{ID: args[0]})
			return runOnFleet(cmd, f, protocol.Command{Kind: protocol.KindCancel, Args: a}, view{
				header: []string{"CANCELED"},
				columns: func(o client.Outcome) []string {
					var d protocol.CancelData
					if o.Result == nil || json.Unmarshal(o.Result.Data, &d) != nil {
						return []string{"-"}
					}
					return []string{fmt.Sprint(d.Canceled)}
				},
			})
		},
	}
	f.add(c, false, false)
	return c
}

func resultCmd() *cobra.Command {
	f := &runFlags{defaultWait: 15 * time.Second}
	c := &cobra.Command{
		Use:   "result ID -t TARGET [flags]",
		Short: "Fetch the stored final result of a command from hosts",
		Long: `Ask every targeted host for its stored final result of command ID (kept for at least the
agents' security.default_ttl). A host that does not know ID answers failed.

  mqagent result 01JDX4T0Q8M4S0ZB0E9J6Q3N1C -t host:web-01 -o json
` + targetHelp,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !protocol.ValidID(args[0]) {
				return usageErr("result: %q is not a command id", args[0])
			}
			a, _ := json.Marshal(protocol.IDArgs{ID: args[0]})
			return runOnFleet(cmd, f, protocol.Command{Kind: protocol.KindResultGet, Args: a}, view{output: true,
				header: []string{"STORED"},
				columns: func(o client.Outcome) []string {
					var stored protocol.Result
					if o.Result == nil || json.Unmarshal(o.Result.Data, &stored) != nil || stored.State == "" {
						return []string{"-"}
					}
					code := ""
					if stored.ExitCode != nil {
						code = fmt.Sprintf(" exit %d", *stored.ExitCode)
					}
					return []string{stored.State + code}
				},
			})
		},
	}
	f.add(c, false, false)
	return c
}

func agentCtlCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "agent restart|stop|update|uninstall -t TARGET",
		Short: "Restart, stop, update or uninstall agents remotely",
		Long: `Send agent control commands. Each host publishes its final result (and an offline
status with the reason) before it acts.` + targetHelp,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(agentSimpleCmd("restart", protocol.KindAgentRestart, "Restart the agents (re-executed in place)", false),
		agentSimpleCmd("stop", protocol.KindAgentStop, "Stop the agents (they stay stopped until started on the host)", true),
		agentUpdateCmd(), agentUninstallCmd())
	return flagErrors(c)
}

func agentSimpleCmd(name, kind, short string, confirm bool) *cobra.Command {
	f := &runFlags{defaultWait: 30 * time.Second}
	var yes bool
	c := &cobra.Command{
		Use:   name + " -t TARGET [flags]",
		Short: short,
		Long:  short + "." + targetHelp,
		Args:  argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if confirm && !yes && !singleHost(f.target) {
				return usageErr("%s on more than one host: add --yes", name)
			}
			return runOnFleet(cmd, f, protocol.Command{Kind: kind}, view{})
		},
	}
	f.add(c, false, false)
	if confirm {
		c.Flags().BoolVar(&yes, "yes", false, "confirm "+name+" on more than one host")
	}
	return c
}

func singleHost(target string) bool {
	return strings.HasPrefix(target, "host:") && !strings.Contains(target, ",")
}

func agentUpdateCmd() *cobra.Command {
	f := &runFlags{defaultWait: 2 * time.Minute}
	var a protocol.UpdateArgs
	var sigFile string
	c := &cobra.Command{
		Use:   "update -t TARGET --version V --url URL --sha256 HEX --signature B64 [flags]",
		Short: "Update the agents to another build (rollout flags recommended)",
		Long: `Ask the agents to download, verify (sha256 and the ed25519 signature by update.public_key)
and switch to another build. The final result {"from", "to"} is published by the new
version once it is online.

  mqagent agent update -t all --version 1.3.0 --url https://dl.example/mqagent-1.3.0 \
      --sha256 9f86d0… --signature-file mqagent-1.3.0.sig --canary 2 --batch 10% --abort-on 5%
` + targetHelp,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if sigFile != "" {
				b, err := os.ReadFile(sigFile)
				if err != nil {
					return usageErr("--signature-file: %v", err)
				}
				a.Signature = strings.TrimSpace(string(b))
			}
			if f.ro.resume == "" && (a.Version == "" || a.URL == "" || a.SHA256 == "" || a.Signature == "") {
				return usageErr("update: --version, --url, --sha256 and --signature (or --signature-file) are required")
			}
			b, _ := json.Marshal(a)
			return runOnFleet(cmd, f, protocol.Command{Kind: protocol.KindAgentUpdate, Args: b}, view{
				header: []string{"FROM", "TO"},
				columns: func(o client.Outcome) []string {
					var d struct{ From, To string }
					if o.Result == nil || json.Unmarshal(o.Result.Data, &d) != nil {
						return []string{"-", "-"}
					}
					return []string{orDash(d.From), orDash(d.To)}
				},
			})
		},
	}
	f.add(c, false, true)
	c.Flags().StringVar(&a.Version, "version", "", "version to install")
	c.Flags().StringVar(&a.URL, "url", "", "where the agents download the binary")
	c.Flags().StringVar(&a.SHA256, "sha256", "", "sha256 (hex) of the binary")
	c.Flags().StringVar(&a.Signature, "signature", "", "base64 ed25519 signature of the binary by the update key")
	c.Flags().StringVar(&sigFile, "signature-file", "", "file holding --signature")
	return c
}

func agentUninstallCmd() *cobra.Command {
	f := &runFlags{defaultWait: 30 * time.Second}
	var purge, yes bool
	c := &cobra.Command{
		Use:   "uninstall -t TARGET --yes [--purge]",
		Short: "Uninstall the agents (and with --purge their data and logs)",
		Long:  "Uninstall the agents: each publishes its result and an offline status (reason uninstall), clears its retained inventory and removes itself." + targetHelp,
		Args:  argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !yes {
				return usageErr("uninstall: add --yes to confirm")
			}
			b, _ := json.Marshal(protocol.UninstallArgs{Purge: purge})
			return runOnFleet(cmd, f, protocol.Command{Kind: protocol.KindAgentUninstall, Args: b}, view{})
		},
	}
	f.add(c, false, false)
	c.Flags().BoolVar(&purge, "purge", false, "also delete the agents' data and logs")
	c.Flags().BoolVar(&yes, "yes", false, "confirm")
	return c
}
