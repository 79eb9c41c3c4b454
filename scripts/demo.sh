#!/usr/bin/env bash
# "make demo": mxguard behind a real Postfix, all on loopback. Starts a DNS
# server for scripts/demo.zone, "mxguard serve" with examples/mxguard.toml
# (listen address, log path and resolver rewritten) and a throwaway Postfix
# instance (scripts/postfix-instance.sh: a private copy, never the host's own
# mail system), sends a handful of messages with swaks, shows what became of
# them and mxguard's transaction log, and stops everything.
#
#   scripts/demo.sh          the demo (as root: it installs what is missing
#                            and runs Postfix); expects bin/mxguard,
#                            bin/mxguard-demo and bin/mxguard-testdns
#   KEEP=1 scripts/demo.sh   leave it all running, to send more mail
#   scripts/demo.sh stop     stop a demo left running
#
#   DEMO_DIR     where everything goes (default /tmp/mxguard-demo; emptied first)
#   DEMO_LISTEN  mxguard's milter address (default inet:127.0.0.1:8894, the example's)
#   DEMO_SMTP    Postfix's SMTP port on 127.0.0.1 (default 2525)
#   DEMO_CLAMD, DEMO_SPAMD  the private clamd's and spamd's ports (default 13320, 17840)
set -euo pipefail

cd "$(dirname "$0")/.."
DEMO_DIR=${DEMO_DIR:-/tmp/mxguard-demo}
DEMO_LISTEN=${DEMO_LISTEN:-inet:127.0.0.1:8894}
DEMO_SMTP=${DEMO_SMTP:-2525}
# The demo's own clamd and spamd (scripts/engines), apart from the tests'.
export MXGUARD_ENGINES_DIR=${DEMO_DIR}/engines
export CLAMD_PORT=${DEMO_CLAMD:-13320} SPAMD_PORT=${DEMO_SPAMD:-17840}
BIN=${BIN:-bin}
KEEP=${KEEP:-0}
instance=scripts/postfix-instance.sh
pf_dir=$DEMO_DIR/postfix
run=$DEMO_DIR/run
db=$DEMO_DIR/mxguard.db
config=$DEMO_DIR/mxguard.toml
alice_password=alice-demo-password

die() {
	echo "demo: $*" >&2
	exit 1
}

# ours DIR: was DIR made by a demo? (the marker, or only what an older demo wrote)
ours() {
	[ -e "$1/.mxguard-demo" ] && return 0
	local f
	for f in "$1"/* "$1"/.[!.]*; do
		[ -e "$f" ] || continue
		case ${f##*/} in mxguard.toml | mxguard.log | mxguard.db | mxguard.db-wal | mxguard.db-shm) ;; *) return 1 ;; esac
	done
}

# ours_running PID: is PID a live process of this demo? Its command line
# names DEMO_DIR, so a number reused by someone else's process never is.
ours_running() {
	local cmdline
	cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
	[[ $cmdline == *"$DEMO_DIR/"* ]]
}

# stop_demo: stop what a demo in DEMO_DIR left running.
stop_demo() {
	[ -e "$DEMO_DIR/.mxguard-demo" ] || return 0
	[ -f "$pf_dir/conf/main.cf" ] && { "$instance" stop "$pf_dir" || true; }
	[ -d "$MXGUARD_ENGINES_DIR/clamd" ] && { scripts/engines/clamd.sh stop || true; }
	[ -d "$MXGUARD_ENGINES_DIR/spamd" ] && { scripts/engines/spamd.sh stop || true; }
	local name pid
	for name in mxguard dns; do
		[ -f "$run/$name.pid" ] || continue
		pid=$(cat "$run/$name.pid")
		if ours_running "$pid"; then
			kill -TERM "$pid" 2>/dev/null || true
			for _ in $(seq 100); do
				ours_running "$pid" || break
				sleep 0.1
			done
		fi
		rm -f "$run/$name.pid"
	done
}

if [ "${1:-}" = stop ]; then
	stop_demo
	echo "demo: stopped what ran in $DEMO_DIR"
	exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [stop]"

[ "$(id -u)" -eq 0 ] || die "the demo runs a throwaway Postfix and must run as root (sudo make demo)"
MXGUARD_E2E=1 scripts/install-deps.sh
for b in mxguard mxguard-demo mxguard-testdns; do
	[ -x "$BIN/$b" ] || die "no $BIN/$b; run make demo"
done

[[ $DEMO_SMTP =~ ^[0-9]+$ ]] || die "DEMO_SMTP must be a port number, not $DEMO_SMTP"
case $DEMO_LISTEN in
inet:127.*:*) hostport=${DEMO_LISTEN#inet:}; host=${hostport%:*}; port=${hostport##*:} ;;
*) die "DEMO_LISTEN must be inet:127.x.y.z:PORT (loopback), not $DEMO_LISTEN" ;;
esac

# listening HOST PORT: does something listen there? Reads the kernel's
# tables: a probe connection to Postfix would be an SMTP session of its own.
listening() {
	local hex
	hex=$(printf '%02X%02X%02X%02X:%04X' $(echo "$1" | tr . ' ' | awk '{ print $4, $3, $2, $1 }') "$2")
	awk -v a="$hex" '$2 == a && $4 == "0A" { found = 1 } END { exit !found }' /proc/net/tcp
}

if [ -e "$DEMO_DIR" ] && ! ours "$DEMO_DIR"; then
	die "$DEMO_DIR exists and is not a demo directory; not touching it (set DEMO_DIR)"
fi
stop_demo # one left running with KEEP=1
listening "$host" "$port" &&
	die "$host:$port is already in use; stop what listens there or run: make demo DEMO_LISTEN=inet:127.0.0.1:<free port>"
listening 127.0.0.1 "$DEMO_SMTP" &&
	die "127.0.0.1:$DEMO_SMTP is already in use; stop what listens there or run: make demo DEMO_SMTP=<free port>"
rm -rf "$DEMO_DIR"
mkdir -p "$run"
chmod 755 "$DEMO_DIR" # Postfix's unprivileged processes work below it
touch "$DEMO_DIR/.mxguard-demo"

# However the demo ends (unless KEEP=1 says otherwise), nothing outlives it.
kept=0
cleanup() { [ "$kept" = 1 ] || stop_demo; }
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
	echo "demo: $1; the end of $2:" >&2
	tail -n 20 "$2" | sed 's/^/  | /' >&2
	exit 1
}

# --- A DKIM key for example.com: mxguard signs alice's mail with it, and
# the demo's DNS publishes the record dkim-keygen prints.
"$BIN/mxguard" dkim-keygen -domain example.com -selector demo -dir "$DEMO_DIR/dkim" >"$DEMO_DIR/dkim-keygen.txt"
cp scripts/demo.zone "$DEMO_DIR/demo.zone"
awk '/^Publish this TXT record:/ { on = 1; next } /^Then add/ { on = 0 } on && NF' "$DEMO_DIR/dkim-keygen.txt" >>"$DEMO_DIR/demo.zone"
grep -q '_domainkey.example.com. IN TXT' "$DEMO_DIR/demo.zone" || die "no DKIM record in the output of mxguard dkim-keygen"

# --- DNS: SPF, DKIM and DMARC records for the demo's domains, on loopback.
"$BIN/mxguard-testdns" -zone "$DEMO_DIR/demo.zone" -addr-file "$run/dns.addr" >/dev/null 2>"$DEMO_DIR/dns.log" &
echo $! >"$run/dns.pid"
for _ in $(seq 100); do
	[ -s "$run/dns.addr" ] && break
	sleep 0.1
done
[ -s "$run/dns.addr" ] || fail "the DNS server did not start" "$DEMO_DIR/dns.log"
dns=$(cat "$run/dns.addr")

# --- The engines: a private clamd (its only signature is EICAR's) and spamd.
clamd=$(scripts/engines/clamd.sh start 2>"$DEMO_DIR/clamd-start.log") || fail "clamd did not start" "$DEMO_DIR/clamd-start.log"
spamd=$(scripts/engines/spamd.sh start 2>"$DEMO_DIR/spamd-start.log") || fail "spamd did not start" "$DEMO_DIR/spamd-start.log"

# --- mxguard: the example configuration, with our listen address, log, DNS
# and engines, and the DKIM key.
sed -e "s|^listen = \"[^\"]*\"|listen = \"$DEMO_LISTEN\"|" \
	-e "s|^path = \"[^\"]*\"|path = \"$db\"|" \
	-e "s|^resolver = \"[^\"]*\"|resolver = \"$dns\"|" \
	-e "s|^address = \"unix:/run/clamav/clamd.ctl\"|address = \"$clamd\"|" \
	-e "s|^address = \"inet:127.0.0.1:783\"|address = \"$spamd\"|" examples/mxguard.toml >"$config"
grep -q "^listen = \"$DEMO_LISTEN\"" "$config" && grep -q "^path = \"$db\"" "$config" &&
	grep -q "^resolver = \"$dns\"" "$config" && grep -q "^address = \"$clamd\"" "$config" &&
	grep -q "^address = \"$spamd\"" "$config" ||
	die "could not set milter.listen, log.path, dns.resolver, virus.address and spam.address in $config (did examples/mxguard.toml change?)"
sed -n '/^\[\[dkim.key\]\]/,$p' "$DEMO_DIR/dkim-keygen.txt" >>"$config"
"$BIN/mxguard" check-config -config "$config" >/dev/null
"$BIN/mxguard" serve -config "$config" 2>"$DEMO_DIR/mxguard.log" &
echo $! >"$run/mxguard.pid"
for _ in $(seq 100); do
	listening "$host" "$port" && break
	sleep 0.1
done
listening "$host" "$port" || fail "mxguard did not listen on $host:$port" "$DEMO_DIR/mxguard.log"

# --- Postfix, with mxguard as its milter.
"$instance" create "$pf_dir" --port "$DEMO_SMTP" --milter "$DEMO_LISTEN" --hostname mx.example.com \
	--domains "example.com example.net acme.test" --user "alice:$alice_password"
"$instance" start "$pf_dir"

echo "mxguard $("$BIN/mxguard" version | cut -d' ' -f2-) is the milter ($DEMO_LISTEN) of Postfix $(cat "${POSTFIX_ROOT:-/var/cache/mxguard/postfix}/.version") (127.0.0.1:$DEMO_SMTP),"
echo "with examples/mxguard.toml: example.com and example.net are organisation \"example\" (SPF fail quarantined),"
echo "acme.test is \"acme\" (SPF fail rejected, spam quarantined). Viruses go to clamd ($clamd), spam to spamd ($spamd);"
echo "example.com's mail is DKIM-signed (key from mxguard dkim-keygen). DNS: scripts/demo.zone plus that key."
echo "Outside clients are played with XCLIENT."
echo

# send N TITLE SWAKS-ARGS...: send one message and say what the client was told.
mkdir -p "$DEMO_DIR/swaks"
send() {
	local n=$1 title=$2 t=$DEMO_DIR/swaks/$1.txt
	shift 2
	swaks --server 127.0.0.1 --port "$DEMO_SMTP" --helo client.example --header "Subject: demo $n" "$@" >"$t" 2>&1 || true
	echo "$n. $title"
	echo "   swaks $*" | sed "s/$alice_password/\$PASSWORD/"
	# The first refusal, else the reply to the end of DATA.
	local reply
	reply=$(grep -m1 -E '^(<\*\*|<~\*) ' "$t" || grep -E '^(<-|<~) +250 .*queued as' "$t" || echo "(no reply; see $t)")
	echo "   => ${reply#* }" | sed 's/=> */=> /'
	echo
}
send 1 "An outside server (192.0.2.1) delivers mail for example.com; SPF passes" \
	--xclient-addr 192.0.2.1 --from news@sender.test --to someone@example.com
send 2 "A server sender.test does not list (203.0.113.7) sends for it to acme.test (SPF fail: rejected)" \
	--xclient-addr 203.0.113.7 --from billing@sender.test --to ceo@acme.test
send 3 "The same to example.com, whose organisation quarantines SPF fail (Postfix's hold queue)" \
	--xclient-addr 203.0.113.7 --from invoice@sender.test --to someone@example.com
send 4 "SPF softfail: delivered, tagged" \
	--xclient-addr 203.0.113.7 --from promo@soft.test --to someone@example.com
send 5 "An outside client tries to relay to another domain" \
	--xclient-addr 192.0.2.1 --from x@sender.test --to victim@elsewhere.test
send 6 "alice logs in (STARTTLS, AUTH PLAIN) from outside and sends to another domain" \
	--xclient-addr 203.0.113.5 --tls --auth PLAIN --auth-user alice --auth-password "$alice_password" \
	--from alice@example.com --to carol@elsewhere.test
send 7 "alice tries to send as bob" \
	--xclient-addr 203.0.113.5 --tls --auth PLAIN --auth-user alice --auth-password "$alice_password" \
	--from bob@example.com --to carol@elsewhere.test
send 8 "A stranger (198.51.100.9) uses our own domain example.net as sender" \
	--xclient-addr 198.51.100.9 --from ceo@example.net --to someone@example.com
send 9 "A host in trusted_networks (127.0.0.1, no XCLIENT) relays to another domain" \
	--from app@example.com --to partner@elsewhere.test
# EICAR, the antivirus test file, assembled so this script is not one.
printf '%s%s' 'X5O!P%@AP[4\PZX54(P^)7CC)7}$' 'EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*' >"$DEMO_DIR/invoice.txt"
send 10 "A virus (EICAR) as an attachment" \
	--xclient-addr 192.0.2.1 --from billing@sender.test --to someone@example.com --attach "$DEMO_DIR/invoice.txt"
gtube='XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X'
send 11 "Spam (GTUBE) for example.com: over reject_score" \
	--xclient-addr 192.0.2.1 --from offers@sender.test --to someone@example.com --body "$gtube"
send 12 "The same spam for acme.test, whose organisation quarantines spam instead" \
	--xclient-addr 192.0.2.1 --from deals@sender.test --to ceo@acme.test --body "$gtube"
printf 'MZ\x90\x00 (not really a program)' >"$DEMO_DIR/payroll.pdf.exe"
send 13 "A program disguised as a PDF (attachment rules)" \
	--xclient-addr 192.0.2.1 --from hr@sender.test --to someone@example.com --attach "$DEMO_DIR/payroll.pdf.exe"
send 14 "A stranger forges the From of bank.test, whose DMARC policy is p=reject" \
	--xclient-addr 192.0.2.1 --from x@sender.test --to someone@example.com --header "From: Your Bank <security@bank.test>"
send 15 "alice writes to a colleague: mxguard DKIM-signs it for example.com" \
	--xclient-addr 203.0.113.5 --tls --auth PLAIN --auth-user alice --auth-password "$alice_password" \
	--from alice@example.com --to someone@example.com --header "Subject: demo 15 signed"

# Let Postfix deliver what it accepted (held mail stays).
for _ in $(seq 100); do
	"$instance" run "$pf_dir" postqueue -j | grep -qv '"queue_name": "hold"' || break
	sleep 0.1
done

maildir=$pf_dir/mail/inbox/new
echo "Delivered into the Maildir $maildir: $(find "$maildir" -type f 2>/dev/null | wc -l) messages. The tagged one begins:"
tagged=$(grep -l '^X-MXGuard-Verdict:' "$maildir"/* 2>/dev/null | head -n1 || true)
[ -n "$tagged" ] && sed -n '/^$/q; /^Return-Path:/,/^Received:/p' "$tagged" | grep -v '^\s' | sed 's/^/  | /'
signed=$(grep -l '^Subject: demo 15' "$maildir"/* 2>/dev/null | head -n1 || true)
if [ -n "$signed" ]; then
	echo "alice's message (15) carries mxguard's signature:"
	grep -A1 '^DKIM-Signature:' "$signed" | cut -c1-100 | sed 's/^/  | /'
fi
echo
# mxguard quarantine runs Postfix's postqueue and postsuper; here they are
# the demo's private copy, so PATH and LD_LIBRARY_PATH point at it.
pf_root=${POSTFIX_ROOT:-/var/cache/mxguard/postfix}
quarantine() {
	PATH="$pf_root/usr/sbin:$PATH" LD_LIBRARY_PATH="$pf_root/usr/lib/postfix" \
		"$BIN/mxguard" quarantine "$@" -db "$db" -postfix-config "$pf_dir/conf"
}
echo "Held by Postfix, as mxguard quarantine list shows it (with the reason from the log):"
quarantine list | sed 's/^/  | /'
echo

"$BIN/mxguard-demo" -log-only -skip-idle -db "$db"

query="SELECT queue_id, client_ip, mail_from, action, reason, reply FROM transactions WHERE action IN ('reject', 'quarantine', 'tag') ORDER BY started_at"
echo
echo "Why was mail refused, held or tagged? Ask the log with sqlite3 (read-only):"
echo
echo "  sqlite3 -readonly -box $db \\"
echo "    \"$query\""
echo
sqlite3 -readonly -box "$db" "$query" | sed 's/^/  /'
echo

if [ "$KEEP" = 1 ]; then
	kept=1
	cat <<MSG
KEEP=1: the demo keeps running. Send more mail with swaks, e.g.:

  swaks --server 127.0.0.1 --port $DEMO_SMTP --xclient-addr 192.0.2.1 --from news@sender.test --to someone@example.com

(without --xclient-addr the client is 127.0.0.1, a trusted network; to log in as alice add
 --tls --auth PLAIN --auth-user alice --auth-password $alice_password)

  the log:        $BIN/mxguard-demo -log-only -skip-idle -db $db
  Postfix's log:  $pf_dir/maillog
  held mail:      PATH=$pf_root/usr/sbin:\$PATH LD_LIBRARY_PATH=$pf_root/usr/lib/postfix \\
                    $BIN/mxguard quarantine list -db $db -postfix-config $pf_dir/conf
                  (release QUEUE-ID / delete QUEUE-ID the same way; on a real host just: mxguard quarantine list)
  mxguard's log:  $DEMO_DIR/mxguard.log

Stop it with:  DEMO_DIR=$DEMO_DIR scripts/demo.sh stop    (make clean does too)
MSG
	exit 0
fi

# mxguard must stop cleanly on SIGTERM, flushing its log: check that too.
"$instance" stop "$pf_dir"
mx_pid=$(cat "$run/mxguard.pid")
kill -TERM "$mx_pid"
status=0
wait "$mx_pid" || status=$?
rm -f "$run/mxguard.pid"
[ "$status" -eq 0 ] || fail "mxguard exited with status $status after SIGTERM" "$DEMO_DIR/mxguard.log"
stop_demo
echo "Everything stopped. What the demo left is in $DEMO_DIR (KEEP=1 make demo keeps it running)."
