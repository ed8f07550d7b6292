package sysinfo

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond until it holds or d passes.
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

// waiters is the number of callers waiting on op's call in flight.
func waiters(g *Guard, op string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f := g.busy[op]; f != nil {
		return f.waiters
	}
	return 0
}

func TestCallResults(t *testing.T) {
	g := NewGuard(time.Second)
	boom := errors.New("boom")
	tests := []struct {
		name    string
		fn      func(context.Context) (int, error)
		want    int
		wantErr error
	}{
		{"value", func(context.Context) (int, error) { return 42, nil }, 42, nil},
		{"error passes through", func(context.Context) (int, error) { return 0, boom }, 0, boom},
		{"a partial result comes with its error", func(context.Context) (int, error) { return 5, boom }, 5, boom},
		{"panic becomes an error", func(context.Context) (int, error) { panic("oops") }, 0, ErrPanic},
		{"fn sees the deadline", func(ctx context.Context) (int, error) {
			d, ok := ctx.Deadline()
			if !ok || time.Until(d) > time.Second {
				return 0, errors.New("no deadline")
			}
			return 1, nil
		}, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Call(context.Background(), g, tt.name, tt.fn)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("got %d, want %d", got, tt.want)
			}
		})
	}
	if s := g.Stuck(); len(s) != 0 {
		t.Fatalf("Stuck() = %v after calls that returned", s)
	}
}

// A call that hangs costs one timeout; while it hangs, later calls of the
// same operation are skipped without starting another goroutine; once it
// returns, the operation runs again.
func TestCallHungOperationIsNotMultiplied(t *testing.T) {
	g := NewGuard(50 * time.Millisecond)
	release := make(chan struct{})
	var calls atomic.Int32
	hang := func(ctx context.Context) (string, error) {
		calls.Add(1)
		<-release // ignores ctx, like statfs on a dead NFS mount
		return "late", nil
	}
	start := time.Now()
	_, err := Call(context.Background(), g, "disk /mnt/nfs", hang)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("first call: err = %v, want ErrTimeout", err)
	}
	if el := time.Since(start); el < 50*time.Millisecond || el > 2*time.Second {
		t.Fatalf("first call took %s, want about the 50ms timeout", el)
	}
	for range 5 {
		start = time.Now()
		_, err := Call(context.Background(), g, "disk /mnt/nfs", hang)
		if !errors.Is(err, ErrStuck) {
			t.Fatalf("call while stuck: err = %v, want ErrStuck", err)
		}
		if el := time.Since(start); el > 20*time.Millisecond {
			t.Fatalf("a skipped call took %s; it must return at once", el)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the hung function was entered %d times, want 1", n)
	}
	if s := g.Stuck(); len(s) != 1 || s[0] != "disk /mnt/nfs" {
		t.Fatalf("Stuck() = %v", s)
	}
	// Other operations are unaffected.
	if v, err := Call(context.Background(), g, "disk /", func(context.Context) (int, error) { return 7, nil }); err != nil || v != 7 {
		t.Fatalf("other op: %v %v", v, err)
	}
	close(release)
	waitFor(t, "the hung call to finish", 2*time.Second, func() bool { return len(g.Stuck()) == 0 })
	v, err := Call(context.Background(), g, "disk /mnt/nfs", func(context.Context) (string, error) { calls.Add(1); return "ok", nil })
	if err != nil || v != "ok" || calls.Load() != 2 {
		t.Fatalf("after recovery: %q %v (calls %d)", v, err, calls.Load())
	}
}

// Callers that ask while a call is running within its deadline share it.
func TestCallJoinsCallInFlight(t *testing.T) {
	g := NewGuard(5 * time.Second)
	entered := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int32
	fn := func(context.Context) (int, error) {
		if calls.Add(1) == 1 {
			close(entered)
		}
		<-release
		return 9, nil
	}
	var wg sync.WaitGroup
	results := make(chan int, 3)
	wg.Go(func() {
		v, _ := Call(context.Background(), g, "mem", fn)
		results <- v
	})
	<-entered
	for range 2 {
		wg.Go(func() {
			v, _ := Call(context.Background(), g, "mem", fn)
			results <- v
		})
	}
	waitFor(t, "three callers on one flight", 2*time.Second, func() bool { return waiters(g, "mem") == 3 })
	close(release)
	wg.Wait()
	close(results)
	for v := range results {
		if v != 9 {
			t.Fatalf("result %d, want 9", v)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("fn ran %d times, want 1", n)
	}
}

func TestCallContextEnds(t *testing.T) {
	g := NewGuard(5 * time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	if _, err := Call(ctx, g, "x", func(context.Context) (int, error) { called = true; return 0, nil }); !errors.Is(err, context.Canceled) || called {
		t.Fatalf("canceled ctx: err %v, called %v", err, called)
	}
	// Canceled while running: the caller returns at once, fn sees it.
	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		_, err := Call(ctx, g, "y", func(ctx context.Context) (int, error) {
			close(started)
			<-ctx.Done()
			return 0, ctx.Err()
		})
		done <- err
	}()
	<-started
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Call did not return when its context ended")
	}
	waitFor(t, "fn to return", 2*time.Second, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.busy) == 0
	})
}

func TestCallForOwnTimeout(t *testing.T) {
	g := NewGuard(10 * time.Millisecond)
	v, err := CallFor(context.Background(), g, "software", time.Second, func(context.Context) (int, error) {
		time.Sleep(50 * time.Millisecond) // longer than the guard's default, within its own
		return 3, nil
	})
	if err != nil || v != 3 {
		t.Fatalf("%v %v", v, err)
	}
}

func TestCallTypeMismatch(t *testing.T) {
	g := NewGuard(time.Second)
	release := make(chan struct{})
	entered := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = Call(context.Background(), g, "op", func(context.Context) (int, error) { close(entered); <-release; return 1, nil })
	}()
	<-entered
	errc := make(chan error, 1)
	go func() {
		_, err := Call(context.Background(), g, "op", func(context.Context) (string, error) { return "", nil })
		errc <- err
	}()
	waitFor(t, "the second caller to join", 2*time.Second, func() bool { return waiters(g, "op") == 2 })
	close(release)
	<-done
	if err := <-errc; err == nil {
		t.Fatal("joining with another result type must fail, not panic")
	}
}
