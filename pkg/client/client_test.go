package client_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/mqagent/mqagent/pkg/broker"
	"github.com/mqagent/mqagent/pkg/client"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/security"
)

// waitTimeout bounds every wait in these tests.
const waitTimeout = 10 * time.Second

func TestMain(m *testing.M) {
	// paho's Disconnect leaves a goroutine that waits out its quiesce time.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/eclipse/paho.mqtt.golang.(*client).Disconnect.func1"))
}

var topics = protocol.Topics{Prefix: protocol.DefaultPrefix}

// aclLog records, in order, the subscriptions and publishes the broker
// checked for one client id.
type aclLog struct {
	id     string
	mu     sync.Mutex
	events []string // "sub <filter>" or "pub <topic>"
}

func (a *aclLog) Authenticate(broker.ClientInfo, []byte) bool { return true }

func (a *aclLog) Allow(c broker.ClientInfo, topic string, write bool) bool {
	if c.ID != a.id {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if write {
		a.events = append(a.events, "pub "+topic)
	} else if strings.Contains(topic, "+") || strings.Contains(topic, "#") {
		a.events = append(a.events, "sub "+topic)
	}
	return true
}

func (a *aclLog) list() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.events)
}

func startBroker(t *testing.T, auth broker.Authorizer) string {
	t.Helper()
	b, err := broker.New(broker.Options{TCPAddr: "127.0.0.1:0", Authorizer: auth})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return "tcp://" + b.TCPAddr()
}

func dial(t *testing.T, url, id string) *client.Client {
	t.Helper()
	c, err := client.Dial(client.Options{URL: url, ClientID: id, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func rawClient(t *testing.T, url, id string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	waitTok(t, "connect "+id, c.Connect())
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

func waitTok(t *testing.T, what string, tok paho.Token) {
	t.Helper()
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("%s: timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// fakeAgent subscribes to host's command topic; for each command it
// publishes chunks output chunks and then a final succeeded result, and
// hands the raw payload to the test.
func fakeAgent(t *testing.T, url, host string, chunks int) <-chan []byte {
	t.Helper()
	got := make(chan []byte, 16)
	c := rawClient(t, url, "agent-"+host)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // runs after the Disconnect registered by rawClient
	waitTok(t, "agent subscribe", c.Subscribe(topics.HostCmd(host), 1, func(c paho.Client, m paho.Message) {
		payload := slices.Clone(m.Payload())
		got <- payload
		wg.Go(func() {
			env, err := protocol.Decode(payload)
			if err != nil {
				t.Errorf("agent: undecodable command %q: %v", payload, err)
				return
			}
			for i := range chunks {
				ch := protocol.Chunk{V: 1, ID: env.ID, Host: host, Seq: uint64(i), Stream: "stdout", Data: fmt.Sprintf("line %d\n", i)}
				b, _ := json.Marshal(ch)
				c.Publish(topics.Output(host, env.ID), 1, false, b)
			}
			code := 0
			r := protocol.Result{V: 1, ID: env.ID, Host: host, Kind: env.Kind, State: protocol.StateSucceeded, ExitCode: &code, Stdout: "done", TS: protocol.Now()}
			b, _ := json.Marshal(r)
			c.Publish(topics.Result(host, env.ID), 1, false, b).WaitTimeout(waitTimeout)
		})
	}))
	return got
}

// closed cancels a Send and waits until its channel is closed, so that
// nothing of it outlives the test (its Unsubscribe included).
func closed(t *testing.T, cancel context.CancelFunc, events <-chan client.Event) {
	t.Helper()
	cancel()
	deadline := time.After(waitTimeout)
	for {
		select {
		case _, ok := <-events:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("events not closed after ctx ended")
		}
	}
}

func TestNewID(t *testing.T) {
	const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	const n = 10000
	seen := make(map[string]bool, n)
	before := time.Now().UnixMilli()
	prev := ""
	for range n {
		id := client.NewID()
		if len(id) != 26 {
			t.Fatalf("id %q has %d characters, want 26", id, len(id))
		}
		for _, c := range id {
			if !strings.ContainsRune(crockford, c) {
				t.Fatalf("id %q has %q, not Crockford base32", id, c)
			}
		}
		if !protocol.ValidID(id) {
			t.Fatalf("id %q is not a valid command id", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
		// The first 10 characters are the 48-bit millisecond time: they
		// never go backwards.
		if prev != "" && id[:10] < prev[:10] {
			t.Fatalf("time part went backwards: %q after %q", id, prev)
		}
		prev = id
	}
	after := time.Now().UnixMilli()
	ms := decodeTime(t, client.NewID()[:10])
	if ms < before || ms > after+1000 {
		t.Fatalf("time part decodes to %d, want within [%d, %d]", ms, before, after)
	}
	// Ids from a later millisecond sort after earlier ones.
	first := client.NewID()
	deadline := time.Now().Add(waitTimeout)
	for {
		later := client.NewID()
		if later[:10] != first[:10] {
			if later <= first {
				t.Fatalf("%q from a later millisecond sorts before %q", later, first)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the clock did not move")
		}
	}
}

func decodeTime(t *testing.T, s string) int64 {
	t.Helper()
	const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	var v int64
	for _, c := range s {
		v = v<<5 | int64(strings.IndexRune(crockford, c))
	}
	return v
}

func TestDialDeadPortFailsFast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "tcp://" + ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	start := time.Now()
	c, err := client.Dial(client.Options{URL: url, Timeout: 5 * time.Second})
	if err == nil {
		c.Close()
		t.Fatal("Dial to a dead port succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Dial took %v to fail on a refused connection", d)
	}
	if !strings.Contains(err.Error(), url) {
		t.Errorf("error %q does not name %s", err, url)
	}
}

func TestSendSubscribesFirstAndDeliversEvents(t *testing.T) {
	acl := &aclLog{id: "op-test"}
	url := startBroker(t, acl)
	agentGot := fakeAgent(t, url, "h1", 50)
	c := dial(t, url, "op-test")

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	events, err := c.Send(ctx, protocol.Command{Kind: protocol.KindPing, Target: "host:h1", Stream: true}, nil)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}

	var payload []byte
	select {
	case payload = <-agentGot:
	case <-time.After(waitTimeout):
		t.Fatal("the agent got no command")
	}
	var cmd protocol.Command
	if err := json.Unmarshal(payload, &cmd); err != nil {
		t.Fatalf("bare command %q: %v", payload, err)
	}
	if cmd.V != protocol.Version || !protocol.ValidID(cmd.ID) || len(cmd.ID) != 26 || cmd.Kind != protocol.KindPing ||
		cmd.Target != "host:h1" || cmd.IssuedAt.IsZero() || time.Since(cmd.IssuedAt.Time) > time.Minute {
		t.Fatalf("Send filled in %+v", cmd)
	}

	var seqs []uint64
	var final *protocol.Result
	for final == nil {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("events closed before the final result")
			}
			switch {
			case ev.Chunk != nil:
				if ev.Chunk.ID != cmd.ID {
					t.Fatalf("chunk of %q, want %q", ev.Chunk.ID, cmd.ID)
				}
				seqs = append(seqs, ev.Chunk.Seq)
			case ev.Result != nil:
				final = ev.Result
			default:
				t.Fatal("empty event")
			}
		case <-ctx.Done():
			t.Fatal("no final result")
		}
	}
	if final.ID != cmd.ID || final.Host != "h1" || final.State != protocol.StateSucceeded || final.Stdout != "done" {
		t.Fatalf("result %+v", final)
	}
	// The agent published the chunks before the result, on one
	// connection: the operator sees them in that order.
	want := make([]uint64, 50)
	for i := range want {
		want[i] = uint64(i)
	}
	if !slices.Equal(seqs, want) {
		t.Fatalf("chunk seqs before the result: %v, want 0..49 in order", seqs)
	}

	// The broker saw the results subscription before the command.
	ev := acl.list()
	sub := slices.Index(ev, "sub "+topics.ResultsFilter(cmd.ID))
	pub := slices.Index(ev, "pub "+topics.HostCmd("h1"))
	if sub < 0 || pub < 0 || sub > pub {
		t.Fatalf("broker saw %v: want the results subscription before the publish", ev)
	}

	// Ending ctx closes the channel.
	closed(t, cancel, events)
}

func TestSendSigned(t *testing.T) {
	url := startBroker(t, nil)
	agentGot := fakeAgent(t, url, "h2", 0)
	c := dial(t, url, "op-signed")
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	events, err := c.Send(ctx, protocol.Command{ID: "sig-1", Kind: protocol.KindExec, Args: json.RawMessage(`{"argv":["true"]}`), Target: "host:h2"},
		&client.Signer{Kid: "ops", Key: priv})
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	var payload []byte
	select {
	case payload = <-agentGot:
	case <-time.After(waitTimeout):
		t.Fatal("the agent got no command")
	}
	var w protocol.Signed
	if err := json.Unmarshal(payload, &w); err != nil || w.Signed == "" || w.Kid != "ops" || w.Sig == "" {
		t.Fatalf("payload %s is not a signed wrapper (%v)", payload, err)
	}
	env, err := protocol.Decode(payload)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	v, err := security.New(security.Policy{Keys: []security.Key{{ID: "ops", Public: pub}}, RequireSigned: true})
	if err != nil {
		t.Fatal(err)
	}
	kid, err := v.Verify(env)
	if err != nil || kid != "ops" {
		t.Fatalf("Verify = %q, %v; want ops, nil", kid, err)
	}
	cmd, err := env.Command(time.Hour)
	if err != nil {
		t.Fatalf("signed command does not validate: %v", err)
	}
	if cmd.ID != "sig-1" || cmd.Kind != protocol.KindExec || cmd.Target != "host:h2" {
		t.Fatalf("signed command %+v", cmd)
	}
	// Another key does not verify it.
	other, _, _ := ed25519.GenerateKey(nil)
	v2, _ := security.New(security.Policy{Keys: []security.Key{{ID: "ops", Public: other}}, RequireSigned: true})
	if _, err := v2.Verify(env); !errors.Is(err, security.ErrBadSignature) {
		t.Fatalf("Verify with another key = %v, want ErrBadSignature", err)
	}
	select {
	case ev := <-events:
		if ev.Result == nil || ev.Result.ID != "sig-1" {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(waitTimeout):
		t.Fatal("no result")
	}
	closed(t, cancel, events)
}

func TestSendTargets(t *testing.T) {
	url := startBroker(t, nil)
	c := dial(t, url, "op-targets")
	watcher := rawClient(t, url, "watcher")
	got := make(chan string, 8)
	waitTok(t, "watch", watcher.Subscribe(protocol.DefaultPrefix+"/+/+/cmd", 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() }))
	waitTok(t, "watch all", watcher.Subscribe(topics.AllCmd(), 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() }))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for target, topic := range map[string]string{
		"host:web-01": topics.HostCmd("web-01"),
		"group:web":   topics.GroupCmd("web"),
		"all":         topics.AllCmd(),
	} {
		sctx, scancel := context.WithCancel(ctx)
		events, err := c.Send(sctx, protocol.Command{Kind: protocol.KindPing, Target: target}, nil)
		if err != nil {
			scancel()
			t.Fatalf("Send to %s: %v", target, err)
		}
		defer closed(t, scancel, events)
		select {
		case tp := <-got:
			if tp != topic {
				t.Fatalf("target %s published on %s, want %s", target, tp, topic)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("target %s: nothing published", target)
		}
	}

	bad := []protocol.Command{
		{Kind: protocol.KindPing, Target: ""},
		{Kind: protocol.KindPing, Target: "host:"},
		{Kind: protocol.KindPing, Target: "host:Web"},
		{Kind: protocol.KindPing, Target: "host:a/b"},
		{Kind: protocol.KindPing, Target: "host:+"},
		{Kind: protocol.KindPing, Target: "group:#"},
		{Kind: protocol.KindPing, Target: "everyone"},
		{Kind: protocol.KindPing, Target: "host:web-01", ID: "a/b"},
		{Kind: protocol.KindPing, Target: "host:web-01", ID: "#"},
		{Kind: protocol.KindPing, Target: "host:web-01", ID: strings.Repeat("x", 65)},
	}
	for _, cmd := range bad {
		ev, err := c.Send(ctx, cmd, nil)
		if err == nil || ev != nil {
			t.Errorf("Send(target %q, id %q) = %v, %v; want an error", cmd.Target, cmd.ID, ev, err)
		}
	}
	// Nothing was published for the invalid ones.
	select {
	case tp := <-got:
		t.Fatalf("an invalid command was published on %s", tp)
	default:
	}
}

func TestStatuses(t *testing.T) {
	url := startBroker(t, nil)
	pubc := rawClient(t, url, "hosts")
	retain := func(host string, s any) {
		b, _ := json.Marshal(s)
		waitTok(t, "retain "+host, pubc.Publish(topics.Status(host), 1, true, b))
	}
	retain("web-01", protocol.Status{V: 1, Host: "web-01", State: protocol.StatusOnline, Session: 3, Version: "1.0", PID: 42, TS: protocol.Now()})
	retain("db-01", protocol.Status{V: 1, Host: "db-01", State: protocol.StatusOffline, Reason: protocol.ReasonShutdown, Session: 9, TS: protocol.Now()})
	waitTok(t, "garbage", pubc.Publish(topics.Status("junk"), 1, true, "not json"))
	waitTok(t, "no host", pubc.Publish(topics.Status("nohost"), 1, true, `{"v":1,"state":"online"}`))
	// Not a status topic.
	waitTok(t, "inventory", pubc.Publish(topics.Inventory("web-01"), 1, true, `{"v":1,"host":"inv"}`))

	c := dial(t, url, "op-status")
	st, err := c.Statuses(300 * time.Millisecond)
	if err != nil {
		t.Fatalf("Statuses: %v", err)
	}
	if len(st) != 2 {
		t.Fatalf("Statuses = %v, want web-01 and db-01", st)
	}
	if s := st["web-01"]; s.State != protocol.StatusOnline || s.Session != 3 || s.PID != 42 || s.Version != "1.0" {
		t.Errorf("web-01: %+v", s)
	}
	if s := st["db-01"]; s.State != protocol.StatusOffline || s.Reason != protocol.ReasonShutdown || s.Session != 9 {
		t.Errorf("db-01: %+v", s)
	}
}

// Statuses keeps no reference to its map after returning: statuses that
// arrive late (live updates) must not write into the caller's map.
func TestStatusesResultIsNotWrittenLater(t *testing.T) {
	url := startBroker(t, nil)
	pubc := rawClient(t, url, "flood")
	c := dial(t, url, "op-race")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			host := fmt.Sprintf("h-%d", i%50)
			b, _ := json.Marshal(protocol.Status{V: 1, Host: host, State: protocol.StatusOnline, Session: uint64(i)})
			pubc.Publish(topics.Status(host), 0, false, b).WaitTimeout(time.Second)
			time.Sleep(100 * time.Microsecond) // pace the flood: a steady stream, not a backlog
		}
	})
	defer func() { close(stop); wg.Wait() }()
	for range 20 {
		st, err := c.Statuses(5 * time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		// Read the map while late messages may still be dispatched.
		for range 200 {
			for h, s := range st {
				if s.Host != h {
					t.Fatalf("status of %s under %s", s.Host, h)
				}
			}
		}
	}
}
