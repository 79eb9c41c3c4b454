package policy

import (
	"fmt"
	"strings"
)

// contentFor is the content policy that applies to t: its organisation's,
// or the global one.
func (c *Config) contentFor(t *Transaction) *contentPolicy {
	if o := t.Organization(c); o != nil {
		return &o.content
	}
	return &c.content
}

// senderStanding is how a recipient's lists judge the sender.
type senderStanding struct {
	blocked bool
	safe    bool
	entry   string // the list entry that matched
	level   string // "user", "organisation" or "global", for the log
}

// senderStandingFor applies the safe and blocked lists for one recipient.
// The most specific level that matches decides: the recipient's own lists,
// then its organisation's, then the global ones; within a level, blocked
// wins over safe. Only inbound mail is judged by them.
func (c *Config) senderStandingFor(t *Transaction, rcpt string, org *Organization) senderStanding {
	if t.OurUser() {
		return senderStanding{}
	}
	type level struct {
		name  string
		lists senderList
	}
	var levels []level
	if org != nil {
		if u, ok := org.users[strings.ToLower(rcpt)]; ok {
			levels = append(levels, level{"user " + strings.ToLower(rcpt), u})
		}
		levels = append(levels, level{"organisation " + org.Name, org.content.senders})
	}
	levels = append(levels, level{"global", c.content.senders})
	for _, l := range levels {
		if entry, ok := l.lists.blocked.matches(t.MailFrom, t.Conn.ClientIP); ok {
			return senderStanding{blocked: true, entry: entry, level: l.name}
		}
		if entry, ok := l.lists.safe.matches(t.MailFrom, t.Conn.ClientIP); ok {
			return senderStanding{safe: true, entry: entry, level: l.name}
		}
	}
	return senderStanding{}
}

// decideBlockedSender refuses a recipient whose lists block the sender.
func decideBlockedSender(t *Transaction, rcpt string, st senderStanding) Verdict {
	who := "<" + t.MailFrom + ">"
	if t.MailFrom == "" {
		who = "the null sender"
	}
	return refuse(Reject, 550, "5.7.1", BlockedSender, "mail from %s to <%s> is blocked by the recipient's policy", who, rcpt)
}

// safeSenderFor returns the safe-list entry that exempts t from the spam
// verdict: only when the sender is safe for every accepted recipient,
// since the spam verdict applies to the whole message.
func (t *Transaction) safeSenderFor() string {
	rs := t.AcceptedRecipients()
	if len(rs) == 0 {
		return ""
	}
	for _, r := range rs {
		if r.SafeSender == "" {
			return ""
		}
	}
	return rs[0].SafeSender
}

func (s senderStanding) String() string {
	kind := "safe"
	if s.blocked {
		kind = "blocked"
	}
	return fmt.Sprintf("%s by %s list: %s", kind, s.level, s.entry)
}
