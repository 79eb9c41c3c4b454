package dkim

import (
	"encoding/binary"
	"io"
	"strings"
	"sync"
)

// Canonicalization is a canonicalization algorithm.
type Canonicalization string

const (
	CanonicalizationSimple  Canonicalization = "simple"
	CanonicalizationRelaxed                  = "relaxed"
)

type canonicalizer interface {
	CanonicalizeHeader(s string) string
	CanonicalizeBody(w io.Writer) io.WriteCloser
}

var canonicalizers = map[Canonicalization]canonicalizer{
	CanonicalizationSimple:  new(simpleCanonicalizer),
	CanonicalizationRelaxed: new(relaxedCanonicalizer),
}

// The body canonicalizers below are mxguard's rewrite of upstream's (see
// ../PATCHES.md): they produce the same bytes, but scan runs of ordinary
// bytes at once and reuse their buffers instead of appending byte by byte
// into new slices on every Write. canonical_reference_test.go keeps
// upstream's code and a fuzz test compares the two.

type simpleCanonicalizer struct{}

func (c *simpleCanonicalizer) CanonicalizeHeader(s string) string {
	return s
}

// simpleBodyCanonicalizer fixes lone LFs and holds back the CRLFs (and a
// final CR) at the end of what it has seen, since trailing empty lines are
// not part of the simple body.
type simpleBodyCanonicalizer struct {
	w    io.Writer
	cr   bool   // the last byte seen was CR: an LF after it needs none added
	hold []byte // trailing (CRLF)* [CR] not yet written
	out  []byte // reused output buffer
}

func (c *simpleBodyCanonicalizer) Write(b []byte) (int, error) {
	written := len(b)
	if cap(c.out) < len(c.hold)+len(b)+16 {
		c.out = make([]byte, 0, len(c.hold)+len(b)+len(b)/8+16)
	}
	out := append(c.out[:0], c.hold...)
	for len(b) > 0 {
		i := indexLF(b)
		if i < 0 {
			out = append(out, b...)
			c.cr = b[len(b)-1] == '\r'
			break
		}
		out = append(out, b[:i]...)
		if i > 0 {
			c.cr = b[i-1] == '\r'
		}
		if !c.cr {
			out = append(out, '\r')
		}
		out = append(out, '\n')
		c.cr = false
		b = b[i+1:]
	}

	end := len(out)
	// If it ends with \r, maybe the next write will begin with \n
	if end > 0 && out[end-1] == '\r' {
		end--
	}
	// Keep all \r\n sequences
	for end >= 2 && out[end-2] == '\r' && out[end-1] == '\n' {
		end -= 2
	}
	c.hold = append(c.hold[:0], out[end:]...)
	c.out = out

	var err error
	if end > 0 {
		_, err = c.w.Write(out[:end])
	}
	return written, err
}

func (c *simpleBodyCanonicalizer) Close() error {
	// Flush hold if it ends with a single \r (without a matching \n)
	if len(c.hold) > 0 && c.hold[len(c.hold)-1] == '\r' {
		if _, err := c.w.Write(c.hold); err != nil {
			return err
		}
	}
	c.hold = nil

	if _, err := c.w.Write([]byte(crlf)); err != nil {
		return err
	}
	return nil
}

func (c *simpleCanonicalizer) CanonicalizeBody(w io.Writer) io.WriteCloser {
	return &simpleBodyCanonicalizer{w: w}
}

func indexLF(b []byte) int {
	for i, ch := range b {
		if ch == '\n' {
			return i
		}
	}
	return -1
}

type relaxedCanonicalizer struct{}

func (c *relaxedCanonicalizer) CanonicalizeHeader(s string) string {
	k, v, ok := strings.Cut(s, ":")
	if !ok {
		return strings.TrimSpace(strings.ToLower(s)) + ":" + crlf
	}

	k = strings.TrimSpace(strings.ToLower(k))
	// Each run of whitespace in the value becomes one space, and none is
	// left at either end: upstream's strings.Join(strings.FieldsFunc(...),
	// " ") in one pass and one allocation (mxguard patch, PATCHES.md).
	var b strings.Builder
	b.Grow(len(k) + 1 + len(v) + len(crlf))
	b.WriteString(k)
	b.WriteByte(':')
	space := false // whitespace since the last byte written
	start := b.Len()
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case ' ', '\t', '\n', '\r':
			space = true
		default:
			if space && b.Len() > start {
				b.WriteByte(' ')
			}
			space = false
			b.WriteByte(c)
		}
	}
	b.WriteString(crlf)
	return b.String()
}

// relaxedBodyCanonicalizer reduces each run of whitespace inside a line to
// one space, drops whitespace at the end of lines and empty lines at the
// end of the body, and fixes lone LFs (RFC 6376 section 3.4.4). Line
// endings are held until an ordinary byte follows them, so that trailing
// ones are never written.
type relaxedBodyCanonicalizer struct {
	w       io.Writer
	crlfBuf []byte // line-end bytes since the last ordinary byte
	wsp     bool   // whitespace since the last ordinary or line-end byte
	cr      bool   // the last byte seen was CR
	written bool
	out     []byte // reused output buffer
}

// outBuffers holds output buffers for relaxed body canonicalizers: one
// per message would be the body's size in garbage. io.Copy writes 32 KiB
// at a time.
var outBuffers = sync.Pool{New: func() any { return make([]byte, 0, 32<<10+64) }}

const maxPooledOut = 256 << 10

// bodySpecial marks the bytes that end a run of ordinary body bytes.
var bodySpecial = [256]bool{' ': true, '\t': true, '\r': true, '\n': true}

// plainRun reports whether the eight bytes of x (in memory order, the first
// in the low byte) all continue a run of ordinary bytes: none is below
// 0x20 (tab, CR, LF, or another control byte, which the byte-wise loop
// takes care of), no two spaces are adjacent, and the last is no space
// (what follows it is unknown). A single space between ordinary bytes
// stays in the run, as in the byte-wise loop. Each test is exact per byte:
// no carry crosses a byte.
func plainRun(x uint64) bool {
	const (
		low7 = 0x7f7f7f7f7f7f7f7f
		high = 0x8080808080808080
	)
	// High bit of each byte below 0x20: adding 0x60 to its low seven bits
	// leaves the high bit clear only for those, and only if it was clear.
	below := ^(((x & low7) + 0x6060606060606060) | x) & high
	// High bit of each space: the byte XOR 0x20 is zero.
	y := x ^ 0x2020202020202020
	space := ^(((y & low7) + low7) | y) & high
	return below|space&(space>>8)|space&(1<<63) == 0
}

func (c *relaxedBodyCanonicalizer) Write(b []byte) (int, error) {
	written := len(b)
	if c.out == nil {
		c.out = outBuffers.Get().([]byte)
	}
	if cap(c.out) < len(c.crlfBuf)+len(b) {
		c.out = make([]byte, 0, len(c.crlfBuf)+len(b))
	}
	out := c.out[:0]
	for i := 0; i < len(b); {
		switch ch := b[i]; ch {
		case ' ', '\t':
			c.wsp = true
			c.cr = false
			i++
		case '\r':
			c.wsp = false
			c.crlfBuf = append(c.crlfBuf, '\r')
			c.cr = true
			i++
		case '\n':
			c.wsp = false
			if !c.cr {
				c.crlfBuf = append(c.crlfBuf, '\r')
			}
			c.crlfBuf = append(c.crlfBuf, '\n')
			c.cr = false
			i++
		default:
			// The run goes on over single spaces between ordinary
			// bytes, which stay as they are: most text is one run.
			j := i + 1
			for j < len(b) {
				// Eight bytes at a time while they are plainly
				// part of the run.
				for j+8 <= len(b) && plainRun(binary.LittleEndian.Uint64(b[j:])) {
					j += 8
				}
				if j == len(b) {
					break
				}
				if !bodySpecial[b[j]] {
					j++
				} else if b[j] == ' ' && j+1 < len(b) && !bodySpecial[b[j+1]] {
					j += 2
				} else {
					break
				}
			}
			if len(c.crlfBuf) > 0 {
				out = append(out, c.crlfBuf...)
				c.crlfBuf = c.crlfBuf[:0]
			}
			if c.wsp {
				out = append(out, ' ')
				c.wsp = false
			}
			out = append(out, b[i:j]...)
			c.cr = false
			i = j
		}
	}
	c.out = out

	if !c.written && len(out) > 0 {
		c.written = true
	}

	_, err := c.w.Write(out)
	return written, err
}

func (c *relaxedBodyCanonicalizer) Close() error {
	if c.out != nil && cap(c.out) <= maxPooledOut {
		outBuffers.Put(c.out[:0])
	}
	c.out = nil
	if c.written {
		if _, err := c.w.Write([]byte(crlf)); err != nil {
			return err
		}
	}
	return nil
}

func (c *relaxedCanonicalizer) CanonicalizeBody(w io.Writer) io.WriteCloser {
	return &relaxedBodyCanonicalizer{w: w}
}

type limitedWriter struct {
	W io.Writer
	N int64
}

func (w *limitedWriter) Write(b []byte) (int, error) {
	if w.N <= 0 {
		return len(b), nil
	}

	skipped := 0
	if int64(len(b)) > w.N {
		b = b[:w.N]
		skipped = int(int64(len(b)) - w.N)
	}

	n, err := w.W.Write(b)
	w.N -= int64(n)
	return n + skipped, err
}
