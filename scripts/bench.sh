#!/usr/bin/env bash
# "make bench": mxguard's throughput and latency beside the milters people
# run for the same work, all on loopback, each fed the same messages by
# bin/mxguard-bench (one message per milter connection, as an MTA does) at
# several concurrencies. Then the memory tests, for mxguard and the no-op
# milter, each on a fresh process: one big generated message (BENCH_BIG),
# and BENCH_IDLE sessions held open at once in the middle of DATA, as slow
# clients do. Prints the tables and the performance and memory targets of
# issue 8 (PASS or MISS), and writes the raw results as JSON lines.
#
# The contestants, each a private instance with its own configuration
# (scripts/bench/), pid file and port in the state dir, never the packages'
# services:
#   noop           bin/mxguard-bench -noop: accepts everything, the ceiling
#   mxguard        SPF, relay, DKIM, DMARC and the SQLite log; no engines
#   opendkim       Debian's OpenDKIM, verify only (Mode v), keys cached
#                  (QueryCache, as mxguard caches DNS answers)
#   opendmarc      Debian's OpenDMARC, doing its own SPF (SPFSelfValidate)
#   mxguard+clamd  mxguard as above plus the virus scan by clamd
#   clamav-milter  Debian's clamav-milter with the same clamd
# The clamd is scripts/engines/clamd.sh's (only the EICAR signature), on a
# port of its own. Every name resolves through one DNS server,
# bin/mxguard-testdns serving testdata/bench/zone.txt on BENCH_DNS:53: mxguard
# is told so in its configuration, opendkim by Nameservers, and the peers run
# in a private mount namespace whose /etc/resolv.conf names it (the host's is
# never touched). opendkim's libunbound refuses names under "test." unless
# scripts/bench/unbound-test-zone.c, built here with gcc, is preloaded.
#
#   scripts/bench.sh      as root: installs what is missing (opendkim,
#                         opendmarc, clamav-milter, clamav-daemon, jq, gcc); expects
#                         bin/mxguard, bin/mxguard-bench, bin/mxguard-testdns
#
#   BENCH_DIR          state dir (default /var/cache/mxguard-bench; emptied first)
#   BENCH_DURATION     how long each run measures (default 2s)
#   BENCH_WARMUP       sent first and not measured, each run (default 500ms)
#   BENCH_ROUNDS       runs of each milter, message and concurrency (default
#                      3): the table has the median of each figure
#   BENCH_CONCURRENCY  concurrent connections (default "1 8 64")
#   BENCH_MILTERS      which contestants (default all: "noop mxguard opendkim
#                      opendmarc mxguard+clamd clamav-milter")
#   BENCH_MESSAGES     which messages (default all: "plain-2k newsletter-30k
#                      attachment-1m eicar")
#   BENCH_DNS          the DNS server's loopback address (default 127.0.0.153)
#   BENCH_PORT         first of six milter ports on 127.0.0.1 (default 24890)
#   BENCH_CLAMD_PORT   the bench's clamd (default 13330)
#   BENCH_CLAMD_SOCKET how both virus milters reach clamd: unix (default,
#                      clamd's local socket, as Debian sets up clamd and
#                      clamav-milter) or inet (TCP on BENCH_CLAMD_PORT)
#   BENCH_CORPUS       the messages and zone (default testdata/bench)
#   BENCH_IDLE         sessions held in DATA by the memory test (default
#                      1000; 0 skips the memory tests)
#   BENCH_HOLD         how long they are held (default 5s)
#   BENCH_BIG          the big message's size (default 100MB)
#
# The milters compared at one message and concurrency run one after another,
# in rounds (noop, mxguard, ..., then noop, mxguard, ... again), so that a
# machine that is slower for a minute is slower for all of them: on shared
# VMs the same binary's throughput drifts by a fifth or more within minutes.
#
# Everything it starts is stopped when it ends, however it ends. Each run is
# bounded (BENCH_DURATION plus a minute); the default plan (3 rounds of 60
# runs, then the memory tests, about half a minute) takes about ten minutes
# on 2 CPUs.
set -euo pipefail

cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-/var/cache/mxguard-bench}
BENCH_DURATION=${BENCH_DURATION:-2s}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-1 8 64}
BENCH_MILTERS=${BENCH_MILTERS:-noop mxguard opendkim opendmarc mxguard+clamd clamav-milter}
BENCH_MESSAGES=${BENCH_MESSAGES:-plain-2k newsletter-30k attachment-1m eicar}
BENCH_DNS=${BENCH_DNS:-127.0.0.153}
BENCH_PORT=${BENCH_PORT:-24890}
BENCH_CLAMD_PORT=${BENCH_CLAMD_PORT:-13330}
BENCH_CLAMD_SOCKET=${BENCH_CLAMD_SOCKET:-unix}
BENCH_IDLE=${BENCH_IDLE:-1000}
BENCH_HOLD=${BENCH_HOLD:-5s}
BENCH_BIG=${BENCH_BIG:-100MB}
BIN=${BIN:-bin}
CORPUS=${BENCH_CORPUS:-testdata/bench}
TEMPLATES=scripts/bench
STATE=$BENCH_DIR
RUN=$STATE/run
RESULTS=$STATE/results.jsonl
MEMORY=$STATE/memory.jsonl
TABLE=$STATE/results.txt
# The bench's own clamd, apart from the tests' (scripts/engines/clamd.sh).
export MXGUARD_ENGINES_DIR=$STATE/engines CLAMD_PORT=$BENCH_CLAMD_PORT

# The envelope of every message: an outside client SPF allows for
# news.bench.test, to a recipient of our organisation bench.test.
CLIENT_IP=192.0.2.10
CLIENT_NAME=mta.news.bench.test # the zone has its A and PTR records
MAIL_FROM=newsletter@news.bench.test
RCPT_TO=someone@bench.test

say() { echo "bench: $*" >&2; }
die() {
	say "$*"
	exit 1
}

# fail MESSAGE LOG: die, showing the end of LOG.
fail() {
	say "$1; the end of $2:"
	tail -n 20 "$2" 2>/dev/null | sed 's/^/  | /' >&2
	exit 1
}

# --- Contestants: port offset, and which mxguard row each is compared with.
port_of() {
	case $1 in
	noop) echo $((BENCH_PORT + 0)) ;;
	mxguard) echo $((BENCH_PORT + 1)) ;;
	mxguard+clamd) echo $((BENCH_PORT + 2)) ;;
	opendkim) echo $((BENCH_PORT + 3)) ;;
	opendmarc) echo $((BENCH_PORT + 4)) ;;
	clamav-milter) echo $((BENCH_PORT + 5)) ;;
	*) die "unknown milter '$1' in BENCH_MILTERS (want noop, mxguard, opendkim, opendmarc, mxguard+clamd, clamav-milter)" ;;
	esac
}

# plan: the runs in their order, "MILTER MESSAGE CONCURRENCY ROUND" per
# line: per message and concurrency, every milter once per round. The
# content-free milters get no EICAR (nothing in them looks at it); the virus
# milters get every message.
plan() {
	local m msg c round
	for msg in $BENCH_MESSAGES; do
		case $msg in plain-2k | newsletter-30k | attachment-1m | eicar) ;; *) die "unknown message '$msg' in BENCH_MESSAGES" ;; esac
		for c in $BENCH_CONCURRENCY; do
			for round in $(seq "$BENCH_ROUNDS"); do
				for m in $BENCH_MILTERS; do
					case $m in mxguard+clamd | clamav-milter) ;; *) [ "$msg" = eicar ] && continue ;; esac
					echo "$m $msg $c $round"
				done
			done
		done
	done
}

# --- Our processes: RUN/NAME.pid, each checked against its command line
# before it is signalled, so a reused pid is never someone else's process.

# ours PID: is PID alive and one of ours? Every command line we start names
# the state dir, except the no-op milter's, which names its port.
ours() {
	local cmdline
	cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
	[ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null || echo Z)" != Z ] || return 1
	[[ $cmdline == *"$STATE/"* || $cmdline == *"-noop -listen inet:127.0.0.1:$BENCH_PORT"* ]]
}

# stop NAME: stop the process in RUN/NAME.pid, TERM then (after 10 s) KILL.
stop() {
	local f=$RUN/$1.pid pid
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	if ours "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 100); do
			ours "$pid" || break
			sleep 0.1
		done
		ours "$pid" && kill -KILL "$pid" 2>/dev/null
	fi
	rm -f "$f"
}

stop_all() {
	local f
	for f in "$RUN"/*.pid; do
		[ -e "$f" ] || continue
		f=${f##*/}
		stop "${f%.pid}"
	done
	if [ -d "$MXGUARD_ENGINES_DIR/clamd" ]; then
		scripts/engines/clamd.sh stop || true
	fi
}

# listening IP PORT [tcp|udp]: does something listen there? Reads the
# kernel's tables; a probe connection would be a milter session of its own.
listening() {
	local hex table=/proc/net/${3:-tcp} state=0A
	[ "${3:-tcp}" = udp ] && state=07
	# shellcheck disable=SC2046,SC2183 # the four bytes, reversed, then the port
	hex=$(printf '%02X%02X%02X%02X:%04X' $(echo "$1" | tr . ' ' | awk '{ print $4, $3, $2, $1 }') "$2")
	awk -v a="$hex" -v s="$state" '$2 == a && $4 == s { found = 1 } END { exit !found }' "$table"
}

# start NAME PORT COMMAND...: start COMMAND in the background, its output in
# STATE/NAME.log (NAME-SUFFIX.log when the caller's $suffix is set), and wait
# (30 s at most) until it listens on 127.0.0.1:PORT.
start() {
	local name=$1 port=$2 pid log=$STATE/$1${suffix:+-$suffix}.log
	shift 2
	listening 127.0.0.1 "$port" && die "127.0.0.1:$port is already in use; set BENCH_PORT"
	"$@" </dev/null >"$log" 2>&1 &
	pid=$!
	echo "$pid" >"$RUN/$name.pid"
	for _ in $(seq 300); do
		listening 127.0.0.1 "$port" && return 0
		ours "$pid" || fail "$name exited" "$log"
		sleep 0.1
	done
	fail "$name did not listen on 127.0.0.1:$port within 30 s" "$log"
}

# "${in_ns[@]}" COMMAND...: COMMAND in a private mount namespace whose
# /etc/resolv.conf is STATE/resolv.conf (the bench DNS). unshare and sh exec
# it, so its pid is the one started.
# shellcheck disable=SC2016 # $1 and $@ are the inner shell's
in_ns=(unshare --mount --propagation private -- /bin/sh -c
	'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"' in_ns "$STATE/resolv.conf")

# config TEMPLATE OUT PORT: a peer's configuration, its @NAMES@ filled in.
config() {
	sed -e "s|@PORT@|$3|g" -e "s|@STATE@|$STATE|g" -e "s|@DNS_IP@|$BENCH_DNS|g" \
		-e "s|@CLAMD_SOCKET@|$clamav_milter_clamd|g" "$TEMPLATES/$1" >"$2"
	! grep -v '^#' "$2" | grep -q '@[A-Z_]*@' || die "$2: a @NAME@ is left unfilled"
}

# install_peers: the Debian packages of the peers (their services kept from
# starting by a policy-rc.d that says no, for the time of the install), and
# jq for the table. dbconfig-no-thanks keeps opendmarc's database setup (and
# a MySQL client) out.
install_peers() {
	local need=()
	[ -x /usr/sbin/opendkim ] || need+=(opendkim)
	[ -x /usr/sbin/opendmarc ] || need+=(opendmarc dbconfig-no-thanks)
	[ -x /usr/sbin/clamav-milter ] || need+=(clamav-milter)
	[ -x /usr/sbin/clamd ] || need+=(clamav-daemon)
	command -v jq >/dev/null 2>&1 || need+=(jq)
	command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev) # scripts/bench/unbound-test-zone.c
	[ ${#need[@]} -eq 0 ] && return 0
	say "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	local apt=(apt-get -q -y -o DPkg::Lock::Timeout=600) policy=/usr/sbin/policy-rc.d made=0 rc=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# mxguard bench: start no services\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		made=1
	fi
	{ "${apt[@]}" update -qq && "${apt[@]}" install -qq --no-install-recommends "${need[@]}"; } >"$STATE/apt.log" 2>&1 || rc=$?
	[ "$made" = 1 ] && rm -f "$policy"
	[ "$rc" -eq 0 ] || fail "apt-get install ${need[*]} failed" "$STATE/apt.log"
}

# --- Preconditions.
[ "$(id -u)" -eq 0 ] || die "the bench installs packages, binds port 53 and uses mount namespaces: run it as root (sudo make bench)"
for b in mxguard mxguard-bench mxguard-testdns; do
	[ -x "$BIN/$b" ] || die "no $BIN/$b; run make bench"
done
for f in plain-2k.eml newsletter-30k.eml attachment-1m.eml zone.txt; do
	[ -f "$CORPUS/$f" ] || die "no $CORPUS/$f"
done
[[ $BENCH_DNS =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "BENCH_DNS must be a loopback address 127.x.y.z, not $BENCH_DNS"
[[ $BENCH_PORT =~ ^[0-9]+$ && $BENCH_CLAMD_PORT =~ ^[0-9]+$ ]] || die "BENCH_PORT and BENCH_CLAMD_PORT must be port numbers"
[[ $BENCH_CLAMD_SOCKET == unix || $BENCH_CLAMD_SOCKET == inet ]] || die "BENCH_CLAMD_SOCKET must be unix or inet, not $BENCH_CLAMD_SOCKET"
# seconds DURATION: 5s, 500ms or 1m in seconds; nothing for anything else.
seconds() {
	awk -v d="$1" 'BEGIN {
	if (d ~ /^[0-9.]+ms$/) { sub(/ms$/, "", d); print d / 1000 } else if (d ~ /^[0-9.]+s$/) { sub(/s$/, "", d); print d + 0 }
	else if (d ~ /^[0-9.]+m$/) { sub(/m$/, "", d); print d * 60 } else print "" }'
}
dur_s=$(seconds "$BENCH_DURATION")
[ -n "$dur_s" ] || die "BENCH_DURATION must be a duration like 5s or 500ms, not $BENCH_DURATION"
hold_s=$(seconds "$BENCH_HOLD")
[ -n "$hold_s" ] || die "BENCH_HOLD must be a duration like 5s or 500ms, not $BENCH_HOLD"
[[ $BENCH_IDLE =~ ^[0-9]+$ ]] || die "BENCH_IDLE must be a number of sessions, not $BENCH_IDLE"
[[ $BENCH_BIG =~ ^[0-9]+([KMG]i?B?|B)?$ ]] || die "BENCH_BIG must be a size like 100MB, not $BENCH_BIG"
plan >/dev/null # reject unknown names before starting anything
for m in $BENCH_MILTERS; do port_of "$m" >/dev/null; done

# A state dir we made has our marker; anything else is not ours to empty.
if [ -e "$STATE" ] && [ ! -e "$STATE/.mxguard-bench" ]; then
	die "$STATE exists and is not a bench directory; not touching it (set BENCH_DIR)"
fi
mkdir -p "$STATE"
touch "$STATE/.mxguard-bench"
[ -d "$RUN" ] && stop_all # a bench that was killed
find "$STATE" -mindepth 1 -maxdepth 1 ! -name .mxguard-bench ! -name engines -exec rm -rf {} +
mkdir -p "$RUN" "$STATE/tmp" "$STATE/runs"

trap stop_all EXIT
trap 'exit 130' INT TERM

install_peers
has() { case " $BENCH_MILTERS " in *" $1 "*) return 0 ;; esac; return 1; }

# --- The messages. EICAR is written by the load tool (so no file in the
# repository is a virus test file).
msgfile() {
	case $1 in eicar) echo "$STATE/eicar.eml" ;; *) echo "$CORPUS/$1.eml" ;; esac
}
"$BIN/mxguard-bench" -write-eicar "$STATE/eicar.eml" || die "mxguard-bench -write-eicar failed"

# --- DNS: the bench zone on BENCH_DNS:53 (UDP and TCP), for everyone.
listening "$BENCH_DNS" 53 udp || listening "$BENCH_DNS" 53 && die "$BENCH_DNS:53 is already in use; set BENCH_DNS"
cp "$CORPUS/zone.txt" "$STATE/zone.txt"
echo "nameserver $BENCH_DNS" >"$STATE/resolv.conf"
"$BIN/mxguard-testdns" -zone "$STATE/zone.txt" -listen "$BENCH_DNS:53" -addr-file "$RUN/dns.addr" \
	</dev/null >/dev/null 2>"$STATE/dns.log" &
echo $! >"$RUN/dns.pid"
for _ in $(seq 100); do
	[ -s "$RUN/dns.addr" ] && break
	sleep 0.1
done
[ -s "$RUN/dns.addr" ] || fail "the DNS server did not start on $BENCH_DNS:53" "$STATE/dns.log"
# the mount namespace works, and shows our resolv.conf
[ "$("${in_ns[@]}" cat /etc/resolv.conf 2>"$STATE/ns.log")" = "nameserver $BENCH_DNS" ] ||
	fail "cannot run a program in a mount namespace with its own /etc/resolv.conf (unshare -m)" "$STATE/ns.log"

# --- clamd, for the virus milters: both reach it the same way, its local
# socket or TCP. On the local socket clamav-milter passes clamd the message
# in a file (FILDES), and mxguard streams it (INSTREAM).
clamd=$(scripts/engines/clamd.sh address "$BENCH_CLAMD_SOCKET")
if has mxguard+clamd || has clamav-milter; then
	clamd=$(scripts/engines/clamd.sh start "$BENCH_CLAMD_SOCKET" 2>"$STATE/clamd-start.log") ||
		fail "clamd did not start" "$STATE/clamd-start.log"
fi
# clamav-milter's notation: unix:/path, or tcp:host:port for our inet:host:port
clamav_milter_clamd=${clamd/#inet:/tcp:}
clamd_pid() { cat "$MXGUARD_ENGINES_DIR/clamd/clamd.pid" 2>/dev/null || true; }

# --- The milters.
# run_name M: the name of contestant M's pid file and log.
run_name() {
	case $1 in mxguard+clamd) echo mxguard-clamd ;; *) echo "$1" ;; esac
}

# start_milter M [SUFFIX]: start contestant M on its port. A SUFFIX (the
# memory tests') gives mxguard a configuration and a transaction log of its
# own, and every milter its own output, NAME-SUFFIX.log.
start_milter() {
	local m=$1 suffix=${2:-} port name engine conf db
	port=$(port_of "$m")
	case $m in
	noop)
		start noop "$port" "$BIN/mxguard-bench" -noop -listen "inet:127.0.0.1:$port"
		;;
	mxguard | mxguard+clamd)
		name=$(run_name "$m") engine=none
		[ "$m" = mxguard+clamd ] && engine=clamd
		conf=$STATE/$name${suffix:+-$suffix}.toml db=$STATE/$name${suffix:+-$suffix}.db
		# max_sessions: the memory test holds BENCH_IDLE sessions at once
		sed -e "s|@LISTEN@|inet:127.0.0.1:$port|" -e "s|@DB@|$db|" -e "s|@DNS@|$BENCH_DNS:53|" \
			-e "s|@VIRUS_ENGINE@|$engine|" -e "s|@CLAMD@|$clamd|" \
			-e "s|@MAX_SESSIONS@|$((BENCH_IDLE > 900 ? BENCH_IDLE + 100 : 1000))|" -e "s|@SPOOL@|$STATE/tmp|" \
			"$TEMPLATES/mxguard.toml" >"$conf"
		"$BIN/mxguard" check-config -config "$conf" >/dev/null 2>"$STATE/check-config.log" ||
			fail "$conf is not a valid configuration" "$STATE/check-config.log"
		start "$name" "$port" "$BIN/mxguard" serve -config "$conf"
		;;
	opendkim)
		config opendkim.conf "$STATE/opendkim.conf" "$port"
		gcc -shared -fPIC -O2 -o "$STATE/unbound-test-zone.so" "$TEMPLATES/unbound-test-zone.c" -ldl 2>"$STATE/opendkim.log" ||
			fail "cannot build $TEMPLATES/unbound-test-zone.c" "$STATE/opendkim.log"
		start opendkim "$port" "${in_ns[@]}" env LD_PRELOAD="$STATE/unbound-test-zone.so" \
			/usr/sbin/opendkim -x "$STATE/opendkim.conf"
		;;
	opendmarc)
		config opendmarc.conf "$STATE/opendmarc.conf" "$port"
		start opendmarc "$port" "${in_ns[@]}" /usr/sbin/opendmarc -c "$STATE/opendmarc.conf"
		;;
	clamav-milter)
		config clamav-milter.conf "$STATE/clamav-milter.conf" "$port"
		start clamav-milter "$port" "${in_ns[@]}" /usr/sbin/clamav-milter -c "$STATE/clamav-milter.conf"
		;;
	esac
}
for m in $BENCH_MILTERS; do
	start_milter "$m"
done
pid_of() { cat "$RUN/$(run_name "$1").pid"; }

# --- The runs.
clk_tck=$(getconf CLK_TCK)
# cpu_ticks PID: user+system time of PID so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
bench_help=$("$BIN/mxguard-bench" -h 2>&1 || true)
warmup=()
[[ $bench_help == *-warmup* ]] && warmup=(-warmup "${BENCH_WARMUP:-500ms}")
total=$(plan | wc -l)
say "$total runs of $BENCH_DURATION each, in $BENCH_ROUNDS rounds (milters: $BENCH_MILTERS; messages: $BENCH_MESSAGES; concurrency: $BENCH_CONCURRENCY)"
n=0
: >"$RESULTS"
while read -r m msg c round; do
	n=$((n + 1))
	port=$(port_of "$m") pid=$(pid_of "$m") out=$STATE/runs/$n.json log=$STATE/runs/$n.log
	# clamd's work is part of the virus milters' cost: its CPU is counted apart
	cpid="" c0=0
	case $m in mxguard+clamd | clamav-milter) cpid=$(clamd_pid) && c0=$(cpu_ticks "$cpid") ;; esac
	rc=0
	timeout $((${dur_s%.*} + 60)) "$BIN/mxguard-bench" -addr "inet:127.0.0.1:$port" -c "$c" -d "$BENCH_DURATION" \
		-per-conn 1 "${warmup[@]}" -msg "$(msgfile "$msg")" -from "$MAIL_FROM" -rcpt "$RCPT_TO" \
		-client-ip "$CLIENT_IP" -client-name "$CLIENT_NAME" -helo "$CLIENT_NAME" -pid "$pid" \
		-json -name "$m/$msg/c$c/r$round" >"$out" 2>"$log" || rc=$?
	engine_ms=null
	if [ -n "$cpid" ]; then
		engine_ms=$(awk -v a="$c0" -v b="$(cpu_ticks "$cpid")" -v t="$clk_tck" 'BEGIN { printf "%.1f", (b - a) * 1000 / t }')
	fi
	if [ "$rc" -ne 0 ] || ! jq -e . "$out" >/dev/null 2>&1; then
		say "[$n/$total] $m $msg c=$c round $round: mxguard-bench failed (exit $rc); $log:"
		tail -n 5 "$log" | sed 's/^/  | /' >&2
		jq -nc --arg m "$m" --arg msg "$msg" --argjson c "$c" --argjson r "$round" --arg err "exit $rc: $(tail -n 1 "$log")" \
			'{milter: $m, message: $msg, concurrency: $c, round: $r, failed: $err}' >>"$RESULTS"
		continue
	fi
	jq -c --arg m "$m" --arg msg "$msg" --argjson r "$round" --argjson e "$engine_ms" \
		'. + {milter: $m, message: $msg, round: $r, engine_cpu_ms: $e}' "$out" >>"$RESULTS"
	say "[$n/$total] $m $msg c=$c round $round: $(jq -r '"\(.msgs_per_s | floor) msgs/s, p50 \(.p50_ms) ms, \(.errors) errors"' "$out")"
done < <(plan)

# --- Memory. For each test, a fresh process of the milter (its own
# configuration and transaction log for mxguard), warmed up by a few
# newsletters so that what the first message sets up once is not counted.
# Then one big generated message (the server's RSS before it and at its
# peak), or BENCH_IDLE sessions taken to the middle of DATA (the first
# body chunk of the newsletter) and held there for BENCH_HOLD, all at once.
# No engine: mxguard's [virus] engine would not scan 100 MB (max_size).
: >"$MEMORY"
memory_milters=()
for m in noop mxguard; do has "$m" && memory_milters+=("$m"); done
[[ $bench_help == *-idle* ]] || memory_milters=() # an older bin/mxguard-bench
# memory_run M TEST: restart M and run TEST (big or idle) against it.
memory_run() {
	local m=$1 test=$2 port pid out log rc=0 args env
	port=$(port_of "$m") out=$STATE/runs/memory-$m-$test.json log=$STATE/runs/memory-$m-$test.log
	stop "$(run_name "$m")"
	start_milter "$m" memory
	pid=$(pid_of "$m")
	env=(-from "$MAIL_FROM" -rcpt "$RCPT_TO" -client-ip "$CLIENT_IP" -client-name "$CLIENT_NAME" -helo "$CLIENT_NAME")
	"$BIN/mxguard-bench" -addr "inet:127.0.0.1:$port" -n 20 -warmup 0 -msg "$CORPUS/newsletter-30k.eml" "${env[@]}" \
		>/dev/null 2>"$log" || say "memory: $m: the warm-up failed (exit $?)"
	case $test in
	big) args=(-big "$BENCH_BIG" -timeout 120s) ;;
	idle) args=(-idle "$BENCH_IDLE" -d "$BENCH_HOLD" -msg "$CORPUS/newsletter-30k.eml") ;;
	esac
	timeout $((${hold_s%.*} + 180)) "$BIN/mxguard-bench" -addr "inet:127.0.0.1:$port" "${args[@]}" "${env[@]}" \
		-pid "$pid" -json -name "$m/$test" >"$out" 2>>"$log" || rc=$?
	if [ "$rc" -ne 0 ] || ! jq -e . "$out" >/dev/null 2>&1; then
		say "memory: $m $test: mxguard-bench failed (exit $rc); $log:"
		tail -n 5 "$log" | sed 's/^/  | /' >&2
		jq -nc --arg m "$m" --arg t "$test" --arg err "exit $rc: $(tail -n 1 "$log")" \
			'{milter: $m, test: $t, failed: $err}' >>"$MEMORY"
		return 0
	fi
	jq -c --arg m "$m" --arg t "$test" '. + {milter: $m, test: $t}' "$out" >>"$MEMORY"
	say "memory: $m $test: $(jq -r 'def r($x): ($x * 10 | round / 10 | tostring);
		if .mode == "idle" then "\(.sessions) sessions held, \(.errors) errors, RSS \(r(.rss_start_mib)) -> \(r(.rss_peak_mib)) MiB"
		else "\(.size_bytes) bytes in \(.max_ms | round) ms, \(.errors) errors, RSS \(r(.rss_start_mib)) -> \(r(.rss_peak_mib)) MiB" end' "$out")"
}
if [ "$BENCH_IDLE" -gt 0 ] && [ ${#memory_milters[@]} -gt 0 ]; then
	say "memory: one $BENCH_BIG message, and $BENCH_IDLE sessions held in DATA for $BENCH_HOLD (${memory_milters[*]}; each test on a fresh process)"
	for m in "${memory_milters[@]}"; do
		memory_run "$m" big
		memory_run "$m" idle
	done
fi

# MERGE: the jq definitions that make one row of the runs of each milter,
# message and concurrency (one per round): the median of each figure, the
# range of msgs/s, and each round's msgs/s (by_round) for the ratios per
# round; a failed run makes the row a failed one.
MERGE='
def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
	else (.[length / 2 - 1] + .[length / 2]) / 2 end;
def median_or_null: if any(.[]; . == null) then null else median end;
def merged: group_by([.milter, .message, .concurrency]) | map(
	if any(.[]; .failed != null) then (map(select(.failed != null)) | .[0])
	else {milter: .[0].milter, message: .[0].message, concurrency: .[0].concurrency, rounds: length,
		msgs_per_s: (map(.msgs_per_s) | median),
		msgs_min: (map(.msgs_per_s) | min), msgs_max: (map(.msgs_per_s) | max),
		p50_ms: (map(.p50_ms) | median), p99_ms: (map(.p99_ms) | median),
		rss_peak_mib: (map(.rss_peak_mib) | if any(.[]; . == null) then null else max end),
		cpu_ms_per_1000: (map(.cpu_ms_per_1000) | median_or_null),
		engine_ms_per_msg: (map(if .engine_cpu_ms == null or .messages == 0 then null else .engine_cpu_ms / .messages end) | median_or_null),
		errors: (map(.errors) | add), messages: (map(.messages) | add),
		actions: (map(.actions // {} | to_entries) | add | group_by(.key) | map({key: .[0].key, value: (map(.value) | add)}) | from_entries),
		by_round: (map({key: (.round | tostring), value: .msgs_per_s}) | from_entries)}
	end);
'

# --- The table. Each peer (and the no-op milter) is compared with the
# mxguard that does its work: mxguard+clamd for clamav-milter, mxguard for
# the others; the last column is mxguard's msgs/s divided by the row's.
report() {
	jq -rs "$MERGE"'
	def r($x): if $x == null then "-" else ($x * 10 | round / 10 | tostring) end;
	def r2($x): if $x == null then "-" else ($x * 100 | round / 100 | tostring) end;
	def morder: {"plain-2k": 0, "newsletter-30k": 1, "attachment-1m": 2, "eicar": 3}[.] // 9;
	def order: {"noop": 0, "mxguard": 1, "opendkim": 2, "opendmarc": 3, "mxguard+clamd": 4, "clamav-milter": 5}[.] // 9;
	def ours: if . == "clamav-milter" then "mxguard+clamd" elif . == "mxguard" or . == "mxguard+clamd" then null else "mxguard" end;
	merged as $all
	| ($all | map(select(.failed == null))) as $ok
	| def find($m; $msg; $c): ($ok | map(select(.milter == $m and .message == $msg and .concurrency == $c)) | .[0]);
	["milter", "message", "c", "msgs/s", "range", "p50 ms", "p99 ms", "peak RSS MiB", "CPU ms/msg", "+clamd", "errors", "actions", "mxguard/this"],
	($all | sort_by([(.message | morder), (.milter | order), .concurrency])[]
	| if .failed then [.milter, .message, (.concurrency | tostring), "FAILED", "", "", "", "", "", "", "", .failed, ""]
	  else
	  . as $row
	  | ((.milter | ours) as $o | if $o then find($o; $row.message; $row.concurrency) else null end) as $mx
	  | [.milter, .message, (.concurrency | tostring), r(.msgs_per_s), "\(.msgs_min | floor)-\(.msgs_max | floor)",
	     r2(.p50_ms), r2(.p99_ms), r(.rss_peak_mib),
	     r2(if .cpu_ms_per_1000 == null then null else .cpu_ms_per_1000 / 1000 end),
	     r2(.engine_ms_per_msg),
	     (.errors | tostring),
	     ((.actions // {}) | to_entries | map(select(.value > 0) | "\(.key):\(.value)") | join(" ")),
	     (if $mx and .msgs_per_s > 0 then r2($mx.msgs_per_s / .msgs_per_s) + "x" else "" end)]
	  end)
	| @tsv' "$RESULTS" | column -t -s $'\t'
}

# targets: issue 8's, on newsletter-30k (the DKIM-signed message every
# milter gets). Throughput is each milter's best msgs/s over the
# concurrencies run.
targets() {
	jq -rs "$MERGE"'
	def r2($x): ($x * 100 | round / 100 | tostring);
	def pf($ok): if $ok then "PASS" else "MISS" end;
	# the ratio of $a to $b in each round both ran, as text
	def rounds($a; $b): [$a.by_round | keys[] | select($b.by_round[.] != null and $b.by_round[.] > 0)
		| $a.by_round[.] / $b.by_round[.]] | if length > 1 then "; rounds: " + (map(r2(.)) | join(", ")) else "" end;
	merged | map(select(.failed == null and .message == "newsletter-30k")) as $ok
	| def at($m; $c): ($ok | map(select(.milter == $m and .concurrency == $c)) | .[0]);
	  def best($m): ($ok | map(select(.milter == $m)) | max_by(.msgs_per_s));
	  def line($name; $have; $want; $text): if $have == null then "  -     \($name): not measured" else "  \(pf($have >= $want))  \($name): \($text)" end;
	(at("mxguard"; 64)) as $mx64 | (at("noop"; 64)) as $noop64 | (at("mxguard"; 1)) as $mx1
	| "targets (newsletter-30k; medians over the rounds; throughput = best msgs/s over the concurrencies run):",
	  (if $mx64 and $noop64 then line("mxguard >= 60% of the no-op milter at c=64"; $mx64.msgs_per_s / $noop64.msgs_per_s; 0.6;
	     "\(r2($mx64.msgs_per_s / $noop64.msgs_per_s * 100))% (\($mx64.msgs_per_s | floor) vs \($noop64.msgs_per_s | floor) msgs/s\(rounds($mx64; $noop64)))")
	   else line("mxguard >= 60% of the no-op milter at c=64"; null; 0; "") end),
	  (if $mx1 then (if $mx1.p50_ms < 2 then "  PASS" else "  MISS" end) + "  mxguard p50 at c=1 < 2 ms: \(r2($mx1.p50_ms)) ms"
	   else "  -     mxguard p50 at c=1 < 2 ms: not measured" end),
	  (["opendkim", "mxguard", 3], ["opendmarc", "mxguard", 3], ["clamav-milter", "mxguard+clamd", 1.5]) as [$peer, $ours, $want]
	  | (best($peer)) as $p | (best($ours)) as $m
	  | if $p and $m and $p.msgs_per_s > 0 then
	      line("\($ours) >= \($want)x \($peer)"; $m.msgs_per_s / $p.msgs_per_s; $want;
	        "\(r2($m.msgs_per_s / $p.msgs_per_s))x (\($m.msgs_per_s | floor) msgs/s at c=\($m.concurrency) vs \($p.msgs_per_s | floor) at c=\($p.concurrency)\(rounds($m; $p)))")
	    else line("\($ours) >= \($want)x \($peer)"; null; 0; "") end' "$RESULTS"
}

# memory_report: the memory tests, one line each.
memory_report() {
	jq -rs --arg big "$BENCH_BIG" '
	def r($x): if $x == null then "-" else ($x * 10 | round / 10 | tostring) end;
	def order: {"noop": 0, "mxguard": 1}[.] // 9;
	def test: if .test == "big" then "one \($big) message" else "sessions held in DATA" end;
	["milter", "test", "sessions", "errors", "RSS start MiB", "RSS peak MiB", "growth MiB", "KiB/session", "ms", "action"],
	(sort_by([(.milter | order), .test])[]
	| if .failed then [.milter, test, "FAILED", "", "", "", "", "", "", .failed]
	  else [.milter, test, (.sessions | tostring), (.errors | tostring), r(.rss_start_mib), r(.rss_peak_mib),
	    r(if .rss_peak_mib == null then null else .rss_peak_mib - .rss_start_mib end), r(.rss_per_session_kib),
	    (if .max_ms then (.max_ms | round | tostring) else "" end),
	    ((.actions // {}) | to_entries | map(select(.value > 0) | "\(.key):\(.value)") | join(" "))]
	  end)
	| @tsv' "$MEMORY" | column -t -s $'\t'
}

# memory_targets: issue 8's memory targets, for mxguard (the no-op milter's
# figures beside).
memory_targets() {
	jq -rs --argjson n "$BENCH_IDLE" --arg big "$BENCH_BIG" '
	def r($x): ($x * 10 | round / 10 | tostring);
	def pf($ok): if $ok then "PASS" else "MISS" end;
	def get($m; $t): (map(select(.milter == $m and .test == $t and .failed == null and .rss_peak_mib != null)) | .[0]);
	def growth: .rss_peak_mib - .rss_start_mib;
	def errs: if .errors > 0 then "; \(.errors) failed: \(.first_error)" else "" end;
	(get("mxguard"; "idle")) as $mi | (get("noop"; "idle")) as $ni | (get("mxguard"; "big")) as $mb | (get("noop"; "big")) as $nb
	| "  \(if $mi then pf($mi.rss_peak_mib < 100 and $mi.errors == 0) else "-   " end)  mxguard RSS with \($n) sessions held in DATA < 100 MiB: " +
	  (if $mi then "\(r($mi.rss_peak_mib)) MiB peak, \(r($mi.rss_per_session_kib // 0)) KiB per session" +
	    (if $ni then " (no-op milter: \(r($ni.rss_peak_mib)) MiB)" else "" end) + ($mi | errs)
	   else "not measured" end),
	  "  \(if $mb then pf(($mb | growth) < 64 and $mb.errors == 0 and $mb.actions.accept == 1) else "-   " end)  mxguard RSS growth for one \($big) message < 64 MiB: " +
	  (if $mb then "\(r($mb | growth)) MiB (\(r($mb.rss_start_mib)) -> \(r($mb.rss_peak_mib))), \($mb.max_ms | round) ms" +
	    (if $nb then " (no-op milter: \(r($nb | growth)) MiB, \($nb.max_ms | round) ms)" else "" end) + ($mb | errs) +
	    (if $mb.errors == 0 and $mb.actions.accept != 1 then "; not accepted: \($mb.actions | with_entries(select(.value > 0)) | tojson)" else "" end)
	   else "not measured" end)' "$MEMORY"
}

# surprises: runs whose milter did not do what it should: errors, or an
# action other than accept (reject for EICAR). Every message is legitimate
# (SPF, DKIM and DMARC pass) except EICAR, which only the virus milters see.
surprises() {
	jq -rs '
	map(select(.failed != null
		or .errors > 0
		or ((.actions // {}) | with_entries(select(.value > 0)) | keys) != [if .message == "eicar" then "reject" else "accept" end]))
	| if length == 0 then "every run: no errors, and the expected action for every message (accept; reject for EICAR)"
	  else "surprises:", (.[] | "  \(.milter) \(.message) c=\(.concurrency) round \(.round): " +
		(if .failed then .failed else "\(.errors) errors, actions \(.actions // {} | with_entries(select(.value > 0)) | tojson)" +
		 (if (.first_error // "") != "" then ", first error: \(.first_error)" else "" end) end))
	  end' "$RESULTS"
}

{
	echo
	echo "mxguard $("$BIN/mxguard" version | cut -d' ' -f2-) and its peers, one message per connection, $BENCH_DURATION per run, $(nproc) CPUs."
	echo "Each row: the median of $BENCH_ROUNDS runs, the milters of one message and concurrency taking turns; range: msgs/s of"
	echo "the slowest and the fastest run."
	echo "Client $CLIENT_IP, MAIL FROM $MAIL_FROM, RCPT TO $RCPT_TO; DNS $BENCH_DNS:53 ($CORPUS/zone.txt)."
	echo "RSS and CPU are the milter process's; +clamd is clamd's CPU ms per message, apart. mxguard/this: mxguard's"
	echo "msgs/s over the row's (mxguard+clamd's for clamav-milter). opendkim and opendmarc skip bodies they do not need"
	echo "(opendmarc every body, opendkim unsigned mail's): on plain-2k and attachment-1m they can outrun the no-op milter."
	echo
	report
	if [ -s "$MEMORY" ]; then
		echo
		echo "Memory: each test on a fresh process warmed up by 20 newsletters. One $BENCH_BIG message, generated (base64"
		echo "attachment), c=1; $BENCH_IDLE sessions taken to the middle of DATA (newsletter-30k's first body chunk), held $BENCH_HOLD."
		echo "RSS is the milter's; growth = peak - start; KiB/session = growth over the sessions held."
		echo
		memory_report
	fi
	echo
	targets
	memory_targets
	echo
	surprises
} | tee "$TABLE"

# What each mxguard concluded, from its own transaction log: SPF, DKIM and
# DMARC must pass for the newsletter, or the comparison is not like for like.
if command -v sqlite3 >/dev/null 2>&1; then
	for name in mxguard mxguard-clamd; do
		[ -f "$STATE/$name.db" ] || continue
		echo
		echo "$name's log (count, spf, dkim, dmarc, virus, action):"
		sqlite3 -readonly -separator '  ' "$STATE/$name.db" \
			"SELECT count(*), spf, dkim, dmarc, virus, action FROM transactions GROUP BY 2, 3, 4, 5, 6 ORDER BY 1 DESC" 2>&1 |
			sed 's/^/  /' || true
	done | tee -a "$TABLE"
fi
echo
echo "Results: $TABLE, and every run as JSON lines in $RESULTS (the memory tests' in $MEMORY)."
# A run that could not be measured is a broken bench, not a slow milter.
if jq -se 'any(.failed != null)' "$RESULTS" "$MEMORY" >/dev/null; then
	say "some runs failed (FAILED above); their output is in $STATE/runs/"
	exit 1
fi
