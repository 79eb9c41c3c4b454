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
STATE=${MXGUARD_ENGINES_DIR:-/var/cache/mxguard-e2e/engines}/rspamd
PORT=${RSPAMD_PORT:-11343}
RSPAMD=/usr/bin/rspamd
USER_AS_ROOT=_rspamd # the package's
START_WAIT=60        # seconds

# Modules switched off with "enabled = false": they look names up in DNS
# (blocklists, SPF, DKIM keys, DMARC, ASN, HELO/MX checks), ask rspamd.com's
# fuzzy servers, or load their maps from the network. The modules that need
# Redis switch themselves off, as no Redis is configured.
DISABLED="rbl surbl emails spf dkim dmarc arc asn hfilter mx_check fuzzy_check
	multimap whitelist phishing reputation rspamd_update"

say() { echo "rspamd.sh: $*" >&2; }
die() {
	say "$*"
	exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

# fail_log MESSAGE: die, showing the end of rspamd's log and output, where
# rspamd says why it did not start.
fail_log() {
	say "$1; the end of $STATE/rspamd.log and rspamd.out:"
	tail -n 20 "$STATE/rspamd.log" "$STATE/rspamd.out" 2>/dev/null | sed 's/^/  | /' >&2
	exit 1
}

address() { echo "http://127.0.0.1:$PORT"; }

# ping_rspamd: the normal worker answers GET /ping with "pong" within 2 s
ping_rspamd() {
	local reply
	reply=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" &&
		printf "GET /ping HTTP/1.0\r\n\r\n" >&3 && cat <&3' _ "$PORT" 2>/dev/null) || true
	[[ $reply == "HTTP/1."?" 200"*pong* ]]
}

# alive PID: the process exists and is not a zombie (an orphaned daemon's
# parent is init, which in some containers never reaps it)
alive() {
	local state
	state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[[ $state != Z* ]]
}

# our_pid: the pid in our pid file, if that process is a living rspamd
our_pid() {
	local pid
	pid=$(cat "$STATE/rspamd.pid" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$RSPAMD" ] && alive "$pid" || return 1
	echo "$pid"
}

stop_rspamd() {
	local pid i
	pid=$(our_pid) || { rm -f "$STATE/rspamd.pid"; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do # 10 s, then no more asking
		alive "$pid" || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	rm -f "$STATE/rspamd.pid"
}

# keep package scripts from starting the packaged rspamd while apt runs;
# only a policy file we created ourselves is removed again
with_policy_rc_d() {
	local made=0 rc=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\n# mxguard rspamd.sh: start no services\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		made=1
	fi
	"$@" || rc=$?
	if [ "$made" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
	return "$rc"
}

install_rspamd() {
	[ "$(id -u)" -eq 0 ] || die "$RSPAMD is missing; install rspamd as root (apt-get install rspamd)"
	say "installing rspamd"
	local log=$STATE/apt.log apt=(apt-get -q -y -o DPkg::Lock::Timeout=600)
	export DEBIAN_FRONTEND=noninteractive
	if ! with_policy_rc_d "${apt[@]}" install --no-install-recommends rspamd >"$log" 2>&1; then
		# stale package lists: the mirror dropped that version
		"${apt[@]}" update >>"$log" 2>&1 || true
		with_policy_rc_d "${apt[@]}" install --no-install-recommends rspamd >>"$log" 2>&1 ||
			{ tail -n 20 "$log" >&2; die "apt-get install rspamd failed"; }
	fi
	[ -x "$RSPAMD" ] || die "rspamd is installed but $RSPAMD is not there"
}

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

cmd_start() {
	mkdir -p "$STATE"
	# one start at a time: test packages run in parallel
	exec 9>"$STATE/lock"
	flock -w 120 9 || die "another rspamd.sh holds $STATE/lock for over 120 s"
	if ping_rspamd; then
		address
		return
	fi
	[ -x "$RSPAMD" ] || install_rspamd
	stop_rspamd # ours, if it runs but does not answer
	write_config
	local as=()
	if [ "$(id -u)" -eq 0 ]; then
		# Not root, not even the main process. The port is unprivileged,
		# so nothing needs root.
		chown -R "$USER_AS_ROOT:" "$STATE"
		as=(setpriv --reuid="$USER_AS_ROOT" --regid="$USER_AS_ROOT" --init-groups)
	fi
	local t0 i
	t0=$(now)
	# rspamd forks once its configuration is loaded and the parent
	# returns. Its output goes to a file, not to our caller's pipe (a test
	# waiting for EOF would wait for rspamd), and it must not inherit the
	# lock.
	"${as[@]}" "$RSPAMD" -c "$STATE/conf/rspamd.conf" \
		--var=CONFDIR=/etc/rspamd --var=LOCAL_CONFDIR="$STATE/conf" \
		--var=RUNDIR="$STATE" --var=DBDIR="$STATE/db" --var=LOGDIR="$STATE" \
		--var=PORT="$PORT" \
		</dev/null >>"$STATE/rspamd.out" 2>&1 9>&- ||
		fail_log "rspamd exited with status $?"
	for ((i = 0; i < START_WAIT * 10; i++)); do
		if ping_rspamd; then
			say "rspamd started in $(since "$t0")"
			address
			return
		fi
		our_pid >/dev/null || fail_log "rspamd is not running"
		sleep 0.1
	done
	fail_log "rspamd did not answer /ping on 127.0.0.1:$PORT within ${START_WAIT}s"
}

cmd_status() {
	local pid
	if pid=$(our_pid) && ping_rspamd; then
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
	flock -w 120 9 || die "another rspamd.sh holds $STATE/lock for over 120 s"
	stop_rspamd
	;;
status) cmd_status ;;
address) address ;;
*) die "usage: rspamd.sh start | stop | status | address" ;;
esac
