#!/usr/bin/env bash
# A whole ceremony with PKCS#11 tokens (SoftHSM2) in place of smart cards: two administrators
# whose signature keys and master key parts are in their own tokens, on a 2-unit instance:
# admins added in imprint mode, thresholds 2/2 (secure mode), a master key loaded from two
# token parts, committed and set, an API key, a wrap and an unwrap, then a master key
# rotation to a key made of two new token parts. Only the CLI is driven; no part is ever
# in clear outside a token or a unit.
. "$(dirname "$0")/helpers.sh"
setup

MODULE=/usr/lib/softhsm/libsofthsm2.so
[ -f "$MODULE" ] || {
	fail "SoftHSM2 module $MODULE is missing: scripts/deps.sh check installs softhsm2"
	finish
}
mkdir -p "$T_DIR/hsm/tokens"
printf 'directories.tokendir = %s/hsm/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' \
	"$T_DIR" >"$T_DIR/hsm/softhsm2.conf"
export SOFTHSM2_CONF="$T_DIR/hsm/softhsm2.conf"
for who in alice bob; do
	so=$(cat "$(newpw "so-$who")")
	pin=$(cat "$(newpw "pin-$who")")
	printf '%s\n%s\n%s\n%s\n' "$so" "$so" "$pin" "$pin" |
		script -qec "softhsm2-util --init-token --free --label kyok-$who" /dev/null >/dev/null
done
PINS=(--password-file "$T_DIR/pw/pin-alice" --password-file "$T_DIR/pw/pin-bob")
expect_match() {
	if grep -qE -- "$2" <<<"$3"; then pass "$1"; else fail "$1: /$2/ not in: $3"; fi
}
vps() { echo "$(unit_state 1 | jq -r "$1") $(unit_state 2 | jq -r "$1")"; }

expect_ok "kyok up: 2 units" "$KYOK" up
expect_ok "select units 1,2" "$KYOK" tke cryptounit-add --units 1,2
for who in alice bob; do
	expect_ok "sigkey-add $who in token kyok-$who" "$KYOK" tke sigkey-add --name "$who" \
		--token-module "$MODULE" --token-label "kyok-$who" --password-file "$T_DIR/pw/pin-$who"
done
for n in 1 2; do
	expect_ok "cryptounit-admin-add key $n (imprint mode)" "$KYOK" tke cryptounit-admin-add \
		--sigkey "$n"
done
expect_ok "select alice, bob" "$KYOK" tke sigkey-sel --sigkeys 1,2
expect_ok "thresholds 2/2: the units leave imprint mode" "$KYOK" tke cryptounit-thrhld-set \
	--signature 2 --revocation 2 "${PINS[@]}"
expect_eq "both units: secure mode, 2/2, admins alice and bob" \
	"$(for n in 1 2; do unit_state "$n" | jq -r '[.imprint, .signature_threshold, .revocation_threshold, ([.admins[].name] | sort | join(","))] | join(" ")'; done | sort -u)" \
	"false 2 2 alice,bob"

# mk_parts N: a key part in each administrator's token, described "part N of WHO".
mk_parts() {
	for who in alice bob; do
		expect_ok "mk-add part $1 of $who in token kyok-$who" "$KYOK" tke mk-add \
			--token-module "$MODULE" --token-label "kyok-$who" --description "part $1 of $who" \
			--password-file "$T_DIR/pw/pin-$who"
	done
}
part_vps() { "$KYOK" tke mks --output json | jq -r "[.keyparts[$1].vp, .keyparts[$2].vp] | join(\",\")"; }

# ---- the first master key, from two token parts ----------------------------------------------
mk_parts 1
expect_ok "mk-load parts 1,2 (sealed in the tokens)" "$KYOK" tke cryptounit-mk-load --parts 1,2 \
	"${PINS[@]}" "${PINS[@]}"
expect_eq "both units record the part VPs the tokens reported" \
	"$(vps '.new_mk.part_vps | join(",")')" "$(part_vps 0 1) $(part_vps 0 1)"
expect_ok "mk-commit" "$KYOK" tke cryptounit-mk-commit "${PINS[@]}"
expect_ok "mk-setimm --yes" "$KYOK" tke cryptounit-mk-setimm --yes "${PINS[@]}"
read -r VP1 VP2 <<<"$(vps .current_mk.vp)"
expect_match "unit 1 has a current master key" "^[0-9a-f]{64}$" "$VP1"
expect_eq "unit 2 has the same one" "$VP2" "$VP1"

# ---- an API key; a data key wrapped and unwrapped ----------------------------------------------
expect_ok "apikey-create Writer" "$KYOK" tke apikey-create --name w --role Writer "${PINS[@]}"
export KYOK_APIKEY_FILE="$KYOK_TKE_FILES/apikeys/w.apikey"
ID=$("$KYOK" kp key-create --name tok-root --output json | jq -r '.resources[0].id // .id')
expect_match "kp key-create: a root key" "^[0-9a-f-]{36}$" "$ID"
head -c 32 /dev/urandom >"$T_DIR/dek"
"$KYOK" kp wrap "$ID" --plaintext-file "$T_DIR/dek" >"$T_DIR/ct" || fail "kp wrap"
unwrap() { "$KYOK" kp unwrap "$ID" --ciphertext-file "$T_DIR/ct" --show --unit "$1"; }
expect_eq "kp unwrap on unit 2 gives the data key back" "$(unwrap 2)" "$(base64 -w0 "$T_DIR/dek")"

# ---- rotation to a master key of two new token parts -----------------------------------------
mk_parts 2
expect_ok "mk-load parts 3,4" "$KYOK" tke cryptounit-mk-load --parts 3,4 "${PINS[@]}" "${PINS[@]}"
expect_ok "mk-commit" "$KYOK" tke cryptounit-mk-commit "${PINS[@]}"
read -r NEW _ <<<"$(vps .new_mk.vp)"
expect_eq "both units hold the same new key, not the current one" \
	"$(vps .new_mk.vp) $([ "$NEW" != "$VP1" ] && echo new)" "$NEW $NEW new"
expect_ok "cryptounit-mk-rotate --yes" "$KYOK" tke cryptounit-mk-rotate --yes "${PINS[@]}"
expect_eq "both units: the new key is current, the new register EMPTY" \
	"$(vps '"\(.current_mk.vp)/\(.new_mk.state)"')" "$NEW/EMPTY $NEW/EMPTY"
expect_eq "the data key still unwraps on unit 1" "$(unwrap 1)" "$(base64 -w0 "$T_DIR/dek")"
expect_eq "... and on unit 2" "$(unwrap 2)" "$(base64 -w0 "$T_DIR/dek")"

finish
