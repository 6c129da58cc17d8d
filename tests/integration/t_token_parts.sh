#!/usr/bin/env bash
# Key parts in the TokenKeyPart form (docs/formats.md, section 5) on 2 real crypto units. The
# parts are made here with plain openssl, step by step as the token makes them (ECDH, the
# KEK by AES-ECB, the AES key wrap), and the mk-load commands are built, signed with openssl
# and posted with curl, so that the units' own checks are what is tested. Each refusal must
# carry its own error code and leave the unit's state exactly as it was.
. "$(dirname "$0")/helpers.sh"
setup

"$KYOK" up >/dev/null
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null
for who in alice bob; do
	"$KYOK" tke sigkey-add --name "$who" --password-file "$(newpw "$who")" >/dev/null
done
for n in 1 2; do "$KYOK" tke cryptounit-admin-add --sigkey "$n" >/dev/null; done
C=$T_DIR/c
mkdir -p "$C"
for u in 1 2; do
	cmd_json "$u" thresholds-set '{"signature": 2, "revocation": 2}' >"$C/t$u.json"
	sign_cmd "$C/t$u.json" "$C/t$u.der" alice bob
	expect_accepted "unit $u leaves imprint mode" "$u" "$C/t$u.der"
	curl -fsS "$(unit_url "$u")/v1/admin/importer" >"$C/importer$u.pem"
done

# token_part PART IMPORTER OUT [CURVE]: the TokenKeyPart of PART (32 bytes) to IMPORTER, with
# an ephemeral key on CURVE (P-521 unless told).
token_part() {
	local part=$1 imp=$2 out=$3 curve=${4:-P-521} d
	d=$(mktemp -d "$C/tp.XXXXXX")
	openssl x509 -in "$imp" -pubkey -noout >"$d/imp.pub.pem"
	openssl genpkey -algorithm EC -pkeyopt "ec_paramgen_curve:$curve" -out "$d/eph.pem"
	openssl pkey -in "$d/eph.pem" -pubout -out "$d/eph.pub.pem"
	openssl pkey -pubin -in "$d/eph.pub.pem" -outform DER -out "$d/eph.pub.der"
	if [ "$curve" = P-521 ]; then
		openssl pkeyutl -derive -inkey "$d/eph.pem" -peerkey "$d/imp.pub.pem" -out "$d/z.bin"
		expect_eq "ECDH on P-521 gives 66 bytes" "$(stat -c %s "$d/z.bin")" 66
		tail -c 133 "$d/eph.pub.der" >"$d/point.bin"
	else
		# Another curve has no ECDH with the importer key: any key for the wrap.
		head -c 66 /dev/urandom >"$d/z.bin"
		tail -c 65 "$d/eph.pub.der" >"$d/point.bin"
	fi
	# TP_COMPRESSED=1: the point compressed (0x02 or 0x03 by the parity of Y, then X).
	if [ -n "${TP_COMPRESSED:-}" ]; then
		printf "\\$(printf '%03o' $((2 + $(od -An -tu1 -j132 -N1 "$d/point.bin") % 2)))" >"$d/c.bin"
		head -c 67 "$d/point.bin" | tail -c 66 >>"$d/c.bin"
		mv "$d/c.bin" "$d/point.bin"
	fi
	openssl x509 -in "$imp" -outform DER | openssl dgst -sha256 -binary >"$d/recipient.bin"
	{
		printf 'kyok token key part 1'
		cat "$d/recipient.bin" "$d/point.bin"
	} | openssl dgst -sha256 -binary >"$d/info.bin"
	openssl enc -aes-256-ecb -nopad -K "$(tail -c 32 "$d/z.bin" | xxd -p -c 64)" \
		-in "$d/info.bin" -out "$d/kek.bin"
	openssl enc -id-aes256-wrap -iv A6A6A6A6A6A6A6A6 -K "$(xxd -p -c 64 "$d/kek.bin")" \
		-in "$part" -out "$d/wrapped.bin"
	cat >"$d/tp.cnf" <<END
asn1 = SEQUENCE:tokenpart
[tokenpart]
version = INTEGER:${TP_VERSION:-1}
recipient = FORMAT:HEX,OCTETSTRING:$(xxd -p -c 64 "$d/recipient.bin")
originator = SEQUENCE:spki
wrapped = FORMAT:HEX,OCTETSTRING:$(xxd -p -c 64 "$d/wrapped.bin")
[spki]
algorithm = SEQUENCE:alg
point = FORMAT:HEX,BITSTRING:$(xxd -p -c 200 "$d/point.bin")
[alg]
type = OID:id-ecPublicKey
curve = OID:$([ "$curve" = P-521 ] && echo secp521r1 || echo prime256v1)
END
	openssl asn1parse -genconf "$d/tp.cnf" -noout -out "$out" >/dev/null
	rm -rf "$d"
}
envelope() {
	openssl cms -encrypt -binary -aes-256-gcm -recip "$2" -keyopt ecdh_kdf_md:sha256 \
		-in "$1" -outform DER -out "$3"
}
vp_of() { (printf '\001'; cat "$1") | openssl dgst -sha256 -r | cut -c1-64; }
# load_cmd UNIT OUT DER...: the mk-load of these parts, signed by alice and bob.
load_cmd() {
	local u=$1 out=$2 parts='[]' f
	shift 2
	for f in "$@"; do parts=$(jq -c --arg e "$(base64 -w0 "$f")" '. + [$e]' <<<"$parts"); done
	cmd_json "$u" mk-load "$(jq -n --argjson p "$parts" '{parts: $p}')" >"$out.json"
	sign_cmd "$out.json" "$out" alice bob
}

for i in 1 2; do head -c 32 /dev/urandom >"$C/part$i"; done
perl -e 'open A,"<",$ARGV[0]; open B,"<",$ARGV[1]; binmode A; binmode B; local $/;
	my ($a,$b)=(<A>,<B>); print $a ^ $b' "$C/part1" "$C/part2" >"$C/key"
vp=$(vp_of "$C/key")

# ---- the structure, as docs/formats.md shows it -------------------------------------------------
token_part "$C/part1" "$C/importer1.pem" "$C/tok1.der"
openssl asn1parse -inform DER -in "$C/tok1.der" >"$C/tok1.txt"
expect_eq "TokenKeyPart: version, recipient, originator key, wrapped part" \
	"$(sed -E 's/^.*l= *[0-9]+ //; s/ +/ /g; s/DUMP\]:.*/DUMP]/; s/ $//' "$C/tok1.txt" | tr '\n' '|')" \
	"cons: SEQUENCE|prim: INTEGER :01|prim: OCTET STRING [HEX DUMP]|cons: SEQUENCE|cons: SEQUENCE|prim: OBJECT :id-ecPublicKey|prim: OBJECT :secp521r1|prim: BIT STRING|prim: OCTET STRING [HEX DUMP]|"
expect_eq "TokenKeyPart: the recipient is SHA-256 of unit 1's importer certificate" \
	"$(sed -n 3p "$C/tok1.txt" | sed 's/.*DUMP]://' | tr 'A-F' 'a-f')" \
	"$(openssl x509 -in "$C/importer1.pem" -outform DER | openssl dgst -sha256 -r | cut -c1-64)"
expect_eq "TokenKeyPart: a 40-byte wrapped part" "$(tail -n1 "$C/tok1.txt" | grep -o 'l= *40 ' | tr -d ' ')" "l=40"

# ---- the openssl reproduction shown in docs/formats.md, run verbatim with a test key --------------
R=$C/recipe
mkdir -p "$R"
awk '/^The whole computation can be reproduced with openssl/ {f = 1} f && /^```sh$/ {b = 1; next}
	b && /^```$/ {exit} b' "$(dirname "$0")/../../docs/formats.md" >"$R/recipe.sh"
expect_eq "docs/formats.md shows the reproduction, to the unwrap" "$(grep -c 'cmp - part.bin' "$R/recipe.sh")" 1
(
	cd "$R"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -out imp.key
	openssl req -new -x509 -key imp.key -subj "/CN=test importer" -days 2 -out importer.pem
	head -c 32 /dev/urandom >part.bin
	bash -e recipe.sh
) >"$R/out" 2>&1 && pass "the reproduction runs; the unit's side unwraps the part" ||
	fail "the reproduction of docs/formats.md fails: $(cat "$R/out")"
# The same steps for unit 1's importer and part 1, up to the unit's side: loaded below.
R1=$C/recipe1
mkdir -p "$R1"
sed '/^# The unit.s side/,$d' "$R/recipe.sh" >"$R1/recipe.sh"
cp "$C/importer1.pem" "$R1/importer.pem"
cp "$C/part1" "$R1/part.bin"
(cd "$R1" && bash -e recipe.sh) >"$R1/out" 2>&1 ||
	fail "the reproduction of docs/formats.md for unit 1 fails: $(cat "$R1/out")"
expect_eq "the reproduction's TokenKeyPart: version 1, a 40-byte wrapped part" \
	"$(openssl asn1parse -inform DER -in "$R/part.tok.der" | sed -n '2p;$p' |
		grep -o 'INTEGER *:01\|l= *40 ' | tr -d ' ' | tr '\n' ' ')" "INTEGER:01 l=40 "

# ---- refusals ------------------------------------------------------------------------------------
envelope "$C/part2" "$C/importer1.pem" "$C/env2.der"
token_part "$C/part1" "$C/importer2.pem" "$C/tok1for2.der"
load_cmd 1 "$C/l.der" "$C/tok1for2.der" "$C/env2.der"
expect_refused "a token part made for unit 2, sent to unit 1" token-part-other-unit 1 "$C/l.der"

cp "$C/tok1.der" "$C/tok1alt.der"
size=$(stat -c %s "$C/tok1alt.der")
last=$(od -An -tu1 -j $((size - 1)) -N1 "$C/tok1alt.der" | tr -d ' ')
printf "$(printf '\\%03o' $(((last + 1) % 256)))" |
	dd of="$C/tok1alt.der" bs=1 seek=$((size - 1)) conv=notrunc status=none
load_cmd 1 "$C/l.der" "$C/tok1alt.der" "$C/env2.der"
expect_refused "a token part whose wrapped part was altered" token-part-unwrap 1 "$C/l.der"

token_part "$C/part1" "$C/importer1.pem" "$C/tok1p256.der" P-256
load_cmd 1 "$C/l.der" "$C/tok1p256.der" "$C/env2.der"
expect_refused "a token part with a P-256 originator key" token-part-curve 1 "$C/l.der"

TP_COMPRESSED=1 token_part "$C/part1" "$C/importer1.pem" "$C/tok1comp.der"
expect_eq "the compressed originator point: a BIT STRING of 1 + 67 bytes" \
	"$(openssl asn1parse -inform DER -in "$C/tok1comp.der" | grep -o 'l= *68 prim: BIT STRING')" \
	"l=  68 prim: BIT STRING"
load_cmd 1 "$C/l.der" "$C/tok1comp.der" "$C/env2.der"
expect_refused "a token part whose P-521 originator point is compressed (400, not a crypto failure)" \
	token-part-curve 1 "$C/l.der"

TP_VERSION=2 token_part "$C/part1" "$C/importer1.pem" "$C/tok1v2.der"
load_cmd 1 "$C/l.der" "$C/tok1v2.der" "$C/env2.der"
expect_refused "a token part of version 2" token-part-version 1 "$C/l.der"

head -c 20 "$C/tok1.der" >"$C/tok1short.der"
load_cmd 1 "$C/l.der" "$C/tok1short.der" "$C/env2.der"
expect_refused "a truncated token part" token-part-malformed 1 "$C/l.der"

token_part "$C/part1" "$C/importer1.pem" "$C/tok1b.der"
load_cmd 1 "$C/l.der" "$C/tok1.der" "$C/tok1b.der"
expect_refused "one part twice, in two token parts" key-part-duplicate 1 "$C/l.der"

# ---- accepted: mixed on unit 1, two token parts on unit 2 ---------------------------------------
load_cmd 1 "$C/l.der" "$R1/part.tok.der" "$C/env2.der"
expect_accepted "mk-load of a token part (made as docs/formats.md shows) and a CMS envelope" 1 \
	"$C/l.der"
expect_eq "unit 1: new register's VP is the XOR's" "$(unit_state 1 | jq -r .new_mk.vp)" "$vp"
expect_eq "unit 1: the part VPs, in order" "$(unit_state 1 | jq -r '.new_mk.part_vps | join(",")')" \
	"$(vp_of "$C/part1"),$(vp_of "$C/part2")"

token_part "$C/part1" "$C/importer2.pem" "$C/tok1u2.der"
token_part "$C/part2" "$C/importer2.pem" "$C/tok2u2.der"
load_cmd 2 "$C/l2.der" "$C/tok1u2.der" "$C/tok2u2.der"
expect_accepted "mk-load of two token parts" 2 "$C/l2.der"
expect_eq "unit 2: new register's VP is the XOR's" "$(unit_state 2 | jq -r .new_mk.vp)" "$vp"
expect_eq "unit 2: the part VPs, in order" "$(unit_state 2 | jq -r '.new_mk.part_vps | join(",")')" \
	"$(vp_of "$C/part1"),$(vp_of "$C/part2")"

# ---- parts made in a SoftHSM2 token: never readable, VP by C_DigestKey ---------------------------
for u in 1 2; do
	cmd_json "$u" mk-clrnew >"$C/c$u.json"
	sign_cmd "$C/c$u.json" "$C/c$u.der" alice bob
	expect_accepted "unit $u: new register cleared" "$u" "$C/c$u.der"
done
MODULE=/usr/lib/softhsm/libsofthsm2.so
[ -f "$MODULE" ] || {
	fail "SoftHSM2 module $MODULE is missing: scripts/deps.sh check installs softhsm2"
	finish
}
mkdir -p "$T_DIR/hsm/tokens"
printf 'directories.tokendir = %s/hsm/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' \
	"$T_DIR" >"$T_DIR/hsm/softhsm2.conf"
export SOFTHSM2_CONF="$T_DIR/hsm/softhsm2.conf"
so=$(cat "$(newpw so-ops)")
pin=$(cat "$(newpw pin-ops)")
printf '%s\n%s\n%s\n%s\n' "$so" "$so" "$pin" "$pin" |
	script -qec "softhsm2-util --init-token --free --label kyok-ops" /dev/null >/dev/null
TOKEN_PART=$KYOK_BUILD/tests/token_part
vpA=$("$TOKEN_PART" "$MODULE" kyok-ops "$T_DIR/pw/pin-ops" "$C/tokA" "$C/importer1.pem" \
	"$C/importer2.pem") || fail "token part A not made"
vpB=$("$TOKEN_PART" "$MODULE" kyok-ops "$T_DIR/pw/pin-ops" "$C/tokB" "$C/importer2.pem") ||
	fail "token part B not made"
expect_eq "two token parts, two VPs" "$([ "$vpA" != "$vpB" ] && echo differ)" differ

load_cmd 2 "$C/l2.der" "$C/tokA.1.der" "$C/tokB.1.der"
expect_refused "a part wrapped in the token for unit 1, sent to unit 2" token-part-other-unit 2 \
	"$C/l2.der"
load_cmd 1 "$C/l.der" "$C/tokA.1.der" "$C/env2.der"
expect_accepted "unit 1: mk-load of a token-made part and a file part's envelope" 1 "$C/l.der"
expect_eq "unit 1: the part VPs are the token's C_DigestKey VP and the file part's" \
	"$(unit_state 1 | jq -r '.new_mk.part_vps | join(",")')" "$vpA,$(vp_of "$C/part2")"
load_cmd 2 "$C/l2.der" "$C/tokA.2.der" "$C/tokB.1.der"
expect_accepted "unit 2: mk-load of two token-made parts" 2 "$C/l2.der"
expect_eq "unit 2: the part VPs are the token's C_DigestKey VPs" \
	"$(unit_state 2 | jq -r '.new_mk.part_vps | join(",")')" "$vpA,$vpB"
expect_eq "unit 2: the key is not unit 1's (its second part differs)" \
	"$([ "$(unit_state 1 | jq -r .new_mk.vp)" != "$(unit_state 2 | jq -r .new_mk.vp)" ] && echo differ)" \
	differ

finish
