package attach

import (
	"bufio"
	"bytes"
	"io"
)

// The multipart body is split here rather than with mime/multipart, whose
// reader parses each part's header with net/textproto and gives up on the
// whole body at the first part header it rejects. This splitter streams:
// it holds one line fragment (at most the bufio buffer) at a time.

// partState is where a multipartReader is in its body.
type partState int

const (
	inPart  partState = iota // reading a part (or the preamble)
	atNext                   // a delimiter line ended the part
	atClose                  // the close delimiter ended it
	atEOF                    // the input ended first
)

// multipartReader splits a multipart body (RFC 2046 section 5.1.1) at its
// delimiter lines "--boundary", optionally followed by "--" (the close
// delimiter) and white space. The line end before a delimiter belongs to
// the delimiter.
type multipartReader struct {
	br      *bufio.Reader
	dash    []byte // "--" + boundary
	state   partState
	midLine bool    // the last fragment read did not end a line
	nl      [2]byte // the line end held back until the next line is known
	nln     int
	preBuf  [2]byte
	pre     []byte // pending output: the held line end, then out
	out     []byte
	parts   int
}

func newMultipartReader(r io.Reader, boundary string) *multipartReader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 8192)
	}
	return &multipartReader{br: br, dash: []byte("--" + boundary)}
}

// next skips the rest of the current part (or the preamble) and reports
// whether another part follows; the part's content is then read with Read.
func (m *multipartReader) next() bool {
	io.Copy(io.Discard, m)
	if m.state != atNext {
		return false
	}
	m.state, m.midLine, m.nln = inPart, false, 0
	m.parts++
	return true
}

// delimiter reports whether line (a whole line) is a delimiter line, and
// whether it is the close delimiter.
func (m *multipartReader) delimiter(line []byte) (ok, closing bool) {
	rest, ok := bytes.CutPrefix(line, m.dash)
	if !ok {
		return false, false
	}
	rest, closing = bytes.CutPrefix(rest, []byte("--"))
	return len(bytes.Trim(rest, " \t\r\n")) == 0, closing
}

// Read reads the current part's content.
func (m *multipartReader) Read(p []byte) (int, error) {
	for len(m.pre) == 0 && len(m.out) == 0 {
		if m.state != inPart {
			return 0, io.EOF
		}
		line, err := m.br.ReadSlice('\n')
		whole := err == nil || err == io.EOF
		if whole && !m.midLine && len(line) > 0 {
			if ok, closing := m.delimiter(line); ok {
				m.nln = 0
				m.state = atNext
				if closing {
					m.state = atClose
				}
				continue
			}
		}
		switch {
		case err == nil:
			body := trimNewline(line)
			m.emit(body)
			m.nln = copy(m.nl[:], line[len(body):])
			m.midLine = false
		case err == bufio.ErrBufferFull:
			m.emit(line)
			m.nln = 0
			m.midLine = true
		default: // io.EOF or a read error: the content ends without delimiter
			m.emit(line)
			m.nln = 0
			m.state = atEOF
		}
	}
	n := copy(p, m.pre)
	m.pre = m.pre[n:]
	if len(m.pre) == 0 && n < len(p) {
		c := copy(p[n:], m.out)
		m.out = m.out[c:]
		n += c
	}
	return n, nil
}

// emit queues the held line end and b for Read.
func (m *multipartReader) emit(b []byte) {
	m.pre = m.preBuf[:copy(m.preBuf[:], m.nl[:m.nln])]
	m.out = b
}
