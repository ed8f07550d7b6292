package state

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// runOSHelper runs the "diskfull" helper: with RLIMIT_FSIZE just above the
// file's size, writes fail with EFBIG as on a full disk.
func runOSHelper(mode, path string, say func(string, ...any)) (bool, error) {
	if mode != "diskfull" {
		return false, nil
	}
	signal.Ignore(syscall.SIGXFSZ) // get EFBIG instead of being killed
	s, err := Open(path, Options{OutboxMaxMessages: 1 << 20, OutboxMaxBytes: 1 << 30})
	if err != nil {
		return true, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return true, err
	}
	limit := uint64(fi.Size()) + 512<<10
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: limit, Max: limit}); err != nil {
		return true, err
	}
	say("ready")
	payload := bytes.Repeat([]byte("x"), 8<<10)
	for i := 0; ; i++ {
		topic := fmt.Sprintf("m%d", i)
		if err := s.Push(Message{Topic: topic, Payload: payload}); err != nil {
			say("ERR %v", err)
			break
		}
		say("P %s", topic)
		if i == 10000 {
			return true, errors.New("no write error up to the file size limit")
		}
	}
	// Reads still work, and acks are written by Close.
	msgs, err := s.Pending(5)
	if err != nil {
		return true, err
	}
	for _, m := range msgs {
		if err := s.Ack(m.Seq); err != nil {
			return true, err
		}
		say("K %s", m.Topic)
	}
	return true, s.Close()
}

func TestDiskFull(t *testing.T) {
	path := statePath(t)
	s := open(t, path, Options{})
	if _, err := s.NextSession(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cmd, sc, _ := helper(t, "diskfull", path)
	pushed := map[string]bool{}
	var failure string
	for sc.Scan() {
		kind, arg, _ := strings.Cut(sc.Text(), " ")
		switch kind {
		case "P":
			pushed[arg] = true
		case "K":
			delete(pushed, arg)
		case "ERR":
			failure = arg
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	if !strings.Contains(failure, "file too large") || len(pushed) < 10 {
		t.Fatalf("helper stored %d messages, then: %q; want a 'file too large' error", len(pushed), failure)
	}
	s = open(t, path, Options{OutboxMaxMessages: 1 << 20, OutboxMaxBytes: 1 << 30})
	checkConsistent(t, s)
	msgs, err := s.Pending(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != len(pushed) {
		t.Errorf("after reopen: %d messages, want %d", len(msgs), len(pushed))
	}
	for _, m := range msgs {
		if !pushed[m.Topic] {
			t.Errorf("unexpected message %s", m.Topic)
		}
	}
	if n, err := s.NextSession(); err != nil || n != 2 {
		t.Errorf("NextSession = %d, %v; want 2", n, err)
	}
}
