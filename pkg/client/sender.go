package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/security"
)

// Sender sends one command (one id) to hosts one after the other, as a
// rollout does, and follows every host's results through one
// subscription. Each copy is issued (issued_at) when it is sent, so that a
// slow rollout never sends a command already past the agents' default
// time to live; set Command.ExpiresAt to bound the whole rollout instead. Sending the same command to a host again is safe: the
// agent runs an id once and re-publishes the stored final result (this is
// how an interrupted rollout resumes).
type Sender struct {
	// Command is the command as sent, Target excepted (each host's copy
	// names that host).
	Command protocol.Command

	c      *Client
	signer *Signer
	filter string

	mu     sync.Mutex
	sentTo map[string]bool
	finals map[string]bool
	states map[string]string
	q      eventQueue
	done   chan struct{}
	once   sync.Once
	events chan Event
}

// NewSender subscribes to the results of cmd (its ID is filled in when
// empty) and returns a Sender that publishes it to hosts on demand. Events
// are delivered until ctx ends or Close; the caller must read them or
// Close.
func (c *Client) NewSender(ctx context.Context, cmd protocol.Command, signer *Signer) (*Sender, error) {
	if cmd.Kind == "" {
		return nil, errors.New("kind: required")
	}
	if cmd.ID == "" {
		cmd.ID = NewID()
	}
	if !protocol.ValidID(cmd.ID) {
		return nil, fmt.Errorf("id: %q is not a valid command id ([A-Za-z0-9._-]{1,64})", cmd.ID)
	}
	cmd.V = protocol.Version
	if cmd.IssuedAt.IsZero() {
		cmd.IssuedAt = protocol.Now()
	}
	cmd.Target, cmd.Filter = "", nil
	s := &Sender{
		Command: cmd, c: c, signer: signer, filter: c.topics.ResultsFilter(cmd.ID),
		sentTo: map[string]bool{}, finals: map[string]bool{}, states: map[string]string{},
		q:    eventQueue{ready: make(chan struct{}, 1)},
		done: make(chan struct{}), events: make(chan Event, 64),
	}
	if err := c.subscribe(s.filter, s.handle); err != nil {
		return nil, err
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(s.events)
		defer c.unsubscribe(s.filter)
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.done:
				return
			case <-c.closing:
				return
			case <-s.q.ready:
			}
			for _, ev := range s.q.take() {
				select {
				case s.events <- ev:
				case <-ctx.Done():
					return
				case <-s.done:
					return
				case <-c.closing:
					return
				}
			}
		}
	}()
	return s, nil
}

// ID is the command id.
func (s *Sender) ID() string { return s.Command.ID }

// Send publishes the command to each host (on its own command topic,
// target host:{id}) and waits for the broker to take them.
func (s *Sender) Send(hosts ...string) error {
	toks := make([]mqtt.Token, 0, len(hosts))
	topics := make([]string, 0, len(hosts))
	for _, h := range hosts {
		if !protocol.ValidHostID(h) {
			return fmt.Errorf("host: invalid host id %q", h)
		}
		m := s.Command
		m.Target = "host:" + h
		// Issued now: a rollout may send for longer than the agents'
		// default TTL. A host that got the id before runs it only once
		// whatever the time says.
		m.IssuedAt = protocol.Now()
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		if s.signer != nil {
			if b, err = json.Marshal(security.Sign(b, s.signer.Kid, s.signer.Key)); err != nil {
				return err
			}
		}
		s.mu.Lock()
		s.sentTo[h] = true
		s.mu.Unlock()
		topic := s.c.topics.HostCmd(h)
		toks = append(toks, s.c.c.Publish(topic, 1, false, b))
		topics = append(topics, topic)
	}
	for i, t := range toks {
		if err := s.c.wait(t); err != nil {
			return fmt.Errorf("publish %s: %w", topics[i], err)
		}
	}
	return nil
}

// handle runs on paho's goroutine: decode, drop duplicates, queue.
func (s *Sender) handle(_ mqtt.Client, m mqtt.Message) {
	rest, _ := strings.CutPrefix(m.Topic(), s.c.topics.Prefix+"/hosts/")
	host, _, _ := strings.Cut(rest, "/")
	var ev Event
	if strings.HasSuffix(m.Topic(), "/out") {
		var ch protocol.Chunk
		if json.Unmarshal(m.Payload(), &ch) != nil || ch.ID != s.Command.ID || ch.Host != host {
			return
		}
		ev.Chunk = &ch
	} else {
		var r protocol.Result
		if json.Unmarshal(m.Payload(), &r) != nil || r.ID != s.Command.ID || r.Host != host {
			return
		}
		ev.Result = &r
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.sentTo[host] || s.finals[host] {
		return
	}
	if r := ev.Result; r != nil {
		if protocol.IsFinal(r.State) {
			s.finals[host] = true
		} else if s.states[host] == r.State {
			return
		} else {
			s.states[host] = r.State
		}
	}
	s.q.push(ev)
}

// Events delivers the results (state changes included) and output chunks
// of every host the command was sent to, duplicates dropped; it is closed
// when the context given to NewSender ends, or on Close.
func (s *Sender) Events() <-chan Event { return s.events }

// Close stops following results. It may be called more than once.
func (s *Sender) Close() { s.once.Do(func() { close(s.done) }) }
