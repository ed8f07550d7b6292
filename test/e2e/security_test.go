package e2e

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"debug/buildinfo"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/integration/harness"
)

// The keys of the security tests. Fixed seeds, so a failure reproduces.
var (
	secOps  = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x0a}, ed25519.SeedSize)) // trusted, every kind
	secRO   = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x0b}, ed25519.SeedSize)) // trusted, ping only
	secEve  = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x0c}, ed25519.SeedSize)) // trusted by nobody
	secOps2 = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x0d}, ed25519.SeedSize)) // the rotated-in key
)

// trustedKey is one security.trusted_keys entry.
func trustedKey(id string, key ed25519.PrivateKey, kinds ...string) map[string]any {
	if len(kinds) == 0 {
		kinds = []string{"*"}
	}
	return map[string]any{"id": id, "public_key": base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)), "kinds": kinds}
}

// withSecurity turns on require_signed with the given trusted keys and
// host allow-list (nil: every kind).
func withSecurity(allowed []string, keys ...map[string]any) func(map[string]any) {
	return func(c map[string]any) {
		s := section(c, "security")
		s["require_signed"] = true
		s["trusted_keys"] = keys
		if allowed != nil {
			s["allowed_kinds"] = allowed
		}
	}
}

// secSign fills in cmd (v, id, issued_at) and returns its id and the
// signed wrapper made with key under kid: the exact bytes to publish.
func secSign(cmd protocol.Command, kid string, key ed25519.PrivateKey) (string, []byte) {
	b := secMarshal(&cmd)
	return cmd.ID, harness.Sign(b, kid, key)
}

// secMarshal fills in cmd and returns its JSON.
func secMarshal(cmd *protocol.Command) []byte {
	harness.Fill(cmd)
	b, _ := json.Marshal(cmd) // our own types cannot fail to marshal
	return b
}

// touch is an exec command for target that creates path.
func touch(target, path string) protocol.Command {
	args, _ := json.Marshal(protocol.ExecArgs{Argv: []string{"touch", path}})
	return protocol.Command{Kind: protocol.KindExec, Target: target, Args: args}
}

// rewrap returns a signed wrapper with its fields changed by edit.
func rewrap(t *testing.T, payload []byte, edit func(w *protocol.Signed)) []byte {
	t.Helper()
	var w protocol.Signed
	if err := json.Unmarshal(payload, &w); err != nil {
		t.Fatal(err)
	}
	edit(&w)
	b, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// flipB64 flips the lowest bit of byte i of the data s encodes (i < 0
// counts from the end).
func flipB64(t *testing.T, s string, i int) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	if i < 0 {
		i += len(b)
	}
	b[i] ^= 0x01
	return base64.StdEncoding.EncodeToString(b)
}

// expectRefused waits for the final result of id from each host and checks
// its state and error, and the host's "received" audit record with its
// decision and reason.
func (e *env) expectRefused(t *testing.T, id string, hosts []string, state, decision, reason string) {
	t.Helper()
	for _, h := range hosts {
		r := e.op.WaitFinal(t, id, h, wait)
		if r.State != state || !strings.Contains(r.Error, reason) {
			t.Fatalf("%s on %s: state %s, error %q; want %s with %q", id, h, r.State, r.Error, state, reason)
		}
		a := e.op.WaitAudit(t, h, func(a protocol.Audit) bool {
			return a.ID == id && a.Event == protocol.EventReceived && a.Decision != protocol.DecisionDuplicate
		}, wait)
		if a.Decision != decision || !strings.Contains(a.Reason, reason) {
			t.Fatalf("%s on %s: audit decision %q reason %q; want %q with %q", id, h, a.Decision, a.Reason, decision, reason)
		}
	}
}

// TestSecurityRejections: with require_signed, nothing runs that a trusted
// key did not sign for this host, this kind and this time, and every
// refusal is answered and audited with its reason.
func TestSecurityRejections(t *testing.T) {
	e := newEnv(t, false)
	allowed := []string{"ping", "exec", "shell", "cancel", "result.get"} // not script
	sec := withSecurity(allowed, trustedKey("ops", secOps), trustedKey("ro", secRO, "ping"))
	e.agent("sec-a", withGroups("web"), sec)
	e.agent("sec-b", withGroups("web"), sec)
	dir := t.TempDir()
	topics := e.op.Topics()
	topicA := topics.HostCmd("sec-a")
	both := []string{"sec-a", "sec-b"}

	var markers []string
	marker := func(name string) string {
		p := filepath.Join(dir, name)
		markers = append(markers, p)
		return p
	}
	// sendRaw publishes payload on topic, tracking id first.
	sendRaw := func(id, topic string, payload []byte) {
		e.op.Track(id)
		e.op.SendRaw(topic, payload)
	}
	signedTouch := func(name string) (string, []byte) {
		return secSign(touch("host:sec-a", marker(name)), "ops", secOps)
	}

	type refusal struct {
		name     string
		id       string
		topic    string
		payload  []byte
		hosts    []string
		state    string
		decision string
		reason   string
	}
	var cases []refusal
	add := func(name, id, topic string, payload []byte, hosts []string, reason string) {
		cases = append(cases, refusal{name, id, topic, payload, hosts, protocol.StateRejected, protocol.DecisionRejected, reason})
	}

	// Unsigned.
	{
		c := touch("host:sec-a", marker("unsigned"))
		b := secMarshal(&c)
		add("unsigned", c.ID, topicA, b, []string{"sec-a"}, "unsigned command")
	}
	// Signed by an untrusted key under a trusted kid.
	{
		id, p := secSign(touch("host:sec-a", marker("forged")), "ops", secEve)
		add("untrusted key under kid ops", id, topicA, p, []string{"sec-a"}, `bad signature (key "ops")`)
	}
	// Unknown kid.
	{
		id, p := secSign(touch("host:sec-a", marker("unknown-kid")), "eve", secEve)
		add("unknown kid", id, topicA, p, []string{"sec-a"}, `unknown key "eve"`)
	}
	// ro may sign ping only.
	{
		id, p := secSign(shell("host:sec-a", "touch "+marker("ro-shell")), "ro", secRO)
		add("ro signs shell", id, topicA, p, []string{"sec-a"}, `key "ro" may not sign "shell"`)
	}
	// script is not in the host's allowed_kinds.
	{
		args, _ := json.Marshal(protocol.ScriptArgs{Content: "touch " + marker("script")})
		id, p := secSign(protocol.Command{Kind: protocol.KindScript, Target: "host:sec-a", Args: args}, "ops", secOps)
		add("kind not in allowed_kinds", id, topicA, p, []string{"sec-a"}, `"script" is not in security.allowed_kinds`)
	}
	// Target mismatch: signed for sec-a, republished elsewhere.
	for _, tc := range []struct {
		name, topic string
		hosts       []string
	}{
		{"on B's topic", topics.HostCmd("sec-b"), []string{"sec-b"}},
		{"on the broadcast topic", topics.AllCmd(), both},
		{"on a group topic", topics.GroupCmd("web"), both},
	} {
		id, p := signedTouch("mismatch-" + strings.ReplaceAll(tc.name, " ", "-"))
		add("signed for A, "+tc.name, id, tc.topic, p, tc.hosts, `target mismatch: command for "host:sec-a"`)
	}
	// Expired before it arrived.
	{
		c := touch("host:sec-a", marker("expired"))
		c.IssuedAt = protocol.Time{Time: time.Now().Add(-2 * time.Hour).UTC()}
		c.ExpiresAt = &protocol.Time{Time: time.Now().Add(-time.Hour).UTC()}
		id, p := secSign(c, "ops", secOps)
		cases = append(cases, refusal{"expired", id, topicA, p, []string{"sec-a"}, protocol.StateExpired, protocol.DecisionExpired, "expired"})
	}
	// Issued beyond max_clock_skew (5m) in the future.
	{
		c := touch("host:sec-a", marker("future"))
		c.IssuedAt = protocol.Time{Time: time.Now().Add(10 * time.Minute).UTC()}
		id, p := secSign(c, "ops", secOps)
		add("issued in the future", id, topicA, p, []string{"sec-a"}, "in the future (more than security.max_clock_skew")
	}
	// One byte of the signed command changed: the last byte of the marker
	// path, so the id stays readable and the command would touch another
	// file.
	{
		path := marker("tampered")
		c := touch("host:sec-a", path)
		inner := secMarshal(&c)
		p := harness.Sign(inner, "ops", secOps)
		at := bytes.LastIndex(inner, []byte(path)) + len(path) - 1
		markers = append(markers, path[:len(path)-1]+string(path[len(path)-1]^0x01))
		p = rewrap(t, p, func(w *protocol.Signed) { w.Signed = flipB64(t, w.Signed, at) })
		add("tampered signed byte", c.ID, topicA, p, []string{"sec-a"}, "bad signature")
	}
	// One byte of the signature changed.
	{
		id, p := signedTouch("tampered-sig")
		p = rewrap(t, p, func(w *protocol.Signed) { w.Sig = flipB64(t, w.Sig, 10) })
		add("tampered signature", id, topicA, p, []string{"sec-a"}, "bad signature")
	}
	// The wrapper is not signed: a second kid added on the way.
	{
		id, p := signedTouch("wrapper-dup-kid")
		p = append(bytes.TrimSuffix(p, []byte("}")), []byte(`,"kid":"ops"}`)...)
		p = bytes.Replace(p, []byte(`"kid":"ops"`), []byte(`"kid":"eve"`), 1)
		add("wrapper with a second kid", id, topicA, p, []string{"sec-a"}, "kid: duplicate key in the signed wrapper")
	}
	// A signed command with two kinds: never run, whichever an operator
	// tool would have shown.
	{
		c := touch("host:sec-a", marker("dup-kind"))
		inner := secMarshal(&c)
		inner = bytes.Replace(inner, []byte(`"kind":"exec"`), []byte(`"kind":"ping","kind":"exec"`), 1)
		add("signed command with two kinds", c.ID, topicA, harness.Sign(inner, "ops", secOps), []string{"sec-a"}, "kind: duplicate key")
	}

	for _, c := range cases {
		sendRaw(c.id, c.topic, c.payload)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.expectRefused(t, c.id, c.hosts, c.state, c.decision, c.reason)
		})
	}

	// Replay: the first delivery runs once; the exact same bytes again are
	// a duplicate: the stored final result is published again, nothing
	// runs.
	counter := filepath.Join(dir, "counter")
	args, _ := json.Marshal(protocol.ExecArgs{Argv: []string{"sh", "-c", "echo run >> " + counter}})
	id, p := secSign(protocol.Command{Kind: protocol.KindExec, Target: "host:sec-a", Args: args}, "ops", secOps)
	sendRaw(id, topicA, p)
	first := e.op.WaitFinal(t, id, "sec-a", wait)
	expectState(t, first, protocol.StateSucceeded)
	e.op.SendRaw(topicA, p)
	dup := e.op.WaitAudit(t, "sec-a", func(a protocol.Audit) bool {
		return a.ID == id && a.Decision == protocol.DecisionDuplicate
	}, wait)
	if dup.Event != protocol.EventReceived || !strings.Contains(dup.Reason, "already seen") {
		t.Errorf("duplicate audit: %+v", dup)
	}
	secEventually(t, "the stored final result re-published", func() bool { return len(finalsOf(e.op.Results(id))) >= 2 })
	for _, r := range finalsOf(e.op.Results(id)) {
		if r.State != protocol.StateSucceeded || r.FinishedAt == nil || first.FinishedAt == nil || !r.FinishedAt.Equal(first.FinishedAt.Time) {
			t.Errorf("re-published result %+v differs from the first %+v", r, first)
		}
	}

	// Positive controls: a signed command that touches a file runs on
	// both hosts, after every refused one was handled (one intake per
	// host, in order): the refused ones did not run, and cannot later.
	for _, h := range both {
		ctl := filepath.Join(dir, "control-"+h)
		id, p := secSign(touch("host:"+h, ctl), "ops", secOps)
		sendRaw(id, topics.HostCmd(h), p)
		expectState(t, e.op.WaitFinal(t, id, h, wait), protocol.StateSucceeded)
		if _, err := os.Stat(ctl); err != nil {
			t.Fatalf("control command on %s did not run: %v", h, err)
		}
	}
	if got := readLines(t, counter); len(got) != 1 {
		t.Errorf("replayed command ran %d times, want 1", len(got))
	}
	for _, m := range markers {
		if _, err := os.Stat(m); !os.IsNotExist(err) {
			t.Errorf("a refused command ran: %s exists (%v)", m, err)
		}
	}
}

// TestSecurityKeyRotation: two keys trusted at once both work; once the
// config drops one, its signatures are refused.
func TestSecurityKeyRotation(t *testing.T) {
	e := newEnv(t, false)
	a := e.agent("rot-1", withSecurity(nil, trustedKey("ops", secOps), trustedKey("ops2", secOps2)))
	dir := t.TempDir()
	topic := e.op.Topics().HostCmd("rot-1")
	run := func(kid string, key ed25519.PrivateKey, name string) protocol.Result {
		t.Helper()
		id, p := secSign(touch("host:rot-1", filepath.Join(dir, name)), kid, key)
		e.op.Track(id)
		e.op.SendRaw(topic, p)
		return e.op.WaitFinal(t, id, "rot-1", wait)
	}
	expectState(t, run("ops", secOps, "ops-before"), protocol.StateSucceeded)
	expectState(t, run("ops2", secOps2, "ops2-before"), protocol.StateSucceeded)
	// An ops-signed command made before the rotation, delivered after it.
	oldID, old := secSign(touch("host:rot-1", filepath.Join(dir, "ops-signed-before")), "ops", secOps)

	a.WriteConfig(e.config("rot-1", withSecurity(nil, trustedKey("ops2", secOps2)), func(c map[string]any) { c["data_dir"] = a.DataDir() }))
	if code := a.Restart(); code != 0 {
		t.Fatalf("agent stop exit code %d", code)
	}
	e.waitOnline(a)

	r := run("ops", secOps, "ops-after")
	expectState(t, r, protocol.StateRejected)
	if !strings.Contains(r.Error, `unknown key "ops"`) {
		t.Fatalf("ops after rotation: error %q", r.Error)
	}
	e.op.Track(oldID)
	e.op.SendRaw(topic, old)
	e.expectRefused(t, oldID, []string{"rot-1"}, protocol.StateRejected, protocol.DecisionRejected, `unknown key "ops"`)
	expectState(t, run("ops2", secOps2, "ops2-after"), protocol.StateSucceeded)
	for name, want := range map[string]bool{"ops-before": true, "ops2-before": true, "ops-after": false, "ops-signed-before": false, "ops2-after": true} {
		_, err := os.Stat(filepath.Join(dir, name))
		if got := err == nil; got != want {
			t.Errorf("%s exists: %v, want %v", name, got, want)
		}
	}
}

// TestSecurityFlood: 10,000 invalid commands (bad signature, malformed
// JSON, unknown kid) published as fast as the operator can, with a valid
// signed ping every 500: every ping succeeds, the agent answers promptly
// afterwards, and its memory stays bounded (the intake holds 64 messages
// and applies backpressure to the broker; nothing is buffered per message).
//
// MQAGENT_FLOOD_N changes the number of invalid commands, to look for the
// point where the agent stops coping.
func TestSecurityFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("flood test skipped in -short mode")
	}
	e := newEnv(t, false)
	a := e.agent("flood-1", withSecurity(nil, trustedKey("ops", secOps)))
	topic := e.op.Topics().HostCmd("flood-1")
	race := agentRace(t, e.bin)
	invalid := 10000
	if race {
		invalid = 5000 // a -race agent handles ~250 invalid messages/s, not ~1,000
	}
	if n, err := strconv.Atoi(os.Getenv("MQAGENT_FLOOD_N")); err == nil && n > 0 {
		invalid = n
	}
	const every = 500
	// Bound on the publish loop (it takes well under a second for 10,000).
	maxFlood := 20*time.Second + time.Duration(invalid)*time.Millisecond

	// Build every payload first, so the loop only publishes.
	var payloads [][]byte
	var pings []string
	for i := range invalid {
		if i%every == 0 {
			id, p := secSign(kind("host:flood-1", protocol.KindPing, nil), "ops", secOps)
			pings = append(pings, id)
			payloads = append(payloads, p)
		}
		switch i % 3 {
		case 0:
			_, p := secSign(kind("host:flood-1", protocol.KindExec, protocol.ExecArgs{Argv: []string{"true"}}), "ops", secEve)
			payloads = append(payloads, p)
		case 1:
			payloads = append(payloads, []byte(`{"v":1,"id":"m-`+strconv.Itoa(i)+`","kind":`))
		case 2:
			_, p := secSign(kind("host:flood-1", protocol.KindPing, nil), "k"+strconv.Itoa(i%50), secEve)
			payloads = append(payloads, p)
		}
	}
	for _, id := range pings {
		e.op.Track(id)
	}

	idle := rssKiB(t, a.PID())
	stop := make(chan struct{})
	var peak rss // written by the sampler until stopSampler returns
	var wg sync.WaitGroup
	stopSampler := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopSampler()
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			peak = peak.max(rssKiB(t, a.PID()))
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})

	start := time.Now()
	c := e.op.Client()
	toks := make([]mqtt.Token, 0, len(payloads))
	for _, p := range payloads {
		if time.Since(start) > maxFlood {
			t.Fatalf("published only %d of %d messages in %v", len(toks), len(payloads), maxFlood)
		}
		toks = append(toks, c.Publish(topic, 1, false, p))
	}
	deadline := start.Add(maxFlood + 10*time.Second)
	for i, tok := range toks {
		if !tok.WaitTimeout(time.Until(deadline)) || tok.Error() != nil {
			t.Fatalf("publish %d: no PUBACK by the deadline (%v)", i, tok.Error())
		}
	}
	published := time.Since(start)

	// Every valid ping is answered. The last one follows every invalid
	// message but the last 500, so its answer bounds the agent's time.
	for _, id := range pings {
		expectState(t, e.op.WaitFinal(t, id, "flood-1", 60*time.Second), protocol.StateSucceeded)
	}
	handled := time.Since(start)
	// Every invalid message is in the local audit log (its copy on the
	// audit topic may be dropped when the outbox is full: unauthenticated
	// messages must not crowd out real results).
	n := func() int {
		b, err := os.ReadFile(filepath.Join(a.DataDir(), "audit.log"))
		if err != nil {
			return 0
		}
		return strings.Count(string(b), `"decision":"rejected"`) + strings.Count(string(b), `"decision":"malformed"`)
	}
	secEventually(t, "every invalid message audited", func() bool { return n() >= invalid })
	drained := time.Since(start)

	// Still responsive.
	t0 := time.Now()
	id, p := secSign(kind("host:flood-1", protocol.KindPing, nil), "ops", secOps)
	e.op.Track(id)
	e.op.SendRaw(topic, p)
	expectState(t, e.op.WaitFinal(t, id, "flood-1", wait), protocol.StateSucceeded)
	rtt := time.Since(t0)
	stopSampler()
	after := rssKiB(t, a.PID())

	// Bounds. Total 64 MiB: an idle agent is ~12 MiB (Go runtime, the
	// binary, bbolt's mmap of state.db); the flood adds the 64-message
	// intake (small messages here), paho's buffers, the heap of handling
	// one message at a time, and the file pages of the outbox backlog (the
	// results and audit records of the rejections, ~17,000 small messages
	// mapped by bbolt: reclaimable, ~14 MiB measured). Anonymous memory
	// (heap, stacks) 32 MiB: it does not grow with the flood (~8 MiB
	// measured after 5,000 and after 10,000), so a leak of 2.5 KiB per
	// message, or buffering the flood, would break it. A -race agent
	// carries the race detector's shadow memory: 4x.
	bound, anonBound := 64<<10, 32<<10
	if race {
		bound, anonBound = 4*bound, 4*anonBound
	}
	t.Logf("flood: %d invalid + %d valid messages published in %v (%.0f msg/s); every ping answered after %v; every invalid message audited after %v; ping afterwards %v",
		invalid, len(pings), published.Round(time.Millisecond), float64(len(payloads))/published.Seconds(), handled.Round(time.Millisecond), drained.Round(time.Millisecond), rtt.Round(time.Millisecond))
	t.Logf("agent RSS KiB (total/anon/file): idle %v, peak %v, after %v; bounds %d KiB total, %d KiB anon (race agent %v)", idle, peak, after, bound, anonBound, race)
	if peak.total > bound {
		t.Errorf("agent RSS peaked at %d KiB, over the %d KiB bound", peak.total, bound)
	}
	if peak.anon > anonBound {
		t.Errorf("agent anonymous memory peaked at %d KiB, over the %d KiB bound", peak.anon, anonBound)
	}
	if rtt > 2*time.Second {
		t.Errorf("ping after the flood took %v", rtt)
	}
}

// rss is a process's resident memory in KiB: the total (VmRSS), anonymous
// memory (RssAnon: heap, stacks) and file pages (RssFile: the binary,
// bbolt's mmap).
type rss struct{ total, anon, file int }

func (r rss) String() string { return fmt.Sprintf("%d/%d/%d", r.total, r.anon, r.file) }

// max is the field-wise maximum of r and o.
func (r rss) max(o rss) rss {
	return rss{max(r.total, o.total), max(r.anon, o.anon), max(r.file, o.file)}
}

// rssKiB reads the resident memory of process pid from /proc; elsewhere
// than on Linux it is zero.
func rssKiB(t *testing.T, pid int) rss {
	t.Helper()
	if runtime.GOOS != "linux" {
		return rss{}
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Errorf("agent status: %v", err)
		return rss{}
	}
	defer f.Close()
	var r rss
	fields := map[string]*int{"VmRSS:": &r.total, "RssAnon:": &r.anon, "RssFile:": &r.file}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), "\t")
		if p := fields[name]; ok && p != nil {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Errorf("%s %q: %v", name, v, err)
			}
			*p = kb
		}
	}
	if r.total == 0 {
		t.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return r
}

// agentRace reports whether the agent binary was built with -race.
func agentRace(t *testing.T, bin string) bool {
	t.Helper()
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatalf("agent build info: %v", err)
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// secEventually polls cond until it holds, failing the test after wait.
func secEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", wait, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
