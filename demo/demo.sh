#!/bin/sh
# `make demo`: serve the sample zones with mailrep dnsbl on a loopback port
# and show real queries against it with kdig; record a spamtrap hit and
# serve the listing live; then relay a message through mailrep relay (DKIM
# signed, spooled, delivered to smtp-sink) and verify its signature.
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
PIDS=$PID
trap 'kill $PIDS 2>/dev/null; wait $PIDS 2>/dev/null; rm -rf "$DATA"' EXIT INT TERM
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


# ---- the whole loop: a spamtrap hit becomes a live DNSBL listing -------------
echo
echo "== the loop: spamtrap -> impact -> listing -> DNS answer, live"
# as root, the trap and the relay give root up once their ports are bound
ASUSER=""
[ "$(id -u)" = 0 ] && ASUSER="--user nobody"
TPORT=$((PORT + 1))
LPORT=$((PORT + 2))
chmod 777 "$DATA"
"$BIN" trap --db "$DATA/bl.db" --listen "127.0.0.1:$TPORT" --trap-domain trap.example \
	--proxy-from 127.0.0.1/32 --hostname trap.example $ASUSER >"$DATA/trap.log" 2>&1 &
PIDS="$PIDS $!"
i=0
until grep -q "listening on port" "$DATA/trap.log" 2>/dev/null; do
	i=$((i + 1)); [ $i -gt 50 ] && { echo "trap did not start:"; cat "$DATA/trap.log"; exit 1; }
	sleep 0.1
done
chmod 666 "$DATA"/bl.db*
"$BIN" dnsbl -n -b "127.0.0.1/$LPORT" -u nobody --lookup-url "https://bl.example/lookup?ip=" \
	live.bl.example:store:"$DATA/bl.db" >"$DATA/live.log" 2>&1 &
PIDS="$PIDS $!"
i=0
until kdig @127.0.0.1 -p "$LPORT" +short +timeout=1 +retry=0 2.0.0.127.live.bl.example A >/dev/null 2>&1; do
	i=$((i + 1)); [ $i -gt 50 ] && { echo "live zone did not start:"; cat "$DATA/live.log"; exit 1; }
	sleep 0.1
done
echo "mailrep trap listens on 127.0.0.1:$TPORT for *@trap.example; mailrep dnsbl serves the"
echo "listing store live as live.bl.example on port $LPORT"
ql() {
	echo
	echo "\$ kdig @127.0.0.1 -p $LPORT $*"
	kdig @127.0.0.1 -p "$LPORT" +timeout=2 +retry=0 +noall +answer +authority "$@" | sed 's/^/    /'
}
ql 44.33.22.11.live.bl.example A
echo
echo "\$ swaks --server 127.0.0.1:$TPORT --to probe@trap.example ... (as if from 11.22.33.44, via PROXY)"
swaks --server "127.0.0.1:$TPORT" --to probe@trap.example --from offers@spam.example \
	--helo mx.spam.example --header "Subject: You unsubscribed, so here is more" \
	--proxy-version 1 --proxy-family TCP4 --proxy-source 11.22.33.44 --proxy-source-port 40000 \
	--proxy-dest 127.0.0.1 --proxy-dest-port "$TPORT" 2>&1 | grep -E "^ *<- *250 .*(recorded|Ok)" | tail -1 | sed 's/^/    /'
sleep 1
ql 44.33.22.11.live.bl.example A
ql 44.33.22.11.live.bl.example TXT
echo
echo "\$ mailrep lookup --db bl.db 11.22.33.44"
"$BIN" lookup --db "$DATA/bl.db" 11.22.33.44 | sed 's/^/    /'

# ---- the sending side: relay, DKIM, delivery, accounting ----------------------
KPORT=$((PORT + 3))
SPORT=$((PORT + 4))
RPORT=$((PORT + 5))
echo
echo "== the sending side: mailrep relay signs, spools and delivers; smtp-sink receives"
mkdir -p "$DATA/sink" "$DATA/spool"
chmod 777 "$DATA/sink"
"$BIN" dkim keygen --type ed25519 --selector demo --domain example.com \
	--out "$DATA/dkim.pem" >"$DATA/dkim.txt"
# publish the key with mailrep dnsbl's generic dataset, so the signature can be checked
sed -n 's/^demo\._domainkey\.example\.com\. IN TXT ( "\(.*\)" )$/demo TXT \1/p' "$DATA/dkim.txt" >"$DATA/keys"
chmod 644 "$DATA/keys"
"$BIN" dnsbl -n -b "127.0.0.1/$KPORT" -u nobody _domainkey.example.com:generic:"$DATA/keys" \
	>"$DATA/keys.log" 2>&1 &
PIDS="$PIDS $!"
/usr/sbin/smtp-sink -u nobody -d "$DATA/sink/m." "127.0.0.1:$SPORT" 10 >"$DATA/sink.log" 2>&1 &
PIDS="$PIDS $!"
"$BIN" relay --listen "127.0.0.1:$RPORT" --spool "$DATA/spool" --trusted 127.0.0.1/32 \
	--route "*=127.0.0.1:$SPORT" --dkim-key "example.com=demo:$DATA/dkim.pem" \
	--log "$DATA/accounting.jsonl" --hostname relay.example.com $ASUSER >"$DATA/relay.log" 2>&1 &
PIDS="$PIDS $!"
i=0
until grep -q "listening" "$DATA/relay.log" 2>/dev/null; do
	i=$((i + 1)); [ $i -gt 50 ] && { echo "relay did not start:"; cat "$DATA/relay.log"; exit 1; }
	sleep 0.1
done
echo
echo "\$ mailrep send --server 127.0.0.1:$RPORT -f news@example.com reader@dest.example < message"
printf 'From: News <news@example.com>\r\nTo: reader@dest.example\r\nSubject: Hello from the demo\r\n\r\nThis message was signed, spooled durably and delivered.\r\n' |
	"$BIN" send --server "127.0.0.1:$RPORT" -f news@example.com reader@dest.example | sed "s/^/    /"
i=0
until grep -q '"event":"delivery"' "$DATA/accounting.jsonl" 2>/dev/null; do
	i=$((i + 1)); [ $i -gt 100 ] && { echo "not delivered:"; cat "$DATA/relay.log"; exit 1; }
	sleep 0.1
done
echo
echo "\$ cat accounting.jsonl    # one JSON line per event"
sed 's/^/    /' "$DATA/accounting.jsonl"
echo
echo "\$ mailrep dkim verify --resolver 127.0.0.1:$KPORT < the message smtp-sink received"
sleep 0.3
MSG=$(ls "$DATA"/sink/m.* | head -1)
# smtp-sink's dump holds the envelope first; the message starts at its first header
sed -n '/^DKIM-Signature:/,$p' "$MSG" >"$DATA/delivered.eml"
"$BIN" dkim verify --resolver "127.0.0.1:$KPORT" <"$DATA/delivered.eml" | sed 's/^/    /'
