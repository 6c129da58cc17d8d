#!/usr/bin/env bash
# The unit trust anchor. 'kyok up' makes it and certifies each unit's identity; the master key
# leaves a unit only for the importer -> identity -> anchor chain of another unit of the same
# instance. Attacks are built with plain openssl and posted with curl: mk-export to an
# administrator's certificate, to fresh self-signed P-521 certificates, to a genuine unit of
# another instance, to the unit itself; a forged mk-import. Each is refused with its own error
# and changes nothing. A config naming another anchor keeps the unit from starting. Then an
# auto-init instance loses unit 2 (killed, data deleted); 'kyok unit-add --replace 2' and
# 'kyok tke auto-recover' bring it back, keys wrapped before unwrap through it.
. "$(dirname "$0")/helpers.sh"
setup

expect_match() {
	if grep -qE -- "$2" <<<"$3"; then pass "$1"; else fail "$1: /$2/ not in: $3"; fi
}
# fp_of PEM: sha256 of the certificate's public key (DER SubjectPublicKeyInfo), as the units
# and known_units show it.
fp_of() { openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -c1-64; }

I=$KYOK_INSTANCE
I2=$T_DIR/inst2
C=$T_DIR/c
mkdir -p "$C"

# ---- the anchor and the identities it issued --------------------------------------------------
expect_ok "kyok up" "$KYOK" up
expect_eq "anchor.key is 0600" "$(stat -c %a "$I/anchor.key")" 600
expect_match "anchor.crt is a CA for the instance" "OU *= *$(instance_id)" \
	"$(openssl x509 -in "$I/anchor.crt" -noout -subject)"
for n in 1 2; do
	curl -fsS "$(unit_url $n)/v1/admin/identity" >"$C/id$n.pem"
	curl -fsS "$(unit_url $n)/v1/admin/importer" >"$C/imp$n.pem"
	expect_ok "unit $n: openssl verifies importer -> identity -> anchor" \
		openssl verify -CAfile "$I/anchor.crt" -untrusted "$C/id$n.pem" "$C/imp$n.pem"
	expect_eq "unit $n: identity served is the one the anchor issued" \
		"$(fp_of "$C/id$n.pem")" "$(fp_of "$I/unit-$n/identity.crt")"
done
expect_match "identity CN = unit id, OU = instance id" \
	"OU *= *$(instance_id), CN *= *$(unit_id 1)" "$(openssl x509 -in "$C/id1.pem" -noout -subject)"
expect_fail "an identity is not self-signed" "error|fail" \
	openssl verify -CAfile "$C/id1.pem" "$C/id1.pem"
if [ -e "$I/unit-1/identity.csr" ] || ls "$I"/unit-1/data/identity.pending >/dev/null 2>&1; then
	fail "identity request or pending key left behind"
else
	pass "no identity request or pending key left behind"
fi

# ---- auto-init: the transfer is recorded with both identities -------------------------------
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null 2>&1
pa=$(newpw alice)
expect_ok "auto-init, threshold 1" "$KYOK" tke auto-init --signature 1 --revocation 1 \
	--new-admins alice --password-file "$pa"
"$KYOK" tke sigkey-sel --sigkeys 1 >/dev/null 2>&1
t1=$(unit_state 1 | jq -c '.transfers[0]')
t2=$(unit_state 2 | jq -c '.transfers[0]')
expect_eq "unit 1 records its export to unit 2" "$(jq -r '[.op, .from, .to] | join(" ")' <<<"$t1")" \
	"mk-export $(unit_id 1) $(unit_id 2)"
expect_eq "... with unit 2's identity" "$(jq -r .to_identity <<<"$t1")" "$(fp_of "$C/id2.pem")"
expect_eq "... and its own" "$(jq -r .from_identity <<<"$t1")" "$(fp_of "$C/id1.pem")"
expect_eq "unit 2 records the import from unit 1" "$(jq -r '[.op, .from, .to, .from_identity] | join(" ")' <<<"$t2")" \
	"mk-import $(unit_id 1) $(unit_id 2) $(fp_of "$C/id1.pem")"
expect_eq "... the key now current" "$(jq -r .vp <<<"$t2")" "$(unit_state 2 | jq -r .current_mk.vp)"
expect_match "unit 1's log names both identities" \
	"master key transfer: mk-export .* from unit $(unit_id 1) \(identity sha256 $(fp_of "$C/id1.pem")\) to unit $(unit_id 2) \(identity sha256 $(fp_of "$C/id2.pem")\)" \
	"$(cat "$I/unit-1/unit.log")"
expect_match "unit 2's log too" "master key transfer: mk-import .* from unit $(unit_id 1)" \
	"$(cat "$I/unit-2/unit.log")"

# ---- the attack: one administrator, threshold 1, mk-generate then mk-export -----------------
cmd_json 1 mk-generate >"$C/gen.json"
sign_cmd "$C/gen.json" "$C/gen.der" alice
expect_accepted "mk-generate on unit 1 (alice alone)" 1 "$C/gen.der"

# recipients_json IMPORTER IDENTITY [REGISTER]: mk-export fields for one recipient chain.
recipients_json() {
	jq -cn --rawfile i "$1" --rawfile d "$2" --arg r "${3:-new}" \
		'{recipients: [{importer: $i, identity: $d}], register: $r}'
}
export_to() { # DESC SLUG IMPORTER IDENTITY [REGISTER]
	cmd_json 1 mk-export "$(recipients_json "$3" "$4" "${5:-new}")" >"$C/x.json"
	sign_cmd "$C/x.json" "$C/x.der" alice
	expect_refused "$1" "$2" 1 "$C/x.der"
}
plain_key alice >/dev/null
export_to "mk-export to alice's own signature certificate" recipient-is-admin \
	"$T_DIR/keys/alice.crt" "$T_DIR/keys/alice.crt"
export_to "mk-export of the current key to alice's certificate" recipient-is-admin \
	"$T_DIR/keys/alice.crt" "$T_DIR/keys/alice.crt" current
export_to "mk-export with alice's certificate as importer under unit 2's identity" \
	recipient-is-admin "$T_DIR/keys/alice.crt" "$C/id2.pem"

# Fresh self-signed P-521 certificates, named like a unit of this instance.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-521 -nodes -keyout "$C/fresh.key" \
	-subj "/OU=$(instance_id)/CN=fresh" -days 30 -out "$C/fresh.crt" 2>/dev/null
export_to "mk-export to a fresh self-signed P-521 certificate" recipient-not-certified \
	"$C/fresh.crt" "$C/fresh.crt"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-521 -nodes -keyout "$C/ca.key" \
	-subj "/OU=$(instance_id)/CN=unit-x" -days 30 -out "$C/ca.crt" \
	-addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
	-addext "keyUsage=critical,digitalSignature,keyCertSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-521 -nodes -keyout "$C/imp.key" \
	-subj "/OU=$(instance_id)/CN=unit-x importer" -out "$C/imp.csr" 2>/dev/null
openssl x509 -req -in "$C/imp.csr" -CA "$C/ca.crt" -CAkey "$C/ca.key" -days 30 \
	-out "$C/imp.crt" 2>/dev/null
expect_ok "the forged chain is a valid chain to its own CA" \
	openssl verify -CAfile "$C/ca.crt" "$C/imp.crt"
export_to "mk-export to a forged importer -> identity chain" recipient-not-certified \
	"$C/imp.crt" "$C/ca.crt"
export_to "mk-export to unit 2's identity with a forged importer" recipient-not-certified \
	"$C/imp.crt" "$C/id2.pem"
export_to "mk-export with the anchor itself as identity" recipient-not-certified \
	"$C/imp2.pem" "$I/anchor.crt"
export_to "mk-export to unit 1 itself" recipient-is-self "$C/imp1.pem" "$C/id1.pem"
cmd_json 1 mk-export "$(jq -cn --rawfile i "$C/imp2.pem" '{recipients: [$i]}')" >"$C/x.json"
sign_cmd "$C/x.json" "$C/x.der" alice
expect_refused "mk-export to a bare importer certificate (no chain)" bad-command 1 "$C/x.der"

# A genuine unit of another instance.
expect_ok "a second instance" "$KYOK" up --instance "$I2"
u2url=$(jq -r '.units[0].url' "$I2/instance.json")
curl -fsS "$u2url/v1/admin/identity" >"$C/other-id.pem"
curl -fsS "$u2url/v1/admin/importer" >"$C/other-imp.pem"
expect_ok "... its unit chains to its own anchor" \
	openssl verify -CAfile "$I2/anchor.crt" -untrusted "$C/other-id.pem" "$C/other-imp.pem"
export_to "mk-export to a genuine unit of another instance" recipient-other-instance \
	"$C/other-imp.pem" "$C/other-id.pem"
expect_eq "no export was recorded on unit 1" "$(unit_state 1 | jq '.transfers | length')" 1

# A forged mk-import to unit 2: an envelope anyone can make, with a sender it cannot sign for.
head -c 32 /dev/urandom >"$C/key.bin"
openssl cms -encrypt -binary -aes-256-gcm -recip "$C/imp2.pem" -keyopt ecdh_kdf_md:sha256 \
	-in "$C/key.bin" -outform DER -out "$C/env.der"
vp=$( (printf '\001'; cat "$C/key.bin") | sha256sum | cut -c1-64)
import_json() { # SOURCE_PEM
	jq -cn --rawfile s "$1" --arg e "$(base64 -w0 "$C/env.der")" --arg v "$vp" \
		--arg g "$(head -c 139 /dev/urandom | base64 -w0)" \
		'{envelope: $e, vp: $v, source: $s, signature: $g}'
}
for who in "unit 1:$C/id1.pem" "another instance's unit:$C/other-id.pem" "unit 2 itself:$C/id2.pem"; do
	cmd_json 2 mk-import "$(import_json "${who#*:}")" >"$C/i.json"
	sign_cmd "$C/i.json" "$C/i.der" alice
	expect_refused "mk-import naming ${who%%:*} as sender, signature forged" source-not-certified 2 "$C/i.der"
done
cmd_json 1 mk-clrnew >"$C/clr.json"
sign_cmd "$C/clr.json" "$C/clr.der" alice
expect_accepted "unit 1's generated key cleared" 1 "$C/clr.der"

# ---- the anchor sealed in the state cannot be swapped by configuration -----------------------
expect_ok "down" "$KYOK" down
S=$I/unit-1/data/state.sealed
sum=$(sha256sum <"$S")
cp "$I/unit-1/unit.conf" "$C/unit.conf"
sed -i "s|^anchor_cert = .*|anchor_cert = $I2/anchor.crt|" "$I/unit-1/unit.conf"
run_rc "$KYOK" up
expect_eq "up with unit 1 naming another anchor: exit 0 (unit 2 serves)" "$rc" 0
expect_match "... unit 1 did not start" "^warning: $I/unit-1: crypto unit 1 exited at start" "$out"
expect_match "... nor serves" "serving: crypto unit 2$" "$out"
expect_match "... the unit says why" \
	"anchor_cert '$I2/anchor.crt' \(key sha256 [0-9a-f]{64}\) is not the unit trust anchor sealed in the state" "$out"
grep -v '^anchor_cert' "$C/unit.conf" >"$I/unit-1/unit.conf"
run_rc "$KYOK" up
expect_match "unit 1 naming no anchor: refused" "unit.conf names no anchor_cert" "$out"
expect_eq "... state.sealed untouched" "$(sha256sum <"$S")" "$sum"
cp "$C/unit.conf" "$I/unit-1/unit.conf"
expect_ok "the right anchor again: up" "$KYOK" up

# ---- a unit certified by hand with openssl, and one certified by another anchor --------------
mkdir -p "$C/u"
cat >"$C/u/unit.conf" <<EOF
instance = $(instance_id)
unit = hand-made
zone = zone-9
listen = 127.0.0.1:0
data_dir = data
port_file = port
anchor_cert = $I2/anchor.crt
identity_cert = identity.crt
EOF
expect_ok "kyok-unitd --identity-request" "$UNITD" --config "$C/u/unit.conf" --identity-request "$C/u/id.csr"
expect_ok "the request is a valid CSR" openssl req -in "$C/u/id.csr" -noout -verify
expect_match "... for the unit of this instance" "OU *= *$(instance_id), CN *= *hand-made" \
	"$(openssl req -in "$C/u/id.csr" -noout -subject)"
# The identity's subject key identifier is SHA-256 of its uncompressed point (as every kyok key).
ski=$(openssl req -in "$C/u/id.csr" -noout -pubkey | openssl pkey -pubin -outform DER |
	tail -c 133 | openssl dgst -sha256 -r | cut -c1-64 | sed 's/../&:/g; s/:$//')
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,digitalSignature,keyCertSign\nsubjectKeyIdentifier=%s\n' \
	"$ski" >"$C/u/ext"
openssl x509 -req -in "$C/u/id.csr" -CA "$I2/anchor.crt" -CAkey "$I2/anchor.key" -days 30 \
	-extfile "$C/u/ext" -out "$C/u/identity.crt" 2>/dev/null
sed -i "s|^anchor_cert = .*|anchor_cert = $I/anchor.crt|" "$C/u/unit.conf"
run_rc timeout 20 "$UNITD" --config "$C/u/unit.conf"
expect_match "identity issued by another anchor: the unit refuses to create its state" \
	"identity_cert '.*identity.crt' is not the certificate of this unit's pending identity key" "$out"
if [ -e "$C/u/data/state.sealed" ]; then fail "a state was made"; else pass "no state made"; fi
openssl x509 -req -in "$C/u/id.csr" -CA "$I/anchor.crt" -CAkey "$I/anchor.key" -days 30 \
	-extfile "$C/u/ext" -out "$C/u/identity.crt" 2>/dev/null
"$UNITD" --config "$C/u/unit.conf" >"$C/u/log" 2>&1 &
hand_pid=$!
# until it listens or exits (the test's own timeout bounds a hang)
while [ ! -s "$C/u/port" ] && kill -0 "$hand_pid" 2>/dev/null; do sleep 0.05; done
if [ ! -s "$C/u/port" ]; then
	fail "the unit certified with openssl did not start: $(cat "$C/u/log")"
	finish
fi
hurl="http://127.0.0.1:$(cat "$C/u/port")"
curl -fsS "$hurl/v1/admin/identity" >"$C/hand-id.pem"
expect_eq "certified with openssl by the anchor: the unit runs with that identity" \
	"$(fp_of "$C/hand-id.pem")" "$(fp_of "$C/u/identity.crt")"
kill "$hand_pid"
wait "$hand_pid" || true

# ---- auto-recover: unit 2 lost -------------------------------------------------------------
"$KYOK" tke apikey-create --name t-w --role Writer --password-file "$pa" >/dev/null 2>&1
AKF=$KYOK_TKE_FILES/apikeys/t-w.apikey
kid=$("$KYOK" kp key-create --apikey-file "$AKF" --name before-loss --output json 2>/dev/null | jq -r '.id // .resources[0].id')
head -c 32 /dev/urandom >"$C/dek.bin"
"$KYOK" kp wrap "$kid" --apikey-file "$AKF" --unit 1 --plaintext-file "$C/dek.bin" >"$C/ct.txt"
expect_eq "a data key wrapped through unit 1" "$(wc -l <"$C/ct.txt")" 1
old2=$(unit_id 2)
kill -9 "$(cat "$I/unit-2/pid")"
rm -rf "$I/unit-2/data"
run_rc "$KYOK" tke auto-recover --password-file "$pa"
expect_match "auto-recover with unit 2 down: refused" "crypto unit 2 .* does not answer.*nothing was done" "$out"
expect_ok "kyok unit-add --replace 2" "$KYOK" unit-add --replace 2 --yes
new2=$(unit_id 2)
if [ "$new2" != "$old2" ]; then pass "unit 2 has a new id"; else fail "unit 2 kept its id"; fi
curl -fsS "$(unit_url 2)/v1/admin/identity" >"$C/id2new.pem"
expect_ok "... certified by the anchor" openssl verify -CAfile "$I/anchor.crt" "$C/id2new.pem"
expect_eq "... in imprint mode" "$(unit_state 2 | jq -r .imprint)" true
run_rc "$KYOK" tke cryptounit-compare
expect_match "compare: the units differ" "crypto units differ in: .*current master key" "$out"

# An interrupted recovery: the administrator is already installed on unit 2.
"$KYOK" tke cryptounit-add --units 2 >/dev/null 2>&1
"$KYOK" tke cryptounit-rm --units 1 >/dev/null 2>&1
expect_ok "alice installed on the new unit by hand" "$KYOK" tke cryptounit-admin-add --sigkey 1
"$KYOK" tke cryptounit-add --units 1 >/dev/null 2>&1
run_rc "$KYOK" tke auto-recover --password-file "$pa"
expect_eq "auto-recover: exit 0" "$rc" 0
expect_match "... step 1 left alone" "administrator 'alice' already installed" "$out"
expect_match "... exported from unit 1" "step 3 of 6: export the current master key from crypto unit 1 to 1 unit" "$out"
expect_match "... all identical" "all 2 selected crypto units hold the same 1 administrators" "$out"
run_rc "$KYOK" tke cryptounit-compare
expect_eq "cryptounit-compare: exit 0" "$rc" 0
expect_match "... identical" "crypto units are configured identically" "$out"
expect_eq "unit 1 records the second export, to the new unit" \
	"$(unit_state 1 | jq -r '.transfers[-1] | [.op, .to, .to_identity] | join(" ")')" \
	"mk-export $new2 $(fp_of "$C/id2new.pem")"
expect_eq "the new unit records the import from unit 1" \
	"$(unit_state 2 | jq -r '.transfers[0] | [.op, .from] | join(" ")')" "mk-import $(unit_id 1)"
run_rc "$KYOK" kp unwrap "$kid" --apikey-file "$AKF" --unit 2 --verbose \
	--ciphertext-file "$C/ct.txt" --show
expect_match "unwrap through the new unit" "served by crypto unit 2" "$out"
expect_match "... gives the data key back" "$(base64 -w0 "$C/dek.bin" | sed 's/[+/]/./g')" "$out"
pid1=$(cat "$I/unit-1/pid")
kill "$pid1"
wait_gone "$pid1"
run_rc "$KYOK" kp unwrap "$kid" --apikey-file "$AKF" --ciphertext-file "$C/ct.txt" --show
expect_match "unit 1 stopped: the new unit alone unwraps" "$(base64 -w0 "$C/dek.bin" | sed 's/[+/]/./g')" "$out"
expect_ok "unit 1 back" "$KYOK" up
run_rc "$KYOK" tke auto-recover --password-file "$pa"
expect_match "auto-recover again: nothing to do" "^nothing to recover" "$out"
expect_eq "... exit 0" "$rc" 0

finish
