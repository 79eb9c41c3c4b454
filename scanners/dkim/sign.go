package dkim

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	msgauth "github.com/emersion/go-msgauth/dkim"
)

// MinRSABits is the smallest RSA key we sign with. RFC 8301 section 3.2
// still allows 1024 bits; we follow its advice to use 2048.
const MinRSABits = 2048

// signedHeaders are the fields Sign covers when present, in this order:
// those RFC 6376 section 5.4.1 recommends, plus the ones that identify the
// message and describe its body.
var signedHeaders = []string{
	"From", "Reply-To", "Subject", "Date", "To", "Cc",
	"Resent-Date", "Resent-From", "Resent-To", "Resent-Cc",
	"In-Reply-To", "References",
	"List-Id", "List-Help", "List-Unsubscribe", "List-Subscribe", "List-Post", "List-Owner", "List-Archive",
	"Message-ID", "Sender", "MIME-Version",
	"Content-Type", "Content-Transfer-Encoding", "Content-ID", "Content-Description",
}

// Key is a signing key of a domain, published under a selector.
type Key struct {
	Domain   string        // d=
	Selector string        // s=
	Signer   crypto.Signer // *rsa.PrivateKey (2048 bits or more) or ed25519.PrivateKey
}

// RecordName returns the DNS name of the key record of selector in domain
// (RFC 6376 section 3.6.2.1).
func RecordName(selector, domain string) string {
	return selector + "._domainkey." + strings.TrimSuffix(domain, ".")
}

// LoadKey reads a private key for domain and selector from the PEM file at
// pemPath: PKCS#8 ("PRIVATE KEY", RSA or Ed25519) or PKCS#1 ("RSA PRIVATE
// KEY"). RSA keys must have at least MinRSABits bits.
func LoadKey(domain, selector, pemPath string) (*Key, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if err := checkName("domain", domain); err != nil {
		return nil, fmt.Errorf("dkim: key %s: %w", pemPath, err)
	}
	if err := checkName("selector", selector); err != nil {
		return nil, fmt.Errorf("dkim: key %s: %w", pemPath, err)
	}
	data, err := os.ReadFile(pemPath)
	if err != nil {
		return nil, fmt.Errorf("dkim: reading key: %w", err)
	}
	signer, err := parseKey(data)
	if err != nil {
		return nil, fmt.Errorf("dkim: key %s: %w", pemPath, err)
	}
	return &Key{Domain: domain, Selector: selector, Signer: signer}, nil
}

// checkName rejects a domain or selector that cannot appear in a tag value
// or a DNS name.
func checkName(what, s string) error {
	if s == "" {
		return fmt.Errorf("empty %s", what)
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || strings.ContainsFunc(label, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
		}) {
			return fmt.Errorf("invalid %s %q", what, s)
		}
	}
	return nil
}

// parseKey parses the first PEM block of data into a signer we accept.
func parseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block is %q, want \"PRIVATE KEY\" (PKCS#8) or \"RSA PRIVATE KEY\" (PKCS#1)", block.Type)
	}
	if err != nil {
		return nil, err
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < MinRSABits {
			return nil, fmt.Errorf("RSA key has %d bits, want at least %d", bits, MinRSABits)
		}
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("unsupported key type %T, want RSA or Ed25519", key)
	}
}

// Sign signs the raw message msg (CRLF line endings) with k and returns the
// value of the DKIM-Signature header field to prepend, without the field
// name: folded with CRLF and a space, without the final CRLF.
//
// It uses relaxed/relaxed canonicalization and covers the recommended
// fields (signedHeaders) that are present, each as many times as present,
// and From once more than present, so that adding a From field breaks
// the signature (RFC 6376 section 8.15).
func Sign(k *Key, msg io.Reader) (string, error) {
	br := bufio.NewReader(msg)
	header, fields, err := readHeader(br)
	if err != nil {
		return "", err
	}
	count := map[string]int{}
	for _, f := range fields {
		count[strings.ToLower(f.name)]++
	}
	if count["from"] == 0 {
		return "", errors.New("dkim: signing: message has no From header field")
	}
	var keys []string
	for _, h := range signedHeaders {
		n := count[strings.ToLower(h)]
		if h == "From" {
			n++
		}
		for range n {
			keys = append(keys, h)
		}
	}

	s, err := msgauth.NewSigner(&msgauth.SignOptions{
		Domain:                 k.Domain,
		Selector:               k.Selector,
		Signer:                 k.Signer,
		HeaderCanonicalization: msgauth.CanonicalizationRelaxed,
		BodyCanonicalization:   msgauth.CanonicalizationRelaxed,
		HeaderKeys:             keys,
	})
	if err != nil {
		return "", fmt.Errorf("dkim: signing: %w", err)
	}
	if _, err := io.Copy(s, concat{bytes.NewReader(header), br}); err != nil {
		s.Close()
		return "", fmt.Errorf("dkim: signing: %w", err)
	}
	if err := s.Close(); err != nil {
		return "", fmt.Errorf("dkim: signing: %w", err)
	}
	field := s.Signature()
	_, value, _ := strings.Cut(field, ":")
	return strings.TrimSpace(value), nil
}

// GenerateKey creates a signing key and returns it as PKCS#8 PEM, and the
// text of the TXT record to publish at RecordName (RFC 6376 section 3.6.1,
// RFC 8463 section 4 for Ed25519). algorithm is "rsa", with bits 2048 (the
// default for 0), 3072 or 4096, or "ed25519", with bits 0.
//
// The text of an RSA record is longer than 255 characters: a zone file
// must split it into several strings of one TXT record.
func GenerateKey(algorithm string, bits int) (pemBytes []byte, txt string, err error) {
	var priv crypto.Signer
	switch algorithm {
	case "rsa":
		if bits == 0 {
			bits = MinRSABits
		}
		if bits != 2048 && bits != 3072 && bits != 4096 {
			return nil, "", fmt.Errorf("dkim: RSA key size %d not supported, want 2048, 3072 or 4096", bits)
		}
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			return nil, "", fmt.Errorf("dkim: generating key: %w", err)
		}
		priv = k
	case "ed25519":
		if bits != 0 {
			return nil, "", fmt.Errorf("dkim: Ed25519 keys have no size to choose, got %d", bits)
		}
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, "", fmt.Errorf("dkim: generating key: %w", err)
		}
		priv = k
	default:
		return nil, "", fmt.Errorf("dkim: unknown key algorithm %q, want rsa or ed25519", algorithm)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, "", fmt.Errorf("dkim: generating key: %w", err)
	}
	pemBytes = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	return pemBytes, Record(priv.Public()), nil
}

// Record returns the text of the key record publishing pub, an
// *rsa.PublicKey or ed25519.PublicKey; "" for other keys.
func Record(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return ""
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(k)
	}
	return ""
}
