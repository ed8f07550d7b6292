// Package winetest runs the Windows side of mqagent under Wine on Linux:
// the Windows tests of the packages in winePackages (GOOS=windows go test
// with the exec wrapper in wine/), also under a Chinese and a Russian
// locale, and the real mqagent.exe against a Mosquitto on loopback.
//
// It needs wine (and, for Wine < 9, binutils-mingw-w64-x86-64 to build the
// bcryptprimitives shim, see wine/build-shim.sh). Without them the tests
// skip, except when CI=true, where they fail. See docs/windows.md for what
// Wine does and does not prove.
package winetest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqagent/mqagent/test/integration/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// winePackage is a package whose tests run under Wine.
type winePackage struct {
	Path string // relative to the module root, e.g. "./pkg/runner"
	Tags string // build tags for go test -tags ("" = none), e.g. "wine"
	// Locale marks the packages with ^TestLocale tests, which
	// TestWindowsLocales runs under each of localeRuns.
	Locale bool
}

// winePackages are tested under Wine (GOOS=windows go test). Add a package
// here, with the build tags its Wine tests need.
var winePackages = []winePackage{
	{Path: "./pkg/textenc", Locale: true},
	{Path: "./pkg/runner", Locale: true},
	{Path: "./pkg/handlers/process", Locale: true},
	// The service lifecycle needs the test-only wine tag (docs/windows.md).
	{Path: "./pkg/service", Tags: "wine"},
	{Path: "./pkg/update"},
}

// localeRuns are the extra runs of the ^TestLocale tests of winePackages,
// one per Linux locale given to Wine: it then uses that language's code
// pages (zh_CN: ANSI and OEM 936; ru_RU: ANSI 1251, OEM 866) and cmd prints
// GBK and CP1251. The locale need not be generated on Linux.
var localeRuns = []string{"zh_CN.UTF-8", "ru_RU.UTF-8"}

// goTestTimeout bounds one go test run of Windows packages (a cold build
// on two shared cores included).
const goTestTimeout = 5 * time.Minute

// wineDir is the folder of the exec wrapper (test/windows/wine).
func wineDir(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(wd, "wine")
}

// requireWine skips the test without wine (and, for Wine < 9, the mingw
// binutils that build the shim), or fails it when CI=true.
func requireWine(t testing.TB) {
	t.Helper()
	missing := func(what string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: %s (apt-get install wine64 wine binutils-mingw-w64-x86-64)", what)
		}
		t.Skipf("skipping: %s (apt-get install wine64 wine binutils-mingw-w64-x86-64)", what)
	}
	if _, err := exec.LookPath("wine"); err != nil {
		missing("wine is not installed")
	}
	if wineMajor() < 9 {
		for _, tool := range []string{"x86_64-w64-mingw32-as", "x86_64-w64-mingw32-ld"} {
			if _, err := exec.LookPath(tool); err != nil {
				missing(tool + " is not installed (needed to build the bcryptprimitives shim for Wine < 9)")
			}
		}
	}
}

// wineMajor is the major version of wine (0 when unknown).
func wineMajor() int {
	out, err := exec.Command("wine", "--version").Output()
	if err != nil {
		return 0
	}
	m := regexp.MustCompile(`wine-(\d+)`).FindSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// wineEnv is the environment for running Windows binaries: the exec
// wrapper first on PATH, Wine quiet, and extra (e.g. LC_ALL) last.
func wineEnv(t testing.TB, extra ...string) []string {
	t.Helper()
	env := append(os.Environ(),
		"PATH="+wineDir(t)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"WINEDEBUG=-all",
	)
	return append(env, extra...)
}

var prepared struct {
	once sync.Once
	err  error
}

// prepareWine creates the Wine prefix, installs the shim and warms Wine
// once per test binary, so that the timed runs do not pay for it.
func prepareWine(t testing.TB) {
	t.Helper()
	prepared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(wineDir(t), "go_windows_amd64_exec"), "cmd", "/c", "exit", "0")
		cmd.Env = wineEnv(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			prepared.err = fmt.Errorf("prepare wine: %w\n%s", err, out)
		}
	})
	if prepared.err != nil {
		t.Fatal(prepared.err)
	}
}

// goTestEnv is the environment of a nested GOOS=windows go test: no race
// detector (not available for this cross build).
func goTestEnv(t testing.TB, extra ...string) []string {
	env := wineEnv(t, append([]string{"GOOS=windows", "GOARCH=amd64", "CGO_ENABLED=0"}, extra...)...)
	for i, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GOFLAGS="); ok {
			flags := slices.DeleteFunc(strings.Fields(v), func(f string) bool { return f == "-race" })
			env[i] = "GOFLAGS=" + strings.Join(flags, " ")
		}
	}
	return env
}

// goBin is the go command: PATH, else the GOROOT of this test binary.
func goBin() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// goTest runs go test for pkgs with args in the module root and returns
// its output without Wine's volume-label noise.
func goTest(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), goTestTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin(), append([]string{"test"}, args...)...)
	cmd.Dir = root
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return quiet(out), err
}

// quiet drops the lines Wine prints when cmd asks for the volume label of
// Z: (harmless).
func quiet(out []byte) string {
	var b strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if line := sc.Text(); !strings.Contains(line, "FS volume label and serial are not available") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// byTags groups winePackages by build tags, one go test run per group.
// byTags groups winePackages (only those with locale tests when
// localeOnly) by their build tags.
func byTags(localeOnly bool) map[string][]string {
	groups := map[string][]string{}
	for _, p := range winePackages {
		if !localeOnly || p.Locale {
			groups[p.Tags] = append(groups[p.Tags], p.Path)
		}
	}
	return groups
}

// TestWindowsPackages runs the tests of winePackages built for Windows
// under Wine, and fails when any fails.
func TestWindowsPackages(t *testing.T) {
	requireWine(t)
	prepareWine(t)
	for tags, pkgs := range byTags(false) {
		args := []string{"-count=1", "-p", "1"}
		if tags != "" {
			args = append(args, "-tags", tags)
		}
		start := time.Now()
		out, err := goTest(t, goTestEnv(t), append(args, pkgs...)...)
		if err != nil {
			t.Fatalf("GOOS=windows go test %s under Wine: %v\n%s", strings.Join(append(args, pkgs...), " "), err, out)
		}
		for _, p := range pkgs {
			if !regexp.MustCompile(`(?m)^ok\s+\S*` + regexp.QuoteMeta(strings.TrimPrefix(p, ".")) + `\s`).MatchString(out) {
				t.Errorf("%s: no ok line in:\n%s", p, out)
			}
		}
		t.Logf("tags %q, %v:\n%s", tags, time.Since(start).Round(time.Millisecond), out)
	}
}

// TestWindowsLocales runs the ^TestLocale tests of winePackages under each
// of localeRuns; none of them may skip (a skip means Wine did not switch
// code pages and nothing was tested).
func TestWindowsLocales(t *testing.T) {
	requireWine(t)
	prepareWine(t)
	for _, loc := range localeRuns {
		t.Run(loc, func(t *testing.T) {
			for tags, pkgs := range byTags(true) {
				args := []string{"-count=1", "-p", "1", "-v", "-run", "^TestLocale"}
				if tags != "" {
					args = append(args, "-tags", tags)
				}
				out, err := goTest(t, goTestEnv(t, "LC_ALL="+loc), append(args, pkgs...)...)
				if err != nil {
					t.Fatalf("LC_ALL=%s GOOS=windows go test %s: %v\n%s", loc, strings.Join(args, " "), err, out)
				}
				if strings.Contains(out, "--- SKIP: TestLocale") {
					t.Errorf("LC_ALL=%s: locale tests skipped (Wine kept its code pages?):\n%s", loc, out)
				}
				if !strings.Contains(out, "--- PASS: TestLocale") {
					t.Errorf("LC_ALL=%s: no locale test passed:\n%s", loc, out)
				}
				t.Logf("%s", out)
			}
		})
	}
}
