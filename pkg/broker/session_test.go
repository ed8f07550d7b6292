package broker

import (
	"slices"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// queued is a queued packet: its Created second and packet id.
type queued struct {
	created int64
	id      uint16
}

func toPackets(qs []queued) []packets.Packet {
	pks := make([]packets.Packet, len(qs))
	for i, q := range qs {
		pks[i] = packets.Packet{Created: q.created, PacketID: q.id, FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}}
	}
	return pks
}

func ids(pks []packets.Packet) []uint16 {
	out := make([]uint16, len(pks))
	for i, pk := range pks {
		out[i] = pk.PacketID
	}
	return out
}

// Each case lists a queue in the order it was queued; the input is that
// queue shuffled.
var queueOrderTests = []struct {
	name  string
	queue []queued
}{
	{"one", []queued{{100, 7}}},
	{"same second", []queued{{100, 1}, {100, 2}, {100, 3}, {100, 4}}},
	{"same second, ids wrap", []queued{{100, 65533}, {100, 65534}, {100, 65535}, {100, 1}, {100, 2}}},
	{"ids skip ones in use", []queued{{100, 65530}, {100, 65535}, {100, 3}, {100, 9}}},
	{"seconds first", []queued{{99, 65535}, {100, 1}, {100, 2}, {101, 40000}}},
	{"16-bit second boundary", []queued{{0x2FFFF, 10}, {0x2FFFF, 11}, {0x30000, 12}, {0x30001, 13}}},
	{"wrap within later second", []queued{{50, 300}, {51, 65535}, {51, 1}}},
}

func TestSortQueue(t *testing.T) {
	for _, tt := range queueOrderTests {
		t.Run(tt.name, func(t *testing.T) {
			want := ids(toPackets(tt.queue))
			for _, perm := range [][]int{reversed(len(tt.queue)), rotated(len(tt.queue))} {
				in := toPackets(tt.queue)
				shuffled := make([]packets.Packet, len(in))
				for i, j := range perm {
					shuffled[i] = in[j]
				}
				sortQueue(shuffled)
				if got := ids(shuffled); !slices.Equal(got, want) {
					t.Fatalf("sortQueue: %v, want %v", got, want)
				}
			}
		})
	}
}

// restampQueue must make mochi's own resend order (Inflight.GetAll) the
// queue order, whatever the Created seconds and packet ids.
func TestRestampQueueFixesMochiResendOrder(t *testing.T) {
	for _, tt := range queueOrderTests {
		t.Run(tt.name, func(t *testing.T) {
			inf := mqtt.NewInflights()
			for _, pk := range toPackets(tt.queue) {
				inf.Set(pk)
			}
			restampQueue(inf)
			want := ids(toPackets(tt.queue))
			if got := ids(inf.GetAll(false)); !slices.Equal(got, want) {
				t.Fatalf("resend order %v, want %v", got, want)
			}
			if inf.Len() != len(tt.queue) {
				t.Fatalf("%d packets after restamp, want %d", inf.Len(), len(tt.queue))
			}
		})
	}
}

func reversed(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = n - 1 - i
	}
	return p
}

func rotated(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = (i + n/2) % n
	}
	return p
}
