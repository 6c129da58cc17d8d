#!/usr/bin/env bash
# auto-init: refuses unless every selected unit answers and is in imprint mode; asked in a
# terminal, it asks who the administrators are before the thresholds and takes the defaults
# shown for empty answers; initialises three units with new administrators; a re-run says
# what to do instead.
. "$(dirname "$0")/helpers.sh"
setup
. "$(dirname "$0")/tty.sh"

"$KYOK" up --dir "$KYOK_INSTANCE" --units 3 >/dev/null 2>&1
"$KYOK" tke cryptounit-add --units 1,2,3 >/dev/null 2>&1
pa=$(newpw ann)
pb=$(newpw ben)
pc=$(newpw cid)

pid3=$(cat "$KYOK_INSTANCE/unit-3/pid")
kill "$pid3"
wait_gone "$pid3"
expect_fail "a unit down: nothing done" "does not answer; nothing was done" \
	"$KYOK" tke auto-init --signature 2 --revocation 1 --new-admins ann,ben \
	--password-file "$pa" --password-file "$pb"
expect_eq "no key file created" "$(ls "$KYOK_TKE_FILES/sigkeys" 2>/dev/null | wc -l)" 0
"$KYOK" up >/dev/null 2>&1

# In a terminal: number of administrators, their names, then the thresholds (bounded by
# that number), each with its default taken by Enter; Ctrl-C at the first password.
if tty_start KYOK_TKE_FILES="$KYOK_TKE_FILES" KYOK_INSTANCE="$KYOK_INSTANCE"; then
	type_line "$KYOK tke auto-init"
	wait_n 1 "^number of administrators \(1-8\) \[1\]: ?$" && type_line ""
	wait_n 1 "^name of new administrator 1 of 1: ?$" && type_line "ann"
	wait_n 1 "^signature threshold \(1-1\) \[1\]: ?$" && type_line ""
	wait_n 1 "^revocation threshold \(1-1\) \[1\]: ?$" && type_line ""
	wait_n 1 "^password for the new signature key of 'ann'" &&
		pass "interactive auto-init: administrators first, then thresholds, Enter takes the defaults"
	"${TM[@]}" send-keys -t t C-c
	type_line 'echo "rc=$?"'
	wait_n 1 "^rc=130$" && pass "... Ctrl-C at the password: exit 130"
	expect_eq "... no key file created" "$(ls "$KYOK_TKE_FILES/sigkeys" 2>/dev/null | wc -l)" 0
	expect_eq "... unit 1 still in imprint mode" "$(unit_state 1 | jq -r .imprint)" true
fi

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
