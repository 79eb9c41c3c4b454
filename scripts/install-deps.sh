#!/usr/bin/env bash
# Installs what building and testing mxguard needs, if it is missing.
# Idempotent and quiet when everything is present; called by "make deps".
# As root it installs Debian packages with apt-get; otherwise it prints the
# command to run.
set -euo pipefail

export PATH=/usr/local/go/bin:$PATH
GO_MIN=1.25 # keep in step with go.mod's go line

missing_pkgs=()

need() { # need PACKAGE...: queue Debian packages to install
	missing_pkgs+=("$@")
}

# --- Go: not installed from apt (Debian's is too old); expected at /usr/local/go.
if ! command -v go >/dev/null 2>&1; then
	echo "deps: Go >= $GO_MIN is required; install it to /usr/local/go (https://go.dev/doc/install)" >&2
	exit 1
fi
have=$(go env GOVERSION) # go1.26.8
have=${have#go}
if [ "$(printf '%s\n%s\n' "$GO_MIN" "$have" | sort -V | head -n1)" != "$GO_MIN" ]; then
	echo "deps: Go $have is too old, mxguard needs >= $GO_MIN ($(command -v go)); install a newer one to /usr/local/go" >&2
	exit 1
fi

# --- C compiler: cgo builds github.com/mattn/go-sqlite3 (the transaction log).
command -v gcc >/dev/null 2>&1 || need gcc libc6-dev

# --- The content engines the tests scan real mail with: ClamAV's clamd,
# SpamAssassin's spamd and rspamd. scripts/engines/*.sh run private
# instances on loopback (never the packages' services, which the
# policy-rc.d below keeps from starting) and would install these
# themselves; installing them here, once, keeps apt out of the tests.
[ -x /usr/sbin/clamd ] || need clamav-daemon
[ -x /usr/sbin/spamd ] || need spamd spamassassin
command -v rspamd >/dev/null 2>&1 || need rspamd

# --- End-to-end tests (e2e/) and "make demo": a real Postfix and a real
# Sendmail in front of mxguard. Neither is installed as a package:
# installing one would remove an installed MTA (exim4, the other one).
# scripts/postfix-instance.sh runs a private unpacked copy of Debian's
# postfix; here come what that copy links against and the client-side tools.
# scripts/sendmail/instance.sh does the same for sendmail-bin and installs
# what its copy needs itself. MXGUARD_E2E=0 skips all of it (see
# e2e/README.md).
e2e=${MXGUARD_E2E:-1}
postfix_copy=0
sendmail_copy=0
sendmail_instance=$(dirname "$0")/sendmail/instance.sh
if [ "$e2e" != 0 ]; then
	# need_pkg PACKAGE...: queue the packages that are not installed
	need_pkg() {
		local p
		for p in "$@"; do
			dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need "$p"
		done
	}
	# the private Postfix's shared libraries, and Cyrus SASL's sasldb and PLAIN/LOGIN plugins
	need_pkg libdb5.3 libicu72 libnsl2 libssl3 libsasl2-2 libsasl2-modules libsasl2-modules-db
	command -v saslpasswd2 >/dev/null 2>&1 || need sasl2-bin
	command -v openssl >/dev/null 2>&1 || need openssl
	command -v swaks >/dev/null 2>&1 || need swaks
	perl -MNet::SSLeay -e1 2>/dev/null || need libnet-ssleay-perl   # swaks --tls
	perl -MIO::Socket::SSL -e1 2>/dev/null || need libio-socket-ssl-perl
	command -v sqlite3 >/dev/null 2>&1 || need sqlite3            # make demo shows a query
	[ -x /usr/bin/chromium ] || need chromium   # e2e/web_test.go drives the console in headless Chromium
	# Sendmail's m4 configuration macros: postfix-integration's tests build a
	# sendmail.cf from our snippet. sendmail-cf holds only m4 files and
	# installs beside any MTA.
	need_pkg m4 sendmail-cf
	root=${POSTFIX_ROOT:-/var/cache/mxguard/postfix}
	{ [ -x "$root/usr/lib/postfix/sbin/master" ] && getent passwd postfix >/dev/null &&
		getent group postdrop >/dev/null; } || postfix_copy=1
	# the private Sendmail copy and its libraries and tools (quiet when present)
	"$sendmail_instance" installed 2>/dev/null || sendmail_copy=1
fi

[ ${#missing_pkgs[@]} -eq 0 ] && [ "$postfix_copy" = 0 ] && [ "$sendmail_copy" = 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	what=("${missing_pkgs[@]}")
	[ "$postfix_copy" = 1 ] && what+=("the private Postfix copy")
	[ "$sendmail_copy" = 1 ] && what+=("the private Sendmail copy")
	printf -v list '%s, ' "${what[@]}"
	echo "deps: missing ${list%, }" >&2
	echo "  run scripts/install-deps.sh as root (e.g. sudo make deps)," >&2
	echo "  or skip the end-to-end tests with MXGUARD_E2E=0 (e2e/README.md)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt=(apt-get -q -y -o DPkg::Lock::Timeout=600)
# Package scripts must not start daemons (sasl2-bin ships saslauthd): a
# policy-rc.d that says no, for the time of the install only.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\n# mxguard install-deps: start no services\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	trap 'rm -f "$policy"' EXIT
fi
"${apt[@]}" update -qq >/dev/null
if [ ${#missing_pkgs[@]} -gt 0 ]; then
	echo "deps: installing ${missing_pkgs[*]}"
	"${apt[@]}" install -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
fi
if [ "$postfix_copy" = 1 ]; then
	"$(dirname "$0")/postfix-instance.sh" install
fi
if [ "$sendmail_copy" = 1 ]; then
	"$sendmail_instance" install
fi
