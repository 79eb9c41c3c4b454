package web

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/mxguard/mxguard/logstore"
)

// chart is a stacked bar chart of transactions per action, drawn as
// inline SVG by the template: no script, no library.
type chart struct {
	Title         string
	Width, Height int
	Bars          []chartBar
	XLabels       []chartLabel
	YLabels       []chartLabel
	GridLines     []float64 // y
	PlotLeft      float64
	PlotRight     float64
	Empty         bool
}

type chartBar struct {
	Title    string // shown on hover: the bucket and its counts
	Segments []chartRect
}

type chartRect struct {
	X, Y, W, H float64
	Class      string
}

type chartLabel struct {
	X, Y float64
	Text string
}

// legendItem is one action's colour.
type legendItem struct{ Action, Class string }

// actionClass is the CSS class that colours an action.
func actionClass(a string) string {
	if slices.Contains(Actions, a) {
		return "a-" + a
	}
	return "a-other"
}

// chart geometry, in SVG user units.
const (
	chartW      = 720
	chartH      = 200
	chartLeft   = 44
	chartRight  = 8
	chartTop    = 10
	chartBottom = 22
)

// newChart lays out series, labelling every labelEvery-th bucket with
// layout.
func newChart(title string, series []logstore.Bucket, labelEvery int, layout, titleLayout string) chart {
	c := chart{Title: title, Width: chartW, Height: chartH, PlotLeft: chartLeft, PlotRight: chartW - chartRight}
	var top int64
	for _, b := range series {
		var sum int64
		for _, n := range b.Counts {
			sum += n
		}
		top = max(top, sum)
	}
	if top == 0 || len(series) == 0 {
		c.Empty = true
		return c
	}
	plotH := float64(chartH - chartTop - chartBottom)
	step := float64(chartW-chartLeft-chartRight) / float64(len(series))
	barW := step * 0.8
	scale := plotH / float64(top)
	base := float64(chartH - chartBottom)
	for i, b := range series {
		x := chartLeft + float64(i)*step + (step-barW)/2
		y := base
		bar := chartBar{Title: b.Start.UTC().Format(titleLayout) + " UTC:"}
		var total int64
		for _, a := range actionsOf(b.Counts) {
			n := b.Counts[a]
			h := float64(n) * scale
			y -= h
			bar.Segments = append(bar.Segments, chartRect{X: round2(x), Y: round2(y), W: round2(barW), H: round2(h), Class: actionClass(a)})
			bar.Title += fmt.Sprintf(" %s %d,", a, n)
			total += n
		}
		bar.Title += " total " + strconv.FormatInt(total, 10)
		c.Bars = append(c.Bars, bar)
		if i%labelEvery == 0 {
			c.XLabels = append(c.XLabels, chartLabel{X: round2(chartLeft + float64(i)*step + step/2), Y: chartH - 6, Text: b.Start.UTC().Format(layout)})
		}
	}
	for _, v := range []int64{top, top / 2} {
		if v == 0 || (v == top/2 && top < 2) {
			continue
		}
		y := round2(base - float64(v)*scale)
		c.GridLines = append(c.GridLines, y)
		c.YLabels = append(c.YLabels, chartLabel{X: chartLeft - 6, Y: y + 4, Text: strconv.FormatInt(v, 10)})
	}
	c.YLabels = append(c.YLabels, chartLabel{X: chartLeft - 6, Y: base + 4, Text: "0"})
	return c
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// actionsOf returns the actions with a count, in the order of strength,
// then any others by name.
func actionsOf(counts map[string]int64) []string {
	var out, others []string
	for _, a := range Actions {
		if counts[a] > 0 {
			out = append(out, a)
		}
	}
	for a, n := range counts {
		if n > 0 && !slices.Contains(Actions, a) {
			others = append(others, a)
		}
	}
	slices.Sort(others)
	return append(out, others...)
}

type countRow struct {
	Key, Action string
	N           int64
	Share       string
	Link        string // a search for these transactions
}

type loginRow struct {
	At, Email, Client, Detail, Organization string
}

type dashboardData struct {
	Scope        string // "all organisations" or "organisation X"
	Total24      int64
	Actions24    []countRow
	Hourly       chart
	Daily        chart
	Legend       []legendItem
	TopSenders   []countRow
	TopReasons   []countRow
	ShowLogins   bool
	FailedLogins []loginRow
}

// failedLoginsShown is how many recent failed logins the dashboard lists,
// from the last failedLoginsPeriod.
const (
	failedLoginsShown  = 20
	failedLoginsPeriod = 30 * 24 * time.Hour
)

func (s *Server) dashboard(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	u := sess.user
	now := s.now().UTC()
	day, month, err := s.dashboardStats(r, u.Organization, now)
	if err != nil {
		s.internalError(w, r, sess, err)
		return
	}
	d := dashboardData{
		Scope:   "all organisations",
		Total24: day.Total,
		Hourly:  newChart("Transactions per hour, last 24 hours (UTC)", day.Series, 3, "15:00", "2006-01-02 15:00"),
		Daily:   newChart("Transactions per day, last 30 days (UTC)", month.Series, 5, "01-02", "2006-01-02"),
	}
	if !u.Global() {
		d.Scope = "organisation " + u.Organization
	}
	share := func(n int64) string {
		if day.Total == 0 {
			return ""
		}
		return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(day.Total))
	}
	since := "24h"
	for _, c := range day.Actions {
		d.Actions24 = append(d.Actions24, countRow{Key: clean(c.Key, 40), N: c.N, Share: share(c.N),
			Link: "/log?" + searchForm{Since: since, Action: c.Key}.query().Encode()})
	}
	seen := map[string]bool{}
	for _, c := range append(slices.Clone(day.Actions), month.Actions...) {
		if !seen[c.Key] {
			seen[c.Key] = true
			d.Legend = append(d.Legend, legendItem{Action: clean(c.Key, 40), Class: actionClass(c.Key)})
		}
	}
	slices.SortFunc(d.Legend, func(a, b legendItem) int { return legendOrder(a.Action) - legendOrder(b.Action) })
	for _, c := range day.TopSenders {
		row := countRow{Key: clean(c.Key, 80), N: c.N}
		if _, err := parseAddress(c.Key, false); err == nil {
			row.Link = "/log?" + searchForm{Since: since, From: c.Key, Action: "reject"}.query().Encode()
		}
		d.TopSenders = append(d.TopSenders, row)
	}
	for i, c := range day.Reasons {
		if i == 10 {
			break
		}
		d.TopReasons = append(d.TopReasons, countRow{Key: clean(orDash(c.Reason), 40), Action: clean(c.Action, 20), N: c.N, Share: share(c.N),
			Link: "/log?" + searchForm{Since: since, Action: c.Action}.query().Encode()})
	}
	if u.Admin() {
		d.ShowLogins = true
		evs, err := s.opts.Accounts.FailedLogins(ctx, u.Organization, now.Add(-failedLoginsPeriod), failedLoginsShown)
		if err != nil {
			s.internalError(w, r, sess, err)
			return
		}
		for _, ev := range evs {
			d.FailedLogins = append(d.FailedLogins, loginRow{At: ev.At.UTC().Format("2006-01-02 15:04:05"), Email: clean(ev.Email, 80),
				Client: clean(ev.Client, 60), Detail: clean(ev.Detail, 80), Organization: clean(orDash(ev.Organization), 40)})
		}
	}
	s.render(w, r, sess, http.StatusOK, "dashboard", page{Title: "Dashboard", Nav: "dashboard", Data: d})
}

// statsCacheTTL is how long the dashboard's counts are reused: counting
// 30 days of a busy log takes a while, and a minute-old chart is as good.
const statsCacheTTL = time.Minute

type cachedStats struct {
	at         time.Time
	day, month *logstore.Stats
}

// dashboardStats counts the last 24 hours by hour and the last 30 days by
// day, for one organisation or ("") all.
func (s *Server) dashboardStats(r *http.Request, org string, now time.Time) (day, month *logstore.Stats, err error) {
	s.statsMu.Lock()
	c, ok := s.statsCache[org]
	s.statsMu.Unlock()
	if ok && !now.Before(c.at) && now.Sub(c.at) < statsCacheTTL {
		return c.day, c.month, nil
	}
	day, err = s.opts.Log.Stats(r.Context(), logstore.StatsFilter{
		Since: now.Truncate(time.Hour).Add(-23 * time.Hour), Until: now, Organization: org, By: "hour", Top: 10,
	})
	if err != nil {
		return nil, nil, err
	}
	month, err = s.opts.Log.Stats(r.Context(), logstore.StatsFilter{
		Since: now.Truncate(24 * time.Hour).Add(-29 * 24 * time.Hour), Until: now, Organization: org, By: "day", Top: 1,
	})
	if err != nil {
		return nil, nil, err
	}
	s.statsMu.Lock()
	if s.statsCache == nil {
		s.statsCache = map[string]cachedStats{}
	}
	s.statsCache[org] = cachedStats{now, day, month}
	s.statsMu.Unlock()
	return day, month, nil
}

func legendOrder(a string) int {
	if i := slices.Index(Actions, a); i >= 0 {
		return i
	}
	return len(Actions)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
