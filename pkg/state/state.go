// Package state is the agent's crash-safe on-disk state, kept in one bbolt
// file with fsync'd transactions: the session counter, the command journal
// (dedup of command ids across restarts, commands queued across a restart,
// and the final result of every command for re-publishing and result.get),
// and the outbox (results and audit records waiting to be published while
// the broker is unreachable).
//
// Layout of the file, one bucket per concern:
//
//	meta     "session" -> big-endian uint64
//	journal  command id -> encoded Entry
//	expiry   big-endian KeepUntil (unix ns) + id -> empty (index used by Prune)
//	outbox   big-endian seq -> encoded Message
//
// Every method that changes the file commits one fsync'd transaction before
// it returns. Concurrent writers are grouped into one transaction (group
// commit) without the fixed delay of bbolt's DB.Batch, so a lone caller
// pays exactly one commit and many callers share commits. Outbox acks are
// kept in memory and written with the next transaction (a crash can only
// re-send an acked message, which at-least-once delivery allows).
//
// The journal methods (Admit, SetRunning, Finish, FinishEntry, Record) take
// the outbox messages that go with the change and store both in the same
// transaction. The outbox never makes them lose the journal change: a
// droppable message that does not fit is dropped (counted in
// Stats.OutboxDropped), and a non-droppable one refused at the hard cap
// makes the method return an error wrapping ErrOutboxFull after the
// journal change was committed.
//
// Open checks an existing file (meta pages, size, free list, every
// reachable page, bbolt's consistency check) before writing to it, so a
// damaged file is an error wrapping ErrCorrupt, never a panic.
package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Defaults for Options fields left zero.
const (
	DefaultOutboxMaxMessages = 10000
	DefaultOutboxMaxBytes    = 64 << 20
	// DefaultKeep is how long Finish keeps an entry it had to insert:
	// security.default_ttl (1 h) + security.max_clock_skew (5 min).
	DefaultKeep = 65 * time.Minute
)

// lockTimeout bounds how long Open waits for another process's lock.
const lockTimeout = time.Second

// Errors returned by the store. Check them with errors.Is.
var (
	// ErrOutboxFull means one or more messages were not stored in the
	// outbox because it is over its limits. Everything else the call does
	// (for example the journal change of Finish) was committed, so a
	// caller must not treat it as a failed journal write.
	ErrOutboxFull = errors.New("outbox full")
	// ErrNotFound is returned for an id that is not in the journal.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyFinal is returned by SetRunning, Finish and FinishEntry for
	// a command that already has a final state; nothing is written, so a
	// command keeps exactly one final state.
	ErrAlreadyFinal = errors.New("command already has a final state")
	// ErrLocked means another process has the state file open.
	ErrLocked = errors.New("state file is locked by another agent process")
	// ErrCorrupt means the state file is not a valid state file.
	ErrCorrupt = errors.New("state file is corrupt")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("state store is closed")
)

// Options tune a Store. Zero values mean the defaults.
type Options struct {
	// OutboxMaxMessages is the outbox limit in messages (default 10000).
	OutboxMaxMessages int
	// OutboxMaxBytes is the outbox limit in encoded bytes (default 64 MiB).
	OutboxMaxBytes int64
	// DefaultKeep is how long Finish keeps an entry it inserts because the
	// id was not in the journal (default DefaultKeep).
	DefaultKeep time.Duration
	// MaxFileBytes, if > 0, caps the size of the state file: a write that
	// would grow the file beyond it fails as a full disk would.
	MaxFileBytes int64
	// NoSync skips the fsync of every transaction (bbolt's NoSync): a
	// machine crash can lose or tear recent writes. Never set by the agent;
	// the swarm simulator (test/swarm) uses it for hundreds of simulated
	// hosts that would otherwise share one disk's fsyncs.
	NoSync bool
	// Logger receives warnings (evicted telemetry, recovery after a failed
	// commit); nil discards them.
	Logger *slog.Logger
}

// Bucket names.
var (
	bucketMeta    = []byte("meta")
	bucketJournal = []byte("journal")
	bucketExpiry  = []byte("expiry")
	bucketOutbox  = []byte("outbox")
	keySession    = []byte("session")
)

// Store is the agent's on-disk state. Safe for concurrent use.
type Store struct {
	path string
	db   *bolt.DB
	opts Options
	log  *slog.Logger

	notify chan struct{}

	// Group commit: queue of writers waiting for the current leader.
	qmu     sync.Mutex
	queue   []*call
	leading bool
	closed  bool

	closeOnce sync.Once
	closeErr  error

	// mu guards the in-memory mirror below. It is never held across a
	// bbolt call that can block (Begin, Commit, Close).
	mu      sync.Mutex
	out     outboxIndex
	journal int
}

// Open opens (creating with mode 0600; parent directory created 0700) the
// state file at path. If another process holds it, Open fails within about
// a second with an error wrapping ErrLocked. A file that is not a valid
// state file gives an error wrapping ErrCorrupt that names the path.
func Open(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("open state file: empty path")
	}
	if opts.OutboxMaxMessages <= 0 {
		opts.OutboxMaxMessages = DefaultOutboxMaxMessages
	}
	if opts.OutboxMaxBytes <= 0 {
		opts.OutboxMaxBytes = DefaultOutboxMaxBytes
	}
	if opts.DefaultKeep <= 0 {
		opts.DefaultKeep = DefaultKeep
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	if fi, err := os.Stat(path); err == nil {
		if fi.IsDir() {
			return nil, fmt.Errorf("open state file %s: is a directory", path)
		}
		// Check an existing file before bbolt opens it for writing: bbolt
		// must not write into a damaged file, and it panics on some damage
		// in a way that leaves the file mapped and locked.
		if fi.Size() > 0 {
			if err := validateFile(path); err != nil {
				return nil, err
			}
		}
	}

	db, err := openBolt(path, opts)
	if err != nil {
		return nil, err
	}
	s := &Store{
		path:   path,
		db:     db,
		opts:   opts,
		log:    lg,
		notify: make(chan struct{}, 1),
		out:    newOutboxIndex(),
	}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if s.out.count > 0 {
		s.signal()
	}
	return s, nil
}

// openBolt opens the bbolt file, turning lock timeouts, invalid files and
// panics on corrupt data into errors.
func openBolt(path string, opts Options) (db *bolt.DB, err error) {
	// bbolt does not close its file when it panics on a corrupt file; keep
	// it to release the lock.
	var file *os.File
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if file != nil {
				_ = file.Close()
			}
			db, err = nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, r)
		}
	}()
	bo := &bolt.Options{
		Timeout:      lockTimeout,
		FreelistType: bolt.FreelistMapType,
		MaxSize:      int(min(opts.MaxFileBytes, math.MaxInt)),
		NoSync:       opts.NoSync,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			file = f
			return f, err
		},
	}
	db, err = bolt.Open(path, 0o600, bo)
	if err != nil {
		return nil, boltOpenErr(path, err)
	}
	return db, nil
}

// isTooSmall reports bbolt's error for a file shorter than two pages, for
// which it has no sentinel.
func isTooSmall(err error) bool { return strings.Contains(err.Error(), "file size too small") }

// init creates the buckets, checks the file's consistency and loads the
// in-memory counters.
func (s *Store) init() (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: %v", ErrCorrupt, s.path, r)
		}
	}()
	err = s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketJournal, bucketExpiry, bucketOutbox} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, berrors.ErrIncompatibleValue) {
			return fmt.Errorf("%w: %s: %w", ErrCorrupt, s.path, err)
		}
		return fmt.Errorf("initialise state file %s: %w", s.path, err)
	}
	return s.resync()
}

// Close flushes outstanding acks and closes the file. Calls after the first
// return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		var flushErr error
		if s.pendingAcks() > 0 {
			flushErr = s.update(func(*wtx) error { return nil })
		}
		s.qmu.Lock()
		s.closed = true
		s.qmu.Unlock()
		// bbolt's Close waits for the transaction in progress, if any.
		closeErr := s.db.Close()
		if closeErr != nil {
			closeErr = fmt.Errorf("close state file %s: %w", s.path, closeErr)
		}
		s.closeErr = errors.Join(flushErr, closeErr)
	})
	return s.closeErr
}

// Path returns the path of the state file.
func (s *Store) Path() string { return s.path }

// NextSession increments and persists the session counter and returns the
// new value (the first call on a new file returns 1).
func (s *Store) NextSession() (uint64, error) {
	var n uint64
	err := s.update(func(w *wtx) error {
		b := w.tx.Bucket(bucketMeta)
		n = 0
		if v := b.Get(keySession); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("%w: %s: session counter has %d bytes", ErrCorrupt, s.path, len(v))
			}
			n = binary.BigEndian.Uint64(v)
		}
		n++
		return w.put(b, keySession, binary.BigEndian.AppendUint64(nil, n))
	})
	if err != nil {
		return 0, fmt.Errorf("next session: %w", err)
	}
	return n, nil
}

// Stats for the agent's health metrics.
type Stats struct {
	OutboxMessages int    // messages waiting in the outbox
	OutboxBytes    int64  // their encoded size
	OutboxDropped  uint64 // droppable messages refused or evicted since Open
	Journal        int    // entries in the journal
}

// Stats returns the current counters. It does not touch the disk.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		OutboxMessages: s.out.count,
		OutboxBytes:    s.out.bytes,
		OutboxDropped:  s.out.dropped,
		Journal:        s.journal,
	}
}

// view runs a read transaction, turning panics on corrupt data into errors.
func (s *Store) view(fn func(tx *bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = s.panicErr(r)
		}
	}()
	return s.dbErr(s.db.View(fn))
}

// dbErr maps bbolt errors to the store's.
func (s *Store) dbErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

func (s *Store) panicErr(r any) error {
	return fmt.Errorf("%w: %s: %v", ErrCorrupt, s.path, r)
}

// signal wakes a waiter on Notify without blocking.
func (s *Store) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// resync reloads the in-memory mirror (journal size, outbox index) from the
// committed file. It runs at Open and after a transaction was rolled back.
func (s *Store) resync() error {
	return s.view(func(tx *bolt.Tx) error {
		jn := tx.Bucket(bucketJournal).Stats().KeyN
		ob := tx.Bucket(bucketOutbox)
		c := ob.Cursor()
		s.mu.Lock()
		defer s.mu.Unlock()
		s.journal = jn
		o := &s.out
		o.live = make(map[uint64]msgInfo)
		o.droppable = o.droppable[:0]
		o.count, o.bytes = 0, 0
		onDisk := make(map[uint64]struct{}, len(o.acked))
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 8 {
				return fmt.Errorf("%w: %s: outbox key %x", ErrCorrupt, s.path, k)
			}
			seq := binary.BigEndian.Uint64(k)
			if seq >= o.next {
				o.next = seq + 1
			}
			if _, ok := o.acked[seq]; ok {
				onDisk[seq] = struct{}{}
				continue
			}
			flags, err := messageFlags(v)
			if err != nil {
				return fmt.Errorf("%w: %s: outbox message %d: %w", ErrCorrupt, s.path, seq, err)
			}
			o.add(seq, msgInfo{size: int64(len(v)), droppable: flags&flagDroppable != 0})
		}
		for seq := range o.acked {
			if _, ok := onDisk[seq]; !ok {
				delete(o.acked, seq)
			}
		}
		return nil
	})
}
