package packaging

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// msiTools are what building and reading an MSI need.
var msiTools = []string{"wixl", "msibuild", "msiinfo", "bash"}

// signer is a throwaway code-signing certificate.
type signer struct {
	cert, key string
}

// env is the signing environment of build-msi.sh and sign.sh.
func (s *signer) env() []string {
	if s == nil {
		return []string{"MQAGENT_SIGN_CERT="}
	}
	return []string{"MQAGENT_SIGN_CERT=" + s.cert, "MQAGENT_SIGN_KEY=" + s.key, "MQAGENT_SIGN_CAFILE=" + s.cert}
}

// newSigner makes a self-signed code-signing certificate with openssl.
func newSigner(t *testing.T, name string) *signer {
	t.Helper()
	requireTools(t, "openssl")
	dir := t.TempDir()
	s := &signer{cert: filepath.Join(dir, "cert.pem"), key: filepath.Join(dir, "key.pem")}
	mustRun(t, time.Minute, dir, nil, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
		"-keyout", s.key, "-out", s.cert, "-subj", "/CN="+name,
		"-addext", "extendedKeyUsage=codeSigning", "-addext", "keyUsage=digitalSignature")
	return s
}

// msiSpec is one MSI build.
type msiSpec struct {
	exe     string
	version string
	arch    string // x64, arm64
	noStart bool
	sign    *signer
}

// buildMSI runs deploy/windows/build-msi.sh and returns the MSI's path.
func buildMSI(t *testing.T, s msiSpec) string {
	t.Helper()
	requireTools(t, msiTools...)
	out := filepath.Join(t.TempDir(), "mqagent-"+s.version+"-"+s.arch+".msi")
	args := []string{filepath.Join(moduleRoot(t), "deploy", "windows", "build-msi.sh"),
		"--exe", s.exe, "--version", s.version, "--arch", s.arch, "--out", out}
	if s.noStart {
		args = append(args, "--no-start-service")
	}
	if s.sign != nil {
		requireTools(t, "osslsigncode")
	}
	mustRun(t, 5*time.Minute, "", s.sign.env(), "bash", args...)
	return out
}

// msiRows reads a table with `msiinfo export`: one map per row, column
// name to value.
func msiRows(t *testing.T, msi, table string) []map[string]string {
	t.Helper()
	out := mustRun(t, time.Minute, "", nil, "msiinfo", "export", msi, table)
	lines := strings.Split(strings.ReplaceAll(out, "\r\n", "\n"), "\n")
	if len(lines) < 3 {
		t.Fatalf("msiinfo export %s: %q", table, out)
	}
	cols := strings.Split(lines[0], "\t")
	var rows []map[string]string
	for _, l := range lines[3:] { // names, types, table name and keys
		if l == "" {
			continue
		}
		vals := strings.Split(l, "\t")
		row := make(map[string]string, len(cols))
		for i, c := range cols {
			if i < len(vals) {
				row[c] = vals[i]
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// msiRow is the row of table whose column key is value.
func msiRow(t *testing.T, msi, table, key, value string) map[string]string {
	t.Helper()
	for _, r := range msiRows(t, msi, table) {
		if r[key] == value {
			return r
		}
	}
	t.Fatalf("%s: no row with %s = %q", table, key, value)
	return nil
}

// want checks columns of a row.
func want(t *testing.T, table string, row map[string]string, cols map[string]string) {
	t.Helper()
	for c, v := range cols {
		if row[c] != v {
			t.Errorf("%s.%s = %q, want %q (row %v)", table, c, row[c], v, row)
		}
	}
}

// upgradeCode is the product's UpgradeCode: it must never change.
const upgradeCode = "{C278A2A7-CD3D-4333-A0F6-15436718E843}"

// publicProperties are the properties of a silent installation.
var publicProperties = []string{"BROKER_URL", "HOST_GROUPS", "CA_FILE", "CERT_FILE", "KEY_FILE", "TRUSTED_KEY", "HOST_ID"}

// TestMSITables builds the MSIs (x64, arm64, and the test-only variant
// whose service is not started) and checks their tables.
func TestMSITables(t *testing.T) {
	requireTools(t, msiTools...)
	exe := windowsExe(t, "1.0.0") // the one TestMSIWine installs (the MSI has its own version)
	for _, tc := range []struct {
		arch     string
		noStart  bool
		template string
		event    string
	}{
		{"x64", false, "x64;1033", "163"},     // start on install, stop on install and uninstall, delete on uninstall
		{"arm64", false, "Arm64;1033", "163"}, // (the exe of the wrong architecture does not matter here)
		{"x64", true, "x64;1033", "162"},      // the same without the start
	} {
		t.Run(fmt.Sprintf("%s-nostart=%v", tc.arch, tc.noStart), func(t *testing.T) {
			msi := buildMSI(t, msiSpec{exe: exe, version: "v1.2.3", arch: tc.arch, noStart: tc.noStart})
			checkMSITables(t, msi, "1.2.3", tc.template, tc.event)
		})
	}
}

func checkMSITables(t *testing.T, msi, version, template, event string) {
	t.Helper()
	sum := mustRun(t, time.Minute, "", nil, "msiinfo", "suminfo", msi)
	if !strings.Contains(sum, "Template: "+template+"\n") {
		t.Errorf("summary template is not %s:\n%s", template, sum)
	}
	if !strings.Contains(sum, "Version: 500 ") {
		t.Errorf("schema is not 500 (Windows Installer 5):\n%s", sum)
	}

	want(t, "Property", msiRow(t, msi, "Property", "Property", "ProductVersion"), map[string]string{"Value": version})
	want(t, "Property", msiRow(t, msi, "Property", "Property", "UpgradeCode"), map[string]string{"Value": upgradeCode})
	want(t, "Property", msiRow(t, msi, "Property", "Property", "ALLUSERS"), map[string]string{"Value": "1"})
	secure := strings.Split(msiRow(t, msi, "Property", "Property", "SecureCustomProperties")["Value"], ";")
	for _, p := range append(slices.Clone(publicProperties), "WIX_UPGRADE_DETECTED", "WIX_DOWNGRADE_DETECTED") {
		if !slices.Contains(secure, p) {
			t.Errorf("SecureCustomProperties %q lacks %s", secure, p)
		}
	}

	want(t, "File", msiRow(t, msi, "File", "File", "AgentExe"), map[string]string{"Component_": "AgentComponent", "FileName": "mqagent.exe"})
	want(t, "Component", msiRow(t, msi, "Component", "Component", "AgentComponent"), map[string]string{
		"ComponentId": "{E2861926-36D7-4032-B67B-FFD306AE7240}", "Directory_": "INSTALLDIR",
		"Attributes": "256", // 64-bit
		"KeyPath":    "AgentExe",
	})
	want(t, "Directory", msiRow(t, msi, "Directory", "Directory", "INSTALLDIR"), map[string]string{"Directory_Parent": "ProgramFiles64Folder", "DefaultDir": "mqagent"})

	want(t, "ServiceInstall", msiRow(t, msi, "ServiceInstall", "Name", "mqagent"), map[string]string{
		"DisplayName":  "mqagent host agent",
		"ServiceType":  "16", // own process
		"StartType":    "2",  // automatic
		"ErrorControl": "1",
		"StartName":    "LocalSystem",
		"Arguments":    `run --config "[CommonAppDataFolder]mqagent\config.yaml"`,
		"Component_":   "AgentComponent",
	})
	want(t, "ServiceControl", msiRow(t, msi, "ServiceControl", "Name", "mqagent"), map[string]string{
		"Event": event, "Wait": "1", "Component_": "AgentComponent",
	})

	// The configuration action: deferred, as LocalSystem, from the
	// installed exe, every property passed quoted, an existing
	// configuration kept; its rollback; the install id set first.
	wc := msiRow(t, msi, "CustomAction", "Action", "WriteConfig")
	want(t, "CustomAction", wc, map[string]string{"Type": "3090", "Source": "AgentExe"})
	target := wc["Target"]
	for _, frag := range []string{
		"config init --keep-existing ",
		`--error-file "[CommonAppDataFolder]mqagent\install-error.txt"`,
		`--out "[CommonAppDataFolder]mqagent\config.yaml"`,
		`--data-dir "[CommonAppDataFolder]mqagent"`,
		`--copy-tls-to "[CommonAppDataFolder]mqagent\tls"`,
		`--install-id "[MQAGENT_INSTALL_ID]"`,
		`--broker-url "[BROKER_URL]"`, `--groups "[HOST_GROUPS]"`, `--ca-file "[CA_FILE]"`,
		`--cert-file "[CERT_FILE]"`, `--key-file "[KEY_FILE]"`, `--trusted-key "[TRUSTED_KEY]"`, `--host-id "[HOST_ID]"`,
	} {
		if !strings.Contains(target, frag) {
			t.Errorf("WriteConfig's command line lacks %s: %s", frag, target)
		}
	}
	want(t, "CustomAction", msiRow(t, msi, "CustomAction", "Action", "WriteConfigRollback"), map[string]string{
		"Type": "3410", "Source": "AgentExe",
		"Target": `config rollback --out "[CommonAppDataFolder]mqagent\config.yaml" --install-id "[MQAGENT_INSTALL_ID]"`,
	})
	want(t, "CustomAction", msiRow(t, msi, "CustomAction", "Action", "ConfigureService"), map[string]string{
		"Type": "3090", "Source": "AgentExe",
		"Target": `service install --config "[CommonAppDataFolder]mqagent\config.yaml"`,
	})
	want(t, "CustomAction", msiRow(t, msi, "CustomAction", "Action", "SetInstallId"), map[string]string{
		"Type": "51", "Source": "MQAGENT_INSTALL_ID",
	})

	seq := make(map[string]int)
	cond := make(map[string]string)
	for _, r := range msiRows(t, msi, "InstallExecuteSequence") {
		n, err := strconv.Atoi(r["Sequence"])
		if err != nil {
			t.Fatalf("InstallExecuteSequence: %v", r)
		}
		seq[r["Action"]] = n
		cond[r["Action"]] = r["Condition"]
	}
	order := []string{"FindRelatedProducts", "LaunchConditions", "InstallValidate", "RemoveExistingProducts", "InstallInitialize",
		"StopServices", "DeleteServices", "InstallFiles", "WriteConfigRollback", "WriteConfig", "InstallServices", "ConfigureService", "StartServices", "InstallFinalize"}
	for i, a := range order {
		if _, ok := seq[a]; !ok {
			t.Errorf("InstallExecuteSequence lacks %s", a)
			continue
		}
		if i > 0 && seq[a] <= seq[order[i-1]] {
			t.Errorf("InstallExecuteSequence: %s (%d) is not after %s (%d)", a, seq[a], order[i-1], seq[order[i-1]])
		}
	}
	// The deferred actions' command lines are formatted when the script is
	// written (from InstallInitialize on): the install id must be set by
	// then.
	if seq["SetInstallId"] == 0 || seq["SetInstallId"] >= seq["InstallInitialize"] {
		t.Errorf("SetInstallId (%d) is not before InstallInitialize (%d)", seq["SetInstallId"], seq["InstallInitialize"])
	}
	for _, a := range []string{"SetInstallId", "WriteConfigRollback", "WriteConfig", "ConfigureService"} {
		if cond[a] != `NOT REMOVE~="ALL"` {
			t.Errorf("%s runs on condition %q, want NOT REMOVE~=\"ALL\"", a, cond[a])
		}
	}

	// Major upgrade: older versions are found and removed, newer ones
	// stop the installation.
	var up, down map[string]string
	for _, r := range msiRows(t, msi, "Upgrade") {
		switch r["ActionProperty"] {
		case "WIX_UPGRADE_DETECTED":
			up = r
		case "WIX_DOWNGRADE_DETECTED":
			down = r
		}
	}
	if up == nil || down == nil {
		t.Fatalf("Upgrade table: %v", msiRows(t, msi, "Upgrade"))
	}
	want(t, "Upgrade", up, map[string]string{"UpgradeCode": upgradeCode, "VersionMin": "", "VersionMax": version, "Attributes": "1"})
	want(t, "Upgrade", down, map[string]string{"UpgradeCode": upgradeCode, "VersionMin": version, "VersionMax": "", "Attributes": "2"})
	want(t, "LaunchCondition", msiRow(t, msi, "LaunchCondition", "Condition", "NOT WIX_DOWNGRADE_DETECTED"), map[string]string{
		"Description": "A newer version of mqagent is already installed.",
	})
}

// TestMSISigned: the exe inside and the MSI itself carry Authenticode
// signatures that osslsigncode verifies against the signing certificate;
// another certificate or one changed byte fails the verification.
func TestMSISigned(t *testing.T) {
	requireTools(t, append(slices.Clone(msiTools), "osslsigncode", "openssl", "msiextract")...)
	s := newSigner(t, "mqagent test code signing")
	exe := windowsExe(t, "1.0.0") // the one TestMSIWine installs (the MSI has its own version)
	msi := buildMSI(t, msiSpec{exe: exe, version: "1.2.3", arch: "x64", sign: s})

	verify := func(file, ca string) result {
		return run(t, time.Minute, "", nil, "osslsigncode", "verify", "-CAfile", ca, "-in", file)
	}
	if r := verify(msi, s.cert); r.code != 0 || !strings.Contains(r.out, "Succeeded") {
		t.Errorf("the MSI's signature does not verify: exit %d\n%s", r.code, r.out)
	}
	// The exe packed inside was signed before the MSI was built.
	dir := t.TempDir()
	mustRun(t, time.Minute, dir, nil, "msiextract", "-C", dir, msi)
	var packed string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "mqagent.exe" {
			packed = p
		}
		return nil
	})
	if packed == "" {
		t.Fatal("msiextract found no mqagent.exe in the MSI")
	}
	if r := verify(packed, s.cert); r.code != 0 || !strings.Contains(r.out, "Succeeded") {
		t.Errorf("the packed exe's signature does not verify: exit %d\n%s", r.code, r.out)
	}
	if r := run(t, time.Minute, "", nil, "osslsigncode", "verify", "-CAfile", s.cert, "-in", exe); r.code == 0 {
		t.Error("the unsigned input exe verifies: the build signed it in place")
	}

	// Another certificate is not trusted.
	other := newSigner(t, "someone else")
	if r := verify(msi, other.cert); r.code == 0 {
		t.Errorf("the MSI verifies against another certificate:\n%s", r.out)
	}
	// A changed byte in the package breaks the signature.
	data := readFile(t, msi)
	data[len(data)/2] ^= 0xff
	tampered := filepath.Join(t.TempDir(), "tampered.msi")
	writeFile(t, tampered, data, 0o644)
	if r := verify(tampered, s.cert); r.code == 0 {
		t.Errorf("a changed MSI verifies:\n%s", r.out)
	}
}
