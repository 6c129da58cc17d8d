#!/usr/bin/env bash
# kyok tke card-keep: the PIN of the card in reader 1 asked once per insertion, through the
# whole card stack (a private pcscd, two vpcd readers, kyok-cards):
#   with card-keep holding reader 1, a PIN verified in one session is still verified in the
#     next, after pcscd's power-off grace period has passed: the card in reader 2, left the
#     same way at the same time, is powered off by pcscd and forgets its PIN (the clock of
#     the test is that card, never time)
#   sessions of other programs go on beside card-keep's hold (a shared connection)
#   the card removed and reinserted: card-keep says so, the PIN is asked again
#   card-keep stopped: the card it holds is reset, its PIN forgotten
#   without card-keep a kyok command resets the card it verified (no other program finds its PIN
#     verified after it); beside card-keep (its pid file in the workspace) it leaves it verified
#   --reader 9 (no such reader) and a bad --reader refused
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/pcsc.sh"
pcsc_namespace "$@"
setup
pcsc_start || { fail "pcscd did not start"; exit 1; }

newpin() {
	local f="$T_DIR/pw/$1"
	printf '%08d' $((RANDOM * 32768 + RANDOM)) >"$f"
	chmod 600 "$f"
	echo "$f"
}
put() {
	if [ -f "$PCSC_DIR/card-$1.pid" ]; then
		card_remove "$1" || fail "kyok-card in reader $1 did not end cleanly"
		pcsc_wait_card "$1" absent
	fi
	card_insert "$1" "$2"
	pcsc_wait_card "$1" present
}
# probe N LINE...: one card_probe session on reader N driven by the lines; its answers.
probe() {
	local n=$1
	shift
	printf '%s\n' "$@" | "$CARD_PROBE" session "$n"
}
# verified N: whether the card in reader N has its PIN verified (yes/no), in a session that
# leaves it powered.
verified() { probe "$1" open select verified leave | sed -n '3s/^ok //p'; }
# waitline FILE N TEXT: until FILE has a line with TEXT after its first N lines (state).
waitline() {
	local f=$1 from=$2 text=$3 i
	for ((i = 0; i < 2400; i++)); do
		tail -n +"$((from + 1))" "$f" 2>/dev/null | grep -qF -- "$text" && return 0
		sleep 0.05
	done
	return 1
}
lines() { wc -l <"$1" 2>/dev/null || echo 0; }
ca_1=$(newpin ca-1)
ca_2=$(newpin ca-2)
ep_a=$(newpin ep-a)
ep_b=$(newpin ep-b)

put 1 ca
expect_ok "a CA card" "$KYOK" scup ca-init --pin-file "$ca_1" --pin-file "$ca_2"
put 2 epa
expect_ok "EP11 card a" "$KYOK" scup ep11-init --pin-file "$ca_1" --pin-file "$ca_2" --pin-file "$ep_a"
put 2 epb
expect_ok "EP11 card b" "$KYOK" scup ep11-init --pin-file "$ca_1" --pin-file "$ca_2" --pin-file "$ep_b"
card_remove 1 || fail "the CA card did not end cleanly"
pcsc_wait_card 1 absent

# ---- without card-keep, a kyok command resets the card it verified -----------------------------
put 1 epa
expect_ok "sigkey-add --card on card a (its PIN verified)" "$KYOK" tke sigkey-add --name alice \
	--card --card-pin-file "$ep_a"
expect_eq "... then the card's PIN is no longer verified: no other program finds it so" \
	"$(probe 1 open select verified leave | sed -n '3s/^ok //p')" "no"
card_remove 1 || fail "card a did not end cleanly"
pcsc_wait_card 1 absent

run_rc "$KYOK" tke card-keep --reader 9
expect_eq "card-keep --reader 9 (no such reader): exit 3" "$rc" 3
grep -q "reader" <<<"$out" && pass "... names the reader" || fail "... said: $out"
run_rc "$KYOK" tke card-keep --reader x
expect_eq "card-keep --reader x: exit 2" "$rc" 2
grep -q "not a reader number 1 to 16: 'x'" <<<"$out" && pass "... says why" || fail "... said: $out"

# ---- card-keep holds reader 1 ----------------------------------------------------------------
KEEP_OUT=$T_DIR/keep.out
"$KYOK" tke card-keep >"$KEEP_OUT" 2>&1 &
KEEP=$!
waitline "$KEEP_OUT" 0 "keeping the card in reader 1" && pass "card-keep watches reader 1" ||
	fail "card-keep did not start: $(cat "$KEEP_OUT")"
put 1 epa
waitline "$KEEP_OUT" 0 "card inserted in reader 1: held" && pass "... holds the card inserted" ||
	fail "card-keep did not see the card: $(cat "$KEEP_OUT")"

from1=$(lines "$PCSC_DIR/card-1.log")
from2=$(lines "$PCSC_DIR/card-2.log")
expect_eq "card a (reader 1, held): PIN verified in a session beside card-keep's hold" \
	"$(probe 1 open select "verify $ep_a" verified leave | sed -n '4s/^ok //p')" "yes"
expect_eq "card b (reader 2, not held): PIN verified, left powered" \
	"$(probe 2 open select "verify $ep_b" verified leave | sed -n '4s/^ok //p')" "yes"
# pcscd powers off the card nobody holds once its grace period has passed: card b's power off
# is the sign that the period has passed for card a too (left before b).
waitline "$PCSC_DIR/card-2.log" "$from2" "kyok-card: powered off" &&
	pass "pcscd powered off card b, which nobody holds" || fail "card b was never powered off"
expect_eq "... card b forgot its PIN" "$(verified 2)" "no"
expect_eq "card a, held by card-keep, still has its PIN verified" "$(verified 1)" "yes"
if tail -n +"$((from1 + 1))" "$PCSC_DIR/card-1.log" | grep -q "powered off"; then
	fail "card a was powered off: $(tail -n +"$((from1 + 1))" "$PCSC_DIR/card-1.log" | tr "\n" " ")"
else
	pass "... and was never powered off"
fi

# ---- a kyok command beside card-keep leaves the card verified ------------------------------------
from=$(lines "$KEEP_OUT")
card_remove 2 || fail "card b did not end cleanly"
pcsc_wait_card 2 absent
put 1 epb
waitline "$KEEP_OUT" "$from" "card inserted in reader 1: held" || fail "card-keep: $(cat "$KEEP_OUT")"
expect_ok "sigkey-add --card on card b, card-keep running" "$KYOK" tke sigkey-add --name bob \
	--card --card-pin-file "$ep_b"
expect_eq "... card b's PIN stays verified for the next command (card-keep's workspace pid file)" \
	"$(probe 1 open select verified leave | sed -n '3s/^ok //p')" "yes"
expect_eq "card-keep's pid file is in the workspace while it runs" \
	"$(cat "$KYOK_TKE_FILES/card-keep-1.pid")" "$KEEP"
run_rc "$KYOK" tke card-keep
expect_eq "a second card-keep of reader 1 for this workspace: exit 5" "$rc" 5
grep -q "another 'kyok tke card-keep' holds reader 1 for this workspace" <<<"$out" &&
	pass "... says so" || fail "... said: $out"

# ---- removed and reinserted: the PIN asked again ------------------------------------------
from=$(lines "$KEEP_OUT")
put 1 epa
waitline "$KEEP_OUT" "$from" "card removed from reader 1: its PIN is forgotten" &&
	pass "card-keep says the card was removed" || fail "card-keep said: $(cat "$KEEP_OUT")"
waitline "$KEEP_OUT" "$from" "card inserted in reader 1: held" &&
	pass "... and holds it again when reinserted" || fail "card-keep said: $(cat "$KEEP_OUT")"
expect_eq "the reinserted card's PIN is not verified: asked again" "$(verified 1)" "no"
expect_eq "... verified again" \
	"$(probe 1 open select "verify $ep_a" verified leave | sed -n '4s/^ok //p')" "yes"

# ---- stopped: the card reset ----------------------------------------------------------------
from1=$(lines "$PCSC_DIR/card-1.log")
kill -TERM "$KEEP"
rc=0
wait "$KEEP" || rc=$?
expect_eq "card-keep stopped by SIGTERM: exit 0" "$rc" 0
grep -q "stopped: the card in reader 1 is reset, its PIN forgotten" "$KEEP_OUT" &&
	pass "... says the card is reset" || fail "card-keep said: $(cat "$KEEP_OUT")"
waitline "$PCSC_DIR/card-1.log" "$from1" "kyok-card: reset" && pass "... and card a was reset" ||
	fail "card a was not reset: $(cat "$PCSC_DIR/card-1.log")"
expect_eq "card a forgot its PIN" "$(verified 1)" "no"
[ ! -e "$KYOK_TKE_FILES/card-keep-1.pid" ] && pass "... and card-keep's pid file is gone" ||
	fail "card-keep left its pid file"

finish
