package daemon

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/config"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// writeCert writes a self-signed CA certificate and its key as PEM files.
func writeCert(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := writeCert(t, dir, "ca")
	_, otherKey := writeCert(t, dir, "other")
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("this is not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	cases := []struct {
		name    string
		tls     config.TLS
		wantErr []string // substrings of the error; nil = no error
		check   func(t *testing.T, c *tls.Config)
	}{
		{"none", config.TLS{}, nil, func(t *testing.T, c *tls.Config) {
			if c != nil {
				t.Fatalf("got %+v, want nil (plain connection, system roots)", c)
			}
		}},
		{"missing CA file", config.TLS{CAFile: missing}, []string{"broker.tls.ca_file", "missing.pem"}, nil},
		{"CA file without PEM", config.TLS{CAFile: notPEM}, []string{"broker.tls.ca_file", "no PEM certificate", notPEM}, nil},
		{"CA file", config.TLS{CAFile: ca, ServerName: "broker.example"}, nil, func(t *testing.T, c *tls.Config) {
			if c == nil || c.RootCAs == nil || c.ServerName != "broker.example" || c.MinVersion != tls.VersionTLS12 || c.InsecureSkipVerify {
				t.Fatalf("config %+v", c)
			}
		}},
		{"client certificate", config.TLS{CertFile: ca, KeyFile: caKey}, nil, func(t *testing.T, c *tls.Config) {
			if c == nil || len(c.Certificates) != 1 || c.RootCAs != nil {
				t.Fatalf("config %+v", c)
			}
		}},
		{"certificate with the wrong key", config.TLS{CertFile: ca, KeyFile: otherKey}, []string{"broker.tls.cert_file/key_file"}, nil},
		{"missing key file", config.TLS{CertFile: ca, KeyFile: missing}, []string{"broker.tls.cert_file/key_file"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Broker.TLS = c.tls
			var logBuf bytes.Buffer
			got, err := tlsConfig(cfg, slog.New(slog.NewTextHandler(&logBuf, nil)))
			if c.wantErr != nil {
				if err == nil {
					t.Fatalf("no error, want one with %q", c.wantErr)
				}
				for _, w := range c.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, got)
			if logBuf.Len() != 0 {
				t.Errorf("unexpected log: %s", logBuf.String())
			}
		})
	}
}

func TestTLSInsecureSkipVerifyWarns(t *testing.T) {
	cfg := config.Default()
	cfg.Broker.TLS.InsecureSkipVerify = true
	var logBuf bytes.Buffer
	c, err := tlsConfig(cfg, slog.New(slog.NewTextHandler(&logBuf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if c == nil || !c.InsecureSkipVerify {
		t.Fatalf("config %+v, want InsecureSkipVerify", c)
	}
	out := logBuf.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "insecure_skip_verify") {
		t.Fatalf("no warning naming insecure_skip_verify in the log: %q", out)
	}
}

func TestSubscriptions(t *testing.T) {
	cfg := config.Default()
	cfg.HostID = "h-1"
	cfg.DataDir = t.TempDir()
	cfg.Groups = []string{"web", "db"}
	topics := protocol.Topics{Prefix: cfg.TopicPrefix}
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))

	subs, stale, save := subscriptions(cfg, topics, log)
	want := []string{topics.HostCmd("h-1"), topics.AllCmd(), topics.GroupCmd("web"), topics.GroupCmd("db")}
	if strings.Join(subs, " ") != strings.Join(want, " ") || len(stale) != 0 {
		t.Fatalf("first run: subs %v stale %v", subs, stale)
	}
	save()

	// A group removed from the config is unsubscribed once.
	cfg.Groups = []string{"web"}
	_, stale, save = subscriptions(cfg, topics, log)
	if len(stale) != 1 || stale[0] != topics.GroupCmd("db") {
		t.Fatalf("stale %v, want the db group", stale)
	}
	save()
	if _, stale, _ = subscriptions(cfg, topics, log); len(stale) != 0 {
		t.Fatalf("stale %v after saving", stale)
	}
	if logBuf.Len() != 0 {
		t.Fatalf("unexpected log: %s", logBuf.String())
	}

	// A damaged file is ignored with a warning.
	path := filepath.Join(cfg.DataDir, SubscriptionsFile)
	if err := os.WriteFile(path, []byte(`{"not":"a list"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stale, _ = subscriptions(cfg, topics, log); len(stale) != 0 {
		t.Fatalf("stale %v from a damaged file", stale)
	}
	if !strings.Contains(logBuf.String(), "level=WARN") {
		t.Fatalf("no warning for a damaged file: %q", logBuf.String())
	}
}

func TestRedactURLs(t *testing.T) {
	got := redactURLs([]string{"tcp://user:secret@b1:1883", "ssl://b2:8883", "::bad"})
	if strings.Contains(strings.Join(got, " "), "secret") {
		t.Fatalf("password not redacted: %v", got)
	}
	if got[1] != "ssl://b2:8883" || got[2] != "(unparsable url)" {
		t.Fatalf("redacted %v", got)
	}
}
