#!/usr/bin/env bash
# Prints the MSI ProductVersion (MAJOR.MINOR.BUILD, at most 255.255.65535)
# for an agent version: its MAJOR.MINOR.PATCH (v1.2.3, 1.2.3-rc.1, or
# v1.2.3-4-gabcdef from git describe: 1.2.3); for a version without one (a
# git hash, "dev") 0.0.N with N the number of commits of HEAD, so that
# development builds still upgrade each other in commit order.
#
# Windows Installer upgrades only to a higher ProductVersion (first three
# fields): two different MSIs with the same ProductVersion install side by
# side. Release from tags.
#
# Usage: product-version.sh VERSION
set -euo pipefail

version=${1:?usage: product-version.sh VERSION}
if [[ "$version" =~ ^v?([0-9]+)\.([0-9]+)\.([0-9]+)([^0-9].*)?$ ]]; then
	major=$((10#${BASH_REMATCH[1]})) minor=$((10#${BASH_REMATCH[2]})) build=$((10#${BASH_REMATCH[3]}))
else
	here=$(cd "$(dirname "$0")" && pwd)
	count=$(git -C "$here" rev-list --count HEAD 2>/dev/null) || {
		echo "product-version.sh: $version has no MAJOR.MINOR.PATCH and git cannot count commits" >&2
		exit 1
	}
	echo "product-version.sh: $version has no MAJOR.MINOR.PATCH: using 0.0.$count (development build)" >&2
	major=0 minor=0 build=$count
fi
if [ "$major" -gt 255 ] || [ "$minor" -gt 255 ] || [ "$build" -gt 65535 ]; then
	echo "product-version.sh: $major.$minor.$build is beyond an MSI ProductVersion's 255.255.65535" >&2
	exit 1
fi
echo "$major.$minor.$build"
