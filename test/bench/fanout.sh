#!/usr/bin/env bash
# Fan-out benchmark set (docs/scale.md): a signed ping broadcast to 1,000,
# 5,000 and 10,000 simulated hosts through one Mosquitto on loopback, with
# the raw echo limit measured in the same run, then prints a table.
#
#   test/bench/fanout.sh                 # 1k, 5k, 10k (about 5 minutes)
#   test/bench/fanout.sh 1000 10000      # the sizes given
#   CLUSTER=50000 test/bench/fanout.sh   # then the moonshot: 50k hosts
#                                        # over bridged Mosquittos
#   STORM=1 test/bench/fanout.sh         # then the 10k reconnect storm
#   CLUSTER=50000 test/bench/fanout.sh none   # only the moonshot
#
# Environment: ROUNDS (measured rounds per size, default 5, after one
# warm-up), PHASES (raw,agent,agent1), OUT (directory for the raw output,
# default a new temporary one). Everything runs on 127.0.0.x; every
# process it starts is stopped when it ends or is interrupted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PATH="${PATH}:/usr/sbin:/sbin"

sizes="${*:-1000 5000 10000}"
sizes="${sizes// /,}"
out="${OUT:-$(mktemp -d /tmp/mqagent-fanout-XXXXXX)}"
mkdir -p "$out"

# Each run is a process group of its own (go test, the test binary, the
# brokers and simulators it starts): an interrupt stops the whole group.
pgid=""
cleanup() {
	if [[ -n "$pgid" ]]; then
		kill -TERM -- "-$pgid" 2>/dev/null || true
		sleep 2
		kill -KILL -- "-$pgid" 2>/dev/null || true
	fi
}
trap cleanup EXIT INT TERM

run() { # run LOGFILE ENV... -- go test args...
	local log="$1"
	shift
	setsid env "$@" >"$log" 2>&1 &
	pgid=$!
	wait "$pgid" || {
		echo "failed; see $log" >&2
		tail -n 30 "$log" >&2
		exit 1
	}
	pgid=""
}

# table LOGFILE: one row per benchmark line and fleet.
table() {
	awk '
	/^Benchmark/ {
		split($1, a, "hosts="); n = a[2]; sub(/-[0-9]+$/, "", n)
		delete v
		for (i = 5; i < NF; i += 2) v[$(i+1)] = $i
		for (f = 1; f <= 3; f++) {
			name = (f == 1 ? "raw" : (f == 2 ? "agent" : "agent1"))
			if (!((name "_all_ms") in v)) continue
			ratio = ((name "_vs_raw") in v) ? sprintf("%.2f", v[name "_vs_raw"]) : "1"
			if (name == "raw" && !("raw_all_ms" in v)) ratio = ""
			printf "| %s | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %s | %.0f | %.0f | %.1f | %.1f | %.1f | %.1f | %.1f |\n", n, name,
				v[name "_connect_ms"], v[name "_first_ms"], v[name "_p50_ms"], v[name "_p99_ms"], v[name "_all_ms"], ratio,
				v[name "_broker_cpu_ms"], v[name "_sim_cpu_ms"], v[name "_broker_MB"], v[name "_up_kB/host"], v[name "_kB/host"],
				v[name "_idle_kB/host"], v[name "_goroutines/host"]
		}
	}' "$1"
}

header() {
	echo "| hosts | fleet | connect ms | first ms | 50% ms | 99% ms | 100% ms | ×raw | broker CPU ms/round | sim CPU ms/round | broker RSS MB | sim kB/host connected | sim kB/host after rounds | sim kB/host after GC | goroutines/host |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
}

echo "machine: $(nproc) CPUs, $(uname -sr), $({ mosquitto -h 2>/dev/null || true; } | head -n 1)"
echo "raw output in $out"
if [[ "$sizes" != none ]]; then
run "$out/fanout.txt" MQAGENT_FANOUT_SIZES="$sizes" MQAGENT_FANOUT_ROUNDS="${ROUNDS:-5}" \
	MQAGENT_FANOUT_PHASES="${PHASES:-raw,agent,agent1}" \
	go test -run '^$' -bench 'Fanout$' -benchtime 1x -timeout 60m ./test/bench
echo
echo "Fan-out through one Mosquitto (median of ${ROUNDS:-5} rounds; raw = paho clients that echo,"
echo "agent = the pipeline, agent1 = the pipeline verifying each signed command once per process):"
echo
header
table "$out/fanout.txt"
fi

if [[ -n "${CLUSTER:-}" ]]; then
	run "$out/cluster.txt" MQAGENT_FANOUT_CLUSTER="$CLUSTER" MQAGENT_FANOUT_ROUNDS="${ROUNDS:-3}" \
		MQAGENT_FANOUT_PHASES="${CLUSTER_PHASES:-agent1}" \
		go test -run '^$' -bench 'FanoutCluster' -benchtime 1x -timeout 60m ./test/bench
	echo
	echo "Moonshot: $CLUSTER hosts over bridged Mosquittos (one leaf per ~17,000 hosts):"
	echo
	header
	table "$out/cluster.txt"
fi

if [[ -n "${STORM:-}" ]]; then
	run "$out/storm.txt" MQAGENT_SWARM_BIG=1 \
		go test -count=1 -run 'TestReconnectStorm' -v -timeout 30m ./test/swarm
	echo
	echo "Reconnect storm (10,000 hosts, broker restarted; time from the broker back to hosts online):"
	echo
	grep '^STORM' "$out/storm.txt" || true
fi
