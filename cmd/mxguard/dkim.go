package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/mxguard/mxguard/scanners/dkim"
)

// cmdDKIMKeygen writes a new signing key and prints the TXT record to
// publish and the [[dkim.key]] table that uses it.
func cmdDKIMKeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dkim-keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	domain := fs.String("domain", "", "the signing domain (d=), e.g. example.com")
	selector := fs.String("selector", "", "the selector (s=), e.g. mx2026")
	algorithm := fs.String("algorithm", "rsa", "rsa or ed25519")
	bits := fs.Int("bits", 2048, "RSA key size: 2048, 3072 or 4096")
	dir := fs.String("dir", "/etc/mxguard/dkim", "where the key file goes")
	out := fs.String("out", "", "the key file (default DIR/DOMAIN.SELECTOR.pem)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mxguard dkim-keygen -domain DOMAIN -selector SELECTOR [-algorithm rsa|ed25519] [-bits N] [-dir DIR | -out FILE]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *domain == "" || *selector == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	d := strings.ToLower(strings.TrimSuffix(*domain, "."))
	path := *out
	if path == "" {
		path = filepath.Join(*dir, d+"."+*selector+".pem")
	}
	n := *bits
	if *algorithm == "ed25519" {
		n = 0
	}
	pemBytes, txt, err := dkim.GenerateKey(*algorithm, n)
	if err != nil {
		fmt.Fprintf(stderr, "mxguard dkim-keygen: %v\n", err)
		return 1
	}
	if err := writeNewFile(path, pemBytes); err != nil {
		fmt.Fprintf(stderr, "mxguard dkim-keygen: %v\n", err)
		return 1
	}
	// Loading the key back proves the file is what serve will read.
	if _, err := dkim.LoadKey(d, *selector, path); err != nil {
		fmt.Fprintf(stderr, "mxguard dkim-keygen: %v\n", err)
		return 1
	}
	name := dkim.RecordName(*selector, d)
	fmt.Fprintf(stdout, "wrote %s (%s)\n\n", path, describeKey(*algorithm, n))
	fmt.Fprintf(stdout, "Publish this TXT record:\n\n%s. IN TXT %s\n\n", name, zoneStrings(txt))
	fmt.Fprintf(stdout, "Then add to mxguard.toml and restart mxguard:\n\n[[dkim.key]]\ndomain = %q\nselector = %q\nkey_file = %q\n", d, *selector, path)
	return 0
}

// writeNewFile writes a private key readable by its owner only, and never
// over an existing key: replacing a published key breaks signatures.
func writeNewFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists already; choose another selector or -out", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

func describeKey(algorithm string, bits int) string {
	if algorithm == "ed25519" {
		return "Ed25519"
	}
	return fmt.Sprintf("RSA %d bits", bits)
}

// zoneStrings splits a record's text into quoted strings of at most 255
// characters, as zone files need for long TXT records.
func zoneStrings(txt string) string {
	var parts []string
	for len(txt) > 255 {
		parts = append(parts, fmt.Sprintf("%q", txt[:255]))
		txt = txt[255:]
	}
	parts = append(parts, fmt.Sprintf("%q", txt))
	if len(parts) == 1 {
		return parts[0]
	}
	return "( " + strings.Join(parts, "\n    ") + " )"
}
