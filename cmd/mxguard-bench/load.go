package main

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// config is what one run does.
type config struct {
	mode     string // "load", or "big": one generated message
	name     string
	listen   string // the milter's address in Postfix notation, for the report
	network  string
	addr     string
	sessions int   // concurrent SMTP sessions
	perConn  int   // messages per milter connection
	count    int64 // messages to send; 0: for duration
	duration time.Duration
	warmupN  int64 // messages sent first, not measured
	warmupD  time.Duration
	timeout  time.Duration // per message
	msgs     []*message
	env      envelope
	qidPre   string // queue id prefix
	pid      int    // the server's process, 0 for none
}

// loadTest sends messages as cfg says, over its phases (warmup, then the
// measured one).
type loadTest struct {
	cfg   *config
	seq   atomic.Uint64 // messages started: the round robin and the queue ids
	ports atomic.Uint32 // connections opened: the client ports
}

// result is what a phase measured.
type result struct {
	messages  int64 // finished, with or without error
	errors    int64
	sessions  int64 // milter connections opened
	latencies []time.Duration
	actions   map[string]int64
	firstErr  error
	firstAt   time.Time
	elapsed   time.Duration
}

func (r *result) add(o *result) {
	r.messages += o.messages
	r.errors += o.errors
	r.sessions += o.sessions
	r.latencies = append(r.latencies, o.latencies...)
	for k, v := range o.actions {
		r.actions[k] += v
	}
	if o.firstErr != nil && (r.firstErr == nil || o.firstAt.Before(r.firstAt)) {
		r.firstErr, r.firstAt = o.firstErr, o.firstAt
	}
}

// phase runs cfg.sessions SMTP sessions until count messages have been
// started (count > 0) or until the clock passes until. Messages under way
// then finish, each within cfg.timeout, so a phase always ends.
func (lt *loadTest) phase(count int64, until time.Time) *result {
	var claimed atomic.Int64
	next := func() bool {
		if count > 0 {
			return claimed.Add(1) <= count
		}
		return time.Now().Before(until)
	}
	results := make([]*result, lt.cfg.sessions)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range results {
		results[i] = &result{actions: map[string]int64{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			lt.session(next, results[i])
		}()
	}
	wg.Wait()
	total := &result{actions: map[string]int64{}, elapsed: time.Since(start)}
	for _, r := range results {
		total.add(r)
	}
	return total
}

// session is one concurrent SMTP client: it sends messages while next
// says so, cfg.perConn per milter connection.
func (lt *loadTest) session(next func() bool, r *result) {
	cfg := lt.cfg
	var s *smtpSession
	sent := 0
	defer func() {
		if s != nil {
			s.close()
		}
	}()
	for next() {
		seq := lt.seq.Add(1) - 1
		msg := cfg.msgs[seq%uint64(len(cfg.msgs))]
		qid := fmt.Sprintf("%s%07X", cfg.qidPre, seq&0xfffffff)
		start := time.Now()
		deadline := start.Add(cfg.timeout)

		var action string
		var err error
		if s == nil {
			port := uint16(32768 + lt.ports.Add(1)%28232) // Linux's ephemeral ports
			s, action, err = openSession(cfg.network, cfg.addr, &cfg.env, port, deadline)
			if s != nil {
				r.sessions++
				sent = 0
			}
		}
		if s != nil && err == nil && action == "" {
			action, err = s.message(&cfg.env, msg, qid, deadline)
			sent++
		}
		elapsed := time.Since(start)

		r.messages++
		if err != nil {
			r.errors++
			if r.firstErr == nil {
				r.firstErr, r.firstAt = err, start
			}
		} else {
			r.latencies = append(r.latencies, elapsed)
			r.actions[action]++
		}
		if s != nil && (s.closed || sent >= cfg.perConn) {
			s.close()
			s = nil
		}
	}
}

// report is the outcome of a run, as printed.
type report struct {
	Mode         string           `json:"mode"` // "load" or "big"
	Name         string           `json:"name"`
	Addr         string           `json:"addr"`
	Concurrency  int              `json:"concurrency"`
	PerConn      int              `json:"per_conn"`
	Messages     int64            `json:"messages"`
	Errors       int64            `json:"errors"`
	Sessions     int64            `json:"sessions"`
	DurationS    float64          `json:"duration_s"`
	MsgsPerS     float64          `json:"msgs_per_s"`
	P50Ms        float64          `json:"p50_ms"`
	P99Ms        float64          `json:"p99_ms"`
	MaxMs        float64          `json:"max_ms"`
	Actions      map[string]int64 `json:"actions"`
	RSSPeakMiB   *float64         `json:"rss_peak_mib"`
	RSSStartMiB  *float64         `json:"rss_start_mib"`
	CPUMsPer1000 *float64         `json:"cpu_ms_per_1000"`
	FirstError   string           `json:"first_error"`
	SizeBytes    int              `json:"size_bytes,omitempty"` // of the generated message
}

// newReport sums r up. Throughput counts the messages that got a final
// reply; latencies are theirs.
func newReport(cfg *config, r *result) *report {
	rep := &report{
		Mode:        cfg.mode,
		Name:        cfg.name,
		Addr:        cfg.listen,
		Concurrency: cfg.sessions,
		PerConn:     cfg.perConn,
		Messages:    r.messages,
		Errors:      r.errors,
		Sessions:    r.sessions,
		DurationS:   round(r.elapsed.Seconds(), 3),
		Actions:     map[string]int64{},
	}
	for _, a := range []string{actAccept, actReject, actTempfail, actDiscard, actQuarantine} {
		rep.Actions[a] = 0
	}
	for k, v := range r.actions {
		rep.Actions[k] += v
	}
	if s := r.elapsed.Seconds(); s > 0 {
		rep.MsgsPerS = round(float64(r.messages-r.errors)/s, 1)
	}
	slices.Sort(r.latencies)
	rep.P50Ms = ms(percentile(r.latencies, 0.50))
	rep.P99Ms = ms(percentile(r.latencies, 0.99))
	if n := len(r.latencies); n > 0 {
		rep.MaxMs = ms(r.latencies[n-1])
	}
	if r.firstErr != nil {
		rep.FirstError = r.firstErr.Error()
	}
	if cfg.mode == "big" {
		rep.SizeBytes = cfg.msgs[0].size
	}
	return rep
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

func ms(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 3) }

func round(x float64, places int) float64 {
	p := math.Pow10(places)
	return math.Round(x*p) / p
}
