#!/usr/bin/env bash
# The key ceremony of docs/ceremony.md through the real CLI, on 2 real units, exactly as
# scripts/demo.sh runs it (3 administrators, thresholds 2/2, 3 key parts of 3 owners,
# load/commit/set-immediate). The resulting state is read independently (curl) and the
# master key's VP recomputed here with openssl from the key part files. Then the CLI-level
# behaviour: JSON listings, re-runs, a unit down in the middle of a command, mk-load inputs
# that must be refused before anything is sent, set-immediate without confirmation, zeroize.
. "$(dirname "$0")/helpers.sh"
setup

# expect_match DESC PATTERN TEXT: TEXT matches the extended regular expression PATTERN.
expect_match() {
	if grep -qE -- "$2" <<<"$3"; then pass "$1"; else fail "$1: /$2/ not in: $3"; fi
}
# run_rc CMD...: runs CMD, output in $out, exit status in $rc (never fails the script).
# pw_args NAME...: PWARGS gets --password-file arguments for the passwords of NAME...
pw_args() {
	local n
	PWARGS=()
	for n in "$@"; do PWARGS+=(--password-file "$T_DIR/pw/$n"); done
}
# both_states: the full public state of both units, read with curl.
both_states() { printf '%s\n%s\n' "$(unit_state 1)" "$(unit_state 2)"; }
# expect_rerun DESC CMD...: a re-run of a completed step: exit 0, every unit "unchanged".
expect_rerun() {
	local desc=$1
	shift
	run_rc "$@"
	if [ $rc -ne 0 ]; then
		fail "$desc: re-run exit $rc: $out"
	elif [ "$(grep -cE '^[12] +zone-[12] +unchanged' <<<"$out")" -ne 2 ] ||
		! grep -q 'changed 0 of 2 crypto units' <<<"$out"; then
		fail "$desc: re-run does not say unchanged on both units: $out"
	else
		pass "$desc: re-run says unchanged, exit 0"
	fi
}
# expect_refused_cli DESC PATTERN EXIT CMD...: the CLI refuses with PATTERN and exit status
# EXIT, and neither unit's state changed (counters included).
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

# ---- the ceremony ---------------------------------------------------------------------------
expect_ok "kyok up: 2 units" "$KYOK" up
expect_ok "select units 1,2" "$KYOK" tke cryptounit-add --units 1,2
for who in alice bob carol; do
	expect_ok "sigkey-add $who" "$KYOK" tke sigkey-add --name "$who" --password-file "$(newpw "$who")"
done
for n in 1 2 3; do
	expect_ok "admin-add key $n (imprint mode)" "$KYOK" tke cryptounit-admin-add --sigkey "$n"
done
expect_rerun "admin-add carol again" "$KYOK" tke cryptounit-admin-add --sigkey 3
expect_match "... names the administrator" "administrator 'carol' already installed" "$out"

expect_ok "select alice, bob" "$KYOK" tke sigkey-sel --sigkeys 1,2
pw_args alice bob
expect_ok "thresholds 2/2 (leaves imprint mode)" "$KYOK" tke cryptounit-thrhld-set \
	--signature 2 --revocation 2 "${PWARGS[@]}"
pw_args alice bob
expect_rerun "thresholds 2/2 again" "$KYOK" tke cryptounit-thrhld-set \
	--signature 2 --revocation 2 "${PWARGS[@]}"

for who in dora eve frank; do
	expect_ok "mk-add --random for $who" "$KYOK" tke mk-add --random \
		--description "part of $who" --password-file "$(newpw "part-$who")"
done
expect_ok "select alice, bob, carol" "$KYOK" tke sigkey-sel --sigkeys 1,2,3
pw_args part-dora part-eve part-frank alice bob carol
# shellcheck disable=SC2054 # 1,2,3 is one argument
LOAD3=(tke cryptounit-mk-load --parts 1,2,3 "${PWARGS[@]}")
expect_ok "mk-load of 3 parts, 3 signatures" "$KYOK" "${LOAD3[@]}"
expect_rerun "mk-load of the same parts again" "$KYOK" "${LOAD3[@]}"
expect_match "... says the register holds the key" "already holds this key" "$out"
expect_ok "select alice, bob" "$KYOK" tke sigkey-sel --sigkeys 1,2
pw_args alice bob
expect_ok "mk-commit" "$KYOK" tke cryptounit-mk-commit "${PWARGS[@]}"
pw_args alice bob
expect_rerun "mk-commit again" "$KYOK" tke cryptounit-mk-commit "${PWARGS[@]}"
pw_args alice bob
expect_ok "mk-setimm --yes" "$KYOK" tke cryptounit-mk-setimm --yes "${PWARGS[@]}"
# Once set-immediate ran on every unit the new register is empty: there is nothing left to
# name the intended key, so a re-run is an error that says the current key is in place.
pw_args alice bob
expect_refused_cli "mk-setimm again: nothing to set" \
	"new master key register is EMPTY \(the current master key, vp [0-9a-f]{64}, is in place\): nothing to set" \
	5 "$KYOK" tke cryptounit-mk-setimm --yes "${PWARGS[@]}"
expect_match "... nothing was sent" "^nothing was sent to any crypto unit" "$out"

# ---- the resulting state, read with curl ------------------------------------------------------
s1=$(unit_state 1)
s2=$(unit_state 2)
for n in 1 2; do
	s=$s1
	[ $n -eq 2 ] && s=$s2
	expect_eq "unit $n: secure mode, thresholds 2/2, admins alice bob carol" \
		"$(jq -r '[.imprint, .signature_threshold, .revocation_threshold, ([.admins[].name] | sort | join(","))] | join(" ")' <<<"$s")" \
		"false 2 2 alice,bob,carol"
	expect_eq "unit $n: new register EMPTY, current VALID" \
		"$(jq -r '"\(.new_mk.state) \(.current_mk.state)"' <<<"$s")" "EMPTY VALID"
	expect_eq "unit $n: state names its instance and unit" \
		"$(jq -r '"\(.instance) \(.unit)"' <<<"$s")" "$(instance_id) $(unit_id $n)"
done
VP=$(jq -r .current_mk.vp <<<"$s1")
expect_eq "same current VP on both units" "$(jq -r .current_mk.vp <<<"$s2")" "$VP"

# The parts, opened with openssl as docs/formats.md shows (umask 077, private dir).
W=$T_DIR/open
mkdir -p "$W"
chmod 700 "$W"
open_part() {
	local P=$1 PW=$2 salt n r p kek hl
	salt=$(sed -n 's/^kdf-salt: //p' "$P")
	n=$(sed -n 's/^kdf-n: //p' "$P")
	r=$(sed -n 's/^kdf-r: //p' "$P")
	p=$(sed -n 's/^kdf-p: //p' "$P")
	kek=$(openssl kdf -keylen 32 -kdfopt "pass:$(cat "$PW")" -kdfopt "hexsalt:$salt" \
		-kdfopt "n:$n" -kdfopt "r:$r" -kdfopt "p:$p" SCRYPT | tr -d :)
	(umask 077 && openssl cms -decrypt -inform PEM -in "$P" -secretkey "$kek" \
		-secretkeyid 6b796f6b -binary -out "$W/part.plain") || return 1
	hl=$(sed '/^-----BEGIN CMS-----$/q' "$P" | head -n -1 | wc -c)
	cmp -s <(head -c "$hl" "$W/part.plain") <(head -c "$hl" "$P") || return 1
	tail -c 32 "$W/part.plain" | xxd -p -c 64
	rm -f "$W/part.plain"
}
mks=$("$KYOK" tke mks --output json)
XOR=$(printf '%064d' 0)
for who in dora eve frank; do
	f=$(jq -r --arg d "part of $who" '.keyparts[] | select(.description == $d) | .file' <<<"$mks")
	if ! k=$(open_part "$f" "$T_DIR/pw/part-$who") || [ ${#k} -ne 64 ]; then
		fail "key part of $who does not open with openssl"
		continue
	fi
	x=
	for ((i = 0; i < 64; i += 2)); do x+=$(printf '%02x' $((0x${XOR:i:2} ^ 0x${k:i:2}))); done
	XOR=$x
done
VP_OPENSSL=$({ printf '\001'; xxd -r -p <<<"$XOR"; } | openssl dgst -sha256 -r | cut -c1-64)
expect_eq "current VP = SHA-256(0x01 || part1 ^ part2 ^ part3), computed with openssl" "$VP" "$VP_OPENSSL"

# ---- every listing's --output json parses --------------------------------------------------
for c in "status" "tke cryptounits" "tke cryptounit-admins" "tke cryptounit-thrhlds" \
	"tke cryptounit-mk" "tke cryptounit-compare" "tke sigkeys" "tke mks"; do
	# shellcheck disable=SC2086
	if j=$("$KYOK" $c --output json 2>/dev/null) && jq -e . >/dev/null <<<"$j"; then
		pass "kyok $c --output json parses"
	else
		fail "kyok $c --output json does not parse: $j"
	fi
done
expect_eq "thrhlds json: 2/2 on both" \
	"$("$KYOK" tke cryptounit-thrhlds --output json | jq -r '[.units[] | "\(.signature_threshold)/\(.revocation_threshold)"] | join(",")')" \
	"2/2,2/2"
expect_eq "mk json: the VP on both" \
	"$("$KYOK" tke cryptounit-mk --output json | jq -r '[.units[].current_mk.vp] | unique | join(",")')" "$VP"
expect_eq "compare json: identical" \
	"$("$KYOK" tke cryptounit-compare --output json | jq -r '"\(.identical) \(.differences | length)"')" "true 0"
expect_eq "admins json: 3 per unit" \
	"$("$KYOK" tke cryptounit-admins --output json | jq -r '[.units[].admins | length] | join(",")')" "3,3"
expect_eq "cryptounits json: both selected" \
	"$("$KYOK" tke cryptounits --output json | jq -r '[.units[].selected] | join(",")')" "true,true"
expect_eq "status json: VP of both units" \
	"$("$KYOK" status --output json | jq -r '[.units[].state.current_mk.vp] | unique | join(",")')" "$VP"

# ---- a unit down in the middle of a command ------------------------------------------------
expect_ok "sigkey-add dave" "$KYOK" tke sigkey-add --name dave --password-file "$(newpw dave)"
pid2=$(cat "$KYOK_INSTANCE/unit-2/pid")
kill "$pid2"
wait_gone "$pid2"
before1=$(unit_state 1)
pw_args alice bob
run_rc "$KYOK" tke cryptounit-admin-add --sigkey 4 "${PWARGS[@]}"
if [ $rc -eq 0 ]; then
	fail "admin-add with unit 2 down exits 0: $out"
else
	pass "admin-add with unit 2 down: exit $rc"
fi
expect_match "... unit 1 changed" "^1 +zone-1 +changed" "$out"
expect_match "... unit 2 unreachable" "^2 +zone-2 +unreachable" "$out"
expect_match "... says 1 of 2" "changed 1 of 2 crypto units" "$out"
expect_match "... says to re-run" "re-run the command" "$out"
expect_eq "unit 1 has dave now" "$(unit_state 1 | jq -r '[.admins[].name] | index("dave") != null')" true
expect_eq "unit 1 counter moved by one" "$(unit_counter 1)" "$(($(jq -r .next_counter <<<"$before1") + 1))"
expect_ok "kyok up restarts unit 2" "$KYOK" up
expect_eq "unit 2 back without dave" "$(unit_state 2 | jq -r '[.admins[].name] | index("dave") != null')" false
pw_args alice bob
run_rc "$KYOK" tke cryptounit-admin-add --sigkey 4 "${PWARGS[@]}"
expect_eq "re-run exits 0" "$rc" 0
expect_match "... unit 1 unchanged" "^1 +zone-1 +unchanged: administrator 'dave' already installed" "$out"
expect_match "... unit 2 changed" "^2 +zone-2 +changed" "$out"
expect_eq "both units: 4 administrators" \
	"$(both_states | jq -r '.admins | length' | tr '\n' ' ')" "4 4 "
expect_eq "compare: identical again" \
	"$("$KYOK" tke cryptounit-compare --output json | jq -r .identical)" true

# ---- mk-load inputs refused before anything is sent -------------------------------------------
# A valid load would be parts 1,2 (dora, eve: another key than the current one), 2 signatures.
expect_ok "select alice, bob" "$KYOK" tke sigkey-sel --sigkeys 1,2
# shellcheck disable=SC2054 # 1,2 is one argument
LOAD2=(tke cryptounit-mk-load --parts 1,2)
P1=$(jq -r '.keyparts[0].file' <<<"$mks")
cp -p "$P1" "$T_DIR/p1.saved"
# restore_p1: puts part 1's file back, with its time (parts are numbered by file time).
restore_p1() { cp -p "$T_DIR/p1.saved" "$P1"; }

pw_args part-eve part-eve alice bob
expect_refused_cli "mk-load: wrong password for a key part" \
	"key part 'part of dora' \(.*\): wrong password: nothing was sent" 3 \
	"$KYOK" "${LOAD2[@]}" "${PWARGS[@]}"
pw_args part-dora part-eve alice alice
expect_refused_cli "mk-load: wrong password for a signature key" \
	"signature key 'bob': wrong password" 3 \
	"$KYOK" "${LOAD2[@]}" "${PWARGS[@]}"

# One ciphertext byte flipped (the last byte of the encrypted content, inside the part).
flip_ct() {
	local f=$1 o hl l
	read -r o hl l < <(sed -n '/^-----BEGIN CMS-----$/,$p' "$f" | openssl asn1parse -inform PEM |
		sed -n 's/^ *\([0-9]*\):d=[0-9]* *hl=\([0-9]*\) *l= *\([0-9]*\) prim: cont \[ 0 \].*/\1 \2 \3/p' |
		tail -n 1)
	FLIP_AT=$((o + hl + l - 1)) perl -0777 -MMIME::Base64 -i -pe '
		s{(-----BEGIN CMS-----\n)(.*?)(-----END CMS-----\n)}{
			my ($b, $e, $der) = ($1, $3, decode_base64($2));
			substr($der, $ENV{FLIP_AT}, 1) ^= "\x01";
			(my $enc = encode_base64($der, "")) =~ s/(.{1,64})/$1\n/g;
			$b . $enc . $e
		}se' "$f"
	touch -r "$T_DIR/p1.saved" "$f"
}
flip_ct "$P1"
if cmp -s "$P1" "$T_DIR/p1.saved"; then fail "flip_ct did not change the file"; fi
expect_eq "tampered part keeps its header" \
	"$(sed '/^-----BEGIN CMS-----$/q' "$P1")" "$(sed '/^-----BEGIN CMS-----$/q' "$T_DIR/p1.saved")"
pw_args part-dora part-eve alice bob
expect_refused_cli "mk-load: a ciphertext byte flipped" \
	"key part 'part of dora' \(.*\): file is damaged or was tampered with: nothing was sent" 3 \
	"$KYOK" "${LOAD2[@]}" "${PWARGS[@]}"
restore_p1

sed -i 's/^description: part of dora$/description: part of dora (v2)/' "$P1"
touch -r "$T_DIR/p1.saved" "$P1"
pw_args part-dora part-eve alice bob
expect_refused_cli "mk-load: description altered" \
	"key part 'part of dora \(v2\)' \(.*\): readable metadata does not match the encrypted copy: file was altered: nothing was sent" 3 \
	"$KYOK" "${LOAD2[@]}" "${PWARGS[@]}"
restore_p1
vp1=$(sed -n 's/^vp: //p' "$P1")
sed -i "s/^vp: .*/vp: $(printf '%s' "$vp1" | tr '0-9a-f' '1-9a-f0')/" "$P1"
touch -r "$T_DIR/p1.saved" "$P1"
pw_args part-dora part-eve alice bob
expect_refused_cli "mk-load: vp line altered" "readable metadata does not match the encrypted copy" 3 \
	"$KYOK" "${LOAD2[@]}" "${PWARGS[@]}"
restore_p1

# A file that is not a key part file in place of part 1: the workspace listing skips it with a
# warning (parts are renumbered: 1 is eve's now, 2 frank's), and a load naming 3 parts fails.
cp "$(sigkey_file alice)" "$P1"
touch -r "$T_DIR/p1.saved" "$P1"
run_rc "$KYOK" tke mks --output json
expect_match "mks warns about the file that is not a key part" \
	"warning: $P1: not a kyok key part file: skipped" "$out"
expect_eq "mks lists the 2 others" "$(grep -v '^warning' <<<"$out" | jq -r '[.keyparts[].description] | join(",")')" \
	"part of eve,part of frank"
pw_args part-dora part-eve part-frank alice bob carol
expect_refused_cli "mk-load naming 3 parts with one not a key part file" \
	"--parts: wrong usage: number 3 out of range: use 1 to 2" 2 \
	"$KYOK" tke cryptounit-mk-load --parts 1,2,3 "${PWARGS[@]}"
restore_p1

expect_ok "select alice only" "$KYOK" tke sigkey-sel --sigkeys 1
pw_args part-dora part-eve alice
expect_refused_cli "mk-load: 2 parts, 1 signer selected" \
	"not enough administrator signatures: loading 2 key parts needs 2 signatures \(one per key part\), and 1 signature key is selected: select more with 'kyok tke sigkey-sel'" 4 \
	"$KYOK" "${LOAD2[@]}" "${PWARGS[@]}"
pw_args part-dora alice
expect_refused_cli "mk-load: --parts 1 (a master key needs 2 to 8 parts)" "a master key needs 2 to 8 key parts: 1 chosen" 3 \
	"$KYOK" tke cryptounit-mk-load --parts 1 "${PWARGS[@]}"
expect_ok "select alice, bob" "$KYOK" tke sigkey-sel --sigkeys 1,2

# ---- set-immediate needs a confirmation ---------------------------------------------------
pw_args part-dora part-eve alice bob
expect_ok "mk-load parts 1,2" "$KYOK" "${LOAD2[@]}" "${PWARGS[@]}"
pw_args alice bob
expect_ok "mk-commit" "$KYOK" tke cryptounit-mk-commit "${PWARGS[@]}"
before=$(both_states)
rc=0
pw_args alice bob
out=$("$KYOK" tke cryptounit-mk-setimm "${PWARGS[@]}" </dev/null 2>&1) || rc=$?
expect_eq "setimm without --yes and no terminal: exit 2" "$rc" 2
expect_match "... cancelled, use --yes" "cancelled: no terminal to ask for confirmation: use --yes" "$out"
expect_match "... nothing sent" "nothing was sent to any crypto unit" "$out"
if [ "$before" = "$(both_states)" ]; then pass "... both units unchanged"; else fail "setimm without --yes changed a unit"; fi
expect_eq "new key still FULL COMMITTED on both" \
	"$(both_states | jq -r .new_mk.state | sort -u)" "FULL COMMITTED"

# ---- zeroize -------------------------------------------------------------------------------
rc=0
pw_args alice
out=$("$KYOK" tke cryptounit-zeroize "${PWARGS[@]}" </dev/null 2>&1) || rc=$?
expect_eq "zeroize without --yes and no terminal: exit 2, nothing sent" \
	"$rc $(grep -c 'nothing was sent' <<<"$out")" "2 1"
pw_args alice bob
expect_ok "zeroize --yes" "$KYOK" tke cryptounit-zeroize --yes "${PWARGS[@]}"
expect_eq "both units zeroized: imprint, no admin, thresholds 0/0, registers empty" \
	"$(both_states | jq -r '[.imprint, (.admins | length), .signature_threshold, .revocation_threshold, .new_mk.state, .current_mk.state] | join(" ")' | sort -u)" \
	"true 0 0 0 EMPTY EMPTY"
pw_args alice
expect_rerun "zeroize again" "$KYOK" tke cryptounit-zeroize --yes "${PWARGS[@]}"
expect_match "... already zeroized" "already zeroized" "$out"
expect_eq "status says imprint on both" \
	"$("$KYOK" status --output json | jq -r '[.units[].state.imprint] | join(",")')" "true,true"

finish
