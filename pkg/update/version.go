package update

import (
	"strconv"
	"strings"
)

// CompareVersions orders two versions as semantic versions: the numeric
// parts first ("1.10.0" > "1.9.2"; a leading "v" is ignored and missing
// parts count as 0), then a version with a pre-release ("1.0.0-rc.1")
// before the same version without; build metadata ("+…") is ignored.
// Pre-release identifiers compare numerically when both are numbers, else
// as text. It returns -1, 0 or 1.
func CompareVersions(a, b string) int {
	an, apre := splitVersion(a)
	bn, bpre := splitVersion(b)
	for i := range max(len(an), len(bn)) {
		x, y := part(an, i), part(bn, i)
		if c := compareNum(x, y); c != 0 {
			return c
		}
	}
	switch {
	case apre == "" && bpre == "":
		return 0
	case apre == "":
		return 1
	case bpre == "":
		return -1
	}
	ap, bp := strings.Split(apre, "."), strings.Split(bpre, ".")
	for i := range min(len(ap), len(bp)) {
		x, y := ap[i], bp[i]
		xn, xerr := strconv.ParseUint(x, 10, 64)
		yn, yerr := strconv.ParseUint(y, 10, 64)
		switch {
		case xerr == nil && yerr == nil:
			if xn != yn {
				return cmp(xn < yn)
			}
		case xerr == nil: // numeric identifiers sort before text
			return -1
		case yerr == nil:
			return 1
		default:
			if c := strings.Compare(x, y); c != 0 {
				return c
			}
		}
	}
	return compareNum(strconv.Itoa(len(ap)), strconv.Itoa(len(bp)))
}

func cmp(less bool) int {
	if less {
		return -1
	}
	return 1
}

func splitVersion(v string) (nums []string, pre string) {
	v = strings.TrimPrefix(v, "v")
	v, _, _ = strings.Cut(v, "+")
	v, pre, _ = strings.Cut(v, "-")
	return strings.Split(v, "."), pre
}

func part(p []string, i int) string {
	if i < len(p) {
		return p[i]
	}
	return "0"
}

// compareNum compares decimal strings of any length.
func compareNum(x, y string) int {
	x, y = strings.TrimLeft(x, "0"), strings.TrimLeft(y, "0")
	if len(x) != len(y) {
		return cmp(len(x) < len(y))
	}
	return strings.Compare(x, y)
}
