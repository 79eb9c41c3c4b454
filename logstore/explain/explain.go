// Package explain says what happened to one transaction of the log and
// why, from its row alone: a verdict in words, then the facts it rests on
// (envelope, client, login, each recipient's outcome, every check's
// evidence, the reply and the headers added).
//
// It is the one explanation behind both mxguard log show and the web
// console's transaction page, so the two cannot drift. It returns plain
// text as the row holds it: the caller makes it safe for its medium (a
// terminal replaces control characters, the console escapes HTML), since
// much of it was chosen by the sender.
package explain

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/quarantine"
)

// Explanation is one transaction explained.
type Explanation struct {
	// Title names the transaction: "Transaction 4, queue id 4XyZ1A2B3C".
	Title string
	// Paragraphs say in words what happened and why; the first is the
	// verdict.
	Paragraphs []string
	// Fields are the facts, in order, each with a value (empty ones are
	// left out): Time, Client, Login, Sender, Direction, From, Subject,
	// Message-ID, Size, SPF, DKIM, DMARC, Spam score, Virus, Verdict,
	// Reply, Error.
	Fields []Field
	// Recipients are the RCPT TOs and what became of each.
	Recipients []logstore.Recipient
	// Checks are the evidence, in the order the checks finished.
	Checks []Check
	// HeadersAdded are the "Name: value" headers mxguard added.
	HeadersAdded []string
}

// Field is one fact about the transaction.
type Field struct {
	Name, Value string
}

// Check is one check's evidence, ready to print.
type Check struct {
	Check, Result, Detail string
	// Duration is how long the check took, rounded; "" when not recorded.
	Duration string
	Error    string
}

// Of explains r.
func Of(r *logstore.Record) *Explanation {
	e := &Explanation{
		Title:        fmt.Sprintf("Transaction %d", r.ID),
		Paragraphs:   Paragraphs(r),
		Recipients:   r.Recipients,
		HeadersAdded: r.HeadersAdded,
	}
	if r.QueueID != "" {
		e.Title += ", queue id " + r.QueueID
	}
	e.Fields = fields(r)
	for _, ev := range r.Evidence {
		c := Check{Check: ev.Check, Result: ev.Result, Detail: ev.Detail, Error: ev.Error}
		if ev.Duration > 0 {
			c.Duration = ev.Duration.Round(10 * time.Microsecond).String()
		}
		e.Checks = append(e.Checks, c)
	}
	return e
}

func fields(r *logstore.Record) []Field {
	var fs []Field
	field := func(name, value string) {
		if value != "" {
			fs = append(fs, Field{name, value})
		}
	}
	when := r.StartedAt.UTC().Format("2006-01-02 15:04:05.000") + " UTC"
	if d := r.EndedAt.Sub(r.StartedAt); !r.EndedAt.IsZero() && d >= time.Millisecond {
		when += ", lasted " + d.Round(time.Millisecond).String()
	}
	field("Time", when)
	client := Client(r)
	if r.ClientName != "" && r.ClientName != r.ClientIP {
		client += " (" + r.ClientName + ")"
	}
	if r.Helo != "" {
		client += ", HELO " + r.Helo
	}
	if r.Daemon != "" {
		client += ", MTA service " + r.Daemon
	}
	field("Client", client)
	if !ConnectionOnly(r) {
		login := "none"
		if r.AuthUser != "" {
			login = r.AuthUser
			if r.AuthType != "" {
				login += " (" + r.AuthType + ")"
			}
		}
		field("Login", login)
		field("Sender", "<"+r.MailFrom+">")
	}
	dir := r.Direction
	if r.Organization != "" {
		dir += ", organisation " + r.Organization
	}
	field("Direction", strings.TrimPrefix(dir, ", "))
	field("From", r.FromHeader)
	field("Subject", logstore.DecodeHeader(r.Subject))
	field("Message-ID", r.MessageID)
	if r.Size > 0 {
		field("Size", strconv.FormatInt(r.Size, 10)+" bytes")
	}
	if r.SPF != "" {
		field("SPF", r.SPF+" for "+r.SPFDomain)
	}
	field("DKIM", r.DKIM)
	field("DMARC", r.DMARC)
	if r.SpamScore != nil {
		field("Spam score", strconv.FormatFloat(*r.SpamScore, 'f', -1, 64))
	}
	field("Virus", r.Virus)
	verdict := r.Action
	if r.Reason != "" {
		verdict += ", reason " + r.Reason
	}
	field("Verdict", verdict)
	reply := r.Reply
	if reply == "" {
		reply = "none"
		if slices.Contains([]string{"accept", "tag", "quarantine", "discard"}, r.Action) {
			reply = "none: mxguard let the MTA answer"
		}
	}
	field("Reply", reply)
	field("Error", r.Error)
	return fs
}

// Client names the client of r: its address, or "local" for a submission
// without one (sendmail, pickup).
func Client(r *logstore.Record) string {
	if r.ClientIP == "" {
		return "local"
	}
	return r.ClientIP
}

// ConnectionOnly reports whether a row is a connection that never reached
// MAIL FROM (refused at connect, or closed): it has no envelope, and no
// check ran, since the first evidence is recorded at MAIL FROM.
func ConnectionOnly(r *logstore.Record) bool {
	return r.MailFrom == "" && len(r.Recipients) == 0 && len(r.Evidence) == 0 && r.AuthUser == ""
}

// Refuses reports whether action refuses the mail (reject, tempfail).
func Refuses(action string) bool { return action == "reject" || action == "tempfail" }

// Paragraphs says in words what happened to a transaction and why, from
// the row alone: the action, the stage it was decided at (which the row
// shows by what it holds), the reason, and the recipients. The first
// paragraph is the verdict.
func Paragraphs(r *logstore.Record) []string {
	if ConnectionOnly(r) {
		return explainConnection(r)
	}
	stage := decidedAt(r)
	why := reasonText(r, stage)
	var paras []string
	switch r.Action {
	case "accept":
		paras = append(paras, "Accepted at end of message: mxguard passed it to the MTA for delivery"+mtaLogHint(r)+".")
	case "tag":
		paras = append(paras, "Accepted and tagged at end of message: "+why+".")
		if h := addedHeader(r, policy.VerdictHeader); h != "" {
			paras = append(paras, "The message carries "+h+", which mail clients can filter on.")
		}
	case "quarantine":
		paras = append(paras, "Quarantined at end of message: "+why+".")
		paras = append(paras, quarantineText(r))
	case "discard":
		paras = append(paras, "Accepted and discarded at end of message, so no recipient gets it: "+why+".")
	case "reject":
		paras = append(paras, "Rejected at "+stage+": "+why+".")
	case "tempfail":
		paras = append(paras, "Temporarily refused at "+stage+": "+why+". The sending server is asked to retry later.")
	case "aborted":
		paras = append(paras, "Not finished: the transaction ended before end of message, so mxguard gave no verdict on the message. "+
			"Either the client gave up (RSET, QUIT or a lost connection) or the MTA ended it itself, e.g. its own checks refused the message; "+
			"the MTA's log"+mtaLogHint(r)+" tells which.")
	default:
		paras = append(paras, fmt.Sprintf("Action %s: %s.", r.Action, why))
	}
	if s := partialText(r); s != "" {
		paras = append(paras, s)
	}
	if r.QueueID == "" {
		paras = append(paras, "No queue id: the MTA had assigned none when the transaction ended (Postfix assigns it at the first accepted recipient); "+
			"in the MTA's log, look for the client "+Client(r)+" at that time.")
	}
	return paras
}

func explainConnection(r *logstore.Record) []string {
	at := "the client " + Client(r)
	switch r.Reason {
	case string(policy.NoTransaction):
		return []string{"No mail: " + at + " connected and left without starting a transaction (no MAIL FROM)."}
	case string(policy.BlockedNetwork):
		return []string{"Rejected at connect: " + at + " is in relay.block_networks."}
	case string(policy.Busy):
		return []string{"Temporarily refused at connect: mxguard already had milter.max_sessions sessions open. The sending server is asked to retry later."}
	}
	return []string{fmt.Sprintf("%s at connect, before MAIL FROM: %s.", upperFirst(verb(r.Action)), reasonText(r, "connect"))}
}

// decidedAt names the SMTP stage a refusal was given at, from what the row
// holds: no recipients means MAIL FROM; every recipient refused means
// RCPT TO; a header refusal is at DATA; anything else is end of message.
func decidedAt(r *logstore.Record) string {
	if !Refuses(r.Action) {
		return "end of message"
	}
	switch {
	case r.Reason == string(policy.HeaderTooLarge):
		return "DATA, while reading the header"
	case len(r.Recipients) == 0:
		return "MAIL FROM"
	}
	for _, rc := range r.Recipients {
		if !Refuses(rc.Action) {
			return "end of message"
		}
	}
	return "RCPT TO"
}

// reasonText explains a reason constant with the row's facts.
func reasonText(r *logstore.Record, stage string) string {
	reason := policy.Reason(r.Reason)
	switch reason {
	case policy.SPFFail, policy.SPFSoftFail, policy.SPFNeutral, policy.SPFNone, policy.SPFTempError, policy.SPFPermError:
		result, domain := spfOf(r)
		s := "SPF " + result
		if domain != "" {
			s += " for " + domain
		}
		if stage == "MAIL FROM" {
			return s + "; the sender's domain is one of ours, and a client that neither logged in nor is trusted may use it only when SPF passes"
		}
		org := r.Organization
		for _, rc := range r.Recipients {
			if rc.Reason == r.Reason && rc.Organization != "" {
				org = rc.Organization
				break
			}
		}
		if org == "" {
			return s + fmt.Sprintf(" (the policy for SPF %s is %s)", result, r.Action)
		}
		return s + fmt.Sprintf(" (the policy of organisation %s for SPF %s is %s)", org, result, r.Action)
	case policy.RelayDenied:
		return "relay access denied: a recipient's domain is none of ours, and the client " + Client(r) +
			" neither logged in nor is in relay.trusted_networks"
	case policy.SenderLoginMismatch:
		return fmt.Sprintf("the login %s may not use the envelope sender <%s> (relay.sender_login)", r.AuthUser, r.MailFrom)
	case policy.SpoofedSender:
		result, _ := spfOf(r)
		return fmt.Sprintf("the envelope sender <%s> uses one of our own domains, but the client neither logged in nor is trusted, and SPF did not pass (SPF %s)", r.MailFrom, result)
	case policy.BlockedNetwork:
		return "the client " + Client(r) + " is in relay.block_networks"
	case policy.TooManyRecipients:
		return "more recipients than milter.max_recipients; the client should send to the rest in another transaction"
	case policy.HeaderTooLarge:
		return "the header has more fields than milter.max_headers or more bytes than milter.max_header_bytes"
	case policy.Busy:
		return "mxguard already had milter.max_sessions sessions open"
	case policy.InternalError:
		return "mxguard's own trouble (the error is below): rather than pass mail it could not judge, it asks the sender to retry"
	case policy.LogUnavailable:
		return "the transaction log could not be written (the error is below), and mxguard never passes mail it has not logged"
	case policy.ReasonNone:
		return "no reason was recorded"
	}
	return "reason " + r.Reason + " (the checks below tell more)"
}

// spfOf returns the SPF result and domain, from the columns or, when SPF
// had not finished as the row was written, from the evidence.
func spfOf(r *logstore.Record) (result, domain string) {
	result, domain = r.SPF, r.SPFDomain
	for _, e := range r.Evidence {
		if e.Check == "spf" && result == "" {
			result, domain = e.Result, e.Detail
		}
	}
	if result == "" {
		result = strings.ToLower(strings.TrimPrefix(r.Reason, "SPF"))
	}
	return result, domain
}

// partialText lists the recipients refused at RCPT TO when the message
// itself went on (or was aborted): then some recipients got it and some
// did not.
func partialText(r *logstore.Record) string {
	if Refuses(r.Action) {
		return ""
	}
	var refused []string
	for _, rc := range r.Recipients {
		if Refuses(rc.Action) {
			refused = append(refused, fmt.Sprintf("<%s> (%s)", rc.Address, orNone(rc.Reason, rc.Action)))
		}
	}
	if len(refused) == 0 {
		return ""
	}
	verbs := "was"
	if len(refused) > 1 {
		verbs = "were"
	}
	return fmt.Sprintf("%d of %d recipients %s refused at RCPT TO: %s; the verdict above is for the others.",
		len(refused), len(r.Recipients), verbs, strings.Join(refused, ", "))
}

// quarantineText says where quarantined mail is, and what was done to it
// since (mxguard quarantine and the console record that as evidence).
func quarantineText(r *logstore.Record) string {
	for _, e := range slices.Backward(r.Evidence) {
		if e.Check == quarantine.Check {
			s := fmt.Sprintf("It was then %s from the hold queue", e.Result)
			if e.Detail != "" {
				s += " " + e.Detail
			}
			if e.Error != "" {
				s += " (" + e.Error + ")"
			}
			return s + "."
		}
	}
	s := "The MTA holds it in its hold queue: mxguard quarantine list shows it"
	if r.QueueID != "" {
		s += "; mxguard quarantine release " + r.QueueID + " delivers it"
	}
	return s + "."
}

func addedHeader(r *logstore.Record, name string) string {
	for _, h := range r.HeadersAdded {
		if n, _, ok := strings.Cut(h, ":"); ok && strings.EqualFold(n, name) {
			return h
		}
	}
	return ""
}

func mtaLogHint(r *logstore.Record) string {
	if r.QueueID != "" {
		return " (queue id " + r.QueueID + ")"
	}
	return ""
}

func verb(action string) string {
	switch action {
	case "reject":
		return "rejected"
	case "tempfail":
		return "temporarily refused"
	case "aborted":
		return "ended"
	}
	return action
}

func upperFirst(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}

func orNone(s, none string) string {
	if s == "" {
		return none
	}
	return s
}

// Sender is the envelope sender as a search result shows it: in angle
// brackets ("<>" is the null sender), or "-" for a connection without a
// transaction.
func Sender(r *logstore.Record) string {
	if ConnectionOnly(r) {
		return "-"
	}
	return "<" + r.MailFrom + ">"
}

// Recipients lists the recipients as a search result shows them, each one
// refused at RCPT though the message went on marked with its action.
func Recipients(r *logstore.Record) string {
	var rcpts []string
	for _, rc := range r.Recipients {
		a := rc.Address
		if Refuses(rc.Action) && !Refuses(r.Action) {
			a += " (" + rc.Action + ")"
		}
		rcpts = append(rcpts, a)
	}
	return strings.Join(rcpts, ", ")
}
