package policy

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/scanners/rspamd"
	"github.com/mxguard/mxguard/scanners/spamd"
)

// spamHeaders are the headers the spam verdict writes; incoming copies are
// removed first, so a sender cannot pre-label its own mail.
var spamHeaders = []string{"X-Spam-Flag", "X-Spam-Score", "X-Spam-Status"}

// spamScore is what a spam engine said, whichever engine it was.
type spamScore struct {
	skipped  bool
	score    float64
	required float64 // the engine's own threshold
	opinion  string  // the engine's own verdict or action
	rules    []string
	detail   string
	err      error
}

// spamEngine is spamd or rspamd behind one method.
type spamEngine interface {
	scan(ctx context.Context, t *Transaction, msg *Message, user string) spamScore
}

// spamCheck scores the message and applies the organisation's thresholds.
type spamCheck struct {
	cfg    *Config
	engine spamEngine
}

func newSpamCheck(cfg *Config) *spamCheck {
	c := &spamCheck{cfg: cfg}
	switch cfg.Spam.Engine {
	case "spamd":
		c.engine = spamdEngine{client: &spamd.Client{Address: cfg.Spam.Address, MaxSize: cfg.Spam.MaxSize.Bytes}, hostname: cfg.Hostname}
	case "rspamd":
		c.engine = rspamdEngine{client: &rspamd.Client{URL: cfg.Spam.Address, MaxSize: cfg.Spam.MaxSize.Bytes, Password: cfg.Spam.Password}, hostname: cfg.Hostname}
	}
	return c
}

func (c *spamCheck) Name() string           { return "spam" }
func (c *spamCheck) Timeout() time.Duration { return c.cfg.Spam.Timeout.Duration }

func (c *spamCheck) Check(ctx context.Context, t *Transaction, msg *Message) (Evidence, Verdict) {
	if safe := t.safeSenderFor(); safe != "" {
		return Evidence{Result: "skipped", Detail: "safe sender (" + safe + ")"}, accept
	}
	p := c.cfg.contentFor(t)
	thresholds := p.spam
	if t.OurUser() {
		thresholds = c.cfg.Spam.Outbound
	}
	s := c.engine.scan(ctx, t, msg, p.spamdUser)
	switch {
	case s.err != nil:
		return Evidence{Result: "error", Detail: s.detail, Err: s.err},
			scanFailed(c.cfg.Spam.OnError, SpamScanFailed, fmt.Errorf("%s at %s: %w", c.cfg.Spam.Engine, c.cfg.Spam.Address, s.err))
	case s.skipped:
		_, size := msg.Raw()
		return Evidence{Result: "skipped", Detail: fmt.Sprintf("skipped: too large (%d bytes, spam.max_size %s)", size, c.cfg.Spam.MaxSize)}, accept
	}
	score := s.score
	t.spamScore = &score
	ev := Evidence{Result: "scored", Detail: fmt.Sprintf("%s score=%s required=%s (%s) rules=%s",
		c.cfg.Spam.Engine, formatScore(s.score), formatScore(s.required), s.opinion, strings.Join(s.rules, ","))}
	v := decideSpam(thresholds, s.score)
	if v.Action > Accept {
		ev.Result = "spam"
	}
	if v.Action.Ends() {
		return ev, v
	}
	v.DeleteHeaders = headerRefs(msg, spamHeaders...)
	v.AddHeaders = spamHeaderFields(thresholds, s, v.Action >= Tag)
	if v.Action >= Tag && p.subjectTag != "" && !t.OurUser() {
		v.ChangeHeaders = subjectTagged(msg, p.subjectTag)
	}
	return ev, v
}

// decideSpam applies the thresholds to a score; a threshold of 0 is off.
func decideSpam(th SpamThresholds, score float64) Verdict {
	over := func(limit float64) bool { return limit > 0 && score >= limit }
	switch {
	case over(th.RejectScore):
		return contentVerdict(Reject, 550, "5.7.1", SpamReject, "message scored %s, the limit is %s", formatScore(score), formatScore(th.RejectScore))
	case over(th.QuarantineScore):
		return contentVerdict(Quarantine, 0, "", SpamQuarantine, "message scored %s", formatScore(score))
	case over(th.TagScore):
		return contentVerdict(Tag, 0, "", SpamTag, "message scored %s", formatScore(score))
	}
	return accept
}

// spamHeaderFields renders X-Spam-Score and X-Spam-Status, and X-Spam-Flag
// when the message is tagged (SpamAssassin's names, which filters know).
func spamHeaderFields(th SpamThresholds, s spamScore, spam bool) []Header {
	yes, limit := "No", th.TagScore
	if spam {
		yes = "Yes"
	}
	if limit == 0 {
		limit = s.required
	}
	rules := strings.Join(s.rules, ",")
	if rules == "" {
		rules = "none"
	}
	hs := []Header{
		{Name: "X-Spam-Score", Value: formatScore(s.score)},
		{Name: "X-Spam-Status", Value: fmt.Sprintf("%s, score=%s required=%s tests=%s", yes, formatScore(s.score), formatScore(limit), printable(rules))},
	}
	if spam {
		hs = append([]Header{{Name: "X-Spam-Flag", Value: "YES"}}, hs...)
	}
	return hs
}

// subjectTagged prefixes the Subject with tag, or adds a Subject when the
// message has none. A subject already tagged is left alone.
func subjectTagged(msg *Message, tag string) []HeaderChange {
	subject := msg.Get("Subject")
	if strings.HasPrefix(subject, tag) {
		return nil
	}
	value := tag
	if subject != "" {
		value = tag + " " + subject
	}
	return []HeaderChange{{HeaderRef: HeaderRef{Name: "Subject", Index: 1}, Value: value}}
}

func formatScore(f float64) string {
	s := strconv.FormatFloat(f, 'f', 1, 64)
	if s == "-0.0" {
		return "0.0"
	}
	return s
}

type spamdEngine struct {
	client   *spamd.Client
	hostname string
}

// receivedField renders the Received field the MTA adds for t (RFC 5321
// section 4.4), CRLF-terminated.
func receivedField(hostname string, t *Transaction) string {
	from := printable(t.Conn.Helo)
	if from == "" {
		from = "unknown"
	}
	ip := "127.0.0.1"
	if t.Conn.ClientIP.IsValid() {
		ip = t.Conn.ClientIP.Unmap().String()
		if t.Conn.ClientIP.Unmap().Is6() {
			ip = "IPv6:" + ip
		}
	}
	with := "ESMTP"
	if t.Authenticated() {
		with = "ESMTPA"
	}
	id := ""
	if t.QueueID != "" {
		id = " id " + printable(t.QueueID)
	}
	return fmt.Sprintf("Received: from %s (%s [%s])\r\n\tby %s with %s%s;\r\n\t%s\r\n",
		from, printable(t.Conn.ClientName), ip, hostname, with, id, t.Started.Format(time.RFC1123Z))
}

func (e spamdEngine) scan(ctx context.Context, t *Transaction, msg *Message, user string) spamScore {
	raw, size := msg.Raw()
	// SpamAssassin reads the client from the Received chain, and the MTA
	// adds its own Received only after the milter: give spamd the one the
	// MTA will write, as spamass-milter does.
	received := receivedField(e.hostname, t)
	r := e.client.Check(ctx, io.MultiReader(strings.NewReader(received), raw), size+int64(len(received)), user)
	opinion := "ham"
	if r.Spam {
		opinion = "spam"
	}
	return spamScore{skipped: r.Skipped, score: r.Score, required: r.Required, opinion: opinion, rules: r.Rules, detail: r.Detail, err: r.Err}
}

type rspamdEngine struct {
	client   *rspamd.Client
	hostname string
}

func (e rspamdEngine) scan(ctx context.Context, t *Transaction, msg *Message, user string) spamScore {
	raw, size := msg.Raw()
	env := rspamd.Envelope{Helo: t.Conn.Helo, Hostname: t.Conn.ClientName, From: t.MailFrom, User: t.AuthUser, QueueID: t.QueueID}
	if t.Conn.ClientIP.IsValid() {
		env.IP = t.Conn.ClientIP.Unmap().String()
	}
	for _, r := range t.AcceptedRecipients() {
		env.Rcpts = append(env.Rcpts, r.Address)
	}
	r := e.client.Check(ctx, raw, size, env)
	return spamScore{skipped: r.Skipped, score: r.Score, required: r.Required, opinion: r.Action, rules: r.Symbols, detail: r.Detail, err: r.Err}
}
