package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"strconv"
	"testing"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/sysinfo"
)

// appendMetrics is a hand-written encoder of a sample, kept here only to
// measure what json.Marshal costs in comparison (see BenchmarkEncode).
// The agent uses json.Marshal: at one sample per 10 s the difference is
// microseconds per minute.
func appendMetrics(b []byte, m *protocol.Metrics) []byte {
	str := func(b []byte, s string) []byte { return strconv.AppendQuote(b, s) } // ASCII names only
	num := func(b []byte, f float64) []byte {
		if f == math.Trunc(f) && math.Abs(f) < 1e21 {
			return strconv.AppendInt(b, int64(f), 10)
		}
		return strconv.AppendFloat(b, f, 'f', -1, 64)
	}
	u := strconv.AppendUint
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(m.V), 10)
	b = append(b, `,"host":`...)
	b = str(b, m.Host)
	b = append(b, `,"ts":"`...)
	b = m.TS.UTC().AppendFormat(b, protocol.TimeFormat)
	b = append(b, '"')
	if m.CPU != nil {
		b = append(b, `,"cpu":{"percent":`...)
		b = num(b, m.CPU.Percent)
		if len(m.CPU.PerCPU) > 0 {
			b = append(b, `,"per_cpu":[`...)
			for i, p := range m.CPU.PerCPU {
				if i > 0 {
					b = append(b, ',')
				}
				b = num(b, p)
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	if m.Load != nil {
		b = append(b, `,"load":{"l1":`...)
		b = num(b, m.Load.L1)
		b = append(b, `,"l5":`...)
		b = num(b, m.Load.L5)
		b = append(b, `,"l15":`...)
		b = num(b, m.Load.L15)
		b = append(b, '}')
	}
	if m.Mem != nil {
		b = append(b, `,"mem":{"total":`...)
		b = u(b, m.Mem.Total, 10)
		b = append(b, `,"used":`...)
		b = u(b, m.Mem.Used, 10)
		b = append(b, `,"available":`...)
		b = u(b, m.Mem.Available, 10)
		b = append(b, `,"percent":`...)
		b = num(b, m.Mem.Percent)
		b = append(b, '}')
	}
	if m.Swap != nil {
		b = append(b, `,"swap":{"total":`...)
		b = u(b, m.Swap.Total, 10)
		b = append(b, `,"used":`...)
		b = u(b, m.Swap.Used, 10)
		b = append(b, '}')
	}
	if len(m.Disks) > 0 {
		b = append(b, `,"disks":[`...)
		for i, d := range m.Disks {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"mount":`...)
			b = str(b, d.Mount)
			b = append(b, `,"total":`...)
			b = u(b, d.Total, 10)
			b = append(b, `,"used":`...)
			b = u(b, d.Used, 10)
			b = append(b, `,"percent":`...)
			b = num(b, d.Percent)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if len(m.DiskIO) > 0 {
		b = append(b, `,"diskio":[`...)
		for i, d := range m.DiskIO {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"name":`...)
			b = str(b, d.Name)
			b = append(b, `,"read_bytes":`...)
			b = u(b, d.ReadBytes, 10)
			b = append(b, `,"write_bytes":`...)
			b = u(b, d.WriteBytes, 10)
			b = append(b, `,"reads":`...)
			b = u(b, d.Reads, 10)
			b = append(b, `,"writes":`...)
			b = u(b, d.Writes, 10)
			if d.IOTimeMS != 0 {
				b = append(b, `,"io_time_ms":`...)
				b = u(b, d.IOTimeMS, 10)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if len(m.Net) > 0 {
		b = append(b, `,"net":[`...)
		for i, n := range m.Net {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"name":`...)
			b = str(b, n.Name)
			b = append(b, `,"bytes_sent":`...)
			b = u(b, n.BytesSent, 10)
			b = append(b, `,"bytes_recv":`...)
			b = u(b, n.BytesRecv, 10)
			b = append(b, `,"packets_sent":`...)
			b = u(b, n.PacketsSent, 10)
			b = append(b, `,"packets_recv":`...)
			b = u(b, n.PacketsRecv, 10)
			for _, f := range []struct {
				k string
				v uint64
			}{{"err_in", n.ErrIn}, {"err_out", n.ErrOut}, {"drop_in", n.DropIn}, {"drop_out", n.DropOut}} {
				if f.v != 0 {
					b = append(b, `,"`...)
					b = append(b, f.k...)
					b = append(b, `":`...)
					b = u(b, f.v, 10)
				}
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if m.UptimeMS != 0 {
		b = append(b, `,"uptime_ms":`...)
		b = strconv.AppendInt(b, m.UptimeMS, 10)
	}
	if m.Procs != 0 {
		b = append(b, `,"procs":`...)
		b = strconv.AppendInt(b, int64(m.Procs), 10)
	}
	if a := m.Agent; a != nil {
		b = append(b, `,"agent":{"rss_bytes":`...)
		b = u(b, a.RSSBytes, 10)
		b = append(b, `,"cpu_percent":`...)
		b = num(b, a.CPUPercent)
		b = append(b, `,"goroutines":`...)
		b = strconv.AppendInt(b, int64(a.Goroutines), 10)
		b = append(b, `,"running":`...)
		b = strconv.AppendInt(b, int64(a.Running), 10)
		b = append(b, `,"queued":`...)
		b = strconv.AppendInt(b, int64(a.Queued), 10)
		if a.Outbox != 0 {
			b = append(b, `,"outbox":`...)
			b = strconv.AppendInt(b, int64(a.Outbox), 10)
		}
		if a.Reconnects != 0 {
			b = append(b, `,"reconnects":`...)
			b = u(b, a.Reconnects, 10)
		}
		b = append(b, '}')
	}
	if len(m.Errors) > 0 {
		b = append(b, `,"errors":[`...)
		for i, e := range m.Errors {
			if i > 0 {
				b = append(b, ',')
			}
			b = str(b, e)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

func typicalSample(tb testing.TB) *protocol.Metrics {
	tb.Helper()
	d := sysinfo.TypicalHost()
	d.CPUStep = sysinfo.CPUTimes{User: 0.123, System: 0.05, Idle: 0.827}
	c, err := New(Options{HostID: "web-01", Source: sysinfo.NewFixture(d), PerCPU: true,
		Health: func() Health { return Health{Running: 1, Queued: 2, Outbox: 3, Reconnects: 4} }})
	if err != nil {
		tb.Fatal(err)
	}
	c.minWindow = 0
	if _, err := c.Sample(context.Background()); err != nil {
		tb.Fatal(err)
	}
	m, err := c.Sample(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// The appender must produce what json.Marshal does, or the benchmark
// compares different work.
func TestAppenderMatchesMarshal(t *testing.T) {
	m := typicalSample(t)
	m.Errors = []string{"disk /mnt/nfs: timed out after 2s"}
	want, _ := json.Marshal(m)
	if got := appendMetrics(nil, m); !bytes.Equal(got, want) {
		t.Fatalf("appender:\n%s\njson.Marshal:\n%s", got, want)
	}
}

func BenchmarkEncode(b *testing.B) {
	m := typicalSample(b)
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("appender", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 2048)
		for b.Loop() {
			buf = appendMetrics(buf[:0], m)
		}
	})
}

// BenchmarkSample is one sample's cost: against fixed data (the
// collector's own overhead: guard goroutines, filtering, rounding) and
// against this host.
func BenchmarkSample(b *testing.B) {
	for _, tc := range []struct {
		name string
		src  sysinfo.Sampler
	}{
		{"fixture", sysinfo.NewFixture(sysinfo.TypicalHost())},
		{"host", sysinfo.New(sysinfo.Options{})},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c, err := New(Options{HostID: "web-01", Source: tc.src})
			if err != nil {
				b.Fatal(err)
			}
			c.minWindow = 0
			m := &protocol.Metrics{}
			b.ReportAllocs()
			for b.Loop() {
				if err := c.sample(context.Background(), m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
