package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
)

// The generated message of -big: a short header and a multipart/mixed
// body, a line of text and an attachment of pseudo-random bytes in base64,
// CRLF lines of 76 characters (RFC 2045 section 6.8). The bytes come from
// a fixed seed, so every run sends the same message; the body is made as it
// is sent, a chunk at a time, so the load tool's memory does not grow with
// its size.

const bigBoundary = "=_bench_big"

// bigSeed seeds the attachment's bytes.
var bigSeed = [32]byte([]byte("mxguard-bench: the -big message."))

var bigHeaders = []header{
	{"From", " Bench News <news@news.bench.test>"},
	{"To", " Someone <someone@bench.test>"},
	{"Subject", " The archive you asked for"},
	{"Date", " Mon, 23 Nov 2026 06:00:00 +0000"},
	{"Message-ID", " <big.20261123060000@news.bench.test>"},
	{"MIME-Version", " 1.0"},
	{"Content-Type", ` multipart/mixed; boundary="` + bigBoundary + `"`},
}

// bigPadding is the header field whose length makes the message's size
// exact.
const bigPadding = "X-Bench-Padding"

var (
	bigPrefix = strings.Join([]string{
		"--" + bigBoundary,
		"Content-Type: text/plain; charset=utf-8",
		"",
		"Here is the archive.",
		"",
		"--" + bigBoundary,
		`Content-Type: application/octet-stream; name="archive.bin"`,
		`Content-Disposition: attachment; filename="archive.bin"`,
		"Content-Transfer-Encoding: base64",
		"",
		"",
	}, "\r\n")
	bigSuffix = "--" + bigBoundary + "--\r\n"
)

// bigLineRaw bytes make one base64 line of 76 characters.
const (
	bigLineRaw = 57
	bigLineLen = 76 + 2 // with its CRLF
)

// bigMin is the smallest size -big can make.
func bigMin() int {
	return headerSize(bigHeaders) + len(bigPadding) + len(": x\r\n") + 2 + len(bigPrefix) + len(bigSuffix)
}

// headerSize is the size of header fields as SMTP carries them.
func headerSize(hs []header) int {
	n := 0
	for _, h := range hs {
		n += len(h.name) + 1 + len(h.value) + 2
	}
	return n
}

// newBigMessage returns the generated message of exactly size bytes (the
// header, the empty line and the body, as SMTP carries them). The padding
// field takes up what whole base64 lines leave, 1 to 78 characters.
func newBigMessage(size int) (*message, error) {
	base := bigMin()
	if size < base {
		return nil, fmt.Errorf("-big: the generated message is at least %d bytes", base)
	}
	lines := (size - base) / bigLineLen
	pad := 1 + (size-base)%bigLineLen
	m := &message{
		path:    fmt.Sprintf("(generated, %d bytes)", size),
		headers: append(bigHeaders[:len(bigHeaders):len(bigHeaders)], header{bigPadding, " " + strings.Repeat("x", pad)}),
		size:    size,
	}
	m.gen = func() io.Reader { return newBigBody(lines) }
	return m, nil
}

// bigBody makes the body of the generated message as it is read.
type bigBody struct {
	step    int // 0: the prefix is next, 1: attachment lines then the suffix, 2: done
	lines   int // attachment lines still to make
	rng     *rand.ChaCha8
	raw     [bigLineRaw]byte
	line    [bigLineLen]byte
	pending []byte // made, not read yet
}

func newBigBody(lines int) *bigBody {
	b := &bigBody{lines: lines, rng: rand.NewChaCha8(bigSeed)}
	b.line[76], b.line[77] = '\r', '\n'
	return b
}

func (b *bigBody) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(b.pending) == 0 && !b.next() {
			if n == 0 {
				return 0, io.EOF
			}
			break
		}
		k := copy(p[n:], b.pending)
		b.pending = b.pending[k:]
		n += k
	}
	return n, nil
}

// next makes the next piece of the body; false at its end.
func (b *bigBody) next() bool {
	switch {
	case b.step == 0:
		b.pending = []byte(bigPrefix)
		b.step = 1
	case b.step == 1 && b.lines > 0:
		b.rng.Read(b.raw[:])
		base64.StdEncoding.Encode(b.line[:76], b.raw[:])
		b.pending = b.line[:]
		b.lines--
	case b.step == 1:
		b.pending = []byte(bigSuffix)
		b.step = 2
	default:
		return false
	}
	return true
}
