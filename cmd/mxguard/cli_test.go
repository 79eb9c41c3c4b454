package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/logstore"
)

// cliCase is one invocation of the mxguard command and what it must do:
// its exit code, and text its standard output and error must contain.
type cliCase struct {
	args   []string
	code   int
	stdout []string
	stderr []string
}

// checkCLI runs each case in process and reports every mismatch.
func checkCLI(t *testing.T, cases []cliCase) {
	t.Helper()
	for _, tt := range cases {
		code, stdout, stderr := runMxguard(tt.args...)
		if code != tt.code {
			t.Errorf("mxguard %q: exit %d; want %d\n%s%s", tt.args, code, tt.code, stdout, stderr)
		}
		for _, w := range tt.stdout {
			if !strings.Contains(stdout, w) {
				t.Errorf("mxguard %q: stdout lacks %q:\n%s", tt.args, w, stdout)
			}
		}
		for _, w := range tt.stderr {
			if !strings.Contains(stderr, w) {
				t.Errorf("mxguard %q: stderr lacks %q:\n%s", tt.args, w, stderr)
			}
		}
	}
}

// writeLog creates a transaction log in a new directory holding recs, saved
// in order (their IDs are set), and a configuration whose [log] path names
// it, followed by extraConfig. It returns both paths.
func writeLog(t *testing.T, extraConfig string, recs ...*logstore.Record) (cfg, db string) {
	t.Helper()
	dir := t.TempDir()
	db = filepath.Join(dir, "mxguard.db")
	st, err := logstore.Open(logstore.Options{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := st.Save(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(dir, "mxguard.toml")
	if err := os.WriteFile(cfg, []byte("[log]\npath = \""+db+"\"\n"+extraConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, db
}
