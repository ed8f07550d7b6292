package client

import (
	"context"
	"slices"
	"sync"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Message is an MQTT message received by Messages.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// Messages subscribes to filters (MQTT topic filters, e.g. the audit
// topic of every host: Topics().Audit("+")) and delivers what arrives, in
// order, until ctx ends; the channel is then closed and the subscriptions
// ended. Messages wait in memory while the caller is not reading. A filter
// that another subscription of this client uses already (the fleet view's,
// a Run's) must not be given: the broker connection has one handler per
// filter.
func (c *Client) Messages(ctx context.Context, filters ...string) (<-chan Message, error) {
	var (
		mu    sync.Mutex
		queue []Message
	)
	ready := make(chan struct{}, 1)
	handler := func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		queue = append(queue, Message{Topic: m.Topic(), Payload: slices.Clone(m.Payload()), Retained: m.Retained()})
		mu.Unlock()
		select {
		case ready <- struct{}{}:
		default:
		}
	}
	for i, f := range filters {
		if err := c.subscribe(f, handler); err != nil {
			for _, g := range filters[:i] {
				c.unsubscribe(g)
			}
			return nil, err
		}
	}
	out := make(chan Message, 64)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(out)
		defer func() {
			for _, f := range filters {
				c.unsubscribe(f)
			}
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.closing:
				return
			case <-ready:
			}
			mu.Lock()
			msgs := queue
			queue = nil
			mu.Unlock()
			for _, m := range msgs {
				select {
				case out <- m:
				case <-ctx.Done():
					return
				case <-c.closing:
					return
				}
			}
		}
	}()
	return out, nil
}
