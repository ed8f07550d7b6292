package inventory

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/sysinfo"
)

const gib = 1 << 30

// recorder is a Publish function that keeps what it was given.
type recorder struct {
	mu   sync.Mutex
	got  [][]byte
	fail atomic.Int32 // fail this many publishes first
}

func (r *recorder) publish(_ context.Context, b []byte) error {
	if r.fail.Load() > 0 {
		r.fail.Add(-1)
		return errors.New("not connected to the broker")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, bytes.Clone(b))
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func (r *recorder) last(t *testing.T) protocol.Inventory {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var inv protocol.Inventory
	if err := json.Unmarshal(r.got[len(r.got)-1], &inv); err != nil {
		t.Fatal(err)
	}
	return inv
}

func newBuilder(t *testing.T, o Options) *Builder {
	t.Helper()
	if o.HostID == "" {
		o.HostID = "web-01"
	}
	if o.Source == nil {
		o.Source = sysinfo.NewFixture(sysinfo.TypicalHost())
	}
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBuildFieldMapping(t *testing.T) {
	b := newBuilder(t, Options{Version: "1.2.0", Groups: []string{"web", "eu"}, Facts: map[string]string{"env": "prod"}, Software: true})
	s, err := b.Build(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	inv := s.Inventory
	check := func(field string, got, want any) {
		t.Helper()
		if gb, _ := json.Marshal(got); string(gb) != mustJSON(t, want) {
			t.Errorf("%s = %s, want %s", field, gb, mustJSON(t, want))
		}
	}
	check("v/host", []any{inv.V, inv.Host}, []any{1, "web-01"})
	check("hostname", inv.Hostname, "web-01")
	check("os/arch", []string{inv.OS, inv.Arch}, []string{runtime.GOOS, runtime.GOARCH})
	check("platform", []string{inv.Platform, inv.PlatformFamily, inv.PlatformVersion}, []string{"debian", "debian", "12.5"})
	check("kernel", []string{inv.KernelVersion, inv.KernelArch}, []string{"6.1.0-18-amd64", "x86_64"})
	check("boot_time", inv.BootTime, "2026-11-24T08:00:00.000Z")
	check("cpu", inv.CPU, protocol.InventoryCPU{Model: "Intel(R) Xeon(R) Gold 6226R CPU @ 2.90GHz", Cores: 2, Threads: 4})
	check("mem", inv.Mem, protocol.InventoryMem{Total: 8 * gib, SwapTotal: 2 * gib})
	check("disks", inv.Disks, []protocol.InventoryDisk{
		{Mount: "/", FSType: "ext4", Total: 100 * gib, Device: "/dev/sda1"},
		{Mount: "/data", FSType: "xfs", Total: 500 * gib, Device: "/dev/sdb1"},
		{Mount: "/mnt/home", FSType: "nfs4", Total: 1024 * gib, Device: "nas:/export/home"},
	})
	check("interfaces", inv.Interfaces, []protocol.NetInterface{
		{Name: "eth0", MAC: "52:54:00:12:34:56", Addrs: []string{"192.0.2.10/24", "fe80::5054:ff:fe12:3456/64"}, MTU: 1500, Up: true},
	})
	check("agent", inv.Agent, protocol.InventoryAgent{Version: "1.2.0"})
	check("groups", inv.Groups, []string{"eu", "web"})
	check("facts", inv.Facts, map[string]string{"env": "prod"})
	check("software", inv.Software, []protocol.SoftwarePackage{
		{Name: "bash", Version: "5.2.15-2+b2"}, {Name: "curl", Version: "7.88.1-10+deb12u5"},
		{Name: "libc6", Version: "2.36-9+deb12u4"}, {Name: "openssl", Version: "3.0.11-1~deb12u2"},
	})
	if inv.SoftwareTruncated || inv.Errors != nil {
		t.Errorf("truncated %v errors %q", inv.SoftwareTruncated, inv.Errors)
	}
	if !bytes.Equal(s.JSON, []byte(mustJSON(t, inv))) {
		t.Error("Snapshot.JSON is not the inventory's encoding")
	}
	if !maps.Equal(b.Facts(), map[string]string{"env": "prod"}) {
		t.Errorf("Facts() = %v", b.Facts())
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var requiredInventory = []string{
	"v", "host", "ts", "hostname", "os", "platform", "platform_version", "kernel_version", "arch", "boot_time",
	"cpu.model", "cpu.cores", "cpu.threads", "mem.total",
	"disks[].mount", "disks[].fstype", "disks[].total",
	"interfaces[].name", "interfaces[].mac", "interfaces[].addrs",
	"agent.version", "groups", "facts",
}

// has reports whether path exists in doc ("[]" steps into every element
// of a non-empty list).
func has(doc any, path string) bool {
	if path == "" {
		return true
	}
	step, rest, _ := strings.Cut(path, ".")
	obj, ok := doc.(map[string]any)
	if !ok {
		return false
	}
	v, ok := obj[strings.TrimSuffix(step, "[]")]
	if !ok {
		return false
	}
	if !strings.HasSuffix(step, "[]") {
		return has(v, rest)
	}
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		return false
	}
	for _, e := range list {
		if !has(e, rest) {
			return false
		}
	}
	return true
}

func TestInventoryJSONHasTheContractsFields(t *testing.T) {
	// No groups, no facts: the lists and the object are still there.
	s, err := newBuilder(t, Options{}).Build(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(s.JSON, &doc); err != nil {
		t.Fatal(err)
	}
	for _, p := range requiredInventory {
		if !has(doc, p) {
			t.Errorf("required field %s missing in %s", p, s.JSON)
		}
	}
	if g, ok := doc["groups"].([]any); !ok || len(g) != 0 {
		t.Errorf("groups = %v, want []", doc["groups"])
	}
	if f, ok := doc["facts"].(map[string]any); !ok || len(f) != 0 {
		t.Errorf("facts = %v, want {}", doc["facts"])
	}
	if _, ok := doc["software"]; ok {
		t.Error("software listed although not asked for")
	}
}

func TestHashStableAndSensitive(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	factsFile := filepath.Join(dir, "site.txt")
	if err := os.WriteFile(factsFile, []byte("rack=r1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mk := func() *Builder { return newBuilder(t, Options{FactsDir: dir, Groups: []string{"b", "a"}}) }
	s1, _ := mk().Build(ctx)
	s2, _ := mk().Build(ctx)
	if s1.Hash != s2.Hash || len(s1.Hash) != 64 {
		t.Fatalf("hash differs between builds of an unchanged host: %s %s", s1.Hash, s2.Hash)
	}
	later := *s1.Inventory
	later.TS = protocol.Time{Time: later.TS.Add(time.Hour)}
	if h, _ := Hash(&later); h != s1.Hash {
		t.Fatal("the timestamp changes the hash")
	}
	if err := os.WriteFile(factsFile, []byte("rack=r2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s3, _ := mk().Build(ctx)
	if s3.Hash == s1.Hash {
		t.Fatal("hash unchanged after a fact changed")
	}
	f := sysinfo.NewFixture(sysinfo.TypicalHost())
	b := newBuilder(t, Options{Source: f})
	s4, _ := b.Build(ctx)
	f.Update(func(d *sysinfo.FixtureData) { d.Interfaces[1].Addrs = append(d.Interfaces[1].Addrs, "192.0.2.11/24") })
	s5, _ := b.Build(ctx)
	if s4.Hash == s5.Hash {
		t.Fatal("hash unchanged after an address was added")
	}
}

// Run publishes only what changed; the inventory command publishes anyway.
func TestRunPublishesOnlyChanges(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("rack=r1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := sysinfo.NewFixture(sysinfo.TypicalHost())
	rec := &recorder{}
	b := newBuilder(t, Options{Source: f, FactsDir: dir, CheckInterval: 10 * time.Millisecond, Publish: rec.publish})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Start-up: the daemon publishes on the first connect.
	if err := b.Publish(ctx, true); err != nil || rec.count() != 1 {
		t.Fatalf("first publish: %v, %d published", err, rec.count())
	}
	done := make(chan struct{})
	go func() { defer close(done); b.Run(ctx) }()
	builds := f.Calls(sysinfo.OpHost)
	waitFor(t, "three unchanged checks", 5*time.Second, func() bool { return f.Calls(sysinfo.OpHost) >= builds+3 })
	if n := rec.count(); n != 1 {
		t.Fatalf("an unchanged inventory was published again (%d publishes)", n)
	}
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("rack=r2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the changed inventory", 5*time.Second, func() bool { return rec.count() == 2 })
	if inv := rec.last(t); inv.Facts["rack"] != "r2" {
		t.Fatalf("published facts %v", inv.Facts)
	}
	if !maps.Equal(b.Facts(), map[string]string{"rack": "r2"}) {
		t.Fatalf("Facts() = %v after the change", b.Facts())
	}
	// The inventory command publishes even when nothing changed.
	inv, err := b.Refresh(ctx)
	if err != nil || inv == nil || rec.count() != 3 {
		t.Fatalf("refresh: %v, %d published", err, rec.count())
	}
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not stop")
	}
}

// A publish that failed (no connection) is retried: by the next check,
// and by Publish(ctx, false) on the next connect.
func TestFailedPublishIsRetried(t *testing.T) {
	rec := &recorder{}
	rec.fail.Store(1)
	b := newBuilder(t, Options{Publish: rec.publish})
	ctx := context.Background()
	if err := b.Publish(ctx, true); err == nil {
		t.Fatal("the failed publish was not reported")
	}
	if err := b.Publish(ctx, false); err != nil || rec.count() != 1 {
		t.Fatalf("reconnect: %v, %d published", err, rec.count())
	}
	if err := b.Publish(ctx, false); err != nil || rec.count() != 1 {
		t.Fatalf("a second reconnect published again: %v, %d", err, rec.count())
	}
}

func TestSoftwareIsCapped(t *testing.T) {
	d := sysinfo.TypicalHost()
	d.Software = nil
	for i := range 50 {
		d.Software = append(d.Software, sysinfo.Package{Name: "pkg" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Version: "1.0"})
	}
	d.Software = append(d.Software, d.Software[0]) // a duplicate
	b := newBuilder(t, Options{Source: sysinfo.NewFixture(d), Software: true, SoftwareLimit: 10})
	s, err := b.Build(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sw := s.Inventory.Software
	if len(sw) != 10 || !s.Inventory.SoftwareTruncated || !slices.IsSortedFunc(sw, func(a, b protocol.SoftwarePackage) int { return strings.Compare(a.Name, b.Name) }) {
		t.Fatalf("software %v truncated %v", sw, s.Inventory.SoftwareTruncated)
	}
	if !bytes.Contains(s.JSON, []byte(`"software_truncated":true`)) {
		t.Fatal("software_truncated not in the JSON")
	}
}

func TestCapSoftware(t *testing.T) {
	pkgs := []sysinfo.Package{{Name: "b", Version: "2"}, {Name: "a", Version: "1"}, {Name: "c", Version: "3"}, {Name: "a", Version: "1"}, {Name: "a", Version: "0"}}
	got, trunc := capSoftware(slices.Clone(pkgs), 100, 1<<20)
	want := []protocol.SoftwarePackage{{Name: "a", Version: "0"}, {Name: "a", Version: "1"}, {Name: "b", Version: "2"}, {Name: "c", Version: "3"}}
	if !slices.Equal(got, want) || trunc {
		t.Fatalf("%v %v", got, trunc)
	}
	// Each entry is 26 bytes of JSON here: two fit in 60.
	got, trunc = capSoftware(slices.Clone(pkgs), 100, 60)
	if len(got) != 2 || !trunc {
		t.Fatalf("byte cap: %v %v", got, trunc)
	}
	got, trunc = capSoftware(nil, 10, 100)
	if len(got) != 0 || trunc {
		t.Fatalf("empty: %v %v", got, trunc)
	}
}

// Software and the CPU description are read again only on full builds.
func TestChecksKeepSlowParts(t *testing.T) {
	f := sysinfo.NewFixture(sysinfo.TypicalHost())
	b := newBuilder(t, Options{Source: f, Software: true})
	ctx := context.Background()
	for _, full := range []bool{true, false, false} {
		if _, err := b.build(ctx, full); err != nil {
			t.Fatal(err)
		}
	}
	if f.Calls(sysinfo.OpSoftware) != 1 || f.Calls(sysinfo.OpCPUInfo) != 1 || f.Calls(sysinfo.OpHost) != 3 {
		t.Fatalf("software %d cpuinfo %d host %d", f.Calls(sysinfo.OpSoftware), f.Calls(sysinfo.OpCPUInfo), f.Calls(sysinfo.OpHost))
	}
	if s := b.Latest(); len(s.Inventory.Software) != 4 || s.Inventory.CPU.Threads != 4 {
		t.Fatalf("a check dropped the cached parts: %+v", s.Inventory)
	}
}

func TestBuildReportsFailures(t *testing.T) {
	d := sysinfo.TypicalHost()
	d.Errors[sysinfo.OpInterfaces] = errors.New("netlink: permission denied")
	d.Errors[sysinfo.OpDisk+" /mnt/home"] = errors.New("stale file handle")
	d.Software = nil // no package database: left out silently
	s, err := newBuilder(t, Options{Source: sysinfo.NewFixture(d), Software: true}).Build(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"disk /mnt/home: stale file handle", "interfaces: netlink: permission denied"}
	if !slices.Equal(s.Inventory.Errors, want) {
		t.Fatalf("errors %q, want %q", s.Inventory.Errors, want)
	}
	if len(s.Inventory.Disks) != 2 || s.Inventory.Interfaces == nil || s.Inventory.Software != nil {
		t.Fatalf("disks %v interfaces %v software %v", s.Inventory.Disks, s.Inventory.Interfaces, s.Inventory.Software)
	}
}

// hangingHost blocks its Host read until released.
type hangingHost struct {
	*sysinfo.Fixture
	release chan struct{}
}

func (h *hangingHost) Host(ctx context.Context) (sysinfo.HostInfo, error) {
	<-h.release
	return h.Fixture.Host(ctx)
}

func TestBuildWithAHungRead(t *testing.T) {
	src := &hangingHost{Fixture: sysinfo.NewFixture(sysinfo.TypicalHost()), release: make(chan struct{})}
	defer close(src.release)
	b := newBuilder(t, Options{Source: src, Guard: sysinfo.NewGuard(50 * time.Millisecond)})
	start := time.Now()
	s, err := b.Build(context.Background())
	if err != nil || time.Since(start) > 2*time.Second {
		t.Fatalf("build: %v after %s", err, time.Since(start))
	}
	if !slices.Equal(s.Inventory.Errors, []string{"host: not responding"}) || len(s.Inventory.Disks) != 3 {
		t.Fatalf("errors %q disks %d", s.Inventory.Errors, len(s.Inventory.Disks))
	}
	// Still stuck at the next check: skipped, and the same inventory (no
	// republish while a read hangs).
	again, err := b.build(context.Background(), false)
	if err != nil || again.Hash != s.Hash {
		t.Fatalf("the hash changed while the read stayed hung: %v\n%s\n%s", err, s.JSON, again.JSON)
	}
}

func TestNewValidates(t *testing.T) {
	for name, o := range map[string]Options{
		"no source": {HostID: "h"},
		"bad host":  {HostID: "", Source: sysinfo.NewFixture(sysinfo.FixtureData{})},
		"negative":  {HostID: "h", Source: sysinfo.NewFixture(sysinfo.FixtureData{}), SoftwareLimit: -1},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The real host: the inventory is complete.
func TestBuildRealHost(t *testing.T) {
	b := newBuilder(t, Options{Source: sysinfo.New(sysinfo.Options{}), Software: runtime.GOOS == "linux"})
	s, err := b.Build(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	inv := s.Inventory
	if inv.Hostname == "" || inv.KernelVersion == "" || inv.CPU.Threads < 1 || inv.Mem.Total == 0 || len(inv.Disks) == 0 || inv.BootTime.IsZero() {
		t.Fatalf("incomplete: %s", s.JSON)
	}
	if inv.Errors != nil {
		t.Fatalf("errors on a healthy host: %q", inv.Errors)
	}
	t.Logf("%d bytes, %d packages", len(s.JSON), len(inv.Software))
}

// partialHost reads the platform but not the kernel version.
type partialHost struct{ *sysinfo.Fixture }

func (p partialHost) Host(ctx context.Context) (sysinfo.HostInfo, error) {
	h, _ := p.Fixture.Host(ctx)
	h.KernelVersion = ""
	return h, errors.New("kernel version: uname: operation not permitted")
}

func TestBuildKeepsAPartlyReadHost(t *testing.T) {
	s, err := newBuilder(t, Options{Source: partialHost{sysinfo.NewFixture(sysinfo.TypicalHost())}}).Build(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	inv := s.Inventory
	if inv.Platform != "debian" || inv.Hostname != "web-01" || inv.KernelVersion != "" ||
		!slices.Equal(inv.Errors, []string{"host: kernel version: uname: operation not permitted"}) {
		t.Fatalf("platform %q hostname %q kernel %q errors %q", inv.Platform, inv.Hostname, inv.KernelVersion, inv.Errors)
	}
}
