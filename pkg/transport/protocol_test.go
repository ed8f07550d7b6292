package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// silentBroker accepts TCP connections, reads each one's CONNECT packet,
// reports its protocol name and level, and never answers: a broker that is
// stopped, or a partitioned network that accepts and drops.
func silentBroker(t *testing.T) (addr string, connects <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan string, 64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				proto, err := readConnect(c)
				if err != nil {
					proto = "unreadable: " + err.Error()
				}
				select {
				case out <- proto:
				default:
				}
				_, _ = io.Copy(io.Discard, c) // hold it open, answer nothing
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), out
}

// readConnect reads an MQTT CONNECT packet and returns "NAME/LEVEL".
func readConnect(c net.Conn) (string, error) {
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	typ, err := r.ReadByte()
	if err != nil {
		return "", err
	}
	if typ != 0x10 {
		return "", fmt.Errorf("packet type %#x, want CONNECT", typ)
	}
	if _, err := binary.ReadUvarint(r); err != nil { // remaining length (same encoding)
		return "", err
	}
	var n uint16
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return "", err
	}
	name := make([]byte, n)
	if _, err := io.ReadFull(r, name); err != nil {
		return "", err
	}
	level, err := r.ReadByte()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s/%d", name, level), c.SetReadDeadline(time.Time{})
}

// TestConnectSpeaksOnlyMQTT311: every connection attempt to a broker that
// does not answer is one MQTT 3.1.1 CONNECT ("MQTT", level 4). paho's
// default would follow each failed one with an MQTT 3.1 CONNECT ("MQIsdp",
// level 3), doubling the attempt and possibly ending on the old protocol.
func TestConnectSpeaksOnlyMQTT311(t *testing.T) {
	addr, connects := silentBroker(t)
	c, err := New(Options{ClientID: "h", URLs: []string{"tcp://" + addr},
		NextSession: func() (uint64, error) { return 1, nil },
		Will:        func(uint64) []byte { return []byte("lost") }, Birth: func(uint64) []byte { return []byte("up") },
		OnMessage:      func(Message) {},
		ConnectTimeout: 200 * time.Millisecond, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.After(10 * time.Second)
	for i := range 4 {
		select {
		case proto := <-connects:
			if proto != "MQTT/4" {
				t.Fatalf("CONNECT %d: protocol %s, want MQTT/4 (MQTT 3.1.1) only", i+1, proto)
			}
		case <-deadline:
			t.Fatalf("%d CONNECTs within 10 s, want 4 (one per attempt)", i)
		}
	}
}
