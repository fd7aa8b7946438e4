#!/bin/sh
# `make demo`: serve the sample zones with mailrep dnsbl on a loopback port
# and show real queries against it with kdig.
set -eu
BIN=${1:-build/mailrep}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
PORT=${DEMO_PORT:-5300}
DATA=$(mktemp -d /tmp/mailrep-demo.XXXXXX)
chmod 755 "$DATA"
cp "$HERE/bl.example.zone" "$HERE/bl6.example.zone" "$DATA/"
chmod 644 "$DATA"/*
LOG="$DATA/server.log"

"$BIN" dnsbl -n -b "127.0.0.1/$PORT" -b "::1/$PORT" -u nobody \
	bl.example:ip4set:"$DATA/bl.example.zone" \
	bl6.example:ip6trie:"$DATA/bl6.example.zone" >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT INT TERM
i=0
until kdig @127.0.0.1 -p "$PORT" +short +timeout=1 +retry=0 2.0.0.127.bl.example A >/dev/null 2>&1; do
	i=$((i + 1))
	if [ $i -gt 50 ] || ! kill -0 $PID 2>/dev/null; then
		echo "server did not start:"; cat "$LOG"; exit 1
	fi
	sleep 0.1
done
echo "mailrep dnsbl is serving bl.example and bl6.example on 127.0.0.1 and ::1 port $PORT"
echo "(zones from demo/*.zone)"

q() {
	echo
	echo "\$ kdig @127.0.0.1 -p $PORT $*"
	kdig @127.0.0.1 -p "$PORT" +timeout=2 +retry=0 +noall +answer +authority "$@" | sed 's/^/    /'
}
echo
echo "== a listed IP (192.0.2.10 is queried as 10.2.0.192.bl.example)"
q 10.2.0.192.bl.example A
echo "== its TXT reason, with the address filled into the template"
q 10.2.0.192.bl.example TXT
echo "== an unlisted IP: NXDOMAIN with the SOA"
q 1.1.1.1.bl.example A
echo "== RFC 5782 test entries: 127.0.0.2 is listed, 127.0.0.1 is not"
q 2.0.0.127.bl.example A
q 1.0.0.127.bl.example A
echo "== RFC 5782 IPv6 test entry ::FFFF:7F00:2 (nibble form)"
q 2.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.bl6.example A
echo "== a /24 listing and its excluded hole"
q 5.113.0.203.bl.example A
q 99.113.0.203.bl.example A
echo "== an empty non-terminal: NODATA, so QNAME-minimising resolvers keep going"
q 0.0.127.bl.example A
echo "== the same query over TCP (rbldnsd has no TCP)"
q +tcp 10.2.0.192.bl.example A
echo "== AXFR of the zone (ranges become wildcards, holes become CNAMEs to excluded)"
echo
echo "\$ kdig @127.0.0.1 -p $PORT AXFR bl.example"
kdig @127.0.0.1 -p "$PORT" +timeout=5 AXFR bl.example | sed 's/^/    /'
