package logstore

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkSave measures Save through the group-commit writer with
// synchronous=normal, for 1, 8 and 64 sessions saving at once as the
// milter's sessions would, each Save a new realistic row (benchRecords).
//
// Every session saves back to back, with no SMTP in between, so this is the
// store at saturation: rows/s is its capacity, and p50-ms/p99-ms are what a
// Save costs a session when the writer is that busy. In such a closed loop
// the mean wait is sessions / (rows/s) whatever the writer does (Little's
// law): 64 sessions at 10,000 rows/s wait 6.4 ms on average.
// BenchmarkSaveLatency measures the wait under a load the store can carry.
// saves/commit shows how much group commit batched.
//
//	go test -run '^$' -bench 'Save' -count 5 ./logstore/
func BenchmarkSave(b *testing.B) {
	for _, sessions := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("sessions=%d", sessions), func(b *testing.B) {
			benchSessions(b, sessions, 0)
		})
	}
}

// BenchmarkSaveLatency is BenchmarkSave with the sessions paced to 500
// rows/s in all, with random (exponential) gaps, as mail arrives. That is a
// twentieth of what the store carries here, and still several times a busy
// MX: 64 sessions each ending a transaction every 128 ms, where SMTP takes
// hundreds. p50-ms and p99-ms are the latency a Save adds to a
// transaction. (1 session cannot offer the full rate: its gaps of 2 ms on
// average are sleeps that last longer.)
func BenchmarkSaveLatency(b *testing.B) {
	const rate = 500 // rows/s, all sessions together
	for _, sessions := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("sessions=%d", sessions), func(b *testing.B) {
			benchSessions(b, sessions, time.Duration(sessions)*time.Second/time.Duration(rate))
		})
	}
}

// benchSessions runs b.N saves from sessions goroutines, each waiting a
// random time of mean think after each Save (none when think is 0), and
// reports rows/s, the p50 and p99 of the Save calls and saves/commit.
func benchSessions(b *testing.B, sessions int, think time.Duration) {
	s := openTest(b, Options{Synchronous: "normal"})
	tmpls := benchRecords(256)
	var next atomic.Int64
	var wg sync.WaitGroup
	// Per session, so recording a duration needs no lock.
	lat := make([][]time.Duration, sessions)
	for g := range lat {
		lat[g] = make([]time.Duration, 0, b.N/sessions+1)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for g := range sessions {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if think > 0 {
					// Exponential, as arrivals from many clients are.
					time.Sleep(time.Duration(rand.ExpFloat64() * float64(think)))
				}
				r := tmpls[i%int64(len(tmpls))] // ID 0: each save inserts a row
				r.QueueID = strconv.FormatInt(0x4a000000+i, 16)
				r.EndedAt = time.Now()
				r.StartedAt = r.EndedAt.Add(-2 * time.Second)
				start := time.Now()
				if err := s.Save(b.Context(), &r); err != nil {
					b.Error(err)
					return
				}
				lat[g] = append(lat[g], time.Since(start))
			}
		})
	}
	wg.Wait()
	b.StopTimer()

	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(ms(percentile(all, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(all, 99)), "p99-ms")
	b.ReportMetric(float64(b.N)/float64(s.commits.Load()), "saves/commit")
}

// benchRecords returns n rows like the milter writes for an inbound message
// that passed: about 20 columns filled, 2 recipients, 3 evidence entries
// and 1 added header, varied so the indexes see distinct keys.
func benchRecords(n int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		sender := fmt.Sprintf("user%d@sender%d.example.net", i, i%37)
		recs[i] = Record{
			ClientIP:     fmt.Sprintf("198.51.100.%d", i%250+1),
			ClientName:   fmt.Sprintf("mail%d.sender%d.example.net", i%7, i%37),
			Helo:         fmt.Sprintf("mail%d.sender%d.example.net", i%7, i%37),
			Daemon:       "smtpd",
			MailFrom:     sender,
			FromHeader:   "Sender " + strconv.Itoa(i) + " <" + sender + ">",
			Subject:      fmt.Sprintf("Invoice %d for June", 10000+i),
			MessageID:    fmt.Sprintf("<%d.%d@sender%d.example.net>", i, i*7919, i%37),
			Size:         int64(4000 + i*13),
			Direction:    "inbound",
			Organization: fmt.Sprintf("org%d.example", i%4),
			SPF:          "pass",
			SPFDomain:    fmt.Sprintf("sender%d.example.net", i%37),
			DKIM:         "pass",
			DMARC:        "pass",
			SpamScore:    ptr(float64(i%50) / 10),
			Action:       "accept",
			Reason:       "Accepted",
			Reply:        "250 2.0.0 Ok",
			HeadersAdded: []string{"Authentication-Results: mx.example.com; spf=pass smtp.mailfrom=" + sender},
			Evidence: []Evidence{
				{Check: "relay", Result: "allowed", Detail: "recipient domain is ours", Duration: 3 * time.Microsecond},
				{Check: "spf", Result: "pass", Detail: fmt.Sprintf("sender%d.example.net", i%37), Duration: 1800 * time.Microsecond},
				{Check: "spamd", Result: "ham", Detail: "score 0.4", Duration: 120 * time.Millisecond},
			},
			Recipients: []Recipient{
				{Address: fmt.Sprintf("bob%d@org%d.example", i%100, i%4), Organization: fmt.Sprintf("org%d.example", i%4), Action: "accept", Reason: "Accepted"},
				{Address: fmt.Sprintf("carol%d@org%d.example", i%100, i%4), Organization: fmt.Sprintf("org%d.example", i%4), Action: "accept", Reason: "Accepted"},
			},
		}
	}
	return recs
}

// percentile returns the p-th percentile of sorted (nearest rank).
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i, 1)-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkPruneBatch measures one prune batch (pruneBatch transactions,
// each with 2 recipients) through the writer, in a log that also holds
// fresh rows, so the index pages are as mixed as in a real log. ms/batch is
// what a Save queued behind the batch waits at most.
func BenchmarkPruneBatch(b *testing.B) {
	s := openTest(b, Options{Synchronous: "normal"})
	now := time.Now()
	tmpls := benchRecords(256)
	var seq int64
	fill := func(n int, started time.Time, org string) {
		var wg sync.WaitGroup
		var next atomic.Int64
		for range 16 {
			wg.Go(func() {
				for i := next.Add(1); i <= int64(n); i = next.Add(1) {
					r := tmpls[i%int64(len(tmpls))]
					r.QueueID = strconv.FormatInt(atomic.AddInt64(&seq, 1), 16)
					r.StartedAt = started.Add(time.Duration(i) * time.Millisecond)
					if org != "" {
						r.Organization = org
					}
					if err := s.Save(b.Context(), &r); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	fill(20*pruneBatch, now.Add(-time.Hour), "")
	cutoff := formatTime(now.Add(-24 * time.Hour))
	var lat []time.Duration
	left := 0
	b.ResetTimer()
	for range b.N {
		if left == 0 {
			b.StopTimer()
			fill(20*pruneBatch, now.Add(-100*24*time.Hour), "old.example")
			left = 20
			b.StartTimer()
		}
		start := time.Now()
		n, err := s.pruneBatch(b.Context(), "old.example", cutoff)
		if err != nil || n != pruneBatch {
			b.Fatalf("pruneBatch = %d, %v; want %d", n, err, pruneBatch)
		}
		lat = append(lat, time.Since(start))
		left--
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(ms(percentile(lat, 50)), "p50-ms/batch")
	b.ReportMetric(ms(percentile(lat, 99)), "p99-ms/batch")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms/batch")
}
