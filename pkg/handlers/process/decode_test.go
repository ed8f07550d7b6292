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

// The three kinds are command handlers with an audit summary.
var (
	_ dispatch.Handler    = process.Exec{}
	_ dispatch.Handler    = process.Shell{}
	_ dispatch.Handler    = process.Script{}
	_ dispatch.Summarizer = process.Exec{}
	_ dispatch.Summarizer = process.Shell{}
	_ dispatch.Summarizer = process.Script{}
)

func TestDecode(t *testing.T) {
	cases := []struct {
		name  string
		h     dispatch.Handler
		args  string
		field string // "" = valid
	}{
		{"exec ok", process.Exec{}, `{"argv":["uname","-a"],"cwd":"/","env":{"A":"1"},"stdin":"x"}`, ""},
		{"exec unknown field ignored", process.Exec{}, `{"argv":["true"],"extra":1}`, ""},
		{"exec no args", process.Exec{}, ``, "args.argv"},
		{"exec null args", process.Exec{}, `null`, "args.argv"},
		{"exec args not an object", process.Exec{}, `["ls"]`, "args"},
		{"exec argv missing", process.Exec{}, `{}`, "args.argv"},
		{"exec argv empty", process.Exec{}, `{"argv":[]}`, "args.argv"},
		{"exec argv empty program", process.Exec{}, `{"argv":[""]}`, "args.argv"},
		{"exec argv null program", process.Exec{}, `{"argv":[null,"x"]}`, "args.argv"},
		{"exec argv a string", process.Exec{}, `{"argv":"uname -a"}`, "args.argv"},
		{"exec argv element a number", process.Exec{}, `{"argv":["echo",1]}`, "args.argv"},
		{"exec argv NUL", process.Exec{}, `{"argv":["echo","a\u0000b"]}`, "args.argv"},
		{"exec cwd a number", process.Exec{}, `{"argv":["true"],"cwd":1}`, "args.cwd"},
		{"exec cwd NUL", process.Exec{}, `{"argv":["true"],"cwd":"/tmp\u0000"}`, "args.cwd"},
		{"exec env a list", process.Exec{}, `{"argv":["true"],"env":["A=1"]}`, "args.env"},
		{"exec env value a number", process.Exec{}, `{"argv":["true"],"env":{"A":1}}`, "args.env"},
		{"exec env empty name", process.Exec{}, `{"argv":["true"],"env":{"":"x"}}`, "args.env"},
		{"exec env name with =", process.Exec{}, `{"argv":["true"],"env":{"A=B":"x"}}`, "args.env"},
		{"exec env name with NUL", process.Exec{}, `{"argv":["true"],"env":{"A\u0000":"x"}}`, "args.env"},
		{"exec env value with NUL", process.Exec{}, `{"argv":["true"],"env":{"A":"x\u0000y"}}`, "args.env"},
		{"exec stdin a number", process.Exec{}, `{"argv":["cat"],"stdin":1}`, "args.stdin"},

		{"shell ok", process.Shell{}, `{"command":"echo hi"}`, ""},
		{"shell command missing", process.Shell{}, `{}`, "args.command"},
		{"shell command empty", process.Shell{}, `{"command":""}`, "args.command"},
		{"shell command blank", process.Shell{}, `{"command":"  \t\n"}`, "args.command"},
		{"shell command a number", process.Shell{}, `{"command":1}`, "args.command"},
		{"shell command NUL", process.Shell{}, `{"command":"echo a\u0000b"}`, "args.command"},
		{"shell unknown", process.Shell{}, `{"command":"echo hi","shell":"zsh"}`, "args.shell"},
		{"shell a number", process.Shell{}, `{"command":"echo hi","shell":1}`, "args.shell"},
		{"shell args not an object", process.Shell{}, `"echo hi"`, "args"},

		{"script ok", process.Script{}, `{"content":"echo hi","args":["a"]}`, ""},
		{"script content missing", process.Script{}, `{}`, "args.content"},
		{"script content empty", process.Script{}, `{"content":""}`, "args.content"},
		{"script content a list", process.Script{}, `{"content":["echo"]}`, "args.content"},
		{"script interpreter unknown", process.Script{}, `{"content":"x","interpreter":"ruby"}`, "args.interpreter"},
		{"script interpreter a number", process.Script{}, `{"content":"x","interpreter":3}`, "args.interpreter"},
		{"script args a string", process.Script{}, `{"content":"x","args":"a b"}`, "args.args"},
		{"script args element an object", process.Script{}, `{"content":"x","args":[{}]}`, "args.args"},
		{"script args NUL", process.Script{}, `{"content":"x","args":["a\u0000"]}`, "args.args"},
		{"script args not an object", process.Script{}, `7`, "args"},

		{"exec encoding", process.Exec{}, `{"argv":["x"],"encoding":"cp866"}`, ""},
		{"exec encoding code page", process.Exec{}, `{"argv":["x"],"encoding":"936"}`, ""},
		{"exec encoding unknown", process.Exec{}, `{"argv":["x"],"encoding":"klingon"}`, "args.encoding"},
		{"exec encoding a number", process.Exec{}, `{"argv":["x"],"encoding":936}`, "args.encoding"},
		{"exec encoding case variant", process.Exec{}, `{"argv":["x"],"Encoding":"gbk"}`, "args.Encoding"},
		{"shell encoding", process.Shell{}, `{"command":"x","encoding":"Shift_JIS"}`, ""},
		{"shell encoding unknown", process.Shell{}, `{"command":"x","encoding":"utf-7"}`, "args.encoding"},
		{"shell encoding empty means detect", process.Shell{}, `{"command":"x","encoding":""}`, ""},
		{"script encoding", process.Script{}, `{"content":"x","encoding":"utf-16le"}`, ""},
		{"script encoding unknown", process.Script{}, `{"content":"x","encoding":"ebcdic-klingon"}`, "args.encoding"},
		{"script encoding duplicate", process.Script{}, `{"content":"x","encoding":"gbk","encoding":"big5"}`, "args.encoding"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := c.h.Decode(json.RawMessage(c.args))
			if c.field == "" {
				if err != nil {
					t.Fatalf("Decode(%s): %v", c.args, err)
				}
				if req == nil {
					t.Fatalf("Decode(%s): nil request", c.args)
				}
				return
			}
			if err == nil {
				t.Fatalf("Decode(%s) accepted, want an error naming %s", c.args, c.field)
			}
			var fe *protocol.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Decode(%s) = %T %v, want a *protocol.FieldError", c.args, err, err)
			}
			if fe.Field != c.field {
				t.Fatalf("Decode(%s) names field %q (%v), want %q", c.args, fe.Field, err, c.field)
			}
			if !strings.HasPrefix(err.Error(), c.field+": ") {
				t.Fatalf("error %q does not start with the field name %q", err, c.field)
			}
		})
	}
}

func TestSummaryLeavesOutSecrets(t *testing.T) {
	const secret = "hunter2-s3cr3t"
	cases := []struct {
		name     string
		h        dispatch.Handler
		args     string
		want     []string // substrings the summary must have
		mustNots []string
	}{
		{"exec env and stdin", process.Exec{},
			`{"argv":["deploy","--fast"],"env":{"TOKEN":"` + secret + `"},"stdin":"` + secret + `"}`,
			[]string{"deploy --fast"}, []string{secret, "TOKEN"}},
		{"shell", process.Shell{}, `{"command":"uptime"}`, []string{"uptime"}, nil},
		{"script content", process.Script{},
			`{"content":"echo ` + secret + `","interpreter":"bash","args":["one","two"]}`,
			[]string{"bash", "one two", "bytes"}, []string{secret, "echo"}},
		{"script default interpreter", process.Script{}, `{"content":"echo ` + secret + `"}`,
			[]string{"default"}, []string{secret}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := c.h.Decode(json.RawMessage(c.args))
			if err != nil {
				t.Fatal(err)
			}
			sum := c.h.(dispatch.Summarizer).Summary(req)
			for _, w := range c.want {
				if !strings.Contains(sum, w) {
					t.Errorf("summary %q lacks %q", sum, w)
				}
			}
			for _, n := range c.mustNots {
				if strings.Contains(sum, n) {
					t.Errorf("summary %q contains %q", sum, n)
				}
			}
		})
	}
}
