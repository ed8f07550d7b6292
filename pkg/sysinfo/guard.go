package sysinfo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Errors of guarded calls.
var (
	// ErrTimeout: the call did not return within its deadline. It may
	// still be running; its result will be thrown away.
	ErrTimeout = errors.New("timed out")
	// ErrStuck: the call was not made because an earlier call of the same
	// operation is past its deadline and has not returned yet.
	ErrStuck = errors.New("skipped: an earlier call has not returned")
	// ErrPanic: the call panicked.
	ErrPanic = errors.New("panic")
)

// DefaultTimeout is a Guard's deadline for one call when none is given.
const DefaultTimeout = 2 * time.Second

// Guard runs calls into the OS under a deadline, so that a call that hangs
// (statfs on a dead NFS mount) costs its caller one timeout and never more:
//
//   - a call that does not return by its deadline is abandoned (its
//     goroutine finishes in the background whenever the OS lets it);
//   - while it has not returned, later calls of the same operation fail at
//     once with ErrStuck instead of starting another goroutine that would
//     hang as well, so a hung operation holds one goroutine however long
//     it hangs and however many samples are taken meanwhile;
//   - callers that ask for an operation already running (within its
//     deadline) share its result instead of starting a second call.
//
// A Guard is safe for concurrent use and may be shared (metrics and
// inventory share one in the agent).
type Guard struct {
	timeout time.Duration

	mu   sync.Mutex
	busy map[string]*flight // operation → its call in flight
}

// flight is a call in flight. val and err are written before done is
// closed.
type flight struct {
	start, deadline time.Time
	done            chan struct{}
	waiters         int // callers waiting for it (guarded by Guard.mu)
	val             any
	err             error
}

// NewGuard returns a Guard whose calls get timeout each (DefaultTimeout
// when timeout <= 0).
func NewGuard(timeout time.Duration) *Guard {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &Guard{timeout: timeout, busy: map[string]*flight{}}
}

// Timeout is the deadline of one call.
func (g *Guard) Timeout() time.Duration { return g.timeout }

// Stuck lists the operations whose call is past its deadline and has not
// returned yet, sorted.
func (g *Guard) Stuck() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	now := time.Now()
	for op, f := range g.busy {
		if !now.Before(f.deadline) {
			out = append(out, op)
		}
	}
	slices.Sort(out)
	return out
}

// Call runs fn as operation op under g's deadline (or ctx's, if earlier).
// fn gets a context that ends at the deadline; a call that ignores it is
// abandoned: Call returns an error wrapping ErrTimeout and the goroutine
// running fn finishes in the background, after which op may be called
// again. While it is still running past its deadline, Call(op) returns an
// error wrapping ErrStuck without calling fn; while it is running within
// its deadline, Call(op) waits for it and returns its result. When ctx
// ends first, Call returns ctx's error. When fn returns, Call returns what
// it returned, a value together with an error included. A panic in fn is
// returned as an error wrapping ErrPanic.
func Call[T any](ctx context.Context, g *Guard, op string, fn func(context.Context) (T, error)) (T, error) {
	return CallFor(ctx, g, op, g.timeout, fn)
}

// CallFor is Call with a deadline of its own for this call (a package
// listing may take longer than a statfs should); timeout <= 0 means the
// Guard's.
func CallFor[T any](ctx context.Context, g *Guard, op string, timeout time.Duration, fn func(context.Context) (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	if timeout <= 0 {
		timeout = g.timeout
	}
	now := time.Now()
	g.mu.Lock()
	f, running := g.busy[op]
	switch {
	case running && !now.Before(f.deadline):
		g.mu.Unlock()
		return zero, fmt.Errorf("%w (blocked for %s)", ErrStuck, now.Sub(f.start).Round(time.Second))
	case !running:
		f = &flight{start: now, deadline: now.Add(timeout), done: make(chan struct{})}
		g.busy[op] = f
		g.start(ctx, op, f, func(ctx context.Context) (any, error) { return fn(ctx) })
	}
	f.waiters++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		f.waiters--
		g.mu.Unlock()
	}()

	t := time.NewTimer(time.Until(f.deadline))
	defer t.Stop()
	select {
	case <-f.done:
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-t.C:
		select {
		case <-f.done: // arrived together with the deadline: still counts
		default:
			return zero, fmt.Errorf("%w after %s", ErrTimeout, f.deadline.Sub(f.start).Round(time.Millisecond))
		}
	}
	v, ok := f.val.(T)
	if !ok && f.val != nil {
		return zero, fmt.Errorf("guard: operation %q used with two result types", op)
	}
	return v, f.err // a partial result comes with its error
}

// start runs fn for flight f in a goroutine of its own. Called with g.mu
// held.
func (g *Guard) start(ctx context.Context, op string, f *flight, fn func(context.Context) (any, error)) {
	cctx, cancel := context.WithDeadline(ctx, f.deadline)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				f.val, f.err = nil, fmt.Errorf("%w: %v", ErrPanic, p)
			}
			cancel()
			g.mu.Lock()
			if g.busy[op] == f {
				delete(g.busy, op)
			}
			g.mu.Unlock()
			close(f.done)
		}()
		f.val, f.err = fn(cctx)
	}()
}
