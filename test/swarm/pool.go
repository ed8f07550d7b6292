package swarm

import (
	"context"
	"sync"

	"github.com/mqagent/mqagent/pkg/transport"
)

// pool runs the pipelines of every host of the process on a few shared
// goroutines, where the agent has an intake goroutine and workers per
// process: host h always goes to the same shard, so its messages are
// handled one at a time, in the order received (as the agent's single
// intake goroutine handles them).
type pool struct {
	shards []chan work
}

type work struct {
	h *agentHost
	m transport.Message
}

// shardDepth is how many messages may wait per shard; beyond it the
// receiving client waits (backpressure, as the agent's full intake).
const shardDepth = 1024

func newPool(n int) *pool {
	p := &pool{shards: make([]chan work, n)}
	for i := range p.shards {
		p.shards[i] = make(chan work, shardDepth)
	}
	return p
}

// run works until ctx ends.
func (p *pool) run(ctx context.Context, wg *sync.WaitGroup) {
	for _, ch := range p.shards {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case w := <-ch:
					w.h.process(w.m)
				}
			}
		})
	}
}

// submit queues m for h; it waits while the shard is full, until ctx ends
// (the message then stays unacknowledged and the broker delivers it again).
func (p *pool) submit(ctx context.Context, shard int, h *agentHost, m transport.Message) {
	h.busy.Add(1)
	select {
	case p.shards[shard%len(p.shards)] <- work{h, m}:
	case <-ctx.Done():
		h.busy.Add(-1)
	}
}
