#!/usr/bin/env bash
# A private SpamAssassin spamd on loopback, for mxguard's tests. It runs
# Debian's /usr/sbin/spamd (package spamd) with Debian's rules
# (/usr/share/spamassassin; sa-update is never run), network tests off
# (-L: no DNS blocklists, Razor or Pyzor), no Bayes and no user
# preferences. Its site configuration is spamd/local.cf beside this script;
# its pid file, log and home are under its state dir. The host's spamd
# service and /etc/spamassassin/local.cf are never used.
#
#   spamd.sh start    start spamd unless it already answers PING, then print
#                     its address, inet:127.0.0.1:PORT. Installs the spamd
#                     package with apt-get when it is missing (root only).
#                     Waits at most 60 s for PONG; says on stderr how long
#                     starting took.
#   spamd.sh stop     stop it (stopping a stopped spamd is fine)
#   spamd.sh status   print "running PID ADDRESS" (exit 0) or "stopped" (exit 3)
#   spamd.sh address  print the address, running or not
#
# As root, spamd runs as debian-spamd; otherwise as the caller.
#
# Environment:
#   MXGUARD_ENGINES_DIR  parent of the state dir (default /var/cache/mxguard-e2e/engines);
#                        spamd's state is in its subdirectory spamd/
#   SPAMD_PORT           the TCP port on 127.0.0.1 (default 17830; the
#                        package's own is 783)
set -euo pipefail

HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
ENGINE=spamd
PORT=${SPAMD_PORT:-17830}
BIN=/usr/sbin/spamd
PKG=spamd
LOGS=(spamd.log spamd.out)
USER_AS_ROOT=debian-spamd # the package's
START_WAIT=60             # seconds; compiling the rules takes a few
USAGE="spamd.sh start | stop | status | address"

# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$HERE/lib.sh"

address() { echo "inet:127.0.0.1:$PORT"; }

# ping_engine: spamd answers "SPAMD/1.5 0 PONG"
ping_engine() { [[ $(ask 'PING SPAMC/1.5\r\n\r\n' $'\n') == SPAMD/*" 0 PONG"* ]]; }

is_engine() { [ "$(cat "/proc/$1/comm" 2>/dev/null)" = spamd ]; }

# write_config: the site directory, rewritten on every start: Debian's
# plugin lists (*.pre, which the package keeps in /etc/spamassassin) and
# our local.cf
write_config() {
	rm -rf "$STATE/site"
	mkdir -p "$STATE/site" "$STATE/home"
	cp /etc/spamassassin/*.pre "$STATE/site/"
	cp "$HERE/spamd/local.cf" "$STATE/site/local.cf"
}

launch() {
	write_config
	as_user # not even spamd's parent is root, which spamd -u would keep
	local t0
	t0=$(now)
	# -d: spamd forks and the parent returns at once. Its output goes to a
	# file, not to our caller's pipe (a test waiting for EOF would wait for
	# spamd), and it must not inherit the lock. HOME is where SpamAssassin
	# would keep per-user state; -H sets the same for helper programs.
	env HOME="$STATE/home" "${AS[@]}" "$BIN" -d -L -x \
		--listen="127.0.0.1:$PORT" --allowed-ips=127.0.0.1 \
		--max-children=4 --min-children=1 --min-spare=1 --max-spare=2 \
		--siteconfigpath="$STATE/site" --helper-home-dir="$STATE/home" \
		--pidfile="$STATE/spamd.pid" --syslog="$STATE/spamd.log" \
		</dev/null >>"$STATE/spamd.out" 2>&1 9>&- ||
		fail_log "spamd exited with status $?"
	await_ping "$t0" starting ||
		fail_log "spamd did not answer PING on 127.0.0.1:$PORT within ${START_WAIT}s"
}

# starting PINGS: spamd runs, asked after 50 pings (about 5 s): the pid file
# appears only once spamd has forked
starting() {
	if (($1 > 50)) && ! our_pid >/dev/null; then
		fail_log "spamd is not running"
	fi
}

main "$@"
