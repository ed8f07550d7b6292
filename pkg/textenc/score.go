package textenc

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// The detector's tuning. Scores are the mean plausibility of a sample's
// non-ASCII characters, from -1 (invalid, control, private use) to 1
// (letters of one script in a plausible case pattern, common CJK
// characters, box drawing in runs).
const (
	// sampleSize bounds how much of an output the detector looks at,
	// starting at the first non-ASCII byte (thousands of characters: plenty
	// to tell encodings apart).
	sampleSize = 16 << 10
	// priorBonus is added to the score of the system's own encodings: the
	// bytes were most likely written in one of those.
	priorBonus = 0.1
	// minScore is the least score a confident choice needs.
	minScore = 0.7
	// priorMargin and otherMargin are how far (bonus included) a choice
	// must be ahead of the next candidate to be confident, for a system
	// encoding and for any other.
	priorMargin = 0.05
	otherMargin = 0.15
	// minChars is the number of non-ASCII characters a confident choice of
	// a non-system encoding needs.
	minChars = 2
)

// detectors are the candidates tried besides the system's encodings, in
// order of preference on a tie.
var detectors = []Encoding{gbk, sjis, big5, euckr, win1252, UTF8}

// verdict is one candidate's score.
type verdict struct {
	enc   Encoding
	prior bool
	score float64 // mean plausibility, -1..1
	chars int     // non-ASCII characters scored
}

func (v verdict) adjusted() float64 {
	if v.prior {
		return v.score + priorBonus
	}
	return v.score
}

// detect picks the encoding of b among priors and the detectors. It
// reports whether the choice is confident.
func detect(b []byte, priors []Encoding) (Encoding, bool) {
	sample := sampleOf(b)
	if mostlyUTF8(sample) {
		return UTF8, false
	}
	cands := make([]verdict, 0, len(priors)+len(detectors))
	seen := make(map[string]bool, cap(cands))
	for i, list := range [][]Encoding{priors, detectors} {
		for _, e := range list {
			if e.IsZero() || e.fam == familyUTF16 || seen[e.name] {
				continue
			}
			seen[e.name] = true
			sum, n := score(e, sample)
			v := verdict{enc: e, prior: i == 0, chars: n}
			if n > 0 {
				v.score = sum / float64(n)
			}
			cands = append(cands, v)
		}
	}
	best, second := -1, -1
	for i, v := range cands {
		switch {
		case best < 0 || v.adjusted() > cands[best].adjusted():
			best, second = i, best
		case second < 0 || v.adjusted() > cands[second].adjusted():
			second = i
		}
	}
	w := cands[best]
	if w.enc.fam == familyUTF8 || w.score < minScore {
		return w.enc, false
	}
	margin := 2.0
	if second >= 0 {
		margin = w.adjusted() - cands[second].adjusted()
	}
	if w.prior {
		return w.enc, w.chars >= 1 && margin >= priorMargin
	}
	return w.enc, w.chars >= minChars && margin >= otherMargin
}

// mostlyUTF8 reports UTF-8 with a few invalid bytes: at least two valid
// multibyte sequences, and at least twice as many as invalid bytes. Text in
// the legacy encodings seldom forms valid multibyte sequences.
func mostlyUTF8(b []byte) bool {
	valid, invalid := 0, 0
	for i := 0; i < len(b); {
		if b[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			if len(b)-i < utf8.UTFMax && !utf8.FullRune(b[i:]) {
				break // cut by the sample
			}
			invalid++
		} else {
			valid++
		}
		i += size
	}
	return valid >= 2 && valid >= 2*invalid
}

// sampleOf is at most sampleSize bytes of b from the character before its
// first non-ASCII byte (every byte before that is an ASCII character in
// every encoding the detector tries).
func sampleOf(b []byte) []byte {
	start := 0
	for start < len(b) && b[start] < utf8.RuneSelf {
		start++
	}
	if start > 0 {
		start-- // the ASCII character before, as context
	}
	b = b[start:]
	if len(b) > sampleSize {
		b = b[:sampleSize]
	}
	return b
}

// score sums the plausibility of the non-ASCII characters of sample read
// as e, and counts them. An incomplete character at the end is ignored.
func score(e Encoding, sample []byte) (float64, int) {
	switch e.fam {
	case familyGBK:
		return scoreDBCS(sample, gbkChar, frequentSets()[familyGBK])
	case familyBig5:
		return scoreDBCS(sample, big5Char, frequentSets()[familyBig5])
	case familyShiftJIS:
		return scoreDBCS(sample, sjisChar, nil)
	case familyEUCKR:
		return scoreDBCS(sample, euckrChar, frequentSets()[familyEUCKR])
	}
	text, _ := transformAll(e.enc.NewDecoder(), nil, sample, false)
	return scoreText(text)
}

// dbcsChar rates the character at the start of b (b[0] >= 0x80): its
// length in bytes (0: incomplete at the end of b) and its plausibility,
// where common says a character of the encoding's common area scores 1,
// and is told with the frequent characters of the language.
type dbcsChar func(b []byte, common func(code uint16) float64) (n int, w float64)

// rare is the score of a character of a common area that is not among the
// most frequent ones.
const rare = 0.75

func scoreDBCS(b []byte, char dbcsChar, frequent *codeSet) (sum float64, n int) {
	common := func(code uint16) float64 {
		if frequent == nil || frequent.has(code) {
			return 1
		}
		return rare
	}
	for i := 0; i < len(b); {
		if b[i] < utf8.RuneSelf {
			i++
			continue
		}
		size, w := char(b[i:], common)
		if size == 0 {
			break
		}
		sum += w
		n++
		i += size
	}
	return sum, n
}

func in(c, lo, hi byte) bool { return c >= lo && c <= hi }

// gbkChar rates a GBK (code page 936) character: GB2312 level 1 hanzi (the
// 3755 most common) best, then level 2, then GB2312 symbols; the GBK
// extension areas are rare, the user-defined areas implausible.
func gbkChar(b []byte, common func(uint16) float64) (int, float64) {
	c := b[0]
	switch {
	case c == 0x80:
		return 1, 0.2 // € in code page 936
	case c == 0xFF:
		return 1, -1
	case len(b) < 2:
		return 0, 0
	}
	t := b[1]
	if t < 0x40 || t == 0x7F || t == 0xFF {
		return 1, -1
	}
	switch {
	case in(c, 0xB0, 0xD7) && t >= 0xA1:
		return 2, common(uint16(c)<<8 | uint16(t))
	case in(c, 0xD8, 0xF7) && t >= 0xA1:
		return 2, 0.6
	case in(c, 0xA1, 0xA9) && t >= 0xA1:
		return 2, 0.7
	case (in(c, 0xAA, 0xAF) || c >= 0xF8) && t >= 0xA1, in(c, 0xA1, 0xA7) && t < 0xA1:
		return 2, -1 // user-defined areas
	}
	return 2, 0.15
}

// big5Char rates a Big5 character: the common hanzi (A440-C67E) best, then
// the less common ones (C940-F9D5), the symbols; other areas (HKSCS,
// ETEN, user-defined) are rare.
func big5Char(b []byte, common func(uint16) float64) (int, float64) {
	c := b[0]
	switch {
	case c == 0x80 || c == 0xFF:
		return 1, -1
	case len(b) < 2:
		return 0, 0
	}
	t := b[1]
	if !in(t, 0x40, 0x7E) && !in(t, 0xA1, 0xFE) {
		return 1, -1
	}
	code := uint16(c)<<8 | uint16(t)
	switch {
	case code >= 0xA440 && code <= 0xC67E:
		return 2, common(code)
	case code >= 0xC940 && code <= 0xF9D5:
		return 2, 0.5
	case code >= 0xA140 && code <= 0xA3BF:
		return 2, 0.7
	}
	return 2, 0.1
}

// sjisChar rates a Shift-JIS (code page 932) character: hiragana, katakana
// and level 1 kanji best; halfwidth katakana and level 2 kanji less; the
// user-defined area implausible.
func sjisChar(b []byte, _ func(uint16) float64) (int, float64) {
	c := b[0]
	switch {
	case in(c, 0xA1, 0xDF):
		return 1, 0.25 // halfwidth katakana
	case c == 0x80 || c == 0xA0 || c >= 0xFD:
		return 1, -1
	case len(b) < 2:
		return 0, 0
	}
	t := b[1]
	if !in(t, 0x40, 0x7E) && !in(t, 0x80, 0xFC) {
		return 1, -1
	}
	code := uint16(c)<<8 | uint16(t)
	switch {
	case code >= 0x829F && code <= 0x82F1, code >= 0x8340 && code <= 0x8396, code >= 0x889F && code <= 0x9872:
		return 2, 1
	case c == 0x81, c == 0x82:
		return 2, 0.7 // symbols, fullwidth digits and letters
	case c == 0x83, c == 0x84:
		return 2, 0.5 // Greek, Cyrillic, box drawing
	case code >= 0x989F && code <= 0xEAA4:
		return 2, 0.5
	case c == 0x87, in(c, 0xED, 0xEE), in(c, 0xFA, 0xFC):
		return 2, 0.2 // NEC and IBM extensions
	}
	return 2, -1 // unassigned or user-defined (F040-F9FC)
}

// euckrChar rates an EUC-KR (code page 949) character: the 2350 KS X 1001
// Hangul syllables best, symbols and jamo next, hanja less; the extra
// syllables of code page 949 are rare.
func euckrChar(b []byte, common func(uint16) float64) (int, float64) {
	c := b[0]
	switch {
	case c == 0x80 || c == 0xFF:
		return 1, -1
	case len(b) < 2:
		return 0, 0
	}
	t := b[1]
	switch {
	case t >= 0xA1 && t <= 0xFE:
		switch {
		case in(c, 0xB0, 0xC8):
			return 2, common(uint16(c)<<8 | uint16(t))
		case in(c, 0xA1, 0xAC):
			return 2, 0.6
		case in(c, 0xCA, 0xFD):
			return 2, 0.4
		}
		if c <= 0xC6 {
			return 2, 0.3
		}
		return 2, -1
	case (in(t, 0x41, 0x5A) || in(t, 0x61, 0x7A) || in(t, 0x81, 0xA0)) && c <= 0xC6:
		return 2, 0.3 // code page 949 extension syllables
	}
	return 1, -1
}

// scripts are told apart for the "one script per word" rule.
var scripts = []*unicode.RangeTable{unicode.Latin, unicode.Cyrillic, unicode.Greek, unicode.Hebrew,
	unicode.Arabic, unicode.Thai, unicode.Han, unicode.Hangul, unicode.Hiragana, unicode.Katakana}

func scriptOf(r rune) int {
	for i, s := range scripts {
		if unicode.Is(s, r) {
			return i
		}
	}
	return -1
}

func isBox(r rune) bool { return r >= 0x2500 && r <= 0x259F }

// isAccented reports an accented (non-ASCII) Latin letter.
func isAccented(r rune) bool { return r >= 0xC0 && r <= 0x24F && unicode.IsLetter(r) }

// commonAccented are the accented letters of the big Latin-script languages.
const commonAccented = "éèàçüöäßáíóúñãõâêôîëïåøæûùœąćęłńśźżčďěňřšťůž"

// commonCyrillic are the most frequent Cyrillic letters (Russian, ~80% of
// letters in text).
const commonCyrillic = "оеаинтсрвлкмдпуяы"

// scoreText sums the plausibility of the non-ASCII characters of UTF-8
// text, judged with their neighbours: a letter continuing a word of
// another script, or an upper-case letter after a lower-case one, is
// implausible ("cafÚ", "Џаўвеâ"), as are words made of accented letters
// ("Ôàéë") and symbols inside words; box drawing is plausible in lines and
// frames, not between letters.
func scoreText(text []byte) (sum float64, n int) {
	prev := ' '
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRune(text[i:])
		i += size
		next := ' '
		if i < len(text) {
			next, _ = utf8.DecodeRune(text[i:])
		}
		if r < utf8.RuneSelf {
			prev = r
			continue
		}
		n++
		sum += runeWeight(prev, r, next)
		prev = r
	}
	return sum, n
}

func runeWeight(prev, r, next rune) float64 {
	switch {
	case r == utf8.RuneError, r <= 0x9F, unicode.Is(unicode.Co, r):
		return -1
	case isBox(r):
		switch {
		case unicode.IsLetter(prev) || unicode.IsLetter(next):
			return 0.1
		case r == prev || r == next, !isBox(prev) && !unicode.IsDigit(prev), !isBox(next) && !unicode.IsDigit(next):
			return 1
		}
		return 0.5
	case unicode.IsLetter(r):
		w := letterWeight(r)
		if unicode.IsLetter(prev) {
			switch {
			case scriptOf(prev) != scriptOf(r):
				return 0.2
			case unicode.IsLower(prev) && unicode.IsUpper(r):
				return 0.2
			}
		}
		if isAccented(r) && (isAccented(prev) || isAccented(next)) {
			if isAccented(prev) && isAccented(next) {
				return w * 0.3
			}
			w *= 0.7
		}
		return w
	case unicode.IsSpace(r):
		return 0.5
	case unicode.IsNumber(r):
		return 0.4
	case unicode.IsPunct(r), unicode.IsSymbol(r):
		if unicode.IsLetter(prev) && unicode.IsLetter(next) {
			return 0.1
		}
		return 0.7
	case !unicode.IsGraphic(r):
		return -1
	}
	return 0.3
}

// letterWeight rates a non-ASCII letter on its own: common accented Latin
// and Cyrillic letters best.
func letterWeight(r rune) float64 {
	switch {
	case unicode.Is(unicode.Latin, r):
		if strings.ContainsRune(commonAccented, unicode.ToLower(r)) {
			if unicode.IsUpper(r) {
				return 0.8
			}
			return 1
		}
		return 0.6
	case unicode.Is(unicode.Cyrillic, r):
		switch {
		case unicode.IsUpper(r):
			return 0.9
		case strings.ContainsRune(commonCyrillic, r):
			return 1
		}
		return 0.7
	}
	return 1
}
