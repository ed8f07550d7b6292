package textenc

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

// fuzzEncodings are the forced encodings the fuzzer picks from (index 0:
// detection).
var fuzzEncodings = []string{"", "utf-8", "gbk", "shift_jis", "big5", "euc-kr", "cp437", "cp866", "windows-1252", "utf-16le", "utf-16be", "koi8-r", "gb18030", "euc-jp", "iso-2022-jp"}

// FuzzDecode: any bytes decode to valid UTF-8 without panicking, whole or
// in chunks; with a forced encoding (or valid UTF-8 input) the chunks add
// up to the whole decoding; valid UTF-8 comes back unchanged.
func FuzzDecode(f *testing.F) {
	for _, s := range [][]byte{gbkNihao, gbkNotFound, sjisHello, big5NotFound, euckrNotFound, cp437Box, cp866Hello,
		cp1251Missing, cp1252Accents, koi8rHello, utf16leBOM, utf16beBOM, utf16leNoBOM, []byte("héllo \xff"), nil} {
		f.Add(s, uint16(len(s)/2), uint8(0), false)
		f.Add(s, uint16(1), uint8(2), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint16, enc uint8, truncated bool) {
		d := &Decoder{Priors: []Encoding{cp(t, 437), cp(t, 1252)}}
		if name := fuzzEncodings[int(enc)%len(fuzzEncodings)]; name != "" {
			d.Forced = mustLookup(t, name)
		}
		r := d.Decode(data, truncated)
		if !utf8.Valid(r.Text) {
			t.Fatalf("Decode(%q) = %q: not valid UTF-8", data, r.Text)
		}
		if r.Encoding.IsZero() {
			t.Fatalf("Decode(%q): no encoding named", data)
		}
		if d.Forced.IsZero() && utf8.Valid(data) && bytes.IndexByte(data, 0) < 0 && !bytes.Equal(r.Text, data) {
			t.Fatalf("valid UTF-8 %q changed to %q", data, r.Text)
		}
		i := int(cut) % (len(data) + 1)
		streamed := streamAll(t, d, [][]byte{data[:i], data[i:]}, truncated)
		if !d.Forced.IsZero() && streamed != string(r.Text) {
			t.Fatalf("forced %s, cut at %d: streamed %q, decoded %q", d.Forced, i, streamed, r.Text)
		}
	})
}
