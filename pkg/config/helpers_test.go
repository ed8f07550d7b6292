package config

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Real ed25519 keys, derived from fixed seeds so that fuzz seeds are stable.
var (
	key1 = testKey(1)
	key2 = testKey(2)
	key3 = testKey(3)
)

func testKey(seed byte) string {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	return base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))
}

// subst fills the placeholders $K1, $K2, $K3 with real public keys.
func subst(s string) string {
	return strings.NewReplacer("$K1", key1, "$K2", key2, "$K3", key3).Replace(s)
}

// fieldErrors flattens a (joined) error into its *FieldErrors; it fails
// the test if some part is not one.
func fieldErrors(t *testing.T, err error) []*FieldError {
	t.Helper()
	var out []*FieldError
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Errorf("error %q (%T) is not a *FieldError", e, e)
			return
		}
		out = append(out, fe)
	}
	if err != nil {
		walk(err)
	}
	return out
}

var pathToken = regexp.MustCompile(`^(?:\.?([A-Za-z0-9_-]+)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\])`)

// pathExists reports whether path (as in FieldError.Path) names a key of
// Config as spelled in YAML.
func pathExists(path string) bool {
	t := reflect.TypeFor[Config]()
	for path != "" {
		m := pathToken.FindStringSubmatch(path)
		if m == nil {
			return false
		}
		path = path[len(m[0]):]
		switch {
		case m[1] != "" && t.Kind() == reflect.Struct:
			i, ok := yamlFields(t)[m[1]]
			if !ok {
				return false
			}
			t = t.Field(i).Type
		case m[1] != "" && t.Kind() == reflect.Map, m[3] != "" && t.Kind() == reflect.Map:
			if m[3] != "" {
				if _, err := strconv.Unquote(m[3]); err != nil {
					return false
				}
			}
			t = t.Elem()
		case m[2] != "" && t.Kind() == reflect.Slice:
			t = t.Elem()
		default:
			return false
		}
		if t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
	}
	return true
}

func TestPathExists(t *testing.T) {
	for path, want := range map[string]bool{
		"host_id":                              true,
		"broker.urls[1]":                       true,
		"broker.tls.ca_file":                   true,
		"security.trusted_keys[0].public_key":  true,
		"security.trusted_keys[0].kinds[2]":    true,
		"security.require_signed":              true,
		"facts.env":                            true,
		`facts["a.b"]`:                         true,
		"exec.max_concurrent":                  true,
		"broker.tsl":                           false,
		"host_id.x":                            false,
		"broker[0]":                            false,
		"dev":                                  false,
		"Broker.URLs":                          false,
		"security.trusted_keys.id":             false,
		"security.trusted_keys[0].public_key.": false,
	} {
		if got := pathExists(path); got != want {
			t.Errorf("pathExists(%q) = %v, want %v", path, got, want)
		}
	}
}
