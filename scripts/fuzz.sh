#!/usr/bin/env bash
# make fuzz: builds every fuzz target with clang + libFuzzer (ASan + UBSan) and runs each
# for FUZZ_SECONDS (default 60) from fresh seeds plus the kept corpus, then prints a table:
# executions, executions per second, coverage (edges), features, corpus size, crashes.
# Crashing inputs are kept in BUILD/crashes/<target>/; the exit status is non-zero if any.
# Usage: scripts/fuzz.sh [BUILD_DIR] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-fuzz}
shift || true
secs=${FUZZ_SECONDS:-60}

if [ ! -f "$build/build.ninja" ]; then
	CC=clang meson setup "$build" -Dfuzzer=true -Db_sanitize=address,undefined \
		-Db_lundef=false --buildtype=debugoptimized >/dev/null
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	for f in tests/fuzz/fuzz_*.c; do
		t=${f##*/fuzz_}
		targets+=("${t%.c}")
	done
fi
ninja -C "$build" tests/fuzz/fuzz-seeds $(printf 'tests/fuzz/fuzz_%s ' "${targets[@]}") >/dev/null

work="$build/fuzz-work"
rm -rf "$work"
mkdir -p "$work" "$build/crashes"
"$build/tests/fuzz/fuzz-seeds" "$work/seeds" >/dev/null
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

crashed=0
printf '%-10s %10s %9s %7s %7s %7s %8s\n' target execs exec/s cov ft corpus crashes
for t in "${targets[@]}"; do
	corpus="$work/corpus-$t"
	rm -rf "$build/crashes/$t"
	mkdir -p "$corpus" "$build/crashes/$t"
	cp "$work/seeds/$t"/* "$corpus/"
	[ -d "tests/fuzz/corpus/$t" ] && cp "tests/fuzz/corpus/$t"/* "$corpus/" 2>/dev/null
	log="$work/$t.log"
	rc=0
	"$build/tests/fuzz/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 -timeout=10 \
		-rss_limit_mb=2048 -artifact_prefix="$build/crashes/$t/" "$corpus" >"$log" 2>&1 ||
		rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
	cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
	ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
	ncorp=$(find "$corpus" -type f | wc -l)
	ncrash=$(find "$build/crashes/$t" -type f | wc -l)
	printf '%-10s %10s %9s %7s %7s %7s %8s\n' "$t" "${execs:-?}" "${eps:-?}" "${cov:-?}" \
		"${ft:-?}" "$ncorp" "$ncrash"
	if [ "$rc" -ne 0 ] || [ "$ncrash" -ne 0 ]; then
		crashed=1
		echo "  fuzz_$t failed (exit $rc): see $log and $build/crashes/$t/" >&2
	fi
done
exit $crashed
