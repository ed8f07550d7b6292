package swarm

import (
	"context"
	"net"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// EchoTopic is where a raw host echoes a broadcast: prefix/hosts/ID/echo.
func EchoTopic(prefix, host string) string { return prefix + "/hosts/" + host + "/echo" }

// rawHost is a plain paho client with the agent's session settings
// (client id, clean session false, QoS 1) that publishes every broadcast
// it receives back, unchanged, at QoS 1: the raw limit of the broker and
// the client library, without the pipeline.
type rawHost struct {
	hostID  string
	cfg     *Config
	sh      *shared
	urls    []string
	dialer  *net.Dialer
	client  mqtt.Client
	firstUp chan struct{}
	done    chan struct{}
	stopMu  sync.Mutex
	cancel  context.CancelFunc
	stopped bool
}

func newRawHost(cfg *Config, sh *shared, id string, urls []string, dialer *net.Dialer) *rawHost {
	return &rawHost{hostID: id, cfg: cfg, sh: sh, urls: urls, dialer: dialer, firstUp: make(chan struct{})}
}

func (h *rawHost) id() string          { return h.hostID }
func (h *rawHost) up() <-chan struct{} { return h.firstUp }
func (h *rawHost) connected() bool {
	h.stopMu.Lock()
	c := h.client
	h.stopMu.Unlock()
	return c != nil && c.IsConnectionOpen()
}

func (h *rawHost) start(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	h.stopMu.Lock()
	h.cancel = cancel
	h.done = make(chan struct{})
	h.stopMu.Unlock()
	go func() {
		defer close(h.done)
		echo := EchoTopic(h.sh.topics.Prefix, h.hostID)
		opts := mqtt.NewClientOptions().
			SetClientID(h.hostID).
			SetCleanSession(false).
			SetProtocolVersion(4).
			SetAutoReconnect(true).
			SetKeepAlive(h.cfg.KeepAlive).
			SetConnectTimeout(h.cfg.ConnectTimeout).
			SetWriteTimeout(h.cfg.WriteTimeout).
			SetOnConnectHandler(func(c mqtt.Client) {
				c.Subscribe(h.sh.topics.AllCmd(), 1, nil) // handled by the default handler
			}).
			SetDefaultPublishHandler(func(c mqtt.Client, m mqtt.Message) {
				c.Publish(echo, 1, false, m.Payload())
			})
		for _, u := range h.urls {
			opts.AddBroker(u)
		}
		if h.dialer != nil {
			d := *h.dialer
			d.Timeout = h.cfg.ConnectTimeout
			opts.SetDialer(&d)
		}
		for attempt := 0; ctx.Err() == nil; attempt++ {
			c := mqtt.NewClient(opts)
			tok := c.Connect()
			if tok.WaitTimeout(h.cfg.ConnectTimeout+time.Second) && tok.Error() == nil {
				st := c.Subscribe(h.sh.topics.AllCmd(), 1, nil)
				if st.WaitTimeout(h.cfg.WriteTimeout) && st.Error() == nil {
					h.stopMu.Lock()
					h.client = c
					h.stopMu.Unlock()
					close(h.firstUp)
					return
				}
			}
			c.Disconnect(0)
			if !sleep(ctx, jitter(h.cfg.ReconnectMin<<min(attempt, 5))) {
				return
			}
		}
	}()
}

func (h *rawHost) stop() {
	h.stopMu.Lock()
	if h.stopped || h.cancel == nil {
		h.stopped = true
		h.stopMu.Unlock()
		return
	}
	h.stopped = true
	h.cancel()
	h.stopMu.Unlock()
	<-h.done
	h.stopMu.Lock()
	c := h.client
	h.stopMu.Unlock()
	if c != nil {
		c.Disconnect(250)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
