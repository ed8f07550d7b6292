// Package ping implements the ping command kind: the agent's version and
// uptime, answered without touching the host.
package ping

import (
	"context"
	"encoding/json"
	"time"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// Handler answers ping.
type Handler struct {
	Version string
	Started time.Time // when the agent started
}

// Decode accepts any args (ping has none).
func (Handler) Decode(json.RawMessage) (any, error) { return nil, nil }

// Pure marks ping as free of side effects.
func (Handler) Pure() {}

// Summary describes the request for the audit log.
func (Handler) Summary(any) string { return "ping" }

// Run answers at once. The uptime is never negative, even for a Started
// read from a wall clock that was later set back.
func (h Handler) Run(context.Context, *dispatch.Call) dispatch.Outcome {
	up := max(time.Since(h.Started), 0)
	return dispatch.Outcome{Data: protocol.PingData{Version: h.Version, UptimeMS: up.Milliseconds()}}
}
