#!/usr/bin/env bash
# The key-management API through 'kyok kp' on 2 real units sharing one key storage: API keys
# for every role (kyok tke apikey-create), keys, wrap/unwrap/rewrap, rotation, policies,
# dual-authorization delete, restore, purge; what each role may not do; failover when unit 1
# dies; wrong and revoked API keys; malformed input files; an API key with two roles. Then
# ibmcloud kp's spelling of every command beside kyok's, -o json, -i, "did you mean", the
# ibmcloud options refused by name, and the features a unit may not offer (key rings, aliases,
# import tokens, registrations); a secure import through the CLI only (import-token
# key-encrypt, nonce-encrypt, key create -k -n -v), keys created in and moved between key
# rings, aliases on create, key sync. Last, the policy pass (rotation by policy, purge 90 days after
# deletion) with the units' pass clock moved ahead.
. "$(dirname "$0")/helpers.sh"
setup

# run_rc CMD...: runs CMD, output (stdout and stderr) in $out, exit status in $rc.
# expect_rc DESC EXIT PATTERN CMD...: CMD exits with EXIT and its output matches PATTERN.
AK="$KYOK_TKE_FILES/apikeys"
# kp ROLE CMD ARGS...: kyok kp CMD with the API key of ROLE (file t-ROLE.apikey).
kp() {
	local role=$1 cmd=$2
	shift 2
	"$KYOK" kp "$cmd" --apikey-file "$AK/t-$role.apikey" "$@"
}
stdout_of() { "$@" 2>/dev/null; }

# ---- an initialised instance ---------------------------------------------------------------
"$KYOK" up --dir "$KYOK_INSTANCE" --units 2 >/dev/null 2>&1
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null 2>&1
pa=$(newpw ann)
expect_ok "auto-init (one administrator)" "$KYOK" tke auto-init --signature 1 --revocation 1 \
	--new-admins ann --password-file "$pa"
"$KYOK" tke sigkey-sel --sigkeys 1 >/dev/null 2>&1

# ---- GET /health for load balancers: no token, no signature ------------------------------
hcode=$(curl -s -D "$T_DIR/health.hdr" -o "$T_DIR/health.json" -w '%{http_code}' \
	"$(unit_url 1)/health")
expect_eq "GET /health without credentials: 200" "$hcode" 200
expect_eq "GET /health body" "$(cat "$T_DIR/health.json")" '{"status":"ok"}'
if grep -qi '^Kyok-Signature:' "$T_DIR/health.hdr"; then fail "GET /health is signed"; else pass "GET /health is not signed"; fi
expect_eq "POST /health: 405" \
	"$(curl -s -o /dev/null -w '%{http_code}' -X POST "$(unit_url 2)/health")" 405

# ---- API keys ------------------------------------------------------------------------------
for role in Reader ReaderPlus Writer Manager KeyPurge; do
	run_rc "$KYOK" tke apikey-create --name "t-$role" --role "$role" --password-file "$pa"
	if [ $rc -ne 0 ]; then
		fail "apikey-create $role: exit $rc: $out"
	elif grep -q 'kyok_' <<<"$out"; then
		fail "apikey-create $role: the secret was printed"
	else
		pass "apikey-create $role (secret not printed)"
	fi
done
expect_ok "apikey-create a second Manager (dual authorization)" "$KYOK" tke apikey-create \
	--name t-Manager2 --role Manager --password-file "$pa"
expect_eq "API key file is 0600" "$(stat -c %a "$AK/t-Writer.apikey")" 600
expect_eq "API key file holds a kyok_ key" "$(jq -r '.apikey | startswith("kyok_")' "$AK/t-Writer.apikey")" true
expect_rc "apikey-create again: same key, unchanged on both units" 0 \
	'changed 0 of 2 crypto units' "$KYOK" tke apikey-create --name t-Writer --role Writer \
	--password-file "$pa"
expect_rc "apikey-create over a file with another role: refused" 3 'holds API key' \
	"$KYOK" tke apikey-create --name t-Writer --role Manager --password-file "$pa"
expect_rc "apikey-create with an unknown role" 2 'not one of Reader' \
	"$KYOK" tke apikey-create --name bad --role Admin
expect_rc "apikey-create with a name that is not a file name" 2 "use 1 to" \
	"$KYOK" tke apikey-create --name ../x --role Reader
list=$("$KYOK" tke apikeys --output json)
expect_eq "apikeys lists 6 keys" "$(jq '.apikeys | length' <<<"$list")" 6
expect_eq "apikeys shows names and roles" \
	"$(jq -r '[.apikeys[] | select(.name == "t-KeyPurge") | .role] | join(",")' <<<"$list")" KeyPurge
expect_eq "apikeys shows no hash" "$(jq '[.apikeys[] | has("hash")] | any' <<<"$list")" false
expect_rc "apikeys table" 0 't-ReaderPlus +ReaderPlus' "$KYOK" tke apikeys
# An API key with several roles: given in any order, stored and listed in one order.
expect_rc "apikey-create with two roles" 0 'role Manager,KeyPurge' \
	"$KYOK" tke apikey-create --name t-MgrPurge --role KeyPurge,Manager --password-file "$pa"
expect_eq "... listed with both roles, in the stored order" \
	"$("$KYOK" tke apikeys --output json | jq -r '.apikeys[] | select(.name == "t-MgrPurge") | .role')" \
	"Manager,KeyPurge"
expect_eq "... its file says the same" "$(jq -r .role "$AK/t-MgrPurge.apikey")" "Manager,KeyPurge"
expect_rc "apikey-create with a role given twice: refused by name" 2 "role 'Manager' is given twice" \
	"$KYOK" tke apikey-create --name bad --role Manager,Manager
expect_rc "apikey-create with an unknown role in a list: refused by name" 2 "role 'Admin' is not one of" \
	"$KYOK" tke apikey-create --name bad --role Manager,Admin

# ---- keys ----------------------------------------------------------------------------------
kid=$(stdout_of kp Writer key-create --name root-one --description "test root" --output json |
	jq -r '.resources[0].id')
if [[ "$kid" =~ ^[0-9a-f-]{36}$ ]]; then pass "Writer creates a root key ($kid)"; else fail "key-create: '$kid'"; fi
expect_rc "Reader lists it" 0 "$kid +root-one +Active +root" kp Reader keys
expect_rc "Reader shows its metadata" 0 'description +test root' kp Reader key-show "$kid"
head -c 48 /dev/urandom >"$T_DIR/std.bin"
sid=$(stdout_of kp Writer key-create --name std-one --standard --payload-file "$T_DIR/std.bin" \
	--output json | jq -r '.resources[0].id')
expect_eq "ReaderPlus reads the standard key's payload" \
	"$(stdout_of kp ReaderPlus key-show "$sid" --show-payload --output json | jq -r '.resources[0].payload')" \
	"$(base64 -w0 <"$T_DIR/std.bin")"
expect_rc "key-show without --show-payload prints no payload" 0 '^' kp ReaderPlus key-show "$sid"
if grep -q "$(base64 -w0 <"$T_DIR/std.bin")" <<<"$out"; then fail "payload shown without --show-payload"; else pass "payload hidden by default"; fi
expect_rc "Reader cannot read a payload" 4 "key $sid: .*no payload" kp Reader key-show "$sid" --show-payload
expect_eq "keys --extractable true: the standard key only" \
	"$(stdout_of kp Reader keys --extractable true --output json | jq -r '[.resources[].id] | join(",")')" "$sid"
expect_eq "keys --limit 1" "$(stdout_of kp Reader keys --limit 1 --output json | jq '.resources | length')" 1

# ---- wrap, unwrap, rewrap -----------------------------------------------------------------
expect_rc "wrap without a plaintext and nowhere to keep the data key: refused" 2 'dek-out' \
	kp Reader wrap "$kid"
kp Reader wrap "$kid" --dek-out "$T_DIR/dek.bin" >"$T_DIR/ct.txt" 2>"$T_DIR/err" ||
	fail "Reader wrap: $(cat "$T_DIR/err")"
expect_eq "generated data key: 32 bytes, 0600" "$(stat -c '%s %a' "$T_DIR/dek.bin")" "32 600"
if grep -q "$(base64 -w0 <"$T_DIR/dek.bin")" "$T_DIR/ct.txt"; then fail "data key on stdout"; else pass "data key not on stdout"; fi
expect_ok "Reader unwraps" kp Reader unwrap "$kid" --ciphertext-file "$T_DIR/ct.txt" \
	--out "$T_DIR/dek2.bin"
expect_ok "... to the same data key" cmp "$T_DIR/dek.bin" "$T_DIR/dek2.bin"
printf 'a secret of the application' >"$T_DIR/pt.bin"
kp Writer wrap "$kid" --plaintext-file "$T_DIR/pt.bin" --aad tenant-1 --aad db >"$T_DIR/ct2.txt"
expect_eq "unwrap with the aad, --show: base64 plaintext" \
	"$(stdout_of kp Reader unwrap "$kid" --ciphertext-file "$T_DIR/ct2.txt" --aad tenant-1 --aad db --show)" \
	"$(base64 -w0 <"$T_DIR/pt.bin")"
expect_rc "unwrap without the aad: refused" 3 "key $kid" \
	kp Reader unwrap "$kid" --ciphertext-file "$T_DIR/ct2.txt" --show
expect_rc "unwrap with another root key: refused" 3 "key $sid|unwrap" \
	kp Reader unwrap "$sid" --ciphertext-file "$T_DIR/ct.txt" --show
expect_ok "Writer rotates the root key" kp Writer key-rotate "$kid"
expect_eq "two versions" "$(stdout_of kp Reader key-versions "$kid" --output json | jq '.resources | length')" 2
kp Reader rewrap "$kid" --ciphertext-file "$T_DIR/ct.txt" >"$T_DIR/ct3.txt"
if cmp -s "$T_DIR/ct.txt" "$T_DIR/ct3.txt"; then fail "rewrap gave the same ciphertext"; else pass "rewrap: new ciphertext"; fi
expect_ok "the rewrapped key unwraps" kp Reader unwrap "$kid" --ciphertext-file "$T_DIR/ct3.txt" \
	--out "$T_DIR/dek3.bin"
expect_ok "... to the same data key" cmp "$T_DIR/dek.bin" "$T_DIR/dek3.bin"
expect_ok "the old ciphertext still unwraps" kp Reader unwrap "$kid" --ciphertext-file "$T_DIR/ct.txt" \
	--out "$T_DIR/dek4.bin"

# ---- roles ---------------------------------------------------------------------------------
expect_rc "Reader cannot create a key" 4 "key 'r-key'" kp Reader key-create --name r-key
expect_rc "ReaderPlus cannot rotate" 4 "key $kid" kp ReaderPlus key-rotate "$kid"
expect_rc "Writer cannot disable" 4 "key $kid" kp Writer key-disable "$kid"
expect_rc "KeyPurge cannot list keys" 4 "keys" kp KeyPurge keys
expect_rc "KeyPurge cannot wrap" 4 "key $kid" kp KeyPurge wrap "$kid" --show
expect_ok "Manager disables" kp Manager key-disable "$kid"
expect_rc "a disabled key does not wrap" 5 "key $kid" kp Reader wrap "$kid" --show
expect_ok "Manager enables" kp Manager key-enable "$kid"
expect_ok "... and it wraps again" kp Reader wrap "$kid" --show

# ---- each unit's key cache: a change made through one unit is seen by the other at once ------
# Unit 2 keeps the key opened (cache hits, on SQLite and on PostgreSQL alike); the key is
# disabled, then deleted, through unit 1: unit 2's next request, straight after unit 1's reply,
# is refused, never served from its cache.
cached_unwrap() { kp Reader unwrap "$kid" --ciphertext-file "$T_DIR/ct.txt" --out "$T_DIR/dekc.bin" --unit 2; }
metrics_of 2 "$T_DIR/kc0"
cached_unwrap && cached_unwrap && cached_unwrap || fail "unwrap through unit 2"
metrics_of 2 "$T_DIR/kc1"
expect_eq "unit 2 serves repeated unwraps from its key cache (hits)" \
	"$(($(metric "$T_DIR/kc1" kyok_key_cache_hits_total) - $(metric "$T_DIR/kc0" kyok_key_cache_hits_total) >= 2))" 1
# Key reads (GET /keys/ID) come from the same cache.
expect_rc "unit 2 shows the key: Active" 0 '^state +Active \(1\)' kp Reader key-show "$kid" --unit 2
metrics_of 2 "$T_DIR/kc2"
expect_eq "... read from its key cache (hits moved, no miss)" \
	"$(($(metric "$T_DIR/kc2" kyok_key_cache_hits_total) > $(metric "$T_DIR/kc1" kyok_key_cache_hits_total))) $(($(metric "$T_DIR/kc2" kyok_key_cache_misses_total) - $(metric "$T_DIR/kc1" kyok_key_cache_misses_total)))" "1 0"
expect_rc "Manager disables the key through unit 1" 0 'served by crypto unit 1' \
	kp Manager key-disable "$kid" --unit 1 --verbose
expect_rc "... and unit 2, holding it opened, refuses it straight after" 5 "key $kid" \
	kp Reader unwrap "$kid" --ciphertext-file "$T_DIR/ct.txt" --show --unit 2
expect_rc "... and shows it Suspended straight after" 0 '^state +Suspended \(2\)' \
	kp Reader key-show "$kid" --unit 2
expect_ok "Manager enables it through unit 1" kp Manager key-enable "$kid" --unit 1
expect_ok "... and unit 2 unwraps with it again" cached_unwrap

# ---- policies ------------------------------------------------------------------------------
expect_rc "Writer cannot set policies" 4 "key $kid" kp Writer policies "$kid" --dual-auth on
expect_rc "Manager sets rotation and dual authorization" 0 'every 3 months' \
	kp Manager policies "$kid" --rotation-months 3 --dual-auth on
expect_rc "... and is told when the units rotate it" 0 \
	"rotate a root key when its rotation policy is due.*kyok kp key-rotate" \
	kp Manager policies "$kid" --rotation-months 3
expect_rc "... both shown" 0 'dual-auth delete +enabled' kp Manager policies "$kid"
expect_rc "policies: bad interval" 2 'rotation-months' kp Manager policies "$kid" --rotation-months 13
expect_rc "instance policies shown" 0 'POLICY' kp Manager instance-policies
expect_rc "instance policy set (with its update date)" 0 'dualAuthDelete +disabled +20[0-9-]+T[0-9:]+Z' \
	kp Manager instance-policies --dual-auth off
expect_rc "rotation turned off: no interval shown" 0 '^rotation +disabled +20[0-9-]+T' \
	kp Manager policies "$kid" --rotation-months off

# ---- delete (dual authorization), restore, purge -----------------------------------------
expect_rc "delete without the second user: refused, the kyok kp command named" 5 \
	"fix: .*'kyok kp key-schedule-delete ID'" kp Manager key-delete "$kid"
expect_ok "Writer schedules the deletion" kp Writer key-schedule-delete "$kid"
expect_rc "Writer cannot delete" 4 "key $kid" kp Writer key-delete "$kid"
cached_unwrap || fail "unwrap through unit 2 before the deletion"
expect_ok "Manager (another user) deletes, through unit 1" kp Manager key-delete "$kid" --unit 1
expect_rc "a deleted key does not unwrap (unit 2, which held it opened, straight after)" 5 \
	"key $kid" kp Reader unwrap "$kid" --ciphertext-file "$T_DIR/ct.txt" --show --unit 2
expect_eq "listed as destroyed" \
	"$(stdout_of kp Reader keys --state destroyed --output json | jq -r '[.resources[].id] | join(",")')" "$kid"
expect_ok "Manager restores it" kp Manager key-restore "$kid"
expect_ok "Manager deletes the standard key" kp Manager key-delete "$sid"
expect_rc "purge without --yes and no terminal: cancelled" 2 'cancelled' kp KeyPurge key-purge "$sid" </dev/null
expect_rc "Manager cannot purge" 4 "key $sid" kp Manager key-purge "$sid" --yes
expect_rc "KeyPurge may purge (refused only for the 4-hour delay)" 5 "key $sid" \
	kp KeyPurge key-purge "$sid" --yes
expect_rc "Manager,KeyPurge may purge too (refused only for the delay)" 5 "key $sid: .*4 hours after" \
	kp MgrPurge key-purge "$sid" --yes
expect_ok "... and, as a Manager, restores" kp MgrPurge key-restore "$sid"
expect_ok "... deletes" kp MgrPurge key-delete "$sid"
expect_rc "... and lists keys (KeyPurge alone cannot)" 0 "$sid" kp MgrPurge keys --state destroyed

# ---- failover ------------------------------------------------------------------------------
pid1=$(cat "$KYOK_INSTANCE/unit-1/pid")
kill -9 "$pid1"
wait_gone "$pid1"
expect_rc "unit 1 dead: unwrap served by unit 2" 0 'served by crypto unit 2' \
	kp Reader unwrap "$kid" --ciphertext-file "$T_DIR/ct.txt" --out "$T_DIR/dek5.bin" --verbose
expect_ok "... the same data key" cmp "$T_DIR/dek.bin" "$T_DIR/dek5.bin"
expect_ok "unit 1 dead: key-create through unit 2" kp Writer key-create --name while-down
expect_rc "unit 1 dead: cryptounit-mk-rotate refuses, names it, sends nothing" 6 \
	'crypto unit 1 .*rotation needs every selected crypto unit' \
	"$KYOK" tke cryptounit-mk-rotate --yes --password-file "$pa"
"$KYOK" up >/dev/null 2>&1
expect_rc "--unit 2 first" 0 'served by crypto unit 2' kp Reader keys --unit 2 --verbose

# ---- wrong, revoked, missing API keys -----------------------------------------------------
printf 'kyok_%s\n' "$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')" >"$T_DIR/wrong.apikey"
expect_rc "an unknown API key: refused" 4 'wrong.apikey' \
	"$KYOK" kp keys --apikey-file "$T_DIR/wrong.apikey"
expect_rc "no API key at all" 2 'no API key' env -u KYOK_APIKEY -u KYOK_APIKEY_FILE "$KYOK" kp keys
expect_ok "KYOK_APIKEY_FILE" env KYOK_APIKEY_FILE="$AK/t-Reader.apikey" "$KYOK" kp keys
key_in_env() { KYOK_APIKEY="$(jq -r .apikey "$AK/t-Reader.apikey")" "$KYOK" kp keys; }
expect_ok "KYOK_APIKEY (the key itself)" key_in_env

expect_ok "apikey-create a key to revoke" "$KYOK" tke apikey-create --name t-Gone --role Reader \
	--password-file "$pa"
jq -j .apikey "$AK/t-Gone.apikey" >"$T_DIR/gone.raw"
tok=$(curl -fsS --data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' \
	--data-urlencode "apikey@$T_DIR/gone.raw" "$(unit_url 1)/identity/token" | jq -r .access_token)
api_status() {
	curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $tok" \
		-H "Bluemix-Instance: $(instance_id)" "$(unit_url "$1")/api/v2/keys"
}
expect_eq "a token of that key works on unit 2" "$(api_status 2)" 200
gone=$(jq -r .id "$AK/t-Gone.apikey")
expect_rc "apikey-revoke: first unit changes it, the other finds it done" 0 \
	'changed 1 of 2 crypto units' "$KYOK" tke apikey-revoke --id "$gone" --yes --password-file "$pa"
expect_rc "apikey-revoke again: unchanged" 0 'already revoked' \
	"$KYOK" tke apikey-revoke --id "$gone" --yes --password-file "$pa"
expect_rc "apikey-revoke of an unknown id" 3 'no API key' \
	"$KYOK" tke apikey-revoke --id nope --yes --password-file "$pa"
sleep 2
expect_eq "the token issued before the revocation is refused (unit 1)" "$(api_status 1)" 401
expect_eq "... and on unit 2" "$(api_status 2)" 401
expect_rc "a revoked API key gets no token" 4 't-Gone.apikey' kp Gone keys
expect_rc "apikey-create with the revoked key's file: refused" 4 'revoked' \
	"$KYOK" tke apikey-create --name t-Gone --role Reader --password-file "$pa"
expect_eq "apikeys shows the revocation" \
	"$("$KYOK" tke apikeys --output json | jq -r --arg i "$gone" '.apikeys[] | select(.id == $i) | (.revoked | type)')" string

# ---- malformed input -----------------------------------------------------------------------
printf 'line one\nline two\n' >"$T_DIR/two-lines.apikey"
expect_rc "API key file of two lines" 3 'not an API key file' \
	"$KYOK" kp keys --apikey-file "$T_DIR/two-lines.apikey"
echo '{"apikey": 3}' >"$T_DIR/json.apikey"
expect_rc "API key file with JSON but no key" 3 'apikey' "$KYOK" kp keys --apikey-file "$T_DIR/json.apikey"
expect_rc "API key file missing" 3 'no such file' "$KYOK" kp keys --apikey-file "$T_DIR/none"
echo 'not base64 !!' >"$T_DIR/bad-ct.txt"
expect_rc "ciphertext file that is not base64" 3 'not a wrapped key' \
	kp Reader unwrap "$kid" --ciphertext-file "$T_DIR/bad-ct.txt" --show
head -c 60 /dev/urandom | base64 -w0 >"$T_DIR/junk-ct.txt"
expect_rc "ciphertext that is base64 junk" 3 "key $kid" \
	kp Reader unwrap "$kid" --ciphertext-file "$T_DIR/junk-ct.txt" --show
: >"$T_DIR/empty"
expect_rc "empty payload file" 3 'empty' kp Writer key-create --name e --payload-file "$T_DIR/empty"
head -c 20 /dev/urandom >"$T_DIR/20.bin"
expect_rc "root key material of 20 bytes" 3 "key 'odd'" kp Writer key-create --name odd \
	--payload-file "$T_DIR/20.bin"
head -c 9000 /dev/urandom >"$T_DIR/9000.bin"
expect_rc "plaintext over 7500 bytes" 3 'at most 7500' kp Writer wrap "$kid" \
	--plaintext-file "$T_DIR/9000.bin"
expect_rc "key id with a slash" 2 'not a key ID' kp Reader key-show "../keys"
expect_rc "--state with an unknown state" 2 'give states like' kp Reader keys --state live
expect_rc "--limit 0" 2 'limit' kp Reader keys --limit 0
expect_rc "--extractable maybe" 2 'true or false' kp Reader keys --extractable maybe
expect_rc "--dual-auth maybe" 2 'on or off' kp Manager policies "$kid" --dual-auth maybe
expect_rc "--unit 9 of a 2-unit instance" 2 'no crypto unit 9' kp Reader keys --unit 9
expect_rc "wrap: --dek-out with a plaintext" 2 'dek-out' kp Reader wrap "$kid" \
	--plaintext-file "$T_DIR/pt.bin" --dek-out "$T_DIR/x"
expect_rc "unwrap: nowhere to put the plaintext" 2 'give --out' kp Reader unwrap "$kid" \
	--ciphertext-file "$T_DIR/ct.txt"
expect_rc "rewrap takes no --show" 2 'rewrap takes' kp Reader rewrap "$kid" \
	--ciphertext-file "$T_DIR/ct.txt" --show
expect_rc "apikey-create --show with no terminal" 2 'only on a terminal' \
	"$KYOK" tke apikey-create --name t-x --role Reader --show
expect_rc "apikey-revoke without --id" 2 'id ID is required' "$KYOK" tke apikey-revoke --yes
expect_rc "unknown key" 3 'key 0{8}-' kp Reader key-show 00000000-0000-4000-8000-000000000000

# ---- ibmcloud kp's spellings: each verb both ways, -o json, -i, did you mean, refusals --------
# kpi ROLE ARGS...: kyok kp ARGS with the API key of ROLE given last (words stay together).
kpi() {
	local role=$1
	shift
	"$KYOK" kp "$@" --apikey-file "$AK/t-$role.apikey"
}
iid=$(instance_id)
k2=$(stdout_of kpi Writer key create kp-two -D "two words" -o json | jq -r '.resources[0].id')
if [[ "$k2" =~ ^[0-9a-f-]{36}$ ]]; then pass "key create NAME -D -o json ($k2)"; else fail "key create: '$k2'"; fi
expect_eq "key show -o json: the description" \
	"$(stdout_of kpi Reader key show "$k2" -o json | jq -r '.resources[0].description')" "two words"
expect_rc "key-show, the same key" 0 'description +two words' kpi Reader key-show "$k2"
k3=$(stdout_of kpi Writer key-create --name kp-three --standard-key --payload-file "$T_DIR/std.bin" \
	--output json | jq -r '.resources[0].id')
expect_eq "key-create --standard-key: a standard key" \
	"$(stdout_of kpi Reader key show "$k3" -o json | jq -r '.resources[0].extractable')" true
k4=$(stdout_of kpi Writer key create kp-four -s -e 2099-01-31T00:00:00Z -o json | jq -r '.resources[0].id')
expect_eq "key create -s -e DATE: standard, with that expiration date" \
	"$(stdout_of kpi Reader key-show "$k4" -o json | jq -r '.resources[0] | "\(.extractable) \(.expirationDate)"')" \
	"true 2099-01-31T00:00:00Z"
expect_rc "key create: the name twice" 2 'the name is given twice' kpi Writer key create a --name b
expect_eq "keys -n 1 -o json: one key" "$(stdout_of kpi Reader keys -n 1 -o json | jq '.resources | length')" 1
expect_eq "keys --number-of-keys 2 --starting-offset 1: the 2nd and 3rd keys" \
	"$(stdout_of kpi Reader keys --number-of-keys 2 --starting-offset 1 -o json | jq -r '[.resources[].id] | join(",")')" \
	"$(stdout_of kpi Reader keys -o json | jq -r '[.resources[1,2].id] | join(",")')"
expect_eq "keys -t destroyed -o json (key-states)" \
	"$(stdout_of kpi Reader keys -t destroyed -o json | jq -r '[.resources[].id] | join(",")')" \
	"$(stdout_of kpi Reader keys --key-states 5 -o json | jq -r '[.resources[].id] | join(",")')"
# wrap, unwrap, rewrap; CIPHERTEXT as unwrap's operand
kpi Reader key wrap "$k2" --plaintext-file "$T_DIR/pt.bin" -a tenant-1 -a db -o json >"$T_DIR/w.json"
jq -j .ciphertext "$T_DIR/w.json" >"$T_DIR/ct5.txt"
expect_eq "key wrap -a -o json: a ciphertext and the key version" \
	"$(jq -r '(.ciphertext | length > 0), (.keyVersion | length == 36)' "$T_DIR/w.json" | tr '\n' ' ')" "true true "
expect_eq "key unwrap ID CIPHERTEXT -a -a --show" \
	"$(stdout_of kpi Reader key unwrap "$k2" "$(cat "$T_DIR/ct5.txt")" -a tenant-1 -a db --show)" \
	"$(base64 -w0 <"$T_DIR/pt.bin")"
expect_eq "unwrap --ciphertext-file --aad -o json" \
	"$(stdout_of kpi Reader unwrap "$k2" --ciphertext-file "$T_DIR/ct5.txt" --aad tenant-1 --aad db --show -o json | jq -r .plaintext)" \
	"$(base64 -w0 <"$T_DIR/pt.bin")"
expect_rc "key unwrap: the ciphertext twice" 2 'given twice' kpi Reader key unwrap "$k2" \
	"$(cat "$T_DIR/ct5.txt")" --ciphertext-file "$T_DIR/ct5.txt" --show
expect_rc "key unwrap: a CIPHERTEXT that is not base64" 3 "CIPHERTEXT: .*not a wrapped key" \
	kpi Reader key unwrap "$k2" 'not base64!' --show
expect_rc "key unwrap: no -a, refused by the unit" 3 "key $k2" \
	kpi Reader key unwrap "$k2" "$(cat "$T_DIR/ct5.txt")" --show
expect_rc "key wrap (a new data key) to --dek-out" 0 '^' kpi Reader key wrap "$k2" --dek-out "$T_DIR/dek6.bin"
expect_eq "... 32 bytes" "$(stat -c %s "$T_DIR/dek6.bin")" 32
# rotate, versions, rewrap
expect_ok "key rotate" kpi Writer key rotate "$k2"
expect_ok "key-rotate" kpi Writer key-rotate "$k2"
expect_eq "key versions -o json: 3" "$(stdout_of kpi Reader key versions "$k2" -o json | jq '.resources | length')" 3
expect_rc "key-versions table" 0 '^3 versions' kpi Reader key-versions "$k2"
expect_rc "key rewrap" 0 '^[A-Za-z0-9+/=]{40,}$' kpi Reader key rewrap "$k2" --ciphertext-file "$T_DIR/ct5.txt" -a tenant-1 -a db
expect_rc "rewrap -o json" 0 '"rewrappedKeyVersion"' kpi Reader rewrap "$k2" --ciphertext-file "$T_DIR/ct5.txt" \
	--aad tenant-1 --aad db -o json
# disable, enable
state_of() { stdout_of kpi Reader key show "$1" -o json | jq -r '.resources[0].state'; }
expect_ok "key disable" kpi Manager key disable "$k2"
expect_eq "... Suspended (2)" "$(state_of "$k2")" 2
expect_ok "key enable" kpi Manager key enable "$k2"
expect_eq "... Active (1)" "$(state_of "$k2")" 1
expect_ok "key-disable" kpi Manager key-disable "$k2"
expect_eq "... Suspended (2)" "$(state_of "$k2")" 2
expect_ok "key-enable" kpi Manager key-enable "$k2"
expect_eq "... Active (1)" "$(state_of "$k2")" 1
# key policies
expect_rc "key policies" 0 '^rotation +disabled' kpi Manager key policies "$k2"
expect_rc "key policy-update rotation -m 2" 0 '^rotation +enabled +every 2 months' \
	kpi Manager key policy-update rotation "$k2" -m 2
expect_rc "key-policy-update rotation -d" 0 '^rotation +disabled' \
	kpi Manager key-policy-update rotation "$k2" -d
expect_rc "key policy-update dual-auth-delete -e" 0 'dual-auth delete +enabled' \
	kpi Manager key policy-update dual-auth-delete "$k2" --enable
expect_eq "policies -o json: dual-auth-delete on" \
	"$(stdout_of kpi Manager policies "$k2" -o json | jq -r '[.resources[] | select(.dualAuthDelete) | .dualAuthDelete.enabled] | join(",")')" true
expect_rc "key policy-update: -e and -d" 2 'one of them' kpi Manager key policy-update dual-auth-delete "$k2" -e -d
expect_rc "key policy-update rotation -e without -m" 2 'give -m MONTHS' kpi Manager key policy-update rotation "$k2" -e
expect_rc "key policy-update rotation -m 13" 2 'monthly-interval' kpi Manager key policy-update rotation "$k2" -m 13
expect_rc "key policy-update of an unknown policy" 2 "'colour' is not a policy" kpi Manager key policy-update colour "$k2" -e
# schedule-delete, cancel-delete (dual authorization), delete, restore, purge
expect_ok "key schedule-delete" kpi Writer key schedule-delete "$k2"
expect_ok "key cancel-delete" kpi Writer key cancel-delete "$k2"
expect_rc "... so the delete is refused again" 5 "key $k2" kpi Manager key delete "$k2"
expect_ok "key-schedule-delete" kpi Writer key-schedule-delete "$k2"
expect_ok "key-cancel-delete" kpi Writer key-cancel-delete "$k2"
expect_ok "key delete -f (no dual authorization on this key)" kpi Manager key delete "$k3" -f
expect_eq "... Destroyed (5)" "$(state_of "$k3")" 5
expect_ok "key restore" kpi Manager key restore "$k3"
expect_eq "... Active (1)" "$(state_of "$k3")" 1
expect_ok "key-delete --force" kpi Manager key-delete "$k3" --force
expect_ok "key-restore" kpi Manager key-restore "$k3"
expect_ok "key-delete" kpi Manager key-delete "$k3"
expect_rc "key purge: reaches the unit (refused for the 4-hour delay)" 5 "key $k3" kpi KeyPurge key purge "$k3" --yes
expect_rc "key-purge: the same" 5 "key $k3" kpi KeyPurge key-purge "$k3" --yes
# instance policies
expect_rc "instance policies" 0 '^POLICY' kpi Manager instance policies
expect_rc "instance policy-update dual-auth-delete -d" 0 'dualAuthDelete +disabled' \
	kpi Manager instance policy-update dual-auth-delete -d
expect_rc "instance-policy-update rotation -d" 0 '^rotation +disabled' kpi Manager instance-policy-update rotation -d
expect_eq "instance-policies -o json" \
	"$(stdout_of kpi Manager instance-policies -o json | jq -r '[.resources[] | select(.policy_type == "dualAuthDelete") | .policy_data.enabled] | join(",")')" false
for t in allowed-ip metrics key-create-import-access; do
	expect_rc "instance policy-update $t: refused by name" 2 "^error: $t: this ibmcloud kp option is not offered by kyok kp: ibmcloud kp has no such policy-update either: set $t with the key API" \
		kpi Manager instance policy-update "$t" -e
done
expect_rc "instance policy-update allowed-network -e -t private-only" 0 \
	'^allowedNetwork +enabled +allowed_network="private-only"' \
	kpi Manager instance policy-update allowed-network -e -t private-only
expect_eq "instance-policies -o json: allowedNetwork private-only" \
	"$(stdout_of kpi Manager instance-policies -o json | jq -r '.resources[] | select(.policy_type == "allowedNetwork") | "\(.policy_data.enabled) \(.policy_data.attributes.allowed_network)"')" \
	"true private-only"
expect_rc "instance-policy-update allowed-network --disable" 0 '^allowedNetwork +disabled' \
	kpi Manager instance-policy-update allowed-network --disable
expect_rc "instance policy-update allowed-network -e without -t" 2 'give -t public-and-private' \
	kpi Manager instance policy-update allowed-network -e
expect_rc "instance policy-update allowed-network -t intranet" 2 "^error: -t/--network-type: .*not 'intranet'" \
	kpi Manager instance policy-update allowed-network -e -t intranet
expect_rc "key policy-update rotation -t: refused" 2 "^error: -t/--network-type: .*allowed-network" \
	kpi Manager key policy-update rotation "$k2" -m 2 -t private-only
# -i / --instance-ID / $KP_INSTANCE_ID
expect_ok "keys -i (this instance)" kpi Reader keys -i "$iid"
expect_ok "key show --instance-ID (this instance)" kpi Reader key show "$k2" --instance-ID "$iid"
expect_rc "-i of another instance: refused, naming both" 3 \
	"^error: -i/--instance-ID: the instance ID given is not this instance's.*'not-$iid' is not this instance: .*instance '$iid'" \
	kpi Writer key create kp-wrong-instance -i "not-$iid"
expect_rc "\$KP_INSTANCE_ID of another instance: refused" 3 "KP_INSTANCE_ID.*'other' is not this instance" \
	env KP_INSTANCE_ID=other "$KYOK" kp keys --apikey-file "$AK/t-Reader.apikey"
expect_ok "\$KP_INSTANCE_ID of this instance" env KP_INSTANCE_ID="$iid" "$KYOK" kp keys --apikey-file "$AK/t-Reader.apikey"
# refused ibmcloud kp options: by name, with the reason, nothing sent
for o in "-k AAAA" "--key-material AAAA"; do
	# shellcheck disable=SC2086
	expect_rc "key create $o (no -n, -v): key material in the clear, refused by name" 2 \
		"^error: -k/--key-material: this ibmcloud kp option is not offered by kyok kp: without -n and -v it is key material in the clear.*seen by every user of this host.*--payload-file" \
		kpi Writer key create kp-refused $o
done
for o in "-n AAAA" "--encrypted-nonce AAAA" "-v AAAA" "--iv AAAA"; do
	# shellcheck disable=SC2086
	expect_rc "key create $o without -k: refused" 2 "^error: -.*: wrong usage: imports a key encrypted to the import token: give -k ENCRYPTED_KEY" \
		kpi Writer key create kp-refused $o
done
expect_rc "key rotate -k: refused" 2 '^error: -k/--key-material: this ibmcloud' kpi Writer key rotate "$k2" -k AAAA
expect_rc "key restore --key-material: refused" 2 "restore takes none" kpi Manager key restore "$k3" --key-material AAAA
expect_rc "key wrap -p: refused, the value not echoed" 2 '^error: -p/--plaintext: .*--plaintext-file FILE' \
	kpi Reader key wrap "$k2" -p c2VjcmV0LWRhdGEta2V5
if grep -q c2VjcmV0LWRhdGEta2V5 <<<"$out"; then fail "key wrap -p: the value echoed"; else pass "key wrap -p: the value not echoed"; fi
expect_rc "wrap --plaintext: refused" 2 '^error: -p/--plaintext: this ibmcloud kp option' \
	kpi Reader wrap "$k2" --plaintext c2VjcmV0LWRhdGEta2V5
expect_rc "key rotate -n, -v: refused" 2 '^error: -n/--encrypted-nonce: .*on key create only' \
	kpi Writer key rotate "$k2" -n AAAA -v BBBB
expect_rc "key wrap -a with a comma: refused" 2 "^error: -a: .*holds a comma" kpi Reader key wrap "$k2" --show -a a,b
expect_rc "keys -c: refused" 2 '^error: -c/--crn: .*-o json' kpi Reader keys -c
expect_eq "no key made by a refused command" \
	"$(stdout_of kpi Reader keys --limit 5000 --state 1,2,3,5 -o json | jq '[.resources[] | select(.name == "kp-refused" or .name == "kp-wrong-instance")] | length')" 0
# did you mean, at both levels and in both spellings; help in both spellings
expect_rc "kp kye create: did you mean" 2 "unknown command 'kye': did you mean 'kyok kp key create'" "$KYOK" kp kye create x
expect_rc "kp key craete: did you mean" 2 "unknown command 'key craete': did you mean 'kyok kp key create'" "$KYOK" kp key craete x
expect_rc "kp key-craete: did you mean" 2 "unknown command 'key-craete': did you mean 'kyok kp key-create'" "$KYOK" kp key-craete
expect_rc "kp instance polices: did you mean" 2 "did you mean 'kyok kp instance policies'" "$KYOK" kp instance polices
expect_rc "kp key frobnicate: no guess" 2 "unknown command 'key frobnicate': see 'kyok kp key --help'" "$KYOK" kp key frobnicate
expect_rc "kp key --help: the group's commands" 0 '^  create +key-create +create a root key' "$KYOK" kp key --help
expect_rc "kp key alone: the group's commands, exit 2" 2 '^usage: kyok kp key <command>' "$KYOK" kp key
expect_rc "kp --help: both spellings" 0 '^  key-create +key create +create a root key' "$KYOK" kp --help
expect_eq "kp help key create = kp key-create --help" "$("$KYOK" kp help key create)" "$("$KYOK" kp key-create --help)"
expect_eq "kp key wrap --help = kp wrap --help" "$("$KYOK" kp key wrap --help)" "$("$KYOK" kp wrap --help)"
expect_rc "errors name the spelling typed" 2 "^error: kyok kp key show: wrong usage: give the key ID" "$KYOK" kp key show

# ---- key rings, aliases, import tokens, registrations: both spellings ---------------------------
# feature DESC CMD...: CMD succeeds (every unit of this build serves these routes).
feature() {
	local desc=$1
	shift
	run_rc "$@"
	if [ "$rc" -eq 0 ]; then
		pass "$desc"
	else
		fail "$desc: exit $rc: $out"
	fi
}
mtok=$(jq -j .apikey "$AK/t-Manager.apikey" | curl -fsS --data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' \
	--data-urlencode "apikey@-" "$(unit_url 1)/identity/token" | jq -r .access_token)
rings=$(curl -s -H "Authorization: Bearer $mtok" -H "Bluemix-Instance: $iid" -w '\n%{http_code}' \
	"$(unit_url 1)/api/v2/key_rings")
expect_eq "key-rings: the unit answers 200" "${rings##*$'\n'}" 200
expect_eq "key-rings -o json: what the unit lists" \
	"$(stdout_of kpi Manager key-rings -o json | jq -c '[.resources[].id]')" \
	"$(sed '$d' <<<"$rings" | jq -c '[.resources[].id]')"
feature "key-ring create" kpi Manager key-ring create kp-ring-1
feature "key-ring-create" kpi Manager key-ring-create kp-ring-2
feature "key-ring delete" kpi Manager key-ring delete kp-ring-1
feature "key-ring-delete -f" kpi Manager key-ring-delete kp-ring-2 -f
feature "key alias-create ID ALIAS" kpi Manager key alias-create "$k2" kp-alias-1
feature "key-alias-create ID -a ALIAS" kpi Manager key-alias-create "$k2" -a kp-alias-2
feature "key alias-delete" kpi Manager key alias-delete "$k2" kp-alias-1
feature "key-alias-delete" kpi Manager key-alias-delete "$k2" kp-alias-2
feature "import-token create -e -m" kpi Manager import-token create -e 600 -m 2
feature "import-token-create --expiration --max-retrievals" kpi Manager import-token-create \
	--expiration 600 --max-retrievals 3
feature "import-token show" kpi Manager import-token show
feature "import-token-show -o json" kpi Manager import-token-show -o json
feature "registrations" kpi Manager registrations
feature "registrations -k" kpi Manager registrations -k "$k2"
expect_rc "key-ring create: a ring ID that is not one" 2 "'a/b' is not a key ring ID" kpi Manager key-ring create a/b
expect_rc "key alias-create: the alias twice" 2 'the alias is given twice' kpi Manager key alias-create "$k2" x1 -a x2
expect_rc "import-token create -e 0" 2 '^error: -e/--expiration: ' kpi Manager import-token create -e 0
expect_rc "kp key-rnigs: did you mean" 2 "did you mean 'kyok kp key-rings'" "$KYOK" kp key-rnigs
expect_rc "kp key-ring craete: did you mean" 2 "did you mean 'kyok kp key-ring create'" "$KYOK" kp key-ring craete r
expect_eq "the key kept no alias" "$(stdout_of kpi Reader key show "$k2" -o json | jq -r '.resources[0].aliases // [] | length')" 0

# ---- secure import through the CLI only; key rings and aliases on create; key update, sync -----
# One import token for all of it (a unit makes an RSA-4096 key for each token): the one made
# above, which has a retrieval left. The key material never goes on a command line.
head -c 32 /dev/urandom >"$T_DIR/imp.bin"
head -c 32 /dev/urandom >"$T_DIR/imp-other.bin"
head -c 20 /dev/urandom >"$T_DIR/imp-20.bin"
kpi Manager import-token show -o json >"$T_DIR/tok.json"
pub=$(jq -r .payload "$T_DIR/tok.json")
nonce=$(jq -r .nonce "$T_DIR/tok.json")
ek=$(stdout_of "$KYOK" kp import-token key-encrypt --key-file "$T_DIR/imp.bin" -p "$pub" -o json | jq -r .encryptedKey)
expect_eq "import-token key-encrypt -o json: 512 bytes (RSA-4096)" "$(base64 -d <<<"$ek" | wc -c)" 512
expect_rc "import-token-key-encrypt --pubkey: the table" 0 '^encrypted key +[A-Za-z0-9+/]{680}' \
	"$KYOK" kp import-token-key-encrypt --key-file "$T_DIR/imp.bin" --pubkey "$pub"
"$KYOK" kp import-token nonce-encrypt --key-file "$T_DIR/imp.bin" -n "$nonce" -o json >"$T_DIR/en.json"
en=$(jq -r .encryptedNonce "$T_DIR/en.json")
niv=$(jq -r .iv "$T_DIR/en.json")
expect_eq "import-token nonce-encrypt -o json: 28 and 12 bytes" \
	"$(base64 -d <<<"$en" | wc -c) $(base64 -d <<<"$niv" | wc -c)" "28 12"
expect_rc "import-token-nonce-encrypt --nonce: the table" 0 '^iv +[A-Za-z0-9+/]{16}$' \
	"$KYOK" kp import-token-nonce-encrypt --key-file "$T_DIR/imp.bin" --nonce "$nonce"
# refusals on this host, before anything is sent
k64=$(base64 -w0 "$T_DIR/imp.bin")
expect_rc "import-token key-encrypt -k: refused, the material not echoed" 2 \
	'^error: -k/--key: this ibmcloud kp option is not offered by kyok kp: key material on the command line is seen by every user.*--key-file FILE' \
	"$KYOK" kp import-token key-encrypt -k "$k64" -p "$pub"
if grep -qF "$k64" <<<"$out"; then fail "key-encrypt -k: the material echoed"; else pass "key-encrypt -k: the material not echoed"; fi
expect_rc "import-token nonce-encrypt --key: refused" 2 '^error: -k/--key: .*--key-file FILE' \
	"$KYOK" kp import-token nonce-encrypt --key "$k64" -n "$nonce"
expect_rc "import-token nonce-encrypt -c: refused by name" 2 '^error: -c/--cbc: .*AES-GCM only' \
	"$KYOK" kp import-token nonce-encrypt --key-file "$T_DIR/imp.bin" -n "$nonce" -c
expect_rc "import-token key-encrypt -a MD5" 2 "^error: -a/--hash: .*not 'MD5'" \
	"$KYOK" kp import-token key-encrypt --key-file "$T_DIR/imp.bin" -p "$pub" -a MD5
expect_rc "import-token key-encrypt -p of no key" 3 "^error: -p/--pubkey: this is not an import token's public key" \
	"$KYOK" kp import-token key-encrypt --key-file "$T_DIR/imp.bin" -p "$(printf 'not a key' | base64)"
expect_rc "import-token key-encrypt: 20 bytes of material" 3 "^error: --key-file .*imp-20.bin: key material has the wrong length.*20 bytes" \
	"$KYOK" kp import-token key-encrypt --key-file "$T_DIR/imp-20.bin" -p "$pub"
expect_rc "import-token key-encrypt without --key-file" 2 'give the key material to import: --key-file FILE' \
	"$KYOK" kp import-token key-encrypt -p "$pub"
expect_rc "import-token nonce-encrypt -n of 9 bytes" 3 "^error: -n/--nonce: this is not an import token's nonce" \
	"$KYOK" kp import-token nonce-encrypt --key-file "$T_DIR/imp.bin" -n "$(head -c 9 /dev/zero | base64)"
expect_rc "import-token key-encrypt -i of another instance: refused" 3 "^error: -i/--instance-ID: .*'not-$iid' is not this instance" \
	"$KYOK" kp import-token key-encrypt --key-file "$T_DIR/imp.bin" -p "$pub" -i "not-$iid"
expect_rc "import-token nonce-encrypt --key-ring: refused, nothing to send it with" 2 "^error: --key-ring: .*key create -r RING" \
	"$KYOK" kp import-token nonce-encrypt --key-file "$T_DIR/imp.bin" -n "$nonce" --key-ring kp-ring-a
expect_rc "key create -k, -n, -v with -s: refused" 2 '^error: -k/--key-material: .*is a root key' \
	kpi Writer key create kp-refused -k "$ek" -n "$en" -v "$niv" -s
expect_rc "key create -k of material in the clear, with -n, -v: refused" 2 '^error: -k/--key-material: .*not key material in the clear' \
	kpi Writer key create kp-refused -k "$k64" -n "$en" -v "$niv"
expect_rc "key create -v of 8 bytes: refused" 2 "^error: -v/--iv: .*is not an IV" \
	kpi Writer key create kp-refused -k "$ek" -n "$en" -v "$(head -c 8 /dev/zero | base64)"
# the unit's refusals: a nonce encrypted under other material, then the import, then a replay
"$KYOK" kp import-token nonce-encrypt --key-file "$T_DIR/imp-other.bin" -n "$nonce" -o json >"$T_DIR/en2.json"
expect_rc "key create: the nonce under other material, refused by the unit" 3 "^error: key 'kp-refused': " \
	kpi Writer key create kp-refused -k "$ek" -n "$(jq -r .encryptedNonce "$T_DIR/en2.json")" -v "$(jq -r .iv "$T_DIR/en2.json")"
kimp=$(stdout_of kpi Writer key create kp-imported -k "$ek" -n "$en" -v "$niv" -o json | jq -r '.resources[0].id')
if [[ "$kimp" =~ ^[0-9a-f-]{36}$ ]]; then pass "key create -k -n -v: imported through the token ($kimp)"; else fail "key create -k -n -v: '$kimp'"; fi
expect_eq "... a root key, imported" \
	"$(stdout_of kpi Reader key show "$kimp" -o json | jq -r '.resources[0] | "\(.extractable) \(.imported)"')" "false true"
expect_rc "key create with the same -k -n -v again: the nonce is used, refused" 3 "^error: key 'kp-imported2': " \
	kpi Writer key-create --name kp-imported2 --key-material "$ek" --encrypted-nonce "$en" --iv "$niv"
# The unit took the key only after the nonce decrypted under it with AES-GCM (tag checked):
# it holds exactly the material of imp.bin. It wraps and unwraps.
head -c 32 /dev/urandom >"$T_DIR/imp-dek.bin"
kpi Reader key wrap "$kimp" --plaintext-file "$T_DIR/imp-dek.bin" -o json | jq -j .ciphertext >"$T_DIR/imp-ct.txt"
expect_eq "wrap, unwrap with the imported key" \
	"$(stdout_of kpi Reader key unwrap "$kimp" --ciphertext-file "$T_DIR/imp-ct.txt" --show)" \
	"$(base64 -w0 <"$T_DIR/imp-dek.bin")"
expect_eq "no key made by a refused import" \
	"$(stdout_of kpi Reader keys --limit 5000 --state 1,2,3,5 -o json | jq '[.resources[] | select(.name == "kp-refused" or .name == "kp-imported2")] | length')" 0
# key rings: create in one (-r), with aliases (-a, repeated and with commas), list it, move it
expect_ok "key-ring create kp-ring-a" kpi Manager key-ring create kp-ring-a
kr=$(stdout_of kpi Writer key create kp-ringed -r kp-ring-a -a kp-al-1 -a kp-al-2,kp-al-3 -o json | jq -r '.resources[0].id')
expect_eq "key create -r RING -a -a: in that ring, with the aliases" \
	"$(stdout_of kpi Reader key show "$kr" -o json | jq -r '.resources[0] | "\(.keyRingID) \(.aliases | sort | join(","))"')" \
	"kp-ring-a kp-al-1,kp-al-2,kp-al-3"
expect_eq "keys --key-ring RING: that key only" \
	"$(stdout_of kpi Reader keys --key-ring kp-ring-a -o json | jq -r '[.resources[].id] | join(",")')" "$kr"
expect_rc "key show --key-ring of another ring: refused by the unit" 3 "^error: key $kr: " \
	kpi Reader key show "$kr" --key-ring default
expect_rc "key update ID -r default" 0 "keyRingID +default" kpi Manager key update "$kr" -r default
expect_eq "... seen in key show -o json" \
	"$(stdout_of kpi Reader key show "$kr" -o json | jq -r '.resources[0].keyRingID')" default
expect_eq "key-update ID --new-key-ring RING -o json: moved back" \
	"$(stdout_of kpi Manager key-update "$kr" --new-key-ring kp-ring-a -o json | jq -r '.resources[0].keyRingID')" kp-ring-a
expect_rc "key update -r of no ring: refused by the unit, naming it" 3 "^error: key $kr: .*kp-no-ring" \
	kpi Manager key update "$kr" -r kp-no-ring
expect_eq "... the key stayed in its ring" \
	"$(stdout_of kpi Reader key show "$kr" -o json | jq -r '.resources[0].keyRingID')" kp-ring-a
expect_rc "key update without -r" 2 'give the key ring to move the key to' kpi Manager key update "$kr"
expect_rc "key update -r 'a/b': refused here" 2 "^error: -r/--new-key-ring: .*'a/b' is not a key ring ID" \
	kpi Manager key update "$kr" -r a/b
expect_rc "key create --key-ring of no ring: refused by the unit" 3 "^error: key 'kp-refused': .*kp-no-ring" \
	kpi Writer key create kp-refused --key-ring kp-no-ring
expect_rc "keys --key-ring 'a/b': refused here" 2 "^error: --key-ring: .*'a/b' is not a key ring ID" \
	kpi Reader keys --key-ring a/b
expect_rc "key create -a of no alias: refused here" 2 "^error: -a/--aliases: .*'b@d' is not an alias" \
	kpi Writer key create kp-refused -a b@d
expect_eq "no key made by these refusals" \
	"$(stdout_of kpi Reader keys --limit 5000 --state 1,2,3,5 -o json | jq '[.resources[] | select(.name == "kp-refused")] | length')" 0
expect_eq "registrations -c CRN -r RING -o json: none (no service registers kyok keys)" \
	"$(stdout_of kpi Reader registrations -c 'crn:v1:bluemix:public:cloud-object-storage:global:a/1:2:bucket:b' -r kp-ring-a -o json | jq '.resources // [] | length')" 0
expect_rc "registrations -c of nothing: refused here" 2 '^error: -c/--crn-query: ' kpi Reader registrations -c ''
# sync: the units refuse it within an hour of the key's last change, as Key Protect does
expect_rc "key sync: within the hour, refused by the unit" 5 "^error: key $kr: " kpi Writer key sync "$kr"
expect_rc "key-sync: the same" 5 "^error: key $kr: " kpi Writer key-sync "$kr"

# ---- policies acted on over time: the policy pass of both units -----------------------------
# The units are restarted with the pass's clock some days ahead (policy_pass_days_ahead, a
# testing aid of unit.conf) and a pass every second; the test waits for passes to have run
# (kyok_policy_passes_total), never for time.
prk=$(stdout_of kp Writer key-create --name rotates-monthly --output json | jq -r '.resources[0].id')
expect_ok "a key with a rotation policy of 1 month" kp Manager policies "$prk" --rotation-months 1
pdk=$(stdout_of kp Writer key-create --name deleted-now --output json | jq -r '.resources[0].id')
expect_ok "a key deleted now" kp Manager key-delete "$pdk"
# ahead DAYS: both units restarted, the pass's clock DAYS ahead; returns once each unit has
# finished a pass.
ahead() {
	local n i
	"$KYOK" down >/dev/null 2>&1
	for n in 1 2; do
		sed -i '/^policy_pass_/d' "$KYOK_INSTANCE/unit-$n/unit.conf"
		printf 'policy_pass_interval = 1\npolicy_pass_days_ahead = %s\n' "$1" >>"$KYOK_INSTANCE/unit-$n/unit.conf"
	done
	"$KYOK" up >/dev/null 2>&1 || fail "kyok up with policy_pass_days_ahead = $1"
	for n in 1 2; do
		for i in $(seq 1 300); do
			metrics_of "$n" "$T_DIR/m$n"
			[ "$(metric "$T_DIR/m$n" kyok_policy_passes_total)" -ge 2 ] && break
			sleep 0.1
		done
		[ "$(metric "$T_DIR/m$n" kyok_policy_passes_total)" -ge 2 ] || fail "unit $n ran no policy pass"
	done
}
versions() { stdout_of kp Reader key-versions "$1" --output json | jq '.resources | length'; }
ahead 27
expect_eq "27 days on: the monthly key is not rotated" "$(versions "$prk")" 1
expect_rc "27 days on: the deleted key is not purged" 0 "$pdk" kp MgrPurge keys --state destroyed
ahead 91
expect_eq "91 days on: the monthly key is rotated, once, with two units running the pass" \
	"$(versions "$prk")" 2
expect_rc "... its lastRotateDate shows it" 0 'lastRotateDate' \
	kp Reader key-show "$prk" --output json
expect_eq "... counted once over both units' /metrics" \
	"$(($(metric "$T_DIR/m1" 'kyok_policy_keys_total{outcome="rotated"}') + $(metric "$T_DIR/m2" 'kyok_policy_keys_total{outcome="rotated"}')))" 1
expect_rc "91 days on: the key deleted then is purged" 3 "key $pdk" kp Reader key-show "$pdk"
if grep -rqh --include='*.jsonl' "\"method\":\"POLICY\".*\"action\":\"rotate\".*\"key\":\"$prk\"" "$KYOK_INSTANCE"; then
	pass "... the rotation is in a unit's audit log"
else
	fail "no audit line of the policy pass's rotation of $prk"
fi
# Its intent line first, as the key API writes one before it acts: a pass whose audit log
# does not take it acts on nothing.
if grep -rqh --include='*.jsonl' "\"phase\":\"intent\".*\"method\":\"POLICY\".*\"action\":\"rotate\".*\"key\":\"$prk\"" "$KYOK_INSTANCE"; then
	pass "... its intent line was written before it"
else
	fail "no audit intent line of the policy pass's rotation of $prk"
fi
if grep -rqh "policy pass: key $pdk purged" "$KYOK_INSTANCE"; then
	pass "... the purge is in a unit's log"
else
	fail "no log line of the policy pass's purge of $pdk"
fi

finish
