//go:build !linux

package swarm

import "syscall"

// sourceControl is nil where IP_BIND_ADDRESS_NO_PORT does not exist.
var sourceControl func(network, address string, c syscall.RawConn) error
