package client

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// TLSFiles are the TLS settings of a broker connection as files, with the
// same meaning as the agent's broker.tls keys: CAFile (PEM) replaces the
// system roots, CertFile and KeyFile (PEM, together) are the client
// certificate for mutual TLS, ServerName overrides the name checked in
// the broker's certificate, InsecureSkipVerify turns the check off
// (testing only: anyone in between can then impersonate the broker).
type TLSFiles struct {
	CAFile             string
	CertFile           string
	KeyFile            string
	ServerName         string
	InsecureSkipVerify bool
}

// Config builds the tls.Config (TLS 1.2 at least). Errors name the
// setting at fault.
func (f TLSFiles) Config() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName, InsecureSkipVerify: f.InsecureSkipVerify}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca file: no PEM certificate in %s", f.CAFile)
		}
		c.RootCAs = pool
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, fmt.Errorf("tls cert file and key file: give both or neither")
	}
	if f.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls cert file/key file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
