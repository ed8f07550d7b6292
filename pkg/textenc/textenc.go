// Package textenc turns the output of host processes into UTF-8.
//
// Most output already is UTF-8 and passes through untouched (no copy). The
// rest is decoded with golang.org/x/text encodings:
//
//   - an encoding the operator named (Lookup: "gbk", "cp866", "shift_jis",
//     "utf-16le", "windows-1252", a Windows code page number…);
//   - UTF-16 announced by a byte order mark, or recognised by its pattern of
//     NUL bytes (cmd /u, wmic);
//   - otherwise the candidates: the system's own encodings (SystemPriors:
//     the console, OEM and ANSI code pages on Windows, the locale's charset
//     on Unix), a detector for GBK, Shift-JIS, Big5 and EUC-KR (for when the
//     code page is wrong), Windows-1252 and lossy UTF-8. Each candidate is
//     scored on a sample (see score.go) and the best is used; Result.Confident
//     says whether the choice is clear, so the caller can keep the raw bytes
//     when it is not.
//
// Decoder.Decode handles a whole output; Decoder.Stream decodes chunk by
// chunk without ever splitting a character between two chunks.
package textenc

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/ianaindex"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
	"golang.org/x/text/encoding/unicode"
)

// ErrUnknownEncoding is wrapped by Lookup's error for a name it cannot
// resolve to a supported encoding.
var ErrUnknownEncoding = errors.New("unknown encoding")

// family says how an encoding is scored by the detector.
type family uint8

const (
	familySingle family = iota // one byte per character (code pages, ISO 8859, KOI8)
	familyUTF8
	familyUTF16
	familyGBK
	familyBig5
	familyShiftJIS
	familyEUCKR
	familyOther // other multibyte encodings (EUC-JP, ISO-2022-JP, GB18030)
)

// Encoding is a named text encoding. The zero value is "no encoding".
type Encoding struct {
	name string
	enc  encoding.Encoding
	fam  family
}

// Name is the encoding's canonical lower-case name, as accepted by Lookup
// ("gbk", "ibm866", "windows-1252", "utf-16le"…); "" for the zero value.
func (e Encoding) Name() string { return e.name }

// IsZero reports whether e is the zero Encoding.
func (e Encoding) IsZero() bool { return e.enc == nil }

// String is the name.
func (e Encoding) String() string { return e.name }

// UTF8 is UTF-8 (invalid bytes decode to U+FFFD).
var UTF8 = Encoding{name: "utf-8", enc: unicode.UTF8, fam: familyUTF8}

var (
	utf16LE = Encoding{name: "utf-16le", enc: unicode.UTF16(unicode.LittleEndian, unicode.UseBOM), fam: familyUTF16}
	utf16BE = Encoding{name: "utf-16be", enc: unicode.UTF16(unicode.BigEndian, unicode.UseBOM), fam: familyUTF16}
	gbk     = Encoding{name: "gbk", enc: simplifiedchinese.GBK, fam: familyGBK}
	big5    = Encoding{name: "big5", enc: traditionalchinese.Big5, fam: familyBig5}
	sjis    = Encoding{name: "shift_jis", enc: japanese.ShiftJIS, fam: familyShiftJIS}
	euckr   = Encoding{name: "euc-kr", enc: korean.EUCKR, fam: familyEUCKR}
	win1252 = Encoding{name: "windows-1252", enc: charmap.Windows1252, fam: familySingle}
)

func single(name string, cm *charmap.Charmap) Encoding {
	return Encoding{name: name, enc: cm, fam: familySingle}
}

// codePages maps Windows code page numbers to encodings.
var codePages = map[uint32]Encoding{
	437:   single("ibm437", charmap.CodePage437),
	850:   single("ibm850", charmap.CodePage850),
	852:   single("ibm852", charmap.CodePage852),
	855:   single("ibm855", charmap.CodePage855),
	858:   single("ibm00858", charmap.CodePage858),
	860:   single("ibm860", charmap.CodePage860),
	862:   single("ibm862", charmap.CodePage862),
	863:   single("ibm863", charmap.CodePage863),
	865:   single("ibm865", charmap.CodePage865),
	866:   single("ibm866", charmap.CodePage866),
	874:   single("windows-874", charmap.Windows874),
	932:   sjis,
	936:   gbk,
	949:   euckr,
	950:   big5,
	1200:  utf16LE,
	1201:  utf16BE,
	1250:  single("windows-1250", charmap.Windows1250),
	1251:  single("windows-1251", charmap.Windows1251),
	1252:  win1252,
	1253:  single("windows-1253", charmap.Windows1253),
	1254:  single("windows-1254", charmap.Windows1254),
	1255:  single("windows-1255", charmap.Windows1255),
	1256:  single("windows-1256", charmap.Windows1256),
	1257:  single("windows-1257", charmap.Windows1257),
	1258:  single("windows-1258", charmap.Windows1258),
	10000: single("macintosh", charmap.Macintosh),
	20866: single("koi8-r", charmap.KOI8R),
	21866: single("koi8-u", charmap.KOI8U),
	20932: {name: "euc-jp", enc: japanese.EUCJP, fam: familyOther},
	50220: {name: "iso-2022-jp", enc: japanese.ISO2022JP, fam: familyOther},
	51932: {name: "euc-jp", enc: japanese.EUCJP, fam: familyOther},
	51949: euckr,
	54936: {name: "gb18030", enc: simplifiedchinese.GB18030, fam: familyOther},
	28591: single("iso-8859-1", charmap.ISO8859_1),
	28592: single("iso-8859-2", charmap.ISO8859_2),
	28593: single("iso-8859-3", charmap.ISO8859_3),
	28594: single("iso-8859-4", charmap.ISO8859_4),
	28595: single("iso-8859-5", charmap.ISO8859_5),
	28596: single("iso-8859-6", charmap.ISO8859_6),
	28597: single("iso-8859-7", charmap.ISO8859_7),
	28598: single("iso-8859-8", charmap.ISO8859_8),
	28599: single("iso-8859-9", charmap.ISO8859_9),
	28603: single("iso-8859-13", charmap.ISO8859_13),
	28605: single("iso-8859-15", charmap.ISO8859_15),
	65001: UTF8,
}

// byName is every encoding of codePages by its canonical name.
var byName = func() map[string]Encoding {
	m := make(map[string]Encoding, len(codePages))
	for _, e := range codePages {
		m[e.name] = e
	}
	return m
}()

// CodePage returns the encoding of a Windows code page number (437, 850,
// 866, 932, 936, 949, 950, 1250-1258, 20866, 28591-28605, 65001…).
func CodePage(cp uint32) (Encoding, bool) {
	e, ok := codePages[cp]
	return e, ok
}

// Lookup resolves an encoding name: a canonical name ("gbk", "ibm866"), a
// WHATWG label ("shift_jis", "windows-1252", "utf-16le", "koi8-r", "gb2312"
// …), an IANA name or alias ("IBM437", "cp850", "latin1"…), or a Windows
// code page ("936", "cp936", "windows-936", "ibm866"). Matching ignores
// case and surrounding blanks. An unknown or unsupported name is an error
// wrapping ErrUnknownEncoding.
func Lookup(name string) (Encoding, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if n == "" {
		return Encoding{}, fmt.Errorf("%w: empty name", ErrUnknownEncoding)
	}
	if e, ok := byName[n]; ok {
		return e, nil
	}
	switch n {
	case "utf8", "utf-8":
		return UTF8, nil
	case "utf-16", "utf16", "utf16le", "ucs-2", "unicode":
		return utf16LE, nil
	case "utf16be":
		return utf16BE, nil
	}
	for _, prefix := range []string{"cp", "windows-", "ibm", "ms", ""} {
		if num, ok := strings.CutPrefix(n, prefix); ok {
			if cp, err := strconv.ParseUint(num, 10, 32); err == nil {
				if e, ok := codePages[uint32(cp)]; ok {
					return e, nil
				}
			}
		}
	}
	enc, err := htmlindex.Get(n)
	if err != nil || enc == nil || enc == encoding.Replacement { // WHATWG replaces some (hz-gb-2312) that IANA has
		enc, err = ianaindex.IANA.Encoding(n)
	}
	if err != nil || enc == nil || enc == encoding.Replacement {
		return Encoding{}, fmt.Errorf("%w: %q", ErrUnknownEncoding, name)
	}
	return fromX(enc), nil
}

// fromX wraps an x/text encoding, with the canonical name of the code page
// table when it is one of those.
func fromX(enc encoding.Encoding) Encoding {
	for _, e := range codePages {
		if e.enc == enc {
			return e
		}
	}
	switch enc {
	case unicode.UTF8, unicode.UTF8BOM:
		return UTF8
	case unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM), unicode.UTF16(unicode.LittleEndian, unicode.ExpectBOM):
		return utf16LE
	case unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM), unicode.UTF16(unicode.BigEndian, unicode.ExpectBOM):
		return utf16BE
	}
	name, err := htmlindex.Name(enc)
	if err != nil {
		name, err = ianaindex.IANA.Name(enc)
	}
	if err != nil {
		name = fmt.Sprint(enc)
	}
	fam := familyOther
	if _, ok := enc.(*charmap.Charmap); ok {
		fam = familySingle
	}
	return Encoding{name: strings.ToLower(name), enc: enc, fam: fam}
}

// appendPrior appends the encoding of code page cp to priors unless it is
// 0, unknown, UTF-8 or already there.
func appendPrior(priors []Encoding, cp uint32) []Encoding {
	e, ok := codePages[cp]
	if !ok || e.fam == familyUTF8 {
		return priors
	}
	for _, p := range priors {
		if p.name == e.name {
			return priors
		}
	}
	return append(priors, e)
}
