package service

import (
	"bytes"
	"encoding/xml"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

var updateDeploy = flag.Bool("update", false, "rewrite deploy/systemd and deploy/launchd from the templates")

// deploySpec is the installation the files in deploy/ describe.
var deploySpec = Spec{Exe: "/usr/local/bin/mqagent", Config: "/etc/mqagent/config.yaml"}

// TestDeployFiles: the unit and plist shipped in deploy/ are exactly what
// `mqagent service install` writes for the default paths.
func TestDeployFiles(t *testing.T) {
	for _, c := range []struct {
		path string
		want string
	}{
		{"../../deploy/systemd/mqagent.service", SystemdUnit(deploySpec)},
		{"../../deploy/launchd/mqagent.plist", LaunchdPlist(deploySpec)},
	} {
		if *updateDeploy {
			if err := os.WriteFile(c.path, []byte(c.want), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != c.want {
			t.Errorf("%s differs from what service install writes; regenerate it: go test ./pkg/service -run TestDeployFiles -args -update", c.path)
		}
	}
}

func TestSystemdUnit(t *testing.T) {
	u := SystemdUnit(deploySpec)
	for _, want := range []string{
		"\nExecStart=/usr/local/bin/mqagent run --config /etc/mqagent/config.yaml\n",
		"\nRestart=on-failure\n", "\nKillMode=mixed\n", "\nStandardOutput=null\n", "\nStandardError=journal\n",
		"\nWantedBy=multi-user.target\n", "\nConditionFileIsExecutable=/usr/local/bin/mqagent\n",
	} {
		if !strings.Contains(u, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	// Options that would sandbox the commands the agent runs are
	// documented, never set.
	for _, line := range strings.Split(u, "\n") {
		for _, opt := range []string{"NoNewPrivileges=", "ProtectSystem=", "ProtectHome=", "PrivateTmp=", "CapabilityBoundingSet=", "SystemCallFilter="} {
			if strings.HasPrefix(line, opt) {
				t.Errorf("unit sets %s", line)
			}
		}
	}
}

func TestSystemdQuoting(t *testing.T) {
	cases := []struct {
		exe, config string
		exec        string
	}{
		{"/usr/bin/mqagent", "/etc/mqagent/a.yaml", "/usr/bin/mqagent run --config /etc/mqagent/a.yaml"},
		{"/opt/my agent/mqagent", "/etc/mq agent/c.yaml", `"/opt/my agent/mqagent" run --config "/etc/mq agent/c.yaml"`},
		{"/opt/50%/mqagent", "/etc/$HOME/c.yaml", `/opt/50%%/mqagent run --config /etc/$$HOME/c.yaml`},
		{`/opt/q"uote/mqagent`, `/etc/back\slash.yaml`, `"/opt/q\"uote/mqagent" run --config "/etc/back\\slash.yaml"`},
	}
	for _, c := range cases {
		u := SystemdUnit(Spec{Exe: c.exe, Config: c.config})
		if !strings.Contains(u, "\nExecStart="+c.exec+"\n") {
			t.Errorf("%s: unit has no ExecStart=%s:\n%s", c.exe, c.exec, u)
		}
		if got, ok := execStartExe(u); !ok || got != c.exe {
			t.Errorf("execStartExe = %q %v, want %q", got, ok, c.exe)
		}
	}
}

// TestSystemdAnalyzeVerify runs systemd's own checker on the unit.
func TestSystemdAnalyzeVerify(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("systemd is Linux only")
	}
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze is required under CI=true")
		}
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	exe, err := os.Executable() // any existing executable will do
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, Name+".service")
	if err := os.WriteFile(unit, []byte(SystemdUnit(Spec{Exe: exe, Config: filepath.Join(dir, "config.yaml")})), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(tool, "verify", unit)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || out.Len() > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out.String())
	}
}

func TestLaunchdPlist(t *testing.T) {
	spec := Spec{Exe: "/opt/mq & co/mqagent", Config: "/etc/<mq>/c.yaml"}
	p := LaunchdPlist(spec)
	// Well-formed XML with the arguments escaped.
	d := xml.NewDecoder(strings.NewReader(p))
	d.Strict = true
	var strs []string
	inArgs := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("plist is not XML: %v\n%s", err, p)
		}
		switch tk := tok.(type) {
		case xml.CharData:
			s := strings.TrimSpace(string(tk))
			if s == "ProgramArguments" {
				inArgs = true
			} else if inArgs && s != "" {
				strs = append(strs, s)
			}
		case xml.EndElement:
			if tk.Name.Local == "array" {
				inArgs = false
			}
		}
	}
	want := []string{spec.Exe, "run", "--config", spec.Config}
	if strings.Join(strs, "|") != strings.Join(want, "|") {
		t.Fatalf("ProgramArguments %q, want %q", strs, want)
	}
	if exe, ok := plistExe(p); !ok || exe != spec.Exe {
		t.Fatalf("plistExe = %q %v", exe, ok)
	}
	for _, want := range []string{"<key>SuccessfulExit</key>\n\t\t<false/>", "<string>/dev/null</string>", "<key>RunAtLoad</key>\n\t<true/>"} {
		if !strings.Contains(p, want) {
			t.Errorf("plist lacks %q", want)
		}
	}
}

func TestSpecValidate(t *testing.T) {
	for _, c := range []struct {
		spec Spec
		ok   bool
	}{
		{Spec{Exe: "/a/mqagent", Config: "/etc/c.yaml"}, true},
		{Spec{Exe: "mqagent", Config: "/etc/c.yaml"}, false},
		{Spec{Exe: "/a/mqagent", Config: "c.yaml"}, false},
		{Spec{}, false},
	} {
		if runtime.GOOS == "windows" {
			continue
		}
		if err := c.spec.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: Validate = %v", c.spec, err)
		}
	}
}
