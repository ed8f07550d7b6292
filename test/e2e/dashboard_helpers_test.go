package e2e

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/dashboard"
)

// dashServer is an `mqagent dashboard` or `mqagent exporter` process run for
// one test: started on 127.0.0.1:0, its URL read from its log.
type dashServer struct {
	t    *testing.T
	cmd  *osexec.Cmd
	URL  string
	mu   sync.Mutex
	log  strings.Builder
	done chan struct{}
}

// dashListening matches the log line that gives the server's URL.
var dashListening = regexp.MustCompile(`(?:dashboard|exporter) listening.* url=(https?://[0-9.:]+)`)

// startDashServer runs `bin args...` and waits until it logs the URL it
// listens on. The test's cleanup stops it with SIGTERM and fails the test
// unless it exits with status 0.
func startDashServer(t *testing.T, bin string, args ...string) *dashServer {
	t.Helper()
	s := &dashServer{t: t, cmd: osexec.Command(bin, args...), done: make(chan struct{})}
	s.cmd.Stdout = io.Discard
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urls := make(chan string, 1)
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.log.WriteString(line + "\n")
			s.mu.Unlock()
			if m := dashListening.FindStringSubmatch(line); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			exited := make(chan error, 1)
			go func() { <-s.done; exited <- s.cmd.Wait() }()
			select {
			case err := <-exited:
				if err != nil {
					t.Errorf("%s did not stop cleanly: %v\n%s", args[0], err, s.Log())
				}
			case <-time.After(15 * time.Second):
				_ = s.cmd.Process.Kill()
				<-exited
				t.Errorf("%s did not stop within 15 s of SIGTERM\n%s", args[0], s.Log())
			}
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", args[0], s.Log())
		}
	})
	select {
	case s.URL = <-urls:
	case <-s.done:
		_ = s.cmd.Wait()
		t.Fatalf("%s exited before listening:\n%s", args[0], s.Log())
	case <-time.After(wait):
		t.Fatalf("%s did not log its URL within %v:\n%s", args[0], wait, s.Log())
	}
	return s
}

// Log is what the server logged so far.
func (s *dashServer) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// get fetches a URL of the server and returns the response (body read).
func (s *dashServer) get(path string) (*http.Response, []byte) {
	s.t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(s.URL + path)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	return resp, b
}

// dashKey writes a new ed25519 private key as mqagent keygen does
// (base64) and returns its path and the key.
func dashKey(t *testing.T) (string, ed25519.PrivateKey) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ops.key")
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, key
}

// dashUsers writes a users file for the dashboard.
func dashUsers(t *testing.T, users map[string]string) string {
	t.Helper()
	var b strings.Builder
	for u, pw := range users {
		h, err := dashboard.HashPassword(pw)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(u + ":" + h + "\n")
	}
	path := filepath.Join(t.TempDir(), "users.txt")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// dashMetricsEvery sets the metrics interval.
func dashMetricsEvery(d string) func(map[string]any) {
	return func(c map[string]any) { section(c, "metrics")["interval"] = d }
}
