package fleet

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// Target names the hosts a command is for: a list of hosts (one or more),
// a group, or every host. The wire contract has one host, one group or all
// per message; a list is sent as one message per host.
type Target struct {
	Hosts []string
	Group string
	All   bool
}

// ParseTarget reads "all", "host:ID", "host:ID,ID,…" (also "hosts:…") or
// "group:NAME".
func ParseTarget(s string) (Target, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "all":
		return Target{All: true}, nil
	case strings.HasPrefix(s, "group:"):
		g := s[len("group:"):]
		if !protocol.ValidHostID(g) {
			return Target{}, fmt.Errorf("target: invalid group name %q", g)
		}
		return Target{Group: g}, nil
	case strings.HasPrefix(s, "host:"), strings.HasPrefix(s, "hosts:"):
		_, list, _ := strings.Cut(s, ":")
		var hosts []string
		for _, h := range strings.Split(list, ",") {
			h = strings.TrimSpace(h)
			if !protocol.ValidHostID(h) {
				return Target{}, fmt.Errorf("target: invalid host id %q", h)
			}
			if !slices.Contains(hosts, h) {
				hosts = append(hosts, h)
			}
		}
		return Target{Hosts: hosts}, nil
	}
	return Target{}, fmt.Errorf("target: must be all, host:ID[,ID…] or group:NAME, got %q", s)
}

// String is the target in ParseTarget's syntax.
func (t Target) String() string {
	switch {
	case t.All:
		return "all"
	case t.Group != "":
		return "group:" + t.Group
	case len(t.Hosts) > 0:
		return "host:" + strings.Join(t.Hosts, ",")
	}
	return ""
}

// Valid reports whether exactly one kind of target is set, with valid
// names.
func (t Target) Valid() error {
	n := 0
	if t.All {
		n++
	}
	if t.Group != "" {
		n++
		if !protocol.ValidHostID(t.Group) {
			return fmt.Errorf("target: invalid group name %q", t.Group)
		}
	}
	if len(t.Hosts) > 0 {
		n++
		for _, h := range t.Hosts {
			if !protocol.ValidHostID(h) {
				return fmt.Errorf("target: invalid host id %q", h)
			}
		}
	}
	if n != 1 {
		return fmt.Errorf("target: give exactly one of hosts, a group or all")
	}
	return nil
}

// ResolveOptions change Resolve.
type ResolveOptions struct {
	// IncludeOffline counts offline hosts of a group or all as expected
	// (the broker queues the command for them: they answer when they come
	// back, unless it expired).
	IncludeOffline bool
}

// Resolution is the answer of Resolve. Every list is sorted.
type Resolution struct {
	// Expected are the hosts that should answer: for a host list, every
	// named host that the filter does not exclude (online or not: the
	// operator named them); for a group or all, the online hosts that
	// match (and the offline ones with IncludeOffline).
	Expected []string
	// Offline are matching hosts of a group or all that are offline and
	// not expected.
	Offline []string
	// Uncertain are online hosts the view cannot decide for: the filter
	// asks for facts (or the os, or groups) and the host published none
	// yet. They may answer or stay silent.
	Uncertain []string
	// Unknown are named hosts the view has never heard of (they are in
	// Expected too).
	Unknown []string
}

// All is Expected followed by Uncertain: every host that may answer.
func (r Resolution) All() []string {
	out := append(slices.Clone(r.Expected), r.Uncertain...)
	sort.Strings(out)
	return out
}

// match is the outcome of checking one host against a filter.
type match int

const (
	matchNo match = iota
	matchYes
	matchUnknown
)

// Matches tells whether h matches f as the agent decides it (every
// condition must hold: hosts lists it, it is in one of groups, os is its
// GOOS, every fact is equal), and whether the view knows enough to tell
// (known is false when a condition needs the inventory or status the host
// has not published yet).
func Matches(h Host, f *protocol.Filter) (ok, known bool) {
	switch matchFilter(h, f) {
	case matchYes:
		return true, true
	case matchNo:
		return false, true
	}
	return false, false
}

func matchFilter(h Host, f *protocol.Filter) match {
	if f == nil {
		return matchYes
	}
	unknown := false
	if len(f.Hosts) > 0 && !slices.Contains(f.Hosts, h.ID) {
		return matchNo
	}
	if len(f.Groups) > 0 {
		if h.State == "" && !h.HasInventory {
			unknown = true
		} else if !slices.ContainsFunc(f.Groups, func(g string) bool { return slices.Contains(h.Groups, g) }) {
			return matchNo
		}
	}
	if f.OS != "" {
		if h.OS == "" {
			unknown = true
		} else if h.OS != f.OS {
			return matchNo
		}
	}
	if len(f.Facts) > 0 {
		if !h.HasInventory {
			unknown = true
		} else {
			for k, want := range f.Facts {
				if have, ok := h.Facts[k]; !ok || have != want {
					return matchNo
				}
			}
		}
	}
	if unknown {
		return matchUnknown
	}
	return matchYes
}

// Resolve tells which hosts a command for target with filter (nil: none)
// is expected to reach, from what the view knows now. The rules follow the
// agent's: on a group or broadcast topic every filter condition must hold;
// on a host topic the agent does not check the filter, so for a host list
// Resolve applies it here (and a caller should send only to Expected).
func (v *View) Resolve(t Target, f *protocol.Filter, o ResolveOptions) (Resolution, error) {
	if err := t.Valid(); err != nil {
		return Resolution{}, err
	}
	var r Resolution
	v.mu.RLock()
	if len(t.Hosts) > 0 {
		for _, id := range t.Hosts {
			h, ok := v.hosts[id]
			if !ok {
				r.Expected = append(r.Expected, id)
				r.Unknown = append(r.Unknown, id)
				continue
			}
			switch matchFilter(*h, f) {
			case matchYes:
				r.Expected = append(r.Expected, id)
			case matchUnknown:
				// Named, but the filter may exclude it: the caller
				// decides; with a host topic the agent would run it.
				r.Uncertain = append(r.Uncertain, id)
			}
		}
	} else {
		for id, h := range v.hosts {
			if t.Group != "" && h.State == "" && !h.HasInventory {
				continue // no idea of its groups, and not online
			}
			if t.Group != "" && !slices.Contains(h.Groups, t.Group) {
				continue
			}
			m := matchFilter(*h, f)
			switch {
			case m == matchNo:
			case !h.Online && o.IncludeOffline && m == matchYes:
				r.Expected = append(r.Expected, id)
			case !h.Online:
				if m == matchYes {
					r.Offline = append(r.Offline, id)
				}
			case m == matchYes:
				r.Expected = append(r.Expected, id)
			default:
				r.Uncertain = append(r.Uncertain, id)
			}
		}
	}
	v.mu.RUnlock()
	sort.Strings(r.Expected)
	sort.Strings(r.Offline)
	sort.Strings(r.Uncertain)
	sort.Strings(r.Unknown)
	return r, nil
}
