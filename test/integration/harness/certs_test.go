package harness

import (
	"crypto/pbkdf2"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// handshake runs a TLS handshake over a pipe between a server presenting
// server and requiring a client certificate from serverCA, and a client
// using clientCfg; it returns the client's error.
func handshake(t *testing.T, server CertPair, serverCA *PKI, clientCfg *tls.Config) error {
	t.Helper()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	srv := tls.Server(c1, &tls.Config{
		Certificates: []tls.Certificate{server.TLS(t)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    serverCA.Pool(),
	})
	done := make(chan error, 1)
	go func() { done <- srv.Handshake(); _ = c1.Close() }()
	cli := tls.Client(c2, clientCfg)
	err := cli.Handshake()
	if err == nil {
		// TLS 1.3: the server's verdict on the client certificate comes
		// after the client's handshake.
		_, err = cli.Read(make([]byte, 1))
		if err != nil && strings.Contains(err.Error(), "EOF") {
			err = nil
		}
	}
	if serr := <-done; serr != nil && err == nil {
		err = serr
	}
	return err
}

func TestPKI(t *testing.T) {
	ca := NewPKI(t, "test CA")
	other := NewPKI(t, "other CA")
	server := ca.Server("127.0.0.1", "broker.test")
	if err := server.Cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if err := server.Cert.VerifyHostname("broker.test"); err != nil {
		t.Error(err)
	}
	client := ca.Client("web-01")
	if client.Cert.Subject.CommonName != "web-01" {
		t.Errorf("client CN %q", client.Cert.Subject.CommonName)
	}
	if _, err := client.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate does not verify: %v", err)
	}
	if _, err := client.Cert.Verify(x509.VerifyOptions{Roots: other.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Errorf("client certificate verifies against an unrelated CA")
	}
	if st, err := os.Stat(client.KeyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v", st.Mode().Perm(), err)
	}

	good := ca.ClientTLS(&client)
	good.ServerName = "broker.test"
	if err := handshake(t, server, ca, good); err != nil {
		t.Errorf("handshake with the right CA and certificate: %v", err)
	}
	wrongCA := other.ClientTLS(&client)
	wrongCA.ServerName = "broker.test"
	if err := handshake(t, server, ca, wrongCA); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("handshake verifying against another CA: %v", err)
	}
	foreign := other.Client("web-01")
	foreignCfg := ca.ClientTLS(&foreign)
	foreignCfg.ServerName = "broker.test"
	if err := handshake(t, server, ca, foreignCfg); err == nil {
		t.Errorf("handshake with a client certificate of another CA succeeded")
	}
}

func TestMosquittoPasswordLine(t *testing.T) {
	line, err := MosquittoPasswordLine("dashboard", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	user, rest, _ := strings.Cut(line, ":")
	f := strings.Split(rest, "$")
	if user != "dashboard" || len(f) != 5 || f[0] != "" || f[1] != "7" || f[2] != strconv.Itoa(pwIterations) {
		t.Fatalf("line %q", line)
	}
	salt, err1 := base64.StdEncoding.DecodeString(f[3])
	hash, err2 := base64.StdEncoding.DecodeString(f[4])
	if err1 != nil || err2 != nil || len(salt) != pwSaltLen || len(hash) != pwKeyLen {
		t.Fatalf("line %q: salt %d bytes (%v), hash %d bytes (%v)", line, len(salt), err1, len(hash), err2)
	}
	want, err := pbkdf2.Key(sha512.New, "s3cret", salt, pwIterations, pwKeyLen)
	if err != nil || string(want) != string(hash) {
		t.Fatalf("hash does not match PBKDF2-SHA512 of the password (%v)", err)
	}
	for _, bad := range []string{"", "a:b", "a\nb"} {
		if _, err := MosquittoPasswordLine(bad, "x"); err == nil {
			t.Errorf("user %q accepted", bad)
		}
	}
}
