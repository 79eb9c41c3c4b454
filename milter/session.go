package milter

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"strings"
	"time"

	"github.com/d--j/go-milter"

	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/policy"
)

// actionAborted is the log's action for a transaction that never finished.
const actionAborted = "aborted"

// session handles one milter connection, which MTAs open per SMTP
// connection. go-milter calls its methods one at a time.
type session struct {
	srv        *Server
	id         uint64
	clientAddr string       // the client's address, in the session's log lines
	log        *slog.Logger // see logger
	busy       bool         // opened beyond milter.max_sessions
	counted    bool         // counted in Server.active

	conn      policy.Connection
	connected bool
	rows      int // transaction rows written on this connection

	// The current transaction, from MAIL FROM to its end.
	trx            *policy.Transaction
	trxCancel      context.CancelFunc
	rec            logstore.Record
	queueID        string
	headers        []policy.Header
	hdrBytes       int
	headerTooLarge bool // over milter.max_headers or max_header_bytes: refused at end of header
	size           int64
	body           body // kept only when a check reads it
}

func (s *Server) newSession() *session {
	id := s.sessions.Add(1)
	sess := &session{srv: s, id: id}
	s.wg.Add(1)
	return sess
}

func (s *session) cfg() *policy.Config { return s.srv.engine.Config() }

// logger returns the session's logger, with its id and client, made on
// first use: slog's With formats its attributes at once, and most sessions
// log nothing at the usual level (making it for every session was 1.7% of
// the daemon's CPU at 64 sessions).
func (s *session) logger() *slog.Logger {
	if s.log == nil {
		if s.clientAddr != "" {
			s.log = s.srv.log.With("session", s.id, "client", s.clientAddr)
		} else {
			s.log = s.srv.log.With("session", s.id)
		}
	}
	return s.log
}

// stageContext bounds the checks of one stage.
func (s *session) stageContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.srv.base, s.cfg().Milter.CheckTimeout.Duration)
}

// contentContext bounds the end-of-message stage, where content engines
// run: milter.content_timeout, which stays below the MTA's own limit.
func (s *session) contentContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.srv.base, s.cfg().Milter.ContentTimeout.Duration)
}

// recoverPanic turns a panic in a stage into a tempfail for the client and a
// log row, so one bad session never takes the daemon down.
func (s *session) recoverPanic(at stage, resp **milter.Response, err *error) {
	p := recover()
	if p == nil {
		return
	}
	s.logger().Error("panic in milter session", "stage", at, "panic", p, "stack", string(debug.Stack()))
	v := policy.Trouble(policy.InternalError, fmt.Errorf("panic: %v", p))
	*resp, *err = response(v, at), nil
	// Logging must not panic again inside this deferred call: that would
	// end the process.
	defer func() {
		if p := recover(); p != nil {
			s.logger().Error("panic while logging a panicked session", "panic", p)
			s.trx = nil
		}
	}()
	if s.trx != nil {
		s.finish(v.Action.String(), v)
	} else {
		s.saveConnectionRow(v.Action.String(), v)
	}
}

func (s *session) NewConnection(m milter.Modifier) error {
	if s.counted {
		// The MTA reuses this milter connection for a new SMTP connection
		// (SMFIC_QUIT_NC): the previous one ends here.
		s.endConnection()
		s.conn, s.connected, s.rows = policy.Connection{}, false, 0
		s.clientAddr, s.log = "", nil
		return nil
	}
	s.counted = true
	if n := s.srv.active.Add(1); n > int64(s.cfg().Milter.MaxSessions) {
		s.busy = true
	}
	return nil
}

func (s *session) Connect(host, family string, port uint16, addr string, m milter.Modifier) (resp *milter.Response, err error) {
	defer s.recoverPanic(atConnect, &resp, &err)
	s.conn = policy.Connection{ClientName: clientName(host), Daemon: m.Get(milter.MacroDaemonName), IfAddr: m.Get(milter.MacroIfAddr)}
	if family == "tcp4" || family == "tcp6" {
		s.conn.ClientIP, _ = netip.ParseAddr(addr)
	}
	s.connected = true
	s.clientAddr, s.log = addr, nil
	if s.busy {
		v := policy.BusyVerdict(s.cfg().Milter.MaxSessions)
		s.saveConnectionRow(v.Action.String(), v)
		return response(v, atConnect), nil
	}
	v := s.srv.engine.Connect(&s.conn)
	if v.Action.Refuses() {
		s.saveConnectionRow(v.Action.String(), v)
	}
	return response(v, atConnect), nil
}

func (s *session) Helo(name string, m milter.Modifier) (*milter.Response, error) {
	s.conn.Helo = name
	return milter.RespContinue, nil
}

func (s *session) MailFrom(from, esmtpArgs string, m milter.Modifier) (resp *milter.Response, err error) {
	defer s.recoverPanic(atMail, &resp, &err)
	if s.trx != nil {
		s.finish(actionAborted, policy.Verdict{Reason: policy.Aborted})
	}
	var ctx context.Context
	ctx, s.trxCancel = context.WithCancel(s.srv.base)
	s.trx = s.srv.engine.NewTransaction(&s.conn)
	s.trx.MailFrom = cleanAddr(from)
	s.trx.AuthUser = m.Get(milter.MacroAuthAuthen)
	s.trx.AuthType = m.Get(milter.MacroAuthType)
	s.rec = logstore.Record{}
	s.headers, s.hdrBytes, s.size, s.headerTooLarge = nil, 0, 0, false
	cfg := s.cfg()
	s.body.reset()
	s.body.dir, s.body.limit = cfg.Milter.SpoolDir, int(cfg.Milter.BodyMemory.Bytes)
	// The previous message's queue id must not stick to this one: a row
	// refused before the MTA assigns an id has none, never a wrong one.
	s.queueID = ""
	s.noteQueueID(m)

	v := s.srv.engine.Mail(ctx, s.trx)
	if v.Action.Refuses() {
		return s.finish(v.Action.String(), v), nil
	}
	return response(v, atMail), nil
}

func (s *session) RcptTo(rcpt, esmtpArgs string, m milter.Modifier) (resp *milter.Response, err error) {
	defer s.recoverPanic(atRcpt, &resp, &err)
	if s.trx == nil {
		return milter.RespContinue, nil
	}
	s.noteQueueID(m)
	ctx, cancel := s.stageContext()
	defer cancel()
	v := s.srv.engine.Rcpt(ctx, s.trx, cleanAddr(rcpt))
	if v.Action.Refuses() {
		// The row must exist by the time the client hears the refusal:
		// this may be the transaction's last reply.
		if err := s.save(s.summary()); err != nil {
			s.logger().Error("cannot write the transaction log", "queue_id", s.queueID, "rcpt", cleanAddr(rcpt), "err", err)
			v = policy.Trouble(policy.LogUnavailable, err)
			s.trx.Recipients[len(s.trx.Recipients)-1].Verdict = v
		}
	}
	return response(v, atRcpt), nil
}

func (s *session) Data(m milter.Modifier) (*milter.Response, error) {
	s.noteQueueID(m)
	return milter.RespContinue, nil
}

func (s *session) Header(name, value string, m milter.Modifier) (resp *milter.Response, err error) {
	defer s.recoverPanic(atHeader, &resp, &err)
	if s.trx == nil || s.headerTooLarge {
		return milter.RespContinue, nil
	}
	s.hdrBytes += len(name) + len(value) + 3 // ":" and CRLF
	limits := s.cfg().Milter
	if len(s.headers) >= limits.MaxHeaders || s.hdrBytes > limits.MaxHeaderBytes {
		// The MTA does not wait for a reply to a header field (we
		// negotiate SMFIP_NR_HDR): keep no more, refuse at end of header.
		s.headerTooLarge = true
		return milter.RespContinue, nil
	}
	s.headers = append(s.headers, policy.Header{Name: name, Value: value})
	return milter.RespContinue, nil
}

func (s *session) Headers(m milter.Modifier) (resp *milter.Response, err error) {
	defer s.recoverPanic(atHeader, &resp, &err)
	s.noteQueueID(m)
	if s.trx != nil && s.headerTooLarge {
		limits := s.cfg().Milter
		v := policy.HeaderTooLargeVerdict(limits.MaxHeaders, limits.MaxHeaderBytes)
		return s.finish(v.Action.String(), v), nil
	}
	return milter.RespContinue, nil
}

func (s *session) BodyChunk(chunk []byte, m milter.Modifier) (*milter.Response, error) {
	s.size += int64(len(chunk))
	if s.trx != nil && s.srv.engine.NeedsBody() {
		s.body.Write(chunk) // an error is kept and answered at end of message
	}
	return milter.RespContinue, nil
}

func (s *session) EndOfMessage(m milter.Modifier) (resp *milter.Response, err error) {
	defer s.recoverPanic(atEOM, &resp, &err)
	if s.trx == nil {
		return milter.RespAccept, nil
	}
	s.noteQueueID(m)
	ctx, cancel := s.contentContext()
	defer cancel()
	msg := &policy.Message{Headers: s.headers}
	if s.srv.engine.NeedsBody() {
		msg.Body = &s.body
	}
	var v policy.Verdict
	if s.body.err != nil {
		// A body we could not keep cannot be judged: tempfail, the
		// client retries when the disk has room again.
		v = policy.Trouble(policy.SpoolError, s.body.err)
	} else {
		v = s.srv.engine.EndOfMessage(ctx, s.trx, msg)
		if msg.Abandoned {
			s.body.abandon() // a check may still be reading it
		}
	}
	if ctx.Err() != nil {
		v = policy.Trouble(policy.InternalError, fmt.Errorf("end-of-message checks ran out of time: %w", context.Cause(ctx)))
	}
	for _, h := range v.AddHeaders {
		s.rec.HeadersAdded = append(s.rec.HeadersAdded, h.Name+": "+h.Value)
	}
	for _, c := range v.ChangeHeaders { // a tagged subject, for one
		s.rec.HeadersAdded = append(s.rec.HeadersAdded, c.Name+": "+c.Value+" (replacing the original)")
	}
	resp, logged := s.finishLogged(v.Action.String(), v)
	if !logged || v.Action.Ends() {
		return resp, nil
	}
	if err := applyEdits(m, v); err != nil {
		// The MTA is gone or refused the edit; it applies its own
		// milter_default_action. The row already says what we decided.
		s.logger().Error("cannot apply header edits", "queue_id", s.rec.QueueID, "err", err)
		return nil, err
	}
	return resp, nil
}

// applyEdits sends the header deletions, insertions and quarantine of a
// verdict. Deletions come first and last-to-first (see policy.forgedHeaders).
func applyEdits(m milter.Modifier, v policy.Verdict) error {
	for _, ref := range v.DeleteHeaders {
		if err := m.ChangeHeader(ref.Index, ref.Name, ""); err != nil {
			return err
		}
	}
	for _, c := range v.ChangeHeaders {
		if err := m.ChangeHeader(c.Index, c.Name, wireValue(c.Value)); err != nil {
			return err
		}
	}
	for i := len(v.AddHeaders) - 1; i >= 0; i-- { // each goes to the top
		if err := m.InsertHeader(0, v.AddHeaders[i].Name, wireValue(v.AddHeaders[i].Value)); err != nil {
			return err
		}
	}
	if v.Action == policy.Quarantine {
		return m.Quarantine(v.Quarantine)
	}
	return nil
}

func (s *session) Abort(m milter.Modifier) error {
	if s.trx != nil {
		s.finish(actionAborted, policy.Verdict{Reason: policy.Aborted})
	}
	return nil
}

func (s *session) Unknown(cmd string, m milter.Modifier) (*milter.Response, error) {
	return milter.RespContinue, nil
}

func (s *session) Cleanup(m milter.Modifier) {
	defer s.srv.wg.Done()
	if s.counted {
		defer s.srv.active.Add(-1)
	}
	defer func() {
		if p := recover(); p != nil {
			s.logger().Error("panic in milter session cleanup", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	s.endConnection()
	s.body.reset() // closes a spooled body's file
}

// endConnection logs what the SMTP connection leaves behind: an unfinished
// transaction, or, when it had none, the connection itself.
func (s *session) endConnection() {
	if s.trx != nil {
		s.finish(actionAborted, policy.Verdict{Reason: policy.Aborted})
	}
	if s.connected && s.rows == 0 {
		s.saveConnectionRow(actionAborted, policy.Verdict{Reason: policy.NoTransaction})
	}
}

func (s *session) noteQueueID(m milter.Modifier) {
	if id := m.Get(milter.MacroQueueId); id != "" {
		s.queueID = id
		if s.trx != nil {
			s.trx.QueueID = id
		}
	}
}

// finish ends the current transaction with action and verdict: it writes
// the row and returns the response for the client. A transaction whose row
// cannot be committed is tempfailed: never accept what was not logged.
// An aborted transaction whose recipients were all refused is logged with
// the refusal, since that is the answer the client got.
func (s *session) finish(action string, v policy.Verdict) *milter.Response {
	resp, _ := s.finishLogged(action, v)
	return resp
}

// finishLogged is finish that also tells whether the row was committed.
func (s *session) finishLogged(action string, v policy.Verdict) (*milter.Response, bool) {
	if action == actionAborted {
		if sum := s.summary(); sum.Action != actionAborted {
			action, v = sum.Action, sum.Verdict
		}
	}
	s.rec.Action, s.rec.Reason, s.rec.Reply = action, string(v.Reason), v.Reply()
	if v.Err != nil {
		s.rec.Error = v.Err.Error()
	}
	s.fillRecord()
	// Refusals read the same at every stage; the rest is end of message.
	resp := response(v, atEOM)
	ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
	defer cancel()
	err := s.srv.store.Save(ctx, &s.rec)
	if err != nil {
		// The debug log must say what the client was told, not what
		// mxguard had decided before the row failed.
		t := policy.Trouble(policy.LogUnavailable, err)
		s.logger().Error("cannot write the transaction log", "queue_id", s.rec.QueueID, "decided", s.rec.Action,
			"action", t.Action.String(), "reason", t.Reason, "reply", t.Reply(), "err", err)
		resp = response(t, atEOM)
	} else if s.srv.log.Enabled(context.Background(), slog.LevelInfo) {
		s.logger().Info("transaction", "queue_id", s.rec.QueueID, "action", s.rec.Action, "reason", s.rec.Reason, "from", s.rec.MailFrom,
			"rcpts", len(s.rec.Recipients), "reply", s.rec.Reply, "err", s.rec.Error)
	}
	s.rows++
	s.trxCancel()
	s.trx = nil
	s.body.reset()
	return resp, err == nil
}

// summaryVerdict is how an unfinished transaction stands now.
type summaryVerdict struct {
	Action  string
	Verdict policy.Verdict
}

// summary says how the transaction would be logged if it ended now: refused
// when every recipient so far was refused, else aborted.
func (s *session) summary() summaryVerdict {
	rs := s.trx.Recipients
	if len(rs) == 0 || len(s.trx.AcceptedRecipients()) > 0 {
		return summaryVerdict{actionAborted, policy.Verdict{Reason: policy.Aborted}}
	}
	return summaryVerdict{rs[0].Verdict.Action.String(), rs[0].Verdict}
}

// save writes the current transaction's row as it stands (used at RCPT).
func (s *session) save(sum summaryVerdict) error {
	s.rec.Action, s.rec.Reason, s.rec.Reply = sum.Action, string(sum.Verdict.Reason), sum.Verdict.Reply()
	s.fillRecord()
	ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
	defer cancel()
	return s.srv.store.Save(ctx, &s.rec)
}

// fillRecord copies what the session knows into the row.
func (s *session) fillRecord() {
	t, r, cfg := s.trx, &s.rec, s.cfg()
	r.StartedAt, r.EndedAt = t.Started, time.Now()
	s.fillConnection()
	r.AuthUser, r.AuthType, r.MailFrom = t.AuthUser, t.AuthType, t.MailFrom
	msg := policy.Message{Headers: s.headers}
	r.FromHeader, r.Subject, r.MessageID = msg.Get("From"), msg.Get("Subject"), msg.Get("Message-Id")
	r.Size = s.size
	if len(s.headers) > 0 {
		r.Size += int64(s.hdrBytes) + 2 // the blank line
	}
	r.Direction = string(t.Direction())
	r.Organization = ""
	if o := t.Organization(cfg); o != nil {
		r.Organization = o.Name
	}
	if ev, ok := t.SPFIfDone(); ok {
		r.SPF, r.SPFDomain = string(ev.Result), ev.Domain
	}
	sum := t.Summary()
	r.DKIM, r.DMARC, r.SpamScore, r.Virus = sum.DKIM, sum.DMARC, sum.SpamScore, sum.Virus
	r.Evidence = r.Evidence[:0]
	for _, e := range t.Evidence {
		le := logstore.Evidence{Check: e.Check, Result: e.Result, Detail: e.Detail, Duration: e.Duration}
		if e.Err != nil {
			le.Error = e.Err.Error()
		}
		r.Evidence = append(r.Evidence, le)
	}
	r.Recipients = r.Recipients[:0]
	for _, rc := range t.Recipients {
		lr := logstore.Recipient{Address: rc.Address, Action: rc.Verdict.Action.String(), Reason: string(rc.Verdict.Reason), Reply: rc.Verdict.Reply()}
		if rc.Organization != nil {
			lr.Organization = rc.Organization.Name
		}
		r.Recipients = append(r.Recipients, lr)
	}
}

func (s *session) fillConnection() {
	r := &s.rec
	r.QueueID, r.ClientName, r.Helo, r.Daemon = s.queueID, s.conn.ClientName, s.conn.Helo, s.conn.Daemon
	r.ClientIP = ""
	if s.conn.ClientIP.IsValid() {
		r.ClientIP = s.conn.ClientIP.Unmap().String()
	}
}

// saveConnectionRow logs a connection that ended without a transaction:
// refused at connect, or closed before MAIL FROM.
func (s *session) saveConnectionRow(action string, v policy.Verdict) {
	s.rec = logstore.Record{StartedAt: time.Now(), EndedAt: time.Now(), Action: action, Reason: string(v.Reason), Reply: v.Reply()}
	if v.Err != nil {
		s.rec.Error = v.Err.Error()
	}
	s.fillConnection()
	if s.conn.Trusted {
		s.rec.Direction = string(policy.Outbound)
	} else {
		s.rec.Direction = string(policy.Inbound)
	}
	ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
	defer cancel()
	if err := s.srv.store.Save(ctx, &s.rec); err != nil {
		s.logger().Error("cannot write the transaction log", "err", err)
	}
	s.rows++
}

// wireValue is a header value as the MTA expects it from us: we negotiate
// SMFIP_HDR_LEADSPC, so the MTA writes the value right after the colon and
// the space that separates them is ours to send. Folded lines go with a
// bare LF, as libmilter's callers send them; the MTA writes its own line
// ends.
func wireValue(v string) string { return " " + strings.ReplaceAll(v, "\r\n", "\n") }

// clientName is the client's host name as the MTA resolved it. Postfix
// says "unknown" when the address has no verified name; Sendmail gives the
// address in brackets instead. The log says "unknown" for both.
func clientName(host string) string {
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		return "unknown"
	}
	return host
}

// cleanAddr strips the angle brackets and blanks MTAs leave around
// envelope addresses; "<>" becomes "", the null sender.
func cleanAddr(a string) string {
	return strings.TrimSpace(milter.RemoveAngle(strings.TrimSpace(a)))
}

// String names a stage in the debug log.
func (at stage) String() string {
	return [...]string{"connect", "mail", "rcpt", "header", "eom"}[at]
}

var _ milter.Milter = (*session)(nil)
