#!/usr/bin/env bash
# Administrators' signature keys in PKCS#11 tokens (SoftHSM2, one token per administrator):
# keys generated in the tokens as sensitive and never extractable, the ceremony signed through
# the tokens on real units (admins, thresholds 2/2, master key load/commit/set-immediate, an
# API key, wrap and unwrap), and the refusals: wrong PIN, a missing token, a key that was
# imported into the token (so once in the clear), each leaving every unit unchanged.
. "$(dirname "$0")/helpers.sh"
setup

expect_match() {
	if grep -qE -- "$2" <<<"$3"; then pass "$1"; else fail "$1: no /$2/ in: $3"; fi
}
both_states() { printf '%s\n%s\n' "$(unit_state 1)" "$(unit_state 2)"; }
# expect_refused_cli DESC PATTERN EXIT CMD...: refused with PATTERN and exit EXIT, and
# neither unit's state changed (counters included).
expect_refused_cli() {
	local desc=$1 pat=$2 want=$3 before after
	shift 3
	before=$(both_states)
	run_rc "$@"
	after=$(both_states)
	if [ $rc -ne "$want" ]; then
		fail "$desc: exit $rc, want $want: $out"
	elif ! grep -qE -- "$pat" <<<"$out"; then
		fail "$desc: output does not match /$pat/: $out"
	elif [ "$before" != "$after" ]; then
		fail "$desc: refused but a unit's state changed"
	else
		pass "$desc (exit $rc, both units unchanged)"
	fi
}
MODULE=/usr/lib/softhsm/libsofthsm2.so
[ -f "$MODULE" ] || {
	fail "SoftHSM2 module $MODULE is missing: scripts/deps.sh check installs softhsm2"
	finish
}

# One SoftHSM2 store with a token per administrator, labelled kyok-NAME, its user PIN in
# $T_DIR/pw/pin-NAME. PINs go in through a terminal, never on a command line.
mkdir -p "$T_DIR/hsm/tokens"
printf 'directories.tokendir = %s/hsm/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' \
	"$T_DIR" >"$T_DIR/hsm/softhsm2.conf"
export SOFTHSM2_CONF="$T_DIR/hsm/softhsm2.conf"
mk_token() {
	local so pin
	so=$(cat "$(newpw "so-$1")")
	pin=$(cat "$(newpw "pin-$1")")
	printf '%s\n%s\n%s\n%s\n' "$so" "$so" "$pin" "$pin" |
		script -qec "softhsm2-util --init-token --free --label kyok-$1" /dev/null >/dev/null
}
# p11 NAME ARGS...: pkcs11-tool on token kyok-NAME, logged in; the PIN is typed at its
# prompt through a terminal (pkcs11-tool drops what was typed before it).
p11() {
	local who=$1
	shift
	p11_tool "kyok-$who" "$T_DIR/pw/pin-$who" "$@"
}
for who in alice bob; do mk_token "$who"; done

# ---- signature keys generated in the tokens -------------------------------------------------
expect_ok "kyok up: 2 units" "$KYOK" up
expect_ok "select units 1,2" "$KYOK" tke cryptounit-add --units 1,2

wrong=$(newpw wrong-pin)
run_rc "$KYOK" tke sigkey-add --name alice --token-module "$MODULE" --token-label kyok-alice \
	--password-file "$wrong"
expect_eq "sigkey-add with a wrong PIN: exit 3" "$rc" 3
expect_match "... says the PIN is wrong, naming the token" \
	"token 'kyok-alice': wrong token PIN.*CKR_PIN_INCORRECT" "$out"
expect_eq "... no signature key file written" "$(find "$KYOK_TKE_FILES/sigkeys" -type f | wc -l)" 0
expect_eq "... no key made in the token" "$(p11 alice --list-objects | grep -c 'Private Key Object')" 0

run_rc "$KYOK" tke sigkey-add --name alice --token-module "$MODULE" --token-label kyok-nobody \
	--password-file "$T_DIR/pw/pin-alice"
expect_eq "sigkey-add with no such token: exit 3" "$rc" 3
expect_match "... says which token is missing" "has no token labelled 'kyok-nobody'" "$out"
run_rc "$KYOK" tke sigkey-add --name alice --token-module /nonexistent/p11.so \
	--token-label kyok-alice --password-file "$T_DIR/pw/pin-alice"
expect_eq "sigkey-add with a module that does not load: exit 3" "$rc" 3
expect_match "... names the module" "cannot load '/nonexistent/p11.so'" "$out"
run_rc "$KYOK" tke sigkey-add --name alice --token-module "$MODULE"
expect_eq "sigkey-add with a module and no label: exit 2" "$rc" 2
expect_match "... says both are needed" "needs both --token-module and --token-label" "$out"
expect_eq "... still no signature key file" "$(find "$KYOK_TKE_FILES/sigkeys" -type f | wc -l)" 0

for who in alice bob; do
	run_rc "$KYOK" tke sigkey-add --name "$who" --token-module "$MODULE" \
		--token-label "kyok-$who" --password-file "$T_DIR/pw/pin-$who"
	expect_eq "sigkey-add $who in token kyok-$who: exit 0" "$rc" 0
	expect_match "... says the key is in the token" "token kyok-$who \(serial [0-9a-f]+\), key generated in it" "$out"
	f=$(sigkey_file "$who")
	expect_eq "... the file holds no private key" "$(grep -c 'PRIVATE KEY' "$f")" 0
	expect_match "... the file names module, token and key id" \
		"^kyok-token-module: $MODULE$" "$(cat "$f")"
	expect_match "... and the key id" "^kyok-token-key-id: [0-9a-f]{32}$" "$(cat "$f")"
	objs=$(p11 "$who" --list-objects)
	expect_match "... the token holds the private key: sensitive, never extractable, made there" \
		"Access: +sensitive, always sensitive, never extractable, local" "$objs"
	expect_match "... an EC P-521 key" "Private Key Object; EC" "$objs"
	expect_eq "... the certificate's key is P-521" \
		"$(openssl x509 -in "$f" -noout -text | grep -c 'NIST CURVE: P-521')" 1
done
sk=$("$KYOK" tke sigkeys --output json)
expect_eq "sigkeys lists both token keys" "$(jq -r '[.sigkeys[].name] | join(",")' <<<"$sk")" "alice,bob"

# ---- the ceremony signed through the tokens --------------------------------------------------
for n in 1 2; do
	expect_ok "admin-add key $n (imprint mode)" "$KYOK" tke cryptounit-admin-add --sigkey "$n"
done
expect_ok "select alice, bob" "$KYOK" tke sigkey-sel --sigkeys 1,2
PINS=(--password-file "$T_DIR/pw/pin-alice" --password-file "$T_DIR/pw/pin-bob")
expect_ok "thresholds 2/2, signed by both tokens" "$KYOK" tke cryptounit-thrhld-set \
	--signature 2 --revocation 2 "${PINS[@]}"
for n in 1 2; do
	expect_eq "unit $n: secure mode, 2/2, admins alice and bob" \
		"$(unit_state "$n" | jq -r '[.imprint, .signature_threshold, .revocation_threshold, ([.admins[].name] | sort | join(","))] | join(" ")')" \
		"false 2 2 alice,bob"
done

for who in dora eve; do
	expect_ok "mk-add --random for $who" "$KYOK" tke mk-add --random \
		--description "part of $who" --password-file "$(newpw "part-$who")"
done
expect_ok "mk-load of 2 parts, signed by both tokens" "$KYOK" tke cryptounit-mk-load \
	--parts 1,2 --password-file "$T_DIR/pw/part-dora" --password-file "$T_DIR/pw/part-eve" \
	"${PINS[@]}"
expect_ok "mk-commit" "$KYOK" tke cryptounit-mk-commit "${PINS[@]}"
expect_ok "mk-setimm --yes" "$KYOK" tke cryptounit-mk-setimm --yes "${PINS[@]}"
VP=$(unit_state 1 | jq -r .current_mk.vp)
expect_eq "unit 2 has the same current VP" "$(unit_state 2 | jq -r .current_mk.vp)" "$VP"

# The VP from the key part files, opened with openssl as docs/formats.md shows.
W=$T_DIR/open
mkdir -p "$W"
chmod 700 "$W"
open_part() {
	local P=$1 PW=$2 salt n r p kek
	salt=$(sed -n 's/^kdf-salt: //p' "$P")
	n=$(sed -n 's/^kdf-n: //p' "$P")
	r=$(sed -n 's/^kdf-r: //p' "$P")
	p=$(sed -n 's/^kdf-p: //p' "$P")
	kek=$(openssl kdf -keylen 32 -kdfopt "pass:$(cat "$PW")" -kdfopt "hexsalt:$salt" \
		-kdfopt "n:$n" -kdfopt "r:$r" -kdfopt "p:$p" SCRYPT | tr -d :)
	(umask 077 && openssl cms -decrypt -inform PEM -in "$P" -secretkey "$kek" \
		-secretkeyid 6b796f6b -binary -out "$W/part.plain") || return 1
	tail -c 32 "$W/part.plain" | xxd -p -c 64
	rm -f "$W/part.plain"
}
mks=$("$KYOK" tke mks --output json)
XOR=$(printf '%064d' 0)
for who in dora eve; do
	f=$(jq -r --arg d "part of $who" '.keyparts[] | select(.description == $d) | .file' <<<"$mks")
	k=$(open_part "$f" "$T_DIR/pw/part-$who") || fail "key part of $who does not open"
	x=
	for ((i = 0; i < 64; i += 2)); do x+=$(printf '%02x' $((0x${XOR:i:2} ^ 0x${k:i:2}))); done
	XOR=$x
done
expect_eq "current VP = SHA-256(0x01 || part1 ^ part2), as the units report it" "$VP" \
	"$({ printf '\001'; xxd -r -p <<<"$XOR"; } | openssl dgst -sha256 -r | cut -c1-64)"

# An API key, signed through the tokens, then wrap and unwrap with it.
expect_ok "apikey-create Writer, signed by both tokens" "$KYOK" tke apikey-create \
	--name tok-writer --role Writer "${PINS[@]}"
# shellcheck disable=SC2034 # KT is read by helpers.sh's create_json
KT="application/vnd.ibm.kms.key+json"
OLDIFS=$IFS
IFS=$'\n' # $(auth ...) and $(json_body ...) expand to one curl argument a line
AT=$(token_of "$KYOK_TKE_FILES/apikeys/tok-writer.apikey")
[ -n "$AT" ] || fail "no access token for the API key: $(cat "$T_DIR/tok")"
W=$AT
K=$(mkkey tok-root)
DEK=$(head -c 32 /dev/urandom | base64 -w0)
# shellcheck disable=SC2046 # one argument a line (IFS)
call 1 $(auth "$AT") $(json_body "{\"plaintext\":\"$DEK\"}") -X POST "/api/v2/keys/$K/actions/wrap"
# shellcheck disable=SC2154 # call sets status
expect_eq "wrap with the root key: 200" "$status" 200
CT=$(jq -r .ciphertext "$T_DIR/body")
# shellcheck disable=SC2046
call 2 $(auth "$AT") $(json_body "{\"ciphertext\":\"$CT\"}") -X POST "/api/v2/keys/$K/actions/unwrap"
expect_eq "unwrap on the other unit: 200" "$status" 200
expect_eq "... gives back the data key" "$(jq -r .plaintext "$T_DIR/body")" "$DEK"
IFS=$OLDIFS

# A command bundle signed by both tokens with cmd-sign, checked by openssl, then submitted.
expect_ok "prepare thresholds 2/1" "$KYOK" tke cryptounit-thrhld-set --signature 2 \
	--revocation 1 --prepare "$T_DIR/thr.bundle"
expect_ok "cmd-sign with both tokens" "$KYOK" tke cmd-sign "$T_DIR/thr.bundle" "${PINS[@]}"
expect_eq "cmd-show lists both signers on both commands" \
	"$("$KYOK" tke cmd-show "$T_DIR/thr.bundle" --output json | jq -r '[.commands[].signers | length] | join(",")')" \
	"2,2"
expect_ok "openssl verifies the token-made signatures of the first block" \
	openssl cms -verify -noverify -inform PEM -in "$T_DIR/thr.bundle" -out /dev/null
expect_ok "cmd-submit" "$KYOK" tke cmd-submit "$T_DIR/thr.bundle"
expect_eq "both units now 2/1" \
	"$(both_states | jq -r '"\(.signature_threshold)/\(.revocation_threshold)"' | sort -u)" "2/1"

# auto-init of a second instance, signed by the same two tokens.
(
	export KYOK_INSTANCE="$T_DIR/inst2"
	expect_ok "instance 2: kyok up" "$KYOK" up
	expect_ok "instance 2: select units 1,2" "$KYOK" tke cryptounit-add --units 1,2
	expect_ok "instance 2: auto-init with the two token keys" "$KYOK" tke auto-init \
		--signature 2 --revocation 1 --sigkeys 1,2 "${PINS[@]}"
	for n in 1 2; do
		expect_eq "instance 2, unit $n: admins alice and bob, 2/1, a current master key" \
			"$(unit_state "$n" | jq -r '[([.admins[].name] | sort | join(",")), .signature_threshold, .revocation_threshold, .current_mk.state] | join(" ")')" \
			"alice,bob 2 1 VALID"
	done
	[ "$T_FAILS" -eq 0 ] || exit 1
) || fail "auto-init of instance 2 with token keys"

# ---- a P-384 key, for tokens without P-521 ----------------------------------------------------
mk_token percy
expect_ok "sigkey-add percy with a P-384 key in token kyok-percy" "$KYOK" tke sigkey-add \
	--name percy --token-module "$MODULE" --token-label kyok-percy --token-curve P-384 \
	--password-file "$T_DIR/pw/pin-percy"
expect_eq "... the certificate's key is P-384" \
	"$(openssl x509 -in "$(sigkey_file percy)" -noout -text | grep -c 'NIST CURVE: P-384')" 1
run_rc "$KYOK" tke sigkey-add --name paula --token-module "$MODULE" --token-label kyok-percy \
	--token-curve P-256
expect_eq "sigkey-add --token-curve P-256: exit 2" "$rc" 2
expect_match "... names the curves there are" "'P-256' is not P-521 or P-384" "$out"
expect_ok "admin-add percy (P-384), signed by alice and bob" "$KYOK" tke cryptounit-admin-add \
	--sigkey 3 "${PINS[@]}"
expect_ok "select alice, percy" "$KYOK" tke sigkey-sel --sigkeys 1,3
expect_ok "thresholds 2/2, signed by alice (P-521) and percy (P-384)" "$KYOK" tke \
	cryptounit-thrhld-set --signature 2 --revocation 2 --password-file "$T_DIR/pw/pin-alice" \
	--password-file "$T_DIR/pw/pin-percy"
expect_eq "both units 2/2 again, three administrators" \
	"$(both_states | jq -r '"\(.signature_threshold)/\(.revocation_threshold) \(.admins | length)"' | sort -u)" \
	"2/2 3"
expect_ok "select alice, bob" "$KYOK" tke sigkey-sel --sigkeys 1,2

# ---- refusals: nothing reaches a unit ---------------------------------------------------------
expect_ok "sigkey-add carol (key file)" "$KYOK" tke sigkey-add --name carol \
	--password-file "$(newpw carol)"
expect_refused_cli "admin-add with bob's PIN wrong" \
	"signature key 'bob': wrong token PIN.*token 'kyok-bob'" 3 \
	"$KYOK" tke cryptounit-admin-add --sigkey 4 --password-file "$T_DIR/pw/pin-alice" \
	--password-file "$wrong"

mv "$T_DIR/hsm/softhsm2.conf" "$T_DIR/hsm/softhsm2.conf.real"
printf 'directories.tokendir = %s/hsm/empty\nobjectstore.backend = file\nlog.level = ERROR\n' \
	"$T_DIR" >"$T_DIR/hsm/softhsm2.conf"
mkdir -p "$T_DIR/hsm/empty"
expect_refused_cli "admin-add with alice's token missing" \
	"signature key 'alice': no token with that label is present.*no token labelled 'kyok-alice'" 3 \
	"$KYOK" tke cryptounit-admin-add --sigkey 4 "${PINS[@]}"
mv "$T_DIR/hsm/softhsm2.conf.real" "$T_DIR/hsm/softhsm2.conf"

# bob's key replaced in his token by one made outside it and imported under the same id: it
# was in the clear once, so it signs nothing.
bobid=$(sed -n 's/^kyok-token-key-id: //p' "$(sigkey_file bob)")
p11 bob --delete-object --type privkey --id "$bobid" >/dev/null
(umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 \
	-outform DER -out "$T_DIR/outside.der")
p11 bob --write-object "$T_DIR/outside.der" --type privkey --id "$bobid" --label bob >/dev/null
expect_match "the imported key is in bob's token, not local" "Private Key Object; EC" \
	"$(p11 bob --list-objects --type privkey)"
expect_refused_cli "admin-add with an imported (once extractable) key in bob's token" \
	"signature key 'bob': the private key in the token can be, or once could be, read out" 4 \
	"$KYOK" tke cryptounit-admin-add --sigkey 4 "${PINS[@]}"
expect_match "... names the attribute" "CKA_(ALWAYS_SENSITIVE|NEVER_EXTRACTABLE|LOCAL) is false|not sensitive or is extractable" "$out"
finish
