package client

import (
	"context"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// FleetOptions configure the live fleet view.
type FleetOptions struct {
	// Metrics also follows every host's metrics samples (dashboards,
	// exporters); without it the view has status and inventory only,
	// which is all targeting needs.
	Metrics bool
	// Settle is the quiet period that ends the initial load: Fleet returns
	// once no status or inventory arrived for this long after the
	// subscriptions were acknowledged (the broker sends the retained
	// messages right after). Default 200 ms.
	Settle time.Duration
	// MaxWait bounds the initial load (a busy fleet is never quiet).
	// Default 5 s.
	MaxWait time.Duration
}

// Fleet returns the client's live fleet view, starting it on the first
// call: it subscribes to every host's status and inventory (and metrics
// with o.Metrics) and waits until the retained messages have arrived (see
// FleetOptions.Settle). The view then stays up to date until Close; with
// Options.Reconnect it survives reconnects. Later calls return the same
// view (subscribing to metrics if a later call asks for them).
func (c *Client) Fleet(ctx context.Context, o FleetOptions) (*fleet.View, error) {
	if o.Settle <= 0 {
		o.Settle = 200 * time.Millisecond
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 5 * time.Second
	}
	c.fleetMu.Lock()
	defer c.fleetMu.Unlock()
	topics := fleet.Topics(c.topics.Prefix) // status, inventory, metrics
	want := topics[:2]
	if o.Metrics {
		want = topics
	}
	if c.view == nil {
		c.view = fleet.New(fleet.WithPrefix(c.topics.Prefix))
	}
	var last atomic.Int64
	handler := func(_ mqtt.Client, m mqtt.Message) {
		last.Store(time.Now().UnixNano())
		c.view.Apply(m.Topic(), m.Payload())
	}
	added := false
	for _, f := range want {
		c.subMu.Lock()
		_, have := c.subs[f]
		c.subMu.Unlock()
		if have {
			continue
		}
		if err := c.subscribe(f, handler); err != nil {
			return nil, err
		}
		added = true
	}
	if !added {
		return c.view, nil
	}
	last.Store(time.Now().UnixNano())
	deadline := time.Now().Add(o.MaxWait)
	tick := time.NewTicker(o.Settle / 4)
	defer tick.Stop()
	for time.Since(time.Unix(0, last.Load())) < o.Settle && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return c.view, ctx.Err()
		case <-tick.C:
		}
	}
	return c.view, nil
}

// FleetView returns the fleet view if Fleet was called, else nil.
func (c *Client) FleetView() *fleet.View {
	c.fleetMu.Lock()
	defer c.fleetMu.Unlock()
	return c.view
}

// statusesFromView converts the fleet view to the map Statuses returns.
func statusesFromView(v *fleet.View) map[string]protocol.Status {
	out := map[string]protocol.Status{}
	for _, h := range v.Snapshot() {
		if h.State == "" {
			continue
		}
		s := protocol.Status{V: protocol.Version, Host: h.ID, State: h.State, Reason: h.Reason, Session: h.Session,
			TS: protocol.Time{Time: h.StatusAt}, PID: h.PID}
		if h.Online {
			s.Version, s.OS, s.Arch, s.Groups = h.Version, h.OS, h.Arch, h.Groups
			if !h.StartedAt.IsZero() {
				s.StartedAt = &protocol.Time{Time: h.StartedAt}
			}
		} else {
			s.PID = 0
		}
		out[h.ID] = s
	}
	return out
}
