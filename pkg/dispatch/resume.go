package dispatch

import (
	"errors"
	"fmt"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// Resumer is implemented by handlers whose commands outlive the agent
// process (agent.update: the new version publishes the final result). A
// command of such a kind that was running when the previous process ended
// is given to Resume instead of ending interrupted: Resume returns true
// when its owner will finish it with Complete, false to let it end
// failed / interrupted as usual.
type Resumer interface{ Resume(id string) bool }

// ErrNotRunning is returned by Complete for a command that is not in the
// journal or not running.
var ErrNotRunning = errors.New("command is not running")

// Complete finishes a running command with out (journal, result and
// audit record, like any other final result). It is how a Detached or
// resumed command ends. A command that is already final is left as it is
// (nil error), so Complete may be called again after a crash.
func (d *Dispatcher) Complete(id string, out Outcome) error {
	e, ok, err := d.o.Store.Get(id)
	switch {
	case err != nil:
		return fmt.Errorf("complete %s: %w", id, err)
	case !ok:
		return fmt.Errorf("complete %s: %w", id, ErrNotRunning)
	case protocol.IsFinal(e.State):
		return nil
	case e.State != protocol.StateRunning:
		return fmt.Errorf("complete %s (state %s): %w", id, e.State, ErrNotRunning)
	}
	if out.State == "" {
		out.State = protocol.StateSucceeded
		if out.Error != "" {
			out.State = protocol.StateFailed
		}
	}
	out.Detached = false
	j := &job{topic: e.Topic, env: &protocol.Envelope{ID: e.ID, Kind: e.Kind}, cmd: &protocol.Command{ID: e.ID, Kind: e.Kind}}
	d.finish(j, out, e.Received)
	if e, ok, err := d.o.Store.Get(id); err == nil && ok && !protocol.IsFinal(e.State) {
		return fmt.Errorf("complete %s: the final result could not be journaled", id)
	}
	return nil
}
