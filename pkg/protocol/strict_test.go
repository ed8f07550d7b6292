package protocol_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// bare builds a bare command from extra members (JSON text without the
// braces) and the members every command needs.
func bare(members string) []byte {
	return []byte(`{"v":1,"id":"c-1","issued_at":"2026-11-25T10:00:00Z",` + members + `}`)
}

// wrap builds a signed wrapper around inner with extra wrapper members.
func wrap(inner []byte, members string) []byte {
	w := signed(inner, "ops")
	if members == "" {
		return w
	}
	return append(w[:len(w)-1], []byte(","+members+"}")...)
}

// Where Decode reports an ambiguous key.
const (
	atMalformed = "malformed" // Decode fails: no result
	atSig       = "sig"       // Envelope.SigErr: rejected before the journal
	atTarget    = "target"    // Envelope.TargetErr
	atFilter    = "filter"    // Envelope.FilterErr
	atCommand   = "command"   // Envelope.Command
	atNowhere   = "ok"        // not ambiguous
)

type ambiguousCase struct {
	name    string
	payload []byte
	at      string
	field   string // the FieldError's field; for malformed, a substring
	msg     string // substring of the message
}

const (
	dupMsg  = "duplicate key"
	caseMsg = "differs only in case from"
)

var ambiguousCases = []ambiguousCase{
	// The command object.
	{"duplicate kind", bare(`"kind":"ping","kind":"exec"`), atCommand, "kind", dupMsg},
	{"duplicate kind, same value", bare(`"kind":"ping","kind":"ping"`), atCommand, "kind", dupMsg},
	{"duplicate kind, one escaped", bare(`"kind":"ping","kin\u0064":"exec"`), atCommand, "kind", dupMsg},
	{"case variant of kind alone", bare(`"Kind":"exec"`), atCommand, "Kind", caseMsg + ` "kind"`},
	{"case variant of kind after kind", bare(`"kind":"ping","KIND":"exec"`), atCommand, "KIND", caseMsg + ` "kind"`},
	{"Kelvin sign for k, escaped", bare(`"kind":"ping","\u212aind":"exec"`), atCommand, `"\u212aind"`, caseMsg + ` "kind"`},
	{"Kelvin sign for k, raw UTF-8", bare("\"kind\":\"ping\",\"\u212aind\":\"exec\""), atCommand, `"\u212aind"`, caseMsg + ` "kind"`},
	{"long s for s", bare("\"kind\":\"ping\",\"\u017ftream\":true"), atCommand, `"\u017ftream"`, caseMsg + ` "stream"`},
	{"duplicate v", bare(`"kind":"ping","v":2`), atCommand, "v", dupMsg},
	{"case variant of issued_at", bare(`"kind":"ping","Issued_At":"2030-01-01T00:00:00Z"`), atCommand, "Issued_At", caseMsg},
	{"duplicate timeout_ms", bare(`"kind":"ping","timeout_ms":1,"timeout_ms":99999999`), atCommand, "timeout_ms", dupMsg},
	{"duplicate operator", bare(`"kind":"ping","operator":"alice","operator":"mallory"`), atCommand, "operator", dupMsg},
	{"duplicate unknown key", bare(`"kind":"ping","x":1,"x":2`), atCommand, "x", dupMsg},
	{"duplicate expires_at", bare(`"kind":"ping","expires_at":"2020-01-01T00:00:00Z","expires_at":"2099-01-01T00:00:00Z"`), atCommand, "expires_at", dupMsg},
	{"duplicate kid in a bare command", bare(`"kind":"ping","kid":"a","kid":"b"`), atCommand, "kid", dupMsg},
	{"unknown keys differing in case", bare(`"kind":"ping","foo":1,"FOO":2`), atNowhere, "", ""},
	{"nested object in an unknown key", bare(`"kind":"ping","x":[{"a":1,"a":2}]`), atCommand, "x[0].a", dupMsg},
	{"id twice", bare(`"kind":"ping","id":"c-2"`), atMalformed, "id: duplicate key", ""},
	{"id twice, escaped", bare(`"kind":"ping","\u0069d":"c-2"`), atMalformed, "id: duplicate key", ""},
	{"case variant of id alone", []byte(`{"v":1,"ID":"c-1","kind":"ping","issued_at":"2026-11-25T10:00:00Z"}`), atMalformed, `ID: key differs only in case from "id"`, ""},
	{"case variant of id after id", bare(`"kind":"ping","Id":"c-2"`), atMalformed, `Id: key differs only in case from "id"`, ""},
	{"invalid UTF-8 keys that decode alike", bare("\"kind\":\"ping\",\"k\xffx\":1,\"k\xfex\":2"), atCommand, `"k\ufffdx"`, dupMsg},

	// target and filter.
	{"duplicate target", bare(`"kind":"ping","target":"host:web-01","target":"all"`), atTarget, "target", dupMsg},
	{"case variant of target", bare(`"kind":"ping","Target":"all"`), atTarget, "Target", caseMsg},
	{"duplicate filter", bare(`"kind":"ping","filter":{"os":"linux"},"filter":{}`), atFilter, "filter", dupMsg},
	{"case variant of filter", bare(`"kind":"ping","FILTER":{"os":"linux"}`), atFilter, "FILTER", caseMsg},
	{"filter: duplicate os", bare(`"kind":"ping","filter":{"os":"linux","os":"windows"}`), atFilter, "filter.os", dupMsg},
	{"filter: case variant of os", bare(`"kind":"ping","filter":{"os":"linux","OS":"windows"}`), atFilter, "filter.OS", caseMsg + ` "os"`},
	{"filter: case variant of hosts", bare(`"kind":"ping","filter":{"Hosts":["web-01"]}`), atFilter, "filter.Hosts", caseMsg},
	{"filter: duplicate fact", bare(`"kind":"ping","filter":{"facts":{"env":"prod","env":"dev"}}`), atFilter, "filter.facts.env", dupMsg},
	{"filter: facts differing in case are distinct", bare(`"kind":"ping","filter":{"facts":{"env":"prod","ENV":"dev"}}`), atNowhere, "", ""},

	// args.
	{"args: duplicate argv", bare(`"kind":"exec","args":{"argv":["ls"],"argv":["rm","-rf","/"]}`), atCommand, "args.argv", dupMsg},
	{"args: case variant of argv", bare(`"kind":"exec","args":{"argv":["ls"],"ARGV":["rm"]}`), atCommand, "args.ARGV", caseMsg + ` "argv"`},
	{"args: case variant of command", bare(`"kind":"shell","args":{"Command":"rm -rf /"}`), atCommand, "args.Command", caseMsg + ` "command"`},
	{"args: duplicate env variable", bare(`"kind":"exec","args":{"argv":["env"],"env":{"A":"1","A":"2"}}`), atCommand, "args.env.A", dupMsg},
	{"args: env variables differing in case are distinct", bare(`"kind":"exec","args":{"argv":["env"],"env":{"Path":"1","PATH":"2"}}`), atNowhere, "", ""},
	{"args: deep duplicate", bare(`"kind":"x.custom","args":{"a":[{"b":{"c":1,"c":2}}]}`), atCommand, "args.a[0].b.c", dupMsg},
	{"case variant of args", bare(`"kind":"exec","Args":{"argv":["rm"]}`), atCommand, "Args", caseMsg},
	{"duplicate args", bare(`"kind":"exec","args":{"argv":["ls"]},"args":{"argv":["rm"]}`), atCommand, "args", dupMsg},

	// The signed wrapper: outside the signature, so never journaled.
	{"wrapper: duplicate kid", wrap(cmdWith(nil), `"kid":"ops"`), atSig, "kid", dupMsg + " in the signed wrapper"},
	{"wrapper: case variant of sig", wrap(cmdWith(nil), `"Sig":"AAAA"`), atSig, "Sig", caseMsg + ` "sig"`},
	{"wrapper: duplicate unknown key", wrap(cmdWith(nil), `"x":1,"x":2`), atSig, "x", dupMsg},
	{"wrapper: case variant of a command key", wrap(cmdWith(nil), `"Kind":"exec"`), atSig, "Kind", caseMsg},
	{"wrapper: signed twice", wrap(cmdWith(nil), `"signed":"`+b64(cmdWith(set("kind", `"shell"`)))+`"`), atMalformed, "signed: duplicate key", ""},
	{"wrapper: case variant of signed", []byte(`{"Signed":"` + b64(cmdWith(nil)) + `","kid":"ops","sig":"AAAA"}`), atMalformed, `Signed: key differs only in case from "signed"`, ""},
	{"wrapper: signed and a case variant", wrap(cmdWith(nil), `"SIGNED":"`+b64(cmdWith(nil))+`"`), atMalformed, `SIGNED: key differs only in case`, ""},
	{"wrapper: fine", wrap(cmdWith(nil), `"comment":"hello"`), atNowhere, "", ""},

	// Inside the signed bytes: signed, so authentic when the signature is.
	{"signed: duplicate kind", signed(bare(`"target":"all","kind":"ping","kind":"exec"`), "ops"), atCommand, "kind", dupMsg},
	{"signed: case variant of kind", signed(bare(`"target":"all","kind":"ping","Kind":"exec"`), "ops"), atCommand, "Kind", caseMsg},
	{"signed: duplicate id", signed(bare(`"target":"all","kind":"ping","id":"c-2"`), "ops"), atMalformed, "id: duplicate key", ""},
	{"signed: duplicate target", signed(bare(`"target":"all","kind":"ping","target":"host:web-01"`), "ops"), atTarget, "target", dupMsg},
	{"signed: args case variant", signed(bare(`"target":"all","kind":"exec","args":{"Argv":["rm"]}`), "ops"), atCommand, "args.Argv", caseMsg},
	{"signed: case variant of signed inside", signed(bare(`"target":"all","kind":"ping","Signed":"x"`), "ops"), atMalformed, "signed", ""},

	// Many keys: the duplicate check must not be quadratic, and still work.
	{"2000 distinct keys", bare(`"kind":"ping",` + manyKeys(2000, "")), atNowhere, "", ""},
	{"2000 keys, last repeats the first", bare(`"kind":"ping",` + manyKeys(2000, "k0")), atCommand, "k0", dupMsg},
	{"2000 env variables, one repeated", bare(`"kind":"exec","args":{"argv":["env"],"env":{` + manyKeys(2000, "k1234") + `}}`), atCommand, "args.env.k1234", dupMsg},
}

// manyKeys is n members "k0":0, "k1":1, …, plus a last one named extra
// when it is not "".
func manyKeys(n int, extra string) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":"%d"`, i, i)
	}
	if extra != "" {
		fmt.Fprintf(&b, `,"%s":"again"`, extra)
	}
	return b.String()
}

func TestDecodeAmbiguousKeys(t *testing.T) {
	for _, tc := range ambiguousCases {
		t.Run(tc.name, func(t *testing.T) {
			env, err := protocol.Decode(tc.payload)
			if tc.at == atMalformed {
				if !errors.Is(err, protocol.ErrMalformed) || env != nil {
					t.Fatalf("Decode = %+v, %v; want an error wrapping ErrMalformed", env, err)
				}
				if !strings.Contains(err.Error(), tc.field) {
					t.Fatalf("error %q does not contain %q", err, tc.field)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v (the id is readable and unambiguous)", err)
			}
			var got error
			switch tc.at {
			case atSig:
				got = env.SigErr
			case atTarget:
				got = env.TargetErr
			case atFilter:
				got = env.FilterErr
				if env.Filter != nil {
					t.Errorf("Filter = %+v with FilterErr set", env.Filter)
				}
			}
			_, cmdErr := env.Command(time.Hour)
			if tc.at == atNowhere {
				if env.SigErr != nil || env.TargetErr != nil || env.FilterErr != nil {
					t.Fatalf("SigErr=%v TargetErr=%v FilterErr=%v, want none", env.SigErr, env.TargetErr, env.FilterErr)
				}
				if cmdErr != nil && strings.Contains(cmdErr.Error(), "key") {
					t.Fatalf("Command: %v", cmdErr)
				}
				return
			}
			if tc.at == atCommand {
				got = cmdErr
			} else if tc.at != atSig && cmdErr == nil {
				// Target and filter problems fail Command too.
				t.Errorf("Command succeeded despite %s", tc.at)
			}
			var fe *protocol.FieldError
			if !errors.As(got, &fe) {
				t.Fatalf("%s error = %v (%T), want a *FieldError", tc.at, got, got)
			}
			if fe.Field != tc.field || !strings.Contains(fe.Msg, tc.msg) {
				t.Fatalf("%s error: field %q msg %q; want field %q, msg containing %q", tc.at, fe.Field, fe.Msg, tc.field, tc.msg)
			}
			if errors.Is(got, protocol.ErrMalformed) {
				t.Errorf("a field error must not be ErrMalformed")
			}
		})
	}
}

// What the agent must never see: an ambiguous command that still gets
// through Decode and Command. Every payload built from one of the example
// commands with a duplicate or case-variant key, at the top level and
// inside args and filter, fails somewhere.
func TestNoAmbiguousCommandValidates(t *testing.T) {
	base := map[string]string{
		"v": `1`, "id": `"c-1"`, "kind": `"exec"`, "args": `{"argv":["ls"],"env":{"A":"1"}}`,
		"target": `"all"`, "issued_at": `"2026-11-25T10:00:00Z"`, "expires_at": `"2026-11-25T11:00:00Z"`,
		"timeout_ms": `1000`, "stream": `false`, "filter": `{"os":"linux","facts":{"env":"prod"}}`, "operator": `"alice"`,
	}
	order := []string{"v", "id", "kind", "args", "target", "issued_at", "expires_at", "timeout_ms", "stream", "filter", "operator"}
	build := func(extra string) []byte {
		var b strings.Builder
		b.WriteByte('{')
		for i, k := range order {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%q:%s", k, base[k])
		}
		b.WriteString(extra)
		b.WriteByte('}')
		return []byte(b.String())
	}
	valid := func(p []byte) error {
		env, err := protocol.Decode(p)
		if err != nil {
			return err
		}
		if env.SigErr != nil || env.TargetErr != nil || env.FilterErr != nil {
			return errors.New("envelope error")
		}
		_, err = env.Command(time.Hour)
		return err
	}
	if err := valid(build("")); err != nil {
		t.Fatalf("the base command must validate: %v", err)
	}
	if err := valid(signed(build(""), "ops")); err != nil {
		t.Fatalf("the signed base command must validate: %v", err)
	}
	var extras []string
	for _, k := range order {
		extras = append(extras, fmt.Sprintf(",%q:%s", k, base[k]))                  // duplicate
		extras = append(extras, fmt.Sprintf(",%q:%s", strings.ToUpper(k), base[k])) // case variant
		extras = append(extras, fmt.Sprintf(",%q:%s", strings.ToUpper(k[:1])+k[1:], base[k]))
	}
	for _, k := range []string{"argv", "env", "cwd", "stdin"} {
		extras = append(extras, `,"args":{"argv":["ls"],"`+k+`":null,"`+k+`":null}`)
		extras = append(extras, `,"args":{"argv":["ls"],"`+strings.ToUpper(k)+`":null}`)
	}
	for _, k := range []string{"os", "hosts", "groups", "facts"} {
		extras = append(extras, `,"filter":{"`+k+`":null,"`+k+`":null}`)
		extras = append(extras, `,"filter":{"`+strings.ToUpper(k)+`":null}`)
	}
	for _, extra := range extras {
		// The extra member is added as well as (or instead of) the base
		// one, so the payload has the key twice or a case variant.
		for _, p := range [][]byte{build(extra), signed(build(extra), "ops")} {
			if err := valid(p); err == nil {
				t.Errorf("ambiguous payload validates: %s", p)
			}
		}
	}
}

// DecodeArgs applies the same rules against the exact args type of a kind.
func TestDecodeArgsAmbiguousKeys(t *testing.T) {
	type custom struct {
		Level int               `json:"level"`
		Tags  map[string]string `json:"tags"`
	}
	tests := []struct {
		name  string
		args  string
		into  func() any
		field string // "" = no error
		msg   string
	}{
		{"exec: duplicate argv", `{"argv":["ls"],"argv":["rm"]}`, func() any { return new(protocol.ExecArgs) }, "args.argv", dupMsg},
		{"exec: case variant", `{"Argv":["rm"]}`, func() any { return new(protocol.ExecArgs) }, "args.Argv", caseMsg},
		{"exec: duplicate env", `{"argv":["x"],"env":{"A":"1","A":"2"}}`, func() any { return new(protocol.ExecArgs) }, "args.env.A", dupMsg},
		{"exec: env case is exact", `{"argv":["x"],"env":{"a":"1","A":"2"}}`, func() any { return new(protocol.ExecArgs) }, "", ""},
		{"cancel: case variant of id", `{"ID":"x"}`, func() any { return new(protocol.IDArgs) }, "args.ID", caseMsg},
		{"update: long s in sha256", "{\"\u017fha256\":\"00\"}", func() any { return new(protocol.UpdateArgs) }, `args."\u017fha256"`, caseMsg},
		{"uninstall: duplicate purge", `{"purge":false,"purge":true}`, func() any { return new(protocol.UninstallArgs) }, "args.purge", dupMsg},
		{"custom struct: case variant", `{"LEVEL":3}`, func() any { return new(custom) }, "args.LEVEL", caseMsg + ` "level"`},
		{"custom struct: duplicate tag", `{"tags":{"a":"1","a":"2"}}`, func() any { return new(custom) }, "args.tags.a", dupMsg},
		{"map: keys are exact", `{"a":1,"A":2}`, func() any { return new(map[string]int) }, "", ""},
		{"map: duplicate", `{"a":1,"a":2}`, func() any { return new(map[string]int) }, "args.a", dupMsg},
		{"exec: an unrelated case is fine", `{"argv":["x"],"Comment":"hi"}`, func() any { return new(protocol.ExecArgs) }, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := protocol.DecodeArgs(json.RawMessage(tc.args), tc.into())
			if tc.field == "" {
				if err != nil {
					t.Fatalf("DecodeArgs: %v", err)
				}
				return
			}
			var fe *protocol.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *FieldError", err, err)
			}
			if fe.Field != tc.field || !strings.Contains(fe.Msg, tc.msg) {
				t.Errorf("field %q msg %q; want field %q, msg containing %q", fe.Field, fe.Msg, tc.field, tc.msg)
			}
		})
	}
}
