// Package outbox sends what the agent has to publish (results, audit
// records, output chunks) from the on-disk outbox in state.Store to the
// broker, in order, whenever a connection is up. A message leaves the
// outbox only when the broker acknowledged it on a connection that is still
// up; anything else is sent again after the next connect (at least once).
package outbox

import (
	"context"
	"log/slog"
	"time"

	"github.com/mqagent/mqagent/pkg/state"
	"github.com/mqagent/mqagent/pkg/transport"
)

// Window is how many messages are in flight at once.
const Window = 64

// Publisher drains a store's outbox through a transport client.
type Publisher struct {
	Store   *state.Store
	Client  *transport.Client
	Timeout time.Duration // per window; default 10s
	Logger  *slog.Logger
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

// Flush publishes one window of pending messages and acknowledges those
// the broker acknowledged. It returns how many were delivered.
func (p *Publisher) Flush(timeout time.Duration) (int, error) {
	msgs, err := p.Store.Pending(Window)
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	toks := make([]transport.Token, len(msgs))
	for i, m := range msgs {
		toks[i] = p.Client.Publish(m.Topic, m.QoS, m.Retain, m.Payload)
	}
	deadline := time.Now().Add(timeout)
	acked := make([]uint64, 0, len(msgs))
	var firstErr error
	for i, t := range toks {
		if err := t.Wait(max(time.Until(deadline), time.Millisecond)); err != nil {
			firstErr = err
			break // keep order: what follows is sent again after this one
		}
		acked = append(acked, msgs[i].Seq)
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
