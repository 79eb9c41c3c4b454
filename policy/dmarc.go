package policy

import (
	"context"
	"fmt"
	"time"

	"github.com/mxguard/mxguard/scanners/dmarc"
)

// singleFromDomain is the domain of the message's one From address.
func singleFromDomain(msg *Message) (string, error) {
	ds, err := dmarc.FromDomains(msg.Values("From"))
	if err != nil {
		return "", err
	}
	return ds[0], nil
}

// checkDMARC evaluates DMARC for inbound mail once SPF and DKIM are known,
// records it, and returns the verdict the organisation's settings give.
// A message without exactly one From address is refused (RFC 7489 section
// 6.6.1): which address would DMARC protect?
func (e *Engine) checkDMARC(ctx context.Context, t *Transaction, msg *Message) Verdict {
	if !e.cfg.DMARC.Enabled || e.dns == nil || t.OurUser() {
		return accept
	}
	domains, err := dmarc.FromDomains(msg.Values("From"))
	if err != nil {
		t.record(Evidence{Check: "dmarc", Result: string(dmarc.PermError), Err: err})
		return refuse(Reject, 550, "5.7.1", FromHeaderInvalid, "%s", fromProblem(err))
	}
	in := dmarc.Input{FromDomains: domains, DKIM: t.dkim}
	if ev, ok := t.SPF(ctx); ok {
		in.SPFResult, in.SPFDomain = string(ev.Result), ev.Domain
	}
	start := time.Now()
	ev := dmarc.Evaluate(ctx, e.dns, in, e.dmarcSample)
	t.dmarc = &ev
	policy := ev.Enforce()
	cfg := e.cfg.dmarcFor(t)
	v := accept
	switch {
	case ev.Result == dmarc.TempError:
		v = dmarcVerdict(cfg.TempError, 451, "4.7.5", DMARCTempError, "the DMARC policy of %s cannot be retrieved now", ev.Domain)
	case policy == dmarc.PolicyReject:
		v = dmarcVerdict(cfg.Reject, 550, "5.7.1", DMARCReject, "%s does not pass DMARC and its owner asks to reject such mail", ev.Domain)
	case policy == dmarc.PolicyQuarantine:
		v = dmarcVerdict(cfg.Quarantine, 550, "5.7.1", DMARCQuarantine, "%s does not pass DMARC and its owner asks to quarantine such mail", ev.Domain)
	}
	applied := "not applied"
	if v.Action > Accept {
		applied = "applied: " + v.Action.String()
	}
	detail := fmt.Sprintf("header.from=%s p=%s pct=%d spf_aligned=%t dkim_aligned=%t; policy %s", ev.Domain, ev.Policy, ev.Pct, ev.SPFAligned, ev.DKIMAligned, applied)
	if ev.Policy == "" {
		detail = fmt.Sprintf("header.from=%s: no usable DMARC record", ev.Domain)
	}
	rec := Evidence{Check: "dmarc", Result: string(ev.Result), Duration: time.Since(start), Detail: detail}
	switch {
	case ev.Result == dmarc.TempError || ev.Result == dmarc.PermError:
		rec.Err = ev.Err
	case ev.Err != nil: // why it failed, or that there is no record: explanation, not error
		rec.Detail += " (" + ev.Err.Error() + ")"
	}
	t.record(rec)
	return v
}

func dmarcVerdict(a Action, code int, enhanced string, reason Reason, format string, args ...any) Verdict {
	if a == Tempfail {
		code, enhanced = 451, "4.7.5"
	}
	return contentVerdict(a, code, enhanced, reason, format, args...)
}

func fromProblem(err error) string {
	switch err {
	case dmarc.ErrNoFrom:
		return "the message has no From header field"
	case dmarc.ErrMultipleFrom:
		return "the message has more than one From header field"
	case dmarc.ErrMultipleAddresses:
		return "the From header field has more than one address"
	}
	return "the From header field cannot be parsed"
}
