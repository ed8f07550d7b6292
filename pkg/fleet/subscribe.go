package fleet

import (
	"sort"
	"sync"
)

// ChangeKind says what happened to a host.
type ChangeKind int

// Kinds of change.
const (
	// Added: a host this subscriber had not been told about.
	Added ChangeKind = iota + 1
	// Updated: a host this subscriber already knows changed.
	Updated
	// Removed: the host is gone (its retained status was cleared, or
	// Forget).
	Removed
)

// String returns "added", "updated" or "removed".
func (k ChangeKind) String() string {
	switch k {
	case Added:
		return "added"
	case Updated:
		return "updated"
	case Removed:
		return "removed"
	}
	return "unknown"
}

// Change is a delta delivered to a subscriber.
type Change struct {
	Kind ChangeKind
	ID   string
	// Host is the host's value when the change was delivered (zero for
	// Removed).
	Host Host
	// Parts are the parts that changed since the subscriber was last told
	// about this host (PartAll for Added and Removed).
	Parts Part
}

// subscriber coalesces changes per host: Apply only marks a host id as
// pending (a map insert under a small lock); the subscriber's goroutine
// turns pending ids into Changes carrying the host's current value and
// blocks on the subscriber's channel, never on Apply.
type subscriber struct {
	mu      sync.Mutex
	pending map[string]Part
	order   []string      // pending ids in the order they were first marked
	wake    chan struct{} // capacity 1
	out     chan Change
	done    chan struct{}
	once    sync.Once
}

func (s *subscriber) mark(id string, p Part) {
	s.mu.Lock()
	if old, ok := s.pending[id]; ok {
		s.pending[id] = old | p
	} else {
		s.pending[id] = p
		s.order = append(s.order, id)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) take() ([]string, map[string]Part) {
	s.mu.Lock()
	defer s.mu.Unlock()
	order, pending := s.order, s.pending
	s.order, s.pending = nil, map[string]Part{}
	return order, pending
}

// notifyLocked marks id as changed for every subscriber; v.mu is held.
func (v *View) notifyLocked(id string, p Part) {
	for s := range v.subs {
		s.mark(id, p)
	}
}

// Subscribe returns a channel of changes and a function that ends the
// subscription (and closes the channel; it may be called more than once).
// The channel first delivers every host already known, as Added, in id
// order, then a Change whenever a host is added, updated or removed.
//
// Changes are coalesced, never dropped: a subscriber that falls behind
// gets one Change per host that changed meanwhile, carrying the host's
// latest value and the union of the parts that changed. A slow subscriber
// therefore never blocks Apply, and its memory is bounded by the number of
// hosts (plus buf). buf is the channel's capacity (negative means 0).
func (v *View) Subscribe(buf int) (<-chan Change, func()) {
	if buf < 0 {
		buf = 0
	}
	s := &subscriber{
		pending: map[string]Part{},
		wake:    make(chan struct{}, 1),
		out:     make(chan Change, buf),
		done:    make(chan struct{}),
	}
	v.mu.Lock()
	ids := make([]string, 0, len(v.hosts))
	for id := range v.hosts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		s.mark(id, PartAll)
	}
	v.subs[s] = struct{}{}
	v.mu.Unlock()
	go v.deliver(s)
	cancel := func() {
		s.once.Do(func() {
			v.mu.Lock()
			delete(v.subs, s)
			v.mu.Unlock()
			close(s.done)
		})
	}
	return s.out, cancel
}

// deliver runs one subscriber's deliveries until it is canceled.
func (v *View) deliver(s *subscriber) {
	defer close(s.out)
	known := map[string]bool{} // hosts this subscriber was told about
	for {
		select {
		case <-s.done:
			return
		case <-s.wake:
		}
		order, pending := s.take()
		for _, id := range order {
			h, ok := v.Host(id)
			c := Change{ID: id, Parts: pending[id]}
			switch {
			case ok && known[id]:
				c.Kind, c.Host = Updated, h
			case ok:
				c.Kind, c.Host, c.Parts = Added, h, PartAll
				known[id] = true
			case known[id]:
				c.Kind, c.Parts = Removed, PartAll
				delete(known, id)
			default:
				continue // added and removed before the subscriber heard of it
			}
			select {
			case s.out <- c:
			case <-s.done:
				return
			}
		}
	}
}
