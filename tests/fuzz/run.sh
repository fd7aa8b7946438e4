#!/bin/sh
# Runs every libFuzzer target for a bounded time, starting from the seed
# corpus in tests/fuzz/corpus/<target>/ (copied, so seeds stay as checked in).
# Targets run JOBS at a time (default: one per core; each fuzzer is one
# process on one core), and each one's report is printed when its batch ends.
set -eu
BUILD=${1:-build-fuzz}
SECONDS_EACH=${2:-20}
JOBS=${3:-$(nproc 2>/dev/null || echo 2)}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# One target; its report goes to $OUT/<name>.out, a failure marks $OUT/<name>.failed.
run_one() {
	bin=$1
	name=$(basename "$bin")
	work=$(mktemp -d)
	if [ -d "$HERE/corpus/$name" ]; then cp -r "$HERE/corpus/$name/." "$work/"; fi
	{
		echo "fuzz: $name for ${SECONDS_EACH}s"
		if ! "$bin" -max_total_time="$SECONDS_EACH" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
			-print_final_stats=1 -artifact_prefix="$work.crash-" "$work" >"$work.log" 2>&1; then
			echo "fuzz: $name FAILED"; tail -50 "$work.log"
			for c in "$work".crash-*; do [ -f "$c" ] && echo "input (base64): $(base64 -w0 "$c")"; done
			: >"$OUT/$name.failed"
		else
			grep -E "stat::number_of_executed_units|Done" "$work.log" | tail -2 | sed "s/^/fuzz: $name: /"
		fi
	} >"$OUT/$name.out"
	rm -rf "$work" "$work.log" "$work".crash-*
}

batch=""
n=0
flush() {
	wait
	for name in $batch; do cat "$OUT/$name.out"; done
	batch=""
	n=0
}
for bin in "$BUILD"/fuzz_*; do
	[ -x "$bin" ] || continue
	run_one "$bin" &
	batch="$batch $(basename "$bin")"
	n=$((n + 1))
	[ "$n" -ge "$JOBS" ] && flush
done
flush
if ls "$OUT"/*.failed >/dev/null 2>&1; then exit 1; fi
echo "fuzz: all targets passed"
