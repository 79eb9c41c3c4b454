// Package spf evaluates the Sender Policy Framework (RFC 7208) for a client
// through blitiri.com.ar/go/spf, with mxguard's own resolver and the
// session's deadline, and returns typed evidence. It imports nothing of the
// application, so it can be used and tested alone.
package spf

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"

	blitiri "blitiri.com.ar/go/spf"
)

// Result is an SPF result (RFC 7208 section 2.6).
type Result string

const (
	None      Result = "none"      // 2.6.1: no record, or no domain to check
	Neutral   Result = "neutral"   // 2.6.2: the domain makes no assertion
	Pass      Result = "pass"      // 2.6.3: the client is authorized
	Fail      Result = "fail"      // 2.6.4: the client is not authorized
	SoftFail  Result = "softfail"  // 2.6.5: probably not authorized
	TempError Result = "temperror" // 2.6.6: transient (DNS) error
	PermError Result = "permerror" // 2.6.7: the record cannot be interpreted
)

// Evidence is the outcome of one SPF evaluation.
type Evidence struct {
	Result   Result
	Domain   string // the domain checked: the sender's, or the HELO name for the null sender
	Err      error  // why, for the log (set on errors and some results)
	Duration time.Duration
}

// Checker evaluates SPF with the resolver it is given.
type Checker struct {
	Resolver blitiri.DNSResolver
}

// Check evaluates SPF for a client at ip that said helo and used sender as
// envelope sender ("" for the null sender: then the HELO identity is
// checked, RFC 7208 section 2.3). It never blocks past ctx's deadline: a
// lookup cut short is a temperror.
func (c *Checker) Check(ctx context.Context, ip netip.Addr, helo, sender string) Evidence {
	start := time.Now()
	ev := Evidence{Domain: Domain(helo, sender)}
	if !ip.IsValid() {
		ev.Result, ev.Err = None, errors.New("no client IP address to check")
		return ev
	}
	if ev.Domain == "" {
		ev.Result, ev.Err = None, errors.New("no sender domain and no HELO name to check")
		return ev
	}
	res, err := blitiri.CheckHostWithSender(net.IP(ip.Unmap().AsSlice()), helo, sender,
		blitiri.WithResolver(c.Resolver), blitiri.WithContext(ctx))
	ev.Result, ev.Err, ev.Duration = Result(res), err, time.Since(start)
	if ctx.Err() != nil && ev.Result != Pass && ev.Result != Fail {
		// The library reports a cancelled lookup by the error it got; make
		// sure running out of time is never mistaken for a verdict.
		ev.Result, ev.Err = TempError, context.Cause(ctx)
	}
	return ev
}

// Domain returns the domain SPF is evaluated for: the envelope sender's
// domain, or the HELO name when the sender is null or has no domain.
func Domain(helo, sender string) string {
	if _, domain, ok := strings.Cut(sender, "@"); ok && domain != "" {
		return strings.ToLower(domain)
	}
	return strings.ToLower(strings.TrimSuffix(helo, "."))
}
