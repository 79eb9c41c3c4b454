package enginetest

import "testing"

// Spamd starts the private spamd of scripts/engines/spamd.sh unless it
// runs, and returns its address, "inet:127.0.0.1:PORT". It runs Debian's
// rules with network tests off and no Bayes: GTUBE scores 1000.
func Spamd(t testing.TB) string {
	t.Helper()
	return run(t, "spamd.sh", "start")
}
