#!/usr/bin/env bash
# Authenticode-signs a Windows file (an .exe or an .msi) in place with
# osslsigncode, then verifies the signature. Used by build-msi.sh (the exe
# first, the finished MSI last) and usable on its own.
#
# Usage: sign.sh FILE...
#
# Environment:
#   MQAGENT_SIGN_CERT           PEM certificate file: the code-signing
#                               certificate, then its intermediates (required)
#   MQAGENT_SIGN_KEY            PEM private key file (required)
#   MQAGENT_SIGN_KEY_PASS_FILE  file holding the key's password (optional)
#   MQAGENT_SIGN_TIMESTAMP_URL  RFC 3161 time-stamping server (optional;
#                               releases should use one so that signatures
#                               outlive the certificate)
#   MQAGENT_SIGN_CAFILE         CA bundle the signature is verified against
#                               (default: osslsigncode's, the system's CAs;
#                               for a self-signed test certificate, the
#                               certificate itself)
#   MQAGENT_SIGN_NAME           description shown by Windows (default mqagent)
#   MQAGENT_SIGN_URL            URL shown by Windows (default the project's)
set -euo pipefail

die() { echo "sign.sh: $*" >&2; exit 1; }

[ $# -gt 0 ] || die "usage: sign.sh FILE..."
: "${MQAGENT_SIGN_CERT:?sign.sh: MQAGENT_SIGN_CERT (PEM certificate file) is not set}"
: "${MQAGENT_SIGN_KEY:?sign.sh: MQAGENT_SIGN_KEY (PEM key file) is not set}"
command -v osslsigncode >/dev/null 2>&1 || die "osslsigncode not found (apt-get install osslsigncode)"
[ -r "$MQAGENT_SIGN_CERT" ] || die "cannot read certificate $MQAGENT_SIGN_CERT"
[ -r "$MQAGENT_SIGN_KEY" ] || die "cannot read key $MQAGENT_SIGN_KEY"

name=${MQAGENT_SIGN_NAME:-mqagent}
url=${MQAGENT_SIGN_URL:-https://github.com/mqagent/mqagent}

for f in "$@"; do
	[ -f "$f" ] || die "$f: no such file"
	tmp="$f.signing.$$"
	rm -f "$tmp"
	args=(-certs "$MQAGENT_SIGN_CERT" -key "$MQAGENT_SIGN_KEY" -h sha256 -n "$name" -i "$url")
	if [ -n "${MQAGENT_SIGN_KEY_PASS_FILE:-}" ]; then
		args+=(-readpass "$MQAGENT_SIGN_KEY_PASS_FILE")
	fi
	if [ -n "${MQAGENT_SIGN_TIMESTAMP_URL:-}" ]; then
		args+=(-ts "$MQAGENT_SIGN_TIMESTAMP_URL")
	fi
	if ! osslsigncode sign "${args[@]}" -in "$f" -out "$tmp" >"$tmp.log" 2>&1; then
		cat "$tmp.log" >&2
		rm -f "$tmp" "$tmp.log"
		die "signing $f failed"
	fi
	rm -f "$tmp.log"
	mv -f "$tmp" "$f"
	verify=()
	if [ -n "${MQAGENT_SIGN_CAFILE:-}" ]; then
		verify=(-CAfile "$MQAGENT_SIGN_CAFILE")
	fi
	if ! osslsigncode verify "${verify[@]}" -in "$f" >"$f.verify.$$" 2>&1; then
		cat "$f.verify.$$" >&2
		rm -f "$f.verify.$$"
		die "the signature of $f does not verify"
	fi
	rm -f "$f.verify.$$"
	echo "signed and verified $f"
done
