package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// procRoot is where procfs is mounted.
const procRoot = "/proc"

// leaders are the pids of the process leaders that Run started and has not
// reaped yet; the reaper must leave them to os/exec.
var leaders = leaderSet{pids: map[int]int{}}

type leaderSet struct {
	// start is held for reading by every Run from cmd.Start until its pid
	// is registered, and for writing by the reaper while it reaps, so the
	// reaper never sees a child of Run that is not registered yet.
	start sync.RWMutex
	mu    sync.Mutex
	pids  map[int]int // pid -> count (a pid can be reused before the old entry is released)
}

func (l *leaderSet) add(pid int) {
	l.mu.Lock()
	l.pids[pid]++
	l.mu.Unlock()
}

func (l *leaderSet) remove(pid int) {
	l.mu.Lock()
	if l.pids[pid]--; l.pids[pid] <= 0 {
		delete(l.pids, pid)
	}
	l.mu.Unlock()
}

func (l *leaderSet) has(pid int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pids[pid] > 0
}

// startLeader starts cmd and registers its pid with the reaper.
func startLeader(cmd *exec.Cmd) error {
	leaders.start.RLock()
	defer leaders.start.RUnlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	leaders.add(cmd.Process.Pid)
	return nil
}

// releaseLeader is called once the leader was reaped.
func releaseLeader(pid int) { leaders.remove(pid) }

// awaitExit blocks until the child pid has exited, without reaping it.
func awaitExit(pid int) bool {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return true
		}
	}
}

// procStat is the part of /proc/PID/stat that the package uses.
type procStat struct {
	pid   int
	state byte // R, S, D, Z, ...
	ppid  int
	pgrp  int
	start uint64 // field 22, clock ticks after boot
}

// readStat reads /proc/PID/stat. A missing process is an fs.ErrNotExist error.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, err
	}
	st, err := parseStat(b)
	if err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return st, nil
}

// parseStat parses the content of /proc/PID/stat. The command name (field 2)
// may contain spaces and parentheses, so the fields are counted from the
// last ')'.
func parseStat(b []byte) (procStat, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procStat{}, errors.New("no command name")
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return procStat{}, fmt.Errorf("pid: %w", err)
	}
	f := bytes.Fields(b[end+1:]) // f[0] is field 3 (state)
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, errors.New("too few fields")
	}
	st := procStat{pid: pid, state: f[0][0]}
	if st.ppid, err = strconv.Atoi(string(f[1])); err != nil {
		return procStat{}, fmt.Errorf("ppid: %w", err)
	}
	if st.pgrp, err = strconv.Atoi(string(f[2])); err != nil {
		return procStat{}, fmt.Errorf("pgrp: %w", err)
	}
	if st.start, err = strconv.ParseUint(string(f[19]), 10, 64); err != nil {
		return procStat{}, fmt.Errorf("starttime: %w", err)
	}
	return st, nil
}

// startTicks is field 22 of /proc/PID/stat.
func startTicks(pid int) (uint64, error) {
	st, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	return st.start, nil
}

// allStats reads the stat of every process (processes that vanish during
// the scan are skipped).
func allStats() ([]procStat, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	stats := make([]procStat, 0, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil {
			stats = append(stats, st)
		}
	}
	return stats, nil
}

// killOrphanGroup: a live leader (pid == PGID) proves the group is ours only
// if its start ticks match; without a leader, every member must have started
// no earlier than the leader did.
func killOrphanGroup(p Proc) (bool, error) {
	leader, err := readStat(p.PGID)
	switch {
	case err == nil:
		if leader.start != p.StartTicks {
			return false, nil // the pid was reused (or the start is unknown): not ours
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return false, fmt.Errorf("kill orphan group %d: %w", p.PGID, err)
	}
	stats, err := allStats()
	if err != nil {
		return false, fmt.Errorf("kill orphan group %d: %w", p.PGID, err)
	}
	live := 0
	for _, st := range stats {
		if st.pgrp != p.PGID {
			continue
		}
		if st.start < p.StartTicks {
			return false, nil // older than our leader: the group is not ours
		}
		if st.state != 'Z' {
			live++
		}
	}
	if live == 0 {
		return false, nil
	}
	return killGroup(p.PGID)
}

// Reaper tuning.
const (
	// reapInterval is how often the reaper scans without a SIGCHLD.
	reapInterval = 5 * time.Second
	// ownGroupGrace is how long a zombie child in the agent's own process
	// group is left alone: such a child was most likely started by other
	// agent code through os/exec, which must reap it itself. Only if nobody
	// does for that long is it taken for an orphan and reaped.
	ownGroupGrace = time.Minute
)

var initialized atomic.Bool

// Init prepares the agent process for running commands (call once at agent start). On Linux it makes
// the agent a child subreaper (prctl PR_SET_CHILD_SUBREAPER) so orphaned grandchildren are re-parented
// to the agent, and starts a reaper that reaps zombie children of the agent that no running Run owns
// (scan /proc for children in state Z whose pid is not a leader currently being waited on by os/exec;
// never call wait4(-1), it would steal exit statuses from exec.Cmd.Wait). Returns a stop func. Elsewhere a no-op.
//
// The reaper runs on SIGCHLD and every few seconds. Zombies outside the
// agent's process group (the commands' groups, or sessions of their own) are
// reaped at once; a zombie in the agent's own group is most likely a child
// that other agent code started with os/exec and is about to reap, so it is
// reaped only after it has been a zombie for a minute. Code elsewhere in the
// agent that starts processes must therefore Wait for them promptly.
//
// A second Init before stop is an error. stop undoes Init (the agent is no
// longer a subreaper) and waits for the reaper to end; it may be called more
// than once.
func Init(logger *slog.Logger) (stop func(), err error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if !initialized.CompareAndSwap(false, true) {
		return nil, errors.New("runner init: already initialized")
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		initialized.Store(false)
		return nil, fmt.Errorf("runner init: set child subreaper: %w", err)
	}
	r := &reaper{
		logger:   logger,
		self:     os.Getpid(),
		selfPgid: syscall.Getpgrp(),
		zombies:  map[int]zombie{},
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGCHLD)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.loop(ctx, sigc)
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
			signal.Stop(sigc)
			if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0); err != nil {
				logger.Warn("runner: unset child subreaper", "err", err)
			}
			initialized.Store(false)
		})
	}, nil
}

// reaper reaps orphaned zombie children of the agent.
type reaper struct {
	logger   *slog.Logger
	self     int
	selfPgid int
	zombies  map[int]zombie // zombies seen but left alone, by pid
}

type zombie struct {
	start uint64
	since time.Time
}

func (r *reaper) loop(ctx context.Context, sigc <-chan os.Signal) {
	t := time.NewTicker(reapInterval)
	defer t.Stop()
	for {
		r.scan()
		select {
		case <-ctx.Done():
			return
		case <-sigc:
		case <-t.C:
		}
	}
}

// scan reaps the zombie children that are orphans.
func (r *reaper) scan() {
	kids, err := r.children()
	if err != nil {
		r.logger.Warn("runner reaper: list children", "err", err)
		return
	}
	var cands []procStat
	for _, st := range kids {
		if st.state == 'Z' {
			cands = append(cands, st)
		}
	}
	seen := make(map[int]bool, len(cands))
	if len(cands) > 0 {
		now := time.Now()
		// With start held for writing every child of Run is registered.
		leaders.start.Lock()
		for _, c := range cands {
			seen[c.pid] = true
			r.reap(c.pid, now)
		}
		leaders.start.Unlock()
	}
	for pid := range r.zombies {
		if !seen[pid] {
			delete(r.zombies, pid)
		}
	}
}

// reap reaps pid if it is still an unowned zombie child. Called with
// leaders.start held for writing.
func (r *reaper) reap(pid int, now time.Time) {
	if leaders.has(pid) {
		return
	}
	st, err := readStat(pid) // again, under the lock
	if err != nil || st.state != 'Z' || st.ppid != r.self {
		return
	}
	if st.pgrp == r.selfPgid {
		z, ok := r.zombies[pid]
		if !ok || z.start != st.start {
			r.zombies[pid] = zombie{start: st.start, since: now}
			return
		}
		if now.Sub(z.since) < ownGroupGrace {
			return
		}
	}
	var ws syscall.WaitStatus
	wpid, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	if err != nil || wpid != pid {
		return
	}
	delete(r.zombies, pid)
	r.logger.Debug("runner reaper: reaped orphan", "pid", pid, "pgid", st.pgrp, "status", exitStatus(ws))
}

func exitStatus(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// children returns the stat of every child of the agent, from the
// per-thread children files when the kernel has them, else from a scan of
// every process.
func (r *reaper) children() ([]procStat, error) {
	taskDir := filepath.Join(procRoot, strconv.Itoa(r.self), "task")
	tasks, err := os.ReadDir(taskDir)
	if err != nil {
		return nil, fmt.Errorf("list threads: %w", err)
	}
	var kids []procStat
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(taskDir, t.Name(), "children"))
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(filepath.Join(taskDir, t.Name())); serr == nil {
				return r.childrenByScan() // no CONFIG_PROC_CHILDREN
			}
			continue // the thread ended
		}
		if err != nil {
			continue
		}
		for _, f := range bytes.Fields(b) {
			pid, err := strconv.Atoi(string(f))
			if err != nil {
				continue
			}
			if st, err := readStat(pid); err == nil {
				kids = append(kids, st)
			}
		}
	}
	return kids, nil
}

func (r *reaper) childrenByScan() ([]procStat, error) {
	all, err := allStats()
	if err != nil {
		return nil, err
	}
	kids := all[:0]
	for _, st := range all {
		if st.ppid == r.self {
			kids = append(kids, st)
		}
	}
	return kids, nil
}
