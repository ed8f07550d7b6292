package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Message is one MQTT publish waiting in the outbox.
type Message struct {
	Seq     uint64 // assigned by the store, increasing
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// Droppable marks telemetry: it may be refused or evicted when the
	// outbox is full. Results and audit records are not droppable.
	Droppable bool
}

// maxTopicLen is the MQTT limit on a topic name.
const maxTopicLen = 65535

// validate checks what an MQTT publish needs.
func (m *Message) validate() error {
	switch {
	case m.Topic == "":
		return errors.New("invalid outbox message: empty topic")
	case len(m.Topic) > maxTopicLen:
		return fmt.Errorf("invalid outbox message: topic is %d bytes, over %d", len(m.Topic), maxTopicLen)
	case strings.ContainsAny(m.Topic, "+#\x00"):
		return fmt.Errorf("invalid outbox message: topic %q has a wildcard or NUL", m.Topic)
	case m.QoS > 2:
		return fmt.Errorf("invalid outbox message: qos %d", m.QoS)
	}
	return nil
}

func validateMessages(msgs []Message) error {
	for i := range msgs {
		if err := msgs[i].validate(); err != nil {
			return err
		}
	}
	return nil
}

// Encoded message: format byte, flags byte, uvarint topic length, topic,
// payload.
const (
	msgFormat     = 1
	flagQoSMask   = 0x03
	flagRetain    = 0x04
	flagDroppable = 0x08
)

func encodeMessage(m *Message) []byte {
	buf := make([]byte, 0, 2+binary.MaxVarintLen64+len(m.Topic)+len(m.Payload))
	flags := m.QoS & flagQoSMask
	if m.Retain {
		flags |= flagRetain
	}
	if m.Droppable {
		flags |= flagDroppable
	}
	buf = append(buf, msgFormat, flags)
	buf = binary.AppendUvarint(buf, uint64(len(m.Topic)))
	buf = append(buf, m.Topic...)
	return append(buf, m.Payload...)
}

func messageFlags(v []byte) (byte, error) {
	if len(v) < 3 || v[0] != msgFormat {
		return 0, errors.New("unknown message encoding")
	}
	return v[1], nil
}

// decodeMessage copies v (which belongs to a transaction) into a Message.
func decodeMessage(seq uint64, v []byte) (Message, error) {
	flags, err := messageFlags(v)
	if err != nil {
		return Message{}, err
	}
	n, w := binary.Uvarint(v[2:])
	if w <= 0 || n > uint64(len(v)-2-w) {
		return Message{}, errors.New("bad topic length")
	}
	rest := v[2+w:]
	return Message{
		Seq:       seq,
		Topic:     string(rest[:n]),
		Payload:   append([]byte(nil), rest[n:]...),
		QoS:       flags & flagQoSMask,
		Retain:    flags&flagRetain != 0,
		Droppable: flags&flagDroppable != 0,
	}, nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// msgInfo is what the store remembers of a stored message.
type msgInfo struct {
	size      int64
	droppable bool
}

// outboxIndex mirrors the outbox in memory so that counts are O(1), acks
// are cheap and eviction needs no scan.
type outboxIndex struct {
	live      map[uint64]msgInfo  // stored, not acked, not evicted
	droppable []uint64            // droppable seqs, oldest first (may hold stale seqs)
	acked     map[uint64]struct{} // acked but still on disk
	next      uint64              // next seq to assign
	count     int
	bytes     int64
	dropped   uint64
}

func newOutboxIndex() outboxIndex {
	return outboxIndex{
		live:  make(map[uint64]msgInfo),
		acked: make(map[uint64]struct{}),
		next:  1,
	}
}

func (o *outboxIndex) add(seq uint64, mi msgInfo) {
	o.live[seq] = mi
	o.count++
	o.bytes += mi.size
	if mi.droppable {
		o.droppable = append(o.droppable, seq)
	}
}

// remove forgets seq; it reports whether seq was live.
func (o *outboxIndex) remove(seq uint64) bool {
	mi, ok := o.live[seq]
	if !ok {
		return false
	}
	delete(o.live, seq)
	o.count--
	o.bytes -= mi.size
	if mi.droppable && len(o.droppable) > 2*o.count+64 {
		o.compactDroppable()
	}
	return true
}

// compactDroppable forgets the seqs of droppable messages that are no
// longer live (acked), which would otherwise stay in o.droppable for good:
// 8 bytes per droppable message ever stored (docs/soak.md). It runs when
// at least half the slice is stale, so it costs O(1) per message.
func (o *outboxIndex) compactDroppable() {
	kept := make([]uint64, 0, o.count)
	for _, seq := range o.droppable {
		if _, ok := o.live[seq]; ok {
			kept = append(kept, seq)
		}
	}
	o.droppable = kept
}

// oldestDroppable pops the oldest live droppable seq.
func (o *outboxIndex) oldestDroppable() (uint64, bool) {
	for len(o.droppable) > 0 {
		seq := o.droppable[0]
		o.droppable = o.droppable[1:]
		if _, ok := o.live[seq]; ok {
			return seq, true
		}
	}
	return 0, false
}

func (o *outboxIndex) fits(size int64, maxMsgs int, maxBytes int64) bool {
	return o.count+1 <= maxMsgs && o.bytes+size <= maxBytes
}

// reserve decides where a message of size goes: it returns the seq to
// store it under and the seqs of droppable messages to evict first, or
// ok=false if it must be refused.
func (o *outboxIndex) reserve(size int64, droppable bool, maxMsgs int, maxBytes int64) (seq uint64, evict []uint64, ok bool) {
	if !o.fits(size, maxMsgs, maxBytes) {
		if droppable {
			o.dropped++
			return 0, nil, false
		}
		for !o.fits(size, maxMsgs, maxBytes) {
			victim, found := o.oldestDroppable()
			if !found {
				break
			}
			o.remove(victim)
			o.dropped++
			evict = append(evict, victim)
		}
		if !o.fits(size, 2*maxMsgs, 2*maxBytes) {
			return 0, evict, false
		}
	}
	seq = o.next
	o.next++
	o.add(seq, msgInfo{size: size, droppable: droppable})
	return seq, evict, true
}

// push stores msgs in the outbox within w, in order. Messages the limits
// refuse are skipped and reported with an error wrapping ErrOutboxFull
// (refused droppable ones only if reportDroppable); the others are stored.
func (w *wtx) push(msgs []Message, reportDroppable bool) error {
	if len(msgs) == 0 {
		return nil
	}
	s := w.s
	b := w.tx.Bucket(bucketOutbox)
	refused, reported, evicted := 0, 0, 0
	for i := range msgs {
		val := encodeMessage(&msgs[i])
		s.mu.Lock()
		seq, evict, ok := s.out.reserve(int64(len(val)), msgs[i].Droppable, s.opts.OutboxMaxMessages, s.opts.OutboxMaxBytes)
		s.mu.Unlock()
		for _, victim := range evict {
			if err := w.del(b, seqKey(victim)); err != nil {
				return err
			}
		}
		evicted += len(evict)
		if !ok {
			refused++
			if reportDroppable || !msgs[i].Droppable {
				reported++
			}
			continue
		}
		if err := w.put(b, seqKey(seq), val); err != nil {
			return err
		}
		w.added = true
	}
	if evicted > 0 {
		s.log.Warn("state: outbox full, evicted oldest telemetry", "evicted", evicted, "path", s.path)
	}
	if reported > 0 {
		return fmt.Errorf("%w: %d of %d messages not stored", ErrOutboxFull, refused, len(msgs))
	}
	return nil
}

// flushAcks deletes acked messages still on disk; it returns their seqs,
// which the caller forgets once the transaction is committed.
func (w *wtx) flushAcks() ([]uint64, error) {
	s := w.s
	s.mu.Lock()
	if len(s.out.acked) == 0 {
		s.mu.Unlock()
		return nil, nil
	}
	seqs := make([]uint64, 0, min(len(s.out.acked), maxAckFlush))
	for seq := range s.out.acked {
		if len(seqs) == maxAckFlush {
			break
		}
		seqs = append(seqs, seq)
	}
	s.mu.Unlock()
	b := w.tx.Bucket(bucketOutbox)
	for _, seq := range seqs {
		if err := b.Delete(seqKey(seq)); err != nil {
			return nil, err
		}
	}
	return seqs, nil
}

// Push appends messages to the outbox in one transaction. When the outbox
// is over its limits, a droppable message is refused (counted in
// Stats.OutboxDropped); a non-droppable one first evicts the oldest
// droppable messages and, if that is not enough, is still stored up to a
// hard cap of twice the limits. Refused messages make Push return an error
// wrapping ErrOutboxFull; the other messages are stored.
func (s *Store) Push(msgs ...Message) error {
	if err := validateMessages(msgs); err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	return s.update(func(w *wtx) error { return w.push(msgs, true) })
}

// Pending returns up to max outbox messages, oldest first. max <= 0
// returns none.
func (s *Store) Pending(max int) ([]Message, error) {
	return s.PendingUpTo(max, 0)
}

// PendingUpTo is Pending with a byte budget: it stops before the message
// that would take the encoded size of what it returns past maxBytes (the
// first message is returned whatever its size; maxBytes <= 0 means no
// budget). Output of commands can make messages of megabytes: the budget
// bounds the memory a publisher holds in flight.
func (s *Store) PendingUpTo(max int, maxBytes int64) ([]Message, error) {
	if max <= 0 {
		return nil, nil
	}
	var msgs []Message
	err := s.view(func(tx *bolt.Tx) error {
		msgs = msgs[:0]
		var size int64
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.First(); k != nil && len(msgs) < max; k, v = c.Next() {
			seq := binary.BigEndian.Uint64(k)
			s.mu.Lock()
			_, live := s.out.live[seq]
			s.mu.Unlock()
			if !live {
				continue
			}
			if size += int64(len(v)); maxBytes > 0 && size > maxBytes && len(msgs) > 0 {
				break
			}
			m, err := decodeMessage(seq, v)
			if err != nil {
				return fmt.Errorf("%w: %s: outbox message %d: %w", ErrCorrupt, s.path, seq, err)
			}
			msgs = append(msgs, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return msgs, nil
}

// ackFlushAt is the number of acks kept in memory after which Ack writes
// them itself instead of waiting for the next transaction.
const ackFlushAt = 256

// Ack removes delivered messages. The removal is immediate in memory (the
// messages are not returned by Pending again) and written to disk with the
// next transaction; a crash before that only re-sends them. Unknown seqs
// are ignored.
func (s *Store) Ack(seqs ...uint64) error {
	s.mu.Lock()
	for _, seq := range seqs {
		if s.out.remove(seq) {
			s.out.acked[seq] = struct{}{}
		}
	}
	n := len(s.out.acked)
	s.mu.Unlock()
	if n >= ackFlushAt {
		if err := s.update(func(*wtx) error { return nil }); err != nil {
			return fmt.Errorf("write acks: %w", err)
		}
	}
	return nil
}

func (s *Store) pendingAcks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.out.acked)
}

// OutboxLen returns the number of messages waiting in the outbox.
func (s *Store) OutboxLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.count
}

// Notify returns a channel that receives a value (capacity 1, never
// blocking the store) whenever messages are committed to the outbox, and
// once at Open if the outbox is not empty.
func (s *Store) Notify() <-chan struct{} { return s.notify }
