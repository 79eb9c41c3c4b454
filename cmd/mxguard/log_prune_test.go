package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/logstore"
)

const day = 24 * time.Hour

// pruneFixture writes a log and a configuration keeping transactions 30
// days, and those of organisation "keep" 365 days. It returns the ids of
// the rows the configuration's retention deletes and of those it keeps.
func pruneFixture(t *testing.T) (cfg, db string, expired, kept []int64) {
	t.Helper()
	now := time.Now()
	var recs []*logstore.Record
	var gone []bool
	for _, r := range []struct {
		org  string
		age  time.Duration
		gone bool
	}{
		{"", 40 * day, true},
		{"", 2 * day, false},
		{"example", 31 * day, true},
		{"example", 45 * day, true},
		{"example", 29 * day, false},
		{"keep", 40 * day, false},
		{"keep", 400 * day, true},
		{"gone-org", 31 * day, true}, // no longer configured: [log] retention
	} {
		recs = append(recs, &logstore.Record{StartedAt: now.Add(-r.age), Organization: r.org, Action: "accept",
			Recipients: []logstore.Recipient{{Address: "bob@example.com", Organization: r.org, Action: "accept"}}})
		gone = append(gone, r.gone)
	}
	cfg, db = writeLog(t, `retention = "30d"

[[organization]]
name = "example"
domains = ["example.com"]

[[organization]]
name = "keep"
domains = ["keep.test"]

[organization.log]
retention = "365d"
`, recs...)
	for i, r := range recs {
		if gone[i] {
			expired = append(expired, r.ID)
		} else {
			kept = append(kept, r.ID)
		}
	}
	return cfg, db, expired, kept
}

// logIDs returns the ids in the log at db.
func logIDs(t *testing.T, db string) map[int64]bool {
	t.Helper()
	st, err := logstore.OpenReadOnly(db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs, err := st.Recent(t.Context(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	ids := make(map[int64]bool)
	for _, r := range recs {
		ids[r.ID] = true
	}
	return ids
}

func TestLogPrune(t *testing.T) {
	cfg, db, expired, kept := pruneFixture(t)

	// The dry run counts and deletes nothing; --flags work as -flags.
	code, stdout, stderr := runMxguard("log", "prune", "--config", cfg, "--dry-run")
	if code != 0 {
		t.Fatalf("dry run: exit %d\n%s%s", code, stdout, stderr)
	}
	wantTable := []string{
		"ORGANIZATION  KEPT FOR  WOULD DELETE\n",
		"(none)        30d       1\n",
		"example       30d       2\n",
		"gone-org      30d       1\n",
		"keep          365d      1\n",
		"5 transaction(s) with their recipients would be deleted (dry run: nothing was deleted) from " + db,
	}
	for _, w := range wantTable {
		if !strings.Contains(stdout, w) {
			t.Errorf("dry run: stdout lacks %q:\n%s", w, stdout)
		}
	}
	if n := len(logIDs(t, db)); n != len(expired)+len(kept) {
		t.Errorf("the dry run deleted rows: %d left", n)
	}

	code, stdout, stderr = runMxguard("log", "prune", "-config", cfg)
	if code != 0 {
		t.Fatalf("prune: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, w := range append([]string{"ORGANIZATION  KEPT FOR  DELETED\n", "5 transaction(s) with their recipients deleted from " + db}, wantTable[1:5]...) {
		if !strings.Contains(stdout, w) {
			t.Errorf("prune: stdout lacks %q:\n%s", w, stdout)
		}
	}
	ids := logIDs(t, db)
	for _, id := range expired {
		if ids[id] {
			t.Errorf("expired transaction %d is still in the log", id)
		}
	}
	for _, id := range kept {
		if !ids[id] {
			t.Errorf("transaction %d, within its retention, was deleted", id)
		}
	}

	code, stdout, _ = runMxguard("log", "prune", "-config", cfg)
	if code != 0 || !strings.Contains(stdout, "nothing to delete") {
		t.Errorf("second prune: exit %d, stdout %q; want 0 and nothing to delete", code, stdout)
	}

	// -older-than overrides every retention, "keep"'s 365 days too.
	code, stdout, stderr = runMxguard("log", "prune", "-db", db, "-older-than", "10d")
	if code != 0 || !strings.Contains(stdout, "keep          10d       1\n") || !strings.Contains(stdout, "2 transaction(s)") {
		t.Errorf("prune -older-than 10d: exit %d\n%s%s", code, stdout, stderr)
	}
	if n := len(logIDs(t, db)); n != 1 {
		t.Errorf("%d transactions left, want the 2-day-old one", n)
	}
}

// TestLogPruneBesideDaemon prunes while another store, as mxguard serve,
// keeps saving to the same file.
func TestLogPruneBesideDaemon(t *testing.T) {
	cfg, db, expired, _ := pruneFixture(t)
	daemon, err := logstore.Open(logstore.Options{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	defer daemon.Close()
	// Enough expired rows for several batches.
	for range 300 {
		if err := daemon.Save(t.Context(), &logstore.Record{StartedAt: time.Now().Add(-100 * day)}); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithCancel(t.Context())
	var saved atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			if err := daemon.Save(ctx, &logstore.Record{StartedAt: time.Now(), Action: "accept"}); err != nil {
				if ctx.Err() == nil {
					t.Errorf("the daemon's Save during the prune: %v", err)
				}
				return
			}
			saved.Add(1)
		}
	})
	time.Sleep(20 * time.Millisecond) // the daemon is writing
	code, stdout, stderr := runMxguard("log", "prune", "-config", cfg)
	before := saved.Load()
	time.Sleep(20 * time.Millisecond) // and still writes after
	cancel()
	wg.Wait()

	if code != 0 {
		t.Fatalf("prune beside the daemon: exit %d\n%s%s", code, stdout, stderr)
	}
	if want := "305 transaction(s)"; !strings.Contains(stdout, want) {
		t.Errorf("stdout lacks %q:\n%s", want, stdout)
	}
	if before == 0 || saved.Load() == before {
		t.Errorf("the daemon saved %d rows before the prune ended and %d in all: it did not keep writing", before, saved.Load())
	}
	ids := logIDs(t, db)
	for _, id := range expired {
		if ids[id] {
			t.Errorf("expired transaction %d is still in the log", id)
		}
	}
}

func TestLogPruneErrors(t *testing.T) {
	cfg, db, _, _ := pruneFixture(t)
	missing := filepath.Join(t.TempDir(), "missing.db")
	tests := []cliCase{
		{[]string{"log", "help"}, 0, []string{"prune "}, nil},
		{[]string{"log", "prune", "-h"}, 0, []string{"usage: mxguard log prune", "-older-than", "-dry-run"}, nil},
		{[]string{"log", "prune", "-db", db}, 2, nil, []string{"with -db, give -older-than"}},
		{[]string{"log", "prune", "-db", db, "-older-than", "soon"}, 2, nil, []string{`invalid value "soon" for flag -older-than: "soon": want how old, above 0 (90d, 12h)`}},
		{[]string{"log", "prune", "-db", db, "-older-than", "0s"}, 2, nil, []string{"want how old, above 0"}},
		{[]string{"log", "prune", "-config", cfg, "-db", db}, 2, nil, []string{"give -config or -db, not both"}},
		{[]string{"log", "prune", "-config", cfg, "now"}, 2, nil, []string{`unexpected argument "now"`}},
		{[]string{"log", "prune", "-db", missing, "-older-than", "1d"}, 1, nil, []string{"transaction log: stat " + missing + ": no such file or directory"}},
		{[]string{"log", "prune", "-db", missing, "-older-than", "1d", "-dry-run"}, 1, nil, []string{"no such file"}},
		{[]string{"log", "prune", "-config", filepath.Join(t.TempDir(), "none.toml")}, 1, nil, []string{"none.toml"}},
	}
	checkCLI(t, tests)
	if _, err := os.Stat(missing); err == nil {
		t.Error("prune created the missing log")
	}
}
