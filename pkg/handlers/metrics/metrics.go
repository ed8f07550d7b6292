// Package metrics implements the metrics command kind: one metrics sample
// taken now, returned as the result's data (it is not published on the
// metrics topic).
package metrics

import (
	"context"
	"encoding/json"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// Sampler takes a metrics sample; *metrics.Collector implements it.
type Sampler interface {
	Sample(ctx context.Context) (*protocol.Metrics, error)
}

// Handler answers the metrics command. It is not Pure: a sample reads the
// host and may take up to a read deadline, so it runs on a worker, never
// on the intake path.
type Handler struct {
	Sampler Sampler
}

// Decode accepts any args (metrics has none).
func (Handler) Decode(json.RawMessage) (any, error) { return nil, nil }

// Summary describes the request for the audit log.
func (Handler) Summary(any) string { return "metrics" }

// Run takes the sample.
func (h Handler) Run(ctx context.Context, _ *dispatch.Call) dispatch.Outcome {
	m, err := h.Sampler.Sample(ctx)
	if err != nil {
		// ctx ended: the dispatcher names the cause (timed out, canceled).
		return dispatch.Outcome{Error: "metrics: " + err.Error()}
	}
	return dispatch.Outcome{Data: m}
}
