#!/usr/bin/env bash
# Signing across workstations: a command prepared in one workspace, signed in two others
# (each holding one administrator's key), submitted from the first. Replays and stale
# bundles are refused with "prepare the command again".
. "$(dirname "$0")/helpers.sh"
setup

"$KYOK" up --dir "$KYOK_INSTANCE" >/dev/null 2>&1
pa=$(newpw alice)
pb=$(newpw bob)
WA="$T_DIR/ws-alice"
WB="$T_DIR/ws-bob"
B="$T_DIR/bundles"
mkdir -p "$B"

for w in "$WA" "$WB" "$KYOK_TKE_FILES"; do
	KYOK_TKE_FILES=$w "$KYOK" tke cryptounit-add --units 1,2 >/dev/null 2>&1
done
KYOK_TKE_FILES=$WA "$KYOK" tke sigkey-add --name alice --password-file "$pa" >/dev/null
KYOK_TKE_FILES=$WB "$KYOK" tke sigkey-add --name bob --password-file "$pb" >/dev/null
for w in "$WA" "$WB"; do
	KYOK_TKE_FILES=$w "$KYOK" tke sigkey-sel --sigkeys 1 >/dev/null
	# Imprint mode: each administrator installs themself, no signature needed.
	expect_ok "admin-add from $(basename "$w") in imprint mode" \
		env KYOK_TKE_FILES="$w" "$KYOK" tke cryptounit-admin-add --sigkey 1
done

expect_ok "prepare thresholds 2/2" "$KYOK" tke cryptounit-thrhld-set --signature 2 \
	--revocation 2 --prepare "$B/thr.bundle"
expect_fail "prepare refuses to overwrite a bundle" "already exists" \
	"$KYOK" tke cryptounit-thrhld-set --signature 2 --revocation 2 --prepare "$B/thr.bundle"
expect_eq "bundle holds one block per unit" "$(grep -c 'BEGIN CMS' "$B/thr.bundle")" 2
expect_fail "unsigned bundle: nothing sent" "0 of 2 signatures" \
	"$KYOK" tke cmd-submit "$B/thr.bundle"
expect_ok "alice signs" env KYOK_TKE_FILES="$WA" "$KYOK" tke cmd-sign "$B/thr.bundle" \
	--password-file "$pa"
expect_fail "one of two signatures: nothing sent" "1 of 2 signatures" \
	"$KYOK" tke cmd-submit "$B/thr.bundle"
expect_ok "bob signs" env KYOK_TKE_FILES="$WB" "$KYOK" tke cmd-sign "$B/thr.bundle" \
	--password-file "$pb"
expect_eq "cmd-show lists both signers" \
	"$("$KYOK" tke cmd-show "$B/thr.bundle" --output json | json '[.commands[].signers | length] | join(",")')" \
	"2,2"
expect_ok "openssl verifies the first block" \
	openssl cms -verify -noverify -inform PEM -in "$B/thr.bundle" -out /dev/null
expect_ok "submit" "$KYOK" tke cmd-submit "$B/thr.bundle"
expect_eq "units out of imprint mode" \
	"$("$KYOK" tke cryptounit-thrhlds --output json | json '[.. | .signature_threshold? // empty] | unique | join(",")')" \
	"2"
expect_fail "replayed bundle refused" "prepare the command again" \
	"$KYOK" tke cmd-submit "$B/thr.bundle"

# Two bundles prepared at the same counter: the second one submitted is stale.
"$KYOK" tke cryptounit-thrhld-set --signature 2 --revocation 1 --prepare "$B/a.bundle" >/dev/null
"$KYOK" tke cryptounit-thrhld-set --signature 1 --revocation 1 --prepare "$B/b.bundle" >/dev/null
for f in a b; do
	KYOK_TKE_FILES=$WA "$KYOK" tke cmd-sign "$B/$f.bundle" --password-file "$pa" >/dev/null 2>&1
	KYOK_TKE_FILES=$WB "$KYOK" tke cmd-sign "$B/$f.bundle" --password-file "$pb" >/dev/null 2>&1
done
expect_ok "first bundle submitted" "$KYOK" tke cmd-submit "$B/a.bundle"
expect_fail "stale bundle: prepare again" "wrong transaction counter.*prepare the command again" \
	"$KYOK" tke cmd-submit "$B/b.bundle"
# A key that is no administrator: cmd-sign refuses it where it can read the units (a unit
# refuses the whole command with such a signature on it); elsewhere cmd-submit names the fix.
WC="$T_DIR/ws-mallory"
pm=$(newpw mallory)
KYOK_TKE_FILES=$WC "$KYOK" tke cryptounit-add --units 1,2 >/dev/null 2>&1
KYOK_TKE_FILES=$WC "$KYOK" tke sigkey-add --name mallory --password-file "$pm" >/dev/null
KYOK_TKE_FILES=$WC "$KYOK" tke sigkey-sel --sigkeys 1 >/dev/null
"$KYOK" tke cryptounit-thrhld-set --signature 1 --revocation 1 --prepare "$B/c.bundle" >/dev/null
sum=$(sha256sum <"$B/c.bundle")
expect_fail "cmd-sign by a non-administrator: refused before the password" \
	"mallory: .*signature key 1 is not an administrator of crypto unit 1 .*sigkey-sel.*nothing was signed" \
	env KYOK_TKE_FILES="$WC" "$KYOK" tke cmd-sign "$B/c.bundle" --password-file "$pm"
expect_eq "... the bundle is unchanged" "$(sha256sum <"$B/c.bundle")" "$sum"
mkdir -p "$T_DIR/elsewhere"
expect_ok "cmd-sign where no instance is reachable signs (the units decide)" \
	env KYOK_TKE_FILES="$WC" KYOK_INSTANCE="$T_DIR/elsewhere" "$KYOK" tke cmd-sign \
	"$B/c.bundle" --password-file "$pm"
grep -q "checked when the bundle is submitted" <<<"$out" &&
	pass "... and says the administrators are checked at submit" ||
	fail "... no note that the administrators are checked at submit: $out"
expect_fail "submit with a non-administrator's signature: the remedy named" \
	"not an administrator of this unit.*prepare the command again.*cryptounit-admins" \
	"$KYOK" tke cmd-submit "$B/c.bundle"
expect_fail "garbage is not a bundle" "not a kyok signed command file" \
	"$KYOK" tke cmd-show /etc/hostname

finish
