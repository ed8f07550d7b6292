package textenc

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
	"golang.org/x/text/encoding/unicode"
)

func TestLookup(t *testing.T) {
	tests := []struct {
		name, want string
	}{
		{"gbk", "gbk"},
		{"GBK", "gbk"},
		{" gb2312 ", "gbk"},
		{"cp936", "gbk"},
		{"936", "gbk"},
		{"windows-936", "gbk"},
		{"cp866", "ibm866"},
		{"IBM866", "ibm866"},
		{"866", "ibm866"},
		{"cp437", "ibm437"},
		{"ibm437", "ibm437"},
		{"cp850", "ibm850"},
		{"shift_jis", "shift_jis"},
		{"sjis", "shift_jis"},
		{"windows-31j", "shift_jis"},
		{"cp932", "shift_jis"},
		{"big5", "big5"},
		{"cp950", "big5"},
		{"euc-kr", "euc-kr"},
		{"cp949", "euc-kr"},
		{"utf-16le", "utf-16le"},
		{"UTF-16BE", "utf-16be"},
		{"utf-16", "utf-16le"},
		{"utf-8", "utf-8"},
		{"utf8", "utf-8"},
		{"65001", "utf-8"},
		{"windows-1252", "windows-1252"},
		{"cp1251", "windows-1251"},
		{"latin1", "windows-1252"}, // WHATWG: latin1 means windows-1252
		{"iso-8859-1", "iso-8859-1"},
		{"ISO-8859-15", "iso-8859-15"},
		{"koi8-r", "koi8-r"},
		{"20866", "koi8-r"},
		{"euc-jp", "euc-jp"},
		{"gb18030", "gb18030"},
		{"macintosh", "macintosh"},
	}
	for _, tt := range tests {
		e, err := Lookup(tt.name)
		if err != nil || e.Name() != tt.want {
			t.Errorf("Lookup(%q) = %q, %v; want %q", tt.name, e.Name(), err, tt.want)
			continue
		}
		// The canonical name resolves to the same encoding.
		if e2, err := Lookup(e.Name()); err != nil || e2.Name() != e.Name() {
			t.Errorf("Lookup(%q) (canonical of %q) = %q, %v", e.Name(), tt.name, e2.Name(), err)
		}
	}
	for _, bad := range []string{"", "  ", "klingon", "cp99999", "utf-7", "replacement", "x-user-defined-nope", "iso-2022-kr"} {
		if e, err := Lookup(bad); err == nil || !errors.Is(err, ErrUnknownEncoding) {
			t.Errorf("Lookup(%q) = %q, %v; want ErrUnknownEncoding", bad, e.Name(), err)
		}
	}
}

func TestCodePage(t *testing.T) {
	for cp, want := range map[uint32]string{437: "ibm437", 850: "ibm850", 852: "ibm852", 866: "ibm866", 874: "windows-874",
		932: "shift_jis", 936: "gbk", 949: "euc-kr", 950: "big5", 1250: "windows-1250", 1251: "windows-1251",
		1252: "windows-1252", 1253: "windows-1253", 1254: "windows-1254", 1255: "windows-1255", 1256: "windows-1256",
		1257: "windows-1257", 1258: "windows-1258", 20866: "koi8-r", 28591: "iso-8859-1", 28605: "iso-8859-15", 65001: "utf-8"} {
		if e, ok := CodePage(cp); !ok || e.Name() != want {
			t.Errorf("CodePage(%d) = %q, %v; want %q", cp, e.Name(), ok, want)
		}
	}
	if _, ok := CodePage(12345); ok {
		t.Error("CodePage(12345) found")
	}
	var prio []Encoding
	for _, cp := range []uint32{0, 437, 65001, 437, 1252, 99999} {
		prio = appendPrior(prio, cp)
	}
	if len(prio) != 2 || prio[0].Name() != "ibm437" || prio[1].Name() != "windows-1252" {
		t.Errorf("appendPrior kept %v, want [ibm437 windows-1252]", prio)
	}
}

func TestLocaleCharset(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string // "" = none
	}{
		{map[string]string{}, ""},
		{map[string]string{"LANG": "C"}, ""},
		{map[string]string{"LANG": "POSIX"}, ""},
		{map[string]string{"LANG": "en_US.UTF-8"}, ""},
		{map[string]string{"LANG": "de_DE.utf8"}, ""},
		{map[string]string{"LANG": "ru_RU"}, ""}, // no codeset
		{map[string]string{"LANG": "ru_RU.KOI8-R"}, "koi8-r"},
		{map[string]string{"LANG": "en_US.ISO-8859-1"}, "iso-8859-1"},
		{map[string]string{"LANG": "de_DE.iso885915@euro"}, "iso-8859-15"},
		{map[string]string{"LANG": "ja_JP.eucJP"}, "euc-jp"},
		{map[string]string{"LANG": "ja_JP.SJIS"}, "shift_jis"},
		{map[string]string{"LANG": "zh_CN.GB2312"}, "gbk"},
		{map[string]string{"LANG": "zh_CN.gbk"}, "gbk"},
		{map[string]string{"LANG": "zh_TW.Big5"}, "big5"},
		{map[string]string{"LANG": "ko_KR.euckr"}, "euc-kr"},
		{map[string]string{"LANG": "ru_RU.CP1251"}, "windows-1251"},
		{map[string]string{"LANG": "en_US.ANSI_X3.4-1968"}, ""},
		{map[string]string{"LANG": "xx_XX.nonsense"}, ""},
		// Precedence: LC_ALL, then LC_CTYPE, then LANG.
		{map[string]string{"LC_ALL": "ru_RU.KOI8-R", "LC_CTYPE": "en_US.UTF-8", "LANG": "ja_JP.SJIS"}, "koi8-r"},
		{map[string]string{"LC_CTYPE": "ja_JP.SJIS", "LANG": "ru_RU.KOI8-R"}, "shift_jis"},
		{map[string]string{"LC_ALL": "", "LC_CTYPE": "C.UTF-8", "LANG": "ru_RU.KOI8-R"}, ""},
	}
	for _, tt := range tests {
		e, ok := LocaleCharset(func(k string) string { return tt.env[k] })
		if ok != (tt.want != "") || e.Name() != tt.want {
			t.Errorf("LocaleCharset(%v) = %q, %v; want %q", tt.env, e.Name(), ok, tt.want)
		}
	}
}

// Real byte samples: what the programs wrote.
var (
	gbkNihao      = []byte{0xC4, 0xE3, 0xBA, 0xC3}                                                                                                                         // 你好
	gbkNotFound   = []byte{0xD5, 0xD2, 0xB2, 0xBB, 0xB5, 0xBD, 0xCE, 0xC4, 0xBC, 0xFE, 0xA1, 0xA3}                                                                         // 找不到文件。 (Wine's cmd, zh_CN)
	sjisHello     = []byte{0x82, 0xB1, 0x82, 0xF1, 0x82, 0xC9, 0x82, 0xBF, 0x82, 0xCD}                                                                                     // こんにちは
	big5NotFound  = []byte{0xA7, 0xE4, 0xA4, 0xA3, 0xA8, 0xEC, 0xC0, 0xC9, 0xAE, 0xD7, 0xA1, 0x43}                                                                         // 找不到檔案。
	euckrNotFound = []byte{0xC6, 0xC4, 0xC0, 0xCF, 0xC0, 0xBB, 0x20, 0xC3, 0xA3, 0xC0, 0xBB, 0x20, 0xBC, 0xF6, 0x20, 0xBE, 0xF8, 0xBD, 0xC0, 0xB4, 0xCF, 0xB4, 0xD9, 0x2E} // 파일을 찾을 수 없습니다.
	cp437Box      = []byte("\xDA\xC4\xC4\xBF\r\n\xB3hi\xB3\r\n\xC0\xC4\xC4\xD9\r\n")                                                                                       // ┌──┐ │hi│ └──┘
	cp866Hello    = []byte{0x8F, 0xE0, 0xA8, 0xA2, 0xA5, 0xE2, 0x2C, 0x20, 0xAC, 0xA8, 0xE0}                                                                               // Привет, мир
	cp1251Missing = []byte("\xD4\xE0\xE9\xEB \xED\xE5 \xED\xE0\xE9\xE4\xE5\xED.")                                                                                          // Файл не найден. (Wine's cmd, ru_RU)
	cp1252Accents = []byte("caf\xE9 cr\xE8me br\xFBl\xE9e")                                                                                                                // café crème brûlée
	cp850Accents  = []byte("caf\x82 cr\x8Ame br\x96l\x82e")                                                                                                                // café crème brûlée
	koi8rHello    = []byte{0xF0, 0xD2, 0xC9, 0xD7, 0xC5, 0xD4, 0x2C, 0x20, 0xCD, 0xC9, 0xD2}                                                                               // Привет, мир
	utf16leBOM    = []byte{0xFF, 0xFE, 'h', 0, 0xE9, 0, 0x60, 0x4F, 0x7D, 0x59, '\r', 0, '\n', 0}                                                                          // hé你好\r\n
	utf16beBOM    = []byte{0xFE, 0xFF, 0, 'h', 0, 0xE9}                                                                                                                    // hé
	utf16leNoBOM  = []byte("N\x00o\x00d\x00e\x00,\x00N\x00a\x00m\x00e\x00\r\x00\n\x00P\x00C\x001\x00\r\x00\n\x00")                                                         // wmic-style
)

func cp(t *testing.T, n uint32) Encoding {
	t.Helper()
	e, ok := CodePage(n)
	if !ok {
		t.Fatalf("no code page %d", n)
	}
	return e
}

func TestDecode(t *testing.T) {
	zh := []Encoding{cp(t, 936)}
	ru := []Encoding{cp(t, 866), cp(t, 1251)}
	en := []Encoding{cp(t, 437), cp(t, 1252)}
	de := []Encoding{cp(t, 850), cp(t, 1252)}
	tests := []struct {
		name      string
		in        []byte
		forced    string
		priors    []Encoding
		want      string
		wantEnc   string
		confident bool
	}{
		{"ascii", []byte("hello\r\n"), "", en, "hello\r\n", "utf-8", true},
		{"utf-8", []byte("héllo 你好 ┌─┐"), "", zh, "héllo 你好 ┌─┐", "utf-8", true},
		{"empty", nil, "", en, "", "utf-8", true},
		{"gbk with zh code page", gbkNihao, "", zh, "你好", "gbk", true},
		{"gbk, code page wrong (en)", gbkNotFound, "", en, "找不到文件。", "gbk", true},
		{"gbk, no system encoding", gbkNotFound, "", nil, "找不到文件。", "gbk", true},
		{"short gbk, no system encoding", gbkNihao, "", nil, "你好", "gbk", true},
		{"shift-jis, code page wrong", sjisHello, "", en, "こんにちは", "shift_jis", true},
		{"big5, no system encoding", big5NotFound, "", nil, "找不到檔案。", "big5", true},
		{"euc-kr, no system encoding", euckrNotFound, "", nil, "파일을 찾을 수 없습니다.", "euc-kr", true},
		{"cp437 box drawing", cp437Box, "", en, "┌──┐\r\n│hi│\r\n└──┘\r\n", "ibm437", true},
		{"cp866 cyrillic (OEM)", cp866Hello, "", ru, "Привет, мир", "ibm866", true},
		{"cp1251 cyrillic (ANSI)", cp1251Missing, "", ru, "Файл не найден.", "windows-1251", true},
		{"cp1252 accents (ANSI)", cp1252Accents, "", de, "café crème brûlée", "windows-1252", true},
		{"cp850 accents (OEM)", cp850Accents, "", de, "café crème brûlée", "ibm850", true},
		{"cp1252, no system encoding", cp1252Accents, "", nil, "café crème brûlée", "windows-1252", true},
		{"koi8-r locale", koi8rHello, "", []Encoding{mustLookup(t, "koi8-r")}, "Привет, мир", "koi8-r", true},
		{"utf-16le with BOM", utf16leBOM, "", en, "hé你好\r\n", "utf-16le", true},
		{"utf-16be with BOM", utf16beBOM, "", en, "hé", "utf-16be", true},
		{"utf-16le without BOM", utf16leNoBOM, "", en, "Node,Name\r\nPC1\r\n", "utf-16le", true},
		{"forced gbk", gbkNihao, "gbk", en, "你好", "gbk", true},
		{"forced cp866 over detection", cp866Hello, "cp866", zh, "Привет, мир", "ibm866", true},
		{"forced utf-8, valid", []byte("ok ✓"), "utf-8", nil, "ok ✓", "utf-8", true},
		{"forced utf-8, invalid", []byte("ok \xff"), "utf-8", nil, "ok \uFFFD", "utf-8", false},
		{"forced shift_jis, invalid bytes", []byte{0x82, 0xB1, 0xFF, 0xFF}, "shift_jis", nil, "こ\uFFFD\uFFFD", "shift_jis", false},
		{"forced utf-16le", []byte{'o', 0, 'k', 0}, "utf-16le", nil, "ok", "utf-16le", true},
		{"mostly utf-8 with a stray byte", []byte("héllo wörld \xff done"), "", en, "héllo wörld \uFFFD done", "utf-8", false},
		{"garbage", []byte{0x80, 0x81, 0xFF, 0xFE, 0x8D}, "", nil, "", "", false},
		{"truncated gbk", append(append([]byte{}, gbkNotFound...), 0xD5), "", zh, "找不到文件。\uFFFD", "gbk", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &Decoder{Priors: tt.priors}
			if tt.forced != "" {
				d.Forced = mustLookup(t, tt.forced)
			}
			r := d.Decode(tt.in, false)
			if !utf8.Valid(r.Text) {
				t.Fatalf("Decode returned invalid UTF-8 %q", r.Text)
			}
			if tt.name == "garbage" { // whatever it is, it is not trusted
				if r.Confident {
					t.Fatalf("garbage decoded with confidence as %s: %q", r.Encoding, r.Text)
				}
				return
			}
			if string(r.Text) != tt.want || r.Encoding.Name() != tt.wantEnc || r.Confident != tt.confident {
				t.Fatalf("Decode = %q, %s, confident %v; want %q, %s, %v", r.Text, r.Encoding, r.Confident, tt.want, tt.wantEnc, tt.confident)
			}
		})
	}
}

func mustLookup(t *testing.T, name string) Encoding {
	t.Helper()
	e, err := Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Valid UTF-8 is returned as is: no copy.
func TestDecodeUTF8NoCopy(t *testing.T) {
	in := []byte("plain ascii and ünïcödé output\n")
	r := (&Decoder{Priors: []Encoding{cp(t, 437)}}).Decode(in, false)
	if &r.Text[0] != &in[0] || len(r.Text) != len(in) {
		t.Fatal("valid UTF-8 was copied")
	}
	allocs := testing.AllocsPerRun(100, func() {
		_ = (&Decoder{}).Decode(in, false)
	})
	if allocs > 0 {
		t.Fatalf("%v allocations decoding valid UTF-8, want 0", allocs)
	}
}

// Output cut at the size limit: the broken last character is dropped, not
// turned into U+FFFD.
func TestDecodeTruncated(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		d    Decoder
		want string
	}{
		{"utf-8", []byte("ab你"[:4]), Decoder{}, "ab"},
		{"gbk", append(append([]byte{}, gbkNotFound...), 0xD5), Decoder{Priors: []Encoding{gbk}}, "找不到文件。"},
		{"forced gbk", append(append([]byte{}, gbkNihao...), 0xD5), Decoder{Forced: gbk}, "你好"},
		{"utf-16le odd byte", append(append([]byte{}, utf16leBOM...), 'x'), Decoder{}, "hé你好\r\n"},
	}
	for _, tt := range tests {
		r := tt.d.Decode(tt.in, true)
		if string(r.Text) != tt.want {
			t.Errorf("%s: Decode(truncated) = %q, want %q", tt.name, r.Text, tt.want)
		}
	}
}

// A large output is detected from a sample and decoded whole.
func TestDecodeLarge(t *testing.T) {
	in := bytes.Repeat(append([]byte("line "), append(gbkNotFound, '\n')...), 20000) // ~360 KB
	r := (&Decoder{Priors: []Encoding{cp(t, 437), cp(t, 1252)}}).Decode(in, false)
	if r.Encoding.Name() != "gbk" || !r.Confident {
		t.Fatalf("Decode = %s confident %v", r.Encoding, r.Confident)
	}
	if want := strings.Repeat("line 找不到文件。\n", 20000); string(r.Text) != want {
		t.Fatalf("decoded text differs (len %d, want %d)", len(r.Text), len(want))
	}
}

func TestSampleOf(t *testing.T) {
	b := append(bytes.Repeat([]byte("a"), 100), gbkNihao...)
	if s := sampleOf(b); !bytes.Equal(s, append([]byte("a"), gbkNihao...)) {
		t.Fatalf("sampleOf = %q", s)
	}
	big := bytes.Repeat([]byte{0xC4}, 3*sampleSize)
	if s := sampleOf(big); len(s) != sampleSize {
		t.Fatalf("sample of %d bytes, want %d", len(s), sampleSize)
	}
}

// Every encoding x/text has can be wrapped and named, and the name leads
// back to an encoding that decodes the same way.
func TestFromXAll(t *testing.T) {
	var xs []encoding.Encoding
	for _, l := range [][]encoding.Encoding{charmap.All, japanese.All, korean.All, simplifiedchinese.All, traditionalchinese.All, unicode.All} {
		xs = append(xs, l...)
	}
	for _, x := range xs {
		e := fromX(x)
		if e.Name() == "" || e.IsZero() {
			t.Errorf("%v: no name", x)
			continue
		}
		back, err := Lookup(e.Name())
		if err != nil {
			t.Errorf("%v: Lookup(%q): %v", x, e.Name(), err)
			continue
		}
		sample := []byte("abc \x80\xa4\xe9\xfe\xc4\xe3")
		a, _ := decodeAll(e, sample, false)
		b, _ := decodeAll(back, sample, false)
		if !bytes.Equal(a, b) && e.Name() != "iso-8859-1" {
			t.Errorf("%v: %q decodes differently after Lookup(%q): %q vs %q", x, sample, e.Name(), a, b)
		}
	}
}
