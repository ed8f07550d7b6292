package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/daemon"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/update"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// installRoot is a temporary install root: the agent binary in bin/, its
// data in var/lib/mqagent, its log file in var/log/mqagent with a rotated
// copy and an unrelated file beside it.
type installRoot struct {
	exe, data, logFile, rotated, unrelated string
}

func newInstallRoot(t *testing.T, bin string) installRoot {
	t.Helper()
	root := t.TempDir()
	r := installRoot{
		exe:       filepath.Join(root, "bin", "mqagent"),
		data:      filepath.Join(root, "var", "lib", "mqagent"),
		logFile:   filepath.Join(root, "var", "log", "mqagent", "agent.log"),
		rotated:   filepath.Join(root, "var", "log", "mqagent", "agent-2026-01-02T03-04-05.000.log"),
		unrelated: filepath.Join(root, "var", "log", "mqagent", "other.log"),
	}
	copyFile(t, bin, r.exe)
	for _, f := range []string{r.rotated, r.unrelated} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("old\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func (r installRoot) config(e *env, host string) map[string]any {
	return e.config(host, func(c map[string]any) {
		c["data_dir"] = r.data
		section(c, "log")["file"] = r.logFile
	})
}

// TestUninstall: agent.uninstall publishes its final result, then the
// offline status with reason uninstall, clears its retained status and
// inventory, exits 0 and removes its binary; with purge also its data and
// log files (and nothing else).
func TestUninstall(t *testing.T) {
	for _, purge := range []bool{false, true} {
		t.Run(fmt.Sprintf("purge=%v", purge), func(t *testing.T) {
			e := newEnv(t, false)
			host := "uni-1"
			root := newInstallRoot(t, e.bin)
			statusTopic, invTopic := e.op.Topics().Status(host), e.op.Topics().Inventory(host)
			e.op.WatchStatus(host)
			e.op.Watch(invTopic)
			a := harness.StartAgent(t, root.exe, root.config(e, host))
			e.waitOnline(a)
			e.op.WaitMessage(t, invTopic, func(m harness.Message) bool { return len(m.Payload) > 0 }, wait)
			n := len(e.op.Statuses(host))

			id := e.op.Send(kind("host:"+host, protocol.KindAgentUninstall, protocol.UninstallArgs{Purge: purge}))
			expectState(t, e.op.WaitFinal(t, id, host, wait), protocol.StateSucceeded)
			off := e.op.WaitNextStatus(t, host, n, func(s protocol.Status) bool { return s.State == protocol.StatusOffline }, wait)
			if off.Reason != protocol.ReasonUninstall {
				t.Fatalf("offline status %+v, want reason uninstall", off)
			}
			res := e.op.WaitMessage(t, e.op.Topics().Result(host, id), func(m harness.Message) bool { return strings.Contains(string(m.Payload), `"succeeded"`) }, wait)
			offMsg := e.op.WaitMessage(t, statusTopic, func(m harness.Message) bool { return strings.Contains(string(m.Payload), `"uninstall"`) }, wait)
			if offMsg.At.Before(res.At) {
				t.Fatal("the offline status came before the final result")
			}
			e.op.WaitMessage(t, statusTopic, func(m harness.Message) bool { return len(m.Payload) == 0 && !m.At.Before(offMsg.At) }, wait)
			e.op.WaitMessage(t, invTopic, func(m harness.Message) bool { return len(m.Payload) == 0 }, wait)
			if code, ok := a.Wait(wait); !ok || code != 0 {
				t.Fatalf("agent after uninstall: exited %v with %d, want 0", ok, code)
			}

			if exists(root.exe) {
				t.Fatal("the binary is still there")
			}
			if !exists(root.unrelated) {
				t.Fatal("an unrelated file next to the log was removed")
			}
			kept := []string{filepath.Join(root.data, daemon.StateFile), root.logFile, root.rotated}
			for _, p := range kept {
				if exists(p) == purge {
					t.Errorf("%s exists: %v, want %v (purge %v)", p, exists(p), !purge, purge)
				}
			}
			if purge && exists(root.data) {
				t.Error("purge left the data directory")
			}
			if exists(filepath.Join(root.data, daemon.UninstallFile)) {
				t.Error("the uninstall record is left behind")
			}

			// A newcomer sees neither status nor inventory: subscribe to
			// them, then to a retained marker; once the marker is there the
			// retained messages (if any) were delivered before it.
			op2 := harness.NewOperator(t, e.broker.URL())
			marker := "mqagent-test/marker/" + harness.NewID()
			op2.Publish(marker, []byte("x"), true)
			op2.Watch(statusTopic)
			op2.Watch(invTopic)
			op2.Watch(marker)
			op2.WaitMessage(t, marker, nil, wait)
			if got := len(op2.Messages(statusTopic)) + len(op2.Messages(invTopic)); got != 0 {
				t.Fatalf("retained status/inventory still there after uninstall: %d messages", got)
			}
			op2.Publish(marker, nil, true)
		})
	}
}

// TestUninstallCompletesAfterACrash: an accepted agent.uninstall that was
// not carried out (the agent died first) is carried out at the next start,
// instead of running.
func TestUninstallCompletesAfterACrash(t *testing.T) {
	e := newEnv(t, false)
	root := newInstallRoot(t, e.bin)
	if err := os.MkdirAll(root.data, 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(daemon.PendingUninstall{ID: "u-1", Purge: true})
	if err := os.WriteFile(filepath.Join(root.data, daemon.UninstallFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	a := harness.StartAgent(t, root.exe, root.config(e, "uni-2"))
	if code, ok := a.Wait(wait); !ok || code != 0 {
		t.Fatalf("agent with a pending uninstall: exited %v with %d, want 0", ok, code)
	}
	if exists(root.exe) || exists(root.data) || exists(root.rotated) {
		t.Fatalf("not uninstalled: exe %v, data %v, logs %v", exists(root.exe), exists(root.data), exists(root.rotated))
	}
	if len(e.op.Statuses("uni-2")) != 0 {
		t.Fatal("the agent came online instead of uninstalling")
	}
}

// TestServiceCommands: `service install` refuses without privileges, with
// a clear message; `service status` shows the service manager's state and
// the agent's own status.
func TestServiceCommands(t *testing.T) {
	e := newEnv(t, false)
	a := e.agent("svc-1")
	waitConnectedStatus(t, e.bin, a.ConfigPath())

	// An unprivileged user: nobody when the tests run as root.
	dir, err := os.MkdirTemp("", "mqagent-svc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "mqagent")
	copyFile(t, e.bin, bin)
	cfg := filepath.Join(dir, "agent.yaml")
	copyFile(t, a.ConfigPath(), cfg)
	if err := os.Chmod(cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := osexec.Command(bin, "service", "install", "--config", cfg)
	asNobody(cmd)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "needs administrator rights") {
		t.Fatalf("service install without privileges: %v\n%s", err, out)
	}

	cmd = osexec.Command(e.bin, "service", "status", "--config", a.ConfigPath())
	out, err = cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "not installed") || !strings.Contains(string(out), "svc-1") ||
		!strings.Contains(string(out), "connected") {
		t.Fatalf("service status: %v\n%s", err, out)
	}
	a.Stop()
	cmd = osexec.Command(e.bin, "service", "status", "--config", a.ConfigPath())
	out, _ = cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 3 {
		t.Fatalf("service status with the agent stopped: exit %d\n%s", cmd.ProcessState.ExitCode(), out)
	}
}

// waitConnectedStatus waits until `mqagent status` says connected.
func waitConnectedStatus(t *testing.T, bin, cfg string) {
	t.Helper()
	deadlineWait(t, func() bool {
		out, err := osexec.Command(bin, "status", "--config", cfg, "-o", "json").Output()
		return err == nil && strings.Contains(string(out), `"connected": true`)
	})
}

// TestStatusShowsUpdate: `mqagent status` reports an update in progress.
func TestStatusShowsUpdate(t *testing.T) {
	e := newEnv(t, false)
	a := e.agent("st-upd")
	waitConnectedStatus(t, e.bin, a.ConfigPath())
	st := update.State{ID: "u-9", From: "1.0.0", To: "2.0.0", Phase: update.PhaseRolledBack, Error: "version 2.0.0 did not come online"}
	b, _ := json.Marshal(st)
	dir := filepath.Join(a.DataDir(), "update")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := osexec.Command(e.bin, "status", "--config", a.ConfigPath()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "1.0.0 → 2.0.0: rolled_back (command u-9): version 2.0.0 did not come online") {
		t.Fatalf("status: %v\n%s", err, out)
	}
}

// deadlineWait polls cond until it holds, failing the test after wait.
func deadlineWait(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", wait)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestControlResultBeforeOffline: agent.restart and agent.stop deliver
// their final result before the offline status, and the offline status
// before the process goes.
func TestControlResultBeforeOffline(t *testing.T) {
	e := newEnv(t, false)
	host := "ctl-order"
	a := e.agent(host)
	statusTopic := e.op.Topics().Status(host)
	for _, k := range []string{protocol.KindAgentRestart, protocol.KindAgentStop} {
		reason := map[string]string{protocol.KindAgentRestart: protocol.ReasonRestart, protocol.KindAgentStop: protocol.ReasonShutdown}[k]
		n := len(e.op.Messages(statusTopic))
		id := e.op.Send(kind("host:"+host, k, nil))
		res := e.op.WaitMessage(t, e.op.Topics().Result(host, id), func(m harness.Message) bool { return strings.Contains(string(m.Payload), `"succeeded"`) }, wait)
		off := e.op.WaitMessage(t, statusTopic, func(m harness.Message) bool {
			return strings.Contains(string(m.Payload), `"reason":"`+reason+`"`)
		}, wait)
		if off.At.Before(res.At) {
			t.Fatalf("%s: the offline status came before the final result", k)
		}
		if k == protocol.KindAgentRestart {
			e.op.WaitMessage(t, statusTopic, func(m harness.Message) bool {
				return strings.Contains(string(m.Payload), `"online"`) && m.At.After(off.At)
			}, wait)
			if got := len(e.op.Messages(statusTopic)); got < n+2 {
				t.Fatalf("restart: %d status messages, want offline then online", got-n)
			}
		}
	}
	if code, ok := a.Wait(wait); !ok || code != 0 {
		t.Fatalf("agent.stop: exited %v with %d", ok, code)
	}
}
