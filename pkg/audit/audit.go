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

	path     string
	size     int64
	maxBytes int64
	keep     int
}

// Rotation defaults: the log is rotated at DefaultMaxBytes, keeping
// DefaultKeep older files (path.1 the newest … path.N the oldest).
const (
	DefaultMaxBytes = 10 << 20
	DefaultKeep     = 10
)

// Open opens the audit log at path with the default rotation.
func Open(path string) (*Log, error) { return OpenRotating(path, DefaultMaxBytes, DefaultKeep) }

// OpenRotating opens (creating with mode 0600) the audit log at path and
// reads the hash of its last line to continue the chain. When the file
// would grow past maxBytes it is renamed path.1 (older ones shift up to
// path.keep, the oldest dropped) and a new file continues the chain: its
// first record's prev is the hash of path.1's last line.
func OpenRotating(path string, maxBytes int64, keep int) (*Log, error) {
	l, err := open(path)
	if err != nil {
		return nil, err
	}
	l.path, l.maxBytes, l.keep = path, maxBytes, max(keep, 1)
	return l, nil
}

func open(path string) (*Log, error) {
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
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	return &Log{f: f, prev: prev, size: st.Size()}, nil
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
	if l.maxBytes > 0 && l.size > 0 && l.size+int64(len(line)) > l.maxBytes {
		if err := l.rotate(); err != nil {
			return nil, fmt.Errorf("audit: rotate: %w", err)
		}
	}
	n, err := l.f.Write(line)
	l.size += int64(n)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	out := bytes.Clone(line[:len(line)-1])
	l.prev = hashLine(out)
	return out, nil
}

// rotate moves the current file to path.1 (shifting older ones) and opens
// a new one. l.mu is held.
func (l *Log) rotate() error {
	if err := l.f.Sync(); err != nil {
		return err
	}
	if err := l.f.Close(); err != nil {
		return err
	}
	_ = os.Remove(fmt.Sprintf("%s.%d", l.path, l.keep))
	for i := l.keep - 1; i >= 1; i-- {
		if err := os.Rename(fmt.Sprintf("%s.%d", l.path, i), fmt.Sprintf("%s.%d", l.path, i+1)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return err
	}
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE|os.O_APPEND|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	l.f, l.size = f, 0
	return nil
}

// Files returns the log's files, oldest first (rotated ones, then path),
// as VerifyFiles wants them.
func Files(path string) []string {
	var out []string
	for i := 1; ; i++ {
		p := fmt.Sprintf("%s.%d", path, i)
		if _, err := os.Stat(p); err != nil {
			break
		}
		out = append([]string{p}, out...)
	}
	return append(out, path)
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
	prev := ""
	return verify(r, &prev)
}

// VerifyFiles checks the chain across files given oldest first (see
// Files). The first record of the first file may continue a chain whose
// older files were rotated away; every later link must hold. Errors name
// the file and line.
func VerifyFiles(paths ...string) (int, error) {
	var prev *string
	total := 0
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return total, err
		}
		n, err := verify(f, prev)
		f.Close()
		total += n
		if err != nil {
			return total, fmt.Errorf("%s: %w", p, err)
		}
		if h, err := lastHash(p); err == nil && h != "" {
			prev = &h
		}
	}
	return total, nil
}

func lastHash(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h, _, err := lastLineHash(f)
	return h, err
}

// verify checks the chain of one file; prev nil accepts whatever the first
// record links to.
func verify(r io.Reader, want *string) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	n := 0
	var prev string
	for sc.Scan() {
		n++
		line := sc.Bytes()
		var rec struct {
			Prev string `json:"prev"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			return n - 1, fmt.Errorf("line %d: not a JSON record: %w", n, err)
		}
		switch {
		case n == 1 && want == nil:
		case n == 1 && rec.Prev != *want:
			return 0, fmt.Errorf("line 1: chain broken (prev hash does not match the record before this file)")
		case n > 1 && rec.Prev != prev:
			return n - 1, fmt.Errorf("line %d: chain broken (prev hash does not match line %d)", n, n-1)
		}
		prev = hashLine(line)
	}
	if err := sc.Err(); err != nil {
		return n, fmt.Errorf("line %d: %w", n+1, err)
	}
	return n, nil
}
