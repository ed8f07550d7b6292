package textenc

import "strings"

// localeAliases maps glibc's normalised codeset names (lower case, without
// '-' and '_') to names Lookup knows.
var localeAliases = map[string]string{
	"koi8r":     "koi8-r",
	"koi8u":     "koi8-u",
	"eucjp":     "euc-jp",
	"euckr":     "euc-kr",
	"gb2312":    "gbk",
	"gbk":       "gbk",
	"gb18030":   "gb18030",
	"big5":      "big5",
	"big5hkscs": "big5",
	"sjis":      "shift_jis",
	"shiftjis":  "shift_jis",
	"tis620":    "windows-874",
	"cp1251":    "windows-1251",
	"cp1252":    "windows-1252",
}

// LocaleCharset is the charset of the Unix locale that getenv describes:
// the first non-empty of LC_ALL, LC_CTYPE and LANG, as language_TERRITORY.CODESET@modifier
// ("ru_RU.KOI8-R", "en_US.ISO-8859-1", "de_DE.iso885915@euro"). It returns
// false when the locale is UTF-8, C or POSIX (plain ASCII), has no codeset,
// or names one that is not supported: output is then taken as UTF-8.
func LocaleCharset(getenv func(string) string) (Encoding, bool) {
	var loc string
	for _, k := range []string{"LC_ALL", "LC_CTYPE", "LANG"} {
		if v := getenv(k); v != "" {
			loc = v
			break
		}
	}
	if loc == "" || loc == "C" || loc == "POSIX" {
		return Encoding{}, false
	}
	_, codeset, ok := strings.Cut(loc, ".")
	if !ok {
		return Encoding{}, false
	}
	codeset, _, _ = strings.Cut(codeset, "@")
	norm := strings.NewReplacer("-", "", "_", "").Replace(strings.ToLower(codeset))
	if norm == "" || norm == "utf8" || norm == "ansix3.41968" || norm == "ascii" || norm == "usascii" {
		return Encoding{}, false
	}
	if alias, ok := localeAliases[norm]; ok {
		codeset = alias
	} else if n, ok := strings.CutPrefix(norm, "iso8859"); ok && n != "" {
		codeset = "iso-8859-" + n
	}
	e, err := Lookup(codeset)
	if err != nil || e.fam == familyUTF8 {
		return Encoding{}, false
	}
	return e, true
}
