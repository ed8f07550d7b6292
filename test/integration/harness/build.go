package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// buildTimeout bounds one `go build` of the agent (a -race build on two
// shared cores takes a minute or more).
const buildTimeout = 10 * time.Minute

// builds is the per-test-binary cache of agent builds. It is package state
// on purpose: a test binary builds each agent version once and shares it
// between its tests; Main creates and removes the directory.
var builds struct {
	mu     sync.Mutex
	active bool   // Main is running the tests
	dir    string // holds the binaries; removed by Main
	bins   map[string]*agentBuild
}

// agentBuild is one cached build.
type agentBuild struct {
	once sync.Once
	path string
	err  error
}

// Main runs the tests of a package that uses the harness, then removes the
// agent binaries built by BuildAgent and, when every test passed, checks
// that no goroutine was leaked. It returns the exit code. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
func Main(m *testing.M) int {
	builds.mu.Lock()
	builds.active = true
	builds.mu.Unlock()

	code := m.Run()

	builds.mu.Lock()
	builds.active = false
	if builds.dir != "" {
		if err := os.RemoveAll(builds.dir); err != nil {
			fmt.Fprintf(os.Stderr, "harness: remove agent builds: %v\n", err)
		}
		builds.dir = ""
	}
	builds.bins = nil
	builds.mu.Unlock()

	if code == 0 {
		// paho's Disconnect leaves a goroutine behind that ends on its own
		// once a pending connect attempt gives up (client.go, "Disconnect
		// may return before all activities have completed").
		if err := goleak.Find(goleak.IgnoreTopFunction("github.com/eclipse/paho%2emqtt%2egolang.(*client).Disconnect.func1")); err != nil {
			fmt.Fprintf(os.Stderr, "harness: goroutines leaked by the tests: %v\n", err)
			code = 1
		}
	}
	return code
}

// BuildAgent builds the agent (./agent of the module under test) once per
// test binary and returns the path of the executable. With
// the race detector on (see raceAgent) the agent is built with -race. It needs Main to be
// running the tests.
func BuildAgent(t testing.TB) string {
	t.Helper()
	return BuildMain(t, "./agent", "")
}

// BuildAgentVersion is BuildAgent with main.version set to version, e.g.
// to have two versions for an update test.
func BuildAgentVersion(t testing.TB, version string) string {
	t.Helper()
	return BuildMain(t, "./agent", version)
}

// BuildMain builds the main package pkg, a path relative to the module
// root such as "./agent", once per test binary and version, and returns
// the path of the executable. A non-empty version is set as main.version
// through -ldflags -X. raceAgent adds -race. It needs Main to be
// running the tests.
func BuildMain(t testing.TB, pkg, version string) string {
	t.Helper()
	builds.mu.Lock()
	if !builds.active {
		builds.mu.Unlock()
		t.Fatal("harness: building needs the package's TestMain to call harness.Main(m)")
		return ""
	}
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "mqagent-harness-bin-")
		if err != nil {
			builds.mu.Unlock()
			t.Fatalf("harness: build dir: %v", err)
			return ""
		}
		builds.dir = dir
		builds.bins = make(map[string]*agentBuild)
	}
	key := pkg + "\x00" + version
	b := builds.bins[key]
	if b == nil {
		b = &agentBuild{}
		builds.bins[key] = b
	}
	dir := builds.dir
	builds.mu.Unlock()

	b.once.Do(func() { b.path, b.err = buildMain(dir, pkg, version) })
	if b.err != nil {
		t.Fatalf("harness: %v", b.err)
	}
	return b.path
}

// goTool finds the go command: PATH, then GOROOT.
func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	exe := "go"
	if runtime.GOOS == "windows" {
		exe += ".exe"
	}
	for _, root := range []string{os.Getenv("GOROOT"), runtime.GOROOT(), "/usr/local/go"} {
		if root == "" {
			continue
		}
		p := filepath.Join(root, "bin", exe)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("go command not found")
}

// ModuleRoot is the directory of the go.mod of the module under test, found
// with `go env GOMOD` from the current directory.
func ModuleRoot() (string, error) {
	goBin, err := goTool()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside a module")
	}
	return filepath.Dir(mod), nil
}

// buildMain runs go build for pkg into dir.
func buildMain(dir, pkg, version string) (string, error) {
	goBin, err := goTool()
	if err != nil {
		return "", err
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	name := sanitize(filepath.Base(filepath.Clean(pkg)))
	if version != "" {
		name += "-" + sanitize(version)
	}
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	out := filepath.Join(dir, name)
	args := []string{"build", "-o", out}
	if raceAgent() {
		args = append(args, "-race")
	}
	if version != "" {
		args = append(args, "-ldflags", "-X main.version="+version)
	}
	args = append(args, pkg)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = root
	if !raceAgent() {
		// The shipped binary is static (no libc): test that one. The
		// race detector needs cgo, so race builds keep it.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(args, " "), root, err, msg)
	}
	return out, nil
}

// sanitize keeps a version string usable in a file name.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '_'
	}, s)
}

// raceAgent reports whether binaries under test are built with the race
// detector: when the tests themselves are (go test -race, as CI runs
// them), unless MQAGENT_TEST_RACE=0; MQAGENT_TEST_RACE=1 forces it.
func raceAgent() bool {
	switch os.Getenv("MQAGENT_TEST_RACE") {
	case "1":
		return true
	case "0":
		return false
	}
	return raceEnabled
}
