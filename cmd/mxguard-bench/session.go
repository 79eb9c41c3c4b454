package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/d--j/go-milter"
)

// The MTA's own names and addresses, as Postfix reports them in macros.
const (
	mtaHostname = "mx.bench.test" // j, and {daemon_name}: Postfix's default milter_macro_daemon_name is $myhostname
	mtaVersion  = "Postfix 3.7.11"
	mtaAddr     = "192.0.2.25"
	mtaPort     = "25"
)

// Final actions of a message, the keys of the report's action counts.
const (
	actAccept     = "accept"
	actReject     = "reject"
	actTempfail   = "tempfail"
	actDiscard    = "discard"
	actQuarantine = "quarantine"
)

// envelope is what the SMTP client says, the same for every message.
type envelope struct {
	clientIP   netip.Addr
	clientName string // "unknown" when the client has no verified name
	helo       string
	from       string
	rcpts      []string
	authUser   string // SMTP AUTH login; "" for none
}

// smtpSession is one SMTP connection as Postfix's smtpd and cleanup drive
// its milter session: one milter connection, several messages possibly.
type smtpSession struct {
	conn   *mtaConn
	ms     *milter.ClientSession
	macros map[string]string
	// closed: the milter ended the connection's dialogue at connect or
	// HELO (Postfix closes the milter socket then); no more messages.
	closed bool
}

// errConnectionDone is returned for a message on a session whose milter
// ended the connection's dialogue; the caller opens a new connection.
var errConnectionDone = errors.New("the milter ended the connection")

// dialer opens the milter connection go-milter's Client asks for, as an
// mtaConn, bounded by the message's deadline.
type dialer struct {
	deadline time.Time
	macros   map[string]string
	conn     *mtaConn
}

func (d *dialer) Dial(network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{Deadline: d.deadline}).Dial(network, addr)
	if err != nil {
		return nil, err
	}
	d.conn = newMTAConn(c, d.macros)
	d.conn.deadline = d.deadline
	return d.conn, nil
}

// openSession connects to the milter as Postfix does for a new SMTP
// client: negotiation, the connect event and HELO. A refusal there is the
// outcome of the connection's first message: action is set and the
// session is closed.
func openSession(network, addr string, env *envelope, port uint16, deadline time.Time) (s *smtpSession, action string, err error) {
	macros := connectMacros(env, port)
	d := &dialer{deadline: deadline, macros: macros}
	timeout := time.Until(deadline)
	client := milter.NewClient(network, addr, milter.WithDialer(d),
		milter.WithReadTimeout(timeout), milter.WithWriteTimeout(timeout))
	ms, err := client.Session(nil) // no Macros: mtaConn sends them
	if err != nil {
		return nil, "", err
	}
	s = &smtpSession{conn: d.conn, ms: ms, macros: macros}

	family := milter.FamilyInet
	if env.clientIP.Is6() {
		family = milter.FamilyInet6
	}
	// milter8.c reports a client without a name as "[address]".
	host := env.clientName
	if host == "unknown" {
		host = "[" + env.clientIP.String() + "]"
	}
	act, err := ms.Conn(host, family, port, env.clientIP.String())
	if err == nil && act.Type == milter.ActionContinue {
		act, err = ms.Helo(env.helo)
	}
	switch {
	case err != nil:
		s.abandon()
		return nil, "", err
	case act.Type != milter.ActionContinue:
		// Postfix closes the milter socket and answers every later
		// command by itself (milter8.c: ACCEPT_CON, REJECT_CON).
		s.abandon()
		return nil, actionName(act), nil
	}
	return s, "", nil
}

// connectMacros are the macros Postfix's smtpd defines for a connection,
// before any message (smtpd_milter.c).
func connectMacros(env *envelope, port uint16) map[string]string {
	ip := env.clientIP.String()
	m := map[string]string{
		"j":                    mtaHostname,
		"v":                    mtaVersion,
		"{daemon_name}":        mtaHostname,
		"{daemon_addr}":        mtaAddr,
		"{daemon_port}":        mtaPort,
		"_":                    env.clientName + " [" + ip + "]",
		"{client_addr}":        ip,
		"{client_port}":        strconv.Itoa(int(port)),
		"{client_name}":        env.clientName,
		"{client_ptr}":         env.clientName,
		"{client_resolve}":     "OK",
		"{client_connections}": "0",
	}
	if env.clientName == "unknown" {
		m["{client_resolve}"] = "FAIL"
	}
	if env.authUser != "" {
		m["{auth_type}"] = "PLAIN"
		m["{auth_authen}"] = env.authUser
	}
	return m
}

// message sends one message through the session as Postfix does, from
// MAIL FROM to the reply at end of message, and returns its final action.
// The queue id is defined from the first accepted recipient on, as with
// smtpd_delay_open_until_valid_rcpt = yes (the default).
func (s *smtpSession) message(env *envelope, msg *message, queueID string, deadline time.Time) (string, error) {
	if s.closed {
		return "", errConnectionDone
	}
	s.conn.deadline = deadline
	action, err := s.transaction(env, msg, queueID, false)
	if err != nil {
		s.abandon()
		return "", err
	}
	// smtpd's mail_reset sends SMFIC_ABORT after every transaction. (After
	// a MAIL FROM the milter refused, Postfix sends none; go-milter needs
	// it to take the next MAIL FROM.)
	if err := s.ms.Abort(nil); err != nil {
		s.abandon()
		return "", err
	}
	return action, nil
}

// holdInData sends msg as far as the middle of DATA, as for a client that
// is slow to send its message: MAIL FROM, RCPT TO, DATA, the header, its
// end and the first body chunk (65,535 bytes at most). The transaction
// stays open; release ends it. action is the milter's answer when it
// decided before (then the transaction is over).
func (s *smtpSession) holdInData(env *envelope, msg *message, queueID string, deadline time.Time) (action string, err error) {
	if s.closed {
		return "", errConnectionDone
	}
	s.conn.deadline = deadline
	action, err = s.transaction(env, msg, queueID, true)
	if err != nil {
		s.abandon()
	}
	return action, err
}

// release ends a session held in DATA as smtpd does when its client goes
// away: SMFIC_ABORT (mail_reset), then SMFIC_QUIT, and the connection
// closes.
func (s *smtpSession) release(deadline time.Time) error {
	if s.closed {
		return errConnectionDone
	}
	s.conn.deadline = deadline
	err := s.ms.Abort(nil)
	s.closed = true
	if cerr := s.ms.Close(); err == nil {
		err = cerr
	}
	return err
}

// transaction sends msg from MAIL FROM to the reply at end of message and
// returns the final action. With held, it stops after the first body chunk
// (after the end of header for a message without body) and returns ""
// when the milter has not decided by then.
func (s *smtpSession) transaction(env *envelope, msg *message, queueID string, held bool) (string, error) {
	m := s.macros
	delete(m, "i")
	m["{mail_addr}"] = env.from
	m["{mail_host}"] = domainOf(env.from)
	m["{mail_mailer}"] = "smtp"

	act, err := s.ms.Mail(env.from, "SIZE="+strconv.Itoa(msg.size))
	if err != nil || act.Type != milter.ActionContinue {
		return actionName(act), err
	}

	accepted := 0
	var refusal *milter.Action
	for _, rcpt := range env.rcpts {
		m["{rcpt_addr}"] = rcpt
		m["{rcpt_host}"] = domainOf(rcpt)
		m["{rcpt_mailer}"] = "relay"
		act, err := s.ms.Rcpt(rcpt, "")
		switch {
		case err != nil:
			return "", err
		case act.StopProcessing():
			refusal = act // this recipient only
			continue
		case act.Type != milter.ActionContinue:
			return actionName(act), nil // accept or discard the message
		}
		accepted++
		if _, ok := m["i"]; !ok {
			m["i"] = queueID // the queue file is open now
		}
	}
	if accepted == 0 {
		// The client's DATA gets "554 no valid recipients" from smtpd
		// itself; the milter hears of it no more.
		return actionName(refusal), nil
	}

	if act, err := s.ms.DataStart(); err != nil || act.Type != milter.ActionContinue {
		return actionName(act), err
	}
	leadingSpace := s.ms.ProtocolOption(milter.OptHeaderLeadingSpace)
	for _, h := range msg.headers {
		v := h.value
		if !leadingSpace {
			// Sendmail compatibility: one space after the colon is eaten.
			v = strings.TrimPrefix(v, " ")
		}
		if act, err := s.ms.HeaderField(h.name, v, nil); err != nil || act.Type != milter.ActionContinue {
			return actionName(act), err
		}
	}
	if act, err := s.ms.HeaderEnd(); err != nil || act.Type != milter.ActionContinue {
		return actionName(act), err
	}
	for chunk := range msg.bodyChunks() {
		if act, err := s.ms.BodyChunk(chunk); err != nil || act.Type != milter.ActionContinue {
			return actionName(act), err
		}
		if held {
			break
		}
	}
	if held {
		return "", nil
	}
	mods, act, err := s.ms.End()
	if err != nil {
		return "", err
	}
	action := actionName(act)
	if action == actAccept {
		for _, mod := range mods {
			if mod.Type == milter.ActionQuarantine {
				action = actQuarantine
			}
		}
	}
	return action, nil
}

// close ends the SMTP session: SMFIC_QUIT, then the connection closes.
func (s *smtpSession) close() {
	if !s.closed {
		s.closed = true
		s.ms.Close()
	}
}

// abandon closes the connection without a word, after an error or when
// the milter ended the dialogue.
func (s *smtpSession) abandon() {
	s.closed = true
	s.conn.Conn.Close()
}

// actionName is the final action a reply stands for; "continue" at end of
// message is accept. Replies with a code are a reject (5xx) or a tempfail
// (4xx), as Postfix takes them.
func actionName(act *milter.Action) string {
	if act == nil {
		return ""
	}
	switch act.Type {
	case milter.ActionAccept, milter.ActionContinue:
		return actAccept
	case milter.ActionDiscard:
		return actDiscard
	case milter.ActionReject:
		return actReject
	case milter.ActionTempFail:
		return actTempfail
	case milter.ActionRejectWithCode:
		if act.SMTPCode/100 == 4 {
			return actTempfail
		}
		return actReject
	}
	return fmt.Sprintf("action-%d", act.Type)
}

// domainOf returns the domain of an address, "" for the null sender.
func domainOf(addr string) string {
	_, d, _ := strings.Cut(addr, "@")
	return strings.ToLower(d)
}
