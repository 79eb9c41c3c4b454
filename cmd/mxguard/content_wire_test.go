package main

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/mxguard/mxguard/internal/enginetest"
	"github.com/mxguard/mxguard/logstore"
)

// eicar is the EICAR test file, assembled here so this source file does
// not look like a virus to a scanner.
var eicar = `X5O!P%@AP[4\PZX54(P^)7CC)7}$` + `EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

// gtube is SpamAssassin's and rspamd's spam test string.
var gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*" + "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

// mimeMessage builds headers and a multipart body with one attachment.
func mimeMessage(subject, filename string, content []byte) ([][2]string, string) {
	headers := [][2]string{
		{"From", " Sender <x@sender.test>"},
		{"To", " u@example.com"},
		{"Subject", " " + subject},
		{"Message-Id", " <" + strings.ReplaceAll(subject, " ", "-") + "@sender.test>"},
		{"MIME-Version", " 1.0"},
		{"Content-Type", " multipart/mixed; boundary=\"b1\""},
	}
	body := "--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n" +
		"--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"" + filename + "\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString(content) + "\r\n--b1--\r\n"
	return headers, body
}

// evidence returns the row's evidence of check.
func evidence(r logstore.Record, check string) (logstore.Evidence, bool) {
	for _, e := range r.Evidence {
		if e.Check == check {
			return e, true
		}
	}
	return logstore.Evidence{}, false
}

// inbound opens a session from an outside client with SPF pass for x@sender.test to rcpt.
func inbound(t *testing.T, d *daemon, rcpt string) *mta {
	t.Helper()
	m := d.connect(t, "192.0.2.1")
	m.step("mail", must(m.s.Mail("x@sender.test", "")))
	m.step("rcpt", must(m.s.Rcpt(rcpt, "")))
	return m
}

func TestWireVirus(t *testing.T) {
	d := startDaemon(t, tcpListen, fmt.Sprintf(`
[virus]
engine = "clamd"
address = %q
timeout = "10s"
max_size = "64KB"
`, enginetest.Clamd(t)))
	rows := 0
	next := func() logstore.Record { rows++; return d.lastRow(rows) }

	t.Run("clean", func(t *testing.T) {
		m := inbound(t, d, "u@example.com")
		mods, act := m.message("QVCLEAN", plainHeaders, "nothing to see\r\n")
		if act.Type != milter.ActionAccept {
			t.Fatalf("eom %v %q", act, act.SMTPReply)
		}
		if v, ok := headerValue(mods, "X-Virus-Scanned"); !ok || !strings.Contains(v, "clean") {
			t.Errorf("X-Virus-Scanned %q", v)
		}
		r := next()
		wantRow(t, r, "accept", "", "")
		if ev, _ := evidence(r, "virus"); ev.Result != "clean" {
			t.Errorf("virus evidence %+v", ev)
		}
	})
	t.Run("EICAR attached", func(t *testing.T) {
		m := inbound(t, d, "u@example.com")
		h, b := mimeMessage("invoice", "invoice.txt", []byte(eicar))
		_, act := m.message("QVEICAR", h, b)
		if act.Type != milter.ActionRejectWithCode || !strings.HasPrefix(act.SMTPReply, "554 5.7.1 Virus: message contains a virus (Eicar") {
			t.Fatalf("eom %v %q", act, act.SMTPReply)
		}
		r := next()
		wantRow(t, r, "reject", "Virus", "554 5.7.1 Virus")
		if ev, _ := evidence(r, "virus"); ev.Result != "infected" || !strings.HasPrefix(ev.Detail, "Eicar") {
			t.Errorf("virus evidence %+v", ev)
		}
		if !strings.HasPrefix(r.Virus, "Eicar") {
			t.Errorf("virus column %q", r.Virus)
		}
	})
	t.Run("EICAR nested in a forwarded message", func(t *testing.T) {
		m := inbound(t, d, "u@example.com")
		inner := "From: a@b.test\r\nSubject: fwd\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"in\"\r\n\r\n" +
			"--in\r\nContent-Type: text/plain\r\n\r\nhi\r\n--in\r\nContent-Type: application/octet-stream; name=\"e.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			base64.StdEncoding.EncodeToString([]byte(eicar)) + "\r\n--in--\r\n"
		h := append([][2]string(nil), plainHeaders...)
		h = append(h, [2]string{"MIME-Version", " 1.0"}, [2]string{"Content-Type", " multipart/mixed; boundary=\"out\""})
		body := "--out\r\nContent-Type: text/plain\r\n\r\nforwarded\r\n--out\r\nContent-Type: message/rfc822\r\n\r\n" + inner + "\r\n--out--\r\n"
		_, act := m.message("QVNEST", h, body)
		if act.Type != milter.ActionRejectWithCode || !strings.Contains(act.SMTPReply, "Virus") {
			t.Fatalf("eom %v %q", act, act.SMTPReply)
		}
		wantRow(t, next(), "reject", "Virus", "554 5.7.1")
	})
	t.Run("over max_size is not sent", func(t *testing.T) {
		m := inbound(t, d, "u@example.com")
		_, act := m.message("QVBIG", plainHeaders, strings.Repeat("0123456789abcdef\r\n", 5000))
		if act.Type != milter.ActionAccept {
			t.Fatalf("eom %v %q", act, act.SMTPReply)
		}
		r := next()
		if ev, _ := evidence(r, "virus"); ev.Result != "skipped" || !strings.Contains(ev.Detail, "too large") {
			t.Errorf("virus evidence %+v", ev)
		}
	})
	t.Run("outbound virus is refused and logged against the user", func(t *testing.T) {
		m := d.connect(t, "192.0.2.50")
		m.macros.Set(milter.MacroAuthAuthen, "alice")
		m.macros.Set(milter.MacroAuthType, "PLAIN")
		m.step("mail", must(m.s.Mail("alice@example.com", "")))
		m.step("rcpt", must(m.s.Rcpt("friend@elsewhere.test", "")))
		h, b := mimeMessage("out", "e.txt", []byte(eicar))
		h[0] = [2]string{"From", " Alice <alice@example.com>"}
		_, act := m.message("QVOUT", h, b)
		if act.Type != milter.ActionRejectWithCode || !strings.HasPrefix(act.SMTPReply, "554 5.7.1 Virus") {
			t.Fatalf("eom %v %q", act, act.SMTPReply)
		}
		r := next()
		wantRow(t, r, "reject", "Virus", "554 5.7.1")
		if r.AuthUser != "alice" || r.Direction != "outbound" {
			t.Errorf("row auth_user %q direction %q", r.AuthUser, r.Direction)
		}
	})
}

// spamConfig is a spam engine with three organisations that differ only
// in what they do with spam.
func spamConfig(engine, address string) string {
	return fmt.Sprintf(`
[spam]
engine = %q
address = %q
timeout = "15s"
[senders]
safe = ["friend@trusted.test"]
blocked = ["spammer@bad.test"]
[[organization]]
name = "lenient"
domains = ["lenient.test"]
[organization.spam]
reject_score = 0.0
[[organization]]
name = "tagger"
domains = ["tagger.test"]
[organization.spam]
quarantine_score = 0.0
reject_score = 0.0
subject_tag = "[SPAM]"
[[organization.user]]
address = "boss@tagger.test"
blocked = ["@sender.test"]
`, engine, address)
}

func TestWireSpam(t *testing.T) {
	for _, engine := range []struct{ name, addr string }{
		{"spamd", enginetest.Spamd(t)},
		{"rspamd", enginetest.Rspamd(t)},
	} {
		t.Run(engine.name, func(t *testing.T) {
			d := startDaemon(t, tcpListen, spamConfig(engine.name, engine.addr))
			d.dns.Set(testZone + "trusted.test. IN TXT \"v=spf1 ip4:192.0.2.1 -all\"\n")
			rows := 0
			next := func() logstore.Record { rows++; return d.lastRow(rows) }
			gtubeBody := "This is spam.\r\n" + gtube + "\r\n"
			spammy := append([][2]string{{"X-Spam-Flag", " NO"}}, plainHeaders...)

			t.Run("GTUBE over the reject score", func(t *testing.T) {
				m := inbound(t, d, "u@example.com")
				_, act := m.message("QSREJ", spammy, gtubeBody)
				if act.Type != milter.ActionRejectWithCode || !strings.HasPrefix(act.SMTPReply, "550 5.7.1 SpamReject: message scored") {
					t.Fatalf("eom %v %q", act, act.SMTPReply)
				}
				r := next()
				wantRow(t, r, "reject", "SpamReject", "550 5.7.1")
				if ev, _ := evidence(r, "spam"); ev.Result != "spam" || !strings.Contains(ev.Detail, "GTUBE") {
					t.Errorf("spam evidence %+v", ev)
				}
				if r.SpamScore == nil || *r.SpamScore < 15 {
					t.Errorf("spam_score column %v", r.SpamScore)
				}
				// spamd saw the Received field the MTA is going to add.
				if ev, _ := evidence(r, "spam"); strings.Contains(ev.Detail, "NO_RECEIVED") {
					t.Errorf("spamd scored the message without its Received field: %s", ev.Detail)
				}
			})
			t.Run("quarantined where reject is off", func(t *testing.T) {
				m := inbound(t, d, "u@lenient.test")
				mods, act := m.message("QSQUAR", spammy, gtubeBody)
				if act.Type != milter.ActionAccept {
					t.Fatalf("eom %v %q", act, act.SMTPReply)
				}
				quarantined := false
				for _, mod := range mods {
					quarantined = quarantined || mod.Type == milter.ActionQuarantine
				}
				if !quarantined {
					t.Errorf("not quarantined: %+v", mods)
				}
				wantRow(t, next(), "quarantine", "SpamQuarantine", "")
			})
			t.Run("tagged with headers and subject", func(t *testing.T) {
				m := inbound(t, d, "u@tagger.test")
				mods, act := m.message("QSTAG", spammy, gtubeBody)
				if act.Type != milter.ActionAccept {
					t.Fatalf("eom %v %q", act, act.SMTPReply)
				}
				if v, _ := headerValue(mods, "X-Spam-Flag"); v != " YES" {
					t.Errorf("X-Spam-Flag %q", v)
				}
				if v, _ := headerValue(mods, "X-Spam-Status"); !strings.HasPrefix(v, " Yes, score=") {
					t.Errorf("X-Spam-Status %q", v)
				}
				var subject string
				deletedFlag := false
				for _, mod := range mods {
					if mod.Type == milter.ActionChangeHeader && mod.HeaderName == "Subject" {
						subject = mod.HeaderValue
					}
					if mod.Type == milter.ActionChangeHeader && mod.HeaderName == "X-Spam-Flag" && mod.HeaderValue == "" {
						deletedFlag = true
					}
				}
				if subject != " [SPAM] hello" {
					t.Errorf("subject changed to %q", subject)
				}
				if !deletedFlag {
					t.Error("the incoming X-Spam-Flag was not removed")
				}
				r := next()
				wantRow(t, r, "tag", "SpamTag", "")
				if len(r.HeadersAdded) < 3 {
					t.Errorf("headers added %q", r.HeadersAdded)
				}
			})
			t.Run("ham", func(t *testing.T) {
				m := inbound(t, d, "u@example.com")
				mods, act := m.message("QSHAM", plainHeaders, "Lunch on Tuesday at noon?\r\n")
				if act.Type != milter.ActionAccept {
					t.Fatalf("eom %v %q", act, act.SMTPReply)
				}
				if v, _ := headerValue(mods, "X-Spam-Status"); !strings.HasPrefix(v, " No, score=") {
					t.Errorf("X-Spam-Status %q", v)
				}
				wantRow(t, next(), "accept", "", "")
			})
			t.Run("safe sender skips the spam verdict", func(t *testing.T) {
				m := d.connect(t, "192.0.2.1")
				m.step("mail", must(m.s.Mail("friend@trusted.test", "")))
				m.step("rcpt", must(m.s.Rcpt("u@example.com", "")))
				_, act := m.message("QSSAFE", plainHeaders, gtubeBody)
				if act.Type != milter.ActionAccept {
					t.Fatalf("eom %v %q", act, act.SMTPReply)
				}
				r := next()
				if ev, _ := evidence(r, "spam"); ev.Result != "skipped" || !strings.Contains(ev.Detail, "safe sender") {
					t.Errorf("spam evidence %+v", ev)
				}
			})
			t.Run("blocked senders refused at RCPT", func(t *testing.T) {
				m := d.connect(t, "192.0.2.1")
				m.step("mail", must(m.s.Mail("x@sender.test", "")))
				m.refused("rcpt", must(m.s.Rcpt("boss@tagger.test", "")), "550 5.7.1 BlockedSender")
				m.step("rcpt", must(m.s.Rcpt("u@tagger.test", "")))
				_, act := m.message("QSBLOCK", plainHeaders, "hi\r\n")
				if act.Type != milter.ActionAccept {
					t.Fatalf("eom %v %q", act, act.SMTPReply)
				}
				r := next()
				if len(r.Recipients) != 2 || r.Recipients[0].Reason != "BlockedSender" || r.Recipients[1].Action != "accept" {
					t.Errorf("recipients %+v", r.Recipients)
				}
			})
		})
	}
}

func TestWireAttachments(t *testing.T) {
	d := startDaemon(t, tcpListen, "")
	m := inbound(t, d, "u@example.com")
	h, b := mimeMessage("payroll", "payroll.pdf.exe", []byte("MZ\x90\x00 not really"))
	_, act := m.message("QATT", h, b)
	if act.Type != milter.ActionRejectWithCode || !strings.HasPrefix(act.SMTPReply, "550 5.7.1 BlockedAttachment:") || !strings.Contains(act.SMTPReply, "payroll.pdf.exe") {
		t.Fatalf("eom %v %q", act, act.SMTPReply)
	}
	r := d.lastRow(1)
	wantRow(t, r, "reject", "BlockedAttachment", "550 5.7.1")
	if ev, _ := evidence(r, "attachments"); ev.Result != "blocked" || !strings.Contains(ev.Detail, "part 2") {
		t.Errorf("attachments evidence %+v", ev)
	}
}

// faultyEngine is an engine of ours on loopback that accepts connections
// and then hangs or answers garbage.
func faultyEngine(t *testing.T, garbage bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			if garbage {
				wg.Add(1)
				go func() {
					defer wg.Done()
					bufio.NewReader(c).ReadString(0) // the command
					fmt.Fprint(c, "HTTP/1.0 418 I'm a teapot\r\n\r\n\x00")
					c.Close()
				}()
			}
		}
	}()
	return ln.Addr().String()
}

// openFiles counts the daemon's file descriptors.
func (d *daemon) openFiles() int {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
	if err != nil {
		d.t.Fatal(err)
	}
	return len(entries)
}

func TestWireEngineFaults(t *testing.T) {
	faults := []struct{ name, addr string }{
		{"engine down", enginetest.ClosedPort(t)},
		{"engine hangs", faultyEngine(t, false)},
		{"engine answers garbage", faultyEngine(t, true)},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			d := startDaemon(t, tcpListen, fmt.Sprintf(`
[virus]
engine = "clamd"
address = "inet:%s"
timeout = "1s"
[spam]
engine = "spamd"
address = "inet:%s"
timeout = "1s"
`, f.addr, f.addr))
			baseline := -1
			for i := range 3 {
				m := inbound(t, d, "u@example.com")
				_, act := m.message(fmt.Sprintf("QF%d", i), plainHeaders, "hi\r\n")
				if act.Type != milter.ActionTempFail && !(act.Type == milter.ActionRejectWithCode && strings.HasPrefix(act.SMTPReply, "451 4.3.0 VirusScanFailed")) {
					t.Fatalf("eom %v %q; want 451 4.3.0 VirusScanFailed (virus on_error tempfail)", act, act.SMTPReply)
				}
				m.s.Close()
				r := d.lastRow(i + 1)
				wantRow(t, r, "tempfail", "VirusScanFailed", "451 4.3.0")
				virus, _ := evidence(r, "virus")
				spam, _ := evidence(r, "spam")
				if virus.Error == "" || spam.Error == "" || spam.Result == "scored" {
					t.Errorf("evidence virus %+v spam %+v", virus, spam)
				}
				if i == 0 {
					time.Sleep(200 * time.Millisecond)
					baseline = d.openFiles()
				}
			}
			time.Sleep(200 * time.Millisecond)
			if n := d.openFiles(); n > baseline {
				t.Errorf("the daemon holds %d files after the faults, %d before: a leak", n, baseline)
			}
		})
	}
}
