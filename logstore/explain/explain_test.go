package explain

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/logstore"
)

var t0 = time.Date(2026, 11, 23, 5, 19, 32, 422_000_000, time.UTC)

func spfFail(domain string) []logstore.Evidence {
	return []logstore.Evidence{{Check: "client", Result: "untrusted", Detail: "203.0.113.9"},
		{Check: "spf", Result: "fail", Detail: domain, Duration: 20 * time.Microsecond, Error: "matched all"}}
}

func TestParagraphs(t *testing.T) {
	tests := []struct {
		name string
		r    logstore.Record
		want []string
	}{
		{"accept", logstore.Record{QueueID: "4XyZ1A2B3C", MailFrom: "a@b.test", Action: "accept",
			Recipients: []logstore.Recipient{{Address: "bob@example.com", Action: "accept"}}},
			[]string{"Accepted at end of message: mxguard passed it to the MTA for delivery (queue id 4XyZ1A2B3C)."}},
		{"reject at RCPT", logstore.Record{ClientIP: "203.0.113.9", MailFrom: "billing@sender.test", Organization: "acme", SPF: "fail", SPFDomain: "sender.test",
			Action: "reject", Reason: "SPFFail", Evidence: spfFail("sender.test"),
			Recipients: []logstore.Recipient{{Address: "dave@acme.test", Organization: "acme", Action: "reject", Reason: "SPFFail"}}},
			[]string{"Rejected at RCPT TO: SPF fail for sender.test (the policy of organisation acme for SPF fail is reject).",
				"No queue id: the MTA had assigned none when the transaction ended (Postfix assigns it at the first accepted recipient); in the MTA's log, look for the client 203.0.113.9 at that time."}},
		{"reject at MAIL FROM", logstore.Record{QueueID: "Q1", MailFrom: "ceo@example.com", Action: "reject", Reason: "SPFFail",
			Evidence: spfFail("example.com")},
			[]string{"Rejected at MAIL FROM: SPF fail for example.com; the sender's domain is one of ours, and a client that neither logged in nor is trusted may use it only when SPF passes."}},
		{"tag", logstore.Record{QueueID: "Q2", MailFrom: "a@soft.test", Organization: "example", SPF: "softfail", SPFDomain: "soft.test",
			Action: "tag", Reason: "SPFSoftFail", HeadersAdded: []string{"X-MXGuard-Verdict: tag; reasons=SPFSoftFail"}},
			[]string{"Accepted and tagged at end of message: SPF softfail for soft.test (the policy of organisation example for SPF softfail is tag).",
				"The message carries X-MXGuard-Verdict: tag; reasons=SPFSoftFail, which mail clients can filter on."}},
		{"quarantine", logstore.Record{QueueID: "Q3", MailFrom: "a@b.test", Action: "quarantine", Reason: "SpamQuarantine"},
			[]string{"Quarantined at end of message: reason SpamQuarantine (the checks below tell more).",
				"The MTA holds it in its hold queue: mxguard quarantine list shows it; mxguard quarantine release Q3 delivers it."}},
		{"released", logstore.Record{QueueID: "Q3", MailFrom: "a@b.test", Action: "quarantine", Reason: "SpamQuarantine",
			Evidence: []logstore.Evidence{{Check: "quarantine", Result: "released", Detail: "by web:admin@example.com at 2026-11-23T12:30:00Z"}}},
			[]string{"Quarantined at end of message: reason SpamQuarantine (the checks below tell more).",
				"It was then released from the hold queue by web:admin@example.com at 2026-11-23T12:30:00Z."}},
		{"partial", logstore.Record{QueueID: "Q4", MailFrom: "a@b.test", Action: "accept", Recipients: []logstore.Recipient{
			{Address: "bob@example.com", Action: "accept"}, {Address: "x@elsewhere.test", Action: "reject", Reason: "RelayDenied"}}},
			[]string{"Accepted at end of message: mxguard passed it to the MTA for delivery (queue id Q4).",
				"1 of 2 recipients was refused at RCPT TO: <x@elsewhere.test> (RelayDenied); the verdict above is for the others."}},
		{"tempfail", logstore.Record{QueueID: "Q5", MailFrom: "a@b.test", Action: "tempfail", Reason: "LogUnavailable",
			Recipients: []logstore.Recipient{{Address: "bob@example.com", Action: "accept"}}},
			[]string{"Temporarily refused at end of message: the transaction log could not be written (the error is below), and mxguard never passes mail it has not logged. The sending server is asked to retry later."}},
		{"idle", logstore.Record{ClientIP: "198.51.100.77", Action: "aborted", Reason: "NoTransaction"},
			[]string{"No mail: the client 198.51.100.77 connected and left without starting a transaction (no MAIL FROM)."}},
		{"blocked", logstore.Record{ClientIP: "198.51.100.66", Action: "reject", Reason: "BlockedNetwork"},
			[]string{"Rejected at connect: the client 198.51.100.66 is in relay.block_networks."}},
		{"connection, other", logstore.Record{Action: "tempfail", Reason: "InternalError"},
			[]string{"Temporarily refused at connect, before MAIL FROM: mxguard's own trouble (the error is below): rather than pass mail it could not judge, it asks the sender to retry."}},
	}
	for _, tt := range tests {
		got := Paragraphs(&tt.r)
		if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, got, tt.want)
		}
	}
}

func TestOf(t *testing.T) {
	score := 7.5
	r := &logstore.Record{ID: 4, StartedAt: t0, EndedAt: t0.Add(4 * time.Millisecond), QueueID: "4XyZ1A2B3C", ClientIP: "203.0.113.9",
		ClientName: "unknown", Helo: "mx.sender.test", Daemon: "smtpd", MailFrom: "billing@sender.test", Subject: "=?UTF-8?Q?f=C3=BCr?=",
		Direction: "inbound", Organization: "acme", SPF: "fail", SPFDomain: "sender.test", DKIM: "none", SpamScore: &score,
		Action: "reject", Reason: "SPFFail", Reply: "550 5.7.23 SPFFail", Error: "matched all", Evidence: spfFail("sender.test"),
		HeadersAdded: []string{"X-A: b"},
		Recipients:   []logstore.Recipient{{Address: "dave@acme.test", Organization: "acme", Action: "reject", Reason: "SPFFail"}}}
	e := Of(r)
	if e.Title != "Transaction 4, queue id 4XyZ1A2B3C" {
		t.Errorf("title %q", e.Title)
	}
	var fields []string
	for _, f := range e.Fields {
		fields = append(fields, f.Name+"="+f.Value)
	}
	want := []string{
		"Time=2026-11-23 05:19:32.422 UTC, lasted 4ms",
		"Client=203.0.113.9 (unknown), HELO mx.sender.test, MTA service smtpd",
		"Login=none", "Sender=<billing@sender.test>", "Direction=inbound, organisation acme", "Subject=für",
		"SPF=fail for sender.test", "DKIM=none", "Spam score=7.5", "Verdict=reject, reason SPFFail",
		"Reply=550 5.7.23 SPFFail", "Error=matched all",
	}
	if strings.Join(fields, "\n") != strings.Join(want, "\n") {
		t.Errorf("fields:\n%s\nwant\n%s", strings.Join(fields, "\n"), strings.Join(want, "\n"))
	}
	if len(e.Checks) != 2 || e.Checks[1] != (Check{"spf", "fail", "sender.test", "20µs", "matched all"}) || e.Checks[0].Duration != "" {
		t.Errorf("checks %+v", e.Checks)
	}
	if len(e.Recipients) != 1 || len(e.HeadersAdded) != 1 {
		t.Errorf("recipients %v, headers %v", e.Recipients, e.HeadersAdded)
	}

	// A connection has no sender or login; an accepted message's reply is
	// the MTA's.
	c := Of(&logstore.Record{ID: 5, StartedAt: t0, ClientIP: "198.51.100.77", Action: "aborted", Reason: "NoTransaction"})
	for _, f := range c.Fields {
		if f.Name == "Sender" || f.Name == "Login" {
			t.Errorf("a connection has %s", f.Name)
		}
	}
	a := Of(&logstore.Record{ID: 6, StartedAt: t0, MailFrom: "", Action: "accept", Evidence: []logstore.Evidence{{Check: "client"}}})
	if f := a.Fields[len(a.Fields)-1]; f.Name != "Reply" || f.Value != "none: mxguard let the MTA answer" {
		t.Errorf("last field %+v", f)
	}
	if a.Fields[3] != (Field{"Sender", "<>"}) {
		t.Errorf("null sender: %+v", a.Fields[3])
	}
}

func ExampleOf() {
	r := &logstore.Record{ID: 4, StartedAt: t0, ClientIP: "203.0.113.9", MailFrom: "billing@sender.test", Organization: "acme",
		SPF: "fail", SPFDomain: "sender.test", Action: "reject", Reason: "SPFFail", Reply: "550 5.7.23 SPFFail: SPF fail for sender.test",
		Evidence:   spfFail("sender.test"),
		Recipients: []logstore.Recipient{{Address: "dave@acme.test", Organization: "acme", Action: "reject", Reason: "SPFFail"}}}
	e := Of(r)
	fmt.Println(e.Title)
	fmt.Println(e.Paragraphs[0])
	for _, f := range e.Fields {
		fmt.Printf("%-10s %s\n", f.Name, f.Value)
	}
	// Output:
	// Transaction 4
	// Rejected at RCPT TO: SPF fail for sender.test (the policy of organisation acme for SPF fail is reject).
	// Time       2026-11-23 05:19:32.422 UTC
	// Client     203.0.113.9
	// Login      none
	// Sender     <billing@sender.test>
	// Direction  organisation acme
	// SPF        fail for sender.test
	// Verdict    reject, reason SPFFail
	// Reply      550 5.7.23 SPFFail: SPF fail for sender.test
}
