#!/bin/sh
# postinstall of the mqagent .deb and .rpm. Arguments: deb "configure
# [OLD_VERSION]" (other actions: nothing to do); rpm 1 (install) or 2
# (upgrade). Enables the service; on a first installation starts it only
# when /etc/mqagent/config.yaml is complete (it ships as an incomplete
# example); on an upgrade restarts it if it was running.
set -e

config=/etc/mqagent/config.yaml
upgrade=""
case "$1" in
configure) [ -n "${2:-}" ] && upgrade=1 ;;
1) ;;
2) upgrade=1 ;;
*) exit 0 ;;
esac

if [ -n "${DPKG_ROOT:-}" ]; then
	# Installed into another root (dpkg --root): not this system's service.
	exit 0
fi
if [ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null 2>&1; then
	echo "mqagent: systemd is not running here: run '/usr/bin/mqagent run --config $config' under your service manager"
	exit 0
fi

systemctl daemon-reload || true
systemctl enable mqagent.service || true
if [ -n "$upgrade" ]; then
	systemctl try-restart mqagent.service || echo "mqagent: the service did not restart: see journalctl -u mqagent" >&2
elif /usr/bin/mqagent config check --config "$config" >/dev/null 2>&1; then
	systemctl start mqagent.service || echo "mqagent: the service did not start: see journalctl -u mqagent" >&2
else
	echo "mqagent: installed and enabled, not started: complete $config (broker URL, operator keys),"
	echo "mqagent: check it with 'mqagent config check --config $config', then 'systemctl start mqagent'"
fi
