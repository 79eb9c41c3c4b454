package logstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Lookups by the MTA's queue id, for tools that start from what the MTA
// shows (mxguard quarantine, postqueue, the mail log). Their SQL is kept
// here, next to the only code that uses it.

var (
	// Newest first, as Recent: the newest row is the likeliest owner of a
	// queue id that the MTA reuses.
	byQueueIDTxSQL    = selectTxSQL + ` WHERE queue_id = ? ORDER BY started_at DESC, id DESC`
	byQueueIDRcptsSQL = selectRcptCols + ` WHERE transaction_id IN
	(SELECT id FROM transactions WHERE queue_id = ?)
ORDER BY transaction_id, id`
)

// ByQueueID returns the transactions logged with the MTA queue id queueID,
// newest first, with their recipients; none is not an error. More than one
// row can match: Postfix reuses short queue ids (enable_long_queue_ids = no,
// the default), so callers that know when the message arrived should pick
// the row by time.
func (s *Store) ByQueueID(ctx context.Context, queueID string) ([]Record, error) {
	if queueID == "" {
		// Every connection refused before the MTA assigned an id has an
		// empty queue_id; matching them all is never what the caller means.
		return nil, errors.New("logstore: by queue id: empty queue id")
	}
	// One read transaction, so the rows and their recipients are one
	// snapshot.
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("logstore: by queue id %s: %w", queueID, err)
	}
	defer tx.Rollback()

	recs, err := queryRecords(ctx, tx, byQueueIDTxSQL, queueID)
	if err != nil {
		return nil, fmt.Errorf("logstore: by queue id %s: %w", queueID, err)
	}
	byID := make(map[int64]*Record, len(recs))
	for i := range recs {
		byID[recs[i].ID] = &recs[i]
	}
	rows, err := tx.QueryContext(ctx, byQueueIDRcptsSQL, queueID)
	if err != nil {
		return nil, fmt.Errorf("logstore: by queue id %s: recipients: %w", queueID, err)
	}
	defer rows.Close()
	for rows.Next() {
		txID, rc, err := scanRecipient(rows)
		if err != nil {
			return nil, fmt.Errorf("logstore: by queue id %s: recipients: %w", queueID, err)
		}
		if r := byID[txID]; r != nil {
			r.Recipients = append(r.Recipients, rc)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("logstore: by queue id %s: recipients: %w", queueID, err)
	}
	return recs, nil
}
