package dispatch

import (
	"encoding/json"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// OrphanKiller kills what is left of a process tree recorded by a previous
// agent process (see runner.KillOrphan).
type OrphanKiller func(proc json.RawMessage) (bool, error)

// recover ends commands that were running when the agent died (failed /
// interrupted, never re-run) and queues again those that were queued.
func (d *Dispatcher) recover() error {
	entries, err := d.o.Store.Unfinished()
	if err != nil {
		return err
	}
	for _, e := range entries {
		j := &job{topic: e.Topic, env: &protocol.Envelope{ID: e.ID, Kind: e.Kind},
			cmd: &protocol.Command{ID: e.ID, Kind: e.Kind}}
		if e.State != protocol.StateQueued || len(e.Payload) == 0 {
			if r, ok := d.handlers[e.Kind].(Resumer); ok && e.State == protocol.StateRunning && r.Resume(e.ID) {
				d.log.Info("command continues after the restart", "id", e.ID, "kind", e.Kind)
				continue
			}
			if len(e.Proc) > 0 && d.o.KillOrphan != nil {
				if killed, err := d.o.KillOrphan(e.Proc); err != nil {
					d.log.Warn("cannot kill what is left of an interrupted command", "id", e.ID, "err", err)
				} else if killed {
					d.log.Info("killed what was left of an interrupted command", "id", e.ID)
				}
			}
			d.log.Warn("command was running when the agent stopped: reported interrupted", "id", e.ID, "kind", e.Kind)
			d.finish(j, Outcome{State: protocol.StateFailed, Error: protocol.ErrInterrupted}, time.Time{})
			continue
		}
		env, err := protocol.Decode(e.Payload)
		var cmd *protocol.Command
		if err == nil {
			cmd, err = env.Command(d.o.DefaultTTL)
		}
		var h Handler
		var req any
		if err == nil {
			var ok bool
			if h, ok = d.handlers[cmd.Kind]; ok {
				req, err = h.Decode(cmd.Args)
			} else {
				err = &protocol.FieldError{Field: "kind", Msg: "unknown kind " + cmd.Kind}
			}
		}
		if err != nil {
			d.finish(j, Outcome{State: protocol.StateFailed, Error: "cannot re-queue after restart: " + err.Error()}, time.Time{})
			continue
		}
		j.env, j.cmd, j.handler, j.req = env, cmd, h, req
		if s, ok := h.(Summarizer); ok {
			j.summary = truncate(s.Summary(req), 200)
		}
		if len(d.queue) == cap(d.queue) {
			d.finish(j, Outcome{State: protocol.StateRejected, Error: "queue full"}, time.Time{})
			continue
		}
		d.log.Info("command queued before the restart: queued again", "id", e.ID, "kind", cmd.Kind)
		d.enqueue(j)
	}
	if n, err := d.o.Store.Prune(d.o.Now()); err == nil && n > 0 {
		d.log.Debug("journal pruned", "entries", n)
	}
	return nil
}
