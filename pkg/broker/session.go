package broker

import (
	"bytes"
	"log/slog"
	"sort"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// sessionHook corrects mochi's handling of sessions:
//
//   - Resume order. When a session resumes, mochi re-sends its queued
//     messages sorted by uint16(Created), a unix second truncated to 16
//     bits: messages queued within one second come out in random order, and
//     the truncation wraps every 18 hours. Before mochi takes the session
//     over, the hook sorts the queue by (Created, packet id in the order
//     the ids were handed out) and rewrites Created to consecutive values
//     whose low 16 bits do not wrap, so mochi's sort yields the queue order.
//     Created is otherwise used only by the message expiry this package
//     turns off (MaximumMessageExpiryInterval 0). A message published in
//     the microseconds of the takeover itself may still overtake the queue.
//   - Expiry. mochi forgets an expired session but leaves its subscriptions
//     in the topic index, so a later client with the same id would receive
//     messages for them; the hook removes them.
//   - Drops. A message dropped because a client's write queue is full is
//     only logged at Debug by mochi; the hook logs it at Warn and counts it.
type sessionHook struct {
	mqtt.HookBase
	srv           *mqtt.Server
	log           *slog.Logger
	pendingWrites int
	dropped       atomic.Int64
}

func (h *sessionHook) ID() string { return "mqagent-session" }

func (h *sessionHook) Provides(b byte) bool {
	return bytes.IndexByte([]byte{mqtt.OnSessionEstablish, mqtt.OnClientExpired, mqtt.OnPublishDropped}, b) >= 0
}

// OnSessionEstablish runs after authentication, before mochi takes over an
// existing session with the client's id.
func (h *sessionHook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	existing, ok := h.srv.Clients.Get(cl.ID)
	if !ok || pk.Connect.Clean || (existing.Properties.Clean && existing.Properties.ProtocolVersion < 5) {
		return // no session to resume (same test as mochi's inheritClientSession)
	}
	restampQueue(existing.State.Inflight)
}

// restampQueue rewrites the Created of the queued packets so that sorting by
// uint16(Created) gives queue order (see sessionHook).
func restampQueue(inf *mqtt.Inflight) {
	pks := inf.GetAll(false)
	if len(pks) < 2 {
		return
	}
	sortQueue(pks)
	base := pks[0].Created - int64(len(pks))
	if base < 0 {
		base = 0
	}
	base &^= 0xFFFF // low 16 bits zero: base+i does not wrap for i < 65536
	for i := range pks {
		if _, still := inf.Get(pks[i].PacketID); !still {
			continue // acknowledged meanwhile by the old connection
		}
		pks[i].Created = base + int64(i)
		inf.Set(pks[i])
	}
}

// sortQueue sorts a session's queued packets into the order they were
// queued: by Created second, then by packet id in the circular order mochi
// hands ids out (1, 2, … 65535, 1, …).
func sortQueue(pks []packets.Packet) {
	sort.Slice(pks, func(i, j int) bool {
		if pks[i].Created != pks[j].Created {
			return pks[i].Created < pks[j].Created
		}
		return pks[i].PacketID < pks[j].PacketID
	})
	for start := 0; start < len(pks); {
		end := start + 1
		for end < len(pks) && pks[end].Created == pks[start].Created {
			end++
		}
		rotateCircular(pks[start:end])
		start = end
	}
}

// rotateCircular takes packets sorted by id, handed out in one run of the
// circular id sequence, and rotates them so that the first id after the
// widest gap comes first: {1, 2, 65534, 65535} becomes {65534, 65535, 1, 2}.
func rotateCircular(g []packets.Packet) {
	n := len(g)
	if n < 2 {
		return
	}
	// The gap from the last id round to the first (ids run 1..65535).
	widest, at := int(g[0].PacketID)+0xFFFF-int(g[n-1].PacketID), 0
	for i := 1; i < n; i++ {
		if gap := int(g[i].PacketID) - int(g[i-1].PacketID); gap > widest {
			widest, at = gap, i
		}
	}
	if at == 0 {
		return
	}
	rotated := append(append(make([]packets.Packet, 0, n), g[at:]...), g[:at]...)
	copy(g, rotated)
}

// OnClientExpired removes an expiring session's subscriptions and queue.
func (h *sessionHook) OnClientExpired(cl *mqtt.Client) {
	for filter := range cl.State.Subscriptions.GetAll() {
		if h.srv.Topics.Unsubscribe(filter, cl.ID) {
			atomic.AddInt64(&h.srv.Info.Subscriptions, -1)
		}
		cl.State.Subscriptions.Delete(filter)
	}
	queued := cl.State.Inflight.Len()
	cl.ClearInflights()
	h.log.Info("session expired", "client", cl.ID, "queued_dropped", queued)
}

// OnPublishDropped is called when a message could not be queued for a
// connected client because MaxPendingWrites were already waiting.
func (h *sessionHook) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	n := h.dropped.Add(1)
	h.log.Warn("message dropped: client's write queue is full",
		"client", cl.ID, "topic", pk.TopicName, "qos", pk.FixedHeader.Qos,
		"max_pending_writes", h.pendingWrites, "dropped_total", n)
}
