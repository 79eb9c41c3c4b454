package attach

import (
	"bufio"
	"encoding/base64"
	"io"
)

// Content-Transfer-Encoding decoders (RFC 2045 section 6). Both are
// deliberately more lenient than encoding/base64's stream decoder and
// mime/quotedprintable, because the mail client that shows the attachment is
// lenient too: a decoder that stops at the first oddity (a stray character,
// a NUL byte, a line longer than its buffer) would let a sender hide content
// behind it. Oddities are counted and reported as problems instead.

// b64Reader decodes base64 (RFC 2045 section 6.8). It skips white space and
// any other character outside the alphabet (counted in bad), treats "=" as
// the end of one encoded run so that concatenated runs decode too, and
// decodes a trailing partial quantum as far as it goes.
type b64Reader struct {
	src     io.Reader
	in      [4096]byte
	out     [3072 + 3]byte
	rd, wr  int // unread decoded bytes are out[rd:wr]
	q       [4]byte
	nq      int
	err     error
	bad     int // characters neither in the alphabet, padding nor white space
	brokenQ int // runs cut after a single character (6 bits: no byte)
}

func newB64Reader(r io.Reader) *b64Reader { return &b64Reader{src: r} }

func isB64(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/'
}

func (b *b64Reader) Read(p []byte) (int, error) {
	for b.rd == b.wr {
		if b.err != nil {
			return 0, b.err
		}
		b.rd, b.wr = 0, 0
		m, err := b.src.Read(b.in[:])
		for _, c := range b.in[:m] {
			switch {
			case isB64(c):
				b.q[b.nq] = c
				b.nq++
				if b.nq == 4 {
					// Cannot fail: four alphabet characters.
					base64.StdEncoding.Decode(b.out[b.wr:], b.q[:])
					b.wr += 3
					b.nq = 0
				}
			case c == '=':
				b.flush()
			case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			default:
				b.bad++
			}
		}
		if err != nil {
			b.flush()
			b.err = err
		}
	}
	n := copy(p, b.out[b.rd:b.wr])
	b.rd += n
	return n, nil
}

// flush decodes a partial quantum (2 or 3 characters) without padding.
func (b *b64Reader) flush() {
	switch b.nq {
	case 0:
		return
	case 1:
		b.brokenQ++
	default:
		n, _ := base64.RawStdEncoding.Decode(b.out[b.wr:], b.q[:b.nq])
		b.wr += n
	}
	b.nq = 0
}

// problem describes what was skipped, or "" if the input was clean.
func (b *b64Reader) problem() string {
	switch {
	case b.bad > 0 && b.brokenQ > 0:
		return "base64: invalid characters skipped and truncated quantum"
	case b.bad > 0:
		return "base64: invalid characters skipped"
	case b.brokenQ > 0:
		return "base64: truncated quantum"
	}
	return ""
}

// qpReader decodes quoted-printable (RFC 2045 section 6.7): "=XY" with two
// hex digits is a byte, "=" followed by optional white space and a line end
// is a soft line break, and any other "=" is taken literally (counted in
// bad). Every other byte, NUL and control bytes included, passes through.
type qpReader struct {
	br  *bufio.Reader
	bad int
}

func newQPReader(r io.Reader) *qpReader { return &qpReader{br: bufio.NewReaderSize(r, 4096)} }

// qpMaxPad bounds the white space looked at between "=" and a line end.
const qpMaxPad = 256

func (q *qpReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c, err := q.br.ReadByte()
		if err != nil {
			if n > 0 {
				return n, nil
			}
			return 0, err
		}
		if c != '=' {
			p[n] = c
			n++
			continue
		}
		la, _ := q.br.Peek(2)
		if len(la) == 2 && isHex(la[0]) && isHex(la[1]) {
			p[n] = unhex(la[0])<<4 | unhex(la[1])
			n++
			q.br.Discard(2)
			continue
		}
		if skip, ok := q.softBreak(); ok {
			q.br.Discard(skip)
			continue
		}
		if len(la) > 0 { // "=" at the very end is a soft break too
			q.bad++
			p[n] = '='
			n++
		}
	}
	return n, nil
}

// softBreak reports whether what follows a "=" is white space and a line
// end, and how many bytes that is.
func (q *qpReader) softBreak() (int, bool) {
	la, _ := q.br.Peek(qpMaxPad)
	for i, c := range la {
		switch c {
		case ' ', '\t', '\r':
		case '\n':
			return i + 1, true
		default:
			return 0, false
		}
	}
	return len(la), len(la) < qpMaxPad // white space up to the end of input
}

func (q *qpReader) problem() string {
	if q.bad > 0 {
		return "quoted-printable: invalid escapes taken literally"
	}
	return ""
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
