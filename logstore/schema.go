package logstore

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
)

// migrations is the schema history, oldest first. A database whose
// PRAGMA user_version is N has had migrations[0:N] applied; opening it for
// writing applies migrations[N:] and sets user_version to len(migrations).
//
// Steps are append-only: never edit a step that has shipped, add a new one.
// A step may hold several statements; all pending steps run in one
// transaction, so a failed upgrade leaves the file as it was.
var migrations = []string{
	// 1: the transaction log and its recipients.
	`
CREATE TABLE transactions (
	id           INTEGER PRIMARY KEY,
	started_at   TEXT    NOT NULL DEFAULT '',
	ended_at     TEXT    NOT NULL DEFAULT '',
	queue_id     TEXT    NOT NULL DEFAULT '',
	client_ip    TEXT    NOT NULL DEFAULT '',
	client_name  TEXT    NOT NULL DEFAULT '',
	helo         TEXT    NOT NULL DEFAULT '',
	auth_user    TEXT    NOT NULL DEFAULT '',
	auth_type    TEXT    NOT NULL DEFAULT '',
	daemon       TEXT    NOT NULL DEFAULT '',
	mail_from    TEXT    NOT NULL DEFAULT '',
	from_header  TEXT    NOT NULL DEFAULT '',
	subject      TEXT    NOT NULL DEFAULT '',
	message_id   TEXT    NOT NULL DEFAULT '',
	size         INTEGER NOT NULL DEFAULT 0,
	direction    TEXT    NOT NULL DEFAULT '',
	organization TEXT    NOT NULL DEFAULT '',
	spf          TEXT    NOT NULL DEFAULT '',
	spf_domain   TEXT    NOT NULL DEFAULT '',
	dkim         TEXT    NOT NULL DEFAULT '',
	dmarc        TEXT    NOT NULL DEFAULT '',
	spam_score   REAL,   -- NULL when the message was not scanned
	virus        TEXT    NOT NULL DEFAULT '',
	action       TEXT    NOT NULL DEFAULT '',
	reason       TEXT    NOT NULL DEFAULT '',
	reply        TEXT    NOT NULL DEFAULT '',
	error        TEXT    NOT NULL DEFAULT '',
	headers_added TEXT   NOT NULL DEFAULT '', -- one "Name: value" per line
	evidence     TEXT    NOT NULL DEFAULT '[]' -- JSON array of Evidence
);

CREATE INDEX transactions_started_at ON transactions (started_at);
CREATE INDEX transactions_mail_from ON transactions (mail_from);
CREATE INDEX transactions_queue_id ON transactions (queue_id);
CREATE INDEX transactions_action ON transactions (action, started_at);
CREATE INDEX transactions_organization ON transactions (organization, started_at);
CREATE INDEX transactions_client_ip ON transactions (client_ip);

CREATE TABLE recipients (
	id             INTEGER PRIMARY KEY,
	transaction_id INTEGER NOT NULL REFERENCES transactions (id) ON DELETE CASCADE,
	address        TEXT    NOT NULL DEFAULT '',
	organization   TEXT    NOT NULL DEFAULT '',
	action         TEXT    NOT NULL DEFAULT '',
	reason         TEXT    NOT NULL DEFAULT '',
	reply          TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX recipients_address ON recipients (address);
CREATE INDEX recipients_transaction_id ON recipients (transaction_id);
`,
}

// schemaVersion is the user_version of a fully migrated database.
func schemaVersion() int { return len(migrations) }

// migrate brings db up to schemaVersion. It reads user_version inside the
// same (immediate) transaction that applies the steps, so two processes
// opening a new file at once cannot both apply step 1.
func migrate(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // no-op after Commit

	var v int
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return err
	}
	if err := checkVersion(v); err != nil {
		return err
	}
	if v == schemaVersion() {
		return nil
	}
	for i := v; i < schemaVersion(); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("schema migration %d: %w", i+1, err)
		}
	}
	// PRAGMA takes no placeholders; schemaVersion is our own integer.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion())); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	log.Info("logstore: schema migrated", "from", v, "to", schemaVersion())
	return nil
}

// checkVersion refuses a schema written by a newer mxguard: its columns may
// mean things this version does not know, and writing to it could corrupt
// what the newer version expects.
func checkVersion(v int) error {
	if v > schemaVersion() {
		return fmt.Errorf("database schema version %d is newer than this mxguard supports (%d); upgrade mxguard or use another file", v, schemaVersion())
	}
	return nil
}
