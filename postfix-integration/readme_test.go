package postfixintegration

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/mdsql"
	"github.com/mxguard/mxguard/logstore" // also registers the sqlite3 driver
)

// TestReadmeQueries runs the README's SQL against a log written by
// logstore, so that the queries admins copy keep working; each must find
// the row it is about.
func TestReadmeQueries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mxguard.db")
	st, err := logstore.Open(logstore.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, r := range []*logstore.Record{
		{StartedAt: now.Add(-time.Hour), QueueID: "C648F988526", ClientIP: "198.51.100.7", Daemon: "smtp",
			MailFrom: "billing@sender.example.net", Subject: "Invoice", Direction: "inbound", Organization: "example",
			Action: "quarantine", Reason: "SPFFail",
			Evidence: []logstore.Evidence{
				{Check: "spf", Result: "fail", Detail: "sender.example.net"},
				{Check: "quarantine", Result: "released", Detail: "by root at 2025-06-01T14:03:07Z"},
			},
			Recipients: []logstore.Recipient{{Address: "bob@example.com", Organization: "example", Action: "quarantine", Reason: "SPFFail"}}},
		{StartedAt: now.Add(-time.Minute), ClientIP: "203.0.113.5", Daemon: "smtp", MailFrom: "x@example.org",
			Direction: "inbound", Action: "reject", Reason: "RelayDenied", Reply: "554 5.7.1 RelayDenied: relay access denied for <a@elsewhere.example>"},
		{StartedAt: now, QueueID: "4D2F1988526", ClientIP: "192.0.2.10", Daemon: "submission", AuthUser: "alice",
			MailFrom: "alice@example.com", Direction: "outbound", Action: "accept"},
	} {
		if err := st.Save(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	queries := readmeSQL(t)
	for _, name := range []string{"latest", "by-queue-id", "by-queue-id-checks", "noqueue", "by-daemon", "quarantine"} {
		if _, ok := queries[name]; !ok {
			t.Errorf("README.md: no query %q", name)
		}
	}
	for name, q := range queries {
		rows, err := db.Query(q)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		n := 0
		for rows.Next() {
			n++
		}
		if err := rows.Err(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		rows.Close()
		if n == 0 {
			t.Errorf("%s: no rows", name)
		}
	}
	var afterwards string
	if err := db.QueryRow("SELECT afterwards FROM (" + strings.TrimSuffix(strings.TrimSpace(queries["quarantine"]), ";") + ")").Scan(&afterwards); err != nil ||
		afterwards != "released by root at 2025-06-01T14:03:07Z" {
		t.Errorf("quarantine query: afterwards = %q, %v", afterwards, err)
	}
}

// readmeSQL returns README.md's ```sql blocks by name.
func readmeSQL(t *testing.T) map[string]string {
	t.Helper()
	queries, err := mdsql.Blocks(readFile(t, "README.md"))
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	return queries
}
