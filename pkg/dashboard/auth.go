package dashboard

import (
	"bufio"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// cookieName is the session cookie.
const cookieName = "mqagent_session"

// Limits of the session store and of sign-in attempts.
const (
	maxSessions      = 1000
	maxFailures      = 5               // per user name …
	failureWindow    = 5 * time.Minute // … within this window, then
	lockout          = time.Minute     // sign-in is refused for this long
	maxFailureRecord = 10000           // names tracked at once
	maxChecking      = 4               // passwords checked at once
	idleTimeout      = 2 * time.Hour   // a session unused this long ends
	maxUsersFile     = 1 << 20         // bytes
	hashCostDefault  = bcrypt.DefaultCost
)

// ErrUsersFile is wrapped by ReadUsers' errors about the file's content.
var ErrUsersFile = errors.New("users file")

// ReadUsers reads a users file: one "name:bcrypt-hash" per line (as
// `htpasswd -B` and `mqagent dashboard passwd` write them); blank lines
// and lines starting with # are skipped.
func ReadUsers(path string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseUsers(io.LimitReader(f, maxUsersFile))
}

// ParseUsers reads the users file format of ReadUsers.
func ParseUsers(r io.Reader) (map[string][]byte, error) {
	users := map[string][]byte{}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		name, hash, ok := strings.Cut(l, ":")
		if !ok || name == "" || hash == "" {
			return nil, fmt.Errorf("%w: line %d: want name:bcrypt-hash", ErrUsersFile, line)
		}
		if !validUser(name) {
			return nil, fmt.Errorf("%w: line %d: invalid user name %q (letters, digits, . _ @ -; at most 64)", ErrUsersFile, line, name)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("%w: line %d: user %s: not a bcrypt hash: %v", ErrUsersFile, line, name, err)
		}
		if _, dup := users[name]; dup {
			return nil, fmt.Errorf("%w: line %d: user %s given twice", ErrUsersFile, line, name)
		}
		users[name] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUsersFile, err)
	}
	return users, nil
}

// HashPassword returns the bcrypt hash of a password for a users file.
func HashPassword(password string) (string, error) {
	if len(password) < 8 {
		return "", errors.New("password: at least 8 characters")
	}
	if len(password) > 72 {
		return "", errors.New("password: at most 72 bytes (bcrypt)")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), hashCostDefault)
	return string(h), err
}

func validUser(name string) bool {
	if len(name) == 0 || len(name) > 64 {
		return false
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '@', r == '-':
		default:
			return false
		}
	}
	return true
}

// session is a signed-in user.
type session struct {
	user     string
	csrf     string
	created  time.Time
	lastUsed time.Time
}

// auth holds the users and the sessions.
type auth struct {
	users  map[string][]byte
	ttl    time.Duration
	secure bool
	now    func() time.Time
	// dummy is compared against when the user does not exist, so that a
	// wrong name costs the same time as a wrong password.
	dummy []byte

	// checking bounds the bcrypt comparisons running at once: each costs
	// tens of milliseconds of CPU, and sign-in must not be a way to
	// saturate the server.
	checking chan struct{}

	mu       sync.Mutex
	sessions map[string]*session
	failures map[string][]time.Time
}

func newAuth(users map[string][]byte, ttl time.Duration, secure bool, now func() time.Time) *auth {
	a := &auth{users: users, ttl: ttl, secure: secure, now: now, checking: make(chan struct{}, maxChecking),
		sessions: map[string]*session{}, failures: map[string][]time.Time{}}
	if len(users) > 0 {
		// Same cost as the real hashes, so the timing matches.
		cost := hashCostDefault
		for _, h := range users {
			if c, err := bcrypt.Cost(h); err == nil {
				cost = c
			}
			break
		}
		a.dummy, _ = bcrypt.GenerateFromPassword([]byte("no such user, no such password"), cost)
	}
	return a
}

func (a *auth) enabled() bool { return len(a.users) > 0 }

func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// errLocked: too many failed attempts for this name.
var errLocked = errors.New("too many failed sign-in attempts: try again in a minute")

// errBusy: too many sign-ins being checked at once.
var errBusy = errors.New("too many sign-in attempts at once: try again")

// errBadLogin: wrong name or password (never saying which).
var errBadLogin = errors.New("wrong user name or password")

// login checks a name and password and returns a new session.
func (a *auth) login(user, password string) (*session, string, error) {
	now := a.now()
	if !a.enabled() {
		return nil, "", errors.New("sign-in is not enabled on this dashboard")
	}
	a.mu.Lock()
	if a.lockedLocked(user, now) {
		a.mu.Unlock()
		return nil, "", errLocked
	}
	a.mu.Unlock()
	select {
	case a.checking <- struct{}{}:
	default:
		return nil, "", errBusy
	}
	hash, ok := a.users[user]
	if !ok {
		hash = a.dummy
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	<-a.checking
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil || !ok {
		a.failLocked(user, now)
		return nil, "", errBadLogin
	}
	delete(a.failures, user)
	if len(a.sessions) >= maxSessions {
		a.evictLocked(now)
	}
	s := &session{user: user, csrf: randomToken(), created: now, lastUsed: now}
	tok := randomToken()
	a.sessions[tok] = s
	return s, tok, nil
}

func (a *auth) lockedLocked(user string, now time.Time) bool {
	fs := a.failures[user]
	if len(fs) < maxFailures {
		return false
	}
	return now.Sub(fs[len(fs)-1]) < lockout
}

func (a *auth) failLocked(user string, now time.Time) {
	if len(a.failures) >= maxFailureRecord {
		clear(a.failures) // bounded memory beats a perfect count
	}
	fs := a.failures[user]
	kept := fs[:0]
	for _, t := range fs {
		if now.Sub(t) < failureWindow {
			kept = append(kept, t)
		}
	}
	kept = append(kept, now)
	if len(kept) > maxFailures {
		kept = kept[len(kept)-maxFailures:]
	}
	a.failures[user] = kept
}

// evictLocked removes expired sessions, then the oldest if still full.
func (a *auth) evictLocked(now time.Time) {
	var oldest string
	var oldestT time.Time
	for tok, s := range a.sessions {
		if a.expired(s, now) {
			delete(a.sessions, tok)
			continue
		}
		if oldest == "" || s.lastUsed.Before(oldestT) {
			oldest, oldestT = tok, s.lastUsed
		}
	}
	if len(a.sessions) >= maxSessions && oldest != "" {
		delete(a.sessions, oldest)
	}
}

func (a *auth) expired(s *session, now time.Time) bool {
	return now.Sub(s.created) > a.ttl || now.Sub(s.lastUsed) > idleTimeout
}

// session returns the request's session, if any (and marks it used).
func (a *auth) session(r *http.Request) (*session, string) {
	if !a.enabled() {
		return nil, ""
	}
	c, err := r.Cookie(cookieName)
	if err != nil || len(c.Value) != 64 {
		return nil, ""
	}
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sessions[c.Value]
	if s == nil {
		return nil, ""
	}
	if a.expired(s, now) {
		delete(a.sessions, c.Value)
		return nil, ""
	}
	s.lastUsed = now
	cp := *s
	return &cp, c.Value
}

// logout ends a session.
func (a *auth) logout(tok string) {
	a.mu.Lock()
	delete(a.sessions, tok)
	a.mu.Unlock()
}

// cookie is the session cookie for tok ("" clears it).
func (a *auth) cookie(tok string) *http.Cookie {
	c := &http.Cookie{Name: cookieName, Value: tok, Path: "/", HttpOnly: true, Secure: a.secure, SameSite: http.SameSiteStrictMode}
	if tok == "" {
		c.MaxAge = -1
	} else {
		c.MaxAge = int(a.ttl / time.Second)
	}
	return c
}

// csrfOK compares the request's X-CSRF-Token header with the session's.
func csrfOK(r *http.Request, s *session) bool {
	got := r.Header.Get("X-CSRF-Token")
	return s != nil && got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) == 1
}

// sameOrigin refuses requests a browser sends on behalf of another site:
// Sec-Fetch-Site, when sent, must be same-origin (or none: typed by the
// user); Origin, when sent, must be this host.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	// Either scheme: behind a proxy that terminates TLS the request
	// arrives over HTTP.
	return o == "http://"+r.Host || o == "https://"+r.Host
}
