// Package logstore is mxguard's transaction log: one SQLite row per SMTP
// transaction holding the evidence (client, HELO, envelope, authentication,
// SPF/DKIM/DMARC, scanner results) and the verdict (action, reason, reply),
// plus one row per recipient.
//
// The milter answers the MTA only after its row is committed, so a Save
// error must become a temporary failure (451 4.3.0), never a silent loss.
// To keep that wait short under load, Save uses group commit: one writer
// goroutine owns the write connection and commits every request queued
// meanwhile in a single transaction (pruning goes through it too). A second
// connection only checkpoints the WAL, so that commits never wait for it.
// Readers use a separate read-only connection pool; in WAL mode they never
// wait for the writer.
//
// Times are stored as UTC text with fixed milliseconds
// ("2006-01-02T15:04:05.000Z"), so they sort as text and read well in the
// sqlite3 shell. README.md in this directory shows example queries; a test
// runs them, so they stay correct.
package logstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
)

var (
	// ErrClosed is returned by Save after Close.
	ErrClosed = errors.New("logstore: store is closed")
	// ErrReadOnly is returned by Save on a store from OpenReadOnly.
	ErrReadOnly = errors.New("logstore: store is read-only")
	// ErrNotFound is returned by Get for an unknown id, and by Save when
	// updating a transaction that does not exist.
	ErrNotFound = errors.New("no such transaction")
)

const (
	// DefaultMaxBatch is the number of Saves committed together at most
	// when Options.MaxBatch is zero.
	DefaultMaxBatch = 128

	// busyTimeout is how long a statement waits for a lock held by another
	// process (mxguard log, the sqlite3 shell, a backup) before failing.
	// Long enough to ride out a checkpoint, short enough that the milter
	// still answers well within the MTA's milter timeouts.
	busyTimeout = 5 * time.Second
)

// Options configure Open.
type Options struct {
	// Path is the database file. Its directory is created (0750) if missing.
	Path string
	// Synchronous is SQLite's synchronous setting for the writer: "normal"
	// (default; in WAL mode a commit survives a crash of mxguard but may be
	// lost on power failure) or "full" (survives power failure too, at an
	// fsync per commit).
	Synchronous string
	// MaxBatch caps how many Saves share one transaction; 0 means
	// DefaultMaxBatch.
	MaxBatch int
	// Logger receives the store's own events (migrations, batch retries);
	// nil discards them. Save errors are returned, not logged.
	Logger *slog.Logger
}

// Store is an open transaction log. Its methods are safe for concurrent use.
type Store struct {
	path string
	log  *slog.Logger

	rdb   *sql.DB // read-only pool, used by Get and Recent
	wdb   *sql.DB // the single write connection, nil for OpenReadOnly
	stmts *stmts  // prepared on wdb

	// Group commit; see writer.go. reqs is unbuffered, so a request counts
	// as taken exactly when the writer receives it.
	reqs       chan *request
	maxBatch   int
	writerDone chan struct{}

	mu      sync.Mutex
	closed  bool
	senders sync.WaitGroup // Saves that may still send on reqs

	closeOnce sync.Once
	closeErr  error

	// Counters for tests and future metrics.
	queued  atomic.Int64 // Saves waiting for the writer to take them
	batches atomic.Int64 // batches the writer has taken
	commits atomic.Int64 // committed write transactions
	retries atomic.Int64 // batches that failed and were retried one by one
}

// Open opens or creates the database at opts.Path, migrates its schema and
// starts the writer. Close it to stop the writer and release the file.
func Open(opts Options) (*Store, error) {
	if opts.Path == "" {
		return nil, errors.New("logstore: open: empty path")
	}
	syncMode, err := synchronousMode(opts.Synchronous)
	if err != nil {
		return nil, fmt.Errorf("logstore: open %s: %w", opts.Path, err)
	}
	maxBatch := opts.MaxBatch
	switch {
	case maxBatch == 0:
		maxBatch = DefaultMaxBatch
	case maxBatch < 0:
		return nil, fmt.Errorf("logstore: open %s: negative MaxBatch %d", opts.Path, maxBatch)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	s, err := open(opts.Path, syncMode, maxBatch, log)
	if err != nil {
		return nil, fmt.Errorf("logstore: open %s: %w", opts.Path, err)
	}
	return s, nil
}

func open(path, syncMode string, maxBatch int, log *slog.Logger) (*Store, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	// SQLite needs to create the -wal and -shm files beside the database;
	// without write access to the directory it reports a baffling "unable
	// to open database file: no such file or directory".
	if err := syscall.Access(dir, 2 /* W_OK */); err != nil {
		return nil, fmt.Errorf("directory %s is not writable: %w", dir, err)
	}
	wdb, err := sql.Open("sqlite3", dsn(path, url.Values{
		"mode":          {"rwc"},
		"_txlock":       {"immediate"}, // take the write lock at BEGIN, not mid-transaction
		"_journal_mode": {"WAL"},
		"_synchronous":  {syncMode},
		"_foreign_keys": {"on"},
		"_busy_timeout": {strconv.FormatInt(busyTimeout.Milliseconds(), 10)},
	}))
	if err != nil {
		return nil, err
	}
	// One connection that lives as long as the store: the writer owns it,
	// and keeping it open keeps the WAL and its index in place.
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)

	ctx := context.Background()
	if err := requireWAL(ctx, wdb); err != nil {
		wdb.Close()
		return nil, err
	}
	if err := migrate(ctx, wdb, log); err != nil {
		wdb.Close()
		return nil, err
	}
	st, err := prepareStmts(ctx, wdb)
	if err != nil {
		wdb.Close()
		return nil, err
	}
	rdb, err := openReader(path)
	if err != nil {
		st.close()
		wdb.Close()
		return nil, err
	}

	s := &Store{
		path:       path,
		log:        log,
		rdb:        rdb,
		wdb:        wdb,
		stmts:      st,
		reqs:       make(chan *request),
		maxBatch:   maxBatch,
		writerDone: make(chan struct{}),
	}
	go s.writer()
	return s, nil
}

// OpenReadOnly opens an existing, fully migrated database for reading only,
// for tools such as mxguard log. Save on the result returns ErrReadOnly.
func OpenReadOnly(path string) (*Store, error) {
	rdb, err := openReader(path)
	if err != nil {
		return nil, fmt.Errorf("logstore: open %s read-only: %w", path, err)
	}
	var v int
	if err := rdb.QueryRow(userVersionSQL).Scan(&v); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("logstore: open %s read-only: %w", path, err)
	}
	if v != schemaVersion() {
		err := checkVersion(v)
		if err == nil {
			// A read-only store cannot migrate, and the queries would miss
			// the newer columns.
			err = fmt.Errorf("database schema version %d is older than %d; open it once with mxguard serve to upgrade it", v, schemaVersion())
		}
		rdb.Close()
		return nil, fmt.Errorf("logstore: open %s read-only: %w", path, err)
	}
	return &Store{path: path, log: slog.New(slog.DiscardHandler), rdb: rdb}, nil
}

// openReader opens the read-only pool. mode=ro makes SQLite itself refuse
// writes and not create a missing file; query_only is a second guard.
func openReader(path string) (*sql.DB, error) {
	db, err := sql.Open("sqlite3", dsn(path, url.Values{
		"mode":          {"ro"},
		"_query_only":   {"on"},
		"_busy_timeout": {strconv.FormatInt(busyTimeout.Milliseconds(), 10)},
	}))
	if err != nil {
		return nil, err
	}
	// sql.Open is lazy; ping so a missing or unreadable file fails here.
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// dsn builds a go-sqlite3 URI filename. The path is escaped so that '?',
// '#' and '%' in a directory name cannot be read as URI syntax.
func dsn(path string, params url.Values) string {
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + params.Encode()
}

func synchronousMode(s string) (string, error) {
	switch strings.ToLower(s) {
	case "", "normal":
		return "NORMAL", nil
	case "full":
		return "FULL", nil
	}
	return "", fmt.Errorf("synchronous %q: want \"normal\" or \"full\"", s)
}

// requireWAL checks that WAL mode took effect: SQLite silently keeps the
// rollback journal where WAL is unsupported (some network file systems),
// and then readers would block the writer.
func requireWAL(ctx context.Context, db *sql.DB) error {
	var mode string
	if err := db.QueryRowContext(ctx, journalModeSQL).Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal_mode is %q, not wal (is the file system local?)", mode)
	}
	return nil
}

// Close stops accepting Saves, waits for those already called to finish,
// and closes the database. It is safe to call more than once; later calls
// return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()

		// Readers first: the last connection to close checkpoints the WAL
		// into the database and removes the -wal and -shm files, and only
		// the writer can.
		errs := []error{s.rdb.Close()}
		if s.wdb != nil {
			// No new sender can start now; once the running ones have been
			// taken or gave up, nobody sends on reqs and it can be closed.
			s.senders.Wait()
			close(s.reqs)
			<-s.writerDone
			errs = append(errs, s.stmts.close(), s.wdb.Close())
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("logstore: close %s: %w", s.path, err)
		}
	})
	return s.closeErr
}

// Get returns the transaction with the given id, with its recipients.
// It returns an error wrapping ErrNotFound when there is none.
func (s *Store) Get(ctx context.Context, id int64) (*Record, error) {
	// One read transaction, so the row and its recipients are one snapshot.
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("logstore: get %d: %w", id, err)
	}
	defer tx.Rollback()

	r, err := scanRecord(tx.QueryRowContext(ctx, getTxSQL, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("logstore: get %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("logstore: get %d: %w", id, err)
	}
	rows, err := tx.QueryContext(ctx, getRcptsSQL, id)
	if err != nil {
		return nil, fmt.Errorf("logstore: get %d: recipients: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		_, rc, err := scanRecipient(rows)
		if err != nil {
			return nil, fmt.Errorf("logstore: get %d: recipients: %w", id, err)
		}
		r.Recipients = append(r.Recipients, rc)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("logstore: get %d: recipients: %w", id, err)
	}
	return r, nil
}

// Recent returns up to limit transactions, newest first, with their
// recipients.
func (s *Store) Recent(ctx context.Context, limit int) ([]Record, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("logstore: recent: limit %d is not positive", limit)
	}
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("logstore: recent: %w", err)
	}
	defer tx.Rollback()

	recs, err := queryRecords(ctx, tx, recentTxSQL, limit)
	if err != nil {
		return nil, fmt.Errorf("logstore: recent: %w", err)
	}
	byID := make(map[int64]*Record, len(recs))
	for i := range recs {
		byID[recs[i].ID] = &recs[i]
	}
	rows, err := tx.QueryContext(ctx, recentRcptsSQL, limit)
	if err != nil {
		return nil, fmt.Errorf("logstore: recent: recipients: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		txID, rc, err := scanRecipient(rows)
		if err != nil {
			return nil, fmt.Errorf("logstore: recent: recipients: %w", err)
		}
		if r := byID[txID]; r != nil {
			r.Recipients = append(r.Recipients, rc)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("logstore: recent: recipients: %w", err)
	}
	return recs, nil
}

func queryRecords(ctx context.Context, tx *sql.Tx, query string, args ...any) ([]Record, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var recs []Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, err
		}
		recs = append(recs, *r)
	}
	return recs, rows.Err()
}
