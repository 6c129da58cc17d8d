#!/usr/bin/env bash
# The pkcs11 sealing backend on SoftHSM2 tokens made here: a full ceremony on units whose
# seal keys are non-extractable AES keys in a token, restart, key API use; the data
# directory copied next to another token refuses to start; a wrong PIN refuses to start;
# zeroize destroys the key in the token, so the state from before it never opens again.
. "$(dirname "$0")/helpers.sh"
setup

expect_match() {
	if grep -qE -- "$2" <<<"$3"; then pass "$1"; else fail "$1: no /$2/ in: $3"; fi
}
MODULE=/usr/lib/softhsm/libsofthsm2.so
[ -f "$MODULE" ] || {
	fail "SoftHSM2 module $MODULE is missing: scripts/deps.sh check installs softhsm2"
	finish
}
LABEL=kyok-test

# mk_token NAME: a SoftHSM2 token store in $T_DIR/NAME with one token labelled $LABEL, its
# user PIN in $T_DIR/pw/NAME-pin. PINs go in through a terminal, never on a command line.
mk_token() {
	local d="$T_DIR/$1" so pin
	mkdir -p "$d/tokens"
	printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' \
		"$d" >"$d/softhsm2.conf"
	so=$(cat "$(newpw "$1-so")")
	pin=$(cat "$(newpw "$1-pin")")
	printf '%s\n%s\n%s\n%s\n' "$so" "$so" "$pin" "$pin" |
		SOFTHSM2_CONF="$d/softhsm2.conf" script -qec \
			"softhsm2-util --init-token --free --label $LABEL" /dev/null >/dev/null
}
# token_keys NAME: the secret key objects of token NAME as pkcs11-tool lists them. The PIN is
# typed at its prompt through a terminal (pkcs11-tool drops what was typed before it).
token_keys() {
	SOFTHSM2_CONF="$T_DIR/$1/softhsm2.conf" p11_tool "$LABEL" "$T_DIR/pw/$1-pin" \
		--list-objects --type secrkey
}
mk_token hsm-a
mk_token hsm-b
export SOFTHSM2_CONF="$T_DIR/hsm-a/softhsm2.conf"

cat >"$T_DIR/seal.conf" <<EOF
seal = pkcs11
pkcs11_module = $MODULE
pkcs11_token = $LABEL
pkcs11_pin_file = $T_DIR/pw/hsm-a-pin
EOF
printf 'store = elsewhere\n' >"$T_DIR/bad-seal.conf"
expect_fail "up --seal-config with a setting that is not about sealing: refused" \
	"'store' is not a sealing setting" \
	"$KYOK" up --dir "$KYOK_INSTANCE" --seal-config "$T_DIR/bad-seal.conf"
expect_eq "... no instance made" "$(ls "$KYOK_INSTANCE" 2>/dev/null | wc -l)" 0
# One unit: SoftHSM2's file store is not safe for processes that start at the same time (one
# reads the token while another rewrites it), as the units of 'kyok up' do.
expect_ok "up --seal-config (pkcs11, a unit on token A)" "$KYOK" up --dir "$KYOK_INSTANCE" \
	--units 1 --seal-config "$T_DIR/seal.conf"
expect_fail "up --seal-config on an existing instance: refused" "keep the sealing they were made with" \
	"$KYOK" up --seal-config "$T_DIR/seal.conf"

D="$KYOK_INSTANCE/unit-1/data"
S="$D/state.sealed"
expect_eq "data dir: seal.pkcs11, no seal.key" "$(ls "$D" | grep '^seal' | tr '\n' ' ')" "seal.pkcs11 "
ID=$(sed -n 's/^id=//p' "$D/seal.pkcs11")
expect_eq "state header names backend and key" "$(sed -n '4p;5p' "$S" | tr '\n' '|')" "seal=pkcs11|key=$ID|"
keys=$(token_keys hsm-a)
expect_eq "token A holds the seal key" "$(grep -c 'Secret Key Object' <<<"$keys")" 1
expect_match "... AES-256, labelled kyok-seal" "AES length 32" "$keys"
expect_match "... unit 1's by its id" "ID: +$ID" "$keys"
expect_eq "... never extractable and sensitive" \
	"$(grep -c 'Access: .*sensitive.*never extractable' <<<"$keys")" 1

# ---- the ceremony, the key API, a restart ---------------------------------------------------
"$KYOK" tke cryptounit-add --units 1 >/dev/null 2>&1
pa=$(newpw ann)
expect_ok "auto-init" "$KYOK" tke auto-init --signature 1 --revocation 1 --new-admins ann \
	--password-file "$pa"
"$KYOK" tke sigkey-sel --sigkeys 1 >/dev/null 2>&1
expect_ok "apikey-create Writer" "$KYOK" tke apikey-create --name w --role Writer --password-file "$pa"
AKF="$KYOK_TKE_FILES/apikeys/w.apikey"
kid=$("$KYOK" kp key-create --apikey-file "$AKF" --name root-1 --output json 2>/dev/null |
	jq -r '.resources[0].id')
if [[ "$kid" =~ ^[0-9a-f-]{36}$ ]]; then pass "key-create ($kid)"; else fail "key-create: '$kid'"; fi
expect_ok "wrap" "$KYOK" kp wrap "$kid" --apikey-file "$AKF" --dek-out "$T_DIR/dek" \
	--output json >"$T_DIR/ct"
"$KYOK" kp wrap "$kid" --apikey-file "$AKF" --dek-out "$T_DIR/dek" >"$T_DIR/ct"
expect_ok "down" "$KYOK" down
expect_ok "up again (the seal key found in the token)" "$KYOK" up
expect_ok "unwrap after the restart" "$KYOK" kp unwrap "$kid" --apikey-file "$AKF" \
	--ciphertext-file "$T_DIR/ct" --out "$T_DIR/dek2"
expect_ok "... the same data key" cmp "$T_DIR/dek" "$T_DIR/dek2"

# ---- the data directory copied next to another token -----------------------------------------
C="$T_DIR/copy"
mkdir -p "$C"
cp -a "$D" "$C/data"
sed -e "s|^data_dir = .*|data_dir = $C/data|" -e "s|^port_file = .*|port_file = $C/port|" -e "s|^listen = .*|listen = 127.0.0.1:0|" \
	-e "s|^log_file = .*|log_file = $C/unit.log|" -e '/^store = /d' \
	-e "s|^pkcs11_pin_file = .*|pkcs11_pin_file = $T_DIR/pw/hsm-b-pin|" \
	"$KYOK_INSTANCE/unit-1/unit.conf" >"$C/unit.conf"
before=$(find "$C/data" -printf '%P %s %m %T@\n' | sort)
rc=0
SOFTHSM2_CONF="$T_DIR/hsm-b/softhsm2.conf" "$UNITD" --config "$C/unit.conf" 2>"$C/err" || rc=$?
expect_eq "copy next to token B: refused (exit 5)" "$rc" 5
expect_match "... the cause is named" \
	"token '$LABEL' holds no seal key labelled 'kyok-seal' with id $ID: this data directory was sealed with another token" \
	"$(cat "$C/err")"
expect_eq "... nothing in the copy changed" "$(find "$C/data" -printf '%P %s %m %T@\n' | sort)" "$before"
expect_eq "... token B holds no key" "$(token_keys hsm-b | grep -c 'Secret Key Object' || true)" 0

# ---- a first start cut short: a reference whose key the token never made --------------------------
F="$T_DIR/fresh"
mkdir -p "$F/data"
chmod 700 "$F/data"
sed -e "s|^data_dir = .*|data_dir = $F/data|" -e "s|^port_file = .*|port_file = $F/port|" -e "s|^listen = .*|listen = 127.0.0.1:0|" \
	-e "s|^log_file = .*|log_file = $F/unit.log|" -e '/^store = /d' -e 's/^unit = .*/unit = fresh/' \
	-e "s|^identity_cert = .*|identity_cert = $F/identity.crt|" \
	"$KYOK_INSTANCE/unit-1/unit.conf" >"$F/unit.conf"
printf 'kyok-seal-pkcs11-v1\ntoken=%s\nlabel=kyok-seal\nid=%s\n' "$LABEL" "$(head -c 16 /dev/urandom | xxd -p)" \
	>"$F/data/seal.pkcs11"
chmod 600 "$F/data/seal.pkcs11"
stale=$(sed -n 's/^id=//p' "$F/data/seal.pkcs11")
# A new unit is certified by the instance's anchor first; its identity request is the first
# thing sealed, so the stale reference is met there.
certify_unit "$F/unit.conf" 2>"$F/err" || fail "fresh unit: identity request: $(cat "$F/err")"
"$UNITD" --config "$F/unit.conf" 2>"$F/err" &
fpid=$!
while [ ! -s "$F/port" ] && kill -0 $fpid 2>/dev/null; do sleep 0.1; done
if [ -s "$F/port" ]; then pass "no state and a reference without its key: the unit starts"; else fail "unit did not start: $(cat "$F/err")"; fi
kill $fpid 2>/dev/null || true
wait $fpid || true
expect_match "... it said why it made a new seal key" "the key of '$F/data/seal.pkcs11' is not in the pkcs11 device: making a new seal key" \
	"$(cat "$F/unit.log")"
if [ "$(sed -n 's/^id=//p' "$F/data/seal.pkcs11")" != "$stale" ]; then pass "... a new reference"; else fail "stale reference kept"; fi

# ---- a wrong PIN -----------------------------------------------------------------------------
expect_ok "down" "$KYOK" down
cp -p "$T_DIR/pw/hsm-a-pin" "$T_DIR/pin.saved"
printf 'not-the-pin\n' >"$T_DIR/pw/hsm-a-pin"
run_rc "$KYOK" up
if [ $rc -ne 0 ]; then pass "up with a wrong PIN: exit $rc"; else fail "up with a wrong PIN succeeded"; fi
expect_match "... the PIN is named as the cause" "token '$LABEL' refused the PIN in '$T_DIR/pw/hsm-a-pin'" "$out"
cp -p "$T_DIR/pin.saved" "$T_DIR/pw/hsm-a-pin"
expect_ok "right PIN back: up" "$KYOK" up

# ---- zeroize destroys the key in the token -----------------------------------------------------
expect_ok "down" "$KYOK" down
cp -p "$S" "$T_DIR/state.before"
expect_ok "up" "$KYOK" up
expect_ok "zeroize" "$KYOK" tke cryptounit-zeroize --yes --password-file "$pa"
ID2=$(sed -n 's/^id=//p' "$D/seal.pkcs11")
if [ "$ID2" != "$ID" ]; then pass "zeroize made a new seal key ($ID2)"; else fail "seal key id unchanged by zeroize"; fi
expect_eq "... the state names it" "$(sed -n 5p "$S")" "key=$ID2"
keys=$(token_keys hsm-a)
expect_eq "... the old key is gone from the token" "$(grep -c "ID: *$ID" <<<"$keys" || true)" 0
expect_eq "... the new one is there" "$(grep -c "ID: *$ID2" <<<"$keys")" 1
expect_ok "down" "$KYOK" down
cp -p "$S" "$T_DIR/state.after"
cp -p "$T_DIR/state.before" "$S"
run_rc "$KYOK" up
if [ $rc -ne 0 ]; then pass "up on the state from before the zeroize: exit $rc"; else fail "the state from before the zeroize opened"; fi
expect_match "... the reason is named" \
	"sealed state '$S' is sealed under seal key $ID, but this unit's seal key is $ID2: the state is older than the unit's last zeroize" \
	"$out"
"$KYOK" down >/dev/null 2>&1 || true
# Even with its old reference file back, the key is not in the token any more.
cp -p "$D/seal.pkcs11" "$T_DIR/ref.after"
sed -i "s/^id=.*/id=$ID/" "$D/seal.pkcs11"
run_rc "$KYOK" up
expect_match "state and reference from before the zeroize: the key is not in the token" \
	"token '$LABEL' holds no seal key labelled 'kyok-seal' with id $ID" "$out"
"$KYOK" down >/dev/null 2>&1 || true
cp -p "$T_DIR/ref.after" "$D/seal.pkcs11"
cp -p "$T_DIR/state.after" "$S"
expect_ok "state after the zeroize back: up" "$KYOK" up
expect_eq "... unit 1 in imprint mode" "$(unit_state 1 | jq -r .imprint)" true

# ---- unit.conf: the pkcs11 settings ------------------------------------------------------------
sed -e '/^pkcs11_pin_file/d' -e 's|^listen = .*|listen = 127.0.0.1:0|' "$KYOK_INSTANCE/unit-1/unit.conf" >"$T_DIR/nopin.conf"
expect_fail "seal = pkcs11 without a PIN file: refused" "seal = pkcs11 needs 'pkcs11_pin_file'" \
	"$UNITD" --config "$T_DIR/nopin.conf"
sed -e 's/^seal = pkcs11/seal = file/' -e 's|^listen = .*|listen = 127.0.0.1:0|' "$KYOK_INSTANCE/unit-1/unit.conf" >"$T_DIR/mixed.conf"
expect_fail "pkcs11 settings with seal = file: refused" \
	"'pkcs11_module' is a setting of seal = pkcs11, but seal is file" \
	"$UNITD" --config "$T_DIR/mixed.conf"

finish
