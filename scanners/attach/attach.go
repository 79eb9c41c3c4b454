// Package attach walks a message's MIME tree (RFC 2045, RFC 2046) and
// reports the attachments, and the members of zip archives, that blocking
// rules match: by file name extension or by the type detected from the
// decoded content's magic bytes (see KnownTypes for the set).
//
// It is written for hostile input. Malformed MIME never makes Scan fail: a
// message is scanned as far as it parses, leniently, the way a mail client
// that would show the attachment reads it, and whatever was skipped or cut
// short is listed in Report.Problems (a policy may treat a message it could
// not fully scan as suspicious). Depth, part count, header sizes and
// archive sizes are bounded, and only a part's first bytes are held in
// memory unless it is an archive to open.
//
// Part paths are numbered as IMAP BODY sections (RFC 3501 section 6.4.5):
// "2.1" is the first part of the multipart that is the second part of the
// message, and the body of an attached message/rfc822 at "3" is "3.1" (or,
// if that body is a multipart, its parts are "3.1", "3.2", ...). The body of
// a message that is not multipart has the empty path.
package attach

import (
	"archive/zip"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Rules say what to block.
type Rules struct {
	Extensions []string // lower-case, without dot: "exe", "js", "iso" ...
	Types      []string // detected type names, from KnownTypes
}

// DefaultRules returns a default set of blocked extensions (Windows
// executables, scripts, installers, shortcuts and disk images, which mail
// has no business carrying) and types (executables and disk images).
// Type "script" (a "#!" line) is not in it: shell scripts sent between
// people are common and need a chmod to run.
func DefaultRules() Rules {
	return Rules{
		Extensions: []string{
			"exe", "com", "scr", "pif", "bat", "cmd", "cpl", "dll", "sys", "drv", "ocx",
			"vb", "vbs", "vbe", "js", "jse", "wsf", "wsh", "wsc", "sct", "hta",
			"ps1", "psm1", "psd1", "msh", "msh1", "msh2", "mshxml",
			"msi", "msp", "mst", "msc", "appx", "appxbundle", "msix", "msixbundle",
			"application", "appref-ms", "gadget", "jar", "lnk", "scf", "url", "inf", "reg",
			"chm", "hlp", "xll", "library-ms", "settingcontent-ms",
			"iso", "img", "vhd", "vhdx", "dmg",
		},
		Types: []string{"pe", "elf", "macho", "msi", "lnk", "iso", "vhd", "vhdx", "dmg"},
	}
}

// Finding is one attachment or archive member that a rule matched.
type Finding struct {
	Part      string // MIME part path like "2.1" (RFC 3501 numbering), "" for a single-part body
	Filename  string // decoded (RFC 2047 / RFC 2231) file name, "" if none
	Archive   string // when found inside an archive: the archive's file name (unnamedArchive if it has none); Filename is then the member's
	Extension string // matched extension, if an extension rule matched
	Type      string // matched detected type, if a type rule matched
}

// unnamedArchive stands for the name of an archive part that has none.
const unnamedArchive = "(unnamed archive)"

// String describes f for the log, for example
// `part 2 "invoice.exe": extension exe, type pe` or
// `part 3 "docs.zip" member "run.js": extension js`.
func (f Finding) String() string {
	var b strings.Builder
	b.WriteString(where(f.Part))
	switch {
	case f.Archive != "":
		fmt.Fprintf(&b, " %q member %q", f.Archive, f.Filename)
	case f.Filename != "":
		fmt.Fprintf(&b, " %q", f.Filename)
	}
	b.WriteString(":")
	if f.Extension != "" {
		b.WriteString(" extension " + f.Extension)
	}
	if f.Type != "" {
		if f.Extension != "" {
			b.WriteString(",")
		}
		b.WriteString(" type " + f.Type)
	}
	return b.String()
}

// where names a part path for the log.
func where(part string) string {
	if part == "" {
		return "body"
	}
	return "part " + part
}

// Limits bound the work done on one message. A zero or negative field
// takes the default (in parentheses).
type Limits struct {
	MaxDepth          int   // nesting of multiparts and attached messages (10)
	MaxParts          int   // MIME parts (entities) scanned (500)
	MaxArchiveBytes   int64 // decoded size of an archive opened (10 MiB); also the budget for decompressing the zips inside zips of one message
	MaxArchiveMembers int   // members of one archive looked at (1000)
}

func (l Limits) withDefaults() Limits {
	if l.MaxDepth <= 0 {
		l.MaxDepth = 10
	}
	if l.MaxParts <= 0 {
		l.MaxParts = 500
	}
	if l.MaxArchiveBytes <= 0 {
		l.MaxArchiveBytes = 10 << 20
	}
	if l.MaxArchiveMembers <= 0 {
		l.MaxArchiveMembers = 1000
	}
	return l
}

// Report is the outcome of a scan.
type Report struct {
	Findings []Finding // in part order
	Parts    int       // MIME entities scanned, multiparts and attached messages included
	Problems []string  // what could not be scanned, or was scanned leniently
}

// maxProblems bounds Report.Problems.
const maxProblems = 50

// Scan reads msg (CRLF or LF line endings) and returns the findings in part
// order. The error is only for read errors of msg itself; malformed MIME is
// scanned as far as it parses and reported in Report.Problems.
//
// Zip archives (detected type zip, or extension zip) up to
// MaxArchiveBytes are opened and their member names matched against the
// extension rules; encrypted archives still list their names. Zips inside
// a zip (by member name) are opened one level deep; deeper ones are
// reported as problems. Other archive formats are not opened.
func Scan(msg io.Reader, rules Rules, lim Limits) (Report, error) {
	lim = lim.withDefaults()
	bufs := scanBuffers.Get().(*buffers)
	defer scanBuffers.Put(bufs)
	s := &scanner{
		exts:   make(map[string]bool),
		types:  make(map[string]bool),
		lim:    lim,
		budget: lim.MaxArchiveBytes,
		head:   bufs.head,
	}
	for _, e := range rules.Extensions {
		s.exts[strings.TrimPrefix(strings.ToLower(strings.TrimSpace(e)), ".")] = true
	}
	for _, t := range rules.Types {
		s.types[strings.ToLower(strings.TrimSpace(t))] = true
	}
	delete(s.exts, "")
	er := &errReader{r: msg}
	br := bufs.reader
	br.Reset(er)
	defer br.Reset(nil)
	h, body := s.readHeader(br, "message")
	s.entity(h, body, "", "", 0, "text/plain")
	return s.rep, er.err
}

// buffers are the large buffers of one Scan, reused by the next: a gateway
// scans every message, and these were most of what a scan allocated.
type buffers struct {
	head   []byte
	reader *bufio.Reader
}

var scanBuffers = sync.Pool{New: func() any {
	return &buffers{head: make([]byte, sniffLen), reader: bufio.NewReaderSize(nil, 16<<10)}
}}

// errReader remembers the first read error other than io.EOF: that is an
// error of the message's reader, not of its MIME structure.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

type scanner struct {
	exts, types map[string]bool
	lim         Limits
	rep         Report
	stopped     bool   // MaxParts reached
	budget      int64  // bytes left for decompressing zips inside zips
	head        []byte // sniffLen bytes, reused for every part
}

func (s *scanner) problem(label, format string, args ...any) {
	switch n := len(s.rep.Problems); {
	case n < maxProblems:
		s.rep.Problems = append(s.rep.Problems, label+": "+fmt.Sprintf(format, args...))
	case n == maxProblems:
		s.rep.Problems = append(s.rep.Problems, "more problems not listed")
	}
}

func join(part string, i int) string {
	if part == "" {
		return strconv.Itoa(i)
	}
	return part + "." + strconv.Itoa(i)
}

// entity scans one MIME entity: h is its header and body the rest. Its
// path is part if it is a multipart, leaf otherwise (they differ for the
// body of an attached message). defType is the Content-Type to assume when
// h has none.
func (s *scanner) entity(h header, body io.Reader, part, leaf string, depth int, defType string) {
	if s.stopped {
		return
	}
	if s.rep.Parts >= s.lim.MaxParts {
		s.stopped = true
		s.problem(where(part), "more than %d MIME parts: the rest not scanned", s.lim.MaxParts)
		return
	}
	s.rep.Parts++
	mt, params := mediaType(first(h.contentType))
	if !strings.Contains(mt, "/") {
		mt = defType
	}
	names := fileNames(h, params)
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		boundary := first(params["boundary"])
		if boundary == "" {
			s.problem(where(part), "%s without boundary: scanned as a single part", mt)
			break
		}
		s.match(part, names, nil)
		if depth >= s.lim.MaxDepth {
			s.problem(where(part), "nested deeper than %d: not scanned", s.lim.MaxDepth)
			return
		}
		childType := "text/plain"
		if mt == "multipart/digest" {
			childType = "message/rfc822" // RFC 2046 section 5.1.5
		}
		mr := newMultipartReader(body, boundary)
		for i := 1; !s.stopped && mr.next(); i++ {
			p := join(part, i)
			ch, cbody := s.readHeader(bufio.NewReaderSize(mr, 4096), where(p))
			s.entity(ch, cbody, p, p, depth+1, childType)
		}
		switch {
		case s.stopped:
		case mr.parts == 0:
			s.problem(where(part), "no boundary delimiter found: parts not scanned")
		case mr.state == atEOF:
			s.problem(where(part), "multipart not closed by its close delimiter")
		}
		return
	case mt == "message/rfc822" || mt == "message/global":
		s.match(part, names, nil)
		if depth >= s.lim.MaxDepth {
			s.problem(where(part), "nested deeper than %d: not scanned", s.lim.MaxDepth)
			return
		}
		r, done := s.decoder(h, body, where(part))
		mh, mbody := s.readHeader(bufio.NewReaderSize(r, 8192), where(part))
		s.entity(mh, mbody, part, join(part, 1), depth+1, "text/plain")
		done()
		return
	}
	s.leaf(h, body, leaf, names)
}

// fileNames returns the decoded file names of an entity, the one to show
// first: Content-Disposition filename, then Content-Type name, each as
// shown and, where it differs, as raw bytes of an unknown charset and cut
// at a NUL byte (mail clients differ in which they use).
func fileNames(h header, ctParams map[string][]string) []string {
	var vs []string
	for _, d := range h.disposition {
		_, p := mediaType(d)
		vs = append(vs, p["filename"]...)
	}
	vs = append(vs, ctParams["name"]...)
	for _, c := range h.contentType[min(1, len(h.contentType)):] {
		_, p := mediaType(c)
		vs = append(vs, p["name"]...)
	}
	var names []string
	add := func(n string) {
		if n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for _, v := range vs {
		shown, raw := decodeWords(v)
		add(shown)
		add(raw)
		for _, n := range []string{shown, raw} {
			if i := strings.IndexByte(n, 0); i >= 0 {
				add(n[:i])
			}
		}
	}
	return names
}

// decoder returns a reader for the decoded body and a function to call
// when done reading, which reports decoding problems.
func (s *scanner) decoder(h header, body io.Reader, label string) (io.Reader, func()) {
	cte := strings.ToLower(strings.TrimSpace(first(h.encoding)))
	if i := strings.IndexAny(cte, " \t(;"); i >= 0 {
		cte = cte[:i]
	}
	report := func(p string) {
		if p != "" {
			s.problem(label, "%s", p)
		}
	}
	switch cte {
	case "base64":
		d := newB64Reader(body)
		return d, func() { report(d.problem()) }
	case "quoted-printable":
		d := newQPReader(body)
		return d, func() { report(d.problem()) }
	case "", "7bit", "8bit", "binary":
	default:
		s.problem(label, "unknown Content-Transfer-Encoding %q: scanned undecoded", cte)
	}
	return body, func() {}
}

// leaf scans a part that is not a container: its names, and its decoded
// content's type, and opens it if it is a zip.
func (s *scanner) leaf(h header, body io.Reader, part string, names []string) {
	label := where(part)
	r, done := s.decoder(h, body, label)
	defer done()
	n, _ := io.ReadFull(r, s.head)
	head := s.head[:n]
	isZip := slices.Contains(sniff(head, nil), "zip")
	for _, name := range names {
		isZip = isZip || extension(name) == "zip"
	}
	var data []byte // the whole content, for a zip to open
	tail := &tailWriter{}
	tail.Write(head)
	if isZip && int64(len(head)) <= s.lim.MaxArchiveBytes {
		var buf bytes.Buffer
		buf.Write(head)
		buf.ReadFrom(io.LimitReader(r, s.lim.MaxArchiveBytes-int64(len(head))+1))
		if int64(buf.Len()) <= s.lim.MaxArchiveBytes {
			data = buf.Bytes()
		}
		tail.Write(buf.Bytes())
	}
	io.Copy(tail, r)
	s.match(part, names, sniff(head, tail.b))
	if !isZip {
		return
	}
	name := unnamedArchive
	if len(names) > 0 {
		name = names[0]
	}
	if data == nil {
		s.problem(label, "archive %q larger than %d bytes: not opened", name, s.lim.MaxArchiveBytes)
		return
	}
	s.zip(part, name, data, false)
}

// tailWriter keeps the last tailLen bytes written to it.
type tailWriter struct{ b []byte }

func (t *tailWriter) Write(p []byte) (int, error) {
	if len(p) >= tailLen {
		t.b = append(t.b[:0], p[len(p)-tailLen:]...)
		return len(p), nil
	}
	t.b = append(t.b, p...)
	if len(t.b) > tailLen {
		t.b = append(t.b[:0], t.b[len(t.b)-tailLen:]...)
	}
	return len(p), nil
}

// match records a finding if an extension rule matches one of names or a
// type rule one of types.
func (s *scanner) match(part string, names, types []string) {
	f := Finding{Part: part}
	for _, n := range names {
		if e := extension(n); s.exts[e] {
			f.Filename, f.Extension = n, e
			break
		}
	}
	for _, t := range types {
		if s.types[t] {
			f.Type = t
			break
		}
	}
	if f.Extension == "" && f.Type == "" {
		return
	}
	if f.Filename == "" && len(names) > 0 {
		f.Filename = names[0]
	}
	s.rep.Findings = append(s.rep.Findings, f)
}

// zip matches the member names of the zip archive data (named name, in
// part) against the extension rules, and opens zips inside it unless nested
// already.
func (s *scanner) zip(part, name string, data []byte, nested bool) {
	label := where(part)
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) || zr == nil {
		s.problem(label, "archive %q: %v", name, err)
		return
	}
	for i, f := range zr.File {
		if i >= s.lim.MaxArchiveMembers {
			s.problem(label, "archive %q has more than %d members: the rest not scanned", name, s.lim.MaxArchiveMembers)
			return
		}
		ext := extension(f.Name)
		if s.exts[ext] {
			s.rep.Findings = append(s.rep.Findings, Finding{Part: part, Filename: f.Name, Archive: name, Extension: ext})
		}
		if ext != "zip" {
			continue
		}
		inner := name + "/" + f.Name
		switch {
		case nested:
			s.problem(label, "archive %q: nested more than one level deep: not opened", inner)
		case f.Flags&1 != 0:
			s.problem(label, "archive %q: encrypted: not opened", inner)
		case f.UncompressedSize64 > uint64(s.budget):
			s.problem(label, "archive %q: larger than the %d bytes left to decompress: not opened", inner, s.budget)
		default:
			s.nested(part, inner, f)
		}
	}
}

// nested decompresses the zip member f (named name) within the budget and
// scans it.
func (s *scanner) nested(part, name string, f *zip.File) {
	rc, err := f.Open()
	if err != nil {
		s.problem(where(part), "archive %q: %v", name, err)
		return
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, s.budget+1))
	if int64(len(data)) > s.budget {
		s.problem(where(part), "archive %q: larger than the %d bytes left to decompress: not opened", name, s.budget)
		s.budget = 0
		return
	}
	s.budget -= int64(len(data))
	if err != nil {
		s.problem(where(part), "archive %q: %v", name, err)
		return
	}
	s.zip(part, name, data, true)
}
