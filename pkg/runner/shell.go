package runner

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// ErrUnsupportedShell is wrapped by the errors of ShellArgv and WriteScript
// for a shell or interpreter that is unknown or not supported on this OS.
var ErrUnsupportedShell = errors.New("unsupported shell")

const (
	// cmdUTF8 switches cmd's code page to UTF-8 first. "&" (not "&&") runs
	// the command whether or not the switch worked (it fails without a
	// console), and "(call )" resets ERRORLEVEL to 0 so that a failed chcp
	// changes neither %ERRORLEVEL% nor the exit status of a command that
	// leaves ERRORLEVEL alone (echo): the exit status is the command's.
	cmdUTF8 = "chcp 65001 >nul 2>&1 & (call ) & "
	// psUTF8 makes PowerShell write UTF-8 (without BOM) to the pipes; it
	// cannot fail the command (no console: the setter throws, ignored).
	psUTF8 = "try { [Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false } catch {}\n"
	// psExit ends a PowerShell -Command with the exit status of the last
	// statement: 0 when it succeeded; else the exit code of the last
	// native program ($LASTEXITCODE, e.g. a script's `exit 3`), or 1.
	// PowerShell itself would turn every failure into 1.
	psExit = "\nif (-not $?) { if ($LASTEXITCODE) { exit $LASTEXITCODE } else { exit 1 } }"
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
// On Windows, cmd runs as `cmd.exe /d /s /c "chcp 65001 >nul 2>&1 & (call ) & command"`
// (Run passes the command to cmd verbatim, see Spec.WindowsCmdLine), and
// PowerShell runs with -NoProfile -NonInteractive -ExecutionPolicy Bypass
// -Command: UTF-8 console output set first, the command, then a line that
// keeps a failing native program's exit code (see psExit).
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
		return append(append([]string{name + ".exe"}, psFlags...), "-Command", psUTF8+command+psExit), nil
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

// WriteScript writes content to a script file with the interpreter's
// extension (.sh, .cmd, .ps1, .py) in a new private directory under dir
// (dir is created 0700 if missing; "" means os.TempDir()), and returns the
// argv that runs it with args, and a cleanup that removes the file and its
// directory. interpreter: "" (OS default: sh / cmd), "sh", "bash", "cmd",
// "powershell", "pwsh", "python3".
//
// The private directory is 0700 on Unix (the file 0700); on Windows it is
// created with a protected DACL that grants full control to the agent's
// user and SYSTEM only, which the file inherits. A .ps1 is written as UTF-8
// with BOM (Windows PowerShell reads a script without BOM in the ANSI code
// page); a .cmd with CRLF line ends (cmd mis-parses labels in LF-only batch
// files). Unix supports sh, bash, pwsh and python3; Windows supports cmd,
// powershell, pwsh and python3 (run with python3, else the py launcher,
// else python, whichever is found first). On Windows a .cmd runs in cmd
// with the UTF-8 code page switch of ShellArgv, and a .ps1 with
// `-Command "& 'FILE' 'ARG'…"` after the UTF-8 output switch of ShellArgv
// (so -File is not used): the exit status is the script's `exit N`, else
// 0, or that of psExit when its last statement failed. cleanup may be
// called more than once.
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
	private, err := createPrivateDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("create script dir: %w", err)
	}
	path := filepath.Join(private, "script"+sc.ext)
	cleanup := func() {
		_ = os.Remove(path)
		_ = os.Remove(private)
	}
	body := content
	switch sc.ext {
	case ".ps1":
		if !strings.HasPrefix(body, utf8BOM) {
			body = utf8BOM + body
		}
	case ".cmd":
		body = crlf(body)
	}
	perm := os.FileMode(0o700)
	if goos == "windows" {
		perm = 0o600
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("create script: %w", err)
	}
	_, werr := f.WriteString(body)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("write script: %w", err)
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
		return script{".ps1", func(_ func(string) (string, error), path string, args []string) []string {
			call := "& " + psQuote(path)
			for _, a := range args {
				call += " " + psQuote(a)
			}
			return append(append([]string{name + ".exe"}, psFlags...), "-Command", psUTF8+call+psExit)
		}}, nil
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

// psQuote quotes s as a PowerShell single-quoted string: nothing is
// expanded inside; each quote character (PowerShell also takes the
// typographic single quotes as quotes) is doubled.
func psQuote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('\'')
	for _, r := range s {
		switch r {
		case '\'', '\u2018', '\u2019', '\u201A', '\u201B':
			b.WriteRune(r)
		}
		b.WriteRune(r)
	}
	b.WriteByte('\'')
	return b.String()
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
