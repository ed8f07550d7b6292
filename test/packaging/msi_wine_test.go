package packaging

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// Windows paths of the installation.
const (
	winExe    = `C:\Program Files\mqagent\mqagent.exe`
	winData   = `C:\ProgramData\mqagent`
	winConfig = `C:\ProgramData\mqagent\config.yaml`
	svcKey    = `HKLM\SYSTEM\CurrentControlSet\Services\mqagent`
)

// serviceRuns reports whether the installed service can run under Wine:
// that needs the test-only wine build tag of pkg/service (see
// /pkg/service/*wine*.go) and the agent's service support. When it
// cannot, the MSI is built without starting the service and the test
// checks everything but the running service; the reason is returned.
func serviceRuns(t *testing.T) (bool, string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(moduleRoot(t), "pkg", "service", "*.go"))
	tagged := false
	for _, f := range files {
		if bytes.Contains(readFile(t, f), []byte("//go:build windows && wine")) {
			tagged = true
		}
	}
	if !tagged {
		return false, "pkg/service has no file with the build constraint `windows && wine` (the test-only service support under Wine)"
	}
	if r := agent(t, "service", "--help"); r.code != 0 {
		return false, "the agent has no `service` command yet (pkg/service is not wired into the agent)"
	}
	return true, ""
}

// windowsExe is the agent for windows/amd64, built with the test-only
// wine tag when the service can run under Wine (serviceRuns). The MSI
// tests share these builds.
func windowsExe(t *testing.T, version string) string {
	t.Helper()
	if ok, _ := serviceRuns(t); ok {
		return agentBuild(t, "windows", "amd64", version, "wine")
	}
	return agentBuild(t, "windows", "amd64", version)
}

// installed is the configuration written at installation, as YAML.
type installed struct {
	HostID  string   `yaml:"host_id"`
	DataDir string   `yaml:"data_dir"`
	Groups  []string `yaml:"groups"`
	Broker  struct {
		URLs []string `yaml:"urls"`
		TLS  struct {
			CAFile   string `yaml:"ca_file"`
			CertFile string `yaml:"cert_file"`
			KeyFile  string `yaml:"key_file"`
		} `yaml:"tls"`
	} `yaml:"broker"`
	Security struct {
		TrustedKeys []struct {
			ID        string   `yaml:"id"`
			PublicKey string   `yaml:"public_key"`
			Kinds     []string `yaml:"kinds"`
		} `yaml:"trusted_keys"`
	} `yaml:"security"`
}

// msiexec runs Wine's msiexec with a verbose log and returns the exit
// status (modulo 256, as Wine passes it) and the log.
func (p *winePrefix) msiexec(t *testing.T, args ...string) (int, string) {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "msiexec.log")
	r := p.run(t, 4*time.Minute, append(append([]string{"msiexec"}, args...), "/qn", "/l*v", winPath(logFile))...)
	log, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("msiexec %s: no log (exit %d): %v\n%s", strings.Join(args, " "), r.code, err, r.out)
	}
	return r.code, string(log)
}

// mustMsiexec is msiexec that fails the test unless the operation
// succeeded (exit 0 and the log says so).
func (p *winePrefix) mustMsiexec(t *testing.T, args ...string) string {
	t.Helper()
	code, log := p.msiexec(t, args...)
	if code != 0 || !strings.Contains(log, "INSTALL. Return value 1.") {
		t.Fatalf("msiexec %s: exit %d\n%s", strings.Join(args, " "), code, tail(log, 60))
	}
	return log
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// reset removes what an earlier run left in the prefix: installed
// products, the service, the files and data.
func (p *winePrefix) reset(t *testing.T) {
	t.Helper()
	for code, name := range p.products(t) {
		if name == "mqagent" {
			p.msiexec(t, "/x", code)
		}
	}
	if p.regQuery(t, svcKey) != nil {
		p.run(t, time.Minute, "sc", "stop", "mqagent")
		p.run(t, time.Minute, "sc", "delete", "mqagent")
	}
	for _, d := range []string{winData, `C:\Program Files\mqagent`} {
		if err := os.RemoveAll(p.path(d)); err != nil {
			t.Fatal(err)
		}
	}
}

// productCode is the ProductCode of an MSI.
func productCode(t *testing.T, msi string) string {
	t.Helper()
	return msiRow(t, msi, "Property", "Property", "ProductCode")["Value"]
}

// TestMSIWine installs the MSI under Wine with the properties of a silent
// rollout, checks what it installed (files, configuration, TLS copies,
// service) and, when the service can run under Wine, that the service is
// online on a real Mosquitto over mutual TLS and answers a signed command;
// then upgrades it with a newer MSI (configuration and data kept, new
// version running), checks that an older MSI is refused, and uninstalls
// it (service stopped and removed, only data left).
func TestMSIWine(t *testing.T) {
	requireTools(t, msiTools...)
	w := wine(t)
	running, why := serviceRuns(t)
	if !running {
		t.Logf("NOT TESTED: the service running and connected: %s", why)
	}
	exe1 := windowsExe(t, "1.0.0")
	exe2 := windowsExe(t, "1.1.0")
	msi1 := buildMSI(t, msiSpec{exe: exe1, version: "1.0.0", arch: "x64", noStart: !running})
	msi2 := buildMSI(t, msiSpec{exe: exe2, version: "1.1.0", arch: "x64", noStart: !running})
	code1, code2 := productCode(t, msi1), productCode(t, msi2)

	w.reset(t)
	t.Cleanup(func() { w.reset(t) })

	// A broker that requires client certificates; the operator uses its
	// plain listener.
	pki := harness.NewPKI(t, "msi")
	srv := pki.Server("127.0.0.1")
	mq := harness.StartMosquitto(t, harness.WithTLS(harness.TLSListener{
		CertFile: srv.CertFile, KeyFile: srv.KeyFile, CAFile: pki.CAFile(), RequireCertificate: true,
	}))
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	host := "msi-wine-" + hex.EncodeToString(rnd[:])
	client := pki.Client(host)
	opsPub, _ := testKey(t)
	ciPub, ciKey := testKey(t)
	op := harness.NewOperator(t, mq.URL())
	op.WatchStatus(host)

	// 0. A first installation without the required keys fails, says why
	// in install-error.txt, and leaves nothing installed.
	code, log := w.msiexec(t, "/i", winPath(msi1), "BROKER_URL="+mq.TLSURL(0))
	if code == 0 || strings.Contains(log, "INSTALL. Return value 1.") {
		t.Fatalf("installation without TRUSTED_KEY: exit %d\n%s", code, tail(log, 30))
	}
	if msg := readFile(t, w.path(winData+`\install-error.txt`)); !bytes.Contains(msg, []byte("security.trusted_keys: at least one key is required")) {
		t.Errorf("install-error.txt does not say what is missing:\n%s", msg)
	}
	for _, p := range []string{winExe, winConfig} {
		if _, err := os.Stat(w.path(p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s exists after a failed installation: %v", p, err)
		}
	}
	if w.regQuery(t, svcKey) != nil || len(w.products(t)) != 0 {
		t.Errorf("a failed installation left the service or the product registered: %v", w.products(t))
	}

	// 1. Install.
	w.mustMsiexec(t, "/i", winPath(msi1),
		"BROKER_URL="+mq.TLSURL(0)+",ssl://127.0.0.1:1",
		"HOST_GROUPS=web,eu",
		"HOST_ID="+host,
		"CA_FILE="+winPath(pki.CAFile()),
		"CERT_FILE="+winPath(client.CertFile),
		"KEY_FILE="+winPath(client.KeyFile),
		"TRUSTED_KEY=ops="+opsPub+":exec,shell;ci="+ciPub,
	)
	if got := readFile(t, w.path(winExe)); !bytes.Equal(got, readFile(t, exe1)) {
		t.Errorf("%s is not the packed exe (%d bytes)", winExe, len(got))
	}
	cfgBytes := readFile(t, w.path(winConfig))
	var cfg installed
	if err := yaml.Unmarshal(cfgBytes, &cfg); err != nil {
		t.Fatalf("config: %v\n%s", err, cfgBytes)
	}
	if cfg.HostID != host || cfg.DataDir != winData {
		t.Errorf("host_id %q, data_dir %q; want %q, %q", cfg.HostID, cfg.DataDir, host, winData)
	}
	if want := []string{mq.TLSURL(0), "ssl://127.0.0.1:1"}; !reflect.DeepEqual(cfg.Broker.URLs, want) {
		t.Errorf("broker urls %q, want %q", cfg.Broker.URLs, want)
	}
	if want := []string{"web", "eu"}; !reflect.DeepEqual(cfg.Groups, want) {
		t.Errorf("groups %q, want %q", cfg.Groups, want)
	}
	tlsFiles := map[string]string{
		cfg.Broker.TLS.CAFile:   pki.CAFile(),
		cfg.Broker.TLS.CertFile: client.CertFile,
		cfg.Broker.TLS.KeyFile:  client.KeyFile,
	}
	for winFile, src := range tlsFiles {
		if !strings.HasPrefix(winFile, winData+`\tls\`) {
			t.Errorf("TLS file %q is not a copy in %s\\tls", winFile, winData)
			continue
		}
		if !bytes.Equal(readFile(t, w.path(winFile)), readFile(t, src)) {
			t.Errorf("%s is not a copy of %s", winFile, src)
		}
	}
	keys := cfg.Security.TrustedKeys
	if len(keys) != 2 || keys[0].ID != "ops" || keys[0].PublicKey != opsPub || !reflect.DeepEqual(keys[0].Kinds, []string{"exec", "shell"}) ||
		keys[1].ID != "ci" || keys[1].PublicKey != ciPub || keys[1].Kinds != nil {
		t.Errorf("trusted keys: %+v", keys)
	}

	svc := w.regQuery(t, svcKey)
	if svc == nil {
		t.Fatal("the service is not registered")
	}
	// Wine's msiexec writes the ImagePath unquoted; the ConfigureService
	// action (`mqagent service install`) quotes the executable's path.
	if image, want := svc["ImagePath"], `"`+winExe+`" run --config `+winConfig; image != want {
		t.Errorf("service ImagePath %q, want %q", image, want)
	}
	for name, want := range map[string]string{"Start": "0x2", "ObjectName": "LocalSystem", "DisplayName": "mqagent host agent", "Type": "0x10"} {
		if svc[name] != want {
			t.Errorf("service %s = %q, want %q", name, svc[name], want)
		}
	}
	if got := w.products(t); !reflect.DeepEqual(got, map[string]string{code1: "mqagent"}) {
		t.Errorf("installed products %v, want only %s", got, code1)
	}

	var session uint64
	if running {
		s := op.WaitStatus(t, host, func(s protocol.Status) bool {
			return s.State == protocol.StatusOnline && s.Version == "1.0.0"
		}, 90*time.Second)
		if !reflect.DeepEqual(s.Groups, []string{"web", "eu"}) || s.OS != "windows" {
			t.Errorf("online status: groups %q, os %q", s.Groups, s.OS)
		}
		session = s.Session
		id := op.SendSigned(protocol.Command{Kind: protocol.KindPing, Target: "host:" + host}, "ci", ciKey)
		if r := op.WaitFinal(t, id, host, 30*time.Second); r.State != protocol.StateSucceeded {
			t.Errorf("signed ping: %+v", r)
		}
	} else {
		// Stand-in for the agent's data: it must survive the upgrade and
		// the uninstallation.
		writeFile(t, w.path(winData+`\state.db`), []byte("data"), 0o600)
	}

	// 2. Upgrade: other properties are ignored, the configuration kept.
	w.mustMsiexec(t, "/i", winPath(msi2), "BROKER_URL=tcp://127.0.0.1:1", "HOST_GROUPS=other")
	if got := readFile(t, w.path(winConfig)); !bytes.Equal(got, cfgBytes) {
		t.Errorf("the upgrade changed the configuration:\n%s", got)
	}
	if got := readFile(t, w.path(winExe)); !bytes.Equal(got, readFile(t, exe2)) {
		t.Errorf("%s is not the new exe after the upgrade", winExe)
	}
	if got := w.products(t); !reflect.DeepEqual(got, map[string]string{code2: "mqagent"}) {
		t.Errorf("installed products after the upgrade %v, want only %s", got, code2)
	}
	if w.regQuery(t, svcKey) == nil {
		t.Error("the service is not registered after the upgrade")
	}
	if _, err := os.Stat(w.path(winData + `\state.db`)); err != nil {
		t.Errorf("the agent's data did not survive the upgrade: %v", err)
	}
	if _, err := os.Stat(w.path(winData + `\install-error.txt`)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("install-error.txt of the failed attempt is still there after successful installations: %v", err)
	}
	if running {
		s := op.WaitStatus(t, host, func(s protocol.Status) bool {
			return s.State == protocol.StatusOnline && s.Version == "1.1.0"
		}, 90*time.Second)
		if s.Session <= session {
			t.Errorf("session %d after the upgrade, want more than %d (the state was kept)", s.Session, session)
		}
	}

	// 3. An older MSI does not downgrade.
	code, log = w.msiexec(t, "/i", winPath(msi1))
	// (Wine's log does not show the launch condition's message: it shows
	// the newer product found and the launch conditions failing.)
	if code == 0 || strings.Contains(log, "INSTALL. Return value 1.") || !strings.Contains(log, "WIX_DOWNGRADE_DETECTED = "+code2) {
		t.Errorf("installing 1.0.0 over 1.1.0: exit %d\n%s", code, tail(log, 30))
	}
	if got := w.products(t); !reflect.DeepEqual(got, map[string]string{code2: "mqagent"}) {
		t.Errorf("installed products after the refused downgrade %v, want only %s", got, code2)
	}

	// 4. Uninstall: service stopped and removed, files removed, data left.
	before := len(op.Statuses(host))
	w.mustMsiexec(t, "/x", winPath(msi2))
	if running {
		op.WaitNextStatus(t, host, before, func(s protocol.Status) bool {
			return s.State == protocol.StatusOffline && s.Reason == protocol.ReasonShutdown
		}, 60*time.Second)
	}
	if w.regQuery(t, svcKey) != nil {
		t.Error("the service is still registered after the uninstallation")
	}
	if _, err := os.Stat(w.path(winExe)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s still exists after the uninstallation: %v", winExe, err)
	}
	if got := w.products(t); len(got) != 0 {
		t.Errorf("installed products after the uninstallation: %v", got)
	}
	left, err := os.ReadDir(w.path(winData))
	if err != nil {
		t.Fatalf("the data directory is gone: %v", err)
	}
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	for _, want := range []string{"config.yaml", "tls", "state.db"} {
		if !slices.Contains(names, want) {
			t.Errorf("%s lacks %s after the uninstallation (left: %q)", winData, want, names)
		}
	}
}
