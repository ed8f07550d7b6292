package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/update"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// updateWait bounds the waits of the update tests: a rollback takes the
// health timeout plus the watchdog's margin (5 s) before it starts.
const updateWait = 25 * time.Second

// updateRig is an agent of version 1.0.0 running from a copy of its
// binary (an update replaces the file), with an update key, and an HTTP
// server on 127.0.0.1 that serves binaries.
type updateRig struct {
	t       *testing.T
	e       *env
	host    string
	v1      string // the 1.0.0 build (the copy's original)
	exe     string // the copy the agent runs
	keyFile string
	key     ed25519.PrivateKey
	a       *harness.Agent
	srv     *httptest.Server

	mu    sync.Mutex
	files map[string]served
}

// served is a binary the server hands out; truncate sends half of it
// after announcing all of it.
type served struct {
	data     []byte
	truncate bool
}

func newUpdateRig(t *testing.T, host string, mods ...func(map[string]any)) *updateRig {
	t.Helper()
	r := &updateRig{t: t, e: newEnv(t, false), host: host, v1: harness.BuildAgentVersion(t, "1.0.0"), files: map[string]served{}}
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	r.key = key
	dir := t.TempDir()
	r.keyFile = filepath.Join(dir, "update.key")
	if err := os.WriteFile(r.keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.exe = filepath.Join(dir, "bin", "mqagent")
	copyFile(t, r.v1, r.exe)
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	mods = append([]func(map[string]any){func(c map[string]any) {
		c["update"] = map[string]any{"public_key": base64.StdEncoding.EncodeToString(pub), "health_timeout": "4s"}
	}}, mods...)
	r.e.op.WatchStatus(host)
	r.a = harness.StartAgent(t, r.exe, r.e.config(host, mods...))
	st := r.e.waitOnline(r.a)
	if st.Version != "1.0.0" {
		t.Fatalf("agent reports version %q, want 1.0.0", st.Version)
	}
	return r
}

func (r *updateRig) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	f, ok := r.files[req.URL.Path]
	r.mu.Unlock()
	if !ok {
		http.NotFound(w, req)
		return
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(f.data)))
	if f.truncate {
		// Announce all, send half: the connection is closed short.
		_, _ = w.Write(f.data[:len(f.data)/2])
		return
	}
	_, _ = w.Write(f.data)
}

// offer serves data at path and returns its URL.
func (r *updateRig) offer(path string, data []byte, truncate bool) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.files[path] = served{data: data, truncate: truncate}
	return r.srv.URL + path
}

// sign runs `mqagent release sign BIN --key … --url URL -o json` and
// returns the agent.update args it prints.
func (r *updateRig) sign(bin, url string, extra ...string) protocol.UpdateArgs {
	r.t.Helper()
	args := append([]string{"release", "sign", bin, "--key", r.keyFile, "--url", url, "-o", "json"}, extra...)
	out, err := osexec.Command(r.v1, args...).Output()
	if err != nil {
		r.t.Fatalf("release sign: %v %s", err, stderrOf(err))
	}
	var a protocol.UpdateArgs
	if err := json.Unmarshal(out, &a); err != nil {
		r.t.Fatalf("release sign output %q: %v", out, err)
	}
	return a
}

// update sends agent.update and returns its id.
func (r *updateRig) update(a protocol.UpdateArgs) string {
	return r.e.op.Send(kind("host:"+r.host, protocol.KindAgentUpdate, a))
}

// exeSum is the sha256 of the agent's executable file.
func (r *updateRig) exeSum() [32]byte {
	r.t.Helper()
	b, err := os.ReadFile(r.exe)
	if err != nil {
		r.t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// waitUpdateCleared waits until the update state and the previous binary
// are gone.
func (r *updateRig) waitUpdateCleared() {
	r.t.Helper()
	state := filepath.Join(r.a.DataDir(), "update", "state.json")
	deadline := time.Now().Add(wait)
	for exists(state) || exists(update.BackupPath(r.exe)) || exists(update.StagedPath(r.exe)) {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(state)
			r.t.Fatalf("update not cleared: state %s, backup %v, staged %v", b, exists(update.BackupPath(r.exe)), exists(update.StagedPath(r.exe)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killLater stops (SIGTERM, then SIGKILL) an agent process the harness did
// not start, at the end of the test.
func killLater(t *testing.T, pid int) {
	t.Cleanup(func() {
		p := update.ProcOf(pid)
		if err := p.Terminate(15 * time.Second); err != nil {
			t.Errorf("stop agent pid %d: %v", pid, err)
		}
	})
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*osexec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

func updateData(t *testing.T, r protocol.Result) update.Result {
	t.Helper()
	var d update.Result
	if err := json.Unmarshal(r.Data, &d); err != nil {
		t.Fatalf("agent.update data %s: %v", r.Data, err)
	}
	return d
}

// watchdogs lists the update watchdog processes of a state directory.
func watchdogs(stateDir string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte("update-watchdog")) || !bytes.Contains(b, []byte(stateDir)) {
			continue
		}
		var pid int
		fmt.Sscanf(strings.TrimPrefix(p, "/proc/"), "%d", &pid)
		if update.ProcOf(pid).Alive() {
			pids = append(pids, pid)
		}
	}
	return pids
}

func waitNoWatchdog(t *testing.T, stateDir string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for len(watchdogs(stateDir)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("update watchdog still running: %v", watchdogs(stateDir))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestUpdate: v1 → v2 end to end. The agent downloads v2 over HTTP,
// checks it, swaps it in, re-executes in place, and v2 comes online with
// a new session and publishes the update's final result {from, to}.
func TestUpdate(t *testing.T) {
	r := newUpdateRig(t, "upd-1")
	v2 := harness.BuildAgentVersion(t, "2.0.0")
	before := r.e.waitOnline(r.a)
	n := len(r.e.op.Statuses(r.host))
	args := r.sign(v2, r.offer("/mqagent-2.0.0", mustRead(t, v2), false))
	if args.Version != "2.0.0" {
		t.Fatalf("release sign found version %q, want 2.0.0 (asked the binary)", args.Version)
	}
	id := r.update(args)

	off := r.e.op.WaitNextStatus(t, r.host, n, func(s protocol.Status) bool { return s.State == protocol.StatusOffline }, updateWait)
	if off.Reason != protocol.ReasonUpdate || off.Session != before.Session {
		t.Fatalf("offline status %+v, want reason update of session %d", off, before.Session)
	}
	on := r.e.op.WaitNextStatus(t, r.host, n, func(s protocol.Status) bool { return s.State == protocol.StatusOnline }, updateWait)
	if on.Version != "2.0.0" || on.Session <= before.Session || on.PID != before.PID {
		t.Fatalf("after the update %+v (before %+v): want version 2.0.0, a new session, the same pid (exec in place)", on, before)
	}
	res := r.e.op.WaitFinal(t, id, r.host, updateWait)
	expectState(t, res, protocol.StateSucceeded)
	if d := updateData(t, res); d.From != "1.0.0" || d.To != "2.0.0" {
		t.Fatalf("update data %+v, want from 1.0.0 to 2.0.0", d)
	}
	if got, want := r.exeSum(), fileSum(t, v2); got != want {
		t.Fatal("the executable is not the new binary")
	}
	r.waitUpdateCleared()
	waitNoWatchdog(t, filepath.Join(r.a.DataDir(), "update"))

	ping := r.e.op.Send(kind("host:"+r.host, protocol.KindPing, nil))
	pr := r.e.op.WaitFinal(t, ping, r.host, wait)
	var pd protocol.PingData
	if err := json.Unmarshal(pr.Data, &pd); err != nil || pd.Version != "2.0.0" {
		t.Fatalf("ping after the update: %s (%v)", pr.Data, err)
	}
	if rs := finalsOf(r.e.op.Results(id)); len(rs) != 1 {
		t.Fatalf("agent.update has %d final results, want 1: %+v", len(rs), rs)
	}
	// The agent is still the harness's process (exec in place) and stops
	// gracefully.
	if code := r.a.Stop(); code != 0 {
		t.Fatalf("v2 stopped with %d", code)
	}
}

// TestUpdateRejected: updates that must not be installed fail with a
// clear error; the binary is unchanged and the agent keeps running in the
// same session.
func TestUpdateRejected(t *testing.T) {
	v2 := harness.BuildAgentVersion(t, "2.0.0")
	v2data := mustRead(t, v2)
	r := newUpdateRig(t, "upd-rej", func(c map[string]any) {
		section(c, "update")["max_bytes"] = len(v2data) + 4096
	})
	before := r.e.waitOnline(r.a)
	n := len(r.e.op.Statuses(r.host))
	sum1 := r.exeSum()
	good := r.sign(v2, r.offer("/good", v2data, false))
	_, otherKey, _ := ed25519.GenerateKey(nil)
	big := append(bytes.Clone(v2data), make([]byte, 8192)...)
	bigPath := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(bigPath, big, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		args  func() protocol.UpdateArgs
		state string
		err   string
	}{
		{"bad signature", func() protocol.UpdateArgs {
			a := good
			a.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(otherKey, v2data))
			return a
		}, protocol.StateFailed, "signature is not by update.public_key"},
		{"wrong sha256", func() protocol.UpdateArgs {
			a := good
			s := sha256.Sum256([]byte("something else"))
			a.SHA256 = fmt.Sprintf("%x", s)
			return a
		}, protocol.StateFailed, "sha256 of the download"},
		{"truncated download", func() protocol.UpdateArgs {
			a := good
			a.URL = r.offer("/truncated", v2data, true)
			return a
		}, protocol.StateFailed, "download interrupted"},
		{"too large", func() protocol.UpdateArgs {
			return r.sign(bigPath, "file://"+bigPath, "--version", "2.0.0")
		}, protocol.StateFailed, "larger than update.max_bytes"},
		{"not found", func() protocol.UpdateArgs {
			a := good
			a.URL = r.srv.URL + "/missing"
			return a
		}, protocol.StateFailed, "404"},
		{"downgrade", func() protocol.UpdateArgs {
			a := good
			a.Version = "0.9.0"
			return a
		}, protocol.StateFailed, "older than the running 1.0.0"},
		{"same version", func() protocol.UpdateArgs {
			a := good
			a.Version = "1.0.0"
			return a
		}, protocol.StateFailed, "already running"},
		{"binary is another version", func() protocol.UpdateArgs {
			a := good
			a.Version = "3.0.0"
			return a
		}, protocol.StateFailed, `reports version "2.0.0", not "3.0.0"`},
		{"plain http to another host", func() protocol.UpdateArgs {
			a := good
			a.URL = "http://192.0.2.1/mqagent"
			return a
		}, protocol.StateRejected, "args.url"},
		{"unsupported scheme", func() protocol.UpdateArgs {
			a := good
			a.URL = "ftp://127.0.0.1/mqagent"
			return a
		}, protocol.StateRejected, "args.url"},
		{"signature not base64", func() protocol.UpdateArgs {
			a := good
			a.Signature = "not base64!"
			return a
		}, protocol.StateRejected, "args.signature"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := r.update(c.args())
			res := r.e.op.WaitFinal(t, id, r.host, updateWait)
			expectState(t, res, c.state)
			if !strings.Contains(res.Error, c.err) {
				t.Fatalf("error %q, want it to contain %q", res.Error, c.err)
			}
			if r.exeSum() != sum1 {
				t.Fatal("the executable changed")
			}
			if exists(filepath.Join(r.a.DataDir(), "update", "state.json")) || exists(update.StagedPath(r.exe)) || exists(update.BackupPath(r.exe)) {
				t.Fatal("a failed update left a state file, a staged or a backup binary")
			}
		})
	}
	// Still the same process and session: nothing restarted.
	if st := r.e.op.Statuses(r.host); len(st) != n {
		t.Fatalf("status changes during rejected updates: %+v", st[n:])
	}
	ping := r.e.op.Send(kind("host:"+r.host, protocol.KindPing, nil))
	expectState(t, r.e.op.WaitFinal(t, ping, r.host, wait), protocol.StateSucceeded)
	if !r.a.Running() || r.a.PID() != before.PID {
		t.Fatal("the agent process did not keep running")
	}
}

// TestUpdateRollback: a new version that exits at start, or runs but never
// comes online, is replaced by the previous binary, which is started again
// and ends the update failed.
func TestUpdateRollback(t *testing.T) {
	for _, c := range []struct {
		name, version, why string
	}{
		{"exits at start", "2.0.0-exits", "exited before it came online"},
		{"never online", "2.0.0-hangs", "did not come online within"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newUpdateRig(t, "upd-rb")
			broken := harness.BuildMain(t, "./test/e2e/testdata/brokenagent", c.version)
			before := r.e.waitOnline(r.a)
			sum1 := r.exeSum()
			n := len(r.e.op.Statuses(r.host))
			id := r.update(r.sign(broken, r.offer("/broken", mustRead(t, broken), false)))

			off := r.e.op.WaitNextStatus(t, r.host, n, func(s protocol.Status) bool { return s.State == protocol.StatusOffline }, updateWait)
			if off.Reason != protocol.ReasonUpdate {
				t.Fatalf("offline status %+v, want reason update", off)
			}
			on := r.e.op.WaitNextStatus(t, r.host, n, func(s protocol.Status) bool { return s.State == protocol.StatusOnline }, updateWait)
			killLater(t, on.PID)
			if on.Version != "1.0.0" || on.PID == before.PID || on.Session <= before.Session {
				t.Fatalf("after the rollback %+v (before %+v): want 1.0.0 in a new process (started by the watchdog), a new session", on, before)
			}
			res := r.e.op.WaitFinal(t, id, r.host, updateWait)
			expectState(t, res, protocol.StateFailed)
			if !strings.Contains(res.Error, "rolled back to 1.0.0") || !strings.Contains(res.Error, c.why) {
				t.Fatalf("error %q, want a rollback because it %s", res.Error, c.why)
			}
			if d := updateData(t, res); d.From != "1.0.0" || d.To != c.version {
				t.Fatalf("update data %+v", d)
			}
			if r.exeSum() != sum1 {
				t.Fatal("the previous binary was not restored")
			}
			r.waitUpdateCleared()
			waitNoWatchdog(t, filepath.Join(r.a.DataDir(), "update"))
			if code, ok := r.a.Wait(wait); !ok || (c.version == "2.0.0-exits") != (code == 1) {
				t.Fatalf("the broken version's process: exited %v with %d", ok, code)
			}
			ping := r.e.op.Send(kind("host:"+r.host, protocol.KindPing, nil))
			expectState(t, r.e.op.WaitFinal(t, ping, r.host, wait), protocol.StateSucceeded)
			if err := processAlive(on.PID); err != nil {
				t.Fatalf("restored agent pid %d: %v", on.PID, err)
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
