package dmarc

import (
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
)

// addressParser parses From values. Display names are not needed, so any
// charset of an encoded word is accepted as is instead of failing the
// parse.
var addressParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, input io.Reader) (io.Reader, error) { return input, nil },
}}

// FromDomains returns the domain of the author address of a message, given
// the values of all its From header fields (RFC 7489 section 3.1: the
// RFC5322.From domain is the identifier DMARC protects). It returns an
// error wrapping ErrNoFrom, ErrMultipleFrom, ErrMultipleAddresses or
// ErrBadFrom for a message without exactly one From field holding exactly
// one address with a domain (RFC 7489 section 6.6.1).
func FromDomains(fromValues []string) ([]string, error) {
	switch len(fromValues) {
	case 0:
		return nil, ErrNoFrom
	case 1:
	default:
		return nil, fmt.Errorf("%w (%d fields)", ErrMultipleFrom, len(fromValues))
	}
	// Unfold (RFC 5322 section 2.2.3): the parser does not take line
	// breaks as white space.
	value := unfolder.Replace(fromValues[0])
	if strings.TrimSpace(value) == "" {
		return nil, fmt.Errorf("%w: empty", ErrBadFrom)
	}
	addrs, err := addressParser.ParseList(value)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrBadFrom, value, err)
	}
	switch len(addrs) {
	case 0:
		return nil, fmt.Errorf("%w: %q has no address", ErrBadFrom, value)
	case 1:
	default:
		return nil, fmt.Errorf("%w (%d in %q)", ErrMultipleAddresses, len(addrs), value)
	}
	at := strings.LastIndexByte(addrs[0].Address, '@')
	domain := normalize(addrs[0].Address[at+1:])
	if at < 0 || !validDomain(domain) {
		return nil, fmt.Errorf("%w: no usable domain in %q", ErrBadFrom, addrs[0].Address)
	}
	return []string{domain}, nil
}

// validDomain reports whether domain is a DNS name we can look up:
// non-empty labels of at most 63 octets, no address literal, no space.
func validDomain(domain string) bool {
	if domain == "" || len(domain) > 253 || strings.HasPrefix(domain, "[") {
		return false
	}
	for label := range strings.SplitSeq(domain, ".") {
		if label == "" || len(label) > 63 || strings.ContainsAny(label, " \t;\"\\@") {
			return false
		}
	}
	return true
}

// unfolder removes line breaks; made once, as a Replacer builds its tables
// on first use.
var unfolder = strings.NewReplacer("\r\n", "", "\n", "", "\r", "")
