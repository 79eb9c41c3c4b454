package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/scanners/dkim"
	"github.com/mxguard/mxguard/scanners/resolver"
)

// signingKey generates a key, writes it to dir and returns its file and
// the zone line that publishes it.
func signingKey(t *testing.T, dir, algorithm, domain, selector string) (string, string) {
	t.Helper()
	pemBytes, txt, err := dkim.GenerateKey(algorithm, 0)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, domain+"."+selector+".pem")
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, fmt.Sprintf("%s. IN TXT %s\n", dkim.RecordName(selector, domain), zoneStrings(txt))
}

// delivered applies the milter's header edits to headers as the MTA does
// and returns the message as it leaves, CRLF line ends.
func delivered(headers [][2]string, mods []milter.ModifyAction, body string) string {
	hs := append([][2]string(nil), headers...)
	nth := func(name string, n int) int {
		for i, h := range hs {
			if strings.EqualFold(h[0], name) {
				if n--; n == 0 {
					return i
				}
			}
		}
		return -1
	}
	for _, m := range mods {
		switch m.Type {
		case milter.ActionInsertHeader:
			i := min(int(m.HeaderIndex), len(hs))
			hs = append(hs[:i], append([][2]string{{m.HeaderName, m.HeaderValue}}, hs[i:]...)...)
		case milter.ActionAddHeader:
			hs = append(hs, [2]string{m.HeaderName, m.HeaderValue})
		case milter.ActionChangeHeader:
			i := nth(m.HeaderName, int(m.HeaderIndex))
			switch {
			case i < 0:
				hs = append(hs, [2]string{m.HeaderName, m.HeaderValue})
			case m.HeaderValue == "":
				hs = append(hs[:i], hs[i+1:]...)
			default:
				hs[i][1] = m.HeaderValue
			}
		}
	}
	var b strings.Builder
	for _, h := range hs {
		b.WriteString(h[0] + ":" + strings.ReplaceAll(strings.ReplaceAll(h[1], "\r\n", "\n"), "\n", "\r\n") + "\r\n")
	}
	return b.String() + "\r\n" + body
}

func TestWireDKIMAndDMARC(t *testing.T) {
	dir := t.TempDir()
	rsaFile, rsaRecord := signingKey(t, dir, "rsa", "example.com", "s1")
	edFile, edRecord := signingKey(t, dir, "ed25519", "example.net", "e1")
	bankFile, bankRecord := signingKey(t, dir, "ed25519", "bank.test", "b1")
	d := startDaemon(t, tcpListen, fmt.Sprintf(`
[[dkim.key]]
domain = "example.com"
selector = "s1"
key_file = %q
[[dkim.key]]
domain = "example.net"
selector = "e1"
key_file = %q
[[organization]]
name = "soft"
domains = ["soft.test"]
[organization.dmarc]
reject = "quarantine"
`, rsaFile, edFile))
	zone := testZone + rsaRecord + edRecord + bankRecord + `
bank.test.        IN TXT "v=spf1 -all"
_dmarc.bank.test. IN TXT "v=DMARC1; p=reject"
_dmarc.sender.test. IN TXT "v=DMARC1; p=none"
;! servfail _dmarc.broken.test.
`
	if err := d.dns.Set(zone); err != nil {
		t.Fatal(err)
	}
	res, err := resolver.New(resolver.Config{Server: d.dns.Addr(), Timeout: time.Second, CacheSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	rows := 0
	next := func() logstore.Record { rows++; return d.lastRow(rows) }

	for _, tc := range []struct{ from, domain string }{{"alice@example.com", "example.com"}, {"bob@example.net", "example.net"}} {
		t.Run("our user's mail is signed: "+tc.domain, func(t *testing.T) {
			m := d.connect(t, "127.0.0.1")
			m.step("mail", must(m.s.Mail(tc.from, "")))
			m.step("rcpt", must(m.s.Rcpt("friend@elsewhere.test", "")))
			headers := [][2]string{{"Received", " from client by mta.example.com"}, {"From", " <" + tc.from + ">"}, {"To", " friend@elsewhere.test"},
				{"Subject", " quarterly report"}, {"Date", " Mon, 23 Nov 2026 06:00:00 +0000"}, {"Message-Id", " <r1@" + tc.domain + ">"}}
			body := "The figures are attached.\r\n\r\n\r\n"
			mods, act := m.message("QSIGN"+tc.domain, headers, body)
			if act.Type != milter.ActionAccept {
				t.Fatalf("eom %v %q", act, act.SMTPReply)
			}
			sig, ok := headerValue(mods, "DKIM-Signature")
			if !ok || !strings.Contains(sig, "d="+tc.domain) {
				t.Fatalf("no DKIM-Signature for %s in %+v", tc.domain, mods)
			}
			out := delivered(headers, mods, body)
			sigs, err := dkim.Verify(context.Background(), res, strings.NewReader(out))
			if err != nil || len(sigs) != 1 || sigs[0].Result != dkim.Pass {
				t.Fatalf("our signature does not verify: %+v %v\n%s", sigs, err, out)
			}
			// A From added after signing breaks it: From is oversigned.
			forged := "From: <ceo@" + tc.domain + ">\r\n" + out
			if sigs, _ := dkim.Verify(context.Background(), res, strings.NewReader(forged)); sigs[0].Result == dkim.Pass {
				t.Error("a second From did not break the signature")
			}
			r := next()
			if ev, _ := evidence(r, "dkim_sign"); ev.Result != "signed" || !strings.Contains(ev.Detail, "d="+tc.domain) {
				t.Errorf("dkim_sign evidence %+v", ev)
			}
		})
	}

	spoof := [][2]string{{"From", " The Bank <ceo@bank.test>"}, {"To", " u@example.com"}, {"Subject", " urgent wire transfer"}, {"Message-Id", " <s1@bank.test>"}}
	t.Run("spoofing a p=reject domain is rejected", func(t *testing.T) {
		m := inbound(t, d, "u@example.com")
		_, act := m.message("QSPOOF", spoof, "pay now\r\n")
		if act.Type != milter.ActionRejectWithCode || !strings.HasPrefix(act.SMTPReply, "550 5.7.1 DMARCReject: bank.test does not pass DMARC") {
			t.Fatalf("eom %v %q", act, act.SMTPReply)
		}
		r := next()
		wantRow(t, r, "reject", "DMARCReject", "550 5.7.1")
		ev, _ := evidence(r, "dmarc")
		if ev.Result != "fail" || !strings.Contains(ev.Detail, "header.from=bank.test p=reject") || !strings.Contains(ev.Detail, "applied: reject") {
			t.Errorf("dmarc evidence %+v", ev)
		}
		if r.DMARC != "fail p=reject" || r.DKIM != "none" {
			t.Errorf("dmarc column %q, dkim column %q", r.DMARC, r.DKIM)
		}
	})
	t.Run("an organisation may quarantine instead", func(t *testing.T) {
		m := inbound(t, d, "u@soft.test")
		mods, act := m.message("QSOFT", spoof, "pay now\r\n")
		if act.Type != milter.ActionAccept {
			t.Fatalf("eom %v %q", act, act.SMTPReply)
		}
		if ar, _ := headerValue(mods, "Authentication-Results"); !strings.Contains(ar, "dmarc=fail") || !strings.Contains(ar, "header.from=bank.test") || !strings.Contains(ar, "policy.dmarc=reject") {
			t.Errorf("Authentication-Results %q", ar)
		}
		// The reason is the domain's policy; the action is the organisation's.
		wantRow(t, next(), "quarantine", "DMARCReject", "")
	})
	t.Run("signed mail from the domain passes", func(t *testing.T) {
		key, err := dkim.LoadKey("bank.test", "b1", bankFile)
		if err != nil {
			t.Fatal(err)
		}
		body := "Your statement is ready.\r\n"
		raw := delivered(spoof, nil, body)
		sig, err := dkim.Sign(key, strings.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		headers := append([][2]string{{"DKIM-Signature", " " + sig}}, spoof...)
		m := inbound(t, d, "u@example.com")
		mods, act := m.message("QBANK", headers, body)
		if act.Type != milter.ActionAccept {
			t.Fatalf("eom %v %q", act, act.SMTPReply)
		}
		ar, _ := headerValue(mods, "Authentication-Results")
		for _, want := range []string{"spf=pass", "dkim=pass", "header.d=bank.test", "header.s=b1", "header.b=", "dmarc=pass"} {
			if !strings.Contains(ar, want) {
				t.Errorf("Authentication-Results lacks %q: %q", want, ar)
			}
		}
		r := next()
		wantRow(t, r, "accept", "", "")
		if ev, _ := evidence(r, "dkim"); ev.Result != "pass" || !strings.Contains(ev.Detail, "d=bank.test s=b1 pass") {
			t.Errorf("dkim evidence %+v", ev)
		}
		if r.DKIM != "pass bank.test" || r.DMARC != "pass p=reject" {
			t.Errorf("dkim column %q, dmarc column %q", r.DKIM, r.DMARC)
		}
	})
	t.Run("several From fields are refused", func(t *testing.T) {
		m := inbound(t, d, "u@example.com")
		headers := append([][2]string{{"From", " x@sender.test"}}, spoof...)
		_, act := m.message("QTWOFROM", headers, "hi\r\n")
		if act.Type != milter.ActionRejectWithCode || !strings.HasPrefix(act.SMTPReply, "550 5.7.1 FromHeaderInvalid") {
			t.Fatalf("eom %v %q", act, act.SMTPReply)
		}
		wantRow(t, next(), "reject", "FromHeaderInvalid", "550 5.7.1")
	})
	t.Run("DNS trouble fetching the policy tempfails", func(t *testing.T) {
		m := inbound(t, d, "u@example.com")
		headers := [][2]string{{"From", " <ceo@broken.test>"}, {"To", " u@example.com"}, {"Subject", " hi"}}
		_, act := m.message("QTEMP", headers, "hi\r\n")
		if !strings.HasPrefix(act.SMTPReply, "451 4.7.5 DMARCTempError") {
			t.Fatalf("eom %v %q", act, act.SMTPReply)
		}
		wantRow(t, next(), "tempfail", "DMARCTempError", "451 4.7.5")
	})
}
