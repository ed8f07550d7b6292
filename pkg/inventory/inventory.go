// Package inventory builds the host's retained inventory
// (docs/PROTOCOL.md, "Inventory") from a sysinfo.Describer, the agent's
// configuration and custom facts, and decides when to publish it: at
// start (the daemon publishes it on the first connect, before the birth),
// on the inventory command, and whenever it changed — compared by Hash,
// so an unchanged inventory is not published again.
//
// Run checks for changes every CheckInterval (default 10 minutes), which
// re-reads what can change cheaply (platform, memory, filesystems,
// interfaces, facts); the installed software and the CPU description are
// read again only every Interval (inventory.interval, default 24 h).
//
// Custom facts come from the configuration and from a facts directory
// (LoadFactsDir): the directory's files in name order, later overriding
// earlier, and the configuration's facts overriding them all. They are
// read again with every build; Facts returns the current ones for the
// command filter.
package inventory

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/sysinfo"
)

// Defaults.
const (
	DefaultInterval      = 24 * time.Hour
	DefaultCheckInterval = 10 * time.Minute
	// DefaultSoftwareLimit and DefaultSoftwareMaxBytes cap the software
	// list; beyond either it is cut and SoftwareTruncated set.
	DefaultSoftwareLimit    = 2000
	DefaultSoftwareMaxBytes = 128 << 10
	// DefaultSoftwareTimeout bounds one package listing.
	DefaultSoftwareTimeout = 30 * time.Second
)

// OpFacts is the operation name of reading the facts directory.
const OpFacts = "facts"

// Options configure a Builder.
type Options struct {
	// HostID is the "host" of the inventory (required).
	HostID string
	// Version is the agent's version.
	Version string
	// Groups are the host's groups.
	Groups []string
	// Facts are the configuration's facts; they override the directory's.
	Facts map[string]string
	// FactsDir is the custom facts directory; "" for none.
	FactsDir string
	// FactsTimeout bounds running the directory's executables together;
	// default DefaultFactsTimeout.
	FactsTimeout time.Duration
	// Software adds the installed software, capped at SoftwareLimit
	// entries and about SoftwareMaxBytes of JSON (defaults
	// DefaultSoftwareLimit, DefaultSoftwareMaxBytes).
	Software         bool
	SoftwareLimit    int
	SoftwareMaxBytes int
	// Source reads the host (required).
	Source sysinfo.Describer
	// Guard runs the reads under deadlines; nil: a Guard of its own.
	Guard *sysinfo.Guard
	// Interval is how often everything is read again (inventory.interval);
	// CheckInterval how often Run looks for changes. Defaults
	// DefaultInterval and DefaultCheckInterval; CheckInterval is at most
	// Interval.
	Interval, CheckInterval time.Duration
	// Publish publishes an inventory payload, retained, QoS 1 (required
	// for Run, Publish and Refresh). It returns once the broker has it, or
	// an error.
	Publish func(ctx context.Context, payload []byte) error
	Logger  *slog.Logger
}

// Snapshot is one built inventory with its encoding and hash.
type Snapshot struct {
	Inventory *protocol.Inventory
	// JSON is the payload to publish.
	JSON []byte
	// Hash identifies the content, apart from the timestamp.
	Hash string
}

// Builder builds and publishes the inventory. It is safe for concurrent
// use.
type Builder struct {
	o     Options
	log   *slog.Logger
	guard *sysinfo.Guard

	buildMu  sync.Mutex // one build at a time; guards the cached parts
	cpu      protocol.InventoryCPU
	cpuErr   string
	software []protocol.SoftwarePackage
	swTrunc  bool
	swErr    string
	fullAt   time.Time // last full build; zero: none yet

	latest atomic.Pointer[Snapshot]
	facts  atomic.Pointer[map[string]string]

	pubMu     sync.Mutex // one publish at a time, in order
	published string     // hash of the last inventory the broker took
}

// New returns a Builder. It reads nothing yet; Facts returns the
// configuration's facts until the first build.
func New(o Options) (*Builder, error) {
	switch {
	case o.Source == nil:
		return nil, errors.New("inventory: a source is required")
	case !protocol.ValidHostID(o.HostID):
		return nil, fmt.Errorf("inventory: invalid host id %q", o.HostID)
	case o.Interval < 0 || o.CheckInterval < 0 || o.SoftwareLimit < 0 || o.SoftwareMaxBytes < 0:
		return nil, errors.New("inventory: intervals and limits must not be negative")
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.CheckInterval == 0 {
		o.CheckInterval = DefaultCheckInterval
	}
	o.CheckInterval = min(o.CheckInterval, o.Interval)
	if o.SoftwareLimit == 0 {
		o.SoftwareLimit = DefaultSoftwareLimit
	}
	if o.SoftwareMaxBytes == 0 {
		o.SoftwareMaxBytes = DefaultSoftwareMaxBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	g := o.Guard
	if g == nil {
		g = sysinfo.NewGuard(0)
	}
	b := &Builder{o: o, log: o.Logger, guard: g}
	f := maps.Clone(o.Facts)
	if f == nil {
		f = map[string]string{}
	}
	b.facts.Store(&f)
	return b, nil
}

// Facts returns the host's current custom facts (a copy), for the
// command filter.
func (b *Builder) Facts() map[string]string { return maps.Clone(*b.facts.Load()) }

// Latest returns the last inventory built, or nil.
func (b *Builder) Latest() *Snapshot { return b.latest.Load() }

// Build reads everything afresh (software and CPU included) and makes the
// result the latest. It does not publish. Parts that cannot be read are
// left out and listed in the inventory's Errors; the error is non-nil only
// when ctx ended first.
func (b *Builder) Build(ctx context.Context) (*Snapshot, error) { return b.build(ctx, true) }

// build reads the host; full re-reads the parts kept for Interval too.
func (b *Builder) build(ctx context.Context, full bool) (*Snapshot, error) {
	b.buildMu.Lock()
	defer b.buildMu.Unlock()
	if b.fullAt.IsZero() {
		full = true
	}
	inv := &protocol.Inventory{
		V: protocol.Version, Host: b.o.HostID, TS: protocol.Now(),
		OS: runtime.GOOS, Arch: runtime.GOARCH,
		Disks: []protocol.InventoryDisk{}, Interfaces: []protocol.NetInterface{},
		Agent:  protocol.InventoryAgent{Version: b.o.Version},
		Groups: slices.Sorted(slices.Values(b.o.Groups)),
	}
	if inv.Groups == nil {
		inv.Groups = []string{}
	}
	var errs []string
	fail := func(op string, err error) {
		if !errors.Is(err, errors.ErrUnsupported) {
			errs = append(errs, op+": "+errText(err))
		}
	}
	if h, err := call(ctx, b, sysinfo.OpHost, b.o.Source.Host); err != nil && h == (sysinfo.HostInfo{}) {
		fail(sysinfo.OpHost, err)
	} else {
		if err != nil {
			fail(sysinfo.OpHost, err) // partly read
		}
		inv.Hostname, inv.Platform, inv.PlatformFamily, inv.PlatformVersion = h.Hostname, h.Platform, h.PlatformFamily, h.PlatformVersion
		inv.KernelVersion, inv.KernelArch = h.KernelVersion, h.KernelArch
		if !h.BootTime.IsZero() {
			inv.BootTime = protocol.Time{Time: h.BootTime.UTC()}
		}
	}
	if full {
		c, err := call(ctx, b, sysinfo.OpCPUInfo, b.o.Source.CPUInfo)
		b.cpu = protocol.InventoryCPU{Model: c.Model, Cores: c.Cores, Threads: c.Threads}
		b.cpuErr = ""
		if err != nil && !errors.Is(err, errors.ErrUnsupported) {
			b.cpuErr = sysinfo.OpCPUInfo + ": " + errText(err)
		}
	}
	inv.CPU = b.cpu
	if b.cpuErr != "" {
		errs = append(errs, b.cpuErr)
	}
	m, err := call(ctx, b, sysinfo.OpMemory, b.o.Source.Memory)
	if err != nil {
		fail(sysinfo.OpMemory, err) // swap may have failed alone
	}
	inv.Mem = protocol.InventoryMem{Total: m.Total, SwapTotal: m.SwapTotal}
	if parts, err := call(ctx, b, sysinfo.OpPartitions, b.o.Source.Partitions); err != nil {
		fail(sysinfo.OpPartitions, err)
	} else {
		for _, p := range sysinfo.RealDisks(parts) {
			op := sysinfo.OpDisk + " " + p.Mount
			u, err := call(ctx, b, op, func(ctx context.Context) (sysinfo.Usage, error) { return b.o.Source.Usage(ctx, p.Mount) })
			switch {
			case err != nil:
				fail(op, err)
			case u.Total > 0:
				inv.Disks = append(inv.Disks, protocol.InventoryDisk{Mount: p.Mount, FSType: p.FSType, Total: u.Total, Device: p.Device})
			}
		}
	}
	if ifs, err := call(ctx, b, sysinfo.OpInterfaces, b.o.Source.Interfaces); err != nil {
		fail(sysinfo.OpInterfaces, err)
	} else {
		for _, i := range ifs {
			if i.Loopback {
				continue
			}
			addrs := slices.Sorted(slices.Values(i.Addrs))
			if addrs == nil {
				addrs = []string{}
			}
			inv.Interfaces = append(inv.Interfaces, protocol.NetInterface{Name: i.Name, MAC: i.MAC, Addrs: addrs, MTU: i.MTU, Up: i.Up})
		}
		slices.SortFunc(inv.Interfaces, func(a, b protocol.NetInterface) int { return strings.Compare(a.Name, b.Name) })
	}
	inv.Facts = b.readFacts(ctx, &errs)
	if b.o.Software {
		if full {
			b.readSoftware(ctx)
		}
		inv.Software, inv.SoftwareTruncated = b.software, b.swTrunc
		if b.swErr != "" {
			errs = append(errs, b.swErr)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if full {
		b.fullAt = time.Now()
	}
	slices.Sort(errs)
	inv.Errors = errs
	s, err := snapshot(inv)
	if err != nil {
		return nil, err
	}
	b.latest.Store(s)
	return s, nil
}

// readFacts loads the facts directory and merges the configuration's.
func (b *Builder) readFacts(ctx context.Context, errs *[]string) map[string]string {
	type loaded struct {
		facts map[string]string
		errs  []error
	}
	var dirFacts map[string]string
	if b.o.FactsDir != "" {
		timeout := b.o.FactsTimeout
		if timeout <= 0 {
			timeout = DefaultFactsTimeout
		}
		// The guard's deadline is a little longer than the facts' own, so
		// that a killed executable is reported as such.
		l, err := sysinfo.CallFor(ctx, b.guard, OpFacts, timeout+2*time.Second, func(ctx context.Context) (loaded, error) {
			f, errs := LoadFactsDir(ctx, b.o.FactsDir, timeout)
			return loaded{f, errs}, nil
		})
		if err != nil {
			*errs = append(*errs, OpFacts+": "+errText(err))
			dirFacts = b.Facts() // keep what we had rather than drop it
		} else {
			dirFacts = l.facts
			*errs = append(*errs, sortedErrs(l.errs)...)
		}
	}
	f := mergeFacts(dirFacts, b.o.Facts)
	b.facts.Store(&f)
	return maps.Clone(f)
}

// readSoftware lists the installed software, sorted and capped.
func (b *Builder) readSoftware(ctx context.Context) {
	pkgs, err := sysinfo.CallFor(ctx, b.guard, sysinfo.OpSoftware, DefaultSoftwareTimeout, b.o.Source.Software)
	b.swErr = ""
	if err != nil {
		if !errors.Is(err, errors.ErrUnsupported) {
			b.swErr = sysinfo.OpSoftware + ": " + errText(err)
		}
		b.software, b.swTrunc = nil, false
		return
	}
	b.software, b.swTrunc = capSoftware(pkgs, b.o.SoftwareLimit, b.o.SoftwareMaxBytes)
}

// capSoftware sorts packages by name and version, drops exact duplicates,
// and keeps at most limit of them and about maxBytes of JSON.
func capSoftware(pkgs []sysinfo.Package, limit, maxBytes int) ([]protocol.SoftwarePackage, bool) {
	slices.SortFunc(pkgs, func(a, b sysinfo.Package) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Version, b.Version)
	})
	pkgs = slices.Compact(pkgs)
	out := make([]protocol.SoftwarePackage, 0, min(len(pkgs), limit))
	size := 0
	for i, p := range pkgs {
		// {"name":"…","version":"…"}, plus a comma.
		size += len(p.Name) + len(p.Version) + len(`{"name":"","version":""},`)
		if i >= limit || size > maxBytes {
			return out, true
		}
		out = append(out, protocol.SoftwarePackage{Name: p.Name, Version: p.Version})
	}
	return out, false
}

// Hash identifies an inventory's content: the hex sha256 of its JSON with
// the timestamp left out. Two builds of an unchanged host have the same
// Hash.
func Hash(inv *protocol.Inventory) (string, error) {
	c := *inv
	c.TS = protocol.Time{}
	b, err := json.Marshal(&c)
	if err != nil {
		return "", fmt.Errorf("inventory: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

func snapshot(inv *protocol.Inventory) (*Snapshot, error) {
	h, err := Hash(inv)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(inv)
	if err != nil {
		return nil, fmt.Errorf("inventory: %w", err)
	}
	return &Snapshot{Inventory: inv, JSON: b, Hash: h}, nil
}

// Publish publishes the latest inventory (building it first when there is
// none) unless the broker already has the same one, by Hash; force
// publishes it anyway. The daemon calls Publish(ctx, true) on the first
// connect, before the birth, and Publish(ctx, false) on later connects
// (which publishes only what a lost connection kept from going out).
func (b *Builder) Publish(ctx context.Context, force bool) error {
	s := b.Latest()
	if s == nil {
		var err error
		if s, err = b.Build(ctx); err != nil {
			return err
		}
	}
	return b.publish(ctx, s, force)
}

func (b *Builder) publish(ctx context.Context, s *Snapshot, force bool) error {
	if b.o.Publish == nil {
		return errors.New("inventory: no publish function")
	}
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	if !force && s.Hash == b.published {
		return nil
	}
	if err := b.o.Publish(ctx, s.JSON); err != nil {
		return fmt.Errorf("inventory: publish: %w", err)
	}
	if s.Hash != b.published {
		b.log.Info("inventory published", "hash", s.Hash[:12], "bytes", len(s.JSON))
	}
	b.published = s.Hash
	return nil
}

// Refresh builds a fresh inventory and publishes it even if unchanged
// (the inventory command). A failed publish is returned as the error
// together with the inventory, which is still worth returning.
func (b *Builder) Refresh(ctx context.Context) (*protocol.Inventory, error) {
	s, err := b.Build(ctx)
	if err != nil {
		return nil, err
	}
	return s.Inventory, b.publish(ctx, s, true)
}

// Run checks for changes every CheckInterval until ctx ends, reading
// everything again every Interval, and publishes the inventory when it
// differs from the one the broker has (or when an earlier publish
// failed). The first check is one CheckInterval after Run starts: the
// start-up inventory is the daemon's to publish (Publish on first
// connect).
func (b *Builder) Run(ctx context.Context) {
	t := time.NewTicker(b.o.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b.buildMu.Lock()
		full := time.Since(b.fullAt) >= b.o.Interval
		b.buildMu.Unlock()
		s, err := b.build(ctx, full)
		if err != nil {
			return // ctx ended
		}
		if err := b.publish(ctx, s, false); err != nil && ctx.Err() == nil {
			b.log.Warn("inventory not published; retried at the next check or connect", "err", err)
		}
	}
}

// errText is an error's text in the inventory. A hung read is "not
// responding" whether it just timed out or has been stuck for an hour, so
// that a hung mount does not change the hash (and republish the
// inventory) at every check.
func errText(err error) string {
	if errors.Is(err, sysinfo.ErrTimeout) || errors.Is(err, sysinfo.ErrStuck) {
		return "not responding"
	}
	return err.Error()
}

// call runs a read under the builder's guard.
func call[T any](ctx context.Context, b *Builder, op string, fn func(context.Context) (T, error)) (T, error) {
	return sysinfo.Call(ctx, b.guard, op, fn)
}
