package dkim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSignVerify signs with freshly generated keys, publishes the records
// GenerateKey returns through testdns, and verifies.
func TestSignVerify(t *testing.T) {
	for _, alg := range []string{"rsa", "ed25519"} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			pemBytes, txt, err := GenerateKey(alg, 0)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "key.pem")
			if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
				t.Fatal(err)
			}
			k, err := LoadKey("Example.COM.", "sel", path)
			if err != nil {
				t.Fatal(err)
			}
			if k.Domain != "example.com" {
				t.Errorf("Domain = %q, want example.com", k.Domain)
			}
			if got := Record(k.Signer.Public()); got != txt {
				t.Errorf("GenerateKey record %q differs from the key's %q", txt, got)
			}
			res := serve(t, zoneHead+txtRR(k))

			msg := signed(t, baseMsg, k)
			sigs, err := Verify(t.Context(), res, strings.NewReader(msg))
			if err != nil || len(sigs) != 1 {
				t.Fatalf("Verify = %v, %v; want one signature", sigs, err)
			}
			s := sigs[0]
			want := Signature{Domain: "example.com", Selector: "sel", Identifier: "@example.com",
				Algorithm: alg + "-sha256", BPrefix: s.BPrefix, Result: Pass}
			if s != want || len(s.BPrefix) != 8 {
				t.Errorf("got %+v, want %+v", s, want)
			}
			if !strings.Contains(msg, "h=From:From:Subject:") {
				t.Errorf("From is not oversigned:\n%s", msg)
			}

			// A second From, anywhere in the header, breaks the
			// signature because h= names From twice.
			forged := strings.Replace(msg, "From: Alice", "From: Mallory <m@evil.example>\r\nFrom: Alice", 1)
			sigs, err = Verify(t.Context(), res, strings.NewReader(forged))
			if err != nil || len(sigs) != 1 || sigs[0].Result != Fail {
				t.Errorf("with a second From: Verify = %+v, %v; want fail", sigs, err)
			}
			// Folding and spacing changes in the header survive relaxed
			// canonicalization.
			refolded := strings.Replace(msg, "Subject: Quarterly report", "Subject:  Quarterly\r\n\treport ", 1)
			sigs, err = Verify(t.Context(), res, strings.NewReader(refolded))
			if err != nil || len(sigs) != 1 || sigs[0].Result != Pass {
				t.Errorf("refolded: Verify = %+v, %v; want pass", sigs, err)
			}
		})
	}
}

func TestSignHeaders(t *testing.T) {
	k := goldenTestKey(t)
	msg := "From: a@example.com\r\nReceived: by mx\r\nTo: b@example.net\r\nTo: c@example.net\r\nX-Spam: no\r\n\r\nbody\r\n"
	sig, err := Sign(k, strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	h := parseTags(sig)["h"]
	if want := "From:From:To:To"; stripSpace(h) != want {
		t.Errorf("h=%s, want %s", h, want)
	}
	if strings.HasPrefix(sig, " ") || strings.HasSuffix(sig, "\n") {
		t.Errorf("value %q has surrounding space", sig)
	}

	// Without a body or the empty line, the body is empty.
	if _, err := Sign(k, strings.NewReader("From: a@example.com\r\n")); err != nil {
		t.Errorf("header-only message: %v", err)
	}
	if _, err := Sign(k, strings.NewReader("To: b@example.net\r\n\r\nbody\r\n")); err == nil || !strings.Contains(err.Error(), "no From") {
		t.Errorf("message without From: err = %v", err)
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	encode := func(typ string, der []byte) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	}
	rsa2048 := goldenTestKey(t).Signer.(*rsa.PrivateKey)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}

	for _, c := range []struct {
		name, domain, selector string
		data                   []byte // nil: no file
		wantErr                string // "" for success
	}{
		{"pkcs1.pem", "example.com", "s1", encode("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsa2048)), ""},
		{"pkcs8.pem", "example.com", "s1", encode("PRIVATE KEY", pkcs8(rsa2048)), ""},
		{"ed.pem", "example.com", "s1", []byte(readFile(t, "testdata/keys/ed.pem")), ""},
		{"short.pem", "example.com", "s1", encode("PRIVATE KEY", pkcs8(rsa1024)), "1024 bits"},
		{"short1.pem", "example.com", "s1", encode("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsa1024)), "1024 bits"},
		{"ec.pem", "example.com", "s1", encode("PRIVATE KEY", pkcs8(ec)), "unsupported key type"},
		{"cert.pem", "example.com", "s1", encode("CERTIFICATE", []byte("x")), `"CERTIFICATE"`},
		{"garbage.pem", "example.com", "s1", []byte("not a key"), "no PEM block"},
		{"broken.pem", "example.com", "s1", encode("PRIVATE KEY", []byte("junk")), "asn1"},
		{"missing.pem", "example.com", "s1", nil, "no such file"},
		{"nodomain.pem", "", "s1", []byte{}, "empty domain"},
		{"badsel.pem", "example.com", "s 1", []byte{}, "invalid selector"},
	} {
		path := filepath.Join(dir, c.name)
		if c.data != nil {
			path = write(c.name, c.data)
		}
		k, err := LoadKey(c.domain, c.selector, path)
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.wantErr == "" && (k.Domain != c.domain || k.Selector != c.selector || k.Signer == nil):
			t.Errorf("%s: got %+v", c.name, k)
		case c.wantErr != "" && err == nil:
			t.Errorf("%s: no error, want %q", c.name, c.wantErr)
		case c.wantErr != "" && (!strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), path)):
			t.Errorf("%s: error %q should name the file and say %q", c.name, err, c.wantErr)
		}
	}
}

func TestGenerateKey(t *testing.T) {
	pemBytes, txt, err := GenerateKey("ed25519", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(txt, "v=DKIM1; k=ed25519; p=") || len(txt) != len("v=DKIM1; k=ed25519; p=")+44 {
		t.Errorf("ed25519 record %q", txt)
	}
	if k, err := parseKey(pemBytes); err != nil || Record(k.Public()) != txt {
		t.Errorf("ed25519 PEM does not hold the key of the record: %v", err)
	}
	for _, c := range []struct {
		alg  string
		bits int
	}{{"rsa", 1024}, {"rsa", 2047}, {"ed25519", 256}, {"dsa", 0}, {"", 0}} {
		if _, _, err := GenerateKey(c.alg, c.bits); err == nil {
			t.Errorf("GenerateKey(%q, %d) did not fail", c.alg, c.bits)
		}
	}
}

func TestRecordName(t *testing.T) {
	if got := RecordName("s2025", "example.com."); got != "s2025._domainkey.example.com" {
		t.Errorf("RecordName = %q", got)
	}
}
