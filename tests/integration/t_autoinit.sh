#!/usr/bin/env bash
# auto-init: refuses unless every selected unit answers and is in imprint mode; initialises
# three units with new administrators; a re-run says what to do instead.
. "$(dirname "$0")/helpers.sh"
setup

"$KYOK" up --dir "$KYOK_INSTANCE" --units 3 >/dev/null 2>&1
"$KYOK" tke cryptounit-add --units 1,2,3 >/dev/null 2>&1
pa=$(newpw ann)
pb=$(newpw ben)
pc=$(newpw cid)

kill "$(cat "$KYOK_INSTANCE/unit-3/pid")"
sleep 0.3
expect_fail "a unit down: nothing done" "does not answer; nothing was done" \
	"$KYOK" tke auto-init --signature 2 --revocation 1 --new-admins ann,ben \
	--password-file "$pa" --password-file "$pb"
expect_eq "no key file created" "$(ls "$KYOK_TKE_FILES/sigkeys" 2>/dev/null | wc -l)" 0
"$KYOK" up >/dev/null 2>&1

expect_fail "threshold above admins" "threshold above" \
	"$KYOK" tke auto-init --signature 3 --revocation 1 --new-admins ann,ben
printf 'short\n' >"$T_DIR/pw/short"
expect_fail "weak password: nothing kept" "too short" \
	"$KYOK" tke auto-init --signature 1 --revocation 1 --new-admins ann \
	--password-file "$T_DIR/pw/short"
expect_eq "still no key file" "$(ls "$KYOK_TKE_FILES/sigkeys" 2>/dev/null | wc -l)" 0

out=$("$KYOK" tke auto-init --signature 2 --revocation 1 --new-admins ann,ben,cid \
	--password-file "$pa" --password-file "$pb" --password-file "$pc" --output json)
expect_eq "auto-init: same current VP on 3 units" "$(json .current_vp_same <<<"$out")" true
expect_eq "auto-init: 9 steps" "$(json '.steps | length' <<<"$out")" 9
expect_eq "auto-init: three keys created" "$(json '.created_sigkeys | length' <<<"$out")" 3
expect_eq "thresholds 2/1 everywhere" \
	"$(json '[.units[] | "\(.signature_threshold)/\(.revocation_threshold)"] | unique | join(",")' <<<"$out")" \
	"2/1"
expect_fail "re-run: already initialised" "already initialised" \
	"$KYOK" tke auto-init --signature 2 --revocation 1 --sigkeys 1,2

finish
