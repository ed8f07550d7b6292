package dispatch

import (
	"context"
	"encoding/json"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// cancelHandler implements the cancel kind: a queued command ends
// canceled at once; a running one has its context canceled and ends
// canceled when its process tree is gone.
type cancelHandler struct{ d *Dispatcher }

func decodeID(args json.RawMessage) (any, error) {
	var a protocol.IDArgs
	if err := protocol.DecodeArgs(args, &a); err != nil {
		return nil, err
	}
	if !protocol.ValidID(a.ID) {
		return nil, &protocol.FieldError{Field: "args.id", Msg: "must match [A-Za-z0-9._-]{1,64}"}
	}
	return a, nil
}

func (cancelHandler) Decode(args json.RawMessage) (any, error) { return decodeID(args) }

func (h cancelHandler) Summary(req any) string { return "cancel " + req.(protocol.IDArgs).ID }

func (h cancelHandler) Run(_ context.Context, call *Call) Outcome {
	id := call.Req.(protocol.IDArgs).ID
	d := h.d
	d.mu.Lock()
	j, ok := d.jobs[id]
	if !ok || j.canceled {
		d.mu.Unlock()
		return Outcome{State: protocol.StateFailed, Error: "command " + id + " is not queued or running", Data: protocol.CancelData{}}
	}
	j.canceled = true
	if j.started {
		j.cancel(ErrCanceled)
		d.mu.Unlock()
		return Outcome{Data: protocol.CancelData{Canceled: true}}
	}
	d.mu.Unlock()
	// Still queued: it ends canceled now; the worker that pops it skips it.
	d.finish(j, Outcome{State: protocol.StateCanceled, Error: "canceled before it started"}, time.Time{})
	return Outcome{Data: protocol.CancelData{Canceled: true}}
}

// resultGetHandler implements result.get: the stored final result of a
// command, while the journal keeps it.
type resultGetHandler struct{ d *Dispatcher }

func (resultGetHandler) Decode(args json.RawMessage) (any, error) { return decodeID(args) }

func (resultGetHandler) Pure() {}

func (h resultGetHandler) Summary(req any) string { return "result.get " + req.(protocol.IDArgs).ID }

func (h resultGetHandler) Run(_ context.Context, call *Call) Outcome {
	id := call.Req.(protocol.IDArgs).ID
	e, ok, err := h.d.o.Store.Get(id)
	switch {
	case err != nil:
		return Outcome{Error: "journal: " + err.Error()}
	case !ok:
		return Outcome{Error: "unknown command id " + id + " (never seen, or no longer kept)"}
	case !protocol.IsFinal(e.State) || len(e.Result) == 0:
		return Outcome{Error: "command " + id + " has no final result yet (state " + e.State + ")"}
	}
	return Outcome{Data: json.RawMessage(e.Result)}
}

func (cancelHandler) Immediate() {}
