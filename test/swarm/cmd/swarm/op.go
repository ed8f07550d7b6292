package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/test/swarm"
)

// keygen prints a new operator key: the base64 seed (for op -seed) and
// the base64 public key (for the simulator's -key op=PUB).
func keygen(stdout io.Writer) error {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s %s\n", base64.StdEncoding.EncodeToString(priv.Seed()), base64.StdEncoding.EncodeToString(pub))
	return err
}

// runOp is the operator side: it broadcasts signed pings (agent hosts) or
// echo payloads (raw hosts) and prints one JSON line per round, then a
// summary with the medians of the rounds after the first (warm-up).
func runOp(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("swarm op", flag.ContinueOnError)
	fs.SetOutput(stderr)
	broker := fs.String("broker", "", "broker URL")
	mode := fs.String("mode", "agent", "agent or raw")
	hosts := fs.Int("hosts", 0, "number of hosts expected")
	first := fs.Int("first", 0, "index of the first host")
	idPrefix := fs.String("id-prefix", "sim-", "host id prefix")
	prefix := fs.String("prefix", protocol.DefaultPrefix, "topic prefix")
	seed := fs.String("seed", "", "base64 ed25519 seed of key \"op\" (swarm keygen)")
	rounds := fs.Int("rounds", 5, "measured rounds (after one warm-up round)")
	timeout := fs.Duration("timeout", 2*time.Minute, "per round")
	pause := fs.Duration("pause", time.Second, "between rounds")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *broker == "" || *hosts <= 0 {
		return errors.New("op: -broker and -hosts are required")
	}
	var key ed25519.PrivateKey
	if *seed != "" {
		b, err := base64.StdEncoding.DecodeString(*seed)
		if err != nil || len(b) != ed25519.SeedSize {
			return errors.New("op: -seed is not a base64 ed25519 seed")
		}
		key = ed25519.NewKeyFromSeed(b)
	}
	op, err := swarm.NewOperator(swarm.OperatorOptions{URL: *broker, Prefix: *prefix, Kid: "op", Key: key})
	if err != nil {
		return err
	}
	defer op.Close()
	ids := swarm.HostIDs(*idPrefix, *first, *hosts)
	enc := json.NewEncoder(stdout)
	var all, p50, p99, firsts []time.Duration
	complete := true
	for r := range *rounds + 1 {
		cmd, err := swarm.Command(protocol.KindPing, nil)
		if err != nil {
			return err
		}
		var res swarm.RoundResult
		if *mode == string(swarm.ModeRaw) {
			payload, err := op.Encode(cmd)
			if err != nil {
				return err
			}
			res, err = op.Echo(payload, ids, *timeout)
			if err != nil {
				return err
			}
		} else if res, err = op.Run(cmd, ids, *timeout); err != nil {
			return err
		}
		_ = enc.Encode(map[string]any{"round": r, "result": res.String(), "complete": res.Complete(),
			"first_ms": res.First.Milliseconds(), "p50_ms": res.P50.Milliseconds(), "p99_ms": res.P99.Milliseconds(), "all_ms": res.All.Milliseconds(), "missing": res.Missing})
		complete = complete && res.Complete()
		if r > 0 {
			firsts, p50, p99, all = append(firsts, res.First), append(p50, res.P50), append(p99, res.P99), append(all, res.All)
		}
		time.Sleep(*pause)
	}
	_ = enc.Encode(map[string]any{"summary": true, "complete": complete, "hosts": *hosts,
		"first_ms": med(firsts), "p50_ms": med(p50), "p99_ms": med(p99), "all_ms": med(all)})
	if !complete {
		return errors.New("op: a round did not get a succeeded result from every host")
	}
	return nil
}

func med(d []time.Duration) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[len(s)/2].Microseconds()) / 1000
}
