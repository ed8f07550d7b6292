package broker

import (
	"bytes"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// ClientInfo describes a client to an Authorizer.
type ClientInfo struct {
	ID       string // MQTT client identifier (an agent's host_id)
	Username string // CONNECT username, "" if none
	Remote   string // remote address, host:port
	Listener string // "tcp" or "ws"
}

// Authorizer decides which clients may connect and which topics they may
// use. It is the seam for broker authentication and ACLs. Methods run on
// connection goroutines (Allow once per subscription and once per delivered
// message): they must be fast and safe for concurrent use.
type Authorizer interface {
	// Authenticate reports whether a client presenting password (nil if
	// none) may connect. A refused MQTT 3.1.1 client gets CONNACK code 4
	// (bad user name or password).
	Authenticate(c ClientInfo, password []byte) bool
	// Allow reports whether the client may publish to topic (write true),
	// or subscribe to the filter topic and receive messages published to
	// topic (write false). A refused subscription gets SUBACK 0x80; a
	// refused QoS 0 publish is dropped and a refused QoS 1/2 publish from
	// an MQTT 3.1.1 client disconnects it (mochi's behaviour); a refused
	// delivery is skipped.
	Allow(c ClientInfo, topic string, write bool) bool
}

// AllowAll is the development Authorizer: every client may connect and use
// every topic.
type AllowAll struct{}

// Authenticate implements Authorizer: always true.
func (AllowAll) Authenticate(ClientInfo, []byte) bool { return true }

// Allow implements Authorizer: always true.
func (AllowAll) Allow(ClientInfo, string, bool) bool { return true }

// authHook adapts an Authorizer to mochi's hooks.
type authHook struct {
	mqtt.HookBase
	auth Authorizer
}

func (h *authHook) ID() string { return "mqagent-auth" }

func (h *authHook) Provides(b byte) bool {
	return bytes.IndexByte([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, b) >= 0
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	return h.auth.Authenticate(clientInfo(cl), pk.Connect.Password)
}

func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	return h.auth.Allow(clientInfo(cl), topic, write)
}

func clientInfo(cl *mqtt.Client) ClientInfo {
	return ClientInfo{
		ID:       cl.ID,
		Username: string(cl.Properties.Username),
		Remote:   cl.Net.Remote,
		Listener: cl.Net.Listener,
	}
}
