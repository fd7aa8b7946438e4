#!/bin/sh
# DKIM signing throughput on one core: mailrep's full signing path (parse,
# canonicalise, hash the body and headers, sign) on a 4 KB message, against
# the raw OpenSSL signature primitive measured in the same run, and
# `openssl speed` for reference.  Usage: bench/dkim_bench.sh [SECONDS]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${MAILREP_BIN:-$here/../build/mailrep}
secs=${1:-3}
[ -x "$bin" ] || { echo "dkim_bench: build first (make build)" >&2; exit 2; }
"$bin" dkim bench --seconds "$secs" --size 4096
echo
echo "openssl speed (sign/s is the raw primitive on this machine):"
openssl speed -seconds "$secs" rsa2048 ed25519 2>/dev/null | grep -E "bits|sign" || true
