package state

import (
	"errors"
	"fmt"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// maxBatch bounds how many writers share one transaction.
const maxBatch = 128

// maxAckFlush bounds how many acked outbox keys one transaction deletes.
const maxAckFlush = 4096

// call is one writer waiting for its function to be committed.
type call struct {
	fn   func(*wtx) error
	done chan error // capacity 1: errLead, then the result
}

// errLead hands the leadership of the group commit to a waiting writer.
var errLead = errors.New("state: lead the next commit")

// wtx is the write transaction a call's function runs in.
type wtx struct {
	s       *Store
	tx      *bolt.Tx
	dirty   bool // the current function wrote something
	written bool // some function wrote something
	added   bool // messages were added to the outbox
}

func (w *wtx) put(b *bolt.Bucket, k, v []byte) error {
	w.dirty, w.written = true, true
	return b.Put(k, v)
}

func (w *wtx) del(b *bolt.Bucket, k []byte) error {
	w.dirty, w.written = true, true
	return b.Delete(k)
}

// hardError marks a function error after a partial write: the transaction
// must be rolled back.
type hardError struct{ err error }

func (e *hardError) Error() string { return e.err.Error() }
func (e *hardError) Unwrap() error { return e.err }

// update runs fn in a committed write transaction and returns its error (or
// the commit's). Writers that arrive while a commit is in progress are
// committed together by the next leader, one of them; a writer that finds
// no commit in progress commits at once, so a lone caller never waits for
// a timer as with bbolt's DB.Batch.
//
// fn may run more than once (when another function in its group fails and
// the group is retried one by one); it must set its results afresh each
// time. An error returned by fn after it wrote something rolls the
// transaction back, except ErrOutboxFull, which reports a partial success.
func (s *Store) update(fn func(*wtx) error) error {
	c := &call{fn: fn, done: make(chan error, 1)}
	s.qmu.Lock()
	if s.closed {
		s.qmu.Unlock()
		return ErrClosed
	}
	s.queue = append(s.queue, c)
	if s.leading {
		s.qmu.Unlock()
		if err := <-c.done; err != errLead {
			return err
		}
		// c is now first in the queue and leads.
		s.qmu.Lock()
	}
	s.leading = true
	n := min(len(s.queue), maxBatch)
	batch := make([]*call, n)
	copy(batch, s.queue)
	s.queue = append(s.queue[:0], s.queue[n:]...)
	s.qmu.Unlock()

	s.commit(batch)

	s.qmu.Lock()
	if len(s.queue) > 0 {
		s.queue[0].done <- errLead
	} else {
		s.leading = false
	}
	s.qmu.Unlock()
	return <-c.done
}

// commit runs the batch in one transaction; if one function fails after
// writing, it runs each function in its own transaction instead.
func (s *Store) commit(batch []*call) {
	res, err := s.runTx(batch)
	if err == nil {
		for i, c := range batch {
			c.done <- res[i]
		}
		return
	}
	s.afterRollback()
	var hard *hardError
	if len(batch) == 1 || !errors.As(err, &hard) {
		for _, c := range batch {
			c.done <- err
		}
		return
	}
	for _, c := range batch {
		res, err := s.runTx([]*call{c})
		if err != nil {
			s.afterRollback()
			c.done <- err
			continue
		}
		c.done <- res[0]
	}
}

// afterRollback reloads the in-memory mirror that the rolled back
// functions changed.
func (s *Store) afterRollback() {
	if s.isClosed() {
		return
	}
	if err := s.resync(); err != nil {
		s.log.Warn("state: reload after failed transaction", "path", s.path, "err", err)
	}
}

// runTx runs calls in one write transaction and commits it. It returns each
// call's result, or an error if nothing was committed.
func (s *Store) runTx(calls []*call) (res []error, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	tx, err := s.db.Begin(true)
	if err != nil {
		return nil, s.dbErr(err)
	}
	defer func() {
		if r := recover(); r != nil {
			func() {
				defer func() { _ = recover() }()
				_ = tx.Rollback()
			}()
			res, err = nil, s.panicErr(r)
		}
	}()
	w := &wtx{s: s, tx: tx}
	acks, err := w.flushAcks()
	if err != nil {
		_ = tx.Rollback()
		return nil, fmt.Errorf("delete acked outbox messages: %w", err)
	}
	res = make([]error, len(calls))
	for i, c := range calls {
		w.dirty = false
		e := c.fn(w)
		if e != nil && w.dirty && !errors.Is(e, ErrOutboxFull) {
			_ = tx.Rollback()
			return nil, &hardError{e}
		}
		res[i] = e
	}
	if !w.written && len(acks) == 0 {
		// Nothing to write (duplicates, refusals): skip the commit's fsync.
		if err := tx.Rollback(); err != nil {
			return nil, err
		}
		return res, nil
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit state file %s: %w", s.path, err)
	}
	if len(acks) > 0 {
		s.mu.Lock()
		for _, seq := range acks {
			delete(s.out.acked, seq)
		}
		s.mu.Unlock()
	}
	if w.added {
		s.signal()
	}
	return res, nil
}

func (s *Store) isClosed() bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return s.closed
}
