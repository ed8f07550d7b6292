package sysinfo

import (
	"context"
	"errors"
	"testing"
)

func TestFixture(t *testing.T) {
	ctx := context.Background()
	d := TypicalHost()
	d.Load = nil
	d.Errors[OpNet] = errors.New("boom")
	f := NewFixture(d)
	if _, err := f.Load(ctx); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("nil Load: %v, want ErrUnsupported", err)
	}
	if _, err := f.NetIO(ctx); err == nil || err.Error() != "boom" {
		t.Fatalf("NetIO: %v", err)
	}
	if _, err := f.Usage(ctx, "/nowhere"); err == nil {
		t.Fatal("usage of an unknown mount must fail")
	}
	ts, _ := f.CPUTimes(ctx, true)
	total, _ := f.CPUTimes(ctx, false)
	var sum float64
	for _, c := range ts {
		sum += c.Total()
	}
	if len(ts) != 4 || len(total) != 1 || total[0].Total() != sum {
		t.Fatalf("cpu times: %d per cpu, total %v, sum %v", len(ts), total, sum)
	}
	if n := f.Calls(OpCPU); n != 2 {
		t.Fatalf("Calls(cpu) = %d", n)
	}
	// Results are copies.
	ifs, _ := f.Interfaces(ctx)
	ifs[1].Addrs[0] = "changed"
	again, _ := f.Interfaces(ctx)
	if again[1].Addrs[0] == "changed" {
		t.Fatal("Interfaces shares its data with the caller")
	}
	// Clone is deep.
	c := d.Clone()
	c.PerCPU[0].User = -1
	c.Usage["/"] = Usage{}
	if d.PerCPU[0].User == -1 || d.Usage["/"].Total == 0 {
		t.Fatal("Clone shares data")
	}
}

func TestCPUTimes(t *testing.T) {
	c := CPUTimes{User: 10, System: 5, Idle: 80, Nice: 1, Iowait: 2, Irq: 1, Softirq: 1}
	if c.Total() != 100 || c.Busy() != 18 {
		t.Fatalf("Total %v Busy %v", c.Total(), c.Busy())
	}
}

func TestFixtureCPUStep(t *testing.T) {
	d := TypicalHost()
	d.CPUStep = CPUTimes{User: 1, Idle: 3}
	f := NewFixture(d)
	a, _ := f.CPUTimes(context.Background(), false)
	b, _ := f.CPUTimes(context.Background(), false)
	if dt, busy := b[0].Total()-a[0].Total(), b[0].Busy()-a[0].Busy(); dt != 16 || busy != 4 {
		t.Fatalf("one step: total +%v busy +%v, want +16 and +4 over 4 CPUs", dt, busy)
	}
}
