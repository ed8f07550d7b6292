package harness

import (
	"sync"
	"time"
)

// Notifier wakes waiters on every change of the state mu guards: the
// change's author calls Notify with mu held; Await checks a condition
// under mu after each change. The zero value is ready to use.
type Notifier struct {
	ch chan struct{} // closed and replaced on every change
}

// Notify wakes every waiter. Call it with the guarding mutex held.
func (n *Notifier) Notify() {
	if n.ch != nil {
		close(n.ch)
	}
	n.ch = make(chan struct{})
}

// Await waits until cond (called with mu held) is true or timeout
// passes, checking it again on every Notify. It reports whether cond held.
func (n *Notifier) Await(mu sync.Locker, timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		mu.Lock()
		ok := cond()
		if n.ch == nil {
			n.ch = make(chan struct{})
		}
		ch := n.ch
		mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return false
		}
	}
}
