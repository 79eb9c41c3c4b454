package enginetest

import "testing"

// Clamd starts the private clamd of scripts/engines/clamd.sh unless it
// runs, and returns its TCP address, "inet:127.0.0.1:PORT". Its only
// signature is the EICAR test file's.
func Clamd(t testing.TB) string {
	t.Helper()
	return run(t, "clamd.sh", "start", "inet")
}

// ClamdUnix is Clamd, returning the Unix socket address, "unix:/path".
func ClamdUnix(t testing.TB) string {
	t.Helper()
	return run(t, "clamd.sh", "start", "unix")
}
