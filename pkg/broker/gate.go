package broker

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
)

// gateHandler passes records to h until closed. mochi's housekeeping
// goroutine finishes on its own a moment after Server.Close returns (mochi
// offers no way to wait for it) and may still log or fire a hook; nothing
// of that should reach the caller's logger after Broker.Close (a test
// logger panics when used after its test).
type gateHandler struct {
	h    slog.Handler
	gate *logGate
}

// logGate is shared by a handler and the handlers derived from it.
type logGate struct {
	mu     sync.RWMutex // read-held while a record is handled
	closed atomic.Bool
}

// close stops all logging; when it returns, no record is being handled.
func (g *logGate) close() {
	g.mu.Lock()
	g.closed.Store(true)
	g.mu.Unlock()
}

func (g gateHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return !g.gate.closed.Load() && g.h.Enabled(ctx, l)
}

func (g gateHandler) Handle(ctx context.Context, r slog.Record) error {
	g.gate.mu.RLock()
	defer g.gate.mu.RUnlock()
	if g.gate.closed.Load() {
		return nil
	}
	return g.h.Handle(ctx, r)
}

func (g gateHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return gateHandler{h: g.h.WithAttrs(as), gate: g.gate}
}

func (g gateHandler) WithGroup(name string) slog.Handler {
	return gateHandler{h: g.h.WithGroup(name), gate: g.gate}
}
