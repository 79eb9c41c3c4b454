#!/usr/bin/env bash
# A private ClamAV daemon on loopback, for mxguard's tests. It runs Debian's
# /usr/sbin/clamd (package clamav-daemon) with its own clamd.conf, sockets,
# pid file, log and signature directory, all under its state dir; the
# host's clamav-daemon service and /var/lib/clamav are never used. Its only
# signatures are clamd-test.ndb beside this script (the EICAR test file);
# nothing is downloaded and freshclam is never run.
#
#   clamd.sh start [inet|unix]
#       start clamd unless it already answers PING, then print its address
#       (inet:127.0.0.1:PORT by default, or unix:STATE/clamd.sock). Installs
#       clamav-daemon with apt-get when the binary is missing (root only).
#       Waits at most 30 s for PONG; says on stderr how long starting took.
#   clamd.sh stop               stop it (stopping a stopped clamd is fine)
#   clamd.sh status             print "running PID ADDRESS" (exit 0) or "stopped" (exit 3)
#   clamd.sh address [inet|unix]  print the address, running or not
#
# Environment:
#   MXGUARD_ENGINES_DIR  parent of the state dir (default /var/cache/mxguard-e2e/engines);
#                        clamd's state is in its subdirectory clamd/
#   CLAMD_PORT           the TCP port on 127.0.0.1 (default 13310)
set -euo pipefail

HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
STATE=${MXGUARD_ENGINES_DIR:-/var/cache/mxguard-e2e/engines}/clamd
PORT=${CLAMD_PORT:-13310}
CLAMD=/usr/sbin/clamd
SIGS=$HERE/clamd-test.ndb
START_WAIT=30 # seconds

say() { echo "clamd.sh: $*" >&2; }
die() {
	say "$*"
	exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

# fail_log MESSAGE: die, showing the end of clamd's output (its log in
# the foreground, and its errors), where clamd says why it did not start.
fail_log() {
	say "$1; the end of $STATE/clamd.out:"
	tail -n 20 "$STATE/clamd.out" 2>/dev/null | sed 's/^/  | /' >&2
	exit 1
}

address() {
	case ${1:-inet} in
	inet) echo "inet:127.0.0.1:$PORT" ;;
	unix) echo "unix:$STATE/clamd.sock" ;;
	*) die "unknown address kind '$1' (want inet or unix)" ;;
	esac
}

# ping: clamd answers PONG on its TCP socket within 2 s (bash's /dev/tcp;
# replies to z-commands end with a NUL byte)
ping_clamd() {
	local reply
	# shellcheck disable=SC2016 # $1 is the inner shell's
	reply=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "zPING\0" >&3 &&
		IFS= read -r -d "" r <&3 && printf %s "$r"' _ "$PORT" 2>/dev/null) || true
	[ "$reply" = PONG ]
}

# port_taken: something accepts connections on the port
# shellcheck disable=SC2016 # $1 is the inner shell's
port_taken() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$PORT" 2>/dev/null; }

# our_pid: the pid in our pid file, if that process is a clamd
our_pid() {
	local pid
	pid=$(cat "$STATE/clamd.pid" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = clamd ] && alive "$pid" || return 1
	echo "$pid"
}

# alive PID: the process exists and is not a zombie (an orphaned daemon's
# parent is init, which in some containers never reaps it)
alive() {
	[ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null || echo Z)" != Z ]
}

stop_clamd() {
	local pid i
	pid=$(our_pid) || { rm -f "$STATE/clamd.pid"; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do # 10 s, then no more asking
		alive "$pid" || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	rm -f "$STATE/clamd.pid"
}

# keep package scripts from starting the packaged clamd and freshclam while
# apt runs; only a policy file we created ourselves is removed again
with_policy_rc_d() {
	local made=0 rc=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		made=1
	fi
	"$@" || rc=$?
	if [ "$made" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
	return "$rc"
}

install_clamd() {
	[ "$(id -u)" -eq 0 ] || die "$CLAMD is missing; install clamav-daemon as root (apt-get install clamav-daemon)"
	say "installing clamav-daemon"
	local log=$STATE/apt.log apt=(apt-get -q -y -o DPkg::Lock::Timeout=600)
	export DEBIAN_FRONTEND=noninteractive
	if ! with_policy_rc_d "${apt[@]}" install --no-install-recommends clamav-daemon >"$log" 2>&1; then
		# stale package lists: the mirror dropped that version
		"${apt[@]}" update >>"$log" 2>&1 || true
		with_policy_rc_d "${apt[@]}" install --no-install-recommends clamav-daemon >>"$log" 2>&1 ||
			{ tail -n 20 "$log" >&2; die "apt-get install clamav-daemon failed"; }
	fi
	[ -x "$CLAMD" ] || die "clamav-daemon is installed but $CLAMD is not there"
}

write_config() {
	mkdir -p "$STATE/db" "$STATE/tmp"
	rm -f "$STATE"/db/*
	cp "$SIGS" "$STATE/db/"
	cat >"$STATE/clamd.conf" <<EOF
# Written by scripts/engines/clamd.sh on every start; edits are lost.
Foreground yes
PidFile $STATE/clamd.pid
LogFile $STATE/clamd.log
LogTime yes
LogFileMaxSize 10M
LocalSocket $STATE/clamd.sock
FixStaleSocket yes
TCPSocket $PORT
TCPAddr 127.0.0.1
DatabaseDirectory $STATE/db
TemporaryDirectory $STATE/tmp
OfficialDatabaseOnly no
SelfCheck 0
ScanMail yes
StreamMaxLength 25M
MaxThreads 8
ReadTimeout 30
CommandReadTimeout 10
EOF
}

cmd_start() {
	local kind=${1:-inet}
	address "$kind" >/dev/null # reject a bad kind before doing anything
	mkdir -p "$STATE"
	# one start at a time: test packages run in parallel
	exec 9>"$STATE/lock"
	flock -w 120 9 || die "another clamd.sh holds $STATE/lock for over 120 s"
	if ping_clamd; then
		address "$kind"
		return
	fi
	[ -x "$CLAMD" ] || install_clamd
	stop_clamd # ours, if it runs but does not answer
	# clamd does not give up when it cannot bind its TCP socket
	port_taken && die "127.0.0.1:$PORT is taken by a program that is not clamd; set CLAMD_PORT"
	write_config
	local t0 pid rc end=$((SECONDS + START_WAIT))
	t0=$(now)
	mv -f "$STATE/clamd.out" "$STATE/clamd.out.old" 2>/dev/null || true
	# clamd runs in the foreground of its own session, started by us: its
	# own daemon mode can kill itself with SIGINT when the signatures load
	# quickly (the child signals "ready" before the parent is listening).
	# Its output goes to a file, not to our caller's pipe (a test waiting
	# for EOF would wait for clamd), and it must not inherit the lock.
	setsid "$CLAMD" --config-file="$STATE/clamd.conf" </dev/null >>"$STATE/clamd.out" 2>&1 9>&- &
	pid=$!
	while ((SECONDS < end)); do
		if ping_clamd; then
			say "clamd started in $(since "$t0")"
			address "$kind"
			return
		fi
		# gone, or a zombie not reaped yet
		if [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || echo Z)" = Z ]; then
			rc=0
			wait "$pid" || rc=$?
			fail_log "clamd exited with status $rc"
		fi
		if grep -qs 'ERROR: ' "$STATE/clamd.out"; then
			kill -TERM "$pid" 2>/dev/null || true
			fail_log "clamd reported an error"
		fi
		sleep 0.1
	done
	kill -TERM "$pid" 2>/dev/null || true
	fail_log "clamd did not answer PING on 127.0.0.1:$PORT within ${START_WAIT}s"
}

cmd_status() {
	local pid
	if pid=$(our_pid) && ping_clamd; then
		echo "running $pid $(address inet)"
		return 0
	fi
	echo stopped
	return 3
}

case ${1:-} in
start) cmd_start "${2:-inet}" ;;
stop)
	mkdir -p "$STATE"
	exec 9>"$STATE/lock"
	flock -w 120 9 || die "another clamd.sh holds $STATE/lock for over 120 s"
	stop_clamd
	;;
status) cmd_status ;;
address) address "${2:-inet}" ;;
*) die "usage: clamd.sh start [inet|unix] | stop | status | address [inet|unix]" ;;
esac
