package main

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/mxguard/mxguard/web"
)

// fastHashes makes password hashes cheap for the test.
func fastHashes(t *testing.T) {
	old := web.BcryptCost
	web.BcryptCost = bcrypt.MinCost
	t.Cleanup(func() { web.BcryptCost = old })
}

// withStdin makes the user command read text as its standard input (a
// file, not a terminal).
func withStdin(t *testing.T, text string) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stdin")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(text)
	f.Seek(0, 0)
	old := userStdin
	userStdin = f
	t.Cleanup(func() { userStdin = old; f.Close() })
}

// webConfig writes a configuration with two organisations and a console
// whose accounts are in the test's directory; [web] listen is not set.
func webConfig(t *testing.T, extra string) (cfg, accounts string) {
	t.Helper()
	dir := t.TempDir()
	accounts = filepath.Join(dir, "web.db")
	cfg, _ = writeLog(t, `[web]
db = "`+accounts+`"
`+extra+`
[[organization]]
name = "example"
domains = ["example.com"]
[[organization]]
name = "acme"
domains = ["acme.test"]
`)
	return cfg, accounts
}

func TestUserCommands(t *testing.T) {
	fastHashes(t)
	cfg, accounts := webConfig(t, "")
	step := func(stdin string, c cliCase) {
		t.Helper()
		withStdin(t, stdin)
		checkCLI(t, []cliCase{c})
	}
	step("", cliCase{[]string{"user", "list", "-config", cfg}, 0, []string{"No users"}, nil})
	step("a long password\n", cliCase{[]string{"user", "add", "-config", cfg, "-org", "example", "-role", "admin", "Alice@Example.com"}, 0,
		[]string{"alice@example.com added: admin of organisation example"}, nil})
	step("another password", cliCase{[]string{"user", "add", "-global", "-role", "viewer", "ops@ops.test", "-config", cfg}, 0,
		[]string{"ops@ops.test added: viewer of every organisation"}, nil})
	step("", cliCase{[]string{"user", "list", "-config", cfg}, 0,
		[]string{"EMAIL", "alice@example.com  example", "admin", "ops@ops.test", "(global)", "viewer", "never"}, nil})

	for _, c := range []struct {
		stdin string
		cliCase
	}{
		{"a long password\n", cliCase{[]string{"user", "add", "-config", cfg, "-org", "nosuch", "-role", "admin", "x@example.com"}, 1, nil,
			[]string{`no organisation "nosuch"`, "the configured ones are example, acme"}}},
		{"a long password\n", cliCase{[]string{"user", "add", "-config", cfg, "-org", "example", "-global", "-role", "admin", "x@example.com"}, 2, nil,
			[]string{"-org NAME", "-global"}}},
		{"a long password\n", cliCase{[]string{"user", "add", "-config", cfg, "-role", "admin", "x@example.com"}, 2, nil, []string{"-global"}}},
		{"a long password\n", cliCase{[]string{"user", "add", "-config", cfg, "-org", "example", "x@example.com"}, 2, nil, []string{"-role admin or -role viewer is required"}}},
		{"a long password\n", cliCase{[]string{"user", "add", "-config", cfg, "-org", "example", "-role", "root", "x@example.com"}, 2, nil, []string{"want admin or viewer"}}},
		{"a long password\n", cliCase{[]string{"user", "add", "-config", cfg, "-org", "example", "-role", "admin", "not-an-email"}, 2, nil, []string{"not an email address"}}},
		{"a long password\n", cliCase{[]string{"user", "add", "-config", cfg, "-org", "example", "-role", "admin"}, 2, nil, []string{"give one EMAIL"}}},
		{"short\n", cliCase{[]string{"user", "add", "-config", cfg, "-org", "example", "-role", "admin", "x@example.com"}, 1, nil, []string{"too short"}}},
		{strings.Repeat("x", 73) + "\n", cliCase{[]string{"user", "add", "-config", cfg, "-org", "example", "-role", "admin", "x@example.com"}, 1, nil, []string{"too long"}}},
		{"", cliCase{[]string{"user", "add", "-config", cfg, "-org", "example", "-role", "admin", "x@example.com"}, 1, nil, []string{"no password on standard input"}}},
		{"a long password\n", cliCase{[]string{"user", "add", "-config", cfg, "-org", "example", "-role", "admin", "ALICE@example.com"}, 1, nil,
			[]string{"a user with this email exists", "mxguard user passwd alice@example.com"}}},
		{"", cliCase{[]string{"user", "passwd", "-config", cfg, "nobody@example.com"}, 1, nil, []string{"no such user"}}},
		{"", cliCase{[]string{"user", "del", "-config", cfg, "nobody@example.com"}, 1, nil, []string{"no such user"}}},
		{"", cliCase{[]string{"user", "frob", "-config", cfg}, 2, nil, []string{`unknown command "frob"`}}},
		{"", cliCase{[]string{"user"}, 2, nil, []string{"usage:"}}},
		{"", cliCase{[]string{"user", "help"}, 0, []string{"mxguard user add", "without echo"}, nil}},
		{"", cliCase{[]string{"user", "list", "-config", cfg, "extra"}, 2, nil, []string{"unexpected argument"}}},
	} {
		step(c.stdin, c.cliCase)
	}

	// The password works, and passwd changes it.
	db, err := sql.Open("sqlite3", accounts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	hash := func() string {
		var h string
		if err := db.QueryRow(`SELECT password_hash FROM users WHERE email = 'alice@example.com'`).Scan(&h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	if bcrypt.CompareHashAndPassword([]byte(hash()), []byte("a long password")) != nil {
		t.Error("the password read from standard input does not match")
	}
	step("a new long password\r\n", cliCase{[]string{"user", "passwd", "-config", cfg, "alice@example.com"}, 0, []string{"password changed"}, nil})
	if bcrypt.CompareHashAndPassword([]byte(hash()), []byte("a new long password")) != nil {
		t.Error("passwd did not change the password")
	}
	step("", cliCase{[]string{"user", "del", "-config", cfg, "alice@example.com"}, 0, []string{"alice@example.com deleted"}, nil})
	step("", cliCase{[]string{"user", "list", "-config", cfg}, 0, []string{"ops@ops.test"}, nil})
	if fi, err := os.Stat(accounts); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("accounts database mode: %v, %v", fi.Mode(), err)
	}
}
