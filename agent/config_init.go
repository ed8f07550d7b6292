package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqagent/mqagent/pkg/config"
)

// configCmd groups the commands that write and check configuration
// files; installers (the MSI, packages) use them.
func configCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "config",
		Short: "Write or check a configuration file",
		Args:  cobra.NoArgs,
	}
	c.AddCommand(configInitCmd(), configCheckCmd(), configRollbackCmd())
	return c
}

// installIDPrefix starts the comment line that records which installation
// wrote a configuration file (config init --install-id), so that only that
// installation's rollback removes it.
const installIDPrefix = "# install-id: "

// Names of the TLS files copied by --copy-tls-to.
const (
	caCopyName   = "ca.pem"
	certCopyName = "cert.pem"
	keyCopyName  = "key.pem"
)

// initFlags are the flags of `config init`.
type initFlags struct {
	out          string
	brokerURLs   []string
	groups       []string
	caFile       string
	certFile     string
	keyFile      string
	trustedKeys  []string
	hostID       string
	dataDir      string
	force        bool
	keepExisting bool
	copyTLSTo    string
	installID    string
	errorFile    string
}

func configInitCmd() *cobra.Command {
	var f initFlags
	c := &cobra.Command{
		Use:   "init --out FILE [--broker-url URL]... [flags]",
		Short: "Write a new configuration file",
		Long: "Writes a minimal configuration file with the settings given (every other key keeps the agent's default),\n" +
			"after checking it as the agent will load it. The file is written atomically and readable only by its owner\n" +
			"(mode 0600; on Windows SYSTEM and Administrators only). An existing file is never replaced without --force.\n\n" +
			"Flags given an empty value are ignored, so that an installer can pass its properties whether they are set or not.\n" +
			"--broker-url and --groups take comma-separated lists; --trusted-key takes ID=BASE64[:KIND,KIND...],\n" +
			"several separated by ';'. All three may be repeated.",
		Example: "  mqagent config init --out /etc/mqagent/config.yaml --broker-url ssl://mq.example.com:8883 \\\n" +
			"    --ca-file /etc/mqagent/ca.pem --groups web,eu --trusted-key ops=BASE64PUBLICKEY",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := runConfigInit(cmd.OutOrStdout(), f)
			if f.errorFile != "" {
				if rerr := recordError(f.errorFile, err); rerr != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "mqagent: config init: %v\n", rerr)
				}
			}
			return err
		},
	}
	fl := c.Flags()
	fl.StringVarP(&f.out, "out", "o", "", "configuration file to write")
	fl.StringArrayVar(&f.brokerURLs, "broker-url", nil, "broker URL(s), comma-separated, tried in order")
	fl.StringArrayVar(&f.groups, "groups", nil, "groups of this host, comma-separated")
	fl.StringVar(&f.caFile, "ca-file", "", "CA certificate file (PEM) of the broker")
	fl.StringVar(&f.certFile, "cert-file", "", "client certificate file (PEM), with --key-file")
	fl.StringVar(&f.keyFile, "key-file", "", "client key file (PEM), with --cert-file")
	fl.StringArrayVar(&f.trustedKeys, "trusted-key", nil, "trusted operator key(s): ID=BASE64[:KINDS], several separated by ';'")
	fl.StringVar(&f.hostID, "host-id", "", "host id (default: derived from the hostname at each start)")
	fl.StringVar(&f.dataDir, "data-dir", "", "data directory (default: "+config.DefaultDataDir()+")")
	fl.BoolVar(&f.force, "force", false, "replace an existing file")
	fl.BoolVar(&f.keepExisting, "keep-existing", false, "when the file exists, leave it unchanged and succeed (upgrades)")
	fl.StringVar(&f.copyTLSTo, "copy-tls-to", "", "copy the TLS files into this directory (as "+caCopyName+", "+certCopyName+", "+keyCopyName+", private) and use the copies")
	fl.StringVar(&f.installID, "install-id", "", "record this installation id in the file, for `config rollback`")
	fl.StringVar(&f.errorFile, "error-file", "", "on failure also write the error to this file, removed on success (installers do not log a custom action's output)")
	_ = c.MarkFlagRequired("out")
	c.MarkFlagsMutuallyExclusive("force", "keep-existing")
	return c
}

// runConfigInit writes the configuration file of f.
func runConfigInit(stdout io.Writer, f initFlags) error {
	if f.out == "" {
		return errors.New("config init: --out is empty")
	}
	out, err := filepath.Abs(f.out)
	if err != nil {
		return fmt.Errorf("config init: %w", err)
	}
	if _, err := os.Lstat(out); err == nil {
		switch {
		case f.keepExisting:
			fmt.Fprintf(stdout, "%s exists: kept unchanged\n", out)
			return nil
		case !f.force:
			return fmt.Errorf("config init: %s exists: refusing to overwrite it (use --force to replace it, --keep-existing to keep it)", out)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("config init: %w", err)
	}

	ini, err := f.initial()
	if err != nil {
		return fmt.Errorf("config init: %w", err)
	}
	if f.copyTLSTo != "" {
		// Check the configuration before copying anything: a bad URL or
		// key must not leave copies behind.
		if _, err := ini.Render(); err != nil {
			return err
		}
		if ini.TLS, err = copyTLSFiles(ini.TLS, f.copyTLSTo); err != nil {
			return fmt.Errorf("config init: %w", err)
		}
	}
	data, err := ini.Render()
	if err != nil {
		return err
	}
	if err := config.WriteFile(out, data, config.WriteOptions{Overwrite: f.force}); err != nil {
		if errors.Is(err, fs.ErrExist) {
			if f.keepExisting {
				fmt.Fprintf(stdout, "%s exists: kept unchanged\n", out)
				return nil
			}
			return fmt.Errorf("config init: %w (use --force to replace it)", err)
		}
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\n", out)
	return nil
}

// recordError writes err to path (private; created with its directory),
// or removes path when err is nil, so that the file always tells about
// the last attempt.
func recordError(path string, err error) error {
	if err == nil {
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return rerr
		}
		return nil
	}
	msg := fmt.Sprintf("%s mqagent %s: config init failed:\n%v\n", time.Now().UTC().Format(time.RFC3339), version, err)
	return config.WritePrivateFile(path, []byte(msg), config.WriteOptions{Overwrite: true})
}

// initial turns the flags into the settings of the new file.
func (f initFlags) initial() (config.Initial, error) {
	ini := config.Initial{
		HostID:     strings.TrimSpace(f.hostID),
		DataDir:    strings.TrimSpace(f.dataDir),
		BrokerURLs: splitList(f.brokerURLs, ","),
		Groups:     splitList(f.groups, ","),
		TLS: config.TLS{
			CAFile:   strings.TrimSpace(f.caFile),
			CertFile: strings.TrimSpace(f.certFile),
			KeyFile:  strings.TrimSpace(f.keyFile),
		},
		Comment: "mqagent configuration, written by `mqagent config init` (" + version + ").\n" +
			"Keys left out have their defaults: see the configuration section of docs/PROTOCOL.md.",
	}
	if f.installID != "" {
		if strings.ContainsAny(f.installID, "\r\n") {
			return ini, errors.New("--install-id must be one line")
		}
		ini.Comment += "\n" + strings.TrimPrefix(installIDPrefix, "# ") + f.installID
	}
	for _, spec := range splitList(f.trustedKeys, ";") {
		k, err := parseTrustedKey(spec)
		if err != nil {
			return ini, err
		}
		ini.TrustedKeys = append(ini.TrustedKeys, k)
	}
	return ini, nil
}

// splitList splits each value on sep, trims white space and drops empty
// items.
func splitList(values []string, sep string) []string {
	var out []string
	for _, v := range values {
		for item := range strings.SplitSeq(v, sep) {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
	}
	return out
}

// parseTrustedKey reads ID=BASE64[:KIND,KIND...]. The key itself is
// checked by the configuration's validation, with the other settings.
func parseTrustedKey(spec string) (config.TrustedKey, error) {
	id, rest, ok := strings.Cut(spec, "=")
	id = strings.TrimSpace(id)
	if !ok || id == "" || strings.TrimSpace(rest) == "" {
		return config.TrustedKey{}, fmt.Errorf("--trusted-key: want ID=BASE64[:KINDS], got %q", shorten(spec))
	}
	key, kinds, hasKinds := strings.Cut(rest, ":")
	k := config.TrustedKey{ID: id, PublicKey: strings.TrimSpace(key)}
	if hasKinds {
		k.Kinds = splitList([]string{kinds}, ",")
		if len(k.Kinds) == 0 {
			return config.TrustedKey{}, fmt.Errorf("--trusted-key %s: empty kinds list after ':' (leave it out for every kind)", id)
		}
	}
	return k, nil
}

// shorten keeps error messages short: a spec is mostly a key.
func shorten(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// copyTLSFiles copies the TLS files named in t into dir (private files)
// and returns the names of the copies. Copies left by an earlier
// configuration are replaced: they belong to the file being written.
func copyTLSFiles(t config.TLS, dir string) (config.TLS, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return t, err
	}
	copies := []struct {
		src  *string
		name string
	}{{&t.CAFile, caCopyName}, {&t.CertFile, certCopyName}, {&t.KeyFile, keyCopyName}}
	for _, c := range copies {
		if *c.src == "" {
			continue
		}
		data, err := readSmallFile(*c.src)
		if err != nil {
			return t, err
		}
		dst := filepath.Join(dir, c.name)
		if err := config.WritePrivateFile(dst, data, config.WriteOptions{Overwrite: true}); err != nil {
			return t, err
		}
		*c.src = dst
	}
	return t, nil
}

// maxTLSFile bounds the size of a TLS file copied (a PEM bundle of many
// CA certificates is well under it).
const maxTLSFile = 4 << 20

func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxTLSFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxTLSFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxTLSFile)
	}
	return data, nil
}

func configCheckCmd() *cobra.Command {
	var cfgPath string
	c := &cobra.Command{
		Use:   "check --config FILE",
		Short: "Check a configuration file as the agent would load it",
		Long:  "Loads and validates the file; prints every problem and exits 1 when there is one.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := config.Load(cfgPath); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", cfgPath)
			return nil
		},
	}
	c.Flags().StringVarP(&cfgPath, "config", "c", envDefault("MQAGENT_CONFIG", ""), "config file (env MQAGENT_CONFIG)")
	_ = c.MarkFlagRequired("config")
	return c
}

func configRollbackCmd() *cobra.Command {
	var out, installID string
	c := &cobra.Command{
		Use:   "rollback --out FILE --install-id ID",
		Short: "Remove a configuration file written by an installation that is rolled back",
		Long: "Removes FILE, and the TLS copies it references in its own directory tree, only when FILE was written\n" +
			"by `config init --install-id ID` with the same ID. Anything else is left alone. An installer's rollback\n" +
			"action runs it, so that a failed first installation leaves no configuration behind.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			removed, err := rollbackConfig(out, installID)
			if err != nil {
				return fmt.Errorf("config rollback: %w", err)
			}
			if removed {
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", out)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "%s was not written by installation %q: left alone\n", out, installID)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&out, "out", "o", "", "configuration file")
	c.Flags().StringVar(&installID, "install-id", "", "installation id given to config init")
	_ = c.MarkFlagRequired("out")
	_ = c.MarkFlagRequired("install-id")
	return c
}

// rollbackConfig removes the file at path when its header records
// installID, with the TLS copies it references under its directory (and
// then that directory and the copies' directory when they are empty).
func rollbackConfig(path, installID string) (bool, error) {
	if strings.TrimSpace(installID) == "" {
		return false, errors.New("--install-id is empty")
	}
	data, err := readSmallFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !hasInstallID(data, installID) {
		return false, nil
	}
	dir := filepath.Dir(path)
	var copies []string
	if cfg, err := config.Parse(data, path); err == nil {
		for _, f := range []string{cfg.Broker.TLS.CAFile, cfg.Broker.TLS.CertFile, cfg.Broker.TLS.KeyFile} {
			if f != "" && slices.Contains([]string{caCopyName, certCopyName, keyCopyName}, filepath.Base(f)) && within(dir, f) {
				copies = append(copies, f)
			}
		}
	}
	if err := os.Remove(path); err != nil {
		return false, err
	}
	for _, f := range copies {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return true, err
		}
		_ = os.Remove(filepath.Dir(f)) // only when empty
	}
	_ = os.Remove(dir) // only when empty
	return true, nil
}

// hasInstallID reports whether the leading comment lines of a
// configuration file record installID.
func hasInstallID(data []byte, installID string) bool {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if !strings.HasPrefix(line, "#") {
			return false
		}
		if line == installIDPrefix+installID {
			return true
		}
	}
	return false
}

// within reports whether path is inside dir.
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}
