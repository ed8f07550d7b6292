package update

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/mqagent/mqagent/pkg/protocol"
)

func TestParseRequest(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	sig := base64.StdEncoding.EncodeToString(ed25519.Sign(key, []byte("x")))
	sum := sha256.Sum256([]byte("x"))
	good := protocol.UpdateArgs{Version: "1.2.0", URL: "https://dl.example.com/mqagent", SHA256: hex.EncodeToString(sum[:]), Signature: sig}
	cases := []struct {
		name  string
		mod   func(*protocol.UpdateArgs)
		http  bool
		field string
	}{
		{"ok", func(*protocol.UpdateArgs) {}, false, ""},
		{"upper-case sha256", func(a *protocol.UpdateArgs) { a.SHA256 = strings.ToUpper(a.SHA256) }, false, ""},
		{"no version", func(a *protocol.UpdateArgs) { a.Version = "" }, false, "args.version"},
		{"bad version", func(a *protocol.UpdateArgs) { a.Version = "latest" }, false, "args.version"},
		{"no url", func(a *protocol.UpdateArgs) { a.URL = "" }, false, "args.url"},
		{"http remote", func(a *protocol.UpdateArgs) { a.URL = "http://dl.example.com/x" }, false, "args.url"},
		{"http remote in dev mode", func(a *protocol.UpdateArgs) { a.URL = "http://dl.example.com/x" }, true, ""},
		{"http loopback", func(a *protocol.UpdateArgs) { a.URL = "http://127.0.0.1:8080/x" }, false, ""},
		{"http localhost", func(a *protocol.UpdateArgs) { a.URL = "http://localhost/x" }, false, ""},
		{"http ipv6 loopback", func(a *protocol.UpdateArgs) { a.URL = "http://[::1]:80/x" }, false, ""},
		{"ftp", func(a *protocol.UpdateArgs) { a.URL = "ftp://127.0.0.1/x" }, false, "args.url"},
		{"credentials", func(a *protocol.UpdateArgs) { a.URL = "https://u:p@dl.example.com/x" }, false, "args.url"},
		{"file relative", func(a *protocol.UpdateArgs) { a.URL = "file:relative/x" }, false, "args.url"},
		{"file remote host", func(a *protocol.UpdateArgs) { a.URL = "file://server/share/x" }, false, "args.url"},
		{"short sha256", func(a *protocol.UpdateArgs) { a.SHA256 = "abcd" }, false, "args.sha256"},
		{"non-hex sha256", func(a *protocol.UpdateArgs) { a.SHA256 = strings.Repeat("zz", 32) }, false, "args.sha256"},
		{"no signature", func(a *protocol.UpdateArgs) { a.Signature = "" }, false, "args.signature"},
		{"short signature", func(a *protocol.UpdateArgs) { a.Signature = "AAAA" }, false, "args.signature"},
	}
	if runtime.GOOS != "windows" {
		cases = append(cases, struct {
			name  string
			mod   func(*protocol.UpdateArgs)
			http  bool
			field string
		}{"file", func(a *protocol.UpdateArgs) { a.URL = "file:///opt/dist/mqagent" }, false, ""})
	}
	for _, c := range cases {
		a := good
		c.mod(&a)
		r, err := ParseRequest(a, c.http)
		var fe *protocol.FieldError
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.field != "" && (!errors.As(err, &fe) || fe.Field != c.field):
			t.Errorf("%s: error %v, want a field error on %s", c.name, err, c.field)
		case c.field == "" && (r.Version != a.Version || r.SHA256 != sum || len(r.Signature) != ed25519.SignatureSize):
			t.Errorf("%s: request %+v", c.name, r)
		}
	}
}

func TestFetch(t *testing.T) {
	payload := []byte(strings.Repeat("mqagent binary ", 1000))
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(payload) })
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, _ *http.Request) {
		for range 4 { // no Content-Length: the limit applies while reading
			_, _ = w.Write(payload)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/short", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(payload)))
		_, _ = w.Write(payload[:100])
	})
	mux.HandleFunc("/redirect-ok", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	mux.HandleFunc("/redirect-remote", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://192.0.2.1/x", http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	dir := testDir(t)
	file := filepath.Join(dir, "bin")
	if err := os.WriteFile(file, payload, 0o644); err != nil {
		t.Fatal(err)
	}
	fileURL := func(p string) string {
		if runtime.GOOS == "windows" {
			return "file:///" + filepath.ToSlash(p)
		}
		return (&url.URL{Scheme: "file", Path: p}).String()
	}
	cases := []struct {
		name string
		url  string
		max  int64
		err  string
	}{
		{"http", srv.URL + "/ok", 1 << 20, ""},
		{"http at the limit", srv.URL + "/ok", int64(len(payload)), ""},
		{"announced too large", srv.URL + "/ok", int64(len(payload)) - 1, "larger than update.max_bytes"},
		{"streamed too large", srv.URL + "/chunked", int64(len(payload)) * 2, "larger than update.max_bytes"},
		{"cut short", srv.URL + "/short", 1 << 20, "download interrupted"},
		{"not found", srv.URL + "/missing", 1 << 20, "404"},
		{"redirect", srv.URL + "/redirect-ok", 1 << 20, ""},
		{"redirect to plain http elsewhere", srv.URL + "/redirect-remote", 1 << 20, "redirect to http://192.0.2.1/x refused"},
		{"file", fileURL(file), 1 << 20, ""},
		{"file too large", fileURL(file), 10, "larger than update.max_bytes"},
		{"file is a directory", fileURL(dir), 1 << 20, "not a regular file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u, err := CheckURL(c.url, false)
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(testDir(t), "download")
			n, err := Fetch(context.Background(), NewHTTPClient(false), u, dst, c.max)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("Fetch: %v, want an error with %q", err, c.err)
				}
				if _, serr := os.Stat(dst); serr == nil {
					t.Fatal("a failed download left its file")
				}
				return
			}
			got, rerr := os.ReadFile(dst)
			if err != nil || rerr != nil || n != int64(len(payload)) || string(got) != string(payload) {
				t.Fatalf("Fetch: %d bytes, %v %v", n, err, rerr)
			}
		})
	}
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		u, _ := CheckURL(srv.URL+"/ok", false)
		if _, err := Fetch(ctx, nil, u, filepath.Join(testDir(t), "d"), 1<<20); err == nil {
			t.Fatal("a canceled download succeeded")
		}
	})
}

func TestVerify(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	otherPub, otherKey, _ := ed25519.GenerateKey(nil)
	data := []byte("the new agent")
	sum := sha256.Sum256(data)
	sig := ed25519.Sign(key, data)
	for _, c := range []struct {
		name string
		data []byte
		sum  [32]byte
		sig  []byte
		pub  ed25519.PublicKey
		err  error
	}{
		{"good", data, sum, sig, pub, nil},
		{"other data", []byte("the new agenT"), sum, sig, pub, ErrVerify},
		{"other signer", data, sum, ed25519.Sign(otherKey, data), pub, ErrVerify},
		{"other key configured", data, sum, sig, otherPub, ErrVerify},
		{"no key", data, sum, sig, nil, ErrNoKey},
	} {
		if err := Verify(c.data, c.sum, c.sig, c.pub); !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", c.name, err, c.err)
		}
	}
}

func TestSibling(t *testing.T) {
	for _, c := range []struct{ exe, tag, want string }{
		{"/usr/local/bin/mqagent", "old", "/usr/local/bin/mqagent.old"},
		{`C:\Program Files\mqagent\mqagent.exe`, "new", `C:\Program Files\mqagent\mqagent.new.exe`},
		{`C:\mqagent\MQAGENT.EXE`, "old", `C:\mqagent\MQAGENT.old.EXE`},
	} {
		if got := Sibling(c.exe, c.tag); got != c.want {
			t.Errorf("Sibling(%q, %q) = %q, want %q", c.exe, c.tag, got, c.want)
		}
	}
}
