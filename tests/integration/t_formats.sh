#!/usr/bin/env bash
# docs/formats.md, checked: every openssl command that the document shows is run here, on
# files made by the real CLI and the real units, and its output is compared with what kyok
# says (SKIs, VPs, signers, state). A signature key made with openssl alone is installed
# and signs; signatures added with openssl alone are accepted by the units.
. "$(dirname "$0")/helpers.sh"
setup

W="$T_DIR/work"
mkdir -p "$W"
chmod 700 "$W"
cd "$W" || exit 1
umask 077

# expect_match DESC PATTERN TEXT: TEXT matches the extended regular expression PATTERN.
expect_match() {
	if grep -qE -- "$2" <<<"$3"; then pass "$1"; else fail "$1: /$2/ not in: $3"; fi
}
# expect_nomatch DESC PATTERN TEXT
expect_nomatch() {
	if grep -qE -- "$2" <<<"$3"; then fail "$1: /$2/ found in: $3"; else pass "$1"; fi
}

# The helpers of docs/formats.md, verbatim.
# cms_block FILE N: the N-th PEM "CMS" block of a command bundle.
cms_block() {
	awk -v n="$2" '/^-----BEGIN CMS-----$/{i++} i==n{print} i==n && /^-----END CMS-----$/{exit}' "$1"
}
# cms_signer_skis: reads 'openssl cms -cmsout -print' output, prints each signer's SKI in hex.
cms_signer_skis() {
	awk '/d.subjectKeyIdentifier:/{f=1; next}
	     f && / - /{sub(/^ *[0-9a-f]+ - /, ""); h = h substr($0, 1, 44); next}
	     f{f=0; gsub(/[- ]/, "", h); print h; h=""}'
}
# cert_ski FILE: the certificate's subject key identifier, lowercase hex.
cert_ski() {
	openssl x509 -in "$1" -noout -ext subjectKeyIdentifier | tail -n 1 | tr -d ' :' |
		tr 'A-F' 'a-f'
}

"$KYOK" up --units 2 >/dev/null
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null
U1=$(jq -r '.units[0].url' "$KYOK_INSTANCE/instance.json")
U2=$(jq -r '.units[1].url' "$KYOK_INSTANCE/instance.json")
UNIT1=$(jq -r '.units[0].id' "$KYOK_INSTANCE/instance.json")
INST=$(jq -r '.instance' "$KYOK_INSTANCE/instance.json")

# ---- 1. signature key files ----

PWA=$(newpw alice)
PW_DAVE=$(newpw dave)
"$KYOK" tke sigkey-add --name alice --password-file "$PWA" >/dev/null
F=$(ls "$KYOK_TKE_FILES"/sigkeys/alice-*.sigkey)
expect_eq "sigkey file mode" "$(stat -c %a "$F")" 600
expect_eq "sigkey checksum line is SHA-256 of the key block (formats.md, section 1)" \
	"$(sed -n '/BEGIN ENCRYPTED/,/END ENCRYPTED/p' "$F" | openssl base64 -d | sha256sum | cut -d' ' -f1)" \
	"$(grep '^kyok-key-block-sha256: ' "$F" | cut -d' ' -f2)"
expect_eq "sigkey blocks" "$(grep -- '^-----BEGIN' "$F" | tr '\n' '|')" \
	"-----BEGIN CERTIFICATE-----|-----BEGIN ENCRYPTED PRIVATE KEY-----|"

out=$(openssl x509 -in "$F" -noout -subject -issuer)
expect_eq "sigkey subject and issuer" "$out" \
	"$(printf 'subject=OU = kyok administration, CN = alice\nissuer=OU = kyok administration, CN = alice')"
out=$(openssl x509 -in "$F" -noout -ext basicConstraints,keyUsage)
expect_match "sigkey cert is CA:FALSE" "CA:FALSE" "$out"
expect_match "sigkey cert key usage" "Digital Signature" "$out"
expect_match "sigkey cert ECDSA-SHA512 on P-521" "ecdsa-with-SHA512" \
	"$(openssl x509 -in "$F" -noout -text)"
expect_match "sigkey cert key on P-521" "NIST CURVE: P-521" \
	"$(openssl x509 -in "$F" -noout -text)"

ski_hash=$(openssl x509 -in "$F" -noout -pubkey | openssl pkey -pubin -outform DER |
	tail -c 133 | openssl dgst -sha256 -r | cut -c1-64)
ski_ext=$(cert_ski "$F")
ski_kyok=$("$KYOK" tke sigkeys --output json | jq -r '.sigkeys[] | select(.name=="alice") | .ski')
expect_eq "SKI = SHA-256 of the uncompressed point" "$ski_hash" "$ski_ext"
expect_eq "kyok lists the same SKI" "$ski_kyok" "$ski_ext"
SKI_ALICE=$ski_ext
expect_eq "self-signature verifies" "$(openssl verify -CAfile "$F" "$F")" "$F: OK"

expect_ok "private key opens with the password" \
	openssl pkey -in "$F" -passin "file:$PWA" -noout
expect_fail "private key refuses a wrong password" "bad decrypt|maybe wrong password|unable to load|Could not read key" \
	openssl pkey -in "$F" -passin "file:$PW_DAVE" -noout
expect_eq "private key matches the certificate" \
	"$(openssl pkey -in "$F" -passin "file:$PWA" -pubout)" \
	"$(openssl x509 -in "$F" -noout -pubkey)"

out=$(sed -n '/^-----BEGIN ENCRYPTED PRIVATE KEY-----$/,/^-----END ENCRYPTED PRIVATE KEY-----$/p' "$F" |
	openssl asn1parse)
expect_match "PKCS#8 PBES2" ":PBES2" "$out"
expect_match "PBES2 KDF scrypt" ":scrypt" "$out"
expect_match "scrypt salt 16 bytes" "l=  16 prim: OCTET STRING" "$(grep -A2 ':scrypt' <<<"$out")"
# N = 2^14 (2^10 in the sanitized test build: meson option test_kdf)
expect_eq "scrypt N r p" "$(grep -A5 ':scrypt' <<<"$out" | grep INTEGER | sed 's/.*://' | tr '\n' ' ')" \
	"$([ "${KYOK_TEST_KDF:-0}" = 1 ] && echo 0400 || echo 4000) 08 05 "
expect_match "PBES2 cipher AES-256-CBC" ":aes-256-cbc" "$out"

# A signature key file made with openssl alone.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 |
	openssl pkcs8 -topk8 -scrypt -scrypt_N 16384 -scrypt_r 8 -scrypt_p 5 -v2 aes-256-cbc \
		-passout "file:$PW_DAVE" -out dave.p8
ski=$(openssl pkey -in dave.p8 -passin "file:$PW_DAVE" -pubout -outform DER |
	tail -c 133 | openssl dgst -sha256 -r | cut -c1-64)
openssl req -config /dev/null -new -x509 -key dave.p8 -passin "file:$PW_DAVE" -sha512 \
	-days 3650 -subj "/OU=kyok administration/CN=dave" \
	-addext "subjectKeyIdentifier=$ski" -addext "authorityKeyIdentifier=keyid:always" \
	-addext "basicConstraints=critical,CA:FALSE" -addext "keyUsage=critical,digitalSignature" \
	-out dave.crt
cat dave.crt dave.p8 >"$KYOK_TKE_FILES/sigkeys/dave.sigkey"
chmod 600 "$KYOK_TKE_FILES/sigkeys/dave.sigkey"
D="$KYOK_TKE_FILES/sigkeys/dave.sigkey"
SKI_DAVE=$ski
expect_eq "openssl-made sigkey verifies" "$(openssl verify -CAfile "$D" "$D")" "$D: OK"
expect_eq "kyok lists the openssl-made sigkey with its SKI" \
	"$("$KYOK" tke sigkeys --output json | jq -r '.sigkeys[] | select(.name=="dave") | .ski')" \
	"$SKI_DAVE"

# The same made with req's default SKI (SHA-1 of the key): kyok skips it as damaged.
mkdir -p "$T_DIR/ws-bad/sigkeys"
openssl req -new -x509 -key dave.p8 -passin "file:$PW_DAVE" -sha512 -days 3650 \
	-subj "/OU=kyok administration/CN=mallory" -out mallory.crt 2>/dev/null
cat mallory.crt dave.p8 >"$T_DIR/ws-bad/sigkeys/mallory.sigkey"
out=$(KYOK_TKE_FILES="$T_DIR/ws-bad" "$KYOK" tke sigkeys --output json 2>&1 || true)
expect_match "sigkey whose SKI is not the point hash is skipped" "damaged or was tampered" "$out"
expect_nomatch "... and not listed" '"name":"mallory"' "$out"

N_ALICE=$("$KYOK" tke sigkeys --output json | jq -r '.sigkeys[] | select(.name=="alice") | .number')
N_DAVE=$("$KYOK" tke sigkeys --output json | jq -r '.sigkeys[] | select(.name=="dave") | .number')
expect_ok "install alice (imprint mode)" "$KYOK" tke cryptounit-admin-add --sigkey "$N_ALICE"
expect_ok "install the openssl-made dave (imprint mode)" \
	"$KYOK" tke cryptounit-admin-add --sigkey "$N_DAVE"

# ---- 3. command bundles: one signature by kyok, one added by openssl -resign ----

expect_ok "prepare thresholds 2/2" "$KYOK" tke cryptounit-thrhld-set --signature 2 \
	--revocation 2 --prepare thr.bundle
expect_eq "bundle: one block per unit" "$(grep -c '^-----BEGIN CMS-----$' thr.bundle)" 2
expect_match "bundle comments" "^# kyok command: thresholds-set unit 1 $UNIT1 counter" \
	"$(cat thr.bundle)"
cms_block thr.bundle 1 >thr1.pem
expect_match "unsigned block is a SignedData" \
	"contentType: pkcs7-signedData" "$(openssl cms -cmsout -print -inform PEM -in thr1.pem)"
expect_fail "an unsigned block has no signer to verify" "no signers" \
	openssl cms -verify -noverify -inform PEM -in thr1.pem -binary
off=$(openssl asn1parse -inform PEM -in thr1.pem | awk -F: '/OCTET STRING/{print $1+0; exit}')
openssl asn1parse -inform PEM -in thr1.pem -strparse "$off" -noout -out thr1.json
expect_eq "command JSON of the unsigned block" "$(jq -c . thr1.json)" \
	"{\"kyok\":\"admin-command-v1\",\"instance\":\"$INST\",\"unit\":\"$UNIT1\",\"incarnation\":\"$(unit_state 1 | jq -r .incarnation)\",\"counter\":2,\"op\":\"thresholds-set\",\"signature\":2,\"revocation\":2}"

"$KYOK" tke sigkey-sel --sigkeys "$N_ALICE" >/dev/null
expect_ok "alice signs with kyok" "$KYOK" tke cmd-sign thr.bundle --password-file "$PWA"
expect_fail "one signature of two: the CLI sends nothing" "1 of 2 signatures" \
	"$KYOK" tke cmd-submit thr.bundle
cms_block thr.bundle 1 >thr1.pem
expect_eq "signed content is the same command" \
	"$(openssl cms -verify -noverify -inform PEM -in thr1.pem -binary 2>/dev/null)" \
	"$(cat thr1.json)"
expect_eq "signer identified by alice's SKI" \
	"$(openssl cms -cmsout -print -inform PEM -in thr1.pem | cms_signer_skis)" "$SKI_ALICE"

n=$(grep -c '^-----BEGIN CMS-----$' thr.bundle)
for i in $(seq 1 "$n"); do
	cms_block thr.bundle "$i" >"cmd$i.pem"
	openssl cms -resign -binary -inform PEM -in "cmd$i.pem" -outform PEM -out "cmd$i.signed.pem" \
		-md sha512 -keyid -nosmimecap -signer "$D" -inkey "$D" -passin "file:$PW_DAVE"
done
for i in $(seq 1 "$n"); do cat "cmd$i.signed.pem"; done >thr-signed.bundle
for i in 1 2; do
	expect_ok "openssl verifies both signatures of block $i" \
		openssl cms -verify -noverify -inform PEM -in "cmd$i.signed.pem" -binary -out /dev/null
	expect_eq "block $i signers by SKI" \
		"$(openssl cms -cmsout -print -inform PEM -in "cmd$i.signed.pem" | cms_signer_skis | sort | tr '\n' ' ')" \
		"$(printf '%s\n' "$SKI_ALICE" "$SKI_DAVE" | sort | tr '\n' ' ')"
done
expect_eq "cmd-show lists the signature added by openssl" \
	"$("$KYOK" tke cmd-show thr-signed.bundle --output json | jq -r '[.commands[] | [.signers[].name] | sort | join("+")] | join(",")')" \
	"alice+dave,alice+dave"
expect_ok "units accept the bundle signed by kyok and openssl" \
	"$KYOK" tke cmd-submit thr-signed.bundle
expect_eq "thresholds 2/2 on both units" \
	"$("$KYOK" status --output json | jq -r '[.units[].state | "\(.signature_threshold)/\(.revocation_threshold)/\(.imprint)"] | join(",")')" \
	"2/2/false,2/2/false"

# ---- 2. key part files ----

PW1=$(newpw part1)
PW2=$(newpw part2)
"$KYOK" tke mk-add --random --description "part one" --password-file "$PW1" >/dev/null
"$KYOK" tke mk-add --random --description "part two" --password-file "$PW2" >/dev/null
mks=$("$KYOK" tke mks --output json)
P1=$(jq -r '.keyparts[] | select(.description=="part one") | .file' <<<"$mks")
P2=$(jq -r '.keyparts[] | select(.description=="part two") | .file' <<<"$mks")
expect_eq "key part file mode" "$(stat -c %a "$P1")" 600
expect_eq "key part header keys" "$(sed '/^-----BEGIN CMS-----$/q' "$P1" | cut -d: -f1 | tr '\n' ' ')" \
	"kyok-key-part description vp kdf kdf-salt kdf-n kdf-r kdf-p -----BEGIN CMS----- "
expect_match "key part is an AuthEnvelopedData with a KEK recipient 'kyok'" \
	"id-smime-ct-authEnvelopedData.*d.kekri.*6b 79 6f 6b.*id-aes256-wrap.*aes-256-gcm" \
	"$(openssl cms -cmsout -print -inform PEM -in "$P1" | tr '\n' ' ')"

# open_part FILE PWFILE: prints the 32-byte part in hex after checking, as the document says,
# that the authenticated header equals the readable one and that the header's vp is
# SHA-256(0x01 || part). Returns 1 (and says why) when a check fails.
open_part() {
	local P=$1 PW=$2 salt n r p kek hl
	salt=$(sed -n 's/^kdf-salt: //p' "$P")
	n=$(sed -n 's/^kdf-n: //p' "$P")
	r=$(sed -n 's/^kdf-r: //p' "$P")
	p=$(sed -n 's/^kdf-p: //p' "$P")
	kek=$(openssl kdf -keylen 32 -kdfopt "pass:$(cat "$PW")" -kdfopt "hexsalt:$salt" \
		-kdfopt "n:$n" -kdfopt "r:$r" -kdfopt "p:$p" SCRYPT | tr -d :)
	openssl cms -decrypt -inform PEM -in "$P" -secretkey "$kek" -secretkeyid 6b796f6b \
		-binary -out part.plain || { echo "$P: cms -decrypt failed" >&2; return 1; }
	hl=$(sed '/^-----BEGIN CMS-----$/q' "$P" | head -n -1 | wc -c)
	if ! cmp -s <(head -c "$hl" part.plain) <(head -c "$hl" "$P"); then
		echo "$P: authenticated header differs from the readable one" >&2
		return 1
	fi
	if [ "$(stat -c %s part.plain)" -ne $((hl + 32)) ]; then
		echo "$P: plaintext is not header + 32 bytes" >&2
		return 1
	fi
	if [ "$({ printf '\001'; tail -c 32 part.plain; } | openssl dgst -sha256 -r | cut -c1-64)" != \
		"$(sed -n 's/^vp: //p' "$P")" ]; then
		echo "$P: SHA-256(0x01 || part) is not the header's vp" >&2
		return 1
	fi
	tail -c 32 part.plain | xxd -p -c 64
	rm -f part.plain
}
if K1=$(open_part "$P1" "$PW1"); then
	pass "part one opens with openssl: header authenticated, VP matches"
else
	fail "part one does not open with openssl"
fi
if K2=$(open_part "$P2" "$PW2"); then
	pass "part two opens with openssl: header authenticated, VP matches"
else
	fail "part two does not open with openssl"
fi
expect_eq "part one is 32 bytes" "${#K1}" 64
expect_eq "header vp is kyok's vp" "$(sed -n 's/^vp: //p' "$P1")" \
	"$(jq -r '.keyparts[] | select(.description=="part one") | .vp' <<<"$mks")"
salt=$(sed -n 's/^kdf-salt: //p' "$P1")
kek=$(openssl kdf -keylen 32 -kdfopt "pass:$(cat "$PW2")" -kdfopt "hexsalt:$salt" \
	-kdfopt "n:$(sed -n 's/^kdf-n: //p' "$P1")" -kdfopt r:8 -kdfopt p:1 SCRYPT | tr -d :)
expect_fail "a wrong password's KEK does not unwrap" "decrypt|error" \
	openssl cms -decrypt -inform PEM -in "$P1" -secretkey "$kek" -secretkeyid 6b796f6b \
	-binary -out /dev/null

# ---- 4. key parts to a unit, inside mk-load; first signature by openssl cms -sign ----

expect_ok "prepare mk-load" "$KYOK" tke cryptounit-mk-load --parts 1,2 --prepare load.bundle \
	--password-file "$PW1" --password-file "$PW2"
XOR=
for ((i = 0; i < 64; i += 2)); do XOR+=$(printf '%02x' $((0x${K1:i:2} ^ 0x${K2:i:2}))); done
VP_NEW=$({ printf '\001'; printf '%s' "$XOR" | xxd -r -p; } | openssl dgst -sha256 -r | cut -c1-64)

for i in 1 2; do
	cms_block load.bundle "$i" >"load$i.pem"
	off=$(openssl asn1parse -inform PEM -in "load$i.pem" | awk -F: '/OCTET STRING/{print $1+0; exit}')
	openssl asn1parse -inform PEM -in "load$i.pem" -strparse "$off" -noout -out "load$i.json"
	openssl cms -sign -binary -nodetach -md sha512 -keyid -nosmimecap -signer "$D" -inkey "$D" \
		-passin "file:$PW_DAVE" -in "load$i.json" -outform PEM -out "load$i.signed.pem"
done
expect_eq "mk-load fields" "$(jq -c '[keys_unsorted, (.parts | length)]' load1.json)" \
	'[["kyok","instance","unit","incarnation","counter","op","parts","vp"],2]'
expect_eq "mk-load vp is VP(part one XOR part two)" "$(jq -r .vp load1.json)" "$VP_NEW"

curl -sS "$U1/v1/admin/identity" -o identity.pem
curl -sS "$U1/v1/admin/importer" -o importer.pem
jq -r '.parts[0]' load1.json | base64 -d >part1.env.der
env_print=$(openssl cms -cmsout -print -inform DER -in part1.env.der)
expect_match "envelope: AuthEnvelopedData, key agreement" \
	"id-smime-ct-authEnvelopedData.*d.kari.*d.originatorKey.*id-ecPublicKey" \
	"$(tr '\n' ' ' <<<"$env_print")"
expect_match "envelope: ECDH KDF and key wrap" \
	"dhSinglePass-stdDH-sha256kdf-scheme.*id-aes256-wrap.*aes-256-gcm" \
	"$(tr '\n' ' ' <<<"$env_print")"
expect_match "envelope recipient: issuer of the importer certificate" \
	"issuer: OU=$INST, CN=$UNIT1\$" "$env_print"
serial=$(openssl x509 -in importer.pem -noout -issuer -serial | sed -n 's/^serial=//p')
expect_match "envelope recipient: serial of the importer certificate" \
	"prim: INTEGER +:$serial\$" "$(openssl asn1parse -inform DER -in part1.env.der)"
expect_match "envelope content: 32 bytes" "l=  32 prim: cont \[ 0 \]" \
	"$(openssl asn1parse -inform DER -in part1.env.der)"

cat load1.signed.pem load2.signed.pem >load-signed.bundle
expect_eq "cmd-show sees dave's openssl signature" \
	"$("$KYOK" tke cmd-show load-signed.bundle --output json | jq -r '[.commands[].signers[].name] | join(",")')" \
	"dave,dave"
expect_ok "alice adds her signature with kyok" \
	"$KYOK" tke cmd-sign load-signed.bundle --password-file "$PWA"

# Block 1 posted with curl, reply signature checked with openssl; block 2 with cmd-submit.
cms_block load-signed.bundle 1 >c1.pem
openssl cms -cmsout -inform PEM -in c1.pem -outform DER -out c1.der
nonce=$(openssl rand -hex 16)
curl -sS -H "Kyok-Nonce: $nonce" -D reply.hdr -o reply.json --data-binary @c1.der \
	"$U1/v1/admin/command"
expect_eq "unit 1 accepts the command posted with curl" \
	"$(jq -c '[.ok, .result.op, .result.vp, .state.new_mk.state]' reply.json)" \
	"[true,\"mk-load\",\"$VP_NEW\",\"FULL UNCOMMITTED\"]"
openssl x509 -in identity.pem -noout -pubkey >identity.pub
sed -n 's/^Kyok-Signature: *//Ip' reply.hdr | tr -d '\r' | openssl base64 -d -A >reply.sig
{ printf 'kyok-reply-v1\nPOST /v1/admin/command\n%s\n' "$nonce"; cat reply.json; } >reply.msg
expect_eq "POST reply signature verifies" \
	"$(openssl dgst -sha512 -verify identity.pub -signature reply.sig reply.msg)" "Verified OK"
curl -sS -o replay.json -w '%{http_code}' --data-binary @c1.der "$U1/v1/admin/command" >replay.code
expect_eq "replayed command refused (409)" \
	"$(cat replay.code) $(jq -r '[.ok, .error.code] | join(" ")' replay.json)" \
	"409 false wrong-transaction-counter"
cms_block load-signed.bundle 2 >c2.pem
expect_ok "unit 2 accepts the single-block bundle" "$KYOK" tke cmd-submit c2.pem
expect_eq "new register VP on both units" \
	"$("$KYOK" status --output json | jq -r '[.units[].state.new_mk.vp] | join(",")')" \
	"$VP_NEW,$VP_NEW"

# ---- 4b. identity and importer certificates, known_units ----

expect_match "identity certificate: P-521, ECDSA-SHA512, CA:TRUE pathlen 0, certificate sign" \
	"Signature Algorithm: ecdsa-with-SHA512.*NIST CURVE: P-521.*CA:TRUE, pathlen:0.*Digital Signature, Certificate Sign" \
	"$(openssl x509 -in identity.pem -noout -text | tr '\n' ' ')"
expect_match "importer certificate: P-521, key agreement" \
	"NIST CURVE: P-521.*CA:FALSE.*Key Agreement" \
	"$(openssl x509 -in importer.pem -noout -text | tr '\n' ' ')"
out=$(openssl x509 -in identity.pem -noout -subject -issuer)
expect_eq "identity: CN = unit, OU = instance, issued by the instance's unit trust anchor" "$out" \
	"$(printf 'subject=OU = %s, CN = %s\nissuer=OU = %s, CN = kyok unit anchor' "$INST" "$UNIT1" "$INST")"
expect_eq "importer: issued by the identity" \
	"$(openssl x509 -in importer.pem -noout -issuer | sed 's/^issuer=//')" \
	"$(openssl x509 -in identity.pem -noout -subject | sed 's/^subject=//')"
expect_eq "importer subject" "$(openssl x509 -in importer.pem -noout -subject)" \
	"subject=OU = $INST, CN = $UNIT1 importer"
expect_match "importer key usage" "Key Agreement" \
	"$(openssl x509 -in importer.pem -noout -ext keyUsage)"
expect_eq "importer AKI = identity SKI" \
	"$(openssl x509 -in importer.pem -noout -ext authorityKeyIdentifier | tail -n 1 | tr -d ' :' | tr 'A-F' 'a-f')" \
	"$(cert_ski identity.pem)"
expect_eq "identity SKI = SHA-256 of its point" "$(cert_ski identity.pem)" \
	"$(openssl x509 -in identity.pem -noout -pubkey | openssl pkey -pubin -outform DER |
		tail -c 133 | openssl dgst -sha256 -r | cut -c1-64)"
expect_eq "identity issued by the anchor" \
	"$(openssl verify -CAfile "$KYOK_INSTANCE/anchor.crt" identity.pem | sed 's|^.*/||')" \
	"identity.pem: OK"
expect_eq "openssl verify: importer -> identity -> anchor" \
	"$(openssl verify -CAfile "$KYOK_INSTANCE/anchor.crt" -untrusted identity.pem importer.pem)" \
	"importer.pem: OK"
# The identity certificate may issue (CA:TRUE, pathlen 0, keyCertSign): openssl checks the chain.
expect_eq "openssl verify: importer issued by the identity" \
	"$(openssl verify -partial_chain -CAfile identity.pem importer.pem)" "importer.pem: OK"
openssl x509 -in importer.pem -outform DER -out importer.der
read -r o h l < <(openssl asn1parse -inform DER -in importer.der |
	sed -n '2s/^ *\([0-9]*\):d=1 *hl=\([0-9]*\) *l= *\([0-9]*\) .*/\1 \2 \3/p')
openssl asn1parse -inform DER -in importer.der -offset "$o" -length $((h + l)) -noout -out importer.tbs
s=$(openssl asn1parse -inform DER -in importer.der | tail -n 1 | sed 's/^ *\([0-9]*\):.*/\1/')
openssl asn1parse -inform DER -in importer.der -strparse "$s" -noout -out importer.sig
expect_eq "importer signature verifies under the identity key" \
	"$(openssl dgst -sha512 -verify identity.pub -signature importer.sig importer.tbs)" "Verified OK"
curl -sS "$U2/v1/admin/identity" -o identity2.pem
openssl x509 -in identity2.pem -noout -pubkey >identity2.pub
expect_fail "... and not under another unit's identity key" "Verification failure" \
	openssl dgst -sha512 -verify identity2.pub -signature importer.sig importer.tbs
pin=$(openssl x509 -in identity.pem -noout -pubkey | openssl pkey -pubin -outform DER |
	openssl dgst -sha256 -r | cut -c1-64)
expect_eq "known_units pins SHA-256 of the identity SubjectPublicKeyInfo" \
	"$(awk -v u="$UNIT1" '$2==u{print $3}' "$KYOK_TKE_FILES/known_units")" "$pin"

# ---- 5. unit replies ----

nonce=$(openssl rand -hex 16)
curl -sS -H "Kyok-Nonce: $nonce" -D reply.hdr -o state.json "$U1/v1/admin/state"
sed -n 's/^Kyok-Signature: *//Ip' reply.hdr | tr -d '\r' | openssl base64 -d -A >reply.sig
{ printf 'kyok-reply-v1\nGET /v1/admin/state\n%s\n' "$nonce"; cat state.json; } >reply.msg
expect_eq "GET reply signature verifies" \
	"$(openssl dgst -sha512 -verify identity.pub -signature reply.sig reply.msg)" "Verified OK"
{ printf 'kyok-reply-v1\nGET /v1/admin/state\n%s\n' "$(openssl rand -hex 16)"; cat state.json; } >other.msg
expect_fail "... not with another nonce" "Verification failure" \
	openssl dgst -sha512 -verify identity.pub -signature reply.sig other.msg
{ printf 'kyok-reply-v1\nGET /v1/admin/state\n%s\n' "$nonce"; sed 's/"zone-1"/"zone-9"/' state.json; } >other.msg
expect_fail "... not with another body" "Verification failure" \
	openssl dgst -sha512 -verify identity.pub -signature reply.sig other.msg
curl -sS -D reply.hdr -o importer2.pem "$U1/v1/admin/importer"
sed -n 's/^Kyok-Signature: *//Ip' reply.hdr | tr -d '\r' | openssl base64 -d -A >reply.sig
{ printf 'kyok-reply-v1\nGET /v1/admin/importer\n\n'; cat importer2.pem; } >reply.msg
expect_eq "reply without a nonce: empty nonce line" \
	"$(openssl dgst -sha512 -verify identity.pub -signature reply.sig reply.msg)" "Verified OK"

# ---- 7. state JSON ----

expect_eq "state JSON keys" "$(jq -c 'keys_unsorted' state.json)" \
	'["instance","unit","zone","incarnation","imprint","next_counter","signature_threshold","revocation_threshold","admins","new_mk","current_mk","identity","anchor","transfers","storage","ready"]'
expect_match "state incarnation: 32 hex digits" '^[0-9a-f]{32}$' "$(jq -r .incarnation state.json)"
expect_eq "state admins" "$(jq -c '[.admins[] | [.name, .ski]]' state.json)" \
	"[[\"alice\",\"$SKI_ALICE\"],[\"dave\",\"$SKI_DAVE\"]]"
jq -r '.admins[0].cert' state.json >admin1.pem
expect_eq "state admin cert is alice's" "$(cert_ski admin1.pem)" "$SKI_ALICE"
expect_eq "state registers" "$(jq -c '[.new_mk, .current_mk] | map(del(.part_vps))' state.json)" \
	"[{\"state\":\"FULL UNCOMMITTED\",\"vp\":\"$VP_NEW\"},{\"state\":\"EMPTY\",\"vp\":null}]"
expect_eq "state part VPs: the vp lines of the two key part files" \
	"$(jq -c '[(.new_mk.part_vps | sort), .current_mk.part_vps]' state.json)" \
	"$(jq -cn --arg a "$(sed -n 's/^vp: //p' "$P1")" --arg b "$(sed -n 's/^vp: //p' "$P2")" \
		'[([$a, $b] | sort), []]')"

# ---- 6. sealed unit state ----

S="$KYOK_INSTANCE/unit-1/data/state.sealed"
K="$KYOK_INSTANCE/unit-1/data/seal.key"
expect_eq "state.sealed mode" "$(stat -c %a "$S")" 600
expect_eq "seal.key mode and size" "$(stat -c '%a %s' "$K")" "600 32"
KEYID=$({ printf 'kyok-seal-key-id\0'; cat "$K"; } | sha256sum | cut -c1-16)
expect_eq "state.sealed readable lines" "$(head -n 6 "$S" | tr '\n' '|')" \
	"KYOKSEAL2|instance=$INST|unit=$UNIT1|seal=file|key=$KEYID||"
if grep -aq -e alice -e dave -e BEGIN -e "$VP_NEW" "$S"; then
	fail "state.sealed holds plaintext"
else
	pass "state.sealed holds no plaintext (admin names, PEM, VP)"
fi
hl=$(head -n 6 "$S" | wc -c)
size=$(stat -c %s "$S")
key=$(xxd -p -c 64 "$K")
# (head stops reading early: tail's SIGPIPE is expected, not a failure)
iv=$({ tail -c +$((hl + 1)) "$S" || true; } | head -c 12 | xxd -p)00000002
{ tail -c +$((hl + 13)) "$S" || true; } | head -c $((size - hl - 12 - 16)) |
	openssl enc -d -aes-256-ctr -K "$key" -iv "$iv" >state.plain
expect_eq "sealed state decrypts (no tag check) to the unit state" \
	"$(jq -c '{kyok, instance, unit, new_mk: .new_mk.vp, admins: (.admins | length)}' state.plain)" \
	"{\"kyok\":\"unit-state-v1\",\"instance\":\"$INST\",\"unit\":\"$UNIT1\",\"new_mk\":\"$VP_NEW\",\"admins\":2}"
rm -f state.plain

finish
