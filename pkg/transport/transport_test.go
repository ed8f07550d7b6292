package transport

import (
	"errors"
	"testing"
	"time"
)

func TestNewValidates(t *testing.T) {
	ok := Options{ClientID: "h", URLs: []string{"tcp://127.0.0.1:1"}, NextSession: func() (uint64, error) { return 1, nil },
		Will: func(uint64) []byte { return nil }, Birth: func(uint64) []byte { return nil }, OnMessage: func(Message) {}}
	cases := map[string]func(o *Options){
		"no client id":  func(o *Options) { o.ClientID = "" },
		"no urls":       func(o *Options) { o.URLs = nil },
		"no on message": func(o *Options) { o.OnMessage = nil },
		"no session":    func(o *Options) { o.NextSession = nil },
	}
	for name, mod := range cases {
		o := ok
		mod(&o)
		if _, err := New(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	c, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	if c.o.KeepAlive != 30*time.Second || c.o.ReconnectMax != 60*time.Second {
		t.Fatalf("defaults not applied: %+v", c.o)
	}
}

func TestBackoffIsCappedAndJittered(t *testing.T) {
	c, err := New(Options{ClientID: "h", URLs: []string{"tcp://x:1"}, NextSession: func() (uint64, error) { return 1, nil },
		Will: func(uint64) []byte { return nil }, Birth: func(uint64) []byte { return nil }, OnMessage: func(Message) {},
		ReconnectMin: 100 * time.Millisecond, ReconnectMax: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 1; attempt < 40; attempt++ {
		seen := map[time.Duration]bool{}
		for range 50 {
			d := c.backoff(attempt)
			if d < 50*time.Millisecond || d > 2050*time.Millisecond {
				t.Fatalf("attempt %d: backoff %v outside [min/2, max+min/2]", attempt, d)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Fatalf("attempt %d: backoff is not jittered (%d distinct values)", attempt, len(seen))
		}
	}
}

func TestPublishWhileDisconnected(t *testing.T) {
	c, err := New(Options{ClientID: "h", URLs: []string{"tcp://x:1"}, NextSession: func() (uint64, error) { return 1, nil },
		Will: func(uint64) []byte { return nil }, Birth: func(uint64) []byte { return nil }, OnMessage: func(Message) {}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Publish("a", 1, false, nil).Wait(time.Millisecond); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("got %v, want ErrNotConnected", err)
	}
	select {
	case <-c.Connected():
		t.Fatal("Connected closed before any connection")
	default:
	}
	if st := c.State(); st.Connected {
		t.Fatal("state says connected")
	}
}
