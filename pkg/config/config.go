// Package config holds the agent's YAML configuration: its types, their
// defaults, strict decoding with errors that name the key path (and the
// line for syntax and unknown-key errors), and validation that reports every
// problem at once.
//
// docs/PROTOCOL.md ("Configuration keys that tests rely on") lists the keys
// that are part of the public contract.
package config

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"go.yaml.in/yaml/v3"
)

// Config is the agent's configuration.
type Config struct {
	// HostID is the host's id and MQTT client id. Default: derived from the
	// hostname by protocol.DefaultHostID.
	HostID string `yaml:"host_id"`
	// DataDir holds the agent's state. Default: DefaultDataDir().
	DataDir string `yaml:"data_dir"`
	// TopicPrefix is the prefix of every topic. Default:
	// protocol.DefaultPrefix.
	TopicPrefix string            `yaml:"topic_prefix"`
	Broker      Broker            `yaml:"broker"`
	Groups      []string          `yaml:"groups"`
	Facts       map[string]string `yaml:"facts"`
	Metrics     Metrics           `yaml:"metrics"`
	Inventory   Inventory         `yaml:"inventory"`
	Exec        Exec              `yaml:"exec"`
	Security    Security          `yaml:"security"`
	Update      Update            `yaml:"update"`
	Log         Log               `yaml:"log"`
	// Dev is development mode (set by `mqagent dev`, never read from the
	// file): unsigned commands allowed, loopback brokers only.
	Dev bool `yaml:"-"`

	// source names the file the config came from, in error messages.
	source string
}

// Broker is how the agent reaches the MQTT broker.
type Broker struct {
	// URLs are tried in order; schemes tcp, ssl, tls, ws, wss, mqtt, mqtts.
	URLs     []string `yaml:"urls"`
	Username string   `yaml:"username"`
	// Password is never printed: log Config.Redacted() instead.
	Password       string   `yaml:"password"`
	TLS            TLS      `yaml:"tls"`
	KeepAlive      Duration `yaml:"keepalive"`
	ConnectTimeout Duration `yaml:"connect_timeout"`
	WriteTimeout   Duration `yaml:"write_timeout"`
	ReconnectMin   Duration `yaml:"reconnect_min"`
	ReconnectMax   Duration `yaml:"reconnect_max"`
}

// TLS configures TLS to the broker. CertFile and KeyFile go together.
type TLS struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Metrics configures the periodic metrics samples.
type Metrics struct {
	Interval Duration `yaml:"interval"`
	QoS      int      `yaml:"qos"`
	Retain   bool     `yaml:"retain"`
	PerCPU   bool     `yaml:"per_cpu"`
}

// Inventory configures the periodic inventory.
type Inventory struct {
	Interval Duration `yaml:"interval"`
	// FactsDir holds custom facts: files of key=value lines or a JSON
	// object, and executables printing either. Default: facts.d in the
	// data directory; "-" for none.
	FactsDir string `yaml:"facts_dir"`
	// Software adds the installed packages (dpkg/rpm, the Windows
	// uninstall keys) to the inventory, capped in size.
	Software bool `yaml:"software"`
}

// Exec holds the limits of command execution.
type Exec struct {
	MaxConcurrent  int      `yaml:"max_concurrent"`
	MaxQueue       int      `yaml:"max_queue"`
	DefaultTimeout Duration `yaml:"default_timeout"`
	// MaxTimeout: a command's timeout_ms above it is rejected.
	MaxTimeout     Duration `yaml:"max_timeout"`
	MaxOutputBytes int      `yaml:"max_output_bytes"`
	// GracePeriod is how long running commands get on SIGTERM.
	GracePeriod Duration `yaml:"grace_period"`
}

// Security is the command acceptance policy.
type Security struct {
	// RequireSigned: nil means the default, true except in development
	// mode. Read the resolved value with Config.RequireSigned.
	RequireSigned *bool        `yaml:"require_signed"`
	TrustedKeys   []TrustedKey `yaml:"trusted_keys"`
	// AllowedKinds lists the kinds the host accepts; "*" is every kind.
	// Nil means every kind.
	AllowedKinds    []string `yaml:"allowed_kinds"`
	MaxPayloadBytes int      `yaml:"max_payload_bytes"`
	DefaultTTL      Duration `yaml:"default_ttl"`
	MaxClockSkew    Duration `yaml:"max_clock_skew"`
}

// AllowsKind reports whether kind is in AllowedKinds (nil or "*" allows
// every kind).
func (s Security) AllowsKind(kind string) bool { return allows(s.AllowedKinds, kind) }

// TrustedKey is an operator key whose signatures the agent accepts.
type TrustedKey struct {
	// ID is the key's name, the `kid` of signed commands.
	ID string `yaml:"id"`
	// PublicKey is the standard base64 of a 32-byte ed25519 public key.
	PublicKey string `yaml:"public_key"`
	// Kinds limits the key to these kinds; nil or "*" is every kind.
	Kinds []string `yaml:"kinds"`
}

// AllowsKind reports whether commands of kind may be signed by k.
func (k TrustedKey) AllowsKind(kind string) bool { return allows(k.Kinds, kind) }

func allows(list []string, kind string) bool {
	return list == nil || slices.Contains(list, "*") || slices.Contains(list, kind)
}

// Update configures self-update.
type Update struct {
	// PublicKey verifies update binaries (standard base64 ed25519). It must
	// differ from every trusted key. Empty disables signed updates.
	PublicKey string `yaml:"public_key"`
	// HealthTimeout is how long a new version has to come online before
	// the previous binary is restored (default 2m).
	HealthTimeout Duration `yaml:"health_timeout"`
	// MaxBytes is the largest update binary accepted (default 128 MiB).
	MaxBytes int64 `yaml:"max_bytes"`
}

// Log configures the agent's own log.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// File: "" logs to stderr in the foreground; see Config.ServiceLogFile.
	File       string `yaml:"file"`
	MaxSizeMB  int    `yaml:"max_size_mb"`
	MaxBackups int    `yaml:"max_backups"`
}

// Default values.
const (
	DefaultKeepAlive       = 30 * time.Second
	DefaultConnectTimeout  = 10 * time.Second
	DefaultWriteTimeout    = 10 * time.Second
	DefaultReconnectMin    = time.Second
	DefaultReconnectMax    = 60 * time.Second
	DefaultMetricsInterval = 10 * time.Second
	DefaultInventoryEvery  = 24 * time.Hour
	DefaultMaxConcurrent   = 8
	DefaultMaxQueue        = 256
	DefaultExecTimeout     = 10 * time.Minute
	DefaultMaxExecTimeout  = 24 * time.Hour
	DefaultMaxOutputBytes  = 1 << 20
	DefaultGracePeriod     = 10 * time.Second
	DefaultMaxPayloadBytes = 262144
	DefaultTTL             = time.Hour
	DefaultMaxClockSkew    = 5 * time.Minute
	DefaultLogLevel        = "info"
	DefaultLogMaxSizeMB    = 20
	DefaultLogMaxBackups   = 5
	DefaultHealthTimeout   = 2 * time.Minute
	DefaultUpdateMaxBytes  = 128 << 20
	// LogFileName is the log file's name in the data directory when the
	// agent runs as a service.
	LogFileName = "mqagent.log"
)

// DefaultDataDir is the default data_dir of the running OS: Linux (and
// other Unix) /var/lib/mqagent, Windows %ProgramData%\mqagent, macOS
// /Library/Application Support/mqagent.
func DefaultDataDir() string {
	switch runtime.GOOS {
	case "windows":
		pd := os.Getenv("ProgramData")
		if pd == "" || !filepath.IsAbs(pd) {
			pd = `C:\ProgramData`
		}
		return filepath.Join(pd, "mqagent")
	case "darwin":
		return "/Library/Application Support/mqagent"
	}
	return "/var/lib/mqagent"
}

// Default returns a configuration with every default filled in; HostID is
// derived from the hostname. It has no broker URL and no trusted key, so it
// does not pass Validate as it is.
func Default() *Config {
	hostname, _ := os.Hostname() // on error DefaultHostID("") is still valid
	return &Config{
		HostID:      protocol.DefaultHostID(hostname),
		DataDir:     DefaultDataDir(),
		TopicPrefix: protocol.DefaultPrefix,
		Broker: Broker{
			KeepAlive:      Duration(DefaultKeepAlive),
			ConnectTimeout: Duration(DefaultConnectTimeout),
			WriteTimeout:   Duration(DefaultWriteTimeout),
			ReconnectMin:   Duration(DefaultReconnectMin),
			ReconnectMax:   Duration(DefaultReconnectMax),
		},
		Metrics:   Metrics{Interval: Duration(DefaultMetricsInterval)},
		Inventory: Inventory{Interval: Duration(DefaultInventoryEvery)},
		Exec: Exec{
			MaxConcurrent:  DefaultMaxConcurrent,
			MaxQueue:       DefaultMaxQueue,
			DefaultTimeout: Duration(DefaultExecTimeout),
			MaxTimeout:     Duration(DefaultMaxExecTimeout),
			MaxOutputBytes: DefaultMaxOutputBytes,
			GracePeriod:    Duration(DefaultGracePeriod),
		},
		Security: Security{
			AllowedKinds:    []string{"*"},
			MaxPayloadBytes: DefaultMaxPayloadBytes,
			DefaultTTL:      Duration(DefaultTTL),
			MaxClockSkew:    Duration(DefaultMaxClockSkew),
		},
		Update: Update{HealthTimeout: Duration(DefaultHealthTimeout), MaxBytes: DefaultUpdateMaxBytes},
		Log: Log{
			Level:      DefaultLogLevel,
			MaxSizeMB:  DefaultLogMaxSizeMB,
			MaxBackups: DefaultLogMaxBackups,
		},
	}
}

// fillDefaults sets the defaults that depend on what was decoded: kinds
// lists left out (nil) get ["*"]; an explicitly empty one stays empty, and
// Validate rejects it. Empty groups, facts and trusted keys become nil, the
// same as leaving them out, so that Marshal and Parse round-trip.
func (c *Config) fillDefaults() {
	if len(c.Groups) == 0 {
		c.Groups = nil
	}
	if len(c.Facts) == 0 {
		c.Facts = nil
	}
	if len(c.Security.TrustedKeys) == 0 {
		c.Security.TrustedKeys = nil
	}
	if c.Security.AllowedKinds == nil {
		c.Security.AllowedKinds = []string{"*"}
	}
	for i := range c.Security.TrustedKeys {
		if c.Security.TrustedKeys[i].Kinds == nil {
			c.Security.TrustedKeys[i].Kinds = []string{"*"}
		}
	}
}

// RequireSigned is the resolved security.require_signed: the configured
// value, else true outside development mode.
func (c *Config) RequireSigned() bool {
	if c.Security.RequireSigned != nil {
		return *c.Security.RequireSigned
	}
	return !c.Dev
}

// ServiceLogFile is the log file when running as a service: log.file, or
// {data_dir}/mqagent.log when that is empty.
func (c *Config) ServiceLogFile() string {
	if c.Log.File != "" {
		return c.Log.File
	}
	return filepath.Join(c.DataDir, LogFileName)
}

// Source is the file name the config was loaded from ("" if none).
func (c *Config) Source() string { return c.source }

// Redacted returns a deep copy of c with the broker password replaced by
// "***" when it is set, for logging. c is not changed.
func (c *Config) Redacted() *Config {
	r := c.clone()
	if r.Broker.Password != "" {
		r.Broker.Password = "***"
	}
	return r
}

// clone returns a deep copy of c.
func (c *Config) clone() *Config {
	r := *c
	r.Broker.URLs = slices.Clone(c.Broker.URLs)
	r.Groups = slices.Clone(c.Groups)
	if c.Facts != nil {
		r.Facts = make(map[string]string, len(c.Facts))
		for k, v := range c.Facts {
			r.Facts[k] = v
		}
	}
	if c.Security.RequireSigned != nil {
		v := *c.Security.RequireSigned
		r.Security.RequireSigned = &v
	}
	r.Security.AllowedKinds = slices.Clone(c.Security.AllowedKinds)
	if c.Security.TrustedKeys != nil {
		r.Security.TrustedKeys = make([]TrustedKey, len(c.Security.TrustedKeys))
		for i, k := range c.Security.TrustedKeys {
			k.Kinds = slices.Clone(k.Kinds)
			r.Security.TrustedKeys[i] = k
		}
	}
	return &r
}

// Marshal encodes c as YAML that Parse reads back to the same
// configuration (Dev is not included: it is never read from a file).
func (c *Config) Marshal() ([]byte, error) {
	n := c.clone()
	n.fillDefaults() // a nil kinds list would encode as [], which means none
	return yaml.Marshal(n)
}
