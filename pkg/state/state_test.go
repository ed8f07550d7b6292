package state

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

func TestSessionCounterPersists(t *testing.T) {
	path := statePath(t)
	s := open(t, path, Options{})
	for want := uint64(1); want <= 3; want++ {
		got, err := s.NextSession()
		if err != nil || got != want {
			t.Fatalf("NextSession = %d, %v; want %d", got, err, want)
		}
	}
	s = reopen(t, s, Options{})
	if got, err := s.NextSession(); err != nil || got != 4 {
		t.Fatalf("after reopen NextSession = %d, %v; want 4", got, err)
	}
}

func TestOpenCreatesPrivateFile(t *testing.T) {
	path := statePath(t)
	open(t, path, Options{})
	if runtime.GOOS == "windows" {
		return // no Unix permission bits
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got&^want != 0 {
			t.Errorf("%s has mode %v, want at most %v", p, got, want)
		}
	}
}

func TestOpenLocked(t *testing.T) {
	tests := []struct {
		name string
		hold func(t *testing.T, path string)
	}{
		{"same process", func(t *testing.T, path string) { open(t, path, Options{}) }},
		{"other process", func(t *testing.T, path string) { helper(t, "hold", path) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := statePath(t)
			tt.hold(t, path)
			start := time.Now()
			s, err := Open(path, Options{})
			elapsed := time.Since(start)
			if err == nil {
				_ = s.Close()
				t.Fatal("second Open succeeded")
			}
			if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "locked by another agent process") || !strings.Contains(err.Error(), path) {
				t.Errorf("error = %v; want ErrLocked naming %s", err, path)
			}
			if elapsed > 2*time.Second {
				t.Errorf("Open took %v to fail, want about 1s", elapsed)
			}
		})
	}
}

func TestOpenReleasedLock(t *testing.T) {
	path := statePath(t)
	cmd, _, stdin := helper(t, "hold", path)
	_ = stdin.Close() // the helper closes the store and exits
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	open(t, path, Options{})
}

// validFile writes a state file with some content and returns its path and
// page size.
func validFile(t *testing.T) (string, int) {
	t.Helper()
	path := statePath(t)
	s := open(t, path, Options{})
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			id := fmt.Sprintf("cmd-%03d", i)
			if _, _, err := s.Admit(Entry{ID: id, Payload: bytes.Repeat([]byte("x"), 500)}, Message{Topic: "t", Payload: []byte(id)}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	pageSize := s.db.Info().PageSize
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path, pageSize
}

func TestOpenCorrupt(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	tests := []struct {
		name    string
		corrupt func(t *testing.T) string // returns the path
	}{
		{"text", func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(path, []byte("this is not a database\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return path
		}},
		{"random 64 KiB", func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(path, random(64<<10), 0o600); err != nil {
				t.Fatal(err)
			}
			return path
		}},
		{"truncated to one page", func(t *testing.T) string {
			path, ps := validFile(t)
			if err := os.Truncate(path, int64(ps)); err != nil {
				t.Fatal(err)
			}
			return path
		}},
		{"truncated to half", func(t *testing.T) string {
			path, _ := validFile(t)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
			return path
		}},
		{"data pages overwritten", func(t *testing.T) string {
			path, ps := validFile(t)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			copy(data[2*ps:], random(len(data)-2*ps))
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			return path
		}},
		{"meta pages zeroed", func(t *testing.T) string {
			path, ps := validFile(t)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			clear(data[:2*ps])
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			return path
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.corrupt(t)
			s, err := Open(path, Options{})
			if err == nil {
				_ = s.Close()
				t.Fatal("Open of a corrupt file succeeded")
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Errorf("error = %v; want ErrCorrupt naming %s", err, path)
			}
			if testing.Verbose() {
				t.Logf("first error: %v", err)
			}
			// The file must not be locked or changed into something else.
			if _, err := Open(path, Options{}); !errors.Is(err, ErrCorrupt) {
				t.Errorf("second Open: %v; want ErrCorrupt again", err)
			}
		})
	}
}

func TestOpenEmptyFileInitialises(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := open(t, path, Options{})
	if n, err := s.NextSession(); err != nil || n != 1 {
		t.Fatalf("NextSession = %d, %v", n, err)
	}
}

func TestOpenBadPath(t *testing.T) {
	dir := t.TempDir()
	for _, path := range []string{"", dir} {
		if s, err := Open(path, Options{}); err == nil {
			_ = s.Close()
			t.Errorf("Open(%q) succeeded", path)
		}
	}
}

func TestClosed(t *testing.T) {
	s := open(t, statePath(t), Options{})
	if err := s.Push(Message{Topic: "t"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ops := map[string]error{}
	_, ops["NextSession"] = s.NextSession()
	_, _, ops["Admit"] = s.Admit(Entry{ID: "a"})
	ops["Push"] = s.Push(Message{Topic: "t"})
	_, ops["Pending"] = s.Pending(1)
	_, _, ops["Get"] = s.Get("a")
	_, ops["Unfinished"] = s.Unfinished()
	_, ops["Prune"] = s.Prune(time.Now())
	for op, err := range ops {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v; want ErrClosed", op, err)
		}
	}
}

func TestNotify(t *testing.T) {
	s := open(t, statePath(t), Options{})
	fired := func() bool {
		select {
		case <-s.Notify():
			return true
		default:
			return false
		}
	}
	if fired() {
		t.Fatal("Notify fired on an empty new store")
	}
	steps := []struct {
		name string
		op   func() error
		want bool
	}{
		{"push", func() error { return s.Push(Message{Topic: "t"}) }, true},
		{"admit without messages", func() error { _, _, err := s.Admit(Entry{ID: "a"}); return err }, false},
		{"duplicate admit", func() error { _, _, err := s.Admit(Entry{ID: "a"}, Message{Topic: "t"}); return err }, false},
		{"finish with result", func() error { return s.Finish("a", protocol.StateSucceeded, nil, Message{Topic: "r"}) }, true},
		{"session", func() error { _, err := s.NextSession(); return err }, false},
		{"push twice (capacity 1)", func() error {
			if err := s.Push(Message{Topic: "t"}); err != nil {
				return err
			}
			return s.Push(Message{Topic: "t"})
		}, true},
	}
	for _, st := range steps {
		if err := st.op(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		// The signal is sent before the operation returns.
		if got := fired(); got != st.want {
			t.Errorf("%s: Notify fired = %v, want %v", st.name, got, st.want)
		}
	}
	s = reopen(t, s, Options{})
	if !fired() {
		t.Error("Notify did not fire at Open with a non-empty outbox")
	}
}

// TestGroupCommit checks that writers queued behind a commit share one
// transaction and that one failing writer does not fail the others.
func TestGroupCommit(t *testing.T) {
	s := open(t, statePath(t), Options{})
	release := make(chan struct{})
	entered := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		err := s.update(func(w *wtx) error {
			close(entered)
			<-release
			return w.put(w.tx.Bucket(bucketMeta), []byte("first"), []byte("1"))
		})
		if err != nil {
			t.Error(err)
		}
	})
	<-entered
	const n = 10
	boom := errors.New("boom")
	errs := make([]error, n)
	txIDs := make([]int, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = s.update(func(w *wtx) error {
				txIDs[i] = w.tx.ID()
				if err := w.put(w.tx.Bucket(bucketMeta), fmt.Appendf(nil, "k%d", i), []byte("v")); err != nil {
					return err
				}
				if i == 3 {
					return boom // after a write: the group is retried one by one
				}
				return nil
			})
		})
	}
	waitFor(t, "writers to queue", 5*time.Second, func() bool {
		s.qmu.Lock()
		defer s.qmu.Unlock()
		return len(s.queue) == n
	})
	close(release)
	wg.Wait()
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		for i := range n {
			got := b.Get(fmt.Appendf(nil, "k%d", i)) != nil
			if i == 3 {
				if !errors.Is(errs[i], boom) || got {
					t.Errorf("failing writer: err %v, key stored %v", errs[i], got)
				}
				continue
			}
			if errs[i] != nil || !got {
				t.Errorf("writer %d: err %v, key stored %v", i, errs[i], got)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, s)

	// Without a failure, queued writers share one transaction.
	release, entered = make(chan struct{}), make(chan struct{})
	wg.Go(func() {
		_ = s.update(func(*wtx) error { close(entered); <-release; return nil })
	})
	<-entered
	for i := range n {
		wg.Go(func() {
			errs[i] = s.update(func(w *wtx) error { txIDs[i] = w.tx.ID(); return nil })
		})
	}
	waitFor(t, "writers to queue", 5*time.Second, func() bool {
		s.qmu.Lock()
		defer s.qmu.Unlock()
		return len(s.queue) == n
	})
	close(release)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || txIDs[i] != txIDs[0] {
			t.Errorf("writer %d: err %v, tx %d (first writer's tx %d)", i, errs[i], txIDs[i], txIDs[0])
		}
	}
}

func TestPanicInTransactionIsAnError(t *testing.T) {
	s := open(t, statePath(t), Options{})
	err := s.update(func(w *wtx) error {
		if err := w.put(w.tx.Bucket(bucketMeta), []byte("x"), []byte("y")); err != nil {
			return err
		}
		panic("bad page")
	})
	if err == nil || !strings.Contains(err.Error(), "bad page") {
		t.Fatalf("update = %v; want the panic as an error", err)
	}
	// The transaction was rolled back and the store still works.
	if n, err := s.NextSession(); err != nil || n != 1 {
		t.Fatalf("NextSession after panic = %d, %v", n, err)
	}
	_ = s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta).Get([]byte("x")) != nil {
			t.Error("write of the panicking transaction was committed")
		}
		return nil
	})
}

// TestFileFull fills a size-capped file: the failing writes return errors,
// the store stays usable and consistent, and everything acknowledged is
// there after reopening.
func TestFileFull(t *testing.T) {
	opts := Options{MaxFileBytes: 1 << 20, OutboxMaxMessages: 1 << 20, OutboxMaxBytes: 1 << 30}
	s := open(t, statePath(t), opts)
	payload := bytes.Repeat([]byte("p"), 8<<10)
	stored := 0
	var err error
	for stored < 1000 {
		if err = s.Push(Message{Topic: "t", Payload: payload}); err != nil {
			break
		}
		stored++
	}
	if !errors.Is(err, berrors.ErrMaxSizeReached) {
		t.Fatalf("Push after %d messages: %v; want the file-size error", stored, err)
	}
	if _, _, err := s.Admit(Entry{ID: "big", Payload: bytes.Repeat(payload, 20)}); err == nil {
		t.Fatal("Admit of a big entry into a full file succeeded")
	}
	if _, ok, err := s.Get("big"); ok || err != nil {
		t.Fatalf("failed Admit left an entry: %v %v", ok, err)
	}
	if got := s.OutboxLen(); got != stored {
		t.Fatalf("OutboxLen = %d, want %d", got, stored)
	}
	checkConsistent(t, s)

	// Deleting messages frees space for new writes.
	msgs, err := s.Pending(stored / 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if err := s.Ack(m.Seq); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.NextSession(); err != nil { // writes the acks
		t.Fatal(err)
	}
	if err := s.Push(Message{Topic: "t", Payload: payload}); err != nil {
		t.Fatalf("Push after freeing space: %v", err)
	}
	want := stored - len(msgs) + 1
	s = reopen(t, s, opts)
	checkConsistent(t, s)
	if got := s.OutboxLen(); got != want {
		t.Fatalf("after reopen OutboxLen = %d, want %d", got, want)
	}
}

// TestCorruptPageNeverPanics overwrites each page of a valid file in turn:
// Open either fails with ErrCorrupt or gives a store whose methods return
// errors or results, never a panic or a crash.
func TestCorruptPageNeverPanics(t *testing.T) {
	path, ps := validFile(t)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(3, 4))
	fills := map[string]func([]byte){
		"random": func(b []byte) {
			for i := range b {
				b[i] = byte(rnd.Uint32())
			}
		},
		"zero":   func(b []byte) { clear(b) },
		"header": func(b []byte) { b[8], b[10], b[12] = byte(rnd.Uint32()), 0xff, byte(rnd.Uint32()) },
	}
	opened, failed := 0, 0
	for page := 0; page < len(orig)/ps; page++ {
		for name, fill := range fills {
			data := bytes.Clone(orig)
			fill(data[page*ps : (page+1)*ps])
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{})
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("page %d %s: %v; want ErrCorrupt", page, name, err)
				}
				failed++
				continue
			}
			opened++
			_, _ = s.Unfinished()
			_, _ = s.Pending(100)
			_, _, _ = s.Get("cmd-007")
			_, _, _ = s.Admit(Entry{ID: "new"}, Message{Topic: "t"})
			_, _ = s.Prune(time.Now().Add(100 * time.Hour))
			if err := s.Close(); err != nil {
				t.Errorf("page %d %s: close: %v", page, name, err)
			}
		}
	}
	t.Logf("%d pages: %d corrupt files refused, %d opened", len(orig)/ps, failed, opened)
	if failed == 0 {
		t.Error("no corruption was detected")
	}
}
