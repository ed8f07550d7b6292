package harness

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// certValidity is how long a test certificate is valid (from an hour ago,
// to tolerate small clock differences).
const certValidity = 24 * time.Hour

// PKI is a throwaway certificate authority for one test: an ECDSA P-256
// CA whose certificate and keys live in a temporary directory of the test,
// issuing server certificates (for a TLS listener) and client certificates
// (CN = the identity, as Mosquitto's use_identity_as_username reads it).
// Two PKIs of a test are unrelated: a certificate of one does not verify
// against the other, which is how a test gets a "wrong CA".
type PKI struct {
	t      testing.TB
	dir    string
	name   string
	cert   *x509.Certificate
	key    crypto.Signer
	caFile string

	mu sync.Mutex
	n  int // certificates issued, for unique file names
}

// CertPair is a certificate and its private key, as PEM files (the key
// PKCS#8, mode 0600).
type CertPair struct {
	CertFile string
	KeyFile  string
	// Cert is the parsed certificate.
	Cert *x509.Certificate
}

// NewPKI creates a CA named name (its CN) in a temporary directory of the
// test.
func NewPKI(t testing.TB, name string) *PKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("pki %s: %v", name, err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"mqagent test"}, CommonName: name},
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	p := &PKI{t: t, dir: t.TempDir(), name: name, key: key}
	der, err := p.sign(tmpl, key.Public(), nil)
	if err != nil {
		t.Fatalf("pki %s: %v", name, err)
	}
	if p.cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatalf("pki %s: %v", name, err)
	}
	p.caFile = filepath.Join(p.dir, "ca.pem")
	if err := writePEM(p.caFile, "CERTIFICATE", der, 0o644); err != nil {
		t.Fatalf("pki %s: %v", name, err)
	}
	return p
}

// CAFile is the CA certificate (PEM): the agent's broker.tls.ca_file, or
// a listener's cafile.
func (p *PKI) CAFile() string { return p.caFile }

// CA is the CA certificate.
func (p *PKI) CA() *x509.Certificate { return p.cert }

// Pool is a certificate pool holding the CA, for a tls.Config.
func (p *PKI) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.cert)
	return pool
}

// Server issues a server certificate (extended key usage serverAuth) for
// names: IP addresses become IP SANs, anything else DNS SANs. The CN is
// the first name.
func (p *PKI) Server(names ...string) CertPair {
	p.t.Helper()
	if len(names) == 0 {
		p.t.Fatalf("pki %s: a server certificate needs at least one name", p.name)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"mqagent test"}, CommonName: names[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return p.issue("server-"+names[0], tmpl)
}

// Client issues a client certificate (extended key usage clientAuth) whose
// CN is cn.
func (p *PKI) Client(cn string) CertPair {
	p.t.Helper()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"mqagent test"}, CommonName: cn},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return p.issue("client-"+cn, tmpl)
}

// ClientTLS is a TLS configuration for a client that verifies the broker
// against this CA and, when client is not nil, presents that certificate.
func (p *PKI) ClientTLS(client *CertPair) *tls.Config {
	p.t.Helper()
	c := &tls.Config{RootCAs: p.Pool(), MinVersion: tls.VersionTLS12}
	if client != nil {
		c.Certificates = []tls.Certificate{client.TLS(p.t)}
	}
	return c
}

// TLS loads the pair as a tls.Certificate.
func (c CertPair) TLS(t testing.TB) tls.Certificate {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		t.Fatalf("load %s: %v", c.CertFile, err)
	}
	return cert
}

// issue signs tmpl with a fresh key and writes the pair as
// NN-label.pem/.key.
func (p *PKI) issue(label string, tmpl *x509.Certificate) CertPair {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatalf("pki %s: %v", p.name, err)
	}
	tmpl.BasicConstraintsValid = true
	der, err := p.sign(tmpl, key.Public(), p.cert)
	if err != nil {
		p.t.Fatalf("pki %s: issue %s: %v", p.name, label, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		p.t.Fatalf("pki %s: issue %s: %v", p.name, label, err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		p.t.Fatalf("pki %s: issue %s: %v", p.name, label, err)
	}
	p.mu.Lock()
	p.n++
	base := filepath.Join(p.dir, fmt.Sprintf("%02d-%s", p.n, fileLabel(label)))
	p.mu.Unlock()
	pair := CertPair{CertFile: base + ".pem", KeyFile: base + ".key", Cert: cert}
	if err := writePEM(pair.CertFile, "CERTIFICATE", der, 0o644); err != nil {
		p.t.Fatalf("pki %s: %v", p.name, err)
	}
	if err := writePEM(pair.KeyFile, "PRIVATE KEY", pkcs8, 0o600); err != nil {
		p.t.Fatalf("pki %s: %v", p.name, err)
	}
	return pair
}

// sign fills in serial, validity and key ids and signs tmpl with the CA
// key (self-signed when parent is nil).
func (p *PKI) sign(tmpl *x509.Certificate, pub crypto.PublicKey, parent *x509.Certificate) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	now := time.Now()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(certValidity)
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	ski := sha256.Sum256(pubDER)
	tmpl.SubjectKeyId = ski[:20]
	if parent == nil {
		parent = tmpl
	}
	return x509.CreateCertificate(rand.Reader, tmpl, parent, pub, p.key)
}

// writePEM writes one PEM block to a new file with mode perm.
func writePEM(path, blockType string, der []byte, perm os.FileMode) error {
	b := pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
	if err := os.WriteFile(path, b, perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// WriteFile applies the umask; make the mode exact.
	if err := os.Chmod(path, perm); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	return nil
}

// fileLabel keeps the characters of s that are safe in a file name.
func fileLabel(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.', r == '_':
			return r
		}
		return '_'
	}, s)
}
