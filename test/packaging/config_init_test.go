package packaging

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/config"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// testKey is the standard base64 of a new ed25519 public key, and the
// private key.
func testKey(t *testing.T) (string, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(pub), priv
}

// agent runs the host's agent binary with args.
func agent(t *testing.T, args ...string) result {
	t.Helper()
	return run(t, time.Minute, t.TempDir(), nil, harness.BuildAgent(t), args...)
}

func TestConfigInit(t *testing.T) {
	k1, _ := testKey(t)
	k2, _ := testKey(t)
	pki := harness.NewPKI(t, "config-init")
	client := pki.Client("web-01")

	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, c *config.Config)
	}{
		{
			name: "every flag",
			args: []string{
				"--broker-url", "ssl://mq1.example.com:8883, ssl://mq2.example.com:8883", "--broker-url", "ssl://mq3.example.com:8883",
				"--groups", "web,eu", "--groups", " prod ",
				"--ca-file", pki.CAFile(), "--cert-file", client.CertFile, "--key-file", client.KeyFile,
				"--trusted-key", "ops=" + k1 + ":exec,shell;ci=" + k2, "--trusted-key", "audit=" + k2 + ":ping",
				"--host-id", "web-01", "--data-dir", "/srv/mqagent",
			},
			check: func(t *testing.T, c *config.Config) {
				if want := []string{"ssl://mq1.example.com:8883", "ssl://mq2.example.com:8883", "ssl://mq3.example.com:8883"}; !reflect.DeepEqual(c.Broker.URLs, want) {
					t.Errorf("urls = %q, want %q", c.Broker.URLs, want)
				}
				if want := []string{"web", "eu", "prod"}; !reflect.DeepEqual(c.Groups, want) {
					t.Errorf("groups = %q, want %q", c.Groups, want)
				}
				if want := (config.TLS{CAFile: pki.CAFile(), CertFile: client.CertFile, KeyFile: client.KeyFile}); c.Broker.TLS != want {
					t.Errorf("tls = %+v, want %+v", c.Broker.TLS, want)
				}
				want := []config.TrustedKey{
					{ID: "ops", PublicKey: k1, Kinds: []string{"exec", "shell"}},
					{ID: "ci", PublicKey: k2, Kinds: []string{"*"}},
					{ID: "audit", PublicKey: k2, Kinds: []string{"ping"}},
				}
				if !reflect.DeepEqual(c.Security.TrustedKeys, want) {
					t.Errorf("trusted keys = %+v, want %+v", c.Security.TrustedKeys, want)
				}
				if c.HostID != "web-01" || c.DataDir != "/srv/mqagent" {
					t.Errorf("host_id %q, data_dir %q", c.HostID, c.DataDir)
				}
			},
		},
		{
			// What the MSI passes when only some properties are set.
			name: "empty values ignored",
			args: []string{
				"--broker-url", "tcp://127.0.0.1:1883", "--groups", "", "--ca-file", "", "--cert-file", "",
				"--key-file", "", "--trusted-key", "ops=" + k1, "--host-id", "", "--data-dir", "",
			},
			check: func(t *testing.T, c *config.Config) {
				d := config.Default()
				if c.Groups != nil || c.Broker.TLS != (config.TLS{}) || c.HostID != d.HostID || c.DataDir != d.DataDir {
					t.Errorf("empty flags were not ignored: %+v", c)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "etc", "config.yaml")
			r := agent(t, append([]string{"config", "init", "--out", out}, tt.args...)...)
			if r.code != 0 {
				t.Fatalf("config init: exit %d\n%s", r.code, r.out)
			}
			c, err := config.Load(out)
			if err != nil {
				t.Fatalf("the written file does not load: %v\n%s", err, readFile(t, out))
			}
			tt.check(t, c)
			for p, want := range map[string]os.FileMode{out: 0o600, filepath.Dir(out): 0o700} {
				if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
					t.Errorf("%s: %v, %v; want mode %v", p, fi.Mode(), err, want)
				}
			}
			if r := agent(t, "config", "check", "--config", out); r.code != 0 || !strings.Contains(r.out, "ok") {
				t.Errorf("config check: exit %d\n%s", r.code, r.out)
			}
		})
	}
}

func TestConfigInitErrors(t *testing.T) {
	k1, _ := testKey(t)
	tests := []struct {
		name string
		args []string
		want []string // in the error output
	}{
		{"no broker, no key", nil, []string{"broker.urls: at least one broker URL is required", "security.trusted_keys"}},
		{"bad URL", []string{"--broker-url", "http://mq:1", "--trusted-key", "ops=" + k1}, []string{"broker.urls[0]", "unsupported scheme"}},
		{"bad key spec", []string{"--broker-url", "tcp://mq:1", "--trusted-key", "ops"}, []string{"--trusted-key: want ID=BASE64[:KINDS]"}},
		{"short key", []string{"--broker-url", "tcp://mq:1", "--trusted-key", "ops=AAAA"}, []string{"security.trusted_keys[0].public_key", "want 32"}},
		{"empty kinds", []string{"--broker-url", "tcp://mq:1", "--trusted-key", "ops=" + k1 + ":"}, []string{"empty kinds list"}},
		{"unknown kind", []string{"--broker-url", "tcp://mq:1", "--trusted-key", "ops=" + k1 + ":nope"}, []string{"kinds[0]", "unknown kind"}},
		{"TLS on plain URL", []string{"--broker-url", "tcp://mq:1", "--trusted-key", "ops=" + k1, "--ca-file", "/etc/hostname"}, []string{"broker.tls: is set but no broker URL uses TLS"}},
		{"missing CA", []string{"--broker-url", "ssl://mq:1", "--trusted-key", "ops=" + k1, "--ca-file", "/nonexistent/ca.pem"}, []string{"broker.tls.ca_file"}},
		{"cert without key", []string{"--broker-url", "ssl://mq:1", "--trusted-key", "ops=" + k1, "--cert-file", "/etc/hostname"}, []string{"broker.tls.key_file: is required"}},
		{"bad host id", []string{"--broker-url", "tcp://mq:1", "--trusted-key", "ops=" + k1, "--host-id", "Bad Host"}, []string{"host_id"}},
		{"force and keep", []string{"--broker-url", "tcp://mq:1", "--trusted-key", "ops=" + k1, "--force", "--keep-existing"}, []string{"force", "keep-existing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "config.yaml")
			errFile := filepath.Join(t.TempDir(), "logs", "install-error.txt")
			r := agent(t, append([]string{"config", "init", "--out", out, "--copy-tls-to", filepath.Join(dir, "tls"), "--error-file", errFile}, tt.args...)...)
			if r.code == 0 {
				t.Fatalf("config init succeeded:\n%s", r.out)
			}
			// Command-line mistakes (cobra's) are not recorded: only what
			// the settings are.
			var recorded string
			if tt.name != "force and keep" {
				recorded = string(readFile(t, errFile))
			}
			for _, w := range tt.want {
				if !strings.Contains(r.out, w) {
					t.Errorf("output lacks %q:\n%s", w, r.out)
				}
				if tt.name != "force and keep" && !strings.Contains(recorded, w) {
					t.Errorf("the error file lacks %q:\n%s", w, recorded)
				}
			}
			// Nothing is written: no file, no TLS copies.
			entries, _ := os.ReadDir(dir)
			if len(entries) != 0 {
				t.Errorf("files left after a failure: %v", entries)
			}
		})
	}
}

// TestConfigInitExisting: an existing file is refused without --force,
// kept with --keep-existing (what upgrades rely on), replaced with --force.
func TestConfigInitExisting(t *testing.T) {
	k1, _ := testKey(t)
	out := filepath.Join(t.TempDir(), "config.yaml")
	args := func(url string, extra ...string) []string {
		return append([]string{"config", "init", "--out", out, "--broker-url", url, "--trusted-key", "ops=" + k1}, extra...)
	}
	if r := agent(t, args("tcp://127.0.0.1:1001")...); r.code != 0 {
		t.Fatalf("first config init: exit %d\n%s", r.code, r.out)
	}
	first := readFile(t, out)

	r := agent(t, args("tcp://127.0.0.1:1002")...)
	if r.code == 0 || !strings.Contains(r.out, "refusing to overwrite") {
		t.Errorf("second config init: exit %d, want a refusal\n%s", r.code, r.out)
	}
	r = agent(t, args("tcp://127.0.0.1:1003", "--keep-existing")...)
	if r.code != 0 || !strings.Contains(r.out, "kept unchanged") {
		t.Errorf("--keep-existing: exit %d\n%s", r.code, r.out)
	}
	if !bytes.Equal(readFile(t, out), first) {
		t.Fatalf("the file changed without --force:\n%s", readFile(t, out))
	}
	// --keep-existing does not even check the new settings: the installed
	// file is what counts.
	if r := agent(t, "config", "init", "--out", out, "--keep-existing"); r.code != 0 {
		t.Errorf("--keep-existing without settings: exit %d\n%s", r.code, r.out)
	}
	// A success removes the error file of an earlier failure.
	errFile := filepath.Join(t.TempDir(), "install-error.txt")
	writeFile(t, errFile, []byte("old failure"), 0o600)
	if r := agent(t, args("tcp://127.0.0.1:1004", "--force", "--error-file", errFile)...); r.code != 0 {
		t.Fatalf("--force: exit %d\n%s", r.code, r.out)
	}
	if _, err := os.Stat(errFile); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the error file is still there after a success: %v", err)
	}
	c, err := config.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Broker.URLs, []string{"tcp://127.0.0.1:1004"}) {
		t.Errorf("after --force: urls %q", c.Broker.URLs)
	}
}

// TestConfigInitCopyAndRollback: --copy-tls-to copies the TLS files
// (private) and the file uses the copies; `config rollback` removes what
// the installation with the same id wrote, and nothing else.
func TestConfigInitCopyAndRollback(t *testing.T) {
	k1, _ := testKey(t)
	pki := harness.NewPKI(t, "rollback")
	client := pki.Client("web-01")
	dir := filepath.Join(t.TempDir(), "ProgramData", "mqagent")
	out := filepath.Join(dir, "config.yaml")
	tlsDir := filepath.Join(dir, "tls")
	const id = "{11111111-2222-3333-4444-555555555555} 11/25/2026 6:44:56"

	r := agent(t, "config", "init", "--out", out, "--keep-existing", "--install-id", id, "--copy-tls-to", tlsDir,
		"--broker-url", "ssl://127.0.0.1:8883", "--trusted-key", "ops="+k1,
		"--ca-file", pki.CAFile(), "--cert-file", client.CertFile, "--key-file", client.KeyFile)
	if r.code != 0 {
		t.Fatalf("config init: exit %d\n%s", r.code, r.out)
	}
	c, err := config.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	copies := map[string]string{
		filepath.Join(tlsDir, "ca.pem"):   pki.CAFile(),
		filepath.Join(tlsDir, "cert.pem"): client.CertFile,
		filepath.Join(tlsDir, "key.pem"):  client.KeyFile,
	}
	if want := (config.TLS{CAFile: filepath.Join(tlsDir, "ca.pem"), CertFile: filepath.Join(tlsDir, "cert.pem"), KeyFile: filepath.Join(tlsDir, "key.pem")}); c.Broker.TLS != want {
		t.Errorf("tls = %+v, want the copies %+v", c.Broker.TLS, want)
	}
	for cp, src := range copies {
		if !bytes.Equal(readFile(t, cp), readFile(t, src)) {
			t.Errorf("%s differs from %s", cp, src)
		}
		if fi, _ := os.Stat(cp); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", cp, fi.Mode().Perm())
		}
	}
	if !bytes.Contains(readFile(t, out), []byte("\n# install-id: "+id+"\n")) {
		t.Errorf("the file does not record the install id:\n%s", readFile(t, out))
	}

	// Another installation's rollback leaves everything alone.
	r = agent(t, "config", "rollback", "--out", out, "--install-id", "{99999999-2222-3333-4444-555555555555} 11/25/2026 6:44:56")
	if r.code != 0 || !strings.Contains(r.out, "left alone") {
		t.Errorf("rollback with another id: exit %d\n%s", r.code, r.out)
	}
	if _, err := os.Stat(out); err != nil {
		t.Fatalf("another installation's rollback removed the file: %v", err)
	}
	// A data file the agent wrote meanwhile is not the installation's.
	writeFile(t, filepath.Join(dir, "state.db"), []byte("data"), 0o600)
	r = agent(t, "config", "rollback", "--out", out, "--install-id", id)
	if r.code != 0 || !strings.Contains(r.out, "removed") {
		t.Fatalf("rollback: exit %d\n%s", r.code, r.out)
	}
	for _, p := range []string{out, tlsDir} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists after the rollback: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "state.db")); err != nil {
		t.Errorf("the rollback removed the agent's data: %v", err)
	}
	// Rolling back again (or with no file) is harmless.
	if r := agent(t, "config", "rollback", "--out", out, "--install-id", id); r.code != 0 {
		t.Errorf("second rollback: exit %d\n%s", r.code, r.out)
	}
}

// TestExampleConfig: the example shipped in the packages is incomplete on
// purpose (the agent must not start with it), says so clearly, and has no
// mistake in its keys: with a broker and a key filled in, it is valid.
func TestExampleConfig(t *testing.T) {
	example := filepath.Join(moduleRoot(t), "deploy", "packages", "config.yaml")
	r := agent(t, "config", "check", "--config", example)
	if r.code == 0 {
		t.Fatalf("config check of the example succeeded:\n%s", r.out)
	}
	for _, w := range []string{"broker.urls: at least one broker URL is required", "security.trusted_keys: at least one key is required"} {
		if !strings.Contains(r.out, w) {
			t.Errorf("config check output lacks %q:\n%s", w, r.out)
		}
	}
	k1, _ := testKey(t)
	filled := strings.Replace(string(readFile(t, example)), "  urls: []", "  urls: [\"tcp://127.0.0.1:1883\"]", 1)
	filled = strings.Replace(filled, "  trusted_keys: []", "  trusted_keys: [{id: ops, public_key: \""+k1+"\"}]", 1)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, []byte(filled), 0o600)
	if r := agent(t, "config", "check", "--config", path); r.code != 0 {
		t.Errorf("the completed example does not check:\n%s\n%s", r.out, filled)
	}
	// Every commented-out key of the example is a real key too.
	uncommented := strings.NewReplacer("# host_id:", "host_id:", "# data_dir:", "data_dir:").Replace(filled)
	writeFile(t, path, []byte(uncommented), 0o600)
	if r := agent(t, "config", "check", "--config", path); r.code != 0 {
		t.Errorf("the example's optional keys do not check:\n%s", r.out)
	}
}
