// Package packaging tests the release packaging with the real tools: the
// MSI built by deploy/windows/build-msi.sh (wixl), its tables read back
// with msiinfo, signed and verified with osslsigncode, then installed,
// upgraded and uninstalled by Wine's msiexec, where the service it
// registers connects to a real Mosquitto; the .deb and .rpm built with
// nfpm and inspected with dpkg-deb and rpm (and installed into a scratch
// root with dpkg); the macOS tarball; and `mqagent config init`, which
// the installers use to write the configuration.
//
// A test that needs a tool skips without it, except under CI=true, where
// it fails. docs/windows-msi.md says what Wine proves and what it cannot.
package packaging

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqagent/mqagent/test/integration/harness"
)

func TestMain(m *testing.M) {
	code := harness.Main(m)
	cleanupShared()
	os.Exit(code)
}

// requireTools skips the test (fails it under CI=true) when one of the
// commands is not on PATH.
func requireTools(t *testing.T, names ...string) {
	t.Helper()
	var missing []string
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("needs %s (apt-get install wixl msitools osslsigncode wine64 wine binutils-mingw-w64-x86-64 rpm)", strings.Join(missing, ", "))
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: %s", msg)
	}
	t.Skip("skipping: " + msg)
}

// moduleRoot is the repository root.
func moduleRoot(t *testing.T) string {
	t.Helper()
	shared.rootOnce.Do(func() { shared.root, shared.rootErr = harness.ModuleRoot() })
	if shared.rootErr != nil {
		t.Fatalf("module root: %v", shared.rootErr)
	}
	return shared.root
}

// result is a finished command.
type result struct {
	code int    // exit status; -1 when it did not run or was killed
	out  string // stdout and stderr
}

// run runs name with args in dir (the module root when empty) and env
// added to the environment, for at most timeout. Output goes through a
// file, not a pipe: Wine's helper processes inherit it and outlive the
// command.
func run(t *testing.T, timeout time.Duration, dir string, env []string, name string, args ...string) result {
	t.Helper()
	if dir == "" {
		dir = moduleRoot(t)
	}
	f, err := os.CreateTemp("", "packaging-out-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = nil
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	out, _ := os.ReadFile(f.Name())
	r := result{code: cmd.ProcessState.ExitCode(), out: string(out)}
	if ctx.Err() != nil {
		t.Fatalf("%s %s: no end after %s\n%s", name, strings.Join(args, " "), timeout, out)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return r
}

// mustRun is run that fails the test unless the command exits 0.
func mustRun(t *testing.T, timeout time.Duration, dir string, env []string, name string, args ...string) string {
	t.Helper()
	r := run(t, timeout, dir, env, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: exit status %d\n%s", name, strings.Join(args, " "), r.code, r.out)
	}
	return r.out
}

// shared holds what the tests of this binary build once and share: the
// cache directory, builds of the agent for other platforms, the Wine
// prefix. cleanupShared removes them after the tests.
var shared struct {
	rootOnce sync.Once
	root     string
	rootErr  error

	mu     sync.Mutex
	dir    string
	builds map[string]*sharedBuild

	wineOnce sync.Once
	wine     *winePrefix
	wineErr  error
}

type sharedBuild struct {
	once sync.Once
	path string
	err  error
}

// sharedDir is the directory of the shared builds.
func sharedDir(t *testing.T) string {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.dir == "" {
		dir, err := os.MkdirTemp("", "mqagent-packaging-")
		if err != nil {
			t.Fatal(err)
		}
		shared.dir = dir
		shared.builds = make(map[string]*sharedBuild)
	}
	return shared.dir
}

// once runs build at most once per key for the test binary and returns its
// path (or fails the test with its error).
func once(t *testing.T, key string, build func(dir string) (string, error)) string {
	t.Helper()
	dir := sharedDir(t)
	shared.mu.Lock()
	b := shared.builds[key]
	if b == nil {
		b = &sharedBuild{}
		shared.builds[key] = b
	}
	shared.mu.Unlock()
	b.once.Do(func() { b.path, b.err = build(dir) })
	if b.err != nil {
		t.Fatalf("%s: %v", key, b.err)
	}
	return b.path
}

// agentBuild builds ./agent for goos/goarch (no cgo, no race detector: a
// release build) with main.version set and the given build tags, once per
// test binary.
func agentBuild(t *testing.T, goos, goarch, version string, tags ...string) string {
	t.Helper()
	root := moduleRoot(t)
	key := strings.Join(append([]string{"agent", goos, goarch, version}, tags...), "-")
	return once(t, key, func(dir string) (string, error) {
		out := filepath.Join(dir, key)
		if goos == "windows" {
			out += ".exe"
		}
		args := []string{"build", "-trimpath", "-ldflags", "-s -w -X main.version=" + version, "-o", out}
		if len(tags) > 0 {
			args = append(args, "-tags", strings.Join(tags, ","))
		}
		args = append(args, "./agent")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, msg)
		}
		return out, nil
	})
}

// cleanupShared stops the Wine prefix and removes the shared directory.
func cleanupShared() {
	if shared.wine != nil {
		shared.wine.close()
	}
	if shared.dir != "" {
		if err := os.RemoveAll(shared.dir); err != nil {
			fmt.Fprintf(os.Stderr, "packaging: remove %s: %v\n", shared.dir, err)
		}
	}
}

// writeFile writes a test file.
func writeFile(t *testing.T, path string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
}

// readFile reads a file the test expects to exist.
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
