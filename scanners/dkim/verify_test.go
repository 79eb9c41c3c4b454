package dkim

import (
	"bufio"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/scanners/resolver"
)

// fakeKeys publishes the golden RSA key through resolver.Fake.
func fakeKeys(t *testing.T) (*Key, *resolver.Fake) {
	k := goldenTestKey(t)
	return k, &resolver.Fake{TXT: map[string][]string{
		RecordName(k.Selector, k.Domain): {Record(k.Signer.Public())},
	}}
}

func TestVerifyCases(t *testing.T) {
	k, fake := fakeKeys(t)
	good := signed(t, baseMsg, k)
	for _, c := range []struct {
		name   string
		msg    string
		res    TXTResolver
		want   Result
		wantFn func(Signature) bool
	}{
		{name: "pass", msg: good, res: fake, want: Pass},
		{name: "LF line endings", msg: strings.ReplaceAll(good, "\r\n", "\n"), res: fake, want: Pass},
		{name: "timeout", msg: good, res: &resolver.Fake{Errors: map[string]error{
			"rsa._domainkey.example.com": resolver.Timeout("rsa._domainkey.example.com")}}, want: TempError},
		{name: "servfail", msg: good, res: &resolver.Fake{Errors: map[string]error{
			"rsa._domainkey.example.com": resolver.ServFail("rsa._domainkey.example.com")}}, want: TempError},
		{name: "two key records", msg: good, res: &resolver.Fake{TXT: map[string][]string{
			"rsa._domainkey.example.com": {Record(k.Signer.Public()), Record(k.Signer.Public())}}}, want: PermError},
		{name: "key syntax", msg: good, res: &resolver.Fake{TXT: map[string][]string{
			"rsa._domainkey.example.com": {"v=DKIM1; p=!!!"}}}, want: PermError},
		{name: "wrong key type", msg: good, res: &resolver.Fake{TXT: map[string][]string{
			"rsa._domainkey.example.com": {"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="}}}, want: PermError},
		{name: "missing tags", msg: "DKIM-Signature: v=1; d=example.com; s=rsa\r\n" + baseMsg, res: fake, want: PermError,
			wantFn: func(s Signature) bool { return s.Domain == "example.com" && s.Selector == "rsa" }},
		{name: "garbage signature", msg: "DKIM-Signature: ;;==;\r\n" + baseMsg, res: fake, want: PermError},
		{name: "i= outside d=", msg: strings.Replace(good, "d=example.com;", "d=example.com; i=a@example.org;", 1), res: fake, want: PermError,
			wantFn: func(s Signature) bool { return s.Identifier == "a@example.org" }},
		{name: "rsa-sha1", msg: strings.Replace(good, "a=rsa-sha256", "a=rsa-sha1", 1), res: fake, want: PermError},
	} {
		t.Run(c.name, func(t *testing.T) {
			sigs, err := Verify(t.Context(), c.res, strings.NewReader(c.msg))
			if err != nil || len(sigs) != 1 {
				t.Fatalf("Verify = %+v, %v; want one signature", sigs, err)
			}
			s := sigs[0]
			if s.Result != c.want || (s.Err == nil) != (c.want == Pass) {
				t.Errorf("got %s (%v), want %s", s.Result, s.Err, c.want)
			}
			if c.wantFn != nil && !c.wantFn(s) {
				t.Errorf("unexpected signature %+v", s)
			}
		})
	}
}

func TestVerifyUnsigned(t *testing.T) {
	for _, msg := range []string{baseMsg, "", "Subject: no body\r\n", "\r\nbody only\r\n"} {
		sigs, err := Verify(t.Context(), &resolver.Fake{}, strings.NewReader(msg))
		if err != nil || len(sigs) != 0 {
			t.Errorf("Verify(%q) = %v, %v; want nothing", msg, sigs, err)
		}
	}
}

// TestVerifyContext checks that the context reaches the key lookups: an
// expired one makes them temperror, not permerror.
func TestVerifyContext(t *testing.T) {
	k, fake := fakeKeys(t)
	fake.Delay = time.Minute
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	msg := signed(t, signed(t, baseMsg, k), k)
	start := time.Now()
	sigs, err := Verify(ctx, fake, strings.NewReader(msg))
	if err != nil || len(sigs) != 2 {
		t.Fatalf("Verify = %v, %v", sigs, err)
	}
	for _, s := range sigs {
		if s.Result != TempError {
			t.Errorf("got %s (%v), want temperror", s.Result, s.Err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Verify took %v past its deadline", d)
	}
}

// errReader fails after the header.
type errReader struct{ r *strings.Reader }

func (e errReader) Read(p []byte) (int, error) {
	if e.r.Len() == 0 {
		return 0, errors.New("connection reset")
	}
	return e.r.Read(p)
}

func TestVerifyReadError(t *testing.T) {
	k, fake := fakeKeys(t)
	head, _, _ := strings.Cut(signed(t, baseMsg, k), "\r\n\r\n")
	if _, err := Verify(t.Context(), fake, errReader{strings.NewReader(head + "\r\n")}); err == nil {
		t.Error("a read error in the header was not reported")
	}
	msg := signed(t, baseMsg, k)
	if _, err := Verify(t.Context(), fake, errReader{strings.NewReader(msg)}); err == nil {
		t.Error("a read error in the body was not reported")
	}
}

func FuzzVerify(f *testing.F) {
	f.Add(baseMsg)
	f.Add("DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=rsa; h=from; bh=; b=\r\n" + baseMsg)
	f.Add("DKIM-Signature: v=1; l=1; a=ed25519-sha256; d=example.com; s=ed; h=from:from; bh=AA==; b=AA==\r\nFrom: a@b\r\n\r\nxy")
	f.Add("DKIM-Signature:\r\n\t;\r\n\r\n")
	k := &resolver.Fake{TXT: map[string][]string{
		"rsa._domainkey.example.com": {"v=DKIM1; k=rsa; p="},
		"ed._domainkey.example.com":  {"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="},
	}}
	f.Fuzz(func(t *testing.T, msg string) {
		sigs, err := Verify(t.Context(), k, strings.NewReader(msg))
		if err != nil {
			return
		}
		for _, s := range sigs {
			if (s.Result == Pass) != (s.Err == nil) {
				t.Errorf("result %s with error %v", s.Result, s.Err)
			}
			if len(s.BPrefix) > 8 {
				t.Errorf("BPrefix %q", s.BPrefix)
			}
		}
	})
}

// FuzzPeekHeader: when peekHeader finds the whole header in the buffer, it
// parses the same fields as readHeader, the header readHeader would hand
// go-msgauth is the message's own first bytes, and nothing is consumed.
func FuzzPeekHeader(f *testing.F) {
	f.Add(baseMsg, uint16(4096))
	f.Add("A: 1\r\n  folded\r\nB:2\r\r\n\r\nbody", uint16(16))
	f.Add("A: 1\n\nbody", uint16(64))
	f.Add("A: 1\r\n\r\r\nB: 2\r\n\r\n", uint16(64))
	f.Add(" lead\r\nA:\r\n\r\n", uint16(16))
	f.Add("A: 1", uint16(64))
	f.Fuzz(func(t *testing.T, msg string, size uint16) {
		br := bufio.NewReaderSize(strings.NewReader(msg), int(size))
		fields, ok, err := peekHeader(br)
		if err != nil {
			t.Fatalf("peekHeader: %v", err)
		}
		if !ok {
			return
		}
		raw, want, err := readHeader(bufio.NewReader(strings.NewReader(msg)))
		if err != nil {
			t.Fatalf("readHeader: %v", err)
		}
		if !slices.Equal(fields, want) {
			t.Errorf("peekHeader fields %q, readHeader's %q", fields, want)
		}
		if !strings.HasPrefix(msg, string(raw)) {
			t.Errorf("readHeader mended the header to %q, but peekHeader hands go-msgauth the message as it is", raw)
		}
		if all, _ := io.ReadAll(br); string(all) != msg {
			t.Errorf("after peekHeader the reader holds %q, want the whole message", all)
		}
	})
}
