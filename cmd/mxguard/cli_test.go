package main

import (
	"strings"
	"testing"
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
