#!/usr/bin/env bash
# The file sealing backend and the seal key switch of a zeroize: the sealed state names its
# key; a zeroize replaces the key, so the state from before it never opens again (the unit
# refuses to start on it and changes nothing); a switch cut short at either step is resolved
# at start by the key the state names; kill -9 at random moments of repeated zeroizes never
# leaves a unit that does not start.
. "$(dirname "$0")/helpers.sh"
setup

# run_rc CMD...: runs CMD, output (stdout and stderr) in $out, exit status in $rc.
# expect_match DESC PATTERN TEXT: TEXT holds PATTERN (an extended regex).
expect_match() {
	if grep -qE -- "$2" <<<"$3"; then pass "$1"; else fail "$1: no /$2/ in: $3"; fi
}
D="$KYOK_INSTANCE/unit-1/data"
S="$D/state.sealed"
K="$D/seal.key"
key_line() { sed -n 5p "$1"; }
file_key_id() { { printf 'kyok-seal-key-id\0'; cat "$1"; } | sha256sum | cut -c1-16; }
listing() { find "$D" -printf '%P %s %m %T@\n' | sort; }

"$KYOK" up --dir "$KYOK_INSTANCE" --units 2 >/dev/null 2>&1
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null 2>&1
pa=$(newpw ann)
expect_ok "auto-init (one administrator)" "$KYOK" tke auto-init --signature 1 --revocation 1 \
	--new-admins ann --password-file "$pa"
"$KYOK" tke sigkey-sel --sigkeys 1 >/dev/null 2>&1

expect_eq "state header: format 2, backend file" "$(sed -n '1p;4p' "$S" | tr '\n' '|')" \
	"KYOKSEAL2|seal=file|"
expect_eq "... names seal.key by its id" "$(key_line "$S")" "key=$(file_key_id "$K")"
expect_eq "no .next key outside a switch" "$(ls "$D" | grep -c next || true)" 0

expect_ok "down" "$KYOK" down
cp -p "$S" "$T_DIR/state.before"
cp -p "$K" "$T_DIR/key.before"
expect_ok "restart" "$KYOK" up
expect_eq "... ann still installed on both" \
	"$("$KYOK" status --output json | jq -r '[.units[].state.admins[].name] | join(",")')" "ann,ann"

# ---- zeroize replaces the seal key ----------------------------------------------------------
expect_ok "zeroize both units" "$KYOK" tke cryptounit-zeroize --yes --password-file "$pa"
if cmp -s "$K" "$T_DIR/key.before"; then fail "seal.key unchanged by the zeroize"; else pass "zeroize made a new seal key"; fi
expect_eq "... the state names the new key" "$(key_line "$S")" "key=$(file_key_id "$K")"
expect_eq "... seal.key mode and size" "$(stat -c '%a %s' "$K")" "600 32"
expect_eq "... no .next key left" "$(ls "$D" | grep -c next || true)" 0
expect_match "... the unit logged it" "seal key destroyed: backend=file key=$(file_key_id "$T_DIR/key.before")" \
	"$(cat "$KYOK_INSTANCE/unit-1/unit.log")"

# ---- the state from before the zeroize never opens again ------------------------------------
expect_ok "down" "$KYOK" down
cp -p "$S" "$T_DIR/state.after"
cp -p "$K" "$T_DIR/key.after"
cp -p "$T_DIR/state.before" "$S"
before=$(listing)
run_rc "$KYOK" up
# unit1_refused DESC: the last up left unit 1 down (unit 2 serves on: exit 0 with a warning).
unit1_refused() {
	if [ "$rc" -eq 0 ] && grep -q "^warning: .*/unit-1: crypto unit 1 exited at start" <<<"$out" &&
		grep -q "serving: crypto unit 2$" <<<"$out"; then
		pass "$1"
	else
		fail "$1: exit $rc: $out"
	fi
}
unit1_refused "up on the state from before the zeroize: unit 1 does not start"
expect_match "... the reason is named" \
	"sealed state '$S' is sealed under seal key $(file_key_id "$T_DIR/key.before"), but this unit's seal key is $(file_key_id "$T_DIR/key.after"): the state is older than the unit's last zeroize" \
	"$out"
expect_eq "... nothing in the data directory changed" "$(listing)" "$before"
"$KYOK" down >/dev/null 2>&1 || true
cp -p "$T_DIR/state.after" "$S"
expect_ok "state after the zeroize back: up" "$KYOK" up
expect_eq "... unit 1 is in imprint mode" "$(unit_state 1 | jq -r .imprint)" true

# ---- a switch cut short before its commit: the old key stays, the new one goes -----------------
expect_ok "down" "$KYOK" down
head -c 32 /dev/urandom >"$K.next"
chmod 600 "$K.next"
cp -p "$K" "$T_DIR/key.kept"
expect_ok "up with a .next key the state is not sealed under" "$KYOK" up
expect_eq "... .next removed" "$(ls "$D" | grep -c next || true)" 0
expect_ok "... seal.key kept" cmp "$K" "$T_DIR/key.kept"
expect_match "... logged" "removing seal key .*, made by a seal key switch cut short" \
	"$(cat "$KYOK_INSTANCE/unit-1/unit.log")"

# ---- a switch cut short after its commit: the new key stays, the old one goes -----------------
# The state after the zeroize is sealed under key.after; seal.key still the one before.
expect_ok "down" "$KYOK" down
cp -p "$T_DIR/key.after" "$K.next"
cp -p "$T_DIR/key.before" "$K"
expect_ok "up with the state under .next" "$KYOK" up
expect_ok "... .next became seal.key" cmp "$K" "$T_DIR/key.after"
expect_eq "... no .next left" "$(ls "$D" | grep -c next || true)" 0
expect_match "... logged" "finishing a seal key switch cut short" \
	"$(cat "$KYOK_INSTANCE/unit-1/unit.log")"
expect_ok "down" "$KYOK" down
cp -p "$T_DIR/state.before" "$S"
run_rc "$KYOK" up
unit1_refused "... and the state from before the zeroize still does not open"
"$KYOK" down >/dev/null 2>&1 || true
cp -p "$T_DIR/state.after" "$S"

# ---- a state of the first format is refused by name ------------------------------------------
printf 'KYOKSEAL1\ninstance=x\nunit=y\n\nzzzz' >"$S"
run_rc "$KYOK" up
expect_match "first-format state: refused by name" "is a sealed state of the first format \\(KYOKSEAL1\\)" "$out"
"$KYOK" down >/dev/null 2>&1 || true
cp -p "$T_DIR/state.after" "$S"
expect_ok "up again" "$KYOK" up

# ---- kill -9 at random moments of repeated zeroizes: the state always opens under one key ------
# Zeroize and admin-add alternate (alice signs the zeroize, admin-add needs no signature in
# imprint mode); each round kills unit 1 after a zeroize or two, at a random moment.
"$KYOK" tke cryptounit-add --units 1 >/dev/null 2>&1
# The loop ends at the flag file $T_DIR/zstop, after the command under way: a signal to the
# subshell would leave that CLI running, and it could send its command to the restarted unit.
zloop() {
	while [ ! -e "$T_DIR/zstop" ]; do
		"$KYOK" tke cryptounit-admin-add --sigkey 1 >/dev/null 2>&1 || true
		"$KYOK" tke cryptounit-zeroize --yes --password-file "$pa" >/dev/null 2>&1 || true
	done
}
ROUNDS=$((${KYOK_CRASH_ROUNDS:-20} / 2))
zeroized() { grep -cE 'op=zeroize counter=[0-9]+ outcome=ok' "$KYOK_INSTANCE/unit-1/unit.log" || true; }
bad=0
cut0=$(grep -c 'seal key switch cut short' "$KYOK_INSTANCE/unit-1/unit.log" || true)
for round in $(seq "$ROUNDS"); do
	want=$(($(zeroized) + 1 + RANDOM % 2))
	rm -f "$T_DIR/zstop"
	zloop &
	zpid=$!
	while [ "$(zeroized)" -lt "$want" ] && kill -0 $zpid 2>/dev/null; do sleep 0.01; done
	sleep "0.$(printf '%03d' $((RANDOM % 400)))"
	kill -9 "$(cat "$KYOK_INSTANCE/unit-1/pid")"
	touch "$T_DIR/zstop"
	wait $zpid || true
	if ! "$KYOK" up >/dev/null 2>&1; then
		fail "round $round: unit 1 does not restart: $(tail -n 2 "$KYOK_INSTANCE/unit-1/unit.log")"
		bad=1
		break
	fi
	if [ "$(ls "$D" | grep -c '^seal' || true)" != 1 ] || [ "$(key_line "$S")" != "key=$(file_key_id "$K")" ]; then
		fail "round $round: data directory after restart: $(ls "$D" | tr '\n' ' ')"
		bad=1
		break
	fi
done
cut=$(($(grep -c 'seal key switch cut short' "$KYOK_INSTANCE/unit-1/unit.log" || true) - cut0))
[ $bad -eq 0 ] && pass "$ROUNDS kill -9 rounds during zeroizes: the unit restarts each time, one seal key, named by the state ($cut switches cut short resolved at start)"
expect_ok "... unit 1 answers" unit_state 1

# ---- the data directory: made with its parents, or refused naming what is in the way ------------
X="$T_DIR/dd"
mkdir -p "$X"
: >"$X/afile"
dd_conf() { printf 'instance = i1\nunit = u1\nzone = z1\nlisten = 127.0.0.1:0\ndata_dir = %s\n' "$1" >"$X/u.conf"; }
dd_conf "$X/afile"
run_rc "$UNITD" --config "$X/u.conf"
expect_eq "data_dir is a file: exit 2" "$rc" 2
expect_match "... says it is not a directory" "data directory '$X/afile' is not a directory" "$out"
dd_conf "$X/afile/sub"
run_rc "$UNITD" --config "$X/u.conf"
expect_eq "data_dir under a file: exit 3" "$rc" 3
expect_match "... names the directory it could not make" \
	"cannot create data directory '$X/afile/sub': Not a directory" "$out"
expect_eq "... and made nothing" "$(find "$X" | sort | tr '\n' ' ')" "$X $X/afile $X/u.conf "

finish
