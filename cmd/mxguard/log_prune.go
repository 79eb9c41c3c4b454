package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/policy"
)

const logPruneUsage = `usage: mxguard log prune [-config PATH | -db PATH] [-older-than DURATION] [-dry-run]

Deletes the transactions older than their organisation's retention
([log] retention, or the organisation's [organization.log] retention), with
their recipients, and prints how many it deleted per organisation.
mxguard serve does the same every 10 minutes; this is for doing it now,
for instance after shortening a retention.

  -older-than D   delete every transaction older than D (90d, 12h),
                  whatever the configuration says; needed with -db
  -dry-run        only count what would be deleted

It is safe while mxguard serve runs: it deletes in small batches, and the
daemon's saves wait at most for one batch. The file does not shrink; its
free pages hold the next transactions.
`

// pruneEvery is how often mxguard serve prunes the log.
const pruneEvery = 10 * time.Minute

func init() {
	logSubcommands["prune"] = cmdLogPrune
	logSummaries["prune"] = "delete the transactions older than their retention now; -dry-run counts them"
}

// retentionOf is the configuration's retention, as the log store takes it.
func retentionOf(cfg *policy.Config) logstore.Retention {
	byOrg, others := cfg.Retention()
	return logstore.Retention{ByOrg: byOrg, Default: others}
}

func cmdLogPrune(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return logPrune(ctx, args, time.Now(), stdout, stderr)
}

func logPrune(ctx context.Context, args []string, now time.Time, stdout, stderr io.Writer) int {
	lf := newLogFlags("prune")
	var (
		olderThan time.Duration
		dryRun    bool
	)
	lf.fs.Func("older-than", "", func(s string) error {
		d, err := parseAgo(s)
		if err != nil || d <= 0 {
			return fmt.Errorf("%q: want how old, above 0 (90d, 12h)", s)
		}
		olderThan = d
		return nil
	})
	lf.fs.BoolVar(&dryRun, "dry-run", false, "")
	rest, code, ok := lf.parse(args, logPruneUsage, stdout, stderr)
	if !ok {
		return code
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "mxguard log prune: unexpected argument %q\n", rest[0])
		return 2
	}

	opts := logstore.Options{Path: lf.db}
	retention := logstore.Retention{Default: olderThan}
	if lf.db == "" {
		cfg, err := policy.Load(lf.config)
		if err != nil {
			fmt.Fprintln(stderr, "mxguard log prune:", err)
			return 1
		}
		opts = logstore.Options{Path: cfg.Log.Path, Synchronous: cfg.Log.Synchronous}
		if olderThan == 0 {
			retention = retentionOf(cfg)
		}
	} else if olderThan == 0 {
		fmt.Fprintln(stderr, "mxguard log prune: with -db, give -older-than: the retention is in the configuration (-config)")
		return 2
	}

	store, err := openPruneLog(opts, dryRun)
	if err != nil {
		fmt.Fprintln(stderr, "mxguard log prune:", err)
		return 1
	}
	defer store.Close()

	var counts map[string]int
	if dryRun {
		counts, err = store.Expired(ctx, retention, now)
	} else {
		counts, err = store.PruneByOrganization(ctx, retention, now)
	}
	// What was deleted before an error or an interrupt is gone: say so.
	if err == nil || len(counts) > 0 {
		if perr := printPruned(stdout, counts, retention, opts.Path, dryRun); perr != nil && err == nil {
			err = perr
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "mxguard log prune:", err)
		return 1
	}
	return 0
}

// openPruneLog opens the log to prune: read-only for a dry run, else
// read-write beside the daemon, which WAL mode and the busy timeout allow.
// The file must exist: creating an empty log would hide a wrong -config.
func openPruneLog(opts logstore.Options, dryRun bool) (*logstore.Store, error) {
	if _, err := os.Stat(opts.Path); err != nil {
		return nil, fmt.Errorf("transaction log: %w (mxguard serve creates it; is -config or -db right?)", err)
	}
	if dryRun {
		return logstore.OpenReadOnly(opts.Path)
	}
	// SQLite would open a file it may not write read-only without a word,
	// and fail only at the first delete; the directory must take the -wal
	// and -shm files.
	for _, p := range []string{opts.Path, filepath.Dir(opts.Path)} {
		if err := syscall.Access(p, accessWrite); err != nil {
			return nil, fmt.Errorf("transaction log: cannot write %s (%w); run as the user mxguard serve runs as, or as root", p, err)
		}
	}
	return logstore.Open(opts)
}

func printPruned(w io.Writer, counts map[string]int, retention logstore.Retention, path string, dryRun bool) error {
	total := 0
	for _, n := range counts {
		total += n
	}
	if total == 0 {
		_, err := fmt.Fprintf(w, "No transaction in %s is older than its retention; nothing to delete.\n", path)
		return err
	}
	head, done := "DELETED", "deleted"
	if dryRun {
		head, done = "WOULD DELETE", "would be deleted (dry run: nothing was deleted)"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "ORGANIZATION\tKEPT FOR\t%s\n", head)
	for _, org := range slices.Sorted(maps.Keys(counts)) {
		name := printable(org, 60)
		if org == "" {
			name = "(none)"
		}
		kept := policy.Duration{Duration: retention.For(org)}
		fmt.Fprintf(tw, "%s\t%s\t%d\n", name, kept, counts[org])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d transaction(s) with their recipients %s from %s.\n", total, done, path)
	return err
}
