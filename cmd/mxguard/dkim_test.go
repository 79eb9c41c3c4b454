package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDKIMKeygen: a new key file (owner-only, never over an existing one),
// the record to publish, and a [[dkim.key]] table that check-config takes.
func TestDKIMKeygen(t *testing.T) {
	dir := t.TempDir()
	checkCLI(t, []cliCase{
		{args: []string{"dkim-keygen", "-domain", "Example.COM.", "-selector", "mx1", "-dir", dir}, stdout: []string{
			"wrote " + filepath.Join(dir, "example.com.mx1.pem") + " (RSA 2048 bits)",
			`mx1._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; p=`,
			"[[dkim.key]]\ndomain = \"example.com\"\nselector = \"mx1\"",
		}},
		{args: []string{"dkim-keygen", "-domain", "example.com", "-selector", "ed", "-algorithm", "ed25519", "-dir", dir}, stdout: []string{
			`ed._domainkey.example.com. IN TXT "v=DKIM1; k=ed25519; p=`,
		}},
		{args: []string{"dkim-keygen", "-domain", "example.com", "-selector", "mx1", "-dir", dir}, code: 1, stderr: []string{"exists already"}},
		{args: []string{"dkim-keygen", "-domain", "example.com", "-selector", "weak", "-bits", "1024", "-dir", dir}, code: 1, stderr: []string{"2048"}},
		{args: []string{"dkim-keygen", "-domain", "example.com"}, code: 2, stderr: []string{"usage: mxguard dkim-keygen"}},
	})
	info, err := os.Stat(filepath.Join(dir, "example.com.mx1.pem"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, info.Mode())
	}
	if _, err := os.Stat(filepath.Join(dir, "example.com.weak.pem")); err == nil {
		t.Error("a refused key was written")
	}

	// The printed table, pasted into a configuration, loads the key.
	_, out, _ := runMxguard("dkim-keygen", "-domain", "example.net", "-selector", "s2", "-dir", dir)
	_, table, ok := strings.Cut(out, "restart mxguard:\n\n")
	if !ok {
		t.Fatalf("no [[dkim.key]] table in:\n%s", out)
	}
	cfg := filepath.Join(dir, "mxguard.toml")
	if err := os.WriteFile(cfg, []byte("[log]\npath = \""+filepath.Join(dir, "log.db")+"\"\n"+table), 0o644); err != nil {
		t.Fatal(err)
	}
	checkCLI(t, []cliCase{{args: []string{"check-config", "-config", cfg}, stdout: []string{`key_file = "` + filepath.Join(dir, "example.net.s2.pem")}}})
	if err := os.WriteFile(filepath.Join(dir, "example.net.s2.pem"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkCLI(t, []cliCase{{args: []string{"check-config", "-config", cfg}, code: 1, stderr: []string{"dkim.key[0].key_file:", "example.net.s2.pem"}}})
}
