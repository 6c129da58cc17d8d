#!/usr/bin/env bash
# 'make demo' keeps working: the demo script, run whole against this build in a temp dir.
. "$(dirname "$0")/helpers.sh"
setup

src=${KYOK_SRC:-$(dirname "$0")/../..}
rc=0
KYOK_DEMO_DIR="$T_DIR/demo" bash "$src/scripts/demo.sh" "$KYOK_BUILD" >"$T_DIR/demo.log" 2>&1 || rc=$?
for i in "$T_DIR"/demo/inst*; do
	[ -f "$i/instance.json" ] && "$KYOK" down --instance "$i" >/dev/null 2>&1 || true
done
if [ $rc -ne 0 ]; then
	tail -n 30 "$T_DIR/demo.log" >&2
	fail "demo script exit $rc"
else
	pass "demo script ran to the end"
fi
summary=$(sed -n '/== What happened/,$p' "$T_DIR/demo.log")
expect_eq "data key unwraps before and after rotation" \
	"$(grep -c 'unwrapped.* same$\|wrapped, unwrapped *same$' <<<"$summary")" 2
grep -q 'master key rotated *VP \([0-9a-f]\{16\}\)\.\.\. -> \([0-9a-f]\{16\}\)\.\.\.' <<<"$summary" &&
	pass "master key rotated to another VP" || fail "no rotation line in: $summary"
finish
