package main

import (
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/logstore/explain"
	"github.com/mxguard/mxguard/policy"
)

// logSubcommands are the mxguard log subcommands by name. Each file
// registers its own in an init function, so that adding one (prune) is a
// new file and one line there, not an edit of this dispatcher.
var logSubcommands = map[string]func(args []string, stdout, stderr io.Writer) int{}

// logSummaries are the one-line descriptions the usage text lists,
// registered with the subcommands.
var logSummaries = map[string]string{}

func init() {
	logSubcommands["search"] = cmdLogSearch
	logSubcommands["show"] = cmdLogShow
	logSubcommands["stats"] = cmdLogStats
	logSummaries["search"] = "find transactions by time, sender, recipient, client, action, ...; -follow for new ones"
	logSummaries["show"] = "everything about one transaction (ID or QUEUE-ID), and why it was accepted, tagged, quarantined or refused"
	logSummaries["stats"] = "counts per action and reason, top rejected senders and networks, a series by hour or day"
}

func logUsage() string {
	var b strings.Builder
	b.WriteString("usage: mxguard log <command> [flags]\n\ncommands:\n")
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for name := range logSubcommands {
			if !yield(name) {
				return
			}
		}
	}) {
		fmt.Fprintf(&b, "  %-7s %s\n", name, logSummaries[name])
	}
	b.WriteString(`
Every command reads the transaction log named by -config PATH ([log] path;
default ` + policy.DefaultPath + `) or -db PATH. Reading is safe while
mxguard serve writes. mxguard log COMMAND -h describes a command's flags.
`)
	return b.String()
}

func cmdLog(args []string, stdout, stderr io.Writer) int {
	known := func(s string) bool { _, ok := logSubcommands[s]; return ok }
	sub, code, ok := subcommand("log", args, known, logUsage(), stdout, stderr)
	if !ok {
		return code
	}
	return logSubcommands[sub](args[1:], stdout, stderr)
}

// logFlags are the flags that name the transaction log, which every log
// subcommand takes.
type logFlags struct {
	fs     *flag.FlagSet
	config string
	db     string
}

// newLogFlags returns a flag set for "mxguard log NAME" with -config and
// -db. Errors are reported by parseLogFlags, with the command's usage.
func newLogFlags(name string) *logFlags {
	lf := &logFlags{fs: flag.NewFlagSet("mxguard log "+name, flag.ContinueOnError)}
	lf.fs.SetOutput(io.Discard) // our usage text, not the flag package's
	lf.fs.StringVar(&lf.config, "config", policy.DefaultPath, "")
	lf.fs.StringVar(&lf.db, "db", "", "")
	return lf
}

// parse parses args, flags anywhere among the arguments, and returns the
// arguments. ok is false when the command should exit with code: 0 after
// -h, 2 after a bad flag.
func (lf *logFlags) parse(args []string, usage string, stdout, stderr io.Writer) (rest []string, code int, ok bool) {
	rest, err := parseInterspersed(lf.fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		return nil, 0, false
	}
	if err != nil {
		// The error, not the whole usage, which would scroll it away.
		fmt.Fprintf(stderr, "%s: %v\n(%s -h lists the flags)\n", lf.fs.Name(), err, lf.fs.Name())
		return nil, 2, false
	}
	configSet := false
	lf.fs.Visit(func(f *flag.Flag) { configSet = configSet || f.Name == "config" })
	if configSet && lf.db != "" {
		fmt.Fprintf(stderr, "%s: give -config or -db, not both\n", lf.fs.Name())
		return nil, 2, false
	}
	return rest, 0, true
}

// open opens the log read-only: SQLite in WAL mode lets it read while the
// daemon writes, and a read-only store cannot take the write lock the
// milter waits for.
func (lf *logFlags) open() (*logstore.Store, string, error) {
	path := lf.db
	if path == "" {
		cfg, err := policy.Load(lf.config)
		if err != nil {
			return nil, "", err
		}
		path = cfg.Log.Path
	}
	// SQLite's own word for a missing file is "unable to open database
	// file"; say which file, and why it may be missing.
	if _, err := os.Stat(path); err != nil {
		return nil, "", fmt.Errorf("transaction log: %w (mxguard serve creates it; is -config or -db right?)", err)
	}
	s, err := logstore.OpenReadOnly(path)
	return s, path, err
}

// Flag values.

// timeFlag is a point in time written as a time or as a duration ago.
type timeFlag struct {
	t   *time.Time
	now func() time.Time
}

func (f timeFlag) String() string { return "" }

func (f timeFlag) Set(s string) error {
	t, err := parseWhen(s, f.now())
	if err != nil {
		return err
	}
	*f.t = t
	return nil
}

// parseWhen reads a time: RFC 3339 (2025-06-01T14:00:00Z), a date or a
// date and time without a zone (taken as UTC, like the log), or a duration
// ago (30m, 2h, 90d). Its error does not repeat s: the flag package does.
func parseWhen(s string, now time.Time) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	d, err := parseAgo(s)
	if err != nil {
		return time.Time{}, errors.New("want a time (2025-06-01, 2025-06-01T14:00:00Z) or how long ago (30m, 2h, 90d)")
	}
	return now.Add(-d), nil
}

// parseAgo is time.ParseDuration plus whole days ("90d"), not negative.
func parseAgo(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, errors.New("not a duration")
	}
	return d, nil
}

// addressFlag is an envelope address or @domain; nullOK allows "<>".
func addressFlag(dst *string, nullOK bool) func(string) error {
	return func(s string) error {
		if s == "<>" {
			if !nullOK {
				return errors.New(`"<>" is the null sender; a recipient is an address or @domain`)
			}
			*dst = s
			return nil
		}
		s = strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
		at := strings.LastIndexByte(s, '@')
		if at < 0 || at == len(s)-1 {
			return errors.New("give an address (alice@example.com) or a domain (@example.com)")
		}
		*dst = s
		return nil
	}
}

var logActions = []string{"accept", "tag", "quarantine", "tempfail", "reject", "discard", "aborted"}

func actionFlag(dst *string) func(string) error {
	return func(s string) error {
		if !slices.Contains(logActions, s) {
			return errors.New("want one of " + strings.Join(logActions, ", "))
		}
		*dst = s
		return nil
	}
}

func clientFlag(dst *netip.Prefix) func(string) error {
	return func(s string) error {
		if p, err := netip.ParsePrefix(s); err == nil {
			*dst = p
			return nil
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return errors.New("want an IP address (192.0.2.7) or a network (192.0.2.0/24, 2001:db8::/32)")
		}
		*dst = netip.PrefixFrom(a, a.BitLen())
		return nil
	}
}

func choiceFlag(dst *string, choices ...string) func(string) error {
	return func(s string) error {
		if !slices.Contains(choices, s) {
			return errors.New("want " + strings.Join(choices[:len(choices)-1], ", ") + " or " + choices[len(choices)-1])
		}
		*dst = s
		return nil
	}
}

func positiveFlag(dst *int) func(string) error {
	return func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return errors.New("want a whole number above 0")
		}
		*dst = n
		return nil
	}
}

// mxguard log search

const logSearchUsage = `usage: mxguard log search [-config PATH | -db PATH] [filters] [-limit N] [-format F] [-follow]

Prints the newest transactions that match every filter given, oldest
first, and with -follow keeps printing new ones as they are logged.

filters:
  -since T, -until T   started at or after T, before T: a time (2025-06-01,
                       2025-06-01T14:00:00Z; UTC without a zone) or how
                       long ago (30m, 2h, 90d)
  -from ADDR           envelope sender: an address, @domain for the whole
                       domain, <> for the null sender; case is ignored
  -to ADDR             a recipient: an address or @domain; case is ignored
  -client IP           client address or network (192.0.2.0/24, 2001:db8::/32)
  -action A            accept, tag, quarantine, tempfail, reject, discard, aborted
  -org NAME            the organisation the transaction was judged for
  -queue-id ID         the MTA's queue id
  -auth-user USER      SMTP AUTH login; case is ignored
  -subject TEXT        subject contains TEXT; case is ignored

output:
  -limit N             at most N transactions (default 50)
  -format F            table (default; one line per transaction, UTC times),
                       json (one object per line) or csv
  -follow              then print new and changed transactions every second
                       until interrupted (Ctrl-C)

A -from address, -to address, -queue-id, -client, -action or -org search
uses an index; @domain and -subject read every transaction the other
filters leave, so add -since to a search over a big log.
`

// followEvery is how often -follow polls the log; tests shorten it.
var followEvery = time.Second

// followBatch caps the rows one poll prints, so a reader that is far
// behind catches up in bounded memory.
const followBatch = 500

func cmdLogSearch(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return logSearch(ctx, args, stdout, stderr)
}

// logSearch is mxguard log search; it follows until ctx ends.
func logSearch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	lf := newLogFlags("search")
	fs := lf.fs
	var (
		f      logstore.Filter
		format = "table"
		follow bool
	)
	f.Limit = logstore.DefaultLimit
	fs.Var(timeFlag{&f.Since, time.Now}, "since", "")
	fs.Var(timeFlag{&f.Until, time.Now}, "until", "")
	fs.Func("from", "", addressFlag(&f.From, true))
	fs.Func("to", "", addressFlag(&f.To, false))
	fs.Func("client", "", clientFlag(&f.Client))
	fs.Func("action", "", actionFlag(&f.Action))
	fs.StringVar(&f.Organization, "org", "", "")
	fs.StringVar(&f.QueueID, "queue-id", "", "")
	fs.StringVar(&f.AuthUser, "auth-user", "", "")
	fs.StringVar(&f.Subject, "subject", "", "")
	fs.Func("limit", "", positiveFlag(&f.Limit))
	fs.Func("format", "", choiceFlag(&format, "table", "json", "csv"))
	fs.BoolVar(&follow, "follow", false, "")
	rest, code, ok := lf.parse(args, logSearchUsage, stdout, stderr)
	if !ok {
		return code
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "mxguard log search: unexpected argument %q (filters are flags, e.g. -from %s)\n", rest[0], rest[0])
		return 2
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		fmt.Fprintln(stderr, "mxguard log search: -since must be before -until")
		return 2
	}

	store, _, err := lf.open()
	if err != nil {
		fmt.Fprintln(stderr, "mxguard log search:", err)
		return 1
	}
	defer store.Close()

	// Follow from before the search, so that a row written meanwhile is
	// printed twice rather than never.
	var fl *logstore.Follower
	if follow {
		ff := f
		ff.Limit = followBatch
		if fl, err = store.Follow(ctx, ff); err != nil {
			fmt.Fprintln(stderr, "mxguard log search:", err)
			return 1
		}
	}
	recs, err := store.Search(ctx, f)
	if err != nil {
		fmt.Fprintln(stderr, "mxguard log search:", err)
		return 1
	}
	slices.Reverse(recs) // newest last, like a log, and -follow goes on below

	out := newRecordWriter(format, stdout, recs, follow)
	for i := range recs {
		out.write(&recs[i])
	}
	if err := out.flush(); err != nil {
		fmt.Fprintln(stderr, "mxguard log search:", err)
		return 1
	}
	if len(recs) == f.Limit {
		fmt.Fprintf(stderr, "mxguard log search: these are the newest %d matches; -limit N shows more\n", f.Limit)
	}
	if len(recs) == 0 && format == "table" && !follow {
		fmt.Fprintln(stderr, "mxguard log search: no transaction matches")
	}
	if !follow {
		return 0
	}

	printed := make(map[int64]time.Time, len(recs))
	for _, r := range recs {
		printed[r.ID] = r.EndedAt
	}
	tick := time.NewTicker(followEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0
		case <-tick.C:
		}
		news, err := fl.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return 0
			}
			fmt.Fprintln(stderr, "mxguard log search:", err)
			return 1
		}
		for i := range news {
			r := &news[i]
			if end, ok := printed[r.ID]; ok && end.Equal(r.EndedAt) {
				continue // written between Follow and Search: printed already
			}
			out.write(r)
		}
		printed = nil // only the first poll can repeat the search
		if err := out.flush(); err != nil {
			fmt.Fprintln(stderr, "mxguard log search:", err)
			return 1
		}
	}
}

// recordWriter prints transactions in one of the output formats. Errors
// stick and are returned by flush.
type recordWriter interface {
	write(r *logstore.Record)
	flush() error
}

func newRecordWriter(format string, w io.Writer, first []logstore.Record, follow bool) recordWriter {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false) // addresses in <>, readable
		return &jsonWriter{enc: enc}
	case "csv":
		cw := &csvWriter{w: csv.NewWriter(w)}
		cw.w.Write(csvColumns)
		return cw
	}
	return newTableWriter(w, first, follow)
}

// Table: one line per transaction, for people.

type tableWriter struct {
	w      io.Writer
	t      *table
	follow bool
	err    error
	ready  bool // the header is out
}

// searchColumns are the table's columns: the widest a cell may be (0: no
// limit), and under -follow the width a column starts with and whether
// longer cells are cut to it. Lines printed under -follow cannot be
// realigned when a wider one comes, so the columns start wide enough for
// common values, and addresses, which vary most, are cut; ids and client
// addresses never are.
var searchColumns = []struct {
	name           string
	widest, follow int
	cut            bool
}{
	{"ID", 0, 7, false},
	{"TIME (UTC)", 0, 19, false},
	{"QUEUE ID", 16, 12, true},
	{"CLIENT", 39, 15, false},
	{"SENDER", 40, 28, true},
	{"RECIPIENTS", 60, 32, true},
	{"ACTION", 0, 10, false},
	{"REASON", 20, 19, true},
	{"SUBJECT", 60, 0, false},
}

func newTableWriter(w io.Writer, first []logstore.Record, follow bool) *tableWriter {
	var heads []string
	for _, c := range searchColumns {
		heads = append(heads, c.name)
	}
	t := newTable(heads...)
	t.right[0] = true
	if follow {
		for i, c := range searchColumns {
			t.width[i] = max(t.width[i], c.follow)
		}
	}
	for i := range first {
		t.fit(searchCells(&first[i]))
	}
	return &tableWriter{w: w, t: t, follow: follow}
}

func (tw *tableWriter) write(r *logstore.Record) {
	if tw.err != nil {
		return
	}
	if !tw.ready {
		tw.ready = true
		tw.err = tw.t.line(tw.w, tw.t.heads)
	}
	cells := searchCells(r)
	if tw.follow {
		for i, c := range searchColumns {
			if c.cut {
				cells[i] = cut(cells[i], tw.t.width[i])
			}
		}
	}
	if tw.err == nil {
		tw.err = tw.t.line(tw.w, cells)
	}
}

// flush reports the first write error. Under -follow it prints the header
// even before any row, so that an empty start shows the command is
// running.
func (tw *tableWriter) flush() error {
	if tw.follow && !tw.ready && tw.err == nil {
		tw.ready = true
		tw.err = tw.t.line(tw.w, tw.t.heads)
	}
	return tw.err
}

// searchCells renders a transaction as the table's cells, each one line of
// printable text no wider than its column allows.
func searchCells(r *logstore.Record) []string {
	cells := []string{
		strconv.FormatInt(r.ID, 10),
		r.StartedAt.UTC().Format("2006-01-02 15:04:05"),
		orDash(r.QueueID),
		explain.Client(r),
		explain.Sender(r),
		orDash(explain.Recipients(r)),
		r.Action,
		orDash(r.Reason),
		orDash(logstore.DecodeHeader(r.Subject)),
	}
	for i, c := range cells {
		cells[i] = cut(printable(c, -1), searchColumns[i].widest)
	}
	return cells
}

// cut shortens s to n runes, the last three "...", when it is longer;
// n 0 means no limit.
func cut(s string, n int) string {
	if n == 0 || utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:max(0, n-3)]) + "..."
}

// table aligns columns of text. Widths only grow, so lines printed before
// a wider row stay as they were (-follow); cells that do not fit push the
// rest of their line right.
type table struct {
	heads []string
	width []int
	right []bool // right-aligned (numbers)
}

func newTable(heads ...string) *table {
	t := &table{heads: heads, width: make([]int, len(heads)), right: make([]bool, len(heads))}
	t.fit(heads)
	return t
}

func (t *table) fit(cells []string) {
	for i, c := range cells {
		t.width[i] = max(t.width[i], utf8.RuneCountInString(c))
	}
}

// line writes cells padded to the widths, two spaces apart; the last
// column is not padded, so lines carry no trailing blanks.
func (t *table) line(w io.Writer, cells []string) error {
	var b strings.Builder
	for i, c := range cells {
		pad := max(0, t.width[i]-utf8.RuneCountInString(c))
		if i > 0 {
			b.WriteString("  ")
		}
		switch {
		case t.right[i]:
			b.WriteString(strings.Repeat(" ", pad) + c)
		case i == len(cells)-1:
			b.WriteString(c)
		default:
			b.WriteString(c + strings.Repeat(" ", pad))
		}
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}

// print writes the header and rows, fitted to all of them.
func (t *table) print(w io.Writer, indent string, rows [][]string) error {
	for _, r := range rows {
		t.fit(r)
	}
	var b strings.Builder
	t.line(&b, t.heads)
	for _, r := range rows {
		t.line(&b, r)
	}
	text := b.String()
	if indent != "" {
		text = indent + strings.ReplaceAll(strings.TrimSuffix(text, "\n"), "\n", "\n"+indent) + "\n"
	}
	_, err := io.WriteString(w, text)
	return err
}

// JSON: one object per line, the log's column names.

type jsonWriter struct {
	enc *json.Encoder
	err error
}

type jsonRecipient struct {
	Address      string `json:"address"`
	Organization string `json:"organization"`
	Action       string `json:"action"`
	Reason       string `json:"reason"`
	Reply        string `json:"reply"`
}

type jsonRecord struct {
	ID             int64               `json:"id"`
	StartedAt      string              `json:"started_at"`
	EndedAt        string              `json:"ended_at"`
	QueueID        string              `json:"queue_id"`
	ClientIP       string              `json:"client_ip"`
	ClientName     string              `json:"client_name"`
	Helo           string              `json:"helo"`
	AuthUser       string              `json:"auth_user"`
	AuthType       string              `json:"auth_type"`
	Daemon         string              `json:"daemon"`
	MailFrom       string              `json:"mail_from"`
	FromHeader     string              `json:"from_header"`
	Subject        string              `json:"subject"`
	SubjectDecoded string              `json:"subject_decoded,omitempty"` // when Subject has RFC 2047 encoded words
	MessageID      string              `json:"message_id"`
	Size           int64               `json:"size"`
	Direction      string              `json:"direction"`
	Organization   string              `json:"organization"`
	SPF            string              `json:"spf"`
	SPFDomain      string              `json:"spf_domain"`
	DKIM           string              `json:"dkim"`
	DMARC          string              `json:"dmarc"`
	SpamScore      *float64            `json:"spam_score"`
	Virus          string              `json:"virus"`
	Action         string              `json:"action"`
	Reason         string              `json:"reason"`
	Reply          string              `json:"reply"`
	Error          string              `json:"error"`
	HeadersAdded   []string            `json:"headers_added"`
	Evidence       []logstore.Evidence `json:"evidence"`
	Recipients     []jsonRecipient     `json:"recipients"`
}

// jsonTime writes times as the log stores them.
func jsonTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

func (jw *jsonWriter) write(r *logstore.Record) {
	if jw.err != nil {
		return
	}
	j := jsonRecord{
		ID: r.ID, StartedAt: jsonTime(r.StartedAt), EndedAt: jsonTime(r.EndedAt), QueueID: r.QueueID,
		ClientIP: r.ClientIP, ClientName: r.ClientName, Helo: r.Helo, AuthUser: r.AuthUser, AuthType: r.AuthType,
		Daemon: r.Daemon, MailFrom: r.MailFrom, FromHeader: r.FromHeader, Subject: r.Subject, MessageID: r.MessageID,
		Size: r.Size, Direction: r.Direction, Organization: r.Organization, SPF: r.SPF, SPFDomain: r.SPFDomain,
		DKIM: r.DKIM, DMARC: r.DMARC, SpamScore: r.SpamScore, Virus: r.Virus, Action: r.Action, Reason: r.Reason,
		Reply: r.Reply, Error: r.Error, HeadersAdded: r.HeadersAdded, Evidence: r.Evidence,
		Recipients: []jsonRecipient{},
	}
	if d := logstore.DecodeHeader(r.Subject); d != r.Subject {
		j.SubjectDecoded = d
	}
	if j.HeadersAdded == nil {
		j.HeadersAdded = []string{}
	}
	if j.Evidence == nil {
		j.Evidence = []logstore.Evidence{}
	}
	for _, rc := range r.Recipients {
		j.Recipients = append(j.Recipients, jsonRecipient(rc))
	}
	jw.err = jw.enc.Encode(j)
}

func (jw *jsonWriter) flush() error { return jw.err }

// CSV: one row per transaction, for spreadsheets and scripts.

var csvColumns = []string{
	"id", "started_at", "ended_at", "queue_id", "client_ip", "client_name", "helo", "auth_user",
	"mail_from", "recipients", "organization", "direction", "action", "reason", "reply", "subject",
	"spf", "spf_domain", "error",
}

type csvWriter struct{ w *csv.Writer }

func (cw *csvWriter) write(r *logstore.Record) {
	var rcpts []string
	for _, rc := range r.Recipients {
		rcpts = append(rcpts, rc.Address)
	}
	row := []string{
		strconv.FormatInt(r.ID, 10), jsonTime(r.StartedAt), jsonTime(r.EndedAt), r.QueueID, r.ClientIP,
		r.ClientName, r.Helo, r.AuthUser, r.MailFrom, strings.Join(rcpts, " "), r.Organization, r.Direction,
		r.Action, r.Reason, r.Reply, logstore.DecodeHeader(r.Subject), r.SPF, r.SPFDomain, r.Error,
	}
	for i := range row {
		// The sender chooses the subject: no escape sequences for the
		// terminal this may be printed on.
		row[i] = noControl(row[i])
	}
	cw.w.Write(row)
}

func (cw *csvWriter) flush() error {
	cw.w.Flush()
	return cw.w.Error()
}

// noControl replaces control characters with '?', leaving the rest as is.
func noControl(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return '?'
		}
		return r
	}, s)
}

// mxguard log show

const logShowUsage = `usage: mxguard log show [-config PATH | -db PATH] ID|QUEUE-ID

Prints everything the log knows about one transaction and why it was
accepted, tagged, quarantined or refused: the envelope, the client, the
login, each recipient's outcome and reply, every check's result, the reply
given and the headers mxguard added.

ID is the transaction's id (the first column of mxguard log search);
QUEUE-ID is the MTA's queue id, as in its mail log. A queue id the MTA
used more than once shows every transaction with it, newest first.
`

func cmdLogShow(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	lf := newLogFlags("show")
	rest, code, ok := lf.parse(args, logShowUsage, stdout, stderr)
	if !ok {
		return code
	}
	switch {
	case len(rest) == 0:
		fmt.Fprintf(stderr, "mxguard log show: which transaction? Give its ID or QUEUE-ID (mxguard log search shows both)\n")
		return 2
	case len(rest) > 1:
		fmt.Fprintf(stderr, "mxguard log show: unexpected argument %q: give one ID or QUEUE-ID\n", rest[1])
		return 2
	}
	key := rest[0]

	store, path, err := lf.open()
	if err != nil {
		fmt.Fprintln(stderr, "mxguard log show:", err)
		return 1
	}
	defer store.Close()

	var recs []logstore.Record
	byID := false
	// An all-digit key may be either: Postfix's short queue ids are hex
	// and can be all digits. The id wins; the queue id is mentioned.
	if id, err := strconv.ParseInt(key, 10, 64); err == nil && id > 0 {
		r, err := store.Get(ctx, id)
		switch {
		case err == nil:
			recs, byID = []logstore.Record{*r}, true
		case !errors.Is(err, logstore.ErrNotFound):
			fmt.Fprintln(stderr, "mxguard log show:", err)
			return 1
		}
	}
	byQueue, err := store.ByQueueID(ctx, key)
	if err != nil {
		fmt.Fprintln(stderr, "mxguard log show:", err)
		return 1
	}
	switch {
	case byID && len(byQueue) > 0:
		defer fmt.Fprintf(stdout, "\n%s is also the queue id of %d transaction(s): mxguard log search -queue-id %s\n", key, len(byQueue), key)
	case !byID:
		recs = byQueue
	}
	if len(recs) == 0 {
		fmt.Fprintf(stderr, "mxguard log show: no transaction with id or queue id %q in %s\n", key, path)
		return 1
	}
	if len(recs) > 1 {
		fmt.Fprintf(stdout, "Queue id %s was used by %d transactions (the MTA reuses short queue ids); newest first.\n\n", key, len(recs))
	}
	for i := range recs {
		if i > 0 {
			fmt.Fprintln(stdout, "\n"+strings.Repeat("─", 72)+"\n")
		}
		if err := showRecord(stdout, &recs[i]); err != nil {
			fmt.Fprintln(stderr, "mxguard log show:", err)
			return 1
		}
	}
	return 0
}

// showRecord prints one transaction: a verdict in words, then the facts it
// rests on (logstore/explain, which the web console shows too). Everything
// printed comes from the row; text from the client is made printable.
func showRecord(w io.Writer, r *logstore.Record) error {
	var b strings.Builder
	p := func(s string) string { return printable(s, -1) }
	e := explain.Of(r)
	b.WriteString(p(e.Title) + "\n\n")
	for _, para := range e.Paragraphs {
		b.WriteString(wrap(p(para), 78, "") + "\n\n")
	}
	for _, f := range e.Fields {
		fmt.Fprintf(&b, "  %-12s %s\n", f.Name, p(f.Value))
	}
	if len(e.Recipients) > 0 {
		b.WriteString("\nRecipients\n")
		t := newTable("ADDRESS", "ORGANISATION", "ACTION", "REASON", "REPLY")
		var rows [][]string
		for _, rc := range e.Recipients {
			rows = append(rows, []string{p(rc.Address), orDash(p(rc.Organization)), p(rc.Action), orDash(p(rc.Reason)), orDash(p(rc.Reply))})
		}
		t.print(&b, "  ", rows)
	}
	if len(e.Checks) > 0 {
		b.WriteString("\nChecks, in the order they finished\n")
		t := newTable("CHECK", "RESULT", "DETAIL", "DURATION", "ERROR")
		var rows [][]string
		for _, c := range e.Checks {
			rows = append(rows, []string{p(c.Check), orDash(p(c.Result)), orDash(p(c.Detail)), orDash(c.Duration), orDash(p(c.Error))})
		}
		t.print(&b, "  ", rows)
	}
	b.WriteString("\nHeaders added\n")
	if len(e.HeadersAdded) == 0 {
		b.WriteString("  none\n")
	}
	for _, h := range e.HeadersAdded {
		b.WriteString("  " + p(h) + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// wrap breaks text into lines of at most width runes at spaces.
func wrap(text string, width int, indent string) string {
	var b strings.Builder
	line := 0
	for i, word := range strings.Fields(text) {
		n := utf8.RuneCountInString(word)
		if i > 0 {
			if line+1+n > width {
				b.WriteString("\n" + indent)
				line = 0
			} else {
				b.WriteByte(' ')
				line++
			}
		} else {
			b.WriteString(indent)
		}
		b.WriteString(word)
		line += n
	}
	return b.String()
}

// mxguard log stats

const logStatsUsage = `usage: mxguard log stats [-config PATH | -db PATH] [-since T] [-until T] [-org NAME] [-by hour|day] [-top N] [-format table|json]

Counts the transactions of a period: per action, per action and reason,
the senders and client networks (IPv4 /24, IPv6 /48) rejected most, and
with -by a time series of the actions per hour or day (UTC).

  -since T, -until T   the period (default: the last 24 hours); a time
                       (2025-06-01, 2025-06-01T14:00:00Z) or how long ago (2h, 7d)
  -org NAME            count one organisation's transactions only
  -by hour|day         add a time series
  -top N               the length of the top lists (default 10)
  -format table|json   (default table)
`

func cmdLogStats(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	lf := newLogFlags("stats")
	fs := lf.fs
	now := time.Now()
	f := logstore.StatsFilter{Since: now.Add(-24 * time.Hour), Top: 10}
	format := "table"
	fs.Var(timeFlag{&f.Since, func() time.Time { return now }}, "since", "")
	fs.Var(timeFlag{&f.Until, func() time.Time { return now }}, "until", "")
	fs.StringVar(&f.Organization, "org", "", "")
	fs.Func("by", "", choiceFlag(&f.By, "hour", "day"))
	fs.Func("top", "", positiveFlag(&f.Top))
	fs.Func("format", "", choiceFlag(&format, "table", "json"))
	rest, code, ok := lf.parse(args, logStatsUsage, stdout, stderr)
	if !ok {
		return code
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "mxguard log stats: unexpected argument %q\n", rest[0])
		return 2
	}
	if f.Until.IsZero() {
		f.Until = now
	}
	if !f.Since.Before(f.Until) {
		fmt.Fprintln(stderr, "mxguard log stats: -since must be before -until")
		return 2
	}

	store, _, err := lf.open()
	if err != nil {
		fmt.Fprintln(stderr, "mxguard log stats:", err)
		return 1
	}
	defer store.Close()
	st, err := store.Stats(ctx, f)
	if err != nil {
		fmt.Fprintln(stderr, "mxguard log stats:", err)
		return 1
	}
	if format == "json" {
		err = printStatsJSON(stdout, st)
	} else {
		err = printStats(stdout, st, f.Organization)
	}
	if err != nil {
		fmt.Fprintln(stderr, "mxguard log stats:", err)
		return 1
	}
	return 0
}

func printStats(w io.Writer, st *logstore.Stats, org string) error {
	var b strings.Builder
	who := "all organisations"
	if org != "" {
		who = "organisation " + org
	}
	fmt.Fprintf(&b, "%d transactions from %s to %s UTC, %s\n", st.Total,
		st.Since.Format("2006-01-02 15:04:05"), st.Until.Format("2006-01-02 15:04:05"), printable(who, -1))
	if st.Total == 0 {
		_, err := io.WriteString(w, b.String())
		return err
	}
	share := func(n int64) string { return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(st.Total)) }

	b.WriteString("\n")
	t := newTable("ACTION", "COUNT", "SHARE")
	t.right[1], t.right[2] = true, true
	var rows [][]string
	for _, c := range st.Actions {
		rows = append(rows, []string{c.Key, strconv.FormatInt(c.N, 10), share(c.N)})
	}
	t.print(&b, "", rows)

	b.WriteString("\n")
	t = newTable("ACTION", "REASON", "COUNT", "SHARE")
	t.right[2], t.right[3] = true, true
	rows = nil
	for _, c := range st.Reasons {
		rows = append(rows, []string{c.Action, orDash(c.Reason), strconv.FormatInt(c.N, 10), share(c.N)})
	}
	t.print(&b, "", rows)

	for _, top := range []struct {
		head string
		list []logstore.Count
	}{
		{"TOP REJECTED SENDERS", st.TopSenders},
		{"TOP REJECTED NETWORKS", st.TopNetworks},
	} {
		b.WriteString("\n")
		if len(top.list) == 0 {
			b.WriteString(top.head + ": none\n")
			continue
		}
		t = newTable(top.head, "COUNT")
		t.right[1] = true
		rows = nil
		for _, c := range top.list {
			rows = append(rows, []string{printable(c.Key, 60), strconv.FormatInt(c.N, 10)})
		}
		t.print(&b, "", rows)
	}

	if len(st.Series) > 0 {
		b.WriteString("\n")
		actions := seriesActions(st)
		layout, head := "2006-01-02 15:00", "HOUR (UTC)"
		if len(st.Series) > 1 && st.Series[1].Start.Sub(st.Series[0].Start) == 24*time.Hour {
			layout, head = "2006-01-02", "DAY (UTC)"
		}
		heads := []string{head}
		for _, a := range actions {
			heads = append(heads, strings.ToUpper(a))
		}
		t = newTable(append(heads, "TOTAL")...)
		for i := 1; i < len(t.right); i++ {
			t.right[i] = true
		}
		rows = nil
		for _, bk := range st.Series {
			row := []string{bk.Start.Format(layout)}
			var total int64
			for _, a := range actions {
				row = append(row, strconv.FormatInt(bk.Counts[a], 10))
				total += bk.Counts[a]
			}
			rows = append(rows, append(row, strconv.FormatInt(total, 10)))
		}
		t.print(&b, "", rows)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// seriesActions are the actions of the period, in the order of strength
// and then any others, as the series' columns.
func seriesActions(st *logstore.Stats) []string {
	var out []string
	for _, a := range logActions {
		if slices.ContainsFunc(st.Actions, func(c logstore.Count) bool { return c.Key == a }) {
			out = append(out, a)
		}
	}
	var others []string
	for _, c := range st.Actions {
		if !slices.Contains(logActions, c.Key) {
			others = append(others, c.Key)
		}
	}
	slices.SortFunc(others, cmp.Compare)
	return append(out, others...)
}

func printStatsJSON(w io.Writer, st *logstore.Stats) error {
	type count struct {
		Key   string `json:"key"`
		Count int64  `json:"count"`
	}
	type reason struct {
		Action string `json:"action"`
		Reason string `json:"reason"`
		Count  int64  `json:"count"`
	}
	type bucket struct {
		Start  string           `json:"start"`
		Counts map[string]int64 `json:"counts"`
	}
	counts := func(cs []logstore.Count) []count {
		out := []count{}
		for _, c := range cs {
			out = append(out, count{c.Key, c.N})
		}
		return out
	}
	j := struct {
		Since       string   `json:"since"`
		Until       string   `json:"until"`
		Total       int64    `json:"total"`
		Actions     []count  `json:"actions"`
		Reasons     []reason `json:"reasons"`
		TopSenders  []count  `json:"top_rejected_senders"`
		TopNetworks []count  `json:"top_rejected_networks"`
		Series      []bucket `json:"series,omitempty"`
	}{
		Since: jsonTime(st.Since), Until: jsonTime(st.Until), Total: st.Total,
		Actions: counts(st.Actions), Reasons: []reason{},
		TopSenders: counts(st.TopSenders), TopNetworks: counts(st.TopNetworks),
	}
	for _, r := range st.Reasons {
		j.Reasons = append(j.Reasons, reason{r.Action, r.Reason, r.N})
	}
	for _, bk := range st.Series {
		j.Series = append(j.Series, bucket{jsonTime(bk.Start), bk.Counts})
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(j)
}
