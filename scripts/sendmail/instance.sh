#!/usr/bin/env bash
# A throwaway Sendmail 8.17 instance on loopback, for mxguard's end-to-end
# tests. It runs Debian's own sendmail binary from a private, unpacked copy of
# the sendmail-bin and sendmail-cf packages (never "apt-get install
# sendmail-bin": that package conflicts with postfix and would remove it), with
# its own sendmail.cf, queue, maps, SASL database, certificate and port. Every
# path the instance uses is inside its work dir W; the host's mail system,
# /etc/mail, /etc/postfix and any installed MTA are never touched.
#
#   instance.sh install
#       (root) install the non-conflicting tools and libraries with apt, and
#       unpack sendmail-bin + sendmail-cf into $SENDMAIL_ROOT. Idempotent and
#       quiet when everything is there; prints what it did and how long it took.
#   instance.sh installed
#       exit 0 when install has nothing to do; else say what is missing and
#       exit 1. Needs no root (scripts/install-deps.sh and the tests ask it).
#   instance.sh setup W PORT MILTER_ADDR
#       (re)create the instance in W: SMTP on 127.0.0.1:PORT (daemon name
#       MTA-test), STARTTLS, SMTP AUTH PLAIN/LOGIN for alice and bob, the milter
#       "mxguard" at MILTER_ADDR (HOST:PORT; F=T: a dead milter tempfails).
#       Mail to the test domains is stored one file per recipient in W/mail/,
#       mail to any other domain in W/outbound/; nothing ever leaves the host.
#       The queue, mail/ and outbound/ are emptied. W must not be running.
#   instance.sh start W        start the daemon; returns once PORT listens
#   instance.sh stop W         stop it (stopping a stopped instance is fine)
#   instance.sh status W       print "running PID" (exit 0) or "stopped" (exit 3)
#   instance.sh mailq W [-qQ]  list the queue; with -qQ the quarantine
#   instance.sh release W QID  take QID out of quarantine and deliver it now
#   instance.sh run W ARGS...  run the instance's sendmail with ARGS (e.g. -bt)
#
# Environment:
#   SENDMAIL_ROOT  the private copy (default /var/cache/mxguard-e2e/sendmail-root)
#   SM_HOSTNAME    the instance's host name, $j (default mx.example.test)
#   SM_DOMAINS     domains stored in W/mail/ (default "example.com example.net")
#   SM_ALICE_PW, SM_BOB_PW   SASL passwords (default alice-pw, bob-pw)
#   SM_AUTH_TLS_ONLY=1       offer AUTH only after STARTTLS (default: always)
#
# Everything that runs the sendmail binary runs in a private mount namespace
# (see ns_enter) in which /etc/hosts, /etc/resolv.conf, /etc/nsswitch.conf,
# Cyrus SASL's config dir and /dev are the instance's own. README.md in this
# directory explains why, and what the tests can rely on.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
SENDMAIL_ROOT=${SENDMAIL_ROOT:-/var/cache/mxguard-e2e/sendmail-root}
SM_BIN=$SENDMAIL_ROOT/usr/libexec/sendmail/sendmail
MAKEMAP=$SENDMAIL_ROOT/usr/libexec/sendmail/makemap
SM_HOSTNAME=${SM_HOSTNAME:-mx.example.test}
SM_DOMAINS=${SM_DOMAINS:-example.com example.net}
SM_ALICE_PW=${SM_ALICE_PW:-alice-pw}
SM_BOB_PW=${SM_BOB_PW:-bob-pw}
SM_AUTH_TLS_ONLY=${SM_AUTH_TLS_ONLY:-0}

# Packages installed normally with apt: sendmail-bin's shared libraries and
# the tools setup and the tests use. None of them is or needs an MTA.
DEPS=(
	m4                                            # sendmail.mc -> sendmail.cf
	libdb5.3 libldap-2.5-0 liblockfile1 libnsl2   # linked by sendmail
	libsasl2-2 libssl3 libwrap0
	libsasl2-modules sasl2-bin                    # sasldb/PLAIN/LOGIN plugins, saslpasswd2
	openssl                                       # the self-signed certificate
	busybox                                       # syslogd: sendmail logs only via syslog(3)
	swaks libnet-ssleay-perl libio-socket-ssl-perl # the tests' SMTP client, with STARTTLS
)

say() { echo "sendmail-instance: $*" >&2; }
die() {
	say "$*"
	exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
need_root() { [ "$(id -u)" -eq 0 ] || die "$1 must run as root"; }

# ---------------------------------------------------------------- install

installed() { dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^ii'; }

# keep package scripts from starting daemons (sasl2-bin ships saslauthd)
# while apt runs; only a policy file we created ourselves is removed again
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

# quiet: apt's output is shown only when it fails
quietly() {
	local out rc=0
	out=$(mktemp)
	"$@" >"$out" 2>&1 || rc=$?
	if [ "$rc" != 0 ]; then
		cat "$out" >&2
		say "failed ($rc): $*"
	fi
	rm -f "$out"
	return "$rc"
}

apt_install() {
	DEBIAN_FRONTEND=noninteractive quietly with_policy_rc_d apt-get install -y -q \
		--no-install-recommends -o DPkg::Lock::Timeout=600 "$@"
}

apt_update() { quietly apt-get update -q -o DPkg::Lock::Timeout=600; }

# download sendmail-bin and sendmail-cf (not sendmail-base: it holds only
# Debian's configuration tooling) and unpack them into $SENDMAIL_ROOT
unpack_sendmail() {
	local tmp rc=0
	tmp=$(mktemp -d)
	getent passwd _apt >/dev/null && chown _apt "$tmp" # apt downloads as _apt
	(cd "$tmp" && apt-get download -q sendmail-bin sendmail-cf) >"$tmp/apt.log" 2>&1 || rc=$?
	if [ "$rc" != 0 ]; then # stale package lists: the mirror dropped that version
		apt_update
		(cd "$tmp" && apt-get download -q sendmail-bin sendmail-cf) >"$tmp/apt.log" 2>&1 ||
			{ cat "$tmp/apt.log" >&2; rm -rf "$tmp"; die "apt-get download sendmail-bin sendmail-cf failed"; }
	fi
	rm -rf "$SENDMAIL_ROOT.new"
	mkdir -p "$SENDMAIL_ROOT.new"
	local deb
	for deb in "$tmp"/sendmail-bin_*.deb "$tmp"/sendmail-cf_*.deb; do
		dpkg-deb -x "$deb" "$SENDMAIL_ROOT.new"
	done
	dpkg-deb -f "$tmp"/sendmail-bin_*.deb Version >"$SENDMAIL_ROOT.new/.version"
	rm -rf "$tmp"
	rm -rf "$SENDMAIL_ROOT"
	mv "$SENDMAIL_ROOT.new" "$SENDMAIL_ROOT"
}

# is_installed: everything there, and sendmail finds all its libraries?
is_installed() {
	local p
	for p in "${DEPS[@]}"; do installed "$p" || return 1; done
	[ -x "$SM_BIN" ] && [ -s "$SENDMAIL_ROOT/.version" ] || return 1
	! ldd "$SM_BIN" | grep -q 'not found'
}

cmd_installed() {
	[ $# -eq 0 ] || die "usage: $0 installed"
	is_installed && return 0
	local missing=() p
	for p in "${DEPS[@]}"; do installed "$p" || missing+=("package $p"); done
	[ -x "$SM_BIN" ] && [ -s "$SENDMAIL_ROOT/.version" ] || missing+=("the private copy in $SENDMAIL_ROOT")
	[ ${#missing[@]} -gt 0 ] || missing+=("shared libraries of $SM_BIN (see ldd)")
	say "not installed: ${missing[*]}; run: $0 install (as root)"
	return 1
}

cmd_install() {
	[ $# -eq 0 ] || die "usage: $0 install"
	is_installed && return 0
	need_root install
	mkdir -p "$(dirname "$SENDMAIL_ROOT")"
	# one install at a time (tests may call it in parallel)
	exec 9>"$SENDMAIL_ROOT.lock"
	flock 9
	is_installed && return 0 # another one just did it

	local missing=() p t0 t unpack=0
	for p in "${DEPS[@]}"; do installed "$p" || missing+=("$p"); done
	[ -x "$SM_BIN" ] && [ -s "$SENDMAIL_ROOT/.version" ] || unpack=1

	t0=$(now)
	local report=()
	# "apt-get update" only when the lists don't know the packages yet
	if ! apt-cache show sendmail-bin sendmail-cf "${missing[@]}" >/dev/null 2>&1; then
		t=$(now)
		apt_update
		report+=("apt-get update $(since "$t")")
	fi
	if [ ${#missing[@]} -gt 0 ]; then
		t=$(now)
		apt_install "${missing[@]}"
		report+=("apt-get install ${missing[*]}: $(since "$t")")
	fi
	if [ "$unpack" = 1 ]; then
		t=$(now)
		unpack_sendmail
		report+=("unpacked sendmail $(cat "$SENDMAIL_ROOT/.version") into $SENDMAIL_ROOT: $(since "$t")")
	fi
	if ldd "$SM_BIN" | grep 'not found' >&2; then
		die "$SM_BIN misses shared libraries (see above); add their packages to DEPS"
	fi
	for p in "${report[@]}"; do say "install: $p"; done
	say "install: done in $(since "$t0")"
}

# ------------------------------------------------------- mount namespace
#
# Sendmail resolves the machine's host name at every start (daemon, mailq,
# newaliases) through libc, AAAA first; when /etc/hosts can't turn it into a
# dotted FQDN it asks DNS and then sleeps 60 s ("My unqualified host name
# ... unknown; sleeping for retry"). It logs only through syslog(3) to
# /dev/log, which a container or CI runner often lacks. And Cyrus SASL reads
# its config for the application "Sendmail" from fixed directories
# (/etc/sasl2, /etc/sasl, /usr/lib/<arch>/sasl2, /usr/lib/sasl2), which we must
# not write to. So every sendmail process runs in a private mount namespace
# in which
#   /etc/hosts          names the host name as SM_HOSTNAME (IPv4 and IPv6)
#   /etc/resolv.conf    points at 127.0.0.254, where no DNS server listens
#   /etc/nsswitch.conf  "hosts: files": libc never asks DNS for a host
#   /usr/lib/sasl2      is W/sasl2 (our Sendmail.conf -> W/sasldb2); any
#                       Sendmail.conf in the earlier directories is covered too
#   /dev                is a small tmpfs with null, zero, full, random, urandom,
#                       tty and the instance's own /dev/log, served by a busybox
#                       syslogd that writes W/maillog
# Nothing outside the namespace changes, and no packet leaves the host.
# "start" keeps the namespace alive (it holds syslogd and the daemon);
# later commands (mailq, release, run) join it with nsenter, so they log to
# W/maillog too. Without a running instance they get a fresh namespace.

# ns_enter W CMD...: run CMD in W's namespace (joined, or new)
ns_enter() {
	local w=$1 pid
	shift
	if pid=$(ns_holder "$w"); then
		nsenter --mount="/proc/$pid/ns/mnt" -- "$@"
	else
		unshare --mount --propagation private -- bash "$SELF" _ns "$w" "$@"
	fi
}

# _ns W CMD...: (inside a new namespace) mount the instance's files, exec CMD
cmd__ns() {
	local w=$1 f d n
	shift
	mount --bind "$w/etc/hosts" /etc/hosts
	# (a bind mount needs an existing target; Debian has both files)
	if [ -e /etc/resolv.conf ]; then mount --bind "$w/etc/resolv.conf" /etc/resolv.conf; fi
	if [ -e /etc/nsswitch.conf ]; then mount --bind "$w/etc/nsswitch.conf" /etc/nsswitch.conf; fi
	# SASL: the last directory Cyrus searches (libsasl2-2 ships it, empty)
	# becomes ours; a Sendmail.conf in one searched before it (e.g. a real
	# sendmail's) is covered by ours
	[ -d /usr/lib/sasl2 ] || die "no /usr/lib/sasl2 (package libsasl2-2) to mount $w/sasl2 on"
	mount --bind "$w/sasl2" /usr/lib/sasl2
	for f in /etc/sasl2/Sendmail.conf /etc/sasl/Sendmail.conf /usr/lib/*/sasl2/Sendmail.conf; do
		if [ -e "$f" ]; then mount --bind "$w/sasl2/Sendmail.conf" "$f"; fi
	done
	# /dev: built on a tmpfs at W/run/dev, then moved over /dev
	d=$w/run/dev
	mount -t tmpfs -o mode=755,size=1m,nosuid,noexec tmpfs "$d"
	for n in null zero full random urandom tty; do
		: >"$d/$n"
		mount --bind "/dev/$n" "$d/$n"
	done
	ln -s /proc/self/fd "$d/fd"
	ln -s /proc/self/fd/0 "$d/stdin"
	ln -s /proc/self/fd/1 "$d/stdout"
	ln -s /proc/self/fd/2 "$d/stderr"
	mkdir -m 1777 "$d/shm"
	mount --move "$d" /dev
	exec "$@"
}

# the pid of a live process that holds W's namespace: the daemon, else syslogd
ns_holder() {
	local w=$1 pid
	pid=$(daemon_pid "$w") && { echo "$pid"; return 0; }
	pid=$(syslogd_pid "$w") && { echo "$pid"; return 0; }
	return 1
}

# daemon_pid W: the pid in W's pid file (first of its two lines), if that
# process is alive and is W's daemon: a sendmail binary whose working
# directory is W's queue. (Not the exe path: a reinstall of $SENDMAIL_ROOT
# turns it into ".../sendmail (deleted)", and the daemon must still stop.)
daemon_pid() {
	local pid exe
	[ -s "$1/sendmail.pid" ] || return 1
	pid=$(head -n1 "$1/sendmail.pid")
	case $pid in '' | *[!0-9]*) return 1 ;; esac
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	case $exe in */sendmail | */sendmail" (deleted)") ;; *) return 1 ;; esac
	[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$1/mqueue" ] || return 1
	echo "$pid"
}

# w_procs W: all live sendmail processes working in W's queue: the daemon,
# also one that never got to write its pid file, and queue runs
w_procs() {
	local p exe
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/cwd" 2>/dev/null)" = "$1/mqueue" ] || continue
		exe=$(readlink "$p/exe" 2>/dev/null) || continue
		case $exe in */sendmail | */sendmail" (deleted)") echo "${p#/proc/}" ;; esac
	done
}

syslogd_pid() {
	local pid
	[ -s "$1/run/syslogd.pid" ] || return 1
	pid=$(cat "$1/run/syslogd.pid")
	case $pid in '' | *[!0-9]*) return 1 ;; esac
	tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "syslogd -n -S -O $1/maillog" || return 1
	echo "$pid"
}

# sm W ARGS...: the instance's sendmail, in its namespace
sm() {
	local w=$1
	shift
	ns_enter "$w" "$SM_BIN" -C "$w/sendmail.cf" "$@"
}

# ------------------------------------------------------------------ setup

# W must be a plain absolute path: it is written into sendmail.cf, m4 input
# and shell scripts unquoted
check_w() {
	case $1 in
	/*) ;;
	*) die "work dir must be an absolute path: $1" ;;
	esac
	case $1 in *[!A-Za-z0-9._/-]*) die "work dir may contain only A-Z a-z 0-9 . _ / -: $1" ;; esac
}

check_setup() {
	check_w "$1"
	[ -s "$1/sendmail.cf" ] || die "$1 is no instance (run: $0 setup $1 PORT MILTER_ADDR)"
	[ -x "$SM_BIN" ] || die "no $SM_BIN; run: $0 install (as root)"
}

instance_port() { sed -n 's/^O DaemonPortOptions=.*Port=\([0-9]*\).*/\1/p' "$1/sendmail.cf" | head -n1; }

cmd_setup() {
	[ $# -eq 3 ] || die "usage: $0 setup W PORT MILTER_ADDR"
	local w=${1%/} port=$2 milter=$3 t0 host mport
	t0=$(now)
	need_root setup
	check_w "$w"
	[ -x "$SM_BIN" ] || die "no $SM_BIN; run: $0 install (as root)"
	case $port in '' | *[!0-9]*) die "PORT must be a number: $port" ;; esac
	milter=${milter#inet:}
	host=${milter%:*} mport=${milter##*:}
	case $mport in '' | *[!0-9]*) die "MILTER_ADDR must be HOST:PORT: $3" ;; esac
	if [ -z "$host" ] || [ "$host" = "$milter" ]; then die "MILTER_ADDR must be HOST:PORT: $3"; fi
	if [ -d "$w" ] && ns_holder "$w" >/dev/null; then die "$w is running; stop it first"; fi

	# Sendmail refuses group- or world-writable files and directories on the
	# way to its queue, maps and keys (below /tmp that's fine: TrustStickyBit)
	mkdir -p "$w"
	chown root:root "$w"
	chmod 755 "$w"
	mkdir -p "$w/etc" "$w/tls" "$w/sasl2" "$w/run/dev" "$w/mqueue" "$w/mail" "$w/outbound"
	rm -rf "${w:?}/mqueue/"* "${w:?}/mail/"* "${w:?}/outbound/"* "$w/run/syslogd.pid" "$w/sendmail.pid"
	chmod 700 "$w/mqueue"
	: >"$w/maillog"
	: >"$w/statistics" # otherwise: "poststats: ... No such file or directory"

	write_ns_files "$w"
	write_tls "$w"
	write_sasl "$w"
	write_maps "$w"
	write_mc "$w" "$port" "inet:$mport@$host"
	m4 "$w/sendmail.mc" >"$w/sendmail.cf"
	make_map "$w" mailertable
	make_map "$w" access
	sm "$w" -bi >/dev/null # newaliases -> aliases.db
	say "setup: $w ready (SMTP 127.0.0.1:$port, milter $host:$mport) in $(since "$t0")"
}

# make_map W NAME: W/NAME -> W/NAME.db. makemap reads sendmail.cf (for
# DontBlameSendmail), and warns about a world-writable /tmp above W, which
# TrustStickyBit covers: that warning is dropped, any other output is shown.
make_map() {
	local w=$1 rc=0
	# shellcheck disable=SC2094 # reads NAME, writes NAME.db
	"$MAKEMAP" -C "$w/sendmail.cf" hash "$w/$2" <"$w/$2" 2>"$w/run/makemap.err" || rc=$?
	grep -v 'World writable directory' "$w/run/makemap.err" >&2 || true
	rm -f "$w/run/makemap.err"
	[ "$rc" = 0 ] || die "makemap $w/$2 failed"
}

write_ns_files() {
	local w=$1 hn
	hn=$(hostname)
	# The FIRST line naming the machine's host name gives the FQDN, and the
	# IPv6 line answers the AAAA lookup sendmail starts with.
	{
		printf '127.0.0.1\tlocalhost\n'
		printf '127.0.1.1\t%s %s\n' "$SM_HOSTNAME" "$hn"
		printf '::1\tlocalhost ip6-localhost ip6-loopback %s %s\n' "$SM_HOSTNAME" "$hn"
	} >"$w/etc/hosts"
	printf 'nameserver 127.0.0.254\noptions attempts:1 timeout:1\n' >"$w/etc/resolv.conf"
	if [ -r /etc/nsswitch.conf ]; then
		sed 's/^hosts:.*/hosts: files/' /etc/nsswitch.conf >"$w/etc/nsswitch.conf"
	fi
	grep -q '^hosts:' "$w/etc/nsswitch.conf" 2>/dev/null || echo 'hosts: files' >>"$w/etc/nsswitch.conf"
}

write_tls() {
	local w=$1
	if [ ! -s "$w/tls/cert.pem" ] || [ ! -s "$w/tls/key.pem" ]; then
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
			-subj "/CN=$SM_HOSTNAME" -keyout "$w/tls/key.pem" -out "$w/tls/cert.pem" >/dev/null 2>&1
	fi
	chmod 600 "$w/tls/key.pem" # sendmail refuses a key others can read
	chmod 644 "$w/tls/cert.pem"
}

write_sasl() {
	local w=$1
	# Sendmail refuses a SASL config that isn't root's or is group-writable
	printf 'pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: %s/sasldb2\n' \
		"$w" >"$w/sasl2/Sendmail.conf"
	chmod 644 "$w/sasl2/Sendmail.conf"
	chmod 755 "$w/sasl2"
	rm -f "$w/sasldb2"
	# the realm is AuthRealm (= SM_HOSTNAME), so clients log in as plain "alice"
	printf '%s' "$SM_ALICE_PW" | saslpasswd2 -p -c -f "$w/sasldb2" -u "$SM_HOSTNAME" alice
	printf '%s' "$SM_BOB_PW" | saslpasswd2 -p -c -f "$w/sasldb2" -u "$SM_HOSTNAME" bob
	chmod 600 "$w/sasldb2"
}

write_maps() {
	local w=$1 d
	# deliver.sh is both mailers' program: one file per recipient, written
	# under a dot name and renamed, so a reader never sees half a message
	cat >"$w/deliver.sh" <<EOF
#!/bin/sh
# mailer of the test sendmail in $w: deliver.sh DIR RECIPIENT < message
# stores the message as $w/DIR/<time>.<pid>.<recipient>.eml (DIR: mail or outbound)
set -eu
case \$1 in mail | outbound) ;; *) echo "deliver.sh: bad dir \$1" >&2; exit 64 ;; esac
rcpt=\$(printf '%s' "\$2" | tr -c 'A-Za-z0-9@._+=-' '_')
f=\$(date +%s.%N).\$\$.\$rcpt.eml
umask 022
cat >"$w/\$1/.\$f" && mv "$w/\$1/.\$f" "$w/\$1/\$f"
EOF
	chmod 755 "$w/deliver.sh"
	# mail to the test domains -> mail/; to anything else -> outbound/
	: >"$w/mailertable"
	for d in $SM_DOMAINS; do printf '%s\tfile:mail\n' "$d" >>"$w/mailertable"; done
	printf '.\tfile:outbound\n' >>"$w/mailertable"
	# Relaying is allowed from all of 127.0.0.0/8, so that the milter alone
	# decides: tests present an "outside" client by connecting from another
	# loopback address (swaks --local-interface 127.0.0.2)
	printf 'Connect:127\tRELAY\n' >"$w/access"
	printf 'postmaster: root\nMAILER-DAEMON: postmaster\n' >"$w/aliases"
	printf 'hosts\tfiles\naliases\tfiles\npasswd\tfiles\n' >"$w/service.switch"
	: >"$w/local-host-names"
	: >"$w/trusted-users"
	: >"$w/relay-domains"
	cp "$SENDMAIL_ROOT/etc/mail/helpfile" "$w/helpfile"
}

write_mc() {
	local w=$1 port=$2 milter=$3 authopt=""
	# AuthOptions p: no plaintext mechanism (PLAIN, LOGIN) without TLS
	if [ "$SM_AUTH_TLS_ONLY" = 1 ]; then authopt="define(\`confAUTH_OPTIONS', \`p')"; fi
	sed -e "s|@W@|$w|g" -e "s|@AUTH_OPTIONS@|$authopt|g" -e "s|@PORT@|$port|g" -e "s|@MILTER@|$milter|g" \
		-e "s|@HOSTNAME@|$SM_HOSTNAME|g" -e "s|@CF@|$SENDMAIL_ROOT/usr/share/sendmail/cf|g" \
		>"$w/sendmail.mc" <<'EOF'
divert(-1)dnl
# sendmail.mc of a throwaway mxguard test instance; written by
# scripts/sendmail/instance.sh setup, compiled with m4 to sendmail.cf
divert(0)dnl
include(`@CF@/m4/cf.m4')dnl
VERSIONID(`mxguard e2e test instance')dnl
OSTYPE(`linux')dnl
dnl ---- identity: never depend on the machine's host name or on DNS ----------
define(`confDOMAIN_NAME', `@HOSTNAME@')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`confSERVICE_SWITCH_FILE', `@W@/service.switch')dnl
define(`confTO_IDENT', `0s')dnl
FEATURE(`nocanonify')dnl
FEATURE(`no_default_msa')dnl
FEATURE(`accept_unresolvable_domains')dnl
dnl ---- private state: every file below W -------------------------------------
define(`QUEUE_DIR', `@W@/mqueue')dnl
define(`confPID_FILE', `@W@/sendmail.pid')dnl
define(`STATUS_FILE', `@W@/statistics')dnl
define(`ALIAS_FILE', `@W@/aliases')dnl
define(`HELP_FILE', `@W@/helpfile')dnl
define(`confCW_FILE', `@W@/local-host-names')dnl
define(`confCT_FILE', `@W@/trusted-users')dnl
define(`confCR_FILE', `@W@/relay-domains')dnl
define(`confDEAD_LETTER_DROP', `@W@/dead.letter')dnl
dnl W may be below /tmp, which is world-writable: trust it for its sticky bit
define(`confDONT_BLAME_SENDMAIL', `TrustStickyBit')dnl
define(`confDEF_USER_ID', `8:8')dnl
dnl deliver before answering 250 to DATA: when the client has its reply, the
dnl file is in mail/ or outbound/ (tests need not poll)
define(`confDELIVERY_MODE', `interactive')dnl
dnl a busy CI machine must not make sendmail queue instead of deliver, or refuse
define(`confQUEUE_LA', `1000')dnl
define(`confREFUSE_LA', `1000')dnl
define(`confDELAY_LA', `0')dnl
define(`confLOG_LEVEL', `14')dnl
define(`confMILTER_LOG_LEVEL', `9')dnl
dnl ---- SMTP listener: loopback only ------------------------------------------
DAEMON_OPTIONS(`Family=inet, Name=MTA-test, Port=@PORT@, Addr=127.0.0.1')dnl
dnl ---- STARTTLS with a self-signed certificate ---------------------------------
define(`confCACERT_PATH', `@W@/tls')dnl
define(`confCACERT', `@W@/tls/cert.pem')dnl
define(`confSERVER_CERT', `@W@/tls/cert.pem')dnl
define(`confSERVER_KEY', `@W@/tls/key.pem')dnl
dnl ---- SMTP AUTH: Cyrus SASL, sasldb (W/sasl2/Sendmail.conf) ------------------
define(`confAUTH_MECHANISMS', `PLAIN LOGIN')dnl
define(`confAUTH_REALM', `@HOSTNAME@')dnl
TRUST_AUTH_MECH(`PLAIN LOGIN')dnl
@AUTH_OPTIONS@dnl
dnl ---- the milter: F=T tempfails (451 4.3.2) while it is unreachable -----------
INPUT_MAIL_FILTER(`mxguard', `S=@MILTER@, F=T, T=C:30s;S:30s;R:30s;E:5m')dnl
define(`confMILTER_MACROS_CONNECT', `j, {daemon_name}, {if_name}, {if_addr}, {client_name}, {client_ptr}, {client_addr}')dnl
define(`confMILTER_MACROS_HELO', `{tls_version}, {cipher}')dnl
define(`confMILTER_MACROS_ENVFROM', `i, {auth_type}, {auth_authen}')dnl
define(`confMILTER_MACROS_ENVRCPT', `i')dnl
define(`confMILTER_MACROS_DATA', `i')dnl
define(`confMILTER_MACROS_EOH', `i')dnl
define(`confMILTER_MACROS_EOM', `i')dnl
dnl ---- relaying and routing: access allows 127/8, mailertable sends the test
dnl      domains to file:mail and everything else to file:outbound -------------
FEATURE(`access_db', `hash -T<TMPF> -o @W@/access')dnl
FEATURE(`mailertable', `hash -o @W@/mailertable')dnl
dnl local users (postmaster, bounces to root) are stored in mail/ too
define(`LOCAL_MAILER_PATH', `@W@/deliver.sh')dnl
define(`LOCAL_MAILER_ARGS', `deliver.sh mail $u')dnl
define(`LOCAL_MAILER_FLAGS', `PnS')dnl
MODIFY_MAILER_FLAGS(`LOCAL', `-w')dnl
MAILER(`local')dnl
MAILER(`smtp')dnl
dnl the file mailer: runs as root (S), keeps user@domain in $u
MAILER_DEFINITIONS
Mfile,	P=@W@/deliver.sh, F=lsDFMPnqS, S=EnvFromSMTP/HdrFromSMTP, R=EnvToSMTP/HdrFromSMTP,
	T=DNS/RFC822/SMTP, A=deliver.sh $h $u
dnl address literals (user@[192.0.2.1]) skip the mailertable: keep them here too
LOCAL_RULE_0
R$* < @ [ $+ ] > $*	$#file $@ outbound $: $1 < @ [ $2 ] > $3
EOF
}

# ------------------------------------------------------------ start / stop

# listening PORT: is 127.0.0.1:PORT in state LISTEN? (reads /proc: opens no
# connection, which would start an SMTP session and a milter session)
listening() {
	local hex
	hex=$(printf '%04X' "$1")
	grep -q " 0100007F:$hex 00000000:0000 0A " /proc/net/tcp
}

cmd_start() {
	[ $# -eq 1 ] || die "usage: $0 start W"
	local w=${1%/} port t0 i
	need_root start
	check_setup "$w"
	if daemon_pid "$w" >/dev/null; then
		say "start: $w is already running"
		return 0
	fi
	port=$(instance_port "$w")
	listening "$port" && die "127.0.0.1:$port is already in use"
	# a syslogd left over by a daemon that died would keep the old namespace
	cmd_stop "$w"
	t0=$(now)
	unshare --mount --propagation private -- bash "$SELF" _ns "$w" bash "$SELF" _start "$w"
	for i in $(seq 200); do
		listening "$port" && break
		if [ "$i" = 200 ]; then
			say "start: sendmail did not listen on 127.0.0.1:$port; end of $w/maillog:"
			tail -n 20 "$w/maillog" | sed 's/^/  | /' >&2
			cmd_stop "$w"
			exit 1
		fi
		sleep 0.05
	done
	say "start: $w listening on 127.0.0.1:$port after $(since "$t0")"
}

# _start W: (inside the namespace) syslogd, then the daemon
cmd__start() {
	local w=$1 i
	# -n: foreground (of this background job), -S: short lines
	setsid busybox syslogd -n -S -O "$w/maillog" </dev/null >/dev/null 2>&1 &
	echo $! >"$w/run/syslogd.pid"
	for i in $(seq 100); do
		[ -S /dev/log ] && break
		if [ "$i" = 100 ]; then say "start: busybox syslogd made no /dev/log; sendmail will not log"; fi
		sleep 0.02
	done
	# -bd: SMTP daemon, which detaches; -q1m: rerun the queue every minute
	# (only for deferred mail: DeliveryMode=interactive delivers at once)
	"$SM_BIN" -C "$w/sendmail.cf" -bd -q1m
}

# stop_pid PID: SIGTERM, wait up to 10 s, then SIGKILL (a daemon still
# retrying to bind its port ignores SIGTERM)
stop_pid() {
	local pid=$1 i
	kill "$pid" 2>/dev/null || return 0
	for i in $(seq 200); do
		kill -0 "$pid" 2>/dev/null || return 0
		# a zombie (no init reaps it) is gone for our purposes
		[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && return 0
		sleep 0.05
	done
	kill -KILL "$pid" 2>/dev/null || true
}

cmd_stop() {
	[ $# -eq 1 ] || die "usage: $0 stop W"
	local w=${1%/} pid port i
	need_root stop
	check_w "$w"
	# the daemon first, so that it starts nothing new
	if pid=$(daemon_pid "$w"); then stop_pid "$pid"; fi
	for pid in $(w_procs "$w"); do stop_pid "$pid"; done
	if [ -s "$w/sendmail.cf" ]; then
		port=$(instance_port "$w")
		for i in $(seq 100); do listening "$port" || break; sleep 0.05; done
	fi
	if pid=$(syslogd_pid "$w"); then stop_pid "$pid"; fi
	rm -f "$w/sendmail.pid" "$w/run/syslogd.pid"
}

cmd_status() {
	[ $# -eq 1 ] || die "usage: $0 status W"
	local pid
	if pid=$(daemon_pid "${1%/}"); then
		echo "running $pid"
	else
		echo stopped
		return 3
	fi
}

# ------------------------------------------------------- queue and others

cmd_mailq() {
	[ $# -ge 1 ] || die "usage: $0 mailq W [-qQ]"
	local w=${1%/}
	shift
	check_setup "$w"
	sm "$w" -bp "$@"
}

cmd_release() {
	[ $# -eq 2 ] || die "usage: $0 release W QUEUEID"
	local w=${1%/} qid=$2
	check_setup "$w"
	case $qid in '' | *[!A-Za-z0-9]*) die "bad queue id: $qid" ;; esac
	[ -e "$w/mqueue/hf$qid" ] || die "$qid is not quarantined in $w/mqueue"
	# "-Q -qI<id>" alone is a silent no-op: -qQ makes it act on quarantined
	# mail (hf -> qf). -qf keeps each queue run in the foreground: without it
	# sendmail forks the run and returns before the mail is delivered.
	sm "$w" -qQ -Q -qf -qI"$qid"
	[ -e "$w/mqueue/qf$qid" ] || die "release of $qid failed: no qf$qid after unquarantining"
	sm "$w" -qf -qI"$qid"
	[ ! -e "$w/mqueue/qf$qid" ] || die "$qid was released but not delivered; see $w/maillog"
}

cmd_run() {
	[ $# -ge 1 ] || die "usage: $0 run W ARGS..."
	local w=${1%/}
	shift
	check_setup "$w"
	sm "$w" "$@"
}

usage() {
	sed -n '/^#   instance.sh/,/^# Environment/p' "$SELF" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

main() {
	[ $# -ge 1 ] || usage
	local cmd=$1
	shift
	case $cmd in
	install) cmd_install "$@" ;;
	installed) cmd_installed "$@" ;;
	setup) cmd_setup "$@" ;;
	start) cmd_start "$@" ;;
	stop) cmd_stop "$@" ;;
	status) cmd_status "$@" ;;
	mailq) cmd_mailq "$@" ;;
	release) cmd_release "$@" ;;
	run) cmd_run "$@" ;;
	_ns) cmd__ns "$@" ;;       # internal: see ns_enter
	_start) cmd__start "$@" ;; # internal: see cmd_start
	*) usage ;;
	esac
}

main "$@"
