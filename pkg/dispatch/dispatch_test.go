package dispatch

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/audit"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/security"
	"github.com/mqagent/mqagent/pkg/state"
	"github.com/mqagent/mqagent/pkg/transport"
)

// blockHandler runs until released or its context ends, counting runs.
type blockHandler struct {
	runs    atomic.Int32
	running atomic.Int32
	peak    atomic.Int32
	release chan struct{}
	started chan string
}

func newBlock() *blockHandler {
	return &blockHandler{release: make(chan struct{}), started: make(chan string, 100)}
}

func (h *blockHandler) Decode(args json.RawMessage) (any, error) {
	var a struct {
		Fail bool `json:"fail"`
	}
	return a, protocol.DecodeArgs(args, &a)
}

func (h *blockHandler) Run(ctx context.Context, call *Call) Outcome {
	h.runs.Add(1)
	n := h.running.Add(1)
	defer h.running.Add(-1)
	for {
		p := h.peak.Load()
		if n <= p || h.peak.CompareAndSwap(p, n) {
			break
		}
	}
	h.started <- call.Cmd.ID
	select {
	case <-h.release:
		return Outcome{Data: map[string]bool{"ok": true}}
	case <-ctx.Done():
		return Outcome{}
	}
}

type fixture struct {
	t      *testing.T
	d      *Dispatcher
	store  *state.Store
	h      *blockHandler
	cancel context.CancelFunc
	done   chan struct{}
	dir    string
	opts   Options
	seen   map[uint64]bool
	mu     sync.Mutex
	acks   atomic.Int32
}

const host = "h1"

var topics = protocol.Topics{Prefix: "p"}

func newFixture(t *testing.T, mod func(*Options)) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{t: t, dir: dir, h: newBlock(), seen: map[uint64]bool{}}
	f.open(mod)
	return f
}

func (f *fixture) open(mod func(*Options)) {
	t := f.t
	store, err := state.Open(filepath.Join(f.dir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	al, err := audit.Open(filepath.Join(f.dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := security.New(security.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	o := Options{
		HostID: host, Groups: []string{"web"}, Facts: map[string]string{"env": "prod"}, OS: "linux", Topics: topics,
		Verifier: v, Store: store, Audit: al, Handlers: map[string]Handler{"block": f.h},
		MaxPayload: 1 << 16, DefaultTTL: time.Hour, MaxClockSkew: time.Minute, DefaultTimeout: time.Minute,
		MaxTimeout: time.Hour, MaxConcurrent: 2, MaxQueue: 3,
	}
	if mod != nil {
		mod(&o)
	}
	f.opts = o
	f.store = store
	f.d = New(o)
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan struct{})
	go func() {
		defer close(f.done)
		if err := f.d.Run(ctx, 50*time.Millisecond); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { f.stop(); _ = al.Close() })
}

func (f *fixture) stop() {
	if f.cancel == nil {
		return
	}
	f.cancel()
	<-f.done
	f.cancel = nil
	_ = f.store.Close()
}

func (f *fixture) restart(mod func(*Options)) {
	f.stop()
	f.open(mod)
}

func (f *fixture) submit(topic string, payload []byte) {
	f.d.Submit(transport.Message{Topic: topic, Payload: payload, Ack: func() { f.acks.Add(1) }})
}

func cmdJSON(id, kind, target string, extra map[string]any) []byte {
	m := map[string]any{"v": 1, "id": id, "kind": kind, "issued_at": time.Now().UTC().Format(time.RFC3339Nano)}
	if target != "" {
		m["target"] = target
	}
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return b
}

// results returns every result published so far for id, in order.
func (f *fixture) results(id string) []protocol.Result {
	msgs, err := f.store.Pending(100000)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []protocol.Result
	for _, m := range msgs {
		if m.Topic != topics.Result(host, id) {
			continue
		}
		var r protocol.Result
		if err := json.Unmarshal(m.Payload, &r); err != nil {
			f.t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func (f *fixture) audits() []protocol.Audit {
	msgs, _ := f.store.Pending(100000)
	var out []protocol.Audit
	for _, m := range msgs {
		if m.Topic == topics.Audit(host) {
			var a protocol.Audit
			_ = json.Unmarshal(m.Payload, &a)
			out = append(out, a)
		}
	}
	return out
}

func finals(rs []protocol.Result) []protocol.Result {
	var out []protocol.Result
	for _, r := range rs {
		if protocol.IsFinal(r.State) {
			out = append(out, r)
		}
	}
	return out
}

// waitFinal waits until id has a final result and returns it.
func (f *fixture) waitFinal(id string) protocol.Result {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if fs := finals(f.results(id)); len(fs) > 0 {
			return fs[0]
		}
		select {
		case <-f.store.Notify():
		case <-time.After(20 * time.Millisecond):
		}
	}
	f.t.Fatalf("no final result for %s", id)
	return protocol.Result{}
}

// waitAcks waits until n messages were acknowledged (handled for good).
func (f *fixture) waitAcks(n int32) {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for f.acks.Load() < n {
		if time.Now().After(deadline) {
			f.t.Fatalf("acks %d, want %d", f.acks.Load(), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (f *fixture) waitStarted(id string) {
	f.t.Helper()
	select {
	case got := <-f.h.started:
		if got != id {
			f.t.Fatalf("started %s, want %s", got, id)
		}
	case <-time.After(5 * time.Second):
		f.t.Fatalf("%s did not start", id)
	}
}

func TestRejections(t *testing.T) {
	f := newFixture(t, nil)
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	cases := []struct {
		name, topic string
		payload     []byte
		state, err  string
	}{
		{"unknown kind", topics.HostCmd(host), cmdJSON("r1", "nope", "", nil), protocol.StateRejected, "kind: unknown kind"},
		{"target mismatch host", topics.HostCmd(host), cmdJSON("r2", "block", "host:other", nil), protocol.StateRejected, "target mismatch"},
		{"target on broadcast", topics.AllCmd(), cmdJSON("r3", "block", "host:h1", nil), protocol.StateRejected, "target mismatch"},
		{"bad args", topics.HostCmd(host), cmdJSON("r4", "block", "", map[string]any{"args": map[string]any{"fail": "x"}}), protocol.StateRejected, "args.fail"},
		{"future", topics.HostCmd(host), cmdJSON("r5", "block", "", map[string]any{"issued_at": future}), protocol.StateRejected, "issued_at"},
		{"expired", topics.HostCmd(host), cmdJSON("r6", "block", "", map[string]any{"expires_at": past}), protocol.StateExpired, "expired"},
		{"version", topics.HostCmd(host), cmdJSON("r7", "block", "", map[string]any{"v": 2}), protocol.StateRejected, "v: unsupported"},
		{"timeout too long", topics.HostCmd(host), cmdJSON("r8", "block", "", map[string]any{"timeout_ms": 10 * 3600 * 1000}), protocol.StateRejected, "timeout_ms"},
		{"too big", topics.HostCmd(host), cmdJSON("r9", "block", "", map[string]any{"pad": strings.Repeat("x", 1<<17)}), protocol.StateRejected, "max_payload_bytes"},
		{"signed but unknown key", topics.HostCmd(host), []byte(`{"signed":"` + b64(cmdJSON("r10", "block", "host:h1", nil)) + `","kid":"x","sig":"AAAA"}`), protocol.StateRejected, "unknown key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var env struct{ ID string }
			_ = json.Unmarshal(c.payload, &env)
			if env.ID == "" {
				env.ID = "r10"
			}
			f.submit(c.topic, c.payload)
			r := f.waitFinal(env.ID)
			if r.State != c.state || !strings.Contains(r.Error, c.err) {
				t.Fatalf("got %s %q, want %s containing %q", r.State, r.Error, c.state, c.err)
			}
		})
	}
	if n := f.h.runs.Load(); n != 0 {
		t.Fatalf("handler ran %d times for rejected commands", n)
	}
}

func b64(b []byte) string {
	s := security.Sign(b, "k", ed25519.NewKeyFromSeed(make([]byte, 32)))
	return s.Signed
}

func TestFilterAndMalformedAreSilent(t *testing.T) {
	f := newFixture(t, nil)
	f.submit(topics.AllCmd(), cmdJSON("f1", "block", "all", map[string]any{"filter": map[string]any{"os": "windows"}}))
	f.submit(topics.GroupCmd("web"), cmdJSON("f2", "nope", "", map[string]any{"filter": map[string]any{"facts": map[string]string{"env": "dev"}}}))
	f.submit(topics.HostCmd(host), []byte(`{"v":1,"kind":"block"`))
	f.submit(topics.HostCmd(host), []byte(`{"id":"a/b"}`))
	f.submit(topics.GroupCmd("db"), cmdJSON("f3", "block", "", nil)) // not our group
	// A valid command after them proves they were all processed.
	f.submit(topics.HostCmd(host), cmdJSON("ok", "nope", "", nil))
	f.waitFinal("ok")
	for _, id := range []string{"f1", "f2", "f3"} {
		if rs := f.results(id); len(rs) != 0 {
			t.Fatalf("%s: got results %v, want none", id, rs)
		}
	}
	malformed := 0
	for _, a := range f.audits() {
		if a.Decision == protocol.DecisionMalformed {
			malformed++
		}
		if a.Decision == protocol.DecisionIgnored {
			t.Fatalf("ignored command published an audit record: %+v", a)
		}
	}
	if malformed != 2 {
		t.Fatalf("malformed audit records = %d, want 2", malformed)
	}
	if got := f.d.Stats().Malformed; got != 2 {
		t.Fatalf("malformed count = %d", got)
	}
	f.waitAcks(6)
}

func TestFilterMatchRuns(t *testing.T) {
	f := newFixture(t, nil)
	f.submit(topics.GroupCmd("web"), cmdJSON("g1", "block", "group:web", map[string]any{"filter": map[string]any{"os": "linux", "groups": []string{"db", "web"}, "facts": map[string]string{"env": "prod"}, "hosts": []string{"h0", "h1"}}}))
	f.waitStarted("g1")
	close(f.h.release)
	if r := f.waitFinal("g1"); r.State != protocol.StateSucceeded {
		t.Fatalf("state %s", r.State)
	}
}

func TestDuplicateNeverRunsTwice(t *testing.T) {
	f := newFixture(t, nil)
	close(f.h.release)
	p := cmdJSON("d1", "block", "", nil)
	f.submit(topics.HostCmd(host), p)
	first := f.waitFinal("d1")
	f.submit(topics.HostCmd(host), p)
	f.waitAcks(2)
	// After a restart too.
	f.restart(nil)
	f.submit(topics.HostCmd(host), p)
	f.submit(topics.HostCmd(host), cmdJSON("d2", "nope", "", nil))
	f.waitFinal("d2")
	fs := finals(f.results("d1"))
	if len(fs) != 3 {
		t.Fatalf("final results for d1 = %d, want 3 (one per receipt): %+v %+v", len(fs), f.results("d1"), f.audits())
	}
	for _, r := range fs {
		if r.State != first.State || r.TS != first.TS {
			t.Fatalf("duplicate got a different final result: %+v vs %+v", r, first)
		}
	}
	if n := f.h.runs.Load(); n != 1 {
		t.Fatalf("ran %d times", n)
	}
}

func TestConcurrencyAndQueueLimit(t *testing.T) {
	f := newFixture(t, nil) // 2 workers, queue 3
	for i := range 2 {
		id := fmt.Sprintf("c%d", i)
		f.submit(topics.HostCmd(host), cmdJSON(id, "block", "", nil))
	}
	<-f.h.started
	<-f.h.started
	for i := 2; i < 5; i++ {
		f.submit(topics.HostCmd(host), cmdJSON(fmt.Sprintf("c%d", i), "block", "", nil))
	}
	f.submit(topics.HostCmd(host), cmdJSON("c5", "block", "", nil))
	if r := f.waitFinal("c5"); r.State != protocol.StateRejected || r.Error != "queue full" {
		t.Fatalf("c5: %s %q, want rejected queue full", r.State, r.Error)
	}
	st := f.d.Stats()
	if st.Running != 2 || st.Queued != 3 {
		t.Fatalf("stats %+v, want 2 running 3 queued", st)
	}
	close(f.h.release)
	for i := range 5 {
		if r := f.waitFinal(fmt.Sprintf("c%d", i)); r.State != protocol.StateSucceeded {
			t.Fatalf("c%d: %s", i, r.State)
		}
	}
	if p := f.h.peak.Load(); p != 2 {
		t.Fatalf("peak concurrency %d, want 2", p)
	}
}

func TestCancel(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.MaxConcurrent = 1 })
	f.submit(topics.HostCmd(host), cmdJSON("run", "block", "", nil))
	f.waitStarted("run")
	f.submit(topics.HostCmd(host), cmdJSON("wait", "block", "", nil))
	f.submit(topics.HostCmd(host), cmdJSON("x1", "cancel", "", map[string]any{"args": map[string]string{"id": "wait"}}))
	if r := f.waitFinal("wait"); r.State != protocol.StateCanceled {
		t.Fatalf("queued command: %s", r.State)
	}
	f.submit(topics.HostCmd(host), cmdJSON("x2", "cancel", "", map[string]any{"args": map[string]string{"id": "run"}}))
	if r := f.waitFinal("run"); r.State != protocol.StateCanceled {
		t.Fatalf("running command: %s", r.State)
	}
	for _, id := range []string{"x1", "x2"} {
		if r := f.waitFinal(id); r.State != protocol.StateSucceeded || string(r.Data) != `{"canceled":true}` {
			t.Fatalf("%s: %s %s", id, r.State, r.Data)
		}
	}
	f.submit(topics.HostCmd(host), cmdJSON("x3", "cancel", "", map[string]any{"args": map[string]string{"id": "nothing"}}))
	if r := f.waitFinal("x3"); r.State != protocol.StateFailed || string(r.Data) != `{"canceled":false}` {
		t.Fatalf("x3: %s %s", r.State, r.Data)
	}
	if n := f.h.runs.Load(); n != 1 {
		t.Fatalf("runs %d, want 1 (the canceled queued command never starts)", n)
	}
}

func TestResultGet(t *testing.T) {
	f := newFixture(t, nil)
	close(f.h.release)
	f.submit(topics.HostCmd(host), cmdJSON("a", "block", "", nil))
	want := f.waitFinal("a")
	f.submit(topics.HostCmd(host), cmdJSON("g", "result.get", "", map[string]any{"args": map[string]string{"id": "a"}}))
	r := f.waitFinal("g")
	var got protocol.Result
	if err := json.Unmarshal(r.Data, &got); err != nil || got.State != want.State || got.ID != "a" {
		t.Fatalf("result.get: %s %s (%v)", r.State, r.Data, err)
	}
	f.submit(topics.HostCmd(host), cmdJSON("g2", "result.get", "", map[string]any{"args": map[string]string{"id": "zzz"}}))
	if r := f.waitFinal("g2"); r.State != protocol.StateFailed {
		t.Fatalf("unknown id: %s", r.State)
	}
}

func TestRestartInterruptsRunningAndRequeuesQueued(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.MaxConcurrent = 1 })
	f.submit(topics.HostCmd(host), cmdJSON("i1", "block", "", nil))
	f.waitStarted("i1")
	f.submit(topics.HostCmd(host), cmdJSON("q1", "block", "", nil))
	deadline := time.Now().Add(5 * time.Second)
	for f.d.Stats().Queued != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// A graceful stop interrupts i1 after the grace period and leaves q1
	// queued on disk.
	f.stop()
	f.open(func(o *Options) { o.MaxConcurrent = 1 })
	if r := f.waitFinal("i1"); r.State != protocol.StateFailed || r.Error != protocol.ErrInterrupted {
		t.Fatalf("i1: %s %q", r.State, r.Error)
	}
	f.waitStarted("q1")
	close(f.h.release)
	if r := f.waitFinal("q1"); r.State != protocol.StateSucceeded {
		t.Fatalf("q1: %s", r.State)
	}
	if n := f.h.runs.Load(); n != 2 {
		t.Fatalf("runs %d, want 2", n)
	}
}

func TestCrashRecoveryReportsInterrupted(t *testing.T) {
	f := newFixture(t, nil)
	f.stop()
	// Simulate a crash: the journal says running, nothing finished it.
	store, err := state.Open(filepath.Join(f.dir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := state.Entry{ID: "z1", State: protocol.StateQueued, Kind: "block", Received: time.Now(), KeepUntil: time.Now().Add(time.Hour), Payload: cmdJSON("z1", "block", "", nil)}
	if _, _, err := store.Admit(e); err != nil {
		t.Fatal(err)
	}
	if err := store.SetRunning("z1", nil); err != nil {
		t.Fatal(err)
	}
	store.Close()
	f.open(nil)
	if r := f.waitFinal("z1"); r.State != protocol.StateFailed || r.Error != protocol.ErrInterrupted {
		t.Fatalf("z1: %s %q", r.State, r.Error)
	}
	// A redelivery of the same id after the crash is not run.
	f.submit(topics.HostCmd(host), cmdJSON("z1", "block", "", nil))
	f.submit(topics.HostCmd(host), cmdJSON("z2", "nope", "", nil))
	f.waitFinal("z2")
	if n := f.h.runs.Load(); n != 0 {
		t.Fatalf("interrupted command ran again (%d)", n)
	}
}

func TestTimeout(t *testing.T) {
	f := newFixture(t, nil)
	f.submit(topics.HostCmd(host), cmdJSON("t1", "block", "", map[string]any{"timeout_ms": 50}))
	if r := f.waitFinal("t1"); r.State != protocol.StateTimedOut {
		t.Fatalf("t1: %s", r.State)
	}
}

func TestPartialRune(t *testing.T) {
	euro := []byte("€") // 3 bytes
	cases := []struct {
		in   []byte
		want int
	}{
		{nil, 0}, {[]byte("abc"), 0}, {euro, 0}, {euro[:1], 1}, {euro[:2], 2},
		{append([]byte("a"), euro[:2]...), 2}, {[]byte("é")[:1], 1}, {[]byte{0xff}, 0}, {[]byte{0x80, 0x80, 0x80}, 0},
		{[]byte("😀")[:3], 3},
	}
	for _, c := range cases {
		if got := partialRune(c.in); got != c.want {
			t.Errorf("partialRune(%x) = %d, want %d", c.in, got, c.want)
		}
	}
}
