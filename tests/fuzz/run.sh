#!/bin/sh
# Runs every libFuzzer target for a bounded time, starting from the seed
# corpus in tests/fuzz/corpus/<target>/ (copied, so seeds stay as checked in).
set -eu
BUILD=${1:-build-fuzz}
SECONDS_EACH=${2:-20}
HERE=$(cd "$(dirname "$0")" && pwd)
fail=0
for bin in "$BUILD"/fuzz_*; do
	[ -x "$bin" ] || continue
	name=$(basename "$bin")
	work=$(mktemp -d)
	if [ -d "$HERE/corpus/$name" ]; then cp -r "$HERE/corpus/$name/." "$work/"; fi
	echo "fuzz: $name for ${SECONDS_EACH}s"
	if ! "$bin" -max_total_time="$SECONDS_EACH" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$work.crash-" "$work" >"$work.log" 2>&1; then
		echo "fuzz: $name FAILED"; tail -50 "$work.log"; for c in "$work".crash-*; do [ -f "$c" ] && echo "input (base64): $(base64 -w0 "$c")"; done; fail=1
	else
		grep -E "stat::number_of_executed_units|Done" "$work.log" | tail -2 | sed "s/^/fuzz: $name: /"
	fi
	rm -rf "$work" "$work.log" "$work".crash-*
done
[ $fail -eq 0 ] && echo "fuzz: all targets passed"
exit $fail
