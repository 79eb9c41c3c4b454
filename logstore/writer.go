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
// is already waiting, writes them all in one transaction, takes in the
// requests that arrived meanwhile (up to maxBatch in all) and commits once;
// with synchronous=full that is one fsync for the whole batch instead of one
// per message. If the batch fails, each request is retried in a transaction
// of its own, so a bad record fails alone and the others still commit.

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
	tx                                          *sql.Tx // set by in
}

// in returns the statements bound to tx: once per transaction rather than
// once per statement executed.
func (st *stmts) in(ctx context.Context, tx *sql.Tx) *stmts {
	return &stmts{
		insertTx:    tx.StmtContext(ctx, st.insertTx),
		updateTx:    tx.StmtContext(ctx, st.updateTx),
		deleteRcpts: tx.StmtContext(ctx, st.deleteRcpts),
		insertRcpt:  tx.StmtContext(ctx, st.insertRcpt),
		tx:          tx,
	}
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
		batch = s.commit(batch)
		clear(batch) // let answered requests be collected
		kick()
	}
}

// drain adds the requests already waiting, without waiting for more: under
// light load a save is committed at once, under heavy load batches grow.
// It is called before the transaction begins, so that a database locked by
// another process fails every waiting save at once (see commit), and again
// once the batch is written (see apply).
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

// commit writes batch, and the requests that arrive while it does (up to
// maxBatch in all), and answers every one of them. It returns the batch as
// it grew.
func (s *Store) commit(batch []*request) []*request {
	batch, ids, err := s.apply(batch, true)
	if err == nil {
		for i, req := range batch {
			req.done <- result{id: ids[i]}
		}
		return batch
	}
	if len(batch) == 1 {
		batch[0].done <- result{err: err}
		return batch
	}
	if wholeDatabase(err) {
		// Retrying one by one would wait the busy timeout once per
		// save: a batch of 100 behind a held lock would answer after
		// minutes, long after the MTA gave up on us.
		for _, req := range batch {
			req.done <- result{err: err}
		}
		return batch
	}
	s.retries.Add(1)
	s.log.Warn("logstore: batch failed, retrying its saves one by one",
		"saves", len(batch), "err", err)
	for _, req := range batch {
		_, ids, err := s.apply([]*request{req}, false)
		if err != nil {
			req.done <- result{err: err}
			continue
		}
		req.done <- result{id: ids[0]}
	}
	return batch
}

// apply writes batch in one transaction and returns it with the row ids,
// in order. With grow, the requests that arrived while it wrote join the
// transaction before it commits: under load, the sessions answered by the
// last commit queue again while the writer is still inserting, and a save
// costs less in a larger commit, which writes each changed table and index
// page once however many rows changed it (BenchmarkSave: about 50 saves
// per commit at 64 sessions instead of 35). On error, batch holds every
// request taken, written or not.
func (s *Store) apply(batch []*request, grow bool) ([]*request, []int64, error) {
	// Not a caller's ctx: the transaction is shared, and a caller giving up
	// must not abort the commit of the others.
	ctx := context.Background()
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return batch, nil, fmt.Errorf("logstore: save: begin: %w", err)
	}
	defer tx.Rollback() // no-op after Commit

	st := s.stmts.in(ctx, tx)
	ids := make([]int64, 0, cap(batch))
	for i := 0; i < len(batch); i++ {
		id, err := st.write(ctx, batch[i])
		if err != nil {
			return batch, nil, err
		}
		ids = append(ids, id)
		if grow && i == len(batch)-1 {
			batch = s.drain(batch)
		}
	}
	if err := tx.Commit(); err != nil {
		return batch, nil, fmt.Errorf("logstore: save: commit: %w", err)
	}
	s.commits.Add(1)
	return batch, ids, nil
}

// write executes one request in the statements' transaction and returns
// its row id.
func (st *stmts) write(ctx context.Context, req *request) (int64, error) {
	if req.exec != nil {
		return req.exec(ctx, st.tx)
	}
	id := req.id
	if id == 0 {
		res, err := st.insertTx.ExecContext(ctx, req.args...)
		if err != nil {
			return 0, fmt.Errorf("logstore: insert transaction: %w", err)
		}
		if id, err = res.LastInsertId(); err != nil {
			return 0, fmt.Errorf("logstore: insert transaction: %w", err)
		}
	} else {
		res, err := st.updateTx.ExecContext(ctx, req.args...)
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
		if _, err := st.deleteRcpts.ExecContext(ctx, id); err != nil {
			return 0, fmt.Errorf("logstore: update transaction %d: delete recipients: %w", id, err)
		}
	}
	for _, rc := range req.rcpts {
		if _, err := st.insertRcpt.ExecContext(ctx, id, rc.Address, rc.Organization, rc.Action, rc.Reason, rc.Reply); err != nil {
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
// Each time, the commit that reaches the backstop waits for that copy and
// two fsyncs, 10-20 ms at saturation. In BenchmarkSave at 64 sessions,
// commits slower than 3 ms took a third of the writer's time with a
// backstop of 4000 pages (and the old size limit, below); with 16000, a
// sixth.

const (
	// checkpointEvery spaces checkpoints, which cost two fsyncs however
	// little they copy, and gathers the commits of a busy moment into one.
	checkpointEvery = 20 * time.Millisecond
	// walBackstop is the writer's own wal_autocheckpoint, in pages (4 KiB):
	// under a steady flood the -wal grows to about 63 MiB (16000 frames of
	// a page and a 24-byte header), and stays far below that otherwise.
	walBackstop = 16000
	// walSizeLimit is the -wal file's journal_size_limit, in bytes: should
	// a checkpoint stalled by a slow disk let the -wal grow past it, the
	// first commit after the next restart cuts the file back to it. It is
	// twice what the backstop lets the file reach: when it was just the
	// backstop's pages, without their frame headers, every backstop also
	// cut the file, and the commits after it waited for the truncation and
	// for the file to grow again.
	walSizeLimit = 128 << 20
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
