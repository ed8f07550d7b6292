package state

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	bolt "go.etcd.io/bbolt"
)

// drain acks outbox messages as a publisher would, until stop is closed.
func drain(b *testing.B, s *Store, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-s.Notify():
			}
			msgs, err := s.Pending(256)
			if err != nil {
				b.Error(err)
				return
			}
			for _, m := range msgs {
				if err := s.Ack(m.Seq); err != nil {
					b.Error(err)
					return
				}
			}
		}
	})
	return &wg
}

// admitFinish is the journal work of one ping: admit with an audit record,
// finish with the result and an audit record.
func admitFinish(b *testing.B, s *Store, id string) {
	payload := []byte(`{"v":1,"id":"` + id + `","kind":"ping","issued_at":"2026-11-25T10:00:00.000Z"}`)
	_, ok, err := s.Admit(Entry{ID: id, Kind: protocol.KindPing, Topic: "mqagent/v1/hosts/h/cmd", Payload: payload, KeepUntil: time.Now().Add(time.Hour)},
		Message{Topic: "mqagent/v1/hosts/h/audit", Payload: []byte(`{"v":1,"event":"received","id":"` + id + `"}`), QoS: 1})
	if err != nil || !ok {
		b.Fatalf("admit: %v %v", ok, err)
	}
	result := []byte(`{"v":1,"id":"` + id + `","state":"succeeded","data":{"version":"dev","uptime_ms":1}}`)
	if err := s.Finish(id, protocol.StateSucceeded, result,
		Message{Topic: "mqagent/v1/hosts/h/results/" + id, Payload: result, QoS: 1},
		Message{Topic: "mqagent/v1/hosts/h/audit", Payload: []byte(`{"v":1,"event":"finished","id":"` + id + `"}`), QoS: 1}); err != nil {
		b.Fatalf("finish: %v", err)
	}
}

func BenchmarkAdmitFinish(b *testing.B) {
	s := open(b, statePath(b), Options{})
	stop := make(chan struct{})
	wg := drain(b, s, stop)
	i := 0
	for b.Loop() {
		admitFinish(b, s, fmt.Sprintf("cmd-%d", i))
		i++
	}
	close(stop)
	wg.Wait()
}

func BenchmarkAdmitFinishParallel(b *testing.B) {
	s := open(b, statePath(b), Options{})
	stop := make(chan struct{})
	wg := drain(b, s, stop)
	var n atomic.Int64
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			admitFinish(b, s, fmt.Sprintf("cmd-%d", n.Add(1)))
		}
	})
	close(stop)
	wg.Wait()
}

func BenchmarkDuplicateAdmit(b *testing.B) {
	s := open(b, statePath(b), Options{})
	if _, _, err := s.Admit(Entry{ID: "dup"}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, ok, err := s.Admit(Entry{ID: "dup"}); err != nil || ok {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkBoltCommitBaseline is one plain bbolt commit of one key, the
// floor for the store's writes (AdmitFinish is two commits).
func BenchmarkBoltCommitBaseline(b *testing.B) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	i := 0
	for b.Loop() {
		i++
		err := db.Update(func(tx *bolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return bk.Put(fmt.Appendf(nil, "k%d", i), make([]byte, 200))
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
