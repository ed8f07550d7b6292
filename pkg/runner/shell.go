package runner

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// ErrUnsupportedShell is wrapped by the errors of ShellArgv and WriteScript
// for a shell or interpreter that is unknown or not supported on this OS.
var ErrUnsupportedShell = errors.New("unsupported shell")

const (
	// cmdUTF8 switches cmd's code page to UTF-8 first. "&" (not "&&") runs
	// the command whether or not the switch worked (it fails when there is
	// no console), and the exit status is the command's.
	cmdUTF8 = "chcp 65001 >nul 2>&1 & "
	// psUTF8 makes PowerShell write UTF-8 to the pipes.
	psUTF8 = "[Console]::OutputEncoding=[Text.Encoding]::UTF8; "
	// utf8BOM starts a .ps1: Windows PowerShell reads a script without
	// BOM in the ANSI code page.
	utf8BOM = "\ufeff"
)

// psFlags run PowerShell without profiles, prompts or the machine's
// execution policy (for this invocation only; the policy is not changed).
var psFlags = []string{"-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass"}

// ShellArgv returns the argv that runs command with the named shell:
// "" = OS default (sh on Unix, cmd on Windows), "sh", "bash", "cmd", "powershell", "pwsh".
// An unknown or OS-unsupported shell is an error that names it.
//
// Unix supports sh, bash and pwsh; Windows supports cmd, powershell and pwsh.
// On Windows, cmd runs as `cmd.exe /d /s /c "chcp 65001 >nul 2>&1 & command"`
// (Run passes the command to cmd verbatim, see Spec.WindowsCmdLine), and
// PowerShell runs with -NoProfile -NonInteractive -ExecutionPolicy Bypass
// -Command, with UTF-8 console output set first.
func ShellArgv(shell, command string) ([]string, error) {
	return shellArgv(runtime.GOOS, shell, command)
}

func shellArgv(goos, shell, command string) ([]string, error) {
	if strings.TrimSpace(command) == "" {
		return nil, errors.New("shell command is empty")
	}
	windows := goos == "windows"
	name := shell
	if name == "" {
		name = "sh"
		if windows {
			name = "cmd"
		}
	}
	switch {
	case (name == "sh" || name == "bash") && !windows:
		return []string{name, "-c", command}, nil
	case name == "cmd" && windows:
		return []string{"cmd.exe", "/d", "/s", "/c", cmdUTF8 + command}, nil
	case (name == "powershell" || name == "pwsh") && windows:
		return append(append([]string{name + ".exe"}, psFlags...), "-Command", psUTF8+command), nil
	case name == "pwsh":
		return []string{"pwsh", "-NoProfile", "-NonInteractive", "-Command", command}, nil
	}
	return nil, unsupported("shell", name, goos)
}

func unsupported(what, name, goos string) error {
	switch name {
	case "sh", "bash", "cmd", "powershell", "pwsh", "python3":
		return fmt.Errorf("%w: %s %q is not available on %s", ErrUnsupportedShell, what, name, goos)
	}
	return fmt.Errorf("%w: unknown %s %q", ErrUnsupportedShell, what, name)
}

// WriteScript writes content to a new private temp file (dir created 0700 if missing; file 0700 on Unix)
// under dir with the interpreter's extension (.sh, .cmd, .ps1, .py) and returns the argv that runs
// it with args, and a cleanup that removes it. interpreter: "" (OS default: sh / cmd), "sh", "bash",
// "cmd", "powershell", "pwsh", "python3". A .ps1 is written as UTF-8 with BOM.
//
// dir "" means os.TempDir(). A .cmd is written with CRLF line ends (cmd
// mis-parses labels in LF-only batch files). Unix supports sh, bash, pwsh and
// python3; Windows supports cmd, powershell, pwsh and python3 (run with
// python3, else the py launcher, else python, whichever is found first).
// cleanup may be called more than once.
func WriteScript(dir, interpreter, content string, args []string) (argv []string, cleanup func(), err error) {
	return writeScript(runtime.GOOS, exec.LookPath, dir, interpreter, content, args)
}

func writeScript(goos string, lookPath func(string) (string, error), dir, interpreter, content string, args []string) ([]string, func(), error) {
	sc, err := scriptFor(goos, interpreter)
	if err != nil {
		return nil, nil, err
	}
	for i, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			return nil, nil, fmt.Errorf("script args[%d] contains a NUL byte", i)
		}
	}
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create script dir: %w", err)
	}
	f, err := os.CreateTemp(dir, "script-*"+sc.ext) // 0600
	if err != nil {
		return nil, nil, fmt.Errorf("create script: %w", err)
	}
	path := f.Name()
	cleanup := func() { _ = os.Remove(path) }
	body := content
	switch sc.ext {
	case ".ps1":
		if !strings.HasPrefix(body, utf8BOM) {
			body = utf8BOM + body
		}
	case ".cmd":
		body = crlf(body)
	}
	_, werr := f.WriteString(body)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("write script: %w", err)
	}
	if goos != "windows" {
		if err := os.Chmod(path, 0o700); err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("write script: %w", err)
		}
	}
	return sc.argv(lookPath, path, args), cleanup, nil
}

// script is how one interpreter runs a script file.
type script struct {
	ext  string
	argv func(lookPath func(string) (string, error), path string, args []string) []string
}

func scriptFor(goos, interpreter string) (script, error) {
	windows := goos == "windows"
	name := interpreter
	if name == "" {
		name = "sh"
		if windows {
			name = "cmd"
		}
	}
	plain := func(prog ...string) func(func(string) (string, error), string, []string) []string {
		return func(_ func(string) (string, error), path string, args []string) []string {
			return append(append(append([]string{}, prog...), path), args...)
		}
	}
	switch {
	case (name == "sh" || name == "bash") && !windows:
		return script{".sh", plain(name)}, nil
	case name == "cmd" && windows:
		return script{".cmd", func(_ func(string) (string, error), path string, args []string) []string {
			line := cmdUTF8 + cmdQuote(path)
			for _, a := range args {
				line += " " + cmdQuote(a)
			}
			return []string{"cmd.exe", "/d", "/s", "/c", line}
		}}, nil
	case (name == "powershell" || name == "pwsh") && windows:
		return script{".ps1", plain(append(append([]string{name + ".exe"}, psFlags...), "-File")...)}, nil
	case name == "pwsh":
		return script{".ps1", plain("pwsh", "-NoProfile", "-NonInteractive", "-File")}, nil
	case name == "python3" && windows:
		return script{".py", func(lookPath func(string) (string, error), path string, args []string) []string {
			prog := []string{"python3"}
			if _, err := lookPath("python3"); err != nil {
				if _, err := lookPath("py"); err == nil {
					prog = []string{"py", "-3"}
				} else if _, err := lookPath("python"); err == nil {
					prog = []string{"python"}
				}
			}
			return plain(prog...)(lookPath, path, args)
		}}, nil
	case name == "python3":
		return script{".py", plain("python3")}, nil
	}
	return script{}, unsupported("interpreter", name, goos)
}

// crlf turns every lone "\n" into "\r\n".
func crlf(s string) string {
	var b strings.Builder
	b.Grow(len(s) + strings.Count(s, "\n"))
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' && (i == 0 || s[i-1] != '\r') {
			b.WriteByte('\r')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cmdQuote quotes one word for a cmd.exe command line: in double quotes when
// it has blanks or cmd metacharacters, with inner quotes doubled. cmd has
// no way to escape % inside /c, so %NAME% in an argument is still expanded.
func cmdQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\"&|<>^(),;=!") {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// cmdExeCmdLine returns the raw Windows command line for an argv that runs
// cmd.exe with /c or /k: the words up to that switch escaped as usual, the
// rest joined verbatim (inside one pair of quotes when /s is given, which cmd
// strips). cmd does not parse its command the MSVC way, so the usual escaping
// (\" for quotes) would corrupt it. ok is false for any other argv.
func cmdExeCmdLine(argv []string) (line string, ok bool) {
	if len(argv) == 0 {
		return "", false
	}
	base := strings.ToLower(argv[0][strings.LastIndexAny(argv[0], `\/`)+1:])
	if base != "cmd" && base != "cmd.exe" {
		return "", false
	}
	strip := false
	for i := 1; i < len(argv); i++ {
		sw := strings.ToLower(argv[i])
		switch sw {
		case "/s":
			strip = true
		case "/c", "/k":
			words := make([]string, 0, i+2)
			for _, w := range argv[:i+1] {
				words = append(words, windowsEscapeArg(w))
			}
			rest := strings.Join(argv[i+1:], " ")
			if strip {
				rest = `"` + rest + `"`
			}
			return strings.Join(append(words, rest), " "), true
		}
	}
	return "", false
}

// windowsEscapeArg quotes s by the MSVC rules (like syscall.EscapeArg on
// Windows): backslashes are literal unless they precede a quote.
func windowsEscapeArg(s string) string {
	if s == "" {
		return `""`
	}
	if !strings.ContainsAny(s, " \t\"") {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	slashes := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\\':
			slashes++
		case '"':
			b.WriteString(strings.Repeat(`\`, slashes+1))
			slashes = 0
		default:
			slashes = 0
		}
		b.WriteByte(c)
	}
	b.WriteString(strings.Repeat(`\`, slashes))
	b.WriteByte('"')
	return b.String()
}
