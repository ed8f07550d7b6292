package harness

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"testing"
)

// Mosquitto 2.0's password hash: PBKDF2-HMAC-SHA512, 101 iterations, a
// 12-byte salt, a 64-byte key (mosquitto_passwd's default, "$7$").
const (
	pwIterations = 101
	pwSaltLen    = 12
	pwKeyLen     = 64
)

// MosquittoPasswordLine is one line of a Mosquitto 2.0 password_file for
// user and password, "user:$7$101$SALT$HASH", the format mosquitto_passwd
// writes.
func MosquittoPasswordLine(user, password string) (string, error) {
	if user == "" || strings.ContainsAny(user, ":\n") {
		return "", fmt.Errorf("password file: invalid user name %q", user)
	}
	salt := make([]byte, pwSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	key, err := pbkdf2.Key(sha512.New, password, salt, pwIterations, pwKeyLen)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	enc := base64.StdEncoding
	return fmt.Sprintf("%s:$7$%d$%s$%s", user, pwIterations, enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// WriteMosquittoPasswords writes a password_file at path (mode 0600) with
// the given users and passwords.
func WriteMosquittoPasswords(t testing.TB, path string, users map[string]string) {
	t.Helper()
	var b strings.Builder
	for u, p := range users {
		line, err := MosquittoPasswordLine(u, p)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(line + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatalf("password file: %v", err)
	}
}
