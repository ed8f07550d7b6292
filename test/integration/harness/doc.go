// Package harness runs real processes for the integration tests: a
// Mosquitto or the agent's embedded broker on a free loopback port
// (TestBroker), the agent built from this module (BuildAgent, StartAgent)
// and an MQTT operator that sends commands and records results, statuses
// and audit records (Operator).
//
// It depends only on the wire contract (pkg/protocol) and paho, never on
// the agent's internals, so the tests see the agent as an operator would.
//
// Every helper is bound to a test: it registers its own cleanup (processes
// stopped, clients disconnected, temporary directories removed), bounds
// every wait, and on failure shows the logs that explain it. A package
// using the harness calls it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
//
// A typical test:
//
//	mq := harness.StartMosquitto(t)
//	bin := harness.BuildAgent(t)
//	a := harness.StartAgent(t, bin, harness.DefaultConfig("web-01", mq.URL(), ""))
//	op := harness.NewOperator(t, mq.URL())
//	op.WatchStatus("web-01")
//	op.WaitStatus(t, "web-01", func(s protocol.Status) bool { return s.State == protocol.StatusOnline }, 10*time.Second)
//	id := op.Send(protocol.Command{Kind: protocol.KindPing, Target: "host:web-01"})
//	r := op.WaitFinal(t, id, "web-01", 10*time.Second)
//
// TLS: NewPKI makes a throwaway CA issuing server and client certificates
// (crypto/x509, files in the test's directory); WithTLS adds a TLS
// listener to StartMosquitto (TLSURL), WithTLSConfig connects an Operator
// over it, and StartMosquittoConfig runs a complete configuration of the
// test's own, such as the shipped broker-config/mosquitto/mosquitto.conf
// with its paths and ports rewritten (WriteMosquittoPasswords writes its
// password file).
//
// Mosquitto missing: tests skip, or fail when CI=true (RequireMosquitto).
package harness
