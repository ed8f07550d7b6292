package broker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// store is a mochi storage hook persisting sessions, subscriptions, queued
// (inflight) and retained messages to a bbolt file. It replaces mochi's
// hooks/storage/bolt, which does not store the packet id of a queued message
// (after a restart all of a client's queued messages load under id 0, so
// one survives) and runs one fsync'd transaction per event on the publish
// path.
//
// Hook methods only record what changed and queue it; one goroutine commits
// the queue in batches (one fsync'd transaction per batch), so a publish
// never waits for the disk and a burst costs a few commits. The price: what
// was acknowledged in the last few milliseconds before a crash (kill -9,
// power loss) may be lost; Stop commits everything, and bbolt never leaves
// a torn file. Only sessions that outlive their connection (clean session
// false, or an MQTT 5 session expiry) are written.
//
// Layout: buckets "clients" (client id → storage.Client JSON), "subs"
// (client id → filter → storage.Subscription JSON), "inflight" (client id →
// big-endian packet id → storage.Message JSON), "retained" (topic →
// storage.Message JSON) and "meta" ("version" → "1"). Nested buckets per
// client keep every key unambiguous whatever the client id contains.
type store struct {
	mqtt.HookBase
	db  *bbolt.DB
	log *slog.Logger

	mu       sync.Mutex // held while changing the sets and queueing, so both agree on order
	closed   bool
	queue    chan op
	clients  map[string]struct{}            // sessions with a record in the file
	inflight map[string]map[uint16]struct{} // queued messages in the file, by client
	loaded   system.Info                    // counts read at start, for $SYS

	done chan struct{} // closed when the writer has committed everything

	errMu sync.Mutex
	err   error // first commit or close error
}

var (
	bucketClients  = []byte("clients")
	bucketSubs     = []byte("subs")
	bucketInflight = []byte("inflight")
	bucketRetained = []byte("retained")
	bucketMeta     = []byte("meta")
	keyVersion     = []byte("version")
	storeVersion   = []byte("1")
)

const (
	storeQueueLen = 16384 // ops waiting for the writer; hooks block (back-pressure) past it
	storeMaxBatch = 4096  // ops per transaction
)

type opKind uint8

const (
	opPutClient   opKind = iota // key client id
	opDropClient                // key client id: record, subscriptions and queue
	opPutSub                    // client, key filter
	opDelSub                    // client, key filter
	opPutInflight               // client, key packet id
	opDelInflight               // client, key packet id
	opPutRetained               // key topic
	opDelRetained               // key topic
)

// op is one change for the writer.
type op struct {
	kind   opKind
	client string
	key    []byte
	val    []byte
}

// openStore opens (creating if needed) the bbolt file at path and starts its
// writer. It waits up to lockTimeout for another process to release the
// file, then fails wrapping ErrDataDirInUse.
func openStore(path string, lockTimeout time.Duration, log *slog.Logger) (*store, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:        lockTimeout,
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("broker: open %s: %w", path, ErrDataDirInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("broker: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketClients, bucketSubs, bucketInflight, bucketRetained, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(keyVersion); {
		case v == nil:
			return meta.Put(keyVersion, storeVersion)
		case !bytes.Equal(v, storeVersion):
			return fmt.Errorf("unsupported format version %q (want %q)", v, storeVersion)
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("broker: open %s: %w", path, err)
	}
	s := &store{
		db:       db,
		log:      log,
		queue:    make(chan op, storeQueueLen),
		clients:  make(map[string]struct{}),
		inflight: make(map[string]map[uint16]struct{}),
		done:     make(chan struct{}),
	}
	go s.run()
	return s, nil
}

// Err returns the first error committing to or closing the file.
func (s *store) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

func (s *store) setErr(err error) {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// run commits queued ops until the queue is closed.
func (s *store) run() {
	defer close(s.done)
	batch := make([]op, 0, storeMaxBatch)
	for o := range s.queue {
		batch = append(batch[:0], o)
	fill:
		for len(batch) < storeMaxBatch {
			select {
			case o, ok := <-s.queue:
				if !ok {
					break fill
				}
				batch = append(batch, o)
			default:
				break fill
			}
		}
		s.commit(batch)
	}
}

// commit applies ops in one transaction. An op that fails alone (a key
// too long for bbolt) is logged and skipped; a failed commit loses the batch.
func (s *store) commit(ops []op) {
	err := s.db.Update(func(tx *bbolt.Tx) error {
		for _, o := range ops {
			if err := apply(tx, o); err != nil {
				s.log.Warn("broker state not persisted", "client", o.client, "key", string(o.key), "error", err)
			}
		}
		return nil
	})
	if err != nil {
		s.log.Error("persisting broker state failed", "changes_lost", len(ops), "error", err)
		s.setErr(fmt.Errorf("broker: persist state: %w", err))
	}
}

func apply(tx *bbolt.Tx, o op) error {
	switch o.kind {
	case opPutClient:
		return tx.Bucket(bucketClients).Put(o.key, o.val)
	case opDropClient:
		if err := tx.Bucket(bucketClients).Delete(o.key); err != nil {
			return err
		}
		for _, name := range [][]byte{bucketSubs, bucketInflight} {
			if err := tx.Bucket(name).DeleteBucket(o.key); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
				return err
			}
		}
		return nil
	case opPutSub, opPutInflight:
		parent := bucketSubs
		if o.kind == opPutInflight {
			parent = bucketInflight
		}
		b, err := tx.Bucket(parent).CreateBucketIfNotExists([]byte(o.client))
		if err != nil {
			return err
		}
		return b.Put(o.key, o.val)
	case opDelSub, opDelInflight:
		parent := bucketSubs
		if o.kind == opDelInflight {
			parent = bucketInflight
		}
		if b := tx.Bucket(parent).Bucket([]byte(o.client)); b != nil {
			return b.Delete(o.key)
		}
		return nil
	case opPutRetained:
		return tx.Bucket(bucketRetained).Put(o.key, o.val)
	case opDelRetained:
		return tx.Bucket(bucketRetained).Delete(o.key)
	}
	return fmt.Errorf("unknown store op %d", o.kind)
}

// enqueue queues ops for the writer; the caller holds s.mu.
func (s *store) enqueue(ops ...op) {
	for _, o := range ops {
		s.queue <- o
	}
}

// change runs fn with s.mu held, unless the store is closed (mochi's
// housekeeping loop may still fire a hook while the server stops).
func (s *store) change(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.log.Debug("broker state change after the store closed; ignored")
		return
	}
	fn()
}

// dropClient forgets everything stored for id; the caller holds s.mu.
func (s *store) dropClient(id string) {
	_, stored := s.clients[id]
	_, queued := s.inflight[id]
	if !stored && !queued {
		return
	}
	delete(s.clients, id)
	delete(s.inflight, id)
	s.enqueue(op{kind: opDropClient, client: id, key: []byte(id)})
}

// persistent reports whether cl's session outlives its connection.
func persistent(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

func packetKey(id uint16) []byte { return binary.BigEndian.AppendUint16(nil, id) }

// ID implements mqtt.Hook.
func (s *store) ID() string { return "mqagent-store" }

// Provides implements mqtt.Hook.
func (s *store) Provides(b byte) bool {
	return bytes.IndexByte([]byte{
		mqtt.OnSessionEstablished,
		mqtt.OnDisconnect,
		mqtt.OnSubscribed,
		mqtt.OnUnsubscribed,
		mqtt.OnRetainMessage,
		mqtt.OnQosPublish,
		mqtt.OnQosComplete,
		mqtt.OnQosDropped,
		mqtt.OnClientExpired,
		mqtt.OnRetainedExpired,
		mqtt.StoredClients,
		mqtt.StoredSubscriptions,
		mqtt.StoredInflightMessages,
		mqtt.StoredRetainedMessages,
		mqtt.StoredSysInfo,
	}, b) >= 0
}

// Stop implements mqtt.Hook: it commits everything queued and closes the
// file. mochi calls it once all clients are gone.
func (s *store) Stop() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.Err()
	}
	s.closed = true
	close(s.queue)
	s.mu.Unlock()
	<-s.done
	if err := s.db.Close(); err != nil {
		s.setErr(fmt.Errorf("broker: close data file: %w", err))
	}
	return s.Err()
}

// OnSessionEstablished stores a persistent session, or forgets a stored one
// that a clean session just replaced.
func (s *store) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	s.change(func() {
		if !persistent(cl) {
			s.dropClient(cl.ID)
			return
		}
		props := cl.Properties.Props
		rec := storage.Client{
			ID:              cl.ID,
			T:               storage.ClientKey,
			Remote:          cl.Net.Remote,
			Listener:        cl.Net.Listener,
			Username:        cl.Properties.Username,
			Clean:           cl.Properties.Clean,
			ProtocolVersion: cl.Properties.ProtocolVersion,
			Properties: storage.ClientProperties{
				SessionExpiryInterval:     props.SessionExpiryInterval,
				SessionExpiryIntervalFlag: props.SessionExpiryIntervalFlag,
				AuthenticationMethod:      props.AuthenticationMethod,
				AuthenticationData:        props.AuthenticationData,
				RequestProblemInfo:        props.RequestProblemInfo,
				RequestProblemInfoFlag:    props.RequestProblemInfoFlag,
				RequestResponseInfo:       props.RequestResponseInfo,
				ReceiveMaximum:            props.ReceiveMaximum,
				TopicAliasMaximum:         props.TopicAliasMaximum,
				User:                      props.User,
				MaximumPacketSize:         props.MaximumPacketSize,
			},
			Will: storage.ClientWill(cl.Properties.Will),
		}
		val, err := rec.MarshalBinary()
		if err != nil {
			s.log.Warn("session not persisted", "client", cl.ID, "error", err)
			return
		}
		s.clients[cl.ID] = struct{}{}
		s.enqueue(op{kind: opPutClient, client: cl.ID, key: []byte(cl.ID), val: val})
	})
}

// OnDisconnect forgets a session that ends with its connection.
func (s *store) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if !expire || cl.IsTakenOver() {
		return
	}
	s.change(func() {
		s.dropClient(cl.ID)
	})
}

// OnClientExpired forgets an expired session.
func (s *store) OnClientExpired(cl *mqtt.Client) {
	s.change(func() {
		s.dropClient(cl.ID)
	})
}

// OnSubscribed stores the granted subscriptions of a persistent session.
func (s *store) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if !persistent(cl) {
		return
	}
	ops := make([]op, 0, len(pk.Filters))
	for i, f := range pk.Filters {
		if i >= len(codes) || codes[i] >= packets.ErrUnspecifiedError.Code {
			continue // refused
		}
		rec := storage.Subscription{
			ID:                f.Filter,
			T:                 storage.SubscriptionKey,
			Client:            cl.ID,
			Filter:            f.Filter,
			Qos:               codes[i],
			Identifier:        f.Identifier,
			NoLocal:           f.NoLocal,
			RetainHandling:    f.RetainHandling,
			RetainAsPublished: f.RetainAsPublished,
		}
		val, err := rec.MarshalBinary()
		if err != nil {
			s.log.Warn("subscription not persisted", "client", cl.ID, "filter", f.Filter, "error", err)
			continue
		}
		ops = append(ops, op{kind: opPutSub, client: cl.ID, key: []byte(f.Filter), val: val})
	}
	s.change(func() {
		s.enqueue(ops...)
	})
}

// OnUnsubscribed removes subscriptions of a stored session.
func (s *store) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	s.change(func() {
		if _, ok := s.clients[cl.ID]; !ok {
			return
		}
		for _, f := range pk.Filters {
			s.enqueue(op{kind: opDelSub, client: cl.ID, key: []byte(f.Filter)})
		}
	})
}

// OnRetainMessage stores or (empty payload) removes a retained message.
func (s *store) OnRetainMessage(_ *mqtt.Client, pk packets.Packet, _ int64) {
	o := op{kind: opDelRetained, key: []byte(pk.TopicName)}
	if len(pk.Payload) > 0 {
		val, err := messageRecord(storage.RetainedKey, "", pk).MarshalBinary()
		if err != nil {
			s.log.Warn("retained message not persisted", "topic", pk.TopicName, "error", err)
			return
		}
		o = op{kind: opPutRetained, key: []byte(pk.TopicName), val: val}
	}
	s.change(func() {
		s.enqueue(o)
	})
}

// OnRetainedExpired removes an expired retained message.
func (s *store) OnRetainedExpired(topic string) {
	s.change(func() {
		s.enqueue(op{kind: opDelRetained, key: []byte(topic)})
	})
}

// OnQosPublish stores a message queued for (or re-sent to) a persistent
// session. mochi also calls it for the acknowledgements of messages the
// client sent; those are not stored (a QoS 1 one lives for microseconds).
func (s *store) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if pk.FixedHeader.Type != packets.Publish || !persistent(cl) {
		return
	}
	val, err := messageRecord(storage.InflightKey, cl.ID, pk).MarshalBinary()
	if err != nil {
		s.log.Warn("queued message not persisted", "client", cl.ID, "topic", pk.TopicName, "error", err)
		return
	}
	s.change(func() {
		ids := s.inflight[cl.ID]
		if ids == nil {
			ids = make(map[uint16]struct{})
			s.inflight[cl.ID] = ids
		}
		ids[pk.PacketID] = struct{}{}
		s.enqueue(op{kind: opPutInflight, client: cl.ID, key: packetKey(pk.PacketID), val: val})
	})
}

// OnQosComplete removes a stored message the client acknowledged.
func (s *store) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	s.removeInflight(cl.ID, pk.PacketID)
}

// OnQosDropped removes a stored message mochi dropped.
func (s *store) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	s.removeInflight(cl.ID, pk.PacketID)
}

func (s *store) removeInflight(client string, id uint16) {
	s.change(func() {
		ids := s.inflight[client]
		if _, ok := ids[id]; !ok {
			return // never stored: clean session, or an inbound acknowledgement
		}
		delete(ids, id)
		if len(ids) == 0 {
			delete(s.inflight, client)
		}
		s.enqueue(op{kind: opDelInflight, client: client, key: packetKey(id)})
	})
}

// messageRecord is the stored form of a message, packet id included.
func messageRecord(kind, client string, pk packets.Packet) storage.Message {
	props := pk.Properties
	return storage.Message{
		T:           kind,
		Client:      client,
		Origin:      pk.Origin,
		TopicName:   pk.TopicName,
		Payload:     pk.Payload,
		FixedHeader: pk.FixedHeader,
		Created:     pk.Created,
		PacketID:    pk.PacketID,
		Properties: storage.MessageProperties{
			PayloadFormat:          props.PayloadFormat,
			PayloadFormatFlag:      props.PayloadFormatFlag,
			MessageExpiryInterval:  props.MessageExpiryInterval,
			ContentType:            props.ContentType,
			ResponseTopic:          props.ResponseTopic,
			CorrelationData:        props.CorrelationData,
			SubscriptionIdentifier: props.SubscriptionIdentifier,
			User:                   props.User,
		},
	}
}

// StoredClients implements mqtt.Hook: the persisted sessions. mochi calls
// the Stored methods once, in Serve, before any client connects.
func (s *store) StoredClients() ([]storage.Client, error) {
	var out []storage.Client
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketClients).ForEach(func(k, v []byte) error {
			var c storage.Client
			if err := c.UnmarshalBinary(v); err != nil || c.ID != string(k) {
				s.log.Warn("skipping unreadable stored session", "client", string(k), "error", err)
				return nil
			}
			out = append(out, c)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read sessions: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range out {
		s.clients[c.ID] = struct{}{}
	}
	return out, nil
}

// forEachClientBucket calls fn for every record in parent's per-client
// buckets of known sessions, and queues the removal of orphaned buckets.
func (s *store) forEachClientBucket(parent []byte, fn func(client string, k, v []byte)) error {
	var orphans []string
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(parent).ForEachBucket(func(name []byte) error {
			client := string(name)
			s.mu.Lock()
			_, known := s.clients[client]
			s.mu.Unlock()
			if !known {
				orphans = append(orphans, client)
				return nil
			}
			return tx.Bucket(parent).Bucket(name).ForEach(func(k, v []byte) error {
				fn(client, k, v)
				return nil
			})
		})
	})
	s.change(func() {
		for _, id := range orphans {
			s.enqueue(op{kind: opDropClient, client: id, key: []byte(id)})
		}
	})
	return err
}

// StoredSubscriptions implements mqtt.Hook.
func (s *store) StoredSubscriptions() ([]storage.Subscription, error) {
	var out []storage.Subscription
	err := s.forEachClientBucket(bucketSubs, func(client string, k, v []byte) {
		var sub storage.Subscription
		if err := sub.UnmarshalBinary(v); err != nil {
			s.log.Warn("skipping unreadable stored subscription", "client", client, "filter", string(k), "error", err)
			return
		}
		sub.Client = client
		out = append(out, sub)
	})
	if err != nil {
		return nil, fmt.Errorf("read subscriptions: %w", err)
	}
	s.loaded.Subscriptions = int64(len(out))
	return out, nil
}

// StoredInflightMessages implements mqtt.Hook.
func (s *store) StoredInflightMessages() ([]storage.Message, error) {
	var out []storage.Message
	err := s.forEachClientBucket(bucketInflight, func(client string, k, v []byte) {
		var m storage.Message
		if err := m.UnmarshalBinary(v); err != nil || len(k) != 2 {
			s.log.Warn("skipping unreadable stored message", "client", client, "error", err)
			return
		}
		m.Client = client
		m.PacketID = binary.BigEndian.Uint16(k)
		out = append(out, m)
	})
	if err != nil {
		return nil, fmt.Errorf("read queued messages: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range out {
		ids := s.inflight[m.Client]
		if ids == nil {
			ids = make(map[uint16]struct{})
			s.inflight[m.Client] = ids
		}
		ids[m.PacketID] = struct{}{}
	}
	s.loaded.Inflight = int64(len(out))
	return out, nil
}

// StoredRetainedMessages implements mqtt.Hook.
func (s *store) StoredRetainedMessages() ([]storage.Message, error) {
	var out []storage.Message
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketRetained).ForEach(func(k, v []byte) error {
			var m storage.Message
			if err := m.UnmarshalBinary(v); err != nil {
				s.log.Warn("skipping unreadable retained message", "topic", string(k), "error", err)
				return nil
			}
			m.TopicName = string(k)
			out = append(out, m)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read retained messages: %w", err)
	}
	s.loaded.Retained = int64(len(out))
	return out, nil
}

// StoredSysInfo implements mqtt.Hook: the counts mochi keeps for $SYS,
// taken from what was loaded (nothing else of $SYS is persisted).
func (s *store) StoredSysInfo() (storage.SystemInfo, error) {
	return storage.SystemInfo{T: storage.SysInfoKey, ID: storage.SysInfoKey, Info: system.Info{
		Version:       mqtt.Version, // mochi ignores an Info without one
		Subscriptions: s.loaded.Subscriptions,
		Inflight:      s.loaded.Inflight,
		Retained:      s.loaded.Retained,
	}}, nil
}
