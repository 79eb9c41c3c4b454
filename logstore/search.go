package logstore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// The queries behind mxguard log search, show and stats, and the web
// console. Every filter that can use one of the schema's indexes does; the
// rest (a domain, a subject, a client network) narrow what the indexed
// conditions leave, and docs/log.md has the figures. Their SQL lives in this
// file, next to the only code that uses it.

// DefaultLimit is how many transactions Search and After return when
// Filter.Limit is zero.
const DefaultLimit = 50

// Filter selects transactions. Its zero value selects every transaction;
// each field that is set narrows the selection.
type Filter struct {
	// Since and Until bound started_at: Since <= started_at < Until.
	Since, Until time.Time

	// From is the envelope sender: an address, "@domain" for every
	// address of exactly that domain, or "<>" for the null sender (not
	// the connections that never sent MAIL FROM). Matching ignores ASCII
	// case.
	From string
	// To is a recipient, in the same forms as From ("<>" excepted).
	To string

	// Client selects the client addresses in the network; a single
	// address is a /32 or a /128. The zero Prefix selects every client.
	Client netip.Prefix

	Action       string // exact: accept, tag, quarantine, tempfail, reject, discard, aborted
	Organization string // exact
	QueueID      string // exact: queue ids are case-sensitive
	AuthUser     string // the SMTP AUTH login; matching ignores ASCII case

	// Subject is a substring of the Subject header, decoded (RFC 2047) and
	// compared ignoring case.
	Subject string

	// Limit caps the number of transactions returned; 0 means
	// DefaultLimit.
	Limit int
}

func (f *Filter) limit() (int, error) {
	switch {
	case f.Limit == 0:
		return DefaultLimit, nil
	case f.Limit < 0:
		return 0, fmt.Errorf("limit %d is negative", f.Limit)
	}
	return f.Limit, nil
}

// Search returns the transactions that match f, newest first, with their
// recipients: the newest f.Limit of them when more match.
func (s *Store) Search(ctx context.Context, f Filter) ([]Record, error) {
	recs, err := s.search(ctx, f, searchNewest, 0)
	if err != nil {
		return nil, fmt.Errorf("logstore: search: %w", err)
	}
	return recs, nil
}

// After returns the transactions with an id above afterID that match f,
// oldest (lowest id) first, with their recipients: at most f.Limit of
// them, so a caller that is behind reads in bounded batches. Ids grow in
// the order rows are first written, so a reader can page through new rows
// by passing the last id it got. It does not see later updates of rows it
// has returned; Follow does.
func (s *Store) After(ctx context.Context, afterID int64, f Filter) ([]Record, error) {
	recs, err := s.search(ctx, f, searchAfter, afterID)
	if err != nil {
		return nil, fmt.Errorf("logstore: after %d: %w", afterID, err)
	}
	return recs, nil
}

// searchOrder is the order of a search's results and what it starts from.
type searchOrder int

const (
	searchNewest searchOrder = iota // started_at DESC, id DESC
	searchAfter                     // id > afterID, id ASC
)

// search runs in one read transaction, so the rows, their recipients and
// the address lookups behind them are one snapshot.
func (s *Store) search(ctx context.Context, f Filter, order searchOrder, afterID int64) ([]Record, error) {
	limit, err := f.limit()
	if err != nil {
		return nil, err
	}
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	q, err := buildQuery(ctx, tx, f)
	if err != nil || q.none {
		return nil, err
	}
	switch order {
	case searchAfter:
		q.where = append(q.where, `t.id > ?`)
		q.args = append(q.args, afterID)
		q.order = `t.id`
	default:
		q.order = `t.started_at DESC, t.id DESC`
	}
	ids, err := q.ids(ctx, tx, limit)
	if err != nil {
		return nil, err
	}
	return recordsByID(ctx, tx, ids)
}

// query is a search under construction: SQL conditions on transactions
// AS t, their arguments, and the checks SQLite cannot make that run in Go
// on what the SQL conditions leave.
type query struct {
	where []string
	args  []any
	order string

	client  netip.Prefix // when the SQL condition is wider than the network
	subject string       // lower case; "" when not filtered

	// none is set when the filter cannot match anything, e.g. an address
	// that is not in the index at all: the search then reads nothing.
	none bool
}

// querier is *sql.Tx or *sql.DB.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Address lookups in the indexes on transactions.mail_from and
// recipients.address; see spellings.
const (
	nextMailFromSQL = `SELECT mail_from FROM transactions WHERE mail_from >= ? ORDER BY mail_from LIMIT 1`
	nextAddressSQL  = `SELECT address FROM recipients WHERE address >= ? ORDER BY address LIMIT 1`
)

// buildQuery turns f into SQL conditions, most selective index first.
func buildQuery(ctx context.Context, db querier, f Filter) (*query, error) {
	q := &query{}
	add := func(cond string, args ...any) {
		q.where = append(q.where, cond)
		q.args = append(q.args, args...)
	}
	if !f.Since.IsZero() {
		add(`t.started_at >= ?`, formatTime(f.Since))
	}
	if !f.Until.IsZero() {
		add(`t.started_at < ?`, formatTime(f.Until))
	}
	if f.Action != "" {
		add(`t.action = ?`, f.Action)
	}
	if f.Organization != "" {
		add(`t.organization = ?`, f.Organization)
	}
	if f.QueueID != "" {
		add(`t.queue_id = ?`, f.QueueID)
	}
	if f.AuthUser != "" {
		// No index on auth_user: its own condition never drives a search,
		// so NOCASE costs nothing.
		add(`t.auth_user = ? COLLATE NOCASE`, f.AuthUser)
	}

	switch from := f.From; {
	case from == "":
	case from == "<>":
		// Connections that never sent MAIL FROM have an empty sender
		// too, but no evidence: every transaction records its first
		// check at MAIL FROM.
		add(`t.mail_from = '' AND t.evidence <> '[]'`)
	case strings.HasPrefix(from, "@"):
		if len(from) == 1 {
			return nil, errors.New(`sender "@": give a domain after the @`)
		}
		// A suffix cannot use the index; the other conditions bound the scan.
		add(`t.mail_from LIKE ? ESCAPE '\'`, "%"+escapeLike(from))
	default:
		found, err := spellings(ctx, db, nextMailFromSQL, from)
		if err != nil {
			return nil, fmt.Errorf("sender %s: %w", from, err)
		}
		if len(found) == 0 {
			q.none = true
			return q, nil
		}
		add(`t.mail_from IN (`+placeholders(len(found))+`)`, anySlice(found)...)
	}

	switch to := f.To; {
	case to == "":
	case to == "<>":
		return nil, errors.New(`recipient "<>": the null address is only a sender`)
	case strings.HasPrefix(to, "@"):
		if len(to) == 1 {
			return nil, errors.New(`recipient "@": give a domain after the @`)
		}
		// EXISTS stops at the first matching recipient of each candidate,
		// which suits a domain that most mail goes to.
		add(`EXISTS (SELECT 1 FROM recipients AS r WHERE r.transaction_id = t.id AND r.address LIKE ? ESCAPE '\')`,
			"%"+escapeLike(to))
	default:
		found, err := spellings(ctx, db, nextAddressSQL, to)
		if err != nil {
			return nil, fmt.Errorf("recipient %s: %w", to, err)
		}
		if len(found) == 0 {
			q.none = true
			return q, nil
		}
		add(`t.id IN (SELECT r.transaction_id FROM recipients AS r WHERE r.address IN (`+placeholders(len(found))+`))`,
			anySlice(found)...)
	}

	if f.Client.IsValid() {
		p := f.Client.Masked()
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			// The log stores IPv4 clients unmapped.
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.IsSingleIP() {
			add(`t.client_ip = ?`, p.Addr().String())
		} else {
			// client_ip is text: select the addresses whose text starts
			// like the network's, a range of the index, and check the
			// network exactly in Go.
			if prefix := textPrefix(p); prefix != "" {
				add(`t.client_ip >= ? AND t.client_ip < ?`, prefix, prefixEnd(prefix))
			}
			q.client = p
		}
	}

	if f.Subject != "" {
		q.subject = strings.ToLower(f.Subject)
		// SQLite narrows without decoding: the plain text must contain the
		// longest ASCII run of the words (LIKE ignores ASCII case, and
		// folds nothing else), and encoded words (RFC 2047, "=?...") go
		// to Go, which decodes them. Go then checks every candidate.
		if run := longestASCIIRun(f.Subject); run != "" {
			add(`(t.subject LIKE ? ESCAPE '\' OR t.subject LIKE '%=?%')`, "%"+escapeLike(run)+"%")
		}
	}
	return q, nil
}

// filtersInGo reports whether some rows the SQL selects may still fail the
// filter, so that LIMIT must wait until Go has checked them.
func (q *query) filtersInGo() bool { return q.client.IsValid() || q.subject != "" }

// sql returns the candidate query: ids, plus what Go checks.
func (q *query) sql() string {
	text := `SELECT t.id, t.client_ip, t.subject FROM transactions AS t`
	if len(q.where) > 0 {
		text += ` WHERE ` + strings.Join(q.where, ` AND `)
	}
	text += ` ORDER BY ` + q.order
	if !q.filtersInGo() {
		text += ` LIMIT ?`
	}
	return text
}

// ids runs the candidate query and returns the ids of up to limit matches,
// in the query's order. Rows are read one at a time and only their id,
// client and subject, so memory stays bounded by limit whatever the scan.
func (q *query) ids(ctx context.Context, db querier, limit int) ([]int64, error) {
	args := q.args
	if !q.filtersInGo() {
		args = append(slices.Clip(args), limit)
	}
	rows, err := db.QueryContext(ctx, q.sql(), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	for len(ids) < limit && rows.Next() {
		var (
			id              int64
			client, subject string
		)
		if err := rows.Scan(&id, &client, &subject); err != nil {
			return nil, err
		}
		if q.matchesInGo(client, subject) {
			ids = append(ids, id)
		}
	}
	return ids, rows.Err()
}

func (q *query) matchesInGo(client, subject string) bool {
	if q.client.IsValid() {
		ip, err := netip.ParseAddr(client)
		if err != nil || !q.client.Contains(ip.Unmap()) {
			return false
		}
	}
	if q.subject != "" && !strings.Contains(strings.ToLower(DecodeHeader(subject)), q.subject) {
		return false
	}
	return true
}

// recordsByID reads the transactions with the given ids, in that order,
// with their recipients. The ids travel as one JSON array parameter, so
// any number of them is one statement.
func recordsByID(ctx context.Context, db querier, ids []int64) ([]Record, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, byIDsTxSQL, string(list))
	if err != nil {
		return nil, err
	}
	byID := make(map[int64]*Record, len(ids))
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		byID[r.ID] = r
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}

	rows, err = db.QueryContext(ctx, byIDsRcptsSQL, string(list))
	if err != nil {
		return nil, fmt.Errorf("recipients: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		txID, rc, err := scanRecipient(rows)
		if err != nil {
			return nil, fmt.Errorf("recipients: %w", err)
		}
		if r := byID[txID]; r != nil {
			r.Recipients = append(r.Recipients, rc)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("recipients: %w", err)
	}

	recs := make([]Record, 0, len(ids))
	for _, id := range ids {
		if r := byID[id]; r != nil { // gone meanwhile (pruned): skip it
			recs = append(recs, *r)
		}
	}
	return recs, nil
}

var (
	byIDsTxSQL    = selectTxSQL + ` WHERE id IN (SELECT value FROM json_each(?))`
	byIDsRcptsSQL = selectRcptCols + ` WHERE transaction_id IN (SELECT value FROM json_each(?)) ORDER BY transaction_id, id`
)

// spellings returns the values of an indexed address column that equal
// addr ignoring ASCII case, using only the index (next is nextMailFromSQL
// or nextAddressSQL: the first value at or after its argument).
//
// The schema indexes addresses as they were given (BINARY collation), and
// case-insensitive SQL (NOCASE, LIKE, lower()) cannot use such an index:
// every search for an address would read the whole table. Instead this
// walks the index like a skip scan. The spellings of addr (each letter
// upper or lower case) are a set of strings in byte order; we seek to the
// smallest spelling, and each value found either is a spelling (kept) or
// tells us the next spelling that can follow it, so every seek skips a
// whole range of other addresses. It takes a few index seeks, not a scan:
// see TestSpellings and docs/log.md.
func spellings(ctx context.Context, db querier, next, addr string) ([]string, error) {
	var found []string
	for at, ok := firstSpelling(addr), true; ok; {
		var v string
		err := db.QueryRowContext(ctx, next, at).Scan(&v)
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return nil, err
		}
		if equalASCIIFold(v, addr) {
			found = append(found, v)
		}
		at, ok = nextSpelling(v, addr)
	}
	return found, nil
}

// spellingOptions are the bytes that may stand at position i of a spelling
// of addr, in increasing order: upper and lower case for an ASCII letter,
// else the byte itself.
func spellingOptions(addr string, i int) (lo, hi byte) {
	c := addr[i]
	switch {
	case 'a' <= c && c <= 'z':
		return c - 'a' + 'A', c
	case 'A' <= c && c <= 'Z':
		return c, c - 'A' + 'a'
	}
	return c, c
}

// firstSpelling is the smallest spelling of addr: every letter upper case.
func firstSpelling(addr string) string {
	b := []byte(addr)
	for i := range b {
		b[i], _ = spellingOptions(addr, i)
	}
	return string(b)
}

// nextSpelling returns the smallest spelling of addr that is greater than
// v, and false when there is none.
func nextSpelling(v, addr string) (string, bool) {
	n := len(addr)
	// p: how far v runs along some spelling.
	p := 0
	for p < n && p < len(v) {
		lo, hi := spellingOptions(addr, p)
		if v[p] != lo && v[p] != hi {
			break
		}
		p++
	}
	// completeFrom(prefix) extends a prefix by the smallest option at
	// each later position.
	completeFrom := func(prefix []byte) string {
		for i := len(prefix); i < n; i++ {
			lo, _ := spellingOptions(addr, i)
			prefix = append(prefix, lo)
		}
		return string(prefix)
	}
	switch {
	case p == len(v) && p < n:
		// v is a proper prefix of spellings: the smallest of them is
		// greater than v.
		return completeFrom([]byte(v)), true
	case p < n:
		// v leaves the spellings at p: the next spelling takes a larger
		// option at p if there is one, else at an earlier position.
		lo, hi := spellingOptions(addr, p)
		if v[p] < lo {
			return completeFrom(append([]byte(v[:p]), lo)), true
		}
		if v[p] < hi {
			return completeFrom(append([]byte(v[:p]), hi)), true
		}
	}
	// Every spelling starting with v[:p] is at most v: the next one
	// changes the last position before p that can still grow.
	for i := min(p, n) - 1; i >= 0; i-- {
		if _, hi := spellingOptions(addr, i); v[i] < hi {
			return completeFrom(append([]byte(v[:i]), hi)), true
		}
	}
	return "", false
}

// equalASCIIFold reports whether a and b differ at most in the case of
// ASCII letters: exactly the spellings the index walk looks for (SQLite's
// NOCASE and LIKE fold the same way).
func equalASCIIFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		if lowerASCII(a[i]) != lowerASCII(b[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// textPrefix returns text that every address of p starts with when written
// as the log writes it (netip's String), or "" when there is none to use.
// Only whole IPv4 octets and leading non-zero IPv6 groups count: a zero
// IPv6 group may be written "::", and an octet's digits do not follow the
// prefix length.
func textPrefix(p netip.Prefix) string {
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		var s strings.Builder
		for i := range min(p.Bits()/8, 3) { // the last octet has no "." after it
			fmt.Fprintf(&s, "%d.", b[i])
		}
		return s.String()
	}
	b := a.As16()
	var s strings.Builder
	for i := range min(p.Bits()/16, 7) { // nor the last group a ":"
		g := uint16(b[2*i])<<8 | uint16(b[2*i+1])
		if g == 0 {
			break
		}
		fmt.Fprintf(&s, "%x:", g)
	}
	return s.String()
}

// prefixEnd is the smallest string greater than every string starting
// with prefix, which ends in '.' or ':'.
func prefixEnd(prefix string) string {
	return prefix[:len(prefix)-1] + string(prefix[len(prefix)-1]+1)
}

// escapeLike escapes LIKE's wildcards for ESCAPE '\'.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// longestASCIIRun returns the longest run of ASCII characters in s.
func longestASCIIRun(s string) string {
	best, start := "", 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] >= utf8.RuneSelf {
			if i-start > len(best) {
				best = s[start:i]
			}
			start = i + 1
		}
	}
	return strings.TrimSpace(best)
}

// DecodeHeader decodes the RFC 2047 encoded words of a header value as the
// log stores it (the milter keeps headers as they came), for display and
// for Filter.Subject. Text that does not decode is returned as it is.
func DecodeHeader(v string) string {
	if !strings.Contains(v, "=?") {
		return v
	}
	d, err := headerDecoder.DecodeHeader(v)
	if err != nil {
		return v
	}
	return d
}

// headerDecoder knows UTF-8, ISO-8859-1 and US-ASCII, the charsets of
// nearly all subjects; others stay encoded.
var headerDecoder = &mime.WordDecoder{}

// Follow: printing rows as they are written.

// followWindow is how long after it started a transaction is watched for
// changes. The milter writes a transaction's row when a recipient is
// refused and rewrites it at the end; a transaction that takes longer than
// this between the two is reported at its first write only.
const followWindow = 15 * time.Minute

// Follower reports transactions as they are written: each new row, and
// again each row that changes while it is being watched (a transaction the
// milter wrote at a refused RCPT TO and completes at end of message).
// Memory is bounded by the transactions of the last followWindow.
type Follower struct {
	s      *Store
	f      Filter
	lastID int64            // every row above it is new
	seen   map[int64]string // id -> ended_at as last read, of the rows watched
}

const (
	// stampsSQL lists what Next compares: the rows being watched and
	// every row written since. The OR is two index lookups (started_at,
	// and the rowid).
	stampsSQL = `SELECT id, ended_at FROM transactions WHERE started_at >= ? OR id > ?`
	maxIDSQL  = `SELECT coalesce(max(id), 0) FROM transactions`
)

// Follow starts following the transactions that match f; f.Limit caps
// each Next (0: DefaultLimit). Only what is written or changed after this
// call is reported.
func (s *Store) Follow(ctx context.Context, f Filter) (*Follower, error) {
	if _, err := f.limit(); err != nil {
		return nil, fmt.Errorf("logstore: follow: %w", err)
	}
	fl := &Follower{s: s, f: f}
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("logstore: follow: %w", err)
	}
	defer tx.Rollback()
	if err := tx.QueryRowContext(ctx, maxIDSQL).Scan(&fl.lastID); err != nil {
		return nil, fmt.Errorf("logstore: follow: %w", err)
	}
	if fl.seen, err = fl.stamps(ctx, tx); err != nil {
		return nil, fmt.Errorf("logstore: follow: %w", err)
	}
	return fl, nil
}

func (fl *Follower) stamps(ctx context.Context, db querier) (map[int64]string, error) {
	rows, err := db.QueryContext(ctx, stampsSQL, formatTime(time.Now().Add(-followWindow)), fl.lastID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := make(map[int64]string)
	for rows.Next() {
		var (
			id    int64
			ended string
		)
		if err := rows.Scan(&id, &ended); err != nil {
			return nil, err
		}
		m[id] = ended
	}
	return m, rows.Err()
}

// Next returns the transactions matching the filter that were written or
// changed since the previous call (or since Follow), lowest id first, at
// most the filter's limit; the rest wait for the next call. Call it
// periodically.
func (fl *Follower) Next(ctx context.Context) ([]Record, error) {
	limit, _ := fl.f.limit() // checked by Follow
	tx, err := fl.s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("logstore: follow: %w", err)
	}
	defer tx.Rollback()

	stamps, err := fl.stamps(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("logstore: follow: %w", err)
	}
	var changed []int64
	for id, ended := range stamps {
		if old, ok := fl.seen[id]; !ok || old != ended {
			changed = append(changed, id)
		}
		fl.lastID = max(fl.lastID, id)
	}
	slices.Sort(changed)

	// The filter's address lookups must see the new rows too, so they are
	// redone for each call.
	q, err := buildQuery(ctx, tx, fl.f)
	if err != nil {
		return nil, fmt.Errorf("logstore: follow: %w", err)
	}
	var out []Record
	done := 0 // changed[:done] are reported or do not match
	const chunk = 500
	for done < len(changed) && len(out) < limit {
		ids := changed[done:min(done+chunk, len(changed))]
		recs, err := q.among(ctx, tx, ids)
		if err != nil {
			return nil, fmt.Errorf("logstore: follow: %w", err)
		}
		for _, r := range recs {
			if len(out) == limit {
				// Not reported yet: the next call finds it changed again.
				ids = ids[:slices.Index(ids, r.ID)]
				break
			}
			out = append(out, r)
		}
		done += len(ids)
	}
	if done < len(changed) {
		// What is left is found changed again next time: forget it, and
		// keep it above lastID, since a row that started before the
		// window is watched only while it is new.
		for _, id := range changed[done:] {
			delete(stamps, id)
		}
		fl.lastID = min(fl.lastID, changed[done]-1)
	}
	fl.seen = stamps
	return out, nil
}

// among returns the transactions among ids (sorted) that match q, by id.
func (q *query) among(ctx context.Context, db querier, ids []int64) ([]Record, error) {
	if q.none || len(ids) == 0 {
		return nil, nil
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return nil, err
	}
	sub := *q
	sub.where = append(slices.Clip(q.where), `t.id IN (SELECT value FROM json_each(?))`)
	sub.args = append(slices.Clip(q.args), string(list))
	sub.order = `t.id`
	matched, err := sub.ids(ctx, db, len(ids))
	if err != nil {
		return nil, err
	}
	return recordsByID(ctx, db, matched)
}

// Stats.

// StatsFilter selects the transactions Stats counts.
type StatsFilter struct {
	Since, Until time.Time // started_at; zero Until means now
	Organization string    // exact; "" counts every organisation
	// By is "hour" or "day" for a time series of counts per action, ""
	// for none.
	By string
	// Top is the length of the top lists; 0 means 10.
	Top int
}

// Stats are counts over the transactions of a period.
type Stats struct {
	Since, Until time.Time // the period counted; Since is zero for "from the first row"
	Total        int64

	Actions []Count       // per action, most frequent first
	Reasons []ReasonCount // per action and reason, most frequent first

	// Among rejected transactions: the envelope senders (lower case; the
	// null sender is not ranked) and the client networks (IPv4 /24, IPv6
	// /48; "local" for clients without an address).
	TopSenders  []Count
	TopNetworks []Count

	Series []Bucket // with StatsFilter.By: every bucket of the period, oldest first
}

// Count is how many transactions have a key (an action, a sender, a
// network).
type Count struct {
	Key string
	N   int64
}

// ReasonCount is how many transactions got an action for a reason.
type ReasonCount struct {
	Action, Reason string
	N              int64
}

// Bucket is one hour or day of a time series: transactions per action.
type Bucket struct {
	Start  time.Time
	Counts map[string]int64
}

// Stats counts the transactions f selects, in one read transaction, so
// the numbers agree with each other. The period is a range of the
// started_at index (or of organization's); the rejected transactions are a
// range of the action index.
func (s *Store) Stats(ctx context.Context, f StatsFilter) (*Stats, error) {
	st, err := s.stats(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("logstore: stats: %w", err)
	}
	return st, nil
}

// The Stats queries: each is a constant head, the period's WHERE clause
// (statsWhere) and a constant tail.
const (
	// Grouped by the started_at prefix of a series bucket too, so one
	// pass over the period gives the totals and the series; a prefix
	// length of 0 groups the whole period.
	statsCountSQL  = `SELECT substr(started_at, 1, ?), action, reason, count(*) FROM transactions`
	statsCountTail = ` GROUP BY 1, 2, 3`
	// The null sender is not ranked: it is bounces and clients refused
	// before MAIL FROM alike, and says nothing about who sent.
	statsSendersSQL  = `SELECT lower(mail_from) AS sender, count(*) AS n FROM transactions`
	statsSendersTail = ` AND action = 'reject' AND mail_from <> '' GROUP BY sender ORDER BY n DESC, sender LIMIT ?`
	statsClientsSQL  = `SELECT client_ip, count(*) FROM transactions`
	statsClientsTail = ` AND action = 'reject' GROUP BY client_ip`
	statsFirstSQL    = `SELECT coalesce(min(started_at), '') FROM transactions`
)

// statsWhere selects the period, and the organisation when one is given.
func statsWhere(since, until time.Time, org string) (string, []any) {
	// A zero since formats as "", which every started_at is >= to.
	where, args := ` WHERE started_at >= ? AND started_at < ?`, []any{formatTime(since), formatTime(until)}
	if org != "" {
		where += ` AND organization = ?`
		args = append(args, org)
	}
	return where, args
}

// seriesKeys are the layouts of the started_at prefixes a series groups by.
var seriesKeys = map[string]string{"hour": "2006-01-02T15", "day": "2006-01-02"}

// maxBuckets bounds a time series, which has every bucket of the period.
const maxBuckets = 100_000

func (s *Store) stats(ctx context.Context, f StatsFilter) (*Stats, error) {
	top := f.Top
	switch {
	case top == 0:
		top = 10
	case top < 0:
		return nil, fmt.Errorf("top %d is negative", top)
	}
	if _, ok := seriesKeys[f.By]; !ok && f.By != "" {
		return nil, fmt.Errorf("by %q: want hour or day", f.By)
	}
	st := &Stats{Since: f.Since.UTC(), Until: f.Until.UTC()}
	if f.Until.IsZero() {
		st.Until = time.Now().UTC()
	}
	if !st.Since.IsZero() && !st.Since.Before(st.Until) {
		return nil, fmt.Errorf("the period from %s to %s is empty", st.Since.Format(time.RFC3339), st.Until.Format(time.RFC3339))
	}
	where, args := statsWhere(st.Since, st.Until, f.Organization)

	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	index, err := st.buckets(ctx, tx, f.By, where, args) // bucket key -> Series index
	if err != nil {
		return nil, err
	}
	actions := map[string]int64{}
	reasons := map[[2]string]int64{}
	keyLen := len(seriesKeys[f.By])
	err = eachRow(ctx, tx, statsCountSQL+where+statsCountTail, append([]any{keyLen}, args...), func(rows *sql.Rows) error {
		var (
			key, action, reason string
			n                   int64
		)
		if err := rows.Scan(&key, &action, &reason, &n); err != nil {
			return err
		}
		st.Total += n
		actions[action] += n
		reasons[[2]string{action, reason}] += n
		if i, ok := index[key]; ok {
			st.Series[i].Counts[action] += n
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for a, n := range actions {
		st.Actions = append(st.Actions, Count{a, n})
	}
	sortCounts(st.Actions)
	for k, n := range reasons {
		st.Reasons = append(st.Reasons, ReasonCount{Action: k[0], Reason: k[1], N: n})
	}
	slices.SortFunc(st.Reasons, func(a, b ReasonCount) int {
		return cmp.Or(cmp.Compare(b.N, a.N), cmp.Compare(a.Action, b.Action), cmp.Compare(a.Reason, b.Reason))
	})

	err = eachRow(ctx, tx, statsSendersSQL+where+statsSendersTail, append(args, top), func(rows *sql.Rows) error {
		var c Count
		if err := rows.Scan(&c.Key, &c.N); err != nil {
			return err
		}
		st.TopSenders = append(st.TopSenders, c)
		return nil
	})
	if err != nil {
		return nil, err
	}

	// Networks are counted in Go: SQLite knows no addresses. One row per
	// distinct rejected client is read, not one per transaction.
	networks := map[string]int64{}
	err = eachRow(ctx, tx, statsClientsSQL+where+statsClientsTail, args, func(rows *sql.Rows) error {
		var (
			ip string
			n  int64
		)
		if err := rows.Scan(&ip, &n); err != nil {
			return err
		}
		networks[networkOf(ip)] += n
		return nil
	})
	if err != nil {
		return nil, err
	}
	for k, n := range networks {
		st.TopNetworks = append(st.TopNetworks, Count{k, n})
	}
	sortCounts(st.TopNetworks)
	st.TopNetworks = st.TopNetworks[:min(top, len(st.TopNetworks))]
	return st, nil
}

// buckets lays out st.Series for a time series by "hour" or "day": every
// bucket from the period's start (or its first row) to its end, empty ones
// included, so that the series plots as it is. It returns each bucket's
// index by its started_at prefix.
func (st *Stats) buckets(ctx context.Context, tx *sql.Tx, by, where string, args []any) (map[string]int, error) {
	if by == "" {
		return nil, nil
	}
	step := time.Hour
	if by == "day" {
		step = 24 * time.Hour
	}
	start := st.Since
	if start.IsZero() {
		var first string
		if err := tx.QueryRowContext(ctx, statsFirstSQL+where, args...).Scan(&first); err != nil {
			return nil, err
		}
		if first == "" {
			return nil, nil // no rows, no series
		}
		t, err := parseTime(first)
		if err != nil {
			return nil, err
		}
		start = t
	}
	start = start.Truncate(step) // UTC, so hours and days start at :00 and midnight
	if n := st.Until.Sub(start) / step; n > maxBuckets {
		return nil, fmt.Errorf("%d %ss is too long a series (at most %d); narrow the period or count by day", n, by, maxBuckets)
	}
	index := map[string]int{}
	for t := start; t.Before(st.Until); t = t.Add(step) {
		index[t.Format(seriesKeys[by])] = len(st.Series)
		st.Series = append(st.Series, Bucket{Start: t, Counts: map[string]int64{}})
	}
	return index, nil
}

// networkOf names the network a client is counted in.
func networkOf(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		if ip == "" {
			return "local" // submissions without a client address
		}
		return ip
	}
	bits := 48
	if a.Unmap().Is4() {
		a, bits = a.Unmap(), 24
	}
	p, _ := a.Prefix(bits)
	return p.String()
}

func sortCounts(cs []Count) {
	slices.SortFunc(cs, func(a, b Count) int { return cmp.Or(cmp.Compare(b.N, a.N), cmp.Compare(a.Key, b.Key)) })
}

func eachRow(ctx context.Context, db querier, query string, args []any, fn func(*sql.Rows) error) error {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
