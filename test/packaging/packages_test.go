package packaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// buildPackages runs deploy/packages/build.sh for the host's Linux
// architecture (once per version and test binary) and returns the .deb
// and .rpm.
func buildPackages(t *testing.T, version string) (deb, rpm string) {
	t.Helper()
	requireTools(t, "bash", "go")
	if runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		t.Skipf("packages are built and inspected on linux/amd64 or linux/arm64, not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	bin := agentBuild(t, "linux", runtime.GOARCH, version)
	script := filepath.Join(moduleRoot(t), "deploy", "packages", "build.sh")
	out := once(t, "packages-"+version, func(dir string) (string, error) {
		out := filepath.Join(dir, "packages-"+version)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", script, "--binary", bin, "--version", version, "--arch", runtime.GOARCH, "--out-dir", out)
		if msg, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build.sh: %w\n%s", err, msg)
		}
		return out, nil
	})
	debs, _ := filepath.Glob(filepath.Join(out, "*.deb"))
	rpms, _ := filepath.Glob(filepath.Join(out, "*.rpm"))
	if len(debs) != 1 || len(rpms) != 1 {
		entries, _ := os.ReadDir(out)
		t.Fatalf("build.sh made %v, want one .deb and one .rpm", entries)
	}
	return debs[0], rpms[0]
}

// debEntry is a line of `dpkg-deb -c`: mode and path.
var debEntry = regexp.MustCompile(`^([-dl][rwxsStT-]{9})\s+\S+\s+\d+\s+\S+\s+\S+\s+\./(\S*)`)

func TestDebPackage(t *testing.T) {
	requireTools(t, "dpkg-deb", "tar")
	deb, _ := buildPackages(t, "v1.2.3")
	arch := runtime.GOARCH

	info := mustRun(t, time.Minute, "", nil, "dpkg-deb", "-I", deb)
	for _, w := range []string{"Package: mqagent\n", "Version: 1.2.3-1\n", "Architecture: " + arch + "\n", "Section: admin\n", " postinst ", " prerm ", " postrm ", " conffiles "} {
		if !strings.Contains(info, w) {
			t.Errorf("dpkg-deb -I lacks %q:\n%s", w, info)
		}
	}
	if got := mustRun(t, time.Minute, "", nil, "dpkg-deb", "-f", deb, "Package", "Version"); !strings.Contains(got, "mqagent") {
		t.Errorf("dpkg-deb -f: %s", got)
	}
	ctrl := t.TempDir()
	mustRun(t, time.Minute, "", nil, "dpkg-deb", "-e", deb, ctrl)
	if got := strings.TrimSpace(string(readFile(t, filepath.Join(ctrl, "conffiles")))); got != "/etc/mqagent/config.yaml" {
		t.Errorf("conffiles = %q, want /etc/mqagent/config.yaml", got)
	}

	modes := make(map[string]string)
	for line := range strings.Lines(mustRun(t, time.Minute, "", nil, "dpkg-deb", "-c", deb)) {
		if m := debEntry.FindStringSubmatch(line); m != nil {
			modes["/"+strings.TrimSuffix(m[2], "/")] = m[1]
		}
	}
	for path, mode := range map[string]string{
		"/usr/bin/mqagent":                        "-rwxr-xr-x",
		"/usr/lib/systemd/system/mqagent.service": "-rw-r--r--",
		"/etc/mqagent":                            "drwx------",
		"/etc/mqagent/config.yaml":                "-rw-------",
		"/var/lib/mqagent":                        "drwx------",
		"/usr/share/doc/mqagent/copyright":        "-rw-r--r--",
	} {
		if modes[path] != mode {
			t.Errorf("%s: mode %q, want %q (contents %v)", path, modes[path], mode, modes)
		}
	}

	// The packaged files: the unit runs the packaged binary, which is the
	// right build.
	root := t.TempDir()
	mustRun(t, time.Minute, "", nil, "dpkg-deb", "-x", deb, root)
	unit := string(readFile(t, filepath.Join(root, "usr/lib/systemd/system/mqagent.service")))
	if !strings.Contains(unit, "\nExecStart=/usr/bin/mqagent run --config /etc/mqagent/config.yaml\n") || strings.Contains(unit, "/usr/local/bin") {
		t.Errorf("the packaged unit does not run /usr/bin/mqagent:\n%s", unit)
	}
	if got := mustRun(t, time.Minute, "", nil, filepath.Join(root, "usr/bin/mqagent"), "version"); strings.TrimSpace(got) != "v1.2.3" {
		t.Errorf("packaged mqagent version = %q, want v1.2.3", got)
	}
	if !bytes.Equal(readFile(t, filepath.Join(root, "etc/mqagent/config.yaml")), readFile(t, filepath.Join(moduleRoot(t), "deploy/packages/config.yaml"))) {
		t.Error("the packaged config is not deploy/packages/config.yaml")
	}
}

// TestDebInstall installs the .deb into a scratch root with dpkg --root:
// the files land, an upgrade keeps the administrator's configuration and
// replaces the binary, removal keeps the configuration and the data,
// purge removes the configuration but not the data. (The maintainer
// scripts see DPKG_ROOT and leave this system's services alone.)
func TestDebInstall(t *testing.T) {
	requireTools(t, "dpkg", "dpkg-deb")
	if os.Geteuid() != 0 {
		t.Skip("skipping: dpkg --root needs root to give the files their owner")
	}
	deb1, _ := buildPackages(t, "v1.2.3")
	deb2, _ := buildPackages(t, "v1.2.4")
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644)
	dpkg := func(args ...string) string {
		t.Helper()
		return mustRun(t, 2*time.Minute, "", nil, "dpkg", append([]string{"--root=" + root, "--force-script-chrootless", "--log=/dev/null", "--force-confold"}, args...)...)
	}
	version := func() string {
		return strings.TrimSpace(mustRun(t, time.Minute, "", nil, filepath.Join(root, "usr/bin/mqagent"), "version"))
	}
	cfg := filepath.Join(root, "etc/mqagent/config.yaml")

	dpkg("-i", deb1)
	if v := version(); v != "v1.2.3" {
		t.Errorf("installed version %q", v)
	}
	if fi, err := os.Stat(cfg); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config: %v, %v", fi, err)
	}
	edited := append(readFile(t, cfg), []byte("\n# edited by the administrator\n")...)
	writeFile(t, cfg, edited, 0o600)
	writeFile(t, filepath.Join(root, "var/lib/mqagent/state.db"), []byte("data"), 0o600)

	dpkg("-i", deb2)
	if v := version(); v != "v1.2.4" {
		t.Errorf("version after the upgrade %q, want v1.2.4", v)
	}
	if !bytes.Equal(readFile(t, cfg), edited) {
		t.Error("the upgrade replaced the administrator's configuration")
	}

	dpkg("-r", "mqagent")
	if _, err := os.Stat(filepath.Join(root, "usr/bin/mqagent")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the binary is still there after removal: %v", err)
	}
	if !bytes.Equal(readFile(t, cfg), edited) {
		t.Error("removal (not purge) lost the configuration")
	}
	dpkg("-P", "mqagent")
	if _, err := os.Stat(cfg); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the configuration is still there after purge: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "var/lib/mqagent/state.db")); err != nil {
		t.Errorf("purge removed the agent's data: %v", err)
	}
}

func TestRPMPackage(t *testing.T) {
	requireTools(t, "rpm")
	_, rpm := buildPackages(t, "v1.2.3")
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]

	q := func(args ...string) string {
		t.Helper()
		return mustRun(t, time.Minute, "", nil, "rpm", append([]string{"-qp"}, append(args, rpm)...)...)
	}
	if got := q("--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}"); got != "mqagent 1.2.3 1 "+arch+" Apache-2.0" {
		t.Errorf("rpm header = %q", got)
	}
	files := make(map[string]string) // path: mode flags
	for line := range strings.Lines(q("--qf", `[%{FILENAMES} %{FILEMODES:perms} %{FILEFLAGS:fflags}\n]`)) {
		f := strings.Fields(line)
		if len(f) >= 2 {
			files[f[0]] = strings.Join(f[1:], " ")
		}
	}
	for path, want := range map[string]string{
		"/usr/bin/mqagent":                        "-rwxr-xr-x",
		"/usr/lib/systemd/system/mqagent.service": "-rw-r--r--",
		"/etc/mqagent/config.yaml":                "-rw------- cn", // %config(noreplace)
		"/etc/mqagent":                            "drwx------",
		"/var/lib/mqagent":                        "drwx------",
	} {
		if got := strings.TrimSpace(files[path]); got != want {
			t.Errorf("%s: %q, want %q (files %v)", path, got, want, files)
		}
	}
	scripts := q("--scripts")
	for _, w := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet", "systemctl enable mqagent.service", "systemctl disable --now mqagent.service", "mqagent config check"} {
		if !strings.Contains(scripts, w) {
			t.Errorf("rpm scripts lack %q:\n%s", w, scripts)
		}
	}
}

// TestDarwinTarball: the macOS tarball holds the binary, the example
// configuration, the licence and install notes under one directory, and
// the launchd files when deploy/launchd exists.
func TestDarwinTarball(t *testing.T) {
	requireTools(t, "bash", "tar")
	// The script does not look at the binary: the host's build stands in
	// for the darwin one (task packages builds the real one).
	bin := agentBuild(t, runtime.GOOS, runtime.GOARCH, "1.2.3")
	out := t.TempDir()
	mustRun(t, time.Minute, "", nil, "bash", filepath.Join(moduleRoot(t), "deploy", "packages", "tarball.sh"),
		"--binary", bin, "--version", "1.2.3", "--os", "darwin", "--arch", "arm64", "--out-dir", out)
	tgz := filepath.Join(out, "mqagent-1.2.3-darwin-arm64.tar.gz")
	listing := mustRun(t, time.Minute, "", nil, "tar", "-tzvf", tgz)
	entries := make(map[string]string)
	for line := range strings.Lines(listing) {
		f := strings.Fields(line)
		if len(f) >= 6 {
			entries[f[len(f)-1]] = f[0]
		}
	}
	const dir = "mqagent-1.2.3-darwin-arm64/"
	for name, mode := range map[string]string{
		dir + "mqagent": "-rwxr-xr-x", dir + "config.example.yaml": "-rw-------", dir + "LICENSE": "-rw-r--r--", dir + "INSTALL.txt": "-rw-r--r--",
	} {
		if entries[name] != mode {
			t.Errorf("%s: %q, want %q (entries %v)", name, entries[name], mode, entries)
		}
	}
	for name := range entries {
		if !strings.HasPrefix(name, dir) {
			t.Errorf("entry %s is outside %s", name, dir)
		}
	}
	launchd, _ := os.ReadDir(filepath.Join(moduleRoot(t), "deploy", "launchd"))
	for _, e := range launchd {
		if _, ok := entries[dir+"launchd/"+e.Name()]; !ok {
			t.Errorf("the tarball lacks deploy/launchd/%s", e.Name())
		}
	}
	x := t.TempDir()
	mustRun(t, time.Minute, x, nil, "tar", "-xzf", tgz)
	notes := string(readFile(t, filepath.Join(x, dir, "INSTALL.txt")))
	for _, w := range []string{"mqagent 1.2.3 for macOS (arm64)", "mqagent config init --out /usr/local/etc/mqagent/config.yaml"} {
		if !strings.Contains(notes, w) {
			t.Errorf("INSTALL.txt lacks %q:\n%s", w, notes)
		}
	}
	if !bytes.Equal(readFile(t, filepath.Join(x, dir, "mqagent")), readFile(t, bin)) {
		t.Error("the packed binary differs from the input")
	}
}

// TestRPMInstall installs the .rpm into a scratch root (rpm --root,
// without its scriptlets, which would run chrooted): an upgrade keeps the
// administrator's configuration and replaces the binary; erasing removes
// the binary and keeps the edited configuration as .rpmsave, and the data.
func TestRPMInstall(t *testing.T) {
	requireTools(t, "rpm")
	if os.Geteuid() != 0 {
		t.Skip("skipping: rpm --root needs root to give the files their owner")
	}
	_, rpm1 := buildPackages(t, "v1.2.3")
	_, rpm2 := buildPackages(t, "v1.2.4")
	root := t.TempDir()
	rpmRun := func(args ...string) {
		t.Helper()
		mustRun(t, 2*time.Minute, "", nil, "rpm", append([]string{"--root", root}, args...)...)
	}
	version := func() string {
		return strings.TrimSpace(mustRun(t, time.Minute, "", nil, filepath.Join(root, "usr/bin/mqagent"), "version"))
	}
	cfg := filepath.Join(root, "etc/mqagent/config.yaml")

	rpmRun("--initdb")
	rpmRun("-i", "--nodeps", "--noscripts", rpm1)
	if v := version(); v != "v1.2.3" {
		t.Errorf("installed version %q", v)
	}
	edited := append(readFile(t, cfg), []byte("\n# edited by the administrator\n")...)
	writeFile(t, cfg, edited, 0o600)
	writeFile(t, filepath.Join(root, "var/lib/mqagent/state.db"), []byte("data"), 0o600)

	rpmRun("-U", "--nodeps", "--noscripts", rpm2)
	if v := version(); v != "v1.2.4" {
		t.Errorf("version after the upgrade %q, want v1.2.4", v)
	}
	if !bytes.Equal(readFile(t, cfg), edited) {
		t.Error("the upgrade replaced the administrator's configuration")
	}

	rpmRun("-e", "--nodeps", "--noscripts", "mqagent")
	if _, err := os.Stat(filepath.Join(root, "usr/bin/mqagent")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the binary is still there after erase: %v", err)
	}
	if !bytes.Equal(readFile(t, cfg+".rpmsave"), edited) {
		t.Error("erase did not keep the edited configuration as config.yaml.rpmsave")
	}
	if _, err := os.Stat(filepath.Join(root, "var/lib/mqagent/state.db")); err != nil {
		t.Errorf("erase removed the agent's data: %v", err)
	}
}
