// Command brokenagent stands in for a faulty agent release in the update
// tests. It answers `version` like the agent (so it passes the agent's
// check before the swap), but `run` fails: with a version ending in
// "-exits" it exits at once with status 1; otherwise it runs without ever
// connecting, until SIGTERM or two minutes.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// version is set with -ldflags "-X main.version=…".
var version = "0.0.0"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Println(version)
		return
	}
	if strings.HasSuffix(version, "-exits") {
		fmt.Fprintln(os.Stderr, "brokenagent: failing at start")
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "brokenagent: running, never connecting")
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, os.Interrupt)
	select {
	case <-c:
	case <-time.After(2 * time.Minute):
	}
}
