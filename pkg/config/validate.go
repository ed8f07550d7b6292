package config

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mqagent/mqagent/pkg/logging"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// ErrInvalid matches (errors.Is) every *FieldError: the configuration is
// invalid, as opposed to unreadable.
var ErrInvalid = errors.New("invalid configuration")

// FieldError is one problem with a configuration. Its text is
//
//	config SOURCE: [line N: ]PATH: problem
//
// where PATH is the key path as written in YAML (broker.urls[1],
// security.trusted_keys[0].public_key). Line is set for syntax errors and
// decoding errors (unknown keys, wrong types), not for validation errors.
type FieldError struct {
	Source string // file name; "" when the config did not come from a file
	Line   int    // 1-based line in the file; 0 when not known
	Path   string // key path; "" for the file as a whole
	Err    error
}

// Error implements error.
func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString("config")
	if e.Source != "" {
		b.WriteString(" ")
		b.WriteString(e.Source)
	}
	b.WriteString(": ")
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying error.
func (e *FieldError) Unwrap() error { return e.Err }

// Is reports whether target is ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// Bounds of the validated values.
const (
	MinKeepAlive       = 5 * time.Second
	MaxKeepAlive       = 65535 * time.Second // MQTT's keep alive is 16-bit seconds
	MinMetricsInterval = time.Second
	MinInventoryEvery  = time.Second
	MaxConcurrentLimit = 1024
	MaxQueueLimit      = 100000
	MinOutputBytes     = 1 << 10
	MaxOutputBytes     = 64 << 20
	MinPayloadBytes    = 1 << 10
	MaxPayloadBytes    = 268435455 // MQTT's largest packet
	MaxTopicPrefixLen  = 1024
)

// schemes lists the broker URL schemes accepted.
var schemes = []string{"tcp", "ssl", "tls", "ws", "wss", "mqtt", "mqtts"}

// knownKinds are the command kinds of the contract, plus "*".
var knownKinds = []string{
	"*",
	protocol.KindPing, protocol.KindExec, protocol.KindShell, protocol.KindScript,
	protocol.KindInventory, protocol.KindMetrics, protocol.KindCancel, protocol.KindResultGet,
	protocol.KindAgentRestart, protocol.KindAgentStop, protocol.KindAgentUpdate, protocol.KindAgentUninstall,
}

var keyIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ParseKey decodes the standard base64 (with padding) of a 32-byte ed25519
// public key. Surrounding white space is ignored.
func ParseKey(b64 string) (ed25519.PublicKey, error) {
	s := strings.TrimSpace(b64)
	if s == "" {
		return nil, errors.New("public key is empty")
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("public key is not standard base64: %w", err)
	}
	if len(b) != ed25519.PublicKeySize {
		hint := ""
		if len(b) == ed25519.PrivateKeySize || len(b) == ed25519.SeedSize {
			hint = "; is this a private key?"
		}
		return nil, fmt.Errorf("public key is %d bytes, want %d (ed25519)%s", len(b), ed25519.PublicKeySize, hint)
	}
	return ed25519.PublicKey(b), nil
}

// validator collects every problem of a configuration.
type validator struct {
	source string
	errs   []error
}

func (v *validator) add(path, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Source: v.source, Path: path, Err: fmt.Errorf(format, args...)})
}

func (v *validator) err(path string, err error) {
	v.errs = append(v.errs, &FieldError{Source: v.source, Path: path, Err: err})
}

func (v *validator) intRange(path string, n, lo, hi int) {
	if n < lo || n > hi {
		v.add(path, "must be between %d and %d, got %d", lo, hi, n)
	}
}

func (v *validator) minDur(path string, d Duration, lo time.Duration) {
	if d.D() < lo {
		v.add(path, "must be at least %s, got %s", Duration(lo), d)
	}
}

// Validate checks c and returns every problem found, joined (errors.Join),
// each a *FieldError naming the key path; nil if c is valid. Files named
// by broker.tls must exist and be readable.
func (c *Config) Validate() error {
	v := &validator{source: c.source}

	if !protocol.ValidHostID(c.HostID) {
		v.add("host_id", "invalid host id %s (want 1 to 63 of a-z 0-9 . _ -, starting with a letter or digit)", quote(c.HostID))
	}
	switch {
	case c.DataDir == "":
		v.add("data_dir", "is required")
	case !filepath.IsAbs(c.DataDir):
		v.add("data_dir", "must be an absolute path, got %s", quote(c.DataDir))
	}
	if err := checkPrefix(c.TopicPrefix); err != nil {
		v.err("topic_prefix", err)
	}
	c.validateBroker(v)

	seenGroup := make(map[string]bool, len(c.Groups))
	for i, g := range c.Groups {
		path := fmt.Sprintf("groups[%d]", i)
		switch {
		case !protocol.ValidHostID(g):
			v.add(path, "invalid group name %s (want 1 to 63 of a-z 0-9 . _ -, starting with a letter or digit)", quote(g))
		case seenGroup[g]:
			v.add(path, "duplicate group %s", quote(g))
		}
		seenGroup[g] = true
	}
	factKeys := make([]string, 0, len(c.Facts))
	for k := range c.Facts {
		factKeys = append(factKeys, k)
	}
	slices.Sort(factKeys)
	for _, k := range factKeys {
		if strings.TrimSpace(k) == "" {
			v.add("facts", "empty fact name %s", quote(k))
		}
	}

	v.minDur("metrics.interval", c.Metrics.Interval, MinMetricsInterval)
	v.intRange("metrics.qos", c.Metrics.QoS, 0, 1)
	v.minDur("inventory.interval", c.Inventory.Interval, MinInventoryEvery)

	e := c.Exec
	v.intRange("exec.max_concurrent", e.MaxConcurrent, 1, MaxConcurrentLimit)
	v.intRange("exec.max_queue", e.MaxQueue, 1, MaxQueueLimit)
	v.minDur("exec.default_timeout", e.DefaultTimeout, time.Millisecond)
	v.minDur("exec.max_timeout", e.MaxTimeout, time.Millisecond)
	if e.DefaultTimeout > e.MaxTimeout && e.MaxTimeout.D() >= time.Millisecond {
		v.add("exec.default_timeout", "%s is above exec.max_timeout (%s)", e.DefaultTimeout, e.MaxTimeout)
	}
	v.intRange("exec.max_output_bytes", e.MaxOutputBytes, MinOutputBytes, MaxOutputBytes)
	v.minDur("exec.grace_period", e.GracePeriod, 0)

	c.validateSecurity(v)

	if err := logLevel(c.Log.Level); err != nil {
		v.err("log.level", err)
	}
	v.intRange("log.max_size_mb", c.Log.MaxSizeMB, 1, 1<<20)
	v.intRange("log.max_backups", c.Log.MaxBackups, 1, 10000)

	return errors.Join(v.errs...)
}

func logLevel(s string) error {
	if s == "" {
		return errors.New("is required (debug, info, warn or error)")
	}
	_, err := logging.ParseLevel(s)
	return err
}

// isTLSURL reports whether a broker URL's scheme uses TLS.
func isTLSURL(raw string) bool {
	scheme, _, _ := strings.Cut(raw, "://")
	switch strings.ToLower(scheme) {
	case "ssl", "tls", "mqtts", "wss":
		return true
	}
	return false
}

func (c *Config) validateBroker(v *validator) {
	b := c.Broker
	if len(b.URLs) == 0 {
		v.add("broker.urls", "at least one broker URL is required")
	}
	for i, raw := range b.URLs {
		if err := checkURL(raw, c.Dev); err != nil {
			v.err(fmt.Sprintf("broker.urls[%d]", i), err)
		}
	}
	if b.Password != "" && b.Username == "" {
		v.add("broker.password", "is set but broker.username is empty (MQTT sends a password only with a username)")
	}
	t := b.TLS
	if t != (TLS{}) && len(b.URLs) > 0 && !slices.ContainsFunc(b.URLs, isTLSURL) {
		v.add("broker.tls", "is set but no broker URL uses TLS (ssl://, tls://, mqtts://, wss://): the agent would connect in plain text")
	}
	if t.CertFile != "" && t.KeyFile == "" {
		v.add("broker.tls.key_file", "is required with broker.tls.cert_file")
	}
	if t.KeyFile != "" && t.CertFile == "" {
		v.add("broker.tls.cert_file", "is required with broker.tls.key_file")
	}
	for _, f := range []struct{ path, file string }{
		{"broker.tls.ca_file", t.CAFile},
		{"broker.tls.cert_file", t.CertFile},
		{"broker.tls.key_file", t.KeyFile},
	} {
		if f.file == "" {
			continue
		}
		if err := checkReadable(f.file); err != nil {
			v.err(f.path, err)
		}
	}
	v.minDur("broker.keepalive", b.KeepAlive, MinKeepAlive)
	if b.KeepAlive.D() > MaxKeepAlive {
		v.add("broker.keepalive", "must be at most %s, got %s", Duration(MaxKeepAlive), b.KeepAlive)
	}
	v.minDur("broker.connect_timeout", b.ConnectTimeout, time.Millisecond)
	v.minDur("broker.write_timeout", b.WriteTimeout, time.Millisecond)
	v.minDur("broker.reconnect_min", b.ReconnectMin, time.Millisecond)
	if b.ReconnectMax < b.ReconnectMin {
		v.add("broker.reconnect_max", "%s is below broker.reconnect_min (%s)", b.ReconnectMax, b.ReconnectMin)
	}
}

func (c *Config) validateSecurity(v *validator) {
	s := c.Security
	if c.RequireSigned() && len(s.TrustedKeys) == 0 {
		v.add("security.trusted_keys", "at least one key is required when require_signed is true (use `mqagent keygen`)")
	}
	ids := make(map[string]int)
	keys := make([]ed25519.PublicKey, len(s.TrustedKeys))
	for i, k := range s.TrustedKeys {
		path := fmt.Sprintf("security.trusted_keys[%d]", i)
		switch first, dup := ids[k.ID]; {
		case k.ID == "":
			v.add(path+".id", "is required")
		case !keyIDPattern.MatchString(k.ID):
			v.add(path+".id", "invalid key id %s (want 1 to 64 of A-Z a-z 0-9 . _ -)", quote(k.ID))
		case dup:
			v.add(path+".id", "duplicate key id %s (also security.trusted_keys[%d])", quote(k.ID), first)
		default:
			ids[k.ID] = i
		}
		pk, err := ParseKey(k.PublicKey)
		if err != nil {
			v.err(path+".public_key", err)
		}
		keys[i] = pk
		checkKinds(v, path+".kinds", k.Kinds)
	}
	checkKinds(v, "security.allowed_kinds", s.AllowedKinds)
	v.intRange("security.max_payload_bytes", s.MaxPayloadBytes, MinPayloadBytes, MaxPayloadBytes)
	v.minDur("security.default_ttl", s.DefaultTTL, time.Millisecond)
	v.minDur("security.max_clock_skew", s.MaxClockSkew, 0)

	v.minDur("update.health_timeout", c.Update.HealthTimeout, time.Second)
	if c.Update.MaxBytes < 1<<10 {
		v.add("update.max_bytes", "%d is too small (at least 1024)", c.Update.MaxBytes)
	}
	if c.Update.PublicKey != "" {
		upk, err := ParseKey(c.Update.PublicKey)
		if err != nil {
			v.err("update.public_key", err)
		} else {
			for i, pk := range keys {
				if pk != nil && bytes.Equal(pk, upk) {
					v.add("update.public_key", "is the same key as security.trusted_keys[%d].public_key (the update key must be a separate key)", i)
				}
			}
		}
	}
}

// checkKinds checks a kinds list: nil is "every kind", an explicit empty
// list is an error, and each entry must be a known kind or "*".
func checkKinds(v *validator, path string, kinds []string) {
	if kinds != nil && len(kinds) == 0 {
		v.add(path, `must not be empty (leave it out or use ["*"] for every kind)`)
	}
	for i, k := range kinds {
		if !slices.Contains(knownKinds, k) {
			v.add(fmt.Sprintf("%s[%d]", path, i), "unknown kind %s (want * or one of %s)", quote(k), strings.Join(knownKinds[1:], ", "))
		}
	}
}

// checkPrefix checks a topic prefix.
func checkPrefix(p string) error {
	switch {
	case p == "":
		return errors.New("must not be empty")
	case len(p) > MaxTopicPrefixLen:
		return fmt.Errorf("is longer than %d bytes", MaxTopicPrefixLen)
	case !utf8.ValidString(p) || strings.ContainsRune(p, 0):
		return errors.New("must be valid UTF-8 without NUL characters")
	case strings.ContainsAny(p, "+#"):
		return fmt.Errorf("%s must not contain MQTT wildcards (+ #)", quote(p))
	case strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/"):
		return fmt.Errorf("%s must not start or end with '/'", quote(p))
	case strings.Contains(p, "//"):
		return fmt.Errorf("%s must not contain an empty level (//)", quote(p))
	case strings.HasPrefix(p, "$"):
		return fmt.Errorf("%s must not start with '$' (reserved for broker topics)", quote(p))
	}
	return nil
}

// checkURL checks a broker URL. Its text is never quoted whole: it could
// carry credentials.
func checkURL(raw string, dev bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("not a valid URL (want scheme://host:port): %w", err)
	}
	if !slices.Contains(schemes, u.Scheme) {
		return fmt.Errorf("unsupported scheme %s (want %s)", quote(u.Scheme), strings.Join(schemes, ", "))
	}
	if u.User != nil {
		return errors.New("credentials in the URL are not allowed (use broker.username and broker.password)")
	}
	host := u.Hostname()
	if u.Opaque != "" || host == "" {
		return errors.New("missing host (want scheme://host:port)")
	}
	port := u.Port()
	if port == "" {
		return fmt.Errorf("missing port (want %s://%s:port)", u.Scheme, u.Host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("invalid port %s (want 1 to 65535)", quote(port))
	}
	if dev && !isLoopback(host) {
		return fmt.Errorf("host %s is not a loopback address (development mode connects only to a local broker)", quote(host))
	}
	return nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkReadable checks that path is a regular file (not a directory, FIFO
// or device, which could block or never end) and can be read.
func checkReadable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.Read(b[:]); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}
