package audit_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/audit"
	"github.com/mqagent/mqagent/pkg/protocol"
)

func record(i int) *protocol.Audit {
	return &protocol.Audit{
		V:        protocol.Version,
		TS:       protocol.Time{Time: time.Date(2026, 11, 25, 10, 0, i, 0, time.UTC)},
		Host:     "web-01",
		ID:       fmt.Sprintf("cmd-%d", i),
		Kind:     protocol.KindExec,
		Event:    protocol.EventReceived,
		Decision: protocol.DecisionAccepted,
		Operator: "alice <ops&co>",
		Summary:  "uname -a",
	}
}

func open(t *testing.T, path string) *audit.Log {
	t.Helper()
	l, err := audit.Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// writeLog appends n records to a new log at path and returns the lines.
func writeLog(t *testing.T, path string, n int) [][]byte {
	t.Helper()
	l, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines [][]byte
	for i := range n {
		line, err := l.Append(record(i))
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, line)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return lines
}

func readLines(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		t.Fatalf("log does not end with a newline: %q", b)
	}
	return bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
}

func TestAppendChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := open(t, path)
	var lines [][]byte
	for i := range 3 {
		rec := record(i)
		line, err := l.Append(rec)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.ContainsRune(line, '\n') {
			t.Errorf("returned line contains a newline: %q", line)
		}
		want := ""
		if i > 0 {
			want = sha(lines[i-1])
		}
		if rec.Prev != want {
			t.Errorf("record %d: rec.Prev = %q, want %q", i+1, rec.Prev, want)
		}
		var got protocol.Audit
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatalf("returned line is not JSON: %v", err)
		}
		if got.Prev != want || got.ID != rec.ID || got.Operator != rec.Operator || got.V != 1 {
			t.Errorf("record %d decoded as %+v", i+1, got)
		}
		lines = append(lines, line)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	onDisk := readLines(t, path)
	if len(onDisk) != 3 {
		t.Fatalf("%d lines on disk, want 3", len(onDisk))
	}
	for i := range onDisk {
		if !bytes.Equal(onDisk[i], lines[i]) {
			t.Errorf("line %d on disk %q, returned %q", i+1, onDisk[i], lines[i])
		}
	}
	if bytes.Contains(onDisk[0], []byte(`"prev"`)) {
		t.Errorf("first record carries a prev: %s", onDisk[0])
	}
	var second protocol.Audit
	if err := json.Unmarshal(onDisk[1], &second); err != nil {
		t.Fatal(err)
	}
	if second.Prev != sha(onDisk[0]) {
		t.Errorf("record 2 prev = %q, want sha256 of line 1 = %q", second.Prev, sha(onDisk[0]))
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := audit.Verify(f); n != 3 || err != nil {
		t.Errorf("Verify = %d, %v; want 3, nil", n, err)
	}
}

func TestOpenContinuesChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	first := writeLog(t, path, 2)

	l := open(t, path)
	rec := record(2)
	if _, err := l.Append(rec); err != nil {
		t.Fatal(err)
	}
	if rec.Prev != sha(first[1]) {
		t.Errorf("after reopen, prev = %q, want sha256 of the last line %q", rec.Prev, sha(first[1]))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// And once more, to be sure reopen picks the newest line.
	l2 := open(t, path)
	if _, err := l2.Append(record(3)); err != nil {
		t.Fatal(err)
	}
	if err := l2.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := verifyFile(t, path); n != 4 || err != nil {
		t.Errorf("Verify = %d, %v; want 4, nil", n, err)
	}
}

// A crash in the middle of a write leaves a last line without a newline.
// The next record must start on a line of its own, and Verify must point
// at the torn line.
func TestOpenAfterTornWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	writeLog(t, path, 2)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"v":1,"ts":"2026-11-25T10:00:`); err != nil {
		t.Fatal(err)
	}
	f.Close()

	l := open(t, path)
	line, err := l.Append(record(9))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != 4 || !bytes.Equal(lines[3], line) {
		t.Fatalf("lines after torn write: %q", lines)
	}
	if _, err := verifyFile(t, path); err == nil || !strings.HasPrefix(err.Error(), "line 3:") {
		t.Errorf("Verify error = %v, want one naming line 3 (the torn line)", err)
	}
}

func TestOpenEmptyFileAndDirs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "audit.log")
	l := open(t, path) // creates the missing directories
	rec := record(0)
	if _, err := l.Append(rec); err != nil {
		t.Fatal(err)
	}
	if rec.Prev != "" {
		t.Errorf("first record of a new log has prev %q", rec.Prev)
	}
	// An existing empty file starts a new chain too.
	empty := filepath.Join(t.TempDir(), "empty.log")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rec = record(0)
	if _, err := open(t, empty).Append(rec); err != nil || rec.Prev != "" {
		t.Errorf("empty file: prev %q, err %v", rec.Prev, err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := audit.Open(dir); err == nil {
		t.Error("Open of a directory succeeded")
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Open(filepath.Join(file, "audit.log")); err == nil {
		t.Error("Open under a regular file succeeded")
	}
}

func TestFileMode(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permission bits on Windows")
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	l := open(t, path)
	if _, err := l.Append(record(0)); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := st.Mode().Perm(); mode != 0o600 {
		t.Errorf("audit log mode = %v, want 0600", mode)
	}
}

func verifyFile(t *testing.T, path string) (int, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return audit.Verify(f)
}

func join(lines [][]byte) []byte {
	var b bytes.Buffer
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func TestVerify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	orig := writeLog(t, path, 5)
	edit := func(f func(ls [][]byte) [][]byte) []byte {
		ls := make([][]byte, len(orig))
		for i := range orig {
			ls[i] = bytes.Clone(orig[i])
		}
		return join(f(ls))
	}
	tests := []struct {
		name  string
		log   []byte
		n     int    // records read
		where string // error prefix; "" = valid
	}{
		{"good log", join(orig), 5, ""},
		{"empty log", nil, 0, ""},
		{"no final newline", bytes.TrimSuffix(join(orig), []byte("\n")), 5, ""},
		{"first line alone", join(orig[:1]), 1, ""},
		{"truncated at the end (undetectable)", join(orig[:3]), 3, ""},
		{"edited line 2", edit(func(ls [][]byte) [][]byte {
			ls[1] = bytes.Replace(ls[1], []byte("cmd-1"), []byte("cmd-X"), 1)
			return ls
		}), 2, "line 3:"},
		{"edited prev of line 4", edit(func(ls [][]byte) [][]byte {
			ls[3] = bytes.Replace(ls[3], []byte(`"prev":"`), []byte(`"prev":"0`), 1)
			return ls
		}), 3, "line 4:"},
		{"edited first line", edit(func(ls [][]byte) [][]byte {
			ls[0] = bytes.Replace(ls[0], []byte("accepted"), []byte("rejected"), 1)
			return ls
		}), 1, "line 2:"},
		{"prev added to line 1", edit(func(ls [][]byte) [][]byte {
			ls[0] = bytes.Replace(ls[0], []byte(`{"v":1,`), []byte(`{"v":1,"prev":"00",`), 1)
			return ls
		}), 0, "line 1:"},
		{"deleted line 3", edit(func(ls [][]byte) [][]byte { return append(ls[:2], ls[3:]...) }), 2, "line 3:"},
		{"deleted line 1", edit(func(ls [][]byte) [][]byte { return ls[1:] }), 0, "line 1:"},
		{"swapped lines 2 and 3", edit(func(ls [][]byte) [][]byte {
			ls[1], ls[2] = ls[2], ls[1]
			return ls
		}), 1, "line 2:"},
		{"non-JSON line 4", edit(func(ls [][]byte) [][]byte {
			ls[3] = []byte("hello, auditor")
			return ls
		}), 3, "line 4:"},
		{"blank line inserted", edit(func(ls [][]byte) [][]byte {
			return append(ls[:2], append([][]byte{{}}, ls[2:]...)...)
		}), 2, "line 3:"},
		{"duplicated line", edit(func(ls [][]byte) [][]byte {
			return append(ls[:3], append([][]byte{ls[2]}, ls[3:]...)...)
		}), 3, "line 4:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := audit.Verify(bytes.NewReader(tc.log))
			if tc.where == "" {
				if err != nil || n != tc.n {
					t.Fatalf("Verify = %d, %v; want %d, nil", n, err, tc.n)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify passed a bad log (%d records)", n)
			}
			if !strings.HasPrefix(err.Error(), tc.where) {
				t.Errorf("Verify error %q, want it to start with %q", err, tc.where)
			}
			if n != tc.n {
				t.Errorf("Verify read %d good records, want %d", n, tc.n)
			}
		})
	}
}

func TestConcurrentAppend(t *testing.T) {
	const goroutines, each = 16, 25
	path := filepath.Join(t.TempDir(), "audit.log")
	l := open(t, path)
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := l.Append(record(g*each + i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	n, err := verifyFile(t, path)
	if err != nil || n != goroutines*each {
		t.Fatalf("Verify = %d, %v; want %d, nil", n, err, goroutines*each)
	}
	seen := map[string]bool{}
	for _, line := range readLines(t, path) {
		var r protocol.Audit
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		if seen[r.ID] {
			t.Errorf("record %s written twice", r.ID)
		}
		seen[r.ID] = true
	}
	if len(seen) != goroutines*each {
		t.Errorf("%d distinct records, want %d", len(seen), goroutines*each)
	}
}

func TestCloseTwice(t *testing.T) {
	l, err := audit.Open(filepath.Join(t.TempDir(), "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err == nil {
		t.Error("second Close returned nil")
	}
	if _, err := l.Append(record(0)); err == nil {
		t.Error("Append after Close succeeded")
	}
}
