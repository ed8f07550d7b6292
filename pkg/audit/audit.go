// Package audit keeps the agent's local, append-only audit log: one JSON
// record a line, each carrying the sha256 of the previous line, so that a
// deleted or edited line is detectable (Verify).
package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// Log is an open audit log. Safe for concurrent use.
type Log struct {
	mu   sync.Mutex
	f    *os.File
	prev string
	buf  bytes.Buffer
}

// Open opens (creating with mode 0600) the audit log at path and reads the
// hash of its last line to continue the chain.
func Open(path string) (*Log, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	prev, torn, err := lastLineHash(f)
	if err == nil && torn {
		// The last write was cut short (a crash): end that line so the
		// next record starts on its own line instead of being glued to it.
		_, err = f.Write([]byte{'\n'})
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	return &Log{f: f, prev: prev}, nil
}

// lastLineHash returns the hash of the file's last line, and whether the
// file ends without a newline.
func lastLineHash(f *os.File) (hash string, torn bool, err error) {
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return "", false, err
	}
	const tail = 1 << 20
	off := max(st.Size()-tail, 0)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
		return "", false, err
	}
	torn = b[len(b)-1] != '\n'
	b = bytes.TrimRight(b, "\n")
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	} else if off > 0 {
		return "", false, fmt.Errorf("last line longer than %d bytes", tail)
	}
	return hashLine(b), torn, nil
}

func hashLine(line []byte) string {
	h := sha256.Sum256(line)
	return hex.EncodeToString(h[:])
}

// Append sets rec.Prev, writes rec as one line and returns the line (without
// the newline) for publishing.
func (l *Log) Append(rec *protocol.Audit) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rec.Prev = l.prev
	l.buf.Reset()
	if err := json.NewEncoder(&l.buf).Encode(rec); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	line := l.buf.Bytes()
	if _, err := l.f.Write(line); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	out := bytes.Clone(line[:len(line)-1])
	l.prev = hashLine(out)
	return out, nil
}

// Sync flushes the log to disk.
func (l *Log) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Sync()
}

// Close syncs and closes the log.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	serr := l.f.Sync()
	if err := l.f.Close(); err != nil {
		return err
	}
	return serr
}

// Verify checks the hash chain of an audit log. It returns the number of
// records read and, when the chain is broken, an error naming the first bad
// line (1-based).
func Verify(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	prev, n := "", 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		var rec struct {
			Prev string `json:"prev"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			return n - 1, fmt.Errorf("line %d: not a JSON record: %w", n, err)
		}
		if rec.Prev != prev {
			return n - 1, fmt.Errorf("line %d: chain broken (prev hash does not match line %d)", n, n-1)
		}
		prev = hashLine(line)
	}
	if err := sc.Err(); err != nil {
		return n, fmt.Errorf("line %d: %w", n+1, err)
	}
	return n, nil
}
