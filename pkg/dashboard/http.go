package dashboard

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
)

//go:embed assets
var assetsFS embed.FS

// csp allows only this origin's scripts, styles and connections: no
// inline script or style, no framing.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// keepalive is how often an idle stream sends a comment (proxies close
// silent connections).
const keepalive = 15 * time.Second

// asset is one embedded file, ready to serve.
type asset struct {
	name  string
	body  []byte
	etag  string
	ctype string
}

func loadAssets() (map[string]*asset, error) {
	out := map[string]*asset{}
	err := fs.WalkDir(assetsFS, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assetsFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" {
			ct = "application/octet-stream"
		}
		out[strings.TrimPrefix(p, "assets/")] = &asset{name: p, body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, ctype: ct}
		return nil
	})
	return out, err
}

func (s *Server) routes() http.Handler {
	files, err := loadAssets()
	if err != nil {
		// The files are compiled in: this cannot happen at run time.
		s.log.Error("dashboard assets", "err", err)
	}
	serveAsset := func(w http.ResponseWriter, r *http.Request, name string) {
		a := files[name]
		if a == nil {
			httpError(w, http.StatusNotFound, "not found")
			return
		}
		w.Header().Set("Content-Type", a.ctype)
		w.Header().Set("ETag", a.etag)
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
	}
	mux := http.NewServeMux()
	page := func(w http.ResponseWriter, r *http.Request) { serveAsset(w, r, "index.html") }
	mux.HandleFunc("GET /{$}", page)
	mux.HandleFunc("GET /hosts/{id}", page)
	mux.HandleFunc("GET /assets/{name}", func(w http.ResponseWriter, r *http.Request) { serveAsset(w, r, r.PathValue("name")) })
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) { serveAsset(w, r, "favicon.svg") })
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /api/session", s.getSession)
	mux.HandleFunc("POST /api/login", s.postLogin)
	mux.HandleFunc("POST /api/logout", s.postLogout)
	mux.HandleFunc("GET /api/overview", s.viewer(s.getOverview))
	mux.HandleFunc("GET /api/events", s.viewer(s.overviewEvents))
	mux.HandleFunc("GET /api/hosts/{id}", s.viewer(s.getHost))
	mux.HandleFunc("GET /api/hosts/{id}/events", s.viewer(s.hostEvents))
	mux.HandleFunc("POST /api/hosts/{id}/commands", s.postCommand)
	if s.o.Metrics != nil {
		mux.Handle("GET /metrics", s.viewer(s.o.Metrics.ServeHTTP))
	}
	return securityHeaders(mux)
}

// securityHeaders sets the headers every response carries.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()")
		if r.TLS != nil {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		next.ServeHTTP(w, r)
	})
}

// viewer lets a request through when the dashboard may be watched by it:
// always, or with RequireLogin only with a session.
func (s *Server) viewer(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.o.RequireLogin {
			if sess, _ := s.auth.session(r); sess == nil {
				httpError(w, http.StatusUnauthorized, "sign in first")
				return
			}
		}
		next(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// decodeJSON reads a small JSON body with known fields only.
func decodeJSON(r *http.Request, limit int64, v any) error {
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		return errors.New("content type must be application/json")
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.New("bad request body: " + err.Error())
	}
	return nil
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	st := s.o.View.Stats()
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "hosts": st.Hosts, "messages": st.Messages})
}

// SessionInfo is what GET /api/session says.
type SessionInfo struct {
	// User is the signed-in user ("" when none).
	User string `json:"user"`
	// CSRF is the token to send in X-CSRF-Token with every POST.
	CSRF string `json:"csrf,omitempty"`
	// Login says whether users can sign in; RequireLogin whether they
	// must to see anything.
	Login        bool `json:"login"`         // users can sign in
	RequireLogin bool `json:"require_login"` // they must, to see anything
	// Commands says whether the dashboard can send commands at all;
	// CanRun whether this user may (signed in).
	Commands bool `json:"commands"` // the dashboard can send commands
	CanRun   bool `json:"can_run"`  // this user may
}

func (s *Server) sessionInfo(sess *session) SessionInfo {
	info := SessionInfo{Login: s.auth.enabled(), RequireLogin: s.o.RequireLogin, Commands: s.CanRun()}
	if sess != nil {
		info.User, info.CSRF, info.CanRun = sess.user, sess.csrf, s.CanRun()
	}
	return info
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request) {
	sess, _ := s.auth.session(r)
	writeJSON(w, http.StatusOK, s.sessionInfo(sess))
}

func (s *Server) postLogin(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		httpError(w, http.StatusForbidden, "cross-site request refused")
		return
	}
	var req struct {
		User     string `json:"user"`
		Password string `json:"password"`
	}
	if err := decodeJSON(r, 4<<10, &req); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !validUser(req.User) || len(req.Password) > 72 {
		httpError(w, http.StatusUnauthorized, errBadLogin.Error())
		return
	}
	sess, tok, err := s.auth.login(req.User, req.Password)
	switch {
	case errors.Is(err, errBusy):
		httpError(w, http.StatusTooManyRequests, err.Error())
		return
	case errors.Is(err, errLocked):
		s.log.Warn("dashboard sign-in refused: too many failures", "user", req.User, "remote", r.RemoteAddr)
		httpError(w, http.StatusTooManyRequests, err.Error())
		return
	case err != nil:
		s.log.Warn("dashboard sign-in failed", "user", req.User, "remote", r.RemoteAddr)
		httpError(w, http.StatusUnauthorized, err.Error())
		return
	}
	s.log.Info("dashboard sign-in", "user", req.User, "remote", r.RemoteAddr)
	http.SetCookie(w, s.auth.cookie(tok))
	writeJSON(w, http.StatusOK, s.sessionInfo(sess))
}

func (s *Server) postLogout(w http.ResponseWriter, r *http.Request) {
	sess, tok := s.auth.session(r)
	if sess == nil {
		http.SetCookie(w, s.auth.cookie(""))
		writeJSON(w, http.StatusOK, s.sessionInfo(nil))
		return
	}
	if !sameOrigin(r) || !csrfOK(r, sess) {
		httpError(w, http.StatusForbidden, "missing or wrong CSRF token")
		return
	}
	s.auth.logout(tok)
	s.log.Info("dashboard sign-out", "user", sess.user)
	http.SetCookie(w, s.auth.cookie(""))
	writeJSON(w, http.StatusOK, s.sessionInfo(nil))
}

func (s *Server) getOverview(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.hub.snapshot())
}

// HostDetail is what the host page shows (GET /api/hosts/{id}).
type HostDetail struct {
	Host fleet.Host `json:"host"` // what the fleet view knows
	// Known says whether the fleet view knows the host (it may have
	// activity only).
	Known bool `json:"known"`
	// Inventory is the last inventory, without its software list
	// (SoftwareCount says how long it is).
	Inventory     *protocol.Inventory `json:"inventory,omitempty"`
	SoftwareCount int                 `json:"software_count,omitempty"` // packages in the inventory
	// Metrics is the last metrics sample.
	Metrics  *protocol.Metrics `json:"metrics,omitempty"`
	History  Series            `json:"history"`  // recent samples, for the charts
	Commands []Command         `json:"commands"` // recent commands, newest first
	Audits   []protocol.Audit  `json:"audits"`   // recent audit records, newest first
	Now      int64             `json:"now"`      // the server's clock, Unix ms
}

func (s *Server) detail(id string) (HostDetail, bool) {
	h, known := s.o.View.Host(id)
	d := HostDetail{Host: h, Known: known, Metrics: h.Metrics, Now: s.o.Now().UnixMilli()}
	if !known {
		d.Host.ID = id
	}
	if h.Inventory != nil {
		inv := *h.Inventory
		d.SoftwareCount = len(inv.Software)
		inv.Software = nil
		d.Inventory = &inv
	}
	d.History = s.hub.history.series(id)
	d.Commands, d.Audits = s.activity.of(id)
	return d, known || len(d.Commands) > 0 || len(d.Audits) > 0
}

func (s *Server) getHost(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !protocol.ValidHostID(id) {
		httpError(w, http.StatusBadRequest, "invalid host id")
		return
	}
	d, ok := s.detail(id)
	if !ok {
		httpError(w, http.StatusNotFound, "unknown host "+id)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// sse is one Server-Sent Events response, gzip-compressed when the
// browser accepts it (the first message of a large fleet is megabytes of
// JSON that compress tenfold).
type sse struct {
	w  io.Writer
	gz *gzip.Writer
	rc *http.ResponseController
}

// startStream prepares a Server-Sent Events response; it returns false
// (and answered) when too many streams are open. The caller must call
// end.
func (s *Server) startStream(w http.ResponseWriter, r *http.Request) (*sse, bool) {
	select {
	case s.clients <- struct{}{}:
	default:
		httpError(w, http.StatusServiceUnavailable, "too many live connections")
		return nil, false
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	h.Add("Vary", "Accept-Encoding")
	st := &sse{w: w, rc: http.NewResponseController(w)}
	if acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
		st.gz, _ = gzip.NewWriterLevel(w, gzip.BestSpeed)
		st.w = st.gz
	}
	w.WriteHeader(http.StatusOK)
	return st, true
}

// end releases the stream's slot.
func (s *Server) end(st *sse) {
	if st.gz != nil {
		_ = st.gz.Close()
	}
	<-s.clients
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.ReplaceAll(strings.TrimSpace(q), " ", "") != "q=0" {
			return true
		}
	}
	return false
}

// send writes one event, bounded in time so a stuck browser cannot hold a
// stream forever.
func (st *sse) send(msg []byte) error {
	_ = st.rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := st.w.Write(msg); err != nil {
		return err
	}
	if st.gz != nil {
		if err := st.gz.Flush(); err != nil {
			return err
		}
	}
	return st.rc.Flush()
}

func (s *Server) overviewEvents(w http.ResponseWriter, r *http.Request) {
	st, ok := s.startStream(w, r)
	if !ok {
		return
	}
	defer s.end(st)
	sub, snap := s.hub.subscribe(64)
	defer s.hub.unsubscribe(sub)
	if st.send(append([]byte("retry: 2000\n\n"), snap...)) != nil {
		return
	}
	ping := time.NewTicker(keepalive)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-sub.done:
			return
		case msg := <-sub.ch:
			if st.send(msg) != nil {
				return
			}
		case <-ping.C:
			if !s.stillAllowed(r) || st.send([]byte(": ping\n\n")) != nil {
				return
			}
		}
	}
}

func (s *Server) hostEvents(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !protocol.ValidHostID(id) {
		httpError(w, http.StatusBadRequest, "invalid host id")
		return
	}
	st, ok := s.startStream(w, r)
	if !ok {
		return
	}
	defer s.end(st)
	if st.send([]byte("retry: 2000\n\n")) != nil {
		return
	}
	type version struct{ fleet, activity uint64 }
	var sent *version
	poll := time.NewTicker(s.o.Interval)
	defer poll.Stop()
	idle := time.Now()
	for {
		v := version{s.hub.version(id), s.activity.version(id)}
		if sent == nil || v != *sent {
			d, _ := s.detail(id)
			if st.send(sseEvent("host", d)) != nil {
				return
			}
			sent, idle = &v, time.Now()
		} else if time.Since(idle) > keepalive {
			if !s.stillAllowed(r) || st.send([]byte(": ping\n\n")) != nil {
				return
			}
			idle = time.Now()
		}
		select {
		case <-r.Context().Done():
			return
		case <-s.done():
			return
		case <-poll.C:
		}
	}
}

// stillAllowed tells a live stream whether its viewer may still watch
// (with RequireLogin, the session may have ended since it connected).
func (s *Server) stillAllowed(r *http.Request) bool {
	if !s.o.RequireLogin {
		return true
	}
	sess, _ := s.auth.session(r)
	return sess != nil
}

// done is closed when Run ends.
func (s *Server) done() <-chan struct{} { return s.life.Done() }
