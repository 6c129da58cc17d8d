#!/usr/bin/env bash
# Split knowledge of the master key, enforced by the unit. Each attack on mk-load is built
# here with plain openssl (parts sealed to the unit's importer key, the command signed by one
# administrator per part) and posted with curl: the CLI refuses some of these itself, the unit
# must refuse all of them, each with its own error code, its sealed state file and its state
# left byte for byte as they were. Then what the unit records of the parts (their VPs) and
# how the CLI shows it, and the CLI's own conveniences (cmd-show, mk-add --value).
. "$(dirname "$0")/helpers.sh"
setup

"$KYOK" up >/dev/null
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null
for who in alice bob carol dave; do
	"$KYOK" tke sigkey-add --name "$who" --password-file "$(newpw "$who")" >/dev/null
done
for n in 1 2 3 4; do "$KYOK" tke cryptounit-admin-add --sigkey "$n" >/dev/null; done
"$KYOK" tke sigkey-sel --sigkeys 1,2 >/dev/null
"$KYOK" tke cryptounit-thrhld-set --signature 2 --revocation 2 \
	--password-file "$T_DIR/pw/alice" --password-file "$T_DIR/pw/bob" >/dev/null
C=$T_DIR/c
mkdir -p "$C"
SEALED=$KYOK_INSTANCE/unit-1/data/state.sealed
[ -f "$SEALED" ] || fail "no sealed state file at $SEALED"
curl -fsS "$(unit_url 1)/v1/admin/importer" >"$C/importer.pem"
SIGNERS=(alice bob carol dave)

# run_rc CMD...: runs CMD, its output in $out and its exit status in $rc.
# expect_out DESC PATTERN: a line of $out matches PATTERN (grep -E).
expect_out() {
	if grep -qE -- "$2" <<<"$out"; then pass "$1"; else fail "$1: no line matches /$2/: $out"; fi
}
# expect_not_out DESC PATTERN: no line of $out matches PATTERN (grep -E).
expect_not_out() {
	if grep -qE -- "$2" <<<"$out"; then fail "$1: a line matches /$2/: $out"; else pass "$1"; fi
}

# part NAME: a fresh random 32-byte part in $C/NAME.
part() { head -c 32 /dev/urandom >"$C/$1"; }
# xor OUT IN...: OUT = XOR of the IN parts (32 bytes each), all in $C.
xor() {
	local out=$1
	shift
	(cd "$C" && perl -e 'my $k = "\0" x 32; for my $f (@ARGV) {
		open my $h, "<:raw", $f or die "$f: $!"; local $/; $k ^= <$h>; } print $k' "$@") \
		>"$C/$out"
}
# vp_of FILE: SHA-256(0x01 || the 32 bytes in FILE), hex.
vp_of() { (printf '\001'; cat "$1") | openssl dgst -sha256 -r | cut -c1-64; }
# seal PART OUT: PART sealed to unit 1's importer key (a fresh envelope every time).
seal() {
	openssl cms -encrypt -binary -aes-256-gcm -recip "$C/importer.pem" \
		-keyopt ecdh_kdf_md:sha256 -in "$C/$1" -outform DER -out "$C/$2"
}
# load_der OUT ENVELOPE...: an mk-load of those envelopes for unit 1, signed by one
# administrator per part.
load_der() {
	local out=$1 parts='[]' e
	shift
	for e in "$@"; do
		parts=$(jq -c --arg e "$(base64 -w0 "$C/$e")" '. + [$e]' <<<"$parts")
	done
	cmd_json 1 mk-load "$(jq -n --argjson p "$parts" '{parts: $p}')" >"$C/$out.json"
	sign_cmd "$C/$out.json" "$C/$out" "${SIGNERS[@]:0:$#}"
}
# refused DESC SLUG DETAIL DER: unit 1 refuses with SLUG, a detail matching DETAIL (grep -E),
# and its sealed state file and its state are byte for byte what they were.
refused() {
	local desc=$1 slug=$2 want=$3 der=$4 before after sum_before sum_after reply code detail
	sum_before=$(sha256sum <"$SEALED")
	before=$(unit_state 1)
	reply=$(post_cmd 1 "$C/$der")
	code=$(jq -r '.error.code // "none"' <<<"$reply")
	detail=$(jq -r '.error.detail // ""' <<<"$reply")
	after=$(unit_state 1)
	sum_after=$(sha256sum <"$SEALED")
	if [ "$code" != "$slug" ]; then
		fail "$desc: unit 1 answered '$code', want '$slug': $reply"
	elif ! grep -qE -- "$want" <<<"$detail"; then
		fail "$desc: detail '$detail' does not match /$want/"
	elif [ "$before" != "$after" ]; then
		fail "$desc: refused but the state of unit 1 changed"
	elif [ "$sum_before" != "$sum_after" ]; then
		fail "$desc: refused but the sealed state file of unit 1 changed"
	else
		pass "$desc ($slug: $detail)"
	fi
}

part A
part B
part C
zeros() { head -c 32 /dev/zero >"$C/$1"; }
zeros Z
A_VP=$(vp_of "$C/A")

# ---- the attacks ------------------------------------------------------------------------------
# [A, A]: each copy sealed on its own (different bytes), so only the unit can see it.
seal A a1.der
seal A a2.der
cmp -s "$C/a1.der" "$C/a2.der" && fail "two envelopes of one part are identical"
load_der l.der a1.der a2.der
refused "parts [A, A]: the all-zero key" key-part-duplicate \
	"key parts 1 and 2 of 2 are the same part \(VP ${A_VP:0:16}\.\.\.\)" l.der
# [A, A] with one envelope twice: the same refusal.
load_der l.der a1.der a1.der
refused "parts [A, A], one envelope twice" key-part-duplicate "key parts 1 and 2 of 2" l.der
# [A, B, A]: the key would be B, known to B's owner alone.
seal B b.der
load_der l.der a1.der b.der a2.der
refused "parts [A, B, A]: the key would be part B" key-part-duplicate \
	"key parts 1 and 3 of 3 are the same part" l.der
# An all-zero part.
seal Z z.der
load_der l.der a1.der z.der
refused "an all-zero part" key-part-zero "key part 2 of 2 is all zero" l.der
# [A, B, A^B]: three different parts that cancel out.
xor AB A B
seal AB ab.der
load_der l.der a1.der b.der ab.der
refused "parts [A, B, A^B] XOR to zero" master-key-zero \
	"the 3 key parts cancel out: together they give an all-zero key" l.der
# [B, C, A, B^C]: the key would be A, known to A's owner alone.
xor BC B C
seal C c.der
seal BC bc.der
load_der l.der b.der c.der a1.der bc.der
refused "parts [B, C, A, B^C]: the key equals part A" master-key-equals-part \
	"the master key would equal key part 3 \(VP ${A_VP:0:16}\.\.\.\): the other 3 parts cancel out" \
	l.der
expect_eq "after the refusals: new register EMPTY, no part VPs" \
	"$(unit_state 1 | jq -c '[.new_mk.state, .new_mk.part_vps, .next_counter]')" \
	"[\"EMPTY\",[],$(unit_counter 1)]"

# ---- a good load: the unit records each part's VP ----------------------------------------------
xor KEY A B C
load_der l.der a1.der b.der c.der
expect_accepted "parts [A, B, C] load" 1 "$C/l.der"
want_vps=$(jq -cn --arg a "$A_VP" --arg b "$(vp_of "$C/B")" --arg c "$(vp_of "$C/C")" '[$a, $b, $c]')
expect_eq "new register: the key's VP" "$(unit_state 1 | jq -r .new_mk.vp)" "$(vp_of "$C/KEY")"
expect_eq "new register: the 3 parts' VPs, in load order" \
	"$(unit_state 1 | jq -c .new_mk.part_vps)" "$want_vps"
run_rc "$KYOK" tke cryptounit-mk
expect_eq "cryptounit-mk: exit 0" "$rc" 0
expect_out "cryptounit-mk lists part 2's VP under unit 1's new register" \
	"^1 +[^ ]+ +  key part 2 +$(vp_of "$C/B")$"
expect_out "cryptounit-mk: unit 2's new register is empty" "^2 +[^ ]+ +NEW +EMPTY +-$"
expect_not_out "cryptounit-mk: no part rows under unit 2's empty registers" "^2 .*key part"
expect_eq "cryptounit-mk --output json: part_vps of unit 1's new register" \
	"$("$KYOK" tke cryptounit-mk --output json | jq -c '.units[] | select(.number==1) | .new_mk.part_vps')" \
	"$want_vps"
run_rc "$KYOK" tke cryptounit-compare
expect_eq "cryptounit-compare: exit 0" "$rc" 0
expect_out "cryptounit-compare shows the parts and that unit 2 lacks them" \
	"^new master key parts +${A_VP:0:8} $(vp_of "$C/B" | cut -c1-8) $(vp_of "$C/C" | cut -c1-8) +- +DIFFERENT$"
expect_eq "cryptounit-compare --output json: difference named, part VPs in the state" \
	"$("$KYOK" tke cryptounit-compare --output json | jq -c '[(.differences | index("new master key parts") != null), (.units[0].state.new_mk.part_vps | length)]')" \
	"[true,3]"

# commit keeps them, set-immediate moves them to the current register.
vp=$(vp_of "$C/KEY")
cmd_json 1 mk-commit "{\"vp\": \"$vp\"}" >"$C/m.json"
sign_cmd "$C/m.json" "$C/m.der" alice bob
expect_accepted "commit" 1 "$C/m.der"
cmd_json 1 mk-setimm "{\"vp\": \"$vp\"}" >"$C/m.json"
sign_cmd "$C/m.json" "$C/m.der" alice
expect_accepted "set-immediate" 1 "$C/m.der"
expect_eq "current register has the part VPs, the new register none" \
	"$(unit_state 1 | jq -c '[.current_mk.part_vps, .new_mk.part_vps]')" "[$want_vps,[]]"
# They survive a restart (they are in the sealed state).
"$KYOK" down >/dev/null
"$KYOK" up >/dev/null
expect_eq "after a restart: the current register's part VPs" \
	"$(unit_state 1 | jq -c .current_mk.part_vps)" "$want_vps"
# A generated key has none, and says so.
cmd_json 1 mk-generate >"$C/g.json"
sign_cmd "$C/g.json" "$C/g.der" alice bob
expect_accepted "mk-generate" 1 "$C/g.der"
expect_eq "generated key: no part VPs" "$(unit_state 1 | jq -c .new_mk.part_vps)" "[]"
run_rc "$KYOK" tke cryptounit-mk
expect_out "cryptounit-mk says a generated key has no parts" \
	"^1 +[^ ]+ +  key parts +none: generated or imported +-$"

# ---- the CLI: cmd-show flags a copied envelope before anyone signs ---------------------------
load_der dup.der a1.der b.der a1.der
openssl cms -cmsout -inform DER -in "$C/dup.der" -outform PEM -out "$C/dup.bundle"
run_rc "$KYOK" tke cmd-show "$C/dup.bundle"
expect_eq "cmd-show of a bundle with a copied envelope: exit 0" "$rc" 0
expect_out "cmd-show warns: key parts 1 and 3 are the same envelope" \
	"WARNING: +key parts 1 and 3 are the same envelope \(identical bytes\)"
expect_eq "cmd-show --output json: the warning" \
	"$("$KYOK" tke cmd-show "$C/dup.bundle" --output json | jq -r '.commands[0].warnings[0]')" \
	"key parts 1 and 3 are the same envelope (identical bytes): they cancel out, and the unit refuses the load; do not sign this command"
load_der ok.der a1.der b.der
openssl cms -cmsout -inform DER -in "$C/ok.der" -outform PEM -out "$C/ok.bundle"
run_rc "$KYOK" tke cmd-show "$C/ok.bundle"
expect_not_out "cmd-show: no warning for distinct envelopes" WARNING

# ---- the CLI: mk-add --value refuses constant values -------------------------------------------
nparts() { find "$KYOK_TKE_FILES/keyparts" -name '*.keypart' 2>/dev/null | wc -l; }
before=$(nparts)
for v in "$(printf '0%.0s' $(seq 64))" "$(printf 'ab%.0s' $(seq 32))"; do
	printf '%s\n' "$v" >"$C/value"
	run_rc "$KYOK" tke mk-add --value --value-file "$C/value" --description weak \
		--password-file "$(newpw weak)"
	expect_eq "mk-add --value ${v:0:8}...: exit 3" "$rc" 3
	expect_out "mk-add --value ${v:0:8}... refused as one byte repeated" \
		"^error: key part value: key part value is one byte repeated"
done
expect_eq "no key part file written" "$(nparts)" "$before"
printf '%s\n' "$(xxd -p -c 64 "$C/A")" >"$C/value"
expect_ok "mk-add --value of a random value works" "$KYOK" tke mk-add --value \
	--value-file "$C/value" --description good --password-file "$(newpw good)"

finish
