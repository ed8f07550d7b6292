#!/usr/bin/env bash
# Creates the route CA and one certificate per cluster node for the TLS
# routes between the nodes of the production NATS cluster (nats.conf,
# cluster { tls {} }). nats-server verifies both ends of a route, and a
# node dials the others by the names in its routes list, so each
# certificate is for both TLS server and client use and names its node.
#
#   gen-route-certs.sh [-d DIR] [-D DAYS] NAME...
#
#   NAME     how the other nodes reach this node in nats.conf's routes
#            (mqtt-1.example.com), a DNS name or an IP address. Writes
#            DIR/route-NAME.pem and .key; install them as route.pem and
#            route.key on that node, with DIR/route-ca.pem.
#   -d DIR   where to write (default ./pki, shared with
#            ../../mosquitto/gen-certs.sh); existing files are kept.
#   -D DAYS  validity of the node certificates (default 825).
#
# The route CA is separate from the fleet and operator CAs: a host or
# operator certificate cannot join the cluster, and a route certificate
# cannot connect as an MQTT client. Keep route-ca.key offline.
set -euo pipefail

die() {
	echo "gen-route-certs.sh: $*" >&2
	exit 1
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

dir=pki
days=825
ca_days=3650
while getopts ':d:D:h' opt; do
	case $opt in
	d) dir=$OPTARG ;;
	D) days=$OPTARG ;;
	h)
		usage
		exit 0
		;;
	:) die "option -$OPTARG needs a value (see -h)" ;;
	*) die "unknown option -$OPTARG (see -h)" ;;
	esac
done
shift $((OPTIND - 1))
(($# > 0)) || die "no node name given (see -h)"
command -v openssl >/dev/null || die "openssl not found"
[[ $days =~ ^[1-9][0-9]{0,4}$ ]] || die "-D: want a number of days, got \"$days\""

umask 077
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

serial() { echo "0x$(openssl rand -hex 16)"; }
newkey() {
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
	chmod 0600 "$1"
}

if [[ -e $dir/route-ca.key || -e $dir/route-ca.pem ]]; then
	[[ -e $dir/route-ca.key && -e $dir/route-ca.pem ]] ||
		die "$dir/route-ca.pem and route-ca.key must both exist or both be absent; refusing to replace half a CA"
	echo "using existing route-ca"
else
	newkey "$dir/route-ca.key"
	openssl req -x509 -new -sha256 -key "$dir/route-ca.key" -subj "/O=mqagent/CN=mqagent route CA" \
		-days "$ca_days" -set_serial "$(serial)" \
		-addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-addext "subjectKeyIdentifier=hash" \
		-out "$dir/route-ca.pem"
	chmod 0644 "$dir/route-ca.pem"
	echo "created route-ca (valid $ca_days days)"
fi

for n in "$@"; do
	if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then
		san="IP:$n"
	elif [[ $n =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; then
		san="DNS:$n"
	else
		die "\"$n\" is neither a DNS name nor an IP address"
	fi
	out=$dir/route-$n
	if [[ -e $out.pem ]]; then
		echo "keeping existing route-$n.pem"
		continue
	fi
	newkey "$out.key"
	openssl req -new -sha256 -key "$out.key" -subj "/O=mqagent/CN=$n" -out "$tmp/req.csr"
	cat >"$tmp/ext.cnf" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=$san
EOF
	openssl x509 -req -sha256 -in "$tmp/req.csr" \
		-CA "$dir/route-ca.pem" -CAkey "$dir/route-ca.key" -set_serial "$(serial)" \
		-days "$days" -extfile "$tmp/ext.cnf" -out "$out.pem" 2>/dev/null
	chmod 0644 "$out.pem"
	echo "issued route-$n.pem ($san, valid $days days)"
done
