package e2e

// The scenarios: what a client sees, what is delivered, held or relayed,
// and what mxguard logs, for each kind of mail mxguard decides on. They run
// against any MTA that implements mta.

import (
	"bytes"
	"context"
	"fmt"
	"net/mail"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/scanners/dkim"
	"github.com/mxguard/mxguard/scanners/resolver"
)

// mta is a real MTA on loopback with mxguard as its milter, as the
// scenarios need it: Postfix (postfix_test.go) and Sendmail
// (sendmail_test.go). Where MTAs differ, the method says what each does
// (README.md has the table).
type mta interface {
	// smtpAddr is the "127.0.0.1:PORT" of its SMTP service, which offers
	// STARTTLS, and AUTH PLAIN for saslUsers after it.
	smtpAddr() string
	// client is where a client must come from to be seen as the outside
	// client ip (a TEST-NET address; "" is the MTA's own 127.0.0.1).
	// Postfix: ip itself, named with XCLIENT. Sendmail has no XCLIENT: the
	// client connects from loopbackTwin(ip).
	client(ip string) origin
	// mailbox is a glob of the complete message files delivered for
	// localDomains (Postfix: a Maildir's new/*; Sendmail: one file per
	// recipient).
	mailbox() string
	// logText is the MTA's mail log so far.
	logText() string

	// queueID is the queue id in the reply to the end of DATA (Postfix:
	// "250 2.0.0 Ok: queued as ID"; Sendmail: "250 2.0.0 ID Message
	// accepted for delivery").
	queueID(r smtpReply) string
	// milterReply is the reply mxguard gave, from the reply r the client
	// got to MAIL FROM, RCPT TO or the end of DATA. Postfix passes it on
	// as it is; Sendmail puts "<address>... " in front of the text at MAIL
	// and RCPT.
	milterReply(r smtpReply) smtpReply
	// refusedQueueID is the queue id the MTA had when it refused the
	// transaction of clientIP at stage ("MAIL", "RCPT" or "." for the end
	// of DATA). Postfix assigns none before the first accepted RCPT (it
	// logs NOQUEUE), so "" at MAIL and RCPT; Sendmail assigns one at MAIL
	// FROM. Either logs the one it had.
	refusedQueueID(t *testing.T, stage, clientIP string) string
	// clientQueueID is the queue id the MTA logged for the transaction of
	// clientIP, for transactions whose client never saw one (Postfix: when
	// it opens the queue file; Sendmail: when the transaction ends).
	clientQueueID(t *testing.T, clientIP string) string
	// milterRejected requires the MTA's log to say that the milter, not
	// the MTA's own rules, refused clientIP at stage ("MAIL", "RCPT" or
	// "." for the end of DATA) with r.
	milterRejected(t *testing.T, stage, clientIP string, r smtpReply)
	// relayed requires the MTA to have passed the message on to its
	// outside recipient (a test MTA logs it and keeps nothing from leaving
	// the host: Postfix discards it, Sendmail writes it to a directory).
	relayed(t *testing.T, queueID string)
	// held reports whether the message is quarantined, its header as
	// held, and the reason the MTA keeps with it (Postfix: the hold
	// queue, which keeps none, so ""; Sendmail: an hf queue file, which
	// keeps the milter's reason).
	held(t *testing.T, queueID string) (h mail.Header, reason string, ok bool)
	// release takes a message out of quarantine and delivers it.
	release(t *testing.T, queueID string)
	// waitQueueEmpty waits until no accepted mail is still on its way.
	waitQueueEmpty(t *testing.T)
	// milterDown is the reply a client gets, and to which command, while
	// mxguard is unreachable (Postfix: milter_default_action = tempfail;
	// Sendmail: the milter's F=T).
	milterDown() (stage string, r smtpReply)
	// ownSessions reports whether the MTA opens a milter session for its
	// own loopback connection before each outside client's (Postfix does,
	// with XCLIENT: mxguard logs each as a connection without a
	// transaction from 127.0.0.1).
	ownSessions() bool
}

// env is one MTA phase: the MTA, mxguard behind it, and what the
// scenarios expect in the mailbox at the end.
type env struct {
	mta       mta
	mx        *mxguard
	resolver  *resolver.Resolver // the test's DNS, to verify DKIM signatures with
	delivered []string           // the X-E2E-ID of every message that must be delivered
}

// fate is what becomes of a message the client sent.
type fate int

const (
	refused   fate = iota // a 4xx or 5xx reply; nothing queued
	delivered             // into the mailbox
	relayed               // passed on to its outside recipient
	held                  // quarantined, then released and delivered
)

// scenario is one SMTP transaction sent with swaks.
type scenario struct {
	name string // the message's X-E2E-ID
	send swaksRun

	// The reply to stage ("MAIL FROM", "RCPT TO" or "." for the end of
	// DATA): code, enhanced code, and the reason the text of mxguard's
	// reply starts with (also the row's reason).
	stage, code, enh, reason string
	// text, when set, is more of the start of the refusal's text than the
	// reason.
	text string

	fate fate
	// verdict is the X-MXGuard-Verdict value delivered; "" for none.
	verdict string
	// carries are "Name: value" header fields the message must have when
	// held and when delivered.
	carries []string
	// signedBy is the domain whose DKIM signature, mxguard's, must verify
	// in the delivered message, as the MTA wrote it.
	signedBy string

	// The row, beyond what the send and the reply determine.
	action, direction, spf, org string
	// evidence are "check=result" the row must have among its evidence.
	evidence []string
}

// scenarios are the single transactions; runScenarios adds the ones swaks
// cannot script. Every sender is unique: it finds the row.
var scenarios = []scenario{{
	name: "clean",
	send: swaksRun{client: "192.0.2.1", from: "clean@pass.test", to: []string{"u1@example.com"}},
	// SPF passes for the client: delivered, with our Authentication-Results,
	// scanned by both engines.
	stage: ".", code: "250", enh: "2.0.0",
	fate:   delivered,
	action: "accept", direction: "inbound", spf: "pass", org: "example",
	evidence: []string{"virus=clean", "spam=scored"},
}, {
	name:  "spf-fail",
	send:  swaksRun{client: "203.0.113.2", from: "spf-fail@pass.test", to: []string{"u2@example.com"}},
	stage: "RCPT TO", code: "550", enh: "5.7.23", reason: "SPFFail",
	fate:   refused,
	action: "reject", direction: "inbound", spf: "fail", org: "example",
}, {
	name:  "softfail",
	send:  swaksRun{client: "203.0.113.3", from: "softfail@soft.test", to: []string{"u3@example.com"}},
	stage: ".", code: "250", enh: "2.0.0",
	fate: delivered, verdict: "tag; reasons=SPFSoftFail",
	action: "tag", direction: "inbound", spf: "softfail", org: "example", reason: "SPFSoftFail",
}, {
	name: "relay-denied",
	// An outside client may send to our domains, not through us.
	send:  swaksRun{client: "192.0.2.4", from: "relay-denied@pass.test", to: []string{"victim@elsewhere.test"}},
	stage: "RCPT TO", code: "554", enh: "5.7.1", reason: "RelayDenied",
	fate: refused,
	// The client is outside, so the transaction counts as inbound, and
	// its SPF result (started at MAIL FROM) is logged.
	action: "reject", direction: "inbound", spf: "pass",
}, {
	name: "auth-relay",
	// SMTP AUTH over STARTTLS from an outside address: relaying is the
	// login's doing, not the network's.
	send:  swaksRun{client: "203.0.113.5", auth: "bob", from: "bob@example.com", to: []string{"partner@elsewhere.test"}},
	stage: ".", code: "250", enh: "2.0.0",
	fate: relayed,
	// Outbound mail belongs to the sender's organisation.
	action: "accept", direction: "outbound", org: "example",
}, {
	name:  "sender-mismatch",
	send:  swaksRun{client: "203.0.113.6", auth: "alice", from: "boss@example.com", to: []string{"partner@elsewhere.test"}},
	stage: "MAIL FROM", code: "553", enh: "5.7.1", reason: "SenderLoginMismatch",
	fate:   refused,
	action: "reject", direction: "outbound", org: "example",
}, {
	name: "trusted-relay",
	// The client is the MTA's own 127.0.0.1, in trusted_networks.
	send:  swaksRun{from: "app@example.com", to: []string{"partner@elsewhere.test"}},
	stage: ".", code: "250", enh: "2.0.0",
	fate:   relayed,
	action: "accept", direction: "outbound", org: "example",
}, {
	name: "spoofed",
	// One of our domains as sender from outside, and SPF does not pass
	// (example.net has no SPF record).
	send:  swaksRun{client: "198.51.100.8", from: "ceo@example.net", to: []string{"u8@example.com"}},
	stage: "MAIL FROM", code: "550", enh: "5.7.1", reason: "SpoofedSender",
	fate:   refused,
	action: "reject", direction: "inbound", spf: "none",
}, {
	name: "quarantine",
	// quarantine.test's organisation quarantines SPF fail.
	send:  swaksRun{client: "203.0.113.11", from: "quarantine@pass.test", to: []string{"q@quarantine.test"}},
	stage: ".", code: "250", enh: "2.0.0",
	fate: held, verdict: "quarantine; reasons=SPFFail",
	action: "quarantine", reason: "SPFFail", direction: "inbound", spf: "fail", org: "quarantined",
}, {
	name: "forged-headers",
	// Authentication-Results claiming to be ours, and our verdict header,
	// come from a forger and are removed; another server's stay.
	send: swaksRun{client: "192.0.2.14", from: "forged@pass.test", to: []string{"u14@example.com"},
		headers: []string{
			"Authentication-Results: mx.example.com; spf=pass smtp.mailfrom=ceo@example.com",
			"Authentication-Results: relay.other.test; spf=none smtp.mailfrom=forged@pass.test",
			"X-MXGuard-Verdict: accept",
		}},
	stage: ".", code: "250", enh: "2.0.0",
	fate:   delivered,
	action: "accept", direction: "inbound", spf: "pass", org: "example",
}, {
	name: "virus",
	// EICAR attached (as a file clamd must decode from base64): refused at
	// the end of DATA, whatever SPF says.
	send: swaksRun{client: "192.0.2.15", from: "virus@pass.test", to: []string{"u15@example.com"},
		attach: []attachment{{name: "invoice.txt", content: eicar}}},
	stage: ".", code: "554", enh: "5.7.1", reason: "Virus",
	text:   "Virus: message contains a virus (" + eicarSignature + ")",
	fate:   refused,
	action: "reject", direction: "inbound", spf: "pass", org: "example",
	evidence: []string{"virus=infected"},
}, {
	name: "spam",
	// GTUBE scores about 1000, over the default reject_score (15).
	send:  swaksRun{client: "192.0.2.16", from: "spam@pass.test", to: []string{"u16@example.com"}, body: "Cheap watches. " + gtube},
	stage: ".", code: "550", enh: "5.7.1", reason: "SpamReject", text: "SpamReject: message scored ",
	fate:   refused,
	action: "reject", direction: "inbound", spf: "pass", org: "example",
	evidence: []string{"spam=spam"},
}, {
	name: "spam-held",
	// spamhold.test's organisation turns reject_score off: the same spam
	// goes to quarantine, flagged.
	send:  swaksRun{client: "192.0.2.17", from: "spam-held@pass.test", to: []string{"u17@spamhold.test"}, body: "Cheap watches. " + gtube},
	stage: ".", code: "250", enh: "2.0.0",
	fate: held, verdict: "quarantine; reasons=SpamQuarantine", carries: []string{"X-Spam-Flag: YES"},
	action: "quarantine", reason: "SpamQuarantine", direction: "inbound", spf: "pass", org: "spamhold",
	evidence: []string{"spam=spam"},
}, {
	name: "dmarc-reject",
	// SPF passes for the envelope sender's domain, but the author is
	// bank.test's, whose DMARC policy is reject: neither SPF nor a DKIM
	// signature aligns with it.
	send: swaksRun{client: "192.0.2.18", from: "dmarc@pass.test", to: []string{"u18@example.com"},
		headers: []string{"From: The Bank <ceo@bank.test>"}},
	stage: ".", code: "550", enh: "5.7.1", reason: "DMARCReject", text: "DMARCReject: bank.test does not pass DMARC",
	fate:   refused,
	action: "reject", direction: "inbound", spf: "pass", org: "example",
	evidence: []string{"dkim=none", "dmarc=fail"},
}, {
	name: "signed",
	// alice writes to a colleague: mxguard signs for example.com
	// (Ed25519), and the signature verifies in the message as the MTA
	// delivered it. The signed From and To have quoted commas and a folded
	// line, which an MTA might rewrite.
	send: swaksRun{client: "203.0.113.19", auth: "alice", from: "alice@example.com", to: []string{"colleague@example.com"},
		headers: []string{
			`From: "Example, Alice" <alice@example.com>`,
			"To: Colleague <colleague@example.com>,\n\t\"Doe, Jane\" <jane@example.com>",
		}},
	stage: ".", code: "250", enh: "2.0.0",
	fate: delivered, signedBy: "example.com",
	action: "accept", direction: "internal", org: "example",
	evidence: []string{"dkim_sign=signed"},
}, {
	name: "signed-rsa",
	// An application on a trusted host, for example.net: signed with
	// RSA, a DKIM-Signature field of over 400 characters.
	send:  swaksRun{from: "app@example.net", to: []string{"u20@example.com"}},
	stage: ".", code: "250", enh: "2.0.0",
	fate: delivered, signedBy: "example.net",
	action: "accept", direction: "internal", org: "example",
	evidence: []string{"dkim_sign=signed"},
}}

// runScenarios runs every scenario as a subtest, in order, against e.
func runScenarios(t *testing.T, e *env) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { e.run(t, sc) })
	}
	t.Run("two messages on one connection", e.twoOnOneConnection)
	t.Run("client drops mid-DATA", e.dropMidData)
	// Last: it stops mxguard (and starts it again).
	t.Run("mxguard down", e.mxguardDown)
	t.Run("what was delivered and logged", e.census)
}

// run sends one scenario and checks the reply, the message's fate and the row.
func (e *env) run(t *testing.T, sc scenario) {
	s := sc.send
	if s.helo == "" {
		s.helo = "client.test"
	}
	s.headers = append([]string{"Subject: e2e " + sc.name, "X-E2E-ID: " + sc.name}, s.headers...)
	o := e.mta.client(s.client)
	res := swaks(t, e.mta.smtpAddr(), o, s)
	defer func() {
		if t.Failed() {
			t.Logf("swaks (exit %d):\n%s", res.exit, res.transcript)
		}
	}()

	got, ok := res.reply(sc.stage)
	if !ok {
		t.Fatalf("no reply to %s", sc.stage)
	}
	wantText, ours := "", got // a refusal's text starts with the reason
	if sc.fate == refused {
		wantText, ours = sc.reason, e.mta.milterReply(got)
		if sc.text != "" {
			wantText = sc.text
		}
	}
	if got.code != sc.code || got.enh != sc.enh || !strings.HasPrefix(ours.text, wantText) {
		t.Fatalf("reply to %s: %q; want %s %s %s...", sc.stage, got, sc.code, sc.enh, wantText)
	}

	clientIP := o.addr
	var qid string
	if sc.fate == refused {
		stage, _, _ := strings.Cut(sc.stage, " ")
		e.mta.milterRejected(t, stage, clientIP, got)
		qid = e.mta.refusedQueueID(t, stage, clientIP)
	} else if qid = e.mta.queueID(got); qid == "" {
		t.Fatalf("no queue id in %q", got)
	}

	row := e.mx.waitRow(t, s.from, sc.action)
	wantReply, wantTo := "", s.to
	if sc.fate == refused {
		wantReply = ours.String()
	}
	if sc.stage == "MAIL FROM" { // no RCPT TO came
		wantTo = nil
	}
	checkRow(t, row, rowWant{
		queueID: qid, clientIP: clientIP, helo: s.helo, authUser: s.auth, from: s.from, to: wantTo,
		direction: sc.direction, org: sc.org, spf: sc.spf, reason: sc.reason, reply: wantReply,
	})
	if sc.fate != refused && row.Subject != "e2e "+sc.name {
		t.Errorf("row subject %q; want %q", row.Subject, "e2e "+sc.name)
	}
	checkEvidence(t, row, sc.evidence)

	switch sc.fate {
	case delivered:
		e.checkMessage(t, sc, s)
	case relayed:
		e.mta.relayed(t, qid)
	case held:
		h, reason, ok := e.mta.held(t, qid)
		if !ok {
			t.Fatalf("%s is not held", qid)
		}
		if v := h.Get("X-MXGuard-Verdict"); v != sc.verdict {
			t.Errorf("held message's X-MXGuard-Verdict %q; want %q", v, sc.verdict)
		}
		checkCarries(t, "held message", h, sc.carries)
		// Where the MTA keeps a reason (Sendmail), it is mxguard's.
		if want := "mxguard: " + sc.reason; reason != "" && reason != want {
			t.Errorf("quarantine reason %q; want %q", reason, want)
		}
		e.mta.release(t, qid)
		e.checkMessage(t, sc, s)
	}
}

// checkEvidence requires the row to have each of want ("check=result")
// among its evidence.
func checkEvidence(t *testing.T, r logstore.Record, want []string) {
	t.Helper()
	var have []string
	for _, ev := range r.Evidence {
		have = append(have, ev.Check+"="+ev.Result)
	}
	for _, w := range want {
		if !slices.Contains(have, w) {
			t.Errorf("row evidence %q lacks %s:\n%+v", have, w, r.Evidence)
		}
	}
}

// checkMessage checks the delivered message of scenario sc, sent as s.
func (e *env) checkMessage(t *testing.T, sc scenario, s swaksRun) {
	t.Helper()
	d := e.checkDelivered(t, sc.name, s, sc.spf, sc.verdict)
	checkCarries(t, "delivered message", d.header, sc.carries)
	if sc.signedBy != "" {
		e.checkSigned(t, d, sc.signedBy)
	}
}

// checkCarries requires header to have each of fields ("Name: value").
func checkCarries(t *testing.T, what string, header mail.Header, fields []string) {
	t.Helper()
	for _, f := range fields {
		name, value, _ := strings.Cut(f, ": ")
		if got := header.Get(name); got != value {
			t.Errorf("%s's %s: %q; want %q", what, name, got, value)
		}
	}
}

// checkSigned verifies the DKIM signatures of the delivered message d, as
// the MTA wrote it, with keys from the test's DNS: there must be exactly
// one, mxguard's for domain, and it must pass. What the MTA did to the
// header after mxguard signed (its Received, Return-Path, folding) must
// not have broken it.
func (e *env) checkSigned(t *testing.T, d delivery, domain string) {
	t.Helper()
	raw, err := os.ReadFile(d.path)
	if err != nil {
		t.Fatal(err)
	}
	// Mailbox files have bare LF line ends; DKIM is computed over CRLF.
	msg := bytes.ReplaceAll(bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
	sigs, err := dkim.Verify(context.Background(), e.resolver, bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("verifying %s: %v", d.path, err)
	}
	if len(sigs) != 1 || sigs[0].Domain != domain || sigs[0].Result != dkim.Pass {
		t.Errorf("DKIM signatures of the delivered message: %+v; want one by %s that passes\n%s", sigs, domain, raw)
	}
}

// rowWant is what a row must say; "" fields must be empty too.
type rowWant struct {
	queueID, clientIP, helo, authUser, from string
	to                                      []string
	direction, org, spf, reason, reply      string
}

func checkRow(t *testing.T, r logstore.Record, w rowWant) {
	t.Helper()
	var rcpts []string
	for _, rc := range r.Recipients {
		rcpts = append(rcpts, rc.Address)
	}
	got := rowWant{r.QueueID, r.ClientIP, r.Helo, r.AuthUser, r.MailFrom, rcpts, r.Direction, r.Organization, r.SPF, r.Reason, r.Reply}
	// Compared as text: no recipients is no recipients, nil or empty.
	if fmt.Sprint(got) != fmt.Sprint(w) {
		t.Errorf("row:\n got %+v\nwant %+v\n(row %+v)", got, w, r)
	}
}

// checkDelivered requires the message in the mailbox with our
// Authentication-Results on top (above the MTA's Received), carrying what
// was checked (SPF, DKIM and DMARC inbound; the login of our user), no
// forged copy of it, and the verdict header when tagged. It returns the
// message.
func (e *env) checkDelivered(t *testing.T, token string, s swaksRun, spf, verdict string) delivery {
	t.Helper()
	e.delivered = append(e.delivered, token)
	d := waitDelivery(t, e.mta.mailbox(), token)
	var wantAR string
	switch {
	case s.auth != "":
		// Our user's mail: the login, no SPF, DKIM or DMARC.
		wantAR = "Authentication-Results: mx.example.com; auth=pass smtp.auth=" + s.auth
	case s.client == "":
		// A trusted client's: nothing was checked.
		wantAR = "Authentication-Results: mx.example.com; none"
	default:
		// Inbound: swaks signs nothing and its From is the envelope sender.
		_, domain, _ := strings.Cut(s.from, "@")
		wantAR = fmt.Sprintf("Authentication-Results: mx.example.com; spf=%s smtp.helo=%s smtp.mailfrom=%s; dkim=none; dmarc=none header.from=%s",
			spf, s.helo, s.from, domain)
	}
	var ours []string
	arAt := -1
	for i, f := range d.fields {
		if name, value, _ := strings.Cut(f, ":"); strings.EqualFold(name, "Authentication-Results") &&
			strings.HasPrefix(strings.TrimSpace(value), "mx.example.com") {
			ours = append(ours, f)
			arAt = i
		}
	}
	if len(ours) != 1 || ours[0] != wantAR {
		t.Errorf("Authentication-Results of ours: %q; want exactly %q", ours, wantAR)
	}
	if _, at := d.field("Received"); at < 0 || at < arAt {
		t.Errorf("our Authentication-Results is below the MTA's Received:\n%s", strings.Join(d.fields, "\n"))
	}
	for _, h := range s.headers {
		if strings.HasPrefix(h, "Authentication-Results: relay.other.test") && !slices.Contains(d.fields, h) {
			t.Errorf("another server's %q was removed", h)
		}
	}
	switch f, _ := d.field("X-MXGuard-Verdict"); {
	case verdict == "" && f != "":
		t.Errorf("delivered with %q; want no verdict header", f)
	case verdict != "" && f != "X-MXGuard-Verdict: "+verdict:
		t.Errorf("verdict header %q; want %q", f, "X-MXGuard-Verdict: "+verdict)
	}
	if t.Failed() {
		t.Logf("delivered %s:\n%s", d.path, strings.Join(d.fields, "\n"))
	}
	return d
}

// twoOnOneConnection: two transactions on one SMTP connection, RSET
// between: two rows, each with its own queue id.
func (e *env) twoOnOneConnection(t *testing.T) {
	client := e.mta.client("192.0.2.9")
	c := dialSMTP(t, e.mta.smtpAddr(), client, "client.test")
	var qids []string
	for i, from := range []string{"first@pass.test", "second@pass.test"} {
		token := fmt.Sprintf("two-%d", i+1)
		c.expect(c.cmd("MAIL FROM:<%s>", from), "250")
		c.expect(c.cmd("RCPT TO:<u9@example.com>"), "250")
		r := c.data(message(from, "u9@example.com", token))
		qid := e.mta.queueID(r)
		if r.code != "250" || qid == "" {
			t.Fatalf("end of DATA %d: %q", i+1, r)
		}
		qids = append(qids, qid)
		c.expect(c.cmd("RSET"), "250")
		waitDelivery(t, e.mta.mailbox(), token)
		e.delivered = append(e.delivered, token)
	}
	c.expect(c.cmd("QUIT"), "221")
	if qids[0] == qids[1] {
		t.Fatalf("both messages got queue id %s", qids[0])
	}
	for i, from := range []string{"first@pass.test", "second@pass.test"} {
		checkRow(t, e.mx.waitRow(t, from, "accept"), rowWant{
			queueID: qids[i], clientIP: client.addr, helo: "client.test", from: from, to: []string{"u9@example.com"},
			direction: "inbound", org: "example", spf: "pass",
		})
	}
}

// dropMidData: the client goes away in the middle of the message. Nothing
// is delivered, and the row says aborted, with the queue id the MTA had
// given the transaction.
func (e *env) dropMidData(t *testing.T) {
	const from = "dropped@pass.test"
	client := e.mta.client("192.0.2.10")
	c := dialSMTP(t, e.mta.smtpAddr(), client, "client.test")
	c.expect(c.cmd("MAIL FROM:<%s>", from), "250")
	c.expect(c.cmd("RCPT TO:<u10@example.com>"), "250")
	c.expect(c.cmd("DATA"), "354")
	if err := c.c.PrintfLine("From: <%s>\r\nSubject: e2e dropped\r\nX-E2E-ID: dropped", from); err != nil {
		t.Fatal(err)
	}
	c.c.Close()
	row := e.mx.waitRow(t, from, "aborted")
	checkRow(t, row, rowWant{
		queueID: e.mta.clientQueueID(t, client.addr), clientIP: client.addr, helo: "client.test", from: from, to: []string{"u10@example.com"},
		direction: "inbound", org: "example", spf: "pass", reason: "Aborted",
	})
}

// mxguardDown: while mxguard is stopped the MTA tempfails (never accepts
// unjudged mail); once it is back, mail flows again.
func (e *env) mxguardDown(t *testing.T) {
	e.mx.stop()
	stage, want := e.mta.milterDown()
	s := swaksRun{client: "192.0.2.12", helo: "client.test", from: "while-down@pass.test", to: []string{"u12@example.com"},
		headers: []string{"X-E2E-ID: while-down"}}
	res := swaks(t, e.mta.smtpAddr(), e.mta.client(s.client), s)
	if got, ok := res.reply(stage); !ok || got != want {
		t.Errorf("with mxguard stopped, reply to %s: %q; want %q\n%s", stage, got, want, res.transcript)
	}

	e.mx.start()
	s = swaksRun{client: "192.0.2.13", helo: "client.test", from: "after-restart@pass.test", to: []string{"u13@example.com"},
		headers: []string{"X-E2E-ID: after-restart"}}
	res = swaks(t, e.mta.smtpAddr(), e.mta.client(s.client), s)
	got, ok := res.reply(".")
	if !ok || got.code != "250" {
		t.Fatalf("after mxguard's restart, end of DATA: %q\n%s", got, res.transcript)
	}
	e.mx.waitRow(t, "after-restart@pass.test", "accept")
	e.checkDelivered(t, "after-restart", s, "pass", "")
	e.mx.noRow(t, "while-down@pass.test")
}

// census checks the whole outcome: exactly the expected messages in the
// mailbox, each once; every row one of the scenarios' transactions or, on
// an MTA with ownSessions, its own connection without one; no queue id in
// two rows.
func (e *env) census(t *testing.T) {
	e.mta.waitQueueEmpty(t)
	var got []string
	for token, ds := range deliveries(t, e.mta.mailbox()) {
		for range ds {
			got = append(got, token)
		}
	}
	want := slices.Clone(e.delivered)
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("delivered %q; want %q", got, want)
	}

	rows, err := e.mx.rows()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range rows {
		if r.QueueID != "" {
			if seen[r.QueueID] {
				t.Errorf("queue id %s in two rows", r.QueueID)
			}
			seen[r.QueueID] = true
		}
		// With XCLIENT Postfix ends the milter session of its own
		// loopback connection and opens one for the client it names:
		// that first session is a connection without a transaction.
		if r.MailFrom == "" && (!e.mta.ownSessions() || r.Reason != "NoTransaction" || r.ClientIP != "127.0.0.1") {
			t.Errorf("unexpected row %+v", r)
		}
	}
}
