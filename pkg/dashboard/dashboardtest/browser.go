// Package dashboardtest drives the dashboard (pkg/dashboard) from tests
// and benchmarks, as net/http/httptest does for handlers: headless
// Chromium through chromedp (Browser, Screenshot, RendererRSS), and a
// simulated fleet that publishes retained statuses, inventories and
// metrics samples for many hosts from one MQTT client (SimFleet).
//
// It is meant for tests only; nothing else imports it.
package dashboardtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Environment variables read here.
const (
	// EnvChromium names the Chromium executable to use.
	EnvChromium = "MQAGENT_CHROMIUM"
	// EnvArtifacts is the directory where screenshots are kept.
	EnvArtifacts = "MQAGENT_ARTIFACTS"
)

// ChromiumPath finds Chromium: $MQAGENT_CHROMIUM, then chromium,
// chromium-browser, google-chrome or google-chrome-stable in PATH, then
// /usr/bin/chromium.
func ChromiumPath() (string, error) {
	if p := os.Getenv(EnvChromium); p != "" {
		return exec.LookPath(p)
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium", nil
	}
	return "", errors.New("chromium not found (install the Debian package chromium, or set " + EnvChromium + ")")
}

// RequireChromium returns Chromium's path. Without it the test is skipped
// with a clear message, except when CI=true, where it fails.
func RequireChromium(t testing.TB) string {
	t.Helper()
	p, err := ChromiumPath()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: the dashboard browser test needs Chromium: %v", err)
		}
		t.Skipf("skipping the browser test: %v", err)
	}
	return p
}

// Browser starts headless Chromium (--headless=new --no-sandbox, as it
// must run in a container, with its own profile in a temporary directory)
// and returns the context of its first tab. Everything is bounded by
// timeout; the browser is stopped when the test ends. extra options are
// added to the defaults.
func Browser(t testing.TB, timeout time.Duration, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path := RequireChromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("enable-precise-memory-info", true),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "chromium-profile")),
		chromedp.WindowSize(1400, 900),
	)
	opts = append(opts, extra...)
	ctx, cancelTimeout := context.WithTimeout(context.Background(), timeout)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser to exit
		cancelTimeout()
	})
	// Start the browser now, so that a failure to start is reported here.
	if err := chromedp.Do(tctx); err != nil {
		t.Fatalf("start chromium (%s): %v", path, err)
	}
	return tctx
}

// ArtifactDir is where a test keeps its artifacts: $MQAGENT_ARTIFACTS
// (created if needed), else a directory in the test's temporary directory.
func ArtifactDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(EnvArtifacts)
	if dir == "" {
		dir = filepath.Join(t.TempDir(), "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts: %v", err)
	}
	return dir
}

// Screenshot saves a PNG of the whole page as DIR/TEST-NAME.png (dir is
// usually ArtifactDir's), logs its path and returns it.
func Screenshot(t testing.TB, ctx context.Context, dir, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	safe := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == ' ' || r == ':' {
			return '_'
		}
		return r
	}, t.Name()+"-"+name)
	path := filepath.Join(dir, safe+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
	return path
}

// WaitJS polls a JavaScript expression until it is true, up to timeout
// (and ctx), every 50 ms. On timeout it fails the test with what, the
// expression and, when given, the value of the diagnostic expression diag.
func WaitJS(t testing.TB, ctx context.Context, timeout time.Duration, what, expr, diag string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ok, err := chromedp.Run(wctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		if err == nil && ok {
			return
		}
		select {
		case <-wctx.Done():
			var got any
			if diag != "" {
				dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
				got, _ = chromedp.Run(dctx, chromedp.Evaluate[any](diag))
				dcancel()
			}
			t.Fatalf("%s: not true after %v: %s (last error %v; %s = %v)", what, timeout, expr, err, diag, got)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// RendererRSS is the memory, in bytes, of the browser's renderer
// processes (the pages): the browser process's descendants started with
// --type=renderer, and how many there are. It is their proportional set
// size (Pss in /proc/PID/smaps_rollup: resident memory with shared pages
// divided between the processes that share them), else their RSS. Linux
// only.
func RendererRSS(ctx context.Context) (uint64, int, error) {
	if runtime.GOOS != "linux" {
		return 0, 0, errors.New("renderer memory: Linux only")
	}
	c := chromedp.FromContext(ctx)
	if c == nil || c.Browser == nil || c.Browser.Process() == nil {
		return 0, 0, errors.New("renderer memory: no browser process")
	}
	root := c.Browser.Process().Pid
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, err
	}
	parent := map[int]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …: comm may hold spaces and parentheses.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			parent[pid] = ppid
		}
	}
	descends := func(pid int) bool {
		for n := 0; n < 64 && pid > 1; n++ {
			if pid == root {
				return true
			}
			pid = parent[pid]
		}
		return false
	}
	var total uint64
	found := 0
	for pid := range parent {
		if pid == root || !descends(pid) {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !strings.Contains(string(cmd), "--type=renderer") {
			continue
		}
		if kb, ok := procKB(pid, "smaps_rollup", "Pss:"); ok {
			total += kb << 10
			found++
		} else if kb, ok := procKB(pid, "status", "VmRSS:"); ok {
			total += kb << 10
			found++
		}
	}
	if found == 0 {
		return 0, 0, errors.New("renderer memory: no renderer process found")
	}
	return total, found, nil
}

// procKB reads a "Key:   123 kB" line of /proc/PID/FILE.
func procKB(pid int, file, key string) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb, err == nil
		}
	}
	return 0, false
}
