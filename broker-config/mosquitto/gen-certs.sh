#!/usr/bin/env bash
# gen-certs.sh: certificates for an mqagent fleet behind Mosquitto
# (mosquitto.conf and acl in this directory). Needs bash 4.4+ and openssl 1.1.1+.
#
#   gen-certs.sh -s mqtt.example.com -s 10.0.0.5 web-01 web-02 db-01
#   gen-certs.sh -G groups.txt                  # hosts and their groups
#   gen-certs.sh -o alice -o ci                 # more operator certificates
#
# It creates, in DIR (default ./mqagent-pki), whatever does not exist yet:
#
#   fleet-ca.pem, fleet-ca.key        CA of the broker and of every host
#   operator-ca.pem, operator-ca.key  CA of the operators only
#   broker.pem, broker.key            broker server certificate (SANs: -s)
#   hosts/ID.pem, hosts/ID.key        one per host, CN = host id
#   operator.pem, operator.key        CN "operator", from the operator CA
#   operator-NAME.pem/.key            CN "operator", OU NAME (-o NAME)
#   dashboard.pem, dashboard.key      CN "dashboard", from the fleet CA
#   acl.strict                        with -G: the shipped acl with per-host
#                                     group entries instead of groups/+/cmd
#
# Existing files are never overwritten: a CA is reused to sign new
# certificates, an existing certificate is kept (delete it to re-issue).
# Keys are ECDSA P-256, mode 0600; certificates 0644. Keep the two CA keys
# offline once the fleet is enrolled.
#
# Why two CAs: the agents' listener binds the MQTT client id to the
# certificate CN (use_username_as_clientid), so a host cannot take over
# another host's session; operators run many clients at once (each needs
# its own client id), so they use another listener that accepts only the
# operator CA. See README.md.

set -euo pipefail

usage() {
	cat <<'EOF'
usage: gen-certs.sh [-d DIR] [-s BROKER_NAME]... [-G GROUPS_FILE] [-o OPERATOR]...
                    [-D DAYS] [HOST_ID]...

  -d DIR          output directory (default ./mqagent-pki)
  -s NAME         DNS name or IP address of the broker, for the server
                  certificate (repeat; required until broker.pem exists)
  -G FILE         lines "HOST_ID GROUP..." (# comments): issue those hosts and
                  write DIR/acl.strict confining each host to its own groups
  -o NAME         also issue operator-NAME.pem (CN operator, OU NAME)
  -D DAYS         validity of new leaf certificates (default 825)
  -h              this help

Host ids and groups: [a-z0-9][a-z0-9._-]{0,62}; "operator" and "dashboard"
are reserved (they are the operator and dashboard identities).
EOF
}

die() {
	echo "gen-certs.sh: $*" >&2
	exit 1
}

dir=./mqagent-pki
days=825
ca_days=3650
names=()
operators=()
groups_file=
while getopts ':d:s:G:o:D:h' opt; do
	case $opt in
	d) dir=$OPTARG ;;
	s) names+=("$OPTARG") ;;
	G) groups_file=$OPTARG ;;
	o) operators+=("$OPTARG") ;;
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
hosts=("$@")

command -v openssl >/dev/null || die "openssl not found"
[[ $days =~ ^[1-9][0-9]{0,4}$ ]] || die "-D: want a number of days, got \"$days\""

id_re='^[a-z0-9][a-z0-9._-]{0,62}$'
check_id() { # what value
	[[ $2 =~ $id_re ]] || die "invalid $1 \"$2\" (want [a-z0-9][a-z0-9._-]{0,62})"
	if [[ $1 == "host id" && ($2 == operator || $2 == dashboard) ]]; then
		die "host id \"$2\" is reserved for the $2 identity"
	fi
}

# Groups file: "host group group…" per line.
declare -A host_groups=()
group_hosts=()
if [[ -n $groups_file ]]; then
	# shellcheck source=../lib/groups.sh
	source "$(dirname "${BASH_SOURCE[0]}")/../lib/groups.sh"
	read_groups "$groups_file"
	hosts+=("${group_hosts[@]}")
fi
for h in "${hosts[@]}"; do check_id "host id" "$h"; done
for o in "${operators[@]}"; do check_id "operator name" "$o"; done

umask 077
mkdir -p "$dir/hosts"
chmod 0700 "$dir"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

serial() { echo "0x$(openssl rand -hex 16)"; }

newkey() { # keyfile
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
	chmod 0600 "$1"
}

# make_ca NAME "SUBJECT"
make_ca() {
	local name=$1 subj=$2
	if [[ -e $dir/$name.key || -e $dir/$name.pem ]]; then
		[[ -e $dir/$name.key && -e $dir/$name.pem ]] ||
			die "$dir/$name.pem and $name.key must both exist or both be absent; refusing to replace half a CA"
		echo "using existing $name"
		return
	fi
	newkey "$dir/$name.key"
	openssl req -x509 -new -sha256 -key "$dir/$name.key" -subj "$subj" \
		-days "$ca_days" -set_serial "$(serial)" \
		-addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-addext "subjectKeyIdentifier=hash" \
		-out "$dir/$name.pem"
	chmod 0644 "$dir/$name.pem"
	echo "created $name (valid $ca_days days)"
}

# issue CA OUT "SUBJECT" EXTENSIONS: key and certificate OUT.key/OUT.pem
# signed by CA, unless OUT.pem exists already.
issue() {
	local ca=$1 out=$2 subj=$3 ext=$4
	if [[ -e $out.pem ]]; then
		echo "keeping existing ${out#"$dir"/}.pem"
		return
	fi
	newkey "$out.key"
	openssl req -new -sha256 -key "$out.key" -subj "$subj" -out "$tmp/req.csr"
	printf '%s\n' "$ext" >"$tmp/ext.cnf"
	openssl x509 -req -sha256 -in "$tmp/req.csr" \
		-CA "$dir/$ca.pem" -CAkey "$dir/$ca.key" -set_serial "$(serial)" \
		-days "$days" -extfile "$tmp/ext.cnf" -out "$out.pem" 2>/dev/null
	chmod 0644 "$out.pem"
	echo "issued ${out#"$dir"/}.pem ($subj, valid $days days)"
}

client_ext='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid'

make_ca fleet-ca "/O=mqagent/CN=mqagent fleet CA"
make_ca operator-ca "/O=mqagent/CN=mqagent operator CA"

# Broker server certificate.
if [[ ! -e $dir/broker.pem ]]; then
	((${#names[@]} > 0)) || die "the broker certificate needs its names: give -s DNS_NAME or -s IP_ADDRESS"
	san=
	for n in "${names[@]}"; do
		if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then
			san+="${san:+,}IP:$n"
		elif [[ $n =~ ^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; then
			san+="${san:+,}DNS:$n"
		else
			die "-s: \"$n\" is neither a DNS name nor an IP address"
		fi
	done
	issue fleet-ca "$dir/broker" "/O=mqagent/CN=${names[0]}" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=$san"
elif ((${#names[@]} > 0)); then
	echo "keeping existing broker.pem (-s ignored; delete broker.pem to re-issue)"
fi

issue operator-ca "$dir/operator" "/O=mqagent/CN=operator" "$client_ext"
for o in "${operators[@]}"; do
	issue operator-ca "$dir/operator-$o" "/O=mqagent/OU=$o/CN=operator" "$client_ext"
done
issue fleet-ca "$dir/dashboard" "/O=mqagent/CN=dashboard" "$client_ext"
declare -A done_hosts=()
for h in "${hosts[@]}"; do
	[[ -n ${done_hosts[$h]+x} ]] && continue
	done_hosts[$h]=1
	issue fleet-ca "$dir/hosts/$h" "/O=mqagent/CN=$h" "$client_ext"
done

# Strict ACL: the shipped one without the "any group" pattern, plus one
# user block per host listing its groups.
if [[ -n $groups_file ]]; then
	acl="$(dirname "$0")/acl"
	[[ -r $acl ]] || die "cannot read the shipped acl ($acl) to derive acl.strict"
	pat='pattern read mqagent/v1/groups/+/cmd'
	grep -qxF "$pat" "$acl" || die "$acl has no line \"$pat\" to replace"
	{
		awk -v p="$pat" '$0 == p { print "# (strict mode) " $0; next } { print }' "$acl"
		echo
		echo "# --- Strict mode: each host reads the command topics of its own groups"
		echo "# only. Generated by gen-certs.sh from $groups_file; regenerate when a"
		echo "# host's groups change (the agent's \"groups\" must match, or it never"
		echo "# receives that group's commands: Mosquitto grants the subscription and"
		echo "# drops the messages)."
		for h in "${group_hosts[@]}"; do
			[[ -z ${host_groups[$h]} ]] && continue
			echo
			echo "user $h"
			for g in ${host_groups[$h]}; do
				echo "topic read mqagent/v1/groups/$g/cmd"
			done
		done
	} >"$dir/acl.strict"
	chmod 0644 "$dir/acl.strict"
	echo "wrote acl.strict"
fi
