package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func TestInitialRender(t *testing.T) {
	ca, err := filepath.Abs("testdata/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := filepath.Abs("testdata/client.pem")
	key, _ := filepath.Abs("testdata/client.key")
	dataDir := filepath.Join(writeTempDir(t), "data")

	tests := []struct {
		name    string
		in      Initial
		check   func(t *testing.T, c *Config)
		absent  []string // keys that must not be in the file
		wantErr []string // key paths of the expected errors
	}{
		{
			name: "minimal",
			in: Initial{
				BrokerURLs:  []string{"tcp://127.0.0.1:1883"},
				TrustedKeys: []TrustedKey{{ID: "ops", PublicKey: key1}},
			},
			check: func(t *testing.T, c *Config) {
				d := Default()
				if c.HostID != d.HostID || c.DataDir != d.DataDir {
					t.Errorf("host_id/data_dir = %q/%q, want the defaults %q/%q", c.HostID, c.DataDir, d.HostID, d.DataDir)
				}
				if !reflect.DeepEqual(c.Broker.URLs, []string{"tcp://127.0.0.1:1883"}) {
					t.Errorf("urls = %q", c.Broker.URLs)
				}
				want := []TrustedKey{{ID: "ops", PublicKey: key1, Kinds: []string{"*"}}}
				if !reflect.DeepEqual(c.Security.TrustedKeys, want) {
					t.Errorf("trusted keys = %+v, want %+v", c.Security.TrustedKeys, want)
				}
				if c.Groups != nil || c.Broker.TLS != (TLS{}) {
					t.Errorf("groups %q, tls %+v: want none", c.Groups, c.Broker.TLS)
				}
				if !c.RequireSigned() {
					t.Error("require_signed is off")
				}
			},
			absent: []string{"host_id", "data_dir", "tls", "groups", "exec", "log", "kinds", "require_signed"},
		},
		{
			name: "every setting",
			in: Initial{
				HostID:      "web-01",
				DataDir:     dataDir,
				BrokerURLs:  []string{"ssl://mq1.example.com:8883", "ssl://mq2.example.com:8883"},
				Groups:      []string{"web", "eu"},
				TLS:         TLS{CAFile: ca, CertFile: cert, KeyFile: key},
				TrustedKeys: []TrustedKey{{ID: "ops", PublicKey: key1, Kinds: []string{"exec", "shell"}}, {ID: "ci", PublicKey: key2}},
				Comment:     "first line\n\nthird line",
			},
			check: func(t *testing.T, c *Config) {
				if c.HostID != "web-01" || c.DataDir != dataDir {
					t.Errorf("host_id/data_dir = %q/%q", c.HostID, c.DataDir)
				}
				if !reflect.DeepEqual(c.Broker.URLs, []string{"ssl://mq1.example.com:8883", "ssl://mq2.example.com:8883"}) {
					t.Errorf("urls = %q", c.Broker.URLs)
				}
				if !reflect.DeepEqual(c.Groups, []string{"web", "eu"}) {
					t.Errorf("groups = %q", c.Groups)
				}
				if c.Broker.TLS != (TLS{CAFile: ca, CertFile: cert, KeyFile: key}) {
					t.Errorf("tls = %+v", c.Broker.TLS)
				}
				want := []TrustedKey{
					{ID: "ops", PublicKey: key1, Kinds: []string{"exec", "shell"}},
					{ID: "ci", PublicKey: key2, Kinds: []string{"*"}},
				}
				if !reflect.DeepEqual(c.Security.TrustedKeys, want) {
					t.Errorf("trusted keys = %+v, want %+v", c.Security.TrustedKeys, want)
				}
			},
			absent: []string{"exec", "server_name"},
		},
		{
			name:    "no broker, no key",
			in:      Initial{},
			wantErr: []string{"broker.urls", "security.trusted_keys"},
		},
		{
			name: "bad values",
			in: Initial{
				HostID:      "Bad Host",
				DataDir:     "relative/dir",
				BrokerURLs:  []string{"http://x:1"},
				Groups:      []string{"a", "a"},
				TrustedKeys: []TrustedKey{{ID: "ops", PublicKey: "AAAA", Kinds: []string{"nope"}}},
			},
			wantErr: []string{"host_id", "data_dir", "broker.urls[0]", "groups[1]", "security.trusted_keys[0].public_key", "security.trusted_keys[0].kinds[0]"},
		},
		{
			name: "TLS files on a plain URL, missing file",
			in: Initial{
				BrokerURLs:  []string{"tcp://127.0.0.1:1883"},
				TLS:         TLS{CAFile: filepath.Join(writeTempDir(t), "missing.pem")},
				TrustedKeys: []TrustedKey{{ID: "ops", PublicKey: key1}},
			},
			wantErr: []string{"broker.tls", "broker.tls.ca_file"},
		},
		{
			name: "cert without key",
			in: Initial{
				BrokerURLs:  []string{"ssl://127.0.0.1:8883"},
				TLS:         TLS{CertFile: cert},
				TrustedKeys: []TrustedKey{{ID: "ops", PublicKey: key1}},
			},
			wantErr: []string{"broker.tls.key_file"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := tt.in.Render()
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Render succeeded:\n%s", data)
				}
				var got []string
				for _, fe := range fieldErrors(t, err) {
					got = append(got, fe.Path)
				}
				if !reflect.DeepEqual(got, tt.wantErr) {
					t.Errorf("error paths = %q, want %q\n%v", got, tt.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			c, err := Parse(data, "rendered")
			if err != nil {
				t.Fatalf("Parse of the rendered file: %v\n%s", err, data)
			}
			tt.check(t, c)
			for _, k := range tt.absent {
				if bytes.Contains(data, []byte(k+":")) {
					t.Errorf("the file has %s, which was not set:\n%s", k, data)
				}
			}
			if tt.in.Comment != "" {
				want := "# first line\n#\n# third line\n"
				if !bytes.HasPrefix(data, []byte(want)) {
					t.Errorf("file does not start with the comment %q:\n%s", want, data)
				}
			}
		})
	}
}

// validConfig is a complete configuration file for the write tests.
func validConfig(url string) []byte {
	return fmt.Appendf(nil, "broker:\n  urls: [%q]\nsecurity:\n  trusted_keys: [{id: ops, public_key: %q}]\n", url, key1)
}

// noTemps fails the test if dir holds a temporary file of WritePrivateFile.
func noTemps(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestWriteFile(t *testing.T) {
	dir := filepath.Join(writeTempDir(t), "new", "etc")
	path := filepath.Join(dir, "config.yaml")
	first := validConfig("tcp://127.0.0.1:1883")

	if err := WriteFile(path, first, WriteOptions{}); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, first) {
		t.Fatalf("file = %q, %v; want %q", got, err, first)
	}
	if _, err := Load(path); err != nil {
		t.Errorf("Load of the written file: %v", err)
	}
	if runtime.GOOS != "windows" {
		for p, want := range map[string]fs.FileMode{path: 0o600, dir: 0o700, filepath.Dir(dir): 0o700} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != want {
				t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
			}
		}
	}

	// An existing file is never replaced without Overwrite.
	second := validConfig("tcp://127.0.0.2:1883")
	err = WriteFile(path, second, WriteOptions{})
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("second WriteFile: %v, want fs.ErrExist", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, first) {
		t.Errorf("file changed without Overwrite: %q", got)
	}
	// With Overwrite it is replaced.
	if err := WriteFile(path, second, WriteOptions{Overwrite: true}); err != nil {
		t.Fatalf("WriteFile with Overwrite: %v", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, second) {
		t.Errorf("file = %q, want %q", got, second)
	}
	// An invalid configuration is not written at all.
	bad := filepath.Join(dir, "bad.yaml")
	err = WriteFile(bad, []byte("broker:\n  urls: [\"http://x\"]\nnope: 1\n"), WriteOptions{})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("WriteFile of an invalid config: %v, want ErrInvalid", err)
	}
	if _, err := os.Stat(bad); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("invalid config written: stat: %v", err)
	}
	noTemps(t, dir)
}

func TestWritePrivateFileErrors(t *testing.T) {
	dir := writeTempDir(t)
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		opts WriteOptions
		want string
	}{
		{"empty name", "", WriteOptions{}, "no file name"},
		{"directory, no overwrite", sub, WriteOptions{}, "refusing to overwrite"},
		{"directory, overwrite", sub, WriteOptions{Overwrite: true}, "not a regular file"},
		{"parent is a file", filepath.Join(notDir, "x.yaml"), WriteOptions{}, "not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := WritePrivateFile(tt.path, []byte("x"), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("WritePrivateFile(%q) = %v, want an error containing %q", tt.path, err, tt.want)
			}
		})
	}
	noTemps(t, dir)
}

// TestWritePrivateFileRace: writers racing to create the same file without
// Overwrite: exactly one wins, the file holds its data whole, and nothing
// is left behind.
func TestWritePrivateFileRace(t *testing.T) {
	dir := writeTempDir(t)
	path := filepath.Join(dir, "config.yaml")
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			errs[i] = WritePrivateFile(path, bytes.Repeat([]byte{'a' + byte(i)}, 64<<10), WriteOptions{})
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("writers %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, fs.ErrExist):
			t.Errorf("writer %d: %v, want fs.ErrExist", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer succeeded")
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := bytes.Repeat([]byte{'a' + byte(winner)}, 64<<10); !bytes.Equal(got, want) {
		t.Errorf("file is not writer %d's data whole (%d bytes)", winner, len(got))
	}
	noTemps(t, dir)
}
