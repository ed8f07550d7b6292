// Command swarm runs a simulated fleet of mqagent hosts (package
// test/swarm) in one process, for the scale benchmarks. It is a test tool,
// not part of the agent.
//
//	swarm -hosts 10000 -brokers tcp://127.0.0.1:1883 -data-dir /tmp/sw \
//	      -key op=BASE64PUB -require-signed
//
// It prints JSON lines on stdout: {"event":"up",...} once every host has
// connected, and a stats line for every "stats" (or "gc": collect garbage
// and return it to the OS first) read on stdin; "heap PATH" and
// "goroutine PATH" write pprof profiles, "cpu PATH" … "cpustop" a CPU
// profile. It stops gracefully on
// SIGINT/SIGTERM or when stdin closes (its parent is gone), within
// seconds.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mqagent/mqagent/pkg/config"
	"github.com/mqagent/mqagent/pkg/security"
	"github.com/mqagent/mqagent/test/swarm"
)

func main() {
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == "op":
		err = runOp(os.Args[2:], os.Stdout, os.Stderr)
	case len(os.Args) > 1 && os.Args[1] == "keygen":
		err = keygen(os.Stdout)
	default:
		err = run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "swarm:", err)
		os.Exit(1)
	}
}

type keyFlags []security.Key

// String implements flag.Value.
func (k *keyFlags) String() string { return fmt.Sprint(len(*k), " keys") }

// Set adds a key given as KID=BASE64.
func (k *keyFlags) Set(v string) error {
	id, b64, ok := strings.Cut(v, "=")
	if !ok || id == "" {
		return errors.New("want KID=BASE64PUBLICKEY")
	}
	pub, err := config.ParseKey(b64)
	if err != nil {
		return err
	}
	*k = append(*k, security.Key{ID: id, Public: pub})
	return nil
}

func list(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("swarm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg swarm.Config
	var keys keyFlags
	mode := fs.String("mode", "agent", "agent (the pipeline) or raw (paho clients that echo)")
	brokers := fs.String("brokers", "", "comma-separated broker URLs (host i starts with the i-th)")
	sources := fs.String("source-addrs", "", "comma-separated local IPs to dial from (127.0.0.2,127.0.0.3)")
	groups := fs.String("groups", "", "comma-separated groups of every host")
	journal := fs.String("journal", "memory", "memory, or bolt (a bbolt file per host, no fsync)")
	upTimeout := fs.Duration("up-timeout", 5*time.Minute, "give up when not every host connected by then")
	gcPercent := fs.Int("gc-percent", 0, "GOGC for the process (0: the runtime's default)")
	logLevel := fs.String("log-level", "warn", "log level of the simulator (stderr)")
	hostLog := fs.Bool("host-log", false, "log the hosts' pipelines too (stderr)")
	fs.IntVar(&cfg.Hosts, "hosts", 100, "number of simulated hosts")
	fs.IntVar(&cfg.First, "first", 0, "index of the first host")
	fs.StringVar(&cfg.IDPrefix, "id-prefix", "sim-", "host id prefix")
	fs.StringVar(&cfg.TopicPrefix, "prefix", "", "topic prefix (default mqagent)")
	fs.Var(&keys, "key", "trusted key KID=BASE64 (repeatable)")
	fs.BoolVar(&cfg.RequireSigned, "require-signed", false, "refuse unsigned commands")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "data directory (audit log, bolt journals)")
	fs.IntVar(&cfg.MaxOutbox, "max-outbox", 0, "outbox limit per host, messages")
	fs.DurationVar(&cfg.Metrics, "metrics", 0, "metrics interval per host (0: none)")
	fs.DurationVar(&cfg.KeepAlive, "keepalive", 0, "MQTT keepalive (default 30s)")
	fs.DurationVar(&cfg.ReconnectMin, "reconnect-min", 0, "reconnect backoff minimum (default 1s)")
	fs.DurationVar(&cfg.ReconnectMax, "reconnect-max", 0, "reconnect backoff maximum (default 60s)")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", 0, "connect timeout (default 10s)")
	fs.BoolVar(&cfg.VerifyOnce, "verify-once", false, "verify each distinct signed command once per process, not once per host")
	fs.IntVar(&cfg.Workers, "workers", 0, "goroutines running the pipelines (default 4 per CPU)")
	fs.IntVar(&cfg.Flushers, "flushers", 0, "goroutines publishing the outboxes (default min(hosts, 1024))")
	fs.IntVar(&cfg.ConnectParallel, "connect-parallel", 0, "connects in flight at start (default 64)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	if *gcPercent > 0 {
		debug.SetGCPercent(*gcPercent)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg.Mode, cfg.Journal, cfg.Keys = swarm.Mode(*mode), swarm.JournalKind(*journal), keys
	cfg.Brokers, cfg.SourceAddrs, cfg.Groups = list(*brokers), list(*sources), list(*groups)
	cfg.Logger = log
	if *hostLog {
		cfg.HostLogger = log
	}

	var outMu sync.Mutex
	emit := func(event string, extra map[string]any, st swarm.Stats) {
		m := map[string]any{"event": event, "stats": st, "t": time.Now().UTC().Format(time.RFC3339Nano)}
		for k, v := range extra {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(stdout, "%s\n", b)
	}

	s, err := swarm.Start(cfg)
	if err != nil {
		return err
	}
	defer s.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// stdin: commands; EOF (the parent is gone) stops the swarm.
	go func() {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			switch cmd := strings.TrimSpace(sc.Text()); cmd {
			case "stats":
				emit("stats", nil, s.Stats())
			case "gc":
				runtime.GC()
				debug.FreeOSMemory()
				emit("stats", map[string]any{"gc": true}, s.Stats())
			case "heap", "goroutine":
				log.Warn("usage: heap PATH, goroutine PATH")
			case "stop":
				stop()
				return
			case "":
			default:
				if path, ok := strings.CutPrefix(cmd, "cpu "); ok {
					if err := startCPU(path); err != nil {
						log.Warn("cpu profile", "err", err)
					}
					continue
				}
				if cmd == "cpustop" {
					pprof.StopCPUProfile()
					emit("profile", nil, swarm.Stats{})
					continue
				}
				if what, path, ok := strings.Cut(cmd, " "); ok && (what == "heap" || what == "goroutine") {
					if err := writeProfile(what, path); err != nil {
						log.Warn("profile", "err", err)
					}
					emit("profile", map[string]any{"path": path}, swarm.Stats{})
					continue
				}
				log.Warn("unknown command on stdin", "cmd", cmd)
			}
		}
		stop()
	}()
	go func() {
		took, err := s.WaitUp(*upTimeout)
		if err != nil {
			emit("error", map[string]any{"error": err.Error()}, s.Stats())
			return
		}
		emit("up", map[string]any{"ms": took.Milliseconds()}, s.Stats())
	}()
	<-ctx.Done()
	log.Info("stopping")
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		return errors.New("hosts did not stop within 20s")
	}
	emit("stopped", nil, swarm.Stats{})
	return nil
}

// writeProfile writes a pprof profile (heap, goroutine) to path.
func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if name == "heap" {
		runtime.GC()
	}
	err = pprof.Lookup(name).WriteTo(f, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// startCPU starts a CPU profile into path ("cpustop" ends it).
func startCPU(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	return nil
}
