package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCommands(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("[spf]\nfail = \"bounce\"\n[dns]\ntimeout = \"x\"\nextra = 1\n"), 0o644)
	tests := []cliCase{
		{[]string{"version"}, 0, []string{"mxguard "}, nil},
		{[]string{"check-config", "-config", "../../examples/mxguard.toml"}, 0,
			[]string{"is valid", `listen = "inet:127.0.0.1:8894"`, "max_sessions = 500", "[[organization]]"}, nil},
		{[]string{"check-config", "-config", bad}, 1, nil,
			[]string{"3 problem(s)", "line 2: spf.fail: unknown action", "line 4: dns.timeout:", "line 5: dns.extra: unknown key"}},
		{[]string{"check-config", "-config", filepath.Join(t.TempDir(), "missing.toml")}, 1, nil, []string{"no such file"}},
		{[]string{"serve", "-config", bad}, 1, nil, []string{"spf.fail"}},
		{[]string{"check-config", "stray"}, 2, nil, []string{"unexpected argument"}},
		{[]string{"frobnicate"}, 2, nil, []string{`unknown command "frobnicate"`, "usage:"}},
		{nil, 2, nil, []string{"usage:"}},
	}
	checkCLI(t, tests)
}
