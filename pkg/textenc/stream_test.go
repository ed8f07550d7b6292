package textenc

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

// streamAll feeds chunks to a Stream and returns the concatenated output,
// checking that every piece is valid UTF-8 on its own (no character split
// between two pieces).
func streamAll(t testing.TB, d *Decoder, chunks [][]byte, truncated bool) string {
	t.Helper()
	s := d.Stream()
	var out bytes.Buffer
	for i, c := range chunks {
		piece := s.Write(bytes.Clone(c))
		if !utf8.Valid(piece) {
			t.Fatalf("chunk %d %q: output %q is not valid UTF-8", i, c, piece)
		}
		out.Write(piece)
	}
	piece := s.Flush(truncated)
	if !utf8.Valid(piece) {
		t.Fatalf("flush output %q is not valid UTF-8", piece)
	}
	out.Write(piece)
	return out.String()
}

// splits returns b cut at i and j (0 < i <= j < len(b) when possible).
func splits(b []byte, i, j int) [][]byte {
	return [][]byte{b[:i], b[i:j], b[j:]}
}

// Every two-cut split of each sample streams to the same text as Decode:
// a character cut between chunks is held back and emitted whole.
func TestStreamSplits(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		d    Decoder
	}{
		{"utf-8", []byte("héllo 你好 ┌─┐ 🙂!"), Decoder{}},
		{"forced gbk", append(append([]byte("x "), gbkNotFound...), '\n'), Decoder{Forced: gbk}},
		{"forced shift_jis", sjisHello, Decoder{Forced: sjis}},
		{"forced big5", big5NotFound, Decoder{Forced: big5}},
		{"forced euc-kr", euckrNotFound, Decoder{Forced: euckr}},
		{"forced cp866", cp866Hello, Decoder{Forced: cp(t, 866)}},
		{"forced utf-16le", utf16leBOM, Decoder{Forced: utf16LE}},
		{"utf-16le BOM detected", utf16leBOM, Decoder{}},
		{"utf-16be BOM detected", utf16beBOM, Decoder{}},
		{"utf-16 surrogate pair", []byte{0xFF, 0xFE, 0x3D, 0xD8, 0x42, 0xDE, '!', 0}, Decoder{}}, // 🙂!
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := string(tt.d.Decode(tt.in, false).Text)
			for i := 0; i <= len(tt.in); i++ {
				for j := i; j <= len(tt.in); j++ {
					if got := streamAll(t, &tt.d, splits(tt.in, i, j), false); got != want {
						t.Fatalf("split at %d,%d: streamed %q, want %q", i, j, got, want)
					}
				}
			}
		})
	}
}

// With detection, the encoding is decided on the first chunk that is not
// UTF-8; when that chunk holds the text, the stream decodes like Decode.
func TestStreamDetects(t *testing.T) {
	en := []Encoding{cp(t, 437), cp(t, 1252)}
	ru := []Encoding{cp(t, 866), cp(t, 1251)}
	tests := []struct {
		name   string
		chunks [][]byte
		priors []Encoding
		want   string
		enc    string
	}{
		{"ascii then gbk", [][]byte{[]byte("dir\r\n"), gbkNotFound, []byte("\r\n")}, en, "dir\r\n找不到文件。\r\n", "gbk"},
		{"gbk cut mid-character", [][]byte{gbkNotFound[:3], gbkNotFound[3:]}, en, "找不到文件。", "gbk"},
		{"cp1251 then more", [][]byte{cp1251Missing, []byte(" \xcf\xf0\xe8\xe2\xe5\xf2")}, ru, "Файл не найден. Привет", "windows-1251"},
		{"cp866 with OEM prior", [][]byte{cp866Hello}, ru, "Привет, мир", "ibm866"},
		{"utf-16le no BOM", [][]byte{utf16leNoBOM[:10], utf16leNoBOM[10:]}, en, "Node,Name\r\nPC1\r\n", "utf-16le"},
		{"tiny first chunk held", [][]byte{{0xFF}, {0xFE, 'o', 0, 'k', 0}}, en, "ok", "utf-16le"},
		{"utf-8 stays undecided", [][]byte{[]byte("h\xc3"), []byte("\xa9llo")}, en, "héllo", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &Decoder{Priors: tt.priors}
			s := d.Stream()
			var out []byte
			for _, c := range tt.chunks {
				piece := s.Write(c)
				if !utf8.Valid(piece) {
					t.Fatalf("piece %q not valid UTF-8", piece)
				}
				out = append(out, piece...)
			}
			out = append(out, s.Flush(false)...)
			if string(out) != tt.want || s.Encoding().Name() != tt.enc {
				t.Fatalf("streamed %q as %q, want %q as %q", out, s.Encoding().Name(), tt.want, tt.enc)
			}
		})
	}
}

// Valid UTF-8 chunks that end on a character boundary pass through without
// a copy; a held-back partial character is emitted with the next chunk.
func TestStreamUTF8NoCopy(t *testing.T) {
	s := (&Decoder{Priors: []Encoding{gbk}}).Stream()
	in := []byte("hello wörld\n")
	out := s.Write(in)
	if len(out) != len(in) || &out[0] != &in[0] {
		t.Fatal("valid UTF-8 chunk was copied")
	}
	if got := s.Write([]byte("x\xe4\xbd")); string(got) != "x" {
		t.Fatalf("got %q, want the partial character held back", got)
	}
	if got := s.Write([]byte("\xa0!")); string(got) != "你!" {
		t.Fatalf("got %q, want the character completed", got)
	}
	if got := s.Flush(false); len(got) != 0 {
		t.Fatalf("flush = %q, want nothing", got)
	}
	if !s.Encoding().IsZero() {
		t.Fatalf("stream decided %s on valid UTF-8", s.Encoding())
	}
}

// At the end, an incomplete character becomes U+FFFD, or is dropped when
// the output was truncated.
func TestStreamFlush(t *testing.T) {
	for _, tt := range []struct {
		name      string
		d         Decoder
		in        []byte
		truncated bool
		want      string
	}{
		{"utf-8 cut", Decoder{}, []byte("ab\xe4\xbd"), false, "ab\uFFFD"},
		{"utf-8 cut, truncated", Decoder{}, []byte("ab\xe4\xbd"), true, "ab"},
		{"gbk cut", Decoder{Forced: gbk}, []byte{0xC4, 0xE3, 0xBA}, false, "你\uFFFD"},
		{"gbk cut, truncated", Decoder{Forced: gbk}, []byte{0xC4, 0xE3, 0xBA}, true, "你"},
		{"lone 0xFF", Decoder{}, []byte{0xFF}, false, "\uFFFD"},
	} {
		if got := streamAll(t, &tt.d, [][]byte{tt.in}, tt.truncated); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

func BenchmarkDecodeUTF8(b *testing.B) {
	in := bytes.Repeat([]byte("plain output line with ünïcödé\n"), 1<<12)
	d := &Decoder{Priors: []Encoding{gbk}}
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		_ = d.Decode(in, false)
	}
}

func BenchmarkDecodeGBK(b *testing.B) {
	in := bytes.Repeat(append(append([]byte{}, gbkNotFound...), '\n'), 1<<12)
	d := &Decoder{Priors: []Encoding{gbk}}
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		_ = d.Decode(in, false)
	}
}

func BenchmarkStreamUTF8(b *testing.B) {
	in := bytes.Repeat([]byte("plain output line with ünïcödé\n"), 1<<10)
	s := (&Decoder{}).Stream()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		_ = s.Write(in)
	}
}
