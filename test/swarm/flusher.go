package swarm

import (
	"context"
	"sync"
	"time"
)

// flusher publishes the outboxes of every host of the process from a
// pool of goroutines, where the agent has one publisher goroutine
// (outbox.Publisher.Run) per process. It calls the same Publisher.Flush,
// at the same moments: when messages were added, when the session
// connects, again while a flush published something, and a second after
// a failed one. A flush holds its goroutine until the broker acknowledged
// the window, so the pool is large (Config.Flushers).
type flusher struct {
	q       chan *agentHost // a host is in it at most once: never full
	timeout time.Duration
}

// flushState is a host's place in the flusher; guarded by mu.
type flushState struct {
	mu      sync.Mutex
	queued  bool // in q
	running bool // a goroutine is flushing it
	again   bool // flush again when the running one ends
	stopped bool // the host is stopping: its stop drains the outbox
}

func newFlusher(hosts int, timeout time.Duration) *flusher {
	return &flusher{q: make(chan *agentHost, hosts), timeout: timeout}
}

func (f *flusher) run(ctx context.Context, n int, wg *sync.WaitGroup) {
	for range n {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case h := <-f.q:
					f.flush(h)
				}
			}
		})
	}
}

// schedule asks for a flush of h. It never blocks.
func (f *flusher) schedule(h *agentHost) {
	s := &h.flush
	s.mu.Lock()
	switch {
	case s.stopped || s.queued:
		s.mu.Unlock()
		return
	case s.running:
		s.again = true
		s.mu.Unlock()
		return
	}
	s.queued = true
	s.mu.Unlock()
	f.q <- h
}

func (f *flusher) flush(h *agentHost) {
	s := &h.flush
	s.mu.Lock()
	s.queued, s.running, s.again = false, true, false
	stopped := s.stopped
	s.mu.Unlock()
	retry := false
	if !stopped && h.connected() { // else the next connect schedules it
		sent, err := h.pub.Flush(f.timeout)
		switch {
		case err != nil:
			retry = true
		case sent > 0:
			s.mu.Lock()
			s.again = true // there may be more
			s.mu.Unlock()
		}
	}
	s.mu.Lock()
	s.running = false
	again := s.again && !s.stopped
	s.again = false
	s.mu.Unlock()
	if again {
		f.schedule(h)
	}
	if retry {
		time.AfterFunc(time.Second, func() { f.schedule(h) })
	}
}

// stop takes h out of the flusher and waits (bounded) for a flush in
// progress to end.
func (f *flusher) stop(h *agentHost) {
	s := &h.flush
	for deadline := time.Now().Add(f.timeout + time.Second); ; {
		s.mu.Lock()
		s.stopped = true
		running := s.running
		s.mu.Unlock()
		if !running || time.Now().After(deadline) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
