package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/quarantine"
)

const quarantineUsage = `usage:
  mxguard quarantine list    [-config PATH | -db PATH] [-postfix-config DIR]
  mxguard quarantine release [-config PATH | -db PATH] [-postfix-config DIR] QUEUE-ID...
  mxguard quarantine delete  [-config PATH | -db PATH] [-postfix-config DIR] QUEUE-ID...

list     the messages in Postfix's hold queue, newest first, with the reason
         from mxguard's transaction log
release  deliver held messages (postsuper -H, then postqueue -i)
delete   delete held messages (postsuper -d QUEUE-ID hold)

Releases and deletions are recorded on the message's transaction in the log.
release and delete need root (postsuper does). Postfix only; with Sendmail,
use mailq -qQ and sendmail -qQ -Q -qI<id>.

flags:
  -config PATH          mxguard's configuration, for [log] path (default ` + policy.DefaultPath + `)
  -db PATH              the transaction log itself, instead of -config
  -postfix-config DIR   the Postfix instance's configuration directory (postqueue/postsuper -c DIR)
`

// newMTA returns the MTA the quarantine commands act on; tests replace it.
var newMTA = func(postfixConfig string) quarantine.MTA {
	return &quarantine.Postfix{ConfigDir: postfixConfig}
}

// quarantineTimeout bounds one quarantine command, Postfix commands and
// log included; they normally take milliseconds.
const quarantineTimeout = 2 * time.Minute

func cmdQuarantine(args []string, stdout, stderr io.Writer) int {
	sub, code, ok := subcommand("quarantine", args, oneOf("list", "release", "delete"), quarantineUsage, stdout, stderr)
	if !ok {
		return code
	}

	fs := flag.NewFlagSet("mxguard quarantine "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // our usage text, not the flag package's
	cfgPath := fs.String("config", policy.DefaultPath, "")
	dbPath := fs.String("db", "", "")
	pfConfig := fs.String("postfix-config", "", "")
	ids, err := parseInterspersed(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, quarantineUsage)
			return 0
		}
		fmt.Fprintf(stderr, "mxguard quarantine %s: %v\n\n%s", sub, err, quarantineUsage)
		return 2
	}
	switch {
	case sub == "list" && len(ids) > 0:
		fmt.Fprintf(stderr, "mxguard quarantine list: unexpected argument %q\n", ids[0])
		return 2
	case sub != "list" && len(ids) == 0:
		fmt.Fprintf(stderr, "mxguard quarantine %s: which message? Give its QUEUE-ID (mxguard quarantine list shows them)\n", sub)
		return 2
	}
	cfgSet := false
	fs.Visit(func(f *flag.Flag) { cfgSet = cfgSet || f.Name == "config" })
	if cfgSet && *dbPath != "" {
		fmt.Fprintf(stderr, "mxguard quarantine %s: give -config or -db, not both\n", sub)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, quarantineTimeout)
	defer cancel()

	store, path, err := openQuarantineLog(*cfgPath, *dbPath, sub != "list")
	if err != nil {
		fmt.Fprintln(stderr, "mxguard quarantine:", err)
		return 1
	}
	defer store.Close()
	m := &quarantine.Manager{MTA: newMTA(*pfConfig), Log: store}

	if sub == "list" {
		return quarantineList(ctx, m, stdout, stderr)
	}
	code = 0
	who := actor()
	for _, id := range ids {
		if !quarantineAct(ctx, m, sub, id, who, path, stdout, stderr) {
			code = 1
		}
	}
	return code
}

// parseInterspersed parses flags before, between and after the queue ids,
// and returns the ids. Queue ids never start with "-".
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return rest, nil
		}
		rest, args = append(rest, args[0]), args[1:]
	}
}

// accessWrite is W_OK of access(2).
const accessWrite = 2

// openQuarantineLog opens the transaction log named by -db, or by the
// configuration's [log] path. Writing (for release and delete) needs an
// existing file: creating an empty log in the wrong place would hide a
// wrong -config.
func openQuarantineLog(cfgPath, dbPath string, write bool) (*logstore.Store, string, error) {
	opts := logstore.Options{Path: dbPath}
	if dbPath == "" {
		cfg, err := policy.Load(cfgPath)
		if err != nil {
			return nil, "", err
		}
		opts = logstore.Options{Path: cfg.Log.Path, Synchronous: cfg.Log.Synchronous}
	}
	if !write {
		s, err := logstore.OpenReadOnly(opts.Path)
		return s, opts.Path, err
	}
	if _, err := os.Stat(opts.Path); err != nil {
		return nil, "", fmt.Errorf("transaction log: %w", err)
	}
	// Before anything is released: SQLite opens a file it may not write
	// read-only without a word, and the directory must take the -wal and
	// -shm files.
	for _, p := range []string{opts.Path, filepath.Dir(opts.Path)} {
		if err := syscall.Access(p, accessWrite); err != nil {
			return nil, "", fmt.Errorf("transaction log: cannot write %s (%w), where release and delete record what they did; run them as root", p, err)
		}
	}
	s, err := logstore.Open(opts)
	return s, opts.Path, err
}

func quarantineList(ctx context.Context, m *quarantine.Manager, stdout, stderr io.Writer) int {
	entries, err := m.List(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "mxguard quarantine:", err)
		return 1
	}
	if len(entries) == 0 {
		fmt.Fprintln(stdout, "The hold queue is empty.")
		return 0
	}
	now := time.Now()
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "QUEUE ID\tAGE\tSENDER\tRECIPIENTS\tCLIENT\tORGANIZATION\tREASON\tSUBJECT")
	for _, e := range entries {
		client, org, subject := "-", "-", "-"
		if r := e.Record; r != nil {
			client, org, subject = orDash(r.ClientIP), orDash(r.Organization), orDash(r.Subject)
		}
		sender := e.Sender
		if sender == "" {
			sender = "<>"
		}
		rcpts := "-"
		if len(e.Recipients) > 0 {
			rcpts = e.Recipients[0]
			if len(e.Recipients) > 1 {
				rcpts += fmt.Sprintf(" +%d", len(e.Recipients)-1)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			e.QueueID, quarantine.Age(now, e.Arrival), printable(sender, 40), printable(rcpts, 40),
			printable(client, 40), printable(org, 20), printable(e.Reason(), 40), printable(subject, 50))
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintln(stderr, "mxguard quarantine:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%d held message(s). Release: mxguard quarantine release QUEUE-ID; details: postcat -q QUEUE-ID\n", len(entries))
	return 0
}

// quarantineAct releases or deletes one message and says what it did.
func quarantineAct(ctx context.Context, m *quarantine.Manager, sub, id, who, logPath string, stdout, stderr io.Writer) bool {
	act, done := m.Release, "released from the hold queue and queued for delivery"
	if sub == "delete" {
		act, done = m.Delete, "deleted from the hold queue"
	}
	out, err := act(ctx, id, who)
	if out.QueueID == "" {
		// Nothing was done.
		fmt.Fprintln(stderr, "mxguard quarantine:", err)
		return false
	}
	if out.Warning != nil {
		done = "released from the hold queue"
	}
	fmt.Fprintf(stdout, "%s: %s (sender %s, %d recipient(s))\n", id, done, printable(orNull(out.Sender), 80), len(out.Recipients))
	if out.Warning != nil {
		fmt.Fprintln(stderr, "mxguard quarantine: warning:", out.Warning)
	}
	switch {
	case err != nil:
		fmt.Fprintln(stderr, "mxguard quarantine:", err)
		return false
	case out.Logged:
		r := out.Record
		fmt.Fprintf(stdout, "%s: recorded on transaction %d in %s (%s %s, from %s)\n",
			id, r.ID, logPath, r.Action, orDash(r.Reason), printable(orNull(r.MailFrom), 80))
	default:
		fmt.Fprintf(stdout, "%s: not in mxguard's log, so nothing was recorded there (Postfix's mail log has it)\n", id)
	}
	return true
}

// actor names who runs the command, for the log: the user, and the user
// behind sudo.
func actor() string {
	name := "uid " + strconv.Itoa(os.Getuid())
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if s := os.Getenv("SUDO_USER"); s != "" && s != name {
		return name + " (sudo by " + s + ")"
	}
	return name
}

// printable makes text from the message (sender, subject: the sender chose
// them) safe for a terminal and a table: control characters, including
// escape sequences and tabs, become '?', and long text is cut to n runes.
func printable(s string, n int) string {
	var b strings.Builder
	count := 0
	for _, r := range s {
		if count == n {
			b.WriteString("...")
			break
		}
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			r = '?'
		}
		b.WriteRune(r)
		count++
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func orNull(sender string) string {
	if sender == "" {
		return "<>"
	}
	return sender
}
