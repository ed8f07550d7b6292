//go:build !windows

package service

import "context"

// Run runs the agent function fn. Unix service managers only need a
// process that stops gracefully on SIGTERM, which fn handles, so Run calls
// fn directly; on Windows it speaks the Service Control Manager protocol.
func Run(ctx context.Context, fn func(context.Context) error) error { return fn(ctx) }
