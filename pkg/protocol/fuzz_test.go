package protocol_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// maxSeed keeps huge table payloads (2 MiB of garbage) out of the fuzz
// corpus: the mutator would spend its time copying them.
const maxSeed = 64 << 10

// FuzzDecode feeds arbitrary payloads to Decode and Command. Whatever the
// input: no panic; a decoded envelope has a valid id; a malformed payload
// wraps ErrMalformed; a validation error is a *FieldError; and a command
// that validates marshals and decodes again to the same id and kind.
func FuzzDecode(f *testing.F) {
	f.Add(cmdWith(nil))
	f.Add([]byte(`{"v":1,"id":"a","kind":"ping","issued_at":"2026-11-25T10:00:00Z"}`))
	f.Add(signed(cmdWith(nil), "ops"))
	f.Add(signed(cmdWith(without("target")), "ops"))
	f.Add([]byte(`{"signed":"e30=","kid":"ops"}`))
	for _, tc := range malformedCases {
		if len(tc.payload) <= maxSeed {
			f.Add(tc.payload)
		}
	}
	for _, tc := range fieldCases {
		f.Add(tc.payload)
	}
	for _, tc := range ambiguousCases {
		if len(tc.payload) <= maxSeed {
			f.Add(tc.payload)
		}
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		env, err := protocol.Decode(payload)
		if err != nil {
			if !errors.Is(err, protocol.ErrMalformed) {
				t.Fatalf("Decode error %v does not wrap ErrMalformed", err)
			}
			if env != nil {
				t.Fatalf("Decode returned an envelope with its error")
			}
			return
		}
		if !protocol.ValidID(env.ID) {
			t.Fatalf("Decode accepted invalid id %q", env.ID)
		}
		cmd, err := env.Command(time.Hour)
		if err != nil {
			var fe *protocol.FieldError
			if !errors.As(err, &fe) || fe.Field == "" {
				t.Fatalf("Command error %v (%T) is not a *FieldError with a field", err, err)
			}
			if cmd != nil {
				t.Fatalf("Command returned a command with its error")
			}
			return
		}
		if cmd.ID != env.ID || cmd.Kind == "" || cmd.V != protocol.Version || cmd.ExpiresAt == nil {
			t.Fatalf("inconsistent command %+v from envelope id %q", cmd, env.ID)
		}
		// A parser that matches keys exactly and refuses duplicates reads
		// the same command: what an operator tool shows is what runs.
		top := exactObject(t, env.Raw)
		var kind, id string
		if json.Unmarshal(top["kind"], &kind) != nil || kind != cmd.Kind {
			t.Fatalf("exact key \"kind\" is %s, Command says %q", top["kind"], cmd.Kind)
		}
		if json.Unmarshal(top["id"], &id) != nil || id != cmd.ID {
			t.Fatalf("exact key \"id\" is %s, Command says %q", top["id"], cmd.ID)
		}
		if args, ok := top["args"]; ok && string(args) != "null" {
			if !bytes.Equal(args, cmd.Args) {
				t.Fatalf("exact key \"args\" is %s, Command says %s", args, cmd.Args)
			}
			exactObject(t, args)
		}
		if filter, ok := top["filter"]; ok && string(filter) != "null" {
			exactObject(t, filter)
		}
		b, err := json.Marshal(cmd)
		if err != nil {
			t.Fatalf("Marshal(%+v): %v", cmd, err)
		}
		env2, err := protocol.Decode(b)
		if err != nil {
			t.Fatalf("re-Decode of %s: %v", b, err)
		}
		if env2.ID != cmd.ID || env2.Kind != cmd.Kind {
			t.Fatalf("re-Decode gave id %q kind %q, want %q %q (marshalled %s)", env2.ID, env2.Kind, cmd.ID, cmd.Kind, b)
		}
	})
}

// exactObject reads a JSON object with a token parser that matches keys
// exactly, failing the test on a duplicate key or on a key that
// encoding/json would match case-insensitively to a field of the command,
// args or filter. It returns the raw members.
func exactObject(t *testing.T, raw []byte) map[string]json.RawMessage {
	t.Helper()
	known := []string{"v", "id", "kind", "args", "target", "issued_at", "expires_at", "timeout_ms", "stream", "filter", "operator", "signed", "kid", "sig",
		"argv", "cwd", "env", "stdin", "command", "shell", "content", "interpreter", "version", "url", "sha256", "signature", "purge",
		"hosts", "groups", "os", "facts"}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", raw)
	}
	out := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("token: %v in %s", err, raw)
		}
		k := tok.(string)
		if _, dup := out[k]; dup {
			t.Fatalf("duplicate key %q validated: %s", k, raw)
		}
		for _, n := range known {
			if k != n && strings.EqualFold(k, n) {
				t.Fatalf("case variant %q of %q validated: %s", k, n, raw)
			}
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("value: %v in %s", err, raw)
		}
		out[k] = v
	}
	return out
}
