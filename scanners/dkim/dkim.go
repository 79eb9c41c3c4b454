// Package dkim verifies and creates DomainKeys Identified Mail signatures
// (RFC 6376, RFC 8463 for Ed25519) through github.com/emersion/go-msgauth,
// with mxguard's resolver and the session's context, and returns typed
// evidence per signature. It imports nothing of the application, so it can
// be used and tested alone.
package dkim

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode"

	msgauth "github.com/emersion/go-msgauth/dkim"
)

// TXTResolver looks up DNS TXT records. *resolver.Resolver and
// resolver.Fake implement it. Errors should be *net.DNSError: IsNotFound
// for a name without records, IsTimeout or IsTemporary for failures worth
// retrying.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Result is the result of verifying one signature, as reported in an
// Authentication-Results header field (RFC 8601 section 2.7.1).
type Result string

const (
	None      Result = "none"      // the message was not signed
	Pass      Result = "pass"      // the signature verified
	Fail      Result = "fail"      // the signature did not verify: body or header changed, wrong key
	Policy    Result = "policy"    // the signature is not acceptable to us (l= tag), whether it verifies or not
	Neutral   Result = "neutral"   // the signature could not be processed (not produced here)
	TempError Result = "temperror" // the key could not be retrieved for now (DNS failure, timeout)
	PermError Result = "permerror" // the signature or key is unusable: syntax, key missing or revoked
)

// MaxSignatures is how many signatures of one message Verify verifies; the
// others are permerror (RFC 6376 section 8.4 lets verifiers limit the work
// a message can cause).
const MaxSignatures = 8

// ErrTooManySignatures is the Err of the signatures past MaxSignatures.
var ErrTooManySignatures = fmt.Errorf("dkim: too many signatures, only the first %d are verified", MaxSignatures)

// ErrBodyLength is the Err of a signature with an l= tag, whose result is
// Policy: such a signature covers only the first part of the body, so
// anything appended to the body still verifies (RFC 6376 section 8.2). We
// do not accept it, as go-msgauth does not.
var ErrBodyLength = errors.New("dkim: signature has a body length tag (l=) and covers only part of the body")

// Signature is the outcome of verifying one DKIM-Signature header field.
type Signature struct {
	Domain     string // d=, the signing domain (SDID), lowercase
	Selector   string // s=
	Identifier string // i=, the AUID; "@" + Domain when absent
	Algorithm  string // a=, for example "rsa-sha256" or "ed25519-sha256"
	BodyLength bool   // an l= tag is present; the result is then Policy
	BPrefix    string // the first 8 characters of b=, for header.b in Authentication-Results (RFC 6008)
	Result     Result
	Err        error // why the result is not Pass
}

// Verify verifies every DKIM-Signature header field of the raw message msg
// (header, empty line, body; CRLF line endings), looking keys up through
// res under ctx. It returns one Signature per header field, in header
// order, and none for an unsigned message. The error is for a message that
// cannot be read; problems with a signature are in its Result and Err.
//
// Results follow RFC 6376 section 6.1 as go-msgauth reports them: a key
// that does not exist (NXDOMAIN, no TXT record), is revoked (empty p=) or
// does not parse is PermError; a DNS failure or timeout is TempError; a
// body or header that changed is Fail. Revocation is PermError rather than
// Fail because RFC 6376 section 6.1.2 step 6 names it PERMFAIL (key
// revoked): there is no key to verify with, so the signature was never
// checked, which is RFC 8601's permerror and not its fail.
func Verify(ctx context.Context, res TXTResolver, msg io.Reader) ([]Signature, error) {
	br := readers.Get().(*bufio.Reader)
	br.Reset(msg)
	defer func() {
		br.Reset(nil)
		readers.Put(br)
	}()
	// The header is read and parsed from br's buffer without consuming it,
	// so that go-msgauth reads it from br again with no copy (its
	// bufio.NewReader returns br itself); only a header too long for the
	// buffer, or unusual line endings, take readHeader's copy.
	var in io.Reader = br
	fields, ok, err := peekHeader(br)
	if err == nil && !ok {
		var header []byte
		header, fields, err = readHeader(br)
		in = concat{bytes.NewReader(header), br}
	}
	if err != nil {
		return nil, err
	}
	var sigs []Signature
	for _, f := range fields {
		if strings.EqualFold(f.name, "DKIM-Signature") {
			sigs = append(sigs, describe(f.value))
		}
	}
	if len(sigs) == 0 {
		return nil, nil
	}

	verifs, err := msgauth.VerifyWithOptions(in, &msgauth.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			return res.LookupTXT(ctx, name)
		},
		MaxVerifications: MaxSignatures,
	})
	if err != nil && !errors.Is(err, msgauth.ErrTooManySignatures) {
		return nil, fmt.Errorf("dkim: verifying: %w", err)
	}
	for i := range sigs {
		s := &sigs[i]
		if i >= len(verifs) {
			s.Result, s.Err = PermError, ErrTooManySignatures
			continue
		}
		v := verifs[i]
		if v.Domain != "" {
			s.Domain = strings.ToLower(v.Domain)
		}
		if v.Identifier != "" {
			s.Identifier = v.Identifier
		}
		s.Result, s.Err = classify(v.Err, s.BodyLength)
	}
	return sigs, nil
}

// classify maps a go-msgauth verification error to a result.
func classify(err error, bodyLength bool) (Result, error) {
	switch {
	case err == nil:
		return Pass, nil
	case msgauth.IsTempFail(err):
		return TempError, err
	case msgauth.IsPermFail(err):
		return PermError, err
	case bodyLength:
		// go-msgauth refuses l= with a plain failure before it checks the
		// body or the signature (its own TODO says this should be a policy
		// error); every other failure comes after that check.
		return Policy, ErrBodyLength
	default:
		return Fail, err
	}
}

// describe reads the tags of a DKIM-Signature value that Signature
// reports. Verification checks them again; here a malformed value just
// leaves fields empty.
func describe(value string) Signature {
	tags := parseTags(value)
	s := Signature{
		Domain:     strings.ToLower(stripSpace(tags["d"])),
		Selector:   stripSpace(tags["s"]),
		Identifier: stripSpace(tags["i"]),
		Algorithm:  strings.ToLower(stripSpace(tags["a"])),
	}
	_, s.BodyLength = tags["l"]
	if s.Identifier == "" && s.Domain != "" {
		s.Identifier = "@" + s.Domain
	}
	b := stripSpace(tags["b"])
	s.BPrefix = b[:min(8, len(b))]
	return s
}

// parseTags splits a tag-list (RFC 6376 section 3.2) into its tags. The
// first of repeated tags wins; parts without "=" are skipped.
func parseTags(s string) map[string]string {
	tags := map[string]string{}
	for part := range strings.SplitSeq(s, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		k = strings.TrimSpace(k)
		if _, dup := tags[k]; !dup {
			tags[k] = strings.TrimSpace(v)
		}
	}
	return tags
}

func stripSpace(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
}

// field is one header field: name, and value unfolded.
type field struct {
	name, value string
}

// readHeader reads the header of a message from br, up to and including
// the empty line, and returns it raw and as fields. A message that ends
// inside its header (no body) gets the empty line added, so it can still
// be verified or signed.
func readHeader(br *bufio.Reader) ([]byte, []field, error) {
	var raw bytes.Buffer
	var fields []field
	for {
		line, err := br.ReadBytes('\n')
		if err != nil && err != io.EOF {
			return nil, nil, fmt.Errorf("dkim: reading message header: %w", err)
		}
		if len(line) == 0 || bytes.Equal(line, []byte("\r\n")) || bytes.Equal(line, []byte("\n")) {
			raw.WriteString("\r\n")
			return raw.Bytes(), fields, nil
		}
		text := strings.TrimRight(string(line), "\r\n")
		if text == "" {
			// A line of a lone CR is not a field either: end the header.
			raw.WriteString("\r\n")
			return raw.Bytes(), fields, nil
		}
		if line[len(line)-1] != '\n' {
			line = append(line, "\r\n"...)
		}
		raw.Write(line)
		fields = addLine(fields, text)
		if err == io.EOF {
			raw.WriteString("\r\n")
			return raw.Bytes(), fields, nil
		}
	}
}

// addLine adds a line of a header, without its line ending, to fields: a
// field of its own, or the continuation of the last one.
func addLine(fields []field, text string) []field {
	if (text[0] == ' ' || text[0] == '\t') && len(fields) > 0 {
		fields[len(fields)-1].value += text
		return fields
	}
	name, value, _ := strings.Cut(text, ":")
	return append(fields, field{strings.TrimSpace(name), value})
}

// readers holds the buffered readers of Verify. Their buffer is large
// enough for the header of nearly every message (peekHeader).
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 32<<10) }}

// peekHeader parses the header the way readHeader does, from br's buffer
// and without consuming anything, when the whole header is there and ends
// in an empty line of CRLF. ok is false when it is not (too long for the
// buffer, a message that ends inside its header, an empty line of a bare
// LF or of CRs): readHeader, which copies and mends such a header, is then
// the way.
func peekHeader(br *bufio.Reader) (fields []field, ok bool, err error) {
	p, err := br.Peek(br.Size())
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		// In the header or in the body: Peek read as far as it could.
		return nil, false, fmt.Errorf("dkim: reading message: %w", err)
	}
	// Find the empty line first, so the header becomes a string once and
	// its lines are substrings of it.
	end := -1
	for i := 0; i < len(p); {
		n := bytes.IndexByte(p[i:], '\n')
		if n < 0 {
			return nil, false, nil
		}
		if len(bytes.TrimRight(p[i:i+n+1], "\r\n")) == 0 {
			if n != 1 || p[i] != '\r' {
				return nil, false, nil
			}
			end = i
			break
		}
		i += n + 1
	}
	if end < 0 {
		return nil, false, nil
	}
	header := string(p[:end])
	for line := range strings.SplitSeq(header, "\n") {
		if line != "" {
			fields = addLine(fields, strings.TrimRight(line, "\r"))
		}
	}
	return fields, true, nil
}

// concat reads head, then rest. Unlike io.MultiReader, whose WriteTo
// allocates a 32 KiB buffer per call, its WriteTo hands each part to
// io.Copy, which uses the part's own WriteTo: verification streams the
// body without a copy buffer per message.
type concat struct {
	head *bytes.Reader
	rest io.Reader
}

func (c concat) Read(p []byte) (int, error) {
	if c.head.Len() > 0 {
		return c.head.Read(p)
	}
	return c.rest.Read(p)
}

func (c concat) WriteTo(w io.Writer) (int64, error) {
	n, err := c.head.WriteTo(w)
	if err != nil {
		return n, err
	}
	m, err := io.Copy(w, c.rest)
	return n + m, err
}
