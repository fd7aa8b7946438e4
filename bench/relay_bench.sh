#!/bin/sh
# relay_bench.sh — end-to-end throughput of `mailrep relay` and its memory
# per deferred message, on loopback:
#   1. smtp-source injects N 4 KB messages (20 sessions) from a trusted
#      network; the relay signs each with an RSA-2048 DKIM key, spools it
#      durably (group-committed fdatasync), and delivers it to smtp-sink;
#      the clock stops when the accounting log shows N deliveries;
#   2. the same injection towards a closed port: everything stays queued,
#      and the growth of the relay's RSS divided by N is the memory per
#      queued message.
# Postfix is not run here yet (it needs a private instance); the issue's
# reference figure for it on this kind of machine is about 520 msg/s.
# Usage: bench/relay_bench.sh [MAILREP_BIN] [N]
set -eu
BIN=${1:-build/mailrep}
N=${2:-20000}
SINK_PORT=${SINK_PORT:-12625}
RELAY_PORT=${RELAY_PORT:-12626}
work=$(mktemp -d)
chmod 755 "$work"
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$BIN" dkim keygen --type rsa --bits 2048 --selector s1 --domain example.com \
	--out "$work/k.pem" >/dev/null
/usr/sbin/smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 256 &
pids="$pids $!"

run_relay() { # $1 spool, $2 route
	"$BIN" relay --listen "127.0.0.1:$RELAY_PORT" --spool "$1" --route "*=$2" \
		--trusted 127.0.0.0/8 --conn-limit 20 --log "$1.log" \
		--dkim-key "example.com=s1:$work/k.pem" >"$1.out" 2>&1 &
	relay=$!
	pids="$pids $relay"
	for _ in $(seq 1 100); do
		if /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1', $RELAY_PORT), 0.2)" 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	echo "relay did not start" >&2
	exit 1
}
inject() {
	/usr/sbin/smtp-source -s 20 -m "$N" -l 4096 -f a@example.com -t b@dest.example \
		"127.0.0.1:$RELAY_PORT"
}

run_relay "$work/spool1" "127.0.0.1:$SINK_PORT"
start=$(date +%s.%N)
inject
while [ "$(grep -c '"delivery"' "$work/spool1.log")" -lt "$N" ]; do sleep 0.05; done
end=$(date +%s.%N)
kill "$relay"
wait "$relay" || true
secs=$(echo "$end - $start" | bc)
echo "relay: $N messages end to end in $secs s: $(echo "$N / $secs" | bc) msg/s (DKIM RSA-2048, durable spool)"
grep "group commit" "$work/spool1.out" | sed 's/^relay: info: /relay: /'

run_relay "$work/spool2" "127.0.0.1:9"
before=$(awk '/VmRSS/ {print $2}' "/proc/$relay/status")
inject
sleep 1
after=$(awk '/VmRSS/ {print $2}' "/proc/$relay/status")
echo "relay: $N messages queued: RSS $before kB -> $after kB: $(( (after - before) * 1024 / N )) bytes per queued message"
