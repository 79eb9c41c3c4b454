package logstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// openTest opens a store in a fresh directory and closes it at the end of
// the test.
func openTest(t testing.TB, opts Options) *Store {
	t.Helper()
	if opts.Path == "" {
		opts.Path = filepath.Join(t.TempDir(), "log.db")
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rawDB opens path with a plain connection, for setting up files the store
// would refuse to write and for holding locks against it.
func rawDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", dsn(path, nil))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func exec(t testing.TB, db *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func queryInt(t testing.TB, db *sql.DB, query string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func ptr[T any](v T) *T { return &v }

var cest = time.FixedZone("CEST", 2*60*60)

// fullRecord sets every field, with times in a non-UTC zone and below a
// millisecond, to check conversion and truncation.
func fullRecord() *Record {
	return &Record{
		StartedAt:    time.Date(2025, 6, 1, 14, 3, 7, 123456789, cest),
		EndedAt:      time.Date(2025, 6, 1, 14, 3, 9, 5_000_000, cest),
		QueueID:      "4XyZ1234",
		ClientIP:     "192.0.2.10",
		ClientName:   "mail.example.net",
		Helo:         "mail.example.net",
		AuthUser:     "alice",
		AuthType:     "PLAIN",
		Daemon:       "submission",
		MailFrom:     "alice@example.com",
		FromHeader:   "Alice <alice@example.com>",
		Subject:      "Quarterly report ✓",
		MessageID:    "<1@example.com>",
		Size:         12345,
		Direction:    "outbound",
		Organization: "example.com",
		SPF:          "pass",
		SPFDomain:    "example.com",
		DKIM:         "pass",
		DMARC:        "pass",
		SpamScore:    ptr(-1.5),
		Virus:        "Eicar-Test-Signature",
		Action:       "reject",
		Reason:       "Virus",
		Reply:        "554 5.7.1 Virus found",
		Error:        "clamd: slow answer",
		HeadersAdded: []string{"X-Spam-Score: -1.5", "Authentication-Results: mx.example.com; spf=pass"},
		Evidence: []Evidence{
			{Check: "spf", Result: "pass", Detail: "example.com", Duration: 1200 * time.Microsecond},
			{Check: "clamd", Result: "virus", Detail: "Eicar-Test-Signature", Error: "slow"},
		},
		Recipients: []Recipient{
			{Address: "bob@example.org", Action: "reject", Reason: "Virus", Reply: "554 5.7.1 Virus found"},
			{Address: "carol@example.com", Organization: "example.com", Action: "reject", Reason: "Virus"},
		},
	}
}

// stored is what Get returns for r: times in UTC cut to milliseconds,
// folded headers unfolded, the ID assigned.
func stored(r *Record) *Record {
	c := *r
	c.StartedAt = r.StartedAt.UTC().Truncate(time.Millisecond)
	c.EndedAt = r.EndedAt.UTC().Truncate(time.Millisecond)
	if r.StartedAt.IsZero() {
		c.StartedAt = time.Time{}
	}
	if r.EndedAt.IsZero() {
		c.EndedAt = time.Time{}
	}
	c.HeadersAdded = nil
	for _, h := range r.HeadersAdded {
		c.HeadersAdded = append(c.HeadersAdded, headerUnfolder.Replace(h))
	}
	if len(r.Evidence) == 0 {
		c.Evidence = nil
	}
	if len(r.Recipients) == 0 {
		c.Recipients = nil
	}
	return &c
}

func checkRecord(t *testing.T, got, want *Record) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("record mismatch\n got: %+v\nwant: %+v", got, want)
		if (got.SpamScore == nil) != (want.SpamScore == nil) ||
			got.SpamScore != nil && *got.SpamScore != *want.SpamScore {
			t.Errorf("spam score: got %v, want %v", got.SpamScore, want.SpamScore)
		}
	}
}

func TestOpenCreatesSchema(t *testing.T) {
	tests := []struct {
		sync     string
		wantSync int64 // PRAGMA synchronous: 1 NORMAL, 2 FULL
	}{
		{"", 1},
		{"normal", 1},
		{"FULL", 2},
	}
	for _, tt := range tests {
		t.Run("sync="+tt.sync, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "var", "mxguard")
			path := filepath.Join(dir, "log.db")
			s := openTest(t, Options{Path: path, Synchronous: tt.sync})

			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if perm := fi.Mode().Perm(); perm != 0o750 {
				t.Errorf("directory mode %v, want 0750", perm)
			}
			if _, err := os.Stat(path); err != nil {
				t.Fatal(err)
			}
			if v := queryInt(t, s.rdb, `PRAGMA user_version`); v != int64(schemaVersion()) {
				t.Errorf("user_version %d, want %d", v, schemaVersion())
			}
			// Connection settings live on the writer's connection.
			var mode string
			if err := s.wdb.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
				t.Errorf("journal_mode %q (%v), want wal", mode, err)
			}
			if fk := queryInt(t, s.wdb, `PRAGMA foreign_keys`); fk != 1 {
				t.Errorf("foreign_keys %d, want 1", fk)
			}
			if sy := queryInt(t, s.wdb, `PRAGMA synchronous`); sy != tt.wantSync {
				t.Errorf("synchronous %d, want %d", sy, tt.wantSync)
			}
			if bt := queryInt(t, s.wdb, `PRAGMA busy_timeout`); bt != busyTimeout.Milliseconds() {
				t.Errorf("busy_timeout %d, want %d", bt, busyTimeout.Milliseconds())
			}
			for _, name := range []string{
				"transactions", "recipients",
				"transactions_started_at", "transactions_mail_from", "transactions_queue_id",
				"transactions_action", "transactions_organization", "transactions_client_ip",
				"recipients_address", "recipients_transaction_id",
			} {
				if n := queryInt(t, s.rdb, `SELECT count(*) FROM sqlite_schema WHERE name = ?`, name); n != 1 {
					t.Errorf("schema object %s missing", name)
				}
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string) Options
		wantErr string
	}{
		{
			name:    "empty path",
			setup:   func(t *testing.T, dir string) Options { return Options{} },
			wantErr: "empty path",
		},
		{
			name: "parent is a regular file",
			setup: func(t *testing.T, dir string) Options {
				file := filepath.Join(dir, "file")
				if err := os.WriteFile(file, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				return Options{Path: filepath.Join(file, "sub", "log.db")}
			},
			wantErr: "not a directory",
		},
		{
			name: "path is a directory",
			setup: func(t *testing.T, dir string) Options {
				return Options{Path: dir}
			},
			wantErr: "unable to open",
		},
		{
			name: "not a database",
			setup: func(t *testing.T, dir string) Options {
				path := filepath.Join(dir, "log.db")
				if err := os.WriteFile(path, []byte(strings.Repeat("not sqlite ", 500)), 0o600); err != nil {
					t.Fatal(err)
				}
				return Options{Path: path}
			},
			wantErr: "not a database",
		},
		{
			name: "schema from the future",
			setup: func(t *testing.T, dir string) Options {
				path := filepath.Join(dir, "log.db")
				db := rawDB(t, path)
				exec(t, db, fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion()+1))
				db.Close()
				return Options{Path: path}
			},
			wantErr: "newer than this mxguard supports",
		},
		{
			name: "unknown synchronous",
			setup: func(t *testing.T, dir string) Options {
				return Options{Path: filepath.Join(dir, "log.db"), Synchronous: "off"}
			},
			wantErr: `synchronous "off"`,
		},
		{
			name: "negative batch",
			setup: func(t *testing.T, dir string) Options {
				return Options{Path: filepath.Join(dir, "log.db"), MaxBatch: -1}
			},
			wantErr: "negative MaxBatch",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.setup(t, t.TempDir())
			s, err := Open(opts)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), opts.Path) {
				t.Errorf("error %q does not name the path %q", err, opts.Path)
			}
		})
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	s, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	r := fullRecord()
	if err := s.Save(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A clean Close checkpoints: the database is one file again, ready to
	// be copied.
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(path + suffix); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after Close (%v)", path+suffix, err)
		}
	}

	s = openTest(t, Options{Path: path})
	got, err := s.Get(t.Context(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkRecord(t, got, stored(r))
}

// TestMigrate checks that a database at version N gets exactly steps N..len,
// and that a failing step leaves the file at its old version.
func TestMigrate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	s, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	r := fullRecord()
	if err := s.Save(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	s.Close()

	orig := migrations
	t.Cleanup(func() { migrations = orig })

	// A bad step 2 (and a good step 3 after it) must roll back entirely.
	migrations = append(orig[:len(orig):len(orig)],
		`CREATE TABLE transactions (x)`,
		`CREATE TABLE never_created (x)`)
	if _, err := Open(Options{Path: path}); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("schema migration %d", len(orig)+1)) {
		t.Fatalf("Open with a bad migration: got %v", err)
	}
	db := rawDB(t, path)
	if v := queryInt(t, db, `PRAGMA user_version`); v != int64(len(orig)) {
		t.Errorf("after failed migration user_version %d, want %d", v, len(orig))
	}
	if n := queryInt(t, db, `SELECT count(*) FROM sqlite_schema WHERE name = 'never_created'`); n != 0 {
		t.Error("failed migration left a table behind")
	}
	db.Close()

	// A good step 2: only it runs (re-running step 1 would fail), data stays.
	migrations = append(orig[:len(orig):len(orig)],
		`ALTER TABLE transactions ADD COLUMN note TEXT NOT NULL DEFAULT ''`)
	s = openTest(t, Options{Path: path})
	if v := queryInt(t, s.rdb, `PRAGMA user_version`); v != int64(len(orig)+1) {
		t.Errorf("user_version %d, want %d", v, len(orig)+1)
	}
	if n := queryInt(t, s.rdb, `SELECT count(*) FROM transactions WHERE note = ''`); n != 1 {
		t.Errorf("%d rows after migration, want 1", n)
	}
}

func TestSaveInsertUpdate(t *testing.T) {
	updated := func(r *Record) *Record {
		r.EndedAt = r.StartedAt.Add(3 * time.Second)
		r.Action = "accept"
		r.Reason = ""
		r.SpamScore = nil
		r.HeadersAdded = []string{"X-Updated: yes"}
		r.Evidence = append(r.Evidence, Evidence{Check: "dmarc", Result: "none"})
		r.Recipients = []Recipient{{Address: "dave@example.com", Organization: "example.com", Action: "accept"}}
		return r
	}
	tests := []struct {
		name   string
		insert *Record
		update func(*Record) *Record
	}{
		{"full", fullRecord(), updated},
		{
			name:   "minimal",
			insert: &Record{},
			update: func(r *Record) *Record {
				r.StartedAt = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
				r.Recipients = []Recipient{{Address: "a@example.com"}, {Address: "b@example.com"}}
				return r
			},
		},
		{
			name: "zero spam score is not NULL",
			insert: &Record{
				StartedAt: time.Date(2025, 1, 2, 3, 4, 5, 999_999_999, time.UTC),
				SpamScore: ptr(0.0),
			},
			update: func(r *Record) *Record { r.SpamScore = ptr(7.25); return r },
		},
		{
			name: "folded header",
			insert: &Record{
				HeadersAdded: []string{"Authentication-Results: mx.example.com;\r\n\tspf=pass", "X-A: b"},
			},
			update: func(r *Record) *Record { r.HeadersAdded = nil; r.Recipients = nil; return r },
		},
		{
			name:   "update removes all recipients",
			insert: fullRecord(),
			update: func(r *Record) *Record { r.Recipients = nil; r.Evidence = nil; return r },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, Options{})
			ctx := t.Context()
			r := tt.insert
			if err := s.Save(ctx, r); err != nil {
				t.Fatal(err)
			}
			if r.ID == 0 {
				t.Fatal("Save did not set ID")
			}
			got, err := s.Get(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			checkRecord(t, got, stored(r))

			id := r.ID
			r = tt.update(r)
			if err := s.Save(ctx, r); err != nil {
				t.Fatal(err)
			}
			if r.ID != id {
				t.Fatalf("update changed ID from %d to %d", id, r.ID)
			}
			got, err = s.Get(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			checkRecord(t, got, stored(r))
			if n := queryInt(t, s.rdb, `SELECT count(*) FROM transactions`); n != 1 {
				t.Errorf("%d transactions after update, want 1", n)
			}
			if n := queryInt(t, s.rdb, `SELECT count(*) FROM recipients`); n != int64(len(r.Recipients)) {
				t.Errorf("%d recipients after update, want %d (replaced, not added)", n, len(r.Recipients))
			}
		})
	}
}

// TestStoredText checks the columns as an admin sees them in sqlite3.
func TestStoredText(t *testing.T) {
	s := openTest(t, Options{})
	full := fullRecord()
	empty := &Record{}
	for _, r := range []*Record{full, empty} {
		if err := s.Save(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		id   int64
		col  string
		want string
	}{
		{full.ID, "started_at", "2025-06-01T12:03:07.123Z"},
		{full.ID, "ended_at", "2025-06-01T12:03:09.005Z"},
		{full.ID, "typeof(spam_score)", "real"},
		{full.ID, "spam_score", "-1.5"},
		{full.ID, "headers_added", "X-Spam-Score: -1.5\nAuthentication-Results: mx.example.com; spf=pass"},
		{full.ID, "evidence", `[{"check":"spf","result":"pass","detail":"example.com","duration_ns":1200000},` +
			`{"check":"clamd","result":"virus","detail":"Eicar-Test-Signature","error":"slow"}]`},
		{full.ID, "json_extract(evidence, '$[1].check')", "clamd"},
		{empty.ID, "started_at", ""},
		{empty.ID, "ended_at", ""},
		{empty.ID, "typeof(spam_score)", "null"},
		{empty.ID, "headers_added", ""},
		{empty.ID, "evidence", "[]"},
	}
	for _, tt := range tests {
		var got string
		q := `SELECT coalesce(CAST(` + tt.col + ` AS TEXT), '') FROM transactions WHERE id = ?`
		if err := s.rdb.QueryRow(q, tt.id).Scan(&got); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if got != tt.want {
			t.Errorf("row %d %s = %q, want %q", tt.id, tt.col, got, tt.want)
		}
	}
}

func TestGetNotFound(t *testing.T) {
	s := openTest(t, Options{})
	if _, err := s.Get(t.Context(), 42); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a missing id: got %v, want ErrNotFound", err)
	}
}

func TestRecent(t *testing.T) {
	s := openTest(t, Options{})
	base := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	var recs []*Record
	for i := range 5 {
		r := &Record{
			StartedAt:  base.Add(time.Duration(i) * time.Minute),
			QueueID:    fmt.Sprintf("Q%d", i),
			Recipients: []Recipient{{Address: fmt.Sprintf("r%d-a@example.com", i)}, {Address: fmt.Sprintf("r%d-b@example.com", i)}},
		}
		// Save out of order: Recent sorts by time, not by id.
		recs = append(recs, r)
	}
	for _, i := range []int{3, 0, 4, 1, 2} {
		if err := s.Save(t.Context(), recs[i]); err != nil {
			t.Fatal(err)
		}
	}

	got, err := s.Recent(t.Context(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("Recent(3) returned %d records", len(got))
	}
	for i, want := range []*Record{recs[4], recs[3], recs[2]} {
		checkRecord(t, &got[i], stored(want))
	}
	if _, err := s.Recent(t.Context(), 0); err == nil {
		t.Error("Recent(0) succeeded")
	}
}

func TestOpenReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	w := openTest(t, Options{Path: path})
	r := fullRecord()
	if err := w.Save(t.Context(), r); err != nil {
		t.Fatal(err)
	}

	ro, err := OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	got, err := ro.Get(t.Context(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkRecord(t, got, stored(r))
	if err := ro.Save(t.Context(), &Record{}); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Save on a read-only store: got %v, want ErrReadOnly", err)
	}
	if _, err := ro.rdb.Exec(`DELETE FROM transactions`); err == nil {
		t.Error("the read-only pool accepted a write")
	}

	// It sees rows committed after it was opened.
	r2 := &Record{QueueID: "later"}
	if err := w.Save(t.Context(), r2); err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Get(t.Context(), r2.ID); err != nil {
		t.Errorf("read-only store does not see a later commit: %v", err)
	}
	if err := ro.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := ro.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestOpenReadOnlyErrors(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, path string)
		wantErr string
	}{
		{"missing file", func(t *testing.T, path string) {}, "unable to open"},
		{"not migrated", func(t *testing.T, path string) {
			exec(t, rawDB(t, path), `CREATE TABLE x (y)`)
		}, "older than"},
		{"schema from the future", func(t *testing.T, path string) {
			exec(t, rawDB(t, path), fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion()+1))
		}, "newer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log.db")
			tt.setup(t, path)
			s, err := OpenReadOnly(path)
			if err == nil {
				s.Close()
				t.Fatal("OpenReadOnly succeeded")
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q should contain %q and the path", err, tt.wantErr)
			}
		})
	}
	// A missing file must not be created by a reader.
	path := filepath.Join(t.TempDir(), "log.db")
	OpenReadOnly(path)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenReadOnly created %s", path)
	}
}

// TestReadsDoNotWaitForWriter holds the write lock with an uncommitted
// change, as the writer does mid-batch, and reads anyway.
func TestReadsDoNotWaitForWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	s := openTest(t, Options{Path: path})
	r := fullRecord()
	if err := s.Save(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	release := holdWriteLock(t, path)
	defer release()

	ctx, cancel := context.WithTimeout(t.Context(), time.Second) // well below busyTimeout
	defer cancel()
	if _, err := s.Get(ctx, r.ID); err != nil {
		t.Errorf("Get while the write lock is held: %v", err)
	}
	if recs, err := s.Recent(ctx, 10); err != nil || len(recs) != 1 {
		t.Errorf("Recent while the write lock is held: %d records, %v; want the 1 committed", len(recs), err)
	}
}

// holdWriteLock takes SQLite's write lock on path from another connection,
// with an uncommitted insert, until release is called.
func holdWriteLock(t testing.TB, path string) (release func()) {
	t.Helper()
	conn, err := rawDB(t, path).Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`BEGIN IMMEDIATE`, `INSERT INTO transactions (queue_id) VALUES ('uncommitted')`} {
		if _, err := conn.ExecContext(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var once bool
	release = func() {
		if once {
			return
		}
		once = true
		if _, err := conn.ExecContext(context.Background(), `ROLLBACK`); err != nil {
			t.Errorf("ROLLBACK: %v", err)
		}
		conn.Close()
	}
	t.Cleanup(release)
	return release
}

// waitFor polls cond, for states another goroutine reaches soon.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
