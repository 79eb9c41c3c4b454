package policy

import (
	"strings"

	"github.com/mxguard/mxguard/scanners/spf"
)

// The decision functions below are pure: configuration and evidence in,
// Verdict out. The Engine gathers the evidence and calls them.

// decideConnect judges a client by its address alone.
func (c *Config) decideConnect(conn *Connection) Verdict {
	if conn.Blocked {
		return refuse(Reject, 554, "5.7.1", BlockedNetwork, "connections from %s are not accepted", conn.ClientIP)
	}
	return accept
}

// decideSenderLogin checks that an authenticated user uses only the envelope
// senders mapped to it in relay.sender_login. The check is off while the map
// is empty. A login that is itself an address owns that address, and the
// null sender (bounces) is always allowed.
func (c *Config) decideSenderLogin(user, sender string) Verdict {
	if len(c.Relay.SenderLogin) == 0 || sender == "" || strings.EqualFold(user, sender) {
		return accept
	}
	patterns, ok := c.Relay.SenderLogin[user]
	if !ok {
		for u, ps := range c.Relay.SenderLogin {
			if strings.EqualFold(u, user) {
				patterns = ps
				break
			}
		}
	}
	for _, p := range patterns {
		if strings.HasPrefix(p, "@") && strings.EqualFold(p[1:], domainOf(sender)) || strings.EqualFold(p, sender) {
			return accept
		}
	}
	return refuse(Reject, 553, "5.7.1", SenderLoginMismatch, "user %s may not send as <%s>", user, sender)
}

// decideSpoof judges an unauthenticated, untrusted client that uses one of
// our own domains as envelope sender: that is spoofing unless SPF passes.
// When SPF fails outright the SPF reply is given, and a transient SPF error
// is a tempfail, because then we cannot tell.
func (c *Config) decideSpoof(sender string, ev spf.Evidence) Verdict {
	switch ev.Result {
	case spf.Pass:
		return accept
	case spf.Fail:
		return spfVerdict(Reject, ev)
	case spf.TempError:
		return spfVerdict(Tempfail, ev)
	}
	return refuse(Reject, 550, "5.7.1", SpoofedSender, "<%s> uses our own domain but the client is not allowed to send for it (SPF %s)", sender, ev.Result)
}

// decideRecipient judges one recipient. org is nil when the recipient's
// domain is not ours. spfEv is nil when SPF was not checked (our users).
func (c *Config) decideRecipient(t *Transaction, addr string, org *Organization, spfEv *spf.Evidence) Verdict {
	if org == nil {
		if t.OurUser() {
			return accept // outbound relay for an authenticated or trusted client
		}
		return refuse(Reject, 554, "5.7.1", RelayDenied, "relay access denied for <%s>", addr)
	}
	if t.OurUser() || spfEv == nil {
		return accept
	}
	return spfVerdict(org.SPF.For(spfEv.Result), *spfEv)
}

// For returns the action configured for an SPF result.
func (s SPFActions) For(r spf.Result) Action {
	switch r {
	case spf.Pass:
		return s.Pass
	case spf.Fail:
		return s.Fail
	case spf.SoftFail:
		return s.SoftFail
	case spf.Neutral:
		return s.Neutral
	case spf.None:
		return s.None
	case spf.TempError:
		return s.TempError
	}
	return s.PermError
}

var spfReasons = map[spf.Result]Reason{
	spf.Fail:      SPFFail,
	spf.SoftFail:  SPFSoftFail,
	spf.Neutral:   SPFNeutral,
	spf.None:      SPFNone,
	spf.TempError: SPFTempError,
	spf.PermError: SPFPermError,
}

// spfVerdict turns an SPF result and the action policy chose for it into a
// verdict. Codes follow RFC 7372: X.7.23 for a failed validation, X.7.24
// for a validation error.
func spfVerdict(a Action, ev spf.Evidence) Verdict {
	reason := spfReasons[ev.Result]
	enhanced := "7.23"
	if ev.Result == spf.TempError || ev.Result == spf.PermError {
		enhanced = "7.24"
	}
	var v Verdict
	switch a {
	case Reject:
		v = refuse(Reject, 550, "5."+enhanced, reason, "SPF %s for %s", ev.Result, ev.Domain)
	case Tempfail:
		v = refuse(Tempfail, 451, "4."+enhanced, reason, "SPF %s for %s, try again later", ev.Result, ev.Domain)
	default:
		v = Verdict{Action: a, Reason: reason}
		if a == Accept {
			v.Reason = ReasonNone
		}
	}
	if ev.Result == spf.TempError || ev.Result == spf.PermError {
		v.Err = ev.Err // the cause of an error; for other results the library's explanation stays in the evidence
	}
	return v
}

// decideMessage combines the verdicts on the accepted recipients into the
// verdict on the message: the strictest action wins, since tagging,
// quarantine and discard apply to the message as a whole.
func decideMessage(t *Transaction) Verdict {
	v := accept
	for _, r := range t.AcceptedRecipients() {
		if r.Verdict.Action > v.Action {
			v = Verdict{Action: r.Verdict.Action, Reason: r.Verdict.Reason, Err: r.Verdict.Err}
		}
	}
	if v.Action == Quarantine {
		v.Quarantine = "mxguard: " + joinReasons(recipientReasons(t))
	}
	return v
}

// recipientReasons lists the reasons behind the accepted recipients'
// actions stronger than accept, for the verdict header and the quarantine
// reason.
func recipientReasons(t *Transaction) []Reason {
	var reasons []Reason
	for _, r := range t.AcceptedRecipients() {
		if r.Verdict.Action > Accept {
			reasons = append(reasons, r.Verdict.Reason)
		}
	}
	return reasons
}
