// Package update is the agent's self-update: it checks an agent.update
// request (version, https or file URL, sha256, ed25519 signature by
// update.public_key), downloads and verifies the new binary within a size
// limit, runs it once (`version`) to prove it starts and is the announced
// version, stages it next to the running executable, and swaps it in
// atomically, keeping the previous binary. Every step is recorded in a
// small state file (State, Phase) so that whichever process starts next —
// the new version, the old one, or the watchdog run from the previous
// binary — knows what to do: confirm the update once the new version is
// online, or restore the previous binary when it does not come up in time.
// docs/self-control.md describes the state machine.
package update

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// Request is a checked agent.update.
type Request struct {
	Version        string
	URL            *url.URL
	SHA256         [32]byte
	Signature      []byte
	AllowDowngrade bool
}

// Errors a request can end with.
var (
	// ErrNoKey: update.public_key is not configured, so no update is trusted.
	ErrNoKey = errors.New("update.public_key is not configured: this agent accepts no update")
	// ErrBusy: another update is being applied or awaits confirmation.
	ErrBusy = errors.New("another update is in progress")
	// ErrVerify: the download does not match its sha256 or signature.
	ErrVerify = errors.New("verification failed")
	// ErrTooLarge: the download exceeds update.max_bytes.
	ErrTooLarge = errors.New("larger than update.max_bytes")
	// ErrVersion: the version is not newer (and no downgrade was allowed).
	ErrVersion = errors.New("version refused")
)

var versionPattern = regexp.MustCompile(`^v?[0-9]+(\.[0-9]+)*(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

// ValidVersion reports whether v is a version this package can order:
// dot-separated numbers, optionally a leading "v", a pre-release after "-"
// and build metadata after "+"; at most 64 characters.
func ValidVersion(v string) bool { return len(v) <= 64 && versionPattern.MatchString(v) }

// ParseRequest checks the args of agent.update; errors are
// *protocol.FieldError naming the field. allowHTTP permits plain http to
// any host (development mode); otherwise http is allowed to loopback
// addresses only, the others must be https or file.
func ParseRequest(a protocol.UpdateArgs, allowHTTP bool) (Request, error) {
	fe := func(field, format string, args ...any) error {
		return &protocol.FieldError{Field: "args." + field, Msg: fmt.Sprintf(format, args...)}
	}
	var r Request
	if a.Version == "" {
		return r, fe("version", "is required")
	}
	if !ValidVersion(a.Version) {
		return r, fe("version", "%q is not a version (want e.g. 1.4.2 or 1.5.0-rc.1)", a.Version)
	}
	if a.URL == "" {
		return r, fe("url", "is required")
	}
	u, err := CheckURL(a.URL, allowHTTP)
	if err != nil {
		return r, fe("url", "%v", err)
	}
	sum, err := hex.DecodeString(strings.ToLower(a.SHA256))
	if err != nil || len(sum) != 32 {
		return r, fe("sha256", "must be 64 hex digits")
	}
	if a.Signature == "" {
		return r, fe("signature", "is required")
	}
	sig, err := base64.StdEncoding.DecodeString(a.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return r, fe("signature", "must be the standard base64 of a %d-byte ed25519 signature", ed25519.SignatureSize)
	}
	r.Version, r.URL, r.Signature, r.AllowDowngrade = a.Version, u, sig, a.AllowDowngrade
	copy(r.SHA256[:], sum)
	return r, nil
}

// CheckURL parses an update URL: https, file (an absolute local path), or
// http to a loopback address (any host when allowHTTP).
func CheckURL(raw string, allowHTTP bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("not a URL: %w", errors.Unwrap(err))
	}
	switch u.Scheme {
	case "https":
		if u.Host == "" {
			return nil, errors.New("https URL without a host")
		}
	case "http":
		if u.Host == "" {
			return nil, errors.New("http URL without a host")
		}
		if !allowHTTP && !loopback(u.Hostname()) {
			return nil, errors.New("plain http is allowed to loopback addresses only: use https")
		}
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, errors.New("file URL with a remote host")
		}
		if _, err := filePath(u); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("scheme %q not supported (want https, or file)", u.Scheme)
	}
	if u.User != nil {
		return nil, errors.New("credentials in the URL are not allowed")
	}
	return u, nil
}

func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// filePath is the local path of a file URL.
func filePath(u *url.URL) (string, error) {
	p := u.Path
	if runtime.GOOS == "windows" {
		// file:///C:/dir/agent.exe has the path /C:/dir/agent.exe.
		if len(p) >= 3 && p[0] == '/' && p[2] == ':' {
			p = p[1:]
		}
		p = filepath.FromSlash(p)
	}
	if p == "" || !filepath.IsAbs(p) {
		return "", fmt.Errorf("file URL must name an absolute path, got %q", u.Path)
	}
	return filepath.Clean(p), nil
}

// Sibling is the path of a file next to exe that keeps exe's extension:
// Sibling("/usr/bin/mqagent", "old") is /usr/bin/mqagent.old,
// Sibling(`C:\mqagent\mqagent.exe`, "old") is C:\mqagent\mqagent.old.exe.
func Sibling(exe, tag string) string {
	ext := filepath.Ext(exe)
	if !strings.EqualFold(ext, ".exe") {
		return exe + "." + tag
	}
	return strings.TrimSuffix(exe, ext) + "." + tag + ext
}

// BackupPath is where the previous binary is kept until the new version
// is confirmed.
func BackupPath(exe string) string { return Sibling(exe, "old") }

// StagedPath is where a verified new binary waits to be swapped in.
func StagedPath(exe string) string { return Sibling(exe, "new") }
