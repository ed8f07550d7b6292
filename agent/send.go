package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqagent/mqagent/pkg/client"
	"github.com/mqagent/mqagent/pkg/protocol"
)

func sendCmd() *cobra.Command {
	var (
		brokerURL, prefix, host, group, kind, shell, keyFile, kid, operator, output string
		all, stream                                                                 bool
		timeout, wait                                                               time.Duration
	)
	c := &cobra.Command{
		Use:   "send [flags] [-- ARGV...]",
		Short: "Send one command to a host, a group or every host and print the results",
		Long: `Send one command and print every host's result.

  mqagent send --host web-01 -- uname -a          # exec an argv
  mqagent send --all --shell 'df -h /'            # run a shell command everywhere
  mqagent send --group web --kind ping            # ping a group

The exit status is 0 only when every host that answered succeeded and every
online host that was expected to answer did.`,
		RunE: func(cmd *cobra.Command, argv []string) error {
			target, err := pickTarget(host, group, all)
			if err != nil {
				return err
			}
			pc := protocol.Command{Target: target, Stream: stream, Operator: operator}
			if timeout > 0 {
				pc.TimeoutMS = timeout.Milliseconds()
			}
			switch {
			case shell != "":
				pc.Kind = protocol.KindShell
				pc.Args, _ = json.Marshal(protocol.ShellArgs{Command: shell})
			case len(argv) > 0:
				pc.Kind = protocol.KindExec
				pc.Args, _ = json.Marshal(protocol.ExecArgs{Argv: argv})
			case kind != "":
				pc.Kind = kind
			default:
				pc.Kind = protocol.KindPing
			}
			if kind != "" && kind != pc.Kind {
				return fmt.Errorf("--kind %s conflicts with the command given", kind)
			}
			var signer *client.Signer
			if keyFile != "" {
				k, err := readPrivateKey(keyFile)
				if err != nil {
					return err
				}
				signer = &client.Signer{Kid: kid, Key: k}
			}
			return send(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), brokerURL, prefix, pc, signer, wait, output)
		},
	}
	f := c.Flags()
	f.StringVar(&brokerURL, "broker", envDefault("MQAGENT_BROKER", "tcp://127.0.0.1:1883"), "broker URL (env MQAGENT_BROKER)")
	f.StringVar(&prefix, "prefix", envDefault("MQAGENT_PREFIX", protocol.DefaultPrefix), "topic prefix (env MQAGENT_PREFIX)")
	f.StringVar(&host, "host", "", "target one host id")
	f.StringVar(&group, "group", "", "target a group")
	f.BoolVar(&all, "all", false, "target every host")
	f.StringVar(&kind, "kind", "", "command kind (default: exec with ARGV, shell with --shell, else ping)")
	f.StringVar(&shell, "shell", "", "run this command line in the host's default shell")
	f.BoolVar(&stream, "stream", false, "print output while the command runs")
	f.DurationVar(&timeout, "timeout", 0, "run-time limit on the host (default: the host's exec.default_timeout)")
	f.DurationVar(&wait, "wait", 30*time.Second, "how long to wait for results")
	f.StringVar(&keyFile, "key", envDefault("MQAGENT_KEY", ""), "sign with this ed25519 private key file (env MQAGENT_KEY)")
	f.StringVar(&kid, "kid", envDefault("MQAGENT_KID", "ops"), "key id of --key (env MQAGENT_KID)")
	f.StringVar(&operator, "operator", envDefault("USER", ""), "operator name recorded in audit records")
	f.StringVarP(&output, "output", "o", "text", "output format: text or json")
	return c
}

func pickTarget(host, group string, all bool) (string, error) {
	n := 0
	target := ""
	if host != "" {
		n, target = n+1, "host:"+host
	}
	if group != "" {
		n, target = n+1, "group:"+group
	}
	if all {
		n, target = n+1, "all"
	}
	if n != 1 {
		return "", errors.New("give exactly one of --host, --group, --all")
	}
	_, _, err := protocol.ParseTarget(target)
	return target, err
}

func send(ctx context.Context, stdout, stderr io.Writer, url, prefix string, cmd protocol.Command, signer *client.Signer, wait time.Duration, output string) error {
	cl, err := client.Dial(client.Options{URL: url, Prefix: prefix})
	if err != nil {
		return err
	}
	defer cl.Close()
	// Expected answers: the online hosts the target names (group
	// membership as their status reports it).
	expected := map[string]bool{}
	if statuses, err := cl.Statuses(300 * time.Millisecond); err == nil {
		scope, name, _ := protocol.ParseTarget(cmd.Target)
		for h, s := range statuses {
			if s.State != protocol.StatusOnline {
				continue
			}
			if scope == protocol.ScopeAll || scope == protocol.ScopeHost && h == name || scope == protocol.ScopeGroup && slices.Contains(s.Groups, name) {
				expected[h] = true
			}
		}
	}
	if scope, name, _ := protocol.ParseTarget(cmd.Target); scope == protocol.ScopeHost {
		expected = map[string]bool{name: true}
	}
	cmd.ID = client.NewID()
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	events, err := cl.Send(wctx, cmd, signer)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "sent %s %s to %s (expecting %d host(s))\n", cmd.Kind, cmd.ID, cmd.Target, len(expected))
	finals := map[string]*protocol.Result{}
	for ev := range events {
		if ev.Chunk != nil && output == "text" {
			fmt.Fprintf(stdout, "[%s %s] %s", ev.Chunk.Host, ev.Chunk.Stream, ev.Chunk.Data)
			continue
		}
		r := ev.Result
		if r == nil || !protocol.IsFinal(r.State) || finals[r.Host] != nil {
			continue
		}
		finals[r.Host] = r
		if output == "json" {
			b, _ := json.Marshal(r)
			fmt.Fprintln(stdout, string(b))
		} else {
			printResult(stdout, r)
		}
		if len(expected) > 0 && allAnswered(expected, finals) {
			break
		}
	}
	failed := 0
	for _, r := range finals {
		if r.State != protocol.StateSucceeded {
			failed++
		}
	}
	var missing []string
	for h := range expected {
		if finals[h] == nil {
			missing = append(missing, h)
		}
	}
	sort.Strings(missing)
	fmt.Fprintf(stderr, "%d answered, %d succeeded, %d failed, %d no answer%s\n", len(finals), len(finals)-failed, failed, len(missing), listSuffix(missing))
	if failed > 0 || len(missing) > 0 || len(finals) == 0 {
		return &exitError{code: 1, err: errors.New("not every host succeeded")}
	}
	return nil
}

func allAnswered(expected map[string]bool, finals map[string]*protocol.Result) bool {
	for h := range expected {
		if finals[h] == nil {
			return false
		}
	}
	return true
}

func listSuffix(hosts []string) string {
	if len(hosts) == 0 {
		return ""
	}
	return ": " + strings.Join(hosts, ", ")
}

func printResult(w io.Writer, r *protocol.Result) {
	code := ""
	if r.ExitCode != nil {
		code = fmt.Sprintf(" exit=%d", *r.ExitCode)
	}
	fmt.Fprintf(w, "== %s: %s%s (%d ms)", r.Host, r.State, code, r.DurationMS)
	if r.Error != "" {
		fmt.Fprintf(w, " error: %s", r.Error)
	}
	fmt.Fprintln(w)
	if len(r.Data) > 0 {
		fmt.Fprintf(w, "%s\n", r.Data)
	}
	if r.Stdout != "" {
		fmt.Fprint(w, withNewline(r.Stdout))
	}
	if r.Stderr != "" {
		fmt.Fprint(w, withNewline("stderr: "+r.Stderr))
	}
}

func withNewline(s string) string {
	if strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n"
}

// readPrivateKey reads a private key written by `mqagent keygen`: the
// standard base64 of the 64-byte ed25519 private key.
func readPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("key %s: not a base64 ed25519 private key (see mqagent keygen)", path)
	}
	return ed25519.PrivateKey(raw), nil
}

func keygenCmd() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Write a new ed25519 key pair for signing commands",
		Long: "Writes the private key (base64) to FILE with mode 0600 and FILE.pub, and prints the public key\n" +
			"for security.trusted_keys in the agents' config. The private key is never printed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, priv, err := ed25519.GenerateKey(nil)
			if err != nil {
				return err
			}
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("keygen: %w (refusing to overwrite an existing key)", err)
			}
			if _, err := fmt.Fprintln(f, base64.StdEncoding.EncodeToString(priv)); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			pubB64 := base64.StdEncoding.EncodeToString(pub)
			if err := os.WriteFile(out+".pub", []byte(pubB64+"\n"), 0o644); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), pubB64)
			return nil
		},
	}
	c.Flags().StringVarP(&out, "out", "o", "", "private key file to create")
	_ = c.MarkFlagRequired("out")
	return c
}
