#!/usr/bin/env bash
# Master key rotation with key storage: a few hundred keys and wrapped data keys, a new master
# key from fresh key parts, set-immediate refused while records are under the old key,
# cryptounit-mk-rotate while the API serves (every request answered), every ciphertext still
# unwraps and the import token opens (same public key); a rotation resumed from a half-done
# state; zeroize crypto-shreds (the API says there is no master key); a different master key
# does not open the old records.
. "$(dirname "$0")/helpers.sh"
setup

N=${KYOK_ROTATE_KEYS:-200}

pwf() {
	local n
	for n in "$@"; do printf -- '--password-file\n%s\n' "$T_DIR/pw/$n"; done
}
both_states() { printf '%s\n%s\n' "$(unit_state 1)" "$(unit_state 2)"; }
AK="$KYOK_TKE_FILES/apikeys"
IID=""
# token NAME: an access token for API key file NAME.apikey, from unit 1.
token() {
	jq -j .apikey "$AK/$1.apikey" >"$T_DIR/$1.raw"
	curl -fsS --data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' \
		--data-urlencode "apikey@$T_DIR/$1.raw" "$(unit_url 1)/identity/token" |
		jq -r .access_token
}
# api N METHOD PATH [BODY]: the API of unit N with $TOK; prints the body, then the status.
api() {
	curl -sS -X "$2" -H "Authorization: Bearer $TOK" -H "Bluemix-Instance: $IID" \
		-H 'Content-Type: application/json' -H 'Prefer: return=representation' \
		${4:+--data-binary "$4"} -w '\n%{http_code}\n' "$(unit_url "$1")$3"
}
# batch_conf N METHOD: reads "PATH BODY" lines (BODY without spaces) on stdin, writes on
# stdout a curl config that sends them all to unit N (one connection, one process).
batch_conf() {
	awk -v url="${URLS[$1]}" -v m="$2" -v tok="$TOK" -v iid="$IID" '{
		body = $2; gsub(/"/, "\\\"", body)
		if (NR > 1) print "next"
		printf "url = \"%s%s\"\nrequest = \"%s\"\n", url, $1, m
		printf "header = \"Authorization: Bearer %s\"\nheader = \"Bluemix-Instance: %s\"\n", tok, iid
		print "header = \"Content-Type: application/json\""
		print "header = \"Prefer: return=representation\""
		printf "data-binary = \"%s\"\nwrite-out = \"\\n\"\n", body
	}'
}
# batch CONF: runs every request of CONF; the reply bodies, one a line.
batch() { curl -sS -K "$1" | grep -v '^$'; }
# unwrap_all N: every saved ciphertext through unit N; prints the number that failed.
unwrap_all() {
	awk '{printf "/api/v2/keys/%s/actions/unwrap {\"ciphertext\":\"%s\"}\n", $1, $2}' \
		"$T_DIR/wrapped" | batch_conf "$1" POST >"$T_DIR/unwrap.conf"
	batch "$T_DIR/unwrap.conf" | jq -r '.plaintext // "failed"' >"$T_DIR/unwrapped"
	awk '{print $3}' "$T_DIR/wrapped" | diff - "$T_DIR/unwrapped" | grep -c '^>' || true
}

# ---- an initialised instance with key storage --------------------------------------------
"$KYOK" up --dir "$KYOK_INSTANCE" --units 2 >/dev/null 2>&1
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null 2>&1
newpw ann >/dev/null
newpw ben >/dev/null
expect_ok "auto-init (2 administrators)" "$KYOK" tke auto-init --signature 1 --revocation 1 \
	--new-admins ann,ben $(pwf ann ben)
"$KYOK" tke sigkey-sel --sigkeys 1,2 >/dev/null 2>&1
expect_ok "apikey-create (Writer)" "$KYOK" tke apikey-create --name w --role Writer $(pwf ann ben)
IID=$(instance_id)
TOK=$(token w)
URLS=(none "$(unit_url 1)" "$(unit_url 2)")

# ---- key storage: N root keys, one wrapped data key each ---------------------------------
for i in $(seq 1 "$N"); do
	echo "/api/v2/keys {\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.key+json\",\"collectionTotal\":1},\"resources\":[{\"type\":\"application/vnd.ibm.kms.key+json\",\"name\":\"k-$i\",\"extractable\":false}]}"
done | batch_conf 2 POST >"$T_DIR/create.conf"
batch "$T_DIR/create.conf" | jq -r '.resources[0].id' >"$T_DIR/ids"
awk '{printf "/api/v2/keys/%s/actions/wrap {}\n", $1}' "$T_DIR/ids" | batch_conf 1 POST >"$T_DIR/wrap.conf"
batch "$T_DIR/wrap.conf" | jq -r '"\(.ciphertext) \(.plaintext)"' | paste -d' ' "$T_DIR/ids" - >"$T_DIR/wrapped"
for i in 1 2 3; do
	"$KYOK" kp key-create --name "kp-$i" --apikey-file "$AK/w.apikey" >/dev/null 2>&1 ||
		fail "kp key-create kp-$i"
done
expect_eq "$N data keys wrapped" "$(grep -cE '^[0-9a-f-]{36} [A-Za-z0-9+/=]{40,} [A-Za-z0-9+/=]{44}$' "$T_DIR/wrapped")" "$N"
expect_eq "they unwrap before the rotation" "$(unwrap_all 2)" 0
# The import token is a secret in key storage like the others: re-enciphered with them.
expect_eq "an import token (a secret of key storage)" \
	"$(api 1 POST /api/v2/import_token '{"maxAllowedRetrievals":2}' | tail -n1)" 200
api 1 GET /api/v2/import_token | head -n1 | jq -r .payload >"$T_DIR/it.before"
old_vp=$(unit_state 1 | jq -r .current_mk.vp)
under=$(unit_state 1 | jq -r .storage.records_under_current)
if [ "$under" -ge $((N + 3)) ]; then pass "storage: $under records under the current key"; else fail "records under current: $under"; fi

# ---- a new master key from fresh key parts -------------------------------------------------
expect_ok "mk-add --random (part 1)" "$KYOK" tke mk-add --random --description "part one" \
	--password-file "$(newpw p1)"
expect_ok "mk-add --random (part 2)" "$KYOK" tke mk-add --random --description "part two" \
	--password-file "$(newpw p2)"
expect_ok "mk-load" "$KYOK" tke cryptounit-mk-load --parts 1,2 $(pwf p1 p2 ann ben)
expect_ok "mk-commit" "$KYOK" tke cryptounit-mk-commit $(pwf ann ben)
new_vp=$(unit_state 1 | jq -r .new_mk.vp)
expect_eq "both units hold the new key committed" "$(unit_state 2 | jq -r '"\(.new_mk.state) \(.new_mk.vp)"')" \
	"FULL COMMITTED $new_vp"

# ---- set-immediate refused while records are under the old key --------------------------
before=$(both_states)
run_rc "$KYOK" tke cryptounit-mk-setimm --yes $(pwf ann ben)
after=$(both_states)
if [ $rc -ne 5 ] || ! grep -q 'not-reenciphered\|still has records under the current master key' <<<"$out"; then
	fail "mk-setimm before re-encipherment: exit $rc: $out"
elif ! grep -q 'cryptounit-mk-rotate' <<<"$out"; then
	fail "mk-setimm refusal does not point to cryptounit-mk-rotate: $out"
elif [ "$before" != "$after" ]; then
	fail "mk-setimm refused but a unit's state changed"
else
	pass "mk-setimm before re-encipherment: refused on both units, nothing changed"
fi
cmd_json 1 mk-setimm "{\"vp\": \"$new_vp\"}" >"$T_DIR/setimm.json"
sign_cmd "$T_DIR/setimm.json" "$T_DIR/setimm.der" ann
expect_refused "signed mk-setimm sent by hand: refused" not-reenciphered 1 "$T_DIR/setimm.der"

# ---- the rotation, while the API serves --------------------------------------------------
expect_rc "rotate without --yes and no terminal: cancelled, nothing sent" 2 'cancelled' \
	"$KYOK" tke cryptounit-mk-rotate $(pwf ann ben) </dev/null
: >"$T_DIR/traffic"
# usec: the time in microseconds, an integer whatever the locale's decimal point.
usec() { echo "${EPOCHREALTIME/[.,]/}"; }
# One line a request: its status, the time it was sent, the time its answer came (usec).
(
	while [ ! -f "$T_DIR/stop" ]; do
		read -r id ct pt < <(shuf -n1 "$T_DIR/wrapped")
		s=${EPOCHREALTIME/[.,]/}
		st=$(api 2 POST "/api/v2/keys/$id/actions/unwrap" "{\"ciphertext\":\"$ct\"}" | tail -n1)
		echo "$st $s ${EPOCHREALTIME/[.,]/}" >>"$T_DIR/traffic"
		s=${EPOCHREALTIME/[.,]/}
		st=$(api 1 POST /api/v2/keys "{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.key+json\",\"collectionTotal\":1},\"resources\":[{\"type\":\"application/vnd.ibm.kms.key+json\",\"name\":\"during\",\"extractable\":false}]}" |
			tail -n1)
		echo "$st $s ${EPOCHREALTIME/[.,]/}" >>"$T_DIR/traffic"
	done
) &
traffic=$!
# The traffic runs before the rotation starts (a request answered) and after it ends (one sent
# after it): waited for, 30 s at most each. Requests then follow each other all through the
# rotation command's run, which is much longer than the pause between two of them (the
# command decrypts two signature keys, then the units re-encipher some 200 records).
# after USEC: until a request sent after USEC is answered; fails if the traffic stopped or
# none was within 30 s.
after() {
	local end=$(($(usec) + 30000000))
	while [ "$(usec)" -lt "$end" ] && kill -0 "$traffic" 2>/dev/null; do
		awk -v t="$1" '$2 > t {f = 1} END {exit !f}' "$T_DIR/traffic" && return 0
		sleep 0.05
	done
	fail "the API traffic: no request sent after $1 answered within 30 s"
}
after 0
t0=$(usec)
expect_rc "cryptounit-mk-rotate --yes" 0 'current on 2 of 2 crypto units' \
	"$KYOK" tke cryptounit-mk-rotate --yes $(pwf ann ben)
t1=$(usec)
after "$t1"
touch "$T_DIR/stop"
wait "$traffic" || true
total=$(wc -l <"$T_DIR/traffic")
bad=$(awk '$1 !~ /^20[01]$/' "$T_DIR/traffic" | wc -l)
# Requests whose time overlaps the rotation command's run.
during=$(awk -v a="$t0" -v b="$t1" '$2 <= b && $3 >= a' "$T_DIR/traffic" | wc -l)
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", (b - a) / 1e6}')
if [ "$bad" -eq 0 ] && [ "$during" -gt 0 ]; then
	pass "API served all $total requests, $during of them while the rotation ran ($secs s)"
else
	fail "during the rotation ($secs s): $bad of $total requests failed, $during overlapped it: $(awk '{print $1}' "$T_DIR/traffic" | sort | uniq -c | tr '\n' ' ')"
fi
for n in 1 2; do
	expect_eq "unit $n: the new key is current, new register EMPTY" \
		"$(unit_state "$n" | jq -r '"\(.current_mk.vp) \(.new_mk.state)"')" "$new_vp EMPTY"
done
expect_eq "no record left under the old key" "$(unit_state 1 | jq -r .storage.records_under_current)" \
	"$(unit_state 2 | jq -r .storage.records_under_current)"
if [ "$old_vp" != "$new_vp" ]; then pass "vp changed"; else fail "vp did not change"; fi
expect_eq "every ciphertext still unwraps (unit 1)" "$(unwrap_all 1)" 0
expect_eq "every ciphertext still unwraps (unit 2)" "$(unwrap_all 2)" 0
api 2 GET /api/v2/import_token >"$T_DIR/it.after"
expect_eq "the import token opens under the new key: the same public key, 0 retrievals left" \
	"$(head -n1 "$T_DIR/it.after" | jq -r '"\(.payload == "'"$(cat "$T_DIR/it.before")"'") \(.remainingRetrievals)"') $(tail -n1 "$T_DIR/it.after")" \
	"true 0 200"
read -r id ct pt <"$T_DIR/wrapped"
printf '%s\n' "$ct" >"$T_DIR/ct1.txt"
expect_eq "kp unwraps after the rotation" \
	"$("$KYOK" kp unwrap "$id" --ciphertext-file "$T_DIR/ct1.txt" --show --apikey-file "$AK/w.apikey" 2>/dev/null)" "$pt"
expect_rc "rotate again: nothing to rotate to" 5 'no new master key to rotate to' \
	"$KYOK" tke cryptounit-mk-rotate --yes $(pwf ann ben)

# ---- a rotation that stopped half-way is resumed -----------------------------------------
"$KYOK" tke mk-add --random --description "part three" --password-file "$(newpw p3)" >/dev/null 2>&1
"$KYOK" tke mk-add --random --description "part four" --password-file "$(newpw p4)" >/dev/null 2>&1
"$KYOK" tke cryptounit-rm --units 2 >/dev/null 2>&1
expect_ok "mk-load (parts 3, 4) on unit 1 only" "$KYOK" tke cryptounit-mk-load --parts 3,4 $(pwf p3 p4 ann ben)
expect_ok "mk-commit on unit 1" "$KYOK" tke cryptounit-mk-commit $(pwf ann ben)
"$KYOK" tke cryptounit-add --units 2 >/dev/null 2>&1
before=$(both_states)
expect_rc "rotate: unit 2 has no new key, named with what to do" 5 	'crypto unit 2 .*new master key register is EMPTY.*cryptounit-mk-load' 	"$KYOK" tke cryptounit-mk-rotate --yes $(pwf ann ben)
expect_eq "... nothing sent" "$(both_states)" "$before"
expect_ok "mk-load (parts 3, 4) on unit 2" "$KYOK" tke cryptounit-mk-load --parts 3,4 $(pwf p3 p4 ann ben)
expect_ok "mk-commit on unit 2" "$KYOK" tke cryptounit-mk-commit $(pwf ann ben)
vp3=$(unit_state 1 | jq -r .new_mk.vp)
# As if a first run had re-enciphered through unit 1 and set the key on unit 2, then died.
cmd_json 1 mk-reencipher "{\"vp\": \"$vp3\"}" >"$T_DIR/re.json"
sign_cmd "$T_DIR/re.json" "$T_DIR/re.der" ann
expect_accepted "mk-reencipher sent by hand to unit 1" 1 "$T_DIR/re.der"
for _ in $(seq 1 100); do
	[ "$(unit_state 1 | jq -r .storage.records_under_current)" = 0 ] && break
	sleep 0.1
done
expect_eq "unit 1 re-enciphered key storage" "$(unit_state 1 | jq -r .storage.records_under_current)" 0
cmd_json 2 mk-setimm "{\"vp\": \"$vp3\"}" >"$T_DIR/si2.json"
sign_cmd "$T_DIR/si2.json" "$T_DIR/si2.der" ann
expect_accepted "mk-setimm sent by hand to unit 2" 2 "$T_DIR/si2.der"
run_rc "$KYOK" tke cryptounit-mk-rotate --yes $(pwf ann ben)
if [ $rc -ne 0 ]; then
	fail "resumed rotation: exit $rc: $out"
elif ! grep -q 'no record under the current master key' <<<"$out"; then
	fail "resumed rotation re-enciphered again: $out"
elif ! grep -qE '^2 +zone-2 +unchanged' <<<"$out" || ! grep -qE '^1 +zone-1 +changed' <<<"$out"; then
	fail "resumed rotation: unit 2 should be unchanged, unit 1 changed: $out"
else
	pass "resumed rotation: straight to set-immediate, only on unit 1"
fi
expect_eq "every ciphertext unwraps after the second rotation" "$(unwrap_all 2)" 0

# ---- zeroize every unit: crypto-shredding -------------------------------------------------
expect_ok "zeroize both units" "$KYOK" tke cryptounit-zeroize --yes $(pwf ann ben)
expect_rc "kp: the instance has no master key" 5 'no master key' \
	"$KYOK" kp keys --apikey-file "$AK/w.apikey"
reply=$(api 2 GET /api/v2/keys)
expect_eq "API with an old token: 503" "$(tail -n1 <<<"$reply")" 503
expect_eq "... error NO_MASTER_KEY_ERR" \
	"$(head -n1 <<<"$reply" | jq -r '.resources[0].reasons[0].code')" NO_MASTER_KEY_ERR

# ---- a different master key does not open the old records -------------------------------
expect_ok "auto-init again: another random master key" "$KYOK" tke auto-init --signature 1 \
	--revocation 1 --sigkeys 1,2 $(pwf ann ben)
if [ "$(unit_state 1 | jq -r .current_mk.vp)" != "$vp3" ]; then pass "a different vp"; else fail "same vp"; fi
read -r id ct pt <"$T_DIR/wrapped"
# The API key integrity key was shredded too: the unit given the new master key removed the
# API keys, whose rows can no longer be checked.
expect_rc "the API keys went with the old master key" 4 'unknown or was revoked' \
	"$KYOK" kp keys --apikey-file "$AK/w.apikey"
expect_eq "... no api_keys row left" "$(store_query 'SELECT count(*) FROM api_keys')" 0
expect_ok "apikey-create with the same name registers the key in its file again" \
	"$KYOK" tke apikey-create --name w --role Writer $(pwf ann ben)
expect_rc "old records: master key mismatch" 5 'master key mismatch' \
	"$KYOK" kp key-show "$id" --apikey-file "$AK/w.apikey"
# The token key was shredded too: the units make a new one, and the instance serves again.
expect_ok "new keys can be created under the new master key" \
	"$KYOK" kp key-create --name after-shred --apikey-file "$AK/w.apikey"
expect_rc "... while the old ones stay unreadable" 5 'master key mismatch' \
	"$KYOK" kp key-show "$id" --apikey-file "$AK/w.apikey" --unit 2
expect_eq "listings hold only the keys under the new master key" \
	"$("$KYOK" kp keys --output json --apikey-file "$AK/w.apikey" |
		jq -r '[.metadata.collectionTotal, [.resources[].name]] | tostring')" '[1,["after-shred"]]'

finish
