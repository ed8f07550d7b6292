package metrics

import (
	"context"
	"testing"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/metrics"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/sysinfo"
)

var _ dispatch.Handler = Handler{}

func TestRun(t *testing.T) {
	c, err := metrics.New(metrics.Options{HostID: "web-01", Source: sysinfo.NewFixture(sysinfo.TypicalHost())})
	if err != nil {
		t.Fatal(err)
	}
	h := Handler{Sampler: c}
	if req, err := h.Decode(nil); req != nil || err != nil {
		t.Fatalf("Decode: %v %v", req, err)
	}
	out := h.Run(context.Background(), &dispatch.Call{})
	m, ok := out.Data.(*protocol.Metrics)
	if out.Error != "" || !ok || m.Host != "web-01" || m.Mem == nil {
		t.Fatalf("outcome %+v", out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if out := h.Run(ctx, &dispatch.Call{}); out.Error == "" || out.Data != nil {
		t.Fatalf("a sample cut short must fail: %+v", out)
	}
}
