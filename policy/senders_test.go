package policy

import (
	"context"
	"net/netip"
	"testing"
)

// TestSenderListPrecedence: user over organisation over global; blocked
// over safe within a level; our users' mail is never judged by the lists.
func TestSenderListPrecedence(t *testing.T) {
	cfg, err := Parse("t", []byte(contentConfig))
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(cfg, &fakeSPF{result: "pass"})
	tests := []struct {
		name, client, sender, rcpt string
		want                       string // "blocked", "safe" or ""
	}{
		{"global safe", "192.0.2.1", "a@partner.test", "x@plain.test", "safe"},
		{"global blocked address", "192.0.2.1", "spammer@bad.test", "x@plain.test", "blocked"},
		{"global blocked network", "198.51.100.7", "a@fine.test", "x@plain.test", "blocked"},
		{"organisation blocks what global trusts", "192.0.2.1", "a@partner.test", "x@strict.test", "blocked"},
		{"user trusts what the organisation blocks", "192.0.2.1", "a@partner.test", "ceo@strict.test", "safe"},
		{"user: blocked wins over safe", "192.0.2.1", "b@board.test", "ceo@strict.test", "blocked"},
		{"user lists fall through to global", "192.0.2.1", "spammer@bad.test", "ceo@strict.test", "blocked"},
		{"domain match is exact", "192.0.2.1", "a@sub.partner.test", "x@plain.test", ""},
		{"case-insensitive", "192.0.2.1", "SPAMMER@Bad.Test", "x@plain.test", "blocked"},
		{"trusted client is not judged", "127.0.0.1", "spammer@bad.test", "x@plain.test", ""},
		{"unlisted", "192.0.2.1", "a@fine.test", "x@plain.test", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := &Connection{ClientIP: netip.MustParseAddr(tt.client), Helo: "h.test"}
			e.Connect(conn)
			tr := e.NewTransaction(conn)
			tr.MailFrom = tt.sender
			e.Mail(context.Background(), tr)
			v := e.Rcpt(context.Background(), tr, tt.rcpt)
			r := tr.Recipients[0]
			got := ""
			switch {
			case v.Reason == BlockedSender:
				got = "blocked"
				if v.Reply()[:9] != "550 5.7.1" {
					t.Errorf("reply %q", v.Reply())
				}
			case r.SafeSender != "":
				got = "safe"
			}
			if got != tt.want {
				t.Errorf("got %q (verdict %+v, safe %q); want %q", got, v, r.SafeSender, tt.want)
			}
		})
	}
}

func TestSafeSenderNeedsEveryRecipient(t *testing.T) {
	tr := &Transaction{Recipients: []Recipient{{Address: "a", SafeSender: "global: @x"}, {Address: "b"}}}
	if s := tr.safeSenderFor(); s != "" {
		t.Errorf("safe for one of two recipients skipped the spam verdict: %q", s)
	}
	tr.Recipients[1].SafeSender = "user b: @x"
	if s := tr.safeSenderFor(); s == "" {
		t.Error("safe for every recipient did not skip the spam verdict")
	}
}

func TestDecideSpam(t *testing.T) {
	th := SpamThresholds{TagScore: 5, QuarantineScore: 10, RejectScore: 15}
	for _, tt := range []struct {
		th    SpamThresholds
		score float64
		want  Action
	}{
		{th, -2, Accept}, {th, 4.9, Accept}, {th, 5, Tag}, {th, 9.99, Tag}, {th, 10, Quarantine}, {th, 15, Reject}, {th, 1000, Reject},
		{SpamThresholds{RejectScore: 8}, 7, Accept}, {SpamThresholds{RejectScore: 8}, 8, Reject},
		{SpamThresholds{}, 1000, Accept},
	} {
		v := decideSpam(tt.th, tt.score)
		if v.Action != tt.want {
			t.Errorf("%+v score %g: %v, want %v", tt.th, tt.score, v.Action, tt.want)
		}
		if v.Action == Reject && v.Reply() != "550 5.7.1 SpamReject: message scored "+formatScore(tt.score)+", the limit is "+formatScore(tt.th.RejectScore) {
			t.Errorf("reply %q", v.Reply())
		}
	}
}
