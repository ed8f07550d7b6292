package runner

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func TestShellArgv(t *testing.T) {
	const ps = "[Console]::OutputEncoding=[Text.Encoding]::UTF8; "
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
		{"windows", "", `echo "a b" & exit 3`, []string{"cmd.exe", "/d", "/s", "/c", `chcp 65001 >nul 2>&1 & echo "a b" & exit 3`}, ""},
		{"windows", "cmd", "ver", []string{"cmd.exe", "/d", "/s", "/c", "chcp 65001 >nul 2>&1 & ver"}, ""},
		{"windows", "powershell", "Get-Date", []string{"powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command", ps + "Get-Date"}, ""},
		{"windows", "pwsh", "Get-Date", []string{"pwsh.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command", ps + "Get-Date"}, ""},
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
	const ps = "-NoProfile -NonInteractive -ExecutionPolicy Bypass -File"
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
		wantExt     string
		wantArgv    string // with PATH for the script path
		wantContent string
	}{
		{"unix default", "linux", nil, "", "echo hi\n", ".sh", "sh PATH a b", "echo hi\n"},
		{"bash", "linux", nil, "bash", "echo hi", ".sh", "bash PATH a b", "echo hi"},
		{"python3", "linux", nil, "python3", "print(1)", ".py", "python3 PATH a b", "print(1)"},
		{"pwsh on unix", "linux", nil, "pwsh", "Get-Date", ".ps1", "pwsh -NoProfile -NonInteractive -File PATH a b", "\ufeffGet-Date"},
		{"windows default", "windows", nil, "", "echo hi\r\nexit /b 3\n", ".cmd", `cmd.exe /d /s /c chcp 65001 >nul 2>&1 & PATH a b`, "echo hi\r\nexit /b 3\r\n"},
		{"powershell", "windows", nil, "powershell", "\ufeffGet-Date", ".ps1", "powershell.exe " + ps + " PATH a b", "\ufeffGet-Date"},
		{"pwsh", "windows", nil, "pwsh", "Get-Date", ".ps1", "pwsh.exe " + ps + " PATH a b", "\ufeffGet-Date"},
		{"python3 on windows", "windows", found("python3", "py"), "python3", "x", ".py", "python3 PATH a b", "x"},
		{"py launcher", "windows", found("py", "python"), "python3", "x", ".py", "py -3 PATH a b", "x"},
		{"python", "windows", found("python"), "python3", "x", ".py", "python PATH a b", "x"},
		{"no python at all", "windows", found(), "python3", "x", ".py", "python3 PATH a b", "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "scripts", "nested")
			argv, cleanup, err := writeScript(tt.goos, tt.lookPath, dir, tt.interpreter, tt.content, []string{"a", "b"})
			if err != nil {
				t.Fatal(err)
			}
			var path string
			for _, a := range argv { // the script is an argument, or inside the cmd /c line
				if i := strings.Index(a, dir); i >= 0 {
					rest := a[i:]
					if j := strings.Index(rest, tt.wantExt); j >= 0 {
						path = rest[:j+len(tt.wantExt)]
					}
				}
			}
			if path == "" || filepath.Dir(path) != dir || filepath.Ext(path) != tt.wantExt {
				t.Fatalf("argv %q: no script %s in %s", argv, tt.wantExt, dir)
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
				di, err := os.Stat(dir)
				if err != nil {
					t.Fatal(err)
				}
				if di.Mode().Perm() != 0o700 {
					t.Errorf("created dir mode = %v, want 0700", di.Mode().Perm())
				}
			}
			cleanup()
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("after cleanup: stat err = %v, want not exist", err)
			}
			cleanup() // twice is fine
		})
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
			dir := t.TempDir()
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
