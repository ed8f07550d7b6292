// Package agentctl implements the command kinds that control the agent
// itself: agent.stop, agent.restart, agent.update and agent.uninstall.
// The handlers only ask the daemon to stop with a reason (after an update
// has been installed, or an uninstall recorded); the daemon then stops
// taking commands, finishes the command (its final result is journaled
// and published first, except for agent.update, whose result the new
// version publishes), publishes the offline status with the reason, and
// the caller exits, restarts, or removes the agent.
package agentctl

import (
	"context"
	"encoding/json"

	"github.com/mqagent/mqagent/pkg/dispatch"
)

// Handler answers agent.stop or agent.restart.
type Handler struct {
	// Reason is the offline reason: "shutdown" for agent.stop, "restart"
	// for agent.restart.
	Reason string
	// Request asks the daemon to stop with reason; it must not block.
	Request func(reason string)
}

// Decode accepts no args.
func (Handler) Decode(json.RawMessage) (any, error) { return nil, nil }

// Immediate: control commands never wait behind busy workers.
func (Handler) Immediate() {}

// Summary describes the request for the audit log.
func (h Handler) Summary(any) string { return "agent " + h.Reason }

// Run asks for the stop; the command succeeds once the request is made.
func (h Handler) Run(context.Context, *dispatch.Call) dispatch.Outcome {
	h.Request(h.Reason)
	return dispatch.Outcome{}
}
