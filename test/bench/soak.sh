#!/usr/bin/env bash
# Soak test (docs/soak.md): the real agent against a real Mosquitto for
# DURATION (default 30m) with metrics every second and a steady mix of
# commands, then a markdown table of the slopes (RSS, anonymous RSS,
# goroutines, descriptors per hour), start/end/max values, disk growth,
# commands and CPU.
#
#   test/bench/soak.sh                    # 30 minutes
#   DURATION=2m test/bench/soak.sh        # a quick check
#
# Environment: DURATION (a Go duration, at least 2m), RATE (messages a
# second, default 10), TTL (journal retention, security.default_ttl,
# default 2m; 1h is the production default), AGENT (an agent executable
# to soak instead of building ./agent), OUT (directory for the raw
# output and the CSV of the readings, default a new temporary one). The
# run is bounded by DURATION plus 15 minutes (build, warm-up pause,
# drain); every process it starts is stopped when it ends or is
# interrupted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PATH="${PATH}:/usr/sbin:/sbin"

duration="${DURATION:-30m}"
out="${OUT:-$(mktemp -d /tmp/mqagent-soak-XXXXXX)}"
mkdir -p "$out"

# seconds DURATION: a Go duration made of h, m and s parts, in seconds.
seconds() {
	local rest="$1" total=0
	while [[ "$rest" =~ ^([0-9]+)(h|m|s)(.*)$ ]]; do
		case "${BASH_REMATCH[2]}" in
		h) total=$((total + BASH_REMATCH[1] * 3600)) ;;
		m) total=$((total + BASH_REMATCH[1] * 60)) ;;
		s) total=$((total + BASH_REMATCH[1])) ;;
		esac
		rest="${BASH_REMATCH[3]}"
	done
	if [[ -n "$rest" || "$1" == "" ]]; then
		echo "DURATION=$1: want a duration such as 30m, 1h or 1h30m" >&2
		exit 2
	fi
	echo "$total"
}
limit=$(($(seconds "$duration") + 900))

# go test, the test binary, Mosquitto and the agent run in a process
# group of their own: an interrupt stops the whole group.
pgid=""
cleanup() {
	if [[ -n "$pgid" ]]; then
		kill -TERM -- "-$pgid" 2>/dev/null || true
		sleep 2
		kill -KILL -- "-$pgid" 2>/dev/null || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "machine: $(nproc) CPUs, $(uname -sr), $({ mosquitto -h 2>/dev/null || true; } | head -n 1), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "soak for $duration at ${RATE:-10} messages/s; raw output in $out"
status=0
setsid env MQAGENT_SOAK="$duration" MQAGENT_SOAK_CSV="$out/soak.csv" \
	${RATE:+MQAGENT_SOAK_RATE="$RATE"} ${TTL:+MQAGENT_SOAK_TTL="$TTL"} ${AGENT:+MQAGENT_SOAK_AGENT="$AGENT"} \
	go test -count=1 -run '^$' -bench '^BenchmarkSoak$' -benchtime 1x -timeout "${limit}s" ./test/bench \
	>"$out/soak.txt" 2>&1 &
pgid=$!
wait "$pgid" || status=$?
pgid=""

echo
# The benchmark logs its figures as "figures: UNIT=VALUE ..." (also when
# it failed, when go test prints no benchmark line).
grep -m1 -o 'figures: .*' "$out/soak.txt" | awk '
{
	print "| figure | value |"
	print "|---|---|"
	for (i = 2; i <= NF; i++) {
		split($i, kv, "=")
		v = kv[2] + 0
		a = v < 0 ? -v : v
		printf "| %s | %s |\n", kv[1], (v == int(v) || a >= 100 ? sprintf("%.0f", v) : sprintf("%.3g", v))
	}
}'
echo
grep -E 'soak_test.go:[0-9]+: (soak |idle after|note:)' "$out/soak.txt" | sed 's/^ *soak_test.go:[0-9]*: /- /' || true
if [[ "$status" -ne 0 ]]; then
	echo
	echo "FAILED (exit status $status); the benchmark's messages (all output: $out/soak.txt):" >&2
	# A message is a "    soak_test.go:N:" line and its more indented
	# continuation lines.
	awk '/^    soak_test\.go:/ { on = 1; print; next } /^        / { if (on) print; next } { on = 0 }' "$out/soak.txt" |
		grep -vE 'soak_test.go:[0-9]+: (soak |idle after|figures:)' | head -n 60 >&2
	exit "$status"
fi
echo
echo "readings: $out/soak.csv"
