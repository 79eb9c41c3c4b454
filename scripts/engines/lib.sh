# shellcheck shell=bash
# What clamd.sh, spamd.sh and rspamd.sh share: the start|stop|status|address
# interface around one private engine on loopback, its pid file, lock and
# package. Each script sets, before sourcing this file:
#
#   ENGINE        the engine's name: clamd, spamd or rspamd (the script is
#                 ENGINE.sh, the pid file STATE/ENGINE.pid)
#   PORT          its TCP port on 127.0.0.1
#   BIN           its binary
#   PKG           the Debian package that has BIN
#   LOGS          the files in STATE that say why it did not start
#   START_WAIT    how many seconds a start waits for it to answer
#   USER_AS_ROOT  the user it runs as when we are root (not clamd)
#   USAGE         the usage line
#
# and defines:
#
#   address [ARG]  print its address
#   ping_engine    it answers on PORT
#   is_engine PID  PID is a process of BIN
#   launch         start it, now that it is not running; return once it
#                  answers (await_ping)
#
# then runs main "$@". STATE, the engine's state dir, is set here.

STATE=${MXGUARD_ENGINES_DIR:-/var/cache/mxguard-e2e/engines}/$ENGINE

say() { echo "$ENGINE.sh: $*" >&2; }
die() {
	say "$*"
	exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

# fail_log MESSAGE: die, showing the end of the engine's log and output,
# where it says why it did not start.
fail_log() {
	local what=$STATE/${LOGS[0]} f
	for f in "${LOGS[@]:1}"; do what+=" and $f"; done
	say "$1; the end of $what:"
	tail -n 20 "${LOGS[@]/#/$STATE/}" 2>/dev/null | sed 's/^/  | /' >&2
	exit 1
}

# ask REQUEST DELIM: send REQUEST (a printf format) to 127.0.0.1:PORT and
# print the reply up to the byte DELIM ('' reads to a NUL byte or the end),
# all within 2 s (bash's /dev/tcp)
ask() {
	# shellcheck disable=SC2016 # $1, $2 and $3 are the inner shell's
	timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "$2" >&3 &&
		{ IFS= read -r -d "$3" r <&3; printf %s "$r"; }' _ "$PORT" "$1" "$2" 2>/dev/null || true
}

# alive PID: the process exists and is not a zombie (an orphaned daemon's
# parent is init, which in some containers never reaps it). The state is
# the field after the command name, which is in parentheses.
alive() {
	local stat
	{ read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
	[[ ${stat##*) } != Z* ]]
}

# our_pid: the pid in our pid file, if that process is a living engine
our_pid() {
	local pid
	pid=$(cat "$STATE/$ENGINE.pid" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] && is_engine "$pid" && alive "$pid" || return 1
	echo "$pid"
}

stop_engine() {
	local pid i
	pid=$(our_pid) || { rm -f "$STATE/$ENGINE.pid"; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do # 10 s, then no more asking
		alive "$pid" || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	rm -f "$STATE/$ENGINE.pid"
}

# lock_state: hold STATE/lock, on fd 9, until the script ends. One start or
# stop at a time: test packages run in parallel.
lock_state() {
	mkdir -p "$STATE"
	exec 9>"$STATE/lock"
	flock -w 120 9 || die "another $ENGINE.sh holds $STATE/lock for over 120 s"
}

# keep package scripts from starting the packaged services (clamd and
# freshclam, spamd, rspamd) while apt runs; only a policy file we created
# ourselves is removed again
with_policy_rc_d() {
	local made=0 rc=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\n# mxguard %s.sh: start no services\nexit 101\n' "$ENGINE" >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		made=1
	fi
	"$@" || rc=$?
	if [ "$made" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
	return "$rc"
}

install_engine() {
	[ "$(id -u)" -eq 0 ] || die "$BIN is missing; install $PKG as root (apt-get install $PKG)"
	say "installing $PKG"
	local log=$STATE/apt.log apt=(apt-get -q -y -o DPkg::Lock::Timeout=600)
	export DEBIAN_FRONTEND=noninteractive
	if ! with_policy_rc_d "${apt[@]}" install --no-install-recommends "$PKG" >"$log" 2>&1; then
		# stale package lists: the mirror dropped that version
		"${apt[@]}" update >>"$log" 2>&1 || true
		with_policy_rc_d "${apt[@]}" install --no-install-recommends "$PKG" >>"$log" 2>&1 ||
			{ tail -n 20 "$log" >&2; die "apt-get install $PKG failed"; }
	fi
	[ -x "$BIN" ] || die "$PKG is installed but $BIN is not there"
}

# as_user: AS is the prefix of the command that starts the engine. As root
# it is setpriv to USER_AS_ROOT, who then owns the state dir: the engine is
# not root at all, its port is unprivileged, so nothing needs root.
# Otherwise the engine runs as the caller and AS is empty.
# shellcheck disable=SC2034 # AS is for the scripts
as_user() {
	AS=()
	if [ "$(id -u)" -eq 0 ]; then
		chown -R "$USER_AS_ROOT:" "$STATE"
		AS=(setpriv --reuid="$USER_AS_ROOT" --regid="$USER_AS_ROOT" --init-groups)
	fi
}

# await_ping T0 CHECK...: wait at most START_WAIT s for the engine to
# answer, then say how long starting took since T0. Between pings it runs
# CHECK with the number of pings so far added; CHECK calls fail_log when
# the engine will not answer. Fails when the time is up.
await_ping() {
	local t0=$1 i end=$((SECONDS + START_WAIT))
	shift
	for ((i = 0; SECONDS < end; i++)); do
		if ping_engine; then
			say "$ENGINE started in $(since "$t0")"
			return 0
		fi
		"$@" "$i"
		sleep 0.1
	done
	return 1
}

# cmd_start [ARG]: start the engine unless it already answers, then print
# its address (ARG is address's)
cmd_start() {
	address "$@" >/dev/null # reject a bad argument before doing anything
	lock_state
	if ping_engine; then
		address "$@"
		return
	fi
	[ -x "$BIN" ] || install_engine
	stop_engine # ours, if it runs but does not answer
	launch
	address "$@"
}

cmd_status() {
	local pid
	if pid=$(our_pid) && ping_engine; then
		echo "running $pid $(address)"
		return 0
	fi
	echo stopped
	return 3
}

main() {
	case ${1:-} in
	start) cmd_start "${@:2:1}" ;;
	stop)
		lock_state
		stop_engine
		;;
	status) cmd_status ;;
	address) address "${@:2:1}" ;;
	*) die "usage: $USAGE" ;;
	esac
}
