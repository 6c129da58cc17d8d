#!/usr/bin/env bash
# A unit whose state is created again (data directory deleted) gets a new incarnation: a
# command prepared for its earlier state is refused (wrong-incarnation) even though instance,
# unit and counter match. A unit in imprint mode takes commands only with a claim made with
# the instance's imprint credential: without one, with another credential's, or with one made
# for other bytes, it refuses and changes nothing. Commands are posted with curl, as someone
# who only reaches the port would; the ceremony through the CLI still works.
. "$(dirname "$0")/helpers.sh"
setup

expect_match() {
	if grep -qE -- "$2" <<<"$3"; then pass "$1"; else fail "$1: /$2/ not in: $3"; fi
}

"$KYOK" up >/dev/null
CRED=$KYOK_INSTANCE/imprint-credential.pem
expect_eq "kyok up made the imprint credential, mode 0600" "$(stat -c %a "$CRED")" 600
expect_match "unit.conf holds only the credential's public key" \
	'^imprint_verifier = [0-9a-f]{64}$' "$(cat "$KYOK_INSTANCE/unit-1/unit.conf")"
expect_eq "... which is the credential's" \
	"$(sed -n 's/^imprint_verifier = //p' "$KYOK_INSTANCE/unit-1/unit.conf")" \
	"$(openssl pkey -in "$CRED" -pubout -outform DER | tail -c 32 | xxd -p -c 64)"
if grep -q "PRIVATE KEY" "$KYOK_INSTANCE"/unit-*/unit.conf; then
	fail "a unit.conf holds the secret"
fi

"$KYOK" tke cryptounit-add --units 1 >/dev/null
for who in alice bob; do
	"$KYOK" tke sigkey-add --name "$who" --password-file "$(newpw "$who")" >/dev/null
done
C=$T_DIR/c
mkdir -p "$C"
inc0=$(unit_incarnation 1)
expect_match "state shows the incarnation" '^[0-9a-f]{32}$' "$inc0"

# ---- 1. a command for the unit's first incarnation, counter 0 ---------------------------------
expect_ok "prepare admin-add bob at counter 0" \
	"$KYOK" tke cryptounit-admin-add --sigkey 2 --prepare "$C/add-bob.bundle"
bundle_der "$C/add-bob.bundle" 1 "$C/add-bob.der"
expect_match "cmd-show shows the incarnation" "incarnation: $inc0" \
	"$("$KYOK" tke cmd-show "$C/add-bob.bundle")"
# The claim the administrator's CLI sent with it, as an eavesdropper would have kept it.
old_claim=$(imprint_claim "$C/add-bob.der")
reply=$(post_cmd_bare 1 "$C/add-bob.der" "Kyok-Imprint-Claim: $old_claim")
expect_eq "admin-add bob runs at counter 0" "$(jq -r .ok <<<"$reply")" true
expect_ok "add alice (CLI)" "$KYOK" tke cryptounit-admin-add --sigkey 1
expect_ok "remove bob (CLI, imprint mode)" "$KYOK" tke cryptounit-admin-rm --admin bob
expect_eq "bob is gone" "$(unit_state 1 | jq -c '[.admins[].name]')" '["alice"]'
expect_fail "removing bob again (no unit has him): refused, not 'unchanged'" \
	"bob: .*no selected crypto unit has an administrator of this name.*cryptounit-admins" \
	"$KYOK" tke cryptounit-admin-rm --admin bob
expect_fail "cryptounit-mk-clrnew in imprint mode: refused before signing" \
	"in imprint mode.*cryptounit-thrhld-set" "$KYOK" tke cryptounit-mk-clrnew
expect_fail "cryptounit-mk-clrcur in imprint mode: refused before signing" \
	"in imprint mode.*cryptounit-thrhld-set" "$KYOK" tke cryptounit-mk-clrcur

# ---- 2. the unit is re-created: stopped, data directory deleted, started again ---------------
"$KYOK" down >/dev/null
rm -rf "$KYOK_INSTANCE/unit-1/data"
"$KYOK" up >/dev/null
inc1=$(unit_incarnation 1)
expect_eq "re-created unit: counter back at 0" "$(unit_counter 1)" 0
if [ "$inc1" = "$inc0" ]; then fail "re-created unit kept its incarnation"; else pass "re-created unit has a new incarnation"; fi

expect_fail "the CLI refuses the re-created unit's new identity, saying why and what to do" \
	"identity differs.*re-created.*known_units" "$KYOK" tke cryptounit-admins
expect_match "... the message explains re-creation" \
	"state was created again.*delete its line from .*known_units.*otherwise" "$out"

# The old admin-add, replayed with its old claim: instance, unit and counter 0 all match.
expect_refused "admin-add for the earlier incarnation" wrong-incarnation 1 "$C/add-bob.der" \
	post_cmd
reply=$(post_cmd_bare 1 "$C/add-bob.der" "Kyok-Imprint-Claim: $old_claim")
expect_eq "... also with the claim captured with it" "$(jq -r .error.code <<<"$reply")" \
	wrong-incarnation
expect_match "... the detail says the unit was re-created" \
	"re-created.*prepare the command again" "$(jq -r .error.detail <<<"$reply")"
expect_eq "... and bob is not back" "$(unit_state 1 | jq -c '[.admins[].name]')" '[]'

# The CLI: after the operator confirmed the re-creation, the pin is renewed.
sed -i "/ $(unit_id 1) /d" "$KYOK_TKE_FILES/known_units"
expect_fail "cmd-submit of the old bundle: refused before sending, naming re-creation" \
	"wrong-incarnation|re-created since the command was prepared" \
	"$KYOK" tke cmd-submit "$C/add-bob.bundle"
expect_eq "... nothing changed" "$(unit_counter 1)" 0

# ---- 3. imprint mode: only with the instance's imprint credential ----------------------------
cert_json() { jq -n --rawfile c <(openssl x509 -in "$(sigkey_file "$1")") '{cert: $c}'; }
openssl genpkey -algorithm ed25519 -out "$C/other.pem" 2>/dev/null
chmod 600 "$C/other.pem"
expect_ok "prepare admin-add alice for the new incarnation" \
	"$KYOK" tke cryptounit-admin-add --sigkey 1 --prepare "$C/add-alice.bundle"
bundle_der "$C/add-alice.bundle" 1 "$C/add-alice.der"
expect_refused "admin-add without a claim" imprint-claim-required 1 "$C/add-alice.der" \
	post_cmd_bare
bare_wrong() { post_cmd_bare "$1" "$2" "Kyok-Imprint-Claim: $(imprint_claim "$2" "$C/other.pem")"; }
expect_refused "admin-add claimed with another credential" imprint-claim-invalid 1 \
	"$C/add-alice.der" bare_wrong
bare_other_cmd() { post_cmd_bare "$1" "$2" "Kyok-Imprint-Claim: $old_claim"; }
expect_refused "admin-add with the claim of another command" imprint-claim-invalid 1 \
	"$C/add-alice.der" bare_other_cmd
bare_garbage() { post_cmd_bare "$1" "$2" "Kyok-Imprint-Claim: bm90IGEgc2lnbmF0dXJl"; }
expect_refused "admin-add with a claim that is not a signature" imprint-claim-invalid 1 \
	"$C/add-alice.der" bare_garbage
# A command built by hand, for the unit's present incarnation and counter.
cmd_json 1 zeroize >"$C/z.json"
openssl cms -sign -binary -nodetach -md sha512 -keyid -in "$C/z.json" \
	-signer "$(plain_key bob | sed 's/\.key$/.crt/')" -inkey "$(plain_key bob)" \
	-outform DER -out "$C/z.der"
expect_refused "hand-made command without a claim" imprint-claim-required 1 "$C/z.der" \
	post_cmd_bare

# The CLI: without the credential it refuses before asking anything; with it, it works.
mv "$CRED" "$C/cred.pem"
expect_fail "CLI without the credential: refused, nothing sent" \
	"imprint-claim-required|imprint credential.*no imprint credential was found" \
	"$KYOK" tke cryptounit-admin-add --sigkey 1
expect_eq "... nothing changed" "$(unit_counter 1)" 0
chmod 644 "$C/cred.pem"
expect_fail "credential readable by others: refused" "mode 0644.*chmod 600" \
	"$KYOK" tke cryptounit-admin-add --sigkey 1 --imprint-credential "$C/cred.pem"
chmod 600 "$C/cred.pem"
expect_ok "CLI with --imprint-credential" \
	"$KYOK" tke cryptounit-admin-add --sigkey 1 --imprint-credential "$C/cred.pem"
expect_ok "CLI with KYOK_IMPRINT_CREDENTIAL_FILE" \
	env KYOK_IMPRINT_CREDENTIAL_FILE="$C/cred.pem" "$KYOK" tke cryptounit-admin-add --sigkey 2
"$KYOK" tke sigkey-sel --sigkeys 1 >/dev/null
expect_ok "thresholds 1/1 (leaves imprint mode)" env KYOK_IMPRINT_CREDENTIAL_FILE="$C/cred.pem" \
	"$KYOK" tke cryptounit-thrhld-set --signature 1 --revocation 1 --password-file "$T_DIR/pw/alice"

# ---- 4. out of imprint mode the credential is not needed; after zeroize it is again ----------
expect_ok "remove bob without the credential (signed by alice)" \
	"$KYOK" tke cryptounit-admin-rm --admin bob --password-file "$T_DIR/pw/alice"
expect_ok "zeroize without the credential" \
	"$KYOK" tke cryptounit-zeroize --yes --password-file "$T_DIR/pw/alice"
expect_eq "back in imprint mode" "$(unit_state 1 | jq -r .imprint)" true
cmd_json 1 admin-add "$(cert_json alice)" >"$C/a.json"
sign_cmd "$C/a.json" "$C/a.der" alice
expect_refused "after zeroize: a signature alone does not do" imprint-claim-required 1 \
	"$C/a.der" post_cmd_bare
cp "$C/cred.pem" "$CRED"
expect_refused "after zeroize: a signer not installed, with a valid claim" signer-not-admin 1 \
	"$C/a.der"
expect_ok "auto-init with the credential in the instance directory" \
	"$KYOK" tke auto-init --signature 1 --revocation 1 --sigkeys 1,2 \
	--password-file "$T_DIR/pw/alice" --password-file "$T_DIR/pw/bob"
expect_eq "initialised" "$(unit_state 1 | jq -r '.current_mk.state')" VALID

# ---- 5. an instance made before imprint credentials: kyok up gives it one -------------------
"$KYOK" down >/dev/null
rm -f "$CRED"
sed -i '/^imprint_verifier = \|^# public key of the instance\|^# takes commands only/d' \
	"$KYOK_INSTANCE"/unit-*/unit.conf
expect_ok "kyok up on an instance whose units have no imprint_verifier" "$KYOK" up
expect_eq "... made a new credential, mode 0600" "$(stat -c %a "$CRED")" 600
expect_eq "... and gave every unit its public key" \
	"$(grep -h '^imprint_verifier = ' "$KYOK_INSTANCE"/unit-*/unit.conf | sort -u | wc -l)" 1
expect_ok "zeroize (signed by alice)" \
	"$KYOK" tke cryptounit-zeroize --yes --password-file "$T_DIR/pw/alice"
expect_ok "prepare admin-add alice" \
	"$KYOK" tke cryptounit-admin-add --sigkey 1 --prepare "$C/add-alice2.bundle"
bundle_der "$C/add-alice2.bundle" 1 "$C/add-alice2.der"
bare_old_cred() { post_cmd_bare "$1" "$2" "Kyok-Imprint-Claim: $(imprint_claim "$2" "$C/cred.pem")"; }
expect_refused "the replaced credential no longer claims" imprint-claim-invalid 1 \
	"$C/add-alice2.der" bare_old_cred
expect_accepted "the new one does" 1 "$C/add-alice2.der"

finish
