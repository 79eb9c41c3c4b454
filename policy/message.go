package policy

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Message is what the end-of-message stage knows of the message itself.
type Message struct {
	Headers []Header // in the order the MTA sent them, values as sent (leading space kept)
	Body    Body     // nil when no check needs the body

	// Abandoned is set when a check was cut off at its deadline while
	// it may still read Body: the body's memory must not be reused.
	Abandoned bool

	// The header rendered for Raw, once for all the checks that read the
	// message (DKIM, the engines, attachment rules), which run at once.
	rawOnce sync.Once
	rawHead []byte
}

// Body is the message body as the MTA sent it (CRLF line endings). Each
// call of Reader reads it from the start, so checks running concurrently
// each stream it without copying it.
type Body interface {
	Size() int64
	Reader() io.Reader
}

// Get returns the first value of the named header, trimmed.
func (m *Message) Get(name string) string {
	for _, h := range m.Headers {
		if strings.EqualFold(h.Name, name) {
			return strings.TrimSpace(h.Value)
		}
	}
	return ""
}

// Values returns every value of the named header, trimmed, in order.
func (m *Message) Values(name string) []string {
	var vs []string
	for _, h := range m.Headers {
		if strings.EqualFold(h.Name, name) {
			vs = append(vs, strings.TrimSpace(h.Value))
		}
	}
	return vs
}

// Raw returns the message as received, header and body, in RFC 5322 form
// with CRLF line endings, and its length in bytes. The header is rendered
// at the first call, for every later one: Headers must not change after
// it. Concurrent calls are safe, and each reader starts at the beginning.
func (m *Message) Raw() (io.Reader, int64) {
	m.rawOnce.Do(func() { m.rawHead = renderHeader(m.Headers) })
	return rawWith(m.rawHead, m.Body)
}

// rawMessage renders headers and appends the body.
func rawMessage(headers []Header, body Body) (io.Reader, int64) {
	return rawWith(renderHeader(headers), body)
}

func renderHeader(headers []Header) []byte {
	var h bytes.Buffer
	for _, f := range headers {
		h.WriteString(f.Name)
		h.WriteByte(':')
		h.WriteString(crlf(f.Value))
		h.WriteString("\r\n")
	}
	h.WriteString("\r\n")
	return h.Bytes()
}

func rawWith(head []byte, body Body) (io.Reader, int64) {
	if body == nil {
		return bytes.NewReader(head), int64(len(head))
	}
	n := int64(len(head)) + body.Size()
	return &raw{head: bytes.NewReader(head), src: body, body: body.Reader()}, n
}

// raw is the header then the body. Unlike io.MultiReader, whose WriteTo
// allocates a 32 KiB buffer per call, it hands the body to the writer
// through the body's own WriteTo where it has one (a bytes.Reader does).
type raw struct {
	head *bytes.Reader
	src  Body
	body io.Reader // src's, being read
}

// Seek takes r back to the start of the message, for an engine client
// that sends it again (clamd's, when its session closed under it). No
// other seek is supported.
func (r *raw) Seek(offset int64, whence int) (int64, error) {
	if offset != 0 || whence != io.SeekStart {
		return 0, errors.New("policy: a message can only be read again from its start")
	}
	r.head.Seek(0, io.SeekStart) // cannot fail
	r.body = r.src.Reader()
	return 0, nil
}

func (r *raw) Read(p []byte) (int, error) {
	if r.head.Len() > 0 {
		return r.head.Read(p)
	}
	return r.body.Read(p)
}

func (r *raw) WriteTo(w io.Writer) (int64, error) {
	n, err := r.head.WriteTo(w)
	if err != nil {
		return n, err
	}
	m, err := io.Copy(w, r.body)
	return n + m, err
}

// crlf turns the bare LFs with which MTAs fold header values into CRLF.
func crlf(s string) string {
	if !strings.Contains(s, "\n") {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\n", "\r\n")
}

// headerRefs finds every field of the named headers in msg, for deletion.
func headerRefs(msg *Message, names ...string) []HeaderRef {
	var refs []HeaderRef
	count := map[string]int{}
	for _, h := range msg.Headers {
		name := strings.ToLower(h.Name)
		count[name]++
		for _, n := range names {
			if strings.EqualFold(n, name) {
				refs = append(refs, HeaderRef{Name: h.Name, Index: count[name]})
			}
		}
	}
	return refs
}

// deletionOrder sorts deletions so that, per header name, the last field
// goes first: deleting shifts the indexes of later fields of the same name
// (forward deletion left forgeries behind in OpenDKIM, CVE-2022-48521).
func deletionOrder(refs []HeaderRef) []HeaderRef {
	sort.SliceStable(refs, func(i, j int) bool {
		ni, nj := strings.ToLower(refs[i].Name), strings.ToLower(refs[j].Name)
		if ni != nj {
			return ni < nj
		}
		return refs[i].Index > refs[j].Index
	})
	return slices.CompactFunc(refs, func(a, b HeaderRef) bool {
		return strings.EqualFold(a.Name, b.Name) && a.Index == b.Index
	})
}
