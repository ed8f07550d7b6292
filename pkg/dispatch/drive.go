package dispatch

import (
	"context"

	"github.com/mqagent/mqagent/pkg/transport"
)

// Driving the pipeline without its goroutines. The agent uses Run, which
// has an intake goroutine, MaxConcurrent workers and a prune timer per
// dispatcher. The swarm simulator (test/swarm) runs thousands of
// dispatchers in one process and drives them from a few shared goroutines
// instead, through these three methods: the checks, journal, results and
// audit records are the same code.

// Recover does what Run does first: commands interrupted by a crash end
// failed / interrupted, commands still queued are queued again (RunQueued
// runs them). Call it once, before Handle.
func (d *Dispatcher) Recover() error { return d.recover() }

// Handle takes one received message on the caller's goroutine, as Run's
// intake goroutine does with what Submit queued: the checks, the journal,
// the acknowledgement; ping and result.get are answered, cancel is
// carried out, other kinds are queued for RunQueued. The messages of one
// dispatcher must be handled one at a time, in the order received. After
// Stop, messages are left unacknowledged (the broker delivers them again).
func (d *Dispatcher) Handle(m transport.Message) {
	d.received.Add(1)
	if d.stopping.Load() {
		return
	}
	d.handle(m)
}

// RunQueued runs the commands waiting in the queue on the caller's
// goroutine, one after the other, until the queue is empty, and returns
// how many it ran; after Stop it runs none. runCtx ending interrupts a
// running command, as the end of Run's grace period does.
func (d *Dispatcher) RunQueued(runCtx context.Context) int {
	for n := 0; ; n++ {
		if d.stopping.Load() {
			return n // left queued on disk, as Run's workers leave them
		}
		select {
		case j := <-d.queue:
			d.execute(runCtx, j)
		default:
			return n
		}
	}
}
