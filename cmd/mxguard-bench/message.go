package main

import (
	"fmt"
	"io"
	"iter"
	"os"
	"slices"
	"strings"
)

// chunkSize is the size of Postfix's body chunks (milter8.c
// MILTER_CHUNK_SIZE): every chunk but the last is this long.
const chunkSize = 65535

// header is one header field as Postfix passes it to a milter: the name
// without the colon, the value with its leading space and the lines of a
// folded field joined by a bare "\n".
type header struct{ name, value string }

// message is a message ready to be sent: its header fields, and its body
// with CRLF line ends, cut into chunks (a file's) or made as it is sent
// (-big's).
type message struct {
	path    string
	headers []header
	chunks  [][]byte
	gen     func() io.Reader // when not nil, makes the body anew, instead of chunks
	size    int              // bytes of the message as SMTP carries it, for SIZE=
}

// bodyChunks yields the body in chunks of chunkSize bytes, the last one
// shorter. A chunk is valid until the next one is asked for.
func (m *message) bodyChunks() iter.Seq[[]byte] {
	if m.gen == nil {
		return slices.Values(m.chunks)
	}
	return func(yield func([]byte) bool) {
		r := m.gen()
		buf := make([]byte, chunkSize)
		for {
			n, err := io.ReadFull(r, buf)
			if n > 0 && !yield(buf[:n]) {
				return
			}
			if err != nil {
				return // the end: a generated body has no other error
			}
		}
	}
}

// loadMessage reads an RFC 5322 message with CRLF or LF line ends.
func loadMessage(path string) (*message, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := parseMessage(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.path = path
	return m, nil
}

func parseMessage(data []byte) (*message, error) {
	text := strings.ReplaceAll(string(data), "\r\n", "\n")
	head, body, found := strings.Cut(text, "\n\n")
	if !found {
		if strings.HasSuffix(text, "\n") {
			head, body = strings.TrimSuffix(text, "\n"), ""
		} else {
			head, body = text, ""
		}
	}
	m := &message{}
	for i, line := range strings.Split(head, "\n") {
		if line == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(m.headers) == 0 {
				return nil, fmt.Errorf("line %d: a continuation line before any header field", i+1)
			}
			m.headers[len(m.headers)-1].value += "\n" + line
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		name = strings.TrimRight(name, " \t")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("line %d: not a header field: %.40q", i+1, line)
		}
		m.headers = append(m.headers, header{name, value})
	}
	if len(m.headers) == 0 {
		return nil, fmt.Errorf("no header fields")
	}

	// SMTP ends the message with a line end; Postfix sends CRLF.
	if body != "" && !strings.HasSuffix(body, "\n") {
		body += "\n"
	}
	b := []byte(strings.ReplaceAll(body, "\n", "\r\n"))
	m.size = len(strings.ReplaceAll(head, "\n", "\r\n")) + 4 + len(b)
	for len(b) > 0 {
		n := min(chunkSize, len(b))
		m.chunks = append(m.chunks, b[:n:n])
		b = b[n:]
	}
	return m, nil
}
