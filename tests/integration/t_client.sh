#!/usr/bin/env bash
# 'kyok kp' never acts twice: a state change carries a request id (Idempotency-Key) that the
# units keep with the change, so a request sent again to another unit after a unit went
# silent is answered with the first reply, not carried out again. Timeouts (--timeout,
# KYOK_TIMEOUT), a stopped unit, and the units' refusals of a reused or malformed request id.
. "$(dirname "$0")/helpers.sh"
setup
PROXY="$KYOK_BUILD/tests/holdproxy"

AK="$KYOK_TKE_FILES/apikeys"
kp() {
	local role=$1 cmd=$2
	shift 2
	"$KYOK" kp "$cmd" --apikey-file "$AK/t-$role.apikey" "$@"
}
# has DESC PATTERN: $out (the last run_rc) matches PATTERN (grep -E).
has() {
	if grep -qE -- "$2" <<<"$out"; then pass "$1"; else fail "$1: no /$2/ in: $out"; fi
}
# wait_file PATH: waits (up to 30 s, polling) until PATH exists.
wait_file() {
	local i
	for i in $(seq 300); do
		[ -e "$1" ] && return 0
		sleep 0.1
	done
	return 1
}
# names_count NAME: how many keys named NAME the instance lists (any unit).
names_count() {
	kp Reader keys --output json | jq --arg n "$1" '[.resources[] | select(.name == $n)] | length'
}

"$KYOK" up --dir "$KYOK_INSTANCE" --units 2 >/dev/null 2>&1
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null 2>&1
pa=$(newpw ann)
expect_ok "auto-init" "$KYOK" tke auto-init --signature 1 --revocation 1 --new-admins ann \
	--password-file "$pa"
"$KYOK" tke sigkey-sel --sigkeys 1 >/dev/null 2>&1
for role in Reader Writer Manager; do
	expect_ok "apikey-create $role" "$KYOK" tke apikey-create --name "t-$role" --role "$role" \
		--password-file "$pa"
done
expect_ok "apikey-create a second Writer" "$KYOK" tke apikey-create --name t-Writer2 \
	--role Writer --password-file "$pa"

# ---- a unit that carries out a create and never answers -------------------------------------
# holdproxy in front of unit 1 forwards the create, lets unit 1 store the key, reads unit 1's
# reply and keeps it. The client, pointed at the proxy first and at unit 2 next, times out and
# sends the create to unit 2 with the same request id.
port1=$(unit_url 1 | sed 's/.*://')
"$PROXY" "$port1" "POST /api/v2/keys " "$T_DIR/proxy.port" "$T_DIR/held.http" \
	2>"$T_DIR/proxy.err" &
proxy_pid=$!
trap 'rc=$?; kill "$proxy_pid" 2>/dev/null || true; (exit $rc); cleanup' EXIT
wait_file "$T_DIR/proxy.port" || fail "holdproxy did not start: $(cat "$T_DIR/proxy.err")"
mkdir -p "$T_DIR/proxied"
jq --arg u "http://127.0.0.1:$(cat "$T_DIR/proxy.port")" '.units[0].url = $u' \
	"$(inst_file)" >"$T_DIR/proxied/instance.json"
start=$(date +%s.%N)
run_rc kp Writer key-create --name dup-x --instance "$T_DIR/proxied" --timeout 3 --verbose \
	--output json
end=$(date +%s.%N)
echo "info: create through the silent unit, then unit 2: $(echo "$end - $start" | bc) s"
if [ "$rc" -ne 0 ]; then
	fail "key-create through a unit that withholds its reply: exit $rc: $out"
else
	pass "key-create through a unit that withholds its reply: succeeds through unit 2"
fi
got=$(grep -E '^\{' <<<"$out" | jq -r '.resources[0].id')
has "... the client said it sent the same request id on" \
	'trying the next unit with the same request id kyok-kp-[0-9a-f]{32}'
has "... and unit 2 answered with the kept reply" 'had been carried out already'
expect_ok "... unit 1 did create the key (its withheld reply is a 201)" \
	grep -q '^HTTP/1.1 201' "$T_DIR/held.http"
held=$(sed -n '/^\r$/,$p' "$T_DIR/held.http" | tail -n +2 | jq -r '.resources[0].id')
expect_eq "... exactly one key named dup-x exists" "$(names_count dup-x)" 1
only=$(kp Reader keys --output json | jq -r '.resources[] | select(.name == "dup-x") | .id')
expect_eq "... the id the user got is that key's" "$got" "$only"
expect_eq "... and the one unit 1 made" "$held" "$only"
kill "$proxy_pid" 2>/dev/null || true

# ---- request ids on the wire ------------------------------------------------------------------
tok_of() {
	jq -j .apikey "$AK/t-$1.apikey" >"$T_DIR/ak.raw"
	curl -fsS --data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' \
		--data-urlencode "apikey@$T_DIR/ak.raw" "$(unit_url 1)/identity/token" |
		jq -r .access_token
	rm -f "$T_DIR/ak.raw"
}
WT=$(tok_of Writer)
W2T=$(tok_of Writer2)
MT=$(tok_of Manager)
RT=$(tok_of Reader)
# api N TOKEN METHOD PATH RID [BODY]: status line in $code, body in $T_DIR/api.json, headers
# in $T_DIR/api.hdr.
api() {
	local n=$1 tok=$2 m=$3 p=$4 rid=${5:-} body=${6:-}
	local args=(-s -X "$m" -D "$T_DIR/api.hdr" -o "$T_DIR/api.json" -w '%{http_code}'
		-H "Authorization: Bearer $tok" -H "Bluemix-Instance: $(instance_id)")
	[ -n "$rid" ] && args+=(-H "Idempotency-Key: $rid")
	[ -n "$body" ] && args+=(-H 'Content-Type: application/json' -d "$body")
	code=$(curl "${args[@]}" "$(unit_url "$n")/api/v2/$p")
}
reason() { jq -r '.resources[0].reasons[0].code' "$T_DIR/api.json"; }
body_a='{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"type":"application/vnd.ibm.kms.key+json","name":"rid-a","extractable":false}]}'
body_b='{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"type":"application/vnd.ibm.kms.key+json","name":"rid-b","extractable":false}]}'
api 1 "$WT" POST keys req-0001 "$body_a"
expect_eq "create with a request id: 201" "$code" 201
ida=$(jq -r '.resources[0].id' "$T_DIR/api.json")
api 2 "$WT" POST keys req-0001 "$body_a"
expect_eq "the same request again, on unit 2: 201" "$code" 201
expect_eq "... the same key" "$(jq -r '.resources[0].id' "$T_DIR/api.json")" "$ida"
expect_ok "... marked as the kept reply (Kyok-Replayed)" grep -qi '^Kyok-Replayed: true' "$T_DIR/api.hdr"
expect_eq "... one key named rid-a" "$(names_count rid-a)" 1
api 2 "$WT" POST keys req-0001 "$body_b"
expect_eq "the same request id with another body: 422" "$code" 422
expect_eq "... request-id-reused" "$(reason)" REQUEST_ID_REUSED_ERR
expect_eq "... nothing made" "$(names_count rid-b)" 0
api 1 "$WT" POST "keys?x=1" req-0001 "$body_a"
expect_eq "the same request id with another query: 422" "$code" 422
api 1 "$RT" POST keys req-0001 "$body_a"
expect_eq "a Reader with a known request id: 403 (the role first, no kept reply)" "$code" 403
api 1 "$RT" POST "keys/$ida/actions/rotate" req-0001 '{}'
expect_eq "... on an action too" "$code" 403
api 1 "$W2T" POST keys req-0001 "$body_a"
expect_eq "the same request id from another API key is another request: 201" "$code" 201
expect_eq "... a second key named rid-a" "$(names_count rid-a)" 2
api 1 "$WT" POST keys 'bad id!' "$body_b"
expect_eq "a malformed request id: 400" "$code" 400
expect_eq "... request-id-invalid" "$(reason)" REQUEST_ID_INVALID_ERR
api 1 "$WT" POST keys "$(head -c 129 /dev/zero | tr '\0' a)" "$body_b"
expect_eq "a request id of 129 characters: 400" "$code" 400
expect_eq "... nothing made" "$(names_count rid-b)" 0
api 1 "$WT" POST keys req-0002 '{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"name":"x"}]}'
expect_eq "a refused create (name too short) with a request id: 400" "$code" 400
api 1 "$WT" POST keys req-0002 "$body_b"
expect_eq "... a refusal is not kept: the id serves a corrected request (201)" "$code" 201
api 1 "$MT" DELETE "keys/$ida" req-0003
expect_eq "delete with a request id: 204" "$code" 204
api 2 "$MT" DELETE "keys/$ida" req-0003
expect_eq "... sent again to unit 2: the kept 204, not key-destroyed" "$code" 204
expect_ok "... marked as the kept reply" grep -qi '^Kyok-Replayed: true' "$T_DIR/api.hdr"
api 1 "$MT" DELETE "keys/$ida" req-0004
expect_eq "... a new request id: the key is destroyed already (410)" "$code" 410
api 1 "$WT" POST "keys/$only/actions/wrap" req-0005 '{}'
expect_eq "wrap with a request id: 200" "$code" 200
c1=$(jq -r .ciphertext "$T_DIR/api.json")
api 1 "$WT" POST "keys/$only/actions/wrap" req-0005 '{}'
expect_eq "... wrap changes nothing stored: carried out again (200)" "$code" 200
if [ "$(jq -r .ciphertext "$T_DIR/api.json")" != "$c1" ]; then
	pass "... a new data key, not a kept reply"
else
	fail "... wrap answered with a kept reply"
fi

# ---- every query parameter and body member of the key API: implemented or refused by name ----
uri() { jq -rn --arg v "$1" '$v | @uri'; }
names() { jq -r '[.resources[].name] | join(",")' "$T_DIR/api.json"; }
api 1 "$WT" GET "keys?search=rid"
expect_eq "search=rid: the keys whose name holds rid" "$(names)" "rid-a,rid-b"
api 1 "$WT" GET "keys?search=$(uri 'not:rid')"
expect_eq "search=not:rid: the others" "$(names)" "dup-x"
api 1 "$WT" GET "keys?search=$(uri 'exact:rid')"
expect_eq "search=exact:rid: none" "$(jq '.resources | length' "$T_DIR/api.json"):$(jq .metadata.totalCount "$T_DIR/api.json")" "0:0"
api 1 "$WT" GET "keys?search=$only"
expect_eq "search=<a key id>: that key" "$(names)" "dup-x"
api 1 "$WT" GET "keys?search=$(uri 'alias:rid')"
expect_eq "search=alias:rid: none (no key here has an alias)" "$(jq '.resources | length' "$T_DIR/api.json")" 0
# (keys made in the same second keep their creation order: compare dates, not names)
api 1 "$WT" GET "keys?sort=-creationDate"
expect_eq "sort=-creationDate: newest first" \
	"$(jq '[.resources[].creationDate] | . == (sort | reverse)' "$T_DIR/api.json")" true
expect_eq "... dup-x, the oldest, last" "$(jq -r '.resources[-1].name' "$T_DIR/api.json")" dup-x
second=$(jq -r '.resources[1].id' "$T_DIR/api.json")
api 1 "$WT" GET "keys?sort=-creationDate&limit=1&offset=1"
expect_eq "... paged after sorting" \
	"$(jq -r '.resources[0].id' "$T_DIR/api.json"):$(jq .metadata.totalCount "$T_DIR/api.json")" \
	"$second:3"
api 1 "$WT" GET "keys?sort=state,-extractable,id"
expect_eq "sort on three properties: 200" "$code:$(jq '.resources | length' "$T_DIR/api.json")" "200:3"
api 1 "$WT" GET "keys?filter=$(uri 'state=5')"
expect_eq "filter=state=5: the deleted key" "$(names)" "rid-a"
api 1 "$WT" GET "keys?filter=$(uri "creationDate=lt:\"2000-01-01T00:00:00Z\"")"
expect_eq "filter=creationDate=lt:2000: none" "$(jq '.resources | length' "$T_DIR/api.json")" 0
api 1 "$WT" GET "keys?filter=$(uri 'extractable=false deletionDate=none')&search=rid"
expect_eq "filter with two terms, and search" "$(names)" "rid-a,rid-b"
code=$(curl -s -o /dev/null -D "$T_DIR/head.hdr" -w '%{http_code}' -I \
	-H "Authorization: Bearer $WT" -H "Bluemix-Instance: $(instance_id)" \
	"$(unit_url 1)/api/v2/keys?search=rid")
expect_eq "HEAD with search: Key-Total counts the matches" \
	"$code:$(grep -i '^Key-Total:' "$T_DIR/head.hdr" | tr -d '\r' | awk '{print $2}')" "200:2"
api 1 "$WT" GET "keys?sort=name"
expect_eq "sort=name: 400" "$code:$(reason)" "400:MALFORMED_ERR"
api 1 "$WT" GET "keys?filter=$(uri 'name=x')"
expect_eq "filter on an unknown property: 400" "$code" 400
api 1 "$WT" GET "keys?foo=1"
expect_eq "an unknown query parameter: 400" "$code:$(reason)" "400:QUERY_PARAMETER_UNSUPPORTED_ERR"
expect_ok "... named" grep -q "'foo'" "$T_DIR/api.json"
api 1 "$WT" GET "keys/$only?limit=1"
expect_eq "a query parameter a route does not take: 400" "$code:$(reason)" "400:QUERY_PARAMETER_UNSUPPORTED_ERR"
api 1 "$WT" GET "keys/$only/versions?totalCount=true&allKeyStates=false"
expect_eq "versions with totalCount: 200 and the count" "$code:$(jq .metadata.totalCount "$T_DIR/api.json")" "200:1"
api 1 "$WT" GET "keys/$ida/versions"
expect_eq "versions of a deleted key without allKeyStates: 410" "$code:$(reason)" "410:KEY_DESTROYED_ERR"
api 1 "$WT" GET "keys/$ida/versions?allKeyStates=true"
expect_eq "... with allKeyStates=true: 200" "$code" 200
api 1 "$WT" GET "keys/$ida/versions?allKeyStates=maybe"
expect_eq "allKeyStates=maybe: 400" "$code" 400
api 1 "$WT" POST keys "" '{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"name":"with-alias","aliases":["a"]}]}'
expect_eq "create with an alias of 1 character: 400" "$code:$(reason)" "400:KEY_ALIAS_INVALID_ERR"
expect_ok "... names it" grep -qF "'resources[0].aliases[0]'" "$T_DIR/api.json"
api 1 "$WT" POST keys "" '{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"name":"with-tags","tags":["t"]}]}'
expect_eq "create with an unknown member: 400" "$code:$(reason)" "400:BODY_MEMBER_UNSUPPORTED_ERR"
expect_ok "... names it" grep -qF "'resources[0].tags'" "$T_DIR/api.json"
expect_eq "... nothing made" "$(names_count with-alias)$(names_count with-tags)" "00"
api 1 "$WT" POST "keys/$only/actions/wrap" "" '{"ciphertext":"AAAA"}'
expect_eq "wrap with a ciphertext member: 400" "$code:$(reason)" "400:BODY_MEMBER_UNSUPPORTED_ERR"
api 1 "$WT" POST "keys/$only/actions/unwrap" "" "{\"ciphertext\":\"$c1\",\"plaintext\":\"AAAA\"}"
expect_eq "unwrap with a plaintext member: 400" "$code" 400
api 1 "$WT" POST "keys/$only/actions/wrap" "" '{"plain":"AAAA"}'
expect_eq "wrap with an unknown member: 400" "$code" 400
expect_ok "... named" grep -q "'plain'" "$T_DIR/api.json"
api 1 "$MT" POST "keys/$only/actions/disable" "" '{"payload":"AAAA"}'
expect_eq "disable with a body member: 400, the key stays Active" \
	"$code:$(kp Reader keys --output json | jq -r --arg i "$only" '.resources[] | select(.id == $i) | .state')" "400:1"
api 1 "$MT" POST "keys/$ida/restore" "" '{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"payload":"AAAA"}]}'
expect_eq "restore with a payload: 400 (kyok keeps the material)" "$code" 400
code=$(curl -s -o "$T_DIR/api.json" -w '%{http_code}' -H "Authorization: Bearer $WT" \
	-H "Bluemix-Instance: $(instance_id)" -H "X-Kms-Key-Ring: default" "$(unit_url 1)/api/v2/keys")
expect_eq "X-Kms-Key-Ring: default: 200" "$code" 200
code=$(curl -s -o "$T_DIR/api.json" -w '%{http_code}' -H "Authorization: Bearer $WT" \
	-H "Bluemix-Instance: $(instance_id)" -H "X-Kms-Key-Ring: ring-2" "$(unit_url 1)/api/v2/keys")
expect_eq "X-Kms-Key-Ring naming a ring the instance does not have: 404" "$code:$(reason)" "404:KEY_RING_NOT_FOUND_ERR"
api 1 "$MT" DELETE "keys/$only?force=maybe" ""
expect_eq "delete with force=maybe: 400" "$code" 400
api 1 "$MT" DELETE "keys/$only?force=true" ""
expect_eq "delete with force=true: 204 (no registrations in kyok: the same delete)" "$code" 204

# ---- timeouts -----------------------------------------------------------------------------------
expect_rc "--timeout 0: refused" 2 "--timeout takes a whole number of seconds" \
	kp Reader keys --timeout 0
expect_rc "--timeout abc: refused" 2 "--timeout takes a whole number of seconds" \
	kp Reader keys --timeout abc
expect_rc "KYOK_TIMEOUT=abc: refused" 2 'KYOK_TIMEOUT must be a whole number' \
	env KYOK_TIMEOUT=abc "$KYOK" kp keys --apikey-file "$AK/t-Reader.apikey"
expect_rc "KYOK_TIMEOUT=abc: the admin client refuses it too" 2 'KYOK_TIMEOUT must be' \
	env KYOK_TIMEOUT=abc "$KYOK" tke cryptounit-thrhlds
expect_ok "KYOK_TIMEOUT=5" env KYOK_TIMEOUT=5 "$KYOK" kp keys --apikey-file "$AK/t-Reader.apikey"

# ---- a hung unit ----------------------------------------------------------------------------------
rm -f "$KYOK_INSTANCE/unit-failures"
pid1=$(cat "$KYOK_INSTANCE/unit-1/pid")
kill -STOP "$pid1"
trap 'rc=$?; kill -CONT "$pid1" 2>/dev/null || true; (exit $rc); cleanup' EXIT
start=$(date +%s.%N)
expect_rc "unit 1 stopped: keys --timeout 2 served by unit 2" 0 'served by crypto unit 2' \
	kp Reader keys --timeout 2 --verbose
end=$(date +%s.%N)
echo "info: keys with unit 1 stopped: $(echo "$end - $start" | bc) s"
expect_ok "... unit 1 noted in unit-failures" grep -qE "^$(unit_id 1) [0-9]+$" \
	"$KYOK_INSTANCE/unit-failures"
expect_eq "... the file is 0600" "$(stat -c %a "$KYOK_INSTANCE/unit-failures")" 600
run_rc kp Writer key-create --name key-y --timeout 2 --verbose
if [ "$rc" -eq 0 ] && grep -q 'served by crypto unit 2' <<<"$out" &&
	! grep -q 'crypto unit 1' <<<"$out"; then
	pass "unit 1 just failed: the next command goes to unit 2 first"
else
	fail "unit 1 just failed: exit $rc: $out"
fi
start=$(date +%s.%N)
expect_rc "unit 1 stopped, tried first (--unit 1): key-create served by unit 2" 0 \
	'served by crypto unit 2' kp Writer key-create --name key-z --timeout 2 --verbose --unit 1
end=$(date +%s.%N)
echo "info: create with unit 1 stopped and tried first: $(echo "$end - $start" | bc) s"
has "... unit 1 timed out, unit 2 took over" 'crypto unit 1 .*Timeout was reached: trying the next unit'
kill -CONT "$pid1"
expect_eq "... one key named key-y" "$(names_count key-y)" 1
expect_eq "... one key named key-z" "$(names_count key-z)" 1
expect_rc "unit 1 serves again: --unit 1 served by unit 1" 0 'served by crypto unit 1' \
	kp Reader keys --unit 1 --verbose
expect_rc "... which clears its line (the next command tries unit 1 first)" 0 \
	'served by crypto unit 1' kp Reader keys --verbose

finish
