#!/usr/bin/env bash
# Regenerates test/RESULTS.md: every measured figure of the project, each
# with the command that produced it and the machine it ran on.
#
#   test/results.sh                 # every section (about 2 hours)
#   test/results.sh fanout storm    # only these sections; the others keep
#                                   # their last figures
#   task results -- soak            # the same through the Taskfile
#   test/results.sh assemble        # only rebuild RESULTS.md
#
# Each section's output is kept in test/results/SECTION.md (with the date,
# the machine and the command); RESULTS.md is assembled from them. A
# section that fails keeps its previous file and makes the script fail.
#
# Sections (in RESULTS.md's order):
#   agent      one agent: ping/exec round trip, throughput, idle RSS,
#              telemetry footprint (~6 min)
#   dashboard  the live dashboard with 10,000 hosts in headless Chromium (~1 min)
#   fanout     signed ping to 1k/5k/10k simulated hosts vs raw echo (~6 min)
#   moonshot   50,000 simulated hosts over bridged Mosquittos (~10 min)
#   storm      10,000 hosts reconnecting after broker restarts (~3 min)
#   faults     broker restart / kill -9, agent kill -9, partition, slow broker (~3 min)
#   cluster    3-node NATS cluster failover with real agents, 5 runs (~3 min)
#   soak       30 minutes of metrics and commands against one agent
#   fuzz       the network-facing decoders, 10 minutes each (40 min)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="${PATH}:/usr/sbin:/sbin"

all=(agent dashboard fanout moonshot storm faults cluster soak fuzz)
if [[ "${1:-}" == assemble ]]; then
	sel=() # only rebuild RESULTS.md from test/results/
elif (($#)); then
	sel=("$@")
else
	sel=("${all[@]}")
fi
dir=test/results
mkdir -p "$dir"

machine() {
	local cpu mem
	cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
	mem="$(awk '/^MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
	echo "$(nproc) CPUs (${cpu:-unknown}), $mem, $(uname -sr), $(go version | cut -d' ' -f3), $({ mosquitto -h 2>/dev/null || true; } | head -n 1 | sed 's/ is an MQTT.*//')"
}

# bench_table FILE: one row per benchmark metric of `go test -bench` output.
bench_table() {
	echo "| benchmark | value | unit |"
	echo "|---|---|---|"
	awk '/^Benchmark/ {
		name = $1; sub(/-[0-9]+$/, "", name)
		for (i = 3; i < NF; i += 2) if ($(i+1) != "ns/op" || NF == 4) printf "| %s | %s | %s |\n", name, $i, $(i+1)
	}' "$1"
}

# test_logs FILE: the figures a verbose test run logged, one bullet per
# line, under the test's name.
test_logs() {
	awk '/^=== (RUN|CONT)/ { test = $3; next }
		/^[[:space:]]+[A-Za-z0-9_]+_test\.go:[0-9]+: / {
			line = $0; sub(/^[[:space:]]+[A-Za-z0-9_]+_test\.go:[0-9]+: /, "", line)
			printf "- **%s**: %s\n", test, line
		}
		/^--- (PASS|FAIL|SKIP)/ { printf "- %s %s %s\n", $2, $3, $4 }' "$1"
}

# rows FILE: the markdown table rows and bullets a script printed.
rows() { grep -E '^(\||- )' "$1"; }

# measure TITLE FORMAT CMD DESCRIPTION: a section's markdown on stdout:
# its title, the command and what it measures, then the command's output
# (kept in $log, a scratch file) through FORMAT (bench_table, test_logs or
# rows).
measure() {
	local title="$1" format="$2" cmd="$3" desc="$4"
	echo "## $title"
	echo
	echo "\`$cmd\` — $desc"
	echo
	eval "$cmd" >"$log" 2>&1 || return 1
	"$format" "$log"
}

section_agent() {
	measure "One agent: latency, throughput, footprint" bench_table \
		"go test -run '^\$' -bench 'PingRoundTrip|ExecTrueRoundTrip|PingThroughput|IdleRSS|TelemetryFootprint' -timeout 30m ./test/bench" \
		"round trips are operator → Mosquitto → agent → operator with the raw MQTT round trip of the same run; the footprint is the agent with metrics every 10 s, after 150 s of settling, over 60 s."
}

section_dashboard() {
	measure "The dashboard with 10,000 hosts" bench_table \
		"go test -run '^\$' -bench Dashboard10k -benchtime 1x -timeout 10m ./test/bench" \
		"headless Chromium; latency is from a status message to the page's DOM (docs/dashboard.md)."
}

section_fanout() {
	measure "Fan-out: a signed ping to 1,000 / 5,000 / 10,000 hosts through one Mosquitto" rows \
		"test/bench/fanout.sh" \
		"method and what a simulated host shares in docs/scale.md. Times from the publish; medians of 5 rounds after a warm-up."
}

section_moonshot() {
	measure "Moonshot: 50,000 hosts over a clustered broker" rows \
		"CLUSTER=50000 CLUSTER_PHASES=raw,agent1 test/bench/fanout.sh none" \
		"a root Mosquitto and 3 bridged leaves, 3 simulator processes, the operator on the root (docs/scale.md). Choria's published figure: ~16 s for an RPC to 50,000 nodes."
}

section_storm() {
	measure "Reconnect storm: 10,000 hosts, broker restarted" test_logs \
		"MQAGENT_SWARM_BIG=1 go test -count=1 -run TestReconnectStorm -v -timeout 30m ./test/swarm" \
		"time from the broker accepting connections again to each host's retained status online with a new session."
}

section_faults() {
	measure "Faults: broker restart and kill -9, agent kill -9, partition, slow broker" test_logs \
		"MQAGENT_FAULT_LONG=1 go test -count=1 -race -p 1 -v -timeout 20m ./test/fault" \
		"what each test proves: docs/faults.md."
}

section_cluster() {
	measure "A 3-node NATS cluster: failover" test_logs \
		"go test -count=5 -race -v -timeout 15m ./test/cluster" \
		"real nats-server nodes and agents on loopback (docs/cluster.md)."
}

section_soak() {
	measure "Soak: 30 minutes of metrics and commands against one agent" rows \
		"DURATION=${SOAK_DURATION:-30m} test/bench/soak.sh" \
		"docs/soak.md."
}

section_fuzz() {
	measure "Fuzzing the decoders exposed to the network" rows \
		"FUZZTIME=${FUZZTIME:-10m} test/fuzz/fuzz.sh" \
		"one fuzzing worker per target, one target at a time; no crash means no panic and every property the fuzz target checks held (see each target's doc comment)."
}

# headline: the key figures, read back from the section files (a missing
# section is left out).
headline() {
	local f
	f="$dir/fanout.md"
	if [[ -f "$f" ]]; then
		awk -F'|' '$2 ~ /^ *10000 *$/ { gsub(/ /, "", $3); all[$3] = $8; x[$3] = $9; kb[$3] = $13; gc[$3] = $15 }
			END { if ("raw" in all) printf "- Signed ping to 10,000 simulated hosts through one Mosquitto: 100%% of results in **%s ms** (each command verified once per process; %s ms with every host verifying) against **%s ms** for raw echo clients: **%s×** (goal 1.5×); simulator memory %s kB per connected host, %s kB after the rounds and a GC (goal 60 kB).\n", all["agent1"]+0, all["agent"]+0, all["raw"]+0, x["agent1"]+0, kb["agent1"]+0, gc["agent1"]+0 }' "$f"
	fi
	f="$dir/moonshot.md"
	if [[ -f "$f" ]]; then
		awk -F'|' '$2 ~ /^ *50000 *$/ { gsub(/ /, "", $3); all[$3] = $8 }
			END { if ("agent1" in all) printf "- **50,000 simulated hosts** over 4 bridged Mosquittos: 100%% of results in **%.1f s** (raw echo %.1f s; Choria: ~16 s).\n", all["agent1"]/1000, all["raw"]/1000 }' "$f"
	fi
	f="$dir/storm.md"
	if [[ -f "$f" ]]; then
		awk '/back online after the broker/ { n++; sub(/.*100% /, ""); v = $0; sub(/s$/, "", v); if (v + 0 > max) max = v + 0 }
			END { if (n) printf "- Reconnect storm, 10,000 hosts, %d broker restarts: every host back online within **%.1f s** of the broker, none left offline.\n", n, max }' "$f"
	fi
	f="$dir/cluster.md"
	if [[ -f "$f" ]]; then
		sed -nE 's/.*failover: .*all final after ([0-9.]+)(m?s).*/\1 \2/p' "$f" |
			awk '{ print ($2 == "ms" ? $1 / 1000 : $1) }' | sort -n |
			awk '{ t[++n] = $1 } END { if (n) printf "- 3-node NATS cluster, the agent'"'"'s node killed -9: the agent fails over and every command queued meanwhile runs once; all final after %.1f s (median of %d runs; min %.1f s, max %.1f s).\n", t[int((n+1)/2)], n, t[1], t[n] }'
	fi
	f="$dir/soak.md"
	if [[ -f "$f" ]]; then
		awk -F'|' '{ k = $2; gsub(/ /, "", k); v[k] = $3 + 0 }
			END { if ("commands" in v) printf "- Soak, one agent, 30 minutes at 10 messages/s (%d commands, %d duplicates, %d malformed; every command one final result, none run twice): goroutines %d → %d, file descriptors %d → %d, anonymous memory %.2f → %.2f MiB (%+.2f MiB/h), CPU %.1f%% of a core.\n", v["commands"], v["duplicates"], v["malformed"], v["goroutines_start"], v["goroutines_end"], v["fds_start"], v["fds_end"], v["anon_start_MiB"], v["anon_end_MiB"], v["anon_kB/h"] / 1024, v["cpu_%"] }' "$f"
	fi
	f="$dir/fuzz.md"
	if [[ -f "$f" ]]; then
		awk -F'|' '/^\| `Fuzz/ { n++; if ($8 !~ /no failure/) bad++; t = $5; gsub(/ /, "", t) }
			END { if (n) printf "- Fuzzing: %d network-facing decoders, %s each: %s.\n", n, t, bad ? bad " FAILED" : "no crash" }' "$f"
	fi
	f="$dir/agent.md"
	if [[ -f "$f" ]]; then
		awk -F'|' '{ gsub(/ /, "", $3); gsub(/ /, "", $4); v[$4] = $3 }
			END { if ("ping_p50_ms" in v) printf "- One agent: ping round trip p50 %s ms (raw MQTT %s ms), %s commands/s; RSS %s MiB with metrics every 10 s.\n", v["ping_p50_ms"], v["raw_p50_ms"], v["cmds/s"], v["rss_MiB"] }' "$f"
	fi
}

status=0
for s in "${sel[@]+"${sel[@]}"}"; do
	if ! declare -F "section_$s" >/dev/null; then
		echo "unknown section $s (want: ${all[*]})" >&2
		exit 2
	fi
	log="$(mktemp "/tmp/mqagent-results-$s-XXXXXX.log")"
	echo "== $s (log: $log)" >&2
	tmp="$dir/.$s.md.tmp"
	if { "section_$s"; echo; echo "_Measured $(date -u +%Y-%m-%dT%H:%MZ) on $(machine)._"; } >"$tmp"; then
		mv "$tmp" "$dir/$s.md"
	else
		rm -f "$tmp"
		echo "section $s failed; its previous figures are kept. Log: $log" >&2
		tail -n 40 "$log" >&2
		status=1
	fi
done

{
	echo "# Measured results"
	echo
	echo "Generated by \`test/results.sh\` (\`task results\`; \`task results -- SECTION…\` re-measures some sections and keeps the others). Each section says the command that produced it and the machine and date it ran on; the methods are in docs/scale.md, docs/faults.md, docs/cluster.md, docs/soak.md and docs/telemetry.md. Everything runs on one machine over loopback: the broker(s), the agents or simulated hosts and the operator share its cores."
	echo
	echo "## Headline"
	echo
	headline
	for s in "${all[@]}"; do
		echo
		if [[ -f "$dir/$s.md" ]]; then
			cat "$dir/$s.md"
		else
			echo "## $s"
			echo
			echo "Not measured yet: \`test/results.sh $s\`."
		fi
	done
} >test/RESULTS.md
echo "wrote test/RESULTS.md" >&2
exit "$status"
