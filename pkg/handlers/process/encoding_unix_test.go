//go:build unix

package process_test

import (
	"context"
	"encoding/base64"
	"testing"
	"unicode/utf8"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/handlers/process"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/runner"
)

// Output that is not UTF-8 is decoded: with the encoding arg, or from the
// locale of the command's environment, or by detection; the result names
// the encoding and keeps the raw bytes when the decoding was a guess.
func TestRunDecodesOutput(t *testing.T) {
	cases := []struct {
		name   string
		h      dispatch.Handler
		kind   string
		args   string
		stdout string
		stderr string
		outEnc string
		errEnc string
		outRaw string // raw bytes expected in stdout_base64 ("" = none)
		errRaw string
	}{
		{"utf-8 untouched", process.Exec{}, protocol.KindExec,
			`{"argv":["printf","h\u00e9llo \u4f60\u597d"]}`, "héllo 你好", "", "", "", "", ""},
		{"forced gbk", process.Exec{}, protocol.KindExec,
			`{"argv":["printf","\\304\\343\\272\\303"],"encoding":"gbk"}`, "你好", "", "gbk", "", "", ""},
		{"forced cp866 on stderr", process.Shell{}, protocol.KindShell,
			`{"command":"printf '\\217\\340\\250\\242\\245\\342' >&2","encoding":"cp866"}`, "", "Привет", "", "ibm866", "", ""},
		{"locale from the command env", process.Exec{}, protocol.KindExec,
			`{"argv":["printf","\\360\\322\\311\\327\\305\\324"],"env":{"LC_ALL":"ru_RU.KOI8-R"}}`, "Привет", "", "koi8-r", "", "", ""},
		{"detected gbk", process.Exec{}, protocol.KindExec,
			`{"argv":["printf","\\325\\322\\262\\273\\265\\275\\316\\304\\274\\376\\241\\243"],"env":{"LC_ALL":"C.UTF-8"}}`, "找不到文件。", "", "gbk", "", "", ""},
		{"invalid bytes kept raw", process.Exec{}, protocol.KindExec,
			`{"argv":["printf","ok \\377\\376\\375 end"],"env":{"LC_ALL":"C.UTF-8"}}`, "-", "", "-", "", "ok \xff\xfe\xfd end", ""},
		{"forced utf-8, lossy", process.Script{}, protocol.KindScript,
			`{"content":"printf 'a\\377b'","encoding":"utf-8"}`, "a\uFFFDb", "", "utf-8", "", "a\xffb", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := &recorder{}
			call := newCall(t, c.h, c.kind, c.args, rec)
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			o := c.h.Run(ctx, call)
			if o.State != protocol.StateSucceeded {
				t.Fatalf("state %q error %q stderr %q", o.State, o.Error, o.Stderr)
			}
			if !utf8.Valid(o.Stdout) || !utf8.Valid(o.Stderr) {
				t.Fatalf("output not UTF-8: %q %q", o.Stdout, o.Stderr)
			}
			if c.stdout != "-" && string(o.Stdout) != c.stdout || string(o.Stderr) != c.stderr {
				t.Errorf("stdout %q stderr %q, want %q %q", o.Stdout, o.Stderr, c.stdout, c.stderr)
			}
			if c.outEnc != "-" && o.StdoutEncoding != c.outEnc || o.StderrEncoding != c.errEnc {
				t.Errorf("encodings %q %q, want %q %q", o.StdoutEncoding, o.StderrEncoding, c.outEnc, c.errEnc)
			}
			if c.outEnc == "-" && o.StdoutEncoding == "" {
				t.Errorf("no stdout encoding named for output that was not UTF-8")
			}
			for _, raw := range []struct{ name, b64, want string }{{"stdout", o.StdoutBase64, c.outRaw}, {"stderr", o.StderrBase64, c.errRaw}} {
				got, err := base64.StdEncoding.DecodeString(raw.b64)
				if err != nil || string(got) != raw.want {
					t.Errorf("%s_base64 %q (%q, %v), want %q", raw.name, raw.b64, got, err, raw.want)
				}
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if rec.chunks[runner.Stdout] != string(o.Stdout) || rec.chunks[runner.Stderr] != string(o.Stderr) {
				t.Errorf("streamed %q, result stdout %q stderr %q", rec.chunks, o.Stdout, o.Stderr)
			}
		})
	}
}

// A character cut at the output cap is dropped, not published as U+FFFD,
// in the result and in the streamed chunks.
func TestRunDecodesTruncatedOutput(t *testing.T) {
	h := process.Exec{Limits: process.Limits{MaxOutput: 7}}
	rec := &recorder{}
	call := newCall(t, h, protocol.KindExec, `{"argv":["printf","\\304\\343\\272\\303\\325\\322\\262\\273"],"encoding":"gbk"}`, rec)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	o := h.Run(ctx, call)
	if string(o.Stdout) != "你好找" || !o.StdoutTruncated {
		t.Fatalf("stdout %q truncated %v, want 你好找 and truncated", o.Stdout, o.StdoutTruncated)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.chunks[runner.Stdout] != "你好找" {
		t.Fatalf("streamed %q", rec.chunks[runner.Stdout])
	}
}
