package sysinfo

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fixtureSystem reads testdata/linux instead of the host.
func fixtureSystem(t *testing.T) *System {
	t.Helper()
	return New(Options{Proc: "testdata/linux/proc", Var: "testdata/linux/var"})
}

func TestSystemFromProcFixture(t *testing.T) {
	ctx := context.Background()
	s := fixtureSystem(t)
	hz := 100.0 // USER_HZ on every Linux gopsutil supports

	t.Run("cpu", func(t *testing.T) {
		total, err := s.CPUTimes(ctx, false)
		if err != nil || len(total) != 1 {
			t.Fatalf("%v %v", total, err)
		}
		want := CPUTimes{User: 400000 / hz, Nice: 2000 / hz, System: 150000 / hz, Idle: 3200000 / hz, Iowait: 28000 / hz, Softirq: 5000 / hz, Steal: 1000 / hz}
		if total[0] != want {
			t.Fatalf("total = %+v\nwant %+v", total[0], want)
		}
		per, err := s.CPUTimes(ctx, true)
		if err != nil || len(per) != 4 || per[3].Idle != 770000/hz {
			t.Fatalf("per cpu: %+v %v", per, err)
		}
	})
	t.Run("memory", func(t *testing.T) {
		m, err := s.Memory(ctx)
		if err != nil {
			t.Fatal(err)
		}
		const kib = 1024
		want := Memory{Total: 8388608 * kib, Available: 5242880 * kib, Used: (8388608 - 5242880) * kib,
			SwapTotal: 2097152 * kib, SwapUsed: (2097152 - 1835008) * kib}
		if m != want {
			t.Fatalf("memory = %+v\nwant %+v", m, want)
		}
	})
	t.Run("load", func(t *testing.T) {
		l, err := s.Load(ctx)
		if err != nil || l != (Load{0.52, 0.61, 0.58}) {
			t.Fatalf("%+v %v", l, err)
		}
	})
	t.Run("net", func(t *testing.T) {
		n, err := s.NetIO(ctx)
		if err != nil || len(n) != 2 {
			t.Fatalf("%+v %v", n, err)
		}
		want := NetIO{Name: "eth0", BytesRecv: 12884901888, PacketsRecv: 9800000, ErrIn: 3, DropIn: 12,
			BytesSent: 3221225472, PacketsSent: 4100000, ErrOut: 1}
		if n[1] != want {
			t.Fatalf("eth0 = %+v\nwant %+v", n[1], want)
		}
	})
	t.Run("diskio", func(t *testing.T) {
		d, err := s.DiskIO(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(d, func(d DiskIO) bool { return d.Name == "sda" })
		if i < 0 {
			t.Fatalf("no sda in %+v", d)
		}
		want := DiskIO{Name: "sda", Reads: 310000, Writes: 920000, ReadBytes: 18874368 * 512, WriteBytes: 44040192 * 512, IOTimeMS: 800000}
		if d[i] != want {
			t.Fatalf("sda = %+v\nwant %+v", d[i], want)
		}
		whole := WholeDisks(d)
		if len(whole) != 2 || whole[0].Name != "nvme0n1" || whole[1].Name != "sda" {
			t.Fatalf("whole disks = %+v", whole)
		}
	})
	t.Run("partitions", func(t *testing.T) {
		p, err := s.Partitions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := mounts(RealDisks(p)), []string{"/", "/data", "/mnt/home"}; !slices.Equal(got, want) {
			t.Fatalf("real disks %q, want %q (from %+v)", got, want, p)
		}
		i := slices.IndexFunc(p, func(p Partition) bool { return p.Mount == "/data" })
		if p[i].Device != "/dev/nvme0n1p1" || p[i].FSType != "xfs" {
			t.Fatalf("/data = %+v", p[i])
		}
	})
	t.Run("procs", func(t *testing.T) {
		n, err := s.Procs(ctx)
		if err != nil || n != 2 {
			t.Fatalf("procs = %d, %v (want the 2 numeric entries)", n, err)
		}
	})
	t.Run("software", func(t *testing.T) {
		p, err := s.Software(ctx)
		if err != nil || len(p) != 3 || p[0].Name != "bash" {
			t.Fatalf("%+v %v", p, err)
		}
	})
}

func TestSystemSoftwareUnsupported(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no rpm; and no dpkg status under Var
	_, err := New(Options{Var: t.TempDir()}).Software(context.Background())
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("err = %v, want ErrUnsupported", err)
	}
}

// The real host: every reading a sample and an inventory need works here.
func TestSystemRealHost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := New(Options{})
	cpu, err := s.CPUTimes(ctx, false)
	if err != nil || cpu[0].Total() <= 0 {
		t.Fatalf("cpu: %+v %v", cpu, err)
	}
	m, err := s.Memory(ctx)
	if err != nil || m.Total == 0 || m.Available == 0 || m.Available > m.Total {
		t.Fatalf("memory: %+v %v", m, err)
	}
	parts, err := s.Partitions(ctx)
	if err != nil || !slices.Contains(mounts(RealDisks(parts)), "/") {
		t.Fatalf("partitions: %v %v", mounts(RealDisks(parts)), err)
	}
	u, err := s.Usage(ctx, "/")
	if err != nil || u.Total == 0 || u.Used > u.Total || math.IsNaN(u.Percent) {
		t.Fatalf("usage /: %+v %v", u, err)
	}
	if up, err := s.Uptime(ctx); err != nil || up <= 0 {
		t.Fatalf("uptime: %v %v", up, err)
	}
	if n, err := s.Procs(ctx); err != nil || n < 1 {
		t.Fatalf("procs: %v %v", n, err)
	}
	self, err := s.Self(ctx)
	if err != nil || self.RSS < 1<<20 {
		t.Fatalf("self: %+v %v", self, err)
	}
	ifs, err := s.Interfaces(ctx)
	if err != nil || !slices.ContainsFunc(ifs, func(i Interface) bool { return i.Loopback }) {
		t.Fatalf("interfaces: %+v %v", ifs, err)
	}
	if _, err := s.NetIO(ctx); err != nil {
		t.Fatalf("net: %v", err)
	}
	if _, err := s.DiskIO(ctx); err != nil {
		t.Fatalf("diskio: %v", err)
	}
	if _, err := s.Load(ctx); err != nil {
		t.Fatalf("load: %v", err)
	}
	h, err := s.Host(ctx)
	if err != nil || h.Hostname == "" || h.KernelVersion == "" || h.BootTime.IsZero() || h.BootTime.After(time.Now()) {
		t.Fatalf("host: %+v %v", h, err)
	}
	c, err := s.CPUInfo(ctx)
	if err != nil || c.Threads < 1 || c.Cores < 1 {
		t.Fatalf("cpu info: %+v %v", c, err)
	}
}

// Without a dpkg database, rpm is asked; a fake rpm on PATH stands in.
func TestSystemSoftwareFromRPM(t *testing.T) {
	bin := t.TempDir()
	write := func(script string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(bin, "rpm"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin)
	s := New(Options{Var: t.TempDir()})

	write("#!/bin/sh\n[ \"$1\" = -qa ] || exit 2\nprintf 'bash\\t5.1.8-6.el9\\nkernel\\t5.14.0-362.el9\\n'\n")
	got, err := s.Software(context.Background())
	if err != nil || !slices.Equal(got, []Package{{"bash", "5.1.8-6.el9"}, {"kernel", "5.14.0-362.el9"}}) {
		t.Fatalf("%+v %v", got, err)
	}

	write("#!/bin/sh\necho 'error: rpmdb open failed' >&2\nexit 1\n")
	if _, err := s.Software(context.Background()); err == nil || !strings.Contains(err.Error(), "rpmdb open failed") {
		t.Fatalf("err = %v, want rpm's message", err)
	}

	write("#!/bin/sh\nexec sleep 30\n")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := s.Software(ctx); err == nil {
		t.Fatal("a hung rpm must fail when ctx ends")
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("a hung rpm held Software for %s", el)
	}
}

// Self agrees with the kernel's own accounting of this process.
func TestSelfLinux(t *testing.T) {
	s := New(Options{})
	before, err := s.Self(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Burn some CPU.
	x := 0
	for start := time.Now(); time.Since(start) < 60*time.Millisecond; {
		x++
	}
	after, err := s.Self(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d := after.CPU - before.CPU; d < 20*time.Millisecond {
		t.Fatalf("60ms of busy loop (%d rounds) added %s of CPU time", x, d)
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var vmRSS uint64
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.Fields(rest)[0], 10, 64)
			vmRSS = kb << 10
		}
	}
	if diff := math.Abs(float64(after.RSS) - float64(vmRSS)); vmRSS == 0 || diff > float64(vmRSS)/4 {
		t.Fatalf("RSS %d, /proc/self/status says %d", after.RSS, vmRSS)
	}
}
