#!/usr/bin/env bash
# Replays every fuzz target's seeds (made fresh by fuzz-seeds) and its kept corpus
# (tests/fuzz/corpus/<target>, inputs the fuzzer found worth keeping) through the target.
# A crash or a sanitizer report fails the test.
set -euo pipefail
: "${KYOK_BUILD:?}" "${KYOK_SRC:?}"
dir=$(mktemp -d "${TMPDIR:-/tmp}/kyok-fuzz-replay.XXXXXX")
trap 'rm -rf "$dir"' EXIT
"$KYOK_BUILD/tests/fuzz/fuzz-seeds" "$dir/seeds" >/dev/null
fails=0
for exe in "$KYOK_BUILD"/tests/fuzz/fuzz_*; do
	[ -f "$exe" ] && [ -x "$exe" ] || continue
	t=${exe##*/fuzz_}
	inputs=("$dir/seeds/$t")
	[ -d "$KYOK_SRC/tests/fuzz/corpus/$t" ] && inputs+=("$KYOK_SRC/tests/fuzz/corpus/$t")
	if [ ! -d "$dir/seeds/$t" ]; then
		echo "FAIL fuzz_replay: no seeds for target '$t'" >&2
		fails=$((fails + 1))
		continue
	fi
	if out=$("$exe" "${inputs[@]}" 2>&1); then
		echo "ok   fuzz_replay: ${out##*/}"
	else
		echo "FAIL fuzz_replay: $t" >&2
		printf '%s\n' "$out" | tail -n 30 >&2
		fails=$((fails + 1))
	fi
done
[ "$fails" -eq 0 ]
