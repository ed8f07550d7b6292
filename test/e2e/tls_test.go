package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// tlsEnv is a Mosquitto with TLS listeners requiring a client certificate
// from the fleet CA (the CN becomes the username), an operator connected
// over TLS with its own certificate, and the agent binary.
type tlsEnv struct {
	*env
	mq *harness.Mosquitto
}

// newTLSEnv starts a Mosquitto with one mTLS listener per server
// certificate made by servers (listener i is mq.TLSURL(i)); the operator
// connects to the first one.
func newTLSEnv(t *testing.T, fleet *harness.PKI, servers ...harness.CertPair) *tlsEnv {
	t.Helper()
	var opts []harness.BrokerOption
	for _, s := range servers {
		opts = append(opts, harness.WithTLS(harness.TLSListener{
			CertFile: s.CertFile, KeyFile: s.KeyFile, CAFile: fleet.CAFile(),
			RequireCertificate: true, UseIdentityAsUsername: true,
		}))
	}
	mq := harness.StartMosquitto(t, opts...)
	opCert := fleet.Client("operator")
	op := harness.NewOperator(t, mq.TLSURL(0), harness.WithTLSConfig(fleet.ClientTLS(&opCert)))
	return &tlsEnv{env: &env{t: t, bin: harness.BuildAgent(t), broker: mq, op: op}, mq: mq}
}

// withBroker points the agent at url with the given broker.tls section.
func withBroker(url string, tlsSection map[string]any) func(map[string]any) {
	return func(c map[string]any) {
		b := section(c, "broker")
		b["urls"] = []string{url}
		b["tls"] = tlsSection
	}
}

// clientTLS is a broker.tls section with a CA file and, when cert is not
// nil, the agent's client certificate.
func clientTLS(caFile string, cert *harness.CertPair) map[string]any {
	m := map[string]any{"ca_file": caFile}
	if cert != nil {
		m["cert_file"], m["key_file"] = cert.CertFile, cert.KeyFile
	}
	return m
}

// startAgent starts an agent without waiting for it to come online.
func (e *env) startAgent(host string, mods ...func(map[string]any)) *harness.Agent {
	e.t.Helper()
	e.op.WatchStatus(host)
	return harness.StartAgent(e.t, e.bin, e.config(host, mods...))
}

// ping sends a ping to host and expects it to succeed.
func (e *env) ping(host string) {
	e.t.Helper()
	r := e.op.WaitFinal(e.t, e.op.Send(kind("host:"+host, protocol.KindPing, nil)), host, wait)
	expectState(e.t, r, protocol.StateSucceeded)
}

// waitLog waits until the agent's log contains every one of parts (on one
// line) and returns that line.
func waitLog(t *testing.T, a *harness.Agent, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		for _, l := range strings.Split(a.Log(), "\n") {
			if containsAll(l, parts) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s: no log line with %q within %v", a.HostID(), parts, wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// fastRetry makes a refused agent try again every 50-200 ms. With TLS 1.3
// the client finishes its handshake before the broker checks the client
// certificate, so an attempt may end in "connection reset by peer" (the
// CONNECT write loses the race with the broker's alert) instead of the
// alert itself; a later attempt names it.
func fastRetry(c map[string]any) {
	b := section(c, "broker")
	b["reconnect_min"], b["reconnect_max"] = "50ms", "200ms"
}

// refused asserts that the agent's connection failed with a log line
// containing every one of parts and that it never came online. Start the
// agent with fastRetry.
func (e *env) refused(a *harness.Agent, parts ...string) {
	e.t.Helper()
	line := waitLog(e.t, a, append([]string{"broker connection failed"}, parts...)...)
	e.t.Logf("agent %s refused: %s", a.HostID(), line)
	if st := e.op.Statuses(a.HostID()); len(st) > 0 {
		e.t.Fatalf("agent %s was refused but published a status: %+v", a.HostID(), st)
	}
	if strings.Contains(a.Log(), "connected to broker") {
		e.t.Fatalf("agent %s logged a connection:\n%s", a.HostID(), a.LogTail())
	}
}

// TestTLSVerifiedConnection: agents verify the broker against their CA
// file and present a client certificate, over every TLS scheme the agent
// accepts, including websockets; the operator uses TLS too.
func TestTLSVerifiedConnection(t *testing.T) {
	fleet := harness.NewPKI(t, "fleet CA")
	server := fleet.Server("127.0.0.1")
	mq := harness.StartMosquitto(t,
		harness.WithTLS(harness.TLSListener{CertFile: server.CertFile, KeyFile: server.KeyFile, CAFile: fleet.CAFile(), RequireCertificate: true, UseIdentityAsUsername: true}),
		harness.WithTLS(harness.TLSListener{CertFile: server.CertFile, KeyFile: server.KeyFile, CAFile: fleet.CAFile(), RequireCertificate: true, UseIdentityAsUsername: true, Websocket: true}),
	)
	opCert := fleet.Client("operator")
	e := &env{t: t, bin: harness.BuildAgent(t), broker: mq, op: harness.NewOperator(t, mq.TLSURL(0), harness.WithTLSConfig(fleet.ClientTLS(&opCert)))}

	ssl := mq.TLSURL(0)
	port := ssl[strings.LastIndex(ssl, ":")+1:]
	urls := map[string]string{
		"tls-ssl":   ssl,
		"tls-tls":   "tls://127.0.0.1:" + port,
		"tls-mqtts": "mqtts://127.0.0.1:" + port,
		"tls-wss":   mq.TLSURL(1),
	}
	agents := map[string]*harness.Agent{}
	for host, url := range urls {
		cert := fleet.Client(host)
		agents[host] = e.startAgent(host, withBroker(url, clientTLS(fleet.CAFile(), &cert)))
	}
	for host, a := range agents {
		e.waitOnline(a)
		e.ping(host)
		if !strings.Contains(a.Log(), urls[host]) {
			t.Errorf("agent %s: log does not name the broker %s", host, urls[host])
		}
	}
	// The broker saw each agent's certificate CN as its username.
	log := readFile(t, mq.LogPath())
	for host := range urls {
		if !strings.Contains(log, "u'"+host+"'") {
			t.Errorf("broker log has no connection with username %s", host)
		}
	}
}

// TestTLSWrongCA: an agent whose ca_file is another CA refuses the broker.
func TestTLSWrongCA(t *testing.T) {
	fleet := harness.NewPKI(t, "fleet CA")
	other := harness.NewPKI(t, "other CA")
	e := newTLSEnv(t, fleet, fleet.Server("127.0.0.1"))
	cert := fleet.Client("wrong-ca")
	a := e.startAgent("wrong-ca", withBroker(e.mq.TLSURL(0), clientTLS(other.CAFile(), &cert)), fastRetry)
	e.refused(a, "certificate signed by unknown authority")
	// The right CA file with the same certificate: online.
	cert2 := fleet.Client("right-ca")
	e.waitOnline(e.startAgent("right-ca", withBroker(e.mq.TLSURL(0), clientTLS(fleet.CAFile(), &cert2))))
}

// TestTLSMissingClientCert: with require_certificate the broker refuses
// an agent that verifies it but has no client certificate, and one whose
// certificate is from another CA.
func TestTLSMissingClientCert(t *testing.T) {
	fleet := harness.NewPKI(t, "fleet CA")
	other := harness.NewPKI(t, "other CA")
	e := newTLSEnv(t, fleet, fleet.Server("127.0.0.1"))

	a := e.startAgent("no-cert", withBroker(e.mq.TLSURL(0), clientTLS(fleet.CAFile(), nil)), fastRetry)
	e.refused(a, "certificate required")

	foreign := other.Client("foreign-cert")
	b := e.startAgent("foreign-cert", withBroker(e.mq.TLSURL(0), clientTLS(fleet.CAFile(), &foreign)), fastRetry)
	e.refused(b, "unknown certificate authority")

	log := readFile(t, e.mq.LogPath())
	for _, want := range []string{"peer did not return a certificate", "certificate verify failed"} {
		if !strings.Contains(log, want) {
			t.Errorf("broker log lacks %q", want)
		}
	}
}

// TestTLSServerName: the broker's certificate names broker.test only; an
// agent dialling 127.0.0.1 refuses it unless broker.tls.server_name says
// which name to verify.
func TestTLSServerName(t *testing.T) {
	fleet := harness.NewPKI(t, "fleet CA")
	e := newTLSEnv(t, fleet, fleet.Server("127.0.0.1"), fleet.Server("broker.test"))
	url := e.mq.TLSURL(1)

	c1 := fleet.Client("sni-wrong")
	a := e.startAgent("sni-wrong", withBroker(url, clientTLS(fleet.CAFile(), &c1)), fastRetry)
	e.refused(a, "x509: cannot validate certificate for 127.0.0.1")

	c2 := fleet.Client("sni-other")
	wrongName := clientTLS(fleet.CAFile(), &c2)
	wrongName["server_name"] = "other.test"
	b := e.startAgent("sni-other", withBroker(url, wrongName), fastRetry)
	e.refused(b, "certificate is valid for broker.test, not other.test")

	c3 := fleet.Client("sni-right")
	right := clientTLS(fleet.CAFile(), &c3)
	right["server_name"] = "broker.test"
	e.waitOnline(e.startAgent("sni-right", withBroker(url, right)))
	e.ping("sni-right")
}

// TestTLSInsecureSkipVerify: with insecure_skip_verify the agent connects
// to a broker whose certificate it could not verify (unknown CA, wrong
// name) and logs a loud warning.
func TestTLSInsecureSkipVerify(t *testing.T) {
	fleet := harness.NewPKI(t, "fleet CA")
	rogue := harness.NewPKI(t, "rogue CA")
	e := newTLSEnv(t, fleet, fleet.Server("127.0.0.1"), rogue.Server("rogue.test"))
	cert := fleet.Client("insecure-1")
	a := e.startAgent("insecure-1", withBroker(e.mq.TLSURL(1), map[string]any{
		"cert_file": cert.CertFile, "key_file": cert.KeyFile, "insecure_skip_verify": true,
	}))
	e.waitOnline(a)
	e.ping("insecure-1")
	if !strings.Contains(a.Log(), "TLS SERVER VERIFICATION IS OFF") {
		t.Fatalf("no warning about insecure_skip_verify in the agent log:\n%s", a.LogTail())
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// genCerts runs broker-config/mosquitto/gen-certs.sh with -d dir and args.
func genCerts(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	bash := harness.RequireTool(t, "bash", "")
	harness.RequireTool(t, "openssl", "apt-get install -y openssl")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := osexec.CommandContext(ctx, bash, append([]string{filepath.Join(shippedDir(t), "gen-certs.sh"), "-d", dir}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// runGenCerts runs the script into a new directory and returns it.
func runGenCerts(t *testing.T, args ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if out, err := genCerts(t, dir, args...); err != nil {
		t.Fatalf("gen-certs.sh %v: %v\n%s", args, err, out)
	}
	return dir
}

// loadCert parses the PEM certificate at path.
func loadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(readFile(t, path)))
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// TestCertScript: gen-certs.sh makes two CAs, a broker certificate with
// the given names, host certificates whose CN is the host id, operator
// and dashboard certificates, each verifying against the right CA only,
// with P-256 keys readable by nobody else; a second run reuses the CAs and
// keeps what exists; bad input is refused.
func TestCertScript(t *testing.T) {
	groups := writeTemp(t, "groups.txt", "# host groups\nweb-01 web db\ndb-01 db\n\n")
	dir := runGenCerts(t, "-s", "broker.example.com", "-s", "10.0.0.5", "-G", groups, "-o", "alice", "app-1")
	path := func(name string) string { return filepath.Join(dir, name) }

	fleet, opCA := loadCert(t, path("fleet-ca.pem")), loadCert(t, path("operator-ca.pem"))
	for _, ca := range []*x509.Certificate{fleet, opCA} {
		if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 || ca.CheckSignatureFrom(ca) != nil {
			t.Errorf("%s: not a self-signed CA", ca.Subject)
		}
	}
	pool := func(c *x509.Certificate) *x509.CertPool { p := x509.NewCertPool(); p.AddCert(c); return p }
	verify := func(name string, ca *x509.Certificate, usage x509.ExtKeyUsage) error {
		_, err := loadCert(t, path(name)).Verify(x509.VerifyOptions{Roots: pool(ca), KeyUsages: []x509.ExtKeyUsage{usage}})
		return err
	}

	broker := loadCert(t, path("broker.pem"))
	if err := broker.VerifyHostname("broker.example.com"); err != nil {
		t.Error(err)
	}
	if err := broker.VerifyHostname("10.0.0.5"); err != nil {
		t.Error(err)
	}
	if err := verify("broker.pem", fleet, x509.ExtKeyUsageServerAuth); err != nil {
		t.Errorf("broker.pem: %v", err)
	}
	if err := verify("broker.pem", fleet, x509.ExtKeyUsageClientAuth); err == nil {
		t.Errorf("broker.pem is valid as a client certificate")
	}

	clients := []struct {
		file string
		cn   string
		ca   *x509.Certificate
	}{
		{"hosts/app-1", "app-1", fleet},
		{"hosts/web-01", "web-01", fleet},
		{"hosts/db-01", "db-01", fleet},
		{"dashboard", "dashboard", fleet},
		{"operator", "operator", opCA},
		{"operator-alice", "operator", opCA},
	}
	for _, c := range clients {
		cert := loadCert(t, path(c.file+".pem"))
		if cert.Subject.CommonName != c.cn {
			t.Errorf("%s: CN %q, want %q", c.file, cert.Subject.CommonName, c.cn)
		}
		if err := verify(c.file+".pem", c.ca, x509.ExtKeyUsageClientAuth); err != nil {
			t.Errorf("%s: %v", c.file, err)
		}
		other := fleet
		if c.ca == fleet {
			other = opCA
		}
		if err := verify(c.file+".pem", other, x509.ExtKeyUsageClientAuth); err == nil {
			t.Errorf("%s verifies against the other CA", c.file)
		}
		if err := verify(c.file+".pem", c.ca, x509.ExtKeyUsageServerAuth); err == nil {
			t.Errorf("%s is valid as a server certificate", c.file)
		}
		pair, err := tls.LoadX509KeyPair(path(c.file+".pem"), path(c.file+".key"))
		if err != nil {
			t.Errorf("%s: %v", c.file, err)
			continue
		}
		if k, ok := pair.PrivateKey.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
			t.Errorf("%s: key %T, want ECDSA P-256", c.file, pair.PrivateKey)
		}
	}
	if ou := loadCert(t, path("operator-alice.pem")).Subject.OrganizationalUnit; !slices.Equal(ou, []string{"alice"}) {
		t.Errorf("operator-alice OU %v", ou)
	}
	keys, _ := filepath.Glob(path("*.key"))
	hostKeys, _ := filepath.Glob(path("hosts/*.key"))
	for _, k := range append(keys, hostKeys...) {
		if st, err := os.Stat(k); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", k, st.Mode().Perm(), err)
		}
	}

	// The strict acl: no "any group" pattern, each host's groups.
	strict := readFile(t, path("acl.strict"))
	for _, want := range []string{
		"# (strict mode) pattern read mqagent/v1/groups/+/cmd\n",
		"user web-01\ntopic read mqagent/v1/groups/web/cmd\ntopic read mqagent/v1/groups/db/cmd\n",
		"user db-01\ntopic read mqagent/v1/groups/db/cmd\n",
	} {
		if !strings.Contains(strict, want) {
			t.Errorf("acl.strict lacks %q", want)
		}
	}
	if strings.Contains(strict, "\npattern read mqagent/v1/groups/+/cmd") {
		t.Errorf("acl.strict still grants every group")
	}

	// A second run: the CAs and existing certificates stay, new hosts
	// are added.
	before := map[string]string{}
	for _, f := range []string{"fleet-ca.pem", "fleet-ca.key", "operator-ca.pem", "broker.pem", "hosts/app-1.pem"} {
		before[f] = readFile(t, path(f))
	}
	if out, err := genCerts(t, dir, "app-1", "app-2"); err != nil {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	for f, b := range before {
		if readFile(t, path(f)) != b {
			t.Errorf("second run changed %s", f)
		}
	}
	if err := verify("hosts/app-2.pem", fleet, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("app-2 from the second run: %v", err)
	}

	// Refusals.
	halfCA := runGenCerts(t, "-s", "localhost")
	if err := os.Remove(filepath.Join(halfCA, "operator-ca.key")); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name string
		dir  string
		args []string
		want string
	}{
		{"half a CA", halfCA, []string{"h1"}, "refusing to replace half a CA"},
		{"no broker name", filepath.Join(t.TempDir(), "x"), []string{"h1"}, "-s DNS_NAME"},
		{"invalid host id", filepath.Join(t.TempDir(), "x"), []string{"-s", "localhost", "Web_01"}, `invalid host id "Web_01"`},
		{"reserved host id", filepath.Join(t.TempDir(), "x"), []string{"-s", "localhost", "operator"}, `host id "operator" is reserved`},
		{"invalid group", filepath.Join(t.TempDir(), "x"), []string{"-s", "localhost", "-G", writeTemp(t, "g.txt", "web-01 Bad/Group\n")}, `invalid group "Bad/Group"`},
		{"invalid broker name", filepath.Join(t.TempDir(), "x"), []string{"-s", "bad name"}, "neither a DNS name nor an IP address"},
		{"unknown option", filepath.Join(t.TempDir(), "x"), []string{"-x"}, "unknown option -x"},
	}
	for _, b := range bad {
		out, err := genCerts(t, b.dir, b.args...)
		if err == nil || !strings.Contains(out, b.want) {
			t.Errorf("%s: err %v, output %q, want a failure naming %q", b.name, err, out, b.want)
		}
	}
}
