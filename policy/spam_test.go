package policy

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// fixedSpam is a spam engine that returns a set score.
type fixedSpam struct {
	score spamScore
	users []string
}

func (f *fixedSpam) scan(ctx context.Context, t *Transaction, msg *Message, user string) spamScore {
	f.users = append(f.users, user)
	return f.score
}

// spamEndOfMessage runs one message from client to rcpt through an engine
// whose only content check is a spam check answering score.
func spamEndOfMessage(t *testing.T, client, auth, rcpt string, score spamScore, headers ...Header) (Verdict, *Transaction, *fixedSpam) {
	t.Helper()
	cfg, err := Parse("t", []byte(contentConfig))
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(cfg, &fakeSPF{result: "pass"})
	engine := &fixedSpam{score: score}
	e.UseContentChecks(&spamCheck{cfg: cfg, engine: engine})
	conn := &Connection{ClientIP: netip.MustParseAddr(client), Helo: "h.test"}
	e.Connect(conn)
	tr := e.NewTransaction(conn)
	tr.MailFrom, tr.AuthUser = "someone@sender.test", auth
	e.Mail(context.Background(), tr)
	e.Rcpt(context.Background(), tr, rcpt)
	return e.EndOfMessage(context.Background(), tr, &Message{Headers: headers}), tr, engine
}

func headerValue(hs []Header, name string) (string, bool) {
	for _, h := range hs {
		if h.Name == name {
			return h.Value, true
		}
	}
	return "", false
}

func TestSpamVerdicts(t *testing.T) {
	incoming := []Header{{"Subject", " hello"}, {"X-Spam-Flag", " NO"}, {"X-Spam-Status", " No"}, {"X-Spam-Flag", " NO"}}
	t.Run("tag", func(t *testing.T) {
		v, tr, _ := spamEndOfMessage(t, "192.0.2.1", "", "x@plain.test", spamScore{score: 6, rules: []string{"A", "B"}}, incoming...)
		if v.Action != Tag || v.Reason != SpamTag {
			t.Fatalf("verdict %+v", v)
		}
		if f, _ := headerValue(v.AddHeaders, "X-Spam-Flag"); f != "YES" {
			t.Errorf("X-Spam-Flag %q in %v", f, v.AddHeaders)
		}
		if s, _ := headerValue(v.AddHeaders, "X-Spam-Status"); s != "Yes, score=6.0 required=4.0 tests=A,B" {
			t.Errorf("X-Spam-Status %q", s)
		}
		if r, _ := headerValue(v.AddHeaders, VerdictHeader); !strings.Contains(r, "SpamTag") {
			t.Errorf("verdict header %q", r)
		}
		want := []HeaderRef{{"X-Spam-Flag", 2}, {"X-Spam-Flag", 1}, {"X-Spam-Status", 1}}
		if len(v.DeleteHeaders) != 3 || v.DeleteHeaders[0] != want[0] || v.DeleteHeaders[1] != want[1] || v.DeleteHeaders[2] != want[2] {
			t.Errorf("deletions %v, want %v", v.DeleteHeaders, want)
		}
		if len(v.ChangeHeaders) != 1 || v.ChangeHeaders[0].Value != "[SPAM] hello" {
			t.Errorf("subject change %v", v.ChangeHeaders)
		}
		if ev := tr.Evidence[len(tr.Evidence)-1]; ev.Check != "spam" || ev.Result != "spam" || !strings.Contains(ev.Detail, "score=6.0") {
			t.Errorf("evidence %+v", ev)
		}
	})
	t.Run("ham keeps the subject", func(t *testing.T) {
		v, _, _ := spamEndOfMessage(t, "192.0.2.1", "", "x@plain.test", spamScore{score: 1}, incoming...)
		if v.Action != Accept || len(v.ChangeHeaders) != 0 {
			t.Fatalf("verdict %+v", v)
		}
		if s, _ := headerValue(v.AddHeaders, "X-Spam-Status"); !strings.HasPrefix(s, "No, score=1.0") {
			t.Errorf("X-Spam-Status %q", s)
		}
		if _, ok := headerValue(v.AddHeaders, "X-Spam-Flag"); ok {
			t.Error("ham flagged")
		}
	})
	t.Run("organisation thresholds", func(t *testing.T) {
		v, _, engine := spamEndOfMessage(t, "192.0.2.1", "", "x@strict.test", spamScore{score: 7})
		if v.Action != Quarantine || !strings.Contains(v.Quarantine, "SpamQuarantine") {
			t.Errorf("strict at 7: %+v", v)
		}
		if len(engine.users) != 1 {
			t.Errorf("engine called %d times", len(engine.users))
		}
		v, _, _ = spamEndOfMessage(t, "192.0.2.1", "", "x@plain.test", spamScore{score: 7})
		if v.Action != Tag {
			t.Errorf("plain at 7: %v", v.Action)
		}
		v, _, _ = spamEndOfMessage(t, "192.0.2.1", "", "x@strict.test", spamScore{score: 9})
		if v.Action != Reject || v.Reply() != "550 5.7.1 SpamReject: message scored 9.0, the limit is 8.0" {
			t.Errorf("strict at 9: %+v", v)
		}
	})
	t.Run("outbound thresholds", func(t *testing.T) {
		v, _, _ := spamEndOfMessage(t, "192.0.2.1", "someone@sender.test", "x@elsewhere.test", spamScore{score: 7})
		if v.Action != Accept {
			t.Errorf("outbound at 7 (tag off): %v", v.Action)
		}
		v, _, _ = spamEndOfMessage(t, "192.0.2.1", "someone@sender.test", "x@elsewhere.test", spamScore{score: 16})
		if v.Action != Reject {
			t.Errorf("outbound at 16: %v", v.Action)
		}
	})
	t.Run("safe sender skips", func(t *testing.T) {
		cfgSender := "a@partner.test"
		cfg, _ := Parse("t", []byte(contentConfig))
		e := NewEngine(cfg, &fakeSPF{result: "pass"})
		engine := &fixedSpam{score: spamScore{score: 1000}}
		e.UseContentChecks(&spamCheck{cfg: cfg, engine: engine})
		conn := &Connection{ClientIP: netip.MustParseAddr("192.0.2.1")}
		e.Connect(conn)
		tr := e.NewTransaction(conn)
		tr.MailFrom = cfgSender
		e.Rcpt(context.Background(), tr, "x@plain.test")
		v := e.EndOfMessage(context.Background(), tr, &Message{})
		if v.Action != Accept || len(engine.users) != 0 {
			t.Errorf("safe sender: %v, engine called %d times", v.Action, len(engine.users))
		}
	})
	t.Run("engine error follows on_error", func(t *testing.T) {
		v, tr, _ := spamEndOfMessage(t, "192.0.2.1", "", "x@plain.test", spamScore{err: errors.New("connection refused")})
		if v.Action != Accept {
			t.Errorf("on_error accept: %v", v.Action)
		}
		ev := tr.Evidence[len(tr.Evidence)-1]
		if ev.Result != "error" || ev.Err == nil {
			t.Errorf("evidence %+v", ev)
		}
	})
}
