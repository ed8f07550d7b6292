package inventory

import (
	"context"
	"errors"
	"testing"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/inventory"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/sysinfo"
)

var _ dispatch.Handler = Handler{}

func TestRun(t *testing.T) {
	var published [][]byte
	fail := false
	b, err := inventory.New(inventory.Options{HostID: "web-01", Version: "1.0", Source: sysinfo.NewFixture(sysinfo.TypicalHost()),
		Publish: func(_ context.Context, p []byte) error {
			if fail {
				return errors.New("not connected")
			}
			published = append(published, p)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	h := Handler{Refresher: b}
	out := h.Run(context.Background(), &dispatch.Call{})
	inv, ok := out.Data.(*protocol.Inventory)
	if out.Error != "" || !ok || inv.Host != "web-01" || len(published) != 1 {
		t.Fatalf("outcome %+v, %d published", out, len(published))
	}
	// Published again although unchanged: the command asks for it.
	if out := h.Run(context.Background(), &dispatch.Call{}); out.Error != "" || len(published) != 2 {
		t.Fatalf("second run: %+v, %d published", out, len(published))
	}
	// Only the publish failed: the command still returns the inventory.
	fail = true
	if out := h.Run(context.Background(), &dispatch.Call{}); out.Error != "" || out.Data == nil {
		t.Fatalf("publish failure: %+v", out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if out := h.Run(ctx, &dispatch.Call{}); out.Error == "" || out.Data != nil {
		t.Fatalf("a build cut short must fail: %+v", out)
	}
}
