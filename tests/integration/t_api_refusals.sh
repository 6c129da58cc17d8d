#!/usr/bin/env bash
# Every refusal of the key API in one place, at the HTTP level: each request must be answered
# with the status and the Key Protect error body (application/vnd.ibm.kms.error+json, one
# resource, reasons[0] with code, message, status) the SDKs expect, and key storage must be
# exactly as before (digest of the whole database). One line of output per refusal.
#   tokens: none, not Bearer, garbage, truncated, claims edited, alg none, signed with another
#     secret, issued by another instance, expired (token_ttl = 10 in unit.conf)
#   Bluemix-Instance missing or naming another instance
#   roles: Reader / ReaderPlus create, Writer disable / delete / policies, Manager purge,
#     KeyPurge wrap
#   key storage: a record's ciphertext or its clear 'extractable' column altered in the
#     database (sqlite3): detected, not served, by both units; API key rows altered (role
#     raised, a key inserted with a copied / random / no tag, a hash swapped, a revocation
#     undone): refused by the token service and the API of both units, listed ALTERED,
#     revocable all the same; an altered row (a revocation undone) or one without a tag never
#     written again by apikey-create with the same name; a unit without the master key
#     (a third unit never initialised; an instance not initialised): token service and API
#     say so; the key limit (key_limit = 3), and after a zeroize and a new master key (the
#     shredded records do not count; the API keys went with the master key)
#   dual authorization: deletion set and delete by the same API key; no deletion set
#   key rings: made twice, 'default', a bad id, by a Reader; a key made in a missing ring; a
#     bad header; a key looked up, wrapped, moved under another ring's header; deleted while
#     it holds a key, 'default', by a Writer; a key moved by a Writer, to a missing ring, with
#     another member
#   key aliases: every route kind by alias, on both units; alias in use, on its own key, a
#     UUID, bad characters and lengths, by a Reader, deleted by a Writer, a 6th, unknown, in
#     another case, not the key's; at creation: in use, twice, 6, invalid, not an array; the
#     alias index altered in the database
#   import tokens: none yet, roles, bad bodies, retrievals used up (one retrieval counted per
#     GET, on either unit); secure import: payload not for the token, nonce under another
#     key, another nonce, a nonce used again, a refused rotation leaves the nonce usable,
#     standard keys, enforce_token; a new token replaces the old; sync within the hour,
#     registrations (empty), purge too early (REQ_TOO_EARLY_ERR)
#   malformed JSON, a body over the limit (with and without Content-Length), unknown route,
#   wrong method
#   API key roles: apikey-create commands built by hand with a role repeated, unknown or an
#     empty item: refused by the unit, nothing stored; a list out of order stored in order
#   instance policies allowedNetwork, allowedIP, metrics: set, listed; allowedIP enforced by
#     both units on a request from an address not listed (127.0.0.2), a PUT that would lock
#     its sender out, ranges and values that do not parse; two PUTs at once, one per unit:
#     neither lost
#   instance policies: an attribute given as null, ?policy= naming an unknown type (GET, PUT)
#   body members: an unknown member at each level of key policies, instance policies, create,
#     actions (plain and as a collection): 400 naming its path, the policies read back
#     unchanged; a GET with a member; the token form's fields (response_type=cloud_iam
#     taken, others refused)
#   key reads from a unit's key cache: GET /keys/ID and .../metadata on unit 1, holding the
#     key opened, right after each change through unit 2 (disable, enable, rotate, dual-auth
#     policy, deletion set and cancelled, delete, restore, alias made and deleted, key ring
#     moves), by role (payload or not), past its expiration, altered by hand, purged by unit
#     2's policy pass: the status and body unit 2 answers
. "$(dirname "$0")/helpers.sh"
setup
IFS=$'\n' # $(auth ...) and $(json_body ...) expand to one curl argument a line

A="$KYOK_INSTANCE" # the main instance: units 1 and 2 initialised, unit 3 not
B="$T_DIR/instB"   # a second instance, 1 unit
AK="$KYOK_TKE_FILES/apikeys"
KT="application/vnd.ibm.kms.key+json"
ET="application/vnd.ibm.kms.error+json"
pa=$(newpw ann)

# url_of DIR N, iid_of DIR: from the copy of DIR/instance.json inst_get keeps (no process).
url_of() { KYOK_INSTANCE=$1 inst_get "url$2"; }
iid_of() { KYOK_INSTANCE=$1 inst_get instance; }
# token_of FILE [URL]: an access token for the API key in FILE (JSON with .apikey).
token_of() {
	jq -j .apikey "$1" >"$T_DIR/ak.raw"
	curl -fsS --data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' \
		--data-urlencode "apikey@$T_DIR/ak.raw" "${2:-$(url_of "$A" 1)}/identity/token" |
		jq -r .access_token
}
# digest DIR: the whole key storage of instance DIR (read-only), as one hash.
# (SHA3 of every table's rows and of the schema, by sqlite3 itself: one process.)
digest() { sqlite3 -readonly "$1/keys.db" ".sha3sum --schema"; }
# sel NAME...: selects the signature keys of those administrators.
sel() {
	local nums IFS=' '
	nums=$("$KYOK" tke sigkeys --output json | jq -r --arg n "$*" \
		'[.sigkeys[] | select(.name as $x | $n | split(" ") | index($x)) | .number] | join(",")')
	"$KYOK" tke sigkey-sel --sigkeys "$nums" >/dev/null
}
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
unb64url() {
	local s
	s=$(tr -- '-_' '+/')
	while [ $((${#s} % 4)) -ne 0 ]; do s+="="; done
	base64 -d <<<"$s"
}

# call [DIR] [N] ARGS...: curl to unit N (default 1) of instance DIR (default A); the body
# in $T_DIR/body, the status in $status. ARGS: curl options, the path last.
call() {
	local dir=$A n=1 path
	[ -d "${1:-}" ] && { dir=$1; shift; }
	[[ ${1:-} =~ ^[1-3]$ ]] && { n=$1; shift; }
	path=${*: -1}
	status=$(curl -sS -o "$T_DIR/body" -w '%{http_code}' "${@:1:$#-1}" "$(url_of "$dir" "$n")$path")
}
# auth TOKEN [IID]: the headers of an authenticated request to instance A (or IID).
auth() { printf -- '-H\nAuthorization: Bearer %s\n-H\nBluemix-Instance: %s\n' "$1" "${2:-$(iid_of "$A")}"; }
json_body() { printf -- '-H\nContent-Type: application/json\n--data-binary\n%s\n' "$1"; }
create_json() {
	printf '{"metadata":{"collectionType":"%s","collectionTotal":1},"resources":[{"type":"%s","name":"%s","extractable":%s}]}' \
		"$KT" "$KT" "$1" "${2:-false}"
}

# refused DESC STATUS CODE [DIR] [N] ARGS...: the request must be refused with STATUS and a
# Key Protect error body with reason CODE, key storage of the instance unchanged.
refused() {
	local desc=$1 want=$2 code=$3 dir=$A before after got msg
	shift 3
	[ -d "${1:-}" ] && dir=$1
	before=$(digest "$dir")
	call "$@"
	after=$(digest "$dir")
	# One jq: the verdict on the first line, the message on the second.
	{ IFS=$'\n' read -r got && IFS= read -r msg; } < <(jq -r --arg et "$ET" 'if .metadata.collectionType == $et and .metadata.collectionTotal == 1
		and (.resources | length) == 1 and (.resources[0].errorMsg | type) == "string"
		then "\(.resources[0].reasons[0].code) \(.resources[0].reasons[0].status)" else "not-a-kp-error" end,
		(.resources[0].reasons[0].message? // null | tostring)' \
		"$T_DIR/body" 2>/dev/null || echo "not-json") || true
	[ -n "${got:-}" ] || got=not-json
	if [ "$status" != "$want" ] || [ "$got" != "$code $want" ]; then
		fail "$desc: got $status '$got', want $want '$code $want': $(head -c 300 "$T_DIR/body")"
	elif [ "$before" != "$after" ]; then
		fail "$desc: refused, but key storage changed"
	else
		pass "$desc: $status $code ($msg)"
	fi
}
# says DESC TEXT: the last refusal's message holds TEXT.
says() {
	local m
	m=$(jq -r '.resources[0].reasons[0].message' "$T_DIR/body" 2>/dev/null || true)
	if [[ $m == *"$2"* ]]; then pass "$1"; else fail "$1: message '$m' lacks '$2'"; fi
}
# accepted DESC STATUS [DIR] [N] ARGS...: the request must succeed with STATUS.
accepted() {
	local desc=$1 want=$2
	shift 2
	call "$@"
	if [ "$status" = "$want" ]; then pass "$desc: $status"; else fail "$desc: got $status, want $want: $(head -c 300 "$T_DIR/body")"; fi
}

# ---- instance B, not initialised: no master key -------------------------------------------
"$KYOK" up --dir "$B" --units 2 >/dev/null 2>&1
"$KYOK" down --instance "$B" >/dev/null 2>&1
printf 'key_limit = 3\nkey_cache = 2\n' | tee -a "$B/unit-1/unit.conf" >>"$B/unit-2/unit.conf"
"$KYOK" up --instance "$B" >/dev/null 2>&1
KYOK_INSTANCE=$B "$KYOK" tke cryptounit-add --units 1,2 >/dev/null 2>&1
refused "API of an instance not initialised (no master key)" 503 NO_MASTER_KEY_ERR "$B" \
	$(auth "any.bearer.token" "$(iid_of "$B")") /api/v2/keys

# Initialised: its own master key and token signing key.
expect_ok "instance B: auto-init" env KYOK_INSTANCE="$B" "$KYOK" tke auto-init --signature 1 \
	--revocation 1 --new-admins bob,bea --password-file "$(newpw bob)" --password-file "$(newpw bea)"
sel bob
expect_ok "instance B: apikey-create" env KYOK_INSTANCE="$B" "$KYOK" tke apikey-create \
	--name b-writer --role Writer --password-file "$T_DIR/pw/bob"
TB=$(token_of "$AK/b-writer.apikey" "$(url_of "$B" 1)")

# ---- instance A: API keys of every role; units 1 and 2 initialised, unit 3 not -------------
"$KYOK" up --units 3 >/dev/null 2>&1
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null 2>&1
expect_ok "instance A: auto-init" "$KYOK" tke auto-init --signature 1 --revocation 1 \
	--new-admins ann --password-file "$pa"
sel ann
for role in Reader ReaderPlus Writer Manager Manager2 KeyPurge; do
	"$KYOK" tke apikey-create --name "r-$role" --role "${role%2}" --password-file "$pa" >/dev/null 2>&1 ||
		fail "apikey-create $role"
done
# The unit's own check of apikey-create's role list, with commands built by hand (openssl
# cms) and posted to the unit: a repeated or unknown role is refused by name and nothing is
# stored; a list in another order is stored in the canonical one.
akhash=$(head -c 32 /dev/urandom | sha256sum | cut -d' ' -f1)
for bad in Manager,Manager Manager,Admin Manager,,KeyPurge; do
	cmd_json 1 apikey-create "{\"apikey_id\":\"r-bad\",\"name\":\"bad\",\"role\":\"$bad\",\"hash\":\"$akhash\"}" >"$T_DIR/ak.json"
	sign_cmd "$T_DIR/ak.json" "$T_DIR/ak.der" ann
	before=$(digest "$A")
	expect_refused "unit: apikey-create with role list '$bad'" apikey-roles 1 "$T_DIR/ak.der"
	expect_eq "... key storage unchanged" "$(digest "$A")" "$before"
done
cmd_json 1 apikey-create "{\"apikey_id\":\"r-two\",\"name\":\"two\",\"role\":\"KeyPurge,Writer\",\"hash\":\"$akhash\"}" >"$T_DIR/ak.json"
sign_cmd "$T_DIR/ak.json" "$T_DIR/ak.der" ann
expect_eq "unit: apikey-create with 'KeyPurge,Writer' taken" "$(post_cmd 1 "$T_DIR/ak.der" | jq -r .ok)" true
expect_eq "... stored and listed as 'Writer,KeyPurge', its tag verified" \
	"$(curl -fsS "$(url_of "$A" 2)/v1/admin/apikeys" | jq -r '.apikeys[] | select(.id == "r-two") | "\(.role) \(.verified)"')" \
	"Writer,KeyPurge true"
declare -A TOK
for role in Reader ReaderPlus Writer Manager Manager2 KeyPurge; do
	TOK[$role]=$(token_of "$AK/r-$role.apikey")
done
IA=$(iid_of "$A")
W=${TOK[Writer]}
M=${TOK[Manager]}
# key ID: a root key made by the Writer.
mkkey() {
	call $(auth "$W") $(json_body "$(create_json "$1")") -X POST /api/v2/keys
	jq -r '.resources[0].id' "$T_DIR/body"
}
K=$(mkkey main)
accepted "control: the Writer's token wraps with key $K" 200 $(auth "$W") $(json_body '{}') \
	-X POST "/api/v2/keys/$K/actions/wrap"
CT=$(jq -r .ciphertext "$T_DIR/body")

# ---- tokens --------------------------------------------------------------------------------
refused "no Authorization header" 401 UNAUTHORIZED_ERR -H "Bluemix-Instance: $IA" /api/v2/keys
refused "Authorization: Basic instead of Bearer" 401 UNAUTHORIZED_ERR \
	-H "Authorization: Basic $(printf 'a:b' | base64)" -H "Bluemix-Instance: $IA" /api/v2/keys
refused "garbage bearer token" 401 UNAUTHORIZED_ERR $(auth "abc.def.ghi") /api/v2/keys
refused "truncated token (signature cut short)" 401 UNAUTHORIZED_ERR $(auth "${W%?????}") /api/v2/keys
IFS=. read -r th tp ts <<<"$W"
edited=$(printf '%s' "$tp" | unb64url | jq -c '.role = "Manager" | .exp += 86400' | b64url)
refused "token with its claims edited (role, exp), signature kept" 401 UNAUTHORIZED_ERR \
	$(auth "$th.$edited.$ts") /api/v2/keys
none=$(printf '{"alg":"none","typ":"JWT"}' | b64url)
refused "token with alg none and no signature" 401 UNAUTHORIZED_ERR $(auth "$none.$tp.") /api/v2/keys
# The same header and claims, signed with a secret that is not the instance's.
sig=$(printf '%s.%s' "$th" "$tp" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$(head -c 32 /dev/urandom | xxd -p -c 64)" -binary | b64url)
refused "token signed with another secret (claims of a real API key)" 401 UNAUTHORIZED_ERR \
	$(auth "$th.$tp.$sig") /api/v2/keys
accepted "control: instance B's token works on instance B" 200 "$B" $(auth "$TB" "$(iid_of "$B")") /api/v2/keys
refused "token issued by another instance (B), Bluemix-Instance of A" 401 UNAUTHORIZED_ERR \
	$(auth "$TB") /api/v2/keys
refused "token issued by another instance (B), Bluemix-Instance of B" 401 UNAUTHORIZED_ERR \
	$(auth "$TB" "$(iid_of "$B")") /api/v2/keys

# ---- a unit of the instance without the master key (unit 3, never initialised) -------------
jq -j .apikey "$AK/r-Reader.apikey" >"$T_DIR/ak.raw"
before=$(digest "$A")
status=$(curl -sS -o "$T_DIR/body" -w '%{http_code}' --data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' \
	--data-urlencode "apikey@$T_DIR/ak.raw" "$(url_of "$A" 3)/identity/token")
if [ "$status" = 503 ] && [ "$(jq -r .kyokCode "$T_DIR/body")" = no-master-key ] &&
	[ "$(jq -r 'has("access_token")' "$T_DIR/body")" = false ] && [ "$before" = "$(digest "$A")" ]; then
	pass "token service of a unit without the master key: 503 $(jq -r .errorCode "$T_DIR/body") ($(jq -r .errorMessage "$T_DIR/body"))"
else
	fail "token service of a unit without the master key: $status $(cat "$T_DIR/body")"
fi
refused "API of a unit without the master key (valid token from unit 1)" 503 NO_MASTER_KEY_ERR 3 \
	$(auth "$W") "/api/v2/keys/$K"
refused "... unwrap there" 503 NO_MASTER_KEY_ERR 3 $(auth "$W") \
	$(json_body "{\"ciphertext\":\"$CT\"}") -X POST "/api/v2/keys/$K/actions/unwrap"

# ---- Bluemix-Instance ----------------------------------------------------------------------
refused "Bluemix-Instance missing" 400 INSTANCE_HEADER_ERR -H "Authorization: Bearer $W" /api/v2/keys
refused "Bluemix-Instance naming another instance" 401 UNAUTHORIZED_ERR $(auth "$W" "$(iid_of "$B")") /api/v2/keys
refused "Bluemix-Instance naming no instance at all" 401 UNAUTHORIZED_ERR $(auth "$W" "nope") /api/v2/keys

# ---- roles ---------------------------------------------------------------------------------
refused "Reader creates a key" 403 FORBIDDEN_ERR $(auth "${TOK[Reader]}") \
	$(json_body "$(create_json by-reader)") -X POST /api/v2/keys
says "... the message names the role held and the roles that may" \
	"has the role Reader; this needs the role Writer or Manager"
refused "ReaderPlus creates a key" 403 FORBIDDEN_ERR 2 $(auth "${TOK[ReaderPlus]}") \
	$(json_body "$(create_json by-readerplus)") -X POST /api/v2/keys
refused "Writer disables a key" 403 FORBIDDEN_ERR $(auth "$W") $(json_body '{}') \
	-X POST "/api/v2/keys/$K/actions/disable"
says "... Writer is told Manager is needed" "has the role Writer; this needs the role Manager"
refused "Writer deletes a key" 403 FORBIDDEN_ERR 2 $(auth "$W") -X DELETE "/api/v2/keys/$K"
refused "Writer sets a key policy" 403 FORBIDDEN_ERR $(auth "$W") \
	$(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"type":"application/vnd.ibm.kms.policy+json","dualAuthDelete":{"enabled":true}}]}') \
	-X PUT "/api/v2/keys/$K/policies"
refused "Writer reads key policies" 403 FORBIDDEN_ERR $(auth "$W") "/api/v2/keys/$K/policies"
refused "Writer sets instance policies" 403 FORBIDDEN_ERR $(auth "$W") \
	$(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"dualAuthDelete","policy_data":{"enabled":true}}]}') \
	-X PUT /api/v2/instance/policies
P=$(mkkey to-purge)
accepted "control: Manager deletes key $P" 204 $(auth "$M") -X DELETE "/api/v2/keys/$P"
refused "Manager purges a deleted key" 403 FORBIDDEN_ERR $(auth "$M") -X DELETE "/api/v2/keys/$P/purge"
says "... Manager is told KeyPurge is needed" "has the role Manager; this needs the role KeyPurge"
refused "KeyPurge wraps" 403 FORBIDDEN_ERR 2 $(auth "${TOK[KeyPurge]}") $(json_body '{}') \
	-X POST "/api/v2/keys/$K/actions/wrap"
refused "KeyPurge unwraps" 403 FORBIDDEN_ERR $(auth "${TOK[KeyPurge]}") \
	$(json_body "{\"ciphertext\":\"$CT\"}") -X POST "/api/v2/keys/$K/actions/unwrap"

# ---- dual authorization --------------------------------------------------------------------
D=$(mkkey dual)
accepted "Manager enables dual-auth delete on key $D" 200 $(auth "$M") \
	$(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"type":"application/vnd.ibm.kms.policy+json","dualAuthDelete":{"enabled":true}}]}') \
	-X PUT "/api/v2/keys/$D/policies"
refused "delete with no deletion set (second user missing)" 409 DUAL_AUTH_REQUIRED_ERR \
	$(auth "$M") -X DELETE "/api/v2/keys/$D"
accepted "Manager sets key $D for deletion" 204 $(auth "$M") -H 'Prefer: return=minimal' \
	$(json_body '{}') -X POST "/api/v2/keys/$D/actions/setKeyForDeletion"
refused "delete by the same API key that set the deletion" 403 DUAL_AUTH_SAME_USER_ERR 2 \
	$(auth "$M") -X DELETE "/api/v2/keys/$D"
accepted "delete by another Manager" 204 $(auth "${TOK[Manager2]}") -X DELETE "/api/v2/keys/$D"

# ---- requests ------------------------------------------------------------------------------
refused "malformed JSON" 400 MALFORMED_ERR $(auth "$W") $(json_body '{"metadata":{"collectionType"') \
	-X POST /api/v2/keys
refused "JSON of the wrong shape" 400 MALFORMED_ERR $(auth "$W") $(json_body '[1,2,3]') -X POST /api/v2/keys
refused "POST /keys/{id} with no action" 400 MALFORMED_ERR $(auth "$W") $(json_body '{}') \
	-X POST "/api/v2/keys/$K"
says "... says the action is missing and lists them" "no action named: POST /api/v2/keys/{id} takes ?action="
refused "a key id in quotes" 400 MALFORMED_ERR $(auth "$W") "/api/v2/keys/%22$K%22"
says "... says it is neither a key id nor an alias" "in the path is neither a key id nor a key alias"
refused "a key id of 91 characters (longer than any alias)" 400 MALFORMED_ERR $(auth "$W") \
	"/api/v2/keys/$(printf 'a%.0s' $(seq 91))"
says "... says it is too long" "(longer than 90 characters)"
refused "a key id of 60 characters (an alias no key has)" 404 NOT_FOUND_ERR $(auth "$W") \
	"/api/v2/keys/$(printf 'a%.0s' $(seq 60))"
refused "wrap of an empty plaintext" 400 MALFORMED_ERR $(auth "$W") $(json_body '{"plaintext":""}') \
	-X POST "/api/v2/keys/$K/actions/wrap"
says "... says the plaintext is empty and what to give" "member 'plaintext' is empty: give 1 to 7500 bytes"
head -c 70000 /dev/zero | tr '\0' 'a' >"$T_DIR/big"
refused "body over 64 KiB (Content-Length)" 413 TOO_LARGE_ERR $(auth "$W") \
	-H 'Content-Type: application/json' --data-binary "@$T_DIR/big" -X POST /api/v2/keys
refused "body over 64 KiB (chunked, no Content-Length)" 413 TOO_LARGE_ERR $(auth "$W") \
	-H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' --data-binary "@$T_DIR/big" \
	-X POST /api/v2/keys
refused "unknown route" 404 NOT_FOUND_ERR $(auth "$W") /api/v2/nothing-here
refused "unknown action" 404 NOT_FOUND_ERR $(auth "$W") $(json_body '{}') -X POST "/api/v2/keys/$K/actions/explode"
refused "wrong method (PATCH /api/v2/keys)" 405 METHOD_NOT_ALLOWED_ERR $(auth "$W") -X PATCH /api/v2/keys
refused "wrong method (DELETE /api/v2/keys)" 405 METHOD_NOT_ALLOWED_ERR $(auth "$W") -X DELETE /api/v2/keys

# ---- body members: each is one the request takes, or refused naming its path ---------------
PT="application/vnd.ibm.kms.policy+json"
# member_refused DESC PATH BODY ARGS...: 400 BODY_MEMBER_UNSUPPORTED_ERR naming PATH, storage
# unchanged.
member_refused() {
	local desc=$1 path=$2 body=$3
	shift 3
	refused "$desc" 400 BODY_MEMBER_UNSUPPORTED_ERR $(auth "$M") $(json_body "$body") "$@"
	says "... names '$path'" "member '$path'"
}
# Key policies of K: a known state, then one unknown member at each level.
accepted "control: Manager sets a 3-month rotation policy on $K" 200 $(auth "$M") \
	$(json_body "{\"metadata\":{\"collectionType\":\"$PT\",\"collectionTotal\":1},\"resources\":[{\"type\":\"$PT\",\"rotation\":{\"enabled\":true,\"interval_month\":3}}]}") \
	-X PUT "/api/v2/keys/$K/policies"
call $(auth "$M") "/api/v2/keys/$K/policies"
kpol_before=$(jq -cS .resources "$T_DIR/body")
rot6="{\"type\":\"$PT\",\"rotation\":{\"enabled\":true,\"interval_month\":6}}"
member_refused "key policies: unknown member in the body" color \
	"{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.policy+json\",\"collectionTotal\":1},\"resources\":[$rot6],\"color\":1}" -X PUT "/api/v2/keys/$K/policies"
member_refused "key policies: unknown member in metadata" metadata.color \
	"{\"metadata\":{\"collectionType\":\"$PT\",\"collectionTotal\":1,\"color\":1},\"resources\":[$rot6]}" \
	-X PUT "/api/v2/keys/$K/policies"
member_refused "key policies: unknown member in a policy" "resources[0].color" \
	"{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.policy+json\",\"collectionTotal\":1},\"resources\":[{\"type\":\"$PT\",\"color\":1,\"rotation\":{\"enabled\":true,\"interval_month\":6}}]}" \
	-X PUT "/api/v2/keys/$K/policies"
member_refused "key policies: a reply member (id) sent back" "resources[0].id" \
	"{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.policy+json\",\"collectionTotal\":1},\"resources\":[{\"id\":\"$K\",\"type\":\"$PT\",\"rotation\":{\"enabled\":true,\"interval_month\":6}}]}" \
	-X PUT "/api/v2/keys/$K/policies"
member_refused "key policies: unknown member in rotation" "resources[0].rotation.color" \
	"{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.policy+json\",\"collectionTotal\":1},\"resources\":[{\"type\":\"$PT\",\"rotation\":{\"enabled\":true,\"interval_month\":6,\"color\":\"red\"}}]}" \
	-X PUT "/api/v2/keys/$K/policies"
member_refused "key policies: unknown member in the second policy's dualAuthDelete" \
	"resources[1].dualAuthDelete.color" \
	"{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.policy+json\",\"collectionTotal\":2},\"resources\":[$rot6,{\"type\":\"$PT\",\"dualAuthDelete\":{\"enabled\":true,\"color\":1}}]}" \
	-X PUT "/api/v2/keys/$K/policies"
refused "key policies: collectionTotal not the number of resources" 400 MALFORMED_ERR $(auth "$M") \
	$(json_body "{\"metadata\":{\"collectionType\":\"$PT\",\"collectionTotal\":2},\"resources\":[$rot6]}") \
	-X PUT "/api/v2/keys/$K/policies"
says "... names metadata.collectionTotal" "metadata.collectionTotal"
refused "key policies: interval_month on a disabled rotation policy (it would be dropped)" 400 \
	MALFORMED_ERR $(auth "$M") \
	$(json_body "{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.policy+json\",\"collectionTotal\":1},\"resources\":[{\"rotation\":{\"enabled\":false,\"interval_month\":6}}]}") \
	-X PUT "/api/v2/keys/$K/policies"
says "... names it" "member 'resources[0].rotation.interval_month' with enabled false"
call $(auth "$M") "/api/v2/keys/$K/policies"
expect_eq "key policies of $K read back unchanged" "$(jq -cS .resources "$T_DIR/body")" "$kpol_before"

# Instance policies: a known state, then one unknown member at each level (each body would
# otherwise forbid creating root keys).
accepted "control: Manager sets keyCreateImportAccess off" 204 $(auth "$M") \
	$(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"keyCreateImportAccess","policy_data":{"enabled":false}}]}') \
	-X PUT /api/v2/instance/policies
call $(auth "$M") /api/v2/instance/policies
ipol_before=$(jq -cS .resources "$T_DIR/body")
kcia='{"policy_type":"keyCreateImportAccess","policy_data":{"enabled":true,"attributes":{"create_root_key":false}}}'
member_refused "instance policies: unknown member in the body" color \
	"{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.policy+json\",\"collectionTotal\":1},\"resources\":[$kcia],\"color\":1}" -X PUT /api/v2/instance/policies
member_refused "instance policies: unknown member in metadata" metadata.color \
	"{\"metadata\":{\"collectionType\":\"$PT\",\"collectionTotal\":1,\"color\":1},\"resources\":[$kcia]}" \
	-X PUT /api/v2/instance/policies
member_refused "instance policies: unknown member in a policy" "resources[0].color" \
	'{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"keyCreateImportAccess","color":1,"policy_data":{"enabled":true,"attributes":{"create_root_key":false}}}]}' \
	-X PUT /api/v2/instance/policies
member_refused "instance policies: unknown member in policy_data" "resources[0].policy_data.color" \
	'{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"keyCreateImportAccess","policy_data":{"enabled":true,"color":1,"attributes":{"create_root_key":false}}}]}' \
	-X PUT /api/v2/instance/policies
member_refused "instance policies: unknown attribute of keyCreateImportAccess" \
	"resources[0].policy_data.attributes.create_hsm_key" \
	'{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"keyCreateImportAccess","policy_data":{"enabled":true,"attributes":{"create_root_key":false,"create_hsm_key":true}}}]}' \
	-X PUT /api/v2/instance/policies
member_refused "instance policies: unknown attribute of rotation, second policy" \
	"resources[1].policy_data.attributes.color" \
	"{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.policy+json\",\"collectionTotal\":2},\"resources\":[$kcia,{\"policy_type\":\"rotation\",\"policy_data\":{\"enabled\":true,\"attributes\":{\"interval_month\":2,\"color\":1}}}]}" \
	-X PUT /api/v2/instance/policies
member_refused "instance policies: an attribute of dualAuthDelete (it takes none)" \
	"resources[1].policy_data.attributes.color" \
	"{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.policy+json\",\"collectionTotal\":2},\"resources\":[$kcia,{\"policy_type\":\"dualAuthDelete\",\"policy_data\":{\"enabled\":true,\"attributes\":{\"color\":1}}}]}" \
	-X PUT /api/v2/instance/policies
refused "instance policies: one policy given twice" 400 MALFORMED_ERR $(auth "$M") \
	$(json_body "{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.policy+json\",\"collectionTotal\":2},\"resources\":[$kcia,{\"policy_type\":\"keyCreateImportAccess\",\"policy_data\":{\"enabled\":false}}]}") \
	-X PUT /api/v2/instance/policies
says "... says which" "policy_type 'keyCreateImportAccess' is given twice"
refused "instance policies: an attribute given as null (not taken as left out)" 400 MALFORMED_ERR \
	$(auth "$M") $(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"keyCreateImportAccess","policy_data":{"enabled":true,"attributes":{"create_root_key":null}}}]}') \
	-X PUT /api/v2/instance/policies
says "... names it" "member 'attributes.create_root_key' is null"
refused "instance policies: GET ?policy= an unknown type" 400 MALFORMED_ERR $(auth "$M") \
	"/api/v2/instance/policies?policy=bogus"
says "... names the types taken" "must be one of dualAuthDelete, rotation, keyCreateImportAccess, allowedNetwork, allowedIP, metrics"
refused "... a PUT too" 400 MALFORMED_ERR $(auth "$M") $(json_body "{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.policy+json\",\"collectionTotal\":1},\"resources\":[$kcia]}") \
	-X PUT "/api/v2/instance/policies?policy=bogus"
call $(auth "$M") /api/v2/instance/policies
expect_eq "instance policies read back unchanged" "$(jq -cS .resources "$T_DIR/body")" "$ipol_before"

# ---- instance policies allowedNetwork, allowedIP, metrics -----------------------------------
# allowedIP is enforced on every request of the key API, by every unit: a request from
# another loopback address (curl --interface 127.0.0.2) stands for a host not listed.
netpol='{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":3},"resources":[{"policy_type":"allowedNetwork","policy_data":{"enabled":true,"attributes":{"allowed_network":"private-only"}}},{"policy_type":"allowedIP","policy_data":{"enabled":true,"attributes":{"allowed_ip":["127.0.0.1/32","::1/128"]}}},{"policy_type":"metrics","policy_data":{"enabled":true}}]}'
accepted "Manager sets allowedNetwork, allowedIP and metrics in one PUT" 204 $(auth "$M") \
	$(json_body "$netpol") -X PUT /api/v2/instance/policies
call 2 $(auth "$M") /api/v2/instance/policies
expect_eq "... listed by unit 2, each with its data" \
	"$(jq -c '[.resources[] | select(.policy_type | test("^(allowed|metrics)")) | [.policy_type, .policy_data, (.createdBy | length > 0), (.lastUpdated | length)]]' "$T_DIR/body")" \
	'[["allowedNetwork",{"enabled":true,"attributes":{"allowed_network":"private-only"}},true,20],["allowedIP",{"enabled":true,"attributes":{"allowed_ip":["127.0.0.1/32","::1/128"]}},true,20],["metrics",{"enabled":true},true,20]]'
call $(auth "$M") "/api/v2/instance/policies?policy=allowedIP"
expect_eq "... ?policy=allowedIP lists that one" "$(jq -c '[.resources[].policy_type]' "$T_DIR/body")" '["allowedIP"]'
accepted "a request from 127.0.0.1 (listed): served" 200 $(auth "$W") /api/v2/keys
refused "a request from 127.0.0.2 (not listed): refused" 401 IP_NOT_ALLOWED_ERR \
	--interface 127.0.0.2 $(auth "$W") /api/v2/keys
says "... naming the address" "does not list the address 127.0.0.2 "
refused "... by unit 2 too" 401 IP_NOT_ALLOWED_ERR 2 --interface 127.0.0.2 $(auth "$W") \
	$(json_body "$(create_json from-elsewhere)") -X POST /api/v2/keys
refused "... a Manager's change of the policy too" 401 IP_NOT_ALLOWED_ERR --interface 127.0.0.2 \
	$(auth "$M") $(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"allowedIP","policy_data":{"enabled":false}}]}') \
	-X PUT /api/v2/instance/policies
refused "allowedIP that leaves out its sender's own address: refused" 400 IP_POLICY_LOCKOUT_ERR \
	$(auth "$M") $(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"allowedIP","policy_data":{"enabled":true,"attributes":{"allowed_ip":["10.0.0.0/8"]}}}]}') \
	-X PUT /api/v2/instance/policies
says "... naming that address" "this request comes from 127.0.0.1"
refused "allowedIP with a range that has bits beyond its prefix" 400 MALFORMED_ERR $(auth "$M") \
	$(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"allowedIP","policy_data":{"enabled":true,"attributes":{"allowed_ip":["127.0.0.1/8"]}}}]}') \
	-X PUT /api/v2/instance/policies
says "... says what to write" "write '127.0.0.0/8'"
refused "allowedIP with an attribute Key Protect's private endpoint port (not taken)" 400 BODY_MEMBER_UNSUPPORTED_ERR \
	$(auth "$M") $(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"allowedIP","policy_data":{"enabled":true,"attributes":{"allowed_ip":["127.0.0.0/8"],"private_endpoint_port":8443}}}]}') \
	-X PUT /api/v2/instance/policies
refused "allowedNetwork with another value" 400 MALFORMED_ERR $(auth "$M") \
	$(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"allowedNetwork","policy_data":{"enabled":true,"attributes":{"allowed_network":"everywhere"}}}]}') \
	-X PUT /api/v2/instance/policies
accepted "allowedIP widened to 127.0.0.0/8" 204 $(auth "$M") \
	$(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"allowedIP","policy_data":{"enabled":true,"attributes":{"allowed_ip":["127.0.0.0/8"]}}}]}') \
	-X PUT "/api/v2/instance/policies?policy=allowedIP"
accepted "... a request from 127.0.0.2 is served" 200 --interface 127.0.0.2 $(auth "$W") /api/v2/keys
accepted "allowedIP turned off" 204 $(auth "$M") \
	$(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"allowedIP","policy_data":{"enabled":false}}]}') \
	-X PUT /api/v2/instance/policies
# Two PUTs of different policies at once, one per unit: each is applied to what the other
# stored (compare-and-swap), so both stand whatever the order.
ipol_put() { # ipol_put N BODY: PUT to unit N in the background, its status in $T_DIR/put-N
	curl -sS -o /dev/null -w '%{http_code}' $(auth "$M") $(json_body "$2") -X PUT \
		"$(url_of "$A" "$1")/api/v2/instance/policies" >"$T_DIR/put-$1" &
}
lost=0
for round in 1 2 3 4 5 6; do
	call $(auth "$M") $(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":2},"resources":[{"policy_type":"allowedIP","policy_data":{"enabled":false}},{"policy_type":"metrics","policy_data":{"enabled":false}}]}') \
		-X PUT /api/v2/instance/policies
	ipol_put 1 '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"allowedIP","policy_data":{"enabled":true,"attributes":{"allowed_ip":["127.0.0.0/8"]}}}]}'
	p1=$!
	ipol_put 2 '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"metrics","policy_data":{"enabled":true}}]}'
	wait "$p1" $!
	call 2 $(auth "$M") /api/v2/instance/policies
	got="$(cat "$T_DIR/put-1") $(cat "$T_DIR/put-2") $(jq -c '[.resources[] | select(.policy_type == "allowedIP" or .policy_type == "metrics") | .policy_data.enabled]' "$T_DIR/body")"
	[ "$got" = "204 204 [true,true]" ] || { lost=$((lost + 1)); echo "round $round: $got" >&2; }
done
expect_eq "two concurrent PUTs of instance policies, one per unit (6 rounds): rounds where one was lost" "$lost" 0
accepted "allowedIP turned off again" 204 $(auth "$M") \
	$(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":2},"resources":[{"policy_type":"allowedIP","policy_data":{"enabled":false}},{"policy_type":"metrics","policy_data":{"enabled":false}}]}') \
	-X PUT /api/v2/instance/policies

# Create, actions and requests without a body member.
member_refused "create: unknown member in the key" "resources[0].color" \
	"{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.key+json\",\"collectionTotal\":1},\"resources\":[{\"type\":\"$KT\",\"name\":\"colored\",\"color\":1}]}" -X POST /api/v2/keys
member_refused "create: unknown member in metadata" metadata.color \
	"{\"metadata\":{\"collectionType\":\"$KT\",\"collectionTotal\":1,\"color\":1},\"resources\":[{\"name\":\"colored\"}]}" \
	-X POST /api/v2/keys
member_refused "create: unknown member in the body" color \
	'{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"name":"colored"}],"color":1}' -X POST /api/v2/keys
refused "create: a member of secure import alone (encryptionAlgorithm)" 400 MALFORMED_ERR $(auth "$M") \
	$(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"name":"tokened","payload":"AAAAAAAAAAAAAAAAAAAAAA==","encryptionAlgorithm":"RSAES_OAEP_SHA_256"}]}') \
	-X POST /api/v2/keys
says "... says what is missing" "'resources[0].encryptedNonce' and 'resources[0].iv' together: encryptedNonce is missing"
member_refused "wrap: unknown member" color '{"plaintext":"aGVsbG8=","color":1}' \
	-X POST "/api/v2/keys/$K/actions/wrap"
member_refused "wrap as a collection: unknown member in the action" "resources[0].color" \
	'{"metadata":{"collectionType":"application/vnd.ibm.kms.key_action+json","collectionTotal":1},"resources":[{"plaintext":"aGVsbG8=","color":1}]}' -X POST "/api/v2/keys/$K/actions/wrap"
member_refused "rotate: unknown member" color '{"color":1}' -X POST "/api/v2/keys/$K/actions/rotate"
member_refused "setKeyForDeletion: unknown member" color '{"color":1}' \
	-X POST "/api/v2/keys/$K/actions/setKeyForDeletion"
member_refused "GET with a body member" color '{"color":1}' -X GET "/api/v2/keys/$K/policies"
accepted "control: GET with an empty object as its body" 200 $(auth "$M") $(json_body '{}') \
	-X GET "/api/v2/keys/$K/policies"
refused "wrap: a member wrap does not take (ciphertext)" 400 BODY_MEMBER_UNSUPPORTED_ERR $(auth "$W") \
	$(json_body "{\"plaintext\":\"aGVsbG8=\",\"ciphertext\":\"$CT\"}") -X POST "/api/v2/keys/$K/actions/wrap"
says "... names it" "member 'ciphertext': wrap takes only plaintext aad"

# The token form: grant_type, apikey and response_type=cloud_iam (what the SDKs send).
# token_form DESC STATUS SLUG FIELD...: POST of those fields (plus the API key).
token_form() {
	local desc=$1 want=$2 slug=$3 st f args=()
	shift 3
	for f in "$@"; do args+=(--data-urlencode "$f"); done
	jq -j .apikey "$AK/r-Reader.apikey" >"$T_DIR/ak.raw"
	st=$(curl -sS -o "$T_DIR/body" -w '%{http_code}' "${args[@]}" --data-urlencode "apikey@$T_DIR/ak.raw" \
		"$(url_of "$A" 1)/identity/token")
	if [ "$st" = "$want" ] && [ "$(jq -r '.kyokCode // "token"' "$T_DIR/body")" = "$slug" ]; then
		pass "$desc: $st $slug ($(jq -r '.errorMessage // .token_type' "$T_DIR/body"))"
	else
		fail "$desc: got $st $(head -c 300 "$T_DIR/body"), want $want $slug"
	fi
}
G='grant_type=urn:ibm:params:oauth:grant-type:apikey'
token_form "token form with response_type=cloud_iam" 200 token "$G" response_type=cloud_iam
token_form "token form with an unknown field" 400 body-member-unsupported "$G" scope=ibm
if [[ $(jq -r .errorMessage "$T_DIR/body") == *"field 'scope'"* ]]; then pass "... names 'scope'"; else fail "... does not name 'scope': $(cat "$T_DIR/body")"; fi
token_form "token form with response_type=uaa" 400 unsupported "$G" response_type=uaa

# ---- import tokens and secure import -------------------------------------------------------
# The client's side, as Key Protect documents it: the key RSAES-OAEP encrypted to the token's
# public key (openssl pkeyutl), the token's nonce AES-GCM encrypted under the key (nonce_seal).
NONCE_SEAL=$KYOK_BUILD/tests/nonce_seal
IT=/api/v2/import_token
# it_get N: retrieves the import token on unit N: its public key into $T_DIR/it.pem, the
# nonce into $NONCE.
it_get() {
	accepted "Writer retrieves the import token on unit $1" 200 "$1" $(auth "$W") $IT
	jq -r .payload "$T_DIR/body" | base64 -d >"$T_DIR/it.pem"
	NONCE=$(jq -r .nonce "$T_DIR/body")
}
# sealed KEYFILE NONCE [MD [PEM]]: the JSON members of a secure import of KEYFILE's key.
sealed() {
	local p e
	p=$(openssl pkeyutl -encrypt -pubin -inkey "${4:-$T_DIR/it.pem}" -pkeyopt rsa_padding_mode:oaep \
		-pkeyopt "rsa_oaep_md:${3:-sha256}" -pkeyopt "rsa_mgf1_md:${3:-sha256}" -in "$1" | base64 -w0)
	e=$("$NONCE_SEAL" "$1" "$2") || fail "nonce_seal $1"
	printf '"payload":"%s","encryptedNonce":"%s","iv":"%s"' "$p" "${e% *}" "${e#* }"
}
simport() { printf '{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"type":"%s","name":"%s","extractable":%s,%s}]}' "$KT" "$1" "${3:-false}" "$2"; }
head -c 32 /dev/urandom >"$T_DIR/imp.key"
head -c 32 /dev/urandom >"$T_DIR/other.key"
head -c 16 /dev/urandom >"$T_DIR/imp16.key"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null |
	openssl pkey -pubout -out "$T_DIR/other.pem"

refused "import token: retrieved before any was made" 404 IMPORT_TOKEN_MISSING_ERR $(auth "$W") $IT
refused "import token: secure import before any was made" 404 IMPORT_TOKEN_MISSING_ERR $(auth "$W") \
	$(json_body "$(simport no-token "$(sealed "$T_DIR/imp.key" AAAAAAAAAAAAAAAA sha256 "$T_DIR/other.pem")")") \
	-X POST /api/v2/keys
refused "Reader creates an import token" 403 FORBIDDEN_ERR $(auth "${TOK[Reader]}") $(json_body '{}') -X POST $IT
says "... Writer or Manager is needed" "this needs the role Writer or Manager"
refused "ReaderPlus retrieves the import token" 403 FORBIDDEN_ERR 2 $(auth "${TOK[ReaderPlus]}") $IT
refused "import token: expiration under 300 s" 400 MALFORMED_ERR $(auth "$W") \
	$(json_body '{"expiration":299}') -X POST $IT
says "... names it and its range" "member 'expiration' must be a whole number of seconds, 300 to 86400"
refused "import token: 501 retrievals" 400 MALFORMED_ERR $(auth "$W") \
	$(json_body '{"maxAllowedRetrievals":501}') -X POST $IT
member_refused "import token: unknown member" color '{"expiration":600,"color":1}' -X POST $IT
accepted "Writer creates an import token (3 retrievals)" 200 $(auth "$W") \
	$(json_body '{"expiration":900,"maxAllowedRetrievals":3}') -X POST $IT
expect_eq "... it says 3 retrievals, 3 left, 900 s" \
	"$(jq -r '"\(.maxAllowedRetrievals) \(.remainingRetrievals) \((.expirationDate | fromdate) - (.creationDate | fromdate)) \(has("payload"))"' "$T_DIR/body")" \
	"3 3 900 false"
it_get 2
expect_eq "... a 4096-bit RSA public key, PEM; 2 retrievals left" \
	"$(openssl pkey -pubin -in "$T_DIR/it.pem" -noout -text | head -1 | tr -d ' ') $(jq -r .remainingRetrievals "$T_DIR/body")" \
	"Public-Key:(4096bit) 2"
N1=$NONCE
refused "secure import: payload encrypted to another key" 400 IMPORT_PAYLOAD_UNDECRYPTABLE_ERR \
	$(auth "$W") $(json_body "$(simport bad "$(sealed "$T_DIR/imp.key" "$N1" sha256 "$T_DIR/other.pem")")") \
	-X POST /api/v2/keys
refused "secure import: payload OAEP with SHA-1, encryptionAlgorithm not saying so" 400 \
	IMPORT_PAYLOAD_UNDECRYPTABLE_ERR $(auth "$W") \
	$(json_body "$(simport bad "$(sealed "$T_DIR/imp.key" "$N1" sha1)")") -X POST /api/v2/keys
good=$(sealed "$T_DIR/imp.key" "$N1")
other=$(sealed "$T_DIR/other.key" "$N1")
refused "secure import: the nonce encrypted under another key than the payload's" 400 \
	INCORRECT_NONCE_IV_ERR $(auth "$W") \
	$(json_body "$(simport bad "${good%%,\"encryptedNonce*},${other#*,}")") -X POST /api/v2/keys
refused "secure import: another nonce than the token's" 400 INCORRECT_NONCE_ERR 2 $(auth "$W") \
	$(json_body "$(simport bad "$(sealed "$T_DIR/imp.key" "$(head -c 12 /dev/urandom | base64)")")") \
	-X POST /api/v2/keys
says "... says to retrieve the token" "retrieve the import token (GET /api/v2/import_token)"
refused "secure import of a standard key" 400 MALFORMED_ERR $(auth "$W") \
	$(json_body "$(simport std "$good" true)") -X POST /api/v2/keys
says "... root keys only" "an import token imports root keys only"
accepted "secure import of a root key (AES-256, OAEP SHA-256) on unit 1" 201 1 $(auth "$W") \
	$(json_body "$(simport secured "$good")") -X POST /api/v2/keys
SK=$(jq -r '.resources[0].id' "$T_DIR/body")
expect_eq "... imported, 256 bits" "$(jq -r '"\(.resources[0].imported) \(.resources[0].algorithmBitSize)"' "$T_DIR/body")" "true 256"
accepted "... it wraps on unit 2" 200 2 $(auth "$W") $(json_body '{}') -X POST "/api/v2/keys/$SK/actions/wrap"
refused "secure import again with the same nonce (a nonce imports one key)" 400 INCORRECT_NONCE_ERR \
	$(auth "$W") $(json_body "$(simport again "$good")") -X POST /api/v2/keys
says "... says so" "this nonce imported a key already"
it_get 1
if [ "$NONCE" != "$N1" ] && [ "$(jq -r .remainingRetrievals "$T_DIR/body")" = 1 ]; then
	pass "... the next retrieval gives a fresh nonce, 1 retrieval left"
else
	fail "... nonce $N1 -> $NONCE, $(jq -r .remainingRetrievals "$T_DIR/body") left"
fi
refused "secure rotation of a generated key (it takes no material)" 400 ROTATE_MATERIAL_ERR $(auth "$W") \
	$(json_body "{$(sealed "$T_DIR/imp16.key" "$NONCE")}") -X POST "/api/v2/keys/$K/actions/rotate"
accepted "secure rotation of the imported key (AES-128, OAEP SHA-1): the refusal left the nonce usable" \
	204 2 $(auth "$W") \
	$(json_body "{$(sealed "$T_DIR/imp16.key" "$NONCE" sha1),\"encryptionAlgorithm\":\"RSAES_OAEP_SHA_1\"}") \
	-X POST "/api/v2/keys/$SK/actions/rotate"
call $(auth "$W") "/api/v2/keys/$SK/metadata"
expect_eq "... a second version, 128 bits" "$(jq -r '.resources[0].algorithmBitSize' "$T_DIR/body")" 128
# enforce_token: an import in the clear is refused, one through the token goes.
it_get 1
accepted "Manager sets keyCreateImportAccess with enforce_token" 204 $(auth "$M") \
	$(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"keyCreateImportAccess","policy_data":{"enabled":true,"attributes":{"enforce_token":true}}}]}') \
	-X PUT /api/v2/instance/policies
refused "enforce_token: a root key imported in the clear" 403 FORBIDDEN_ERR $(auth "$W") \
	$(json_body "{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.key+json\",\"collectionTotal\":1},\"resources\":[{\"name\":\"clear\",\"payload\":\"$(base64 -w0 "$T_DIR/imp.key")\"}]}") \
	-X POST /api/v2/keys
says "... names the policy" "requires import tokens (enforce_token)"
refused "enforce_token: new material in the clear for a rotation (an import too)" 403 FORBIDDEN_ERR \
	2 $(auth "$W") $(json_body "{\"payload\":\"$(base64 -w0 "$T_DIR/imp16.key")\"}") \
	-X POST "/api/v2/keys/$SK/actions/rotate"
call $(auth "$W") "/api/v2/keys/$SK/versions"
expect_eq "... no version was added" "$(jq -r '.metadata.collectionTotal' "$T_DIR/body")" 2
accepted "enforce_token: a root key imported through the token" 201 $(auth "$W") \
	$(json_body "$(simport enforced "$(sealed "$T_DIR/other.key" "$NONCE")")") -X POST /api/v2/keys
accepted "Manager sets keyCreateImportAccess off again" 204 $(auth "$M") \
	$(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"keyCreateImportAccess","policy_data":{"enabled":false}}]}') \
	-X PUT /api/v2/instance/policies
refused "a fourth retrieval of a token of 3" 409 IMPORT_TOKEN_RETRIEVALS_USED_UP_ERR 2 $(auth "$W") $IT
says "... says to make a new one" "create a new one (POST /api/v2/import_token)"
cp "$T_DIR/it.pem" "$T_DIR/old.pem"
accepted "Manager creates a new import token (defaults: 1 retrieval, 600 s)" 200 $(auth "$M") -X POST $IT
expect_eq "... 1 retrieval, 600 s" \
	"$(jq -r '"\(.maxAllowedRetrievals) \((.expirationDate | fromdate) - (.creationDate | fromdate))"' "$T_DIR/body")" "1 600"
# Under a request id, the token's key pair is made before the write transaction; the request
# sent again gets the kept reply, not a second token.
accepted "a new import token under a request id" 200 $(auth "$M") -H "Idempotency-Key: it-once" \
	-X POST $IT
cp "$T_DIR/body" "$T_DIR/it-once.json"
accepted "... the same request again, to unit 2" 200 2 $(auth "$M") -H "Idempotency-Key: it-once" \
	-D "$T_DIR/it-once.hdr" -X POST $IT
expect_eq "... answered with the kept reply" \
	"$(jq -c . "$T_DIR/body") $(grep -ci '^Kyok-Replayed: true' "$T_DIR/it-once.hdr")" \
	"$(jq -c . "$T_DIR/it-once.json") 1"
it_get 2
refused "secure import to the replaced token's public key" 400 IMPORT_PAYLOAD_UNDECRYPTABLE_ERR \
	$(auth "$W") $(json_body "$(simport old "$(sealed "$T_DIR/imp.key" "$NONCE" sha256 "$T_DIR/old.pem")")") \
	-X POST /api/v2/keys

# A token record put back from an older copy is refused when read, and when written over.
itrow() { sqlite3 "$A/keys.db" ".timeout 5000" "SELECT seq, rev, updated, hex(blob) FROM secrets WHERE name = 'import-token'"; }
itput() {
	local IFS='|'
	set -- $1
	sqlite3 "$A/keys.db" ".timeout 5000" "UPDATE secrets SET seq = $1, rev = $2, updated = $3, blob = X'$4' WHERE name = 'import-token'"
}
it_old=$(itrow)
accepted "a new import token (the older record kept aside)" 200 $(auth "$M") -X POST $IT
it_new=$(itrow)
itput "$it_old"
refused "the older token record put back: its retrieval refused" 500 RECORD_ROLLED_BACK_ERR \
	$(auth "$W") $IT
refused "... and a new token over it refused too (written over, the evidence would go)" 500 \
	RECORD_ROLLED_BACK_ERR 2 $(auth "$M") -X POST $IT
itput "$it_new"
accepted "the newer record back: served" 200 $(auth "$W") $IT

# ---- sync, registrations, purge too early ---------------------------------------------------
refused "sync of a key changed within the hour" 409 REQ_TOO_EARLY_ERR $(auth "$W") \
	-X POST "/api/v2/keys/$SK/actions/sync"
says "... says from when" "a sync can be asked from"
refused "Reader asks a sync" 403 FORBIDDEN_ERR $(auth "${TOK[Reader]}") -X POST "/api/v2/keys/$SK/actions/sync"
refused "sync with a body member" 400 BODY_MEMBER_UNSUPPORTED_ERR $(auth "$W") $(json_body '{"color":1}') \
	-X POST "/api/v2/keys/$SK/actions/sync"
accepted "registrations of every key (not read as a key id)" 200 $(auth "${TOK[Reader]}") \
	"/api/v2/keys/registrations?totalCount=true"
expect_eq "... none" "$(jq -c '[.metadata.collectionTotal, .metadata.totalCount, .resources]' "$T_DIR/body")" '[0,0,[]]'
accepted "registrations of key $SK" 200 2 $(auth "${TOK[Reader]}") "/api/v2/keys/$SK/registrations"
expect_eq "... none" "$(jq -c '[.metadata.collectionTotal, .resources]' "$T_DIR/body")" '[0,[]]'
refused "registrations of a key that does not exist" 404 NOT_FOUND_ERR $(auth "$W") \
	"/api/v2/keys/00000000-0000-4000-8000-000000000000/registrations"
refused "POST /api/v2/keys/registrations (not read as a key id)" 405 METHOD_NOT_ALLOWED_ERR \
	$(auth "$W") $(json_body '{}') -X POST /api/v2/keys/registrations
refused "registrations with limit=0" 400 MALFORMED_ERR $(auth "$W") "/api/v2/keys/registrations?limit=0"
refused "registrations with an unknown query parameter" 400 QUERY_PARAMETER_UNSUPPORTED_ERR $(auth "$W") \
	"/api/v2/keys/registrations?color=red"
# A query parameter given twice (the second spelled with an escape) or without a value is
# refused by name, never read as its first value or as left out.
refused "a listing with limit given twice" 400 QUERY_PARAMETER_REPEATED_ERR $(auth "$W") \
	"/api/v2/keys?limit=1&limit=2"
says "... names it" "'limit' is given twice"
refused "a listing with state given twice (once escaped)" 400 QUERY_PARAMETER_REPEATED_ERR \
	$(auth "$W") "/api/v2/keys?state=1&%73tate=2"
says "... names it" "'state'"
refused "a listing with limit=" 400 QUERY_PARAMETER_EMPTY_ERR $(auth "$W") "/api/v2/keys?limit="
says "... names it" "'limit' is given without a value"
refused "a listing with limit and no '='" 400 QUERY_PARAMETER_EMPTY_ERR $(auth "$W") "/api/v2/keys?offset=0&limit"
refused "a delete with force given twice" 400 QUERY_PARAMETER_REPEATED_ERR $(auth "$M") \
	-X DELETE "/api/v2/keys/$SK?force=false&force=true"
refused "an action named twice" 400 QUERY_PARAMETER_REPEATED_ERR $(auth "$W") $(json_body '{}') \
	-X POST "/api/v2/keys/$SK?action=disable&action=enable"
refused "key policies with policy=" 400 QUERY_PARAMETER_EMPTY_ERR $(auth "$M") "/api/v2/keys/$SK/policies?policy="
refused "an unknown path under /api/v2/keys/{id}" 404 NOT_FOUND_ERR $(auth "$W") "/api/v2/keys/$SK/nothing-here"
refused "KeyPurge purges a key deleted just now (Key Protect's code)" 409 REQ_TOO_EARLY_ERR \
	$(auth "${TOK[KeyPurge]}") -X DELETE "/api/v2/keys/$P/purge"

# ---- a key changed through one unit is never served stale by another -------------------------
# Unit 1 has key F opened in its cache; unit 2 changes it; the very next request to unit 1 sees
# the change (no waiting: unit 2 answered after its commit).
F=$(mkkey fresh)
accepted "control: unit 1 wraps with key $F (now in its cache)" 200 1 $(auth "$W") $(json_body '{}') \
	-X POST "/api/v2/keys/$F/actions/wrap"
FCT=$(jq -r .ciphertext "$T_DIR/body")
FV1=$(jq -r .keyVersion.id "$T_DIR/body")
accepted "unit 2 disables key $F" 204 2 $(auth "$M") $(json_body '{}') -X POST "/api/v2/keys/$F/actions/disable"
refused "... unit 1 refuses to unwrap with it at once" 409 KEY_NOT_ACTIVE_ERR 1 $(auth "$W") \
	$(json_body "{\"ciphertext\":\"$FCT\"}") -X POST "/api/v2/keys/$F/actions/unwrap"
accepted "unit 2 enables key $F" 204 2 $(auth "$M") $(json_body '{}') -X POST "/api/v2/keys/$F/actions/enable"
accepted "... unit 1 unwraps with it at once" 200 1 $(auth "$W") \
	$(json_body "{\"ciphertext\":\"$FCT\"}") -X POST "/api/v2/keys/$F/actions/unwrap"
accepted "unit 2 rotates key $F" 204 2 $(auth "$W") $(json_body '{}') -X POST "/api/v2/keys/$F/actions/rotate"
accepted "... unit 1 wraps at once" 200 1 $(auth "$W") $(json_body '{}') -X POST "/api/v2/keys/$F/actions/wrap"
FV2=$(jq -r .keyVersion.id "$T_DIR/body")
if [ -n "$FV2" ] && [ "$FV2" != null ] && [ "$FV2" != "$FV1" ]; then
	pass "... under the new key version ($FV1 -> $FV2)"
else
	fail "... wrapped under version '$FV2', before the rotation '$FV1'"
fi
accepted "unit 2 deletes key $F" 204 2 $(auth "$M") -X DELETE "/api/v2/keys/$F"
refused "... unit 1 refuses to unwrap with it at once" 410 KEY_DESTROYED_ERR 1 $(auth "$W") \
	$(json_body "{\"ciphertext\":\"$FCT\"}") -X POST "/api/v2/keys/$F/actions/unwrap"

# GET /keys/ID and .../metadata answer from the unit's key cache: after each change made
# through unit 2 (acknowledged), unit 1, holding the key opened, answers exactly what unit 2
# answers (it read the key anew from key storage): status and body, role by role.
# seen1 DESC STATUS ARGS... PATH: the GET on unit 1 first, then on unit 2; unit 1's body in
# $T_DIR/body.
seen1() {
	local desc=$1 want=$2 one two
	shift 2
	call 1 "$@"
	one="$status $(jq -S -c . "$T_DIR/body" 2>/dev/null || head -c 300 "$T_DIR/body")"
	cp "$T_DIR/body" "$T_DIR/body1"
	call 2 "$@"
	two="$status $(jq -S -c . "$T_DIR/body" 2>/dev/null || head -c 300 "$T_DIR/body")"
	cp "$T_DIR/body1" "$T_DIR/body"
	if [ "${one%% *}" != "$want" ]; then
		fail "$desc: unit 1 answered ${one:0:300}, want $want"
	elif [ "$one" != "$two" ]; then
		fail "$desc: unit 1 answered ${one:0:300}, unit 2 ${two:0:300}"
	else
		pass "$desc: unit 1 answers $want as unit 2 does"
	fi
}
# warm ID: unit 1 opens key ID into its cache (a GET, as the Writer).
warm() {
	call 1 $(auth "$W") "/api/v2/keys/$1/metadata"
	[ "$status" = 200 ] || fail "warm: GET /keys/$1/metadata on unit 1: $status"
}
# r0 FILTER: jq over unit 1's last body (first resource).
r0() { jq -r ".resources[0] | $1" "$T_DIR/body"; }
# noticed N STATUS ARGS...: waits until unit N answers the request with STATUS (at most 20 s).
# A unit notices a write by another program (sqlite3 below) through PRAGMA data_version,
# read at most 250 ms apart per connection; until then a key it holds opened is served from
# its cache. The check that follows is the test; this only waits for the state it needs.
noticed() {
	local n=$1 want=$2 i
	shift 2
	for ((i = 0; i < 200; i++)); do
		call "$n" "$@"
		[ "$status" = "$want" ] && return 0
		sleep 0.1
	done
	fail "unit $n still answers $status, not $want, 20 s after a write by another program"
}
pol_json() {
	printf '{"metadata":{"collectionType":"%s","collectionTotal":1},"resources":[{"type":"%s","dualAuthDelete":{"enabled":%s}}]}' \
		"$PT" "$PT" "$1"
}
R=${TOK[Reader]}
G=$(mkkey get-fresh)
warm "$G"
seen1 "control: GET /keys/$G" 200 $(auth "$W") "/api/v2/keys/$G"
accepted "unit 2 disables key $G" 204 2 $(auth "$M") $(json_body '{}') -X POST "/api/v2/keys/$G/actions/disable"
seen1 "... GET" 200 $(auth "$W") "/api/v2/keys/$G"
expect_eq "... Suspended" "$(r0 .state)" 2
seen1 "... GET metadata (Reader)" 200 $(auth "$R") "/api/v2/keys/$G/metadata"
warm "$G"
accepted "unit 2 enables key $G" 204 2 $(auth "$M") $(json_body '{}') -X POST "/api/v2/keys/$G/actions/enable"
seen1 "... GET" 200 $(auth "$W") "/api/v2/keys/$G"
expect_eq "... Active" "$(r0 .state)" 1
gv1=$(r0 .keyVersion.id)
warm "$G"
accepted "unit 2 rotates key $G" 204 2 $(auth "$W") $(json_body '{}') -X POST "/api/v2/keys/$G/actions/rotate"
seen1 "... GET" 200 $(auth "$W") "/api/v2/keys/$G"
expect_eq "... a new version, lastRotateDate" "$(r0 '"\(.keyVersion.id != "'"$gv1"'") \(has("lastRotateDate"))"')" "true true"
warm "$G"
accepted "unit 2 sets dual-auth delete on key $G" 200 2 $(auth "$M") $(json_body "$(pol_json true)") \
	-X PUT "/api/v2/keys/$G/policies"
seen1 "... GET metadata" 200 $(auth "$W") "/api/v2/keys/$G/metadata"
expect_eq "... dualAuthDelete enabled" "$(r0 .dualAuthDelete.enabled)" true
warm "$G"
accepted "unit 2 sets key $G for deletion" 204 2 $(auth "$M") -H 'Prefer: return=minimal' $(json_body '{}') \
	-X POST "/api/v2/keys/$G/actions/setKeyForDeletion"
seen1 "... GET" 200 $(auth "$W") "/api/v2/keys/$G"
expect_eq "... keySetForDeletion" "$(r0 .dualAuthDelete.keySetForDeletion)" true
warm "$G"
accepted "unit 2 cancels it" 204 2 $(auth "$M") -H 'Prefer: return=minimal' $(json_body '{}') \
	-X POST "/api/v2/keys/$G/actions/unsetKeyForDeletion"
seen1 "... GET" 200 $(auth "$W") "/api/v2/keys/$G"
expect_eq "... not set for deletion" "$(r0 .dualAuthDelete.keySetForDeletion)" false
accepted "unit 2 sets it for deletion again" 204 2 $(auth "$M") -H 'Prefer: return=minimal' $(json_body '{}') \
	-X POST "/api/v2/keys/$G/actions/setKeyForDeletion"
warm "$G"
accepted "unit 2 deletes key $G (second Manager)" 204 2 $(auth "${TOK[Manager2]}") -X DELETE "/api/v2/keys/$G"
refused "... unit 1: GET refused at once" 410 KEY_DESTROYED_ERR 1 $(auth "$W") "/api/v2/keys/$G"
seen1 "... GET, as unit 2" 410 $(auth "$W") "/api/v2/keys/$G"
seen1 "... GET metadata" 200 $(auth "$W") "/api/v2/keys/$G/metadata"
expect_eq "... Destroyed, deleted" "$(r0 '"\(.state) \(.deleted) \(has("payload"))"')" "5 true false"
accepted "unit 2 restores key $G" 201 2 $(auth "$M") -X POST "/api/v2/keys/$G/restore"
seen1 "... GET" 200 $(auth "$W") "/api/v2/keys/$G"
expect_eq "... Active again" "$(r0 '"\(.state) \(.deleted)"')" "1 false"
warm "$G"
accepted "unit 2 gives key $G the alias 'get-fresh'" 201 2 $(auth "$W") -X POST "/api/v2/keys/$G/aliases/get-fresh"
seen1 "... GET" 200 $(auth "$W") "/api/v2/keys/$G"
expect_eq "... lists it" "$(r0 '.aliases | join(",")')" get-fresh
seen1 "... GET by the alias" 200 $(auth "$W") /api/v2/keys/get-fresh
warm "$G"
accepted "unit 2 deletes the alias" 204 2 $(auth "$M") -X DELETE "/api/v2/keys/$G/aliases/get-fresh"
seen1 "... GET" 200 $(auth "$W") "/api/v2/keys/$G"
expect_eq "... no alias" "$(r0 '.aliases // [] | length')" 0
seen1 "... GET by the alias" 404 $(auth "$W") /api/v2/keys/get-fresh
accepted "key ring 'get-ring' created" 201 2 $(auth "$W") -X POST /api/v2/key_rings/get-ring
warm "$G"
accepted "unit 2 moves key $G to it" 200 2 $(auth "$M") $(printf -- '-H\nX-Kms-Key-Ring: default\n') \
	$(json_body '{"keyRingID":"get-ring"}') -X PATCH "/api/v2/keys/$G"
seen1 "... GET" 200 $(auth "$W") "/api/v2/keys/$G"
expect_eq "... keyRingID" "$(r0 .keyRingID)" get-ring
seen1 "... GET under header default" 404 $(auth "$W") $(printf -- '-H\nX-Kms-Key-Ring: default\n') \
	"/api/v2/keys/$G"
seen1 "... GET metadata under header get-ring" 200 $(auth "$W") $(printf -- '-H\nX-Kms-Key-Ring: get-ring\n') \
	"/api/v2/keys/$G/metadata"
warm "$G"
accepted "unit 2 moves it back to default" 200 2 $(auth "$M") $(json_body '{"keyRingID":"default"}') \
	-X PATCH "/api/v2/keys/$G"
seen1 "... GET under header default" 200 $(auth "$W") $(printf -- '-H\nX-Kms-Key-Ring: default\n') \
	"/api/v2/keys/$G"
accepted "key ring 'get-ring' deleted" 204 2 $(auth "$M") -X DELETE /api/v2/key_rings/get-ring
# A standard key: its payload goes to the roles that may see it, never after its deletion.
GS=$(call 1 $(auth "$W") $(json_body "$(create_json get-std true)") -X POST /api/v2/keys &&
	jq -r '.resources[0].id' "$T_DIR/body")
seen1 "standard key $GS: GET (Writer)" 200 $(auth "$W") "/api/v2/keys/$GS"
expect_eq "... with its payload" "$(r0 'has("payload")')" true
seen1 "... GET (Reader), unit 1 holding it opened" 200 $(auth "$R") "/api/v2/keys/$GS"
expect_eq "... without" "$(r0 'has("payload")')" false
seen1 "... GET (ReaderPlus)" 200 $(auth "${TOK[ReaderPlus]}") "/api/v2/keys/$GS"
expect_eq "... with" "$(r0 'has("payload")')" true
seen1 "... GET metadata (Writer)" 200 $(auth "$W") "/api/v2/keys/$GS/metadata"
expect_eq "... without" "$(r0 'has("payload")')" false
refused "... GET by KeyPurge" 403 FORBIDDEN_ERR 1 $(auth "${TOK[KeyPurge]}") "/api/v2/keys/$GS"
warm "$GS"
accepted "unit 2 deletes key $GS" 204 2 $(auth "$M") -X DELETE "/api/v2/keys/$GS"
seen1 "... GET" 410 $(auth "$W") "/api/v2/keys/$GS"
if grep -q '"payload"' "$T_DIR/body"; then fail "... a deleted key's payload served"; else pass "... no payload"; fi
seen1 "... GET metadata" 200 $(auth "$W") "/api/v2/keys/$GS/metadata"
expect_eq "... Destroyed, no payload" "$(r0 '"\(.state) \(has("payload"))"')" "5 false"
# Expiration: the state at the time of the request, not when unit 1 opened the key. The date is
# 10 s ahead: the creation and the first GETs must fit before it, even on a stalled machine.
ge=$((EPOCHSECONDS + 10))
call 1 $(auth "$W") $(json_body "{\"metadata\":{\"collectionType\":\"$KT\",\"collectionTotal\":1},\"resources\":[{\"type\":\"$KT\",\"name\":\"get-exp\",\"expirationDate\":\"$(date -u -d "@$ge" +%Y-%m-%dT%H:%M:%SZ)\"}]}") \
	-X POST /api/v2/keys
GE=$(jq -r '.resources[0].id' "$T_DIR/body")
seen1 "key $GE expiring in 10 s: GET" 200 $(auth "$W") "/api/v2/keys/$GE"
expect_eq "... Active" "$(r0 .state)" 1
while [ "$EPOCHSECONDS" -le $((ge + 20)) ]; do # until unit 1 says it expired, 20 s past the date at most
	call 1 $(auth "$W") "/api/v2/keys/$GE"
	[ "$(r0 .state)" = 3 ] && break
	sleep 0.2
done
seen1 "... expired: GET" 200 $(auth "$W") "/api/v2/keys/$GE"
expect_eq "... Deactivated" "$(r0 .state)" 3
# Altered by hand in keys.db: refused once the units notice writes by other programs.
warm "$G"
db() { sqlite3 "$A/keys.db" ".timeout 5000" "$@"; }
db "UPDATE keys SET extractable = 1 - extractable WHERE id = '$G'"
noticed 1 500 $(auth "$W") "/api/v2/keys/$G"
refused "key $G's clear column altered by hand: unit 1 refuses the GET" 500 RECORD_TAMPERED_ERR 1 \
	$(auth "$W") "/api/v2/keys/$G"
refused "... and the metadata" 500 RECORD_TAMPERED_ERR 1 $(auth "$W") "/api/v2/keys/$G/metadata"
db "UPDATE keys SET extractable = 1 - extractable WHERE id = '$G'"
noticed 1 200 $(auth "$W") "/api/v2/keys/$G"
seen1 "... put back: served again" 200 $(auth "$W") "/api/v2/keys/$G"
# Purge: by unit 2's policy pass (restarted with its clock 91 days ahead), while unit 1, left
# running, holds the deleted key opened.
GP=$(mkkey get-purged)
accepted "unit 2 deletes key $GP" 204 2 $(auth "$M") -X DELETE "/api/v2/keys/$GP"
seen1 "... GET metadata (unit 1 opens it)" 200 $(auth "$W") "/api/v2/keys/$GP/metadata"
# restart2 [DAYS]: unit 2 stopped and started again (unit 1 left running), its policy pass
# DAYS ahead each second (none: as before).
restart2() {
	local p i
	p=$(cat "$A/unit-2/pid")
	kill "$p"
	wait_gone "$p"
	sed -i '/^policy_pass_/d' "$A/unit-2/unit.conf"
	[ -z "${1:-}" ] || printf 'policy_pass_interval = 1\npolicy_pass_days_ahead = %s\n' "$1" >>"$A/unit-2/unit.conf"
	"$KYOK" up --instance "$A" >/dev/null 2>&1 || fail "kyok up (unit 2 restarted)"
}
restart2 91
for i in $(seq 1 100); do
	[ "$(db "SELECT count(*) FROM keys WHERE id = '$GP'")" = 0 ] && break
	sleep 0.1
done
expect_eq "unit 2's policy pass purged key $GP" "$(db "SELECT count(*) FROM keys WHERE id = '$GP'")" 0
restart2
refused "... unit 1: GET metadata" 404 NOT_FOUND_ERR 1 $(auth "$W") "/api/v2/keys/$GP/metadata"
refused "... GET" 404 NOT_FOUND_ERR 1 $(auth "$W") "/api/v2/keys/$GP"

# ---- key aliases ---------------------------------------------------------------------------
# A key addressed by alias on every kind of route (read, action, policies, versions, delete),
# through either unit; the refusals of alias creation and deletion; aliases at key creation;
# the alias index altered in the database.
create_aliased() { # create_aliased NAME ALIASES-JSON
	printf '{"metadata":{"collectionType":"%s","collectionTotal":1},"resources":[{"type":"%s","name":"%s","aliases":%s}]}' \
		"$KT" "$KT" "$1" "$2"
}
AL=$(mkkey aliased)
accepted "alias 'app-key' for key $AL (Writer)" 201 $(auth "$W") -X POST "/api/v2/keys/$AL/aliases/app-key"
expect_eq "... the reply is the alias resource" \
	"$(jq -r '[.metadata.collectionType, .resources[0].keyId, .resources[0].alias, (.resources[0].createdBy | length > 0), (.resources[0].creationDate | test("Z$"))] | join(" ")' "$T_DIR/body")" \
	"application/vnd.ibm.kms.key_alias+json $AL app-key true true"
accepted "GET /keys/app-key on unit 2" 200 2 $(auth "$W") /api/v2/keys/app-key
expect_eq "... is key $AL, listing its alias" "$(jq -r '.resources[0] | "\(.id) \(.aliases | join(","))"' "$T_DIR/body")" "$AL app-key"
accepted "GET /keys/app-key/metadata" 200 $(auth "$W") /api/v2/keys/app-key/metadata
accepted "GET /keys/app-key/versions" 200 $(auth "$W") /api/v2/keys/app-key/versions
accepted "wrap with /keys/app-key/actions/wrap" 200 $(auth "$W") $(json_body '{}') -X POST /api/v2/keys/app-key/actions/wrap
ALCT=$(jq -r .ciphertext "$T_DIR/body")
accepted "... unwrap by id on unit 2" 200 2 $(auth "$W") $(json_body "{\"ciphertext\":\"$ALCT\"}") \
	-X POST "/api/v2/keys/$AL/actions/unwrap"
accepted "PUT /keys/app-key/policies (Manager)" 200 $(auth "$M") \
	$(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"type":"application/vnd.ibm.kms.policy+json","dualAuthDelete":{"enabled":false}}]}') \
	-X PUT /api/v2/keys/app-key/policies
accepted "GET /keys/app-key/policies (Manager)" 200 $(auth "$M") /api/v2/keys/app-key/policies
accepted "search=alias:app- lists it" 200 $(auth "$W") "/api/v2/keys?search=alias:app-"
expect_eq "... and only it" "$(jq -r '[.resources[].id] | join(" ")' "$T_DIR/body")" "$AL"
accepted "search=exact:app-key lists it" 200 $(auth "$W") "/api/v2/keys?search=exact:app-key"
expect_eq "... and only it" "$(jq -r '[.resources[].id] | join(" ")' "$T_DIR/body")" "$AL"
AO=$(mkkey other-aliased)
refused "alias in use by another key" 409 KEY_ALIAS_NOT_UNIQUE_ERR $(auth "$W") -X POST "/api/v2/keys/$AO/aliases/app-key"
says "... names the alias" "alias 'app-key'"
refused "the same alias again on its key" 409 KEY_ALIAS_NOT_UNIQUE_ERR $(auth "$W") -X POST "/api/v2/keys/$AL/aliases/app-key"
refused "an alias that is a UUID" 400 KEY_ALIAS_INVALID_ERR $(auth "$W") -X POST "/api/v2/keys/$AL/aliases/$AO"
refused "an alias with a '.'" 400 KEY_ALIAS_INVALID_ERR $(auth "$W") -X POST "/api/v2/keys/$AL/aliases/app.key"
refused "an alias of 1 character" 400 KEY_ALIAS_INVALID_ERR $(auth "$W") -X POST "/api/v2/keys/$AL/aliases/a"
refused "an alias of 91 characters" 400 KEY_ALIAS_INVALID_ERR $(auth "$W") -X POST "/api/v2/keys/$AL/aliases/$(printf 'a%.0s' {1..91})"
refused "alias creation by a Reader" 403 FORBIDDEN_ERR $(auth "${TOK[Reader]}") -X POST "/api/v2/keys/$AL/aliases/by-reader"
refused "alias deletion by a Writer (Manager only)" 403 FORBIDDEN_ERR $(auth "$W") -X DELETE "/api/v2/keys/$AL/aliases/app-key"
for i in 2 3 4 5; do
	accepted "alias $i of 5: app-key-$i (by alias)" 201 $(auth "$W") -X POST "/api/v2/keys/app-key/aliases/app-key-$i"
done
refused "a 6th alias" 400 KEY_ALIAS_QUOTA_ERR $(auth "$W") -X POST "/api/v2/keys/$AL/aliases/app-key-6"
refused "GET of an alias no key has" 404 NOT_FOUND_ERR $(auth "$W") /api/v2/keys/no-such-alias
says "... names it" "no key has the alias 'no-such-alias'"
refused "GET of an alias in another case" 404 NOT_FOUND_ERR $(auth "$W") /api/v2/keys/APP-KEY
refused "a path segment neither id nor alias" 400 MALFORMED_ERR $(auth "$W") /api/v2/keys/not.an.alias
refused "deletion of an alias the key does not have" 404 KEY_ALIAS_NOT_FOUND_ERR $(auth "$M") \
	-X DELETE "/api/v2/keys/$AO/aliases/app-key"
accepted "alias 'app-key' deleted (Manager, unit 2)" 204 2 $(auth "$M") -X DELETE "/api/v2/keys/$AL/aliases/app-key"
refused "... unit 1 no longer finds it" 404 NOT_FOUND_ERR 1 $(auth "$W") /api/v2/keys/app-key
accepted "... and gives it to another key" 201 $(auth "$W") -X POST "/api/v2/keys/$AO/aliases/app-key"
# at creation
accepted "key created with 2 aliases" 201 $(auth "$W") $(json_body "$(create_aliased born '["born-1","born_2"]')") -X POST /api/v2/keys
expect_eq "... listed in the reply" "$(jq -r '.resources[0].aliases | join(",")' "$T_DIR/body")" "born-1,born_2"
refused "key created with an alias in use" 409 KEY_ALIAS_NOT_UNIQUE_ERR $(auth "$W") \
	$(json_body "$(create_aliased dup '["fresh-one","born-1"]')") -X POST /api/v2/keys
refused "key created with the same alias twice" 409 KEY_ALIAS_NOT_UNIQUE_ERR $(auth "$W") \
	$(json_body "$(create_aliased dup '["twice","twice"]')") -X POST /api/v2/keys
refused "key created with 6 aliases" 400 KEY_ALIAS_QUOTA_ERR $(auth "$W") \
	$(json_body "$(create_aliased dup '["s1","s2","s3","s4","s5","s6"]')") -X POST /api/v2/keys
refused "key created with an invalid alias" 400 KEY_ALIAS_INVALID_ERR $(auth "$W") \
	$(json_body "$(create_aliased dup '["fine","not fine"]')") -X POST /api/v2/keys
refused "key created with aliases not an array" 400 MALFORMED_ERR $(auth "$W") \
	$(json_body "$(create_aliased dup '"born-9"')") -X POST /api/v2/keys
accepted "DELETE /keys/born_2 (the key, by alias)" 204 $(auth "$M") -X DELETE /api/v2/keys/born_2
accepted "... its metadata by alias says deleted" 200 $(auth "$W") /api/v2/keys/born-1/metadata
expect_eq "... state 5" "$(jq -r '.resources[0].state' "$T_DIR/body")" 5
# The alias index is not the authority: pointed at another key, it is refused, not followed.
sqlite3 "$A/keys.db" ".timeout 5000" "UPDATE key_aliases SET id = '$AL' WHERE alias = 'app-key'"
refused "alias index altered to name another key" 500 RECORD_TAMPERED_ERR $(auth "$W") /api/v2/keys/app-key
says "... says so" "does not list it"
sqlite3 "$A/keys.db" ".timeout 5000" "UPDATE key_aliases SET id = '$AO' WHERE alias = 'app-key'"
# A row of the index deleted by hand: the alias stays with the key whose sealed record lists
# it, and is given to no other key.
sqlite3 "$A/keys.db" ".timeout 5000" "DELETE FROM key_aliases WHERE alias = 'app-key'"
refused "alias index row deleted: its alias asked for another key" 500 RECORD_TAMPERED_ERR \
	$(auth "$W") -X POST "/api/v2/keys/$AL/aliases/app-key"
says "... says why" "alias 'app-key': every key record was read"
refused "... and for a new key" 500 RECORD_TAMPERED_ERR $(auth "$W") \
	$(json_body "$(create_aliased taker '["app-key"]')") -X POST /api/v2/keys
sqlite3 "$A/keys.db" ".timeout 5000" "INSERT INTO key_aliases (alias, id) VALUES ('app-key', '$AO')"
accepted "... put back, served again" 200 $(auth "$W") /api/v2/keys/app-key

# ---- key rings -----------------------------------------------------------------------------
# Rings made, listed and deleted; keys made in a ring (header X-Kms-Key-Ring), moved (PATCH),
# listed and looked up through the header; the refusals, on both units.
ring_hdr() { printf -- '-H\nX-Kms-Key-Ring: %s\n' "$1"; }
patch_json() { json_body "{\"keyRingID\":\"$1\"}"; }
accepted "key ring 'team-a' created (Writer)" 201 $(auth "$W") -X POST /api/v2/key_rings/team-a
refused "... again" 409 KEY_RING_EXISTS_ERR 2 $(auth "$W") -X POST /api/v2/key_rings/team-a
refused "key ring 'default' created" 409 KEY_RING_EXISTS_ERR $(auth "$W") -X POST /api/v2/key_rings/default
refused "key ring id with '_'" 400 KEY_RING_INVALID_ERR $(auth "$W") -X POST /api/v2/key_rings/team_b
refused "key ring creation by a Reader" 403 FORBIDDEN_ERR $(auth "${TOK[Reader]}") -X POST /api/v2/key_rings/by-reader
accepted "key rings listed (Reader, unit 2)" 200 2 $(auth "${TOK[Reader]}") "/api/v2/key_rings?totalCount=true"
expect_eq "... default and team-a" "$(jq -r '[.metadata.collectionType, .metadata.totalCount, (.resources | map(.id) | join(","))] | join(" ")' "$T_DIR/body")" \
	"application/vnd.ibm.kms.key_ring+json 2 default,team-a"
accepted "key made in team-a (header)" 201 $(auth "$W") $(ring_hdr team-a) $(json_body "$(create_json in-ring)") -X POST /api/v2/keys
RK=$(jq -r '.resources[0].id' "$T_DIR/body")
expect_eq "... its keyRingID" "$(jq -r '.resources[0].keyRingID' "$T_DIR/body")" team-a
refused "key made in a ring that does not exist" 404 KEY_RING_NOT_FOUND_ERR $(auth "$W") $(ring_hdr team-z) \
	$(json_body "$(create_json nowhere)") -X POST /api/v2/keys
refused "header naming no valid ring" 400 KEY_RING_INVALID_ERR $(auth "$W") $(ring_hdr 'a b') /api/v2/keys
accepted "listing with header team-a (unit 2)" 200 2 $(auth "$W") $(ring_hdr team-a) /api/v2/keys
expect_eq "... only its key" "$(jq -r '[.resources[].id] | join(" ")' "$T_DIR/body")" "$RK"
accepted "listing with header default" 200 $(auth "$W") $(ring_hdr default) /api/v2/keys
expect_eq "... not its key" "$(jq -r --arg k "$RK" '[.resources[].id | select(. == $k)] | length' "$T_DIR/body")" 0
accepted "GET of the key with header team-a" 200 $(auth "$W") $(ring_hdr team-a) "/api/v2/keys/$RK"
refused "GET of the key with header default" 404 NOT_FOUND_ERR $(auth "$W") $(ring_hdr default) "/api/v2/keys/$RK"
refused "wrap with it under header default" 404 NOT_FOUND_ERR $(auth "$W") $(ring_hdr default) $(json_body '{}') \
	-X POST "/api/v2/keys/$RK/actions/wrap"
refused "GET of the key under a header naming no ring of the instance" 404 KEY_RING_NOT_FOUND_ERR \
	$(auth "$W") $(ring_hdr team-z) "/api/v2/keys/$RK"
refused "delete of the key under header default (nothing deleted)" 404 NOT_FOUND_ERR $(auth "$M") \
	$(ring_hdr default) -X DELETE "/api/v2/keys/$RK"
expect_eq "HEAD /keys with header team-a: Key-Total counts its key only" \
	"$(curl -sS -I $(auth "$W") $(ring_hdr team-a) "$(url_of "$A" 1)/api/v2/keys" | tr -d '\r' |
		awk -F': ' 'tolower($1) == "key-total" { print $2 }')" 1
refused "key ring deleted while it holds a key" 409 KEY_RING_NOT_EMPTY_ERR $(auth "$M") -X DELETE /api/v2/key_rings/team-a
says "... says how many" "holds 1 key"
refused "key ring 'default' deleted" 400 KEY_RING_DEFAULT_ERR $(auth "$M") -X DELETE /api/v2/key_rings/default
refused "key ring deletion by a Writer" 403 FORBIDDEN_ERR $(auth "$W") -X DELETE /api/v2/key_rings/team-a
refused "key moved by a Writer (Manager only)" 403 FORBIDDEN_ERR $(auth "$W") $(patch_json default) -X PATCH "/api/v2/keys/$RK"
refused "key moved under a header naming another ring" 404 NOT_FOUND_ERR $(auth "$M") $(ring_hdr default) \
	$(patch_json default) -X PATCH "/api/v2/keys/$RK"
refused "key moved to a ring that does not exist" 404 KEY_RING_NOT_FOUND_ERR $(auth "$M") $(patch_json team-z) -X PATCH "/api/v2/keys/$RK"
refused "key moved with another member" 400 BODY_MEMBER_UNSUPPORTED_ERR $(auth "$M") \
	$(json_body '{"keyRingID":"default","name":"x"}') -X PATCH "/api/v2/keys/$RK"
accepted "key moved to default (header team-a, unit 2)" 200 2 $(auth "$M") $(ring_hdr team-a) $(patch_json default) -X PATCH "/api/v2/keys/$RK"
expect_eq "... its keyRingID" "$(jq -r '.resources[0].keyRingID' "$T_DIR/body")" default
accepted "... unit 1 finds it under header default at once" 200 1 $(auth "$W") $(ring_hdr default) "/api/v2/keys/$RK"
accepted "key ring 'team-a' deleted, empty now" 204 $(auth "$M") -X DELETE /api/v2/key_rings/team-a
refused "... again" 404 KEY_RING_NOT_FOUND_ERR 2 $(auth "$M") -X DELETE /api/v2/key_rings/team-a

# ---- records altered in the database -------------------------------------------------------
db() { sqlite3 "$A/keys.db" ".timeout 5000" "$@"; }
T=$(mkkey tamper)
for n in 1 2; do # both units have the key opened in their caches
	accepted "control: unit $n wraps with key $T" 200 $n $(auth "$W") $(json_body '{}') -X POST "/api/v2/keys/$T/actions/wrap"
done
TCT=$(jq -r .ciphertext "$T_DIR/body")
orig=$(db "SELECT hex(blob) FROM keys WHERE id = '$T'")
pos=$((40 + RANDOM % (${#orig} - 80)))
c=${orig:$pos:1}
flipped="${orig:0:$pos}$(printf '%X' $((0x$c ^ 1)))${orig:$((pos + 1))}"
db "UPDATE keys SET blob = X'$flipped' WHERE id = '$T'"
# Both units hold the key opened: the checks start once each has noticed (noticed).
noticed 1 500 $(auth "$M") "/api/v2/keys/$T"
noticed 2 500 $(auth "$M") "/api/v2/keys/$T"
refused "record ciphertext altered (hex digit $pos): key read" 500 RECORD_TAMPERED_ERR \
	$(auth "$M") "/api/v2/keys/$T"
refused "... wrap on unit 1 (key was cached)" 500 RECORD_TAMPERED_ERR 1 $(auth "$W") $(json_body '{}') \
	-X POST "/api/v2/keys/$T/actions/wrap"
refused "... unwrap on unit 2 (key was cached)" 500 RECORD_TAMPERED_ERR 2 $(auth "$W") \
	$(json_body "{\"ciphertext\":\"$TCT\"}") -X POST "/api/v2/keys/$T/actions/unwrap"
refused "... disable by a Manager (not rewritten under a valid seal)" 500 RECORD_TAMPERED_ERR 2 $(auth "$M") \
	$(json_body '{}') -X POST "/api/v2/keys/$T/actions/disable"
if grep -q '"plaintext"\|"ciphertext"' "$T_DIR/body"; then fail "a tampered record served key material"; fi
db "UPDATE keys SET blob = X'$orig' WHERE id = '$T'"
accepted "record restored: unit 2 unwraps again" 200 2 $(auth "$W") \
	$(json_body "{\"ciphertext\":\"$TCT\"}") -X POST "/api/v2/keys/$T/actions/unwrap"

db "UPDATE keys SET extractable = 1 - extractable WHERE id = '$T'"
noticed 1 500 $(auth "$M") "/api/v2/keys/$T"
noticed 2 500 $(auth "$M") "/api/v2/keys/$T"
refused "clear column 'extractable' flipped: key read" 500 RECORD_TAMPERED_ERR 2 $(auth "$M") "/api/v2/keys/$T"
refused "... metadata" 500 RECORD_TAMPERED_ERR $(auth "$M") "/api/v2/keys/$T/metadata"
refused "... unwrap on unit 1 (key was cached)" 500 RECORD_TAMPERED_ERR 1 $(auth "$W") \
	$(json_body "{\"ciphertext\":\"$TCT\"}") -X POST "/api/v2/keys/$T/actions/unwrap"
refused "... wrap on unit 2" 500 RECORD_TAMPERED_ERR 2 $(auth "$W") $(json_body '{}') \
	-X POST "/api/v2/keys/$T/actions/wrap"
# The listing withholds that record only, and says so.
accepted "... keys listed with extractable=true" 200 $(auth "$M") -D "$T_DIR/hdr" \
	"/api/v2/keys?extractable=true"
if [ "$(jq -r '[.resources[].id] | index("'"$T"'")' "$T_DIR/body")" = null ] &&
	grep -qi '^Kyok-Keys-Withheld: 1' "$T_DIR/hdr"; then
	pass "... the listing leaves the altered record out, Kyok-Keys-Withheld: 1"
else
	fail "... the listing: $(head -c 300 "$T_DIR/body") $(grep -i withheld "$T_DIR/hdr")"
fi
db "UPDATE keys SET extractable = 1 - extractable WHERE id = '$T'"
accepted "column restored: unit 1 unwraps again" 200 1 $(auth "$W") \
	$(json_body "{\"ciphertext\":\"$TCT\"}") -X POST "/api/v2/keys/$T/actions/unwrap"

# ---- API key rows altered in the database ---------------------------------------------------
# Someone who can write keys.db but holds no master key tries to raise a role, add a key of
# their own, bring a revoked key back, or move a tag to another row: every unit refuses the
# row (token service and API), and the listing says ALTERED.
# token_refused DESC STATUS SLUG FILE [N]: the token service of unit N refuses the API key in
# FILE with STATUS and kyokCode SLUG, and issues no token; key storage unchanged.
token_refused() {
	local before
	before=$(digest "$A")
	jq -j .apikey "$4" >"$T_DIR/ak.raw"
	status=$(curl -sS -o "$T_DIR/body" -w '%{http_code}' --data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' \
		--data-urlencode "apikey@$T_DIR/ak.raw" "$(url_of "$A" "${5:-1}")/identity/token")
	if [ "$status" = "$2" ] && [ "$(jq -r .kyokCode "$T_DIR/body")" = "$3" ] &&
		[ "$(jq -r 'has("access_token")' "$T_DIR/body")" = false ] && [ "$before" = "$(digest "$A")" ]; then
		pass "$1: $status $3 ($(jq -r .errorMessage "$T_DIR/body"))"
	else
		fail "$1: $status $(cat "$T_DIR/body")"
	fi
}
# settle: units notice writes by other programs within 250 ms.
settle() { sleep 0.4; }
R=${TOK[Reader]}
db "UPDATE api_keys SET role = 'Manager' WHERE name = 'r-Reader'"
settle
token_refused "API key row: role raised Reader -> Manager: token service, unit 1" 500 record-tampered "$AK/r-Reader.apikey" 1
token_refused "... unit 2" 500 record-tampered "$AK/r-Reader.apikey" 2
refused "... a Reader token issued before: refused, not served as Manager" 500 RECORD_TAMPERED_ERR 2 \
	$(auth "$R") /api/v2/keys
if "$KYOK" tke apikeys | grep -q "r-Reader .*ALTERED" && "$KYOK" tke apikeys | grep -q "1 API key was ALTERED"; then
	pass "... kyok tke apikeys shows the row ALTERED"
else
	fail "... kyok tke apikeys: $("$KYOK" tke apikeys 2>&1)"
fi
db "UPDATE api_keys SET role = 'Reader' WHERE name = 'r-Reader'"
settle
accepted "... role put back: the Reader token works again" 200 2 $(auth "$R") /api/v2/keys

# A key of one's own, with a Manager role: its hash inserted, with the tag of a real row, with
# a random tag, with none.
printf '{"apikey":"%s"}' "$(head -c 32 /dev/urandom | xxd -p -c 64)" >"$T_DIR/forged.apikey"
fhash=$(jq -j .apikey "$T_DIR/forged.apikey" | sha256sum | cut -c1-64)
db "INSERT INTO api_keys (id, role, hash, created, revoked, name, mac) SELECT 'forged-1', 'Manager',
	X'$fhash', created, 0, 'forged', mac FROM api_keys WHERE name = 'r-Manager'"
settle
token_refused "API key row inserted (tag copied from a real Manager row)" 500 record-tampered "$T_DIR/forged.apikey" 2
db "UPDATE api_keys SET mac = randomblob(32) WHERE id = 'forged-1'"
settle
token_refused "... with a random tag" 500 record-tampered "$T_DIR/forged.apikey" 1
db "UPDATE api_keys SET mac = NULL WHERE id = 'forged-1'"
settle
token_refused "... with no tag" 500 record-tampered "$T_DIR/forged.apikey" 1
db "DELETE FROM api_keys WHERE id = 'forged-1'"
# A real row's hash replaced by the forger's (keeps id, role and tag).
orig_hash=$(db "SELECT hex(hash) FROM api_keys WHERE name = 'r-Manager'")
db "UPDATE api_keys SET hash = X'$fhash' WHERE name = 'r-Manager'"
settle
token_refused "API key row: hash of a Manager key replaced by the forger's" 500 record-tampered "$T_DIR/forged.apikey" 2
db "UPDATE api_keys SET hash = X'$orig_hash' WHERE name = 'r-Manager'"
settle
# A revoked key brought back.
"$KYOK" tke apikey-create --name r-gone --role Writer --password-file "$pa" >/dev/null 2>&1 || fail "apikey-create r-gone"
gid=$(jq -r .id "$AK/r-gone.apikey")
G=$(token_of "$AK/r-gone.apikey")
expect_ok "revoke r-gone" "$KYOK" tke apikey-revoke --id "$gid" --yes --password-file "$pa"
db "UPDATE api_keys SET revoked = 0 WHERE id = '$gid'"
settle
token_refused "API key row: revocation undone (revoked = 0)" 500 record-tampered "$AK/r-gone.apikey" 1
refused "... its token from before the revocation" 500 RECORD_TAMPERED_ERR 2 $(auth "$G") /api/v2/keys
# The listing says "not revoked", but the unit did not verify that: the CLI sends the revoke,
# and the units revoke the row all the same.
expect_ok "... apikey-revoke revokes the altered row again" \
	"$KYOK" tke apikey-revoke --id "$gid" --yes --password-file "$pa"
token_refused "... then the token service refuses it as revoked" 400 apikey-invalid "$AK/r-gone.apikey" 2
if "$KYOK" tke apikeys | grep -qE "r-gone .*20[0-9-]+T[0-9:]+Z +ok$"; then
	pass "... listed revoked, verified"
else
	fail "... listing: $("$KYOK" tke apikeys 2>&1)"
fi
# The revocation undone again, then apikey-create with the same name (it sends the key in
# its file again): the units never write an altered row again, so the revocation stands.
db "UPDATE api_keys SET revoked = 0 WHERE id = '$gid'"
settle
before=$(digest "$A")
expect_fail "revocation undone, then apikey-create with the same name: refused by the units" \
	"$gid.*does not verify \(altered\).*another name" \
	"$KYOK" tke apikey-create --name r-gone --role Writer --password-file "$pa"
expect_eq "... the row is left as it was" "$(digest "$A")" "$before"
token_refused "... the token service still refuses the key" 500 record-tampered "$AK/r-gone.apikey" 2
if "$KYOK" tke apikeys | grep -q "make new ones under other names"; then
	pass "... kyok tke apikeys says to make new keys under other names"
else
	fail "... kyok tke apikeys: $("$KYOK" tke apikeys 2>&1)"
fi
expect_ok "... apikey-revoke revokes it again" "$KYOK" tke apikey-revoke --id "$gid" --yes --password-file "$pa"
# The revoked row deleted by hand: the storage digest still holds it, and apikey-create with
# the same name does not make it anew.
db "DELETE FROM api_keys WHERE id = '$gid'"
settle
before=$(digest "$A")
expect_fail "revoked row deleted by hand, then apikey-create with the same name: refused" \
	"$gid.*deleted from key storage by hand.*another name" \
	"$KYOK" tke apikey-create --name r-gone --role Writer --password-file "$pa"
expect_eq "... nothing written" "$(digest "$A")" "$before"
# A row without a tag (made by hand, or before rows were tagged): it cannot show whether it
# was revoked, so it is not written again either; a new key under another name replaces it.
db "UPDATE api_keys SET mac = NULL WHERE name = 'r-ReaderPlus'"
settle
token_refused "API key row without a tag" 500 record-tampered "$AK/r-ReaderPlus.apikey" 1
before=$(digest "$A")
expect_fail "... apikey-create with the same name: refused, not written again" \
	"does not verify \(it has no tag\).*another name" \
	"$KYOK" tke apikey-create --name r-ReaderPlus --role ReaderPlus --password-file "$pa"
expect_eq "... the row is left as it was" "$(digest "$A")" "$before"
expect_ok "... a new key under another name" \
	"$KYOK" tke apikey-create --name r-ReaderPlus-2 --role ReaderPlus --password-file "$pa"
accepted "... its token works" 200 2 $(auth "$(token_of "$AK/r-ReaderPlus-2.apikey")") /api/v2/keys

# ---- key limit (instance B: key_limit = 3) --------------------------------------------------
for i in 1 2 3; do
	accepted "instance B: key $i of 3" 201 "$B" $(auth "$TB" "$(iid_of "$B")") \
		$(json_body "$(create_json "lim-$i")") -X POST /api/v2/keys
done
refused "key limit reached (key_limit = 3)" 409 KEY_LIMIT_ERR "$B" $(auth "$TB" "$(iid_of "$B")") \
	$(json_body "$(create_json lim-4)") -X POST /api/v2/keys
# A key cache smaller than the keys in use (key_cache = 2, 3 keys): every answer is right.
for i in 1 2 3; do
	LIM[$i]=$(sqlite3 -readonly "$B/keys.db" "SELECT id FROM keys WHERE name = 'lim-$i'")
	call "$B" $(auth "$TB" "$(iid_of "$B")") $(json_body '{}') -X POST "/api/v2/keys/${LIM[$i]}/actions/wrap"
	LCT[$i]=$(jq -r .ciphertext "$T_DIR/body")
	LPT[$i]=$(jq -r .plaintext "$T_DIR/body")
done
bad=0
for round in 1 2 3; do
	for i in 1 3 2; do
		call "$B" $(auth "$TB" "$(iid_of "$B")") $(json_body "{\"ciphertext\":\"${LCT[$i]}\"}") \
			-X POST "/api/v2/keys/${LIM[$i]}/actions/unwrap"
		[ "$status" = 200 ] && [ "$(jq -r .plaintext "$T_DIR/body")" = "${LPT[$i]}" ] || bad=$((bad + 1))
	done
done
expect_eq "key_cache = 2, 3 keys unwrapping in turn (9 unwraps): wrong answers" "$bad" 0
if grep -q 'key cache full' "$B/unit-1/unit.log"; then pass "... the unit logged that its key cache is full"; else fail "... no 'key cache full' line in the unit log"; fi
refused "... an import too" 409 KEY_LIMIT_ERR "$B" $(auth "$TB" "$(iid_of "$B")") \
	$(json_body "{\"metadata\":{\"collectionType\":\"$KT\",\"collectionTotal\":1},\"resources\":[{\"type\":\"$KT\",\"name\":\"lim-5\",\"extractable\":false,\"payload\":\"$(head -c 32 /dev/urandom | base64 -w0)\"}]}") \
	-X POST /api/v2/keys

# ---- a unit left behind by a rotation (instance B: unit 2 deselected, rotation on unit 1) ---
export KYOK_INSTANCE=$B
"$KYOK" tke cryptounit-rm --units 2 >/dev/null
"$KYOK" tke mk-add --random --description b1 --password-file "$(newpw pb1)" >/dev/null
"$KYOK" tke mk-add --random --description b2 --password-file "$(newpw pb2)" >/dev/null
sel bob bea
expect_ok "instance B: new master key on unit 1 only" "$KYOK" tke cryptounit-mk-load --parts 1,2 \
	--password-file "$T_DIR/pw/pb1" --password-file "$T_DIR/pw/pb2" \
	--password-file "$T_DIR/pw/bob" --password-file "$T_DIR/pw/bea"
sel bob
"$KYOK" tke cryptounit-mk-commit --password-file "$T_DIR/pw/bob" >/dev/null
expect_ok "instance B: rotation on unit 1" "$KYOK" tke cryptounit-mk-rotate --yes --password-file "$T_DIR/pw/bob"
export KYOK_INSTANCE=$A
TB=$(token_of "$AK/b-writer.apikey" "$(url_of "$B" 1)")
refused "API of a unit left behind by a rotation (old master key), valid token" 503 MASTER_KEY_MISMATCH_ERR \
	"$B" 2 $(auth "$TB" "$(iid_of "$B")") /api/v2/keys
jq -j .apikey "$AK/b-writer.apikey" >"$T_DIR/ak.raw"
before=$(digest "$B")
status=$(curl -sS -o "$T_DIR/body" -w '%{http_code}' --data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' \
	--data-urlencode "apikey@$T_DIR/ak.raw" "$(url_of "$B" 2)/identity/token")
if [ "$status" = 503 ] && [ "$(jq -r .kyokCode "$T_DIR/body")" = master-key-mismatch ] &&
	[ "$(jq -r 'has("access_token")' "$T_DIR/body")" = false ] && [ "$before" = "$(digest "$B")" ]; then
	pass "token service of a unit left behind by a rotation: 503 $(jq -r .errorCode "$T_DIR/body") ($(jq -r .errorMessage "$T_DIR/body"))"
else
	fail "token service of a unit left behind by a rotation: $status $(cat "$T_DIR/body")"
fi
accepted "... it left the instance's token signing key alone: the token still works on unit 1" 200 \
	"$B" 1 $(auth "$TB" "$(iid_of "$B")") /api/v2/keys

# ---- expired token (instance B: token_ttl = 10) ---------------------------------------------
# 10 s: the control request must fit in the token's life, even on a stalled machine.
"$KYOK" down --instance "$B" >/dev/null 2>&1
printf 'token_ttl = 10\n' >>"$B/unit-1/unit.conf"
"$KYOK" up --instance "$B" >/dev/null 2>&1
jq -j .apikey "$AK/b-writer.apikey" >"$T_DIR/ak.raw"
reply=$(curl -fsS --data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' \
	--data-urlencode "apikey@$T_DIR/ak.raw" "$(url_of "$B" 1)/identity/token")
TB=$(jq -r .access_token <<<"$reply")
tb_end=$((EPOCHSECONDS + 10 + 20))
expect_eq "instance B: tokens now live 10 s" "$(jq -r .expires_in <<<"$reply")" 10
accepted "control: the fresh token works (and is remembered by the unit)" 200 "$B" \
	$(auth "$TB" "$(iid_of "$B")") /api/v2/keys
while [ "$EPOCHSECONDS" -le "$tb_end" ]; do # until unit 1 refuses it, 20 s past its end at most
	call "$B" $(auth "$TB" "$(iid_of "$B")") /api/v2/keys
	[ "$status" = 401 ] && break
	sleep 0.2
done
refused "expired token" 401 UNAUTHORIZED_ERR "$B" $(auth "$TB" "$(iid_of "$B")") /api/v2/keys

# ---- instance B crypto-shredded (zeroize) and initialised again: it serves again ------------
# What the units kept under the old master key (token signing key, instance policies) went
# with it: neither may block the instance (a unit's first master key renews them).
export KYOK_INSTANCE=$B
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null 2>&1
expect_fail "instance B: a Manager API key: unit 1 stores it, unit 2 (left behind by the rotation) cannot tag it" \
	"2 +zone-2 +refused: master key mismatch.*integrity key is under a master key" \
	"$KYOK" tke apikey-create --name b-manager --role Manager --password-file "$T_DIR/pw/bob"
export KYOK_INSTANCE=$A
accepted "instance B: Manager sets the instance policy dualAuthDelete" 204 "$B" \
	$(auth "$(token_of "$AK/b-manager.apikey" "$(url_of "$B" 1)")" "$(iid_of "$B")") \
	$(json_body '{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"dualAuthDelete","policy_data":{"enabled":true}}]}') \
	-X PUT /api/v2/instance/policies
accepted "instance B: Manager creates an import token" 200 "$B" \
	$(auth "$(token_of "$AK/b-manager.apikey" "$(url_of "$B" 1)")" "$(iid_of "$B")") \
	$(json_body '{"maxAllowedRetrievals":5}') -X POST /api/v2/import_token
"$KYOK" down --instance "$B" >/dev/null 2>&1
sed -i '/^key_limit/d; /^key_cache/d' "$B/unit-1/unit.conf" "$B/unit-2/unit.conf"
"$KYOK" up --instance "$B" >/dev/null 2>&1
export KYOK_INSTANCE=$B
expect_ok "instance B: zeroize both units" "$KYOK" tke cryptounit-zeroize --yes --password-file "$T_DIR/pw/bob"
expect_ok "instance B: auto-init again (another master key)" "$KYOK" tke auto-init --signature 1 \
	--revocation 1 --sigkeys "$("$KYOK" tke sigkeys --output json | jq -r '[.sigkeys[] | select(.name == "bob") | .number] | join(",")')" \
	--password-file "$T_DIR/pw/bob"
export KYOK_INSTANCE=$A
# The API keys went with the master key: their tags were made under a key kept under it.
before=$(digest "$B")
jq -j .apikey "$AK/b-writer.apikey" >"$T_DIR/ak.raw"
status=$(curl -sS -o "$T_DIR/body" -w '%{http_code}' --data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' \
	--data-urlencode "apikey@$T_DIR/ak.raw" "$(url_of "$B" 2)/identity/token")
if [ "$status" = 400 ] && [ "$(jq -r .kyokCode "$T_DIR/body")" = apikey-invalid ] && [ "$before" = "$(digest "$B")" ]; then
	pass "instance B after the shred: the API keys made before are gone (400 apikey-invalid)"
else
	fail "instance B after the shred: old API key: $status $(cat "$T_DIR/body")"
fi
expect_eq "... no api_keys row left from before" "$(sqlite3 -readonly "$B/keys.db" "SELECT count(*) FROM api_keys")" 0
export KYOK_INSTANCE=$B
expect_ok "instance B: a new API key" "$KYOK" tke apikey-create --name b-writer2 --role Writer \
	--password-file "$T_DIR/pw/bob"
export KYOK_INSTANCE=$A
TB=$(token_of "$AK/b-writer2.apikey" "$(url_of "$B" 2)")
accepted "instance B after the shred: unit 2 issues tokens, unit 1 creates a key" 201 "$B" 1 \
	$(auth "$TB" "$(iid_of "$B")") $(json_body "$(create_json after-shred)") -X POST /api/v2/keys
refused "... the import token went with the old master key" 404 IMPORT_TOKEN_MISSING_ERR "$B" 2 \
	$(auth "$TB" "$(iid_of "$B")") /api/v2/import_token
refused "... the old keys stay unreadable" 503 MASTER_KEY_MISMATCH_ERR "$B" 2 \
	$(auth "$TB" "$(iid_of "$B")") "/api/v2/keys/$(sqlite3 -readonly "$B/keys.db" "SELECT id FROM keys WHERE name = 'lim-1'")"
# The shredded records do not count toward the limit of the new master key (key_limit = 3
# again, 3 shredded records and 1 new one in the database).
export KYOK_INSTANCE=$A
"$KYOK" down --instance "$B" >/dev/null 2>&1
printf 'key_limit = 3\n' | tee -a "$B/unit-1/unit.conf" >>"$B/unit-2/unit.conf"
"$KYOK" up --instance "$B" >/dev/null 2>&1
for i in 2 3; do
	accepted "instance B after the shred: key $i of 3 (3 shredded records in storage)" 201 "$B" \
		$(auth "$TB" "$(iid_of "$B")") $(json_body "$(create_json "new-$i")") -X POST /api/v2/keys
done
refused "... the 4th: key limit of the new master key" 409 KEY_LIMIT_ERR "$B" 2 $(auth "$TB" "$(iid_of "$B")") \
	$(json_body "$(create_json new-4)") -X POST /api/v2/keys
expect_eq "... listing total counts only the 3 readable keys" "$(call "$B" $(auth "$TB" "$(iid_of "$B")") /api/v2/keys; jq -r .metadata.collectionTotal "$T_DIR/body")" 3

# Units stopped cleanly: a sanitizer build reports what it found in their logs.
for d in "$T_DIR"/inst*; do "$KYOK" down --instance "$d" >/dev/null 2>&1 || true; done
if grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$T_DIR"/inst*/unit-*/unit.log >/dev/null 2>&1; then
	fail "a unit's log has a sanitizer report: $(grep -hE -m3 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$T_DIR"/inst*/unit-*/unit.log)"
else
	pass "units stopped, no sanitizer report in their logs"
fi
finish
