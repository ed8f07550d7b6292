package rollout

import (
	"context"
	"time"

	"github.com/mqagent/mqagent/pkg/client"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// ClientBackend is the Backend over pkg/client: one Sender (one command
// id, one results subscription) for the whole rollout.
type ClientBackend struct {
	s *client.Sender
	// OnEvent, when set, sees every event (output chunks, state changes,
	// final results) as it arrives, e.g. to print streamed output.
	OnEvent func(client.Event)
}

// NewClientBackend subscribes to the results of cmd (cmd.ID must be the
// rollout id) and returns a backend that sends it host by host. Close it
// when done.
func NewClientBackend(ctx context.Context, c *client.Client, cmd protocol.Command, signer *client.Signer) (*ClientBackend, error) {
	s, err := c.NewSender(ctx, cmd, signer)
	if err != nil {
		return nil, err
	}
	return &ClientBackend{s: s}, nil
}

// Close stops following results.
func (b *ClientBackend) Close() { b.s.Close() }

// Now implements Backend with the wall clock.
func (b *ClientBackend) Now() time.Time { return time.Now() }

// Send implements Backend.
func (b *ClientBackend) Send(_ context.Context, hosts []string) error { return b.s.Send(hosts...) }

// Wait implements Backend: it returns as soon as one final result is in
// (with any others already there), at until, or when ctx ends.
func (b *ClientBackend) Wait(ctx context.Context, until time.Time) ([]Result, error) {
	var timer <-chan time.Time
	if !until.IsZero() {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		timer = t.C
	}
	var out []Result
	take := func(ev client.Event) {
		if b.OnEvent != nil {
			b.OnEvent(ev)
		}
		if r := ev.Result; r != nil && protocol.IsFinal(r.State) {
			out = append(out, Result{Host: r.Host, State: r.State, ExitCode: r.ExitCode, Error: r.Error})
		}
	}
	for len(out) == 0 {
		select {
		case ev, ok := <-b.s.Events():
			if !ok {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				return nil, context.Canceled
			}
			take(ev)
		case <-timer:
			return out, nil
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
	// Whatever else is already there.
	for {
		select {
		case ev, ok := <-b.s.Events():
			if !ok {
				return out, nil
			}
			take(ev)
		default:
			return out, nil
		}
	}
}
