// Package quarantine lists, releases and deletes the mail mxguard
// quarantined.
//
// mxguard quarantines by asking the MTA to hold the message
// (SMFIR_QUARANTINE at end of message). Postfix then moves it to its hold
// queue, where it stays, undelivered and never expiring, until someone
// releases or deletes it. The MTA's queue is the truth about what is held;
// the transaction log says why. Manager joins the two by queue id and
// records every release and deletion on the message's transaction, as one
// more evidence entry:
//
//	{"check":"quarantine","result":"released","detail":"by root (sudo by alice) at 2025-06-01T14:03:07Z"}
//
// so "who let this through, and when" is a query like any other. The row's
// verdict (action quarantine, its reason and reply) is left as it was: it
// is what mxguard decided, and the release is a later human decision about
// it. No schema change is needed, and the daemon never writes a row again
// after its end of message, so the annotation races nothing.
//
// The MTA sits behind the MTA interface. Postfix implements it with
// postqueue and postsuper; Sendmail is not supported (its quarantine is the
// hf queue files that mailq -qQ lists, and it has no machine-readable
// queue listing).
//
// The web console is meant to use this package too, so that the CLI and
// the console release mail the same way.
package quarantine

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/mxguard/mxguard/logstore"
)

// Evidence vocabulary of the log entries this package adds.
const (
	Check    = "quarantine" // logstore.Evidence.Check
	Released = "released"   // logstore.Evidence.Result
	Deleted  = "deleted"
)

var (
	// ErrNotHeld is wrapped by errors about a queue id that is not in the
	// hold queue (never was, or was released, deleted or delivered since).
	ErrNotHeld = errors.New("is not in the hold queue")
	// ErrNotScheduled is wrapped by Release when the message was taken off
	// hold but its immediate delivery could not be scheduled (for example,
	// Postfix is stopped). It is released all the same: Postfix delivers
	// it on its next run of the deferred queue.
	ErrNotScheduled = errors.New("released, but immediate delivery could not be scheduled; Postfix delivers it on its next deferred queue run")
	// ErrBadQueueID is wrapped by errors about a string that is not a
	// Postfix queue id.
	ErrBadQueueID = errors.New("is not a Postfix queue id")
)

// Message is one message in the MTA's hold queue.
type Message struct {
	QueueID    string
	Arrival    time.Time // when the MTA queued it
	Sender     string    // envelope sender; "" for the null sender
	Recipients []string
	Size       int64 // header and body bytes
}

// MTA is what the quarantine needs from the mail server.
type MTA interface {
	// Held returns the messages in the hold queue, in no particular order.
	Held(ctx context.Context) ([]Message, error)
	// Release takes a message off hold and asks for its delivery now. An
	// error wrapping ErrNotScheduled means it was released nonetheless.
	Release(ctx context.Context, queueID string) error
	// Delete removes a message from the hold queue (only from there: a
	// queue id that meanwhile belongs to mail in another queue is safe).
	Delete(ctx context.Context, queueID string) error
}

// Log is the part of the transaction log the quarantine uses;
// *logstore.Store implements it. Save is needed by Release and Delete only.
type Log interface {
	ByQueueID(ctx context.Context, queueID string) ([]logstore.Record, error)
	Save(ctx context.Context, r *logstore.Record) error
}

// Postfix queue ids: short ids are upper-case hexadecimal (at least 6
// digits: microseconds, then the inode number); long ids
// (enable_long_queue_ids = yes) are longer and alphanumeric. Anything else,
// in particular postsuper's special arguments "ALL" and "-", is refused
// before a command sees it.
var queueIDRE = regexp.MustCompile(`^(?:[0-9A-F]{6,}|[0-9A-Za-z]{10,})$`)

// maxQueueIDLen is far above any real queue id; it keeps absurd arguments
// out of command lines and error messages.
const maxQueueIDLen = 64

// ValidQueueID tells whether s has the form of a Postfix queue id.
func ValidQueueID(s string) bool {
	return len(s) <= maxQueueIDLen && queueIDRE.MatchString(s)
}

func checkQueueID(s string) error {
	if !ValidQueueID(s) {
		if len(s) > maxQueueIDLen {
			s = s[:maxQueueIDLen] + "..."
		}
		return fmt.Errorf("%q %w", s, ErrBadQueueID)
	}
	return nil
}

// Entry is a held message and, when the log has it, its transaction.
type Entry struct {
	Message
	// Record is the message's row in the transaction log; nil when there
	// is none: the message was held by something other than mxguard
	// (header_checks HOLD, postsuper -h), or mxguard logged it elsewhere.
	Record *logstore.Record
}

// Reason says why the message is held, for the list: the log's reason
// when mxguard quarantined it.
func (e Entry) Reason() string {
	switch {
	case e.Record == nil:
		return "(not in mxguard's log)"
	case e.Record.Action != "quarantine":
		// mxguard let it pass; something else in Postfix held it.
		return fmt.Sprintf("(not held by mxguard, whose verdict was %s)", e.Record.Action)
	case e.Record.Reason == "":
		return "quarantine"
	}
	return e.Record.Reason
}

// Outcome is what Release or Delete did.
type Outcome struct {
	Entry
	// Logged tells whether the action was recorded on Entry.Record, which
	// then holds the row as saved.
	Logged bool
	// Warning is a problem that did not stop the action: a release whose
	// delivery could not be scheduled (it wraps ErrNotScheduled).
	Warning error
}

// Manager joins the MTA's hold queue with the transaction log.
type Manager struct {
	MTA MTA
	Log Log
	// Now stamps the log entries; nil means time.Now.
	Now func() time.Time
}

// List returns the held messages, newest first, each with its transaction.
func (m *Manager) List(ctx context.Context) ([]Entry, error) {
	held, err := m.MTA.Held(ctx)
	if err != nil {
		return nil, err
	}
	entries := make([]Entry, 0, len(held))
	for _, msg := range held {
		rec, err := m.lookup(ctx, msg)
		if err != nil {
			return nil, err
		}
		entries = append(entries, Entry{Message: msg, Record: rec})
	}
	sort.SliceStable(entries, func(i, j int) bool {
		if !entries[i].Arrival.Equal(entries[j].Arrival) {
			return entries[i].Arrival.After(entries[j].Arrival)
		}
		return entries[i].QueueID < entries[j].QueueID
	})
	return entries, nil
}

// Release takes the held message queueID off hold, has it delivered, and
// records that on its transaction, naming actor (who asked, for the log).
// Nothing is done when queueID is not held (ErrNotHeld) or when the log
// cannot be read: a release that could not be recorded must not happen
// (that the log can be written is for the caller to check; mxguard
// quarantine does). A held message the log does not know is released all
// the same, with nothing to record (Postfix's own log has the release).
func (m *Manager) Release(ctx context.Context, queueID, actor string) (Outcome, error) {
	return m.act(ctx, queueID, actor, Released, m.MTA.Release)
}

// Delete deletes the held message queueID and records that on its
// transaction, as Release does.
func (m *Manager) Delete(ctx context.Context, queueID, actor string) (Outcome, error) {
	return m.act(ctx, queueID, actor, Deleted, m.MTA.Delete)
}

// saveTimeout bounds the log write after the MTA has acted.
const saveTimeout = 15 * time.Second

func (m *Manager) act(ctx context.Context, queueID, actor, result string, do func(context.Context, string) error) (Outcome, error) {
	if err := checkQueueID(queueID); err != nil {
		return Outcome{}, err
	}
	// Look first: for a clear "not held" and to read the log row before
	// anything changes.
	held, err := m.MTA.Held(ctx)
	if err != nil {
		return Outcome{}, err
	}
	var out Outcome
	found := false
	for _, msg := range held {
		if msg.QueueID == queueID {
			out.Message, found = msg, true
			break
		}
	}
	if !found {
		return Outcome{}, fmt.Errorf("%s %w", queueID, ErrNotHeld)
	}
	if out.Record, err = m.lookup(ctx, out.Message); err != nil {
		return Outcome{}, err
	}

	if err := do(ctx, queueID); err != nil {
		if result != Released || !errors.Is(err, ErrNotScheduled) {
			return Outcome{}, err
		}
		out.Warning = err
	}
	if out.Record == nil {
		return out, nil
	}

	ev := logstore.Evidence{Check: Check, Result: result, Detail: m.detail(actor)}
	if out.Warning != nil {
		ev.Error = out.Warning.Error()
	}
	rec := *out.Record
	rec.Evidence = append(append([]logstore.Evidence(nil), rec.Evidence...), ev)
	// The MTA has acted; an interrupt now must not lose the record of it.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
	defer cancel()
	if err := m.Log.Save(sctx, &rec); err != nil {
		return out, fmt.Errorf("%s was %s, but that could not be recorded in the transaction log: %w", queueID, result, err)
	}
	out.Record, out.Logged = &rec, true
	return out, nil
}

func (m *Manager) detail(actor string) string {
	now := time.Now
	if m.Now != nil {
		now = m.Now
	}
	at := now().UTC().Format(time.RFC3339)
	if actor == "" {
		return "at " + at
	}
	return "by " + actor + " at " + at
}

// arrivalSlack is how long before the MTA queued a message its transaction
// may have started. A row started at MAIL FROM, and Postfix creates the
// queue file (the arrival time) at the first accepted RCPT or at DATA, so
// a few minutes at most; an hour leaves room for slow clients and clock
// steps. An older row with the same queue id belongs to an earlier message:
// Postfix reuses short queue ids once their queue file is gone.
const arrivalSlack = time.Hour

// lookup returns msg's transaction, or nil when the log has none.
func (m *Manager) lookup(ctx context.Context, msg Message) (*logstore.Record, error) {
	recs, err := m.Log.ByQueueID(ctx, msg.QueueID)
	if err != nil {
		return nil, err
	}
	// Newest first. While msg's queue file exists, no other message can
	// get its id, so a row newer than arrival minus the slack is msg's
	// (mail picked up from the maildrop starts its milter session after
	// arrival). Only the newest row can qualify.
	if len(recs) == 0 || (!msg.Arrival.IsZero() && recs[0].StartedAt.Before(msg.Arrival.Add(-arrivalSlack))) {
		return nil, nil
	}
	return &recs[0], nil
}

// Age is how long ago t was, in the largest whole unit: 45s, 12m, 5h, 3d.
func Age(now, t time.Time) string {
	if t.IsZero() {
		return "?"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(0, int(d.Seconds())))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
