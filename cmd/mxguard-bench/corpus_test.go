package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testdns"
	"github.com/mxguard/mxguard/scanners/dkim"
	"github.com/mxguard/mxguard/scanners/resolver"
)

var update = flag.Bool("update", false, "rewrite testdata/bench with what the generator makes")

// corpusDir is the benchmark corpus, at the top of the repository.
const corpusDir = "../../testdata/bench"

// The corpus's sender: its domain publishes SPF for the client address
// mxguard-bench uses by default, a DKIM key and DMARC p=reject.
const (
	newsDomain   = "news.bench.test"
	newsSelector = "b1"
	benchDate    = "Mon, 23 Nov 2026 06:00:00 +0000"
)

// TestCorpus checks that testdata/bench is what corpus makes from
// testdata/bench/dkim.pem; with -update it writes the files that differ
// (and a new key if there is none). The DKIM signature's t= and b= change
// at every signing and are left out of the comparison, so -update leaves
// a file alone when only they would change.
func TestCorpus(t *testing.T) {
	pemPath := filepath.Join(corpusDir, "dkim.pem")
	if _, err := os.Stat(pemPath); errors.Is(err, fs.ErrNotExist) && *update {
		pem, _, err := dkim.GenerateKey("rsa", 2048)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(corpusDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(pemPath, pem, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	key, err := dkim.LoadKey(newsDomain, newsSelector, pemPath)
	if err != nil {
		t.Fatal(err)
	}
	files, err := corpus(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		path := filepath.Join(corpusDir, name)
		got, err := os.ReadFile(path)
		same := err == nil && bytes.Equal(withoutSignatureValues(got), withoutSignatureValues(want))
		switch {
		case same:
		case *update:
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s", path)
		case err != nil:
			t.Errorf("%v; go test ./cmd/mxguard-bench -run TestCorpus -update writes it", err)
		default:
			t.Errorf("%s is not what the generator makes; go test ./cmd/mxguard-bench -run TestCorpus -update rewrites it", path)
		}
	}
}

// TestCorpusSizes keeps the files at the sizes their names promise.
func TestCorpusSizes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		min, max int
	}{
		{"plain-2k.eml", 1900, 2200},
		{"newsletter-30k.eml", 29000, 32000},
		{"attachment-1m.eml", 1 << 20, 3 << 19},
	} {
		fi, err := os.Stat(filepath.Join(corpusDir, tc.name))
		if err != nil {
			t.Fatal(err)
		}
		if n := int(fi.Size()); n < tc.min || n > tc.max {
			t.Errorf("%s: %d bytes, want %d to %d", tc.name, n, tc.min, tc.max)
		}
	}
}

// TestNewsletterVerifies checks the committed newsletter's signature with
// mxguard's DKIM verifier, the key looked up in zone.txt over DNS.
func TestNewsletterVerifies(t *testing.T) {
	dns, err := testdns.StartFile(filepath.Join(corpusDir, "zone.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	res, err := resolver.New(resolver.Config{Server: dns.Addr(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := os.ReadFile(filepath.Join(corpusDir, "newsletter-30k.eml"))
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := dkim.Verify(context.Background(), res, bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) != 1 {
		t.Fatalf("%d signatures, want 1", len(sigs))
	}
	s := sigs[0]
	if s.Result != dkim.Pass || s.Domain != newsDomain || s.Selector != newsSelector || s.Algorithm != "rsa-sha256" {
		t.Errorf("signature: %s d=%s s=%s a=%s (%v), want pass d=%s s=%s a=rsa-sha256",
			s.Result, s.Domain, s.Selector, s.Algorithm, s.Err, newsDomain, newsSelector)
	}
	if n := dns.Queries(dkim.RecordName(newsSelector, newsDomain), 16 /* TXT */); n == 0 {
		t.Error("the key was not looked up in the zone")
	}
}

// corpus makes the files of testdata/bench, dkim.pem aside.
func corpus(key *dkim.Key) (map[string][]byte, error) {
	news, err := newsletter(key)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		"plain-2k.eml":       []byte(plainMessage()),
		"newsletter-30k.eml": []byte(news),
		"attachment-1m.eml":  []byte(attachmentMessage()),
		"zone.txt":           []byte(zoneText(key)),
	}, nil
}

// crlf joins lines into CRLF text, ending with a line end.
func crlf(lines ...string) string { return strings.Join(lines, "\r\n") + "\r\n" }

var sentences = []string{
	"The quarterly figures came in slightly above the forecast, mostly thanks to the autumn orders.",
	"Maintenance of the northern warehouse is planned for the first week of December.",
	"Please send your holiday requests to the office before the end of the month.",
	"The new coffee machine on the second floor takes cards as well as coins.",
	"Our support team answered nine out of ten tickets within a working day.",
	"A short survey about the intranet will reach your inbox next Tuesday.",
	"Thanks to everyone who helped with the move; the last boxes are unpacked.",
	"The parking garage closes at ten in the evening from now on.",
}

// plainMessage is a plain-text message of about 2 KB.
func plainMessage() string {
	lines := []string{
		"From: Ann Example <ann@news.bench.test>",
		"To: Someone <someone@bench.test>",
		"Subject: Notes from the Monday meeting",
		"Date: " + benchDate,
		"Message-ID: <plain-2k.20261123060000@news.bench.test>",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
		"Content-Transfer-Encoding: 7bit",
		"",
		"Hello everyone,",
		"",
		"here are the notes from Monday's meeting.",
		"",
	}
	size := len(crlf(lines...))
	for i := 0; size < 1900; i++ {
		s := fmt.Sprintf("%d. %s", i+1, sentences[i%len(sentences)])
		lines = append(lines, s)
		size += len(s) + 2
	}
	lines = append(lines, "", "Best regards,", "Ann")
	return crlf(lines...)
}

// newsletter is a multipart/alternative HTML newsletter of about 30 KB,
// signed by key.
func newsletter(key *dkim.Key) (string, error) {
	const boundary = "=_bench_news_2026_47"
	var text, html strings.Builder
	html.WriteString("<!DOCTYPE html>\r\n<html><head><meta charset=\"utf-8\"><title>Bench News, week 47</title></head>\r\n")
	html.WriteString("<body style=\"font-family: sans-serif; max-width: 40em; margin: auto\">\r\n<h1>Bench News</h1>\r\n")
	text.WriteString("BENCH NEWS, week 47\r\n\r\n")
	for i := 0; text.Len()+html.Len() < 28000; i++ {
		title := fmt.Sprintf("Story %d: %s", i+1, strings.TrimSuffix(sentences[i%len(sentences)], "."))
		fmt.Fprintf(&html, "<h2><a href=\"https://news.bench.test/2026/47/story-%d\">%s</a></h2>\r\n<p>", i+1, title)
		fmt.Fprintf(&text, "%s\r\n", title)
		for j := range 4 {
			s := sentences[(i+j+1)%len(sentences)]
			fmt.Fprintf(&html, "%s\r\n", s)
			fmt.Fprintf(&text, "%s\r\n", s)
		}
		fmt.Fprintf(&html, "</p>\r\n<p><a href=\"https://news.bench.test/2026/47/story-%d\" style=\"color: #0645ad\">Read more</a></p>\r\n", i+1)
		fmt.Fprintf(&text, "Read more: https://news.bench.test/2026/47/story-%d\r\n\r\n", i+1)
	}
	html.WriteString("<p style=\"font-size: small\"><a href=\"https://news.bench.test/unsubscribe?u=someone\">Unsubscribe</a></p>\r\n</body></html>\r\n")
	text.WriteString("Unsubscribe: https://news.bench.test/unsubscribe?u=someone\r\n")

	msg := crlf(
		"From: Bench News <news@news.bench.test>",
		"To: someone@bench.test",
		"Subject: Bench News, week 47",
		"Date: "+benchDate,
		"Message-ID: <newsletter-30k.20261123060000@news.bench.test>",
		"List-Id: Bench News <weekly.news.bench.test>",
		"List-Unsubscribe: <https://news.bench.test/unsubscribe?u=someone>,",
		" <mailto:unsubscribe@news.bench.test?subject=unsubscribe>",
		"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
		"MIME-Version: 1.0",
		"Content-Type: multipart/alternative;",
		"\tboundary=\""+boundary+"\"",
		"",
		"--"+boundary,
		"Content-Type: text/plain; charset=utf-8",
		"Content-Transfer-Encoding: 7bit",
		"",
	) + text.String() + crlf(
		"--"+boundary,
		"Content-Type: text/html; charset=utf-8",
		"Content-Transfer-Encoding: 7bit",
		"",
	) + html.String() + crlf("--"+boundary+"--")
	sig, err := dkim.Sign(key, strings.NewReader(msg))
	if err != nil {
		return "", err
	}
	return "DKIM-Signature: " + sig + "\r\n" + msg, nil
}

// attachmentMessage is a message with a 1 MiB PDF-like attachment made of
// bytes from a fixed seed.
func attachmentMessage() string {
	const boundary = "=_bench_attachment_1"
	pdf := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(2026, 11))
	for i := 0; i < len(pdf); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			pdf[i+j] = byte(v >> (8 * j))
		}
	}
	copy(pdf, "%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
	copy(pdf[len(pdf)-7:], "\n%%EOF\n")
	enc := base64.StdEncoding.EncodeToString(pdf)
	var b strings.Builder
	b.WriteString(crlf(
		"From: Ann Example <ann@news.bench.test>",
		"To: Someone <someone@bench.test>",
		"Subject: The annual report",
		"Date: "+benchDate,
		"Message-ID: <attachment-1m.20261123060000@news.bench.test>",
		"MIME-Version: 1.0",
		"Content-Type: multipart/mixed; boundary=\""+boundary+"\"",
		"",
		"--"+boundary,
		"Content-Type: text/plain; charset=utf-8",
		"",
		"Hello,",
		"",
		"the annual report is attached.",
		"",
		"Ann",
		"",
		"--"+boundary,
		"Content-Type: application/pdf; name=\"annual-report-2026.pdf\"",
		"Content-Disposition: attachment; filename=\"annual-report-2026.pdf\"",
		"Content-Transfer-Encoding: base64",
		"",
	))
	for len(enc) > 0 {
		n := min(76, len(enc))
		b.WriteString(enc[:n] + "\r\n")
		enc = enc[n:]
	}
	b.WriteString(crlf("--" + boundary + "--"))
	return b.String()
}

// zoneText is the DNS of the corpus: the sending MTA, SPF for it, the
// DKIM key of key and DMARC p=reject.
func zoneText(key *dkim.Key) string {
	record := dkim.Record(key.Signer.Public())
	// A TXT string holds at most 255 bytes (RFC 1035 section 3.3.14): the
	// RSA record is split, and the strings are joined again (RFC 6376
	// section 3.6.2.2).
	var strs []string
	for len(record) > 0 {
		n := min(255, len(record))
		strs = append(strs, `"`+record[:n]+`"`)
		record = record[n:]
	}
	return fmt.Sprintf(`; The DNS of the benchmark corpus, for internal/testdns and mxguard-testdns:
;   go run ./cmd/mxguard-testdns -zone testdata/bench/zone.txt
; Generated with the messages by go test ./cmd/mxguard-bench -run TestCorpus -update.
$TTL 3600
bench.test.              SOA ns.bench.test. hostmaster.bench.test. 1 3600 600 86400 60
2.0.192.in-addr.arpa.    SOA ns.bench.test. hostmaster.bench.test. 1 3600 600 86400 60

; The sending MTA, mxguard-bench's default client: forward and reverse.
mta.news.bench.test.     A   192.0.2.10
10.2.0.192.in-addr.arpa. PTR mta.news.bench.test.

; SPF allows only that client.
news.bench.test.         TXT "v=spf1 ip4:192.0.2.10 -all"

; DKIM: the key of testdata/bench/dkim.pem (RSA 2048 bits), selector %s.
%s. TXT %s

; DMARC: refuse what fails.
_dmarc.news.bench.test.  TXT "v=DMARC1; p=reject"
`, newsSelector, dkim.RecordName(newsSelector, newsDomain), strings.Join(strs, " "))
}

// withoutSignatureValues returns msg with the t= and b= values of its
// DKIM-Signature field taken out (they change at every signing), the
// field unfolded.
func withoutSignatureValues(msg []byte) []byte {
	const name = "DKIM-Signature:"
	if !bytes.HasPrefix(msg, []byte(name)) {
		return msg
	}
	// The field: its first line and the continuation lines.
	end := 0
	for {
		i := bytes.Index(msg[end:], []byte("\r\n"))
		if i < 0 {
			return msg
		}
		end += i + 2
		if end >= len(msg) || (msg[end] != ' ' && msg[end] != '\t') {
			break
		}
	}
	value := strings.Join(strings.Fields(string(msg[len(name):end])), "")
	tags := strings.Split(value, ";")
	for i, tag := range tags {
		if strings.HasPrefix(tag, "t=") || strings.HasPrefix(tag, "b=") {
			tags[i] = tag[:2] + "*"
		}
	}
	return append([]byte(name+strings.Join(tags, ";")+"\r\n"), msg[end:]...)
}
