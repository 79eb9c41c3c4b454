package dkim

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testdns"
	"github.com/mxguard/mxguard/scanners/resolver"
)

// Golden cases live in testdata as NN-name.msg (the raw message),
// NN-name.dns (the zone testdns serves while it is verified) and
// NN-name.result (the expected signatures, one line each, in header
// order):
//
//	d=<domain> s=<selector> a=<algorithm> [bodylength] <result>
//
// Lines starting with # are comments. An unsigned message has no lines.
//
// go test ./scanners/dkim -run TestGolden -update rebuilds all three from
// goldenCases with the keys in testdata/keys (created when missing), and
// fails if a rebuilt case does not verify as its want says.
var update = flag.Bool("update", false, "rebuild the golden files in testdata")

func TestGolden(t *testing.T) {
	if *update {
		writeGolden(t)
	}
	msgs, err := filepath.Glob("testdata/*.msg")
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) < len(goldenCases) {
		t.Fatalf("found %d golden messages, want at least %d; run with -update", len(msgs), len(goldenCases))
	}
	for _, path := range msgs {
		base := strings.TrimSuffix(path, ".msg")
		t.Run(filepath.Base(base), func(t *testing.T) {
			t.Parallel()
			msg := readFile(t, path)
			zone := readFile(t, base+".dns")
			want := resultLines(readFile(t, base+".result"))
			got := verifyLines(t, msg, zone)
			if !slices.Equal(got, want) {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// verifyLines verifies msg with zone served by testdns and formats the
// signatures as .result lines.
func verifyLines(t *testing.T, msg, zone string) []string {
	t.Helper()
	res := serve(t, zone)
	sigs, err := Verify(t.Context(), res, strings.NewReader(msg))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	var lines []string
	for _, s := range sigs {
		line := fmt.Sprintf("d=%s s=%s a=%s", s.Domain, s.Selector, s.Algorithm)
		if s.BodyLength {
			line += " bodylength"
		}
		lines = append(lines, line+" "+string(s.Result))
		if (s.Result == Pass) != (s.Err == nil) {
			t.Errorf("%s: result %s with error %v", line, s.Result, s.Err)
		}
		t.Logf("%s %s: %v", line, s.Result, s.Err)
	}
	return lines
}

// serve starts testdns with zone and returns a resolver asking it.
func serve(t testing.TB, zone string) *resolver.Resolver {
	t.Helper()
	srv, err := testdns.Start(zone)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	res, err := resolver.New(resolver.Config{Server: srv.Addr(), Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func resultLines(text string) []string {
	var lines []string
	for l := range strings.Lines(text) {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// goldenKeys are the keys golden messages are signed with.
type goldenKeys struct {
	rsa, ed, other *Key // other is an Ed25519 key whose record is never published
}

type goldenCase struct {
	name, doc string
	build     func(t *testing.T, k goldenKeys) (msg, zone string)
	want      []string
}

const baseMsg = "From: Alice <alice@example.com>\r\n" +
	"To: bob@example.net\r\n" +
	"Subject: Quarterly report\r\n" +
	"Date: Mon, 02 Jun 2025 10:00:00 +0000\r\n" +
	"Message-ID: <golden@example.com>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"Hello Bob,\r\n" +
	"\r\n" +
	"the numbers are in.  \r\n" +
	"Alice\r\n"

const zoneHead = "$TTL 300\n" +
	"example.com. SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 60\n" +
	"example.org. SOA ns.example.org. hostmaster.example.org. 1 3600 600 86400 60\n"

var goldenCases = []goldenCase{
	{
		name: "01-rsa-sha256", doc: "a valid RSA signature",
		build: func(t *testing.T, k goldenKeys) (string, string) {
			return signed(t, baseMsg, k.rsa), zoneHead + txtRR(k.rsa)
		},
		want: []string{"d=example.com s=rsa a=rsa-sha256 pass"},
	},
	{
		name: "02-ed25519-sha256", doc: "a valid Ed25519 signature (RFC 8463)",
		build: func(t *testing.T, k goldenKeys) (string, string) {
			return signed(t, baseMsg, k.ed), zoneHead + txtRR(k.ed)
		},
		want: []string{"d=example.com s=ed a=ed25519-sha256 pass"},
	},
	{
		name: "03-body-modified", doc: "a word of the body changed after signing",
		build: func(t *testing.T, k goldenKeys) (string, string) {
			msg := strings.Replace(signed(t, baseMsg, k.rsa), "numbers", "figures", 1)
			return msg, zoneHead + txtRR(k.rsa)
		},
		want: []string{"d=example.com s=rsa a=rsa-sha256 fail"},
	},
	{
		name: "04-header-modified", doc: "the signed Subject changed after signing",
		build: func(t *testing.T, k goldenKeys) (string, string) {
			msg := strings.Replace(signed(t, baseMsg, k.rsa), "Subject: Quarterly", "Subject: Annual", 1)
			return msg, zoneHead + txtRR(k.rsa)
		},
		want: []string{"d=example.com s=rsa a=rsa-sha256 fail"},
	},
	{
		name: "05-key-revoked", doc: "the key record has an empty p= (RFC 6376 3.6.1): permerror",
		build: func(t *testing.T, k goldenKeys) (string, string) {
			return signed(t, baseMsg, k.rsa), zoneHead + "rsa._domainkey.example.com. TXT \"v=DKIM1; k=rsa; p=\"\n"
		},
		want: []string{"d=example.com s=rsa a=rsa-sha256 permerror"},
	},
	{
		name: "06-key-missing", doc: "no key record (NXDOMAIN): permerror",
		build: func(t *testing.T, k goldenKeys) (string, string) {
			return signed(t, baseMsg, k.rsa), zoneHead
		},
		want: []string{"d=example.com s=rsa a=rsa-sha256 permerror"},
	},
	{
		name: "07-dns-servfail", doc: "the key lookup fails with SERVFAIL: temperror",
		build: func(t *testing.T, k goldenKeys) (string, string) {
			return signed(t, baseMsg, k.rsa), zoneHead + txtRR(k.rsa) + ";! servfail rsa._domainkey.example.com\n"
		},
		want: []string{"d=example.com s=rsa a=rsa-sha256 temperror"},
	},
	{
		name: "08-body-length", doc: "an l= signature covering the original body, with text appended after signing: policy",
		build: func(t *testing.T, k goldenKeys) (string, string) {
			msg := signLength(t, baseMsg, k.rsa, true) + "\r\nP.S. Wire the money to account 1234.\r\n"
			return msg, zoneHead + txtRR(k.rsa)
		},
		want: []string{"d=example.com s=rsa a=rsa-sha256 bodylength policy"},
	},
	{
		name: "09-multiple-signatures", doc: "four signatures: key missing, wrong key, valid Ed25519, valid RSA",
		build: func(t *testing.T, k goldenKeys) (string, string) {
			msg := signed(t, baseMsg, k.rsa)
			msg = signed(t, msg, k.ed)
			wrong := &Key{Domain: "example.org", Selector: "wrong", Signer: k.other.Signer}
			msg = signed(t, msg, wrong)
			gone := &Key{Domain: "example.org", Selector: "gone", Signer: k.ed.Signer}
			msg = signed(t, msg, gone)
			// The record of "wrong" publishes the Ed25519 key, not the
			// one that signed.
			wrongRR := txtRR(&Key{Domain: "example.org", Selector: "wrong", Signer: k.ed.Signer})
			return msg, zoneHead + txtRR(k.rsa) + txtRR(k.ed) + wrongRR
		},
		want: []string{
			"d=example.org s=gone a=ed25519-sha256 permerror",
			"d=example.org s=wrong a=ed25519-sha256 fail",
			"d=example.com s=ed a=ed25519-sha256 pass",
			"d=example.com s=rsa a=rsa-sha256 pass",
		},
	},
	{
		name: "10-too-many", doc: "nine valid signatures: only the first eight are verified",
		build: func(t *testing.T, k goldenKeys) (string, string) {
			msg := baseMsg
			for range MaxSignatures + 1 {
				msg = signed(t, msg, k.ed)
			}
			return msg, zoneHead + txtRR(k.ed)
		},
		want: append(slices.Repeat([]string{"d=example.com s=ed a=ed25519-sha256 pass"}, MaxSignatures),
			"d=example.com s=ed a=ed25519-sha256 permerror"),
	},
	{
		name: "11-dns-timeout", doc: "the key lookup gets no answer: temperror",
		build: func(t *testing.T, k goldenKeys) (string, string) {
			return signed(t, baseMsg, k.ed), zoneHead + txtRR(k.ed) + ";! drop ed._domainkey.example.com\n"
		},
		want: []string{"d=example.com s=ed a=ed25519-sha256 temperror"},
	},
	{
		name: "12-unsigned", doc: "no signature at all",
		build: func(t *testing.T, k goldenKeys) (string, string) {
			return baseMsg, zoneHead + txtRR(k.rsa)
		},
	},
}

// writeGolden rebuilds the golden files from goldenCases.
func writeGolden(t *testing.T) {
	keys := goldenKeys{
		rsa:   goldenKey(t, "rsa", "example.com", "rsa"),
		ed:    goldenKey(t, "ed25519", "example.com", "ed"),
		other: goldenKey(t, "ed25519", "example.org", "other"),
	}
	for _, c := range goldenCases {
		msg, zone := c.build(t, keys)
		if got := verifyLines(t, msg, zone); !slices.Equal(got, c.want) {
			t.Fatalf("%s: got %q, want %q", c.name, got, c.want)
		}
		result := "# " + c.doc + "\n"
		for _, l := range c.want {
			result += l + "\n"
		}
		base := filepath.Join("testdata", c.name)
		for ext, data := range map[string]string{".msg": msg, ".dns": zone, ".result": result} {
			if err := os.WriteFile(base+ext, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// goldenKey loads testdata/keys/<selector>.pem, creating it first if
// needed.
func goldenKey(t *testing.T, algorithm, domain, selector string) *Key {
	path := filepath.Join("testdata", "keys", selector+".pem")
	if _, err := os.Stat(path); os.IsNotExist(err) {
		pemBytes, _, err := GenerateKey(algorithm, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, pemBytes, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	k, err := LoadKey(domain, selector, path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signed returns msg with a DKIM-Signature of k prepended.
func signed(t testing.TB, msg string, k *Key) string {
	t.Helper()
	sig, err := Sign(k, strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	return "DKIM-Signature: " + sig + "\r\n" + msg
}

// txtRR returns the zone line publishing k's public key at its record
// name, split into strings of at most 255 characters (RFC 1035 3.3).
func txtRR(k *Key) string {
	txt := Record(k.Signer.Public())
	var parts []string
	for len(txt) > 0 {
		n := min(len(txt), 255)
		parts = append(parts, `"`+txt[:n]+`"`)
		txt = txt[n:]
	}
	return RecordName(k.Selector, k.Domain) + ". TXT " + strings.Join(parts, " ") + "\n"
}

// signLength signs msg with an RSA key the way go-msgauth cannot: with an
// l= tag (when withLength) covering the whole relaxed body. It implements
// RFC 6376 relaxed/relaxed itself; TestSignLength checks it against
// go-msgauth without l=.
func signLength(t testing.TB, msg string, k *Key, withLength bool) string {
	t.Helper()
	head, body, _ := strings.Cut(msg, "\r\n\r\n")
	canonBody := relaxedBody(body)
	bh := sha256.Sum256([]byte(canonBody))
	names := []string{"from", "to", "subject", "date", "message-id"}
	value := "v=1; a=rsa-sha256; c=relaxed/relaxed; d=" + k.Domain + "; s=" + k.Selector + ";"
	if withLength {
		value += fmt.Sprintf(" l=%d;", len(canonBody))
	}
	value += " h=" + strings.Join(names, ":") + "; bh=" + base64.StdEncoding.EncodeToString(bh[:]) + "; b="

	fields := map[string]string{}
	for _, f := range splitFields(head) {
		name, _, _ := strings.Cut(f, ":")
		fields[strings.ToLower(strings.TrimSpace(name))] = f
	}
	h := sha256.New()
	for _, n := range names {
		h.Write([]byte(relaxedHeader(fields[n]) + "\r\n"))
	}
	h.Write([]byte(relaxedHeader("DKIM-Signature: " + value)))
	sig, err := k.Signer.(*rsa.PrivateKey).Sign(rand.Reader, h.Sum(nil), crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return "DKIM-Signature: " + value + base64.StdEncoding.EncodeToString(sig) + "\r\n" + msg
}

// splitFields splits a header (without the final empty line) into fields.
func splitFields(head string) []string {
	var fields []string
	for l := range strings.SplitSeq(head, "\r\n") {
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(fields) > 0 {
			fields[len(fields)-1] += "\r\n" + l
		} else {
			fields = append(fields, l)
		}
	}
	return fields
}

var wsp = regexp.MustCompile(`[ \t]+`)

// relaxedHeader is RFC 6376 3.4.2, without the final CRLF.
func relaxedHeader(f string) string {
	name, value, _ := strings.Cut(f, ":")
	value = strings.ReplaceAll(value, "\r\n", "")
	value = strings.TrimSpace(wsp.ReplaceAllString(value, " "))
	return strings.ToLower(strings.TrimSpace(name)) + ":" + value
}

// relaxedBody is RFC 6376 3.4.4.
func relaxedBody(body string) string {
	lines := strings.Split(strings.TrimSuffix(body, "\r\n"), "\r\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(wsp.ReplaceAllString(l, " "), " ")
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\r\n") + "\r\n"
}

// TestSignLength checks the test's own signer: without l= go-msgauth must
// accept its signatures, so the l= signature of 08-body-length is right
// apart from the tag.
func TestSignLength(t *testing.T) {
	k := goldenTestKey(t)
	zone := zoneHead + txtRR(k)
	for _, withLength := range []bool{false, true} {
		msg := signLength(t, baseMsg, k, withLength)
		want := []string{"d=example.com s=rsa a=rsa-sha256 pass"}
		if withLength {
			want = []string{"d=example.com s=rsa a=rsa-sha256 bodylength policy"}
		}
		if got := verifyLines(t, msg, zone); !slices.Equal(got, want) {
			t.Errorf("l=%v: got %q, want %q", withLength, got, want)
		}
	}
}

// goldenTestKey returns the RSA key of the golden files.
func goldenTestKey(t *testing.T) *Key {
	t.Helper()
	k, err := LoadKey("example.com", "rsa", filepath.Join("testdata", "keys", "rsa.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestGoldenLineEndings checks that the golden messages use CRLF only.
func TestGoldenLineEndings(t *testing.T) {
	msgs, _ := filepath.Glob("testdata/*.msg")
	for _, path := range msgs {
		b := []byte(readFile(t, path))
		if bytes.Count(b, []byte("\n")) != bytes.Count(b, []byte("\r\n")) {
			t.Errorf("%s has bare LF line endings", path)
		}
	}
}
