package logstore

import (
	"database/sql"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/mdsql"
)

// readmeQueries returns README.md's ```sql blocks by name.
func readmeQueries(t *testing.T) map[string]string {
	t.Helper()
	text, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	queries, err := mdsql.Blocks(string(text))
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	return queries
}

// TestReadmeQueries runs the README's example queries against a populated
// database, so the documentation cannot drift from the schema.
func TestReadmeQueries(t *testing.T) {
	s := openTest(t, Options{})
	today := time.Now().UTC().Truncate(24 * time.Hour)
	at := func(d time.Duration) time.Time { return today.Add(d) }

	recs := []*Record{
		{
			StartedAt: at(time.Second), QueueID: "4XyZ1234", ClientIP: "192.0.2.10", Helo: "mail.example.net",
			MailFrom: "spammer@example.net", Subject: "Offer", Organization: "example.com",
			Action: "reject", Reason: "SPFFail", Reply: "550 5.7.23 SPFFail: example.net does not allow 192.0.2.10",
			Evidence: []Evidence{
				{Check: "relay", Result: "pass", Detail: "recipient in example.com"},
				{Check: "spf", Result: "fail", Detail: "example.net"},
			},
			Recipients: []Recipient{
				{Address: "bob@example.com", Organization: "example.com", Action: "reject", Reason: "SPFFail"},
				{Address: "carol@example.com", Organization: "example.com", Action: "reject", Reason: "SPFFail"},
			},
		},
		{
			StartedAt: at(2 * time.Second), QueueID: "5AbC", MailFrom: "friend@example.org", Subject: "Hello",
			Organization: "example.com", Action: "accept",
			Recipients: []Recipient{{Address: "bob@example.com", Organization: "example.com", Action: "accept"}},
		},
		{
			StartedAt: at(-12 * time.Hour), QueueID: "3Old", MailFrom: "old@example.net", Subject: "Yesterday",
			Organization: "example.com", Action: "reject", Reason: "Virus", Reply: "554 5.7.1 Virus",
			Recipients: []Recipient{{Address: "bob@example.com", Organization: "example.com", Action: "reject", Reason: "Virus"}},
		},
		{
			StartedAt: at(3 * time.Second), QueueID: "6Oth", Organization: "other.org",
			Action: "reject", Reason: "SPFFail",
		},
		{
			StartedAt: at(4 * time.Second), QueueID: "7New", ClientIP: "198.51.100.7", MailFrom: "x@example.net",
			Organization: "example.com", Action: "reject", Reason: "RelayDenied", Reply: "554 5.7.1 RelayDenied",
		},
	}
	for _, r := range recs {
		if err := s.Save(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	ts := func(d time.Duration) string { return at(d).Format(timeFormat) }

	want := map[string][][]string{
		"rejected-today": {
			{ts(time.Second), "4XyZ1234", "192.0.2.10", "spammer@example.net", "SPFFail", "550 5.7.23 SPFFail: example.net does not allow 192.0.2.10"},
			{ts(4 * time.Second), "7New", "198.51.100.7", "x@example.net", "RelayDenied", "554 5.7.1 RelayDenied"},
		},
		"why-queue-id": {
			{ts(time.Second), "192.0.2.10", "mail.example.net", "", "spammer@example.net", "reject", "SPFFail", "550 5.7.23 SPFFail: example.net does not allow 192.0.2.10", ""},
		},
		"why-evidence": {
			{"relay", "pass", "recipient in example.com"},
			{"spf", "fail", "example.net"},
		},
		"recipients": {
			{"bob@example.com", "example.com", "reject", "SPFFail", ""},
			{"carol@example.com", "example.com", "reject", "SPFFail", ""},
		},
		"to-address": {
			{ts(2 * time.Second), "friend@example.org", "Hello", "accept", ""},
			{ts(time.Second), "spammer@example.net", "Offer", "reject", "SPFFail"},
			{ts(-12 * time.Hour), "old@example.net", "Yesterday", "reject", "Virus"},
		},
	}

	queries := readmeQueries(t)
	for name := range queries {
		if _, ok := want[name]; !ok {
			t.Errorf("README query %q has no expected result in this test", name)
		}
	}
	for name, rows := range want {
		t.Run(name, func(t *testing.T) {
			q, ok := queries[name]
			if !ok {
				t.Fatalf("README.md has no query %q", name)
			}
			got := queryStrings(t, s.rdb, q)
			if !reflect.DeepEqual(got, rows) {
				t.Errorf("query:\n%s\n got: %q\nwant: %q", q, got, rows)
			}
		})
	}
}

// queryStrings runs q and returns every column as text, NULL as "NULL".
func queryStrings(t *testing.T, db *sql.DB, q string) [][]string {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := make([]string, len(cols))
		for i, v := range vals {
			row[i] = v.String
			if !v.Valid {
				row[i] = "NULL"
			}
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
