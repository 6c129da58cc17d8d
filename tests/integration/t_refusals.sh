#!/usr/bin/env bash
# Every refusal of the ceremony rules, on 2 real crypto units. Commands are built and signed
# here with plain openssl and posted with curl, so that the units' own checks are what is
# tested (the CLI validates some things before sending; that is tested elsewhere). Each
# refusal must carry its own error code and leave the unit's state exactly as it was.
. "$(dirname "$0")/helpers.sh"
setup

"$KYOK" up >/dev/null
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null
for who in alice bob carol dave; do
	"$KYOK" tke sigkey-add --name "$who" --password-file "$(newpw "$who")" >/dev/null
done
# alice, bob, carol are administrators; dave never is.
for n in 1 2 3; do "$KYOK" tke cryptounit-admin-add --sigkey "$n" >/dev/null; done
C=$T_DIR/c
mkdir -p "$C"
cert_json() { jq -n --rawfile c <(openssl x509 -in "$(sigkey_file "$1")") '{cert: $c}'; }
ski_of() { unit_state 1 | jq -r ".admins[] | select(.name==\"$1\") | .ski"; }

# ---- imprint mode ----------------------------------------------------------------------------
cmd_json 1 mk-commit "{\"vp\": \"$(printf '%064d' 0)\"}" >"$C/commit.json"
sign_cmd "$C/commit.json" "$C/commit.der" alice
expect_refused "master key command in imprint mode" imprint-mode 1 "$C/commit.der"

cmd_json 1 mk-generate >"$C/gen.json"
sign_cmd "$C/gen.json" "$C/gen.der" alice bob
expect_refused "mk-generate in imprint mode" imprint-mode 1 "$C/gen.der"

cmd_json 1 thresholds-set '{"signature": 2, "revocation": 4}' >"$C/t.json"
sign_cmd "$C/t.json" "$C/t.der" alice bob
expect_refused "revocation threshold above the number of admins" threshold-above-admins 1 "$C/t.der"

cmd_json 1 thresholds-set '{"signature": 1, "revocation": 9}' >"$C/t.json"
sign_cmd "$C/t.json" "$C/t.der" alice
expect_refused "threshold 9" threshold-range 1 "$C/t.der"

cmd_json 1 thresholds-set '{"signature": 0, "revocation": 1}' >"$C/t.json"
sign_cmd "$C/t.json" "$C/t.der" alice
expect_refused "threshold 0" threshold-range 1 "$C/t.der"

cmd_json 1 thresholds-set '{"signature": 2, "revocation": 2}' >"$C/t.json"
sign_cmd "$C/t.json" "$C/t.der" alice
expect_refused "exit imprint with 1 of 2 signatures" not-enough-signatures 1 "$C/t.der"
sign_cmd "$C/t.json" "$C/t.der" alice alice
expect_refused "same admin signing twice counts once" duplicate-signer 1 "$C/t.der"
sign_cmd "$C/t.json" "$C/t.der" alice dave
expect_refused "signature by a key that is not an admin" signer-not-admin 1 "$C/t.der"

# Tampering: the content under valid signatures, then a signature itself.
sign_cmd "$C/t.json" "$C/t.der" alice bob
LC_ALL=C perl -pe 's/"revocation":2/"revocation":1/' "$C/t.der" >"$C/tampered.der"
cmp -s "$C/t.der" "$C/tampered.der" && fail "tampering did not change the command"
expect_refused "tampered command content" bad-signature 1 "$C/tampered.der"
cp "$C/t.der" "$C/tsig.der"
flip_byte "$C/tsig.der" -1
expect_refused "tampered signature bytes" bad-signature 1 "$C/tsig.der"
# A valid signature, but over SHA-256: named as such, not as a signature that fails.
k=$(plain_key alice)
openssl cms -sign -binary -nodetach -md sha256 -keyid -in "$C/t.json" -signer "${k%.key}.crt" \
	-inkey "$k" -outform DER -out "$C/sha256.der"
expect_refused "a signature over SHA-256" wrong-digest 1 "$C/sha256.der"

# Wrong unit, wrong instance, wrong counter.
expect_refused "command for unit 1 sent to unit 2" wrong-unit 2 "$C/t.der"
jq -c '.instance = "00000000-0000-4000-8000-000000000000"' "$C/t.json" >"$C/wi.json"
sign_cmd "$C/wi.json" "$C/wi.der" alice bob
expect_refused "command for another instance" wrong-instance 1 "$C/wi.der"
cmd_json 1 thresholds-set '{"signature": 2, "revocation": 2}' $(($(unit_counter 1) + 1)) >"$C/wc.json"
sign_cmd "$C/wc.json" "$C/wc.der" alice bob
expect_refused "counter ahead of the unit's" wrong-transaction-counter 1 "$C/wc.der"

# The valid command runs once; its replay is refused.
expect_accepted "thresholds 2/2 signed by alice and bob leave imprint mode" 1 "$C/t.der"
expect_eq "unit 1 out of imprint mode" "$(unit_state 1 | jq -r .imprint)" false
expect_refused "replayed command" wrong-transaction-counter 1 "$C/t.der"
"$KYOK" tke sigkey-sel --sigkeys 1,2 >/dev/null
"$KYOK" tke cryptounit-thrhld-set --signature 2 --revocation 2 \
	--password-file "$T_DIR/pw/alice" --password-file "$T_DIR/pw/bob" >/dev/null

# ---- after imprint mode ----------------------------------------------------------------------
cmd_json 1 exit-imprint >"$C/x.json"
sign_cmd "$C/x.json" "$C/x.der" alice bob
expect_refused "exit-imprint outside imprint mode" not-imprint-mode 1 "$C/x.der"

cmd_json 1 admin-add "$(cert_json dave)" >"$C/a.json"
sign_cmd "$C/a.json" "$C/a.der" alice
expect_refused "admin-add with 1 of 2 signatures" not-enough-signatures 1 "$C/a.der"

cmd_json 1 admin-add "$(cert_json alice)" >"$C/a.json"
sign_cmd "$C/a.json" "$C/a.der" alice bob
expect_refused "the same admin key again" duplicate-admin 1 "$C/a.der"

# A different key under an installed name.
mkdir -p "$T_DIR/ws2"
KYOK_TKE_FILES="$T_DIR/ws2" "$KYOK" tke sigkey-add --name bob --password-file "$(newpw bob2)" >/dev/null
bob2=$(ls "$T_DIR"/ws2/sigkeys/bob-*.sigkey)
cmd_json 1 admin-add "$(jq -n --rawfile c <(openssl x509 -in "$bob2") '{cert: $c}')" >"$C/a.json"
sign_cmd "$C/a.json" "$C/a.der" alice bob
expect_refused "another key under an installed admin name" duplicate-admin 1 "$C/a.der"

# Name too long and a certificate that is not self-signed P-521: made with openssl alone.
long=$(printf 'a%.0s' $(seq 31))
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-521 -nodes -keyout "$C/long.key" \
	-subj "/OU=kyok administration/CN=$long" -days 30 -out "$C/long.crt" 2>/dev/null
ski=$(openssl x509 -in "$C/long.crt" -noout -pubkey | openssl pkey -pubin -outform DER |
	tail -c 133 | openssl dgst -sha256 -r | cut -c1-64 | sed 's/../&:/g; s/:$//')
openssl req -x509 -key "$C/long.key" -subj "/OU=kyok administration/CN=$long" -days 30 \
	-addext "subjectKeyIdentifier=$ski" -out "$C/long.crt" 2>/dev/null
cmd_json 1 admin-add "$(jq -n --rawfile c "$C/long.crt" '{cert: $c}')" >"$C/a.json"
sign_cmd "$C/a.json" "$C/a.der" alice bob
expect_refused "admin name of 31 characters" admin-name-invalid 1 "$C/a.der"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$C/p256.key" \
	-subj "/CN=mallory" -days 30 -out "$C/p256.crt" 2>/dev/null
cmd_json 1 admin-add "$(jq -n --rawfile c "$C/p256.crt" '{cert: $c}')" >"$C/a.json"
sign_cmd "$C/a.json" "$C/a.der" alice bob
expect_refused "admin certificate with a P-256 key" bad-admin-certificate 1 "$C/a.der"

cmd_json 1 thresholds-set '{"signature": 3, "revocation": 4}' >"$C/t.json"
sign_cmd "$C/t.json" "$C/t.der" alice bob
expect_refused "threshold above the number of admins" threshold-above-admins 1 "$C/t.der"

# Registers in the wrong state.
cmd_json 1 mk-commit "{\"vp\": \"$(printf '%064d' 0)\"}" >"$C/m.json"
sign_cmd "$C/m.json" "$C/m.der" alice bob
expect_refused "commit with an empty new register" wrong-register-state 1 "$C/m.der"
cmd_json 1 mk-setimm >"$C/m.json"
sign_cmd "$C/m.json" "$C/m.der" alice
expect_refused "set-immediate with an empty new register" wrong-register-state 1 "$C/m.der"
cmd_json 1 mk-clrcur >"$C/m.json"
sign_cmd "$C/m.json" "$C/m.der" alice
expect_refused "clear an empty current register" wrong-register-state 1 "$C/m.der"
cmd_json 1 mk-clrnew >"$C/m.json"
sign_cmd "$C/m.json" "$C/m.der" alice
expect_refused "clear an empty new register" wrong-register-state 1 "$C/m.der"

# mk-load built with openssl: parts encrypted to the importer key, one signature per part.
curl -fsS "$(unit_url 1)/v1/admin/importer" >"$C/importer.pem"
parts='[]'
for i in 1 2; do
	head -c 32 /dev/urandom >"$C/part$i"
	openssl cms -encrypt -binary -aes-256-gcm -recip "$C/importer.pem" \
		-keyopt ecdh_kdf_md:sha256 -in "$C/part$i" -outform DER -out "$C/env$i.der"
	parts=$(jq -c --arg e "$(base64 -w0 "$C/env$i.der")" '. + [$e]' <<<"$parts")
done
key_hex=$(python3 -c 'import sys
a=open(sys.argv[1],"rb").read(); b=open(sys.argv[2],"rb").read()
print(bytes(x^y for x,y in zip(a,b)).hex())' "$C/part1" "$C/part2" 2>/dev/null ||
	perl -e 'open A,"<",$ARGV[0]; open B,"<",$ARGV[1]; binmode A; binmode B; local $/;
	my ($a,$b)=(<A>,<B>); print unpack("H*", $a ^ $b)' "$C/part1" "$C/part2")
vp=$( (printf '\001'; xxd -r -p <<<"$key_hex") | openssl dgst -sha256 -r | cut -c1-64)
cmd_json 1 mk-load "$(jq -n --argjson p "$parts" --arg vp "$vp" '{parts: $p, vp: $vp}')" >"$C/l.json"
sign_cmd "$C/l.json" "$C/l.der" alice
expect_refused "2 key parts with 1 signature" not-enough-signatures 1 "$C/l.der"
cmd_json 1 mk-load "$(jq -n --argjson p "$parts" --arg vp "$(printf '%064d' 1)" '{parts: $p, vp: $vp}')" >"$C/l.json"
sign_cmd "$C/l.json" "$C/l.der" alice bob
expect_refused "key parts whose key has another VP" vp-mismatch 1 "$C/l.der"
cmd_json 1 mk-load "$(jq -n --argjson p "$parts" --arg vp "$vp" '{parts: $p, vp: $vp}')" >"$C/l.json"
sign_cmd "$C/l.json" "$C/l.der" alice bob
expect_accepted "mk-load of 2 openssl-made envelopes signed by 2 admins" 1 "$C/l.der"
expect_eq "new register holds the key's VP" "$(unit_state 1 | jq -r .new_mk.vp)" "$vp"
cmd_json 1 mk-load "$(jq -n --argjson p "$parts" --arg vp "$vp" '{parts: $p, vp: $vp}')" >"$C/l.json"
sign_cmd "$C/l.json" "$C/l.der" alice bob
expect_refused "mk-load into a full new register" wrong-register-state 1 "$C/l.der"
cmd_json 1 mk-commit "{\"vp\": \"$(printf '%064d' 2)\"}" >"$C/m.json"
sign_cmd "$C/m.json" "$C/m.der" alice bob
expect_refused "commit with another VP" vp-mismatch 1 "$C/m.der"
cmd_json 1 mk-commit "{\"vp\": \"$vp\"}" >"$C/m.json"
sign_cmd "$C/m.json" "$C/m.der" alice
expect_refused "commit with 1 of 2 signatures" not-enough-signatures 1 "$C/m.der"
sign_cmd "$C/m.json" "$C/m.der" alice bob
expect_accepted "commit" 1 "$C/m.der"
cmd_json 1 mk-setimm "{\"vp\": \"$vp\"}" >"$C/m.json"
sign_cmd "$C/m.json" "$C/m.der" bob
expect_accepted "set-immediate with 1 signature" 1 "$C/m.der"
expect_eq "current register holds the key" "$(unit_state 1 | jq -r .current_mk.state)/$(unit_state 1 | jq -r .current_mk.vp)" "VALID/$vp"
# The same key again as the new key.
cmd_json 1 mk-load "$(jq -n --argjson p "$parts" --arg vp "$vp" '{parts: $p, vp: $vp}')" >"$C/l.json"
sign_cmd "$C/l.json" "$C/l.der" alice bob
expect_refused "new master key equal to the current one" same-as-current 1 "$C/l.der"

# Removal below a threshold, and a removed admin's signature.
cmd_json 1 admin-rm "{\"ski\": \"$(ski_of carol)\"}" >"$C/r.json"
sign_cmd "$C/r.json" "$C/r.der" carol
expect_refused "admin-rm with 1 of 2 (revocation) signatures" not-enough-signatures 1 "$C/r.der"
sign_cmd "$C/r.json" "$C/r.der" alice carol
expect_accepted "carol removed by alice and carol" 1 "$C/r.der"
cmd_json 1 admin-rm "{\"ski\": \"$(ski_of bob)\"}" >"$C/r.json"
sign_cmd "$C/r.json" "$C/r.der" alice bob
expect_refused "removal below a threshold" removal-below-threshold 1 "$C/r.der"
cmd_json 1 mk-clrnew >"$C/m.json"
sign_cmd "$C/m.json" "$C/m.der" carol
expect_refused "command signed by a removed admin" signer-not-admin 1 "$C/m.der"
cmd_json 1 admin-rm "{\"ski\": \"$(printf 'ab%.0s' $(seq 32))\"}" >"$C/r.json"
sign_cmd "$C/r.json" "$C/r.der" alice bob
expect_refused "removal of an unknown admin" admin-not-found 1 "$C/r.der"

# Malformed commands.
printf 'not a command' >"$C/junk.der"
expect_refused "bytes that are not CMS" not-a-command-file 1 "$C/junk.der"
cmd_json 1 mk-frobnicate >"$C/u.json"
sign_cmd "$C/u.json" "$C/u.der" alice
expect_refused "unknown operation" unknown-command 1 "$C/u.der"
jq -c '. + {extra: 1}' <(cmd_json 1 mk-clrnew) >"$C/u.json"
sign_cmd "$C/u.json" "$C/u.der" alice
expect_refused "unknown field" bad-command 1 "$C/u.der"

# ---- zeroize: back to imprint mode, old commands stay dead ---------------------------------
cmd_json 1 zeroize >"$C/z.json"
sign_cmd "$C/z.json" "$C/z.der" alice
cp "$C/m.der" "$C/old.der"
expect_accepted "zeroize with 1 signature" 1 "$C/z.der"
st=$(unit_state 1)
expect_eq "zeroized unit: imprint, no admins, registers empty" \
	"$(jq -r '[.imprint, (.admins|length), .signature_threshold, .new_mk.state, .current_mk.state] | join(" ")' <<<"$st")" \
	"true 0 0 EMPTY EMPTY"
expect_refused "a pre-zeroize command replayed" wrong-transaction-counter 1 "$C/z.der"

# ---- admin table full (imprint mode on unit 1 now) -------------------------------------------
for i in 1 2 3 4 5 6 7 8 9; do
	"$KYOK" tke sigkey-add --name "admin$i" --password-file "$(newpw "admin$i")" >/dev/null
done
for i in 1 2 3 4 5 6 7 8; do
	cmd_json 1 admin-add "$(cert_json "admin$i")" >"$C/a.json"
	sign_cmd "$C/a.json" "$C/a.der" "admin1"
	[ "$i" -eq 1 ] && {
		# admin1 is not installed yet: its signature must be refused even in imprint mode.
		expect_refused "imprint-mode command signed by a non-admin" signer-not-admin 1 "$C/a.der"
		"$KYOK" tke cryptounit-rm --units 2 >/dev/null
		"$KYOK" tke cryptounit-admin-add --sigkey 5 >/dev/null
		continue
	}
	expect_accepted "admin $i of 8" 1 "$C/a.der" >/dev/null
done
expect_eq "8 admins installed" "$(unit_state 1 | jq '.admins | length')" 8
cmd_json 1 admin-add "$(cert_json admin9)" >"$C/a.json"
sign_cmd "$C/a.json" "$C/a.der" admin1
expect_refused "a 9th admin" admin-table-full 1 "$C/a.der"

finish
