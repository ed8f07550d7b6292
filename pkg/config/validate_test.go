package config

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// baseYAML is a minimal valid production config.
const baseYAML = `
broker:
  urls: ["tcp://127.0.0.1:1883"]
security:
  trusted_keys: [{id: ops, public_key: "$K1"}]
`

// overBase merges the YAML snippet over baseYAML (mappings are merged key
// by key, everything else replaced) and returns the result.
func overBase(t testing.TB, snippet string) []byte {
	t.Helper()
	var base, over map[string]any
	if err := yaml.Unmarshal([]byte(subst(baseYAML)), &base); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(subst(snippet)), &over); err != nil {
		t.Fatalf("snippet %q: %v", snippet, err)
	}
	merge(base, over)
	out, err := yaml.Marshal(base)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func merge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

type invalidCase struct {
	name  string
	yaml  string   // merged over baseYAML
	dev   bool     // validate in development mode
	paths []string // exactly the key paths expected in the errors, in order
	msg   string   // a part of the first error's text
}

var invalidCases = []invalidCase{
	{name: "host id upper case", yaml: `host_id: Web-01`, paths: []string{"host_id"}, msg: `invalid host id "Web-01"`},
	{name: "host id empty", yaml: `host_id: ""`, paths: []string{"host_id"}},
	{name: "host id too long", yaml: "host_id: " + strings.Repeat("a", 64), paths: []string{"host_id"}},
	{name: "data dir relative", yaml: `data_dir: var/lib/mqagent`, paths: []string{"data_dir"}, msg: "absolute"},
	{name: "data dir empty", yaml: `data_dir: ""`, paths: []string{"data_dir"}, msg: "is required"},
	{name: "prefix wildcard +", yaml: `topic_prefix: a/+/b`, paths: []string{"topic_prefix"}, msg: "wildcards"},
	{name: "prefix wildcard #", yaml: `topic_prefix: "a/#"`, paths: []string{"topic_prefix"}, msg: "wildcards"},
	{name: "prefix leading slash", yaml: `topic_prefix: /mqagent`, paths: []string{"topic_prefix"}, msg: "'/'"},
	{name: "prefix trailing slash", yaml: `topic_prefix: mqagent/`, paths: []string{"topic_prefix"}, msg: "'/'"},
	{name: "prefix empty level", yaml: `topic_prefix: a//b`, paths: []string{"topic_prefix"}, msg: "empty level"},
	{name: "prefix dollar", yaml: `topic_prefix: $SYS/x`, paths: []string{"topic_prefix"}, msg: "'$'"},
	{name: "prefix empty", yaml: `topic_prefix: ""`, paths: []string{"topic_prefix"}},
	{name: "prefix NUL", yaml: `topic_prefix: "a\0b"`, paths: []string{"topic_prefix"}},
	{name: "no broker urls", yaml: `broker: {urls: null}`, paths: []string{"broker.urls"}, msg: "at least one broker URL"},
	{name: "empty broker urls", yaml: `broker: {urls: []}`, paths: []string{"broker.urls"}},
	{
		name:  "http scheme",
		yaml:  `broker: {urls: ["tcp://127.0.0.1:1883", "http://broker:80"]}`,
		paths: []string{"broker.urls[1]"},
		msg:   `config /etc/mqagent.yaml: broker.urls[1]: unsupported scheme "http" (want tcp, ssl, tls, ws, wss, mqtt, mqtts)`,
	},
	{name: "no scheme", yaml: `broker: {urls: ["127.0.0.1:1883"]}`, paths: []string{"broker.urls[0]"}, msg: "not a valid URL"},
	{name: "host:port only", yaml: `broker: {urls: ["localhost:1883"]}`, paths: []string{"broker.urls[0]"}},
	{name: "no port", yaml: `broker: {urls: ["tcp://broker"]}`, paths: []string{"broker.urls[0]"}, msg: "missing port"},
	{name: "no host", yaml: `broker: {urls: ["tcp://:1883"]}`, paths: []string{"broker.urls[0]"}, msg: "missing host"},
	{name: "port zero", yaml: `broker: {urls: ["tcp://broker:0"]}`, paths: []string{"broker.urls[0]"}, msg: "invalid port"},
	{name: "port too big", yaml: `broker: {urls: ["mqtt://broker:70000"]}`, paths: []string{"broker.urls[0]"}, msg: "invalid port"},
	{name: "credentials in url", yaml: `broker: {urls: ["ssl://u:secret@broker:8883"]}`, paths: []string{"broker.urls[0]"}, msg: "credentials in the URL"},
	{name: "password without username", yaml: `broker: {password: pw}`, paths: []string{"broker.password"}},
	{name: "cert without key", yaml: `broker: {urls: ["ssl://127.0.0.1:8883"], tls: {cert_file: testdata/client.pem}}`, paths: []string{"broker.tls.key_file"}},
	{name: "key without cert", yaml: `broker: {urls: ["ssl://127.0.0.1:8883"], tls: {key_file: testdata/client.key}}`, paths: []string{"broker.tls.cert_file"}},
	{name: "ca file missing", yaml: `broker: {urls: ["ssl://127.0.0.1:8883"], tls: {ca_file: testdata/nope.pem}}`, paths: []string{"broker.tls.ca_file"}, msg: "nope.pem"},
	{name: "ca file is a directory", yaml: `broker: {urls: ["ssl://127.0.0.1:8883"], tls: {ca_file: testdata}}`, paths: []string{"broker.tls.ca_file"}, msg: "not a regular file"},
	{name: "keepalive too short", yaml: `broker: {keepalive: 1s}`, paths: []string{"broker.keepalive"}, msg: "at least 5s, got 1s"},
	{name: "keepalive too long", yaml: `broker: {keepalive: 20h}`, paths: []string{"broker.keepalive"}},
	{name: "connect timeout zero", yaml: `broker: {connect_timeout: 0s}`, paths: []string{"broker.connect_timeout"}},
	{name: "write timeout negative", yaml: `broker: {write_timeout: -1s}`, paths: []string{"broker.write_timeout"}},
	{name: "reconnect max below min", yaml: `broker: {reconnect_min: 10s, reconnect_max: 5s}`, paths: []string{"broker.reconnect_max"}},
	{name: "reconnect min zero", yaml: `broker: {reconnect_min: 0s}`, paths: []string{"broker.reconnect_min"}},
	{name: "bad and duplicate groups", yaml: `groups: [web, Web, web, "-x"]`, paths: []string{"groups[1]", "groups[2]", "groups[3]"}, msg: `invalid group name "Web"`},
	{name: "empty fact name", yaml: `facts: {"": x}`, paths: []string{"facts"}},
	{name: "metrics interval", yaml: `metrics: {interval: 500ms}`, paths: []string{"metrics.interval"}},
	{name: "metrics qos 2", yaml: `metrics: {qos: 2}`, paths: []string{"metrics.qos"}, msg: "between 0 and 1, got 2"},
	{name: "metrics qos negative", yaml: `metrics: {qos: -1}`, paths: []string{"metrics.qos"}},
	{name: "inventory interval zero", yaml: `inventory: {interval: 0s}`, paths: []string{"inventory.interval"}},
	{name: "max concurrent zero", yaml: `exec: {max_concurrent: 0}`, paths: []string{"exec.max_concurrent"}},
	{name: "max concurrent too big", yaml: `exec: {max_concurrent: 1025}`, paths: []string{"exec.max_concurrent"}},
	{name: "max queue zero", yaml: `exec: {max_queue: 0}`, paths: []string{"exec.max_queue"}},
	{name: "max queue too big", yaml: `exec: {max_queue: 100001}`, paths: []string{"exec.max_queue"}},
	{name: "max output too small", yaml: `exec: {max_output_bytes: 1023}`, paths: []string{"exec.max_output_bytes"}},
	{name: "max output too big", yaml: `exec: {max_output_bytes: 67108865}`, paths: []string{"exec.max_output_bytes"}},
	{name: "default timeout above max", yaml: `exec: {default_timeout: 2h, max_timeout: 1h}`, paths: []string{"exec.default_timeout"}, msg: "above exec.max_timeout"},
	{name: "max timeout zero", yaml: `exec: {max_timeout: 0s}`, paths: []string{"exec.max_timeout"}},
	{name: "grace negative", yaml: `exec: {grace_period: -1s}`, paths: []string{"exec.grace_period"}},
	{
		name:  "signed without keys",
		yaml:  `security: {trusted_keys: null}`,
		paths: []string{"security.trusted_keys"},
		msg:   "config /etc/mqagent.yaml: security.trusted_keys: at least one key is required when require_signed is true (use `mqagent keygen`)",
	},
	{name: "explicitly signed without keys", yaml: `security: {require_signed: true, trusted_keys: []}`, paths: []string{"security.trusted_keys"}},
	{name: "dev but signed without keys", dev: true, yaml: `security: {require_signed: true, trusted_keys: []}`, paths: []string{"security.trusted_keys"}},
	{name: "key id missing", yaml: `security: {trusted_keys: [{public_key: "$K1"}]}`, paths: []string{"security.trusted_keys[0].id"}},
	{name: "key id bad", yaml: `security: {trusted_keys: [{id: "o p", public_key: "$K1"}]}`, paths: []string{"security.trusted_keys[0].id"}},
	{
		name:  "key id duplicate",
		yaml:  `security: {trusted_keys: [{id: ops, public_key: "$K1"}, {id: ops, public_key: "$K2"}]}`,
		paths: []string{"security.trusted_keys[1].id"},
		msg:   "also security.trusted_keys[0]",
	},
	{name: "public key missing", yaml: `security: {trusted_keys: [{id: ops}]}`, paths: []string{"security.trusted_keys[0].public_key"}, msg: "empty"},
	{name: "public key not base64", yaml: `security: {trusted_keys: [{id: ops, public_key: "not base64!"}]}`, paths: []string{"security.trusted_keys[0].public_key"}, msg: "base64"},
	{name: "public key short", yaml: `security: {trusted_keys: [{id: ops, public_key: "AAAA"}]}`, paths: []string{"security.trusted_keys[0].public_key"}, msg: "3 bytes, want 32"},
	{
		name:  "private key given",
		yaml:  `security: {trusted_keys: [{id: ops, public_key: "` + strings.Repeat("A", 86) + `=="}]}`,
		paths: []string{"security.trusted_keys[0].public_key"},
		msg:   "private key",
	},
	{name: "unknown kind on key", yaml: `security: {trusted_keys: [{id: ops, public_key: "$K1", kinds: [ping, reboot]}]}`, paths: []string{"security.trusted_keys[0].kinds[1]"}, msg: `unknown kind "reboot"`},
	{name: "empty kinds on key", yaml: `security: {trusted_keys: [{id: ops, public_key: "$K1", kinds: []}]}`, paths: []string{"security.trusted_keys[0].kinds"}},
	{name: "unknown allowed kind", yaml: `security: {allowed_kinds: ["*", "Exec"]}`, paths: []string{"security.allowed_kinds[1]"}},
	{name: "empty allowed kinds", yaml: `security: {allowed_kinds: []}`, paths: []string{"security.allowed_kinds"}},
	{name: "payload too small", yaml: `security: {max_payload_bytes: 10}`, paths: []string{"security.max_payload_bytes"}},
	{name: "ttl zero", yaml: `security: {default_ttl: 0s}`, paths: []string{"security.default_ttl"}},
	{name: "skew negative", yaml: `security: {max_clock_skew: -1m}`, paths: []string{"security.max_clock_skew"}},
	{name: "update key bad", yaml: `update: {public_key: "abc"}`, paths: []string{"update.public_key"}},
	{name: "update health timeout", yaml: `update: {health_timeout: 10ms}`, paths: []string{"update.health_timeout"}},
	{name: "update max bytes", yaml: `update: {max_bytes: 0}`, paths: []string{"update.max_bytes"}},
	{
		name:  "update key is a trusted key",
		yaml:  `{security: {trusted_keys: [{id: a, public_key: "$K2"}, {id: b, public_key: "$K1"}]}, update: {public_key: "$K1"}}`,
		paths: []string{"update.public_key"},
		msg:   "security.trusted_keys[1].public_key",
	},
	{name: "log level", yaml: `log: {level: verbose}`, paths: []string{"log.level"}, msg: `"verbose"`},
	{name: "log level empty", yaml: `log: {level: ""}`, paths: []string{"log.level"}},
	{name: "log size zero", yaml: `log: {max_size_mb: 0}`, paths: []string{"log.max_size_mb"}},
	{name: "log backups zero", yaml: `log: {max_backups: 0}`, paths: []string{"log.max_backups"}},
	{name: "dev remote broker", dev: true, yaml: `broker: {urls: ["tcp://localhost:1883", "tcp://10.0.0.1:1883"]}`, paths: []string{"broker.urls[1]"}, msg: "loopback"},
	{name: "dev remote name", dev: true, yaml: `broker: {urls: ["wss://broker.example.com:443/mqtt"]}`, paths: []string{"broker.urls[0]"}},
	{
		name:  "many problems at once",
		yaml:  `{host_id: X, exec: {max_concurrent: 0, max_queue: 0}, metrics: {qos: 5}, broker: {urls: ["http://a:1"]}}`,
		paths: []string{"host_id", "broker.urls[0]", "metrics.qos", "exec.max_concurrent", "exec.max_queue"},
	},
}

func TestValidateInvalid(t *testing.T) {
	for _, tt := range invalidCases {
		t.Run(tt.name, func(t *testing.T) {
			data := overBase(t, tt.yaml)
			c, err := decode(data, "/etc/mqagent.yaml")
			if err != nil {
				t.Fatalf("decode: %v\n%s", err, data)
			}
			c.Dev = tt.dev
			err = c.Validate()
			if err == nil {
				t.Fatalf("Validate() = nil, want errors at %v\n%s", tt.paths, data)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not match ErrInvalid")
			}
			fes := fieldErrors(t, err)
			var paths []string
			for _, fe := range fes {
				paths = append(paths, fe.Path)
				if fe.Source != "/etc/mqagent.yaml" {
					t.Errorf("source %q", fe.Source)
				}
				if !pathExists(fe.Path) {
					t.Errorf("path %q is not a YAML key of the config", fe.Path)
				}
				if !strings.HasPrefix(fe.Error(), "config /etc/mqagent.yaml: "+fe.Path+": ") {
					t.Errorf("error text %q does not start with the source and path", fe.Error())
				}
			}
			if !slices.Equal(paths, tt.paths) {
				t.Errorf("paths = %q, want %q\nerror: %v", paths, tt.paths, err)
			}
			if tt.msg != "" && !strings.Contains(fes[0].Error(), tt.msg) {
				t.Errorf("first error %q does not contain %q", fes[0].Error(), tt.msg)
			}
			// Parse gives the same errors (without Dev, which a file cannot set).
			if !tt.dev {
				if _, perr := Parse(data, "/etc/mqagent.yaml"); perr == nil || perr.Error() != err.Error() {
					t.Errorf("Parse error = %v\nwant %v", perr, err)
				}
			}
		})
	}
}

func TestValidateDevLoopback(t *testing.T) {
	for _, u := range []string{"tcp://localhost:1883", "tcp://LOCALHOST:1883", "tcp://127.0.0.1:1883", "tcp://127.1.2.3:1", "ws://[::1]:8080/mqtt", "mqtts://localhost:8883"} {
		c, err := decode(overBase(t, `{broker: {urls: ["`+u+`"]}, security: {trusted_keys: []}}`), "dev.yaml")
		if err != nil {
			t.Fatal(err)
		}
		c.Dev = true
		if err := c.Validate(); err != nil {
			t.Errorf("dev mode with %s: %v", u, err)
		}
		if c.RequireSigned() {
			t.Errorf("dev mode requires signatures by default")
		}
	}
}

func TestTLSFileUnreadable(t *testing.T) {
	if runtime.GOOS == "windows" || os.Geteuid() == 0 {
		t.Skip("needs a Unix user that file modes apply to")
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, []byte("x"), 0o000); err != nil {
		t.Fatal(err)
	}
	c, err := decode(overBase(t, `broker: {tls: {ca_file: "`+path+`"}}`), "x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fes := fieldErrors(t, c.Validate())
	if len(fes) != 1 || fes[0].Path != "broker.tls.ca_file" || !strings.Contains(fes[0].Error(), "permission denied") {
		t.Errorf("errors = %v, want broker.tls.ca_file permission denied", fes)
	}
}

func TestParseKey(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" = valid
	}{
		{key1, ""},
		{" " + key2 + "\n", ""},
		{"", "empty"},
		{strings.TrimRight(key1, "="), "base64"}, // padding is required
		{"_" + key1[1:], "base64"},               // URL alphabet
		{"AAAA", "3 bytes"},
		{strings.Repeat("A", 42) + "==", "31 bytes, want 32"},
	}
	for _, tt := range tests {
		pk, err := ParseKey(tt.in)
		if tt.want == "" {
			if err != nil || len(pk) != 32 {
				t.Errorf("ParseKey(%q) = %v, %v", tt.in, pk, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseKey(%q) error = %v, want it to contain %q", tt.in, err, tt.want)
		}
	}
}
