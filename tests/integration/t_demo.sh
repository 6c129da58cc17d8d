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
grep -q "^demo: working in $T_DIR/demo (KYOK_DEMO_DIR=DIR puts it elsewhere)" "$T_DIR/demo.log" &&
	pass "the demo says where it works" || fail "the demo does not say where it works"
# A directory the demo did not make is never deleted.
mkdir -p "$T_DIR/mine"
echo keep >"$T_DIR/mine/file"
rc=0
out=$(KYOK_DEMO_DIR="$T_DIR/mine" bash "$src/scripts/demo.sh" "$KYOK_BUILD" 2>&1) || rc=$?
if [ $rc -ne 0 ] && grep -q "was not made by the demo: not deleting it" <<<"$out" &&
	[ "$(cat "$T_DIR/mine/file")" = keep ]; then
	pass "KYOK_DEMO_DIR at a directory the demo did not make: refused, left as it was"
else
	fail "KYOK_DEMO_DIR at a foreign directory: exit $rc: $out"
fi
summary=$(sed -n '/== What happened/,$p' "$T_DIR/demo.log")
expect_eq "data key unwraps before and after rotation" \
	"$(grep -c 'unwrapped.* same$\|wrapped, unwrapped *same$' <<<"$summary")" 2
grep -q 'master key rotated *VP \([0-9a-f]\{16\}\)\.\.\. -> \([0-9a-f]\{16\}\)\.\.\.' <<<"$summary" &&
	pass "master key rotated to another VP" || fail "no rotation line in: $summary"
finish
