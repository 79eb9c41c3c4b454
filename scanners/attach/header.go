package attach

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"mime"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Header parsing is done here rather than with net/textproto or net/mail:
// those reject a whole header section over one malformed line (a space
// before the colon, a line without a colon) and hold header lines of any
// length in memory. A gateway must see what a lenient mail client sees, so
// this reader keeps going, bounds what it holds and reports what it skipped.

const (
	maxFieldBytes  = 64 << 10 // one header field, folded lines included
	maxHeaderBytes = 1 << 20  // one header section
)

// header holds the fields of one header section that the scan uses, each
// occurrence's unfolded value in order.
type header struct {
	contentType []string
	disposition []string
	encoding    []string
}

// first returns the first of vs, or "".
func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// readLine reads one line, newline included, keeping at most
// limit bytes of it and discarding the rest (long reports that).
func readLine(br *bufio.Reader, buf []byte, limit int) (line []byte, long bool, err error) {
	buf = buf[:0]
	for {
		frag, err := br.ReadSlice('\n')
		if room := limit - len(buf); len(frag) > room {
			buf = append(buf, frag[:max(room, 0)]...)
			long = true
		} else {
			buf = append(buf, frag...)
		}
		if err != bufio.ErrBufferFull {
			return buf, long, err
		}
	}
}

func trimNewline(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// fieldName returns the name of a header line "Name: value" and the value,
// or ok false if line is not one. White space before the colon is
// tolerated.
func fieldName(line []byte) (name string, value []byte, ok bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return "", nil, false
	}
	n := bytes.TrimRight(line[:i], " \t")
	if len(n) == 0 {
		return "", nil, false
	}
	for _, c := range n {
		if c <= ' ' || c > '~' {
			return "", nil, false
		}
	}
	return strings.ToLower(string(n)), line[i+1:], true
}

// readHeader reads a header section (RFC 5322 section 2.2) from br and
// returns the fields the scan needs and a reader for the body that follows.
// A line that is not a header field ends the section and is the body's
// first line (as if the empty line were missing); it and other oddities
// are reported through s.problem under label.
func (s *scanner) readHeader(br *bufio.Reader, label string) (header, io.Reader) {
	var h header
	var cur *[]string // the field being unfolded, if kept
	var val []byte
	commit := func() {
		if cur != nil {
			*cur = append(*cur, strings.TrimSpace(string(val)))
		}
		cur, val = nil, val[:0]
	}
	var line []byte
	total := 0
	truncated := false // reported once per section
	for n := 0; ; n++ {
		l, long, err := readLine(br, line, maxFieldBytes)
		line = l
		total += len(l)
		if err != nil && err != io.EOF {
			// A read error of the message itself: Scan returns it.
			commit()
			return h, br
		}
		if long && !truncated {
			truncated = true
			s.problem(label, "header line longer than %d bytes truncated", maxFieldBytes)
		}
		t := trimNewline(l)
		switch {
		case len(t) == 0 && len(l) == 0: // end of input
			commit()
			return h, br
		case len(t) == 0: // the empty line ending the header
			commit()
			return h, br
		case t[0] == ' ' || t[0] == '\t':
			if cur != nil && len(val)+len(t) <= maxFieldBytes {
				val = append(val, t...)
			} else if cur != nil && !truncated {
				truncated = true
				s.problem(label, "header field longer than %d bytes truncated", maxFieldBytes)
			}
		default:
			name, v, ok := fieldName(t)
			if !ok {
				if n == 0 && bytes.HasPrefix(t, []byte("From ")) {
					continue // mbox separator line
				}
				commit()
				s.problem(label, "header line without a field name: header ended early")
				rest := append(bytes.Clone(t), '\n')
				return h, io.MultiReader(bytes.NewReader(rest), br)
			}
			commit()
			switch name {
			case "content-type":
				cur = &h.contentType
			case "content-disposition":
				cur = &h.disposition
			case "content-transfer-encoding":
				cur = &h.encoding
			}
			if cur != nil {
				val = append(val, v...)
			}
		}
		if err == io.EOF {
			commit()
			return h, br
		}
		if total > maxHeaderBytes {
			commit()
			s.problem(label, "header section longer than %d bytes: rest of it skipped", maxHeaderBytes)
			for {
				l, long, err := readLine(br, line, 4)
				line = l
				if err != nil || !long && len(trimNewline(l)) == 0 {
					return h, br
				}
			}
		}
	}
}

// mediaType returns the lower-cased type/subtype of a Content-Type or
// Content-Disposition value and its parameters.
//
// The parameters are parsed here rather than with mime.ParseMediaType,
// which rejects the whole value over one malformed or duplicated parameter
// and drops RFC 2231 values in charsets other than UTF-8 and US-ASCII:
// either would let a crafted header hide a file name from the scan while a
// mail client still shows it. Every value of a repeated parameter is kept.
func mediaType(v string) (string, map[string][]string) {
	mt, rest, _ := strings.Cut(v, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	params := make(map[string][]string)
	type seg struct {
		val string
		ext bool
	}
	conts := make(map[string]map[int]seg)
	for rest != "" {
		rest = strings.TrimLeft(rest, " \t\r\n;")
		if rest == "" {
			break
		}
		eq := strings.IndexAny(rest, "=;")
		if eq < 0 || rest[eq] == ';' {
			// A parameter without a value: skip it.
			if eq < 0 {
				break
			}
			rest = rest[eq:]
			continue
		}
		key := strings.ToLower(strings.TrimSpace(rest[:eq]))
		rest = strings.TrimLeft(rest[eq+1:], " \t\r\n")
		var val string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(rest) && rest[i] != '"'; i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
				}
				b.WriteByte(rest[i])
			}
			val = b.String()
			rest = rest[min(i+1, len(rest)):]
			if j := strings.IndexByte(rest, ';'); j >= 0 {
				rest = rest[j:]
			} else {
				rest = ""
			}
		} else {
			j := strings.IndexByte(rest, ';')
			if j < 0 {
				j = len(rest)
			}
			val = strings.TrimSpace(rest[:j])
			rest = rest[j:]
		}
		// RFC 2231 sections 3 and 4: name*=charset'lang'value, name*0=,
		// name*1*=...
		base, star, isExt := key, "", false
		if i := strings.IndexByte(key, '*'); i > 0 {
			base, star = key[:i], key[i+1:]
			if strings.HasSuffix(star, "*") {
				star, isExt = star[:len(star)-1], true
			}
			if star == "" {
				params[base] = append(params[base], decode2231(val))
				continue
			}
			n, err := strconv.Atoi(star)
			if err != nil || n < 0 || n > 999 {
				continue
			}
			if conts[base] == nil {
				conts[base] = make(map[int]seg)
			}
			conts[base][n] = seg{val, isExt}
			continue
		}
		params[key] = append(params[key], val)
	}
	for base, segs := range conts {
		var b strings.Builder
		charset := ""
		for _, n := range slices.Sorted(maps.Keys(segs)) {
			sg := segs[n]
			v := sg.val
			if sg.ext {
				if n == 0 {
					if cs, r, ok := strings.Cut(v, "'"); ok {
						if _, r2, ok := strings.Cut(r, "'"); ok {
							charset, v = cs, r2
						}
					}
				}
				v = percentDecode(v)
			}
			b.WriteString(v)
		}
		// Extended values come first: a client that knows RFC 2231
		// prefers them.
		params[base] = append([]string{toUTF8(charset, b.String())}, params[base]...)
	}
	return mt, params
}

// decode2231 decodes an RFC 2231 extended value charset'language'%XX...
func decode2231(v string) string {
	cs, r, ok := strings.Cut(v, "'")
	if !ok {
		return percentDecode(v)
	}
	if _, r2, ok := strings.Cut(r, "'"); ok {
		r = r2
	}
	return toUTF8(cs, percentDecode(r))
}

func percentDecode(v string) string {
	if !strings.Contains(v, "%") {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '%' && i+2 < len(v) && isHex(v[i+1]) && isHex(v[i+2]) {
			b.WriteByte(unhex(v[i+1])<<4 | unhex(v[i+2]))
			i += 2
			continue
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// toUTF8 converts s from charset: ISO 8859-1 is converted, everything else
// (UTF-8, US-ASCII and charsets this package does not know) is kept as it
// is, which leaves ASCII file name extensions intact.
func toUTF8(charset, s string) string {
	if !isLatin1(charset) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteRune(rune(s[i]))
	}
	return b.String()
}

func isLatin1(charset string) bool {
	switch strings.ToLower(strings.TrimSpace(charset)) {
	case "iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1", "l1":
		return true
	}
	return false
}

// latin1Reader converts ISO 8859-1 bytes to UTF-8 (for mime.WordDecoder).
type latin1Reader struct{ r io.Reader }

func (l latin1Reader) Read(p []byte) (int, error) {
	// Each input byte may become two bytes: read at most half of p.
	buf := make([]byte, (len(p)+1)/2)
	n, err := l.r.Read(buf)
	out := p[:0]
	for _, c := range buf[:n] {
		out = utf8.AppendRune(out, rune(c))
	}
	return len(out), err
}

var (
	// strictWords decodes RFC 2047 encoded words in the charsets it knows;
	// mime.WordDecoder itself knows UTF-8, US-ASCII and ISO 8859-1.
	strictWords = &mime.WordDecoder{CharsetReader: func(charset string, r io.Reader) (io.Reader, error) {
		switch strings.ToLower(charset) {
		case "utf8", "ascii", "us_ascii", "usascii":
			return r, nil
		}
		if isLatin1(charset) {
			return latin1Reader{r}, nil
		}
		return nil, fmt.Errorf("charset %q not supported", charset)
	}}
	// rawWords decodes the words of any charset, keeping the bytes of the
	// ones it does not know: a file name's ASCII extension survives that.
	rawWords = &mime.WordDecoder{CharsetReader: func(charset string, r io.Reader) (io.Reader, error) {
		if isLatin1(charset) {
			return latin1Reader{r}, nil
		}
		return r, nil
	}}
)

// decodeWords decodes the RFC 2047 encoded words in s. In shown, a word in a
// charset this package does not know is left as it is; in raw, it is
// decoded to its bytes unconverted (for extension matching).
func decodeWords(s string) (shown, raw string) {
	if !strings.Contains(s, "=?") {
		return s, s
	}
	var b, r strings.Builder
	prevB, prevR := false, false // the previous token was a decoded word
	for {
		start := strings.Index(s, "=?")
		if start < 0 {
			break
		}
		end := wordEnd(s[start:])
		if end < 0 {
			break
		}
		end += start
		word, gap := s[start:end], s[:start]
		blank := strings.Trim(gap, " \t\r\n") == ""
		rd, err := rawWords.Decode(word)
		if err != nil { // not an encoded word after all
			b.WriteString(s[:end])
			r.WriteString(s[:end])
			prevB, prevR = false, false
			s = s[end:]
			continue
		}
		if !(prevR && blank) {
			r.WriteString(gap)
		}
		r.WriteString(rd)
		prevR = true
		if !(prevB && blank) {
			b.WriteString(gap)
		}
		if sd, err := strictWords.Decode(word); err == nil {
			b.WriteString(sd)
			prevB = true
		} else {
			b.WriteString(word)
			prevB = false
		}
		s = s[end:]
	}
	b.WriteString(s)
	r.WriteString(s)
	return b.String(), r.String()
}

// wordEnd returns the length of the encoded word =?charset?X?text?= that s
// starts with, or -1.
func wordEnd(s string) int {
	i := strings.IndexByte(s[2:], '?')
	if i < 0 {
		return -1
	}
	i += 2
	if len(s) < i+4 || s[i+2] != '?' {
		return -1
	}
	j := strings.Index(s[i+3:], "?=")
	if j < 0 {
		return -1
	}
	return i + 3 + j + 2
}
