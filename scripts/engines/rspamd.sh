#!/usr/bin/env bash
# A private rspamd on loopback, for mxguard's tests. It runs Debian's
# /usr/bin/rspamd (package rspamd) with Debian's rules (/etc/rspamd as
# $CONFDIR) and our own $LOCAL_CONFDIR, rspamd/ beside this script, copied
# into its state dir: one normal worker on 127.0.0.1, no controller, proxy
# or fuzzy worker, and without the modules that ask DNS, Redis or the
# network (DISABLED below). Databases, pid file and log are under the state
# dir; the host's rspamd service and /etc/rspamd/local.d are never used.
#
#   rspamd.sh start    start rspamd unless it already answers /ping, then
#                      print its URL, http://127.0.0.1:PORT. Installs the
#                      rspamd package with apt-get when it is missing (root
#                      only). Waits at most 60 s for pong; says on stderr how
#                      long starting took. The very first start of a state
#                      dir compiles rspamd's TLD list (about 15 s); later
#                      ones load it from the state dir (about 1 s).
#   rspamd.sh stop     stop it (stopping a stopped rspamd is fine)
#   rspamd.sh status   print "running PID URL" (exit 0) or "stopped" (exit 3)
#   rspamd.sh address  print the URL, running or not
#
# As root, rspamd runs as _rspamd; otherwise as the caller.
#
# Environment:
#   MXGUARD_ENGINES_DIR  parent of the state dir (default /var/cache/mxguard-e2e/engines);
#                        rspamd's state is in its subdirectory rspamd/
#   RSPAMD_PORT          the normal worker's TCP port on 127.0.0.1 (default
#                        11343; the package's own are 11332-11335)
set -euo pipefail

HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
ENGINE=rspamd
PORT=${RSPAMD_PORT:-11343}
BIN=/usr/bin/rspamd
PKG=rspamd
LOGS=(rspamd.log rspamd.out)
USER_AS_ROOT=_rspamd # the package's
START_WAIT=60        # seconds
USAGE="rspamd.sh start | stop | status | address"

# Modules switched off with "enabled = false": they look names up in DNS
# (blocklists, SPF, DKIM keys, DMARC, ASN, HELO/MX checks), ask rspamd.com's
# fuzzy servers, or load their maps from the network. The modules that need
# Redis switch themselves off, as no Redis is configured.
DISABLED="rbl surbl emails spf dkim dmarc arc asn hfilter mx_check fuzzy_check
	multimap whitelist phishing reputation rspamd_update"

# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$HERE/lib.sh"

address() { echo "http://127.0.0.1:$PORT"; }

# ping_engine: the normal worker answers GET /ping with "pong"
ping_engine() { [[ $(ask 'GET /ping HTTP/1.0\r\n\r\n' '') == "HTTP/1."?" 200"*pong* ]]; }

is_engine() { [ "$(readlink "/proc/$1/exe" 2>/dev/null)" = "$BIN" ]; }

# write_config: $LOCAL_CONFDIR, rewritten on every start. The databases in
# db/ (compiled TLD and regexp caches) stay: they make later starts fast.
write_config() {
	rm -rf "$STATE/conf"
	mkdir -p "$STATE/db"
	cp -r "$HERE/rspamd" "$STATE/conf"
	local m
	for m in $DISABLED; do
		echo 'enabled = false;' >"$STATE/conf/local.d/$m.conf"
	done
}

launch() {
	write_config
	as_user # not even rspamd's main process is root
	local t0
	t0=$(now)
	# rspamd forks once its configuration is loaded and the parent
	# returns. Its output goes to a file, not to our caller's pipe (a test
	# waiting for EOF would wait for rspamd), and it must not inherit the
	# lock.
	"${AS[@]}" "$BIN" -c "$STATE/conf/rspamd.conf" \
		--var=CONFDIR=/etc/rspamd --var=LOCAL_CONFDIR="$STATE/conf" \
		--var=RUNDIR="$STATE" --var=DBDIR="$STATE/db" --var=LOGDIR="$STATE" \
		--var=PORT="$PORT" \
		</dev/null >>"$STATE/rspamd.out" 2>&1 9>&- ||
		fail_log "rspamd exited with status $?"
	await_ping "$t0" starting ||
		fail_log "rspamd did not answer /ping on 127.0.0.1:$PORT within ${START_WAIT}s"
}

# starting: rspamd runs
starting() { our_pid >/dev/null || fail_log "rspamd is not running"; }

main "$@"
