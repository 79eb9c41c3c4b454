package enginetest

import "testing"

// Rspamd starts the private rspamd of scripts/engines/rspamd.sh unless it
// runs, and returns its normal worker's URL, "http://127.0.0.1:PORT". It
// runs Debian's rules without the modules that need DNS, Redis or the
// network: GTUBE's action is reject.
func Rspamd(t testing.TB) string {
	t.Helper()
	return run(t, "rspamd.sh", "start")
}
