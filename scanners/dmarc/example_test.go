package dmarc_test

import (
	"context"
	"fmt"

	"github.com/mxguard/mxguard/scanners/dkim"
	"github.com/mxguard/mxguard/scanners/dmarc"
	"github.com/mxguard/mxguard/scanners/resolver"
)

// Example evaluates a message from a subdomain that only a DKIM signature
// of its parent domain authenticates.
func Example() {
	dns := &resolver.Fake{TXT: map[string][]string{
		"_dmarc.example.com": {"v=DMARC1; p=reject; sp=quarantine"},
	}}
	from, err := dmarc.FromDomains([]string{"Alice <alice@news.example.com>"})
	if err != nil {
		panic(err) // policy rejects such messages
	}
	ev := dmarc.Evaluate(context.Background(), dns, dmarc.Input{
		FromDomains: from,
		SPFResult:   "pass",
		SPFDomain:   "bounces.esp.example",
		DKIM:        []dkim.Signature{{Domain: "example.com", Selector: "s1", Result: dkim.Pass}},
	}, nil)
	fmt.Println(ev.Result, ev.Domain, ev.OrgDomain, ev.Policy, ev.SPFAligned, ev.DKIMAligned, ev.Enforce())
	// Output: pass news.example.com example.com quarantine false true none
}
