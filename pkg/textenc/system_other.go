//go:build !windows

package textenc

// SystemPriors returns the encodings a command's output most likely uses:
// the charset of the locale that getenv describes (see LocaleCharset), or
// none when that is UTF-8, C or POSIX.
func SystemPriors(getenv func(string) string) []Encoding {
	if e, ok := LocaleCharset(getenv); ok {
		return []Encoding{e}
	}
	return nil
}
