package security_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/security"
)

func key(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

var (
	opsKey   = key(1)
	ciKey    = key(2)
	otherKey = key(3) // trusted by nobody
)

const cmdJSON = `{"v":1,"id":"c-1","kind":"ping","target":"host:web-01","issued_at":"2026-11-25T10:00:00.000Z"}`

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func wrapper(t *testing.T, w protocol.Signed) []byte {
	t.Helper()
	b, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decode(t *testing.T, payload []byte) *protocol.Envelope {
	t.Helper()
	env, err := protocol.Decode(payload)
	if err != nil {
		t.Fatalf("Decode(%s): %v", payload, err)
	}
	return env
}

func newVerifier(t *testing.T, p security.Policy) *security.Verifier {
	t.Helper()
	v, err := security.New(p)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

func trusted() []security.Key {
	return []security.Key{
		{ID: "ops", Public: pub(opsKey)},
		{ID: "ci", Public: pub(ciKey), Kinds: []string{"ping", "inventory"}},
	}
}

// flip returns a copy of b with one bit of byte i changed.
func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

func TestVerify(t *testing.T) {
	inner := []byte(cmdJSON)
	good := security.Sign(inner, "ops", opsKey)
	sig := ed25519.Sign(opsKey, inner)
	// A tampered command that is still valid JSON with the same id:
	// "ping" -> "pinh".
	tampered := bytes.Replace(inner, []byte(`"ping"`), []byte(`"pinh"`), 1)

	tests := []struct {
		name    string
		require bool
		payload []byte
		wantKid string
		wantErr error
	}{
		{"bare, require_signed true", true, inner, "", security.ErrUnsigned},
		{"bare, require_signed false", false, inner, "", nil},
		{"signed by ops", true, wrapper(t, good), "ops", nil},
		{"signed by ops, require_signed false", false, wrapper(t, good), "ops", nil},
		{"signed by ci", true, wrapper(t, security.Sign(inner, "ci", ciKey)), "ci", nil},
		{"unknown kid", true, wrapper(t, security.Sign(inner, "eve", otherKey)), "", security.ErrUnknownKey},
		{"unknown kid, require_signed false", false, wrapper(t, security.Sign(inner, "eve", otherKey)), "", security.ErrUnknownKey},
		{"kid differs in case", true, wrapper(t, security.Sign(inner, "OPS", opsKey)), "", security.ErrUnknownKey},
		{"wrong key for kid", true, wrapper(t, security.Sign(inner, "ops", otherKey)), "", security.ErrBadSignature},
		{"signed by the other trusted key", true, wrapper(t, security.Sign(inner, "ops", ciKey)), "", security.ErrBadSignature},
		{"tampered byte in signed bytes", true, wrapper(t, protocol.Signed{Signed: b64(tampered), Kid: "ops", Sig: good.Sig}), "", security.ErrBadSignature},
		{"appended whitespace in signed bytes", true, wrapper(t, protocol.Signed{Signed: b64(append(bytes.Clone(inner), ' ')), Kid: "ops", Sig: good.Sig}), "", security.ErrBadSignature},
		{"tampered sig, first byte", true, wrapper(t, protocol.Signed{Signed: good.Signed, Kid: "ops", Sig: b64(flip(sig, 0))}), "", security.ErrBadSignature},
		{"tampered sig, last byte", true, wrapper(t, protocol.Signed{Signed: good.Signed, Kid: "ops", Sig: b64(flip(sig, len(sig)-1))}), "", security.ErrBadSignature},
		{"sig too short", true, wrapper(t, protocol.Signed{Signed: good.Signed, Kid: "ops", Sig: b64(sig[:32])}), "", security.ErrBadSignature},
		{"sig empty", true, wrapper(t, protocol.Signed{Signed: good.Signed, Kid: "ops", Sig: ""}), "", security.ErrBadSignature},
		{"sig too long", true, wrapper(t, protocol.Signed{Signed: good.Signed, Kid: "ops", Sig: b64(append(bytes.Clone(sig), 0))}), "", security.ErrBadSignature},
		{"SigErr: sig missing", true, []byte(`{"signed":"` + good.Signed + `","kid":"ops"}`), "", security.ErrBadSignature},
		{"SigErr: sig not base64", true, []byte(`{"signed":"` + good.Signed + `","kid":"ops","sig":"@@"}`), "", security.ErrBadSignature},
		{"SigErr: kid missing", true, []byte(`{"signed":"` + good.Signed + `","sig":"` + good.Sig + `"}`), "", security.ErrBadSignature},
		{"SigErr: kid number", false, []byte(`{"signed":"` + good.Signed + `","kid":1,"sig":"` + good.Sig + `"}`), "", security.ErrBadSignature},
		// The wrapper is not signed: anyone on the way could add to it, so
		// an ambiguous one is refused before the command's id is journaled.
		{"wrapper: kid twice, the last trusted", true, []byte(`{"signed":"` + good.Signed + `","kid":"eve","sig":"` + good.Sig + `","kid":"ops"}`), "", security.ErrBadSignature},
		{"wrapper: kid twice, same value", true, []byte(`{"signed":"` + good.Signed + `","kid":"ops","sig":"` + good.Sig + `","kid":"ops"}`), "", security.ErrBadSignature},
		{"wrapper: case variant of sig", true, []byte(`{"signed":"` + good.Signed + `","kid":"ops","Sig":"` + good.Sig + `"}`), "", security.ErrBadSignature},
		{"wrapper: case variant of kid", true, []byte(`{"signed":"` + good.Signed + `","KID":"ops","sig":"` + good.Sig + `"}`), "", security.ErrBadSignature},
		{"wrapper: unknown member twice", true, []byte(`{"signed":"` + good.Signed + `","kid":"ops","sig":"` + good.Sig + `","x":1,"x":2}`), "", security.ErrBadSignature},
		{"wrapper: an unknown member is fine", true, []byte(`{"signed":"` + good.Signed + `","kid":"ops","sig":"` + good.Sig + `","note":"hi"}`), "ops", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(t, security.Policy{Keys: trusted(), RequireSigned: tc.require})
			env := decode(t, tc.payload)
			kid, err := v.Verify(env)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Verify error = %v, want %v", err, tc.wantErr)
			}
			if kid != tc.wantKid {
				t.Errorf("kid = %q, want %q", kid, tc.wantKid)
			}
		})
	}
}

// The SigErr of the envelope reaches the caller, so the rejection reason
// names the field that is wrong.
func TestVerifySigErrPropagates(t *testing.T) {
	v := newVerifier(t, security.Policy{Keys: trusted(), RequireSigned: true})
	good := security.Sign([]byte(cmdJSON), "ops", opsKey)
	env := decode(t, []byte(`{"signed":"`+good.Signed+`","kid":"ops","sig":"%%%"}`))
	if env.SigErr == nil {
		t.Fatal("envelope has no SigErr")
	}
	_, err := v.Verify(env)
	if !errors.Is(err, security.ErrBadSignature) {
		t.Fatalf("err = %v, want ErrBadSignature", err)
	}
	if !strings.Contains(err.Error(), env.SigErr.Error()) {
		t.Errorf("error %q does not carry SigErr %q", err, env.SigErr)
	}
	if !strings.Contains(err.Error(), "sig") {
		t.Errorf("error %q does not name the sig field", err)
	}
}

// Verify checks the envelope's Raw bytes, not a re-encoding: a signed
// command with unusual spacing verifies.
func TestVerifyExactBytes(t *testing.T) {
	inner := []byte("{\"v\":1,  \"id\":\"c-2\",\n\"kind\":\"ping\",\"target\":\"all\",\"issued_at\":\"2026-11-25T10:00:00Z\"}")
	v := newVerifier(t, security.Policy{Keys: trusted(), RequireSigned: true})
	kid, err := v.Verify(decode(t, wrapper(t, security.Sign(inner, "ops", opsKey))))
	if err != nil || kid != "ops" {
		t.Fatalf("Verify = %q, %v", kid, err)
	}
}

func TestAllow(t *testing.T) {
	tests := []struct {
		name    string
		allowed []string
		keys    []security.Key
		kid     string
		kind    string
		wantErr error
	}{
		{"no lists: all kinds", nil, trusted(), "ops", "exec", nil},
		{"no lists: bare command", nil, trusted(), "", "agent.uninstall", nil},
		{"global star", []string{"*"}, trusted(), "ops", "exec", nil},
		{"global star among others", []string{"ping", "*"}, trusted(), "", "exec", nil},
		{"global list allows", []string{"ping", "exec"}, trusted(), "ops", "exec", nil},
		{"global list denies", []string{"ping", "inventory"}, trusted(), "ops", "exec", security.ErrKindDenied},
		{"global list denies bare", []string{"ping"}, trusted(), "", "shell", security.ErrKindDenied},
		{"global list is exact", []string{"agent"}, trusted(), "ops", "agent.stop", security.ErrKindDenied},
		{"key kinds allow", nil, trusted(), "ci", "inventory", nil},
		{"key kinds deny", nil, trusted(), "ci", "exec", security.ErrKindDenied},
		{"key kinds deny, global star", []string{"*"}, trusted(), "ci", "agent.update", security.ErrKindDenied},
		{"key kinds allow, global denies", []string{"exec"}, trusted(), "ci", "ping", security.ErrKindDenied},
		{"key kinds do not limit bare commands", nil, trusted(), "", "exec", nil},
		{"key star", nil, []security.Key{{ID: "k", Public: pub(opsKey), Kinds: []string{"*"}}}, "k", "agent.update", nil},
		{"key star among others", nil, []security.Key{{ID: "k", Public: pub(opsKey), Kinds: []string{"ping", "*"}}}, "k", "exec", nil},
		{"key empty list is all", nil, []security.Key{{ID: "k", Public: pub(opsKey), Kinds: []string{}}}, "k", "exec", nil},
		{"unknown kid denied", nil, trusted(), "eve", "ping", security.ErrUnknownKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(t, security.Policy{Keys: tc.keys, AllowedKinds: tc.allowed})
			err := v.Allow(tc.kid, tc.kind)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Allow(%q, %q) = %v, want %v", tc.kid, tc.kind, err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tc.kind) && !strings.Contains(err.Error(), tc.kid) {
				t.Errorf("error %q names neither the kind nor the key", err)
			}
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name string
		p    security.Policy
		msg  string // "" = valid
	}{
		{"keys and require_signed", security.Policy{Keys: trusted(), RequireSigned: true}, ""},
		{"no keys, bare allowed", security.Policy{}, ""},
		{"duplicate ids", security.Policy{Keys: []security.Key{{ID: "ops", Public: pub(opsKey)}, {ID: "ops", Public: pub(ciKey)}}}, "duplicate"},
		{"short key", security.Policy{Keys: []security.Key{{ID: "ops", Public: pub(opsKey)[:31]}}}, "32 bytes"},
		{"long key", security.Policy{Keys: []security.Key{{ID: "ops", Public: append(bytes.Clone(pub(opsKey)), 0)}}}, "32 bytes"},
		{"nil key", security.Policy{Keys: []security.Key{{ID: "ops"}}}, "32 bytes"},
		{"private key given as public", security.Policy{Keys: []security.Key{{ID: "ops", Public: ed25519.PublicKey(opsKey)}}}, "32 bytes"},
		{"empty id", security.Policy{Keys: []security.Key{{ID: "", Public: pub(opsKey)}}}, "empty id"},
		{"require_signed without keys", security.Policy{RequireSigned: true}, "no trusted key"},
		{"require_signed with empty key list", security.Policy{RequireSigned: true, Keys: []security.Key{}}, "no trusted key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := security.New(tc.p)
			if tc.msg == "" {
				if err != nil || v == nil {
					t.Fatalf("New = %v, %v", v, err)
				}
				return
			}
			if err == nil || v != nil {
				t.Fatalf("New = %v, %v; want an error", v, err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not contain %q", err, tc.msg)
			}
		})
	}
}

// The operator side (Sign) and the agent side (Decode, Verify, Command,
// Allow) fit together.
func TestSignRoundTrip(t *testing.T) {
	v := newVerifier(t, security.Policy{Keys: trusted(), RequireSigned: true, AllowedKinds: []string{"ping", "exec"}})
	inner := []byte(cmdJSON)
	w := security.Sign(inner, "ci", ciKey)
	if w.Kid != "ci" {
		t.Errorf("Kid = %q", w.Kid)
	}
	raw, err := base64.StdEncoding.DecodeString(w.Signed)
	if err != nil || !bytes.Equal(raw, inner) {
		t.Fatalf("Signed is not the standard base64 of the command: %v", err)
	}
	payload := wrapper(t, w)
	env := decode(t, payload)
	if !env.Signed || !bytes.Equal(env.Raw, inner) {
		t.Fatalf("Signed=%v Raw=%q", env.Signed, env.Raw)
	}
	kid, err := v.Verify(env)
	if err != nil || kid != "ci" {
		t.Fatalf("Verify = %q, %v", kid, err)
	}
	cmd, err := env.Command(0)
	if err != nil {
		t.Fatalf("Command: %v", err)
	}
	if err := v.Allow(kid, cmd.Kind); err != nil {
		t.Errorf("Allow(ci, ping): %v", err)
	}
	if err := v.Allow(kid, "exec"); !errors.Is(err, security.ErrKindDenied) {
		t.Errorf("Allow(ci, exec) = %v, want ErrKindDenied (ci may only sign ping and inventory)", err)
	}

	// The signature is deterministic (ed25519) and bound to the bytes.
	if again := security.Sign(inner, "ci", ciKey); again != w {
		t.Errorf("Sign is not deterministic: %+v vs %+v", again, w)
	}
	if other := security.Sign([]byte(strings.Replace(cmdJSON, "c-1", "c-2", 1)), "ci", ciKey); other.Sig == w.Sig {
		t.Error("two commands got the same signature")
	}
}

// A Verifier is immutable: changing the Policy slices after New does not
// change its decisions.
func TestNewCopiesPolicy(t *testing.T) {
	keys := trusted()
	allowed := []string{"ping"}
	v := newVerifier(t, security.Policy{Keys: keys, AllowedKinds: allowed, RequireSigned: true})
	allowed[0] = "exec"
	keys[1].Kinds[0] = "exec"
	keys[0].ID = "renamed"
	if err := v.Allow("", "ping"); err != nil {
		t.Errorf("Allow(ping) after editing the policy: %v", err)
	}
	if err := v.Allow("ci", "exec"); err == nil {
		t.Error("Allow(ci, exec) allowed after editing the policy")
	}
	if kid, err := v.Verify(decode(t, wrapper(t, security.Sign([]byte(cmdJSON), "ops", opsKey)))); err != nil || kid != "ops" {
		t.Errorf("Verify(ops) after renaming the key in the policy = %q, %v", kid, err)
	}
}

func TestVerifierConcurrent(t *testing.T) {
	v := newVerifier(t, security.Policy{Keys: trusted(), RequireSigned: true})
	env := decode(t, wrapper(t, security.Sign([]byte(cmdJSON), "ops", opsKey)))
	done := make(chan error, 8)
	for range 8 {
		go func() {
			for range 50 {
				if _, err := v.Verify(env); err != nil {
					done <- err
					return
				}
				if err := v.Allow("ci", "exec"); err == nil {
					done <- errors.New("Allow(ci, exec) allowed")
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// A command its operator signed with a duplicate or case-variant key is
// authentic (Verify passes, so its id is journaled) but never valid: what
// an operator tool shows may not be what the agent would run.
func TestSignedAmbiguousCommandIsRejected(t *testing.T) {
	v := newVerifier(t, security.Policy{Keys: trusted(), RequireSigned: true})
	for _, inner := range []string{
		`{"v":1,"id":"c-1","kind":"ping","kind":"exec","args":{"argv":["true"]},"target":"all","issued_at":"2026-11-25T10:00:00Z"}`,
		`{"v":1,"id":"c-1","kind":"ping","Kind":"exec","args":{"argv":["true"]},"target":"all","issued_at":"2026-11-25T10:00:00Z"}`,
		`{"v":1,"id":"c-1","kind":"exec","args":{"argv":["true"],"ARGV":["false"]},"target":"all","issued_at":"2026-11-25T10:00:00Z"}`,
	} {
		env := decode(t, wrapper(t, security.Sign([]byte(inner), "ops", opsKey)))
		if kid, err := v.Verify(env); err != nil || kid != "ops" {
			t.Fatalf("Verify(%s) = %q, %v; want ops (the bytes are authentic)", inner, kid, err)
		}
		var fe *protocol.FieldError
		if _, err := env.Command(time.Hour); !errors.As(err, &fe) || !strings.Contains(fe.Msg, "key") {
			t.Errorf("Command(%s) = %v, want a FieldError about the key", inner, err)
		}
	}
	// An ambiguous id makes the payload malformed: no id to answer under.
	w := wrapper(t, security.Sign([]byte(`{"v":1,"id":"c-1","id":"c-2","kind":"ping","target":"all","issued_at":"2026-11-25T10:00:00Z"}`), "ops", opsKey))
	if _, err := protocol.Decode(w); !errors.Is(err, protocol.ErrMalformed) {
		t.Errorf("Decode of a signed command with two ids = %v, want ErrMalformed", err)
	}
}
