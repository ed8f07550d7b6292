package packaging

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// winePrefix is a Wine prefix of the test binary (created once: that is
// the slow part, ~10 s), with the ProcessPrng shim that Go programs need
// on Wine < 9 (test/windows/wine/build-shim.sh).
type winePrefix struct {
	dir string
	env []string
}

// wine returns the test binary's Wine prefix, creating it on first use.
func wine(t *testing.T) *winePrefix {
	t.Helper()
	requireTools(t, "wine", "wineboot", "wineserver", "x86_64-w64-mingw32-as", "x86_64-w64-mingw32-ld")
	shim := filepath.Join(moduleRoot(t), "test", "windows", "wine", "build-shim.sh")
	shared.wineOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mqagent-packaging-wine-")
		if err != nil {
			shared.wineErr = err
			return
		}
		p := &winePrefix{dir: dir, env: []string{
			"WINEPREFIX=" + dir, "WINEARCH=win64", "WINEDEBUG=-all",
			// No Mono or Gecko installer dialogs, no display.
			"WINEDLLOVERRIDES=mscoree,mshtml=", "DISPLAY=",
		}}
		shared.wine = p
		shared.wineErr = p.init(shim)
	})
	if shared.wineErr != nil {
		t.Fatalf("wine prefix: %v", shared.wineErr)
	}
	return shared.wine
}

// init creates the prefix and installs the shim when Wine needs it.
func (p *winePrefix) init(shim string) error {
	if out, err := p.command(3*time.Minute, "wineboot", "-i"); err != nil {
		return fmt.Errorf("wineboot -i: %w\n%s", err, out)
	}
	if out, err := p.command(time.Minute, "wineserver", "-w"); err != nil {
		return fmt.Errorf("wineserver -w: %w\n%s", err, out)
	}
	ver, err := p.command(time.Minute, "wine", "--version")
	if err != nil {
		return fmt.Errorf("wine --version: %w\n%s", err, ver)
	}
	if m := regexp.MustCompile(`wine-(\d+)`).FindStringSubmatch(ver); m != nil && len(m[1]) == 1 && m[1] < "9" {
		dll := filepath.Join(p.dir, "drive_c", "windows", "system32", "bcryptprimitives.dll")
		if out, err := p.command(time.Minute, "sh", shim, dll); err != nil {
			return fmt.Errorf("build the ProcessPrng shim: %w\n%s", err, out)
		}
	}
	return nil
}

// command runs a command in the prefix's environment (output through a
// file: Wine's helpers inherit it and outlive the command).
func (p *winePrefix) command(timeout time.Duration, name string, args ...string) (string, error) {
	f, err := os.CreateTemp("", "packaging-wine-")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	out, _ := os.ReadFile(f.Name())
	if ctx.Err() != nil {
		err = fmt.Errorf("no end after %s", timeout)
	}
	return string(out), err
}

// run runs `wine args...` and returns its exit status (as Wine passes it:
// modulo 256) and output.
func (p *winePrefix) run(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	return run(t, timeout, p.dir, p.env, "wine", args...)
}

// path maps a Windows path on drive C: to the Linux file.
func (p *winePrefix) path(win string) string {
	rest, ok := strings.CutPrefix(win, `C:\`)
	if !ok {
		panic("not a C: path: " + win)
	}
	return filepath.Join(p.dir, "drive_c", filepath.FromSlash(strings.ReplaceAll(rest, `\`, "/")))
}

// winPath maps a Linux path to Wine's Z: drive.
func winPath(linux string) string {
	return `Z:` + strings.ReplaceAll(linux, "/", `\`)
}

// close stops every process of the prefix and removes it.
func (p *winePrefix) close() {
	if out, err := p.command(time.Minute, "wineserver", "-k"); err != nil {
		fmt.Fprintf(os.Stderr, "packaging: wineserver -k: %v\n%s", err, out)
	}
	// wineserver -k returns before the server is gone: wait for it.
	if out, err := p.command(time.Minute, "wineserver", "-w"); err != nil {
		fmt.Fprintf(os.Stderr, "packaging: wineserver -w: %v\n%s", err, out)
	}
	if err := os.RemoveAll(p.dir); err != nil {
		fmt.Fprintf(os.Stderr, "packaging: remove the wine prefix: %v\n", err)
	}
}

// regQuery returns the values of a registry key (`reg query`), name to
// data; nil when the key does not exist.
func (p *winePrefix) regQuery(t *testing.T, key string) map[string]string {
	t.Helper()
	r := p.run(t, time.Minute, "reg", "query", key)
	if r.code != 0 {
		return nil
	}
	values := make(map[string]string)
	re := regexp.MustCompile(`^\s+(\S+)\s+(REG_\w+)\s+(.*?)\s*$`)
	for line := range strings.Lines(r.out) {
		if m := re.FindStringSubmatch(line); m != nil {
			values[m[1]] = m[3]
		}
	}
	return values
}

// products lists the installed products: ProductCode to name.
func (p *winePrefix) products(t *testing.T) map[string]string {
	t.Helper()
	r := p.run(t, time.Minute, "uninstaller", "--list")
	if r.code != 0 {
		t.Fatalf("uninstaller --list: exit %d\n%s", r.code, r.out)
	}
	out := make(map[string]string)
	re := regexp.MustCompile(`^(\{[0-9A-F-]{36}\})\|\|\|(.*?)\s*$`)
	for line := range strings.Lines(r.out) {
		if m := re.FindStringSubmatch(line); m != nil {
			out[m[1]] = m[2]
		}
	}
	return out
}
