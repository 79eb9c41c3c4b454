package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/mxguard/mxguard/logstore"
)

const tcpListen = "listen = \"inet:127.0.0.1:0\"\nshutdown_timeout = \"5s\""

var plainHeaders = [][2]string{
	{"From", " Sender <x@sender.test>"},
	{"To", " u@example.com"},
	{"Subject", " hello"},
	{"Message-Id", " <1@sender.test>"},
}

// headerValue returns the value of the first header insert or add named name.
func headerValue(mods []milter.ModifyAction, name string) (string, bool) {
	for _, m := range mods {
		if (m.Type == milter.ActionInsertHeader || m.Type == milter.ActionAddHeader) && strings.EqualFold(m.HeaderName, name) {
			return m.HeaderValue, true
		}
	}
	return "", false
}

func wantRow(t *testing.T, r logstore.Record, action, reason, reply string) {
	t.Helper()
	if r.Action != action || r.Reason != reason || !strings.HasPrefix(r.Reply, reply) {
		t.Errorf("row action=%q reason=%q reply=%q; want %q %q %q (row %+v)", r.Action, r.Reason, r.Reply, action, reason, reply, r)
	}
}

// TestWire drives a real "mxguard serve" with go-milter's client, the way
// Postfix does, and checks the replies and the rows it commits.
func TestWire(t *testing.T) {
	d := startDaemon(t, tcpListen, "")
	rows := 0
	next := func() logstore.Record { rows++; return d.lastRow(rows) }

	t.Run("clean inbound, SPF pass", func(t *testing.T) {
		m := d.connect(t, "192.0.2.1")
		m.step("mail", must(m.s.Mail("x@sender.test", "")))
		m.step("rcpt", must(m.s.Rcpt("u@example.com", "")))
		mods, act := m.message("QCLEAN1", plainHeaders, "hi\r\n")
		if act.Type != milter.ActionAccept {
			t.Fatalf("eom: %v; want accept", act)
		}
		ar, ok := headerValue(mods, "Authentication-Results")
		if !ok || !strings.HasPrefix(ar, " mx.example.com; spf=pass") || !strings.Contains(ar, "smtp.mailfrom=x@sender.test") {
			// The leading space is ours to send: we negotiate SMFIP_HDR_LEADSPC.
			t.Errorf("Authentication-Results = %q (present %v)", ar, ok)
		}
		for _, mod := range mods {
			if mod.Type == milter.ActionInsertHeader && mod.HeaderIndex != 0 {
				t.Errorf("header inserted at %d; want 0 (top)", mod.HeaderIndex)
			}
		}
		r := next()
		wantRow(t, r, "accept", "", "")
		if r.QueueID != "QCLEAN1" || r.ClientIP != "192.0.2.1" || r.ClientName != "client.test" || r.Helo != "client.sender.test" ||
			r.MailFrom != "x@sender.test" || r.SPF != "pass" || r.SPFDomain != "sender.test" || r.Direction != "inbound" ||
			r.Organization != "example" || r.Subject != "hello" || r.MessageID != "<1@sender.test>" || r.Daemon != "smtpd" ||
			len(r.Recipients) != 1 || r.Recipients[0].Address != "u@example.com" || r.Recipients[0].Action != "accept" || r.Size == 0 {
			t.Errorf("row = %+v", r)
		}
		if len(r.HeadersAdded) != 1 || !strings.HasPrefix(r.HeadersAdded[0], "Authentication-Results:") {
			t.Errorf("headers added = %q", r.HeadersAdded)
		}
	})

	t.Run("SPF fail rejected at RCPT", func(t *testing.T) {
		m := d.connect(t, "192.0.2.2")
		m.step("mail", must(m.s.Mail("x@sender.test", "")))
		m.refused("rcpt", must(m.s.Rcpt("u@example.com", "")), "550 5.7.23 SPFFail")
		m.s.Close()
		r := next()
		wantRow(t, r, "reject", "SPFFail", "550 5.7.23")
		if r.SPF != "fail" || r.QueueID != "" || len(r.Recipients) != 1 || r.Recipients[0].Reply == "" {
			t.Errorf("row = %+v", r)
		}
	})

	t.Run("SPF softfail tagged and delivered", func(t *testing.T) {
		m := d.connect(t, "192.0.2.2")
		m.step("mail", must(m.s.Mail("x@soft.test", "")))
		m.step("rcpt", must(m.s.Rcpt("u@example.com", "")))
		mods, act := m.message("QSOFT1", plainHeaders, "hi\r\n")
		if act.Type != milter.ActionAccept {
			t.Fatalf("eom: %v", act)
		}
		if v, ok := headerValue(mods, "X-MXGuard-Verdict"); !ok || v != " tag; reasons=SPFSoftFail" {
			t.Errorf("verdict header %q", v)
		}
		if ar, _ := headerValue(mods, "Authentication-Results"); !strings.Contains(ar, "spf=softfail") {
			t.Errorf("Authentication-Results %q", ar)
		}
		wantRow(t, next(), "tag", "SPFSoftFail", "")
	})

	t.Run("SPF temperror tempfails", func(t *testing.T) {
		m := d.connect(t, "192.0.2.2")
		m.step("mail", must(m.s.Mail("x@temp.test", "")))
		m.refused("rcpt", must(m.s.Rcpt("u@example.com", "")), "451 4.7.24 SPFTempError")
		m.s.Close()
		r := next()
		wantRow(t, r, "tempfail", "SPFTempError", "451 4.7.24")
		if r.SPF != "temperror" {
			t.Errorf("spf = %q", r.SPF)
		}
	})

	t.Run("unauthenticated relay denied", func(t *testing.T) {
		m := d.connect(t, "192.0.2.1")
		m.step("mail", must(m.s.Mail("x@sender.test", "")))
		m.refused("rcpt", must(m.s.Rcpt("v@elsewhere.test", "")), "554 5.7.1 RelayDenied")
		m.s.Close()
		r := next()
		wantRow(t, r, "reject", "RelayDenied", "554 5.7.1")
		if len(r.Recipients) != 1 || r.Recipients[0].Organization != "" || r.Recipients[0].Reason != "RelayDenied" {
			t.Errorf("recipients = %+v", r.Recipients)
		}
	})

	t.Run("refused recipient does not end the transaction", func(t *testing.T) {
		m := d.connect(t, "192.0.2.1")
		m.step("mail", must(m.s.Mail("x@sender.test", "")))
		m.refused("rcpt 1", must(m.s.Rcpt("v@elsewhere.test", "")), "554 5.7.1")
		m.step("rcpt 2", must(m.s.Rcpt("u@example.net", "")))
		_, act := m.message("QMIXED1", plainHeaders, "hi\r\n")
		if act.Type != milter.ActionAccept {
			t.Fatalf("eom: %v", act)
		}
		r := next()
		wantRow(t, r, "accept", "", "")
		if len(r.Recipients) != 2 || r.Recipients[0].Action != "reject" || r.Recipients[1].Action != "accept" || r.QueueID != "QMIXED1" {
			t.Errorf("row = %+v", r)
		}
	})

	t.Run("trusted relay", func(t *testing.T) {
		m := d.connect(t, "127.0.0.1")
		m.step("mail", must(m.s.Mail("app@example.com", "")))
		m.step("rcpt", must(m.s.Rcpt("v@elsewhere.test", "")))
		_, act := m.message("QTRUST1", plainHeaders, "hi\r\n")
		if act.Type != milter.ActionAccept {
			t.Fatalf("eom: %v", act)
		}
		r := next()
		wantRow(t, r, "accept", "", "")
		if r.Direction != "outbound" || r.SPF != "" {
			t.Errorf("direction %q spf %q; want outbound, not checked", r.Direction, r.SPF)
		}
	})

	t.Run("authenticated relay", func(t *testing.T) {
		m := d.connect(t, "203.0.113.5")
		m.macros.Set(milter.MacroAuthAuthen, "alice")
		m.macros.Set(milter.MacroAuthType, "PLAIN")
		m.step("mail", must(m.s.Mail("alice@example.com", "")))
		m.step("rcpt", must(m.s.Rcpt("v@elsewhere.test", "")))
		mods, act := m.message("QAUTH1", plainHeaders, "hi\r\n")
		if act.Type != milter.ActionAccept {
			t.Fatalf("eom: %v", act)
		}
		if ar, _ := headerValue(mods, "Authentication-Results"); !strings.Contains(ar, "auth=pass smtp.auth=alice") {
			t.Errorf("Authentication-Results %q", ar)
		}
		r := next()
		wantRow(t, r, "accept", "", "")
		if r.AuthUser != "alice" || r.AuthType != "PLAIN" || r.Direction != "outbound" || r.Organization != "example" {
			t.Errorf("row = %+v", r)
		}
	})

	t.Run("sender-login mismatch", func(t *testing.T) {
		m := d.connect(t, "203.0.113.5")
		m.macros.Set(milter.MacroAuthAuthen, "alice")
		m.refused("mail", must(m.s.Mail("bob@example.com", "")), "553 5.7.1 SenderLoginMismatch")
		r := next()
		wantRow(t, r, "reject", "SenderLoginMismatch", "553 5.7.1")
		if r.AuthUser != "alice" || r.MailFrom != "bob@example.com" {
			t.Errorf("row = %+v", r)
		}
	})

	t.Run("spoofed local sender", func(t *testing.T) {
		m := d.connect(t, "192.0.2.1")
		m.refused("mail", must(m.s.Mail("ceo@example.net", "")), "550 5.7.1 SpoofedSender")
		wantRow(t, next(), "reject", "SpoofedSender", "550 5.7.1")
	})

	t.Run("spoofed local sender with SPF fail gets the SPF reply", func(t *testing.T) {
		m := d.connect(t, "192.0.2.1")
		m.refused("mail", must(m.s.Mail("ceo@example.com", "")), "550 5.7.23 SPFFail")
		wantRow(t, next(), "reject", "SPFFail", "550 5.7.23")
	})

	t.Run("own domain with SPF pass is no spoof", func(t *testing.T) {
		m := d.connect(t, "192.0.2.10")
		m.step("mail", must(m.s.Mail("ceo@example.com", "")))
		m.step("rcpt", must(m.s.Rcpt("u@example.com", "")))
		_, act := m.message("QOWN1", plainHeaders, "hi\r\n")
		if act.Type != milter.ActionAccept {
			t.Fatalf("eom: %v", act)
		}
		wantRow(t, next(), "accept", "", "")
	})

	t.Run("forged Authentication-Results removed", func(t *testing.T) {
		m := d.connect(t, "192.0.2.1")
		m.step("mail", must(m.s.Mail("x@sender.test", "")))
		m.step("rcpt", must(m.s.Rcpt("u@example.com", "")))
		hdrs := append([][2]string{
			{"Authentication-Results", " mx.example.com; spf=pass smtp.mailfrom=ceo@example.com"},
			{"Authentication-Results", " other.example; dkim=pass"},
			{"Authentication-Results", " MX.EXAMPLE.COM; dkim=pass header.d=example.com"},
		}, plainHeaders...)
		mods, act := m.message("QFORGE1", hdrs, "hi\r\n")
		if act.Type != milter.ActionAccept {
			t.Fatalf("eom: %v", act)
		}
		var deleted []uint32
		for _, mod := range mods {
			if mod.Type == milter.ActionChangeHeader && mod.HeaderValue == "" && strings.EqualFold(mod.HeaderName, "Authentication-Results") {
				deleted = append(deleted, mod.HeaderIndex)
			}
		}
		if len(deleted) != 2 || deleted[0] != 3 || deleted[1] != 1 {
			t.Errorf("deleted Authentication-Results indexes %v; want [3 1] (last first, other.example kept)", deleted)
		}
		wantRow(t, next(), "accept", "", "")
	})

	t.Run("abort mid-transaction", func(t *testing.T) {
		m := d.connect(t, "192.0.2.1")
		m.step("mail", must(m.s.Mail("x@sender.test", "")))
		m.step("rcpt", must(m.s.Rcpt("u@example.com", "")))
		if err := m.s.Abort(nil); err != nil {
			t.Fatal(err)
		}
		r := next()
		wantRow(t, r, "aborted", "Aborted", "")
		if r.MailFrom != "x@sender.test" || len(r.Recipients) != 1 {
			t.Errorf("row = %+v", r)
		}
	})

	t.Run("several messages on one connection", func(t *testing.T) {
		m := d.connect(t, "192.0.2.1")
		for i, qid := range []string{"QMULTI1", "QMULTI2", "QMULTI3"} {
			m.step("mail", must(m.s.Mail("x@sender.test", "")))
			m.step("rcpt", must(m.s.Rcpt("u@example.com", "")))
			if _, act := m.message(qid, plainHeaders, "hi\r\n"); act.Type != milter.ActionAccept {
				t.Fatalf("message %d: %v", i, act)
			}
			r := next()
			if r.QueueID != qid || r.Action != "accept" || r.Helo != "client.sender.test" {
				t.Errorf("message %d: row %+v", i, r)
			}
		}
		// Refused before the MTA assigned a new queue id: the row has
		// none, not the previous message's. (The client still holds the
		// old i macro, as an MTA might; mxguard asks for i only from MAIL on.)
		m.macros.Set(milter.MacroQueueId, "")
		m.refused("mail 4", must(m.s.Mail("ceo@example.net", "")), "550 5.7.1 SpoofedSender")
		if r := next(); r.QueueID != "" || r.Reason != "SpoofedSender" {
			t.Errorf("refused 4th transaction: queue id %q reason %q; want none, SpoofedSender", r.QueueID, r.Reason)
		}
	})

	t.Run("connection without MAIL FROM", func(t *testing.T) {
		m := d.connect(t, "192.0.2.77")
		m.step("helo", must(m.s.Helo("scanner.test")))
		m.s.Close()
		r := next()
		wantRow(t, r, "aborted", "NoTransaction", "")
		if r.ClientIP != "192.0.2.77" || r.Helo != "scanner.test" || r.MailFrom != "" {
			t.Errorf("row = %+v", r)
		}
	})

	t.Run("blocked network refused at connect", func(t *testing.T) {
		macros := milter.NewMacroBag()
		s, err := milter.NewClient(d.network(), d.addr).Session(macros)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		a, err := s.Conn("bad.test", milter.FamilyInet, 1, "198.51.100.9")
		if err != nil || !a.StopProcessing() || !strings.HasPrefix(a.SMTPReply, "554 5.7.1 BlockedNetwork") {
			t.Fatalf("connect: %v %v", a, err)
		}
		wantRow(t, next(), "reject", "BlockedNetwork", "554 5.7.1")
	})

	t.Run("broken frames close only their connection", func(t *testing.T) {
		for name, frame := range map[string][]byte{
			"zero length":           {0, 0, 0, 0},
			"oversized":             {0x7f, 0xff, 0xff, 0xff},
			"CONNECT without a NUL": append([]byte{0, 0, 0, 5}, "Chost"...),
		} {
			c, err := net.Dial("tcp", d.addr)
			if err != nil {
				t.Fatal(err)
			}
			if name == "CONNECT without a NUL" {
				c.Write(optneg())
				readFrame(c)
			}
			c.Write(frame)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.Copy(io.Discard, c); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("%s: connection still open", name)
			}
			c.Close()
		}
		// The daemon lives on and serves the next client.
		m := d.connect(t, "192.0.2.1")
		m.step("mail", must(m.s.Mail("x@sender.test", "")))
		m.s.Close()
		next()
		if !strings.Contains(d.log(), "bad frame") {
			t.Error("no log line about the bad frames")
		}
	})

	d.stop()
}

// optneg is the MTA's option negotiation frame (protocol version 6).
func optneg() []byte {
	b := []byte{0, 0, 0, 13, 'O', 0, 0, 0, 6, 0, 0, 0x01, 0xff, 0, 0x1f, 0xff, 0xff}
	return b
}

func readFrame(c net.Conn) []byte {
	var hdr [4]byte
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil
	}
	buf := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	n, _ := io.ReadFull(c, buf)
	return buf[:n]
}

// TestGracefulShutdown: on SIGTERM the daemon stops accepting, lets a
// running session finish its message, closes a session still open at
// shutdown_timeout (logging its transaction as aborted), and exits 0.
func TestGracefulShutdown(t *testing.T) {
	d := startDaemon(t, "listen = \"inet:127.0.0.1:0\"\nshutdown_timeout = \"2s\"", "")
	busy := d.connect(t, "192.0.2.1")
	busy.step("mail", must(busy.s.Mail("x@sender.test", "")))
	busy.step("rcpt", must(busy.s.Rcpt("u@example.com", "")))
	hung := d.connect(t, "192.0.2.1")
	hung.step("mail", must(hung.s.Mail("y@sender.test", "")))

	start := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(d.log(), "shutting down") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := net.DialTimeout("tcp", d.addr, time.Second); err == nil {
		t.Error("still accepting connections after SIGTERM")
	}
	if _, act := busy.message("QLATE1", plainHeaders, "hi\r\n"); act.Type != milter.ActionAccept {
		t.Errorf("message finished during shutdown: %v", act)
	}
	busy.s.Close()
	select {
	case err := <-d.exited:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit")
	}
	if took := time.Since(start); took < 2*time.Second || took > 10*time.Second {
		t.Errorf("shutdown took %v; want about shutdown_timeout (2s)", took)
	}
	byQueue := map[string]logstore.Record{}
	var aborted []logstore.Record
	for _, r := range d.rows() {
		byQueue[r.QueueID] = r
		if r.Action == "aborted" {
			aborted = append(aborted, r)
		}
	}
	if byQueue["QLATE1"].Action != "accept" {
		t.Errorf("message finished during shutdown not logged as accepted: %+v", byQueue["QLATE1"])
	}
	if len(aborted) != 1 || aborted[0].MailFrom != "y@sender.test" {
		t.Errorf("aborted rows %+v; want the hung session's transaction", aborted)
	}
}

// TestUnixSocket: the daemon listens on a unix socket, replacing a stale one.
func TestUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "mxguard.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // leaves a stale socket file, as a crashed daemon would
	d := startDaemon(t, fmt.Sprintf("listen = %q\nsocket_mode = \"0600\"", "unix:"+sock), "")
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: %v %v", fi.Mode(), err)
	}
	m := d.connect(t, "192.0.2.1")
	m.step("mail", must(m.s.Mail("x@sender.test", "")))
	m.step("rcpt", must(m.s.Rcpt("u@example.com", "")))
	if _, act := m.message("QUNIX1", plainHeaders, "hi\r\n"); act.Type != milter.ActionAccept {
		t.Errorf("eom: %v", act)
	}
	m.s.Close()
	d.stop()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind after a clean stop: %v", err)
	}
}
