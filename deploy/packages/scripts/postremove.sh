#!/bin/sh
# postremove of the mqagent .deb and .rpm. Arguments: deb "remove" or
# "purge" (others: nothing to do); rpm 0 (erase) or 1 (upgrade: nothing to
# do). The agent's data (/var/lib/mqagent: state, audit log) is left in
# place, even on purge: delete it yourself when it is no longer needed.
set -e

case "$1" in
remove|purge|0) ;;
*) exit 0 ;;
esac
# Installed into another root (dpkg --root): not this system's service.
[ -z "${DPKG_ROOT:-}" ] || exit 0

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || true
fi
if [ -d /var/lib/mqagent ]; then
	echo "mqagent: removed; its data is left in /var/lib/mqagent"
fi
