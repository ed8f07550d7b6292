#!/bin/sh
# preremove of the mqagent .deb and .rpm. Arguments: deb "remove" (also
# "upgrade", "deconfigure", "failed-upgrade": nothing to do); rpm 0 (erase)
# or 1 (upgrade: nothing to do). On removal stops and disables the service
# (a graceful stop: running commands get exec.grace_period).
set -e

case "$1" in
remove|0) ;;
*) exit 0 ;;
esac
# Installed into another root (dpkg --root): not this system's service.
[ -z "${DPKG_ROOT:-}" ] || exit 0

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl disable --now mqagent.service || true
fi
