package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/dashboard"
	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// waitFor bounds every wait of these tests.
const waitFor = 5 * time.Second

var (
	topics = protocol.Topics{Prefix: protocol.DefaultPrefix}
	t0     = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
)

func at(sec int) protocol.Time { return protocol.Time{Time: t0.Add(time.Duration(sec) * time.Second)} }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func status(host string, online bool, session uint64, sec int) []byte {
	s := protocol.Status{V: 1, Host: host, Session: session, TS: at(sec)}
	if online {
		s.State, s.Version, s.OS, s.Arch, s.Groups, s.PID = "online", "1.2.0", "linux", "amd64", []string{"web"}, 42
	} else {
		s.State, s.Reason = "offline", "shutdown"
	}
	return mustJSON(s)
}

func metrics(host string, sec int, cpu float64, rx uint64) []byte {
	return mustJSON(protocol.Metrics{V: 1, Host: host, TS: at(sec), CPU: &protocol.CPUSample{Percent: cpu},
		Mem:   &protocol.MemSample{Total: 100, Used: 25, Available: 75, Percent: 25},
		Disks: []protocol.DiskSample{{Mount: "/", Total: 10, Used: 1, Percent: 10}, {Mount: "/var", Total: 10, Used: 9, Percent: 90}},
		Net:   []protocol.NetSample{{Name: "lo", BytesRecv: 1e9, BytesSent: 1e9}, {Name: "eth0", BytesRecv: rx, BytesSent: rx / 2}},
		Agent: &protocol.AgentHealth{RSSBytes: 8 << 20}})
}

// rig is a dashboard on a fleet view fed by the test, served on 127.0.0.1.
type rig struct {
	t    testing.TB
	view *fleet.View
	s    *dashboard.Server
	srv  *httptest.Server
}

func newRig(t testing.TB, o dashboard.Options) *rig {
	t.Helper()
	if o.View == nil {
		o.View = fleet.New()
	}
	if o.Interval == 0 {
		o.Interval = 20 * time.Millisecond
	}
	s, err := dashboard.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
		s.Wait()
	})
	return &rig{t: t, view: o.View, s: s, srv: srv}
}

func (r *rig) apply(topic string, payload []byte) {
	r.t.Helper()
	if !r.view.Apply(topic, payload) {
		r.t.Fatalf("view refused %s %s", topic, payload)
	}
}

// do sends a request and returns the response with its body read.
func (r *rig) do(req *http.Request) (*http.Response, []byte) {
	r.t.Helper()
	resp, err := r.srv.Client().Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return resp, b
}

func (r *rig) get(path string) (*http.Response, []byte) {
	r.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.srv.URL+path, nil)
	return r.do(req)
}

// event is one Server-Sent Event.
type event struct {
	name string
	data string
}

// stream reads a Server-Sent Events response.
type stream struct {
	t      testing.TB
	events chan event
	resp   *http.Response
	cancel context.CancelFunc
}

func (r *rig) stream(path string) *stream {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.srv.URL+path, nil)
	resp, err := r.srv.Client().Do(req)
	if err != nil {
		cancel()
		r.t.Fatal(err)
	}
	s := &stream{t: r.t, events: make(chan event, 1024), resp: resp, cancel: cancel}
	go func() {
		defer close(s.events)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		var ev event
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" || ev.data != "" {
					s.events <- ev
				}
				ev = event{}
			case strings.HasPrefix(line, "event: "):
				ev.name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data += line[len("data: "):]
			}
		}
	}()
	r.t.Cleanup(cancel)
	return s
}

// next returns the next event named name (others are skipped).
func (s *stream) next(name string) event {
	s.t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				s.t.Fatalf("stream ended waiting for %q", name)
			}
			if ev.name == name {
				return ev
			}
		case <-deadline:
			s.t.Fatalf("no %q event within %v", name, waitFor)
		}
	}
}

// until decodes events named name into a fresh T until pred holds.
func until[T any](s *stream, name string, pred func(T) bool) T {
	s.t.Helper()
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		var v T
		ev := s.next(name)
		if err := json.Unmarshal([]byte(ev.data), &v); err != nil {
			s.t.Fatalf("%s: %v: %s", name, err, ev.data)
		}
		if pred(v) {
			return v
		}
	}
	s.t.Fatalf("no matching %q event within %v", name, waitFor)
	panic("unreachable")
}

func hostN(i int) string { return fmt.Sprintf("h%05d", i) }
