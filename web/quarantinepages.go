package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/quarantine"
)

// heldRow is one held message, its text made inert.
type heldRow struct {
	QueueID, Age, Arrival, Sender, Recipients, Organization, Reason, Subject string
	LogID                                                                    int64 // 0 when the log does not know it
}

func newHeldRow(e *quarantine.Entry, now time.Time) heldRow {
	h := heldRow{QueueID: e.QueueID, Age: quarantine.Age(now, e.Arrival), Sender: clean(orNull(e.Sender), 80), Reason: clean(e.Reason(), 60)}
	if !e.Arrival.IsZero() {
		h.Arrival = e.Arrival.UTC().Format("2006-01-02 15:04:05")
	}
	switch len(e.Recipients) {
	case 0:
		h.Recipients = "-"
	case 1:
		h.Recipients = clean(e.Recipients[0], 80)
	default:
		h.Recipients = clean(e.Recipients[0], 80) + fmt.Sprintf(" +%d", len(e.Recipients)-1)
	}
	if r := e.Record; r != nil {
		h.LogID, h.Organization, h.Subject = r.ID, clean(r.Organization, 40), clean(logstore.DecodeHeader(r.Subject), 120)
	}
	return h
}

func orNull(sender string) string {
	if sender == "" {
		return "<>"
	}
	return sender
}

// visible returns the held messages u may see: their organisation's, by
// the log's row; messages the log does not know are for global users only.
func (s *Server) visible(ctx context.Context, u *User) ([]quarantine.Entry, error) {
	m := &quarantine.Manager{MTA: s.opts.MTA, Log: s.opts.Log}
	all, err := m.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []quarantine.Entry
	for _, e := range all {
		org := ""
		if e.Record != nil {
			org = e.Record.Organization
		}
		if u.Sees(org) {
			out = append(out, e)
		}
	}
	return out, nil
}

type quarantineData struct {
	Rows  []heldRow
	Admin bool
	Error string
}

// quarantineTimeout bounds the Postfix commands and log writes of one
// request.
const quarantineTimeout = time.Minute

func (s *Server) quarantineList(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx, cancel := context.WithTimeout(r.Context(), quarantineTimeout)
	defer cancel()
	d := quarantineData{Admin: sess.user.Admin()}
	status := http.StatusOK
	entries, err := s.visible(ctx, sess.user)
	if err != nil {
		s.log.Error("web: reading the hold queue", "err", err)
		d.Error = "The hold queue could not be read: " + clean(err.Error(), 300)
		status = http.StatusServiceUnavailable
	}
	now := s.now()
	for i := range entries {
		d.Rows = append(d.Rows, newHeldRow(&entries[i], now))
	}
	s.render(w, r, sess, status, "quarantine", page{Title: "Quarantine", Nav: "quarantine", Data: d})
}

// queueError answers when the hold queue cannot be read (Postfix missing,
// postqueue failing): the MTA's trouble, said as it is.
func (s *Server) queueError(w http.ResponseWriter, r *http.Request, sess *session, err error) {
	s.log.Error("web: reading the hold queue", "err", err)
	s.errorPage(w, r, sess, http.StatusServiceUnavailable, "The hold queue could not be read: "+clean(err.Error(), 300))
}

type confirmData struct {
	Op, Verb string
	Row      heldRow
}

// heldFor finds the held message queueID among those u may see; nil when
// there is none (not held, not a queue id, or another organisation's).
func (s *Server) heldFor(ctx context.Context, u *User, queueID string) (*quarantine.Entry, error) {
	if !quarantine.ValidQueueID(queueID) {
		return nil, nil
	}
	entries, err := s.visible(ctx, u)
	if err != nil {
		return nil, err
	}
	for i := range entries {
		if entries[i].QueueID == queueID {
			return &entries[i], nil
		}
	}
	return nil, nil
}

// quarantineOp checks the {op} and the user's role; false when it has
// answered.
func (s *Server) quarantineOp(w http.ResponseWriter, r *http.Request, sess *session) (op string, ok bool) {
	op = r.PathValue("op")
	if op != "release" && op != "delete" {
		s.errorPage(w, r, sess, http.StatusNotFound, "")
		return "", false
	}
	if !sess.user.Admin() {
		s.errorPage(w, r, sess, http.StatusForbidden, "Viewers may not release or delete held mail; ask an admin.")
		return "", false
	}
	return op, true
}

// quarantineConfirm shows what is about to be released or deleted, and a
// form to do it.
func (s *Server) quarantineConfirm(w http.ResponseWriter, r *http.Request, sess *session) {
	op, ok := s.quarantineOp(w, r, sess)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), quarantineTimeout)
	defer cancel()
	e, err := s.heldFor(ctx, sess.user, r.PathValue("queueid"))
	if err != nil {
		s.queueError(w, r, sess, err)
		return
	}
	if e == nil {
		s.errorPage(w, r, sess, http.StatusNotFound, "No such message in the hold queue.")
		return
	}
	verb := "Release"
	if op == "delete" {
		verb = "Delete"
	}
	s.render(w, r, sess, http.StatusOK, "confirm", page{Title: verb + " " + e.QueueID, Nav: "quarantine",
		Data: confirmData{Op: op, Verb: verb, Row: newHeldRow(e, s.now())}})
}

// quarantineAct releases or deletes, records who did it on the message's
// transaction, and goes back to the list with what happened.
func (s *Server) quarantineAct(w http.ResponseWriter, r *http.Request, sess *session) {
	op, ok := s.quarantineOp(w, r, sess)
	if !ok {
		return
	}
	// The MTA has acted once the command ran: a browser that gives up
	// must not cancel the log entry.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), quarantineTimeout)
	defer cancel()
	queueID := r.PathValue("queueid")
	e, err := s.heldFor(ctx, sess.user, queueID)
	if err != nil {
		s.queueError(w, r, sess, err)
		return
	}
	if e == nil {
		s.errorPage(w, r, sess, http.StatusNotFound, "No such message in the hold queue (released, deleted or delivered meanwhile?).")
		return
	}
	msg := s.act(ctx, op, queueID, sess.user)
	if err := s.opts.Accounts.setFlash(r.Context(), sess.tokenHash, msg); err != nil {
		s.log.Warn("web: keeping a flash message", "err", err)
	}
	http.Redirect(w, r, "/quarantine", http.StatusSeeOther)
}

// Actor is how the log names a console user who released or deleted mail.
func Actor(u *User) string { return "web:" + u.Email }

// act releases or deletes queueID and says what happened, as mxguard
// quarantine does.
func (s *Server) act(ctx context.Context, op, queueID string, u *User) string {
	log, done := quarantine.Log(s.opts.Log), func() {}
	if s.opts.RecordLog != nil {
		l, d, err := s.opts.RecordLog()
		if err != nil {
			s.log.Error("web: opening the transaction log to record a "+op, "queue_id", queueID, "err", err)
			return fmt.Sprintf("%s was not %sd: the transaction log, where that is recorded, cannot be written (%s).", queueID, op, clean(err.Error(), 300))
		}
		log, done = l, d
	}
	defer done()
	m := &quarantine.Manager{MTA: s.opts.MTA, Log: log, Now: s.now}
	act, did := m.Release, "released from the hold queue and queued for delivery"
	if op == "delete" {
		act, did = m.Delete, "deleted from the hold queue"
	}
	who := Actor(u)
	out, err := act(ctx, queueID, who)
	switch {
	case out.QueueID == "":
		s.log.Error("web: quarantine "+op+" failed", "queue_id", queueID, "by", who, "err", err)
		if errors.Is(err, quarantine.ErrNotHeld) {
			return fmt.Sprintf("%s is not in the hold queue any more: nothing was done.", queueID)
		}
		return fmt.Sprintf("%s was not %sd: %s", queueID, op, clean(err.Error(), 300))
	case out.Warning != nil:
		did = "released from the hold queue (" + clean(out.Warning.Error(), 200) + ")"
	}
	s.log.Info("web: quarantine "+op, "queue_id", queueID, "by", who, "logged", out.Logged, "warning", out.Warning, "err", err)
	msg := fmt.Sprintf("%s: %s (sender %s, %d recipient(s)).", queueID, did, clean(orNull(out.Sender), 80), len(out.Recipients))
	switch {
	case err != nil:
		msg += " But: " + clean(err.Error(), 300)
	case out.Logged:
		msg += fmt.Sprintf(" Recorded on transaction %d.", out.Record.ID)
	default:
		msg += " It is not in mxguard's log, so nothing was recorded there."
	}
	return msg
}
