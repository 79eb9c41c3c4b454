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

# --- Later: integration-test dependencies go here, one check per tool, e.g.
#   command -v postfix   >/dev/null 2>&1 || need postfix
#   command -v sendmail  >/dev/null 2>&1 || need sendmail-bin
#   command -v clamd     >/dev/null 2>&1 || need clamav-daemon
#   command -v spamd     >/dev/null 2>&1 || need spamd

[ ${#missing_pkgs[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing ${missing_pkgs[*]}; install them with:" >&2
	echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing_pkgs[*]}" >&2
	exit 1
fi
echo "deps: installing ${missing_pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
