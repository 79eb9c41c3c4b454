package policy

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/authres"

	"github.com/mxguard/mxguard/scanners/spf"
)

// SPFChecker evaluates SPF for a client (implemented by scanners/spf).
type SPFChecker interface {
	Check(ctx context.Context, ip netip.Addr, helo, sender string) spf.Evidence
}

// VerdictHeader is the header mxguard adds to tagged and quarantined mail,
// naming the action and its reasons, so that users' mail clients can filter.
const VerdictHeader = "X-MXGuard-Verdict"

// Engine runs the checks of each stage and decides. It is safe for
// concurrent use; each Transaction belongs to one session.
type Engine struct {
	cfg     *Config
	spf     SPFChecker
	content []ContentCheck
	dns     TXTResolver // for DKIM and DMARC; nil leaves them off

	// dmarcSample draws 0..99 for DMARC's pct; nil is random. Tests fix it.
	dmarcSample func() int
}

// NewEngine returns an Engine for a validated configuration.
// The content checks follow from the configuration: attachment rules, and
// the virus and spam engines that are turned on.
func NewEngine(cfg *Config, spfChecker SPFChecker) *Engine {
	e := &Engine{cfg: cfg, spf: spfChecker}
	// In this order: when two refuse alike, the first names the reason
	// (a virus says more than the attachment that carries it).
	if cfg.Virus.Engine != "none" {
		e.content = append(e.content, newVirusCheck(cfg))
	}
	e.content = append(e.content, attachmentCheck{cfg})
	if cfg.Spam.Engine != "none" {
		e.content = append(e.content, newSpamCheck(cfg))
	}
	return e
}

// Config returns the configuration the Engine decides by.
func (e *Engine) Config() *Config { return e.cfg }

// Connect classifies the client and judges it by its address.
// A client with no IP address is a local submission and counts as trusted.
func (e *Engine) Connect(conn *Connection) Verdict {
	ip := conn.ClientIP.Unmap()
	conn.Trusted = !ip.IsValid() || containsAddr(e.cfg.Relay.TrustedNetworks, ip)
	conn.Blocked = ip.IsValid() && containsAddr(e.cfg.Relay.BlockNetworks, ip)
	return e.cfg.decideConnect(conn)
}

// Mail judges the envelope sender. ctx bounds the whole transaction: the SPF
// check started here for unauthenticated, untrusted clients runs under it
// (and milter.check_timeout) and is collected later, at RCPT, unless the
// sender uses one of our domains, which needs the SPF result now.
func (e *Engine) Mail(ctx context.Context, t *Transaction) Verdict {
	t.record(clientEvidence(t))
	if t.Authenticated() {
		v := e.cfg.decideSenderLogin(t.AuthUser, t.MailFrom)
		result := "pass"
		if v.Action != Accept {
			result = "fail"
		}
		t.record(Evidence{Check: "sender_login", Result: result, Detail: t.AuthUser + " as <" + t.MailFrom + ">"})
		if v.Action != Accept {
			return v
		}
	}
	if t.OurUser() {
		return accept
	}
	e.startSPF(ctx, t)
	if e.cfg.IsLocalDomain(domainOf(t.MailFrom)) {
		sctx, cancel := context.WithTimeout(ctx, e.cfg.Milter.CheckTimeout.Duration)
		defer cancel()
		ev := e.collectSPF(sctx, t)
		return e.cfg.decideSpoof(t.MailFrom, ev)
	}
	return accept
}

// Rcpt judges one recipient and records it in the transaction. A refused
// recipient does not end the transaction.
func (e *Engine) Rcpt(ctx context.Context, t *Transaction, addr string) Verdict {
	org := e.cfg.OrganizationFor(domainOf(addr))
	var v Verdict
	// Local submissions (no client IP: Postfix's non_smtpd_milters) are
	// exempt: Postfix takes a recipient refused there as a configuration
	// error and keeps the mail queued.
	if t.Conn.ClientIP.IsValid() && len(t.AcceptedRecipients()) >= e.cfg.Milter.MaxRecipients {
		v = refuse(Tempfail, 452, "4.5.3", TooManyRecipients, "more than %d recipients, send the rest in another transaction", e.cfg.Milter.MaxRecipients)
	} else {
		var ev *spf.Evidence
		if org != nil && t.spf != nil {
			collected := e.collectSPF(ctx, t)
			ev = &collected
		}
		v = e.cfg.decideRecipient(t, addr, org, ev)
	}
	r := Recipient{Address: addr, Organization: org, Verdict: v}
	if !v.Action.Refuses() {
		st := e.cfg.senderStandingFor(t, addr, org)
		switch {
		case st.blocked:
			r.Verdict = decideBlockedSender(t, addr, st)
			t.record(Evidence{Check: "senders", Result: "blocked", Detail: "<" + addr + ">: " + st.String()})
		case st.safe:
			r.SafeSender = st.level + ": " + st.entry
			t.record(Evidence{Check: "senders", Result: "safe", Detail: "<" + addr + ">: " + st.String()})
		}
	}
	t.Recipients = append(t.Recipients, r)
	return r.Verdict
}

// EndOfMessage combines the recipients' verdicts into the verdict on the
// message and computes its header edits: Authentication-Results added at the
// top, forgeries of ours removed. Content checks (spam, virus, DKIM, DMARC)
// join here, running concurrently, each under its own deadline within ctx.
func (e *Engine) EndOfMessage(ctx context.Context, t *Transaction, msg *Message) Verdict {
	v := decideMessage(t)
	if v.Action.Ends() {
		return v
	}
	reasons := recipientReasons(t)
	stronger := func(cv Verdict) {
		if cv.Action > Accept {
			reasons = append(reasons, cv.Reason)
		}
		if cv.Action > v.Action {
			v = cv
			v.AddHeaders, v.DeleteHeaders, v.ChangeHeaders = nil, nil, nil
		}
	}
	var edits Verdict
	if len(e.content) > 0 {
		cv := e.runContentChecks(ctx, t, msg)
		edits = Verdict{AddHeaders: cv.AddHeaders, DeleteHeaders: cv.DeleteHeaders, ChangeHeaders: cv.ChangeHeaders}
		stronger(cv)
	}
	if !v.Action.Ends() {
		stronger(e.checkDMARC(ctx, t, msg))
	}
	if v.Action.Ends() {
		return v
	}
	v.DeleteHeaders = deletionOrder(append(e.forgedHeaders(msg), edits.DeleteHeaders...))
	v.ChangeHeaders = edits.ChangeHeaders
	v.AddHeaders = append([]Header{{Name: "Authentication-Results", Value: e.authResults(ctx, t)}}, edits.AddHeaders...)
	if v.Action == Tag || v.Action == Quarantine {
		v.AddHeaders = append(v.AddHeaders, Header{Name: VerdictHeader, Value: v.Action.String() + "; reasons=" + joinReasons(reasons)})
	}
	if v.Action == Quarantine {
		v.Quarantine = "mxguard: " + joinReasons(reasons)
	}
	if t.OurUser() && v.Action != Discard {
		// Signing comes last, over the message as it will leave, so that
		// none of our own edits breaks our signature.
		sig, ev, err := e.sign(t, msg, v)
		if ev.Check != "" {
			t.record(ev)
		}
		if err != nil {
			return Trouble(SigningFailed, err)
		}
		if sig != nil {
			v.AddHeaders = append([]Header{*sig}, v.AddHeaders...)
		}
	}
	return v
}

// authResults renders our Authentication-Results (RFC 8601) for the message.
func (e *Engine) authResults(ctx context.Context, t *Transaction) string {
	var results []authres.Result
	if ev, ok := t.SPF(ctx); ok {
		results = append(results, &authres.SPFResult{Value: authres.ResultValue(ev.Result), Helo: printable(t.Conn.Helo), From: printable(t.MailFrom)})
	}
	if t.dkimVerified {
		if len(t.dkim) == 0 {
			results = append(results, &authres.DKIMResult{Value: authres.ResultNone})
		}
		for _, s := range t.dkim {
			params := map[string]string{"header.d": printable(s.Domain), "header.s": printable(s.Selector)}
			if s.BPrefix != "" {
				params["header.b"] = printable(s.BPrefix)
			}
			results = append(results, &authres.GenericResult{Method: "dkim", Value: authres.ResultValue(s.Result), Params: params})
		}
	}
	if d := t.dmarc; d != nil {
		params := map[string]string{"header.from": printable(d.Domain)}
		if d.Policy != "" {
			params["policy.dmarc"] = string(d.Policy)
		}
		results = append(results, &authres.GenericResult{Method: "dmarc", Value: authres.ResultValue(d.Result), Params: params})
	}
	if t.Authenticated() {
		results = append(results, &authres.AuthResult{Value: authres.ResultPass, Auth: printable(t.AuthUser)})
	}
	return formatAuthResults(e.cfg.Hostname, results)
}

// formatAuthResults is authres.Format without the blank that it leaves
// after a result with no properties ("dkim=none ;").
func formatAuthResults(id string, results []authres.Result) string {
	if len(results) == 0 {
		return authres.Format(id, nil)
	}
	parts := []string{id}
	for _, r := range results {
		one := authres.Format(id, []authres.Result{r})
		parts = append(parts, strings.TrimSpace(strings.TrimPrefix(one, id+";")))
	}
	return strings.Join(parts, "; ")
}

// forgedHeaders finds incoming headers that claim to be ours:
// Authentication-Results with our authserv-id (a forger's way to make a
// message look verified) and our verdict header. They are deleted from the
// last to the first, because deleting shifts the indexes of those after it
// (forward deletion left forgeries behind in OpenDKIM, CVE-2022-48521).
func (e *Engine) forgedHeaders(msg *Message) []HeaderRef {
	var refs []HeaderRef
	count := map[string]int{}
	for _, h := range msg.Headers {
		name := strings.ToLower(h.Name)
		count[name]++
		switch {
		case name == "authentication-results" && strings.EqualFold(authservID(h.Value), e.cfg.Hostname),
			name == strings.ToLower(VerdictHeader):
			refs = append(refs, HeaderRef{Name: h.Name, Index: count[name]})
		}
	}
	for i, j := 0, len(refs)-1; i < j; i, j = i+1, j-1 {
		refs[i], refs[j] = refs[j], refs[i]
	}
	return refs
}

// authservID extracts the authserv-id of an Authentication-Results value
// (RFC 8601 section 2.2), tolerating comments and a missing result list so
// that a malformed forgery is still recognised.
func authservID(v string) string {
	v = strings.TrimSpace(v)
	for strings.HasPrefix(v, "(") {
		end := strings.IndexByte(v, ')')
		if end < 0 {
			return ""
		}
		v = strings.TrimSpace(v[end+1:])
	}
	if i := strings.IndexAny(v, "; \t\r\n("); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSuffix(v, ".")
}

// NewTransaction starts a transaction on a connection.
func (e *Engine) NewTransaction(conn *Connection) *Transaction {
	return &Transaction{Conn: conn, Started: time.Now()}
}

// startSPF evaluates SPF in the background so that its DNS round trips
// overlap with the SMTP dialogue.
func (e *Engine) startSPF(ctx context.Context, t *Transaction) {
	p := &pendingSPF{done: make(chan struct{})}
	t.spf = p
	ip, helo, sender := t.Conn.ClientIP, t.Conn.Helo, t.MailFrom
	go func() {
		defer close(p.done)
		// A panic in a check goroutine would end the daemon; it becomes
		// a temperror instead, so the message is tempfailed, not judged.
		defer func() {
			if r := recover(); r != nil {
				p.ev = spf.Evidence{Result: spf.TempError, Domain: spf.Domain(helo, sender), Err: fmt.Errorf("panic in SPF check: %v", r)}
			}
		}()
		sctx, cancel := context.WithTimeout(ctx, e.cfg.Milter.CheckTimeout.Duration)
		defer cancel()
		p.ev = e.spf.Check(sctx, ip, helo, sender)
	}()
}

// collectSPF waits for the SPF result and records it as evidence once.
func (e *Engine) collectSPF(ctx context.Context, t *Transaction) spf.Evidence {
	ev := t.spf.wait(ctx)
	if !t.spfRecorded {
		t.spfRecorded = true
		t.record(spfEvidence(ev))
	}
	return ev
}

// SPFIfDone returns the SPF evidence if the check has finished, without waiting.
func (t *Transaction) SPFIfDone() (spf.Evidence, bool) {
	if t.spf == nil {
		return spf.Evidence{}, false
	}
	select {
	case <-t.spf.done:
		return t.spf.ev, true
	default:
		return spf.Evidence{}, false
	}
}

// The SPF library explains every result with an error value ("matched
// ip"); only temperror and permerror are errors, the rest is detail.
func spfEvidence(ev spf.Evidence) Evidence {
	out := Evidence{Check: "spf", Result: string(ev.Result), Detail: ev.Domain, Duration: ev.Duration}
	switch {
	case ev.Result == spf.TempError || ev.Result == spf.PermError:
		out.Err = ev.Err
	case ev.Err != nil:
		out.Detail += " (" + ev.Err.Error() + ")"
	}
	return out
}

// clientEvidence records how the client was classified for relay control.
func clientEvidence(t *Transaction) Evidence {
	ev := Evidence{Check: "client", Result: "untrusted", Detail: t.Conn.ClientIP.String()}
	switch {
	case t.Authenticated():
		ev.Result, ev.Detail = "authenticated", t.AuthUser+" ("+t.AuthType+") from "+ev.Detail
	case t.Conn.Trusted:
		ev.Result = "trusted"
	}
	return ev
}
