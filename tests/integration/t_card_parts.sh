#!/usr/bin/env bash
# Master key parts on EP11 smart cards, through the whole stack (a private pcscd, vpcd
# readers, kyok-cards, lib/card, two real units):
#   mk-add --card generates a part on the EP11 card in reader 2: the file records the card's
#     zone and device, the slot, description and VP (no secret); mks marks it; mk-rm removes
#     the record only
#   mk-add --card refusals that change nothing: a wrong PIN (tries shown), a CA card in
#     reader 2, a description the card does not take, a blocked card
#   cryptounit-mk-load of two card parts, the cards swapped in reader 2 on the CLI's prompt:
#     each card envelopes its part to each unit's importer key; commit, set-immediate, both
#     units with one current VP, the VP of the XOR of the parts the cards hold
#   a mixed load (a key part file and a card part)
#   mk-load refusals that send nothing to any unit: a card of the zone that holds no copy of the part in
#     reader 2 (it is named), a wrong PIN (tries shown, no envelope asked), a blocked card, an instance
#     without its anchor
#   a card holding 85 parts makes no 86th; two records of one card part are not loaded together
#   pcscd's APDU log: no part the cards hold ever crossed a reader in the clear
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/pcsc.sh"
pcsc_namespace "$@"
setup
pcsc_start || { fail "pcscd did not start"; exit 1; }
CARD_EEPROM="$KYOK_BUILD/tests/card_eeprom"

newpin() {
	local f="$T_DIR/pw/$1"
	printf '%08d' $((RANDOM * 32768 + RANDOM)) >"$f"
	chmod 600 "$f"
	echo "$f"
}
ca_1=$(newpin ca-1)
ca_2=$(newpin ca-2)
ep_a=$(newpin ep-a)
ep_b=$(newpin ep-b)
ep_c=$(newpin ep-c)
# The wrong PIN has 7 digits: the card takes it (6 to 16 characters), and newpin's PINs have 8
# or more, so it is never one of them by chance.
wrong="$T_DIR/pw/wrong"
printf '%07d' $(((RANDOM * 32768 + RANDOM) % 10000000)) >"$wrong"
chmod 600 "$wrong"
put() {
	if [ -f "$PCSC_DIR/card-$1.pid" ]; then
		card_remove "$1" || fail "kyok-card in reader $1 did not end cleanly"
		pcsc_wait_card "$1" absent
	fi
	card_insert "$1" "$2"
	pcsc_wait_card "$1" present
}
nparts_files() { find "$KYOK_TKE_FILES/keyparts" -type f 2>/dev/null | wc -l; }
card_nparts() { "$KYOK" scup show --reader "${1:-2}" | sed -n 's/^key parts: *\([0-9]*\) of.*/\1/p'; }
# the parts card NAME holds, hex, one a line (read from its EEPROM with its chip key)
card_parts() { "$CARD_EEPROM" parts "$T_DIR/cards/$1.eeprom" "$T_DIR/cards/$1.chip"; }
envelopes() { pcsc_apdus | grep -c '^> 8044' || true; }
units_now() { unit_state 1 | jq -c '[.new_mk, .current_mk, .next_counter]'; unit_state 2 | jq -c '[.new_mk, .current_mk, .next_counter]'; }
# wait_text FILE PATTERN PID: until FILE holds PATTERN (what the CLI printed: its state),
# failing when the process PID ended without it. The bound is for a wedged CLI, not a pace.
wait_text() {
	local i
	for i in $(seq 1 3000); do
		grep -q -- "$2" "$1" 2>/dev/null && return 0
		kill -0 "$3" 2>/dev/null || { grep -q -- "$2" "$1" 2>/dev/null && return 0; return 1; }
		sleep 0.1
	done
	return 1
}
# sha256(01 || a XOR b), the VP of the key two parts make (hex in, hex out)
xor_vp() {
	local a=$1 b=$2 x="" i
	for ((i = 0; i < 64; i += 2)); do
		x+=$(printf '%02x' $((16#${a:i:2} ^ 16#${b:i:2})))
	done
	printf '01%s' "$x" | xxd -r -p | openssl dgst -sha256 -r | cut -d' ' -f1
}

# ---- a zone: its CA card enrols three EP11 cards ----------------------------------------------
put 1 ca
expect_ok "a CA card" "$KYOK" scup ca-init --pin-file "$ca_1" --pin-file "$ca_2"
for c in a b c; do
	pf=$T_DIR/pw/ep-$c
	put 2 "ep$c"
	expect_ok "EP11 card $c" "$KYOK" scup ep11-init --pin-file "$ca_1" --pin-file "$ca_2" --pin-file "$pf"
done

# ---- mk-add --card refusals ---------------------------------------------------------------------
put 2 epa
run_rc "$KYOK" tke mk-add --card --description "part a" --card-pin-file "$ep_a"
expect_eq "mk-add --card with no instance yet (no unit trust anchor to bind the part to): exit 3" \
	"$rc" 3
grep -q "no unit trust anchor certificate (anchor.crt)" <<<"$out" && pass "... says why" ||
	fail "... said: $out"
expect_ok "kyok up: 2 units" "$KYOK" up
run_rc "$KYOK" tke mk-add --card --description "part a" --card-pin-file "$wrong"
expect_eq "mk-add --card with a wrong PIN: exit 4" "$rc" 4
grep -q "EP11 card PIN wrong: 2 tries left" <<<"$out" && pass "... shows the tries left" ||
	fail "... said: $out"
run_rc "$KYOK" tke mk-add --card --description "$(printf 'x%.0s' $(seq 1 65))" --card-pin-file "$ep_a"
expect_eq "mk-add --card with a 65-character description: exit 2" "$rc" 2
grep -q "1 to 64 printable ASCII characters" <<<"$out" && pass "... says what the card takes" ||
	fail "... said: $out"
run_rc "$KYOK" tke mk-add --card --random --description x
expect_eq "mk-add --card with --random: exit 2" "$rc" 2
put 2 ca
run_rc "$KYOK" tke mk-add --card --description "part a" --card-pin-file "$ca_1"
expect_eq "mk-add --card with a CA card in reader 2: exit 3" "$rc" 3
grep -q "reader 2 .*key parts are held on an EP11 card in reader 2" <<<"$out" &&
	pass "... names the reader and what it needs" || fail "... said: $out"
expect_eq "no key part file after the refusals" "$(nparts_files)" 0
put 2 epa
expect_eq "no part made on card a" "$(card_nparts)" 0

# ---- parts made on cards a, b, c ---------------------------------------------------------------
expect_ok "mk-add --card: part a on EP11 card a" \
	"$KYOK" tke mk-add --card --description "part a" --card-pin-file "$ep_a"
grep -q "created key part 1 'part a' on the EP11 card in reader 2 (slot 1)" <<<"$out" &&
	pass "... says where the part is" || fail "... said: $out"
fa=$(sed -n 's/^  file //p' <<<"$out")
expect_eq "... the file holds no secret: the card form, 7 lines" \
	"$(sed 's/: .*//' "$fa" | tr '\n' ' ')" \
	"kyok-key-part description vp held-by kyok-card-zone kyok-card-device kyok-card-part "
expect_eq "... mode 0600" "$(stat -c %a "$fa")" 600
show=$("$KYOK" scup show --reader 2)
expect_eq "... its VP is the one the card shows in slot 1" \
	"$(sed -n 's/^vp: //p' "$fa")" "$(sed -n 's/^ *1  VP \([0-9a-f]*\)  part a$/\1/p' <<<"$show")"
expect_eq "... and the VP of the part the card holds" "$(sed -n 's/^vp: //p' "$fa")" \
	"$(printf '01%s' "$(card_parts epa)" | xxd -r -p | openssl dgst -sha256 -r | cut -d' ' -f1)"
put 2 epb
expect_ok "mk-add --card: part b on EP11 card b (JSON)" \
	"$KYOK" tke mk-add --card --description "part b" --card-pin-file "$ep_b" --output json
expect_eq "... JSON: number 2, held by an EP11 card" "$(jq -r '[.number, .held] | join(" ")' <<<"$out")" \
	"2 ep11-card"
fb=$(jq -r .file <<<"$out")
[ "$(sed -n 's/^kyok-card-device: //p' "$fa")" != "$(sed -n 's/^kyok-card-device: //p' "$fb")" ] &&
	pass "... the two records name two devices" || fail "one device id for cards a and b"
put 2 epc
expect_ok "mk-add --card: part c on EP11 card c" \
	"$KYOK" tke mk-add --card --description "part c" --card-pin-file "$ep_c"
fc=$(sed -n 's/^  file //p' <<<"$out")
mks=$("$KYOK" tke mks)
expect_eq "mks marks the three parts as held on an EP11 card" "$(grep -c ' EP11 card ' <<<"$mks")" 3

# a blocked card makes no part
for i in 1 2 3; do run_rc "$KYOK" tke mk-add --card --description "part x" --card-pin-file "$wrong"; done
grep -q "blocked" <<<"$out" && pass "three wrong PINs block card c" || fail "... said: $out"
run_rc "$KYOK" tke mk-add --card --description "part x" --card-pin-file "$ep_c"
expect_eq "mk-add --card on a blocked card: exit 4" "$rc" 4
grep -q "unblock it with a CA card of its zone" <<<"$out" && pass "... says how to unblock it" ||
	fail "... said: $out"
expect_eq "... three key part files still" "$(nparts_files)" 3

# ---- units, file signature keys, secure mode ------------------------------------------------------
expect_ok "select units 1,2" "$KYOK" tke cryptounit-add --units 1,2
for who in alice bob; do
	expect_ok "sigkey-add $who (key file)" "$KYOK" tke sigkey-add --name "$who" \
		--password-file "$(newpw "sig-$who")"
done
for n in 1 2; do
	expect_ok "admin-add key $n (imprint mode)" "$KYOK" tke cryptounit-admin-add --sigkey "$n"
done
expect_ok "select alice, bob" "$KYOK" tke sigkey-sel --sigkeys 1,2
SIGS=(--password-file "$T_DIR/pw/sig-alice" --password-file "$T_DIR/pw/sig-bob")
expect_ok "thresholds 2/2" "$KYOK" tke cryptounit-thrhld-set --signature 2 --revocation 2 "${SIGS[@]}"

# ---- mk-load refusals: nothing sent to any unit ---------------------------------------------------
before=$(units_now)
env0=$(envelopes)
put 2 epb
run_rc "$KYOK" tke cryptounit-mk-load --parts 1,2 --card-pin-file "$ep_a" \
	--card-pin-file "$ep_b" "${SIGS[@]}"
expect_eq "mk-load with card b in reader 2 for part a: exit 3" "$rc" 3
dev_a=$(sed -n 's/^kyok-card-device: //p' "$fa")
dev_b=$(sed -n 's/^kyok-card-device: //p' "$fb")
grep -q "the EP11 card in reader 2 (device $dev_b) is of the part's zone but holds no part with its VP" <<<"$out" &&
	pass "... a card of the zone that is no copy of card a: names it" || fail "... said: $out"
put 2 epa
run_rc "$KYOK" tke cryptounit-mk-load --parts 1,2 --card-pin-file "$wrong" "${SIGS[@]}"
expect_eq "mk-load with card a's PIN wrong: exit 4" "$rc" 4
grep -q "EP11 card PIN wrong: 2 tries left" <<<"$out" && pass "... shows the tries left" ||
	fail "... said: $out"
put 2 epc
run_rc "$KYOK" tke cryptounit-mk-load --parts 3,1 --card-pin-file "$ep_c" "${SIGS[@]}"
expect_eq "mk-load of a part on a blocked card: exit 4" "$rc" 4
grep -q "unblock it with a CA card of its zone" <<<"$out" && pass "... says how to unblock it" ||
	fail "... said: $out"
mv "$KYOK_INSTANCE/anchor.crt" "$T_DIR/anchor.crt"
put 2 epa
run_rc "$KYOK" tke cryptounit-mk-load --parts 1,2 --card-pin-file "$ep_a" --card-pin-file "$ep_b" "${SIGS[@]}"
mv "$T_DIR/anchor.crt" "$KYOK_INSTANCE/anchor.crt"
expect_eq "mk-load of a card part on an instance without anchor.crt: exit 3" "$rc" 3
grep -q "instance directory has no unit trust anchor certificate (anchor.crt).*copy the instance's anchor.crt" <<<"$out" &&
	pass "... says what is missing and how to get it" || fail "... said: $out"
expect_eq "the refusals changed no unit" "$(units_now)" "$before"
expect_eq "... and no card was asked for an envelope" "$(envelopes)" "$env0"

# ---- a whole master key from two card parts, cards swapped on the prompt ------------------------
"$KYOK" tke cryptounit-mk-load --parts 1,2 --card-pin-file "$ep_a" --card-pin-file "$ep_b" \
	"${SIGS[@]}" >"$T_DIR/load.out" 2>"$T_DIR/load.err" &
pid=$!
# The CLI asks for part b's card, finds card a still there and asks for it to be taken out:
# the swap starts once it says so (it holds no session with the card then).
if wait_text "$T_DIR/load.err" "remove the EP11 card from reader 2" "$pid" &&
	grep -q "insert the EP11 card holding key part 'part b'" "$T_DIR/load.err"; then
	pass "mk-load asks for the card of part b in reader 2, and card a out first"
else
	fail "mk-load did not ask for part b's card: $(cat "$T_DIR/load.err")"
fi
put 2 epb
rc=0
wait "$pid" || rc=$?
expect_eq "mk-load of two card parts: exit 0" "$rc" 0
[ "$rc" -eq 0 ] || cat "$T_DIR/load.err" >&2
anchor_fp=$(openssl x509 -in "$KYOK_INSTANCE/anchor.crt" -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1)
expect_eq "... it registered the instance's anchor on both cards (the SHA-256 shown)" \
	"$(grep -c "unit trust anchor registered on the card: sha256 $anchor_fp" "$T_DIR/load.err")" 2
grep -q "insert the EP11 card holding key part 'part a' (zone [0-9a-f]\{16\}\.\.\., device ${dev_a:0:16}\.\.\., slot 1) into reader 2" \
	"$T_DIR/load.err" && pass "... the prompt names the part, zone, device and slot" ||
	fail "... said: $(cat "$T_DIR/load.err")"
pa=$(card_parts epa)
pb=$(card_parts epb)
want=$(xor_vp "$pa" "$pb")
for n in 1 2; do
	expect_eq "unit $n: new register FULL UNCOMMITTED, the VP of the XOR of the cards' parts" \
		"$(unit_state "$n" | jq -r '[.new_mk.state, .new_mk.vp] | join(" ")')" \
		"FULL UNCOMMITTED $want"
done
expect_ok "mk-commit" "$KYOK" tke cryptounit-mk-commit "${SIGS[@]}"
expect_ok "mk-setimm --yes" "$KYOK" tke cryptounit-mk-setimm --yes "${SIGS[@]}"
expect_eq "both units: current VP the one the cards' parts make" \
	"$(unit_state 1 | jq -r .current_mk.vp) $(unit_state 2 | jq -r .current_mk.vp)" "$want $want"

# ---- a mixed load: a key part file and a card part ---------------------------------------------
value=$(head -c 32 /dev/urandom | xxd -p -c 64)
printf '%s\n' "$value" >"$T_DIR/pw/value"
expect_ok "mk-add --value: part d, a file" "$KYOK" tke mk-add --value --value-file "$T_DIR/pw/value" \
	--description "part d" --password-file "$(newpw part-d)"
put 2 epa
expect_ok "mk-load of file part d and card part a" "$KYOK" tke cryptounit-mk-load --parts 4,1 \
	--password-file "$T_DIR/pw/part-d" --card-pin-file "$ep_a" "${SIGS[@]}"
want2=$(xor_vp "$value" "$pa")
expect_eq "both units: the new key's VP is that of part d XOR part a" \
	"$(unit_state 1 | jq -r .new_mk.vp) $(unit_state 2 | jq -r .new_mk.vp)" "$want2 $want2"

# ---- mk-rm of a card part: the record goes, the part stays -------------------------------------
expect_ok "mk-rm of part c's record" "$KYOK" tke mk-rm --mk 3 --yes
grep -q "stays on its EP11 card" <<<"$out" && pass "... says the part stays on the card" ||
	fail "... said: $out"
[ ! -e "$fc" ] && pass "... the record is gone" || fail "$fc is still there"
expect_eq "... card c still holds its part" "$(card_parts epc | wc -l)" 1

# ---- a full card: 85 parts, the 86th refused ----------------------------------------------------
put 2 epb
full=$({ printf 'open\nverify %s\n' "$ep_b"; for i in $(seq 2 85); do echo "apdu 8040000078"; done; } |
	"$CARD_PROBE" session 2 2>&1 | grep -c '^ok 9000' || true)
expect_eq "card b takes parts 2 to 85 (GENERATE KEY PART through card_probe)" "$full" 84
n0=$(nparts_files)
run_rc "$KYOK" tke mk-add --card --description "part 86" --card-pin-file "$ep_b"
expect_eq "mk-add --card on a card holding 85 parts: exit 4" "$rc" 4
grep -q "card-full\|holds 85 key parts, all it can" <<<"$out" && pass "... says the card is full" ||
	fail "... said: $out"
expect_eq "... no record written" "$(nparts_files)" "$n0"

# ---- two records of one card part: refused, nothing sent ----------------------------------------
cp "$fa" "$KYOK_TKE_FILES/keyparts/0000dup0.keypart"
put 2 epa
before=$(units_now)
run_rc "$KYOK" tke cryptounit-mk-load --parts 1,4 --card-pin-file "$ep_a" --card-pin-file "$ep_a" \
	"${SIGS[@]}"
[ "$rc" -ne 0 ] && grep -q "holds the same value as key part 'part a'" <<<"$out" &&
	pass "mk-load of two records of one card part is refused (exit $rc)" || fail "exit $rc: $out"
expect_eq "... no unit changed" "$(units_now)" "$before"
rm "$KYOK_TKE_FILES/keyparts/0000dup0.keypart"

# ---- a record edited to name another part of its card: refused, nothing sent --------------------
# Card b's slot 2 holds a part made through card_probe; its VP is no secret (KEY PART INFO).
put 2 epb
vp2=$("$KYOK" scup show --reader 2 | sed -n 's/^ *2  VP \([0-9a-f]*\)  .*$/\1/p')
sed -e "s/^vp: .*/vp: $vp2/" -e "s/^kyok-card-part: .*/kyok-card-part: 2/" "$fb" \
	>"$KYOK_TKE_FILES/keyparts/0000edit.keypart"
chmod 600 "$KYOK_TKE_FILES/keyparts/0000edit.keypart"
n_edit=$("$KYOK" tke mks --output json | jq -r '.keyparts[] | select(.file | endswith("0000edit.keypart")) | .number')
before=$(units_now)
env0=$(envelopes)
run_rc "$KYOK" tke cryptounit-mk-load --parts "$n_edit",1 --card-pin-file "$ep_b" \
	--card-pin-file "$ep_a" "${SIGS[@]}"
expect_eq "mk-load of a record edited to name slot 2 of card b: exit 3" "$rc" 3
grep -q "slot 2) is described '.*' on the card: the record is not the card's" <<<"$out" &&
	pass "... the card's own description of that part differs from the record's: named" ||
	fail "... said: $out"
expect_eq "... no unit changed, no envelope asked" "$(units_now) $(envelopes)" "$before $env0"
rm "$KYOK_TKE_FILES/keyparts/0000edit.keypart"

# ---- what crossed the readers ------------------------------------------------------------------
if pcsc_crossed "$(sed -n 's/^vp: //p' "$fa")"; then pass "the APDU log shows part a's VP went across"; else
	fail "part a's VP is not in the APDU log: the log check below would prove nothing"; fi
for c in epa epb epc; do
	p=$(card_parts "$c")
	if pcsc_crossed "$p"; then fail "card $c's key part crossed a reader in the clear"; else
		pass "card $c's key part never crossed a reader in the clear"; fi
done

finish
