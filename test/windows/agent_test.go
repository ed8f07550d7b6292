package winetest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// agentWait bounds each wait on the agent under Wine (it starts in about a
// second once Wine is warm).
const agentWait = 30 * time.Second

// buildWindowsAgent builds mqagent.exe (GOOS=windows) into dir.
func buildWindowsAgent(t *testing.T, dir string) string {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "mqagent.exe")
	ctx, cancel := context.WithTimeout(context.Background(), goTestTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin(), "build", "-o", exe, "./agent")
	cmd.Dir = root
	cmd.Env = goTestEnv(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOOS=windows go build ./agent: %v\n%s", err, out)
	}
	return exe
}

// winPath is the Wine path of a Linux path (drive Z: is /).
func winPath(p string) string { return `Z:` + strings.ReplaceAll(p, "/", `\`) }

// TestAgentUnderWine runs the real mqagent.exe under Wine, in a Chinese
// locale (cmd writes GBK), against a Mosquitto on loopback: it comes
// online as a Windows host, runs a cmd shell command whose output (echo
// and one of cmd's own localised messages) arrives decoded as UTF-8, in the
// result and in the streamed chunks, with the exit code; agent.stop then
// stops it cleanly (final result, offline status, exit code 0).
func TestAgentUnderWine(t *testing.T) {
	requireWine(t)
	harness.RequireMosquitto(t)
	prepareWine(t)
	dir := t.TempDir() // on the Linux side: removed by Linux
	exe := buildWindowsAgent(t, dir)

	// The harness runs `BIN run --config FILE`: BIN is a script that runs
	// the exe through the exec wrapper, in the Chinese locale.
	launcher := filepath.Join(dir, "mqagent-wine")
	script := fmt.Sprintf("#!/bin/sh\nexport LC_ALL=zh_CN.UTF-8 WINEDEBUG=-all\nexec '%s' '%s' \"$@\"\n",
		filepath.Join(wineDir(t), "go_windows_amd64_exec"), exe)
	if err := os.WriteFile(launcher, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}

	broker := harness.StartMosquitto(t)
	op := harness.NewOperator(t, broker.URL())
	host := "wine-" + strings.ToLower(harness.NewID())[:8]
	op.WatchStatus(host)
	cfg := harness.DefaultConfig(host, broker.URL(), winPath(filepath.Join(dir, "data")))
	a := harness.StartAgent(t, launcher, cfg)

	online := op.WaitStatus(t, host, func(s protocol.Status) bool { return s.State == protocol.StatusOnline }, agentWait)
	if online.OS != "windows" {
		t.Fatalf("online status %+v, want os windows", online)
	}

	args, _ := json.Marshal(map[string]string{
		"shell":   "cmd",
		"command": "echo 你好，世界 & dir /b no-such-file-mqagent & exit 3",
	})
	id := op.Send(protocol.Command{Kind: protocol.KindShell, Target: "host:" + host, Args: args, Stream: true, TimeoutMS: 20000})
	res := op.WaitFinal(t, id, host, agentWait)
	code := -1
	if res.ExitCode != nil {
		code = *res.ExitCode
	}
	t.Logf("result: state %s exit %d stdout %q (%s) stderr %q (%s)", res.State, code, res.Stdout, res.StdoutEncoding, res.Stderr, res.StderrEncoding)
	if res.State != protocol.StateFailed || code != 3 {
		t.Errorf("state %s exit %d error %q, want failed with exit code 3", res.State, code, res.Error)
	}
	if !strings.Contains(res.Stdout, "你好，世界") || res.StdoutEncoding != "gbk" || res.StdoutBase64 != "" {
		t.Errorf("stdout %q from %q (raw %q), want 你好，世界 decoded with confidence from gbk", res.Stdout, res.StdoutEncoding, res.StdoutBase64)
	}
	if !strings.Contains(res.Stdout+res.Stderr, "找不到文件") {
		t.Errorf("output %q / %q lacks cmd's Chinese message 找不到文件", res.Stdout, res.Stderr)
	}
	streamed := map[string]string{}
	for _, c := range op.Chunks(id) {
		streamed[c.Stream] += c.Data
	}
	if streamed["stdout"] != res.Stdout || streamed["stderr"] != res.Stderr {
		t.Errorf("streamed %q, result stdout %q stderr %q", streamed, res.Stdout, res.Stderr)
	}

	n := len(op.Statuses(host))
	stop := op.Send(protocol.Command{Kind: protocol.KindAgentStop, Target: "host:" + host})
	if r := op.WaitFinal(t, stop, host, agentWait); r.State != protocol.StateSucceeded {
		t.Fatalf("agent.stop: %s %q", r.State, r.Error)
	}
	off := op.WaitNextStatus(t, host, n, func(s protocol.Status) bool { return s.State == protocol.StatusOffline }, agentWait)
	if off.Reason != protocol.ReasonShutdown {
		t.Errorf("offline status %+v, want reason shutdown", off)
	}
	if code, ok := a.Wait(agentWait); !ok || code != 0 {
		t.Fatalf("after agent.stop: exited %v with %d, want 0\n%s", ok, code, a.LogTail())
	}
}
