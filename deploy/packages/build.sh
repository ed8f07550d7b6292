#!/usr/bin/env bash
# Builds the mqagent .deb and .rpm for Linux with nfpm (nfpm.yaml beside
# this script).
#
# Usage:
#   build.sh --binary mqagent --version VERSION --arch amd64|arm64 --out-dir DIR [--formats deb,rpm]
#
# The binary must be a Linux build for --arch (CGO_ENABLED=0). VERSION may
# start with a v (dropped); a version that does not start with a digit
# (a git hash, "dev") becomes 0.0.0~VERSION, which sorts before every
# release. Packages are written as DIR/mqagent_VERSION_ARCH.deb and
# DIR/mqagent-VERSION-1.ARCH.rpm (nfpm's names).
#
# nfpm: $NFPM when set (an nfpm executable), else
# `go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2` (through the Go
# module proxy or cache; no other network).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
die() { echo "packages/build.sh: $*" >&2; exit 1; }

NFPM_MODULE=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2

binary="" version="" arch="" outdir="" formats="deb,rpm"
while [ $# -gt 0 ]; do
	case "$1" in
	--binary) binary=${2:?}; shift 2 ;;
	--version) version=${2:?}; shift 2 ;;
	--arch) arch=${2:?}; shift 2 ;;
	--out-dir) outdir=${2:?}; shift 2 ;;
	--formats) formats=${2:?}; shift 2 ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done
[ -n "$binary" ] || die "--binary is required"
[ -f "$binary" ] || die "$binary: no such file"
[ -n "$version" ] || die "--version is required"
[ -n "$outdir" ] || die "--out-dir is required"
case "$arch" in
amd64|arm64) ;;
*) die "--arch must be amd64 or arm64, got '$arch'" ;;
esac

version=${version#v}
if ! [[ "$version" =~ ^[0-9]+\.[0-9]+ ]]; then
	version="0.0.0~$version"
fi
# Package versions: letters, digits and . + ~ only (a git describe's "-"
# would split deb's version from its revision).
version=$(printf '%s' "$version" | tr -c 'A-Za-z0-9.+~\n' '~')

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$binary" "$stage/mqagent"
chmod 0755 "$stage/mqagent"
# The unit in deploy/systemd runs /usr/local/bin/mqagent (a manual
# install); the packages install /usr/bin/mqagent.
sed 's#/usr/local/bin/mqagent#/usr/bin/mqagent#g' "$root/deploy/systemd/mqagent.service" >"$stage/mqagent.service"
grep -q '^ExecStart=/usr/bin/mqagent ' "$stage/mqagent.service" ||
	die "deploy/systemd/mqagent.service: ExecStart does not run /usr/local/bin/mqagent any more: update build.sh"

if [ -n "${NFPM:-}" ]; then
	nfpm=("$NFPM")
else
	command -v go >/dev/null 2>&1 || die "neither \$NFPM nor go is available"
	nfpm=(go run "$NFPM_MODULE")
fi

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
# nfpm expands variables in a few fields only: fill in all of them here.
esc() { printf '%s' "$1" | sed 's/[&#\\]/\\&/g'; }
sed -e "s#\${MQAGENT_VERSION}#$(esc "$version")#g" -e "s#\${MQAGENT_ARCH}#$(esc "$arch")#g" \
	-e "s#\${MQAGENT_STAGE}#$(esc "$stage")#g" -e "s#\${MQAGENT_ROOT}#$(esc "$root")#g" \
	"$here/nfpm.yaml" >"$stage/nfpm.yaml"
! grep -n '\${' "$stage/nfpm.yaml" || die "nfpm.yaml: a variable was not filled in"
IFS=, read -r -a list <<<"$formats"
for format in "${list[@]}"; do
	case "$format" in
	deb|rpm) ;;
	*) die "unsupported format '$format' (deb, rpm)" ;;
	esac
	# Run from the stage so that go run does not use this module's go.mod.
	(cd "$stage" && "${nfpm[@]}" package --config "$stage/nfpm.yaml" --packager "$format" --target "$outdir") ||
		die "nfpm failed for $format"
done
