package logstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/mattn/go-sqlite3"
)

// Group commit. Every Save, and every prune batch, becomes a request on
// Store.reqs. The writer goroutine takes one request, drains whatever else
// is already waiting (up to maxBatch), writes them all in one transaction
// and commits once; with synchronous=full that is one fsync for the whole
// batch instead of one per message. If the batch fails, each request is
// retried in a transaction of its own, so a bad record fails alone and the
// others still commit.

// request is one Save (or prune batch) handed to the writer. Its fields are
// computed in the caller's goroutine, so the writer never touches the
// caller's Record.
type request struct {
	id    int64 // 0 to insert; otherwise the row to update
	args  []any // txColumns values, then id when updating
	rcpts []Recipient
	// exec, when set, is run in the batch's transaction instead of a save:
	// other writes (a prune batch) go through the one writer too, so they
	// never compete with the saves for SQLite's write lock.
	exec func(ctx context.Context, tx *sql.Tx) (int64, error)
	done chan result // buffered: the writer never waits for the caller
}

type result struct {
	id  int64 // the row id of a save; what exec returned
	err error
}

// stmts are prepared once on the write connection and reused by every
// transaction, so a save does not parse its SQL again.
type stmts struct {
	insertTx, updateTx, deleteRcpts, insertRcpt *sql.Stmt
}

func prepareStmts(ctx context.Context, db *sql.DB) (*stmts, error) {
	var st stmts
	for _, p := range []struct {
		dst   **sql.Stmt
		query string
	}{
		{&st.insertTx, insertTxSQL},
		{&st.updateTx, updateTxSQL},
		{&st.deleteRcpts, deleteRcptsSQL},
		{&st.insertRcpt, insertRcptSQL},
	} {
		stmt, err := db.PrepareContext(ctx, p.query)
		if err != nil {
			st.close()
			return nil, err
		}
		*p.dst = stmt
	}
	return &st, nil
}

func (st *stmts) close() error {
	var errs []error
	for _, stmt := range []*sql.Stmt{st.insertTx, st.updateTx, st.deleteRcpts, st.insertRcpt} {
		if stmt != nil {
			errs = append(errs, stmt.Close())
		}
	}
	return errors.Join(errs...)
}

// Save writes r to the log and returns once the change is committed: a new
// row if r.ID is 0 (r.ID is then set), else an update of row r.ID with its
// recipients replaced. The caller must not modify r until Save returns.
//
// If ctx ends before the writer has taken the request, Save returns
// ctx.Err() and nothing is written. Once taken, the request is part of a
// transaction shared with other callers, so Save waits for its outcome
// regardless of ctx.
func (s *Store) Save(ctx context.Context, r *Record) error {
	if r == nil {
		return errors.New("logstore: save: nil record")
	}
	if s.wdb == nil {
		return ErrReadOnly
	}
	// Checked first because select picks at random among ready cases: an
	// already-cancelled ctx must not write.
	if err := ctx.Err(); err != nil {
		return err
	}
	args, err := recordArgs(r)
	if err != nil {
		return fmt.Errorf("logstore: save: %w", err)
	}
	if r.ID != 0 {
		args = append(args, r.ID)
	}
	req := &request{
		id:    r.ID,
		args:  args,
		rcpts: slices.Clone(r.Recipients),
		done:  make(chan result, 1),
	}
	id, err := s.send(ctx, req)
	if err != nil {
		return err
	}
	r.ID = id
	return nil
}

// send hands req to the writer and waits for its outcome. If ctx ends
// before the writer has taken req, it returns ctx.Err() and req is not run;
// once taken, it waits regardless of ctx (see Save).
func (s *Store) send(ctx context.Context, req *request) (int64, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, ErrClosed
	}
	s.senders.Add(1)
	s.mu.Unlock()

	var err error
	s.queued.Add(1)
	select {
	case s.reqs <- req:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.queued.Add(-1)
	s.senders.Done()
	if err != nil {
		return 0, err
	}

	res := <-req.done
	return res.id, res.err
}

// writer is the only user of the write connection. It runs until Close
// closes reqs, and finishes every request taken before that.
func (s *Store) writer() {
	defer close(s.writerDone)
	kick, stop := s.startCheckpointer()
	defer stop()
	batch := make([]*request, 0, s.maxBatch)
	for req := range s.reqs {
		// Let the sessions answered by the last commit, runnable but
		// waiting for a CPU, queue their next Save first: with few CPUs
		// that tripled the rows per commit at 8 and 64 sessions, and each
		// row costs less in a larger commit (its table and index pages are
		// shared). Alone, a save loses a microsecond.
		runtime.Gosched()
		batch = s.drain(append(batch[:0], req))
		s.batches.Add(1)
		s.commit(batch)
		clear(batch) // let answered requests be collected
		kick()
	}
}

// drain adds the requests already waiting, without waiting for more: under
// light load a save is committed at once, under heavy load batches grow.
func (s *Store) drain(batch []*request) []*request {
	for len(batch) < s.maxBatch {
		select {
		case req, ok := <-s.reqs:
			if !ok {
				return batch
			}
			batch = append(batch, req)
		default:
			return batch
		}
	}
	return batch
}

// commit writes batch and answers every request in it.
func (s *Store) commit(batch []*request) {
	if len(batch) > 1 {
		ids, err := s.apply(batch)
		if err == nil {
			for i, req := range batch {
				req.done <- result{id: ids[i]}
			}
			return
		}
		if wholeDatabase(err) {
			// Retrying one by one would wait the busy timeout once per
			// save: a batch of 100 behind a held lock would answer after
			// minutes, long after the MTA gave up on us.
			for _, req := range batch {
				req.done <- result{err: err}
			}
			return
		}
		s.retries.Add(1)
		s.log.Warn("logstore: batch failed, retrying its saves one by one",
			"saves", len(batch), "err", err)
	}
	for _, req := range batch {
		ids, err := s.apply([]*request{req})
		if err != nil {
			req.done <- result{err: err}
			continue
		}
		req.done <- result{id: ids[0]}
	}
}

// apply writes batch in one transaction and returns the row ids, in order.
func (s *Store) apply(batch []*request) ([]int64, error) {
	// Not a caller's ctx: the transaction is shared, and a caller giving up
	// must not abort the commit of the others.
	ctx := context.Background()
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("logstore: save: begin: %w", err)
	}
	defer tx.Rollback() // no-op after Commit

	ids := make([]int64, len(batch))
	for i, req := range batch {
		if ids[i], err = s.write(ctx, tx, req); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("logstore: save: commit: %w", err)
	}
	s.commits.Add(1)
	return ids, nil
}

// write executes one request inside tx and returns its row id.
func (s *Store) write(ctx context.Context, tx *sql.Tx, req *request) (int64, error) {
	if req.exec != nil {
		return req.exec(ctx, tx)
	}
	id := req.id
	if id == 0 {
		res, err := tx.StmtContext(ctx, s.stmts.insertTx).ExecContext(ctx, req.args...)
		if err != nil {
			return 0, fmt.Errorf("logstore: insert transaction: %w", err)
		}
		if id, err = res.LastInsertId(); err != nil {
			return 0, fmt.Errorf("logstore: insert transaction: %w", err)
		}
	} else {
		res, err := tx.StmtContext(ctx, s.stmts.updateTx).ExecContext(ctx, req.args...)
		if err != nil {
			return 0, fmt.Errorf("logstore: update transaction %d: %w", id, err)
		}
		// An update that matches nothing would otherwise "succeed" and lose
		// the record.
		n, err := res.RowsAffected()
		if err != nil {
			return 0, fmt.Errorf("logstore: update transaction %d: %w", id, err)
		}
		if n == 0 {
			return 0, fmt.Errorf("logstore: update transaction %d: %w", id, ErrNotFound)
		}
		if _, err := tx.StmtContext(ctx, s.stmts.deleteRcpts).ExecContext(ctx, id); err != nil {
			return 0, fmt.Errorf("logstore: update transaction %d: delete recipients: %w", id, err)
		}
	}
	ins := tx.StmtContext(ctx, s.stmts.insertRcpt)
	for _, rc := range req.rcpts {
		if _, err := ins.ExecContext(ctx, id, rc.Address, rc.Organization, rc.Action, rc.Reason, rc.Reply); err != nil {
			return 0, fmt.Errorf("logstore: transaction %d: insert recipient: %w", id, err)
		}
	}
	return id, nil
}

// Checkpoints. In WAL mode a commit appends pages to the -wal file, and a
// checkpoint copies them back into the database so that the -wal can be
// written again from its start. By SQLite's default the committing
// connection does it once the -wal holds 1000 pages: that commit copies them
// and fsyncs both files, 5-10 ms on a 2-core VM, and every Save of the batch
// waits for it; at 500 saves/s that alone made the p99 of a Save 7-9 ms
// (BenchmarkSaveLatency). Instead a second connection checkpoints shortly
// after commits, beside the writer, which never waits for it (a passive
// checkpoint takes no lock a writer needs); with it the p99 was 0.8-1.2 ms.
// When the checkpointer caught up, the writer's next commit starts the -wal
// again from its beginning. Under a load too steady for it ever to catch up
// completely, the writer's own automatic checkpoint, kept as a backstop at
// walBackstop pages, copies the rest and restarts the -wal: that bounds it.

const (
	// checkpointEvery spaces checkpoints, which cost two fsyncs however
	// little they copy, and gathers the commits of a busy moment into one.
	checkpointEvery = 20 * time.Millisecond
	// walBackstop is the writer's own wal_autocheckpoint, in pages (4 KiB).
	walBackstop = 4000
	// walSizeLimit is the -wal file's journal_size_limit, in bytes: should
	// a checkpoint stalled by a slow disk let the -wal grow past it, the
	// first commit after the next restart cuts the file back to it.
	walSizeLimit = walBackstop * 4096
)

// startCheckpointer starts the checkpointer. kick tells it that the writer
// committed, and never blocks; stop ends it and closes its connection. stop
// must be called before the writer's connection closes, so that this last
// close still checkpoints and removes the -wal file. If the checkpointer
// cannot start, the writer checkpoints itself, as SQLite does by default.
func (s *Store) startCheckpointer() (kick, stop func()) {
	noop := func() {}
	db, err := sql.Open("sqlite3", dsn(s.path, url.Values{
		"mode":          {"rw"},
		"_busy_timeout": {strconv.FormatInt(busyTimeout.Milliseconds(), 10)},
	}))
	if err == nil {
		db.SetMaxOpenConns(1)
		err = db.Ping()
	}
	// wal_autocheckpoint last: the writer checkpoints less only once the
	// checkpointer is sure to run.
	for _, pragma := range []string{
		fmt.Sprintf(`PRAGMA journal_size_limit = %d`, walSizeLimit),
		fmt.Sprintf(`PRAGMA wal_autocheckpoint = %d`, walBackstop),
	} {
		if err == nil {
			_, err = s.wdb.Exec(pragma)
		}
	}
	if err != nil {
		if db != nil {
			db.Close()
		}
		s.log.Warn("logstore: no background checkpoints; commits will checkpoint", "err", err)
		return noop, noop
	}

	kicks := make(chan struct{}, 1)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer db.Close()
		var last time.Time
		for {
			select {
			case <-quit:
				return
			case <-kicks:
			}
			select {
			case <-quit:
				return
			case <-time.After(time.Until(last.Add(checkpointEvery))):
			}
			last = time.Now()
			// A busy result (another connection checkpointing) or an
			// error costs only this round: the next commit kicks again,
			// and the backstop still bounds the -wal.
			var busy, logged, copied int
			if err := db.QueryRow(`PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logged, &copied); err != nil {
				s.log.Debug("logstore: checkpoint", "err", err)
			}
		}
	}()
	kick = func() {
		select {
		case kicks <- struct{}{}:
		default: // one is pending already
		}
	}
	stop = func() {
		close(quit)
		<-done
	}
	return kick, stop
}

// wholeDatabase reports whether err concerns the database rather than one
// record: it is locked, full, read-only or failing, so every save of the
// batch would fail the same way.
func wholeDatabase(err error) bool {
	var se sqlite3.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code {
	case sqlite3.ErrBusy, sqlite3.ErrLocked, sqlite3.ErrFull, sqlite3.ErrReadonly,
		sqlite3.ErrIoErr, sqlite3.ErrCantOpen, sqlite3.ErrCorrupt, sqlite3.ErrNotADB:
		return true
	}
	return false
}
