package broker

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The TCP listener hands mochi connections with TCP_NODELAY set (with
// Nagle, every command round trip would wait ~40 ms for a delayed ACK).
func TestTCPListenerSetsNoDelay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newTCPListener("tcp", ln, time.Second)
	got := make(chan int, 1)
	go l.Serve(func(_ string, c net.Conn) error {
		raw, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Error(err)
			got <- -1
			return err
		}
		v := -1
		_ = raw.Control(func(fd uintptr) {
			v, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY)
		})
		if err != nil {
			t.Error(err)
		}
		got <- v
		return nil
	})
	c, err := net.Dial("tcp", l.Address())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case v := <-got:
		if v != 1 {
			t.Fatalf("TCP_NODELAY = %d on an accepted connection, want 1", v)
		}
	case <-time.After(waitTimeout):
		t.Fatal("no connection accepted")
	}
	l.Close(func(string) {})
}
