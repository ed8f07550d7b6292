// Package cluster runs the real mqagent binary against a real clustered
// broker: a 3-node nats-server cluster with MQTT and JetStream, started
// on loopback ports from the configurations shipped in
// broker-config/nats (only ports and paths rewritten). It checks that
// agents spread over the nodes all answer a broadcast, and that an agent
// whose node is killed fails over to another node without losing a
// command queued for it meanwhile, or running one twice.
//
// The tests skip without nats-server (PATH or /usr/sbin), except when the
// environment variable CI is "true", where they fail.
package cluster
