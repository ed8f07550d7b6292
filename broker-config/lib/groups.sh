# shellcheck shell=bash
# Sourced by gen-certs.sh (Mosquitto) and gen-users.sh (NATS): reads a
# groups file, one "host group group…" per line, # starts a comment.
#
#   read_groups FILE
#
# Each id goes through the caller's check_id ("host id"|"group" VALUE),
# which dies on a bad one; the caller's die reports errors. It fills
# host_groups[HOST]="GROUP…" (an associative array the caller declares)
# and appends each host, in file order, to group_hosts.
read_groups() {
	local file=$1 line lineno=0 h g
	local -a words
	[[ -r $file ]] || die "-G: cannot read $file"
	while IFS= read -r line || [[ -n $line ]]; do
		lineno=$((lineno + 1))
		line=${line%%#*}
		read -r -a words <<<"$line"
		((${#words[@]} == 0)) && continue
		h=${words[0]}
		check_id "host id" "$h"
		for g in "${words[@]:1}"; do check_id "group" "$g"; done
		[[ -n ${host_groups[$h]+x} ]] && die "$file:$lineno: host $h listed twice"
		host_groups[$h]="${words[*]:1}"
		group_hosts+=("$h")
	done <"$file"
}
