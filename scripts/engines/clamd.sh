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
ENGINE=clamd
PORT=${CLAMD_PORT:-13310}
BIN=/usr/sbin/clamd
PKG=clamav-daemon
LOGS=(clamd.out) # its log in the foreground, and its errors
START_WAIT=30    # seconds
USAGE="clamd.sh start [inet|unix] | stop | status | address [inet|unix]"
SIGS=$HERE/clamd-test.ndb

# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$HERE/lib.sh"

address() {
	case ${1:-inet} in
	inet) echo "inet:127.0.0.1:$PORT" ;;
	unix) echo "unix:$STATE/clamd.sock" ;;
	*) die "unknown address kind '$1' (want inet or unix)" ;;
	esac
}

# ping_engine: clamd answers PONG (replies to z-commands end with a NUL byte)
ping_engine() { [ "$(ask 'zPING\0' '')" = PONG ]; }

is_engine() { [ "$(cat "/proc/$1/comm" 2>/dev/null)" = clamd ]; }

# port_taken: something accepts connections on the port
# shellcheck disable=SC2016 # $1 is the inner shell's
port_taken() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$PORT" 2>/dev/null; }

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

launch() {
	# clamd does not give up when it cannot bind its TCP socket
	port_taken && die "127.0.0.1:$PORT is taken by a program that is not clamd; set CLAMD_PORT"
	write_config
	local t0 pid
	t0=$(now)
	mv -f "$STATE/clamd.out" "$STATE/clamd.out.old" 2>/dev/null || true
	# clamd runs in the foreground of its own session, started by us: its
	# own daemon mode can kill itself with SIGINT when the signatures load
	# quickly (the child signals "ready" before the parent is listening).
	# Its output goes to a file, not to our caller's pipe (a test waiting
	# for EOF would wait for clamd), and it must not inherit the lock.
	setsid "$BIN" --config-file="$STATE/clamd.conf" </dev/null >>"$STATE/clamd.out" 2>&1 9>&- &
	pid=$!
	if ! await_ping "$t0" starting "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		fail_log "clamd did not answer PING on 127.0.0.1:$PORT within ${START_WAIT}s"
	fi
}

# starting PID: clamd, our child PID, has neither exited nor reported an error
starting() {
	# gone, or a zombie not reaped yet
	if ! alive "$1"; then
		local rc=0
		wait "$1" || rc=$?
		fail_log "clamd exited with status $rc"
	fi
	if grep -qs 'ERROR: ' "$STATE/clamd.out"; then
		kill -TERM "$1" 2>/dev/null || true
		fail_log "clamd reported an error"
	fi
}

main "$@"
