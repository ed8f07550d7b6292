package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/rollout"
)

// reportDoc is what a rollout prints with -o json.
type reportDoc struct {
	OK          bool                `json:"ok"`
	ID          string              `json:"id"`
	Total       int                 `json:"total"`
	Phase       string              `json:"phase"`
	Succeeded   []string            `json:"succeeded"`
	Failed      []string            `json:"failed"`
	NoAnswer    []string            `json:"no_answer"`
	NotStarted  []string            `json:"not_started"`
	Running     []string            `json:"running"`
	Aborted     bool                `json:"aborted"`
	AbortReason string              `json:"abort_reason"`
	Hosts       []rollout.HostState `json:"hosts"`
}

func (f *cliFleet) writeScript(name, content string) string {
	f.t.Helper()
	p := filepath.Join(f.t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func TestCLIRolloutCanaryAndWindow(t *testing.T) {
	f := newCLIFleet(t)
	r := f.cli("shell", "-t", "all", "--canary", "1", "--batch", "2", "-o", "json", "sleep 0.3").must(t, 0, "rollout")
	rep := parseJSON[reportDoc](t, r)
	if !rep.OK || rep.Total != 4 || len(rep.Succeeded) != 4 || rep.Phase != rollout.PhaseDone || rep.Aborted {
		t.Fatalf("report %+v\nstderr: %s", rep, r.stderr)
	}
	canary := rep.Hosts[0]
	if canary.Host != "db-1" || !canary.Canary {
		t.Fatalf("canary %+v", canary)
	}
	for _, h := range rep.Hosts[1:] {
		if h.Canary || h.StartedAt.Before(canary.FinishedAt) {
			t.Fatalf("%s started at %v, before the canary finished at %v", h.Host, h.StartedAt, canary.FinishedAt)
		}
	}
	// Window 2: never three running at once.
	for _, h := range rep.Hosts[1:] {
		n := 0
		for _, o := range rep.Hosts[1:] {
			if !o.StartedAt.After(h.StartedAt) && o.FinishedAt.After(h.StartedAt) {
				n++
			}
		}
		if n > 2 {
			t.Fatalf("%d hosts running when %s started: %+v", n, h.Host, rep.Hosts)
		}
	}
	// The state was saved; rollout show reads it back.
	if _, err := os.Stat(filepath.Join(f.stateDir, rep.ID+".json")); err != nil {
		t.Fatalf("state file: %v", err)
	}
	show := parseJSON[reportDoc](t, f.cli("rollout", "show", rep.ID, "-o", "json").must(t, 0, "rollout show"))
	if show.ID != rep.ID || len(show.Succeeded) != 4 {
		t.Fatalf("show %+v", show)
	}
	if l := f.cli("rollout", "list").must(t, 0, "rollout list"); !strings.Contains(l.stdout, rep.ID) {
		t.Fatalf("list:\n%s", l.stdout)
	}
	f.cli("rollout", "show", "NOPE").must(t, 2, "unknown rollout")
	f.cli("shell", "-t", "all", "--batch", "0", "true").must(t, 2, "bad batch")
	f.cli("shell", "-t", "all", "--rate", "fast", "true").must(t, 2, "bad rate")
	f.cli("shell", "-t", "all", "--abort-on", "200%", "true").must(t, 2, "bad abort")
}

func TestCLIRolloutCanaryFails(t *testing.T) {
	f := newCLIFleet(t)
	r := f.cli("script", "-t", "host:db-2,web-1", "--canary", "1", "-o", "json", f.writeScript("m.sh", markerScript)).must(t, 5, "failing canary")
	rep := parseJSON[reportDoc](t, r)
	if !rep.Aborted || !strings.Contains(rep.AbortReason, "canary failed: db-2") || !slices.Equal(rep.NotStarted, []string{"web-1"}) ||
		!slices.Equal(rep.Failed, []string{"db-2"}) {
		t.Fatalf("report %+v", rep)
	}
}

// Abort at 50% failures after 2 results, then resume once the cause is
// fixed: the hosts not started yet run, nothing runs twice.
func TestCLIRolloutAbortAndResume(t *testing.T) {
	f := newCLIFleet(t)
	// Each run appends to {data_dir}/runs, then checks the marker.
	script := f.writeScript("count.sh", `#!/bin/sh
d=$(dirname "$0")
while [ "$d" != / ] && [ ! -e "$d/state.db" ]; do d=$(dirname "$d"); done
echo run >> "$d/runs"
test -f "$d/marker"
`)
	r := f.cli("script", "-t", "all", "--batch", "1", "--abort-on", "50%", "--abort-min", "2", "-o", "json", script).must(t, 5, "aborted rollout")
	rep := parseJSON[reportDoc](t, r)
	if !rep.Aborted || !slices.Equal(rep.Succeeded, []string{"db-1"}) || !slices.Equal(rep.Failed, []string{"db-2"}) ||
		!slices.Equal(rep.NotStarted, []string{"web-1", "web-2"}) {
		t.Fatalf("report %+v", rep)
	}
	if !strings.Contains(r.stderr, "--resume "+rep.ID) {
		t.Fatalf("no resume hint:\n%s", r.stderr)
	}
	// Fix web-2 and resume: web-1 and web-2 run; db-2 stays failed.
	f.mark(f.agents["web-2"].DataDir())
	r = f.cli("script", "--resume", rep.ID, "-o", "json").must(t, 1, "resumed rollout")
	rep = parseJSON[reportDoc](t, r)
	if rep.Aborted || !slices.Equal(rep.Succeeded, []string{"db-1", "web-1", "web-2"}) || !slices.Equal(rep.Failed, []string{"db-2"}) || len(rep.NotStarted) != 0 {
		t.Fatalf("resumed report %+v\nstderr: %s", rep, r.stderr)
	}
	for id, a := range f.agents {
		if runs := readLines(t, filepath.Join(a.DataDir(), "runs")); len(runs) != 1 {
			t.Fatalf("%s ran the script %d times", id, len(runs))
		}
	}
}

// A rollout interrupted (SIGINT) while hosts run is resumed: the hosts
// that were running are sent the same command id again and do not run it
// twice; the others run once.
func TestCLIRolloutInterruptAndResume(t *testing.T) {
	f := newCLIFleet(t)
	script := f.writeScript("slow.sh", `#!/bin/sh
d=$(dirname "$0")
while [ "$d" != / ] && [ ! -e "$d/state.db" ]; do d=$(dirname "$d"); done
echo run >> "$d/runs"
sleep 1
`)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := osexec.CommandContext(ctx, f.bin, "script", "-t", "all", "--batch", "1", script)
	cmd.Env = append(cliEnv(), "MQAGENT_BROKER="+f.broker.URL(), "MQAGENT_STATE_DIR="+f.stateDir)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Plain progress lines (stderr is not a terminal): interrupt when the
	// second host started.
	var seen bytes.Buffer
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		seen.WriteString(sc.Text() + "\n")
		if sc.Text() == "db-2: started" {
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	_, _ = io.Copy(&seen, stderr)
	err = cmd.Wait()
	var ee *osexec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("interrupted rollout: %v\nstderr:\n%s", err, seen.String())
	}
	ids, _ := rollout.Store{Dir: f.stateDir}.List()
	if len(ids) != 1 {
		t.Fatalf("saved rollouts %v", ids)
	}
	st, err := rollout.Store{Dir: f.stateDir}.Load(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if st.Hosts[0].Status != rollout.StatusSucceeded || st.Hosts[1].Status != rollout.StatusRunning || st.Hosts[2].Status != rollout.StatusPending {
		t.Fatalf("saved state %+v", st.Hosts)
	}
	r := f.cli("script", "--resume", ids[0], "-o", "json").must(t, 0, "resume")
	rep := parseJSON[reportDoc](t, r)
	if len(rep.Succeeded) != 4 || rep.Hosts[1].Sends != 2 {
		t.Fatalf("resumed %+v", rep)
	}
	for id, a := range f.agents {
		if runs := readLines(t, filepath.Join(a.DataDir(), "runs")); len(runs) != 1 {
			t.Fatalf("%s ran %d times", id, len(runs))
		}
	}
}

func TestCLIRolloutRate(t *testing.T) {
	f := newCLIFleet(t)
	r := f.cli("shell", "-t", "all", "--rate", "2/s", "-o", "json", "true").must(t, 0, "rate")
	rep := parseJSON[reportDoc](t, r)
	for i := 1; i < len(rep.Hosts); i++ {
		if gap := rep.Hosts[i].StartedAt.Sub(rep.Hosts[i-1].StartedAt); gap < 450*time.Millisecond {
			t.Fatalf("%s started %v after %s, want >= 500ms", rep.Hosts[i].Host, gap, rep.Hosts[i-1].Host)
		}
	}
}
