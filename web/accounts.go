package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
	"golang.org/x/crypto/bcrypt"
)

// The console's own database: users, sessions and login events, in a
// SQLite file of their own ([web] db), apart from the transaction log, so
// that the log's retention and backups never touch accounts.

// Roles.
const (
	RoleAdmin  = "admin"  // sees, releases and deletes
	RoleViewer = "viewer" // sees only
)

// BcryptCost is the cost of password hashes: 12, about a quarter of a
// second per login on a current CPU. Tests lower it.
var BcryptCost = 12

// Password length limits: bcrypt reads at most 72 bytes, and refusing more
// beats silently ignoring the rest.
const (
	MinPassword = 10 // characters
	MaxPassword = 72 // bytes
)

var (
	// ErrNoUser is returned for an email no account has.
	ErrNoUser = errors.New("no such user")
	// ErrUserExists is returned by AddUser for an email already taken.
	ErrUserExists = errors.New("a user with this email exists")
)

// User is a console account.
type User struct {
	ID    int64
	Email string // lower case
	// Organization is the organisation whose transactions and quarantine
	// the user sees; "" for a global user, who sees every organisation.
	Organization string
	Role         string // RoleAdmin or RoleViewer
	Created      time.Time
	LastLogin    time.Time // zero when never
}

// Global reports whether u sees every organisation.
func (u *User) Global() bool { return u.Organization == "" }

// Admin reports whether u may release and delete quarantined mail.
func (u *User) Admin() bool { return u.Role == RoleAdmin }

// Sees reports whether u may see a transaction of organisation org.
// Transactions without an organisation (relay attempts, connections) are
// for global users only.
func (u *User) Sees(org string) bool { return u.Global() || (org != "" && org == u.Organization) }

// LoginEvent is one login attempt.
type LoginEvent struct {
	At     time.Time
	Email  string // as typed, lower case
	Client string // the client address (see trusted_proxies)
	OK     bool
	// Detail says why a login failed: "wrong password" or "no such
	// user", and "(now locked out)" when it was the failure that reached
	// [web] login_attempts.
	Detail string
	// Organization is the account's, when the email is one; "" otherwise.
	Organization string
}

// accountMigrations is the schema history of the accounts database, as
// logstore's: user_version N means migrations[0:N] are applied. Append
// only.
var accountMigrations = []string{
	// 1
	`
CREATE TABLE users (
	id            INTEGER PRIMARY KEY,
	email         TEXT    NOT NULL UNIQUE,        -- lower case
	organization  TEXT    NOT NULL DEFAULT '',    -- '' for global users
	global        INTEGER NOT NULL DEFAULT 0,
	role          TEXT    NOT NULL CHECK (role IN ('admin', 'viewer')),
	password_hash TEXT    NOT NULL,               -- bcrypt
	created_at    TEXT    NOT NULL,
	last_login    TEXT    NOT NULL DEFAULT '',
	CHECK ((global = 1) = (organization = ''))
);

-- token_hash is the SHA-256 of the cookie's token: the file alone opens no
-- session.
CREATE TABLE sessions (
	token_hash  TEXT    PRIMARY KEY,
	user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	csrf        TEXT    NOT NULL,
	created_at  TEXT    NOT NULL,
	last_seen   TEXT    NOT NULL,
	flash       TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user_id ON sessions (user_id);

CREATE TABLE logins (
	id           INTEGER PRIMARY KEY,
	at           TEXT    NOT NULL,
	email        TEXT    NOT NULL,
	client       TEXT    NOT NULL,
	throttle_key TEXT    NOT NULL,  -- the client's address or IPv6 /64
	ok           INTEGER NOT NULL,
	detail       TEXT    NOT NULL DEFAULT '',
	organization TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX logins_at ON logins (at);
CREATE INDEX logins_email ON logins (email, at);
CREATE INDEX logins_throttle_key ON logins (throttle_key, at);
`,
}

// timeFormat is how times are stored: UTC text that sorts, as in the
// transaction log.
const timeFormat = "2006-01-02T15:04:05.000Z"

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeFormat)
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(timeFormat, s)
	return t
}

// Accounts is the open accounts database. Its methods are safe for
// concurrent use.
type Accounts struct {
	db   *sql.DB
	path string

	dummyOnce sync.Once
	dummyHash []byte
}

// OpenAccounts opens or creates the accounts database at path (mode 0600:
// it holds password hashes) and migrates its schema.
func OpenAccounts(path string) (*Accounts, error) {
	if path == "" {
		return nil, errors.New("web: accounts database: empty path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("web: accounts database: %w", err)
	}
	// Create it 0600 before SQLite does (0644 under the usual umask); the
	// -wal and -shm files take the database's mode.
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
		f.Close()
	} else if !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("web: accounts database: %w", err)
	}
	q := url.Values{
		"_journal_mode": {"WAL"},
		"_synchronous":  {"normal"},
		"_foreign_keys": {"on"},
		"_busy_timeout": {"5000"},
		"_txlock":       {"immediate"},
	}
	db, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("web: accounts database %s: %w", path, err)
	}
	a := &Accounts{db: db, path: path}
	if err := a.migrate(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("web: accounts database %s: %w", path, err)
	}
	return a, nil
}

// Close closes the database.
func (a *Accounts) Close() error { return a.db.Close() }

func (a *Accounts) migrate(ctx context.Context) error {
	var mode string
	if err := a.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, not WAL", mode)
	}
	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return err
	}
	if v > len(accountMigrations) {
		return fmt.Errorf("schema version %d is newer than this mxguard supports (%d)", v, len(accountMigrations))
	}
	if v == len(accountMigrations) {
		return nil
	}
	for i := v; i < len(accountMigrations); i++ {
		if _, err := tx.ExecContext(ctx, accountMigrations[i]); err != nil {
			return fmt.Errorf("schema migration %d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, len(accountMigrations))); err != nil {
		return err
	}
	return tx.Commit()
}

// NormalizeEmail lower-cases an account's email and checks its form.
func NormalizeEmail(email string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(email))
	at := strings.LastIndexByte(e, '@')
	switch {
	case e == "":
		return "", errors.New("empty email")
	case len(e) > 254 || !utf8.ValidString(e):
		return "", fmt.Errorf("%q is not an email address", email)
	case at <= 0 || at == len(e)-1 || strings.ContainsFunc(e, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return "", fmt.Errorf("%q is not an email address (want name@example.com)", email)
	}
	return e, nil
}

// CheckPassword says what is wrong with a new password, if anything.
func CheckPassword(pw string) error {
	switch {
	case utf8.RuneCountInString(pw) < MinPassword:
		return fmt.Errorf("the password is too short: at least %d characters", MinPassword)
	case len(pw) > MaxPassword:
		return fmt.Errorf("the password is too long: at most %d bytes", MaxPassword)
	}
	return nil
}

func hashPassword(pw string) (string, error) {
	if err := CheckPassword(pw); err != nil {
		return "", err
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), BcryptCost)
	return string(h), err
}

// AddUser creates an account. org is "" for a global user; role is
// RoleAdmin or RoleViewer. That org exists is for the caller to check
// (against the configuration).
func (a *Accounts) AddUser(ctx context.Context, email, org, role, password string, now time.Time) (*User, error) {
	email, err := NormalizeEmail(email)
	if err != nil {
		return nil, err
	}
	if role != RoleAdmin && role != RoleViewer {
		return nil, fmt.Errorf("role %q: want %s or %s", role, RoleAdmin, RoleViewer)
	}
	hash, err := hashPassword(password)
	if err != nil {
		return nil, err
	}
	global := 0
	if org == "" {
		global = 1
	}
	res, err := a.db.ExecContext(ctx, `INSERT INTO users (email, organization, global, role, password_hash, created_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (email) DO NOTHING`, email, org, global, role, hash, formatTime(now))
	if err != nil {
		return nil, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return nil, err
	} else if n == 0 {
		return nil, fmt.Errorf("%s: %w", email, ErrUserExists)
	}
	return a.User(ctx, email)
}

// SetPassword changes a user's password and ends every session of theirs.
func (a *Accounts) SetPassword(ctx context.Context, email, password string) error {
	email, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	hash, err := hashPassword(password)
	if err != nil {
		return err
	}
	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var id int64
	if err := tx.QueryRowContext(ctx, `SELECT id FROM users WHERE email = ?`, email).Scan(&id); errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", email, ErrNoUser)
	} else if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = ? WHERE id = ?`, hash, id); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = ?`, id); err != nil {
		return err
	}
	return tx.Commit()
}

// DeleteUser deletes an account and its sessions.
func (a *Accounts) DeleteUser(ctx context.Context, email string) error {
	email, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	res, err := a.db.ExecContext(ctx, `DELETE FROM users WHERE email = ?`, email)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%s: %w", email, ErrNoUser)
	}
	return nil
}

const userCols = `id, email, organization, role, created_at, last_login`

func scanUser(row interface{ Scan(...any) error }) (*User, error) {
	var (
		u              User
		created, login string
	)
	if err := row.Scan(&u.ID, &u.Email, &u.Organization, &u.Role, &created, &login); err != nil {
		return nil, err
	}
	u.Created, u.LastLogin = parseTime(created), parseTime(login)
	return &u, nil
}

// User returns the account with this email.
func (a *Accounts) User(ctx context.Context, email string) (*User, error) {
	email, err := NormalizeEmail(email)
	if err != nil {
		return nil, err
	}
	u, err := scanUser(a.db.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE email = ?`, email))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%s: %w", email, ErrNoUser)
	}
	return u, err
}

// Users lists every account, by email.
func (a *Accounts) Users(ctx context.Context) ([]User, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT `+userCols+` FROM users ORDER BY email`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var us []User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		us = append(us, *u)
	}
	return us, rows.Err()
}

// dummy returns the hash compared against when the email is unknown, so
// that a login takes as long whether or not the account exists.
func (a *Accounts) dummy() []byte {
	a.dummyOnce.Do(func() {
		a.dummyHash, _ = bcrypt.GenerateFromPassword([]byte(randomToken()), BcryptCost)
	})
	return a.dummyHash
}

// verify checks email and password: the user, or nil and why not.
func (a *Accounts) verify(ctx context.Context, email, password string) (*User, string, error) {
	var (
		hash string
		u    *User
	)
	row := a.db.QueryRowContext(ctx, `SELECT `+userCols+`, password_hash FROM users WHERE email = ?`, email)
	var (
		uu             User
		created, login string
	)
	err := row.Scan(&uu.ID, &uu.Email, &uu.Organization, &uu.Role, &created, &login, &hash)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		// The same work as for a real account.
		bcrypt.CompareHashAndPassword(a.dummy(), []byte(password))
		return nil, "no such user", nil
	case err != nil:
		return nil, "", err
	}
	uu.Created, uu.LastLogin = parseTime(created), parseTime(login)
	u = &uu
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) != nil {
		return u, "wrong password", nil
	}
	return u, "", nil
}

// Sessions.

// session is a logged-in browser.
type session struct {
	user      *User
	tokenHash string
	csrf      string
	created   time.Time
	lastSeen  time.Time
	flash     string
}

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// newSession creates a session for u and returns the cookie's token.
func (a *Accounts) newSession(ctx context.Context, u *User, now time.Time) (string, error) {
	token := randomToken()
	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO sessions (token_hash, user_id, csrf, created_at, last_seen) VALUES (?, ?, ?, ?, ?)`,
		hashToken(token), u.ID, randomToken(), formatTime(now), formatTime(now)); err != nil {
		return "", err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE users SET last_login = ? WHERE id = ?`, formatTime(now), u.ID); err != nil {
		return "", err
	}
	return token, tx.Commit()
}

// session returns the live session of token and marks it used; nil when
// there is none (never was, logged out, expired: an expired one is
// deleted).
func (a *Accounts) session(ctx context.Context, token string, now time.Time, idle, max time.Duration) (*session, error) {
	if token == "" || len(token) > 100 {
		return nil, nil
	}
	s := &session{tokenHash: hashToken(token), user: &User{}}
	var created, seen, userCreated, login string
	err := a.db.QueryRowContext(ctx, `SELECT s.csrf, s.created_at, s.last_seen, s.flash,
		u.id, u.email, u.organization, u.role, u.created_at, u.last_login
		FROM sessions AS s JOIN users AS u ON u.id = s.user_id WHERE s.token_hash = ?`, s.tokenHash).
		Scan(&s.csrf, &created, &seen, &s.flash, &s.user.ID, &s.user.Email, &s.user.Organization, &s.user.Role, &userCreated, &login)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s.created, s.lastSeen = parseTime(created), parseTime(seen)
	s.user.Created, s.user.LastLogin = parseTime(userCreated), parseTime(login)
	if !now.Before(s.created.Add(max)) || !now.Before(s.lastSeen.Add(idle)) {
		_, err := a.db.ExecContext(ctx, `DELETE FROM sessions WHERE token_hash = ?`, s.tokenHash)
		return nil, err
	}
	if _, err := a.db.ExecContext(ctx, `UPDATE sessions SET last_seen = ? WHERE token_hash = ?`, formatTime(now), s.tokenHash); err != nil {
		return nil, err
	}
	s.lastSeen = now
	return s, nil
}

// endSession deletes a session (logout).
func (a *Accounts) endSession(ctx context.Context, tokenHash string) error {
	_, err := a.db.ExecContext(ctx, `DELETE FROM sessions WHERE token_hash = ?`, tokenHash)
	return err
}

// setFlash keeps a message for the session's next page.
func (a *Accounts) setFlash(ctx context.Context, tokenHash, msg string) error {
	_, err := a.db.ExecContext(ctx, `UPDATE sessions SET flash = ? WHERE token_hash = ?`, msg, tokenHash)
	return err
}

// takeFlash clears the session's message (the caller has read it).
func (a *Accounts) takeFlash(ctx context.Context, tokenHash string) error {
	_, err := a.db.ExecContext(ctx, `UPDATE sessions SET flash = '' WHERE token_hash = ? AND flash <> ''`, tokenHash)
	return err
}

// pruneSessions deletes expired sessions, and login events older than
// keepLogins.
func (a *Accounts) prune(ctx context.Context, now time.Time, idle, max, keepLogins time.Duration) error {
	if _, err := a.db.ExecContext(ctx, `DELETE FROM sessions WHERE created_at < ? OR last_seen < ?`,
		formatTime(now.Add(-max)), formatTime(now.Add(-idle))); err != nil {
		return err
	}
	_, err := a.db.ExecContext(ctx, `DELETE FROM logins WHERE at < ?`, formatTime(now.Add(-keepLogins)))
	return err
}

// Login events and throttling.

// recordLogin writes a login event.
func (a *Accounts) recordLogin(ctx context.Context, ev LoginEvent, throttleKey string) error {
	ok := 0
	if ev.OK {
		ok = 1
	}
	_, err := a.db.ExecContext(ctx, `INSERT INTO logins (at, email, client, throttle_key, ok, detail, organization) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		formatTime(ev.At), ev.Email, ev.Client, throttleKey, ok, ev.Detail, ev.Organization)
	return err
}

// failures counts the failed logins since since, for an email (failures
// since its last successful login only) or for a client.
func (a *Accounts) failures(ctx context.Context, email, throttleKey string, since time.Time) (byEmail, byClient int, err error) {
	err = a.db.QueryRowContext(ctx, `SELECT count(*) FROM logins WHERE email = ? AND ok = 0 AND at >= ?
		AND at > coalesce((SELECT max(at) FROM logins WHERE email = ? AND ok = 1), '')`,
		email, formatTime(since), email).Scan(&byEmail)
	if err != nil {
		return 0, 0, err
	}
	err = a.db.QueryRowContext(ctx, `SELECT count(*) FROM logins WHERE throttle_key = ? AND ok = 0 AND at >= ?`,
		throttleKey, formatTime(since)).Scan(&byClient)
	return byEmail, byClient, err
}

// FailedLogins returns the newest failed logins since since, at most
// limit; org "" returns every one, else those for org's accounts only.
func (a *Accounts) FailedLogins(ctx context.Context, org string, since time.Time, limit int) ([]LoginEvent, error) {
	q := `SELECT at, email, client, ok, detail, organization FROM logins WHERE ok = 0 AND at >= ?`
	args := []any{formatTime(since)}
	if org != "" {
		q += ` AND organization = ?`
		args = append(args, org)
	}
	q += ` ORDER BY at DESC, id DESC LIMIT ?`
	rows, err := a.db.QueryContext(ctx, q, append(args, limit)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var evs []LoginEvent
	for rows.Next() {
		var (
			ev LoginEvent
			at string
		)
		if err := rows.Scan(&at, &ev.Email, &ev.Client, &ev.OK, &ev.Detail, &ev.Organization); err != nil {
			return nil, err
		}
		ev.At = parseTime(at)
		evs = append(evs, ev)
	}
	return evs, rows.Err()
}
