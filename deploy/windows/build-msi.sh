#!/usr/bin/env bash
# Builds the mqagent MSI on Linux with wixl (msitools), post-processes what
# wixl cannot express, and Authenticode-signs it when a certificate is
# configured. docs/windows-msi.md explains the package.
#
# Usage:
#   build-msi.sh --exe mqagent.exe --version VERSION --arch x64|arm64 --out mqagent.msi
#                [--product-version MAJOR.MINOR.BUILD] [--no-start-service]
#
#   --version          the agent's version (v1.2.3, 1.2.3-rc.1, ...); the MSI's
#                      ProductVersion is product-version.sh's for it unless
#                      --product-version is given
#   --arch             x64 or arm64 (wixl builds x64; the arm64 package is the
#                      same database with the Arm64 platform in its summary)
#   --no-start-service test-only: do not start the service at installation
#
# Signing: when MQAGENT_SIGN_CERT is set (see sign.sh for every variable),
# the exe is signed before it is packed, and the MSI after the
# post-processing, last (any later change would break its signature).
# Without it the MSI is built unsigned and the script says so.
#
# Needs: wixl, msibuild, msiinfo (apt-get install wixl msitools), and
# osslsigncode when signing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
die() { echo "build-msi.sh: $*" >&2; exit 1; }

exe="" version="" arch="" out="" product_version="" no_start=""
while [ $# -gt 0 ]; do
	case "$1" in
	--exe) exe=${2:?}; shift 2 ;;
	--version) version=${2:?}; shift 2 ;;
	--arch) arch=${2:?}; shift 2 ;;
	--out) out=${2:?}; shift 2 ;;
	--product-version) product_version=${2:?}; shift 2 ;;
	--no-start-service) no_start=1; shift ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done
[ -n "$exe" ] || die "--exe is required"
[ -n "$version" ] || die "--version is required"
[ -n "$out" ] || die "--out is required"
[ -f "$exe" ] || die "$exe: no such file"
case "$arch" in
x64|arm64) ;;
"") die "--arch is required (x64 or arm64)" ;;
*) die "unsupported --arch $arch (x64 or arm64)" ;;
esac
for tool in wixl msibuild msiinfo; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found (apt-get install wixl msitools)"
done

# ProductVersion: three numbers, at most 255.255.65535.
if [ -z "$product_version" ]; then
	product_version=$("$here/product-version.sh" "$version")
fi
if ! [[ "$product_version" =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,5}$ ]] ||
	[ "$(cut -d. -f1 <<<"$product_version")" -gt 255 ] || [ "$(cut -d. -f2 <<<"$product_version")" -gt 255 ] ||
	[ "$(cut -d. -f3 <<<"$product_version")" -gt 65535 ]; then
	die "invalid product version $product_version (want MAJOR.MINOR.BUILD, at most 255.255.65535)"
fi

signing=""
if [ -n "${MQAGENT_SIGN_CERT:-}" ]; then
	signing=1
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$exe" "$stage/mqagent.exe"
if [ -n "$signing" ]; then
	"$here/sign.sh" "$stage/mqagent.exe"
fi

defines=(-D AgentExe=mqagent.exe -D "ProductVersion=$product_version")
if [ -n "$no_start" ]; then
	defines+=(-D NoStartService=1)
fi
# wixl finds sources relative to the current directory only.
(cd "$stage" && wixl -a x64 "${defines[@]}" -o "$stage/mqagent.msi" "$here/mqagent.wxs") ||
	die "wixl failed"
msi="$stage/mqagent.msi"

# Post-processing (msibuild runs SQL on the database):
# 1. SecureCustomProperties: the public properties may be passed to the
#    elevated (server-side) part of a managed installation, such as a GPO
#    assignment; wixl has no Property/@Secure.
public="BROKER_URL;HOST_GROUPS;CA_FILE;CERT_FILE;KEY_FILE;TRUSTED_KEY;HOST_ID"
# (msiinfo ends its lines with CR LF.)
current=$(msiinfo export "$msi" Property | tr -d '\r' | awk -F'\t' '$1 == "SecureCustomProperties" { print $2 }')
if [ -n "$current" ]; then
	msibuild "$msi" -q "UPDATE \`Property\` SET \`Value\`='$public;$current' WHERE \`Property\`='SecureCustomProperties'"
else
	msibuild "$msi" -q "INSERT INTO \`Property\` (\`Property\`, \`Value\`) VALUES ('SecureCustomProperties', '$public')"
fi
# 2. Custom action types, set explicitly (wixl 0.101 ignores
#    Execute="rollback" and marks immediate actions no-impersonate):
#    SetInstallId 51 = set a property, immediate;
#    WriteConfig and ConfigureService 3090 = 18 (exe from an installed
#      file) + 0x400 (in script, deferred) + 0x800 (no impersonation:
#      LocalSystem);
#    WriteConfigRollback 3410 = 18 + 0x40 (ignore its exit code) + 0x100
#      (rollback) + 0x400 + 0x800.
msibuild "$msi" -q "UPDATE \`CustomAction\` SET \`Type\`=51 WHERE \`Action\`='SetInstallId'"
msibuild "$msi" -q "UPDATE \`CustomAction\` SET \`Type\`=3090 WHERE \`Action\`='WriteConfig'"
msibuild "$msi" -q "UPDATE \`CustomAction\` SET \`Type\`=3090 WHERE \`Action\`='ConfigureService'"
msibuild "$msi" -q "UPDATE \`CustomAction\` SET \`Type\`=3410 WHERE \`Action\`='WriteConfigRollback'"
# 3. The platform of an arm64 package (wixl knows x64 only); the package
#    code (revision UUID) is kept.
if [ "$arch" = arm64 ]; then
	suminfo=$(msiinfo suminfo "$msi")
	subject=$(sed -n 's/^Subject: //p' <<<"$suminfo")
	author=$(sed -n 's/^Author: //p' <<<"$suminfo")
	uuid=$(sed -n 's/^Revision number (UUID): //p' <<<"$suminfo")
	[ -n "$uuid" ] || die "cannot read the package code of $msi"
	msibuild "$msi" -s "$subject" "$author" "Arm64;1033" "$uuid"
fi

# Sign last: nothing may change the MSI after this.
if [ -n "$signing" ]; then
	"$here/sign.sh" "$msi"
else
	echo "build-msi.sh: MQAGENT_SIGN_CERT is not set: $out is NOT signed" >&2
fi

mkdir -p "$(dirname "$out")"
mv -f "$msi" "$out"
echo "built $out (ProductVersion $product_version, $arch)"
