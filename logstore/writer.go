package logstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
)

// Group commit. Every Save becomes a request on Store.reqs. The writer
// goroutine takes one request, drains whatever else is already waiting (up
// to maxBatch), writes them all in one transaction and commits once; with
// synchronous=full that is one fsync for the whole batch instead of one per
// message. If the batch fails, each request is retried in a transaction of
// its own, so a bad record fails alone and the others still commit.

// request is one Save handed to the writer. Its fields are computed in the
// caller's goroutine, so the writer never touches the caller's Record.
type request struct {
	id    int64 // 0 to insert; otherwise the row to update
	args  []any // txColumns values, then id when updating
	rcpts []Recipient
	done  chan result // buffered: the writer never waits for the caller
}

type result struct {
	id  int64
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

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.senders.Add(1)
	s.mu.Unlock()

	s.queued.Add(1)
	select {
	case s.reqs <- req:
		err = nil
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.queued.Add(-1)
	s.senders.Done()
	if err != nil {
		return err
	}

	res := <-req.done
	if res.err != nil {
		return res.err
	}
	r.ID = res.id
	return nil
}

// writer is the only user of the write connection. It runs until Close
// closes reqs, and finishes every request taken before that.
func (s *Store) writer() {
	defer close(s.writerDone)
	batch := make([]*request, 0, s.maxBatch)
	for req := range s.reqs {
		batch = s.drain(append(batch[:0], req))
		s.batches.Add(1)
		s.commit(batch)
		clear(batch) // let answered requests be collected
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
