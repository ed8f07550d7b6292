package protocol_test

import (
	"encoding/json"
	"errors"
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
