package harness

import (
	"runtime"
	"strconv"
)

// TLSListener is a TLS listener that WithTLS adds to a test Mosquitto, on
// another free loopback port. The fields are the Mosquitto listener
// options of the same names (see mosquitto.conf(5)).
type TLSListener struct {
	// CertFile and KeyFile are the broker's certificate (e.g. from
	// PKI.Server("127.0.0.1")). Required.
	CertFile string
	KeyFile  string
	// CAFile verifies client certificates; required with
	// RequireCertificate.
	CAFile string
	// RequireCertificate refuses clients without a certificate from CAFile.
	RequireCertificate bool
	// UseIdentityAsUsername makes the client certificate's CN the
	// username (the password file is then not used on this listener).
	UseIdentityAsUsername bool
	// UseUsernameAsClientID replaces the client id by the username.
	UseUsernameAsClientID bool
	// Websocket makes it a websocket listener (wss://…/mqtt).
	Websocket bool
}

// WithTLS adds a TLS listener to the Mosquitto StartMosquitto starts; give
// it several times for several listeners, reached with TLSURL(i) in the
// same order. The broker's other settings (anonymous clients allowed, the
// plain listener of URL) stay: add "allow_anonymous false", an acl_file…
// with WithMosquittoConfig. EmbeddedBroker ignores it.
func WithTLS(l TLSListener) BrokerOption {
	return func(o *brokerOptions) { o.tls = append(o.tls, l) }
}

// TLSURL is the address of the i-th WithTLS listener:
// ssl://127.0.0.1:PORT, or wss://127.0.0.1:PORT/mqtt for a websocket one.
// It fails the test when there is no such listener.
func (m *Mosquitto) TLSURL(i int) string {
	m.t.Helper()
	if i < 0 || i >= len(m.tls) {
		m.t.Fatalf("mosquitto: no TLS listener %d (%d added with WithTLS)", i, len(m.tls))
	}
	if m.tls[i].Websocket {
		return "wss://" + hostPort(m.tlsPorts[i]) + "/mqtt"
	}
	return "ssl://" + hostPort(m.tlsPorts[i])
}

// Ports are the ports given to the configuration of StartMosquittoConfig
// (nil for StartMosquitto).
func (m *Mosquitto) Ports() []int { return append([]int(nil), m.ports...) }

// conf writes the listener's lines.
func (l TLSListener) conf(w func(format string, args ...any), port int) {
	if l.Websocket {
		// See mosquittoConf: a websocket listener honours an interface
		// name, not an address.
		host := "127.0.0.1"
		if runtime.GOOS == "linux" {
			host = "lo"
		}
		w("listener %d %s", port, host)
		w("protocol websockets")
	} else {
		w("listener %d 127.0.0.1", port)
		w("protocol mqtt")
	}
	w("certfile %s", l.CertFile)
	w("keyfile %s", l.KeyFile)
	if l.CAFile != "" {
		w("cafile %s", l.CAFile)
	}
	w("tls_version tlsv1.2")
	w("require_certificate %s", strconv.FormatBool(l.RequireCertificate))
	w("use_identity_as_username %s", strconv.FormatBool(l.UseIdentityAsUsername))
	w("use_username_as_clientid %s", strconv.FormatBool(l.UseUsernameAsClientID))
}
