package process_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/windows"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/handlers/process"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/runner"
	"github.com/mqagent/mqagent/test/windows/wintest"
)

const waitTimeout = 20 * time.Second

// runWin runs one command through a handler, streaming, and returns the
// outcome and the streamed text per stream.
func runWin(t *testing.T, h dispatch.Handler, kind, args string) (dispatch.Outcome, map[string]string) {
	t.Helper()
	req, err := h.Decode(json.RawMessage(args))
	if err != nil {
		t.Fatalf("Decode(%s): %v", args, err)
	}
	var mu sync.Mutex
	chunks := map[string]string{}
	call := &dispatch.Call{Cmd: &protocol.Command{V: 1, ID: "c1", Kind: kind}, Req: req,
		Output: func(stream string, data []byte) {
			mu.Lock()
			defer mu.Unlock()
			chunks[stream] += string(data)
		}}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	o := h.Run(ctx, call)
	mu.Lock()
	defer mu.Unlock()
	return o, chunks
}

func TestShellCmdStatesWindows(t *testing.T) {
	cases := []struct {
		args, state, stdout string
	}{
		{`{"command":"echo hi"}`, protocol.StateSucceeded, "hi"},
		{`{"command":"echo partial & exit 3","shell":"cmd"}`, protocol.StateFailed, "partial"},
		{`{"command":"exit /b 0"}`, protocol.StateSucceeded, ""},
	}
	for _, c := range cases {
		o, streamed := runWin(t, process.Shell{}, protocol.KindShell, c.args)
		if o.State != c.state || strings.TrimSpace(string(o.Stdout)) != c.stdout {
			t.Errorf("%s: state %q stdout %q (error %q), want %q %q", c.args, o.State, o.Stdout, o.Error, c.state, c.stdout)
		}
		if streamed[runner.Stdout] != string(o.Stdout) {
			t.Errorf("%s: streamed %q, result %q", c.args, streamed[runner.Stdout], o.Stdout)
		}
	}
}

func TestScriptCmdWindows(t *testing.T) {
	dir := wintest.TempDir(t)
	h := process.Script{Limits: process.Limits{ScriptDir: dir}}
	o, _ := runWin(t, h, protocol.KindScript, `{"content":"@echo off\necho arg=%1\nexit /b 2\n","args":["x"]}`)
	if o.State != protocol.StateFailed || o.ExitCode == nil || *o.ExitCode != 2 || strings.TrimSpace(string(o.Stdout)) != "arg=x" {
		t.Fatalf("state %q exit %v stdout %q error %q", o.State, o.ExitCode, o.Stdout, o.Error)
	}
}

// TestLocaleCmdOutput runs cmd with non-ASCII text in the system's ANSI code
// page: under Wine with LC_ALL=zh_CN.UTF-8 (code page 936) cmd writes GBK,
// with ru_RU.UTF-8 (1251) CP1251, including its own localised error
// messages. The result and the streamed chunks must be the decoded UTF-8.
// test/windows runs this under both locales; in others it is skipped.
func TestLocaleCmdOutput(t *testing.T) {
	acp := windows.GetACP()
	var echo, want, enc, missing string
	switch acp {
	case 936:
		echo, want, enc, missing = "你好，世界", "你好，世界", "gbk", "找不到文件"
	case 1251:
		echo, want, enc, missing = "Привет, мир", "Привет, мир", "windows-1251", "Файл не найден"
	default:
		t.Skipf("ANSI code page %d: run under LC_ALL=zh_CN.UTF-8 or ru_RU.UTF-8 (Wine), or a Chinese or Russian Windows", acp)
	}
	args, _ := json.Marshal(map[string]string{"command": "echo " + echo + " & dir /b no-such-file-mqagent"})
	o, streamed := runWin(t, process.Shell{}, protocol.KindShell, string(args))
	all := string(o.Stdout) + string(o.Stderr)
	t.Logf("stdout %q (%s) stderr %q (%s)", o.Stdout, o.StdoutEncoding, o.Stderr, o.StderrEncoding)
	if !strings.Contains(string(o.Stdout), want) {
		t.Errorf("stdout %q does not have %q", o.Stdout, want)
	}
	if !strings.Contains(all, missing) {
		t.Errorf("output %q lacks the localised message %q", all, missing)
	}
	if o.StdoutEncoding != "" && o.StdoutEncoding != enc {
		t.Errorf("stdout decoded from %q, want %q", o.StdoutEncoding, enc)
	}
	if o.StdoutEncoding == enc && o.StdoutBase64 != "" {
		t.Errorf("confident decoding kept the raw bytes")
	}
	if streamed[runner.Stdout] != string(o.Stdout) || streamed[runner.Stderr] != string(o.Stderr) {
		t.Errorf("streamed %q, result %q / %q", streamed, o.Stdout, o.Stderr)
	}
}
