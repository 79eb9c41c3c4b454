// Package dmarc evaluates Domain-based Message Authentication, Reporting
// and Conformance (RFC 7489) from SPF and DKIM evidence and one DNS
// lookup, and returns typed evidence. Records are parsed by
// github.com/emersion/go-msgauth/dmarc; discovery, alignment and policy
// are here. It imports nothing of the application but scanners/dkim.
package dmarc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"strings"

	msgauth "github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"

	"github.com/mxguard/mxguard/scanners/dkim"
)

// Result is a DMARC result (RFC 7489 section 11.2, for
// Authentication-Results).
type Result string

const (
	None      Result = "none"      // no usable policy record: DMARC does not apply
	Pass      Result = "pass"      // SPF or DKIM passed with an aligned identifier
	Fail      Result = "fail"      // neither passed aligned; Policy says what the domain asks
	TempError Result = "temperror" // the record could not be retrieved for now: try again later
	PermError Result = "permerror" // the record or the From domain is unusable; nothing is enforced
)

// Policy is the treatment a domain asks for failing mail (RFC 7489
// section 6.3, tags p and sp).
type Policy string

const (
	PolicyNone       Policy = "none"
	PolicyQuarantine Policy = "quarantine"
	PolicyReject     Policy = "reject"
)

// Input is the evidence DMARC is computed from.
type Input struct {
	// FromDomains holds the domain of the RFC5322.From address; see
	// FromDomains. Evaluation needs exactly one distinct domain.
	FromDomains []string
	// SPFResult is the SPF result ("pass", "fail", ...), for SPFDomain:
	// the MAIL FROM domain, or the HELO name for the null sender.
	SPFResult string
	SPFDomain string
	// DKIM holds the verified signatures of the message.
	DKIM []dkim.Signature
}

// Evidence is the outcome of one DMARC evaluation.
type Evidence struct {
	Result    Result
	Domain    string // the RFC5322.From domain (header.from)
	OrgDomain string // its organizational domain (RFC 7489 section 3.2)
	// Policy is the policy the record requests for Domain: sp when the
	// record was found at OrgDomain for a subdomain and has sp, p
	// otherwise. Empty without a usable record.
	Policy Policy
	// Applied is whether Policy applies to this message: the result is
	// fail and pct sampling selected it. See Enforce.
	Applied                 bool
	SPFAligned, DKIMAligned bool
	AlignedDKIMDomain       string // d= of the first passing aligned signature
	Pct                     int    // the record's pct, 100 when absent
	Err                     error  // why the result is not pass, for the log
}

// Enforce returns the policy to act on (RFC 7489 section 6.6.4): none
// unless the result is fail; Policy when sampling selected the message;
// otherwise the next policy down, as the pct tag requires (reject becomes
// quarantine, quarantine becomes none).
func (e Evidence) Enforce() Policy {
	switch {
	case e.Result != Fail:
		return PolicyNone
	case e.Applied:
		return e.Policy
	case e.Policy == PolicyReject:
		return PolicyQuarantine
	default:
		return PolicyNone
	}
}

// Errors of FromDomains. RFC 7489 section 6.6.1 leaves such messages to
// the receiver; our policy rejects them, since they could be used to
// evade DMARC.
var (
	ErrNoFrom            = errors.New("dmarc: message has no From header field")
	ErrMultipleFrom      = errors.New("dmarc: message has more than one From header field")
	ErrMultipleAddresses = errors.New("dmarc: From header field has more than one address")
	ErrBadFrom           = errors.New("dmarc: From header field cannot be parsed")
)

// Evaluate evaluates DMARC for in, looking the policy record up through
// res under ctx (RFC 7489 section 6.6.3): at _dmarc.<From domain>, and
// when that has no DMARC record, at _dmarc.<organizational domain>. SPF
// and DKIM identifiers align with the From domain strictly (equal) or
// relaxed (same organizational domain) as the record's aspf and adkim say.
// sample returns a number in 0..99 for pct sampling; nil means random.
//
// Discovery outcomes:
//   - no record, or more than one DMARC record at the name that has
//     records (section 6.6.3 step 5: DMARC is not applied): None;
//   - a DNS failure other than "no such name/records": TempError, which
//     the caller should turn into a temporary failure;
//   - a record that does not parse: PermError and no policy (RFC 7489
//     section 11.2 names this permerror; nothing is enforced), except that
//     an invalid or missing p or sp with a valid rua URI counts as p=none
//     (section 6.6.3 step 6).
func Evaluate(ctx context.Context, res dkim.TXTResolver, in Input, sample func() int) Evidence {
	var ev Evidence
	domain, err := fromDomain(in.FromDomains)
	if err != nil {
		ev.Result, ev.Err = PermError, err
		return ev
	}
	ev.Domain, ev.OrgDomain = domain, OrganizationalDomain(domain)

	rec, at, err := discover(ctx, res, ev.Domain, ev.OrgDomain)
	switch {
	case errors.Is(err, errTemp):
		ev.Result, ev.Err = TempError, err
		return ev
	case errors.Is(err, errNoRecord), errors.Is(err, errMultiple):
		ev.Result, ev.Err = None, err
		return ev
	case err != nil:
		ev.Result, ev.Err = PermError, err
		return ev
	}

	ev.Policy = Policy(rec.Policy)
	if at != ev.Domain && rec.SubdomainPolicy != "" {
		ev.Policy = Policy(rec.SubdomainPolicy)
	}
	ev.Pct = 100
	if rec.Percent != nil {
		ev.Pct = *rec.Percent
	}

	// RFC 7489 section 3.1.2: only an SPF pass authenticates its domain.
	if strings.EqualFold(in.SPFResult, "pass") && aligned(in.SPFDomain, ev.Domain, rec.SPFAlignment) {
		ev.SPFAligned = true
	}
	// Section 3.1.1: any passing signature with an aligned d= will do.
	for _, s := range in.DKIM {
		if s.Result == dkim.Pass && aligned(s.Domain, ev.Domain, rec.DKIMAlignment) {
			ev.DKIMAligned, ev.AlignedDKIMDomain = true, strings.ToLower(s.Domain)
			break
		}
	}
	if ev.SPFAligned || ev.DKIMAligned {
		ev.Result = Pass
		return ev
	}

	ev.Result = Fail
	ev.Err = fmt.Errorf("dmarc: no aligned SPF pass (%s for %q) and no aligned DKIM pass (%d signatures) for %s",
		in.SPFResult, in.SPFDomain, len(in.DKIM), ev.Domain)
	if sample == nil {
		sample = func() int { return rand.IntN(100) }
	}
	// Section 6.6.4: apply the policy to pct percent of failing messages.
	ev.Applied = ev.Pct >= 100 || sample() < ev.Pct
	return ev
}

// fromDomain returns the one RFC5322.From domain of domains.
func fromDomain(domains []string) (string, error) {
	var domain string
	for _, d := range domains {
		d = normalize(d)
		if d == "" {
			return "", fmt.Errorf("%w: empty domain", ErrBadFrom)
		}
		if domain != "" && d != domain {
			return "", fmt.Errorf("%w: %s and %s", ErrMultipleAddresses, domain, d)
		}
		domain = d
	}
	if domain == "" {
		return "", ErrNoFrom
	}
	return domain, nil
}

var (
	errNoRecord = errors.New("dmarc: no DMARC record")
	errMultiple = errors.New("dmarc: more than one DMARC record")
	errTemp     = errors.New("dmarc: DNS lookup failed temporarily")
)

// discover finds the policy record for domain (RFC 7489 section 6.6.3),
// returning it and the domain where it was found.
func discover(ctx context.Context, res dkim.TXTResolver, domain, orgDomain string) (*msgauth.Record, string, error) {
	txt, err := lookup(ctx, res, domain)
	if errors.Is(err, errNoRecord) && orgDomain != domain {
		domain = orgDomain
		txt, err = lookup(ctx, res, domain)
	}
	if err != nil {
		return nil, "", err
	}
	rec, err := parse(txt)
	if err != nil {
		return nil, "", fmt.Errorf("dmarc: invalid record at _dmarc.%s: %w", domain, err)
	}
	return rec, domain, nil
}

// lookup returns the one DMARC record at _dmarc.<domain>. Records that do
// not start with v=DMARC1 are ignored (steps 2 and 4); more than one
// DMARC record means no DMARC (step 5), without trying the organizational
// domain (step 3 is only for an empty set).
func lookup(ctx context.Context, res dkim.TXTResolver, domain string) (string, error) {
	name := "_dmarc." + domain
	txts, err := res.LookupTXT(ctx, name)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return "", fmt.Errorf("%w at %s", errNoRecord, name)
		}
		return "", fmt.Errorf("%w: %w", errTemp, err)
	}
	var recs []string
	for _, t := range txts {
		if isDMARC(t) {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		return "", fmt.Errorf("%w at %s", errNoRecord, name)
	case 1:
		return recs[0], nil
	default:
		return "", fmt.Errorf("%w: %d at %s, DMARC not applied", errMultiple, len(recs), name)
	}
}

// isDMARC reports whether a TXT record starts with the v=DMARC1 tag
// (RFC 7489 section 6.4: "v" first, value case-sensitive).
func isDMARC(txt string) bool {
	first, _, _ := strings.Cut(txt, ";")
	k, v, ok := strings.Cut(first, "=")
	return ok && strings.TrimSpace(k) == "v" && strings.TrimSpace(v) == "DMARC1"
}

// parse parses a DMARC record. A record whose p is missing or invalid, or
// whose sp is invalid, but which has a valid rua URI, is read as p=none
// without sp (RFC 7489 section 6.6.3 step 6).
func parse(txt string) (*msgauth.Record, error) {
	rec, err := msgauth.Parse(txt)
	if err == nil {
		return rec, nil
	}
	tags, order := splitTags(txt)
	_, hasSP := tags["sp"]
	badPolicy := !validPolicy(tags["p"]) || hasSP && !validPolicy(tags["sp"])
	if !badPolicy || !validURIs(tags["rua"]) {
		return nil, err
	}
	tags["p"] = "none"
	delete(tags, "sp")
	if !slices.Contains(order, "p") {
		order = append(order, "p")
	}
	var b strings.Builder
	for _, k := range order {
		if v, ok := tags[k]; ok {
			fmt.Fprintf(&b, "%s=%s;", k, v)
		}
	}
	if rec, err2 := msgauth.Parse(b.String()); err2 == nil {
		return rec, nil
	}
	return nil, err
}

// splitTags splits a tag-list as go-msgauth does, keeping the tag order.
func splitTags(txt string) (map[string]string, []string) {
	tags := map[string]string{}
	var order []string
	for part := range strings.SplitSeq(txt, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		k = strings.TrimSpace(k)
		if _, dup := tags[k]; !dup {
			order = append(order, k)
		}
		tags[k] = strings.TrimSpace(v)
	}
	return tags, order
}

func validPolicy(p string) bool {
	return p == "none" || p == "quarantine" || p == "reject"
}

// validURIs reports whether a rua value has at least one absolute URI
// (RFC 7489 section 6.2; a size limit may follow "!").
func validURIs(rua string) bool {
	for u := range strings.SplitSeq(rua, ",") {
		u, _, _ = strings.Cut(strings.TrimSpace(u), "!")
		if p, err := url.Parse(u); err == nil && p.Scheme != "" && p.Opaque+p.Host+p.Path != "" {
			return true
		}
	}
	return false
}

// aligned reports whether the authenticated domain id aligns with the
// From domain (RFC 7489 sections 3.1.1 and 3.1.2).
func aligned(id, from string, mode msgauth.AlignmentMode) bool {
	id = normalize(id)
	if id == "" {
		return false
	}
	if mode == msgauth.AlignmentStrict {
		return id == from
	}
	return OrganizationalDomain(id) == OrganizationalDomain(from)
}

// OrganizationalDomain returns the organizational domain of domain (RFC
// 7489 section 3.2): its public suffix plus one label, from the Public
// Suffix List. A domain that is itself a public suffix, or that the list
// cannot handle, is its own organizational domain.
func OrganizationalDomain(domain string) string {
	domain = normalize(domain)
	org, err := publicsuffix.EffectiveTLDPlusOne(domain)
	if err != nil {
		return domain
	}
	return org
}

// normalize lowercases a domain and removes a final dot.
func normalize(domain string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(domain), "."))
}
