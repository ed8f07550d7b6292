package security_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/security"
)

// fuzzInners are the commands the fuzz seeds sign with opsKey: the only
// bytes a verifier trusting opsKey may ever accept.
var fuzzInners = [][]byte{
	[]byte(cmdJSON),
	[]byte(`{"v":1,"id":"c-2","kind":"exec","args":{"argv":["touch","/tmp/x"]},"target":"all","issued_at":"2026-11-25T10:00:00Z"}`),
	[]byte(`{"v":1,"id":"c-3","kind":"shell","args":{"command":"true"},"target":"group:web","issued_at":"2026-11-25T10:00:00Z","filter":{"os":"linux"}}`),
	[]byte("{ \"kind\" : \"ping\",\n\"id\":\"c-4\", \"v\":1,\"target\":\"host:a\",\"issued_at\":\"2026-11-25T10:00:00Z\" }"),
	[]byte(`{"v":1,"id":"c-5","kind":"ping","kind":"exec","target":"all","issued_at":"2026-11-25T10:00:00Z"}`),
	[]byte(`{"v":1,"id":"c-6","Kind":"exec","target":"all","issued_at":"2026-11-25T10:00:00Z"}`),
	[]byte(`{}`),
	[]byte(`not json`),
}

// FuzzVerify feeds arbitrary payloads through Decode and Verify with opsKey
// trusted. Whatever the input: no panic, and Verify accepts only what was
// signed with opsKey under kid "ops": the signature verifies over
// Envelope.Raw with opsKey, Raw is one of the commands the seeds signed (the
// fuzzer cannot forge a signature), and Raw is exactly the decoded "signed"
// member of an unambiguous wrapper.
func FuzzVerify(f *testing.F) {
	for _, inner := range fuzzInners {
		good := security.Sign(inner, "ops", opsKey)
		sig, _ := base64.StdEncoding.DecodeString(good.Sig)
		for _, w := range []protocol.Signed{
			good,
			{Signed: good.Signed, Kid: "OPS", Sig: good.Sig},
			{Signed: good.Signed, Kid: "ci", Sig: good.Sig},
			{Signed: good.Signed, Kid: "ops", Sig: b64(flip(sig, 0))},
			{Signed: good.Signed, Kid: "ops", Sig: b64(flip(sig, 63))},
			{Signed: b64(flip(inner, len(inner)/2)), Kid: "ops", Sig: good.Sig},
			{Signed: b64(append(bytes.Clone(inner), ' ')), Kid: "ops", Sig: good.Sig},
			security.Sign(inner, "ops", otherKey),
			security.Sign(inner, "ci", ciKey),
		} {
			b, err := json.Marshal(w)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
		f.Add(inner)
		// Wrapper variations: duplicate and case-variant members.
		f.Add([]byte(`{"signed":"` + good.Signed + `","kid":"ops","sig":"` + good.Sig + `","kid":"ci"}`))
		f.Add([]byte(`{"signed":"` + good.Signed + `","kid":"ops","sig":"` + good.Sig + `","Sig":"AAAA"}`))
		f.Add([]byte(`{"signed":"` + good.Signed + `","signed":"` + b64([]byte(cmdJSON)) + `","kid":"ops","sig":"` + good.Sig + `"}`))
		f.Add([]byte(`{"Signed":"` + good.Signed + `","kid":"ops","sig":"` + good.Sig + `"}`))
		f.Add([]byte(` {"sig":"` + good.Sig + `","kid":"ops","signed":"` + good.Signed + `","extra":[1,{"a":null}]}`))
	}
	pubOps := pub(opsKey)
	strict := mustVerifier(f, security.Policy{Keys: []security.Key{{ID: "ops", Public: pubOps}}, RequireSigned: true})
	lax := mustVerifier(f, security.Policy{Keys: []security.Key{{ID: "ops", Public: pubOps}}})
	f.Fuzz(func(t *testing.T, payload []byte) {
		env, err := protocol.Decode(payload)
		if err != nil {
			if !errors.Is(err, protocol.ErrMalformed) {
				t.Fatalf("Decode error %v does not wrap ErrMalformed", err)
			}
			return
		}
		for _, v := range []*security.Verifier{strict, lax} {
			kid, err := v.Verify(env)
			// Whatever Verify says, the rest of the pipeline copes.
			if cmd, cerr := env.Command(time.Hour); cerr == nil {
				_ = v.Allow(kid, cmd.Kind)
			}
			if err != nil {
				if kid != "" {
					t.Fatalf("Verify returned kid %q with error %v", kid, err)
				}
				continue
			}
			if !env.Signed {
				if v == strict || kid != "" {
					t.Fatalf("bare command accepted: kid %q, require_signed %v", kid, v == strict)
				}
				continue
			}
			if kid != "ops" || env.Kid != "ops" {
				t.Fatalf("accepted under kid %q (envelope %q), want ops", kid, env.Kid)
			}
			if env.SigErr != nil {
				t.Fatalf("accepted with SigErr %v", env.SigErr)
			}
			if !ed25519.Verify(pubOps, env.Raw, env.Sig) {
				t.Fatalf("accepted a signature that does not verify over Raw %q", env.Raw)
			}
			signedBySeed := false
			for _, inner := range fuzzInners {
				signedBySeed = signedBySeed || bytes.Equal(env.Raw, inner)
			}
			if !signedBySeed {
				t.Fatalf("accepted bytes no seed signed: %q", env.Raw)
			}
			// The wrapper, read by a parser that matches keys exactly and
			// refuses duplicates, carries those very bytes.
			w := exactWrapper(t, payload)
			if w.Kid != "ops" {
				t.Fatalf("accepted, but the exact wrapper says kid %q", w.Kid)
			}
			raw, err := base64.StdEncoding.DecodeString(w.Signed)
			if err != nil || !bytes.Equal(raw, env.Raw) {
				t.Fatalf("accepted, but the exact wrapper's signed member is %q (%v), Raw %q", raw, err, env.Raw)
			}
		}
	})
}

// exactWrapper reads a signed wrapper with exact keys, failing the test on
// a duplicate.
func exactWrapper(t *testing.T, payload []byte) protocol.Signed {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(payload))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("accepted a payload that is not an object: %q", payload)
	}
	seen := map[string]bool{}
	var w protocol.Signed
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("token: %v in %q", err, payload)
		}
		k := tok.(string)
		if seen[k] {
			t.Fatalf("accepted a wrapper with duplicate key %q: %q", k, payload)
		}
		seen[k] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("value: %v in %q", err, payload)
		}
		switch k {
		case "signed":
			_ = json.Unmarshal(v, &w.Signed)
		case "kid":
			_ = json.Unmarshal(v, &w.Kid)
		case "sig":
			_ = json.Unmarshal(v, &w.Sig)
		}
	}
	return w
}

func mustVerifier(f *testing.F, p security.Policy) *security.Verifier {
	f.Helper()
	v, err := security.New(p)
	if err != nil {
		f.Fatal(err)
	}
	return v
}
