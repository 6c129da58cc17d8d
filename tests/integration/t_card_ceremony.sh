#!/usr/bin/env bash
# A whole key ceremony with smart cards only, as the reference service's Management Utilities
# recommend, through the real card stack (a private pcscd logging every APDU, two vpcd
# readers, kyok-cards):
#   nine cards of one zone: a CA card and its backup; alice's signature key generated on an
#     EP11 card and copied to a second one; bob's on a third; two key parts, each generated on
#     its own EP11 card and copied to a backup card
#   a 2-unit instance: both administrators installed, thresholds 2/2, a master key loaded
#     from the two key part cards in reader 2 while the signature cards in reader 1 sign
#     (swapped on the CLI's request), committed and made current, the units' VPs equal
#   an API key, a wrap on unit 1 and the unwrap on unit 2
#   a second master key from two more card parts, and a rotation onto it
#   pcscd's APDU log: no private key and no key part of any card ever crossed a reader
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
put() { card_put "$@"; }
pull() { card_pull "$@"; }
ca1=$(newpin ca-1)
ca2=$(newpin ca-2)
bk1=$(newpin cabk-1)
bk2=$(newpin cabk-2)
declare -A PIN
for c in alice alice2 bob p1 p1bk p2 p2bk; do PIN[$c]=$(newpin "$c"); done

# The cards the CLI asks for (card_serve), by what it names: the administrator, the key
# part's description.
declare -A CARD_OF_ADMIN=([alice]=alice [bob]=bob)
declare -A CARD_OF_PART
# with_cards NAME CMD...: CMD run with card_serve answering it, the signature cards' PINs on
# a descriptor (alice's copy, bob, in the order the cards are asked for, as often as a command
# of several steps asks); out, rc set as run_rc sets them.
with_cards() {
	local what=$1 pid
	shift
	: >"$T_DIR/cards.err"
	"$@" --card-pin-fd 3 3<"$T_DIR/pw/signers" >"$T_DIR/cards.out" 2>"$T_DIR/cards.err" &
	pid=$!
	card_serve "$T_DIR/cards.err" "$pid"
	rc=0
	wait "$pid" || rc=$?
	out=$(cat "$T_DIR/cards.out" "$T_DIR/cards.err")
	if [ "$rc" -eq 0 ]; then pass "$what"; else fail "$what: exit $rc: $out"; fi
}
for i in $(seq 1 20); do cat "${PIN[alice2]}"; echo; cat "${PIN[bob]}"; echo; done >"$T_DIR/pw/signers"
chmod 600 "$T_DIR/pw/signers"
OLDIFS=$IFS
# part_no DESC: the number 'kyok tke mks' gives the key part DESC.
part_no() { "$KYOK" tke mks --output json | jq -r --arg d "$1" '.keyparts[] | select(.description == $d) | .number'; }

# ---- the zone: a CA card and its backup; seven EP11 cards enrolled ---------------------------
put 1 ca
expect_ok "CA card" "$KYOK" scup ca-init --pin-file "$ca1" --pin-file "$ca2"
put 2 cabk
expect_ok "backup CA card (reader 2) of the CA card (reader 1)" "$KYOK" scup ca-backup \
	--pin-file "$ca1" --pin-file "$ca2" --pin-file "$bk1" --pin-file "$bk2"
for c in alice alice2 bob p1; do
	put 2 "$c"
	expect_ok "EP11 card $c enrolled by the CA card" "$KYOK" scup ep11-init --pin-file "$ca1" \
		--pin-file "$ca2" --pin-file "${PIN[$c]}"
done
put 1 cabk
for c in p1bk p2 p2bk; do
	put 2 "$c"
	expect_ok "EP11 card $c enrolled by the backup CA card" "$KYOK" scup ep11-init \
		--pin-file "$bk1" --pin-file "$bk2" --pin-file "${PIN[$c]}"
done

# ---- signature keys: alice's generated on her card and copied; bob's --------------------------
pull 2
put 1 alice
expect_ok "alice's key generated on her EP11 card" "$KYOK" tke sigkey-add --name alice --card \
	--card-pin-file "${PIN[alice]}"
put 1 alice # a fresh insertion: its PIN is asked, whatever pcscd did since
put 2 alice2
expect_ok "alice's card copied to her second card" "$KYOK" tke card-copy \
	--card-pin-file "${PIN[alice]}" --card-pin-file "${PIN[alice2]}"
pull 2
put 1 bob
expect_ok "bob's key generated on his EP11 card" "$KYOK" tke sigkey-add --name bob --card \
	--card-pin-file "${PIN[bob]}"
pull 1

# ---- the instance (its unit trust anchor binds the key parts made for it) -------------------
expect_ok "kyok up: 2 units" "$KYOK" up

# ---- key parts: each generated on its own card in reader 2 and copied to its backup ----------
declare -A PART_DESC=([p1]="part one" [p2]="part two")
for c in p1 p2; do
	put 2 "$c"
	expect_ok "key part '${PART_DESC[$c]}' generated on card $c" "$KYOK" tke mk-add --card \
		--description "${PART_DESC[$c]}" --card-pin-file "${PIN[$c]}"
	pull 2
	put 1 "$c"
	put 2 "${c}bk"
	expect_ok "card $c copied to ${c}bk" "$KYOK" tke card-copy --card-pin-file "${PIN[$c]}" \
		--card-pin-file "${PIN[${c}bk]}"
	pull 1
	pull 2
done
mks=$("$KYOK" tke mks --output json)
expect_eq "the workspace lists two key parts, both held on cards" \
	"$(jq -r '[.keyparts[].held] | join(",")' <<<"$mks")" "ep11-card,ep11-card"

# ---- administrators, thresholds 2/2 ---------------------------------------------------------
expect_ok "select units 1,2" "$KYOK" tke cryptounit-add --units 1,2
for n in 1 2; do
	expect_ok "admin-add card key $n (imprint mode: the certificate alone)" \
		"$KYOK" tke cryptounit-admin-add --sigkey "$n"
done
expect_ok "select alice, bob" "$KYOK" tke sigkey-sel --sigkeys 1,2
# From here alice signs with her second card (the copy), and each part comes from its backup.
CARD_OF_ADMIN[alice]=alice2
CARD_OF_PART["part one"]=p1bk
CARD_OF_PART["part two"]=p2bk
with_cards "thresholds 2/2, signed by alice's copy and bob's card" "$KYOK" tke \
	cryptounit-thrhld-set --signature 2 --revocation 2
for n in 1 2; do
	expect_eq "unit $n: 2 administrators, thresholds 2/2" \
		"$(unit_state "$n" | jq -r '[(.admins | length), .signature_threshold, .revocation_threshold] | join(" ")')" \
		"2 2 2"
done

# ---- the master key from the two key part cards ----------------------------------------------
with_cards "mk-load of the two parts from the backup cards (reader 2), signed by two cards" \
	"$KYOK" tke cryptounit-mk-load --parts "$(part_no "part one"),$(part_no "part two")" --card-pin-file "${PIN[p1bk]}" \
	--card-pin-file "${PIN[p2bk]}"
grep -q "is a copy of the card holding key part 'part one'" <<<"$out" &&
	pass "... the backup card of part one is named a copy" || fail "... said: $out"
with_cards "mk-commit" "$KYOK" tke cryptounit-mk-commit
with_cards "mk-setimm" "$KYOK" tke cryptounit-mk-setimm --yes
VP=$(unit_state 1 | jq -r .current_mk.vp)
[[ $VP =~ ^[0-9a-f]{64}$ ]] && pass "unit 1 has a current master key" || fail "unit 1: '$VP'"
expect_eq "unit 2 has the same one" "$(unit_state 2 | jq -r .current_mk.vp)" "$VP"
expect_eq "the part VPs the units recorded are the cards' (mks)" \
	"$(unit_state 1 | jq -r '.current_mk.part_vps | sort | join(",")')" \
	"$(jq -r '[.keyparts[].vp] | sort | join(",")' <<<"$mks")"

# ---- an API key; a wrap on unit 1, the unwrap on unit 2 ---------------------------------------
with_cards "apikey-create Writer, signed by two cards" "$KYOK" tke apikey-create \
	--name card-writer --role Writer
IFS=$'\n' # $(auth ...) and $(json_body ...) expand to one curl argument a line
# shellcheck disable=SC2034 # KT is read by helpers.sh's create_json
KT="application/vnd.ibm.kms.key+json"
AT=$(token_of "$KYOK_TKE_FILES/apikeys/card-writer.apikey")
[ -n "$AT" ] || fail "no access token for the API key"
W=$AT
K=$(mkkey card-root)
DEK=$(head -c 32 /dev/urandom | base64 -w0)
# shellcheck disable=SC2046
call 1 $(auth "$AT") $(json_body "{\"plaintext\":\"$DEK\"}") -X POST "/api/v2/keys/$K/actions/wrap"
# shellcheck disable=SC2154 # call sets status
expect_eq "wrap on unit 1: 200" "$status" 200
CT=$(jq -r .ciphertext "$T_DIR/body")
# shellcheck disable=SC2046
call 2 $(auth "$AT") $(json_body "{\"ciphertext\":\"$CT\"}") -X POST "/api/v2/keys/$K/actions/unwrap"
expect_eq "unwrap on unit 2: 200" "$status" 200
expect_eq "... gives back the data key" "$(jq -r .plaintext "$T_DIR/body")" "$DEK"
IFS=$OLDIFS

# ---- rotation: a new master key from two more card parts ---------------------------------------
CARD_OF_PART["part three"]=p1
CARD_OF_PART["part four"]=p2
for c in p1 p2; do
	put 2 "$c"
	d=$([ "$c" = p1 ] && echo "part three" || echo "part four")
	expect_ok "key part '$d' generated on card $c" "$KYOK" tke mk-add --card --description "$d" \
		--card-pin-file "${PIN[$c]}"
done
pull 2
with_cards "mk-load of parts 3 and 4" "$KYOK" tke cryptounit-mk-load --parts "$(part_no "part three"),$(part_no "part four")" \
	--card-pin-file "${PIN[p1]}" --card-pin-file "${PIN[p2]}"
with_cards "mk-commit" "$KYOK" tke cryptounit-mk-commit
with_cards "mk-rotate: key storage re-enciphered, the new key current" "$KYOK" tke \
	cryptounit-mk-rotate --yes
VP2=$(unit_state 1 | jq -r .current_mk.vp)
[ "$VP2" != "$VP" ] && pass "unit 1's current key is the new one" || fail "unit 1 still has $VP"
expect_eq "unit 2's too" "$(unit_state 2 | jq -r .current_mk.vp)" "$VP2"
IFS=$'\n'
# shellcheck disable=SC2046
call 2 $(auth "$AT") $(json_body "{\"ciphertext\":\"$CT\"}") -X POST "/api/v2/keys/$K/actions/unwrap"
expect_eq "the data key wrapped before the rotation unwraps after it" \
	"$status $(jq -r .plaintext "$T_DIR/body")" "200 $DEK"
IFS=$OLDIFS

# ---- nothing secret crossed a reader -------------------------------------------------------
# Every card's private keys and key parts, read from its EEPROM by the card's own code, then
# looked for in every APDU and answer pcscd logged. A value split across two links of a chain
# still leaves one of its halves whole in one link: both halves are looked for.
pull 1
pull 2
nsecret=0
crossed=
for c in ca cabk alice alice2 bob p1 p1bk p2 p2bk; do
	while read -r kind hex; do
		nsecret=$((nsecret + 1))
		h=$((${#hex} / 2))
		if pcsc_crossed "${hex:0:h}" || pcsc_crossed "${hex:h}"; then
			crossed+=" $c:$kind"
		fi
	done < <("$CARD_EEPROM" secrets "$T_DIR/cards/$c.eeprom" "$T_DIR/cards/$c.chip")
done
# 9 device keys, 2 zone keys (CA cards), 3 signature keys (alice's two cards, bob's), 6 parts
# (p1 and p2 hold two each, their backups one)
expect_eq "the cards hold 20 secrets" "$nsecret" 20
expect_eq "none of them crossed a reader in the clear (APDU log of $(pcsc_apdus | wc -l) lines)" \
	"$crossed" ""
if pcsc_crossed "$(xxd -p -c 64 "${PIN[bob]}")"; then
	pass "the log parser finds what did cross (bob's PIN, typed at the workstation)"
else
	fail "bob's PIN, sent in a VERIFY, is not found in the APDU log"
fi

finish
