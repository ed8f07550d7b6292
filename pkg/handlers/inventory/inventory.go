// Package inventory implements the inventory command kind: a fresh
// inventory, returned as the result's data and re-published, retained, on
// the inventory topic.
package inventory

import (
	"context"
	"encoding/json"
	"log/slog"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// Refresher builds a fresh inventory and publishes it;
// *inventory.Builder implements it. A publish error comes with the
// inventory when only the publish failed.
type Refresher interface {
	Refresh(ctx context.Context) (*protocol.Inventory, error)
}

// Handler answers the inventory command. It is not Pure: it reads the
// host, runs facts executables and publishes, so it runs on a worker.
type Handler struct {
	Refresher Refresher
	// Logger receives a failed re-publish (nil: discarded).
	Logger *slog.Logger
}

// Decode accepts any args (inventory has none).
func (Handler) Decode(json.RawMessage) (any, error) { return nil, nil }

// Summary describes the request for the audit log.
func (Handler) Summary(any) string { return "inventory" }

// Run builds and publishes the inventory. When only the publish failed
// (the connection dropped) the command still succeeds with the inventory:
// the builder publishes it on the next connect.
func (h Handler) Run(ctx context.Context, _ *dispatch.Call) dispatch.Outcome {
	inv, err := h.Refresher.Refresh(ctx)
	if inv == nil {
		msg := "inventory not built"
		if err != nil {
			msg = "inventory: " + err.Error()
		}
		return dispatch.Outcome{Error: msg}
	}
	if err != nil && h.Logger != nil {
		h.Logger.Warn("inventory command: re-publish failed; it is published on the next connect", "err", err)
	}
	return dispatch.Outcome{Data: inv}
}
