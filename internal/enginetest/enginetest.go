// Package enginetest starts the real scanning engines (clamd, spamd,
// rspamd) that tests talk to, through the scripts in scripts/engines/.
// Each engine runs once per machine, on loopback, and stays up between
// test runs; a script that fails fails the test: a missing engine is a
// broken test setup, never a reason to skip.
package enginetest

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// run runs scripts/engines/<script> with args and returns its standard
// output, trimmed. When the script fails, the test fails with everything
// the script said.
func run(t testing.TB, script string, args ...string) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "scripts", "engines", script), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/engines/%s %s: %v\n%s%s", script, strings.Join(args, " "), err, out, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// repoRoot is the nearest directory above the working directory (a test's
// package directory) that holds go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("enginetest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// ClosedPort returns "127.0.0.1:PORT" for a port nothing listens on (it was
// free a moment ago), for tests of a server that is down: connecting to it
// is refused.
func ClosedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
