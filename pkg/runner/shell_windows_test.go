package runner

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/windows"

	"github.com/mqagent/mqagent/test/windows/wintest"
)

// TestPrivateDirACL: the script directory has a protected DACL granting
// access to the agent's user and SYSTEM only.
func TestPrivateDirACL(t *testing.T) {
	parent := wintest.TempDir(t)
	dir, err := createPrivateDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(dir)
	if filepath.Dir(dir) != parent {
		t.Fatalf("private dir %s not in %s", dir, parent)
	}
	sd, err := windows.GetNamedSecurityInfo(dir, windows.SE_FILE_OBJECT, windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		t.Fatal(err)
	}
	tu, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		t.Fatal(err)
	}
	got := sd.String()
	t.Logf("security descriptor: %s", got)
	if !strings.HasPrefix(got, "D:P") {
		if v, wine := wintest.WineVersion(); wine {
			t.Logf("Wine %s does not keep the DACL's protected flag", v)
		} else {
			t.Errorf("DACL not protected: %s", got)
		}
	}
	user := tu.User.Sid.String()
	aces := strings.TrimPrefix(strings.TrimPrefix(got, "D:"), "P")
	for _, ace := range strings.SplitAfter(aces, ")") {
		if ace == "" {
			continue
		}
		if !strings.HasSuffix(ace, ";;;SY)") && !strings.HasSuffix(ace, ";;;"+user+")") {
			t.Errorf("unexpected ACE %s (want SYSTEM and %s only)", ace, user)
		}
	}
	if n := strings.Count(got, "(A;"); n != 2 {
		t.Errorf("%d allow entries, want 2: %s", n, got)
	}
}

// TestScriptFiles runs a .cmd script (labels, goto, args, exit code: CRLF
// line ends matter) and checks the .ps1 file format (PowerShell itself is
// a stub under Wine).
func TestScriptFiles(t *testing.T) {
	dir := wintest.TempDir(t)
	script := "@echo off\nset X=%~1\ngoto :skip\necho not skipped\n:skip\necho arg=%X% second=%~2\nexit /b 6\n"
	argv, cleanup, err := WriteScript(dir, "cmd", script, []string{"one", "two words"})
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	res := Run(ctx, Spec{Argv: argv})
	if !res.Exited || res.ExitCode != 6 {
		t.Fatalf("Exited=%v ExitCode=%d StartErr=%v stdout=%q stderr=%q", res.Exited, res.ExitCode, res.StartErr, res.Stdout, res.Stderr)
	}
	if got, want := strings.TrimSpace(string(res.Stdout)), "arg=one second=two words"; got != want {
		t.Fatalf("stdout = %q, want %q", got, want)
	}
	cleanup()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("cleanup left %v", ents)
	}

	argv, cleanup2, err := WriteScript(dir, "powershell", "param($a)\nWrite-Output \"héllo $a\"\n", []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup2()
	var path string
	for _, a := range argv {
		if i := strings.Index(a, "& '"); i >= 0 {
			path = a[i+3:]
			path = path[:strings.Index(path, "'")]
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("argv %q: %v", argv, err)
	}
	if string(b) != "\ufeffparam($a)\nWrite-Output \"héllo $a\"\n" {
		t.Fatalf(".ps1 content = %q, want UTF-8 with BOM", b)
	}
	if argv[0] != "powershell.exe" || !strings.Contains(strings.Join(argv, " "), "-ExecutionPolicy Bypass -Command") {
		t.Fatalf("argv = %q", argv)
	}
}

// TestPowerShellRuns runs PowerShell for real; skipped under Wine, where
// PowerShell is a stub that prints nothing.
func TestPowerShellRuns(t *testing.T) {
	wintest.SkipUnderWine(t, "PowerShell is a stub")
	argv, err := ShellArgv("powershell", `Write-Output "héllo"; cmd /c exit 3`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	res := Run(ctx, Spec{Argv: argv})
	if !res.Exited || res.ExitCode != 3 {
		t.Fatalf("Exited=%v ExitCode=%d StartErr=%v stderr=%q", res.Exited, res.ExitCode, res.StartErr, res.Stderr)
	}
	if got := strings.TrimSpace(string(res.Stdout)); got != "héllo" {
		t.Fatalf("stdout = %q, want UTF-8 héllo", got)
	}
}
