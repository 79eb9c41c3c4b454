#!/usr/bin/env bash
# Runs "mxguard serve" on a copy of examples/mxguard.toml whose transaction
# log lives in a fresh directory, drives it with mxguard-demo, and stops it.
# Called by "make demo"; expects bin/mxguard and bin/mxguard-demo.
#
#   DEMO_DIR     where the config, the log database and mxguard's output go
#                (default /tmp/mxguard-demo; emptied first)
#   DEMO_LISTEN  the milter address (default inet:127.0.0.1:8894, the example's)
set -euo pipefail

cd "$(dirname "$0")/.."
DEMO_DIR=${DEMO_DIR:-/tmp/mxguard-demo}
DEMO_LISTEN=${DEMO_LISTEN:-inet:127.0.0.1:8894}
BIN=${BIN:-bin}

case $DEMO_LISTEN in
inet:*:*) hostport=${DEMO_LISTEN#inet:}; host=${hostport%:*}; port=${hostport##*:} ;;
*) echo "demo: DEMO_LISTEN must be inet:HOST:PORT, not $DEMO_LISTEN" >&2; exit 2 ;;
esac

# port_open HOST PORT: is something listening there? (bash's /dev/tcp, no nc needed)
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

if port_open "$host" "$port"; then
	echo "demo: $host:$port is already in use; stop what listens there or run: make demo DEMO_LISTEN=inet:127.0.0.1:<free port>" >&2
	exit 1
fi

# Empty DEMO_DIR, but only if it is ours: it has our marker or holds
# nothing but what a demo writes.
ours() {
	[ -e "$1/.mxguard-demo" ] && return 0
	local f
	for f in "$1"/* "$1"/.[!.]*; do
		[ -e "$f" ] || continue
		case ${f##*/} in mxguard.toml | mxguard.log | mxguard.db | mxguard.db-wal | mxguard.db-shm) ;; *) return 1 ;; esac
	done
}
if [ -e "$DEMO_DIR" ] && ! ours "$DEMO_DIR"; then
	echo "demo: $DEMO_DIR exists and is not a demo directory; not touching it (set DEMO_DIR)" >&2
	exit 1
fi
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"
touch "$DEMO_DIR/.mxguard-demo"
db=$DEMO_DIR/mxguard.db
config=$DEMO_DIR/mxguard.toml
# The example as is, but with our listen address and log path.
sed -e "s|^listen = \"[^\"]*\"|listen = \"$DEMO_LISTEN\"|" \
	-e "s|^path = \"[^\"]*\"|path = \"$db\"|" examples/mxguard.toml >"$config"
grep -q "^listen = \"$DEMO_LISTEN\"" "$config" && grep -q "^path = \"$db\"" "$config" || {
	echo "demo: could not set milter.listen and log.path in $config (did examples/mxguard.toml change?)" >&2
	exit 1
}

"$BIN/mxguard" check-config -config "$config" >/dev/null

"$BIN/mxguard" serve -config "$config" 2>"$DEMO_DIR/mxguard.log" &
pid=$!
# However this script ends, mxguard does not outlive it.
cleanup() {
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
	echo "demo: $*; mxguard's output ($DEMO_DIR/mxguard.log):" >&2
	sed 's/^/  | /' "$DEMO_DIR/mxguard.log" >&2
	exit 1
}

for _ in $(seq 100); do # 10 seconds
	port_open "$host" "$port" && break
	kill -0 "$pid" 2>/dev/null || { wait "$pid" || true; fail "mxguard exited before listening"; }
	sleep 0.1
done
port_open "$host" "$port" || fail "mxguard did not listen on $host:$port within 10s"

echo "mxguard $("$BIN/mxguard" version | cut -d' ' -f2-) is listening on $DEMO_LISTEN (config $config)"
echo
"$BIN/mxguard-demo" -milter "$DEMO_LISTEN" -db "$db" || fail "mxguard-demo failed"

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
[ "$status" -eq 0 ] || fail "mxguard exited with status $status after SIGTERM"

cat <<MSG

mxguard stopped cleanly. Its debug log is $DEMO_DIR/mxguard.log.
The transaction log is $db; query it with the sqlite3 CLI
(apt-get install sqlite3 if you do not have it), read-only:

  sqlite3 -readonly -box $db \\
    "SELECT started_at, queue_id, client_ip, mail_from, action, reason, reply FROM transactions ORDER BY id"
MSG
