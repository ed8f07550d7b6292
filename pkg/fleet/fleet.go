// Package fleet keeps a live, concurrency-safe model of the fleet from what
// the agents publish: their retained status (birth, graceful death and last
// will), their retained inventory and their metrics samples. Feed it every
// MQTT message received on the topics Topics returns (retained and live);
// read it with Snapshot and Host, follow it with Subscribe, and ask it which
// hosts a command will reach with Resolve.
//
// The view honours the status `session` counter of docs/PROTOCOL.md: an
// offline status (a late will of a dead connection, a stale retained
// message) whose session is lower than the last one seen for that host is
// ignored, so it never marks a live host offline.
//
// It has no MQTT dependency: the caller owns the connection (pkg/client
// does this) and hands messages to Apply, which never blocks and never
// panics on bad input.
package fleet

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// Host is what the view knows about one host. A Host value is a copy: the
// view never changes it after handing it out. Its slices, map and pointers
// are shared between copies and must be treated as read-only.
type Host struct {
	ID string `json:"id"`
	// Online is true when the last status that counts says "online".
	Online bool `json:"online"`
	// State is the status state: "online", "offline", or "" when no status
	// was seen yet (the host is known from its inventory or metrics only).
	State string `json:"state"`
	// Reason is the offline reason: lost, shutdown, restart, update,
	// uninstall.
	Reason string `json:"reason,omitempty"`
	// Session is the session of the last status that counts.
	Session uint64 `json:"session"`
	// StatusAt is the ts of that status.
	StatusAt time.Time `json:"status_at,omitzero"`

	// Version, OS, Arch and Groups come from the last online status (an
	// offline status carries none of them, so they are kept from before),
	// else from the inventory.
	Version string   `json:"version,omitempty"`
	OS      string   `json:"os,omitempty"`
	Arch    string   `json:"arch,omitempty"`
	Groups  []string `json:"groups,omitempty"`
	// PID and StartedAt describe the agent process of the online status.
	PID       int       `json:"pid,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`

	// Hostname, Platform, PlatformVersion and Facts come from the
	// inventory. HasInventory says whether one was seen: without it the
	// host's facts are unknown (not empty).
	Hostname        string            `json:"hostname,omitempty"`
	Platform        string            `json:"platform,omitempty"`
	PlatformVersion string            `json:"platform_version,omitempty"`
	Facts           map[string]string `json:"facts,omitempty"`
	HasInventory    bool              `json:"has_inventory"`
	// Inventory is the last inventory (nil when none), read-only.
	Inventory *protocol.Inventory `json:"-"`

	// Metrics is the last metrics sample (nil when none), read-only;
	// MetricsAt its ts.
	Metrics   *protocol.Metrics `json:"-"`
	MetricsAt time.Time         `json:"metrics_at,omitzero"`

	// LastSeen is the latest ts of anything the host published (status,
	// inventory, metrics): for a retained message, when the host published
	// it, not when the view received it.
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// Part says which kind of message changed a host.
type Part uint8

// Parts of a host.
const (
	PartStatus Part = 1 << iota
	PartInventory
	PartMetrics

	PartAll = PartStatus | PartInventory | PartMetrics
)

// Message kinds of the topic tree that the view reads.
const (
	kindStatus    = "status"
	kindInventory = "inventory"
	kindMetrics   = "metrics"
)

// Topics is the list of subscriptions (MQTT topic filters) that feed a view
// for the topic prefix (protocol.DefaultPrefix when ""): every host's status,
// inventory and metrics.
func Topics(prefix string) []string {
	if prefix == "" {
		prefix = protocol.DefaultPrefix
	}
	return []string{
		prefix + "/hosts/+/" + kindStatus,
		prefix + "/hosts/+/" + kindInventory,
		prefix + "/hosts/+/" + kindMetrics,
	}
}

// Option configures a View.
type Option func(*View)

// WithPrefix sets the topic prefix of the messages the view accepts
// (default protocol.DefaultPrefix). Messages under another prefix are not
// counted as malformed, just ignored.
func WithPrefix(prefix string) Option { return func(v *View) { v.prefix = prefix } }

// WithClock sets the clock used for Stats.LastApply (tests).
func WithClock(now func() time.Time) Option { return func(v *View) { v.now = now } }

// View is the live model of the fleet. It is safe for concurrent use.
type View struct {
	prefix string
	now    func() time.Time

	mu    sync.RWMutex
	hosts map[string]*Host
	subs  map[*subscriber]struct{}

	messages  atomic.Uint64
	malformed atomic.Uint64
	stale     atomic.Uint64
	ignored   atomic.Uint64
	lastApply atomic.Int64 // unix nanoseconds
}

// New returns an empty view.
func New(opts ...Option) *View {
	v := &View{prefix: protocol.DefaultPrefix, now: time.Now, hosts: map[string]*Host{}, subs: map[*subscriber]struct{}{}}
	for _, o := range opts {
		o(v)
	}
	return v
}

// Topics is the package function Topics for the view's prefix.
func (v *View) Topics() []string { return Topics(v.prefix) }

// Stats counts what the view was fed.
type Stats struct {
	Hosts   int `json:"hosts"`
	Online  int `json:"online"`
	Offline int `json:"offline"`
	// Messages applied, whatever their outcome.
	Messages uint64 `json:"messages"`
	// Malformed: payloads that could not be decoded, had the wrong "v", or
	// named another host than their topic.
	Malformed uint64 `json:"malformed"`
	// Stale: statuses ignored because of their session.
	Stale uint64 `json:"stale"`
	// Ignored: messages on topics the view does not read.
	Ignored uint64 `json:"ignored"`
	// LastApply is when the last message was applied (zero: never).
	LastApply time.Time `json:"last_apply,omitzero"`
}

// Stats returns the view's counters.
func (v *View) Stats() Stats {
	s := Stats{
		Messages:  v.messages.Load(),
		Malformed: v.malformed.Load(),
		Stale:     v.stale.Load(),
		Ignored:   v.ignored.Load(),
	}
	if ns := v.lastApply.Load(); ns != 0 {
		s.LastApply = time.Unix(0, ns)
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	s.Hosts = len(v.hosts)
	for _, h := range v.hosts {
		if h.Online {
			s.Online++
		} else if h.State == protocol.StatusOffline {
			s.Offline++
		}
	}
	return s
}

// parseTopic splits P/hosts/{host}/{kind}.
func (v *View) parseTopic(topic string) (host, kind string, ok bool) {
	rest, ok := strings.CutPrefix(topic, v.prefix+"/hosts/")
	if !ok {
		return "", "", false
	}
	host, kind, ok = strings.Cut(rest, "/")
	if !ok || strings.Contains(kind, "/") {
		return "", "", false
	}
	switch kind {
	case kindStatus, kindInventory, kindMetrics:
		return host, kind, true
	}
	return "", "", false
}

// Apply feeds one MQTT message (retained or live) to the view and reports
// whether it changed what the view knows. Messages on other topics are
// ignored; bad payloads are counted (Stats.Malformed) and otherwise
// ignored. An empty payload (a cleared retained message) on a status topic
// forgets the host; on an inventory topic it forgets the inventory. Apply
// never blocks on subscribers.
func (v *View) Apply(topic string, payload []byte) (changed bool) {
	v.messages.Add(1)
	v.lastApply.Store(v.now().UnixNano())
	id, kind, ok := v.parseTopic(topic)
	if !ok {
		v.ignored.Add(1)
		return false
	}
	if !protocol.ValidHostID(id) {
		v.malformed.Add(1)
		return false
	}
	if len(payload) == 0 {
		return v.clear(id, kind)
	}
	switch kind {
	case kindStatus:
		var s protocol.Status
		if json.Unmarshal(payload, &s) != nil || s.V != protocol.Version || s.Host != id ||
			(s.State != protocol.StatusOnline && s.State != protocol.StatusOffline) {
			v.malformed.Add(1)
			return false
		}
		return v.applyStatus(&s)
	case kindInventory:
		inv := new(protocol.Inventory)
		if json.Unmarshal(payload, inv) != nil || inv.V != protocol.Version || inv.Host != id {
			v.malformed.Add(1)
			return false
		}
		return v.applyInventory(inv)
	default:
		m := new(protocol.Metrics)
		if json.Unmarshal(payload, m) != nil || m.V != protocol.Version || m.Host != id {
			v.malformed.Add(1)
			return false
		}
		return v.applyMetrics(m)
	}
}

func (v *View) clear(id, kind string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	h := v.hosts[id]
	if h == nil {
		return false
	}
	switch kind {
	case kindStatus:
		delete(v.hosts, id)
		v.notifyLocked(id, PartAll)
		return true
	case kindInventory:
		if !h.HasInventory {
			return false
		}
		n := *h
		n.Inventory, n.HasInventory, n.Facts = nil, false, nil
		n.Hostname, n.Platform, n.PlatformVersion = "", "", ""
		v.hosts[id] = &n
		v.notifyLocked(id, PartInventory)
		return true
	}
	return false // a cleared metrics message changes nothing
}

// staleStatus reports whether s must be ignored given the host's current
// status: a lower session than the one seen, except an online status that
// is newer in time (the agent's data directory, and so its session counter,
// was reset).
func staleStatus(cur *Host, s *protocol.Status) bool {
	if cur == nil || cur.State == "" || s.Session >= cur.Session {
		return false
	}
	return s.State != protocol.StatusOnline || !s.TS.After(cur.StatusAt)
}

func (v *View) applyStatus(s *protocol.Status) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	cur := v.hosts[s.Host]
	if staleStatus(cur, s) {
		v.stale.Add(1)
		return false
	}
	var n Host
	if cur != nil {
		n = *cur
	} else {
		n.ID = s.Host
	}
	n.State, n.Online, n.Reason, n.Session, n.StatusAt = s.State, s.State == protocol.StatusOnline, s.Reason, s.Session, s.TS.Time
	if n.Online {
		n.Version, n.OS, n.Arch, n.PID = s.Version, s.OS, s.Arch, s.PID
		n.Groups = slices.Clone(s.Groups)
		n.StartedAt = time.Time{}
		if s.StartedAt != nil {
			n.StartedAt = s.StartedAt.Time
		}
		n.Reason = ""
	}
	// A will's ts is when its connection began, not when it was lost: it
	// says nothing about when the host was last heard from.
	if s.Reason != protocol.ReasonLost && s.TS.After(n.LastSeen) {
		n.LastSeen = s.TS.Time
	}
	if cur != nil && sameStatus(cur, &n) {
		return false // a duplicate (QoS 1 redelivery, retained copy)
	}
	v.hosts[s.Host] = &n
	v.notifyLocked(s.Host, PartStatus)
	return true
}

func sameStatus(a, b *Host) bool {
	return a.State == b.State && a.Reason == b.Reason && a.Session == b.Session && a.StatusAt.Equal(b.StatusAt) &&
		a.Version == b.Version && a.OS == b.OS && a.Arch == b.Arch && a.PID == b.PID &&
		a.StartedAt.Equal(b.StartedAt) && slices.Equal(a.Groups, b.Groups) && a.LastSeen.Equal(b.LastSeen)
}

func (v *View) applyInventory(inv *protocol.Inventory) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	cur := v.hosts[inv.Host]
	if cur != nil && cur.Inventory != nil && !inv.TS.After(cur.Inventory.TS.Time) {
		// The same one again, or an older one arriving late.
		return false
	}
	var n Host
	if cur != nil {
		n = *cur
	} else {
		n.ID = inv.Host
	}
	n.Inventory, n.HasInventory = inv, true
	n.Hostname, n.Platform, n.PlatformVersion = inv.Hostname, inv.Platform, inv.PlatformVersion
	n.Facts = inv.Facts
	if n.Facts == nil {
		n.Facts = map[string]string{}
	}
	// The status is authoritative for these; the inventory fills them in
	// when no online status was seen.
	if n.State != protocol.StatusOnline {
		if n.OS == "" {
			n.OS = inv.OS
		}
		if n.Arch == "" {
			n.Arch = inv.Arch
		}
		if n.Version == "" {
			n.Version = inv.Agent.Version
		}
		if n.Groups == nil {
			n.Groups = slices.Clone(inv.Groups)
		}
	}
	if inv.TS.After(n.LastSeen) {
		n.LastSeen = inv.TS.Time
	}
	v.hosts[inv.Host] = &n
	v.notifyLocked(inv.Host, PartInventory)
	return true
}

func (v *View) applyMetrics(m *protocol.Metrics) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	cur := v.hosts[m.Host]
	if cur != nil && cur.Metrics != nil && !m.TS.After(cur.MetricsAt) {
		return false
	}
	var n Host
	if cur != nil {
		n = *cur
	} else {
		n.ID = m.Host
	}
	n.Metrics, n.MetricsAt = m, m.TS.Time
	if m.TS.After(n.LastSeen) {
		n.LastSeen = m.TS.Time
	}
	v.hosts[m.Host] = &n
	v.notifyLocked(m.Host, PartMetrics)
	return true
}

// Host returns what the view knows about one host.
func (v *View) Host(id string) (Host, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	h := v.hosts[id]
	if h == nil {
		return Host{}, false
	}
	return *h, true
}

// Len is the number of hosts the view knows.
func (v *View) Len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.hosts)
}

// Snapshot returns every host the view knows, sorted by id.
func (v *View) Snapshot() []Host {
	v.mu.RLock()
	out := make([]Host, 0, len(v.hosts))
	for _, h := range v.hosts {
		out = append(out, *h)
	}
	v.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Forget removes a host from the view (an operator decommissioned it; its
// retained messages should be cleared on the broker too). It reports whether
// the host was known.
func (v *View) Forget(id string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.hosts[id] == nil {
		return false
	}
	delete(v.hosts, id)
	v.notifyLocked(id, PartAll)
	return true
}
