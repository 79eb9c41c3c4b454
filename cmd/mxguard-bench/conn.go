package main

import (
	"bufio"
	"encoding/binary"
	"net"
	"strings"
	"time"

	"github.com/d--j/go-milter"
)

// postfixMacros are Postfix 3.7's default milter_*_macros (postconf -d),
// what it sends at each stage to a milter that asks for nothing else.
var postfixMacros = [milter.StageEndMarker][]string{
	milter.StageConnect: strings.Fields("j {daemon_name} {daemon_addr} v _"),
	milter.StageHelo:    strings.Fields("{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}"),
	milter.StageMail:    strings.Fields("i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}"),
	milter.StageRcpt:    strings.Fields("i {rcpt_addr} {rcpt_host} {rcpt_mailer}"),
	milter.StageData:    {"i"},
	milter.StageEOM:     {"i"},
	milter.StageEOH:     {"i"},
}

// eventStage is the macro stage of each event that carries macros
// (milter8.c): each header and the end of header carry the end-of-header
// macros, each body chunk and the end of message the end-of-message ones.
var eventStage = map[byte]milter.MacroStage{
	'C': milter.StageConnect,
	'H': milter.StageHelo,
	'M': milter.StageMail,
	'R': milter.StageRcpt,
	'T': milter.StageData,
	'L': milter.StageEOH,
	'N': milter.StageEOH,
	'B': milter.StageEOM,
	'E': milter.StageEOM,
}

// mtaConn is the milter connection as Postfix's milter8 client uses it.
// go-milter's ClientSession speaks the protocol through it; mtaConn adds
// what Postfix does differently from go-milter's client:
//
//   - Macros. Before every event that carries macros, an SMFIC_MACRO frame
//     with the stage's macros that are defined now, even when none is
//     (then the frame holds just the event code). The names per stage are
//     those the milter asked for at negotiation, and Postfix's defaults
//     for the stages it did not name. go-milter sends none: its sessions
//     get no Macros.
//   - Buffering. Frames are written when the MTA waits for a reply, so
//     the macros and the event go out together (Postfix's VSTREAM flushes
//     before it reads), instead of a write per frame header and another
//     per frame body.
//   - Deadlines. Every read and write ends by the current message's
//     deadline, whatever go-milter asks for.
type mtaConn struct {
	net.Conn
	r *bufio.Reader

	// macros are the values defined now, set by the session as the SMTP
	// dialogue goes on; stages are the names to send per stage.
	macros map[string]string
	stages [milter.StageEndMarker][]string

	out []byte // frames not written yet
	hdr []byte // the start of a frame header split across writes
	rem int    // bytes of the current frame's payload still to come

	reply    []byte // the milter's first reply until it is whole
	replied  bool   // the negotiation reply has been read
	deadline time.Time
}

func newMTAConn(c net.Conn, macros map[string]string) *mtaConn {
	return &mtaConn{Conn: c, r: bufio.NewReader(c), macros: macros, stages: postfixMacros}
}

// Write takes go-milter's frames apart and queues them, each event behind
// its macros.
func (c *mtaConn) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if c.rem > 0 {
			k := min(c.rem, len(p))
			c.out = append(c.out, p[:k]...)
			c.rem -= k
			p = p[k:]
			continue
		}
		// A frame header: the length (command byte included), the command.
		k := min(5-len(c.hdr), len(p))
		c.hdr = append(c.hdr, p[:k]...)
		p = p[k:]
		if len(c.hdr) < 5 {
			break
		}
		if st, ok := eventStage[c.hdr[4]]; ok {
			c.appendMacros(c.hdr[4], st)
		}
		c.out = append(c.out, c.hdr...)
		c.rem = int(binary.BigEndian.Uint32(c.hdr)) - 1
		c.hdr = c.hdr[:0]
	}
	return n, nil
}

// appendMacros queues the SMFIC_MACRO frame of event.
func (c *mtaConn) appendMacros(event byte, st milter.MacroStage) {
	start := len(c.out)
	c.out = append(c.out, 0, 0, 0, 0, 'D', event)
	for _, name := range c.stages[st] {
		if v, ok := c.macros[name]; ok {
			c.out = append(append(c.out, name...), 0)
			c.out = append(append(c.out, v...), 0)
		}
	}
	binary.BigEndian.PutUint32(c.out[start:], uint32(len(c.out)-start-4))
}

// flush writes the queued frames.
func (c *mtaConn) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	d := c.deadline
	if d.IsZero() {
		d = time.Now().Add(defaultTimeout)
	}
	c.Conn.SetWriteDeadline(d)
	_, err := c.Conn.Write(c.out)
	c.out = c.out[:0]
	return err
}

// Read flushes what is queued, then reads the milter's reply. The first
// reply, to the negotiation, tells which macros to send at which stage.
func (c *mtaConn) Read(p []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	if !c.replied {
		c.reply = append(c.reply, p[:n]...)
		c.negotiated()
	}
	return n, err
}

// negotiated reads the macro requests of SMFIC_OPTNEG once the whole
// reply is in: after version, actions and protocol, pairs of a stage
// (uint32) and a string of names. A stage the milter names with an empty
// list keeps Postfix's default, as milter.c's MILTER_MACRO_EVAL does.
func (c *mtaConn) negotiated() {
	if len(c.reply) < 4 {
		return
	}
	size := int(binary.BigEndian.Uint32(c.reply))
	if len(c.reply) < 4+size {
		return
	}
	c.replied = true
	frame := c.reply[4 : 4+size]
	c.reply = nil
	if len(frame) < 13 || frame[0] != 'O' {
		return // go-milter reports the error
	}
	data := frame[13:]
	for len(data) >= 4 {
		st := binary.BigEndian.Uint32(data)
		names, rest, _ := strings.Cut(string(data[4:]), "\x00")
		data = []byte(rest)
		list := strings.FieldsFunc(names, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' })
		if st < uint32(milter.StageEndMarker) && len(list) > 0 {
			c.stages[st] = list
		}
	}
}

// SetReadDeadline keeps reads within the message's deadline.
func (c *mtaConn) SetReadDeadline(t time.Time) error {
	if !c.deadline.IsZero() && (t.IsZero() || t.After(c.deadline)) {
		t = c.deadline
	}
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline does nothing: writes happen in flush, under the
// message's deadline.
func (c *mtaConn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets the read deadline, within the message's.
func (c *mtaConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// Close writes what is queued (go-milter's SMFIC_QUIT) and closes.
func (c *mtaConn) Close() error {
	c.flush()
	return c.Conn.Close()
}
