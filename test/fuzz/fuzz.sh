#!/usr/bin/env bash
# Fuzzes every decoder that input from the network or an operator reaches,
# FUZZTIME each (default 10m), one after the other, and prints a markdown
# table (target, time, executions, new inputs, result). A crasher is written
# by Go into the package's testdata/fuzz/ and fails this script: commit it
# with the fix, it then runs in every `go test`.
#
#   test/fuzz/fuzz.sh                       # 4 targets x 10 minutes
#   FUZZTIME=30s test/fuzz/fuzz.sh          # a quick pass
#   PARALLEL=2 test/fuzz/fuzz.sh            # fuzzing workers (default 1)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

fuzztime="${FUZZTIME:-10m}"
parallel="${PARALLEL:-1}"
out="${OUT:-$(mktemp -d /tmp/mqagent-fuzz-XXXXXX)}"
mkdir -p "$out"

# target package what
targets=(
	"FuzzDecode ./pkg/protocol command_envelope_(wire_JSON,_strict_decoding,_validation)"
	"FuzzVerify ./pkg/security signed_wrapper_and_its_signature_check"
	"FuzzArgs ./pkg/handlers/process exec/shell/script_args"
	"FuzzParse ./pkg/config config_file_(YAML)"
)

echo "machine: $(nproc) CPUs, $(uname -sr), $(go version | cut -d' ' -f3); $fuzztime per target, $parallel worker(s); logs in $out"
echo
echo "| target | package | input | time | executions | new interesting inputs | result |"
echo "|---|---|---|---|---|---|---|"
status=0
for t in "${targets[@]}"; do
	read -r name pkg what <<<"$t"
	log="$out/$name-$(basename "$pkg").log"
	if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -parallel "$parallel" "$pkg" >"$log" 2>&1; then
		result="no failure"
	else
		result="FAILED (see $log)"
		status=1
	fi
	last="$(grep -E '^fuzz: elapsed' "$log" | tail -n 1 || true)"
	execs="$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")"
	newi="$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")"
	echo "| \`$name\` | \`$pkg\` | ${what//_/ } | $fuzztime | ${execs:-?} | ${newi:-?} | $result |"
done
exit "$status"
