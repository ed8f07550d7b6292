package protocol_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
)

const testID = "01JDX4T0Q8M4S0ZB0E9J6Q3N1C"

// testKey is a fixed ed25519 key, so the seeds built from it are stable.
var testKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

// baseCmd is the example command of docs/PROTOCOL.md as a map that a test
// case can edit before marshalling.
func baseCmd() map[string]any {
	return map[string]any{
		"v":          1,
		"id":         testID,
		"kind":       "exec",
		"args":       map[string]any{"argv": []string{"uname", "-a"}},
		"target":     "host:web-01",
		"issued_at":  "2026-11-25T10:00:00.000Z",
		"expires_at": "2026-11-25T10:10:00.000Z",
		"timeout_ms": 30000,
		"stream":     false,
		"filter":     map[string]any{"os": "linux", "groups": []string{"web"}, "facts": map[string]string{"env": "prod"}},
		"operator":   "alice",
	}
}

// cmdWith marshals baseCmd after edit. A value of type json.RawMessage is
// written verbatim, so a case can put any JSON (or non-JSON) in a field.
func cmdWith(edit func(m map[string]any)) []byte {
	m := baseCmd()
	if edit != nil {
		edit(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func without(keys ...string) func(map[string]any) {
	return func(m map[string]any) {
		for _, k := range keys {
			delete(m, k)
		}
	}
}

func set(key string, raw string) func(map[string]any) {
	return func(m map[string]any) { m[key] = json.RawMessage(raw) }
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// signed wraps inner in a signed wrapper made with testKey.
func signed(inner []byte, kid string) []byte {
	w := map[string]string{"signed": b64(inner), "kid": kid, "sig": b64(ed25519.Sign(testKey, inner))}
	b, err := json.Marshal(w)
	if err != nil {
		panic(err)
	}
	return b
}

func garbage(n int) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{1, 2, 3}))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

type malformedCase struct {
	name    string
	payload []byte
	msg     string // substring of the error
}

var malformedCases = []malformedCase{
	{"empty payload", []byte{}, "invalid JSON"},
	{"only spaces", []byte("   \n"), "invalid JSON"},
	{"truncated JSON", cmdWith(nil)[:40], "invalid JSON"},
	{"trailing garbage", append(cmdWith(nil), '}'), "invalid JSON"},
	{"JSON array", []byte(`[{"id":"abc"}]`), "must be a JSON object"},
	{"JSON string", []byte(`"abc"`), "must be a JSON object"},
	{"JSON number", []byte(`42`), "must be a JSON object"},
	{"JSON null", []byte(`null`), "id: missing"},
	{"empty object", []byte(`{}`), "id: missing"},
	{"missing id", cmdWith(without("id")), "id: missing"},
	{"id null", cmdWith(set("id", `null`)), "id: missing"},
	{"id number", cmdWith(set("id", `12345`)), "id: not a string"},
	{"id object", cmdWith(set("id", `{"x":1}`)), "id: not a string"},
	{"id empty", cmdWith(set("id", `""`)), "id: must match"},
	{"id with slash", cmdWith(set("id", `"a/b"`)), "id: must match"},
	{"id with plus", cmdWith(set("id", `"a+b"`)), "id: must match"},
	{"id with hash", cmdWith(set("id", `"a#"`)), "id: must match"},
	{"id with space", cmdWith(set("id", `"a b"`)), "id: must match"},
	{"id of 65 chars", cmdWith(set("id", `"`+strings.Repeat("a", 65)+`"`)), "id: must match"},
	{"id with non-ASCII", cmdWith(set("id", `"idé"`)), "id: must match"},
	{"id with invalid UTF-8", cmdWith(set("id", "\"a\xffb\"")), "id: must match"},
	{"2 MiB of random garbage", garbage(2 << 20), "invalid JSON"},
	{"invalid UTF-8 outside strings", []byte("{\"id\":\"abc\",\xff\xfe}"), "invalid JSON"},
	{"invalid UTF-8 before the object", append([]byte("\xff"), cmdWith(nil)...), "invalid JSON"},
	{"byte order mark before the object", append([]byte("\xef\xbb\xbf"), cmdWith(nil)...), "invalid JSON"},
	{"signed not base64", []byte(`{"signed":"!!not base64!!","kid":"ops","sig":"AAAA"}`), "signed: not standard base64"},
	{"signed URL-safe base64", []byte(`{"signed":"-_-_","kid":"ops","sig":"AAAA"}`), "signed: not standard base64"},
	{"signed not a string", []byte(`{"signed":42,"kid":"ops","sig":"AAAA"}`), "signed: not a string"},
	{"signed wrapping non-JSON", signed([]byte("hello, world"), "ops"), "signed: invalid JSON"},
	{"signed wrapping an array", signed([]byte(`[1,2,3]`), "ops"), "signed: payload must be a JSON object"},
	{"signed wrapping nothing", signed([]byte{}, "ops"), "signed: invalid JSON"},
	{"signed wrapping a bad id", signed(cmdWith(set("id", `"a/b"`)), "ops"), "id: must match"},
	{"signed wrapping no id", signed(cmdWith(without("id")), "ops"), "id: missing"},
	{"nested signed wrapper", signed(signed(cmdWith(nil), "ops"), "ops"), "nested signed wrapper"},
}

func TestDecodeMalformed(t *testing.T) {
	for _, tc := range malformedCases {
		t.Run(tc.name, func(t *testing.T) {
			env, err := protocol.Decode(tc.payload)
			if !errors.Is(err, protocol.ErrMalformed) {
				t.Fatalf("Decode error = %v, want one wrapping ErrMalformed", err)
			}
			if env != nil {
				t.Errorf("Decode returned an envelope with its error: %+v", env)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not contain %q", err, tc.msg)
			}
			if len(err.Error()) > 300 {
				t.Errorf("error is %d bytes long, want a short message", len(err.Error()))
			}
		})
	}
}

func mustTime(s string) protocol.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return protocol.Time{Time: t.UTC()}
}

func TestDecodeValidBare(t *testing.T) {
	payload := cmdWith(nil)
	env, err := protocol.Decode(payload)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if env.Signed || env.Kid != "" || env.Sig != nil || env.SigErr != nil {
		t.Errorf("bare command decoded as signed: %+v", env)
	}
	if !bytes.Equal(env.Raw, payload) {
		t.Errorf("Raw = %q, want the payload", env.Raw)
	}
	if env.ID != testID || env.Kind != "exec" || env.Operator != "alice" || env.Target != "host:web-01" {
		t.Errorf("envelope fields: id=%q kind=%q operator=%q target=%q", env.ID, env.Kind, env.Operator, env.Target)
	}
	if env.TargetErr != nil || env.FilterErr != nil {
		t.Errorf("TargetErr=%v FilterErr=%v, want nil", env.TargetErr, env.FilterErr)
	}
	wantFilter := &protocol.Filter{OS: "linux", Groups: []string{"web"}, Facts: map[string]string{"env": "prod"}}
	if !reflect.DeepEqual(env.Filter, wantFilter) {
		t.Errorf("Filter = %+v, want %+v", env.Filter, wantFilter)
	}
	cmd, err := env.Command(time.Hour)
	if err != nil {
		t.Fatalf("Command: %v", err)
	}
	exp := mustTime("2026-11-25T10:10:00Z")
	want := &protocol.Command{
		V: 1, ID: testID, Kind: "exec",
		Args:      json.RawMessage(`{"argv":["uname","-a"]}`),
		Target:    "host:web-01",
		IssuedAt:  mustTime("2026-11-25T10:00:00Z"),
		ExpiresAt: &exp,
		TimeoutMS: 30000,
		Filter:    wantFilter,
		Operator:  "alice",
	}
	if !reflect.DeepEqual(cmd, want) {
		t.Errorf("Command =\n %+v\nwant\n %+v", cmd, want)
	}
}

func TestDecodeMinimal(t *testing.T) {
	payload := []byte(` {"v":1,"id":"a","kind":"ping","issued_at":"2026-11-25T10:00:00Z"} `)
	env, err := protocol.Decode(payload)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if env.Filter != nil || env.Target != "" || env.Operator != "" {
		t.Errorf("absent fields set: %+v", env)
	}
	cmd, err := env.Command(time.Minute)
	if err != nil {
		t.Fatalf("Command: %v", err)
	}
	if cmd.Args != nil || cmd.Filter != nil || cmd.Stream || cmd.TimeoutMS != 0 || cmd.Target != "" {
		t.Errorf("absent fields set: %+v", cmd)
	}
}

func TestDecodeNullOptionalFields(t *testing.T) {
	payload := cmdWith(func(m map[string]any) {
		for _, k := range []string{"args", "target", "expires_at", "timeout_ms", "stream", "filter", "operator"} {
			m[k] = nil
		}
	})
	env, err := protocol.Decode(payload)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	cmd, err := env.Command(time.Hour)
	if err != nil {
		t.Fatalf("Command: %v (null optional fields must count as absent)", err)
	}
	if cmd.Args != nil || cmd.Target != "" || cmd.Filter != nil || cmd.TimeoutMS != 0 || cmd.Operator != "" {
		t.Errorf("null fields set: %+v", cmd)
	}
	if want := cmd.IssuedAt.Add(time.Hour); !cmd.ExpiresAt.Equal(want) {
		t.Errorf("ExpiresAt = %v, want issued_at + ttl = %v", cmd.ExpiresAt, want)
	}
}

func TestDecodeSigned(t *testing.T) {
	inner := cmdWith(func(m map[string]any) { m["kind"] = "ping"; delete(m, "args") })
	payload := signed(inner, "ops")
	env, err := protocol.Decode(payload)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if !env.Signed || env.Kid != "ops" || env.SigErr != nil {
		t.Fatalf("Signed=%v Kid=%q SigErr=%v", env.Signed, env.Kid, env.SigErr)
	}
	if !bytes.Equal(env.Raw, inner) {
		t.Errorf("Raw = %q, want the exact inner bytes %q", env.Raw, inner)
	}
	if !bytes.Equal(env.Sig, ed25519.Sign(testKey, inner)) {
		t.Errorf("Sig is not the decoded signature")
	}
	if !ed25519.Verify(testKey.Public().(ed25519.PublicKey), env.Raw, env.Sig) {
		t.Errorf("signature does not verify over Raw")
	}
	if env.ID != testID || env.Kind != "ping" || env.Target != "host:web-01" || env.Operator != "alice" {
		t.Errorf("fields not taken from the inner command: %+v", env)
	}
	cmd, err := env.Command(time.Hour)
	if err != nil {
		t.Fatalf("Command: %v", err)
	}
	if cmd.ID != testID || cmd.Kind != "ping" || cmd.Target != "host:web-01" {
		t.Errorf("Command = %+v", cmd)
	}
}

// The signature covers the inner bytes exactly: odd spacing and key order
// must come through unchanged.
func TestDecodeSignedKeepsExactBytes(t *testing.T) {
	inner := []byte("{ \"kind\" : \"ping\",\n\t\"id\":\"x-1\", \"v\":1,\"target\":\"all\",\"issued_at\":\"2026-11-25T10:00:00Z\" }")
	env, err := protocol.Decode(signed(inner, "ops"))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if !bytes.Equal(env.Raw, inner) {
		t.Errorf("Raw = %q, want %q", env.Raw, inner)
	}
	if _, err := env.Command(time.Hour); err != nil {
		t.Errorf("Command: %v", err)
	}
}

// A wrapper whose kid or sig is missing or unreadable still decodes (its id
// is readable, so it gets a result); SigErr says what is wrong.
func TestDecodeSigErr(t *testing.T) {
	inner := b64(cmdWith(nil))
	tests := []struct {
		name    string
		payload string
		field   string
		kid     string
	}{
		{"kid missing", `{"signed":"` + inner + `","sig":"AAAA"}`, "kid", ""},
		{"kid null", `{"signed":"` + inner + `","kid":null,"sig":"AAAA"}`, "kid", ""},
		{"kid number", `{"signed":"` + inner + `","kid":7,"sig":"AAAA"}`, "kid", ""},
		{"sig missing", `{"signed":"` + inner + `","kid":"ops"}`, "sig", "ops"},
		{"sig number", `{"signed":"` + inner + `","kid":"ops","sig":7}`, "sig", "ops"},
		{"sig not base64", `{"signed":"` + inner + `","kid":"ops","sig":"***"}`, "sig", "ops"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, err := protocol.Decode([]byte(tc.payload))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !env.Signed || env.ID != testID {
				t.Errorf("Signed=%v ID=%q", env.Signed, env.ID)
			}
			var fe *protocol.FieldError
			if !errors.As(env.SigErr, &fe) || fe.Field != tc.field {
				t.Fatalf("SigErr = %v, want a FieldError on %q", env.SigErr, tc.field)
			}
			if env.Sig != nil {
				t.Errorf("Sig = %x, want nil", env.Sig)
			}
			if env.Kid != tc.kid {
				t.Errorf("Kid = %q, want %q", env.Kid, tc.kid)
			}
		})
	}
}

func TestDecodeOperatorCut(t *testing.T) {
	long := strings.Repeat("a", 255) + "é" + strings.Repeat("b", 100) // é straddles byte 256
	env, err := protocol.Decode(cmdWith(func(m map[string]any) { m["operator"] = long }))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if env.Operator != strings.Repeat("a", 255) {
		t.Errorf("Operator = %q (%d bytes), want the first 255 bytes (no broken rune)", env.Operator, len(env.Operator))
	}
	env, err = protocol.Decode(cmdWith(func(m map[string]any) { m["operator"] = strings.Repeat("o", 256) }))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if len(env.Operator) != 256 {
		t.Errorf("256-byte operator cut to %d bytes", len(env.Operator))
	}
}

func TestDecodeIDBoundaries(t *testing.T) {
	for _, id := range []string{"a", "A.b_c-9", strings.Repeat("Z", 64), "..", "-"} {
		env, err := protocol.Decode(cmdWith(func(m map[string]any) { m["id"] = id }))
		if err != nil {
			t.Errorf("id %q: %v", id, err)
			continue
		}
		if env.ID != id {
			t.Errorf("ID = %q, want %q", env.ID, id)
		}
	}
}

type fieldCase struct {
	name    string
	payload []byte
	field   string
}

var fieldCases = []fieldCase{
	{"v missing", cmdWith(without("v")), "v"},
	{"v null", cmdWith(set("v", `null`)), "v"},
	{"v wrong version", cmdWith(set("v", `2`)), "v"},
	{"v zero", cmdWith(set("v", `0`)), "v"},
	{"v string", cmdWith(set("v", `"1"`)), "v"},
	{"v fraction", cmdWith(set("v", `1.5`)), "v"},
	{"v bool", cmdWith(set("v", `true`)), "v"},
	{"kind missing", cmdWith(without("kind")), "kind"},
	{"kind number", cmdWith(set("kind", `3`)), "kind"},
	{"kind empty", cmdWith(set("kind", `""`)), "kind"},
	{"kind list", cmdWith(set("kind", `["exec"]`)), "kind"},
	{"args array", cmdWith(set("args", `["uname"]`)), "args"},
	{"args string", cmdWith(set("args", `"uname -a"`)), "args"},
	{"args number", cmdWith(set("args", `1`)), "args"},
	{"issued_at missing", cmdWith(without("issued_at")), "issued_at"},
	{"issued_at null", cmdWith(set("issued_at", `null`)), "issued_at"},
	{"issued_at bad format", cmdWith(set("issued_at", `"25/11/2026 10:00"`)), "issued_at"},
	{"issued_at without zone", cmdWith(set("issued_at", `"2026-11-25T10:00:00"`)), "issued_at"},
	{"issued_at date only", cmdWith(set("issued_at", `"2026-11-25"`)), "issued_at"},
	{"issued_at number", cmdWith(set("issued_at", `1764064800000`)), "issued_at"},
	{"expires_at bad", cmdWith(set("expires_at", `"tomorrow"`)), "expires_at"},
	{"expires_at number", cmdWith(set("expires_at", `600000`)), "expires_at"},
	{"timeout_ms negative", cmdWith(set("timeout_ms", `-1`)), "timeout_ms"},
	{"timeout_ms fraction", cmdWith(set("timeout_ms", `1.5`)), "timeout_ms"},
	{"timeout_ms string", cmdWith(set("timeout_ms", `"30000"`)), "timeout_ms"},
	{"timeout_ms bool", cmdWith(set("timeout_ms", `true`)), "timeout_ms"},
	{"timeout_ms huge", cmdWith(set("timeout_ms", `1e300`)), "timeout_ms"},
	{"stream string", cmdWith(set("stream", `"true"`)), "stream"},
	{"stream number", cmdWith(set("stream", `1`)), "stream"},
	{"operator number", cmdWith(set("operator", `42`)), "operator"},
	{"operator object", cmdWith(set("operator", `{"name":"alice"}`)), "operator"},
	{"target bad form", cmdWith(set("target", `"web-01"`)), "target"},
	{"target unknown scope", cmdWith(set("target", `"node:web-01"`)), "target"},
	{"target empty host", cmdWith(set("target", `"host:"`)), "target"},
	{"target upper-case host", cmdWith(set("target", `"host:Web-01"`)), "target"},
	{"target bad group", cmdWith(set("target", `"group:-web"`)), "target"},
	{"target empty string", cmdWith(set("target", `""`)), "target"},
	{"target number", cmdWith(set("target", `7`)), "target"},
	{"filter wrong type", cmdWith(set("filter", `"linux"`)), "filter"},
	{"filter array", cmdWith(set("filter", `[{"os":"linux"}]`)), "filter"},
	{"filter hosts not a list", cmdWith(set("filter", `{"hosts":"web-01"}`)), "filter.hosts"},
	{"filter os number", cmdWith(set("filter", `{"os":1}`)), "filter.os"},
	{"filter bad host id", cmdWith(set("filter", `{"hosts":["Web-01"]}`)), "filter.hosts[0]"},
	{"filter second host bad", cmdWith(set("filter", `{"hosts":["web-01","a/b"]}`)), "filter.hosts[1]"},
	{"filter bad group", cmdWith(set("filter", `{"groups":["web",""]}`)), "filter.groups[1]"},
	{"signed command without target", signed(cmdWith(without("target")), "ops"), "target"},
	{"signed command with bad target", signed(cmdWith(set("target", `"everyone"`)), "ops"), "target"},
	{"invalid UTF-8 inside a string", cmdWith(set("operator", "\"al\xffice\"")), "payload"},
	{"invalid UTF-8 inside args", cmdWith(set("args", "{\"argv\":[\"echo\",\"\xc3\x28\"]}")), "payload"},
	{"signed, invalid UTF-8 inside", signed(cmdWith(set("kind", "\"pi\xfeng\"")), "ops"), "payload"},
}

func TestCommandFieldErrors(t *testing.T) {
	for _, tc := range fieldCases {
		t.Run(tc.name, func(t *testing.T) {
			env, err := protocol.Decode(tc.payload)
			if err != nil {
				t.Fatalf("Decode: %v (the id is readable, so Decode must succeed)", err)
			}
			cmd, err := env.Command(time.Hour)
			if err == nil {
				t.Fatalf("Command succeeded: %+v", cmd)
			}
			if cmd != nil {
				t.Errorf("Command returned a command with its error")
			}
			var fe *protocol.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *FieldError", err, err)
			}
			if fe.Field != tc.field {
				t.Errorf("field = %q, want %q (error %q)", fe.Field, tc.field, err)
			}
			if !strings.HasPrefix(err.Error(), tc.field+": ") || fe.Msg == "" {
				t.Errorf("error %q does not start with %q and a message", err, tc.field+": ")
			}
			if errors.Is(err, protocol.ErrMalformed) {
				t.Errorf("a field error must not be ErrMalformed (the command gets a result)")
			}
		})
	}
}

// Decode exposes target and filter problems before full validation, so the
// agent can check them first.
func TestDecodeTargetAndFilterErrors(t *testing.T) {
	env, err := protocol.Decode(cmdWith(set("target", `"host:Web"`)))
	if err != nil {
		t.Fatal(err)
	}
	var fe *protocol.FieldError
	if !errors.As(env.TargetErr, &fe) || fe.Field != "target" {
		t.Errorf("TargetErr = %v, want a FieldError on target", env.TargetErr)
	}
	env, err = protocol.Decode(cmdWith(set("filter", `{"hosts":["BAD"]}`)))
	if err != nil {
		t.Fatal(err)
	}
	if env.Filter != nil || !errors.As(env.FilterErr, &fe) || fe.Field != "filter.hosts[0]" {
		t.Errorf("Filter=%v FilterErr=%v, want nil and a FieldError on filter.hosts[0]", env.Filter, env.FilterErr)
	}
}

func TestCommandValidVariants(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(map[string]any)
		check func(t *testing.T, c *protocol.Command)
	}{
		{"timeout_ms exponent", set("timeout_ms", `1e3`), func(t *testing.T, c *protocol.Command) {
			if c.TimeoutMS != 1000 {
				t.Errorf("TimeoutMS = %d, want 1000", c.TimeoutMS)
			}
		}},
		{"timeout_ms zero", set("timeout_ms", `0`), func(t *testing.T, c *protocol.Command) {
			if c.TimeoutMS != 0 {
				t.Errorf("TimeoutMS = %d", c.TimeoutMS)
			}
		}},
		{"stream true", set("stream", `true`), func(t *testing.T, c *protocol.Command) {
			if !c.Stream {
				t.Error("Stream = false")
			}
		}},
		{"target all", set("target", `"all"`), func(t *testing.T, c *protocol.Command) {
			if c.Target != "all" {
				t.Errorf("Target = %q", c.Target)
			}
		}},
		{"target group", set("target", `"group:web"`), func(t *testing.T, c *protocol.Command) {
			if c.Target != "group:web" {
				t.Errorf("Target = %q", c.Target)
			}
		}},
		{"args empty object", set("args", `{}`), func(t *testing.T, c *protocol.Command) {
			if string(c.Args) != `{}` {
				t.Errorf("Args = %q", c.Args)
			}
		}},
		{"unknown extra field ignored", set("priority", `"high"`), func(t *testing.T, c *protocol.Command) {}},
		{"issued_at with offset", set("issued_at", `"2026-11-25T11:30:00+01:30"`), func(t *testing.T, c *protocol.Command) {
			if !c.IssuedAt.Equal(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)) || c.IssuedAt.Location() != time.UTC {
				t.Errorf("IssuedAt = %v", c.IssuedAt)
			}
		}},
		{"unicode operator", set("operator", `"Zoë 🚀"`), func(t *testing.T, c *protocol.Command) {
			if c.Operator != "Zoë 🚀" {
				t.Errorf("Operator = %q", c.Operator)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, err := protocol.Decode(cmdWith(tc.edit))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			c, err := env.Command(time.Hour)
			if err != nil {
				t.Fatalf("Command: %v", err)
			}
			tc.check(t, c)
		})
	}
}

func TestCommandExpiresAt(t *testing.T) {
	issued := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		edit func(map[string]any)
		ttl  time.Duration
		want time.Time
	}{
		{"default is issued_at + ttl", without("expires_at"), time.Hour, issued.Add(time.Hour)},
		{"default with another ttl", without("expires_at"), 90 * time.Second, issued.Add(90 * time.Second)},
		{"default with zero ttl", without("expires_at"), 0, issued},
		{"null is the default", set("expires_at", `null`), time.Hour, issued.Add(time.Hour)},
		{"explicit wins over ttl", nil, time.Hour, issued.Add(10 * time.Minute)},
		{"explicit with offset", set("expires_at", `"2026-11-25T12:00:00+02:00"`), time.Hour, issued},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, err := protocol.Decode(cmdWith(tc.edit))
			if err != nil {
				t.Fatal(err)
			}
			c, err := env.Command(tc.ttl)
			if err != nil {
				t.Fatal(err)
			}
			if c.ExpiresAt == nil || !c.ExpiresAt.Equal(tc.want) {
				t.Errorf("ExpiresAt = %v, want %v", c.ExpiresAt, tc.want)
			}
		})
	}
}

func TestParseTarget(t *testing.T) {
	tests := []struct {
		target string
		scope  protocol.Scope
		name   string
		ok     bool
	}{
		{"all", protocol.ScopeAll, "", true},
		{"host:web-01", protocol.ScopeHost, "web-01", true},
		{"host:0", protocol.ScopeHost, "0", true},
		{"host:" + strings.Repeat("h", 63), protocol.ScopeHost, strings.Repeat("h", 63), true},
		{"group:web", protocol.ScopeGroup, "web", true},
		{"group:db.eu_1", protocol.ScopeGroup, "db.eu_1", true},
		{"", protocol.ScopeUnknown, "", false},
		{"ALL", protocol.ScopeUnknown, "", false},
		{"all:", protocol.ScopeUnknown, "", false},
		{" all", protocol.ScopeUnknown, "", false},
		{"host:", protocol.ScopeUnknown, "", false},
		{"host:Web", protocol.ScopeUnknown, "", false},
		{"host:-web", protocol.ScopeUnknown, "", false},
		{"host:a/b", protocol.ScopeUnknown, "", false},
		{"host:a+", protocol.ScopeUnknown, "", false},
		{"host:" + strings.Repeat("h", 64), protocol.ScopeUnknown, "", false},
		{"Host:web", protocol.ScopeUnknown, "", false},
		{"group:", protocol.ScopeUnknown, "", false},
		{"group:web team", protocol.ScopeUnknown, "", false},
		{"groups:web", protocol.ScopeUnknown, "", false},
		{"node:web", protocol.ScopeUnknown, "", false},
	}
	for _, tc := range tests {
		scope, name, err := protocol.ParseTarget(tc.target)
		if scope != tc.scope || name != tc.name || (err == nil) != tc.ok {
			t.Errorf("ParseTarget(%q) = %v, %q, %v; want %v, %q, ok=%v", tc.target, scope, name, err, tc.scope, tc.name, tc.ok)
		}
		var fe *protocol.FieldError
		if err != nil && (!errors.As(err, &fe) || fe.Field != "target") {
			t.Errorf("ParseTarget(%q) error %v is not a FieldError on target", tc.target, err)
		}
		if tc.ok {
			if got := protocol.TargetFor(scope, name); got != tc.target {
				t.Errorf("TargetFor(ParseTarget(%q)) = %q", tc.target, got)
			}
		}
	}
}

func TestDecodeArgs(t *testing.T) {
	tests := []struct {
		name  string
		args  string
		into  func() any
		field string // "" = no error
		want  any
	}{
		{"exec ok", `{"argv":["ls","-l"],"cwd":"/tmp","env":{"A":"1"},"stdin":"x"}`, func() any { return new(protocol.ExecArgs) }, "",
			&protocol.ExecArgs{Argv: []string{"ls", "-l"}, Cwd: "/tmp", Env: map[string]string{"A": "1"}, Stdin: "x"}},
		{"absent args", ``, func() any { return new(protocol.ExecArgs) }, "", &protocol.ExecArgs{}},
		{"null args", `null`, func() any { return new(protocol.ExecArgs) }, "", &protocol.ExecArgs{}},
		{"argv string", `{"argv":"ls -l"}`, func() any { return new(protocol.ExecArgs) }, "args.argv", nil},
		{"argv of numbers", `{"argv":[1,2]}`, func() any { return new(protocol.ExecArgs) }, "args.argv", nil},
		{"env list", `{"argv":["x"],"env":["A=1"]}`, func() any { return new(protocol.ExecArgs) }, "args.env", nil},
		{"env value number", `{"argv":["x"],"env":{"A":1}}`, func() any { return new(protocol.ExecArgs) }, "args.env", nil},
		{"cwd number", `{"argv":["x"],"cwd":5}`, func() any { return new(protocol.ExecArgs) }, "args.cwd", nil},
		{"stdin bool", `{"argv":["x"],"stdin":true}`, func() any { return new(protocol.ExecArgs) }, "args.stdin", nil},
		{"args array", `["ls"]`, func() any { return new(protocol.ExecArgs) }, "args", nil},
		{"args invalid JSON", `{"argv":`, func() any { return new(protocol.ExecArgs) }, "args", nil},
		{"shell command number", `{"command":1}`, func() any { return new(protocol.ShellArgs) }, "args.command", nil},
		{"shell ok", `{"command":"echo hi","shell":"bash"}`, func() any { return new(protocol.ShellArgs) }, "",
			&protocol.ShellArgs{Command: "echo hi", Shell: "bash"}},
		{"script args not a list", `{"content":"x","args":"a b"}`, func() any { return new(protocol.ScriptArgs) }, "args.args", nil},
		{"script interpreter list", `{"content":"x","interpreter":["sh"]}`, func() any { return new(protocol.ScriptArgs) }, "args.interpreter", nil},
		{"cancel id number", `{"id":17}`, func() any { return new(protocol.IDArgs) }, "args.id", nil},
		{"update sha256 list", `{"version":"1","sha256":[1]}`, func() any { return new(protocol.UpdateArgs) }, "args.sha256", nil},
		{"uninstall purge string", `{"purge":"yes"}`, func() any { return new(protocol.UninstallArgs) }, "args.purge", nil},
		{"uninstall ok", `{"purge":true}`, func() any { return new(protocol.UninstallArgs) }, "", &protocol.UninstallArgs{Purge: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.into()
			err := protocol.DecodeArgs(json.RawMessage(tc.args), v)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("DecodeArgs: %v", err)
				}
				if !reflect.DeepEqual(v, tc.want) {
					t.Errorf("got %+v, want %+v", v, tc.want)
				}
				return
			}
			var fe *protocol.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *FieldError", err, err)
			}
			if fe.Field != tc.field {
				t.Errorf("field = %q, want %q (error %q)", fe.Field, tc.field, err)
			}
		})
	}
}

func TestIsFinal(t *testing.T) {
	tests := map[string]bool{
		protocol.StateQueued:    false,
		protocol.StateRunning:   false,
		protocol.StateSucceeded: true,
		protocol.StateFailed:    true,
		protocol.StateTimedOut:  true,
		protocol.StateCanceled:  true,
		protocol.StateRejected:  true,
		protocol.StateExpired:   true,
		"":                      false,
		"done":                  false,
		"Succeeded":             false,
	}
	for state, want := range tests {
		if got := protocol.IsFinal(state); got != want {
			t.Errorf("IsFinal(%q) = %v, want %v", state, got, want)
		}
	}
}

func TestValidID(t *testing.T) {
	tests := map[string]bool{
		"a": true, testID: true, "a.b_c-D": true, strings.Repeat("x", 64): true,
		"": false, strings.Repeat("x", 65): false, "a/b": false, "a+b": false, "a#": false,
		"a b": false, "é": false, "a\n": false,
	}
	for id, want := range tests {
		if got := protocol.ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestValidHostID(t *testing.T) {
	tests := map[string]bool{
		"web-01": true, "0": true, "a.b_c-d": true, "a" + strings.Repeat("-", 62): true,
		"": false, "-a": false, ".a": false, "_a": false, "Web": false, "a/b": false,
		"a" + strings.Repeat("b", 63): false, "a b": false, "hö": false,
	}
	for id, want := range tests {
		if got := protocol.ValidHostID(id); got != want {
			t.Errorf("ValidHostID(%q) = %v, want %v", id, got, want)
		}
	}
}
