package logstore

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkSearch measures the mxguard log queries on a log of a million
// transactions (MXGUARD_BENCH_ROWS to change it) spread over 90 days, as a
// busy gateway keeps with the default retention. Benchmarks run only with
// -bench:
//
//	go test -run '^$' -bench Search -benchtime 5x ./logstore/
//
// With -tags sqlite_fts5, the FTS5 sub-benchmarks run too (they skip
// otherwise): the figures behind the FTS decision in docs/log.md.
func BenchmarkSearch(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("MXGUARD_BENCH_ROWS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	path := filepath.Join(b.TempDir(), "log.db")
	now := time.Now().UTC()
	start := time.Now()
	data := generateLog(b, path, n, now)
	b.Logf("generated %d transactions in %v; file %d MB", n, time.Since(start).Round(time.Millisecond), fileMB(b, path))

	s, err := OpenReadOnly(path)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()

	day := now.Add(-24 * time.Hour)
	week := now.Add(-7 * 24 * time.Hour)
	searches := []struct {
		name string
		f    Filter
	}{
		{"newest", Filter{}},
		{"since=24h", Filter{Since: day}},
		{"action=reject", Filter{Action: "reject"}},
		{"org+since=7d", Filter{Organization: "example", Since: week}},
		{"queue-id", Filter{QueueID: data.queueID}},
		{"from=address", Filter{From: data.sender}},
		{"from=address/mixed-case", Filter{From: strings.ToUpper(data.sender)}},
		{"from=unknown", Filter{From: "nobody@nowhere.invalid"}},
		{"from=@domain/common", Filter{From: "@" + data.domain}},
		{"from=@domain/rare", Filter{From: "@nowhere.invalid"}},
		{"from=@domain/rare+since=24h", Filter{From: "@nowhere.invalid", Since: day}},
		{"to=address", Filter{To: data.recipient}},
		{"to=@domain/rare", Filter{To: "@nowhere.invalid"}},
		{"client=ip", Filter{Client: netip.PrefixFrom(data.client, 32)}},
		{"client=/24", Filter{Client: netip.PrefixFrom(data.client, 24).Masked()}},
		{"client=/20", Filter{Client: netip.PrefixFrom(data.client, 20).Masked()}},
		{"subject=common", Filter{Subject: data.word}},
		{"subject=rare", Filter{Subject: "zqxjv"}},
		{"subject=rare+since=24h", Filter{Subject: "zqxjv", Since: day}},
		{"subject=rare+since=7d", Filter{Subject: "zqxjv", Since: week}},
		{"subject=rare/non-ascii", Filter{Subject: "zqxjvé"}},
	}
	for _, sb := range searches {
		b.Run("search/"+sb.name, func(b *testing.B) {
			var got int
			for b.Loop() {
				recs, err := s.Search(b.Context(), sb.f)
				if err != nil {
					b.Fatal(err)
				}
				got = len(recs)
			}
			b.ReportMetric(float64(got), "rows")
		})
	}
	for _, sb := range []struct {
		name string
		f    StatsFilter
	}{
		{"24h", StatsFilter{Since: day}},
		{"24h/by-hour", StatsFilter{Since: day, By: "hour"}},
		{"7d/org", StatsFilter{Since: week, Organization: "example"}},
		{"90d/by-day", StatsFilter{Since: now.Add(-90 * 24 * time.Hour), By: "day"}},
	} {
		b.Run("stats/"+sb.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.Stats(b.Context(), sb.f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}

	benchFTS(b, path, day)
}

// benchFTS measures what FTS5 would give for subject search: a trigram
// index (substring search, as LIKE '%x%', case-insensitive) and a word
// index (unicode61: whole words only). It builds them on a copy of the
// rows in a separate table set, so the log itself is untouched.
func benchFTS(b *testing.B, path string, day time.Time) {
	db := rawDB(b, path)
	var fts int
	if err := db.QueryRow(`SELECT sqlite_compileoption_used('ENABLE_FTS5')`).Scan(&fts); err != nil || fts == 0 {
		b.Run("fts5", func(b *testing.B) { b.Skip("the driver has no FTS5; build with -tags sqlite_fts5") })
		return
	}
	before := fileMB(b, path)
	for _, idx := range []struct{ name, tokenize string }{
		{"trigram", "trigram"},
		{"words", "unicode61"},
	} {
		table := "fts_" + idx.name
		start := time.Now()
		exec(b, db, `CREATE VIRTUAL TABLE `+table+` USING fts5(subject, content='transactions', content_rowid='id', tokenize='`+idx.tokenize+`')`)
		exec(b, db, `INSERT INTO `+table+`(`+table+`) VALUES ('rebuild')`)
		exec(b, db, `PRAGMA wal_checkpoint(TRUNCATE)`)
		after := fileMB(b, path)
		b.Logf("fts5 %s index over subject: built in %v, +%d MB", idx.name, time.Since(start).Round(time.Millisecond), after-before)
		before = after

		// What each write would pay: the trigger a content table needs.
		exec(b, db, `CREATE TEMP TABLE IF NOT EXISTS bench_rows AS SELECT * FROM transactions ORDER BY id DESC LIMIT 10000`)
		timeInserts := func() time.Duration {
			start := time.Now()
			exec(b, db, `BEGIN`)
			exec(b, db, `INSERT INTO transactions SELECT NULL, `+strings.Join(txColumns, ", ")+` FROM bench_rows`)
			exec(b, db, `ROLLBACK`)
			return time.Since(start)
		}
		// Alternate, and keep the best of three, so that a cold cache
		// does not count against either.
		plain, indexed := time.Hour, time.Hour
		for range 3 {
			plain = min(plain, timeInserts())
			exec(b, db, `CREATE TEMP TRIGGER bench_fts AFTER INSERT ON transactions BEGIN
				INSERT INTO `+table+`(rowid, subject) VALUES (new.id, new.subject); END`)
			indexed = min(indexed, timeInserts())
			exec(b, db, `DROP TRIGGER bench_fts`)
		}
		b.Logf("fts5 %s: 10000 inserts in one transaction: %v without, %v with the index", idx.name, plain.Round(time.Millisecond), indexed.Round(time.Millisecond))

		queries := []struct {
			name, sql string
			args      []any
		}{
			{"rare", `SELECT t.id FROM ` + table + ` AS f JOIN transactions AS t ON t.id = f.rowid WHERE ` + table + ` MATCH ? ORDER BY t.started_at DESC, t.id DESC LIMIT 50`, []any{`"zqxjv"`}},
			{"rare+since=24h", `SELECT t.id FROM ` + table + ` AS f JOIN transactions AS t ON t.id = f.rowid WHERE ` + table + ` MATCH ? AND t.started_at >= ? ORDER BY t.started_at DESC, t.id DESC LIMIT 50`, []any{`"zqxjv"`, formatTime(day)}},
			{"common", `SELECT t.id FROM ` + table + ` AS f JOIN transactions AS t ON t.id = f.rowid WHERE ` + table + ` MATCH ? ORDER BY t.started_at DESC, t.id DESC LIMIT 50`, []any{`"invoice"`}},
			// FTS5 streams matches in rowid order: newest ids first,
			// which is nearly, not exactly, newest first.
			{"common/by-id", `SELECT f.rowid FROM ` + table + ` AS f WHERE ` + table + ` MATCH ? ORDER BY f.rowid DESC LIMIT 50`, []any{`"invoice"`}},
		}
		for _, q := range queries {
			b.Run("fts5/"+idx.name+"/"+q.name, func(b *testing.B) {
				var got int
				for b.Loop() {
					got = countRows(b, db, q.sql, q.args...)
				}
				b.ReportMetric(float64(got), "rows")
			})
		}
	}
}

func countRows(b *testing.B, db *sql.DB, q string, args ...any) int {
	rows, err := db.Query(q, args...)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	return n
}

func fileMB(b *testing.B, path string) int64 {
	var total int64
	for _, p := range []string{path, path + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			total += fi.Size()
		}
	}
	return total >> 20
}

// benchData names rows of the generated log that the benchmarks look for.
type benchData struct {
	queueID, sender, domain, recipient, word string
	client                                   netip.Addr
}

// generateLog writes n transactions ending at now, one every 90d/n, with
// the shape of real traffic: senders and clients drawn with a long tail,
// 1 to 5 recipients in three organisations, 80% accepted, a tenth
// rejected, subjects of a few words, some encoded (RFC 2047), evidence and
// headers of the size the milter writes. One transaction of plain INSERTs
// takes a few seconds for a million rows, far faster than Save.
func generateLog(b *testing.B, path string, n int, now time.Time) benchData {
	s, err := Open(Options{Path: path})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	db := rawDB(b, path)
	// A throwaway file: no journal, no syncs, a cache that holds it all.
	// WAL mode, which the store needs, comes back at the end.
	exec(b, db, `PRAGMA journal_mode = OFF`)
	exec(b, db, `PRAGMA synchronous = OFF`)
	exec(b, db, `PRAGMA cache_size = -2000000`)
	// Indexes are built faster once, from sorted data, than row by row.
	var indexes []string
	rows, err := db.Query(`SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL`)
	if err != nil {
		b.Fatal(err)
	}
	for rows.Next() {
		var name, create string
		if err := rows.Scan(&name, &create); err != nil {
			b.Fatal(err)
		}
		indexes = append(indexes, name, create)
	}
	rows.Close()
	for i := 0; i < len(indexes); i += 2 {
		exec(b, db, `DROP INDEX `+indexes[i])
	}

	rng := rand.New(rand.NewPCG(6, 2025))
	words := make([]string, 2000)
	for i := range words {
		w := make([]byte, 4+rng.IntN(6))
		for j := range w {
			w[j] = "abcdefghiklmnoprstuvwy"[rng.IntN(22)]
		}
		words[i] = string(w)
	}
	words[0] = "invoice"
	domains := make([]string, 20000)
	for i := range domains {
		domains[i] = words[rng.IntN(len(words))] + strconv.Itoa(i) + "." + []string{"com", "net", "org", "de", "io"}[i%5]
	}
	wordZipf := rand.NewZipf(rng, 1.1, 2, uint64(len(words)-1))
	senderZipf := rand.NewZipf(rng, 1.1, 2, 199_999)
	clientZipf := rand.NewZipf(rng, 1.1, 2, 49_999)
	sender := func(i int) string {
		local := words[i%len(words)] + strconv.Itoa(i%97)
		addr := local + "@" + domains[i%len(domains)]
		if i%33 == 0 { // some senders write their address in mixed case
			addr = strings.ToUpper(addr[:1]) + addr[1:len(local)+1] + strings.ToUpper(domains[i%len(domains)])
		}
		return addr
	}
	client := func(i int) netip.Addr {
		if i%20 == 0 {
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 15: 1})
		}
		return netip.AddrFrom4([4]byte{byte(1 + i%223), byte(i >> 8), byte(i >> 3), byte(i)})
	}
	orgs := []string{"example", "example-nl", "acme"}
	orgDomains := []string{"example.com", "example.nl", "acme.test"}

	tx, err := db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	txStmt, err := tx.Prepare(insertTxSQL)
	if err != nil {
		b.Fatal(err)
	}
	rcptStmt, err := tx.Prepare(insertRcptSQL)
	if err != nil {
		b.Fatal(err)
	}
	var data benchData
	step := 90 * 24 * time.Hour / time.Duration(n)
	t0 := now.Add(-90 * 24 * time.Hour)
	for i := range n {
		si := int(senderZipf.Uint64())
		ci := int(clientZipf.Uint64())
		r := Record{
			StartedAt: t0.Add(time.Duration(i) * step),
			QueueID:   fmt.Sprintf("%X", 0x1000000000+rng.Uint64N(0xEFFFFFFFFF)),
			ClientIP:  client(ci).String(),
			Helo:      "mail." + domains[si%len(domains)],
			MailFrom:  sender(si),
			Direction: "inbound",
			SPF:       "pass",
			Action:    "accept",
		}
		r.ClientName = r.Helo
		r.EndedAt = r.StartedAt.Add(time.Duration(200+rng.IntN(2000)) * time.Millisecond)
		r.SPFDomain = r.MailFrom[strings.IndexByte(r.MailFrom, '@')+1:]
		org := rng.IntN(len(orgs))
		r.Organization = orgs[org]
		var subj []string
		for range 2 + rng.IntN(6) {
			subj = append(subj, words[wordZipf.Uint64()])
		}
		r.Subject = strings.Join(subj, " ")
		if i%10 == 0 {
			r.Subject = "=?UTF-8?Q?" + strings.ReplaceAll(r.Subject, " ", "_") + "_=C3=BC?="
		}
		r.FromHeader = "<" + r.MailFrom + ">"
		r.MessageID = "<" + r.QueueID + "@" + r.SPFDomain + ">"
		r.Size = int64(2000 + rng.IntN(200_000))
		r.Evidence = []Evidence{
			{Check: "client", Result: "untrusted", Detail: r.ClientIP},
			{Check: "spf", Result: "pass", Detail: r.SPFDomain, Duration: time.Duration(rng.IntN(50_000_000))},
		}
		switch p := rng.IntN(100); {
		case p < 80:
		case p < 88:
			r.Action, r.Reason, r.SPF = "tag", "SPFSoftFail", "softfail"
		case p < 90:
			r.Action, r.Reason, r.SPF = "quarantine", "SPFFail", "fail"
		case p < 96:
			r.Action, r.Reason, r.SPF = "reject", "SPFFail", "fail"
			r.Reply = "550 5.7.23 SPFFail: SPF fail for " + r.SPFDomain
		case p < 99:
			r.Action, r.Reason = "reject", "RelayDenied"
			r.Reply = "554 5.7.1 RelayDenied: relay access denied for <x@elsewhere.test>"
		default:
			r.Action, r.Reason = "aborted", "Aborted"
		}
		r.Evidence[1].Result = r.SPF
		if r.Action != "reject" {
			r.HeadersAdded = []string{"Authentication-Results: mx.example.com; spf=" + r.SPF + " smtp.mailfrom=" + r.MailFrom}
		}
		args, err := recordArgs(&r)
		if err != nil {
			b.Fatal(err)
		}
		res, err := txStmt.Exec(args...)
		if err != nil {
			b.Fatal(err)
		}
		id, _ := res.LastInsertId()
		nr := 1
		switch p := rng.IntN(100); {
		case p >= 95:
			nr = 3 + rng.IntN(3)
		case p >= 80:
			nr = 2
		}
		for k := range nr {
			addr := words[(ci+k*7)%len(words)] + strconv.Itoa(k) + "@" + orgDomains[org]
			action, reply := r.Action, ""
			if r.Reason == "RelayDenied" {
				addr, reply = fmt.Sprintf("user%d@elsewhere%d.test", k, ci%1000), r.Reply
			}
			if _, err := rcptStmt.Exec(id, addr, r.Organization, action, r.Reason, reply); err != nil {
				b.Fatal(err)
			}
			if i == n/2 {
				data.recipient = addr
			}
		}
		if i == n/2 {
			data.queueID, data.sender, data.client = r.QueueID, r.MailFrom, client(ci)
			data.domain = r.SPFDomain
			data.word = words[0]
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	for i := 1; i < len(indexes); i += 2 {
		exec(b, db, indexes[i])
	}
	exec(b, db, `PRAGMA journal_mode = WAL`)
	return data
}
