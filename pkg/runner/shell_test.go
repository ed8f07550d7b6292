package runner

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/mqagent/mqagent/test/windows/wintest"
)

func TestShellArgv(t *testing.T) {
	const (
		ps     = "try { [Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false } catch {}\n"
		psExit = "\nif (-not $?) { if ($LASTEXITCODE) { exit $LASTEXITCODE } else { exit 1 } }"
	)
	tests := []struct {
		goos, shell, command string
		want                 []string
		wantErr              string // substring; "" = no error
	}{
		{"linux", "", "echo hi", []string{"sh", "-c", "echo hi"}, ""},
		{"linux", "sh", "echo hi", []string{"sh", "-c", "echo hi"}, ""},
		{"darwin", "bash", "echo hi", []string{"bash", "-c", "echo hi"}, ""},
		{"linux", "pwsh", "Get-Date", []string{"pwsh", "-NoProfile", "-NonInteractive", "-Command", "Get-Date"}, ""},
		{"linux", "cmd", "dir", nil, `shell "cmd" is not available on linux`},
		{"linux", "powershell", "Get-Date", nil, `shell "powershell" is not available on linux`},
		{"linux", "zsh", "echo", nil, `unknown shell "zsh"`},
		{"linux", "sh", "", nil, "empty"},
		{"linux", "sh", "  \n", nil, "empty"},
		{"windows", "", `echo "a b" & exit 3`, []string{"cmd.exe", "/d", "/s", "/c", `chcp 65001 >nul 2>&1 & (call ) & echo "a b" & exit 3`}, ""},
		{"windows", "cmd", "ver", []string{"cmd.exe", "/d", "/s", "/c", "chcp 65001 >nul 2>&1 & (call ) & ver"}, ""},
		{"windows", "powershell", "Get-Date", []string{"powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command", ps + "Get-Date" + psExit}, ""},
		{"windows", "pwsh", "Get-Date", []string{"pwsh.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command", ps + "Get-Date" + psExit}, ""},
		{"windows", "sh", "ls", nil, `shell "sh" is not available on windows`},
		{"windows", "fish", "ls", nil, `unknown shell "fish"`},
	}
	for _, tt := range tests {
		t.Run(tt.goos+"/"+tt.shell+"/"+tt.command, func(t *testing.T) {
			got, err := shellArgv(tt.goos, tt.shell, tt.command)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				if tt.command != "" && strings.TrimSpace(tt.command) != "" && !errors.Is(err, ErrUnsupportedShell) {
					t.Fatalf("err = %v, want ErrUnsupportedShell", err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestShellArgvThisOS(t *testing.T) {
	argv, err := ShellArgv("", "echo hi")
	if err != nil || len(argv) == 0 {
		t.Fatalf("default shell: %q, %v", argv, err)
	}
	if _, err := ShellArgv("nosuchshell", "echo hi"); err == nil || !strings.Contains(err.Error(), `"nosuchshell"`) {
		t.Fatalf("err = %v, want one naming the shell", err)
	}
}

func TestCmdExeCmdLine(t *testing.T) {
	tests := []struct {
		argv   []string
		want   string
		wantOK bool
	}{
		{[]string{"cmd.exe", "/d", "/s", "/c", `chcp 65001 >nul 2>&1 & echo "a b"`}, `cmd.exe /d /s /c "chcp 65001 >nul 2>&1 & echo "a b""`, true},
		{[]string{`C:\Windows\System32\CMD.EXE`, "/C", "echo", "a b"}, `C:\Windows\System32\CMD.EXE /C echo a b`, true},
		{[]string{`C:\Program Files\x\cmd.exe`, "/s", "/k", "dir"}, `"C:\Program Files\x\cmd.exe" /s /k "dir"`, true},
		{[]string{"cmd", "/d"}, "", false},
		{[]string{"powershell.exe", "/c", "x"}, "", false},
		{[]string{"notcmd.exe", "/c", "x"}, "", false},
		{nil, "", false},
	}
	for _, tt := range tests {
		got, ok := cmdExeCmdLine(tt.argv)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("cmdExeCmdLine(%q) = %q, %v; want %q, %v", tt.argv, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestWindowsEscapeArg(t *testing.T) {
	tests := map[string]string{
		"":          `""`,
		"plain":     "plain",
		`a\b`:       `a\b`,
		"a b":       `"a b"`,
		`a"b`:       `"a\"b"`,
		`a\"b`:      `"a\\\"b"`,
		`C:\dir x\`: `"C:\dir x\\"`,
		"tab\there": "\"tab\there\"",
	}
	for in, want := range tests {
		if got := windowsEscapeArg(in); got != want {
			t.Errorf("windowsEscapeArg(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCmdQuote(t *testing.T) {
	tests := map[string]string{
		"plain":     "plain",
		"":          `""`,
		"a b":       `"a b"`,
		`say "hi"`:  `"say ""hi"""`,
		"a&b":       `"a&b"`,
		`C:\x\y.md`: `C:\x\y.md`,
	}
	for in, want := range tests {
		if got := cmdQuote(in); got != want {
			t.Errorf("cmdQuote(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWriteScript(t *testing.T) {
	const (
		ps     = "-NoProfile -NonInteractive -ExecutionPolicy Bypass -Command"
		psUTF8 = "try { [Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false } catch {}\n"
		psExit = "\nif (-not $?) { if ($LASTEXITCODE) { exit $LASTEXITCODE } else { exit 1 } }"
	)
	found := func(names ...string) func(string) (string, error) {
		return func(name string) (string, error) {
			if slices.Contains(names, name) {
				return name, nil
			}
			return "", errors.New("not found")
		}
	}
	tests := []struct {
		name        string
		goos        string
		lookPath    func(string) (string, error)
		interpreter string
		content     string
		args        []string
		wantExt     string
		wantArgv    string // with PATH for the script path
		wantContent string
	}{
		{"unix default", "linux", nil, "", "echo hi\n", []string{"a", "b"}, ".sh", "sh PATH a b", "echo hi\n"},
		{"bash", "linux", nil, "bash", "echo hi", []string{"a", "b"}, ".sh", "bash PATH a b", "echo hi"},
		{"python3", "linux", nil, "python3", "print(1)", []string{"a", "b"}, ".py", "python3 PATH a b", "print(1)"},
		{"pwsh on unix", "linux", nil, "pwsh", "Get-Date", []string{"a", "b"}, ".ps1", "pwsh -NoProfile -NonInteractive -File PATH a b", "\ufeffGet-Date"},
		{"windows default", "windows", nil, "", "echo hi\r\nexit /b 3\n", []string{"a", "b c"}, ".cmd",
			`cmd.exe /d /s /c chcp 65001 >nul 2>&1 & (call ) & PATH a "b c"`, "echo hi\r\nexit /b 3\r\n"},
		{"powershell", "windows", nil, "powershell", "\ufeffGet-Date", []string{"a", "it's"}, ".ps1",
			"powershell.exe " + ps + " " + psUTF8 + "& 'PATH' 'a' 'it''s'" + psExit, "\ufeffGet-Date"},
		{"pwsh", "windows", nil, "pwsh", "Get-Date", nil, ".ps1", "pwsh.exe " + ps + " " + psUTF8 + "& 'PATH'" + psExit, "\ufeffGet-Date"},
		{"python3 on windows", "windows", found("python3", "py"), "python3", "x", []string{"a", "b"}, ".py", "python3 PATH a b", "x"},
		{"py launcher", "windows", found("py", "python"), "python3", "x", []string{"a", "b"}, ".py", "py -3 PATH a b", "x"},
		{"python", "windows", found("python"), "python3", "x", []string{"a", "b"}, ".py", "python PATH a b", "x"},
		{"no python at all", "windows", found(), "python3", "x", []string{"a", "b"}, ".py", "python3 PATH a b", "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(wintest.TempDir(t), "scripts", "nested")
			argv, cleanup, err := writeScript(tt.goos, tt.lookPath, dir, tt.interpreter, tt.content, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			var path string
			for _, a := range argv { // the script is an argument, or inside the cmd /c or -Command line
				if i := strings.Index(a, dir); i >= 0 {
					rest := a[i:]
					if j := strings.Index(rest, tt.wantExt); j >= 0 {
						path = rest[:j+len(tt.wantExt)]
					}
				}
			}
			private := filepath.Dir(path)
			if path == "" || filepath.Dir(private) != dir || !strings.HasPrefix(filepath.Base(private), "run-") || filepath.Ext(path) != tt.wantExt {
				t.Fatalf("argv %q: no script %s in a run-* directory in %s", argv, tt.wantExt, dir)
			}
			if got := strings.ReplaceAll(strings.Join(argv, " "), path, "PATH"); got != tt.wantArgv {
				t.Errorf("argv = %q, want %q", got, tt.wantArgv)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.wantContent {
				t.Errorf("content = %q, want %q", b, tt.wantContent)
			}
			if runtime.GOOS != "windows" {
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if want := os.FileMode(0o700); tt.goos != "windows" && fi.Mode().Perm() != want {
					t.Errorf("script mode = %v, want %v", fi.Mode().Perm(), want)
				}
				for _, d := range []string{dir, private} {
					di, err := os.Stat(d)
					if err != nil {
						t.Fatal(err)
					}
					if di.Mode().Perm() != 0o700 {
						t.Errorf("%s mode = %v, want 0700", d, di.Mode().Perm())
					}
				}
			}
			cleanup()
			for _, p := range []string{path, private} {
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("after cleanup: stat %s: err = %v, want not exist", p, err)
				}
			}
			if _, err := os.Stat(dir); err != nil {
				t.Errorf("cleanup removed the scripts directory itself: %v", err)
			}
			cleanup() // twice is fine
		})
	}
}

func TestPSQuote(t *testing.T) {
	tests := map[string]string{
		"":                    "''",
		"plain":               "'plain'",
		"it's":                "'it''s'",
		`C:\dir x\$env:X`:     `'C:\dir x\$env:X'`,
		"a\u2019b":            "'a\u2019\u2019b'",
		"\u2018x\u201a\u201b": "'\u2018\u2018x\u201a\u201a\u201b\u201b'",
		`"dq"`:                `'"dq"'`,
	}
	for in, want := range tests {
		if got := psQuote(in); got != want {
			t.Errorf("psQuote(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWriteScriptErrors(t *testing.T) {
	tests := []struct {
		goos, interpreter string
		args              []string
		want              string
	}{
		{"linux", "cmd", nil, `interpreter "cmd" is not available on linux`},
		{"linux", "powershell", nil, `interpreter "powershell" is not available on linux`},
		{"windows", "bash", nil, `interpreter "bash" is not available on windows`},
		{"linux", "perl", nil, `unknown interpreter "perl"`},
		{"linux", "sh", []string{"ok", "bad\x00"}, "args[1] contains a NUL byte"},
	}
	for _, tt := range tests {
		t.Run(tt.goos+"/"+tt.interpreter, func(t *testing.T) {
			dir := wintest.TempDir(t)
			_, _, err := writeScript(tt.goos, nil, dir, tt.interpreter, "x", tt.args)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("a failed WriteScript left files behind: %v", ents)
			}
		})
	}
}

func TestCRLF(t *testing.T) {
	tests := map[string]string{
		"":           "",
		"a":          "a",
		"a\nb\n":     "a\r\nb\r\n",
		"a\r\nb\n":   "a\r\nb\r\n",
		"\n\n":       "\r\n\r\n",
		"a\r\n\r\nb": "a\r\n\r\nb",
	}
	for in, want := range tests {
		if got := crlf(in); got != want {
			t.Errorf("crlf(%q) = %q, want %q", in, got, want)
		}
	}
}
