package agentctl

import (
	"context"
	"encoding/json"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/update"
)

// Updater applies updates (update.Manager).
type Updater interface {
	// Apply downloads, verifies and installs the new version; nil means
	// the agent must now restart into it.
	Apply(ctx context.Context, id string, r update.Request) error
	// Owns reports whether id is the update in progress, which the
	// update's owner finishes after the restart.
	Owns(id string) bool
}

// Update answers agent.update: on success the new binary is in place and
// the daemon restarts into it; the command stays running and its final
// result ({from, to}) is published by the new version once it is online,
// or by the previous one after a rollback.
type Update struct {
	Updater Updater
	// Version is the running version (the result's "from").
	Version string
	// AllowHTTP permits plain http to any host (development mode).
	AllowHTTP bool
	// Request asks the daemon to stop with a reason; it must not block.
	Request func(reason string)
}

// Decode checks the args (see update.ParseRequest).
func (u Update) Decode(args json.RawMessage) (any, error) {
	var a protocol.UpdateArgs
	if err := protocol.DecodeArgs(args, &a); err != nil {
		return nil, err
	}
	return update.ParseRequest(a, u.AllowHTTP)
}

// Summary describes the request for the audit log.
func (u Update) Summary(req any) string {
	r := req.(update.Request)
	return "agent update to " + r.Version + " from " + r.URL.Redacted()
}

// Run applies the update and asks for the restart.
func (u Update) Run(ctx context.Context, call *dispatch.Call) dispatch.Outcome {
	r := call.Req.(update.Request)
	if err := u.Updater.Apply(ctx, call.Cmd.ID, r); err != nil {
		return dispatch.Outcome{State: protocol.StateFailed, Error: "update: " + err.Error(), Data: update.Result{From: u.Version, To: r.Version}}
	}
	u.Request(protocol.ReasonUpdate)
	return dispatch.Outcome{Detached: true}
}

// Resume keeps the update in progress running across the restart.
func (u Update) Resume(id string) bool { return u.Updater.Owns(id) }

// Uninstall answers agent.uninstall: it records the uninstall (so that it
// is carried out even if the agent stops before it is done) and asks the
// daemon to stop with reason uninstall; the caller then removes the
// service, the binary and, with purge, the data and logs.
type Uninstall struct {
	// Prepare records the uninstall; an error fails the command.
	Prepare func(id string, purge bool) error
	// Request asks the daemon to stop with a reason; it must not block.
	Request func(reason string)
}

// Decode reads {purge}.
func (Uninstall) Decode(args json.RawMessage) (any, error) {
	var a protocol.UninstallArgs
	if err := protocol.DecodeArgs(args, &a); err != nil {
		return nil, err
	}
	return a, nil
}

// Immediate: control commands never wait behind busy workers.
func (Uninstall) Immediate() {}

// Summary describes the request for the audit log.
func (Uninstall) Summary(req any) string {
	if req.(protocol.UninstallArgs).Purge {
		return "agent uninstall (purge data and logs)"
	}
	return "agent uninstall"
}

// Run records the uninstall and asks for the stop.
func (u Uninstall) Run(_ context.Context, call *dispatch.Call) dispatch.Outcome {
	purge := call.Req.(protocol.UninstallArgs).Purge
	if err := u.Prepare(call.Cmd.ID, purge); err != nil {
		return dispatch.Outcome{State: protocol.StateFailed, Error: "uninstall: " + err.Error()}
	}
	u.Request(protocol.ReasonUninstall)
	return dispatch.Outcome{}
}
