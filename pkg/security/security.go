// Package security decides whether a received command may run: the ed25519
// signature of a signed wrapper, the trusted key that made it, and the kinds
// that key and the host allow. It holds no secrets: only public keys.
package security

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// Key is one trusted operator key.
type Key struct {
	ID     string
	Public ed25519.PublicKey
	Kinds  []string // allowed kinds; empty or "*" = all
}

// Policy is the host's command policy.
type Policy struct {
	Keys          []Key
	AllowedKinds  []string // empty or "*" = all
	RequireSigned bool
}

// Errors returned by Verify and Allow; the rejection reason is their text.
var (
	ErrUnsigned     = errors.New("unsigned command: require_signed is true")
	ErrUnknownKey   = errors.New("unknown key")
	ErrBadSignature = errors.New("bad signature")
	ErrKindDenied   = errors.New("kind not allowed")
)

// Verifier checks commands against a Policy. It is immutable and safe for
// concurrent use.
type Verifier struct {
	keys          map[string]Key
	allowed       kindSet
	keyKinds      map[string]kindSet
	requireSigned bool
}

type kindSet map[string]bool // nil = all

func newKindSet(kinds []string) kindSet {
	if len(kinds) == 0 {
		return nil
	}
	s := kindSet{}
	for _, k := range kinds {
		if k == "*" {
			return nil
		}
		s[k] = true
	}
	return s
}

func (s kindSet) has(kind string) bool { return s == nil || s[kind] }

// New builds a Verifier. Keys must have unique ids and 32-byte public keys.
func New(p Policy) (*Verifier, error) {
	v := &Verifier{
		keys:          make(map[string]Key, len(p.Keys)),
		keyKinds:      make(map[string]kindSet, len(p.Keys)),
		allowed:       newKindSet(p.AllowedKinds),
		requireSigned: p.RequireSigned,
	}
	for _, k := range p.Keys {
		if k.ID == "" {
			// A signed command with "kid": "" would otherwise verify and
			// then skip the per-key kinds check in Allow.
			return nil, errors.New("key with an empty id")
		}
		if len(k.Public) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("key %q: public key must be %d bytes", k.ID, ed25519.PublicKeySize)
		}
		if _, dup := v.keys[k.ID]; dup {
			return nil, fmt.Errorf("key %q: duplicate id", k.ID)
		}
		v.keys[k.ID] = k
		v.keyKinds[k.ID] = newKindSet(k.Kinds)
	}
	if p.RequireSigned && len(v.keys) == 0 {
		return nil, errors.New("require_signed is true but no trusted key is configured")
	}
	return v, nil
}

// Verify checks the signature of env. It returns the key id that signed it
// ("" for an allowed bare command).
func (v *Verifier) Verify(env *protocol.Envelope) (string, error) {
	if !env.Signed {
		if v.requireSigned {
			return "", ErrUnsigned
		}
		return "", nil
	}
	if env.SigErr != nil {
		return "", fmt.Errorf("%w: %v", ErrBadSignature, env.SigErr)
	}
	k, ok := v.keys[env.Kid]
	if !ok {
		return "", fmt.Errorf("%w %q", ErrUnknownKey, env.Kid)
	}
	if !ed25519.Verify(k.Public, env.Raw, env.Sig) {
		return "", fmt.Errorf("%w (key %q)", ErrBadSignature, env.Kid)
	}
	return env.Kid, nil
}

// Allow checks kind against the host's allow-list and, for a signed command,
// the kinds its key may sign. kid is what Verify returned ("" for a bare
// command); a kid that names no trusted key is denied.
func (v *Verifier) Allow(kid, kind string) error {
	if !v.allowed.has(kind) {
		return fmt.Errorf("%w: %q is not in security.allowed_kinds", ErrKindDenied, kind)
	}
	if kid == "" {
		return nil
	}
	if _, known := v.keys[kid]; !known {
		return fmt.Errorf("%w %q", ErrUnknownKey, kid)
	}
	if !v.keyKinds[kid].has(kind) {
		return fmt.Errorf("%w: key %q may not sign %q", ErrKindDenied, kid, kind)
	}
	return nil
}

// Sign returns the signed wrapper of cmd, the exact bytes to publish. It is
// the operator side of Verify.
func Sign(cmd []byte, kid string, priv ed25519.PrivateKey) protocol.Signed {
	return protocol.Signed{
		Signed: b64(cmd),
		Kid:    kid,
		Sig:    b64(ed25519.Sign(priv, cmd)),
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
