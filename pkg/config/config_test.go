package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"go.yaml.in/yaml/v3"
)

// protocolExample is the example of docs/PROTOCOL.md ("Configuration keys
// that tests rely on"), with real keys.
const protocolExample = `
host_id: web-01
data_dir: /var/lib/mqagent
topic_prefix: mqagent/v1
broker:
  urls: ["tcp://127.0.0.1:1883"]       # tcp://, ssl:// or tls://, ws://, wss://
  username: ""
  password: ""
  tls: {ca_file: "", cert_file: "", key_file: "", insecure_skip_verify: false}
groups: [web]
facts: {env: prod}
metrics: {interval: 10s, qos: 0, retain: false}
inventory: {interval: 24h}
exec: {max_concurrent: 8, max_queue: 256, default_timeout: 10m, max_output_bytes: 1048576}
security:
  require_signed: true
  trusted_keys: [{id: ops, public_key: "$K1", kinds: ["*"]}]
  allowed_kinds: ["*"]
  max_payload_bytes: 262144
  default_ttl: 1h
  max_clock_skew: 5m
update: {public_key: "$K2"}
log: {level: info, file: ""}
`

// fullExample sets every key to a value other than its default.
const fullExample = `
host_id: db-02.eu_west
data_dir: /srv/mqagent
topic_prefix: acme/agents
broker:
  urls: ["ssl://broker.example.com:8883", "wss://broker.example.com:443/mqtt", "mqtts://[2001:db8::1]:8883"]
  username: db-02
  password: s3cret
  tls:
    ca_file: testdata/ca.pem
    cert_file: testdata/client.pem
    key_file: testdata/client.key
    server_name: broker.example.com
    insecure_skip_verify: true
  keepalive: 45s
  connect_timeout: 3s
  write_timeout: 4s
  reconnect_min: 2s
  reconnect_max: 2m
groups: [db, eu-west]
facts: {env: prod, "rack.id": "r12"}
metrics: {interval: 1m, qos: 1, retain: true, per_cpu: true}
inventory: {interval: 6h}
exec:
  max_concurrent: 2
  max_queue: 10
  default_timeout: 30s
  max_timeout: 2h
  max_output_bytes: 4096
  grace_period: 3s
security:
  require_signed: true
  trusted_keys:
    - {id: ops, public_key: "$K1"}
    - {id: ci.bot-1, public_key: "$K2", kinds: [ping, inventory, metrics]}
  allowed_kinds: [ping, exec, inventory, metrics, cancel, result.get]
  max_payload_bytes: 65536
  default_ttl: 15m
  max_clock_skew: 30s
update: {public_key: "$K3"}
log: {level: debug, file: /var/log/mqagent/agent.log, max_size_mb: 5, max_backups: 2}
`

func ptr[T any](v T) *T { return &v }

// minimal returns Default() as Parse fills it for baseYAML.
func minimal() *Config {
	c := Default()
	c.Broker.URLs = []string{"tcp://127.0.0.1:1883"}
	c.Security.TrustedKeys = []TrustedKey{{ID: "ops", PublicKey: key1, Kinds: []string{"*"}}}
	return c
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want func() *Config
	}{
		{"minimal", baseYAML, minimal},
		{"protocol example", protocolExample, func() *Config {
			c := minimal()
			c.HostID = "web-01"
			c.DataDir = "/var/lib/mqagent"
			c.Groups = []string{"web"}
			c.Facts = map[string]string{"env": "prod"}
			c.Security.RequireSigned = ptr(true)
			c.Update.PublicKey = key2
			return c
		}},
		{"full", fullExample, func() *Config {
			return &Config{
				HostID:      "db-02.eu_west",
				DataDir:     "/srv/mqagent",
				TopicPrefix: "acme/agents",
				Broker: Broker{
					URLs:     []string{"ssl://broker.example.com:8883", "wss://broker.example.com:443/mqtt", "mqtts://[2001:db8::1]:8883"},
					Username: "db-02",
					Password: "s3cret",
					TLS: TLS{
						CAFile: "testdata/ca.pem", CertFile: "testdata/client.pem", KeyFile: "testdata/client.key",
						ServerName: "broker.example.com", InsecureSkipVerify: true,
					},
					KeepAlive:      Duration(45 * time.Second),
					ConnectTimeout: Duration(3 * time.Second),
					WriteTimeout:   Duration(4 * time.Second),
					ReconnectMin:   Duration(2 * time.Second),
					ReconnectMax:   Duration(2 * time.Minute),
				},
				Groups:    []string{"db", "eu-west"},
				Facts:     map[string]string{"env": "prod", "rack.id": "r12"},
				Metrics:   Metrics{Interval: Duration(time.Minute), QoS: 1, Retain: true, PerCPU: true},
				Inventory: Inventory{Interval: Duration(6 * time.Hour)},
				Exec: Exec{
					MaxConcurrent: 2, MaxQueue: 10,
					DefaultTimeout: Duration(30 * time.Second), MaxTimeout: Duration(2 * time.Hour),
					MaxOutputBytes: 4096, GracePeriod: Duration(3 * time.Second),
				},
				Security: Security{
					RequireSigned: ptr(true),
					TrustedKeys: []TrustedKey{
						{ID: "ops", PublicKey: key1, Kinds: []string{"*"}},
						{ID: "ci.bot-1", PublicKey: key2, Kinds: []string{"ping", "inventory", "metrics"}},
					},
					AllowedKinds:    []string{"ping", "exec", "inventory", "metrics", "cancel", "result.get"},
					MaxPayloadBytes: 65536,
					DefaultTTL:      Duration(15 * time.Minute),
					MaxClockSkew:    Duration(30 * time.Second),
				},
				Update: Update{PublicKey: key3, HealthTimeout: Duration(DefaultHealthTimeout), MaxBytes: DefaultUpdateMaxBytes},
				Log:    Log{Level: "debug", File: "/var/log/mqagent/agent.log", MaxSizeMB: 5, MaxBackups: 2},
			}
		}},
		{"unsigned production", "broker: {urls: [tcp://10.0.0.5:1883]}\nsecurity: {require_signed: false}\n", func() *Config {
			c := Default()
			c.Broker.URLs = []string{"tcp://10.0.0.5:1883"}
			c.Security.RequireSigned = ptr(false)
			return c
		}},
		{"nulls keep defaults", baseYAML + "exec: {max_concurrent: ~, default_timeout: null}\nlog:\nmetrics: {}\n", minimal},
		{"comments and anchors", `
# the brokers
broker: &b
  urls: [tcp://127.0.0.1:1883]
security:
  trusted_keys: [{id: ops, public_key: "$K1"}]
exec: &e {max_concurrent: 3}
`, func() *Config {
			c := minimal()
			c.Exec.MaxConcurrent = 3
			return c
		}},
		{"merge keys", baseYAML + `
inventory: &inv {interval: 1h}
metrics:
  <<: *inv
  qos: 1
`, func() *Config {
			c := minimal()
			c.Inventory.Interval = Duration(time.Hour)
			c.Metrics.Interval = Duration(time.Hour)
			c.Metrics.QoS = 1
			return c
		}},
		{"merge key overridden by own key", baseYAML + `
inventory: &inv {interval: 1h}
metrics: {interval: 2m, <<: *inv}
`, func() *Config {
			c := minimal()
			c.Inventory.Interval = Duration(time.Hour)
			c.Metrics.Interval = Duration(2 * time.Minute)
			return c
		}},
		{"numbers as strings", baseYAML + "host_id: 123\nfacts: {rack: 7, on: true}\n", func() *Config {
			c := minimal()
			c.HostID = "123"
			c.Facts = map[string]string{"rack": "7", "on": "true"}
			return c
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(subst(tt.yaml)), "test.yaml")
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			want := tt.want()
			want.source = "test.yaml"
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parse =\n%+v\nwant\n%+v", got, want)
			}
			if got.Source() != "test.yaml" {
				t.Errorf("Source() = %q", got.Source())
			}
		})
	}
}

func TestDefault(t *testing.T) {
	c := Default()
	host, _ := os.Hostname()
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"host_id", c.HostID, protocol.DefaultHostID(host)},
		{"data_dir", c.DataDir, DefaultDataDir()},
		{"topic_prefix", c.TopicPrefix, protocol.DefaultPrefix},
		{"keepalive", c.Broker.KeepAlive.D(), 30 * time.Second},
		{"connect_timeout", c.Broker.ConnectTimeout.D(), 10 * time.Second},
		{"write_timeout", c.Broker.WriteTimeout.D(), 10 * time.Second},
		{"reconnect_min", c.Broker.ReconnectMin.D(), time.Second},
		{"reconnect_max", c.Broker.ReconnectMax.D(), time.Minute},
		{"metrics.interval", c.Metrics.Interval.D(), 10 * time.Second},
		{"metrics.qos", c.Metrics.QoS, 0},
		{"metrics.retain", c.Metrics.Retain, false},
		{"inventory.interval", c.Inventory.Interval.D(), 24 * time.Hour},
		{"exec.max_concurrent", c.Exec.MaxConcurrent, 8},
		{"exec.max_queue", c.Exec.MaxQueue, 256},
		{"exec.default_timeout", c.Exec.DefaultTimeout.D(), 10 * time.Minute},
		{"exec.max_timeout", c.Exec.MaxTimeout.D(), 24 * time.Hour},
		{"exec.max_output_bytes", c.Exec.MaxOutputBytes, 1048576},
		{"exec.grace_period", c.Exec.GracePeriod.D(), 10 * time.Second},
		{"security.require_signed", c.Security.RequireSigned == nil, true},
		{"security.allowed_kinds", c.Security.AllowedKinds, []string{"*"}},
		{"security.max_payload_bytes", c.Security.MaxPayloadBytes, 262144},
		{"security.default_ttl", c.Security.DefaultTTL.D(), time.Hour},
		{"security.max_clock_skew", c.Security.MaxClockSkew.D(), 5 * time.Minute},
		{"log.level", c.Log.Level, "info"},
		{"log.file", c.Log.File, ""},
		{"log.max_size_mb", c.Log.MaxSizeMB, 20},
		{"log.max_backups", c.Log.MaxBackups, 5},
		{"dev", c.Dev, false},
		{"require signed", c.RequireSigned(), true},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
	if !protocol.ValidHostID(c.HostID) {
		t.Errorf("default host id %q is not valid", c.HostID)
	}
	if !filepath.IsAbs(c.DataDir) {
		t.Errorf("default data dir %q is not absolute", c.DataDir)
	}
	// Only the two required settings are missing.
	var paths []string
	for _, fe := range fieldErrors(t, c.Validate()) {
		paths = append(paths, fe.Path)
	}
	if strings.Join(paths, " ") != "broker.urls security.trusted_keys" {
		t.Errorf("Default().Validate() paths = %v", paths)
	}
	// Each call is independent.
	Default().Security.AllowedKinds[0] = "ping"
	if Default().Security.AllowedKinds[0] != "*" {
		t.Error("Default shares state between calls")
	}
}

func TestDefaultDataDir(t *testing.T) {
	want := map[string]string{
		"linux":   "/var/lib/mqagent",
		"darwin":  "/Library/Application Support/mqagent",
		"freebsd": "/var/lib/mqagent",
	}
	if w, ok := want[runtime.GOOS]; ok && DefaultDataDir() != w {
		t.Errorf("DefaultDataDir() = %q, want %q", DefaultDataDir(), w)
	}
}

func TestRequireSigned(t *testing.T) {
	tests := []struct {
		set  *bool
		dev  bool
		want bool
	}{
		{nil, false, true},
		{nil, true, false},
		{ptr(true), true, true},
		{ptr(false), false, false},
		{ptr(true), false, true},
		{ptr(false), true, false},
	}
	for _, tt := range tests {
		c := Default()
		c.Security.RequireSigned, c.Dev = tt.set, tt.dev
		if got := c.RequireSigned(); got != tt.want {
			t.Errorf("require_signed %v dev %v: RequireSigned() = %v, want %v", tt.set, tt.dev, got, tt.want)
		}
	}
}

func TestAllowsKind(t *testing.T) {
	tests := []struct {
		kinds []string
		kind  string
		want  bool
	}{
		{nil, "exec", true},
		{[]string{"*"}, "agent.update", true},
		{[]string{"ping", "inventory"}, "ping", true},
		{[]string{"ping", "inventory"}, "exec", false},
		{[]string{}, "ping", false},
	}
	for _, tt := range tests {
		if got := (TrustedKey{Kinds: tt.kinds}).AllowsKind(tt.kind); got != tt.want {
			t.Errorf("key kinds %v AllowsKind(%q) = %v", tt.kinds, tt.kind, got)
		}
		if got := (Security{AllowedKinds: tt.kinds}).AllowsKind(tt.kind); got != tt.want {
			t.Errorf("allowed_kinds %v AllowsKind(%q) = %v", tt.kinds, tt.kind, got)
		}
	}
}

func TestServiceLogFile(t *testing.T) {
	c := Default()
	c.DataDir = filepath.FromSlash("/srv/mq")
	if got, want := c.ServiceLogFile(), filepath.Join(c.DataDir, "mqagent.log"); got != want {
		t.Errorf("ServiceLogFile() = %q, want %q", got, want)
	}
	c.Log.File = "/var/log/x.log"
	if got := c.ServiceLogFile(); got != "/var/log/x.log" {
		t.Errorf("ServiceLogFile() = %q", got)
	}
}

func TestDurationRoundTrip(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		out  string
	}{
		{"10s", 10 * time.Second, "10s"},
		{"5m", 5 * time.Minute, "5m"},
		{"1h", time.Hour, "1h"},
		{"24h", 24 * time.Hour, "24h"},
		{"1h30m", 90 * time.Minute, "1h30m"},
		{"90m", 90 * time.Minute, "1h30m"},
		{"1h0m5s", time.Hour + 5*time.Second, "1h0m5s"},
		{"1.5s", 1500 * time.Millisecond, "1.5s"},
		{"250ms", 250 * time.Millisecond, "250ms"},
		{"0s", 0, "0s"},
		{"0", 0, "0s"},
		{"-1m", -time.Minute, "-1m"},
		{" 3s ", 3 * time.Second, "3s"},
	}
	for _, tt := range tests {
		var v struct {
			D Duration `yaml:"d"`
		}
		if err := yaml.Unmarshal([]byte("d: "+tt.in), &v); err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if v.D.D() != tt.want {
			t.Errorf("%q decoded to %v, want %v", tt.in, v.D.D(), tt.want)
		}
		out, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != "d: "+tt.out+"\n" {
			t.Errorf("%q encoded as %q, want %q", tt.in, out, "d: "+tt.out+"\n")
		}
		var back struct {
			D Duration `yaml:"d"`
		}
		if err := yaml.Unmarshal(out, &back); err != nil || back.D != v.D {
			t.Errorf("%q: round trip gave %v, %v", tt.in, back.D, err)
		}
	}
}

func TestDurationInvalid(t *testing.T) {
	for _, in := range []string{"10", "ten seconds", "5 m", "1d", `""`, "[1s]", "{a: 1}", "true"} {
		var v struct {
			D Duration `yaml:"d"`
		}
		err := yaml.Unmarshal([]byte("d: "+in), &v)
		if err == nil {
			t.Errorf("%s: want an error", in)
			continue
		}
		if !strings.Contains(err.Error(), "duration") {
			t.Errorf("%s: error %q does not say duration", in, err)
		}
		if in[0] != '[' && in[0] != '{' && !strings.Contains(err.Error(), `"`+strings.Trim(in, `"`)+`"`) {
			t.Errorf("%s: error %q does not name the value", in, err)
		}
	}
}

func TestRedacted(t *testing.T) {
	orig, err := Parse([]byte(subst(fullExample)), "full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	before, err := orig.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	r := orig.Redacted()
	if r.Broker.Password != "***" {
		t.Errorf("redacted password = %q", r.Broker.Password)
	}
	if orig.Broker.Password != "s3cret" {
		t.Errorf("original password changed to %q", orig.Broker.Password)
	}
	out, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "s3cret") {
		t.Errorf("redacted YAML shows the password:\n%s", out)
	}
	// A deep copy: changing the copy leaves the original alone.
	r.Broker.URLs[0] = "tcp://x:1"
	r.Groups[0] = "x"
	r.Facts["env"] = "x"
	*r.Security.RequireSigned = false
	r.Security.TrustedKeys[1].Kinds[0] = "x"
	r.Security.TrustedKeys[0].ID = "x"
	r.Security.AllowedKinds[0] = "x"
	after, err := orig.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Errorf("changing the redacted copy changed the original:\n%s\nvs\n%s", before, after)
	}
	if r.Source() != "full.yaml" || !reflect.DeepEqual(orig.Redacted().Broker.TLS, orig.Broker.TLS) {
		t.Error("redacted copy lost fields")
	}
	// No password: nothing to hide.
	c := minimal()
	if c.Redacted().Broker.Password != "" {
		t.Error("empty password redacted to a value")
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	for _, src := range []string{baseYAML, protocolExample, fullExample} {
		c, err := Parse([]byte(subst(src)), "a.yaml")
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(out, "a.yaml")
		if err != nil {
			t.Fatalf("Parse(Marshal()): %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, c) {
			t.Errorf("round trip changed the config:\n%+v\n%+v\n%s", c, back, out)
		}
		out2, err := back.Marshal()
		if err != nil || string(out2) != string(out) {
			t.Errorf("second Marshal differs: %v\n%s\n%s", err, out, out2)
		}
	}
}

func TestMarshalProgrammatic(t *testing.T) {
	// A config built in code (as `mqagent dev` does) with nil lists.
	c := Default()
	c.Dev = true
	c.HostID = "dev-host"
	c.DataDir = filepath.Join(t.TempDir(), "data")
	c.Broker.URLs = []string{"tcp://127.0.0.1:18830"}
	c.Security.AllowedKinds = nil
	c.Security.TrustedKeys = []TrustedKey{{ID: "dev", PublicKey: key1}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "dev: true") {
		t.Errorf("Marshal wrote Dev:\n%s", out)
	}
	back, err := Parse(out, "dev.yaml")
	if err != nil {
		t.Fatalf("Parse(Marshal()): %v\n%s", err, out)
	}
	if back.Dev || !back.RequireSigned() {
		t.Errorf("Dev was read back from the file")
	}
	if !reflect.DeepEqual(back.Security.TrustedKeys[0].Kinds, []string{"*"}) || !reflect.DeepEqual(back.Security.AllowedKinds, []string{"*"}) {
		t.Errorf("nil kinds did not come back as [*]: %+v", back.Security)
	}
	if c.Security.AllowedKinds != nil || c.Security.TrustedKeys[0].Kinds != nil {
		t.Error("Marshal changed its receiver")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mqagent.yaml")
	if err := os.WriteFile(path, []byte(subst(protocolExample)), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.HostID != "web-01" || c.Source() != path {
		t.Errorf("Load: host %q source %q", c.HostID, c.Source())
	}

	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrInvalid) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(subst(baseYAML)+"exec: {max_queue: 0}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "config "+bad+": exec.max_queue: ") {
		t.Errorf("invalid file: %v", err)
	}

	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte(subst(baseYAML)+"#"+strings.Repeat("x", MaxFileSize)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("huge file: %v", err)
	}
}
