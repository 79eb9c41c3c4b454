package logstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mattn/go-sqlite3"
)

func TestConcurrentSavesAreBatched(t *testing.T) {
	const savers, perSaver = 64, 50
	s := openTest(t, Options{})

	var wg sync.WaitGroup
	ids := make([][]int64, savers)
	for g := range savers {
		wg.Go(func() {
			for i := range perSaver {
				r := &Record{
					StartedAt:  time.Now(),
					QueueID:    fmt.Sprintf("%d-%d", g, i),
					Recipients: []Recipient{{Address: fmt.Sprintf("u%d@example.com", g)}},
				}
				if err := s.Save(t.Context(), r); err != nil {
					t.Errorf("saver %d save %d: %v", g, i, err)
					return
				}
				ids[g] = append(ids[g], r.ID)
			}
		})
	}
	wg.Wait()

	seen := make(map[int64]bool)
	for _, list := range ids {
		for _, id := range list {
			if id == 0 || seen[id] {
				t.Fatalf("ID %d returned twice or zero", id)
			}
			seen[id] = true
		}
	}
	const total = savers * perSaver
	if n := queryInt(t, s.rdb, `SELECT count(*) FROM transactions`); n != total {
		t.Errorf("%d transactions committed, want %d", n, total)
	}
	if n := queryInt(t, s.rdb, `SELECT count(*) FROM recipients`); n != total {
		t.Errorf("%d recipients committed, want %d", n, total)
	}
	commits := s.commits.Load()
	t.Logf("%d saves in %d commits", total, commits)
	if commits >= total {
		t.Errorf("%d commits for %d saves: no batching", commits, total)
	}
}

// TestSaveErrors provokes real SQLite failures on the write connection, ones
// that happen even as root, and checks that Save reports them and that the
// store works again once the cause is gone.
func TestSaveErrors(t *testing.T) {
	tests := []struct {
		name     string
		rec      func() *Record
		setup    func(t *testing.T, s *Store) (undo func())
		wantCode sqlite3.ErrNo
	}{
		{
			name: "read-only database",
			rec:  fullRecord,
			setup: func(t *testing.T, s *Store) func() {
				exec(t, s.wdb, `PRAGMA query_only = ON`)
				return func() { exec(t, s.wdb, `PRAGMA query_only = OFF`) }
			},
			wantCode: sqlite3.ErrReadonly,
		},
		{
			name: "disk full",
			// Larger than a page, so the write needs a page the file may
			// not grow to.
			rec: func() *Record { r := fullRecord(); r.Subject = strings.Repeat("x", 64<<10); return r },
			setup: func(t *testing.T, s *Store) func() {
				pages := queryInt(t, s.wdb, `PRAGMA page_count`)
				exec(t, s.wdb, fmt.Sprintf(`PRAGMA max_page_count = %d`, pages))
				return func() { exec(t, s.wdb, `PRAGMA max_page_count = 4294967294`) }
			},
			wantCode: sqlite3.ErrFull,
		},
		{
			name: "locked by another process",
			rec:  fullRecord,
			setup: func(t *testing.T, s *Store) func() {
				exec(t, s.wdb, `PRAGMA busy_timeout = 20`)
				release := holdWriteLock(t, s.path)
				return func() {
					release()
					exec(t, s.wdb, fmt.Sprintf(`PRAGMA busy_timeout = %d`, busyTimeout.Milliseconds()))
				}
			},
			wantCode: sqlite3.ErrBusy,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, Options{})
			// One saved row, so an update has a target.
			existing := fullRecord()
			if err := s.Save(t.Context(), existing); err != nil {
				t.Fatal(err)
			}
			undo := tt.setup(t, s)

			update := tt.rec()
			update.ID = existing.ID
			for _, r := range []*Record{tt.rec(), update} {
				id := r.ID
				err := s.Save(t.Context(), r)
				var serr sqlite3.Error
				if !errors.As(err, &serr) || serr.Code != tt.wantCode {
					t.Errorf("Save(ID %d): got %v, want SQLite error %v", id, err, tt.wantCode)
				}
				if r.ID != id {
					t.Errorf("failed Save changed ID from %d to %d", id, r.ID)
				}
			}

			undo()
			r := tt.rec()
			if err := s.Save(t.Context(), r); err != nil {
				t.Errorf("Save after the cause was removed: %v", err)
			}
		})
	}
}

func TestSaveOnClosedDatabase(t *testing.T) {
	s := openTest(t, Options{})
	s.wdb.Close() // as if the connection had been lost
	if err := s.Save(t.Context(), fullRecord()); err == nil {
		t.Error("Save on a closed database returned nil")
	}
}

func TestClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	s, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}

	// Savers run until the store refuses them; every Save that returned nil
	// must be in the file afterwards.
	var (
		wg    sync.WaitGroup
		saved atomic.Int64
	)
	for range 16 {
		wg.Go(func() {
			for {
				err := s.Save(t.Context(), &Record{QueueID: "q"})
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Save: %v", err)
					return
				}
				saved.Add(1)
			}
		})
	}
	waitFor(t, "some commits", func() bool { return s.commits.Load() >= 5 })
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()

	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Save(t.Context(), &Record{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Save after Close: got %v, want ErrClosed", err)
	}

	ro, err := OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if n := queryInt(t, ro.rdb, `SELECT count(*) FROM transactions`); n != saved.Load() {
		t.Errorf("%d rows in the file, %d Saves returned nil", n, saved.Load())
	}
}

// TestSaveContext blocks the writer on another process's lock to control
// what is queued and what is taken.
func TestSaveContext(t *testing.T) {
	t.Run("cancelled before Save", func(t *testing.T) {
		s := openTest(t, Options{})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		// Repeated: an idle writer is ready to receive, and Save must not
		// let select choose between the two.
		for range 100 {
			r := &Record{}
			if err := s.Save(ctx, r); !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want context.Canceled", err)
			}
			if r.ID != 0 {
				t.Fatal("cancelled Save set ID")
			}
		}
		if n := queryInt(t, s.rdb, `SELECT count(*) FROM transactions`); n != 0 {
			t.Errorf("%d rows written by cancelled Saves", n)
		}
	})

	t.Run("queued and taken", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "log.db")
		s := openTest(t, Options{Path: path})
		release := holdWriteLock(t, path)

		// A is taken by the writer, which then waits for the lock.
		ctxA, cancelA := context.WithCancel(t.Context())
		a := &Record{QueueID: "A"}
		errA := make(chan error, 1)
		go func() { errA <- s.Save(ctxA, a) }()
		waitFor(t, "A taken", func() bool { return s.batches.Load() == 1 })
		// Once taken, giving up is no longer possible.
		cancelA()

		// B waits in the queue until its deadline.
		ctxB, cancelB := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancelB()
		b := &Record{QueueID: "B"}
		if err := s.Save(ctxB, b); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("queued Save: got %v, want context.DeadlineExceeded", err)
		}
		if b.ID != 0 {
			t.Error("Save that was never taken set ID")
		}

		release()
		if err := <-errA; err != nil {
			t.Errorf("taken Save with its ctx cancelled: %v, want nil", err)
		}
		if a.ID == 0 {
			t.Error("taken Save did not set ID")
		}
		var queueIDs string
		if err := s.rdb.QueryRow(`SELECT group_concat(queue_id) FROM transactions`).Scan(&queueIDs); err != nil {
			t.Fatal(err)
		}
		if queueIDs != "A" {
			t.Errorf("committed queue ids %q, want only A", queueIDs)
		}
	})
}

// TestBadRequestInBatch queues good and bad saves behind a blocked writer so
// they form one batch, and checks that only the bad ones fail.
func TestBadRequestInBatch(t *testing.T) {
	tests := []struct {
		name      string
		good, bad int
	}{
		{"one bad among good", 3, 1},
		{"two bad among good", 2, 2},
		{"all bad", 0, 3},
		{"all good", 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log.db")
			s := openTest(t, Options{Path: path})
			release := holdWriteLock(t, path)

			// The blocker occupies the writer while the batch queues.
			blocker := make(chan error, 1)
			go func() { blocker <- s.Save(t.Context(), &Record{QueueID: "blocker"}) }()
			waitFor(t, "blocker taken", func() bool { return s.batches.Load() == 1 })

			type outcome struct {
				bad bool
				r   *Record
				err error
			}
			n := tt.good + tt.bad
			results := make(chan outcome, n)
			for i := range n {
				bad := i < tt.bad
				r := &Record{QueueID: fmt.Sprintf("q%d", i), Recipients: []Recipient{{Address: "x@example.com"}}}
				if bad {
					r.ID = 1_000_000 + int64(i) // update of a row that does not exist
				}
				go func() { results <- outcome{bad, r, s.Save(t.Context(), r)} }()
			}
			waitFor(t, "batch queued", func() bool { return s.queued.Load() == int64(n) })
			// queued counts a Save just before its send; give the last one
			// time to reach the channel.
			time.Sleep(20 * time.Millisecond)
			release()
			if err := <-blocker; err != nil {
				t.Fatalf("blocker: %v", err)
			}

			for range n {
				o := <-results
				switch {
				case o.bad && !errors.Is(o.err, ErrNotFound):
					t.Errorf("bad save %s: got %v, want ErrNotFound", o.r.QueueID, o.err)
				case !o.bad && o.err != nil:
					t.Errorf("good save %s failed: %v", o.r.QueueID, o.err)
				case !o.bad && o.r.ID == 0:
					t.Errorf("good save %s got no ID", o.r.QueueID)
				}
			}
			if got := s.batches.Load(); got != 1 {
				t.Errorf("%d batches, want 1 (the queued saves join the blocker's)", got)
			}
			wantRetries, wantCommits := int64(0), int64(1)
			if tt.bad > 0 {
				wantRetries, wantCommits = 1, int64(1+tt.good)
			}
			if got := s.retries.Load(); got != wantRetries {
				t.Errorf("%d batch retries, want %d", got, wantRetries)
			}
			if got := s.commits.Load(); got != wantCommits {
				t.Errorf("%d commits, want %d", got, wantCommits)
			}
			if got := queryInt(t, s.rdb, `SELECT count(*) FROM transactions`); got != int64(1+tt.good) {
				t.Errorf("%d rows, want %d", got, 1+tt.good)
			}
			if got := queryInt(t, s.rdb, `SELECT count(*) FROM recipients`); got != int64(tt.good) {
				t.Errorf("%d recipients, want %d", got, tt.good)
			}
		})
	}
}

func TestMaxBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	s := openTest(t, Options{Path: path, MaxBatch: 2})
	release := holdWriteLock(t, path)

	errs := make(chan error, 6)
	go func() { errs <- s.Save(t.Context(), &Record{}) }()
	waitFor(t, "first save taken", func() bool { return s.batches.Load() == 1 })
	for range 5 {
		go func() { errs <- s.Save(t.Context(), &Record{}) }()
	}
	waitFor(t, "saves queued", func() bool { return s.queued.Load() == 5 })
	time.Sleep(20 * time.Millisecond)
	release()
	for range 6 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// 6 in transactions of at most 2: the first save was taken alone,
	// and one more joined it once the lock was released.
	if got := s.batches.Load(); got != 3 {
		t.Errorf("%d batches, want 3", got)
	}
	if got := s.commits.Load(); got != 3 {
		t.Errorf("%d commits, want 3", got)
	}
}

// TestLockedBatchFailsAtOnce: behind a lock held past the busy timeout, a
// batch of saves is answered together, not after one timeout per save.
func TestLockedBatchFailsAtOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	st, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	locker, err := sql.Open("sqlite3", "file:"+path+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close()
	tx, err := locker.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()

	const saves = 4
	errs := make(chan error, saves)
	for i := 0; i < saves; i++ {
		go func() {
			errs <- st.Save(context.Background(), &Record{StartedAt: time.Now(), Action: "accept"})
		}()
	}
	failed := 0
	for i := 0; i < saves; i++ {
		if err := <-errs; err != nil {
			failed++
		}
	}
	if failed != saves {
		t.Fatalf("%d of %d saves failed behind the lock; want all", failed, saves)
	}
	if r := st.retries.Load(); r != 0 {
		t.Errorf("%d batches retried one by one behind a lock; want 0 (each retry waits the busy timeout again)", r)
	}
}
