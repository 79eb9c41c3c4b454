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
STATE=${MXGUARD_ENGINES_DIR:-/var/cache/mxguard-e2e/engines}/spamd
PORT=${SPAMD_PORT:-17830}
SPAMD=/usr/sbin/spamd
USER_AS_ROOT=debian-spamd # the package's
START_WAIT=60             # seconds; compiling the rules takes a few

say() { echo "spamd.sh: $*" >&2; }
die() {
	say "$*"
	exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

# fail_log MESSAGE: die, showing the end of spamd's log and output, where
# spamd says why it did not start.
fail_log() {
	say "$1; the end of $STATE/spamd.log and spamd.out:"
	tail -n 20 "$STATE/spamd.log" "$STATE/spamd.out" 2>/dev/null | sed 's/^/  | /' >&2
	exit 1
}

address() { echo "inet:127.0.0.1:$PORT"; }

# ping_spamd: spamd answers "SPAMD/1.5 0 PONG" on its socket within 2 s
ping_spamd() {
	local reply
	reply=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" &&
		printf "PING SPAMC/1.5\r\n\r\n" >&3 && IFS= read -r r <&3 && printf %s "$r"' _ "$PORT" 2>/dev/null) || true
	[[ $reply == SPAMD/*" 0 PONG"* ]]
}

# alive PID: the process exists and is not a zombie (an orphaned daemon's
# parent is init, which in some containers never reaps it)
alive() {
	local state
	state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[[ $state != Z* ]]
}

# our_pid: the pid in our pid file, if that process is a living spamd
our_pid() {
	local pid
	pid=$(cat "$STATE/spamd.pid" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = spamd ] && alive "$pid" || return 1
	echo "$pid"
}

stop_spamd() {
	local pid i
	pid=$(our_pid) || { rm -f "$STATE/spamd.pid"; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do # 10 s, then no more asking
		alive "$pid" || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	rm -f "$STATE/spamd.pid"
}

# keep package scripts from starting the packaged spamd while apt runs;
# only a policy file we created ourselves is removed again
with_policy_rc_d() {
	local made=0 rc=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\n# mxguard spamd.sh: start no services\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		made=1
	fi
	"$@" || rc=$?
	if [ "$made" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
	return "$rc"
}

install_spamd() {
	[ "$(id -u)" -eq 0 ] || die "$SPAMD is missing; install spamd as root (apt-get install spamd)"
	say "installing spamd"
	local log=$STATE/apt.log apt=(apt-get -q -y -o DPkg::Lock::Timeout=600)
	export DEBIAN_FRONTEND=noninteractive
	if ! with_policy_rc_d "${apt[@]}" install --no-install-recommends spamd >"$log" 2>&1; then
		# stale package lists: the mirror dropped that version
		"${apt[@]}" update >>"$log" 2>&1 || true
		with_policy_rc_d "${apt[@]}" install --no-install-recommends spamd >>"$log" 2>&1 ||
			{ tail -n 20 "$log" >&2; die "apt-get install spamd failed"; }
	fi
	[ -x "$SPAMD" ] || die "spamd is installed but $SPAMD is not there"
}

# write_config: the site directory, rewritten on every start: Debian's
# plugin lists (*.pre, which the package keeps in /etc/spamassassin) and
# our local.cf
write_config() {
	rm -rf "$STATE/site"
	mkdir -p "$STATE/site" "$STATE/home"
	cp /etc/spamassassin/*.pre "$STATE/site/"
	cp "$HERE/spamd/local.cf" "$STATE/site/local.cf"
}

cmd_start() {
	mkdir -p "$STATE"
	# one start at a time: test packages run in parallel
	exec 9>"$STATE/lock"
	flock -w 120 9 || die "another spamd.sh holds $STATE/lock for over 120 s"
	if ping_spamd; then
		address
		return
	fi
	[ -x "$SPAMD" ] || install_spamd
	stop_spamd # ours, if it runs but does not answer
	write_config
	local as=()
	if [ "$(id -u)" -eq 0 ]; then
		# Not root, not even the parent (spamd -u would keep root there).
		# The port is unprivileged, so nothing needs root.
		chown -R "$USER_AS_ROOT:" "$STATE"
		as=(setpriv --reuid="$USER_AS_ROOT" --regid="$USER_AS_ROOT" --init-groups)
	fi
	local t0 i
	t0=$(now)
	# -d: spamd forks and the parent returns at once. Its output goes to a
	# file, not to our caller's pipe (a test waiting for EOF would wait for
	# spamd), and it must not inherit the lock. HOME is where SpamAssassin
	# would keep per-user state; -H sets the same for helper programs.
	env HOME="$STATE/home" "${as[@]}" "$SPAMD" -d -L -x \
		--listen="127.0.0.1:$PORT" --allowed-ips=127.0.0.1 \
		--max-children=4 --min-children=1 --min-spare=1 --max-spare=2 \
		--siteconfigpath="$STATE/site" --helper-home-dir="$STATE/home" \
		--pidfile="$STATE/spamd.pid" --syslog="$STATE/spamd.log" \
		</dev/null >>"$STATE/spamd.out" 2>&1 9>&- ||
		fail_log "spamd exited with status $?"
	for ((i = 0; i < START_WAIT * 10; i++)); do
		if ping_spamd; then
			say "spamd started in $(since "$t0")"
			address
			return
		fi
		# the pid file appears once spamd has forked
		if ((i > 50)) && ! our_pid >/dev/null; then
			fail_log "spamd is not running"
		fi
		sleep 0.1
	done
	fail_log "spamd did not answer PING on 127.0.0.1:$PORT within ${START_WAIT}s"
}

cmd_status() {
	local pid
	if pid=$(our_pid) && ping_spamd; then
		echo "running $pid $(address)"
		return 0
	fi
	echo stopped
	return 3
}

case ${1:-} in
start) cmd_start ;;
stop)
	mkdir -p "$STATE"
	exec 9>"$STATE/lock"
	flock -w 120 9 || die "another spamd.sh holds $STATE/lock for over 120 s"
	stop_spamd
	;;
status) cmd_status ;;
address) address ;;
*) die "usage: spamd.sh start | stop | status | address" ;;
esac
