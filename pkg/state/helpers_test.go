package state

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

// Environment of the helper subprocess (the test binary re-executed).
const (
	envHelper = "MQAGENT_STATE_TEST_HELPER"
	envPath   = "MQAGENT_STATE_TEST_PATH"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envHelper); mode != "" {
		if err := runHelper(mode, os.Getenv(envPath)); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m) // the store starts no goroutines of its own
}

// runHelper is the body of a helper subprocess. Every line it prints is
// written only after the operation it reports has returned.
func runHelper(mode, path string) error {
	say := func(format string, args ...any) {
		// One short Write per line: atomic on a pipe.
		_, _ = os.Stdout.Write([]byte(fmt.Sprintf(format, args...) + "\n"))
	}
	switch mode {
	case "hold":
		s, err := Open(path, Options{})
		if err != nil {
			return err
		}
		say("ready")
		_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes stdin
		return s.Close()
	case "crash":
		s, err := Open(path, Options{})
		if err != nil {
			return err
		}
		say("ready")
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := 0; ; i++ {
					id := fmt.Sprintf("w%d-%d-%d", w, os.Getpid(), i)
					_, ok, err := s.Admit(Entry{ID: id, Kind: "exec", Payload: []byte(`{"id":"` + id + `"}`)},
						Message{Topic: "t/audit", Payload: []byte("received " + id), QoS: 1})
					if err != nil || !ok {
						say("error admit %s: %v %v", id, ok, err)
						return
					}
					say("A %s", id)
					if i%2 == 0 {
						continue
					}
					if err := s.Finish(id, protocol.StateSucceeded, []byte(`{"r":"`+id+`"}`),
						Message{Topic: "t/results/" + id, Payload: []byte("result " + id), QoS: 1}); err != nil {
						say("error finish %s: %v", id, err)
						return
					}
					say("F %s", id)
				}
			})
		}
		wg.Wait()
		return nil
	}
	if ok, err := runOSHelper(mode, path, say); ok {
		return err
	}
	return fmt.Errorf("unknown helper mode %q", mode)
}

// helper starts the test binary as a helper subprocess and waits for its
// "ready" line. The returned scanner reads its further output.
func helper(t *testing.T, mode, path string) (*exec.Cmd, *bufio.Scanner, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envHelper+"="+mode, envPath+"="+path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	ready := make(chan bool, 1)
	go func() { ready <- sc.Scan() && sc.Text() == "ready" }()
	select {
	case ok := <-ready:
		if !ok {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("helper %s did not start: %q", mode, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("helper %s: no ready line within 10s", mode)
	}
	return cmd, sc, stdin
}

// statePath returns a path for a state file in a fresh directory that does
// not exist yet (so Open must create it).
func statePath(t testing.TB) string {
	return filepath.Join(t.TempDir(), "data", "state.db")
}

// open opens path and closes it when the test ends.
func open(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// reopen closes s and opens its file again.
func reopen(t testing.TB, s *Store, opts Options) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	return open(t, s.path, opts)
}

// checkConsistent verifies the bbolt structure, the expiry index against
// the journal, and the in-memory counters against the file.
func checkConsistent(t testing.TB, s *Store) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check: %v", err)
		}
		j, ex := tx.Bucket(bucketJournal), tx.Bucket(bucketExpiry)
		n := 0
		err := j.ForEach(func(k, v []byte) error {
			n++
			e, err := decodeEntry(v, true)
			if err != nil {
				return fmt.Errorf("entry %q: %w", k, err)
			}
			if e.ID != string(k) {
				t.Errorf("entry key %q holds id %q", k, e.ID)
			}
			if ex.Get(expiryKey(e.KeepUntil, e.ID)) == nil {
				t.Errorf("entry %q has no expiry key", k)
			}
			if protocol.IsFinal(e.State) && len(e.Payload) > 0 {
				t.Errorf("final entry %q kept its payload", k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if got := ex.Stats().KeyN; got != n {
			t.Errorf("expiry index has %d keys, journal %d entries", got, n)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.journal != n {
			t.Errorf("JournalLen %d, file has %d entries", s.journal, n)
		}
		count, size := 0, int64(0)
		err = tx.Bucket(bucketOutbox).ForEach(func(k, v []byte) error {
			seq := seqFromKey(k)
			if _, acked := s.out.acked[seq]; acked {
				return nil
			}
			if _, err := decodeMessage(seq, v); err != nil {
				return fmt.Errorf("message %d: %w", seq, err)
			}
			if _, ok := s.out.live[seq]; !ok {
				t.Errorf("message %d on disk is not in the index", seq)
			}
			count++
			size += int64(len(v))
			return nil
		})
		if count != s.out.count || size != s.out.bytes || len(s.out.live) != count {
			t.Errorf("outbox index says %d msgs/%d bytes (%d live), file has %d/%d", s.out.count, s.out.bytes, len(s.out.live), count, size)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func seqFromKey(k []byte) uint64 {
	var seq uint64
	for _, b := range k {
		seq = seq<<8 | uint64(b)
	}
	return seq
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}
