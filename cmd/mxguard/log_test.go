package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/syncbuf"
	"github.com/mxguard/mxguard/logstore"
)

// logBase is when the fixture's transactions start: recent, so that the
// default period of mxguard log stats (24 hours) holds them.
var logBase = time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Hour)

// logFixture writes a log with one transaction of each kind, as the milter
// writes them (these are rows of a real mxguard serve, times aside), and a
// configuration naming it. It returns the rows by name, with their ids.
func logFixture(t *testing.T) (recs map[string]*logstore.Record, cfg, db string) {
	t.Helper()
	at := func(sec int) time.Time { return logBase.Add(time.Duration(sec) * time.Second) }
	client := func(ip string) logstore.Evidence {
		return logstore.Evidence{Check: "client", Result: "untrusted", Detail: ip}
	}
	spf := func(result, domain, err string) logstore.Evidence {
		return logstore.Evidence{Check: "spf", Result: result, Detail: domain, Duration: 420 * time.Microsecond, Error: err}
	}
	authRes := func(spf, helo, from string) string {
		return "Authentication-Results: mx.example.com; spf=" + spf + " smtp.helo=" + helo + " smtp.mailfrom=" + from
	}
	inbound := func(r *logstore.Record) *logstore.Record {
		r.EndedAt, r.Daemon, r.Direction = r.StartedAt.Add(3*time.Millisecond), "smtpd", "inbound"
		if r.ClientName == "" {
			r.ClientName = "unknown"
		}
		return r
	}
	recs = map[string]*logstore.Record{
		"accept": inbound(&logstore.Record{StartedAt: at(0), QueueID: "4XyZ1A2B3C", ClientIP: "192.0.2.25", ClientName: "mail.sender.test",
			Helo: "mail.sender.test", MailFrom: "news@sender.test", FromHeader: "<news@sender.test>", Subject: "June newsletter",
			MessageID: "<4XyZ1A2B3C@sender.test>", Size: 167, Organization: "example", SPF: "pass", SPFDomain: "sender.test", Action: "accept",
			HeadersAdded: []string{authRes("pass", "mail.sender.test", "news@sender.test")},
			Evidence:     []logstore.Evidence{client("192.0.2.25"), spf("pass", "sender.test", "matched ip")},
			Recipients:   []logstore.Recipient{{Address: "bob@example.com", Organization: "example", Action: "accept"}}}),
		"tag": inbound(&logstore.Record{StartedAt: at(60), QueueID: "4XyZ1A2B4D", ClientIP: "203.0.113.9", Helo: "mx.soft.test",
			MailFrom: "offers@soft.test", FromHeader: "<offers@soft.test>", Subject: "=?UTF-8?Q?Sommerangebote_f=C3=BCr_Sie?=",
			Organization: "example", SPF: "softfail", SPFDomain: "soft.test", Action: "tag", Reason: "SPFSoftFail", Error: "matched all",
			HeadersAdded: []string{authRes("softfail", "mx.soft.test", "offers@soft.test"), "X-MXGuard-Verdict: tag; reasons=SPFSoftFail"},
			Evidence:     []logstore.Evidence{client("203.0.113.9"), spf("softfail", "soft.test", "matched all")},
			Recipients:   []logstore.Recipient{{Address: "bob@example.com", Organization: "example", Action: "tag", Reason: "SPFSoftFail"}}}),
		"quarantine": inbound(&logstore.Record{StartedAt: at(120), QueueID: "4XyZ1A2B5E", ClientIP: "203.0.113.9", Helo: "mx.sender.test",
			MailFrom: "billing@sender.test", Subject: "Invoice 2291 overdue", Organization: "example", SPF: "fail", SPFDomain: "sender.test",
			Action: "quarantine", Reason: "SPFFail", Error: "matched all",
			HeadersAdded: []string{authRes("fail", "mx.sender.test", "billing@sender.test"), "X-MXGuard-Verdict: quarantine; reasons=SPFFail"},
			Evidence:     []logstore.Evidence{client("203.0.113.9"), spf("fail", "sender.test", "matched all")},
			Recipients:   []logstore.Recipient{{Address: "carol@example.com", Organization: "example", Action: "quarantine", Reason: "SPFFail"}}}),
		"reject": inbound(&logstore.Record{StartedAt: at(180), ClientIP: "203.0.113.9", Helo: "mx.sender.test", MailFrom: "billing@sender.test",
			Organization: "acme", SPF: "fail", SPFDomain: "sender.test", Action: "reject", Reason: "SPFFail",
			Reply: "550 5.7.23 SPFFail: SPF fail for sender.test", Error: "matched all",
			Evidence: []logstore.Evidence{client("203.0.113.9"), spf("fail", "sender.test", "matched all")},
			Recipients: []logstore.Recipient{
				{Address: "dave@acme.test", Organization: "acme", Action: "reject", Reason: "SPFFail", Reply: "550 5.7.23 SPFFail: SPF fail for sender.test"},
				{Address: "erin@acme.test", Organization: "acme", Action: "reject", Reason: "SPFFail", Reply: "550 5.7.23 SPFFail: SPF fail for sender.test"},
			}}),
		"login": {StartedAt: at(240), EndedAt: at(240), ClientIP: "203.0.113.5", ClientName: "laptop.example.net", Helo: "laptop",
			AuthUser: "alice", AuthType: "PLAIN", Daemon: "smtpd", MailFrom: "ceo@example.com", Direction: "outbound", Organization: "example",
			Action: "reject", Reason: "SenderLoginMismatch", Reply: "553 5.7.1 SenderLoginMismatch: user alice may not send as <ceo@example.com>",
			Evidence: []logstore.Evidence{
				{Check: "client", Result: "authenticated", Detail: "alice (PLAIN) from 203.0.113.5"},
				{Check: "sender_login", Result: "fail", Detail: "alice as <ceo@example.com>"},
			}},
		"partial": inbound(&logstore.Record{StartedAt: at(300), QueueID: "4XyZ1A2B6F", ClientIP: "192.0.2.25", Helo: "mail.sender.test",
			MailFrom: "News@Sender.TEST", Subject: "Re: June newsletter", Organization: "example", SPF: "pass", SPFDomain: "sender.test", Action: "accept",
			HeadersAdded: []string{authRes("pass", "mail.sender.test", "News@Sender.TEST")},
			Evidence:     []logstore.Evidence{client("192.0.2.25"), spf("pass", "sender.test", "matched ip")},
			Recipients: []logstore.Recipient{
				{Address: "bob@example.com", Organization: "example", Action: "accept"},
				{Address: "someone@elsewhere.test", Action: "reject", Reason: "RelayDenied", Reply: "554 5.7.1 RelayDenied: relay access denied for <someone@elsewhere.test>"},
			}}),
		"aborted": inbound(&logstore.Record{StartedAt: at(360), QueueID: "4XyZ1A2B7A", ClientIP: "192.0.2.25", Helo: "mail.sender.test",
			MailFrom: "news@sender.test", Organization: "example", SPF: "pass", SPFDomain: "sender.test", Action: "aborted", Reason: "Aborted",
			Evidence:   []logstore.Evidence{client("192.0.2.25"), spf("pass", "sender.test", "matched ip")},
			Recipients: []logstore.Recipient{{Address: "bob@example.com", Organization: "example", Action: "accept"}}}),
		"idle": {StartedAt: at(420), EndedAt: at(420), ClientIP: "198.51.100.77", ClientName: "unknown", Helo: "scanner", Daemon: "smtpd",
			Direction: "inbound", Action: "aborted", Reason: "NoTransaction"},
		"blocked": {StartedAt: at(480), EndedAt: at(480), ClientIP: "198.51.100.66", ClientName: "unknown", Daemon: "smtpd",
			Direction: "inbound", Action: "reject", Reason: "BlockedNetwork", Reply: "554 5.7.1 BlockedNetwork: connections from 198.51.100.66 are not accepted"},
		// The MTA reused the queue id of "accept" an hour later.
		"reused": inbound(&logstore.Record{StartedAt: at(3600), QueueID: "4XyZ1A2B3C", ClientIP: "192.0.2.26", Helo: "mail.sender.test",
			MailFrom: "news@sender.test", Subject: "July newsletter", Organization: "example", Action: "accept",
			Evidence:   []logstore.Evidence{client("192.0.2.26")},
			Recipients: []logstore.Recipient{{Address: "bob@example.com", Organization: "example", Action: "accept"}}}),
	}
	ordered := make([]*logstore.Record, len(logOrder))
	for i, name := range logOrder {
		ordered[i] = recs[name]
	}
	cfg, db = writeLog(t, "", ordered...)
	return recs, cfg, db
}

// logOrder is the fixture in the order it is saved, which is time order.
var logOrder = []string{"accept", "tag", "quarantine", "reject", "login", "partial", "aborted", "idle", "blocked", "reused"}

// jsonIDs runs a search with -format json and returns the fixture names of
// the rows printed, in order.
func jsonIDs(t *testing.T, recs map[string]*logstore.Record, args ...string) []string {
	t.Helper()
	code, stdout, stderr := runMxguard(append([]string{"log", "search", "-format", "json"}, args...)...)
	if code != 0 {
		t.Fatalf("mxguard log search %v: exit %d\n%s", args, code, stderr)
	}
	names := map[int64]string{}
	for name, r := range recs {
		names[r.ID] = name
	}
	var got []string
	for line := range strings.Lines(stdout) {
		var r struct{ ID int64 }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		got = append(got, names[r.ID])
	}
	return got
}

func TestLogSearchFilters(t *testing.T) {
	recs, cfg, db := logFixture(t)
	ts := func(sec int) string { return logBase.Add(time.Duration(sec) * time.Second).Format(time.RFC3339) }
	tests := []struct {
		args []string
		want []string // oldest first, as printed
	}{
		{nil, logOrder},
		{[]string{"-since", ts(360)}, []string{"aborted", "idle", "blocked", "reused"}},
		{[]string{"--since", ts(300), "--until", ts(420)}, []string{"partial", "aborted"}},
		{[]string{"-until", ts(60)}, []string{"accept"}},
		{[]string{"-since", "30m"}, nil}, // the fixture is 1-2 hours old
		{[]string{"-since", "2d", "-limit", "2"}, []string{"blocked", "reused"}},
		{[]string{"-from", "billing@sender.test"}, []string{"quarantine", "reject"}},
		{[]string{"-from", "<NEWS@sender.test>"}, []string{"accept", "partial", "aborted", "reused"}},
		{[]string{"-from", "@SENDER.TEST"}, []string{"accept", "quarantine", "reject", "partial", "aborted", "reused"}},
		{[]string{"-from", "<>"}, nil},
		{[]string{"-to", "bob@example.com"}, []string{"accept", "tag", "partial", "aborted", "reused"}},
		{[]string{"-to", "@acme.test"}, []string{"reject"}},
		{[]string{"-to", "someone@elsewhere.test"}, []string{"partial"}},
		{[]string{"-client", "203.0.113.9"}, []string{"tag", "quarantine", "reject"}},
		{[]string{"-client", "192.0.2.0/24"}, []string{"accept", "partial", "aborted", "reused"}},
		{[]string{"-client", "198.51.100.64/26"}, []string{"idle", "blocked"}},
		{[]string{"-action", "reject"}, []string{"reject", "login", "blocked"}},
		{[]string{"-org", "acme"}, []string{"reject"}},
		{[]string{"-queue-id", "4XyZ1A2B3C"}, []string{"accept", "reused"}},
		{[]string{"-auth-user", "Alice"}, []string{"login"}},
		{[]string{"-subject", "NEWSLETTER"}, []string{"accept", "partial", "reused"}},
		{[]string{"-subject", "für sie"}, []string{"tag"}},
		{[]string{"-from", "@sender.test", "-action", "accept", "-subject", "june"}, []string{"accept", "partial"}},
		{[]string{"-db", db, "-org", "acme"}, []string{"reject"}},
	}
	for _, tt := range tests {
		args := tt.args
		if !slices.Contains(args, "-db") {
			args = append([]string{"-config", cfg}, args...)
		}
		if got := jsonIDs(t, recs, args...); !slices.Equal(got, tt.want) {
			t.Errorf("mxguard log search %v = %q; want %q", tt.args, got, tt.want)
		}
	}
}

func TestLogSearchFormats(t *testing.T) {
	recs, cfg, _ := logFixture(t)

	// Table: a header and one line per transaction, every column starting
	// where its header does, in UTC.
	code, stdout, stderr := runMxguard("log", "search", "-config", cfg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != 1+len(logOrder) {
		t.Fatalf("%d lines; want %d:\n%s", len(lines), 1+len(logOrder), stdout)
	}
	head := lines[0]
	for _, col := range []string{"QUEUE ID", "CLIENT", "SENDER", "RECIPIENTS", "ACTION", "REASON", "SUBJECT"} {
		at := strings.Index(head, col)
		if at < 0 {
			t.Fatalf("header %q lacks %q", head, col)
		}
		for _, l := range lines[1:] {
			// Columns are separated by two spaces: the cell starts at the
			// header's column, after a blank.
			r := []rune(l)
			if len(r) <= at || r[at-1] != ' ' || r[at] == ' ' {
				t.Errorf("column %s is not aligned in:\n%s\n%s", col, head, l)
			}
		}
	}
	for i, name := range logOrder {
		r := recs[name]
		l := lines[i+1]
		for _, want := range []string{strconv.FormatInt(r.ID, 10), r.StartedAt.UTC().Format("2006-01-02 15:04:05"), r.Action} {
			if !strings.Contains(l, want) {
				t.Errorf("line of %s lacks %q: %s", name, want, l)
			}
		}
		if strings.HasSuffix(l, " ") {
			t.Errorf("line of %s ends in a blank: %q", name, l)
		}
	}
	partial := lines[1+slices.Index(logOrder, "partial")]
	for _, want := range []string{"<News@Sender.TEST>", "bob@example.com, someone@elsewhere.test (reject)", "accept"} {
		if !strings.Contains(partial, want) {
			t.Errorf("partial: lacks %q: %s", want, partial)
		}
	}
	if l := lines[1+slices.Index(logOrder, "tag")]; !strings.HasSuffix(l, "Sommerangebote für Sie") {
		t.Errorf("tag: subject not decoded: %s", l)
	}
	if l := lines[1+slices.Index(logOrder, "idle")]; !strings.Contains(l, "198.51.100.77  -  ") {
		t.Errorf("idle: a connection has no sender: %s", l)
	}

	// JSON: one object per line, the log's column names, times in UTC.
	code, stdout, _ = runMxguard("log", "search", "-config", cfg, "-format", "json", "-queue-id", "4XyZ1A2B4D")
	var j map[string]any
	if err := json.Unmarshal([]byte(stdout), &j); code != 0 || err != nil {
		t.Fatalf("exit %d, %v:\n%s", code, err, stdout)
	}
	tag := recs["tag"]
	for k, want := range map[string]any{
		"id": float64(tag.ID), "queue_id": "4XyZ1A2B4D", "mail_from": "offers@soft.test", "action": "tag",
		"subject": "=?UTF-8?Q?Sommerangebote_f=C3=BCr_Sie?=", "subject_decoded": "Sommerangebote für Sie",
		"started_at": tag.StartedAt.UTC().Format("2006-01-02T15:04:05.000Z"), "spam_score": nil,
	} {
		if j[k] != want {
			t.Errorf("json %s = %#v; want %#v", k, j[k], want)
		}
	}
	if rc := j["recipients"].([]any); len(rc) != 1 || rc[0].(map[string]any)["address"] != "bob@example.com" {
		t.Errorf("json recipients = %v", j["recipients"])
	}
	if ev := j["evidence"].([]any); len(ev) != 2 || ev[1].(map[string]any)["duration_ns"] != float64(420000) {
		t.Errorf("json evidence = %v", j["evidence"])
	}

	// CSV: a header, one record per transaction, recipients space-separated.
	code, stdout, _ = runMxguard("log", "search", "-config", cfg, "-format", "csv")
	rows, err := csv.NewReader(strings.NewReader(stdout)).ReadAll()
	if code != 0 || err != nil {
		t.Fatalf("exit %d, %v:\n%s", code, err, stdout)
	}
	if len(rows) != 1+len(logOrder) || !slices.Equal(rows[0], csvColumns) {
		t.Fatalf("csv: %d rows, header %q", len(rows), rows[0])
	}
	col := func(name string) int { return slices.Index(csvColumns, name) }
	reject := rows[1+slices.Index(logOrder, "reject")]
	if reject[col("recipients")] != "dave@acme.test erin@acme.test" || reject[col("reply")] != "550 5.7.23 SPFFail: SPF fail for sender.test" {
		t.Errorf("csv reject row = %q", reject)
	}
}

// TestLogSearchSafe: text from the sender cannot reach the terminal as
// control characters, nor break a table line.
func TestLogSearchSafe(t *testing.T) {
	_, cfg, db := logFixture(t)
	st, err := logstore.Open(logstore.Options{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	evil := &logstore.Record{StartedAt: time.Now(), MailFrom: "x@evil.test", Subject: "a\x1b[31mred\r\nInjected: 1\tz", Action: "accept",
		Evidence: []logstore.Evidence{{Check: "client"}}}
	if err := st.Save(t.Context(), evil); err != nil {
		t.Fatal(err)
	}
	st.Close()
	for _, format := range []string{"table", "csv", "json"} {
		code, stdout, _ := runMxguard("log", "search", "-config", cfg, "-format", format, "-from", "x@evil.test")
		if code != 0 || strings.ContainsAny(stdout, "\x1b\r\t") || strings.Count(stdout, "\n") > 2 {
			t.Errorf("%s: exit %d, %q", format, code, stdout)
		}
	}
	code, stdout, _ := runMxguard("log", "show", "-config", cfg, strconv.FormatInt(evil.ID, 10))
	if code != 0 || strings.ContainsAny(stdout, "\x1b\r\t") || strings.Contains(stdout, "\nInjected") {
		t.Errorf("show: exit %d, %q", code, stdout)
	}
}

func TestLogShow(t *testing.T) {
	recs, cfg, _ := logFixture(t)
	id := func(name string) string { return strconv.FormatInt(recs[name].ID, 10) }
	tests := []struct {
		name, key string
		want      []string
	}{
		{"accept", "4XyZ1A2B4D", nil}, // by queue id: the tagged one, checked below
		{"accept", id("accept"), []string{
			"Transaction " + id("accept") + ", queue id 4XyZ1A2B3C",
			"Accepted at end of message: mxguard passed it to the MTA for delivery (queue\nid 4XyZ1A2B3C).",
			"Client       192.0.2.25 (mail.sender.test), HELO mail.sender.test, MTA service smtpd",
			"Login        none", "Sender       <news@sender.test>", "Direction    inbound, organisation example",
			"SPF          pass for sender.test", "Reply        none: mxguard let the MTA answer",
			"bob@example.com  example       accept", "spf     pass       sender.test  420µs     matched ip",
			"Authentication-Results: mx.example.com; spf=pass",
		}},
		{"tag", "4XyZ1A2B4D", []string{
			"Accepted and tagged at end of message: SPF softfail for soft.test (the policy\nof organisation example for SPF softfail is tag).",
			"The message carries X-MXGuard-Verdict: tag; reasons=SPFSoftFail, which mail\nclients can filter on.",
			"Subject      Sommerangebote für Sie", "X-MXGuard-Verdict: tag; reasons=SPFSoftFail",
		}},
		{"quarantine", id("quarantine"), []string{
			"Quarantined at end of message: SPF fail for sender.test (the policy of\norganisation example for SPF fail is quarantine).",
			"mxguard\nquarantine release 4XyZ1A2B5E delivers it.",
			"X-MXGuard-Verdict: quarantine; reasons=SPFFail",
		}},
		{"reject", id("reject"), []string{
			"Rejected at RCPT TO: SPF fail for sender.test (the policy of organisation acme\nfor SPF fail is reject).",
			"No queue id: the MTA had assigned none",
			"Reply        550 5.7.23 SPFFail: SPF fail for sender.test",
			"dave@acme.test  acme          reject  SPFFail  550 5.7.23 SPFFail: SPF fail for sender.test",
			"erin@acme.test", "Headers added\n  none",
		}},
		{"login", id("login"), []string{
			"Rejected at MAIL FROM: the login alice may not use the envelope sender\n<ceo@example.com> (relay.sender_login).",
			"Login        alice (PLAIN)", "sender_login  fail",
			"Reply        553 5.7.1 SenderLoginMismatch: user alice may not send as <ceo@example.com>",
		}},
		{"partial", id("partial"), []string{
			"Accepted at end of message",
			"1 of 2 recipients was refused at RCPT TO: <someone@elsewhere.test>\n(RelayDenied); the verdict above is for the others.",
			"554 5.7.1 RelayDenied: relay access denied for <someone@elsewhere.test>",
		}},
		{"aborted", id("aborted"), []string{
			"Not finished: the transaction ended before end of message, so mxguard gave no\nverdict on the message.",
			"the MTA's log (queue id 4XyZ1A2B7A) tells which.", "Verdict      aborted, reason Aborted", "Reply        none\n",
		}},
		{"idle", id("idle"), []string{
			"No mail: the client 198.51.100.77 connected and left without starting a\ntransaction (no MAIL FROM).",
			"Verdict      aborted, reason NoTransaction",
		}},
		{"blocked", id("blocked"), []string{
			"Rejected at connect: the client 198.51.100.66 is in relay.block_networks.",
			"Reply        554 5.7.1 BlockedNetwork",
		}},
	}
	for _, tt := range tests {
		if tt.want == nil {
			continue
		}
		code, stdout, stderr := runMxguard("log", "show", "-config", cfg, tt.key)
		if code != 0 {
			t.Errorf("show %s: exit %d: %s", tt.name, code, stderr)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(stdout, w) {
				t.Errorf("show %s lacks %q:\n%s", tt.name, w, stdout)
			}
		}
		if tt.name == "idle" || tt.name == "blocked" {
			if strings.Contains(stdout, "Sender") || strings.Contains(stdout, "Login") {
				t.Errorf("show %s: a connection without MAIL FROM has no sender or login:\n%s", tt.name, stdout)
			}
		}
	}

	// A reused queue id shows every transaction, newest first.
	code, stdout, _ := runMxguard("log", "show", "-config", cfg, "4XyZ1A2B3C")
	first, second := strings.Index(stdout, "Transaction "+id("reused")), strings.Index(stdout, "Transaction "+id("accept"))
	if code != 0 || !strings.Contains(stdout, "Queue id 4XyZ1A2B3C was used by 2 transactions") || first < 0 || second < first {
		t.Errorf("show of a reused queue id: exit %d\n%s", code, stdout)
	}
}

// TestLogShowNumeric: an all-digit key is an id first, and may be a queue
// id too (Postfix's short queue ids are hex).
func TestLogShowNumeric(t *testing.T) {
	_, cfg, db := logFixture(t)
	st, err := logstore.Open(logstore.Options{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	digits := &logstore.Record{StartedAt: time.Now(), QueueID: "1", MailFrom: "x@sender.test", Action: "accept",
		Evidence: []logstore.Evidence{{Check: "client"}}}
	onlyQueue := &logstore.Record{StartedAt: time.Now(), QueueID: "98765", MailFrom: "y@sender.test", Action: "accept",
		Evidence: []logstore.Evidence{{Check: "client"}}}
	for _, r := range []*logstore.Record{digits, onlyQueue} {
		if err := st.Save(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	code, stdout, _ := runMxguard("log", "show", "-config", cfg, "1")
	if code != 0 || !strings.HasPrefix(stdout, "Transaction 1,") || !strings.Contains(stdout, "1 is also the queue id of 1 transaction(s): mxguard log search -queue-id 1") {
		t.Errorf("show 1: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = runMxguard("log", "show", "-config", cfg, "98765")
	if code != 0 || !strings.Contains(stdout, "queue id 98765") || !strings.Contains(stdout, "y@sender.test") {
		t.Errorf("show 98765: exit %d\n%s", code, stdout)
	}
}

// TestLogShowReleased: what mxguard quarantine did to a message later is
// part of its story.
func TestLogShowReleased(t *testing.T) {
	recs, cfg, db := logFixture(t)
	st, err := logstore.Open(logstore.Options{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	q := recs["quarantine"]
	q.Evidence = append(q.Evidence, logstore.Evidence{Check: "quarantine", Result: "released", Detail: "by root at 2025-06-01T15:00:00Z"})
	if err := st.Save(t.Context(), q); err != nil {
		t.Fatal(err)
	}
	st.Close()
	code, stdout, _ := runMxguard("log", "show", "-config", cfg, "4XyZ1A2B5E")
	if code != 0 || !strings.Contains(stdout, "It was then released from the hold queue by root at 2025-06-01T15:00:00Z.") ||
		strings.Contains(stdout, "quarantine release 4XyZ1A2B5E delivers it") {
		t.Errorf("exit %d\n%s", code, stdout)
	}
}

func TestLogStats(t *testing.T) {
	_, cfg, _ := logFixture(t)
	code, stdout, stderr := runMxguard("log", "stats", "-config", cfg, "-by", "hour")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"10 transactions from ",
		"ACTION      COUNT  SHARE\naccept          3  30.0%\nreject          3  30.0%\naborted         2  20.0%\nquarantine      1  10.0%\ntag             1  10.0%\n",
		"reject      SPFFail                  1  10.0%",
		"reject      SenderLoginMismatch      1  10.0%",
		"reject      BlockedNetwork           1  10.0%",
		"TOP REJECTED SENDERS  COUNT\nbilling@sender.test       1\nceo@example.com           1\n",
		"TOP REJECTED NETWORKS  COUNT\n203.0.113.0/24             2\n198.51.100.0/24            1\n",
		"HOUR (UTC)        ACCEPT  TAG  QUARANTINE  REJECT  ABORTED  TOTAL\n",
		logBase.Format("2006-01-02 15:00") + "       2    1           1       3        2      9\n",
		logBase.Add(time.Hour).Format("2006-01-02 15:00") + "       1    0           0       0        0      1\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stats lack %q:\n%s", want, stdout)
		}
	}

	code, stdout, _ = runMxguard("log", "stats", "-config", cfg, "-org", "acme", "-format", "json", "-since", "1d")
	var j struct {
		Total   int64
		Actions []struct {
			Key   string
			Count int64
		}
		TopSenders []struct{ Key string } `json:"top_rejected_senders"`
	}
	if err := json.Unmarshal([]byte(stdout), &j); code != 0 || err != nil {
		t.Fatalf("exit %d, %v\n%s", code, err, stdout)
	}
	if j.Total != 1 || len(j.Actions) != 1 || j.Actions[0].Key != "reject" || len(j.TopSenders) != 1 {
		t.Errorf("acme stats = %+v", j)
	}

	code, stdout, _ = runMxguard("log", "stats", "-config", cfg, "-since", "1m")
	if code != 0 || stdout != "0 transactions from "+stdout[len("0 transactions from "):] || strings.Count(stdout, "\n") != 1 {
		t.Errorf("stats of an empty period: exit %d\n%s", code, stdout)
	}
}

func TestLogSearchFollow(t *testing.T) {
	old := followEvery
	followEvery = 50 * time.Millisecond
	t.Cleanup(func() { followEvery = old })

	for _, format := range []string{"table", "json"} {
		t.Run(format, func(t *testing.T) {
			_, cfg, db := logFixture(t)
			if format == "table" {
				// Nothing matches yet: the header shows it is running.
				ctx, cancel := context.WithCancel(t.Context())
				var stdout syncbuf.Buffer
				done := make(chan int)
				go func() {
					done <- logSearch(ctx, []string{"-config", cfg, "-follow", "-from", "nobody@x.test"}, &stdout, io.Discard)
				}()
				for deadline := time.Now().Add(5 * time.Second); !strings.HasPrefix(stdout.String(), "     ID  TIME (UTC)"); {
					if time.Now().After(deadline) {
						t.Fatalf("no header within 5s: %q", stdout.String())
					}
					time.Sleep(10 * time.Millisecond)
				}
				cancel()
				<-done
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var stdout, stderr syncbuf.Buffer
			exit := make(chan int, 1)
			go func() {
				exit <- logSearch(ctx, []string{"-config", cfg, "-follow", "-from", "@sender.test", "-limit", "1", "-format", format}, &stdout, &stderr)
			}()
			waitFor := func(what string) {
				t.Helper()
				deadline := time.Now().Add(5 * time.Second)
				for !strings.Contains(stdout.String(), what) {
					if time.Now().After(deadline) {
						t.Fatalf("%q not printed within 5s:\n%s%s", what, stdout.String(), stderr.String())
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			waitFor("July newsletter") // the newest match, printed at once

			// Written by the daemon meanwhile: printed as it lands, and
			// again when it changes.
			st, err := logstore.Open(logstore.Options{Path: db})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			now := time.Now()
			r := &logstore.Record{StartedAt: now, EndedAt: now, ClientIP: "192.0.2.25", MailFrom: "late@sender.test", Action: "reject", Reason: "RelayDenied",
				Evidence:   []logstore.Evidence{{Check: "client", Result: "untrusted"}},
				Recipients: []logstore.Recipient{{Address: "x@elsewhere.test", Action: "reject", Reason: "RelayDenied"}}}
			if err := st.Save(ctx, r); err != nil {
				t.Fatal(err)
			}
			other := &logstore.Record{StartedAt: now, EndedAt: now, MailFrom: "not@other.test", Action: "accept"}
			if err := st.Save(ctx, other); err != nil {
				t.Fatal(err)
			}
			waitFor("late@sender.test")
			r.EndedAt, r.QueueID, r.Action, r.Reason, r.Subject = now.Add(time.Second), "4XyZ9LATE", "accept", "", "late news"
			r.Recipients = append(r.Recipients, logstore.Recipient{Address: "bob@example.com", Action: "accept"})
			if err := st.Save(ctx, r); err != nil {
				t.Fatal(err)
			}
			waitFor("4XyZ9LATE")

			cancel()
			select {
			case code := <-exit:
				if code != 0 {
					t.Errorf("exit %d after the context ended: %s", code, stderr.String())
				}
			case <-time.After(5 * time.Second):
				t.Fatal("still following 5s after the context ended")
			}
			out := stdout.String()
			if strings.Contains(out, "not@other.test") {
				t.Errorf("printed a row the filter excludes:\n%s", out)
			}
			if n := strings.Count(out, "late@sender.test"); n != 2 {
				t.Errorf("the changed row printed %d times; want 2 (written, then changed):\n%s", n, out)
			}
			if format == "json" {
				for line := range strings.Lines(out) {
					if !json.Valid([]byte(line)) {
						t.Errorf("not JSON: %q", line)
					}
				}
			}
		})
	}
}

func TestLogErrors(t *testing.T) {
	_, cfg, db := logFixture(t)
	missing := filepath.Join(t.TempDir(), "missing.db")
	tests := []cliCase{
		{[]string{"log"}, 2, nil, []string{"usage: mxguard log", "search", "show", "stats"}},
		{[]string{"log", "help"}, 0, []string{"usage: mxguard log", "search ", "show ", "stats "}, nil},
		{[]string{"log", "frobnicate"}, 2, nil, []string{`mxguard log: unknown command "frobnicate"`}},
		{[]string{"log", "search", "-h"}, 0, []string{"usage: mxguard log search", "-follow"}, nil},
		{[]string{"log", "search", "-config", cfg, "-frob"}, 2, nil, []string{"mxguard log search: flag provided but not defined: -frob\n(mxguard log search -h lists the flags)\n"}},
		{[]string{"log", "search", "-config", cfg, "-since", "yesterday"}, 2, nil, []string{`invalid value "yesterday" for flag -since: want a time (2025-06-01, 2025-06-01T14:00:00Z) or how long ago (30m, 2h, 90d)`}},
		{[]string{"log", "search", "-config", cfg, "-since", "-2h"}, 2, nil, []string{`invalid value "-2h" for flag -since`}},
		{[]string{"log", "search", "-config", cfg, "-since", "1h", "-until", "2h"}, 2, nil, []string{"-since must be before -until"}},
		{[]string{"log", "search", "-config", cfg, "-action", "bounce"}, 2, nil, []string{`invalid value "bounce" for flag -action: want one of accept, tag, quarantine, tempfail, reject, discard, aborted`}},
		{[]string{"log", "search", "-config", cfg, "-client", "192.0.2"}, 2, nil, []string{`invalid value "192.0.2" for flag -client: want an IP address`}},
		{[]string{"log", "search", "-config", cfg, "-from", "example.com"}, 2, nil, []string{`invalid value "example.com" for flag -from: give an address (alice@example.com) or a domain (@example.com)`}},
		{[]string{"log", "search", "-config", cfg, "-to", "<>"}, 2, nil, []string{`"<>" is the null sender`}},
		{[]string{"log", "search", "-config", cfg, "-format", "xml"}, 2, nil, []string{`invalid value "xml" for flag -format: want table, json or csv`}},
		{[]string{"log", "search", "-config", cfg, "-limit", "0"}, 2, nil, []string{`invalid value "0" for flag -limit: want a whole number above 0`}},
		{[]string{"log", "search", "-config", cfg, "bob@example.com"}, 2, nil, []string{`unexpected argument "bob@example.com"`}},
		{[]string{"log", "search", "-config", cfg, "-db", db}, 2, nil, []string{"give -config or -db, not both"}},
		{[]string{"log", "search", "-db", missing}, 1, nil, []string{"transaction log: stat " + missing + ": no such file or directory"}},
		{[]string{"log", "search", "-config", filepath.Join(t.TempDir(), "none.toml")}, 1, nil, []string{"none.toml"}},
		{[]string{"log", "search", "-config", cfg, "-from", "nobody@example.com"}, 0, nil, []string{"no transaction matches"}},
		{[]string{"log", "show", "-config", cfg}, 2, nil, []string{"which transaction? Give its ID or QUEUE-ID"}},
		{[]string{"log", "show", "-config", cfg, "1", "2"}, 2, nil, []string{`unexpected argument "2"`}},
		{[]string{"log", "show", "-config", cfg, "NOSUCHID"}, 1, nil, []string{`no transaction with id or queue id "NOSUCHID" in ` + db}},
		{[]string{"log", "show", "-config", cfg, "999999"}, 1, nil, []string{`no transaction with id or queue id "999999"`}},
		{[]string{"log", "show", "-db", db, "4XyZ1A2B5E"}, 0, []string{"Quarantined"}, nil},
		{[]string{"log", "stats", "-config", cfg, "-by", "week"}, 2, nil, []string{`invalid value "week" for flag -by: want hour or day`}},
		{[]string{"log", "stats", "-config", cfg, "-top", "-1"}, 2, nil, []string{`invalid value "-1" for flag -top: want a whole number above 0`}},
		{[]string{"log", "stats", "-config", cfg, "-since", "2025-06-02", "-until", "2025-06-01"}, 2, nil, []string{"-since must be before -until"}},
		{[]string{"log", "stats", "-config", cfg, "extra"}, 2, nil, []string{`unexpected argument "extra"`}},
	}
	checkCLI(t, tests)
}

func TestParseWhen(t *testing.T) {
	now := time.Date(2025, 6, 10, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2025-06-01":                time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC),
		"2025-06-01T14:30":          time.Date(2025, 6, 1, 14, 30, 0, 0, time.UTC),
		"2025-06-01 14:30:05":       time.Date(2025, 6, 1, 14, 30, 5, 0, time.UTC),
		"2025-06-01T14:30:05+02:00": time.Date(2025, 6, 1, 12, 30, 5, 0, time.UTC),
		"2025-06-01T14:30:05.5Z":    time.Date(2025, 6, 1, 14, 30, 5, 5e8, time.UTC),
		"90d":                       now.Add(-90 * 24 * time.Hour),
		"2h":                        now.Add(-2 * time.Hour),
		"1h30m":                     now.Add(-90 * time.Minute),
		"0s":                        now,
	} {
		got, err := parseWhen(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "yesterday", "-1h", "1w", "2025-13-01", "d"} {
		if _, err := parseWhen(bad, now); err == nil {
			t.Errorf("parseWhen(%q): no error", bad)
		}
	}
}
