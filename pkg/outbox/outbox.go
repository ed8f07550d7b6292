// Package outbox sends what the agent has to publish (results, audit
// records, output chunks) from the on-disk outbox in state.Store to the
// broker, in order, whenever a connection is up. A message leaves the
// outbox only when the broker acknowledged it on a connection that is still
// up; anything else is sent again after the next connect (at least once).
package outbox

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/mqagent/mqagent/pkg/state"
	"github.com/mqagent/mqagent/pkg/transport"
)

// Window is how many messages are in flight at once.
const Window = 64

// WindowBytes bounds the encoded size of the messages in flight at once
// (a single larger message still goes, alone): results carry command
// output, up to megabytes each.
const WindowBytes = 4 << 20

// Store is the outbox a Publisher drains. *state.Store implements it and
// is what the agent uses; the swarm simulator (test/swarm) supplies an
// in-memory one.
type Store interface {
	PendingUpTo(max int, maxBytes int64) ([]state.Message, error)
	Ack(seqs ...uint64) error
	Notify() <-chan struct{}
}

var _ Store = (*state.Store)(nil)

// Publisher drains a store's outbox through a transport client. Its
// methods must not be called concurrently.
type Publisher struct {
	Store   Store
	Client  *transport.Client
	Timeout time.Duration // per window; default 10s
	// MaxBytes bounds the encoded size of a window; default WindowBytes.
	MaxBytes int64
	Logger   *slog.Logger

	// inflight is the part of the last window that the broker has not
	// acknowledged yet on a connection that is still up (a slow broker):
	// the next Flush waits for it again instead of publishing it a second
	// time on the same connection, so a stalled broker costs one window of
	// memory and no duplicates.
	inflight []sent
}

// sent is one published outbox message.
type sent struct {
	seq uint64
	tok transport.Token
}

// Run publishes until ctx ends.
func (p *Publisher) Run(ctx context.Context) {
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			return
		case <-p.Client.Connected():
		}
		sent, err := p.Flush(timeout)
		if err != nil {
			log.Debug("outbox: publish interrupted", "err", err, "sent", sent)
			// Wait for the connection to be replaced (or a retry delay).
			t := time.NewTimer(time.Second)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			continue
		}
		if sent > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-p.Store.Notify():
		case <-time.After(5 * time.Second):
		}
	}
}

// Flush publishes one window of pending messages (or waits again for the
// rest of the previous one, see inflight) and acknowledges those the
// broker acknowledged. It returns how many were delivered.
func (p *Publisher) Flush(timeout time.Duration) (int, error) {
	if len(p.inflight) == 0 {
		budget := p.MaxBytes
		if budget <= 0 {
			budget = WindowBytes
		}
		msgs, err := p.Store.PendingUpTo(Window, budget)
		if err != nil || len(msgs) == 0 {
			return 0, err
		}
		p.inflight = make([]sent, len(msgs))
		for i, m := range msgs {
			p.inflight[i] = sent{seq: m.Seq, tok: p.Client.Publish(m.Topic, m.QoS, m.Retain, m.Payload)}
		}
	}
	deadline := time.Now().Add(timeout)
	acked := make([]uint64, 0, len(p.inflight))
	var firstErr error
	for _, s := range p.inflight {
		if err := s.tok.Wait(max(time.Until(deadline), time.Millisecond)); err != nil {
			firstErr = err
			break // keep order: what follows is sent again after this one
		}
		acked = append(acked, s.seq)
	}
	if errors.Is(firstErr, transport.ErrAckTimeout) {
		p.inflight = p.inflight[len(acked):] // still in flight on a live connection
	} else {
		p.inflight = nil // done, or the connection is gone: publish again on the next
	}
	if len(acked) > 0 {
		if err := p.Store.Ack(acked...); err != nil {
			return 0, err
		}
	}
	return len(acked), firstErr
}

// Drain flushes until the outbox is empty, the connection fails, or the
// deadline passes (graceful stop).
func (p *Publisher) Drain(deadline time.Time) int {
	total := 0
	for time.Now().Before(deadline) {
		n, err := p.Flush(time.Until(deadline))
		total += n
		if err != nil || n == 0 {
			break
		}
	}
	return total
}
