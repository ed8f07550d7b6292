package state

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	bolt "go.etcd.io/bbolt"
)

// Entry is one command in the journal.
type Entry struct {
	ID    string `json:"id"`
	State string `json:"state"` // protocol.StateQueued, StateRunning, or a final state
	Kind  string `json:"kind,omitempty"`
	Topic string `json:"topic,omitempty"`
	// Payload is the exact bytes received; kept while not final (to
	// re-queue after restart), dropped once final.
	Payload  []byte    `json:"payload,omitempty"`
	Received time.Time `json:"received"`
	// KeepUntil: the entry (and so the dedup of its id) is kept at least
	// until then.
	KeepUntil time.Time       `json:"keep_until"`
	Proc      json.RawMessage `json:"proc,omitempty"`   // opaque process info while running
	Result    []byte          `json:"result,omitempty"` // final result JSON once final
}

// maxIDLen bounds a journal key; protocol ids are at most 64 bytes.
const maxIDLen = 1024

func validateID(id string) error {
	switch {
	case id == "":
		return errors.New("invalid command id: empty")
	case len(id) > maxIDLen:
		return fmt.Errorf("invalid command id: %d bytes, over %d", len(id), maxIDLen)
	}
	return nil
}

// validate checks e and normalises it for storage: an empty State becomes
// queued, a zero Received becomes now, and a final entry drops its Payload
// and Proc.
func (e *Entry) validate(now time.Time) error {
	if err := validateID(e.ID); err != nil {
		return err
	}
	if e.State == "" {
		e.State = protocol.StateQueued
	}
	if !knownState(e.State) {
		return fmt.Errorf("entry %s: unknown state %q", e.ID, e.State)
	}
	if len(e.Proc) > 0 && !json.Valid(e.Proc) {
		return fmt.Errorf("entry %s: proc is not valid JSON", e.ID)
	}
	if e.Received.IsZero() {
		e.Received = now
	}
	if protocol.IsFinal(e.State) {
		e.Payload, e.Proc = nil, nil
	}
	return nil
}

func knownState(st string) bool {
	return st == protocol.StateQueued || st == protocol.StateRunning || protocol.IsFinal(st)
}

// entryHeader is the part of an Entry stored as JSON; the payload and the
// result are stored raw after it, so they are never base64-encoded.
type entryHeader struct {
	ID        string          `json:"id"`
	State     string          `json:"state"`
	Kind      string          `json:"kind,omitempty"`
	Topic     string          `json:"topic,omitempty"`
	Received  time.Time       `json:"received"`
	KeepUntil time.Time       `json:"keep_until"`
	Proc      json.RawMessage `json:"proc,omitempty"`
}

// Encoded entry: format byte, then three uvarint-length-prefixed parts:
// JSON header, payload, result.
const entryFormat = 1

func encodeEntry(e *Entry) ([]byte, error) {
	hdr, err := json.Marshal(entryHeader{
		ID: e.ID, State: e.State, Kind: e.Kind, Topic: e.Topic,
		Received: e.Received, KeepUntil: e.KeepUntil, Proc: e.Proc,
	})
	if err != nil {
		return nil, fmt.Errorf("encode entry %s: %w", e.ID, err)
	}
	buf := make([]byte, 0, 1+3*binary.MaxVarintLen64+len(hdr)+len(e.Payload)+len(e.Result))
	buf = append(buf, entryFormat)
	for _, part := range [][]byte{hdr, e.Payload, e.Result} {
		buf = binary.AppendUvarint(buf, uint64(len(part)))
		buf = append(buf, part...)
	}
	return buf, nil
}

// entryParts splits an encoded entry without copying.
func entryParts(v []byte) (hdr, payload, result []byte, err error) {
	if len(v) == 0 || v[0] != entryFormat {
		return nil, nil, nil, errors.New("unknown entry encoding")
	}
	rest := v[1:]
	parts := make([][]byte, 3)
	for i := range parts {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > uint64(len(rest)-w) {
			return nil, nil, nil, errors.New("bad entry length")
		}
		parts[i] = rest[w : w+int(n)]
		rest = rest[w+int(n):]
	}
	if len(rest) != 0 {
		return nil, nil, nil, errors.New("trailing bytes after entry")
	}
	return parts[0], parts[1], parts[2], nil
}

// decodeEntry decodes v (copying it out of the transaction). With withBlobs
// false, Payload and Result are left empty.
func decodeEntry(v []byte, withBlobs bool) (Entry, error) {
	hdrb, payload, result, err := entryParts(v)
	if err != nil {
		return Entry{}, err
	}
	var h entryHeader
	if err := json.Unmarshal(hdrb, &h); err != nil {
		return Entry{}, fmt.Errorf("entry header: %w", err)
	}
	e := Entry{
		ID: h.ID, State: h.State, Kind: h.Kind, Topic: h.Topic,
		Received: h.Received, KeepUntil: h.KeepUntil, Proc: h.Proc,
	}
	if withBlobs {
		if len(payload) > 0 {
			e.Payload = bytes.Clone(payload)
		}
		if len(result) > 0 {
			e.Result = bytes.Clone(result)
		}
	}
	return e, nil
}

// expiryKey orders entries by KeepUntil for Prune: big-endian unix ns
// (clamped to [0, MaxInt64]) followed by the id.
func expiryKey(t time.Time, id string) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(id)), expiryNanos(t))
	return append(k, id...)
}

func expiryNanos(t time.Time) uint64 {
	switch {
	case t.Before(time.Unix(0, 0)):
		return 0
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return uint64(t.UnixNano())
}

// jtx gives journal operations inside a write transaction.
type jtx struct {
	w       *wtx
	journal *bolt.Bucket
	expiry  *bolt.Bucket
}

func (w *wtx) journal() jtx {
	return jtx{w: w, journal: w.tx.Bucket(bucketJournal), expiry: w.tx.Bucket(bucketExpiry)}
}

// get decodes the stored entry for id; ok is false if there is none.
func (j jtx) get(id string, withBlobs bool) (e Entry, ok bool, err error) {
	v := j.journal.Get([]byte(id))
	if v == nil {
		return Entry{}, false, nil
	}
	e, err = decodeEntry(v, withBlobs)
	if err != nil {
		return Entry{}, false, fmt.Errorf("%w: %s: journal entry %q: %w", ErrCorrupt, j.w.s.path, id, err)
	}
	return e, true, nil
}

// put stores e (already encoded as val); old is the entry it replaces, if
// any, so the expiry index can be kept in step.
func (j jtx) put(e *Entry, val []byte, old *Entry) error {
	if err := j.w.put(j.journal, []byte(e.ID), val); err != nil {
		return err
	}
	if old != nil {
		if expiryNanos(old.KeepUntil) == expiryNanos(e.KeepUntil) {
			return nil
		}
		if err := j.w.del(j.expiry, expiryKey(old.KeepUntil, old.ID)); err != nil {
			return err
		}
	} else {
		s := j.w.s
		s.mu.Lock()
		s.journal++
		s.mu.Unlock()
	}
	return j.w.put(j.expiry, expiryKey(e.KeepUntil, e.ID), nil)
}

// Admit inserts e if no entry with e.ID exists and appends out to the
// outbox, in one transaction. If an entry with that id exists it writes
// nothing and returns it with admitted=false. Otherwise it returns the
// stored entry (State defaults to queued, a zero Received to now) with
// admitted=true; if a non-droppable message of out did not fit in the
// outbox, the entry is still admitted and err wraps ErrOutboxFull.
func (s *Store) Admit(e Entry, out ...Message) (existing Entry, admitted bool, err error) {
	if err := e.validate(time.Now()); err != nil {
		return Entry{}, false, err
	}
	if err := validateMessages(out); err != nil {
		return Entry{}, false, err
	}
	val, err := encodeEntry(&e)
	if err != nil {
		return Entry{}, false, err
	}
	err = s.update(func(w *wtx) error {
		j := w.journal()
		old, found, err := j.get(e.ID, true)
		if err != nil {
			return err
		}
		if found {
			existing, admitted = old, false
			return nil
		}
		if err := j.put(&e, val, nil); err != nil {
			return err
		}
		existing, admitted = e, true
		return w.push(out, false)
	})
	switch {
	case err == nil:
		return existing, admitted, nil
	case errors.Is(err, ErrOutboxFull):
		return existing, admitted, fmt.Errorf("admit %s: %w", e.ID, err)
	}
	return Entry{}, false, fmt.Errorf("admit %s: %w", e.ID, err)
}

// SetRunning marks an existing entry running with proc info, appending out,
// in one transaction. An unknown id gives ErrNotFound, a final entry
// ErrAlreadyFinal; in both cases nothing is written. An error wrapping
// ErrOutboxFull means the entry was marked running but a non-droppable
// message of out did not fit.
func (s *Store) SetRunning(id string, proc json.RawMessage, out ...Message) error {
	if err := validateID(id); err != nil {
		return err
	}
	if len(proc) > 0 && !json.Valid(proc) {
		return fmt.Errorf("set running %s: proc is not valid JSON", id)
	}
	if err := validateMessages(out); err != nil {
		return err
	}
	err := s.update(func(w *wtx) error {
		j := w.journal()
		e, found, err := j.get(id, true)
		switch {
		case err != nil:
			return err
		case !found:
			return ErrNotFound
		case protocol.IsFinal(e.State):
			return fmt.Errorf("%w (%s)", ErrAlreadyFinal, e.State)
		}
		old := e
		e.State, e.Proc = protocol.StateRunning, proc
		val, err := encodeEntry(&e)
		if err != nil {
			return err
		}
		if err := j.put(&e, val, &old); err != nil {
			return err
		}
		return w.push(out, false)
	})
	if err != nil {
		return fmt.Errorf("set running %s: %w", id, err)
	}
	return nil
}

// Finish records the final state and result of an entry (dropping its
// Payload and Proc), appending out, in one transaction. The entry is kept
// at least Options.DefaultKeep from now (its KeepUntil is extended if
// needed), so the result stays available for re-publishing and result.get
// after a long-running command. Finishing an id that is not in the journal
// inserts it, received now (FinishEntry gives those fields explicitly).
// Finishing an entry that is already final writes nothing and returns
// ErrAlreadyFinal. If a non-droppable message of out did not fit in the
// outbox, the result is still recorded and the error wraps ErrOutboxFull.
func (s *Store) Finish(id, state string, result []byte, out ...Message) error {
	now := time.Now()
	return s.FinishEntry(Entry{ID: id, State: state, Result: result, Received: now, KeepUntil: now.Add(s.opts.DefaultKeep)}, out...)
}

// FinishEntry is Finish with the whole entry given: e.State must be final.
// If e.ID is in the journal, its state and result are updated and its
// KeepUntil is extended to e.KeepUntil if that is later; the other fields
// of e are ignored. Otherwise e is inserted.
func (s *Store) FinishEntry(e Entry, out ...Message) error {
	if err := e.validate(time.Now()); err != nil {
		return err
	}
	if !protocol.IsFinal(e.State) {
		return fmt.Errorf("finish %s: state %q is not final", e.ID, e.State)
	}
	if err := validateMessages(out); err != nil {
		return err
	}
	err := s.update(func(w *wtx) error {
		j := w.journal()
		stored, found, err := j.get(e.ID, false)
		if err != nil {
			return err
		}
		next := e
		var old *Entry
		if found {
			if protocol.IsFinal(stored.State) {
				return fmt.Errorf("%w (%s)", ErrAlreadyFinal, stored.State)
			}
			old = &stored
			next = stored
			next.State, next.Result, next.Payload, next.Proc = e.State, e.Result, nil, nil
			if e.KeepUntil.After(next.KeepUntil) {
				next.KeepUntil = e.KeepUntil
			}
		}
		val, err := encodeEntry(&next)
		if err != nil {
			return err
		}
		if err := j.put(&next, val, old); err != nil {
			return err
		}
		return w.push(out, false)
	})
	if err != nil {
		return fmt.Errorf("finish %s: %w", e.ID, err)
	}
	return nil
}

// Record inserts or replaces a complete entry (for example a rejected
// command that is final at once), appending out, in one transaction. If a
// non-droppable message of out did not fit in the outbox, the entry is
// still recorded and the error wraps ErrOutboxFull.
func (s *Store) Record(e Entry, out ...Message) error {
	if err := e.validate(time.Now()); err != nil {
		return err
	}
	if err := validateMessages(out); err != nil {
		return err
	}
	val, err := encodeEntry(&e)
	if err != nil {
		return err
	}
	err = s.update(func(w *wtx) error {
		j := w.journal()
		stored, found, err := j.get(e.ID, false)
		if err != nil {
			return err
		}
		var old *Entry
		if found {
			old = &stored
		}
		if err := j.put(&e, val, old); err != nil {
			return err
		}
		return w.push(out, false)
	})
	if err != nil {
		return fmt.Errorf("record %s: %w", e.ID, err)
	}
	return nil
}

// Get returns the entry for id; ok is false if there is none.
func (s *Store) Get(id string) (e Entry, ok bool, err error) {
	if err := validateID(id); err != nil {
		return Entry{}, false, err
	}
	err = s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketJournal).Get([]byte(id))
		if v == nil {
			return nil
		}
		e, err = decodeEntry(v, true)
		if err != nil {
			return fmt.Errorf("%w: %s: journal entry %q: %w", ErrCorrupt, s.path, id, err)
		}
		ok = true
		return nil
	})
	if err != nil {
		return Entry{}, false, fmt.Errorf("get %s: %w", id, err)
	}
	return e, ok, nil
}

// Unfinished returns the entries that are queued or running, oldest
// Received first (ties by id), for recovery after a restart. It reads the
// whole journal.
func (s *Store) Unfinished() ([]Entry, error) {
	var list []Entry
	err := s.view(func(tx *bolt.Tx) error {
		list = list[:0]
		c := tx.Bucket(bucketJournal).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			hdr, _, _, err := entryParts(v)
			if err != nil {
				return fmt.Errorf("%w: %s: journal entry %q: %w", ErrCorrupt, s.path, k, err)
			}
			// Cheap pre-filter before decoding the header: final states
			// are not queued/running.
			if !bytes.Contains(hdr, []byte(`"state":"queued"`)) && !bytes.Contains(hdr, []byte(`"state":"running"`)) {
				continue
			}
			e, err := decodeEntry(v, true)
			if err != nil {
				return fmt.Errorf("%w: %s: journal entry %q: %w", ErrCorrupt, s.path, k, err)
			}
			if !protocol.IsFinal(e.State) {
				list = append(list, e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("unfinished: %w", err)
	}
	slices.SortStableFunc(list, func(a, b Entry) int {
		if c := a.Received.Compare(b.Received); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return list, nil
}

// pruneChunk bounds the entries one Prune transaction deletes, so writers
// on the hot path are not held up by a long transaction.
const pruneChunk = 1000

// Prune deletes final entries whose KeepUntil is before now and returns
// how many it deleted. Entries that are not final are never pruned.
func (s *Store) Prune(now time.Time) (int, error) {
	total := 0
	var after []byte // resume point: keys before it were kept
	for {
		n, next, err := s.pruneOnce(now, after)
		total += n
		if err != nil {
			return total, fmt.Errorf("prune: %w", err)
		}
		if next == nil {
			return total, nil
		}
		after = next
	}
}

// pruneOnce deletes up to pruneChunk expired final entries, scanning the
// expiry index from after. It returns where to continue, nil when done.
func (s *Store) pruneOnce(now time.Time, after []byte) (deleted int, next []byte, err error) {
	limit := expiryNanos(now)
	err = s.update(func(w *wtx) error {
		deleted, next = 0, nil
		j := w.journal()
		c := j.expiry.Cursor()
		var k []byte
		if after == nil {
			k, _ = c.First()
		} else {
			k, _ = c.Seek(after)
		}
		type victim struct{ key, id []byte }
		var victims []victim
		for ; k != nil; k, _ = c.Next() {
			if len(k) < 8 {
				return fmt.Errorf("%w: %s: expiry key %x", ErrCorrupt, s.path, k)
			}
			if binary.BigEndian.Uint64(k) > limit {
				break
			}
			if len(victims) == pruneChunk {
				next = bytes.Clone(k)
				break
			}
			id := k[8:]
			v := j.journal.Get(id)
			if v == nil { // stale index key
				victims = append(victims, victim{bytes.Clone(k), nil})
				continue
			}
			e, err := decodeEntry(v, false)
			if err != nil {
				return fmt.Errorf("%w: %s: journal entry %q: %w", ErrCorrupt, s.path, id, err)
			}
			if protocol.IsFinal(e.State) && e.KeepUntil.Before(now) {
				victims = append(victims, victim{bytes.Clone(k), bytes.Clone(id)})
			}
		}
		for _, v := range victims {
			if err := w.del(j.expiry, v.key); err != nil {
				return err
			}
			if v.id == nil {
				continue
			}
			if err := w.del(j.journal, v.id); err != nil {
				return err
			}
			deleted++
		}
		if deleted > 0 {
			s.mu.Lock()
			s.journal -= deleted
			s.mu.Unlock()
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	return deleted, next, nil
}

// JournalLen returns the number of entries in the journal.
func (s *Store) JournalLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.journal
}
