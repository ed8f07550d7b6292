package fleet_test

import (
	"slices"
	"testing"

	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in   string
		want fleet.Target
		err  bool
	}{
		{in: "all", want: fleet.Target{All: true}},
		{in: "host:web-01", want: fleet.Target{Hosts: []string{"web-01"}}},
		{in: "host:a,b, c,a", want: fleet.Target{Hosts: []string{"a", "b", "c"}}},
		{in: "hosts:a,b", want: fleet.Target{Hosts: []string{"a", "b"}}},
		{in: "group:web", want: fleet.Target{Group: "web"}},
		{in: "group:", err: true},
		{in: "group:Web", err: true},
		{in: "host:", err: true},
		{in: "host:a,,b", err: true},
		{in: "host:a/b", err: true},
		{in: "everything", err: true},
		{in: "", err: true},
	}
	for _, tc := range tests {
		got, err := fleet.ParseTarget(tc.in)
		if (err != nil) != tc.err {
			t.Fatalf("%q: error %v, want error %v", tc.in, err, tc.err)
		}
		if err == nil && (got.All != tc.want.All || got.Group != tc.want.Group || !slices.Equal(got.Hosts, tc.want.Hosts)) {
			t.Fatalf("%q: %+v, want %+v", tc.in, got, tc.want)
		}
		if err == nil {
			back, err := fleet.ParseTarget(got.String())
			if err != nil || back.String() != got.String() {
				t.Fatalf("%q: round trip %q (%v)", tc.in, got.String(), err)
			}
		}
	}
	if (fleet.Target{All: true, Group: "x"}).Valid() == nil || (fleet.Target{}).Valid() == nil {
		t.Fatal("invalid targets accepted")
	}
}

// fleetForResolve: web-1 (linux, web, env=prod), web-2 (linux, web,
// env=dev), db-1 (linux, db, env=prod), win-1 (windows, web, no inventory
// yet), old-1 (offline, web, env=prod).
func fleetForResolve(t *testing.T) *fleet.View {
	t.Helper()
	v := fleet.New()
	apply := func(m msg) {
		if !v.Apply(m.topic, m.payload) {
			t.Fatalf("not applied: %s %s", m.topic, m.payload)
		}
	}
	for _, h := range []struct {
		id, env string
		groups  []string
	}{{"web-1", "prod", []string{"web"}}, {"web-2", "dev", []string{"web"}}, {"db-1", "prod", []string{"db"}}, {"old-1", "prod", []string{"web"}}} {
		apply(st(h.id, online(h.id, 1, 0, h.groups...)))
		apply(inv(h.id, inventory(h.id, 1, map[string]string{"env": h.env}, h.groups...)))
	}
	apply(st("old-1", offline("old-1", "shutdown", 1, 5)))
	b := []byte(`{"v":1,"host":"win-1","state":"online","session":1,"ts":"2026-11-25T10:00:00Z","os":"windows","groups":["web"]}`)
	apply(st("win-1", b))
	return v
}

func TestResolve(t *testing.T) {
	v := fleetForResolve(t)
	tests := []struct {
		name       string
		target     string
		filter     *protocol.Filter
		offline    bool
		expected   []string
		offlineOut []string
		uncertain  []string
		unknown    []string
	}{
		{name: "all", target: "all", expected: []string{"db-1", "web-1", "web-2", "win-1"}, offlineOut: []string{"old-1"}},
		{name: "all with offline", target: "all", offline: true, expected: []string{"db-1", "old-1", "web-1", "web-2", "win-1"}},
		{name: "group", target: "group:web", expected: []string{"web-1", "web-2", "win-1"}, offlineOut: []string{"old-1"}},
		{name: "group nobody is in", target: "group:none"},
		{name: "host", target: "host:db-1", expected: []string{"db-1"}},
		{name: "offline host named", target: "host:old-1", expected: []string{"old-1"}},
		{name: "unknown host named", target: "host:ghost,web-1", expected: []string{"ghost", "web-1"}, unknown: []string{"ghost"}},
		{name: "facts filter", target: "all", filter: &protocol.Filter{Facts: map[string]string{"env": "prod"}},
			expected: []string{"db-1", "web-1"}, offlineOut: []string{"old-1"}, uncertain: []string{"win-1"}},
		{name: "os filter", target: "group:web", filter: &protocol.Filter{OS: "windows"}, expected: []string{"win-1"}},
		{name: "os and facts", target: "all", filter: &protocol.Filter{OS: "linux", Facts: map[string]string{"env": "dev"}}, expected: []string{"web-2"}},
		{name: "groups filter (any of)", target: "all", filter: &protocol.Filter{Groups: []string{"db", "nope"}}, expected: []string{"db-1"}},
		{name: "hosts filter", target: "group:web", filter: &protocol.Filter{Hosts: []string{"web-2", "db-1"}}, expected: []string{"web-2"}},
		{name: "filter applies to a host list", target: "host:web-1,web-2,win-1", filter: &protocol.Filter{Facts: map[string]string{"env": "dev"}},
			expected: []string{"web-2"}, uncertain: []string{"win-1"}},
		{name: "missing fact key", target: "all", filter: &protocol.Filter{Facts: map[string]string{"rack": "1"}}, uncertain: []string{"win-1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target, err := fleet.ParseTarget(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			r, err := v.Resolve(target, tc.filter, fleet.ResolveOptions{IncludeOffline: tc.offline})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name      string
				got, want []string
			}{{"expected", r.Expected, tc.expected}, {"offline", r.Offline, tc.offlineOut}, {"uncertain", r.Uncertain, tc.uncertain}, {"unknown", r.Unknown, tc.unknown}} {
				if !slices.Equal(c.got, c.want) {
					t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
				}
			}
			all := r.All()
			if len(all) != len(r.Expected)+len(r.Uncertain) || !slices.IsSorted(all) {
				t.Errorf("All() = %v", all)
			}
		})
	}
	if _, err := v.Resolve(fleet.Target{}, nil, fleet.ResolveOptions{}); err == nil {
		t.Fatal("empty target resolved")
	}
}

func TestMatches(t *testing.T) {
	v := fleetForResolve(t)
	h, _ := v.Host("win-1")
	if ok, known := fleet.Matches(h, &protocol.Filter{Facts: map[string]string{"a": "b"}}); ok || known {
		t.Fatalf("facts of a host without inventory: ok=%v known=%v", ok, known)
	}
	if ok, known := fleet.Matches(h, &protocol.Filter{OS: "linux"}); ok || !known {
		t.Fatalf("os mismatch: ok=%v known=%v", ok, known)
	}
	if ok, known := fleet.Matches(h, nil); !ok || !known {
		t.Fatal("nil filter must match")
	}
}
