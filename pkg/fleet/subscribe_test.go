package fleet_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/fleet"
)

const waitTimeout = 5 * time.Second

func next(t *testing.T, ch <-chan fleet.Change) fleet.Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return c
	case <-time.After(waitTimeout):
		t.Fatal("no change delivered")
	}
	return fleet.Change{}
}

func TestSubscribeDeltas(t *testing.T) {
	v := fleet.New()
	v.Apply(topics.Status("b"), online("b", 1, 0))
	v.Apply(topics.Status("a"), online("a", 1, 0))
	ch, cancel := v.Subscribe(0)
	defer cancel()
	// Known hosts first, as Added, in id order.
	for _, id := range []string{"a", "b"} {
		if c := next(t, ch); c.Kind != fleet.Added || c.ID != id || c.Host.ID != id || c.Parts != fleet.PartAll {
			t.Fatalf("initial change %+v, want added %s", c, id)
		}
	}
	v.Apply(topics.Metrics("a"), metrics("a", 1, 50))
	if c := next(t, ch); c.Kind != fleet.Updated || c.ID != "a" || c.Parts != fleet.PartMetrics || c.Host.Metrics == nil || c.Host.Metrics.CPU.Percent != 50 {
		t.Fatalf("metrics change %+v", c)
	}
	v.Apply(topics.Status("c"), online("c", 1, 0))
	if c := next(t, ch); c.Kind != fleet.Added || c.ID != "c" {
		t.Fatalf("new host change %+v", c)
	}
	v.Apply(topics.Status("b"), nil)
	if c := next(t, ch); c.Kind != fleet.Removed || c.ID != "b" {
		t.Fatalf("removal %+v", c)
	}
	cancel()
	cancel() // twice is fine
	deadline := time.After(waitTimeout)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("channel not closed after cancel")
		}
	}
}

// A subscriber that does not read never blocks Apply; when it reads, it
// gets one coalesced change per host with the latest value.
func TestSubscribeSlowSubscriberCoalesces(t *testing.T) {
	v := fleet.New()
	v.Apply(topics.Status("a"), online("a", 1, 0))
	ch, cancel := v.Subscribe(0)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= 10000; i++ {
			v.Apply(topics.Metrics("a"), metrics("a", i, float64(i%100)))
			v.Apply(topics.Metrics(fmt.Sprintf("h%d", i%50)), metrics(fmt.Sprintf("h%d", i%50), i, 1))
		}
		v.Apply(topics.Metrics("a"), metrics("a", 20000, 42))
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Apply blocked on a subscriber that does not read")
	}
	// Drain: at most one change in flight plus one per host.
	latest := map[string]fleet.Change{}
	n := 0
	deadline := time.After(waitTimeout)
	for len(latest) < 51 || latest["a"].Host.Metrics == nil || latest["a"].Host.Metrics.CPU.Percent != 42 {
		select {
		case c := <-ch:
			latest[c.ID] = c
			n++
		case <-deadline:
			t.Fatalf("after %d changes: %d hosts, a=%+v", n, len(latest), latest["a"])
		}
	}
	if n > 2*51+2 {
		t.Fatalf("%d changes for 51 hosts: not coalesced", n)
	}
}

func TestSubscribeConcurrent(t *testing.T) {
	v := fleet.New()
	var wg sync.WaitGroup
	chans := make([]<-chan fleet.Change, 4)
	cancels := make([]func(), 4)
	for i := range chans {
		chans[i], cancels[i] = v.Subscribe(8)
	}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				id := fmt.Sprintf("w%d-%d", w, i%20)
				v.Apply(topics.Status(id), online(id, uint64(i+1), i))
				v.Snapshot()
				v.Host(id)
			}
		}()
	}
	// Every subscriber eventually learns all 80 hosts.
	for i, ch := range chans {
		seen := map[string]bool{}
		deadline := time.After(waitTimeout)
		for len(seen) < 80 {
			select {
			case c := <-ch:
				seen[c.ID] = true
			case <-deadline:
				t.Fatalf("subscriber %d saw %d hosts", i, len(seen))
			}
		}
	}
	wg.Wait()
	for _, c := range cancels {
		c()
	}
}
