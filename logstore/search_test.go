package logstore

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// searchBase is when the fixture's transactions start.
var searchBase = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// searchFixture saves transactions of every kind, one a minute from
// searchBase, and returns them by name.
func searchFixture(t *testing.T, s *Store) map[string]*Record {
	t.Helper()
	at := func(min int) time.Time { return searchBase.Add(time.Duration(min) * time.Minute) }
	ev := func(client string) []Evidence {
		return []Evidence{{Check: "client", Result: "untrusted", Detail: client}}
	}
	recs := []struct {
		name string
		r    *Record
	}{
		{"accept", &Record{StartedAt: at(0), QueueID: "Q1", ClientIP: "192.0.2.10", MailFrom: "friend@sender.test",
			Subject: "Quarterly report", Organization: "example", Action: "accept", Evidence: ev("192.0.2.10"),
			Recipients: []Recipient{{Address: "bob@example.com", Organization: "example", Action: "accept"}}}},
		{"tag", &Record{StartedAt: at(1), QueueID: "Q2", ClientIP: "192.0.2.200", MailFrom: "Offers@Soft.TEST",
			Subject: "=?UTF-8?Q?Sommerangebote_f=C3=BCr_Sie?=", Organization: "example", Action: "tag", Reason: "SPFSoftFail",
			Evidence: ev("192.0.2.200"), Recipients: []Recipient{{Address: "Bob@Example.com", Organization: "example", Action: "tag", Reason: "SPFSoftFail"}}}},
		{"quarantine", &Record{StartedAt: at(2), QueueID: "Q3", ClientIP: "198.51.100.7", MailFrom: "billing@sender.test",
			Subject: "Invoice 100% overdue", Organization: "example", Action: "quarantine", Reason: "SPFFail", Evidence: ev("198.51.100.7"),
			Recipients: []Recipient{{Address: "carol@example.com", Organization: "example", Action: "quarantine", Reason: "SPFFail"}}}},
		{"reject", &Record{StartedAt: at(3), ClientIP: "203.0.113.9", MailFrom: "Billing@Sender.test", Organization: "acme",
			Action: "reject", Reason: "SPFFail", Reply: "550 5.7.23 SPFFail: SPF fail for sender.test", Evidence: ev("203.0.113.9"),
			Recipients: []Recipient{
				{Address: "dave@acme.test", Organization: "acme", Action: "reject", Reason: "SPFFail"},
				{Address: "erin@acme.test", Organization: "acme", Action: "reject", Reason: "SPFFail"},
			}}},
		{"login", &Record{StartedAt: at(4), ClientIP: "2001:db8::25", AuthUser: "alice", MailFrom: "ceo@example.com",
			Organization: "example", Action: "reject", Reason: "SenderLoginMismatch", Evidence: ev("2001:db8::25")}},
		{"null", &Record{StartedAt: at(5), QueueID: "Q6", ClientIP: "192.0.2.11", Subject: "Undelivered Mail",
			Organization: "example", Action: "accept", Evidence: ev("192.0.2.11"),
			Recipients: []Recipient{{Address: "bob@example.com", Organization: "example", Action: "accept"}}}},
		{"local", &Record{StartedAt: at(6), QueueID: "Q7", MailFrom: "app@example.com", Organization: "example",
			Direction: "outbound", Action: "accept", Evidence: []Evidence{{Check: "client", Result: "trusted"}},
			Recipients: []Recipient{{Address: "partner@elsewhere.test", Action: "accept"}}}},
		{"conn", &Record{StartedAt: at(7), ClientIP: "198.51.100.99", Action: "aborted", Reason: "NoTransaction"}},
		{"reused", &Record{StartedAt: at(8), QueueID: "Q1", ClientIP: "192.0.2.10", MailFrom: "other@sender.test",
			Organization: "example", Action: "accept", Evidence: ev("192.0.2.10"),
			Recipients: []Recipient{{Address: "zed@example.com", Organization: "example", Action: "accept"}}}},
	}
	byName := map[string]*Record{}
	for _, r := range recs {
		if err := s.Save(t.Context(), r.r); err != nil {
			t.Fatal(err)
		}
		byName[r.name] = r.r
	}
	return byName
}

func TestSearch(t *testing.T) {
	s := openTest(t, Options{})
	recs := searchFixture(t, s)
	names := map[int64]string{}
	for name, r := range recs {
		names[r.ID] = name
	}
	at := func(min int) time.Time { return searchBase.Add(time.Duration(min) * time.Minute) }
	prefix := netip.MustParsePrefix
	everything := []string{"reused", "conn", "local", "null", "login", "reject", "quarantine", "tag", "accept"}

	tests := []struct {
		name string
		f    Filter
		want []string // newest first
	}{
		{"everything", Filter{}, everything},
		{"since", Filter{Since: at(6)}, []string{"reused", "conn", "local"}},
		{"until", Filter{Until: at(2)}, []string{"tag", "accept"}},
		{"since and until", Filter{Since: at(2), Until: at(4)}, []string{"reject", "quarantine"}},
		{"limit", Filter{Limit: 2}, []string{"reused", "conn"}},

		{"from", Filter{From: "billing@sender.test"}, []string{"reject", "quarantine"}},
		{"from, other case", Filter{From: "BILLING@SENDER.TEST"}, []string{"reject", "quarantine"}},
		{"from, stored in mixed case", Filter{From: "offers@soft.test"}, []string{"tag"}},
		{"from nobody", Filter{From: "nobody@sender.test"}, nil},
		{"from domain", Filter{From: "@sender.test"}, []string{"reused", "reject", "quarantine", "accept"}},
		{"from domain, other case", Filter{From: "@SENDER.Test"}, []string{"reused", "reject", "quarantine", "accept"}},
		{"from domain is exact", Filter{From: "@test"}, nil},
		{"from domain: _ is no wildcard", Filter{From: "@sender_test"}, nil},
		{"null sender, not connections", Filter{From: "<>"}, []string{"null"}},

		{"to", Filter{To: "bob@example.com"}, []string{"null", "tag", "accept"}},
		{"to, other case", Filter{To: "BOB@example.COM"}, []string{"null", "tag", "accept"}},
		{"to domain", Filter{To: "@acme.test"}, []string{"reject"}},
		{"to domain, other case", Filter{To: "@ACME.test"}, []string{"reject"}},
		{"to nobody", Filter{To: "nobody@example.com"}, nil},

		{"client", Filter{Client: prefix("192.0.2.10/32")}, []string{"reused", "accept"}},
		{"client, mapped", Filter{Client: prefix("::ffff:192.0.2.10/128")}, []string{"reused", "accept"}},
		{"client /24", Filter{Client: prefix("192.0.2.0/24")}, []string{"reused", "null", "tag", "accept"}},
		{"client /25", Filter{Client: prefix("192.0.2.0/25")}, []string{"reused", "null", "accept"}},
		{"client /25 upper", Filter{Client: prefix("192.0.2.128/25")}, []string{"tag"}},
		{"client /24, limit in Go", Filter{Client: prefix("192.0.2.0/24"), Limit: 2}, []string{"reused", "null"}},
		{"client IPv6", Filter{Client: prefix("2001:db8::/32")}, []string{"login"}},
		{"client IPv4 /0", Filter{Client: prefix("0.0.0.0/0")}, []string{"reused", "conn", "null", "reject", "quarantine", "tag", "accept"}},

		{"action", Filter{Action: "reject"}, []string{"login", "reject"}},
		{"organization", Filter{Organization: "acme"}, []string{"reject"}},
		{"queue id", Filter{QueueID: "Q1"}, []string{"reused", "accept"}},
		{"queue id is exact", Filter{QueueID: "q1"}, nil},
		{"auth user", Filter{AuthUser: "ALICE"}, []string{"login"}},

		{"subject", Filter{Subject: "report"}, []string{"accept"}},
		{"subject, other case", Filter{Subject: "QUARTERLY REP"}, []string{"accept"}},
		{"subject, encoded", Filter{Subject: "sommerangebote"}, []string{"tag"}},
		{"subject, non-ASCII", Filter{Subject: "FÜR SIE"}, []string{"tag"}},
		{"subject: % is no wildcard", Filter{Subject: "100%"}, []string{"quarantine"}},
		{"subject: % is no wildcard either", Filter{Subject: "1%0"}, nil},

		{"combined", Filter{From: "@sender.test", Action: "reject"}, []string{"reject"}},
		{"combined with Go checks", Filter{Client: prefix("192.0.2.0/24"), Subject: "undelivered"}, []string{"null"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Search(t.Context(), tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var gotNames []string
			for _, r := range got {
				gotNames = append(gotNames, names[r.ID])
			}
			if !reflect.DeepEqual(gotNames, tt.want) {
				t.Errorf("Search(%+v) = %q; want %q", tt.f, gotNames, tt.want)
			}
		})
	}

	// Records come back whole, recipients included.
	got, err := s.Search(t.Context(), Filter{Organization: "acme"})
	if err != nil || len(got) != 1 {
		t.Fatalf("Search = %v, %v", got, err)
	}
	checkRecord(t, &got[0], stored(recs["reject"]))

	for _, f := range []Filter{{Limit: -1}, {From: "@"}, {To: "@"}, {To: "<>"}} {
		if _, err := s.Search(t.Context(), f); err == nil {
			t.Errorf("Search(%+v): no error", f)
		}
	}
}

// TestSearchPlans checks with EXPLAIN QUERY PLAN that each filter that
// should use an index does: a SEARCH of transactions, not a SCAN.
func TestSearchPlans(t *testing.T) {
	s := openTest(t, Options{})
	searchFixture(t, s)
	now := time.Now()
	tests := []struct {
		name  string
		f     Filter
		index string // in the plan's first line
	}{
		{"since", Filter{Since: now}, "transactions_started_at"},
		{"since and until", Filter{Since: now, Until: now}, "transactions_started_at"},
		{"action", Filter{Action: "reject"}, "transactions_action"},
		{"organization", Filter{Organization: "acme"}, "transactions_organization"},
		{"queue id", Filter{QueueID: "Q1"}, "transactions_queue_id"},
		{"from", Filter{From: "billing@sender.test"}, "transactions_mail_from"},
		{"null sender", Filter{From: "<>"}, "transactions_mail_from"},
		{"client", Filter{Client: netip.MustParsePrefix("192.0.2.10/32")}, "transactions_client_ip"},
		{"client network", Filter{Client: netip.MustParsePrefix("192.0.2.0/24")}, "transactions_client_ip"},
		{"client IPv6 network", Filter{Client: netip.MustParsePrefix("2001:db8::/32")}, "transactions_client_ip"},
		{"to", Filter{To: "bob@example.com"}, "PRIMARY KEY"},
		{"domain since", Filter{From: "@sender.test", Since: now}, "transactions_started_at"},
		{"subject since", Filter{Subject: "x", Since: now}, "transactions_started_at"},
	}
	// What Follower.Next reads each second: two index lookups, not a scan.
	plan := queryPlan(t, s.rdb, stampsSQL, formatTime(now), 1)
	if !slices.Contains(plan, "MULTI-INDEX OR") || slices.ContainsFunc(plan, func(l string) bool { return strings.HasPrefix(l, "SCAN") }) {
		t.Errorf("plan of stampsSQL: %q; want a MULTI-INDEX OR", plan)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := buildQuery(t.Context(), s.rdb, tt.f)
			if err != nil || q.none {
				t.Fatalf("buildQuery: %+v, %v", q, err)
			}
			q.order = `t.started_at DESC, t.id DESC`
			args := q.args
			if !q.filtersInGo() {
				args = append(args, 50)
			}
			plan := queryPlan(t, s.rdb, q.sql(), args...)
			first := plan[0]
			if !strings.HasPrefix(first, "SEARCH t ") || !strings.Contains(first, tt.index) {
				t.Errorf("plan for %+v:\n%v\nwant a SEARCH of t using %s", tt.f, plan, tt.index)
			}
			if tt.index == "PRIMARY KEY" && !slices.ContainsFunc(plan, func(line string) bool {
				return strings.Contains(line, "SEARCH r USING INDEX recipients_address")
			}) {
				t.Errorf("plan for %+v:\n%v\nwant recipients_address", tt.f, plan)
			}
		})
	}
}

// queryPlan returns the detail lines of EXPLAIN QUERY PLAN for q.
func queryPlan(t *testing.T, db *sql.DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(`EXPLAIN QUERY PLAN `+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var (
			id, parent, unused int
			detail             string
		)
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return plan
}

func TestAfter(t *testing.T) {
	s := openTest(t, Options{})
	recs := searchFixture(t, s)
	got, err := s.After(t.Context(), recs["reject"].ID, Filter{Action: "accept", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != recs["null"].ID || got[1].ID != recs["local"].ID {
		t.Fatalf("After = %+v; want null, local", got)
	}
	got, err = s.After(t.Context(), got[1].ID, Filter{Action: "accept", Limit: 2})
	if err != nil || len(got) != 1 || got[0].ID != recs["reused"].ID || len(got[0].Recipients) != 1 {
		t.Fatalf("After = %+v, %v; want reused", got, err)
	}
	if got, err := s.After(t.Context(), recs["reused"].ID, Filter{}); err != nil || len(got) != 0 {
		t.Fatalf("After the last = %+v, %v; want none", got, err)
	}
}

func TestFollow(t *testing.T) {
	s := openTest(t, Options{})
	ctx := t.Context()
	save := func(r *Record) {
		t.Helper()
		if err := s.Save(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	next := func(fl *Follower, want ...*Record) {
		t.Helper()
		got, err := fl.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var gotIDs, wantIDs []int64
		for _, r := range got {
			gotIDs = append(gotIDs, r.ID)
		}
		for _, r := range want {
			wantIDs = append(wantIDs, r.ID)
		}
		if !slices.Equal(gotIDs, wantIDs) {
			t.Fatalf("Next = ids %v; want %v", gotIDs, wantIDs)
		}
		for i, r := range got {
			checkRecord(t, &r, stored(want[i]))
		}
	}
	now := time.Now().UTC()
	// In progress as Follow starts: written at a refused RCPT TO.
	inProgress := &Record{StartedAt: now, EndedAt: now, MailFrom: "a@sender.test", Action: "reject", Reason: "RelayDenied",
		Recipients: []Recipient{{Address: "x@elsewhere.test", Action: "reject", Reason: "RelayDenied"}}}
	save(inProgress)
	done := &Record{StartedAt: now, EndedAt: now, MailFrom: "b@sender.test", Action: "accept"}
	save(done)

	fl, err := s.Follow(ctx, Filter{From: "@sender.test"})
	if err != nil {
		t.Fatal(err)
	}
	next(fl) // what was there is not reported

	fresh := &Record{StartedAt: now, EndedAt: now, MailFrom: "c@sender.test", Action: "accept"}
	save(fresh)
	other := &Record{StartedAt: now, EndedAt: now, MailFrom: "d@other.test", Action: "accept"}
	save(other)
	next(fl, fresh) // new rows that match

	// The transaction in progress ends: reported with its final state.
	inProgress.EndedAt = now.Add(2 * time.Second)
	inProgress.Action, inProgress.Reason, inProgress.QueueID = "accept", "", "Q9"
	inProgress.Recipients = append(inProgress.Recipients, Recipient{Address: "bob@example.com", Action: "accept"})
	save(inProgress)
	// A save that changes nothing the reader sees is not reported.
	save(done)
	next(fl, inProgress)
	next(fl)

	// A row that comes to match is reported then.
	other.MailFrom, other.EndedAt = "d@sender.test", now.Add(time.Second)
	save(other)
	next(fl, other)

	// A row started long ago, written only now (a slow transaction), is
	// new all the same.
	old := &Record{StartedAt: now.Add(-time.Hour), EndedAt: now, MailFrom: "e@sender.test", Action: "accept"}
	save(old)
	next(fl, old)

	// Each Next reports at most the limit; the rest come next time.
	fl, err = s.Follow(ctx, Filter{From: "@sender.test", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	var batch []*Record
	for i := range 5 {
		r := &Record{StartedAt: now, EndedAt: now, MailFrom: fmt.Sprintf("f%d@sender.test", i), Action: "accept"}
		save(r)
		batch = append(batch, r)
		if i == 1 {
			save(&Record{StartedAt: now, MailFrom: "g@other.test", Action: "accept"}) // between, not matching
		}
	}
	next(fl, batch[0], batch[1])
	next(fl, batch[2], batch[3])
	next(fl, batch[4])
	next(fl)

	// Rows that started before the window and wait beyond the limit are
	// not lost.
	fl, err = s.Follow(ctx, Filter{From: "@sender.test", Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	old1 := &Record{StartedAt: now.Add(-time.Hour), EndedAt: now, MailFrom: "h1@sender.test", Action: "accept"}
	old2 := &Record{StartedAt: now.Add(-time.Hour), EndedAt: now, MailFrom: "h2@sender.test", Action: "accept"}
	save(old1)
	save(old2)
	next(fl, old1)
	next(fl, old2)
	next(fl)

	// A filter that matches nothing yet: the address lookup is redone each
	// time, so a first row from a new sender is found.
	fl, err = s.Follow(ctx, Filter{From: "new@sender.test"})
	if err != nil {
		t.Fatal(err)
	}
	next(fl)
	first := &Record{StartedAt: now, EndedAt: now, MailFrom: "New@Sender.test", Action: "accept"}
	save(first)
	next(fl, first)
}

func TestStats(t *testing.T) {
	s := openTest(t, Options{})
	searchFixture(t, s)
	// Two more rejections, by the same sender as "reject" in another case,
	// and one from a network already counted.
	for i, ip := range []string{"203.0.113.200", "2001:db8::99"} {
		r := &Record{StartedAt: searchBase.Add(time.Duration(70+i) * time.Minute), ClientIP: ip, MailFrom: "BILLING@sender.test",
			Organization: "acme", Action: "reject", Reason: "SPFFail", Evidence: []Evidence{{Check: "client"}}}
		if err := s.Save(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.Stats(t.Context(), StatsFilter{Since: searchBase, Until: searchBase.Add(2 * time.Hour), By: "hour", Top: 2})
	if err != nil {
		t.Fatal(err)
	}
	if st.Total != 11 {
		t.Errorf("Total = %d; want 11", st.Total)
	}
	wantActions := []Count{{"accept", 4}, {"reject", 4}, {"aborted", 1}, {"quarantine", 1}, {"tag", 1}}
	if !reflect.DeepEqual(st.Actions, wantActions) {
		t.Errorf("Actions = %v; want %v", st.Actions, wantActions)
	}
	wantReasons := []ReasonCount{
		{"accept", "", 4}, {"reject", "SPFFail", 3}, {"aborted", "NoTransaction", 1}, {"quarantine", "SPFFail", 1},
		{"reject", "SenderLoginMismatch", 1}, {"tag", "SPFSoftFail", 1},
	}
	if !reflect.DeepEqual(st.Reasons, wantReasons) {
		t.Errorf("Reasons = %v; want %v", st.Reasons, wantReasons)
	}
	// Senders count without regard to case; Top 2 cuts the list.
	wantSenders := []Count{{"billing@sender.test", 3}, {"ceo@example.com", 1}}
	if !reflect.DeepEqual(st.TopSenders, wantSenders) {
		t.Errorf("TopSenders = %v; want %v", st.TopSenders, wantSenders)
	}
	wantNetworks := []Count{{"2001:db8::/48", 2}, {"203.0.113.0/24", 2}} // ties by name
	if !reflect.DeepEqual(st.TopNetworks, wantNetworks) {
		t.Errorf("TopNetworks = %v; want %v", st.TopNetworks, wantNetworks)
	}
	if len(st.Series) != 2 || !st.Series[0].Start.Equal(searchBase) || !st.Series[1].Start.Equal(searchBase.Add(time.Hour)) {
		t.Fatalf("Series = %+v; want the hours 12:00 and 13:00", st.Series)
	}
	if want := map[string]int64{"accept": 4, "tag": 1, "quarantine": 1, "reject": 2, "aborted": 1}; !reflect.DeepEqual(st.Series[0].Counts, want) {
		t.Errorf("12:00 = %v; want %v", st.Series[0].Counts, want)
	}
	if want := map[string]int64{"reject": 2}; !reflect.DeepEqual(st.Series[1].Counts, want) {
		t.Errorf("13:00 = %v; want %v", st.Series[1].Counts, want)
	}

	// One organisation, by day, from the first row on.
	st, err = s.Stats(t.Context(), StatsFilter{Organization: "acme", By: "day", Until: searchBase.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if st.Total != 3 || len(st.Series) != 2 || st.Series[0].Counts["reject"] != 3 || len(st.Series[1].Counts) != 0 {
		t.Errorf("acme by day = %+v", st)
	}
	if !st.Series[0].Start.Equal(searchBase.Truncate(24 * time.Hour)) {
		t.Errorf("first day starts %v", st.Series[0].Start)
	}
	// Nothing in the period: zeros, not an error.
	st, err = s.Stats(t.Context(), StatsFilter{Since: searchBase.Add(-time.Hour), Until: searchBase})
	if err != nil || st.Total != 0 || len(st.Actions) != 0 || len(st.TopNetworks) != 0 {
		t.Errorf("empty period = %+v, %v", st, err)
	}

	for _, f := range []StatsFilter{
		{By: "week"},
		{Top: -1},
		{Since: searchBase, Until: searchBase},
		{Since: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), By: "hour"}, // too many buckets
	} {
		if _, err := s.Stats(t.Context(), f); err == nil {
			t.Errorf("Stats(%+v): no error", f)
		}
	}
}

// TestTextPrefix checks that every address in a network starts with the
// network's text prefix and sorts before its end, so the range condition
// never loses a row.
func TestTextPrefix(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		var b [16]byte
		for i := range b {
			if rng.IntN(3) > 0 { // many zero bytes, for "::"
				b[i] = byte(rng.IntN(256))
			}
		}
		var a netip.Addr
		if rng.IntN(2) == 0 {
			a = netip.AddrFrom4([4]byte(b[:4]))
		} else {
			a = netip.AddrFrom16(b)
		}
		bits := rng.IntN(a.BitLen() + 1)
		p, _ := a.Prefix(bits)
		// Another address in p: a's network bits, random host bits.
		c := a.AsSlice()
		for i := bits; i < a.BitLen(); i++ {
			c[i/8] ^= byte(rng.IntN(2)) << (7 - i%8)
		}
		in, _ := netip.AddrFromSlice(c)
		if !p.Contains(in) {
			t.Fatalf("test bug: %v not in %v", in, p)
		}
		prefix := textPrefix(p)
		if prefix == "" {
			continue
		}
		if s := in.String(); !strings.HasPrefix(s, prefix) || s >= prefixEnd(prefix) {
			t.Fatalf("%v in %v: %q does not start with %q or is past %q", in, p, s, prefix, prefixEnd(prefix))
		}
	}
	for p, want := range map[string]string{
		"192.0.2.0/24": "192.0.2.", "10.0.0.0/8": "10.", "192.0.2.0/20": "192.0.", "0.0.0.0/0": "",
		"2001:db8::/32": "2001:db8:", "2001:db8::/40": "2001:db8:", "2001:0:5::/48": "2001:", "::/0": "",
	} {
		if got := textPrefix(netip.MustParsePrefix(p)); got != want {
			t.Errorf("textPrefix(%s) = %q; want %q", p, got, want)
		}
	}
}

func TestDecodeHeader(t *testing.T) {
	for in, want := range map[string]string{
		"Plain subject": "Plain subject",
		"=?UTF-8?Q?Sommerangebote_f=C3=BCr_Sie?=": "Sommerangebote für Sie",
		"=?ISO-8859-1?Q?Gr=FC=DFe?= aus Berlin":   "Grüße aus Berlin",
		"=?UTF-8?B?w5xiZXJ3ZWlzdW5n?=":            "Überweisung",
		"=?x-unknown?Q?abc?=":                     "=?x-unknown?Q?abc?=", // left as it is
		"price =? 10":                             "price =? 10",
	} {
		if got := DecodeHeader(in); got != want {
			t.Errorf("DecodeHeader(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestLongestASCIIRun(t *testing.T) {
	for in, want := range map[string]string{
		"report": "report", "für Sie": "r Sie", "Überweisung": "berweisung", "日本": "", "": "",
	} {
		if got := longestASCIIRun(in); got != want {
			t.Errorf("longestASCIIRun(%q) = %q; want %q", in, got, want)
		}
	}
}

// ExampleStore_Search finds the mail one sender sent to one organisation
// in the last day, as mxguard log search -from ... -org ... -since 24h does.
func ExampleStore_Search() {
	dir, _ := os.MkdirTemp("", "mxguard-example")
	defer os.RemoveAll(dir)
	st, _ := Open(Options{Path: filepath.Join(dir, "log.db")})
	defer st.Close()
	ctx := context.Background()
	st.Save(ctx, &Record{StartedAt: time.Now(), MailFrom: "Billing@Sender.test", Organization: "example",
		Action: "quarantine", Reason: "SPFFail", Recipients: []Recipient{{Address: "carol@example.com"}}})

	recs, err := st.Search(ctx, Filter{From: "billing@sender.test", Organization: "example", Since: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		panic(err)
	}
	for _, r := range recs {
		fmt.Println(r.MailFrom, r.Recipients[0].Address, r.Action, r.Reason)
	}
	// Output: Billing@Sender.test carol@example.com quarantine SPFFail
}

// TestSpellings checks the index walk against the obvious scan, on random
// addresses that share prefixes, case and lengths with the one sought.
func TestSpellings(t *testing.T) {
	db := memDB(t)
	exec(t, db, `CREATE TABLE a (v TEXT)`)
	exec(t, db, `CREATE INDEX a_v ON a (v)`)
	const next = `SELECT v FROM a WHERE v >= ? ORDER BY v LIMIT 1`

	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := "aAbB@.-_%zZ0~\x7f\xc3\xa9" // letters, punctuation, wildcards, bytes around the letters
	randomCase := func(s string) string {
		b := []byte(s)
		for i, c := range b {
			if rng.IntN(2) == 0 {
				b[i] = lowerASCII(c)
			} else if 'a' <= c && c <= 'z' {
				b[i] = c - 'a' + 'A'
			}
		}
		return string(b)
	}
	for round := range 200 {
		exec(t, db, `DELETE FROM a`)
		sought := "ab@b.a"
		if round%2 == 1 {
			sought = "Bob@Example.COM"
		}
		values := map[string]bool{}
		for range 300 {
			var v string
			switch rng.IntN(4) {
			case 0: // a spelling of the sought address
				v = randomCase(sought)
			case 1: // a prefix or an extension of one
				v = randomCase(sought)[:rng.IntN(len(sought))] + strings.Repeat("a", rng.IntN(2))
			case 2: // one byte changed
				b := []byte(randomCase(sought))
				b[rng.IntN(len(b))] = alphabet[rng.IntN(len(alphabet))]
				v = string(b)
			default:
				n := rng.IntN(8)
				b := make([]byte, n)
				for i := range b {
					b[i] = alphabet[rng.IntN(len(alphabet))]
				}
				v = string(b)
			}
			values[v] = true
			exec(t, db, `INSERT INTO a VALUES (?)`, v)
		}
		var want []string
		for v := range values {
			if strings.EqualFold(v, sought) && len(v) == len(sought) {
				want = append(want, v)
			}
		}
		slices.Sort(want)

		seeks := 0
		counted := countingQuerier{db, &seeks}
		got, err := spellings(t.Context(), counted, next, sought)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d: spellings of %q = %q; want %q", round, sought, got, want)
		}
		// A walk, not a scan: far fewer seeks than values.
		if seeks > 4*len(sought)+2*len(want)+2 {
			t.Errorf("round %d: %d seeks for %d values", round, seeks, len(values))
		}
	}
}

func TestNextSpelling(t *testing.T) {
	tests := []struct {
		v, addr, want string
		ok            bool
	}{
		{"", "ab", "AB", true},
		{"A", "ab", "AB", true},
		{"AB", "ab", "Ab", true},
		{"Ab", "ab", "aB", true},
		{"aB", "ab", "ab", true},
		{"ab", "ab", "", false},
		{"ab\x00", "ab", "", false},
		{"AC", "ab", "Ab", true}, // 'C' is above 'B' but below 'b'
		{"A[", "ab", "Ab", true},
		{"Ac", "ab", "aB", true},
		{"@", "ab", "AB", true},
		{"z", "ab", "", false},
		{"x@Y", "x@y", "x@y", true},
		{"x@Z", "x@y", "x@y", true},
		{"X@z", "x@y", "x@Y", true},
		{"x@", "x@y", "x@Y", true},
		{"x.", "x@y", "x@Y", true}, // '.' < '@'
		{"xA", "x@y", "", false},   // 'A' > '@'
		{"1", "1", "", false},
		{"0", "1", "1", true},
	}
	for _, tt := range tests {
		got, ok := nextSpelling(tt.v, tt.addr)
		if got != tt.want || ok != tt.ok {
			t.Errorf("nextSpelling(%q, %q) = %q, %v; want %q, %v", tt.v, tt.addr, got, ok, tt.want, tt.ok)
		}
	}
}

type countingQuerier struct {
	db    *sql.DB
	count *int
}

func (c countingQuerier) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	*c.count++
	return c.db.QueryContext(ctx, q, args...)
}

func (c countingQuerier) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	*c.count++
	return c.db.QueryRowContext(ctx, q, args...)
}

func memDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1) // one in-memory database
	t.Cleanup(func() { db.Close() })
	return db
}
