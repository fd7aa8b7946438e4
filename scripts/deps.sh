#!/bin/sh
# Installs the Debian packages that building, testing and benchmarking mailrep need.
# Does nothing (and needs no network) when every package is already present.
set -eu

PKGS="build-essential cmake pkg-config clang libclang-rt-14-dev
libssl-dev libc-ares-dev libevent-dev libsqlite3-dev zlib1g-dev libpsl-dev libcmocka-dev
python3 python3-pytest python3-dnspython python3-yaml
rbldnsd knot knot-dnsutils dnsperf swaks libnet-ssleay-perl postfix openssl unbound"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

echo "deps: installing:$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
# postfix asks questions on install unless told not to.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q || true
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
# Debian starts the daemons it installs; the tests run their own instances on loopback.
for svc in rbldnsd knot postfix unbound; do
	if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
	if [ -x "/etc/init.d/$svc" ]; then $SUDO "/etc/init.d/$svc" stop >/dev/null 2>&1 || true; fi
done
exit 0
