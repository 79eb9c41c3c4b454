package logstore

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// All of the package's SQL lives in this file and in schema.go.

// timeFormat is how times are stored: UTC with fixed milliseconds, so text
// order is time order and the sqlite3 shell shows them readably.
const timeFormat = "2006-01-02T15:04:05.000Z"

// txColumns are the transactions columns Save writes, in the order of
// recordArgs and (after id) of scanRecord. The three must change together.
var txColumns = []string{
	"started_at", "ended_at", "queue_id", "client_ip", "client_name", "helo",
	"auth_user", "auth_type", "daemon", "mail_from", "from_header", "subject",
	"message_id", "size", "direction", "organization", "spf", "spf_domain",
	"dkim", "dmarc", "spam_score", "virus", "action", "reason", "reply", "error",
	"headers_added", "evidence",
}

var (
	insertTxSQL = `INSERT INTO transactions (` + strings.Join(txColumns, ", ") +
		`) VALUES (?` + strings.Repeat(", ?", len(txColumns)-1) + `)`
	updateTxSQL = `UPDATE transactions SET ` + strings.Join(txColumns, " = ?, ") +
		` = ? WHERE id = ?`
	selectTxSQL = `SELECT id, ` + strings.Join(txColumns, ", ") + ` FROM transactions`

	getTxSQL = selectTxSQL + ` WHERE id = ?`
	// Newest first; id breaks ties between transactions started in the
	// same millisecond.
	recentTxSQL = selectTxSQL + ` ORDER BY started_at DESC, id DESC LIMIT ?`
)

const (
	deleteRcptsSQL = `DELETE FROM recipients WHERE transaction_id = ?`
	insertRcptSQL  = `INSERT INTO recipients (transaction_id, address, organization, action, reason, reply)
VALUES (?, ?, ?, ?, ?, ?)`
	selectRcptCols = `SELECT transaction_id, address, organization, action, reason, reply FROM recipients`

	getRcptsSQL    = selectRcptCols + ` WHERE transaction_id = ? ORDER BY id`
	recentRcptsSQL = selectRcptCols + ` WHERE transaction_id IN
	(SELECT id FROM transactions ORDER BY started_at DESC, id DESC LIMIT ?)
ORDER BY transaction_id, id`

	userVersionSQL = `PRAGMA user_version`
	journalModeSQL = `PRAGMA journal_mode`
)

// recordArgs returns r's column values in txColumns order. It runs in the
// caller's goroutine, so the writer only executes statements.
func recordArgs(r *Record) ([]any, error) {
	evidence := r.Evidence
	if evidence == nil {
		evidence = []Evidence{} // "[]", so json_each works on every row
	}
	ev, err := json.Marshal(evidence)
	if err != nil {
		return nil, fmt.Errorf("encode evidence: %w", err)
	}
	var score sql.NullFloat64
	if r.SpamScore != nil {
		score = sql.NullFloat64{Float64: *r.SpamScore, Valid: true}
	}
	return []any{
		formatTime(r.StartedAt), formatTime(r.EndedAt), r.QueueID, r.ClientIP,
		r.ClientName, r.Helo, r.AuthUser, r.AuthType, r.Daemon, r.MailFrom,
		r.FromHeader, r.Subject, r.MessageID, r.Size, r.Direction, r.Organization,
		r.SPF, r.SPFDomain, r.DKIM, r.DMARC, score, r.Virus, r.Action, r.Reason,
		r.Reply, r.Error, joinHeaders(r.HeadersAdded), string(ev),
	}, nil
}

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface {
	Scan(dest ...any) error
}

// scanRecord reads one row of selectTxSQL.
func scanRecord(row rowScanner) (*Record, error) {
	var (
		r                          Record
		started, ended, hdrs, evid string
		score                      sql.NullFloat64
	)
	err := row.Scan(&r.ID,
		&started, &ended, &r.QueueID, &r.ClientIP,
		&r.ClientName, &r.Helo, &r.AuthUser, &r.AuthType, &r.Daemon, &r.MailFrom,
		&r.FromHeader, &r.Subject, &r.MessageID, &r.Size, &r.Direction, &r.Organization,
		&r.SPF, &r.SPFDomain, &r.DKIM, &r.DMARC, &score, &r.Virus, &r.Action, &r.Reason,
		&r.Reply, &r.Error, &hdrs, &evid)
	if err != nil {
		return nil, err
	}
	if r.StartedAt, err = parseTime(started); err != nil {
		return nil, fmt.Errorf("transaction %d: started_at: %w", r.ID, err)
	}
	if r.EndedAt, err = parseTime(ended); err != nil {
		return nil, fmt.Errorf("transaction %d: ended_at: %w", r.ID, err)
	}
	if score.Valid {
		r.SpamScore = &score.Float64
	}
	r.HeadersAdded = splitHeaders(hdrs)
	if evid != "" && evid != "[]" {
		if err := json.Unmarshal([]byte(evid), &r.Evidence); err != nil {
			return nil, fmt.Errorf("transaction %d: evidence: %w", r.ID, err)
		}
	}
	return &r, nil
}

// scanRecipient reads one row of selectRcptCols.
func scanRecipient(row rowScanner) (txID int64, rc Recipient, err error) {
	err = row.Scan(&txID, &rc.Address, &rc.Organization, &rc.Action, &rc.Reason, &rc.Reply)
	return txID, rc, err
}

// formatTime stores the zero time as "" rather than year 1, so a transaction
// that has not ended yet reads as such in the shell.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeFormat)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(timeFormat, s)
}

// headerUnfolder removes line breaks. A folded header is the same header
// unfolded (RFC 5322 section 2.2.3), and unfolding keeps the newline free
// to separate headers in the headers_added column.
var headerUnfolder = strings.NewReplacer("\r\n", "", "\n", "", "\r", "")

func joinHeaders(h []string) string {
	unfolded := make([]string, len(h))
	for i, s := range h {
		unfolded[i] = headerUnfolder.Replace(s)
	}
	return strings.Join(unfolded, "\n")
}

func splitHeaders(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
