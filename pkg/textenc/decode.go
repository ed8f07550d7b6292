package textenc

import (
	"bytes"
	"errors"
	"unicode/utf8"

	"golang.org/x/text/transform"
)

// Decoder turns process output into UTF-8. The zero value detects the
// encoding with no system encodings to prefer. A Decoder is not modified
// by its methods and may be shared.
type Decoder struct {
	// Forced, when not zero, is used for everything: no detection.
	Forced Encoding
	// Priors are the system's encodings, most likely first (see
	// SystemPriors): preferred by the detector.
	Priors []Encoding
}

// Result is a decoded output.
type Result struct {
	// Text is the output in UTF-8. When the output was valid UTF-8 it is
	// the input itself (no copy).
	Text []byte
	// Encoding is what the output was decoded from (UTF8 for output that
	// was valid UTF-8).
	Encoding Encoding
	// Confident is false when the encoding was a guess among close
	// candidates, or the output did not decode cleanly (it has U+FFFD
	// where bytes were invalid): the caller should keep the raw bytes.
	Confident bool
}

// Decode decodes a whole output. truncated says the output was cut at a
// size limit: an incomplete character at its end is then dropped instead
// of decoded as U+FFFD.
func (d *Decoder) Decode(b []byte, truncated bool) Result {
	if !d.Forced.IsZero() {
		text, clean := decodeAll(d.Forced, b, truncated)
		return Result{Text: text, Encoding: d.Forced, Confident: clean}
	}
	if e, ok := sniff(b, truncated); ok {
		if e.fam == familyUTF8 {
			return Result{Text: b[:len(b)-cutTail(b, truncated)], Encoding: UTF8, Confident: true}
		}
		text, clean := decodeAll(e, b, truncated)
		return Result{Text: text, Encoding: e, Confident: clean}
	}
	e, confident := detect(b, d.Priors)
	text, clean := decodeAll(e, b, truncated)
	return Result{Text: text, Encoding: e, Confident: confident && clean}
}

// cutTail is the length of an incomplete UTF-8 sequence at the end of b
// when truncated, else 0.
func cutTail(b []byte, truncated bool) int {
	if !truncated {
		return 0
	}
	return partialRune(b)
}

// sniff recognises the encodings that need no detector: UTF-16 with a
// byte order mark or with the NUL bytes of mostly-ASCII text, and valid
// UTF-8 (an incomplete character at the end allowed when partialOK).
func sniff(b []byte, partialOK bool) (Encoding, bool) {
	if len(b) >= 2 {
		switch {
		case b[0] == 0xFF && b[1] == 0xFE:
			return utf16LE, true
		case b[0] == 0xFE && b[1] == 0xFF:
			return utf16BE, true
		}
	}
	if bytes.IndexByte(b, 0) >= 0 {
		if e, ok := looksUTF16(b); ok {
			return e, true
		}
	}
	cut := len(b)
	if partialOK {
		cut -= partialRune(b)
	}
	if utf8.Valid(b[:cut]) {
		return UTF8, true
	}
	return Encoding{}, false
}

// looksUTF16 recognises UTF-16 without a byte order mark by its NUL bytes:
// in text that is mostly ASCII, every other byte is NUL.
func looksUTF16(b []byte) (Encoding, bool) {
	const maxScan = 4 << 10
	n := min(len(b), maxScan) &^ 1
	if n < 4 {
		return Encoding{}, false
	}
	var even, odd int // NUL bytes at even and odd offsets
	for i := 0; i < n; i += 2 {
		if b[i] == 0 {
			even++
		}
		if b[i+1] == 0 {
			odd++
		}
	}
	pairs := n / 2
	switch {
	case odd*10 >= pairs*6 && even*10 <= pairs:
		return utf16LE, true
	case even*10 >= pairs*6 && odd*10 <= pairs:
		return utf16BE, true
	}
	return Encoding{}, false
}

// decodeAll decodes b with e; clean is false when the result has U+FFFD.
// Valid UTF-8 decoded as UTF-8 is returned as is.
func decodeAll(e Encoding, b []byte, truncated bool) (text []byte, clean bool) {
	if e.fam == familyUTF8 {
		if cut := len(b) - cutTail(b, truncated); utf8.Valid(b[:cut]) {
			return b[:cut], true
		}
	}
	text, _ = transformAll(e.enc.NewDecoder(), nil, b, !truncated)
	return text, !bytes.ContainsRune(text, utf8.RuneError)
}

// transformAll runs t over all of src, appending to dst. With atEOF false,
// an incomplete character at the end of src is not decoded but returned
// as rest.
func transformAll(t transform.Transformer, dst, src []byte, atEOF bool) (out, rest []byte) {
	out = dst[:0]
	if need := len(src)*3 + 16; cap(out) < need {
		out = make([]byte, 0, need)
	}
	for {
		nDst, nSrc, err := t.Transform(out[len(out):cap(out)], src, atEOF)
		out = out[:len(out)+nDst]
		src = src[nSrc:]
		switch {
		case err == nil:
			return out, nil
		case errors.Is(err, transform.ErrShortDst):
			out = append(out, make([]byte, len(src)*3+16)...)[:len(out)]
		case errors.Is(err, transform.ErrShortSrc):
			if atEOF || len(src) == 0 {
				return out, nil
			}
			return out, src
		default: // decoders replace invalid input; this is not expected
			if len(src) == 0 {
				return out, nil
			}
			out = utf8.AppendRune(out, utf8.RuneError)
			src = src[1:]
			t.Reset()
		}
	}
}

// partialRune is the length of an incomplete UTF-8 sequence at the end of
// b: a valid start of a character that the next bytes may complete (0 when
// b ends on a character boundary or with invalid bytes).
func partialRune(b []byte) int {
	for i := 1; i <= utf8.UTFMax-1 && i <= len(b); i++ {
		tail := b[len(b)-i:]
		if utf8.RuneStart(tail[0]) {
			if tail[0] >= utf8.RuneSelf && !utf8.FullRune(tail) {
				return i
			}
			return 0
		}
	}
	return 0
}

// Stream decodes one output stream chunk by chunk (a Decoder's Stream).
// The encoding is decided on the first bytes that need it: while the
// output is valid UTF-8 it passes through; the first chunk that is not
// decides (by detection, on that chunk) the encoding for the rest of the
// stream. A character split between two chunks is held back and emitted
// whole. A Stream is not safe for concurrent use.
type Stream struct {
	d       *Decoder
	t       transform.Transformer // nil until decided
	enc     Encoding
	started bool   // past the start (BOM and UTF-16 checks done)
	pend    []byte // bytes held back: an incomplete character
	work    []byte // pend plus the new chunk
	out     []byte // decoded output, reused
}

// Stream returns a chunk-wise decoder for one output stream.
func (d *Decoder) Stream() *Stream {
	s := &Stream{d: d}
	if !d.Forced.IsZero() {
		s.choose(d.Forced)
	}
	return s
}

// Encoding is the encoding the stream decided on; zero while undecided
// (all output so far was valid UTF-8).
func (s *Stream) Encoding() Encoding { return s.enc }

func (s *Stream) choose(e Encoding) {
	s.enc, s.t, s.started = e, e.enc.NewDecoder(), true
}

// Write takes the next chunk and returns the UTF-8 text to publish for it
// (possibly empty: an incomplete character is held back). The returned
// slice is p itself or a buffer of the Stream: valid until the next call.
func (s *Stream) Write(p []byte) []byte {
	buf := p
	if len(s.pend) > 0 {
		s.work = append(append(s.work[:0], s.pend...), p...)
		buf = s.work
		s.pend = s.pend[:0]
	}
	if s.t == nil && !s.started {
		if len(buf) < 4 && (len(buf) == 0 || buf[0] == 0xFF || buf[0] == 0xFE || buf[0] == 0) {
			s.pend = append(s.pend, buf...) // too short to tell UTF-16 from other text
			return nil
		}
		s.started = true
		if e, ok := sniff(buf, true); ok && e.fam == familyUTF16 {
			s.choose(e)
		}
	}
	if s.t == nil {
		cut := len(buf) - partialRune(buf)
		if utf8.Valid(buf[:cut]) {
			s.pend = append(s.pend, buf[cut:]...)
			return buf[:cut]
		}
		e, _ := detect(buf, s.d.Priors)
		s.choose(e)
	}
	var rest []byte
	s.out, rest = transformAll(s.t, s.out, buf, false)
	s.pend = append(s.pend, rest...)
	return s.out
}

// Flush ends the stream and returns what was held back, decoded. When
// truncated (the output was cut at a size limit), an incomplete character
// is dropped instead of decoded as U+FFFD.
func (s *Stream) Flush(truncated bool) []byte {
	if len(s.pend) == 0 {
		return nil
	}
	if s.t == nil {
		if e, ok := sniff(s.pend, false); ok {
			s.choose(e)
		} else {
			s.choose(UTF8)
		}
	}
	s.out, _ = transformAll(s.t, s.out, s.pend, !truncated) // the rest: an incomplete character, dropped
	s.pend = s.pend[:0]
	return s.out
}
