package dashboard_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/mqagent/mqagent/pkg/client"
	"github.com/mqagent/mqagent/pkg/dashboard"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// fakeSender records the commands a dashboard sends and delivers the
// events the test gives it (the broker side is tested end to end in
// test/e2e).
type fakeSender struct {
	mu      sync.Mutex
	sent    []protocol.Command
	signers []*client.Signer
	err     error
	events  chan client.Event
}

func (f *fakeSender) Send(ctx context.Context, cmd protocol.Command, s *client.Signer) (<-chan client.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	f.sent = append(f.sent, cmd)
	f.signers = append(f.signers, s)
	out := make(chan client.Event)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-f.events:
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

func (f *fakeSender) commands() []protocol.Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]protocol.Command(nil), f.sent...)
}

func signer() *client.Signer {
	return &client.Signer{Kid: "ops", Key: ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))}
}

// users returns a users map with cheap hashes (the cost does not matter
// to these tests, and the race detector makes bcrypt slow).
func users(t *testing.T, kv ...string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for i := 0; i+1 < len(kv); i += 2 {
		h, err := bcrypt.GenerateFromPassword([]byte(kv[i+1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		out[kv[i]] = h
	}
	return out
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// post sends a JSON POST with optional cookie, CSRF token and extra
// headers (name, value pairs).
func (r *rig) post(path, body string, cookie *http.Cookie, csrf string, headers ...string) (*http.Response, []byte) {
	r.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if cookie != nil {
		req.AddCookie(cookie)
	}
	if csrf != "" {
		req.Header.Set("X-CSRF-Token", csrf)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return r.do(req)
}

// login signs in and returns the session cookie and the CSRF token.
func (r *rig) login(user, password string) (*http.Cookie, string) {
	r.t.Helper()
	resp, b := r.post("/api/login", `{"user":"`+user+`","password":"`+password+`"}`, nil, "")
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("login: %s %s", resp.Status, b)
	}
	var info dashboard.SessionInfo
	if err := json.Unmarshal(b, &info); err != nil || info.User != user || info.CSRF == "" {
		r.t.Fatalf("login answer %s (%v)", b, err)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "mqagent_session" {
			return c, info.CSRF
		}
	}
	r.t.Fatal("no session cookie")
	return nil, ""
}

func TestLogin(t *testing.T) {
	clk := &clock{t: time.Now()}
	r := newRig(t, dashboard.Options{Users: users(t, "alice", "pw-alice-1", "bob", "pw-bob-22"), SessionTTL: time.Hour, Now: clk.now})
	tests := []struct {
		name    string
		body    string
		headers []string
		want    int
	}{
		{"wrong password", `{"user":"alice","password":"nope"}`, nil, 401},
		{"unknown user", `{"user":"mallory","password":"pw-alice-1"}`, nil, 401},
		{"invalid user name", `{"user":"a b","password":"x"}`, nil, 401},
		{"unknown field", `{"user":"alice","password":"pw-alice-1","admin":true}`, nil, 400},
		{"not JSON", `user=alice`, nil, 400},
		{"form content type", `{"user":"alice","password":"pw-alice-1"}`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 400},
		{"cross-site", `{"user":"alice","password":"pw-alice-1"}`, []string{"Sec-Fetch-Site", "cross-site"}, 403},
		{"other origin", `{"user":"alice","password":"pw-alice-1"}`, []string{"Origin", "http://evil.example"}, 403},
		{"same origin", `{"user":"bob","password":"pw-bob-22"}`, []string{"Origin", r.srv.URL, "Sec-Fetch-Site", "same-origin"}, 200},
	}
	for _, tc := range tests {
		if resp, b := r.post("/api/login", tc.body, nil, "", tc.headers...); resp.StatusCode != tc.want {
			t.Errorf("%s: %s %s, want %d", tc.name, resp.Status, b, tc.want)
		}
	}

	cookie, csrf := r.login("alice", "pw-alice-1")
	if !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" || cookie.Secure || len(cookie.Value) != 64 {
		t.Errorf("cookie %+v", cookie)
	}
	req, _ := http.NewRequest(http.MethodGet, r.srv.URL+"/api/session", nil)
	req.AddCookie(cookie)
	_, b := r.do(req)
	var info dashboard.SessionInfo
	if err := json.Unmarshal(b, &info); err != nil || info.User != "alice" || info.CSRF != csrf || !info.Login || info.CanRun {
		t.Errorf("session %s", b)
	}

	// Logout needs the token; then the cookie is worthless.
	if resp, _ := r.post("/api/logout", `{}`, cookie, ""); resp.StatusCode != http.StatusForbidden {
		t.Errorf("logout without CSRF token: %s", resp.Status)
	}
	if resp, _ := r.post("/api/logout", `{}`, cookie, csrf); resp.StatusCode != http.StatusOK {
		t.Errorf("logout: %s", resp.Status)
	}
	_, b = r.do(req)
	if strings.Contains(string(b), "alice") {
		t.Errorf("session after logout: %s", b)
	}

	// Sessions expire.
	cookie, _ = r.login("alice", "pw-alice-1")
	clk.add(time.Hour + time.Second)
	req, _ = http.NewRequest(http.MethodGet, r.srv.URL+"/api/session", nil)
	req.AddCookie(cookie)
	if _, b = r.do(req); strings.Contains(string(b), "alice") {
		t.Errorf("session after its TTL: %s", b)
	}
}

func TestLoginLockout(t *testing.T) {
	clk := &clock{t: time.Now()}
	r := newRig(t, dashboard.Options{Users: users(t, "alice", "pw-alice-1"), Now: clk.now})
	for i := 0; i < 5; i++ {
		if resp, _ := r.post("/api/login", `{"user":"alice","password":"wrong"}`, nil, ""); resp.StatusCode != 401 {
			t.Fatalf("attempt %d: %s", i, resp.Status)
		}
	}
	if resp, _ := r.post("/api/login", `{"user":"alice","password":"pw-alice-1"}`, nil, ""); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("right password after 5 failures: %s, want 429", resp.Status)
	}
	clk.add(61 * time.Second)
	r.login("alice", "pw-alice-1")
}

func TestRequireLogin(t *testing.T) {
	r := newRig(t, dashboard.Options{Users: users(t, "alice", "pw-alice-1"), RequireLogin: true,
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("m 1\n")) })})
	for _, p := range []string{"/api/overview", "/api/events", "/api/hosts/a", "/api/hosts/a/events", "/metrics"} {
		if resp, _ := r.get(p); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without a session: %s", p, resp.Status)
		}
	}
	// The page and its assets load (they show the sign-in form).
	for _, p := range []string{"/", "/assets/app.js", "/api/session"} {
		if resp, _ := r.get(p); resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %s", p, resp.Status)
		}
	}
	cookie, _ := r.login("alice", "pw-alice-1")
	for _, p := range []string{"/api/overview", "/metrics"} {
		req, _ := http.NewRequest(http.MethodGet, r.srv.URL+p, nil)
		req.AddCookie(cookie)
		if resp, b := r.do(req); resp.StatusCode != http.StatusOK {
			t.Errorf("%s signed in: %s %s", p, resp.Status, b)
		}
	}
}

func TestCommands(t *testing.T) {
	fs := &fakeSender{events: make(chan client.Event)}
	sg := signer()
	r := newRig(t, dashboard.Options{Users: users(t, "alice", "pw-alice-1"), Sender: fs, Signer: sg, CommandTimeout: 30 * time.Second})
	const path = "/api/hosts/web-1/commands"
	if resp, _ := r.post(path, `{"kind":"ping"}`, nil, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without a session: %s", resp.Status)
	}
	cookie, csrf := r.login("alice", "pw-alice-1")
	for name, tc := range map[string]struct {
		path, body, csrf string
		headers          []string
		want             int
	}{
		"no CSRF token":      {path, `{"kind":"ping"}`, "", nil, 403},
		"wrong CSRF token":   {path, `{"kind":"ping"}`, strings.Repeat("0", 64), nil, 403},
		"cross-site":         {path, `{"kind":"ping"}`, csrf, []string{"Sec-Fetch-Site", "cross-site"}, 403},
		"unknown kind":       {path, `{"kind":"agent.uninstall"}`, csrf, nil, 400},
		"shell without line": {path, `{"kind":"shell","command":"  "}`, csrf, nil, 400},
		"exec without argv":  {path, `{"kind":"exec"}`, csrf, nil, 400},
		"ping with a line":   {path, `{"kind":"ping","command":"x"}`, csrf, nil, 400},
		"timeout too long":   {path, `{"kind":"ping","timeout_s":3601}`, csrf, nil, 400},
		"negative timeout":   {path, `{"kind":"ping","timeout_s":-1}`, csrf, nil, 400},
		"unknown field":      {path, `{"kind":"ping","target":"all"}`, csrf, nil, 400},
		"bad host":           {"/api/hosts/a%20b/commands", `{"kind":"ping"}`, csrf, nil, 400},
	} {
		if resp, b := r.post(tc.path, tc.body, cookie, tc.csrf, tc.headers...); resp.StatusCode != tc.want {
			t.Errorf("%s: %s %s, want %d", name, resp.Status, b, tc.want)
		}
	}
	if n := len(fs.commands()); n != 0 {
		t.Fatalf("%d commands sent by refused requests", n)
	}

	resp, b := r.post(path, `{"kind":"shell","command":"uptime","timeout_s":5}`, cookie, csrf)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("command: %s %s", resp.Status, b)
	}
	var acc dashboard.CommandAccepted
	if err := json.Unmarshal(b, &acc); err != nil || !protocol.ValidID(acc.ID) {
		t.Fatalf("answer %s", b)
	}
	cmds := fs.commands()
	if len(cmds) != 1 {
		t.Fatalf("%d commands sent", len(cmds))
	}
	c := cmds[0]
	var args protocol.ShellArgs
	if c.ID != acc.ID || c.Kind != "shell" || c.Target != "host:web-1" || c.Operator != "alice" || c.TimeoutMS != 5000 || c.V != 1 ||
		json.Unmarshal(c.Args, &args) != nil || args.Command != "uptime" || c.IssuedAt.IsZero() {
		t.Errorf("command %+v (args %s)", c, c.Args)
	}
	if fs.signers[0] != sg {
		t.Error("not signed with the configured key")
	}
	// It shows as sent, then with its result.
	d := detail(t, r, "web-1")
	if len(d.Commands) != 1 || d.Commands[0].State != "sent" || d.Commands[0].Operator != "alice" {
		t.Errorf("before the answer: %+v", d.Commands)
	}
	code := 0
	select {
	case fs.events <- client.Event{Result: &protocol.Result{V: 1, ID: acc.ID, Host: "web-1", State: "succeeded", Stdout: "up 3 days", ExitCode: &code, TS: protocol.Now()}}:
	case <-time.After(waitFor):
		t.Fatal("the dashboard does not follow the command's events")
	}
	deadline := time.Now().Add(waitFor)
	for d = detail(t, r, "web-1"); d.Commands[0].State != "succeeded"; d = detail(t, r, "web-1") {
		if time.Now().After(deadline) {
			t.Fatalf("after the result: %+v", d.Commands)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d.Commands[0].Stdout != "up 3 days" {
		t.Errorf("stdout %q", d.Commands[0].Stdout)
	}

	// A broker failure is reported.
	fs.mu.Lock()
	fs.err = errors.New("broker did not answer in time")
	fs.mu.Unlock()
	if resp, b := r.post(path, `{"kind":"ping"}`, cookie, csrf); resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), "did not answer") {
		t.Errorf("send failure: %s %s", resp.Status, b)
	}
}

func TestParseUsers(t *testing.T) {
	h, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	hash := string(h)
	tests := []struct {
		name, in string
		n        int
		bad      string
	}{
		{"two users, comments", "# ops\nalice:" + hash + "\n\n  bob:" + hash + "  \n", 2, ""},
		{"htpasswd $2y$", "carol:$2y$" + hash[4:] + "\n", 1, ""},
		{"no colon", "alice\n", 0, "line 1"},
		{"not bcrypt", "alice:{SHA}abc\n", 0, "not a bcrypt hash"},
		{"bad name", "al ice:" + hash + "\n", 0, "invalid user name"},
		{"twice", "a:" + hash + "\na:" + hash + "\n", 0, "given twice"},
	}
	for _, tc := range tests {
		got, err := dashboard.ParseUsers(strings.NewReader(tc.in))
		if tc.bad != "" {
			if err == nil || !strings.Contains(err.Error(), tc.bad) || !errors.Is(err, dashboard.ErrUsersFile) {
				t.Errorf("%s: err %v, want %q", tc.name, err, tc.bad)
			}
			continue
		}
		if err != nil || len(got) != tc.n {
			t.Errorf("%s: %d users, err %v", tc.name, len(got), err)
		}
	}
	if _, err := dashboard.HashPassword("short"); err == nil {
		t.Error("short password hashed")
	}
}
