#!/bin/sh
# Build the floor responder and run the dnsbl benchmark (rbldnsd vs mailrep
# vs floor).  Extra arguments are passed to dnsbl_bench.py, e.g.
#   bench/run.sh --entries 100000 --queries 100000 -r 1
set -eu
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here/out"
${CC:-cc} -std=c17 -O2 -Wall -Wextra -Werror -pthread -o "$here/out/floor" "$here/floor.c"
exec /usr/bin/python3 "$here/dnsbl_bench.py" "$@"
