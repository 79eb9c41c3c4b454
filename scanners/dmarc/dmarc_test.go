package dmarc

import (
	"errors"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/internal/testdns"
	"github.com/mxguard/mxguard/scanners/dkim"
	"github.com/mxguard/mxguard/scanners/resolver"
)

var fake = &resolver.Fake{
	TXT: map[string][]string{
		"_dmarc.example.com":     {"v=spf1 -all", "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.com"},
		"_dmarc.own.example.com": {"v=DMARC1; p=none"},
		"sub.example.com":        {"v=spf1 -all"},
		"_dmarc.strict.example":  {"v=DMARC1; p=reject; adkim=s; aspf=s"},
		"_dmarc.nosp.example":    {"v=DMARC1; p=quarantine"},
		"_dmarc.pct.example":     {"v=DMARC1; p=reject; pct=50"},
		"_dmarc.pct0.example":    {"v=DMARC1; p=quarantine; pct=0"},
		"_dmarc.two.example":     {"v=DMARC1; p=reject", "v=DMARC1; p=none"},
		"_dmarc.two.example.com": {"v=DMARC1; p=none", "v=DMARC1; p=none"},
		"_dmarc.other.example":   {"v=DMARC2; p=reject", "some text"},
		"_dmarc.bad.example":     {"v=DMARC1; p=reject; pct=150"},
		"_dmarc.badp.example":    {"v=DMARC1; p=block"},
		"_dmarc.badprua.example": {"v=DMARC1; p=block; sp=reject; rua=mailto:agg@badprua.example!10m"},
		"_dmarc.norua.example":   {"v=DMARC1; rua=mailto:agg@norua.example"},
		"_dmarc.example.co.uk":   {"v=DMARC1; p=reject"},
	},
	Errors: map[string]error{
		"_dmarc.broken.example":     resolver.ServFail("_dmarc.broken.example"),
		"_dmarc.sub.broken.example": resolver.NotFound("_dmarc.sub.broken.example"),
		"_dmarc.slow.example":       resolver.Timeout("_dmarc.slow.example"),
	},
}

func sig(domain string, r dkim.Result) dkim.Signature {
	return dkim.Signature{Domain: domain, Selector: "s", Result: r}
}

func TestEvaluate(t *testing.T) {
	for _, c := range []struct {
		name   string
		in     Input
		sample int // what sample returns; -1 means it must not be called
		want   Evidence
	}{
		{
			name:   "aligned via SPF only (relaxed)",
			in:     Input{FromDomains: []string{"example.com"}, SPFResult: "pass", SPFDomain: "bounce.example.com"},
			sample: -1,
			want:   Evidence{Result: Pass, Domain: "example.com", OrgDomain: "example.com", Policy: PolicyReject, SPFAligned: true, Pct: 100},
		},
		{
			name: "aligned via DKIM only",
			in: Input{FromDomains: []string{"example.com"}, SPFResult: "fail", SPFDomain: "example.com",
				DKIM: []dkim.Signature{sig("example.net", dkim.Pass), sig("example.com", dkim.Pass)}},
			sample: -1,
			want: Evidence{Result: Pass, Domain: "example.com", OrgDomain: "example.com", Policy: PolicyReject,
				DKIMAligned: true, AlignedDKIMDomain: "example.com", Pct: 100},
		},
		{
			name: "relaxed DKIM alignment with a subdomain signature",
			in: Input{FromDomains: []string{"example.com"}, SPFResult: "none",
				DKIM: []dkim.Signature{sig("Mail.Example.com", dkim.Pass)}},
			sample: -1,
			want: Evidence{Result: Pass, Domain: "example.com", OrgDomain: "example.com", Policy: PolicyReject,
				DKIMAligned: true, AlignedDKIMDomain: "mail.example.com", Pct: 100},
		},
		{
			name: "strict alignment: subdomain signature and SPF domain do not align",
			in: Input{FromDomains: []string{"strict.example"}, SPFResult: "pass", SPFDomain: "mail.strict.example",
				DKIM: []dkim.Signature{sig("mail.strict.example", dkim.Pass)}},
			sample: 99,
			want:   Evidence{Result: Fail, Domain: "strict.example", OrgDomain: "strict.example", Policy: PolicyReject, Applied: true, Pct: 100},
		},
		{
			name: "strict alignment: exact domains align",
			in: Input{FromDomains: []string{"strict.example"}, SPFResult: "pass", SPFDomain: "strict.example",
				DKIM: []dkim.Signature{sig("strict.example", dkim.Pass)}},
			sample: -1,
			want: Evidence{Result: Pass, Domain: "strict.example", OrgDomain: "strict.example", Policy: PolicyReject,
				SPFAligned: true, DKIMAligned: true, AlignedDKIMDomain: "strict.example", Pct: 100},
		},
		{
			name: "aligned but not passing",
			in: Input{FromDomains: []string{"example.com"}, SPFResult: "softfail", SPFDomain: "example.com",
				DKIM: []dkim.Signature{sig("example.com", dkim.Fail), sig("example.com", dkim.TempError), sig("example.com", dkim.Policy)}},
			sample: 0,
			want:   Evidence{Result: Fail, Domain: "example.com", OrgDomain: "example.com", Policy: PolicyReject, Applied: true, Pct: 100},
		},
		{
			name: "passing but not aligned with another organization",
			in: Input{FromDomains: []string{"example.com"}, SPFResult: "pass", SPFDomain: "example.com.evil.example",
				DKIM: []dkim.Signature{sig("evil.example", dkim.Pass)}},
			sample: 0,
			want:   Evidence{Result: Fail, Domain: "example.com", OrgDomain: "example.com", Policy: PolicyReject, Applied: true, Pct: 100},
		},
		{
			name:   "subdomain policy sp from the organizational domain",
			in:     Input{FromDomains: []string{"sub.example.com"}, SPFResult: "fail", SPFDomain: "sub.example.com"},
			sample: 0,
			want:   Evidence{Result: Fail, Domain: "sub.example.com", OrgDomain: "example.com", Policy: PolicyQuarantine, Applied: true, Pct: 100},
		},
		{
			name:   "subdomain without sp gets p",
			in:     Input{FromDomains: []string{"a.b.nosp.example"}, SPFResult: "fail", SPFDomain: "a.b.nosp.example"},
			sample: 0,
			want:   Evidence{Result: Fail, Domain: "a.b.nosp.example", OrgDomain: "nosp.example", Policy: PolicyQuarantine, Applied: true, Pct: 100},
		},
		{
			name:   "subdomain with its own record gets its p, not the parent's sp",
			in:     Input{FromDomains: []string{"own.example.com"}, SPFResult: "fail"},
			sample: 0,
			want:   Evidence{Result: Fail, Domain: "own.example.com", OrgDomain: "example.com", Policy: PolicyNone, Applied: true, Pct: 100},
		},
		{
			name:   "subdomain aligns relaxed with the organizational domain",
			in:     Input{FromDomains: []string{"sub.example.com"}, SPFResult: "pass", SPFDomain: "example.com"},
			sample: -1,
			want:   Evidence{Result: Pass, Domain: "sub.example.com", OrgDomain: "example.com", Policy: PolicyQuarantine, SPFAligned: true, Pct: 100},
		},
		{
			name:   "pct=50, sample 10: applied",
			in:     Input{FromDomains: []string{"pct.example"}, SPFResult: "fail"},
			sample: 10,
			want:   Evidence{Result: Fail, Domain: "pct.example", OrgDomain: "pct.example", Policy: PolicyReject, Applied: true, Pct: 50},
		},
		{
			name:   "pct=50, sample 90: not applied",
			in:     Input{FromDomains: []string{"pct.example"}, SPFResult: "fail"},
			sample: 90,
			want:   Evidence{Result: Fail, Domain: "pct.example", OrgDomain: "pct.example", Policy: PolicyReject, Applied: false, Pct: 50},
		},
		{
			name:   "pct=0: never applied",
			in:     Input{FromDomains: []string{"pct0.example"}, SPFResult: "fail"},
			sample: 0,
			want:   Evidence{Result: Fail, Domain: "pct0.example", OrgDomain: "pct0.example", Policy: PolicyQuarantine, Applied: false, Pct: 0},
		},
		{
			name:   "no record",
			in:     Input{FromDomains: []string{"mail.nodmarc.example"}, SPFResult: "fail"},
			sample: -1,
			want:   Evidence{Result: None, Domain: "mail.nodmarc.example", OrgDomain: "nodmarc.example"},
		},
		{
			name:   "only other TXT records and versions",
			in:     Input{FromDomains: []string{"other.example"}, SPFResult: "fail"},
			sample: -1,
			want:   Evidence{Result: None, Domain: "other.example", OrgDomain: "other.example"},
		},
		{
			name:   "two DMARC records: not applied",
			in:     Input{FromDomains: []string{"two.example"}, SPFResult: "fail"},
			sample: -1,
			want:   Evidence{Result: None, Domain: "two.example", OrgDomain: "two.example"},
		},
		{
			name:   "two DMARC records at a subdomain: not applied, no fallback",
			in:     Input{FromDomains: []string{"two.example.com"}, SPFResult: "fail"},
			sample: -1,
			want:   Evidence{Result: None, Domain: "two.example.com", OrgDomain: "example.com"},
		},
		{
			name:   "organizational domain under a multi-label public suffix",
			in:     Input{FromDomains: []string{"mail.example.co.uk"}, SPFResult: "pass", SPFDomain: "example.co.uk"},
			sample: -1,
			want:   Evidence{Result: Pass, Domain: "mail.example.co.uk", OrgDomain: "example.co.uk", Policy: PolicyReject, SPFAligned: true, Pct: 100},
		},
		{
			name:   "invalid record: permerror, nothing enforced",
			in:     Input{FromDomains: []string{"bad.example"}, SPFResult: "fail"},
			sample: -1,
			want:   Evidence{Result: PermError, Domain: "bad.example", OrgDomain: "bad.example"},
		},
		{
			name:   "invalid p without rua: permerror",
			in:     Input{FromDomains: []string{"badp.example"}, SPFResult: "fail"},
			sample: -1,
			want:   Evidence{Result: PermError, Domain: "badp.example", OrgDomain: "badp.example"},
		},
		{
			name:   "invalid p with a valid rua: p=none",
			in:     Input{FromDomains: []string{"x.badprua.example"}, SPFResult: "fail"},
			sample: 0,
			want:   Evidence{Result: Fail, Domain: "x.badprua.example", OrgDomain: "badprua.example", Policy: PolicyNone, Applied: true, Pct: 100},
		},
		{
			name:   "missing p with a valid rua: p=none",
			in:     Input{FromDomains: []string{"norua.example"}, SPFResult: "fail"},
			sample: 0,
			want:   Evidence{Result: Fail, Domain: "norua.example", OrgDomain: "norua.example", Policy: PolicyNone, Applied: true, Pct: 100},
		},
		{
			name:   "SERVFAIL: temperror",
			in:     Input{FromDomains: []string{"broken.example"}, SPFResult: "pass", SPFDomain: "broken.example"},
			sample: -1,
			want:   Evidence{Result: TempError, Domain: "broken.example", OrgDomain: "broken.example"},
		},
		{
			name:   "SERVFAIL at the organizational domain: temperror",
			in:     Input{FromDomains: []string{"sub.broken.example"}, SPFResult: "pass", SPFDomain: "broken.example"},
			sample: -1,
			want:   Evidence{Result: TempError, Domain: "sub.broken.example", OrgDomain: "broken.example"},
		},
		{
			name:   "timeout: temperror",
			in:     Input{FromDomains: []string{"slow.example"}},
			sample: -1,
			want:   Evidence{Result: TempError, Domain: "slow.example", OrgDomain: "slow.example"},
		},
		{
			name:   "two From domains: permerror",
			in:     Input{FromDomains: []string{"example.com", "example.net"}, SPFResult: "pass", SPFDomain: "example.com"},
			sample: -1,
			want:   Evidence{Result: PermError},
		},
		{
			name:   "the same From domain twice counts once",
			in:     Input{FromDomains: []string{"example.com", "EXAMPLE.com."}, SPFResult: "pass", SPFDomain: "example.com"},
			sample: -1,
			want:   Evidence{Result: Pass, Domain: "example.com", OrgDomain: "example.com", Policy: PolicyReject, SPFAligned: true, Pct: 100},
		},
		{
			name:   "no From domain: permerror",
			in:     Input{SPFResult: "pass", SPFDomain: "example.com"},
			sample: -1,
			want:   Evidence{Result: PermError},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			calls := 0
			sample := func() int {
				calls++
				if c.sample < 0 {
					t.Error("sample called")
				}
				return c.sample
			}
			got := Evaluate(t.Context(), fake, c.in, sample)
			if (got.Err == nil) != (got.Result == Pass) {
				t.Errorf("result %s with error %v", got.Result, got.Err)
			}
			t.Logf("%+v", got)
			got.Err = nil
			if got != c.want {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
			if calls > 1 {
				t.Errorf("sample called %d times", calls)
			}
		})
	}
}

func TestEvaluateErrors(t *testing.T) {
	ev := Evaluate(t.Context(), fake, Input{FromDomains: []string{"a.com", "b.com"}}, nil)
	if !errors.Is(ev.Err, ErrMultipleAddresses) {
		t.Errorf("two domains: err = %v", ev.Err)
	}
	ev = Evaluate(t.Context(), fake, Input{}, nil)
	if !errors.Is(ev.Err, ErrNoFrom) {
		t.Errorf("no domain: err = %v", ev.Err)
	}
	ev = Evaluate(t.Context(), fake, Input{FromDomains: []string{"two.example"}}, nil)
	if ev.Err == nil || !strings.Contains(ev.Err.Error(), "more than one DMARC record: 2 at _dmarc.two.example") {
		t.Errorf("two records: err = %v", ev.Err)
	}
	ev = Evaluate(t.Context(), fake, Input{FromDomains: []string{"broken.example"}}, nil)
	var dnsErr interface{ Temporary() bool }
	if !errors.As(ev.Err, &dnsErr) || !dnsErr.Temporary() {
		t.Errorf("servfail: err = %v does not carry the DNS error", ev.Err)
	}
}

// TestEvaluateRandomSample checks the default sampler stays in range:
// with pct=50 both outcomes occur.
func TestEvaluateRandomSample(t *testing.T) {
	seen := map[bool]bool{}
	for range 200 {
		ev := Evaluate(t.Context(), fake, Input{FromDomains: []string{"pct.example"}}, nil)
		seen[ev.Applied] = true
	}
	if !seen[true] || !seen[false] {
		t.Errorf("pct=50 with random sampling: applied outcomes %v", seen)
	}
}

func TestEnforce(t *testing.T) {
	for _, c := range []struct {
		ev   Evidence
		want Policy
	}{
		{Evidence{Result: Pass, Policy: PolicyReject}, PolicyNone},
		{Evidence{Result: None}, PolicyNone},
		{Evidence{Result: TempError}, PolicyNone},
		{Evidence{Result: PermError}, PolicyNone},
		{Evidence{Result: Fail, Policy: PolicyReject, Applied: true}, PolicyReject},
		{Evidence{Result: Fail, Policy: PolicyReject}, PolicyQuarantine},
		{Evidence{Result: Fail, Policy: PolicyQuarantine, Applied: true}, PolicyQuarantine},
		{Evidence{Result: Fail, Policy: PolicyQuarantine}, PolicyNone},
		{Evidence{Result: Fail, Policy: PolicyNone, Applied: true}, PolicyNone},
	} {
		if got := c.ev.Enforce(); got != c.want {
			t.Errorf("%+v.Enforce() = %s, want %s", c.ev, got, c.want)
		}
	}
}

// TestEvaluateDNS runs Evaluate against the real resolver and testdns.
func TestEvaluateDNS(t *testing.T) {
	srv, err := testdns.Start(`
$ORIGIN example.com.
@        SOA  ns hostmaster 1 3600 600 86400 60
_dmarc   TXT  "v=DMARC1; p=reject; sp=quarantine"
;! servfail _dmarc.broken.example.com
`)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	res, err := resolver.New(resolver.Config{Server: srv.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		from   string
		want   Result
		policy Policy
	}{
		{"example.com", Fail, PolicyReject},
		{"a.b.example.com", Fail, PolicyQuarantine}, // NXDOMAIN, then the organizational domain
		{"broken.example.com", TempError, ""},       // SERVFAIL: no fallback
	} {
		ev := Evaluate(t.Context(), res, Input{FromDomains: []string{c.from}, SPFResult: "fail"}, func() int { return 0 })
		if ev.Result != c.want || ev.Policy != c.policy {
			t.Errorf("%s: got %s %q (%v), want %s %q", c.from, ev.Result, ev.Policy, ev.Err, c.want, c.policy)
		}
	}
}

func TestOrganizationalDomain(t *testing.T) {
	for in, want := range map[string]string{
		"example.com":           "example.com",
		"A.B.Example.COM.":      "example.com",
		"mail.example.co.uk":    "example.co.uk",
		"co.uk":                 "co.uk",
		"com":                   "com",
		"localhost":             "localhost",
		"x.y.strict.example":    "strict.example",
		"":                      "",
		"foo.bar.blogspot.com":  "bar.blogspot.com",
		"deep.a.b.c.example.de": "example.de",
	} {
		if got := OrganizationalDomain(in); got != want {
			t.Errorf("OrganizationalDomain(%q) = %q, want %q", in, got, want)
		}
	}
}
