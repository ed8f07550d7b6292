package swarm

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/outbox"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/state"
)

// Journal is what a simulated host keeps: the command journal and outbox
// of the pipeline (dispatch.Store, outbox.Store) and the session counter.
// *state.Store implements it (JournalBolt); MemJournal is the cheap one.
type Journal interface {
	dispatch.Store
	outbox.Store
	NextSession() (uint64, error)
}

var (
	_ Journal = (*MemJournal)(nil)
	_ Journal = (*state.Store)(nil)
)

// MemJournal is an in-memory journal and outbox with the semantics of
// state.Store that the pipeline relies on: an id is admitted once (a
// second Admit returns the stored entry), a command has exactly one final
// state (ErrAlreadyFinal), final results are kept for re-publishing and
// result.get until KeepUntil, and the outbox keeps messages in order until
// they are acknowledged, refusing droppable ones (then evicting them for
// results) over its limit. Nothing survives the process: a simulated host
// "crash" is out of its scope (the fault tests use the real agent).
// Safe for concurrent use.
type MemJournal struct {
	mu      sync.Mutex
	entries map[string]*state.Entry
	out     []state.Message // not acknowledged, oldest first
	next    uint64          // next outbox seq
	session uint64
	notify  chan struct{}
	max     int           // outbox limit in messages
	keep    time.Duration // Finish of an id it did not have
	dropped uint64
	onPush  func() // called (without the lock) when messages were added
	pushed  bool   // onPush is due once the lock is released
}

// unlock releases the lock and calls onPush if messages were added.
func (j *MemJournal) unlock() {
	due := j.pushed
	j.pushed = false
	j.mu.Unlock()
	if due {
		j.onPush()
	}
}

// NewMemJournal returns an empty journal whose outbox holds up to maxOut
// messages (twice that for results and audit records, as state.Store),
// default state.DefaultOutboxMaxMessages.
func NewMemJournal(maxOut int) *MemJournal {
	if maxOut <= 0 {
		maxOut = state.DefaultOutboxMaxMessages
	}
	return &MemJournal{next: 1, notify: make(chan struct{}, 1), max: maxOut, keep: state.DefaultKeep}
}

// OnPush sets a function called whenever messages are added to the
// outbox, besides Notify; it must not block. Set it before use.
func (j *MemJournal) OnPush(f func()) { j.onPush = f }

// NextSession increments the session counter.
func (j *MemJournal) NextSession() (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.session++
	return j.session, nil
}

func cloneEntry(e *state.Entry) state.Entry {
	c := *e
	c.Payload = slices.Clone(e.Payload)
	c.Proc = slices.Clone(e.Proc)
	c.Result = slices.Clone(e.Result)
	return c
}

// Admit stores e unless its id is known (then it returns the stored entry
// and admitted false) and appends out to the outbox.
func (j *MemJournal) Admit(e state.Entry, out ...state.Message) (state.Entry, bool, error) {
	if e.ID == "" {
		return state.Entry{}, false, errors.New("admit: empty command id")
	}
	j.mu.Lock()
	defer j.unlock()
	if old, ok := j.entries[e.ID]; ok {
		return cloneEntry(old), false, nil
	}
	if e.State == "" {
		e.State = protocol.StateQueued
	}
	if e.Received.IsZero() {
		e.Received = time.Now()
	}
	stored := cloneEntry(&e)
	if j.entries == nil {
		j.entries = make(map[string]*state.Entry, 8)
	}
	j.entries[e.ID] = &stored
	if err := j.push(out, false); err != nil {
		return cloneEntry(&stored), true, fmt.Errorf("admit %s: %w", e.ID, err)
	}
	return cloneEntry(&stored), true, nil
}

// SetRunning marks a queued entry running.
func (j *MemJournal) SetRunning(id string, proc json.RawMessage, out ...state.Message) error {
	j.mu.Lock()
	defer j.unlock()
	e, ok := j.entries[id]
	switch {
	case !ok:
		return fmt.Errorf("set running %s: %w", id, state.ErrNotFound)
	case protocol.IsFinal(e.State):
		return fmt.Errorf("set running %s: %w (%s)", id, state.ErrAlreadyFinal, e.State)
	}
	e.State, e.Proc = protocol.StateRunning, slices.Clone(proc)
	if err := j.push(out, false); err != nil {
		return fmt.Errorf("set running %s: %w", id, err)
	}
	return nil
}

// Finish records a final state and result (inserting the id if unknown).
func (j *MemJournal) Finish(id, st string, result []byte, out ...state.Message) error {
	if !protocol.IsFinal(st) {
		return fmt.Errorf("finish %s: state %q is not final", id, st)
	}
	now := time.Now()
	j.mu.Lock()
	defer j.unlock()
	e, ok := j.entries[id]
	if ok && protocol.IsFinal(e.State) {
		return fmt.Errorf("finish %s: %w (%s)", id, state.ErrAlreadyFinal, e.State)
	}
	if !ok {
		e = &state.Entry{ID: id, Received: now}
		if j.entries == nil {
			j.entries = make(map[string]*state.Entry, 8)
		}
		j.entries[id] = e
	}
	e.State, e.Result, e.Payload, e.Proc = st, slices.Clone(result), nil, nil
	if until := now.Add(j.keep); until.After(e.KeepUntil) {
		e.KeepUntil = until
	}
	if err := j.push(out, false); err != nil {
		return fmt.Errorf("finish %s: %w", id, err)
	}
	return nil
}

// Push appends messages to the outbox.
func (j *MemJournal) Push(msgs ...state.Message) error {
	j.mu.Lock()
	defer j.unlock()
	return j.push(msgs, true)
}

// push stores msgs in order; over the limit a droppable message is
// refused and a result evicts the oldest droppable ones, up to twice the
// limit. Refusals are reported (droppable ones only if reportDroppable).
func (j *MemJournal) push(msgs []state.Message, reportDroppable bool) error {
	refused, reported, added := 0, 0, false
	for _, m := range msgs {
		if len(j.out) >= j.max {
			if m.Droppable {
				j.dropped++
				refused++
				if reportDroppable {
					reported++
				}
				continue
			}
			if i := slices.IndexFunc(j.out, func(o state.Message) bool { return o.Droppable }); i >= 0 {
				j.out = slices.Delete(j.out, i, i+1)
				j.dropped++
			} else if len(j.out) >= 2*j.max {
				refused++
				reported++
				continue
			}
		}
		m.Seq = j.next
		j.next++
		m.Payload = slices.Clone(m.Payload)
		j.out = append(j.out, m)
		added = true
	}
	if added {
		select {
		case j.notify <- struct{}{}:
		default:
		}
		if j.onPush != nil {
			j.pushed = true
		}
	}
	if reported > 0 {
		return fmt.Errorf("%w: %d of %d messages not stored", state.ErrOutboxFull, refused, len(msgs))
	}
	return nil
}

// Get returns the entry of id.
func (j *MemJournal) Get(id string) (state.Entry, bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	e, ok := j.entries[id]
	if !ok {
		return state.Entry{}, false, nil
	}
	return cloneEntry(e), true, nil
}

// Unfinished returns the queued and running entries, oldest first.
func (j *MemJournal) Unfinished() ([]state.Entry, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	var list []state.Entry
	for _, e := range j.entries {
		if !protocol.IsFinal(e.State) {
			list = append(list, cloneEntry(e))
		}
	}
	slices.SortStableFunc(list, func(a, b state.Entry) int {
		if c := a.Received.Compare(b.Received); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return list, nil
}

// Prune deletes final entries kept until before now.
func (j *MemJournal) Prune(now time.Time) (int, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	n := 0
	for id, e := range j.entries {
		if protocol.IsFinal(e.State) && e.KeepUntil.Before(now) {
			delete(j.entries, id)
			n++
		}
	}
	return n, nil
}

// PendingUpTo returns up to max messages not yet acknowledged, oldest
// first, within maxBytes of payload (the first one whatever its size).
func (j *MemJournal) PendingUpTo(max int, maxBytes int64) ([]state.Message, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	n := min(max, len(j.out))
	var size int64
	for i := range n {
		if size += int64(len(j.out[i].Payload) + len(j.out[i].Topic)); maxBytes > 0 && size > maxBytes && i > 0 {
			n = i
			break
		}
	}
	if n <= 0 {
		return nil, nil
	}
	// The payloads are never modified in place: sharing them is safe.
	return slices.Clone(j.out[:n]), nil
}

// Ack removes delivered messages; unknown seqs are ignored.
func (j *MemJournal) Ack(seqs ...uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(seqs) == 0 || len(j.out) == 0 {
		return nil
	}
	// Acks come in order from the head: the common case is a prefix.
	k := 0
	for k < len(j.out) && k < len(seqs) && j.out[k].Seq == seqs[k] {
		k++
	}
	if k == len(seqs) {
		clear(j.out[:k])
		j.out = j.out[k:]
		if len(j.out) == 0 {
			j.out = nil // let the backing array go
		}
		return nil
	}
	acked := make(map[uint64]bool, len(seqs))
	for _, s := range seqs {
		acked[s] = true
	}
	j.out = slices.DeleteFunc(j.out, func(m state.Message) bool { return acked[m.Seq] })
	return nil
}

// Notify receives a value whenever messages were added to the outbox.
func (j *MemJournal) Notify() <-chan struct{} { return j.notify }

// OutboxLen is the number of messages waiting to be published.
func (j *MemJournal) OutboxLen() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.out)
}

// Len is the number of journal entries.
func (j *MemJournal) Len() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.entries)
}
