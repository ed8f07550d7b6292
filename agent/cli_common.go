package main

// This file holds what the fleet commands (hosts, exec, shell, script,
// ping, cancel, result, inventory, watch, agent, rollout) share: the
// connection flags with their environment variables, the output formats,
// the exit codes, and the terminal detection. docs/operators.md is the
// user's guide.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
	"golang.org/x/term"

	"github.com/mqagent/mqagent/pkg/client"
	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// Exit codes of the fleet commands (documented in docs/operators.md).
const (
	exitOK          = 0 // every targeted host succeeded
	exitFailed      = 1 // a host failed, timed out, was rejected… (or another error)
	exitUsage       = 2 // bad flags or arguments
	exitNoAnswer    = 3 // no failure, but some expected hosts did not answer in time
	exitNoHosts     = 4 // the target matched no host
	exitAborted     = 5 // a rollout was aborted (its threshold was reached)
	exitBroker      = 6 // the broker could not be reached
	exitInterrupted = 130
)

// usageErr is a bad flag or argument (exit status 2).
func usageErr(format string, a ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

// connFlags are the broker connection and signing settings of every fleet
// command. Every flag has an environment variable (MQAGENT_…), read when
// the flag is not given.
type connFlags struct {
	broker, prefix           string
	username, passwordFile   string
	caFile, certFile, tlsKey string
	serverName               string
	insecure                 bool
	keyFile, kid, operator   string
	connectTimeout           time.Duration
}

func envBool(name string) bool {
	v := strings.ToLower(os.Getenv(name))
	return v == "1" || v == "true" || v == "yes"
}

func (f *connFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.broker, "broker", envDefault("MQAGENT_BROKER", "tcp://127.0.0.1:1883"), "broker URL(s), comma-separated for failover (env MQAGENT_BROKER)")
	fs.StringVar(&f.prefix, "prefix", envDefault("MQAGENT_PREFIX", protocol.DefaultPrefix), "topic prefix (env MQAGENT_PREFIX)")
	fs.StringVar(&f.username, "username", envDefault("MQAGENT_USERNAME", ""), "MQTT username (env MQAGENT_USERNAME; the password comes from MQAGENT_PASSWORD or --password-file)")
	fs.StringVar(&f.passwordFile, "password-file", envDefault("MQAGENT_PASSWORD_FILE", ""), "file holding the MQTT password (env MQAGENT_PASSWORD_FILE)")
	fs.StringVar(&f.caFile, "tls-ca", envDefault("MQAGENT_TLS_CA", ""), "CA certificate (PEM) to verify the broker (env MQAGENT_TLS_CA)")
	fs.StringVar(&f.certFile, "tls-cert", envDefault("MQAGENT_TLS_CERT", ""), "client certificate (PEM) for mutual TLS (env MQAGENT_TLS_CERT)")
	fs.StringVar(&f.tlsKey, "tls-key", envDefault("MQAGENT_TLS_KEY", ""), "client certificate's private key (PEM) (env MQAGENT_TLS_KEY)")
	fs.StringVar(&f.serverName, "tls-server-name", envDefault("MQAGENT_TLS_SERVER_NAME", ""), "name to check in the broker's certificate (env MQAGENT_TLS_SERVER_NAME)")
	fs.BoolVar(&f.insecure, "tls-insecure", envBool("MQAGENT_TLS_INSECURE"), "do not verify the broker's certificate: testing only (env MQAGENT_TLS_INSECURE)")
	fs.StringVar(&f.keyFile, "key", envDefault("MQAGENT_KEY", ""), "sign commands with this ed25519 private key file from mqagent keygen (env MQAGENT_KEY)")
	fs.StringVar(&f.kid, "kid", envDefault("MQAGENT_KID", "ops"), "key id of --key, as in the agents' security.trusted_keys (env MQAGENT_KID)")
	fs.StringVar(&f.operator, "operator", envDefault("MQAGENT_OPERATOR", envDefault("USER", envDefault("USERNAME", ""))), "operator name recorded in audit records (env MQAGENT_OPERATOR, else USER)")
	fs.DurationVar(&f.connectTimeout, "connect-timeout", 10*time.Second, "broker connect and publish timeout")
}

// dial connects to the broker; a failure has exit status 6.
func (f *connFlags) dial() (*client.Client, error) {
	o, err := f.options()
	if err != nil {
		return nil, err
	}
	return dialWith(o)
}

// options are the client options the flags give: broker URLs, TLS,
// credentials.
func (f *connFlags) options() (client.Options, error) {
	var urls []string
	for _, u := range strings.Split(f.broker, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	if len(urls) == 0 {
		return client.Options{}, usageErr("--broker: no URL given")
	}
	o := client.Options{URLs: urls, Prefix: f.prefix, Username: f.username, Timeout: f.connectTimeout}
	if files := (client.TLSFiles{CAFile: f.caFile, CertFile: f.certFile, KeyFile: f.tlsKey, ServerName: f.serverName, InsecureSkipVerify: f.insecure}); files != (client.TLSFiles{}) {
		cfg, err := files.Config()
		if err != nil {
			return client.Options{}, usageErr("%v", err)
		}
		o.TLS = cfg
	}
	o.Password = os.Getenv("MQAGENT_PASSWORD")
	if f.passwordFile != "" {
		b, err := os.ReadFile(f.passwordFile)
		if err != nil {
			return client.Options{}, usageErr("--password-file: %v", err)
		}
		o.Password = strings.TrimRight(string(b), "\r\n")
	}
	return o, nil
}

// dialWith connects with o; a failure has exit status 6.
func dialWith(o client.Options) (*client.Client, error) {
	c, err := client.Dial(o)
	if err != nil {
		return nil, &exitError{code: exitBroker, err: err}
	}
	return c, nil
}

// signer reads --key, if given.
func (f *connFlags) signer() (*client.Signer, error) {
	if f.keyFile == "" {
		return nil, nil
	}
	k, err := readPrivateKey(f.keyFile)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	return &client.Signer{Kid: f.kid, Key: k}, nil
}

// filterFlags are the command filter (docs/PROTOCOL.md "filter").
type filterFlags struct {
	os     string
	groups []string
	facts  []string
	hosts  []string
}

func (f *filterFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.os, "os", "", "only hosts with this OS (GOOS: linux, windows, darwin…)")
	fs.StringSliceVar(&f.groups, "in-group", nil, "only hosts in at least one of these groups (repeatable, comma-separated)")
	fs.StringArrayVar(&f.facts, "fact", nil, "only hosts with this fact, KEY=VALUE (repeatable; all must hold)")
	fs.StringSliceVar(&f.hosts, "only", nil, "only these host ids (repeatable, comma-separated)")
}

// filter builds the protocol filter; nil when no condition was given.
func (f *filterFlags) filter() (*protocol.Filter, error) {
	var pf protocol.Filter
	pf.OS = f.os
	for _, g := range f.groups {
		if !protocol.ValidHostID(g) {
			return nil, usageErr("--in-group: invalid group name %q", g)
		}
		pf.Groups = append(pf.Groups, g)
	}
	for _, h := range f.hosts {
		if !protocol.ValidHostID(h) {
			return nil, usageErr("--only: invalid host id %q", h)
		}
		pf.Hosts = append(pf.Hosts, h)
	}
	for _, kv := range f.facts {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErr("--fact %q: want KEY=VALUE", kv)
		}
		if pf.Facts == nil {
			pf.Facts = map[string]string{}
		}
		pf.Facts[k] = v
	}
	if pf.OS == "" && len(pf.Groups) == 0 && len(pf.Hosts) == 0 && len(pf.Facts) == 0 {
		return nil, nil
	}
	return &pf, nil
}

// parseTarget reads --target.
func parseTarget(s string) (fleet.Target, error) {
	if s == "" {
		return fleet.Target{}, usageErr("--target is required: all, host:ID[,ID…] or group:NAME")
	}
	t, err := fleet.ParseTarget(s)
	if err != nil {
		return fleet.Target{}, usageErr("--target: %v", err)
	}
	return t, nil
}

// Output formats.
const (
	outTable = "table"
	outJSON  = "json"
	outYAML  = "yaml"
)

func addOutputFlag(fs *pflag.FlagSet, p *string) {
	fs.StringVarP(p, "output", "o", envDefault("MQAGENT_OUTPUT", outTable), "output format: table, json or yaml (env MQAGENT_OUTPUT)")
}

func checkOutput(o string) error {
	switch o {
	case outTable, outJSON, outYAML:
		return nil
	}
	return usageErr("--output %q: want table, json or yaml", o)
}

// writeDoc writes v as one JSON or YAML document. YAML keys are the JSON
// names (v goes through JSON first).
func writeDoc(w io.Writer, format string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if format == outJSON {
		_, err = fmt.Fprintln(w, string(b))
		return err
	}
	var generic any
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	if err := dec.Decode(&generic); err != nil {
		return err
	}
	y, err := yaml.Marshal(jsonNumbers(generic))
	if err != nil {
		return err
	}
	_, err = w.Write(y)
	return err
}

// jsonNumbers turns json.Number into int64 or float64, so YAML shows
// numbers, not strings.
func jsonNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = jsonNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = jsonNumbers(e)
		}
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

// isTerminal reports whether w is a terminal (then progress bars are
// drawn; otherwise output is plain lines).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// interruptible is ctx ended also by SIGINT/SIGTERM.
func interruptible(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// ago formats how long ago t was ("-" for the zero time).
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// orDash is s, or "-" when empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sortedKV(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + m[k])
	}
	return b.String()
}

// flagErrors makes cobra's flag parsing errors usage errors (exit 2).
func flagErrors(c *cobra.Command) *cobra.Command {
	c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: exitUsage, err: err} })
	return c
}

// argsUsage wraps a cobra.PositionalArgs so its errors are usage errors.
func argsUsage(fn cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := fn(cmd, args); err != nil {
			return &exitError{code: exitUsage, err: err}
		}
		return nil
	}
}

// isExit reports whether err carries an exit status already.
func isExit(err error) bool {
	var e *exitError
	return errors.As(err, &e)
}
