package policy

import (
	"context"
	"net/netip"
	"strings"
	"time"

	"github.com/mxguard/mxguard/scanners/dkim"
	"github.com/mxguard/mxguard/scanners/dmarc"
	"github.com/mxguard/mxguard/scanners/spf"
)

// Direction says which way a transaction goes, from our point of view.
type Direction string

const (
	Inbound  Direction = "inbound"  // from the internet to our domains
	Outbound Direction = "outbound" // from our users (authenticated or trusted) to elsewhere
	Internal Direction = "internal" // from our users to our domains only
)

// Connection is what the MTA told mxguard about one SMTP connection.
type Connection struct {
	ClientIP   netip.Addr // invalid for local (non-TCP) submissions
	ClientName string     // as the MTA resolved it; "unknown" when it could not
	Helo       string
	Daemon     string // {daemon_name}: which MTA service took the connection
	IfAddr     string // {if_addr}, when the MTA sends it

	Trusted bool // client in relay.trusted_networks, or local
	Blocked bool // client in relay.block_networks
}

// Transaction is one MAIL FROM transaction as it builds up stage by stage.
type Transaction struct {
	Conn     *Connection
	Started  time.Time
	AuthUser string // {auth_authen}
	AuthType string // {auth_type}
	MailFrom string // envelope sender without <>; "" is the null sender
	QueueID  string // the MTA's, once it has assigned one

	Recipients []Recipient

	spf         *pendingSPF // started at MAIL FROM, collected when needed
	spfRecorded bool

	// Set by the content checks at end of message, each its own field
	// (they run concurrently), read once they have all finished.
	dkim         []dkim.Signature
	dkimVerified bool
	dmarc        *dmarc.Evidence
	spamScore    *float64
	virus        string

	// Evidence is every check's result, in the order the checks finished.
	Evidence []Evidence
}

// Recipient is one RCPT TO and the verdict on it.
type Recipient struct {
	Address      string
	Organization *Organization // nil: not one of our domains
	Verdict      Verdict
	SafeSender   string // the safe senders entry the sender matched for this recipient, if any
}

// Authenticated reports whether the client logged in with SMTP AUTH.
func (t *Transaction) Authenticated() bool { return t.AuthUser != "" }

// OurUser reports whether the client is one of ours: authenticated or trusted.
// Their mail is relayed and never judged as inbound.
func (t *Transaction) OurUser() bool { return t.Authenticated() || t.Conn.Trusted }

// Direction derives the transaction's direction from the client and the recipients.
func (t *Transaction) Direction() Direction {
	if !t.OurUser() {
		return Inbound
	}
	if len(t.Recipients) == 0 {
		return Outbound // refused before any recipient: our user's mail goes out by default
	}
	for _, r := range t.Recipients {
		if r.Organization == nil {
			return Outbound
		}
	}
	return Internal
}

// SPF returns the SPF evidence, waiting for the check started at MAIL FROM
// if it is still running (or until ctx ends). ok is false when SPF was not
// checked for this transaction.
func (t *Transaction) SPF(ctx context.Context) (ev spf.Evidence, ok bool) {
	if t.spf == nil {
		return spf.Evidence{}, false
	}
	return t.spf.wait(ctx), true
}

// AcceptedRecipients returns the recipients that were not refused at RCPT.
func (t *Transaction) AcceptedRecipients() []Recipient {
	var rs []Recipient
	for _, r := range t.Recipients {
		if !r.Verdict.Action.Refuses() {
			rs = append(rs, r)
		}
	}
	return rs
}

// Organization is the organisation the transaction is judged for: that of
// the first accepted recipient in our domains for inbound mail, the
// sender's for our users' mail; nil when none applies. Each recipient keeps
// its own organisation too.
func (t *Transaction) Organization(cfg *Config) *Organization {
	if t.OurUser() {
		if o := cfg.OrganizationFor(domainOf(t.MailFrom)); o != nil {
			return o
		}
		if o := cfg.OrganizationFor(domainOf(t.AuthUser)); o != nil {
			return o
		}
	}
	for _, r := range t.AcceptedRecipients() {
		if r.Organization != nil {
			return r.Organization
		}
	}
	for _, r := range t.Recipients {
		if r.Organization != nil {
			return r.Organization
		}
	}
	return nil
}

// Evidence is the result of one check, recorded whether or not policy acted on it.
type Evidence struct {
	Check    string
	Result   string
	Detail   string
	Duration time.Duration
	Err      error
}

func (t *Transaction) record(ev Evidence) { t.Evidence = append(t.Evidence, ev) }

// pendingSPF is an SPF check running in the background: started early at
// MAIL FROM, collected at the first stage that needs it.
type pendingSPF struct {
	done chan struct{}
	ev   spf.Evidence
}

func (p *pendingSPF) wait(ctx context.Context) spf.Evidence {
	select {
	case <-p.done:
		return p.ev
	case <-ctx.Done():
		return spf.Evidence{Result: spf.TempError, Err: context.Cause(ctx)}
	}
}

// domainOf returns the lower-cased domain of an address, "" when it has none.
func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(addr[i+1:], "."))
}

// Summary is the outcome of the content checks in short, for the log's
// columns: the full evidence is in Evidence.
type Summary struct {
	DKIM      string   // best result and its domain, e.g. "pass bank.test"; "" when not verified
	DMARC     string   // result and the domain's policy, e.g. "fail p=reject"
	SpamScore *float64 // nil when not scored
	Virus     string   // "clean", the signature found, "skipped" or "error"
}

// Summary returns the outcome of the content checks so far.
func (t *Transaction) Summary() Summary {
	s := Summary{SpamScore: t.spamScore, Virus: t.virus}
	if t.dkimVerified {
		ev := dkimEvidence(t.dkim)
		s.DKIM = ev.Result
		for _, sig := range t.dkim {
			if string(sig.Result) == ev.Result {
				s.DKIM += " " + sig.Domain
				break
			}
		}
	}
	if d := t.dmarc; d != nil {
		s.DMARC = string(d.Result)
		if d.Policy != "" {
			s.DMARC += " p=" + string(d.Policy)
		}
	}
	return s
}
