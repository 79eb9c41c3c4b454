#!/usr/bin/env bash
# A throwaway Postfix instance on loopback, for the end-to-end tests (e2e/)
# and "make demo". It runs Debian's own Postfix binaries from a private,
# unpacked copy of the postfix package, with its own configuration, queue,
# data directory and port, so the host's mail system is never touched: not
# its packages (installing postfix would remove an installed exim4 or
# sendmail), not /etc/postfix, not /var/spool/postfix. See e2e/README.md.
#
#   postfix-instance.sh install
#       (root) unpack Debian's postfix package into $POSTFIX_ROOT and create
#       the postfix user and postdrop group Postfix insists on; idempotent.
#   postfix-instance.sh create DIR --port N --milter inet:127.0.0.1:M
#                       [--hostname H] [--domains "d1 d2"] [--user NAME:PASSWORD]...
#       write a new instance into DIR (which must not exist or be empty):
#       SMTP on 127.0.0.1:N with STARTTLS and SASL AUTH (sasldb), mail to the
#       --domains delivered into the Maildir DIR/mail/inbox/, every other
#       domain discarded, and mxguard at --milter.
#   postfix-instance.sh start DIR      start it; returns once port N listens
#   postfix-instance.sh stop DIR       stop it (a stopped instance is fine)
#   postfix-instance.sh run DIR CMD [ARGS...]
#       run one of the instance's Postfix commands, e.g. "run DIR postqueue -j"
#
# Environment: POSTFIX_ROOT, the private copy (default /var/cache/mxguard/postfix).
set -euo pipefail

POSTFIX_ROOT=${POSTFIX_ROOT:-/var/cache/mxguard/postfix}
LIBDIR=$POSTFIX_ROOT/usr/lib/postfix

die() {
	echo "postfix-instance: $*" >&2
	exit 1
}

# fail_log DIR MESSAGE: die, showing the end of the instance's log, where
# Postfix writes why (not to standard error, which is no terminal).
fail_log() {
	echo "postfix-instance: $2; the end of $1/maillog:" >&2
	tail -n 30 "$1/maillog" | sed 's/^/  | /' >&2
	exit 1
}

# pf DIR CMD ARGS...: run a command of the private copy on DIR's instance.
# The binaries look for their libraries in /usr/lib/postfix (RUNPATH), which
# LD_LIBRARY_PATH overrides. master passes only import_environment on to its
# children, so main.cf repeats it there.
pf() {
	local dir=$1 cmd=$2
	shift 2
	[ -x "$POSTFIX_ROOT/usr/sbin/$cmd" ] || die "no $POSTFIX_ROOT/usr/sbin/$cmd; run scripts/install-deps.sh (as root)"
	LD_LIBRARY_PATH=$LIBDIR "$POSTFIX_ROOT/usr/sbin/$cmd" -c "$dir/conf" "$@"
}

cmd_install() {
	[ "$(id -u)" -eq 0 ] || die "install must run as root"
	# Postfix refuses to run without its unprivileged account and the group of
	# its queue's drop directory. Created as Debian's package would create
	# them, so a later real install of postfix simply reuses them.
	getent group postdrop >/dev/null || groupadd --system postdrop
	getent passwd postfix >/dev/null ||
		useradd --system --user-group --home-dir /var/spool/postfix --no-create-home \
			--shell /usr/sbin/nologin --comment "Postfix (mxguard tests)" postfix
	# One install at a time (two test runs may start together).
	mkdir -p "$(dirname "$POSTFIX_ROOT")"
	exec 9>"$POSTFIX_ROOT.lock"
	flock 9
	[ -x "$LIBDIR/sbin/master" ] && [ -e "$POSTFIX_ROOT/.version" ] && return 0

	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	# apt downloads as _apt, which must be able to write there.
	getent passwd _apt >/dev/null && chown _apt "$tmp"
	(cd "$tmp" && apt-get download -q postfix >/dev/null) ||
		die "apt-get download postfix failed (run apt-get update first?)"
	local deb
	deb=$(echo "$tmp"/postfix_*.deb)
	[ -f "$deb" ] || die "apt-get download left no postfix_*.deb"
	rm -rf "$POSTFIX_ROOT.new"
	mkdir -p "$POSTFIX_ROOT.new"
	dpkg-deb -x "$deb" "$POSTFIX_ROOT.new"
	# Debian's postinst writes the dynamic map list; an empty one means
	# "built-in map types only", which is all an instance uses.
	: >"$POSTFIX_ROOT.new/etc/postfix/dynamicmaps.cf"
	dpkg-deb -f "$deb" Version >"$POSTFIX_ROOT.new/.version"
	rm -rf "$POSTFIX_ROOT"
	mv "$POSTFIX_ROOT.new" "$POSTFIX_ROOT"
	echo "postfix-instance: Postfix $(cat "$POSTFIX_ROOT/.version") unpacked into $POSTFIX_ROOT"
}

cmd_create() {
	local dir=${1:-}
	[ -n "$dir" ] || die "usage: create DIR --port N --milter inet:HOST:PORT [...]"
	shift
	local port="" milter="" hostname=mx.example.com domains="example.com example.net" users=()
	while [ $# -gt 0 ]; do
		case $1 in
		--port) port=$2 ;;
		--milter) milter=$2 ;;
		--hostname) hostname=$2 ;;
		--domains) domains=$2 ;;
		--user) users+=("$2") ;;
		*) die "create: unknown option $1" ;;
		esac
		shift 2
	done
	[[ $port =~ ^[0-9]+$ ]] || die "create: --port N is required"
	[[ $milter == inet:127.* || $milter == unix:/* ]] || die "create: --milter inet:127.x.y.z:PORT or unix:/path is required"
	[ -x "$LIBDIR/sbin/master" ] || die "no Postfix in $POSTFIX_ROOT; run scripts/install-deps.sh (as root)"
	[ "$(id -u)" -eq 0 ] || die "a Postfix instance must be created and run as root"
	if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
		die "create: $dir is not empty"
	fi

	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	chmod 755 "$dir"
	# Below queue/, and data/, are left to Postfix ("postfix check" creates
	# them with the owners and modes it wants).
	mkdir -p "$dir/conf/sasl" "$dir/queue" "$dir/tls" "$dir/mail"
	# virtual(8) writes the Maildir as nobody:nogroup, no account needed.
	chown 65534:65534 "$dir/mail"
	: >"$dir/maillog"

	cat >"$dir/conf/main.cf" <<EOF
# A throwaway Postfix instance written by scripts/postfix-instance.sh:
# loopback only; mail for its domains goes into one Maildir, all other mail
# is discarded; relay decisions are left to the milter (mxguard).
compatibility_level = 3.6

# The private copy of Debian's package and this instance's own directories.
daemon_directory = $LIBDIR/sbin
command_directory = $POSTFIX_ROOT/usr/sbin
shlib_directory = $LIBDIR
meta_directory = $POSTFIX_ROOT/etc/postfix
queue_directory = $dir/queue
data_directory = $dir/data
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME LD_LIBRARY_PATH=$LIBDIR
# No syslog needed: postlogd writes here ("postlog" service in master.cf).
maillog_file = $dir/maillog
maillog_file_prefixes = $dir

myhostname = $hostname
mydomain = ${hostname#*.}
myorigin = \$myhostname
smtpd_banner = \$myhostname ESMTP Postfix (mxguard test instance)
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
biff = no

# No local delivery, no aliases, no DNS, and nothing leaves this host.
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relayhost =
relay_domains =
default_transport = discard:outside domains are discarded by this test instance
smtp_dns_support_level = disabled
smtpd_peername_lookup = no

virtual_mailbox_domains = $domains
virtual_mailbox_base = $dir/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534

# Postfix accepts everything itself: every refusal the client sees comes
# from mxguard. smtpd refuses to start without a reachable
# reject_unauth_destination, so a lookup that always says OK permits first.
smtpd_relay_restrictions = check_client_access static:OK, reject_unauth_destination
smtpd_recipient_restrictions = permit
# The tests pose as outside clients with XCLIENT.
smtpd_authorized_xclient_hosts = 127.0.0.0/8
# Refusals are the point here; do not slow them down.
smtpd_error_sleep_time = 0
in_flow_delay = 0

# SMTP AUTH: Cyrus SASL with sasldb, over STARTTLS only.
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = $dir/conf/sasl
smtpd_sasl_security_options = noanonymous
smtpd_tls_auth_only = yes
smtpd_tls_security_level = may
smtpd_tls_cert_file = $dir/tls/cert.pem
smtpd_tls_key_file = $dir/tls/key.pem
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes

# mxguard. It asks for the macros it needs itself; tempfail, not accept,
# while it is unreachable.
smtpd_milters = $milter
milter_protocol = 6
milter_default_action = tempfail
milter_connect_timeout = 10s
EOF

	# Nothing chrooted: "postfix start" does not populate a chroot (Debian's
	# init script would), and SASL needs the sasldb.
	cat >"$dir/conf/master.cf" <<EOF
# service      type  private unpriv chroot wakeup maxproc command
127.0.0.1:$port inet n       -      n      -      -       smtpd
pickup         unix  n       -      n      60     1       pickup
cleanup        unix  n       -      n      -      0       cleanup
qmgr           unix  n       -      n      300    1       qmgr
tlsmgr         unix  -       -      n      1000?  1       tlsmgr
rewrite        unix  -       -      n      -      -       trivial-rewrite
bounce         unix  -       -      n      -      0       bounce
defer          unix  -       -      n      -      0       bounce
trace          unix  -       -      n      -      0       bounce
verify         unix  -       -      n      -      1       verify
flush          unix  n       -      n      1000?  0       flush
proxymap       unix  -       -      n      -      -       proxymap
proxywrite     unix  -       -      n      -      1       proxymap
smtp           unix  -       -      n      -      -       smtp
relay          unix  -       -      n      -      -       smtp
showq          unix  n       -      n      -      -       showq
error          unix  -       -      n      -      -       error
retry          unix  -       -      n      -      -       error
discard        unix  -       -      n      -      -       discard
virtual        unix  -       n      n      -      -       virtual
anvil          unix  -       -      n      -      1       anvil
scache         unix  -       -      n      -      1       scache
postlog        unix-dgram n  -      n      -      1       postlogd
EOF

	cat >"$dir/conf/sasl/smtpd.conf" <<EOF
pwcheck_method: auxprop
auxprop_plugin: sasldb
mech_list: PLAIN LOGIN
sasldb_path: $dir/sasldb2
EOF
	local u
	for u in "${users[@]}"; do
		# Users live in the realm of myhostname, the realm Postfix's smtpd
		# uses when the client gives none, so they log in as plain "alice".
		printf '%s' "${u#*:}" | saslpasswd2 -p -c -f "$dir/sasldb2" -u "$hostname" "${u%%:*}"
	done
	[ -e "$dir/sasldb2" ] || saslpasswd2 -p -c -f "$dir/sasldb2" -u "$hostname" nobody </dev/null
	chown root:postfix "$dir/sasldb2"
	chmod 640 "$dir/sasldb2"

	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
		-subj "/CN=$hostname" -keyout "$dir/tls/key.pem" -out "$dir/tls/cert.pem" 2>/dev/null
	chmod 600 "$dir/tls/key.pem"

	# smtpd reads the sasldb as postfix, virtual(8) writes the Maildir as
	# nobody: every directory above DIR must let them through.
	setpriv --reuid=postfix --regid=postfix --clear-groups test -r "$dir/sasldb2" ||
		die "user postfix cannot read $dir/sasldb2: a directory above $dir is not searchable by others (TMPDIR?)"
	setpriv --reuid=65534 --regid=65534 --clear-groups test -w "$dir/mail" ||
		die "user nobody cannot write $dir/mail: a directory above $dir is not searchable by others (TMPDIR?)"

	pf "$dir" postfix check || fail_log "$dir" "postfix check failed"
}

# listening PORT: is something listening on 127.0.0.1:PORT? Reads the
# kernel's table rather than connecting: a probe connection would be an SMTP
# session, with a milter session and a log row of its own.
listening() {
	local hex
	hex=$(printf '0100007F:%04X' "$1")
	awk -v a="$hex" '$2 == a && $4 == "0A" { found = 1 } END { exit !found }' /proc/net/tcp
}

instance_port() {
	awk '$2 == "inet" && $1 ~ /^127\./ { sub(/.*:/, "", $1); print $1; exit }' "$1/conf/master.cf"
}

cmd_start() {
	local dir=${1:?usage: start DIR}
	[ -f "$dir/conf/main.cf" ] || die "start: no instance in $dir (create it first)"
	local port
	port=$(instance_port "$dir")
	listening "$port" && die "start: 127.0.0.1:$port is already in use"
	pf "$dir" postfix start || true # the wait below says what went wrong
	local i
	for i in $(seq 200); do # 20 s
		listening "$port" && return 0
		[ "$i" -gt 20 ] && ! pf "$dir" postfix status >/dev/null 2>&1 && break
		sleep 0.1
	done
	fail_log "$dir" "Postfix did not listen on 127.0.0.1:$port"
}

cmd_stop() {
	local dir=${1:?usage: stop DIR}
	[ -f "$dir/conf/main.cf" ] || return 0
	pf "$dir" postfix status >/dev/null 2>&1 || return 0
	pf "$dir" postfix stop >/dev/null 2>&1 || true
}

cmd_run() {
	local dir=${1:?usage: run DIR COMMAND [ARGS...]} cmd=${2:?usage: run DIR COMMAND [ARGS...]}
	shift 2
	case $cmd in
	postcat | postconf | postfix | postqueue | postsuper | postlog) ;;
	*) die "run: $cmd is not one of the instance's commands" ;;
	esac
	pf "$dir" "$cmd" "$@"
}

case ${1:-} in
install) cmd_install ;;
create) shift && cmd_create "$@" ;;
start) cmd_start "${2:-}" ;;
stop) cmd_stop "${2:-}" ;;
run) shift && cmd_run "$@" ;;
*) die "usage: $0 install | create DIR --port N --milter ADDR [...] | start DIR | stop DIR | run DIR CMD [ARGS...]" ;;
esac
