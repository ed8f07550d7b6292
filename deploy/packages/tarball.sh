#!/usr/bin/env bash
# Builds a release tarball of mqagent for hosts without a package format
# of ours (macOS): DIR/mqagent-VERSION-OS-ARCH.tar.gz holding one directory
# mqagent-VERSION-OS-ARCH/ with the binary, an example configuration, the
# licence, INSTALL.txt and, when deploy/launchd/ exists, its files (the
# launchd property list) under launchd/.
#
# Usage:
#   tarball.sh --binary mqagent --version VERSION --os darwin --arch arm64 --out-dir DIR
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
die() { echo "packages/tarball.sh: $*" >&2; exit 1; }

binary="" version="" os="" arch="" outdir=""
while [ $# -gt 0 ]; do
	case "$1" in
	--binary) binary=${2:?}; shift 2 ;;
	--version) version=${2:?}; shift 2 ;;
	--os) os=${2:?}; shift 2 ;;
	--arch) arch=${2:?}; shift 2 ;;
	--out-dir) outdir=${2:?}; shift 2 ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done
[ -n "$binary" ] || die "--binary is required"
[ -f "$binary" ] || die "$binary: no such file"
[ -n "$version" ] || die "--version is required"
[[ "$os" =~ ^[a-z0-9]+$ ]] || die "--os is required (darwin, linux, ...)"
[[ "$arch" =~ ^[a-z0-9]+$ ]] || die "--arch is required (arm64, amd64, ...)"
[ -n "$outdir" ] || die "--out-dir is required"
[[ "$version" =~ ^[A-Za-z0-9._+~-]+$ ]] || die "version '$version' has characters unfit for a file name"

name="mqagent-$version-$os-$arch"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
dir="$stage/$name"
mkdir -p "$dir"
install -m 0755 "$binary" "$dir/mqagent"
install -m 0600 "$root/deploy/packages/config.yaml" "$dir/config.example.yaml"
install -m 0644 "$root/LICENSE" "$dir/LICENSE"

launchd=""
if [ -d "$root/deploy/launchd" ] && [ -n "$(ls -A "$root/deploy/launchd")" ]; then
	mkdir -p "$dir/launchd"
	cp -R "$root/deploy/launchd/." "$dir/launchd/"
	launchd=1
fi

case "$os" in
darwin)
	cfg=/usr/local/etc/mqagent/config.yaml # the default of `mqagent service install` on macOS
	{
		echo "mqagent $version for macOS ($arch)"
		echo
		echo "1. Install the binary:"
		echo "     sudo install -m 0755 mqagent /usr/local/bin/mqagent"
		echo "2. Write the configuration (or edit config.example.yaml and copy it there, mode 0600):"
		echo "     sudo mqagent config init --out $cfg \\"
		echo "       --broker-url ssl://mq.example.com:8883 --ca-file /path/to/ca.pem --trusted-key ops=BASE64PUBLICKEY"
		echo "     sudo mqagent config check --config $cfg"
		echo "3. Run it as a launchd daemon:"
		echo "     sudo mqagent service install --config $cfg --start"
		if [ -n "$launchd" ]; then
			echo "   or install the launchd property list in launchd/ yourself (see the comments in it)."
		fi
		echo
		echo "The binary is not notarized: if Gatekeeper blocks it, run"
		echo "     sudo xattr -d com.apple.quarantine /usr/local/bin/mqagent"
		echo "Documentation: https://github.com/mqagent/mqagent (deploy/README.md)."
	} >"$dir/INSTALL.txt"
	;;
*)
	{
		echo "mqagent $version for $os ($arch)"
		echo
		echo "Install the binary (e.g. /usr/local/bin/mqagent), write a configuration with"
		echo "'mqagent config init' (or from config.example.yaml), then run it with"
		echo "'mqagent service install --config FILE' or your service manager."
		echo "Documentation: https://github.com/mqagent/mqagent (deploy/README.md)."
	} >"$dir/INSTALL.txt"
	;;
esac

mkdir -p "$outdir"
out="$(cd "$outdir" && pwd)/$name.tar.gz"
tar -C "$stage" --owner=0 --group=0 --numeric-owner -czf "$out" "$name"
echo "built $out"
