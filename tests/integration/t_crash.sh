#!/usr/bin/env bash
# kill -9 of a crypto unit while it runs commands, many times, at random moments: after each
# restart the unit's sealed state opens and is either the state before or after the command
# that was running, never a mix. Invariant used: commands alternate admin-add carol /
# admin-rm carol, so carol is installed exactly when the transaction counter is odd.
. "$(dirname "$0")/helpers.sh"
setup
ROUNDS=${KYOK_CRASH_ROUNDS:-25}

"$KYOK" up >/dev/null
"$KYOK" tke cryptounit-add --units 1 >/dev/null
for who in alice carol; do
	"$KYOK" tke sigkey-add --name "$who" --password-file "$(newpw "$who")" >/dev/null
done
"$KYOK" tke cryptounit-admin-add --sigkey 1 >/dev/null
C=$T_DIR/c
mkdir -p "$C"
# alice signs every command (an admin's signature is accepted in imprint mode, where none
# is needed): her key is decrypted once into the test's private dir to sign fast.
openssl pkey -in "$(sigkey_file alice)" -passin "file:$T_DIR/pw/alice" -out "$C/alice.key"
openssl x509 -in "$(sigkey_file alice)" -out "$C/alice.crt"
carol_cert=$(jq -n --rawfile c <(openssl x509 -in "$(sigkey_file carol)") '{cert: $c}')
carol_ski=$(openssl x509 -in "$(sigkey_file carol)" -noout -ext subjectKeyIdentifier |
	tail -1 | tr -d ' :' | tr 'A-F' 'a-f')

# One command: the next in the alternation, at the unit's counter.
next_command() {
	local counter=$1
	if [ $((counter % 2)) -eq 1 ]; then
		cmd_json 1 admin-add "$carol_cert" "$counter"
	else
		cmd_json 1 admin-rm "{\"ski\": \"$carol_ski\"}" "$counter"
	fi >"$C/cmd.json"
	openssl cms -sign -binary -nodetach -md sha512 -keyid -in "$C/cmd.json" \
		-signer "$C/alice.crt" -inkey "$C/alice.key" -outform DER -out "$C/cmd.der"
	imprint_claim "$C/cmd.der" >"$C/cmd.claim"
}

# The counter is 1 now (alice was added at 0): one round trip brings it to 3, carol absent.
next_command 1 && post_cmd 1 "$C/cmd.der" >/dev/null
next_command 2 && post_cmd 1 "$C/cmd.der" >/dev/null

check_invariant() {
	local st c has
	st=$(unit_state 1) || { fail "round $1: unit 1 does not answer after restart"; return; }
	c=$(jq -r .next_counter <<<"$st")
	has=$(jq -r '[.admins[].name] | index("carol") != null' <<<"$st")
	if { [ $((c % 2)) -eq 0 ] && [ "$has" = true ]; } ||
		{ [ $((c % 2)) -eq 1 ] && [ "$has" = false ]; }; then
		return 0
	fi
	fail "round $1: counter $c but carol installed=$has: torn state"
}

# Signs the next 8 commands ahead, so that the client below only posts: commands then
# arrive back to back and the kill lands inside one (its state write included) most rounds.
presign() {
	local c=$1 i
	for i in $(seq 0 7); do
		next_command $((c + i))
		mv "$C/cmd.der" "$C/seq-$i.der"
		mv "$C/cmd.claim" "$C/seq-$i.claim"
	done
}
hammer() {
	local i url
	url="$(unit_url 1)/v1/admin/command"
	for i in $(seq 0 7); do
		curl -sS -H "Kyok-Imprint-Claim: $(cat "$C/seq-$i.claim")" \
			--data-binary "@$C/seq-$i.der" "$url" >>"$C/replies" 2>&1 || true
		echo >>"$C/replies"
	done
}

total_before=$(unit_counter 1)
: >"$C/replies"
for round in $(seq "$ROUNDS"); do
	presign "$(unit_counter 1)"
	hammer &
	hpid=$!
	# Random moment: after 1 to 4 replies, then 0 to 19 ms into the next command.
	want=$(($(wc -l <"$C/replies") + 1 + RANDOM % 4))
	while [ "$(wc -l <"$C/replies")" -lt "$want" ] && kill -0 "$hpid" 2>/dev/null; do
		sleep 0.005
	done
	sleep "0.0$(printf '%02d' $((RANDOM % 20)))"
	kill -9 "$(cat "$KYOK_INSTANCE/unit-1/pid")"
	kill "$hpid" 2>/dev/null
	wait "$hpid" 2>/dev/null || true
	if ! "$KYOK" up >/dev/null 2>&1; then
		fail "round $round: unit 1 does not restart"
		tail -5 "$KYOK_INSTANCE/unit-1/unit.log" >&2
		break
	fi
	check_invariant "$round"
	if [ -n "${KYOK_CRASH_VERBOSE:-}" ]; then echo "round $round: counter $(unit_counter 1)" >&2; fi
done
total_after=$(unit_counter 1)
pass "$ROUNDS kill -9 rounds, $((total_after - total_before)) commands completed in between, state consistent after each restart"

# The CLI still works against the restarted unit, and the state file is the only one left.
expect_ok "status after the crashes" "$KYOK" status
expect_eq "no stray temporary state files" \
	"$(find "$KYOK_INSTANCE/unit-1/data" -name '*.tmp*' | wc -l)" 0
if [ -n "${KYOK_CRASH_VERBOSE:-}" ]; then sort "$C/replies" | uniq -c | sort -rn | head -5 >&2; fi
finish
