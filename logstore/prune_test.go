package logstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/syncbuf"
)

// setPrune sets the batch size and pause for one test.
func setPrune(t *testing.T, batch int, pause time.Duration) {
	t.Helper()
	oldBatch, oldPause := pruneBatch, prunePause
	pruneBatch, prunePause = batch, pause
	t.Cleanup(func() { pruneBatch, prunePause = oldBatch, oldPause })
}

// saveAged saves a row of org started age before now, with two recipients.
func saveAged(t testing.TB, s *Store, org string, now time.Time, age time.Duration) *Record {
	t.Helper()
	r := &Record{
		StartedAt:    now.Add(-age),
		Organization: org,
		QueueID:      fmt.Sprintf("%s-%s", org, age),
		Recipients:   []Recipient{{Address: "a@" + org}, {Address: "b@" + org}},
	}
	if err := s.Save(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPrune(t *testing.T) {
	const day = 24 * time.Hour
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	policy := Retention{
		ByOrg:   map[string]time.Duration{"long.example": 365 * day, "short.example": 7 * day, "forever.example": 0},
		Default: 90 * day,
	}
	rows := []struct {
		org  string
		age  time.Duration
		kept bool
	}{
		{"", 89 * day, true},
		{"", 91 * day, false},
		{"other.example", 90*day - time.Second, true}, // not in ByOrg: Default
		{"other.example", 90*day + time.Second, false},
		{"long.example", 91 * day, true},
		{"long.example", 364 * day, true},
		{"long.example", 366 * day, false},
		{"short.example", 6 * day, true},
		{"short.example", 8 * day, false},
		{"short.example", 100 * day, false},
		{"forever.example", 5000 * day, true},
		{"future.example", -day, true}, // a clock that was ahead
	}
	s := openTest(t, Options{})
	var kept []int64
	for _, r := range rows {
		rec := saveAged(t, s, r.org, now, r.age)
		if r.kept {
			kept = append(kept, rec.ID)
		}
	}
	// A row that cannot be dated counts as expired.
	if err := s.Save(t.Context(), &Record{Organization: "other.example", Recipients: []Recipient{{Address: "x@y"}}}); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"": 1, "other.example": 2, "long.example": 1, "short.example": 2}

	expired, err := s.Expired(t.Context(), policy, now)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(expired, want) {
		t.Errorf("Expired = %v, want %v", expired, want)
	}
	if n := queryInt(t, s.rdb, `SELECT count(*) FROM transactions`); n != int64(len(rows)+1) {
		t.Fatalf("Expired deleted rows: %d left", n)
	}

	deleted, err := s.PruneByOrganization(t.Context(), policy, now)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(deleted, want) {
		t.Errorf("PruneByOrganization = %v, want %v", deleted, want)
	}
	for _, id := range kept {
		r, err := s.Get(t.Context(), id)
		if err != nil {
			t.Errorf("kept row %d: %v", id, err)
			continue
		}
		if len(r.Recipients) != 2 {
			t.Errorf("kept row %d has %d recipients, want 2", id, len(r.Recipients))
		}
	}
	if n := queryInt(t, s.rdb, `SELECT count(*) FROM transactions`); n != int64(len(kept)) {
		t.Errorf("%d rows left, want %d", n, len(kept))
	}
	// ON DELETE CASCADE took the recipients along.
	if n := queryInt(t, s.rdb, `SELECT count(*) FROM recipients WHERE transaction_id NOT IN (SELECT id FROM transactions)`); n != 0 {
		t.Errorf("%d recipients of deleted transactions left", n)
	}

	// Nothing left to do.
	if n, err := s.Prune(t.Context(), policy, now); n != 0 || err != nil {
		t.Errorf("second Prune = %d, %v; want 0, nil", n, err)
	}
	// The zero Retention keeps everything.
	if n, err := s.Prune(t.Context(), Retention{}, now.Add(10000*day)); n != 0 || err != nil {
		t.Errorf("Prune with zero Retention = %d, %v; want 0, nil", n, err)
	}
}

func TestPruneInBatches(t *testing.T) {
	setPrune(t, 7, 0)
	now := time.Now()
	s := openTest(t, Options{})
	for i := range 30 {
		saveAged(t, s, "", now, time.Duration(48+i)*time.Hour)
	}
	saveAged(t, s, "", now, time.Hour)
	before := s.commits.Load()

	n, err := s.Prune(t.Context(), Retention{Default: 24 * time.Hour}, now)
	if n != 30 || err != nil {
		t.Fatalf("Prune = %d, %v; want 30, nil", n, err)
	}
	// 7+7+7+7+2: one commit per batch.
	if got := s.commits.Load() - before; got != 5 {
		t.Errorf("%d commits, want 5 batches", got)
	}
	if n := queryInt(t, s.rdb, `SELECT count(*) FROM transactions`); n != 1 {
		t.Errorf("%d rows left, want 1", n)
	}
}

func TestPruneErrors(t *testing.T) {
	policy := Retention{Default: time.Hour}
	now := time.Now()

	t.Run("read-only", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "log.db")
		s := openTest(t, Options{Path: path})
		saveAged(t, s, "", now, 2*time.Hour)
		ro, err := OpenReadOnly(path)
		if err != nil {
			t.Fatal(err)
		}
		defer ro.Close()
		if _, err := ro.Prune(t.Context(), policy, now); !errors.Is(err, ErrReadOnly) {
			t.Errorf("Prune on a read-only store: %v, want ErrReadOnly", err)
		}
		// The dry run works read-only.
		if exp, err := ro.Expired(t.Context(), policy, now); err != nil || exp[""] != 1 {
			t.Errorf("Expired on a read-only store = %v, %v; want 1 row", exp, err)
		}
	})

	t.Run("closed", func(t *testing.T) {
		s := openTest(t, Options{})
		saveAged(t, s, "", now, 2*time.Hour)
		s.Close()
		if _, err := s.Prune(t.Context(), policy, now); err == nil {
			t.Error("Prune on a closed store returned nil")
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		s := openTest(t, Options{})
		saveAged(t, s, "", now, 2*time.Hour)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := s.Prune(ctx, policy, now); !errors.Is(err, context.Canceled) {
			t.Errorf("Prune with a cancelled ctx: %v, want context.Canceled", err)
		}
		if n := queryInt(t, s.rdb, `SELECT count(*) FROM transactions`); n != 1 {
			t.Errorf("cancelled Prune deleted rows: %d left", n)
		}
	})

	t.Run("write fails", func(t *testing.T) {
		s := openTest(t, Options{})
		saveAged(t, s, "", now, 2*time.Hour)
		exec(t, s.wdb, `PRAGMA query_only = ON`)
		if _, err := s.Prune(t.Context(), policy, now); err == nil {
			t.Error("Prune on a database that refuses writes returned nil")
		}
		exec(t, s.wdb, `PRAGMA query_only = OFF`)
		if n, err := s.Prune(t.Context(), policy, now); n != 1 || err != nil {
			t.Errorf("Prune once writable = %d, %v; want 1, nil", n, err)
		}
	})
}

// TestPruneBesideSaves prunes while the same store and a second store on the
// same file (as mxguard log prune beside the daemon) keep saving.
func TestPruneBesideSaves(t *testing.T) {
	setPrune(t, 50, 0)
	path := filepath.Join(t.TempDir(), "log.db")
	daemon := openTest(t, Options{Path: path})
	tool := openTest(t, Options{Path: path})
	now := time.Now()
	const old = 400
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range old / 8 {
				saveAged(t, daemon, "", now, time.Duration(48*60+g*100+i)*time.Minute)
			}
		})
	}
	wg.Wait()

	stop := make(chan struct{})
	var fresh atomic.Int64
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := daemon.Save(t.Context(), &Record{StartedAt: time.Now(), Recipients: []Recipient{{Address: "n@x"}}}); err != nil {
					t.Errorf("Save during prune: %v", err)
					return
				}
				fresh.Add(1)
			}
		})
	}
	policy := Retention{Default: 24 * time.Hour}
	var pruned atomic.Int64
	for _, s := range []*Store{daemon, tool} {
		wg.Go(func() {
			n, err := s.Prune(t.Context(), policy, now)
			if err != nil {
				t.Errorf("Prune: %v", err)
			}
			pruned.Add(int64(n))
		})
	}
	// Let the saves run a little after the prunes are done.
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()

	if got := pruned.Load(); got != old {
		t.Errorf("the two Prunes deleted %d rows together, want %d", got, old)
	}
	if n := queryInt(t, daemon.rdb, `SELECT count(*) FROM transactions`); n != fresh.Load() {
		t.Errorf("%d rows left, want the %d fresh ones", n, fresh.Load())
	}
	if n := queryInt(t, daemon.rdb, `SELECT count(*) FROM recipients`); n != fresh.Load() {
		t.Errorf("%d recipients left, want %d", n, fresh.Load())
	}
}

func TestStartPruner(t *testing.T) {
	now := time.Now()
	var logs syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	t.Run("runs and stops with ctx", func(t *testing.T) {
		s := openTest(t, Options{})
		for range 3 {
			saveAged(t, s, "a.example", now, 48*time.Hour)
		}
		saveAged(t, s, "b.example", now, 48*time.Hour) // kept: 72h
		var calls atomic.Int64
		ctx, cancel := context.WithCancel(t.Context())
		s.StartPruner(ctx, 10*time.Millisecond, func() Retention {
			calls.Add(1)
			return Retention{ByOrg: map[string]time.Duration{"b.example": 72 * time.Hour}, Default: 24 * time.Hour}
		}, log)
		waitFor(t, "the pruner to delete", func() bool {
			return queryInt(t, s.rdb, `SELECT count(*) FROM transactions`) == 1
		})
		waitFor(t, "a run with nothing to do", func() bool { return strings.Contains(logs.String(), "nothing to prune") })
		cancel()
		time.Sleep(50 * time.Millisecond)
		stopped := calls.Load()
		time.Sleep(50 * time.Millisecond)
		if calls.Load() != stopped {
			t.Error("the pruner still runs after its ctx ended")
		}
		out := logs.String()
		for _, want := range []string{`level=INFO msg="logstore: pruned old transactions" deleted=3 by_org=map[a.example:3]`} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("stops with Close", func(t *testing.T) {
		s := openTest(t, Options{})
		var calls atomic.Int64
		s.StartPruner(t.Context(), 5*time.Millisecond, func() Retention {
			calls.Add(1)
			return Retention{Default: time.Hour}
		}, log)
		waitFor(t, "a run", func() bool { return calls.Load() >= 1 })
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		stopped := calls.Load()
		time.Sleep(50 * time.Millisecond)
		if calls.Load() != stopped {
			t.Error("the pruner still runs after Close")
		}
	})

	t.Run("read-only store", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "log.db")
		openTest(t, Options{Path: path})
		ro, err := OpenReadOnly(path)
		if err != nil {
			t.Fatal(err)
		}
		defer ro.Close()
		ro.StartPruner(t.Context(), time.Millisecond, func() Retention { return Retention{} }, log)
		if !strings.Contains(logs.String(), "pruner not started") {
			t.Error("no error logged for a pruner on a read-only store")
		}
	})
}

// TestFileSizeBounded feeds a steady stream: each round prunes the rows of
// the rounds before and inserts a round of new ones, so the log always holds
// one round. The database file must stop growing after the first round:
// SQLite puts the pages of deleted rows on its free list and reuses them.
// The -wal file must stay bounded too: it is written again from its start
// after each complete checkpoint, at the latest every walBackstop pages, and
// journal_size_limit cuts it back should it have grown past walSizeLimit.
func TestFileSizeBounded(t *testing.T) {
	rows := 3000
	if testing.Short() {
		rows = 1000
	}
	const rounds = 4
	path := filepath.Join(t.TempDir(), "log.db")
	s := openTest(t, Options{Path: path})
	tmpls := benchRecords(256)
	base := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	size := func(name string) int64 {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}

	var dbSize, walSize [rounds]int64
	for round := range rounds {
		roundStart := base.Add(time.Duration(round) * time.Hour)
		// Everything before this round has expired.
		n, err := s.Prune(t.Context(), Retention{Default: time.Hour}, roundStart.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if round > 0 && n != rows {
			t.Fatalf("round %d: pruned %d rows, want %d", round, n, rows)
		}

		var next atomic.Int64
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for i := next.Add(1); i <= int64(rows); i = next.Add(1) {
					r := tmpls[i%int64(len(tmpls))]
					r.QueueID = fmt.Sprintf("%d-%d", round, i)
					r.StartedAt = roundStart.Add(time.Duration(i) * time.Millisecond)
					if err := s.Save(t.Context(), &r); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		// So that the database file holds every committed page.
		exec(t, s.wdb, `PRAGMA wal_checkpoint(PASSIVE)`)
		dbSize[round], walSize[round] = size(path), size(path+"-wal")
		t.Logf("round %d: %d rows pruned, %d rows in the log: db %d KiB, wal %d KiB, free pages %d",
			round+1, n, queryInt(t, s.rdb, `SELECT count(*) FROM transactions`),
			dbSize[round]>>10, walSize[round]>>10, queryInt(t, s.wdb, `PRAGMA freelist_count`))
	}

	// Slack for B-trees that are not packed quite the same way each round.
	const pageSlack = 64 * 4096
	for round := 1; round < rounds; round++ {
		if dbSize[round] > dbSize[0]+dbSize[0]/20+pageSlack {
			t.Errorf("round %d: db grew to %d bytes, from %d after round 1", round+1, dbSize[round], dbSize[0])
		}
	}
	// The -wal stays below its limit, give or take one large transaction
	// committed while a checkpoint was under way.
	for round := range rounds {
		if max := int64(walSizeLimit + walSizeLimit/4); walSize[round] > max {
			t.Errorf("round %d: wal is %d bytes, more than %d", round+1, walSize[round], max)
		}
	}
}
