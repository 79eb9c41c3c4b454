package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/quarantine"
)

// heldQueue is a hold queue in memory, standing in for Postfix.
type heldQueue struct {
	msgs              []quarantine.Message
	released, deleted []string
}

func (q *heldQueue) Held(context.Context) ([]quarantine.Message, error) {
	return slices.Clone(q.msgs), nil
}

func (q *heldQueue) Release(_ context.Context, id string) error {
	q.released = append(q.released, id)
	q.drop(id)
	return nil
}

func (q *heldQueue) Delete(_ context.Context, id string) error {
	q.deleted = append(q.deleted, id)
	q.drop(id)
	return nil
}

func (q *heldQueue) drop(id string) {
	q.msgs = slices.DeleteFunc(q.msgs, func(m quarantine.Message) bool { return m.QueueID == id })
}

// quarantineSetup writes a log with one quarantined transaction and a
// configuration naming it, and puts a hold queue with that message and one
// the log does not know in place of Postfix.
func quarantineSetup(t *testing.T) (q *heldQueue, cfg, db string) {
	t.Helper()
	now := time.Now()
	rec := &logstore.Record{StartedAt: now.Add(-3 * time.Hour), QueueID: "C648F988526", ClientIP: "192.0.2.7",
		MailFrom: "billing@sender.example", Subject: "Invoice \x1b[31mdue\tnow", Organization: "example",
		Action: "quarantine", Reason: "SPFFail",
		Recipients: []logstore.Recipient{{Address: "bob@example.com", Organization: "example", Action: "quarantine", Reason: "SPFFail"}}}
	cfg, db = writeLog(t, "", rec)
	q = &heldQueue{msgs: []quarantine.Message{
		{QueueID: "C648F988526", Arrival: now.Add(-3 * time.Hour), Sender: "billing@sender.example", Recipients: []string{"bob@example.com", "carol@example.com"}},
		{QueueID: "1E9C4988022", Arrival: now.Add(-10 * time.Minute), Sender: "", Recipients: []string{"postmaster@example.com"}},
	}}
	old := newMTA
	newMTA = func(string) quarantine.MTA { return q }
	t.Cleanup(func() { newMTA = old })
	return q, cfg, db
}

func runMxguard(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestQuarantineList(t *testing.T) {
	_, cfg, db := quarantineSetup(t)
	for _, flags := range [][]string{{"-config", cfg}, {"-db", db}} {
		code, out, errs := runMxguard(append([]string{"quarantine", "list"}, flags...)...)
		if code != 0 {
			t.Fatalf("list %v: exit %d\n%s%s", flags, code, out, errs)
		}
		want := []string{
			`(?m)^QUEUE ID +AGE +SENDER +RECIPIENTS +CLIENT +ORGANIZATION +REASON +SUBJECT$`,
			// Newest first; the subject's escape sequence and tab are defused.
			`(?m)^1E9C4988022 +10m +<> +postmaster@example.com +- +- +\(not in mxguard's log\) +-\n` +
				`C648F988526 +3h +billing@sender.example +bob@example.com \+1 +192.0.2.7 +example +SPFFail +Invoice \?\[31mdue\?now$`,
			`2 held message\(s\)`,
		}
		for _, w := range want {
			if !regexp.MustCompile(w).MatchString(out) {
				t.Errorf("list %v: output does not match %s:\n%s", flags, w, out)
			}
		}
	}
}

func TestQuarantineRelease(t *testing.T) {
	q, cfg, db := quarantineSetup(t)
	t.Setenv("SUDO_USER", "alice")
	code, out, errs := runMxguard("quarantine", "release", "-config", cfg, "C648F988526", "1E9C4988022")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	for _, w := range []string{
		"C648F988526: released from the hold queue and queued for delivery (sender billing@sender.example, 2 recipient(s))\n",
		"C648F988526: recorded on transaction 1 in " + db + " (quarantine SPFFail, from billing@sender.example)\n",
		"1E9C4988022: released from the hold queue and queued for delivery (sender <>, 1 recipient(s))\n",
		"1E9C4988022: not in mxguard's log, so nothing was recorded there",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("stdout lacks %q:\n%s", w, out)
		}
	}
	if !slices.Equal(q.released, []string{"C648F988526", "1E9C4988022"}) {
		t.Errorf("released %v", q.released)
	}

	st, err := logstore.OpenReadOnly(db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec, err := st.Get(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	ev := rec.Evidence[len(rec.Evidence)-1]
	if ev.Check != "quarantine" || ev.Result != "released" ||
		!regexp.MustCompile(`^by \S+ \(sudo by alice\) at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`).MatchString(ev.Detail) {
		t.Errorf("evidence %+v", ev)
	}
	if rec.Action != "quarantine" || len(rec.Recipients) != 1 {
		t.Errorf("the row changed beyond its evidence: %+v", rec)
	}

	// Released messages are gone; flags may follow the queue id.
	code, _, errs = runMxguard("quarantine", "delete", "C648F988526", "-db", db)
	if code != 1 || !strings.Contains(errs, "C648F988526 is not in the hold queue") {
		t.Errorf("delete of a released message: exit %d, %s", code, errs)
	}
}

func TestQuarantineDelete(t *testing.T) {
	q, _, db := quarantineSetup(t)
	code, out, errs := runMxguard("quarantine", "delete", "C648F988526", "-db", db)
	if code != 0 || !strings.Contains(out, "C648F988526: deleted from the hold queue") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	if !slices.Equal(q.deleted, []string{"C648F988526"}) {
		t.Errorf("deleted %v", q.deleted)
	}
}

func TestQuarantineErrors(t *testing.T) {
	_, cfg, db := quarantineSetup(t)
	missing := filepath.Join(t.TempDir(), "none.db")
	tests := []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"quarantine"}, 2, "", "usage:"},
		{[]string{"quarantine", "help"}, 0, "mxguard quarantine release", ""},
		{[]string{"quarantine", "list", "-h"}, 0, "mxguard quarantine list", ""},
		{[]string{"quarantine", "purge"}, 2, "", `unknown command "purge"`},
		{[]string{"quarantine", "list", "-nosuch"}, 2, "", "flag provided but not defined: -nosuch"},
		{[]string{"quarantine", "list", "-db", db, "C648F988526"}, 2, "", `unexpected argument "C648F988526"`},
		{[]string{"quarantine", "release", "-db", db}, 2, "", "which message?"},
		{[]string{"quarantine", "list", "-config", cfg, "-db", db}, 2, "", "give -config or -db, not both"},
		{[]string{"quarantine", "release", "-db", db, "ALL"}, 1, "", `"ALL" is not a Postfix queue id`},
		{[]string{"quarantine", "release", "-db", db, "ABCDEF0123"}, 1, "", "ABCDEF0123 is not in the hold queue"},
		{[]string{"quarantine", "release", "-db", missing, "C648F988526"}, 1, "", "no such file"},
		{[]string{"quarantine", "list", "-db", missing}, 1, "", "read-only"},
		{[]string{"quarantine", "list", "-config", missing}, 1, "", "reading configuration"},
	}
	for _, tt := range tests {
		code, out, errs := runMxguard(tt.args...)
		if code != tt.code || !strings.Contains(out, tt.stdout) || !strings.Contains(errs, tt.stderr) {
			t.Errorf("mxguard %v: exit %d; want %d with stdout %q, stderr %q\nstdout: %s\nstderr: %s",
				tt.args, code, tt.code, tt.stdout, tt.stderr, out, errs)
		}
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("a quarantine command created %s", missing)
	}
}

func TestQuarantineWithoutPostfix(t *testing.T) {
	_, _, db := quarantineSetup(t)
	empty := t.TempDir()
	newMTA = func(string) quarantine.MTA { return &quarantine.Postfix{CommandDir: empty} }
	code, _, errs := runMxguard("quarantine", "list", "-db", db)
	if code != 1 || !strings.Contains(errs, "postqueue not found") || !strings.Contains(errs, "works with Postfix only") {
		t.Errorf("exit %d, stderr %s", code, errs)
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"Invoice":                 "Invoice",
		"caf\u00e9 \u2713":        "caf\u00e9 \u2713",
		"a\x1b[2Jb":               "a?[2Jb",
		"tab\there\r\nnext":       "tab?here??next",
		"rtl \u202eevil":          "rtl ?evil",
		"bad \xff utf8":           "bad ? utf8",
		"0123456789abcdefghijXYZ": "0123456789abcdefghij...",
		"0123456789abcdefghij":    "0123456789abcdefghij",
	} {
		if got := printable(in, 20); got != want {
			t.Errorf("printable(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestQuarantineLogNotWritable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may write anything")
	}
	_, _, db := quarantineSetup(t)
	if err := os.Chmod(db, 0o444); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runMxguard("quarantine", "release", "-db", db, "C648F988526")
	if code != 1 || !strings.Contains(errs, "cannot write") {
		t.Errorf("release with a read-only log: exit %d, %s", code, errs)
	}
}
