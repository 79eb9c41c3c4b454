package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/logstore/explain"
	"github.com/mxguard/mxguard/quarantine"
)

// pageSize is how many transactions a page of the log shows.
const pageSize = 50

// Actions are the log's actions, in the order of strength, then aborted.
var Actions = []string{"accept", "tag", "quarantine", "tempfail", "reject", "discard", "aborted"}

// searchForm is the search as typed, to fill the form again.
type searchForm struct {
	Since, Until, From, To, Client, Action, QueueID, Subject, Org string
}

// query is the form as URL parameters, without page.
func (f searchForm) query() url.Values {
	v := url.Values{}
	for _, p := range []struct{ k, v string }{
		{"since", f.Since}, {"until", f.Until}, {"from", f.From}, {"to", f.To}, {"client", f.Client},
		{"action", f.Action}, {"queue_id", f.QueueID}, {"subject", f.Subject}, {"org", f.Org},
	} {
		if p.v != "" {
			v.Set(p.k, p.v)
		}
	}
	return v
}

// parseSearch reads the search parameters into a filter, as mxguard log
// search reads its flags. An organisation's user searches their own
// organisation only; an org parameter naming another matches nothing
// (none is true).
func parseSearch(q url.Values, now time.Time, u *User) (f logstore.Filter, form searchForm, none bool, problems []string) {
	get := func(k string) string { return strings.TrimSpace(q.Get(k)) }
	form = searchForm{Since: get("since"), Until: get("until"), From: get("from"), To: get("to"), Client: get("client"),
		Action: get("action"), QueueID: get("queue_id"), Subject: get("subject"), Org: get("org")}
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	var err error
	if form.Since != "" {
		if f.Since, err = parseWhen(form.Since, now); err != nil {
			bad("since: %v", err)
		}
	}
	if form.Until != "" {
		if f.Until, err = parseWhen(form.Until, now); err != nil {
			bad("until: %v", err)
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		bad("since must be before until")
	}
	if form.From != "" {
		if f.From, err = parseAddress(form.From, true); err != nil {
			bad("from: %v", err)
		}
	}
	if form.To != "" {
		if f.To, err = parseAddress(form.To, false); err != nil {
			bad("to: %v", err)
		}
	}
	if form.Client != "" {
		if f.Client, err = parseClient(form.Client); err != nil {
			bad("client: %v", err)
		}
	}
	if form.Action != "" {
		if !slices.Contains(Actions, form.Action) {
			bad("action: want one of %s", strings.Join(Actions, ", "))
		}
		f.Action = form.Action
	}
	f.QueueID, f.Subject = form.QueueID, form.Subject
	f.Organization = form.Org
	if !u.Global() {
		if form.Org != "" && form.Org != u.Organization {
			none = true
		}
		f.Organization, form.Org = u.Organization, ""
	}
	return f, form, none, problems
}

// parseWhen reads a time as mxguard log search does: RFC 3339, a date or
// a date and time without a zone (UTC, like the log), or a duration ago
// (30m, 2h, 90d).
func parseWhen(s string, now time.Time) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 && n < 100000 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, errors.New("want a time (2025-06-01, 2025-06-01T14:00) or how long ago (30m, 2h, 90d)")
}

// parseAddress reads an address or @domain; nullOK allows "<>".
func parseAddress(s string, nullOK bool) (string, error) {
	if s == "<>" {
		if !nullOK {
			return "", errors.New(`"<>" is the null sender; a recipient is an address or @domain`)
		}
		return s, nil
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
	at := strings.LastIndexByte(s, '@')
	if at < 0 || at == len(s)-1 {
		return "", errors.New("give an address (alice@example.com) or a domain (@example.com)")
	}
	return s, nil
}

func parseClient(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, errors.New("want an IP address (192.0.2.7) or a network (192.0.2.0/24)")
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// cursor is where a page of the log starts: after the transaction that
// started at t with id id, in the order newest first (started_at, then id,
// descending). It travels as the page parameter, "UNIXMILLI.ID".
type cursor struct {
	t  time.Time
	id int64
}

func (c cursor) String() string { return fmt.Sprintf("%d.%d", c.t.UnixMilli(), c.id) }

func parseCursor(s string) (cursor, bool) {
	ms, id, ok := strings.Cut(s, ".")
	if !ok {
		return cursor{}, false
	}
	m, err1 := strconv.ParseInt(ms, 10, 64)
	n, err2 := strconv.ParseInt(id, 10, 64)
	if err1 != nil || err2 != nil || n <= 0 {
		return cursor{}, false
	}
	return cursor{time.UnixMilli(m).UTC(), n}, true
}

// searchPage returns the page of transactions after c (the first page for
// the zero cursor), and whether there are more. It pages by keyset, which
// the started_at index serves, so page 1000 costs what page 1 does: the
// rows after the cursor are those that started before it, plus those that
// started at the same millisecond with a lower id.
func (s *Server) searchPage(r *http.Request, f logstore.Filter, c cursor) ([]logstore.Record, bool, error) {
	skip := 0
	if c.id != 0 {
		until := c.t.Add(time.Millisecond) // the log keeps milliseconds
		if f.Until.IsZero() || until.Before(f.Until) {
			f.Until = until
		}
		skip = 8 // rows of the cursor's millisecond already shown; grows as needed
	}
	for {
		f.Limit = pageSize + 1 + skip
		recs, err := s.opts.Log.Search(r.Context(), f)
		if err != nil {
			return nil, false, err
		}
		full := len(recs) == f.Limit
		if c.id != 0 {
			recs = slices.DeleteFunc(recs, func(rec logstore.Record) bool {
				return rec.StartedAt.Equal(c.t) && rec.ID >= c.id
			})
		}
		if len(recs) > pageSize {
			return recs[:pageSize], true, nil
		}
		if !full {
			return recs, false, nil
		}
		skip *= 4 // many rows in one millisecond: read further
	}
}

// txnRow is one transaction in the results, its text made inert.
type txnRow struct {
	ID                                               int64
	Time, QueueID, Client, Sender, Recipients        string
	Action, Reason, Subject, Organization, RowAction string
}

func newTxnRow(r *logstore.Record) txnRow {
	return txnRow{
		ID:           r.ID,
		Time:         r.StartedAt.UTC().Format("2006-01-02 15:04:05"),
		QueueID:      clean(r.QueueID, 40),
		Client:       clean(explain.Client(r), 60),
		Sender:       clean(explain.Sender(r), 80),
		Recipients:   clean(explain.Recipients(r), 120),
		Action:       clean(r.Action, 20),
		Reason:       clean(r.Reason, 40),
		Subject:      clean(logstore.DecodeHeader(r.Subject), 120),
		Organization: clean(r.Organization, 40),
	}
}

type logData struct {
	Form      searchForm
	Global    bool
	Orgs      []string
	Actions   []string
	Problems  []string
	Rows      []txnRow
	Searched  bool // any filter or page given
	NextURL   string
	FirstURL  string
	PageStart bool // this is the first page
}

func (s *Server) logSearch(w http.ResponseWriter, r *http.Request, sess *session) {
	q := r.URL.Query()
	f, form, none, problems := parseSearch(q, s.now(), sess.user)
	d := logData{Form: form, Global: sess.user.Global(), Orgs: s.opts.Organizations, Actions: Actions, Problems: problems}
	d.Searched = len(q) > 0
	c, ok := cursor{}, true
	if p := q.Get("page"); p != "" {
		if c, ok = parseCursor(p); !ok {
			d.Problems = append(d.Problems, "page: not a page of this search; start again from the first page")
		}
	}
	d.PageStart = c.id == 0
	status := http.StatusOK
	if len(d.Problems) > 0 {
		status = http.StatusBadRequest
		s.render(w, r, sess, status, "log", page{Title: "Log", Nav: "log", Data: d})
		return
	}
	if !none {
		recs, more, err := s.searchPage(r, f, c)
		if err != nil {
			s.internalError(w, r, sess, err)
			return
		}
		for i := range recs {
			d.Rows = append(d.Rows, newTxnRow(&recs[i]))
		}
		if more {
			v := form.query()
			last := recs[len(recs)-1]
			v.Set("page", cursor{last.StartedAt, last.ID}.String())
			d.NextURL = "/log?" + v.Encode()
		}
	}
	if !d.PageStart {
		d.FirstURL = "/log?" + form.query().Encode()
	}
	s.render(w, r, sess, status, "log", page{Title: "Log", Nav: "log", Data: d})
}

// detailData is one transaction explained, its text made inert.
type detailData struct {
	ID           int64
	QueueID      string
	Title        string
	Paragraphs   []string
	Fields       []explain.Field
	Recipients   []logstore.Recipient
	Checks       []explain.Check
	HeadersAdded []string
	Quarantined  bool // held by mxguard: offer release and delete
}

func (s *Server) logDetail(w http.ResponseWriter, r *http.Request, sess *session) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		s.errorPage(w, r, sess, http.StatusNotFound, "No such transaction.")
		return
	}
	rec, err := s.opts.Log.Get(r.Context(), id)
	if errors.Is(err, logstore.ErrNotFound) || (err == nil && !sess.user.Sees(rec.Organization)) {
		// Another organisation's transaction is as absent as a missing one.
		s.errorPage(w, r, sess, http.StatusNotFound, "No such transaction.")
		return
	}
	if err != nil {
		s.internalError(w, r, sess, err)
		return
	}
	e := explain.Of(rec)
	d := detailData{ID: rec.ID, QueueID: clean(rec.QueueID, 0), Title: clean(e.Title, 0), HeadersAdded: []string{}}
	for _, p := range e.Paragraphs {
		d.Paragraphs = append(d.Paragraphs, clean(p, 0))
	}
	for _, f := range e.Fields {
		d.Fields = append(d.Fields, explain.Field{Name: f.Name, Value: clean(f.Value, 0)})
	}
	for _, rc := range e.Recipients {
		d.Recipients = append(d.Recipients, logstore.Recipient{Address: clean(rc.Address, 0), Organization: clean(rc.Organization, 0),
			Action: clean(rc.Action, 0), Reason: clean(rc.Reason, 0), Reply: clean(rc.Reply, 0)})
	}
	for _, c := range e.Checks {
		d.Checks = append(d.Checks, explain.Check{Check: clean(c.Check, 0), Result: clean(c.Result, 0), Detail: clean(c.Detail, 0),
			Duration: c.Duration, Error: clean(c.Error, 0)})
	}
	for _, h := range e.HeadersAdded {
		d.HeadersAdded = append(d.HeadersAdded, clean(h, 0))
	}
	d.Quarantined = rec.Action == "quarantine" && rec.QueueID != "" && !handled(rec)
	s.render(w, r, sess, http.StatusOK, "detail", page{Title: fmt.Sprintf("Transaction %d", rec.ID), Nav: "log", Data: d})
}

// handled reports whether a quarantined message was released or deleted
// since (the quarantine records that as evidence).
func handled(r *logstore.Record) bool {
	return slices.ContainsFunc(r.Evidence, func(e logstore.Evidence) bool { return e.Check == quarantine.Check })
}
