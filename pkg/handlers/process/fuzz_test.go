package process_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/handlers/process"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// FuzzArgs feeds arbitrary args to the exec, shell and script decoders:
// the args of a command come from the network. Whatever the input: no
// panic; an error is a *protocol.FieldError naming an args field; a request
// that decodes has an audit summary, carries no NUL byte into a program's
// argv, and the summary never holds the script's content or stdin.
func FuzzArgs(f *testing.F) {
	for _, s := range []string{
		`{"argv":["uname","-a"]}`,
		`{"argv":["sh","-c","echo hi"],"cwd":"/tmp","env":{"A":"1"},"stdin":"secret-stdin","encoding":"cp936"}`,
		`{"argv":[]}`,
		`{"argv":["a\u0000b"]}`,
		`{"env":{"=":"x"},"argv":["x"]}`,
		`{"command":"echo hi","shell":"bash"}`,
		`{"command":"dir","shell":"cmd","encoding":"auto"}`,
		`{"command":"Get-Date","shell":"powershell"}`,
		`{"content":"echo secret-content","interpreter":"sh","args":["a"]}`,
		`{"content":"print(1)","interpreter":"python3"}`,
		`{"content":"x","interpreter":"perl"}`,
		`{"argv":["x"],"argv":["y"]}`,
		`{"Argv":["x"]}`,
		`{"argv":["x"],"unknown":1}`,
		`null`, `[]`, `"x"`, `{}`, ``, `{"argv":"x"}`,
	} {
		f.Add([]byte(s))
	}
	handlers := []dispatch.Handler{process.Exec{}, process.Shell{}, process.Script{}}
	f.Fuzz(func(t *testing.T, args []byte) {
		for _, h := range handlers {
			req, err := h.Decode(json.RawMessage(args))
			if err != nil {
				var fe *protocol.FieldError
				if !errors.As(err, &fe) || !strings.HasPrefix(fe.Field, "args") {
					t.Fatalf("%T: error %v (%T) is not a *FieldError on an args field", h, err, err)
				}
				continue
			}
			s := h.(dispatch.Summarizer).Summary(req)
			if strings.Contains(s, "secret-") {
				t.Fatalf("%T: summary %q holds stdin or script content", h, s)
			}
			if _, ok := h.(process.Exec); ok && strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("exec: argv with a NUL byte accepted: %q", s)
			}
		}
	})
}
