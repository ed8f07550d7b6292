package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/rollout"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// behaviour is how a simulated host answers: after d, with state ("" =
// never).
type behaviour struct {
	d     time.Duration
	state string
}

type scheduled struct {
	at time.Time
	r  rollout.Result
}

// sim is a Backend over a virtual clock: Wait jumps the clock to the next
// result (or to until). Hosts run a command id once: a second send gets
// the stored final result again at once, as the agent does.
type sim struct {
	t        *testing.T
	now      time.Time
	hosts    map[string]behaviour
	queue    []scheduled
	sends    map[string]int
	runs     map[string]int       // executions (at most 1 per host)
	finals   map[string]string    // stored final state
	started  map[string]time.Time // first send
	running  int
	maxRun   int
	sendErr  error
	onSend   func(hosts []string)
	waitCall int
}

func newSim(t *testing.T, hosts map[string]behaviour) *sim {
	return &sim{t: t, now: t0, hosts: hosts, sends: map[string]int{}, runs: map[string]int{}, finals: map[string]string{}, started: map[string]time.Time{}}
}

func (s *sim) Now() time.Time { return s.now }

func (s *sim) Send(_ context.Context, hosts []string) error {
	if s.sendErr != nil {
		return s.sendErr
	}
	for _, h := range hosts {
		s.sends[h]++
		if st, ok := s.finals[h]; ok {
			s.queue = append(s.queue, scheduled{s.now, rollout.Result{Host: h, State: st}})
			continue
		}
		if s.runs[h] > 0 {
			continue // still running: the agent ignores the duplicate
		}
		s.runs[h]++
		s.started[h] = s.now
		s.running++
		s.maxRun = max(s.maxRun, s.running)
		b := s.hosts[h]
		if b.state != "" {
			s.queue = append(s.queue, scheduled{s.now.Add(b.d), rollout.Result{Host: h, State: b.state}})
		}
	}
	if s.onSend != nil {
		s.onSend(hosts)
	}
	return nil
}

func (s *sim) Wait(ctx context.Context, until time.Time) ([]rollout.Result, error) {
	s.waitCall++
	if s.waitCall > 100000 {
		s.t.Fatal("too many waits")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sort.SliceStable(s.queue, func(i, j int) bool { return s.queue[i].at.Before(s.queue[j].at) })
	if len(s.queue) == 0 || (!until.IsZero() && until.Before(s.queue[0].at)) {
		if until.IsZero() {
			s.t.Fatal("Wait with no deadline and no result coming: the rollout would hang")
		}
		s.now = until
		return nil, nil
	}
	s.now = maxT(s.now, s.queue[0].at)
	var out []rollout.Result
	for len(s.queue) > 0 && !s.queue[0].at.After(s.now) {
		r := s.queue[0].r
		s.queue = s.queue[1:]
		if _, ok := s.finals[r.Host]; !ok {
			s.finals[r.Host] = r.State
			s.running--
		}
		out = append(out, r)
	}
	return out, nil
}

func maxT(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func hostsN(n int, b behaviour) map[string]behaviour {
	m := map[string]behaviour{}
	for i := range n {
		m[fmt.Sprintf("h%02d", i)] = b
	}
	return m
}

func ids(m map[string]behaviour) []string {
	var out []string
	for h := range m {
		out = append(out, h)
	}
	return rollout.SortedHosts(out)
}

func cmd(id string) protocol.Command {
	return protocol.Command{V: 1, ID: id, Kind: protocol.KindShell, Args: []byte(`{"command":"true"}`)}
}

func run(t *testing.T, hosts map[string]behaviour, cfg rollout.Config) (*sim, rollout.Report, error) {
	t.Helper()
	if cfg.HostTimeout == 0 {
		cfg.HostTimeout = time.Minute
	}
	st, err := rollout.NewState(cmd("R1"), ids(hosts), cfg, t0)
	if err != nil {
		t.Fatal(err)
	}
	e, err := rollout.NewEngine(st)
	if err != nil {
		t.Fatal(err)
	}
	s := newSim(t, hosts)
	rep, err := rollout.Execute(context.Background(), e, s, rollout.Options{})
	return s, rep, err
}

var ok10s = behaviour{10 * time.Second, protocol.StateSucceeded}

func TestAllAtOnce(t *testing.T) {
	s, rep, err := run(t, hostsN(6, ok10s), rollout.Config{})
	if err != nil || !rep.OK() || len(rep.Succeeded) != 6 || rep.Phase != rollout.PhaseDone {
		t.Fatalf("report %+v, %v", rep, err)
	}
	if s.maxRun != 6 || !s.now.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("max running %d, end %v", s.maxRun, s.now.Sub(t0))
	}
}

func TestRollingWindow(t *testing.T) {
	tests := []struct {
		batch string
		n     int
		want  int
	}{{"2", 7, 2}, {"25%", 8, 2}, {"10%", 5, 1}, {"100%", 4, 4}, {"50", 3, 3}}
	for _, tc := range tests {
		t.Run(tc.batch, func(t *testing.T) {
			size, err := rollout.ParseSize(tc.batch)
			if err != nil {
				t.Fatal(err)
			}
			// Hosts take different times: the window rolls (a new host
			// starts as soon as one finishes), it does not wait for a
			// whole batch.
			hosts := map[string]behaviour{}
			for i := range tc.n {
				hosts[fmt.Sprintf("h%02d", i)] = behaviour{time.Duration(5+10*(i%3)) * time.Second, protocol.StateSucceeded}
			}
			s, rep, err := run(t, hosts, rollout.Config{Batch: size})
			if err != nil || !rep.OK() {
				t.Fatalf("report %+v, %v", rep, err)
			}
			if s.maxRun != tc.want {
				t.Fatalf("max running %d, want %d", s.maxRun, tc.want)
			}
		})
	}
	// Rolling, not batch-by-batch: with window 2, h00 (5 s) and h01 (15 s)
	// start at 0; h02 starts at 5 s when h00 is done, not at 15 s.
	s, _, _ := run(t, map[string]behaviour{"h00": {5 * time.Second, "succeeded"}, "h01": {15 * time.Second, "succeeded"}, "h02": ok10s}, rollout.Config{Batch: rollout.Size{N: 2}})
	if got := s.started["h02"].Sub(t0); got != 5*time.Second {
		t.Fatalf("h02 started at %v, want 5s", got)
	}
}

func TestCanary(t *testing.T) {
	t.Run("canaries succeed, then the rest", func(t *testing.T) {
		hosts := hostsN(6, ok10s)
		s, rep, err := run(t, hosts, rollout.Config{Canary: 2})
		if err != nil || !rep.OK() {
			t.Fatalf("%+v %v", rep, err)
		}
		for _, h := range []string{"h00", "h01"} {
			if !s.started[h].Equal(t0) {
				t.Fatalf("canary %s started at %v", h, s.started[h])
			}
		}
		for _, h := range []string{"h02", "h03", "h04", "h05"} {
			if got := s.started[h].Sub(t0); got != 10*time.Second {
				t.Fatalf("%s started at %v, want after the canaries (10s)", h, got)
			}
		}
	})
	t.Run("a canary fails: abort", func(t *testing.T) {
		hosts := hostsN(6, ok10s)
		hosts["h01"] = behaviour{3 * time.Second, protocol.StateFailed}
		s, rep, err := run(t, hosts, rollout.Config{Canary: 2})
		if !errors.Is(err, rollout.ErrAborted) || !rep.Aborted || rep.AbortReason != "canary failed: h01 failed" {
			t.Fatalf("%+v %v", rep, err)
		}
		if len(s.started) != 2 || !slices.Equal(rep.NotStarted, []string{"h02", "h03", "h04", "h05"}) ||
			!slices.Equal(rep.Succeeded, []string{"h00"}) || !slices.Equal(rep.Failed, []string{"h01"}) {
			t.Fatalf("started %v, report %+v", s.started, rep)
		}
	})
	t.Run("a canary does not answer: abort", func(t *testing.T) {
		hosts := hostsN(4, ok10s)
		hosts["h00"] = behaviour{}
		_, rep, err := run(t, hosts, rollout.Config{Canary: 1, HostTimeout: 30 * time.Second})
		if !errors.Is(err, rollout.ErrAborted) || !slices.Equal(rep.NoAnswer, []string{"h00"}) || len(rep.NotStarted) != 3 {
			t.Fatalf("%+v %v", rep, err)
		}
	})
}

func TestRate(t *testing.T) {
	s, rep, err := run(t, hostsN(4, ok10s), rollout.Config{Rate: 6}) // one start every 10 s
	if err != nil || !rep.OK() {
		t.Fatalf("%+v %v", rep, err)
	}
	for i, h := range ids(hostsN(4, ok10s)) {
		if got := s.started[h].Sub(t0); got != time.Duration(i)*10*time.Second {
			t.Fatalf("%s started at %v, want %v", h, got, time.Duration(i)*10*time.Second)
		}
	}
}

func TestRateGrowth(t *testing.T) {
	// 6/min doubling after every 2 successes, up to 24/min; hosts answer
	// at once.
	s, rep, err := run(t, hostsN(8, behaviour{0, protocol.StateSucceeded}), rollout.Config{Rate: 6, RateFactor: 2, RateEvery: 2, MaxRate: 24})
	if err != nil || !rep.OK() {
		t.Fatalf("%+v %v", rep, err)
	}
	var gaps []time.Duration
	hs := ids(hostsN(8, ok10s))
	for i := 1; i < len(hs); i++ {
		gaps = append(gaps, s.started[hs[i]].Sub(s.started[hs[i-1]]))
	}
	want := []time.Duration{10 * time.Second, 10 * time.Second, 5 * time.Second, 5 * time.Second, 2500 * time.Millisecond, 2500 * time.Millisecond, 2500 * time.Millisecond}
	if !slices.Equal(gaps, want) {
		t.Fatalf("gaps between starts %v, want %v", gaps, want)
	}
	if rep.RatePerMin != 24 {
		t.Fatalf("final rate %v, want capped at 24", rep.RatePerMin)
	}
}

func TestAbortThreshold(t *testing.T) {
	// Window 2; every odd host fails. Abort at 50% once 4 finished.
	hosts := hostsN(10, ok10s)
	for i := 1; i < 10; i += 2 {
		hosts[fmt.Sprintf("h%02d", i)] = behaviour{10 * time.Second, protocol.StateFailed}
	}
	s, rep, err := run(t, hosts, rollout.Config{Batch: rollout.Size{N: 2}, AbortPercent: 50, AbortMin: 4})
	if !errors.Is(err, rollout.ErrAborted) || !rep.Aborted {
		t.Fatalf("%+v %v", rep, err)
	}
	if len(rep.Succeeded) != 2 || len(rep.Failed) != 2 || len(rep.NotStarted) != 6 || len(rep.Running) != 0 || len(s.started) != 4 {
		t.Fatalf("report %+v, started %d", rep, len(s.started))
	}
	if rep.AbortReason != "2 of 4 finished hosts failed (50%, threshold 50%)" {
		t.Fatalf("reason %q", rep.AbortReason)
	}
	// Below the threshold: no abort.
	_, rep, err = run(t, hosts, rollout.Config{Batch: rollout.Size{N: 2}, AbortPercent: 60, AbortMin: 4})
	if err != nil || rep.Aborted || len(rep.Failed) != 5 || len(rep.Succeeded) != 5 {
		t.Fatalf("%+v %v", rep, err)
	}
}

func TestAbortLetsRunningHostsFinish(t *testing.T) {
	hosts := map[string]behaviour{"h00": {time.Second, protocol.StateFailed}, "h01": {20 * time.Second, protocol.StateSucceeded}, "h02": ok10s}
	_, rep, err := run(t, hosts, rollout.Config{Batch: rollout.Size{N: 2}, AbortPercent: 10})
	if !errors.Is(err, rollout.ErrAborted) || !slices.Equal(rep.Failed, []string{"h00"}) || !slices.Equal(rep.Succeeded, []string{"h01"}) ||
		!slices.Equal(rep.NotStarted, []string{"h02"}) {
		t.Fatalf("%+v %v", rep, err)
	}
}

func TestNoAnswerAndLateAnswer(t *testing.T) {
	hosts := map[string]behaviour{"h00": ok10s, "h01": {90 * time.Second, protocol.StateSucceeded}, "h02": {}}
	st, _ := rollout.NewState(cmd("R2"), ids(hosts), rollout.Config{HostTimeout: 60 * time.Second}, t0)
	e, _ := rollout.NewEngine(st)
	s := newSim(t, hosts)
	rep, err := rollout.Execute(context.Background(), e, s, rollout.Options{})
	if err != nil || !slices.Equal(rep.NoAnswer, []string{"h01", "h02"}) || rep.OK() {
		t.Fatalf("%+v %v", rep, err)
	}
	// h01 answers late: the report takes the truth.
	e.Finish("h01", protocol.StateSucceeded, nil, "", t0.Add(90*time.Second))
	if rep := e.Report(); !slices.Equal(rep.Succeeded, []string{"h00", "h01"}) || !slices.Equal(rep.NoAnswer, []string{"h02"}) {
		t.Fatalf("after a late answer %+v", rep)
	}
	// A duplicate final or a result of an unknown host changes nothing.
	e.Finish("h00", protocol.StateFailed, nil, "", t0)
	e.Finish("zz", protocol.StateFailed, nil, "", t0)
	if rep := e.Report(); len(rep.Failed) != 0 {
		t.Fatalf("duplicate counted: %+v", rep)
	}
}

func TestInterruptAndResume(t *testing.T) {
	store := rollout.Store{Dir: t.TempDir()}
	hosts := hostsN(6, ok10s)
	cfg := rollout.Config{Batch: rollout.Size{N: 2}, HostTimeout: time.Minute}
	st, err := rollout.NewState(cmd("R3"), ids(hosts), cfg, t0)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := rollout.NewEngine(st)
	s := newSim(t, hosts)
	ctx, cancel := context.WithCancel(context.Background())
	sends := 0
	s.onSend = func(h []string) {
		sends += len(h)
		if sends >= 3 { // interrupted with h02 just sent
			cancel()
		}
	}
	var finished []string
	rep, err := rollout.Execute(ctx, e, s, rollout.Options{Store: store, OnFinish: func(h rollout.HostState) { finished = append(finished, h.Host) }})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted: %v", err)
	}
	if len(rep.Succeeded) != 2 || !slices.Equal(rep.Running, []string{"h02", "h03"}) || len(finished) != 2 {
		t.Fatalf("at the interruption %+v, finished %v", rep, finished)
	}
	// Resume from the saved file, with the same simulated hosts: h02 and
	// h03 are sent again and not run twice.
	loaded, err := store.Load("R3")
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Hosts[2].Status != rollout.StatusRunning {
		t.Fatalf("saved state: %+v", loaded.Hosts[2])
	}
	e2, err := rollout.NewEngine(loaded)
	if err != nil {
		t.Fatal(err)
	}
	s.onSend = nil
	rep, err = rollout.Execute(context.Background(), e2, s, rollout.Options{Store: store, Resume: true})
	if err != nil || !rep.OK() {
		t.Fatalf("resumed: %+v %v", rep, err)
	}
	for h, n := range s.runs {
		if n != 1 {
			t.Fatalf("%s ran %d times", h, n)
		}
	}
	if s.sends["h02"] != 2 || s.sends["h00"] != 1 || s.sends["h05"] != 1 {
		t.Fatalf("sends %v", s.sends)
	}
	final, _ := store.Load("R3")
	if final.Phase != rollout.PhaseDone || final.Resumes != 1 || final.Hosts[2].Sends != 2 {
		t.Fatalf("saved after resume: phase %s resumes %d sends %d", final.Phase, final.Resumes, final.Hosts[2].Sends)
	}
}

func TestResumeAfterAbort(t *testing.T) {
	hosts := hostsN(6, ok10s)
	hosts["h00"] = behaviour{time.Second, protocol.StateFailed}
	st, _ := rollout.NewState(cmd("R4"), ids(hosts), rollout.Config{Batch: rollout.Size{N: 1}, AbortPercent: 50, AbortMin: 1, HostTimeout: time.Minute}, t0)
	e, _ := rollout.NewEngine(st)
	s := newSim(t, hosts)
	rep, err := rollout.Execute(context.Background(), e, s, rollout.Options{})
	if !errors.Is(err, rollout.ErrAborted) || len(rep.NotStarted) != 5 {
		t.Fatalf("%+v %v", rep, err)
	}
	// The operator fixed h00's problem and resumes: the earlier failure
	// does not abort it again at once.
	rep, err = rollout.Execute(context.Background(), e, s, rollout.Options{Resume: true})
	if err != nil || len(rep.Succeeded) != 5 || !slices.Equal(rep.Failed, []string{"h00"}) {
		t.Fatalf("%+v %v", rep, err)
	}
}

func TestSendError(t *testing.T) {
	hosts := hostsN(2, ok10s)
	st, _ := rollout.NewState(cmd("R5"), ids(hosts), rollout.Config{HostTimeout: time.Minute}, t0)
	e, _ := rollout.NewEngine(st)
	s := newSim(t, hosts)
	s.sendErr = errors.New("broker gone")
	if _, err := rollout.Execute(context.Background(), e, s, rollout.Options{}); err == nil || err.Error() != "broker gone" {
		t.Fatalf("error %v", err)
	}
}

func TestParse(t *testing.T) {
	sizes := []struct {
		in   string
		want rollout.Size
		of10 int
		err  bool
	}{
		{"5", rollout.Size{N: 5}, 5, false}, {"10%", rollout.Size{Percent: 10}, 1, false}, {"25%", rollout.Size{Percent: 25}, 3, false},
		{"0.5%", rollout.Size{Percent: 0.5}, 1, false}, {"", rollout.Size{}, 0, false},
		{"0", rollout.Size{}, 0, true}, {"-1", rollout.Size{}, 0, true}, {"101%", rollout.Size{}, 0, true}, {"x%", rollout.Size{}, 0, true}, {"1.5", rollout.Size{}, 0, true},
	}
	for _, tc := range sizes {
		got, err := rollout.ParseSize(tc.in)
		if (err != nil) != tc.err || got != tc.want || (err == nil && got.Of(10) != tc.of10) {
			t.Errorf("ParseSize(%q) = %+v (of 10: %d), %v", tc.in, got, got.Of(10), err)
		}
		if err == nil && got.String() != tc.in {
			t.Errorf("String() = %q, want %q", got.String(), tc.in)
		}
	}
	rates := []struct {
		in   string
		want float64
		err  bool
	}{{"10/min", 10, false}, {"10", 10, false}, {"1/s", 60, false}, {"30/h", 0.5, false}, {"", 0, false},
		{"0/min", 0, true}, {"x/min", 0, true}, {"5/day", 0, true}, {"-1", 0, true}}
	for _, tc := range rates {
		got, err := rollout.ParseRate(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseRate(%q) = %v, %v", tc.in, got, err)
		}
	}
	bad := []rollout.Config{
		{}, // no host timeout
		{HostTimeout: time.Second, Canary: -1},
		{HostTimeout: time.Second, RateFactor: 2},               // no rate
		{HostTimeout: time.Second, Rate: 1, RateFactor: 2},      // no rate every
		{HostTimeout: time.Second, Rate: 1, RateFactor: 0.5},    // shrinking
		{HostTimeout: time.Second, AbortPercent: 101},           // over 100
		{HostTimeout: time.Second, AbortMin: -1},                // negative
		{HostTimeout: time.Second, Rate: -1},                    // negative
		{HostTimeout: time.Second, Rate: 1, MaxRate: -2},        // negative
		{HostTimeout: time.Second, AbortPercent: -1, Canary: 0}, // negative
	}
	for i, c := range bad {
		if c.Validate() == nil {
			t.Errorf("config %d accepted: %+v", i, c)
		}
	}
	if _, err := rollout.NewState(cmd("R"), []string{"a", "a"}, rollout.Config{HostTimeout: time.Second}, t0); err == nil {
		t.Error("duplicate hosts accepted")
	}
	if _, err := rollout.NewState(cmd("R"), nil, rollout.Config{HostTimeout: time.Second}, t0); err == nil {
		t.Error("no hosts accepted")
	}
	if _, err := rollout.NewState(cmd("a/b"), []string{"a"}, rollout.Config{HostTimeout: time.Second}, t0); err == nil {
		t.Error("bad id accepted")
	}
}

func TestStore(t *testing.T) {
	store := rollout.Store{Dir: filepath.Join(t.TempDir(), "rollouts")}
	if ids, err := store.List(); err != nil || len(ids) != 0 {
		t.Fatalf("empty store: %v %v", ids, err)
	}
	st, _ := rollout.NewState(cmd("01B"), []string{"a", "b"}, rollout.Config{Batch: rollout.Size{Percent: 50}, HostTimeout: time.Minute}, t0)
	st2, _ := rollout.NewState(cmd("01A"), []string{"c"}, rollout.Config{HostTimeout: time.Minute}, t0)
	for _, s := range []*rollout.State{st, st2} {
		if err := store.Save(s); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(filepath.Join(store.Dir, "01B.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	back, err := store.Load("01B")
	if err != nil || back.Config.Batch.Percent != 50 || len(back.Hosts) != 2 || back.Command.ID != "01B" {
		t.Fatalf("loaded %+v, %v", back, err)
	}
	if ids, _ := store.List(); !slices.Equal(ids, []string{"01A", "01B"}) {
		t.Fatalf("list %v", ids)
	}
	if _, err := store.Load("nope"); !errors.Is(err, rollout.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	for _, bad := range []string{"../x", "a/b", "", ".hidden"} {
		if _, err := store.Load(bad); err == nil || errors.Is(err, rollout.ErrNotFound) {
			t.Fatalf("id %q: %v", bad, err)
		}
	}
	if err := os.WriteFile(filepath.Join(store.Dir, "junk.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Load("junk"); err == nil {
		t.Fatal("junk loaded")
	}
	if err := os.WriteFile(filepath.Join(store.Dir, "other.json"), []byte(`{"version":1,"id":"x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Load("other"); err == nil {
		t.Fatal("a file holding another id loaded")
	}
}
