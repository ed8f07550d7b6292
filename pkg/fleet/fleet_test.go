package fleet_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/fleet"
	"github.com/mqagent/mqagent/pkg/protocol"
)

var (
	t0     = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	topics = protocol.Topics{Prefix: protocol.DefaultPrefix}
)

func ts(sec int) protocol.Time { return protocol.Time{Time: t0.Add(time.Duration(sec) * time.Second)} }

func online(host string, session uint64, sec int, groups ...string) []byte {
	b, _ := json.Marshal(protocol.Status{V: 1, Host: host, State: "online", Session: session, TS: ts(sec),
		Version: "1.0.0", OS: "linux", Arch: "amd64", Groups: groups, PID: 100 + int(session)})
	return b
}

func offline(host, reason string, session uint64, sec int) []byte {
	b, _ := json.Marshal(protocol.Status{V: 1, Host: host, State: "offline", Reason: reason, Session: session, TS: ts(sec)})
	return b
}

func inventory(host string, sec int, facts map[string]string, groups ...string) []byte {
	b, _ := json.Marshal(protocol.Inventory{V: 1, Host: host, TS: ts(sec), Hostname: host + ".example", OS: "linux",
		Platform: "debian", PlatformVersion: "13", Arch: "amd64", Agent: protocol.InventoryAgent{Version: "1.0.0"},
		Groups: groups, Facts: facts})
	return b
}

func metrics(host string, sec int, cpu float64) []byte {
	b, _ := json.Marshal(protocol.Metrics{V: 1, Host: host, TS: ts(sec), CPU: &protocol.CPUSample{Percent: cpu}})
	return b
}

type msg struct {
	topic   string
	payload []byte
}

func st(host string, p []byte) msg  { return msg{topics.Status(host), p} }
func inv(host string, p []byte) msg { return msg{topics.Inventory(host), p} }
func met(host string, p []byte) msg { return msg{topics.Metrics(host), p} }

func TestApplySessions(t *testing.T) {
	tests := []struct {
		name    string
		msgs    []msg
		changed []bool
		want    fleet.Host // compared on a few fields
		stale   uint64
	}{
		{
			name:    "birth",
			msgs:    []msg{st("a", online("a", 3, 0, "web"))},
			changed: []bool{true},
			want:    fleet.Host{ID: "a", Online: true, State: "online", Session: 3, Groups: []string{"web"}},
		},
		{
			name:    "late will of an older session is ignored",
			msgs:    []msg{st("a", online("a", 4, 10)), st("a", offline("a", "lost", 3, 0))},
			changed: []bool{true, false},
			want:    fleet.Host{ID: "a", Online: true, State: "online", Session: 4},
			stale:   1,
		},
		{
			name:    "will of the same session counts",
			msgs:    []msg{st("a", online("a", 4, 10, "db")), st("a", offline("a", "lost", 4, 10))},
			changed: []bool{true, true},
			// groups of the last online status are kept
			want: fleet.Host{ID: "a", Online: false, State: "offline", Reason: "lost", Session: 4, Groups: []string{"db"}},
		},
		{
			name:    "graceful stop then a new session",
			msgs:    []msg{st("a", online("a", 4, 10)), st("a", offline("a", "shutdown", 4, 20)), st("a", online("a", 5, 30))},
			changed: []bool{true, true, true},
			want:    fleet.Host{ID: "a", Online: true, State: "online", Session: 5},
		},
		{
			name:    "duplicate status changes nothing",
			msgs:    []msg{st("a", online("a", 4, 10)), st("a", online("a", 4, 10))},
			changed: []bool{true, false},
			want:    fleet.Host{ID: "a", Online: true, State: "online", Session: 4},
		},
		{
			name:    "stale retained online of an older session and older ts",
			msgs:    []msg{st("a", online("a", 7, 50)), st("a", online("a", 6, 40))},
			changed: []bool{true, false},
			want:    fleet.Host{ID: "a", Online: true, State: "online", Session: 7},
			stale:   1,
		},
		{
			name:    "session counter reset (newer online with a lower session)",
			msgs:    []msg{st("a", offline("a", "shutdown", 7, 50)), st("a", online("a", 1, 60))},
			changed: []bool{true, true},
			want:    fleet.Host{ID: "a", Online: true, State: "online", Session: 1},
		},
		{
			name:    "cleared status forgets the host",
			msgs:    []msg{st("a", online("a", 1, 0)), st("a", nil)},
			changed: []bool{true, true},
		},
		{
			name:    "inventory first, then status",
			msgs:    []msg{inv("a", inventory("a", 0, map[string]string{"env": "prod"}, "web")), st("a", online("a", 1, 1))},
			changed: []bool{true, true},
			want:    fleet.Host{ID: "a", Online: true, State: "online", Session: 1, HasInventory: true, Facts: map[string]string{"env": "prod"}},
		},
		{
			name:    "older inventory is ignored, cleared inventory forgets facts",
			msgs:    []msg{inv("a", inventory("a", 5, map[string]string{"k": "1"})), inv("a", inventory("a", 4, map[string]string{"k": "0"})), inv("a", nil)},
			changed: []bool{true, false, true},
			want:    fleet.Host{ID: "a"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := fleet.New()
			for i, m := range tc.msgs {
				if got := v.Apply(m.topic, m.payload); got != tc.changed[i] {
					t.Fatalf("message %d (%s %s): changed %v, want %v", i, m.topic, m.payload, got, tc.changed[i])
				}
			}
			h, ok := v.Host("a")
			if tc.want.ID == "" {
				if ok {
					t.Fatalf("host still known: %+v", h)
				}
				return
			}
			if !ok {
				t.Fatal("host a not known")
			}
			if h.Online != tc.want.Online || h.State != tc.want.State || h.Reason != tc.want.Reason || h.Session != tc.want.Session ||
				h.HasInventory != tc.want.HasInventory {
				t.Fatalf("host %+v, want %+v", h, tc.want)
			}
			if tc.want.Groups != nil && !slices.Equal(h.Groups, tc.want.Groups) {
				t.Fatalf("groups %v, want %v", h.Groups, tc.want.Groups)
			}
			if tc.want.Facts != nil && fmt.Sprint(h.Facts) != fmt.Sprint(tc.want.Facts) {
				t.Fatalf("facts %v, want %v", h.Facts, tc.want.Facts)
			}
			if s := v.Stats(); s.Stale != tc.stale {
				t.Fatalf("stale %d, want %d", s.Stale, tc.stale)
			}
		})
	}
}

func TestApplyFields(t *testing.T) {
	v := fleet.New()
	v.Apply(topics.Status("a"), online("a", 2, 10, "web", "db"))
	v.Apply(topics.Inventory("a"), inventory("a", 11, map[string]string{"env": "prod"}, "web", "db"))
	v.Apply(topics.Metrics("a"), metrics("a", 20, 12.5))
	if v.Apply(topics.Metrics("a"), metrics("a", 15, 99)) {
		t.Fatal("an older metrics sample replaced a newer one")
	}
	h, _ := v.Host("a")
	if h.Version != "1.0.0" || h.OS != "linux" || h.Arch != "amd64" || h.PID != 102 || h.Hostname != "a.example" ||
		h.Platform != "debian" || h.PlatformVersion != "13" || h.Facts["env"] != "prod" || h.Inventory == nil {
		t.Fatalf("host fields %+v", h)
	}
	if h.Metrics == nil || h.Metrics.CPU.Percent != 12.5 || !h.MetricsAt.Equal(ts(20).Time) || !h.LastSeen.Equal(ts(20).Time) {
		t.Fatalf("metrics %+v at %v, last seen %v", h.Metrics, h.MetricsAt, h.LastSeen)
	}
	// A will does not move LastSeen (its ts is when the connection began).
	v.Apply(topics.Status("a"), offline("a", "lost", 2, 10))
	h, _ = v.Host("a")
	if h.Online || !h.LastSeen.Equal(ts(20).Time) || h.Version != "1.0.0" {
		t.Fatalf("after will: %+v", h)
	}
}

func TestApplyMalformed(t *testing.T) {
	v := fleet.New()
	bad := []msg{
		st("a", []byte("not json")),
		st("a", []byte(`{"v":2,"host":"a","state":"online","session":1}`)),
		st("a", []byte(`{"v":1,"host":"b","state":"online","session":1}`)), // host differs from topic
		st("a", []byte(`{"v":1,"host":"a","state":"sleeping","session":1}`)),
		st("a", []byte(`{"v":1,"host":"a","state":"online","session":-1}`)),
		st("a", []byte(`[]`)),
		inv("a", []byte(`{"v":1,"host":"a","facts":["x"]}`)),
		met("a", []byte(`{"v":1,"host":"a","ts":"yesterday"}`)),
		met("a", []byte{0xff, 0xfe}),
		{topics.Status("UPPER"), online("UPPER", 1, 0)},
	}
	for _, m := range bad {
		if v.Apply(m.topic, m.payload) {
			t.Fatalf("malformed message %s %q changed the view", m.topic, m.payload)
		}
	}
	ignored := []string{"mqagent/v1/hosts/a/audit", "mqagent/v1/hosts/a/results/x", "other/hosts/a/status", "mqagent/v1/hosts/a/status/x", "mqagent/v1/all/cmd"}
	for _, topic := range ignored {
		if v.Apply(topic, online("a", 1, 0)) {
			t.Fatalf("message on %s changed the view", topic)
		}
	}
	s := v.Stats()
	if s.Malformed != uint64(len(bad)) || s.Ignored != uint64(len(ignored)) || s.Hosts != 0 || s.Messages != uint64(len(bad)+len(ignored)) {
		t.Fatalf("stats %+v", s)
	}
}

func TestPrefixAndTopics(t *testing.T) {
	v := fleet.New(fleet.WithPrefix("site/a"))
	if !slices.Equal(v.Topics(), []string{"site/a/hosts/+/status", "site/a/hosts/+/inventory", "site/a/hosts/+/metrics"}) {
		t.Fatalf("topics %v", v.Topics())
	}
	if !slices.Equal(fleet.Topics(""), fleet.New().Topics()) {
		t.Fatal("default prefix topics differ")
	}
	if v.Apply(topics.Status("a"), online("a", 1, 0)) {
		t.Fatal("message under the default prefix applied to a view of another prefix")
	}
	if !v.Apply("site/a/hosts/a/status", online("a", 1, 0)) {
		t.Fatal("message under the view's prefix not applied")
	}
}

func TestSnapshotAndStats(t *testing.T) {
	v := fleet.New(fleet.WithClock(func() time.Time { return t0 }))
	v.Apply(topics.Status("c"), online("c", 1, 0))
	v.Apply(topics.Status("a"), online("a", 1, 0))
	v.Apply(topics.Status("b"), offline("b", "shutdown", 1, 0))
	v.Apply(topics.Metrics("d"), metrics("d", 0, 1))
	snap := v.Snapshot()
	var ids []string
	for _, h := range snap {
		ids = append(ids, h.ID)
	}
	if !slices.Equal(ids, []string{"a", "b", "c", "d"}) {
		t.Fatalf("snapshot ids %v", ids)
	}
	s := v.Stats()
	if s.Hosts != 4 || s.Online != 2 || s.Offline != 1 || !s.LastApply.Equal(t0) {
		t.Fatalf("stats %+v", s)
	}
	if !v.Forget("b") || v.Forget("b") || v.Len() != 3 {
		t.Fatal("forget")
	}
}

func TestHostJSON(t *testing.T) {
	v := fleet.New()
	v.Apply(topics.Status("a"), online("a", 1, 0, "web"))
	h, _ := v.Host("a")
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back["id"] != "a" || back["online"] != true || back["version"] != "1.0.0" {
		t.Fatalf("json %s", b)
	}
}
