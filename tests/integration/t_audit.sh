#!/usr/bin/env bash
# The audit trail of crypto units (docs/formats.md, section 10), on real units:
#   a ceremony (auto-init) and key API calls (creates, wraps, unwraps, a delete, a purge too
#   early, a 403, a revoked API key at the token service and with its old token, an unknown
#   route) each leave their lines: signers by name and SKI, API key ids, statuses and codes,
#   and no secret (API key, token, plaintext); 'kyok audit verify' passes on both units, across
#   rotated files (audit_max_bytes = 4096 on unit 1); the openssl commands of formats.md,
#   run as they stand there, check a checkpoint and the chain to it;
#   each kind of change fails verify naming the line: a line removed, two swapped, a forged
#   line inserted, a field edited, a chain recomputed after an edit, a signature altered, a
#   file left out, the lines after the last checkpoint; a log not pinned is refused;
#   a log that cannot be written (the next file cannot be created): key API reads, a key
#   creation, a token and an admin command are refused with audit-unavailable and change
#   nothing; once writable again the unit serves, and the chain still verifies.
. "$(dirname "$0")/helpers.sh"
setup
IFS=$'\n' # $(auth ...) expands to one curl argument a line

AK="$KYOK_TKE_FILES/apikeys"
A1="$KYOK_INSTANCE/unit-1/data/audit"
A2="$KYOK_INSTANCE/unit-2/data/audit"
pa=$(newpw ann)

expect_match() {
	if grep -qE -- "$2" <<<"$3"; then pass "$1"; else fail "$1: /$2/ not in: $3"; fi
}
url() { jq -r ".units[] | select(.number==${2:-1}) | .url" "$KYOK_INSTANCE/instance.json"; }
token_of() {
	jq -j .apikey "$1" >"$T_DIR/ak.raw"
	curl -sS --data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' \
		--data-urlencode "apikey@$T_DIR/ak.raw" "$(url)/identity/token" | jq -r .access_token
}
# call ARGS... PATH: to unit 1; body in $T_DIR/body, status in $status.
call() {
	local path=${*: -1}
	status=$(curl -sS -o "$T_DIR/body" -w '%{http_code}' "${@:1:$#-1}" "$(url)$path")
}
auth() { printf -- '-H\nAuthorization: Bearer %s\n-H\nBluemix-Instance: %s\n' "$1" "$(instance_id)"; }
json_body() { printf -- '-H\nContent-Type: application/json\n--data-binary\n%s\n' "$1"; }
create_json() {
	printf '{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"type":"application/vnd.ibm.kms.key+json","name":"%s","extractable":false}]}' "$1"
}
# digest: a fingerprint of everything in key storage (keys.db, or its PostgreSQL database).
digest() {
	if store_is_pg; then
		pg_dump --data-only "$KYOK_PG_URI" | sha256sum | cut -c1-16
	else
		sqlite3 -readonly "$KYOK_INSTANCE/keys.db" .dump | sha256sum | cut -c1-16
	fi
}
# lines DIR: every line of a unit's log, in order.
lines() { cat "$1"/audit-*.jsonl | tr -d '\0'; } # a running unit's file: zeros reserved ahead
# verify_fails DESC PATTERN FILE...: 'kyok audit verify FILE...' must fail, naming PATTERN.
verify_fails() {
	local desc=$1 pat=$2
	shift 2
	expect_fail "$desc" "$pat" "$KYOK" audit verify "$@"
}
# wait_checkpoint DIR: until the last line of the newest file is a checkpoint.
wait_checkpoint() {
	local i
	for i in $(seq 1 600); do
		tr -d '\0' <"$(ls "$1"/audit-*.jsonl | tail -n 1)" | tail -n 1 | grep -q '"event":"checkpoint"' && return 0
		sleep 0.1
	done
	fail "no checkpoint in $1"
}

# ---- an instance: unit 1 rotates its audit log at 4096 bytes --------------------------------
"$KYOK" up --units 2 >/dev/null 2>&1
"$KYOK" down >/dev/null 2>&1
printf 'audit_max_bytes = 4096\n' >>"$KYOK_INSTANCE/unit-1/unit.conf"
"$KYOK" up >/dev/null 2>&1
expect_ok "cryptounit-add" "$KYOK" tke cryptounit-add --units 1,2
expect_ok "auto-init (admin ann)" "$KYOK" tke auto-init --signature 1 --revocation 1 \
	--new-admins ann --password-file "$pa"
"$KYOK" tke sigkey-sel --sigkeys 1 >/dev/null
for r in Writer Manager Reader; do
	expect_ok "apikey-create $r" "$KYOK" tke apikey-create --name "k-$r" --role "$r" --password-file "$pa"
done
W=$(token_of "$AK/k-Writer.apikey")
M=$(token_of "$AK/k-Manager.apikey")
R=$(token_of "$AK/k-Reader.apikey")
RID=$(jq -r .id "$AK/k-Reader.apikey")
WID=$(jq -r .id "$AK/k-Writer.apikey")

# ---- key API calls -------------------------------------------------------------------------
call $(auth "$W") $(json_body "$(create_json a1)") -X POST /api/v2/keys
K1=$(jq -r '.resources[0].id' "$T_DIR/body")
expect_eq "create key 1" "$status" 201
call $(auth "$W") $(json_body "$(create_json a2)") -X POST /api/v2/keys
K2=$(jq -r '.resources[0].id' "$T_DIR/body")
expect_eq "create key 2" "$status" 201
PT=$(head -c 32 /dev/urandom | base64)
call $(auth "$W") $(json_body "{\"plaintext\":\"$PT\"}") -X POST "/api/v2/keys/$K1/actions/wrap"
expect_eq "wrap" "$status" 200
CT=$(jq -r .ciphertext "$T_DIR/body")
for i in 1 2 3 4 5 6; do
	call $(auth "$W") $(json_body "{\"ciphertext\":\"$CT\"}") -X POST "/api/v2/keys/$K1/actions/unwrap"
done
expect_eq "unwrap" "$status" 200
call $(auth "$R") $(json_body "$(create_json by-reader)") -X POST /api/v2/keys
expect_eq "a Reader creates a key: 403" "$status" 403
call $(auth "$M") -X DELETE "/api/v2/keys/$K2"
expect_eq "delete key 2" "$status" 204
call $(auth "$M") -X DELETE "/api/v2/keys/$K2/purge"
expect_eq "a Manager purges key 2: 403" "$status" 403
call $(auth "$W") /api/v2/keyRings
expect_eq "unknown route: 404" "$status" 404
expect_ok "apikey-revoke the Reader's key" "$KYOK" tke apikey-revoke --id "$RID" --yes --password-file "$pa"
status=$(jq -j .apikey "$AK/k-Reader.apikey" | curl -sS -o "$T_DIR/body" -w '%{http_code}' \
	--data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' --data-urlencode "apikey@-" \
	"$(url)/identity/token")
expect_eq "token for the revoked API key: 400" "$status" 400
call $(auth "$R") /api/v2/keys
expect_eq "the revoked API key's old token: 401" "$status" 401

# ---- what the log says ---------------------------------------------------------------------
L=$(lines "$A1")
sel() { jq -c "select($1)" <<<"$L"; }
ski=$(openssl x509 -in "$(sigkey_file ann)" -noout -ext subjectKeyIdentifier | tail -n 1 | tr -d ' :' | tr 'A-F' 'a-f')
expect_eq "thresholds-set: intent and done, signed by ann (name and SKI)" \
	"$(sel '.event=="admin-command" and .op=="thresholds-set"' | jq -r '"\(.phase) \(.signers[0].name) \(.signers[0].ski) \(.signers[0].admin) \(.outcome // "-")"' | tr '\n' '|')" \
	"intent ann $ski true -|done ann $ski true ok|"
expect_eq "mk-setimm: sealed state written between intent and done" \
	"$(jq -r 'select(.event != "checkpoint" and .event != "file") | .event + "/" + (.phase // "") + "/" + (.op // "")' <<<"$L" |
		grep -A2 '^admin-command/intent/mk-setimm$' | tr '\n' ' ')" \
	"admin-command/intent/mk-setimm seal// admin-command/done/mk-setimm "
expect_eq "apikey-revoke done line" "$(sel '.event=="admin-command" and .op=="apikey-revoke" and .phase=="done"' | jq -r .outcome)" ok
expect_eq "two creations: intent and done 201, by the Writer's API key" \
	"$(sel '.event=="key-api" and .route=="keys" and .method=="POST" and .apikey=="'"$WID"'"' | jq -r '.phase + ":" + (.status // "-" | tostring)' | tr '\n' ' ')" \
	"intent:- done:201 intent:- done:201 "
expect_eq "unwraps: one done line each, no intent" \
	"$(sel '.event=="key-api" and .action=="unwrap"' | jq -r '"\(.phase) \(.status) \(.key)"' | sort | uniq -c | tr -s ' ')" \
	" 6 done 200 $K1"
expect_eq "the 403: route, API key, code" \
	"$(sel '.event=="key-api" and .apikey=="'"$RID"'" and .status==403' | jq -r '"\(.method) \(.route) \(.code)"')" \
	"POST keys forbidden"
expect_eq "delete and purge of key 2" \
	"$(sel '.event=="key-api" and .key=="'"$K2"'" and .phase=="done"' | jq -r '"\(.route) \(.status) \(.code)"' | tr '\n' '|')" \
	"keys/{id} 204 ok|keys/{id}/purge 403 forbidden|"
expect_eq "the revoked API key at the token service" \
	"$(sel '.event=="key-api" and .route=="/identity/token" and .apikey=="'"$RID"'"' | jq -r '"\(.status) \(.code)"' | tail -n 1)" \
	"400 apikey-invalid"
expect_eq "its old token" "$(sel '.event=="key-api" and .apikey=="'"$RID"'" and .status==401' | jq -r .code)" unauthorized
expect_eq "the unknown route" "$(sel '.event=="key-api" and .route=="/api/v2/keyRings"' | jq -r '"\(.status) \(.code)"')" "404 not-found"
secrets=0
for s in "$(jq -r .apikey "$AK/k-Writer.apikey")" "$W" "$PT" "$CT"; do
	grep -qF -- "$s" "$A1"/*.jsonl "$A2"/*.jsonl && secrets=$((secrets + 1))
done
expect_eq "no API key secret, token, plaintext or ciphertext in the logs" "$secrets" 0
n1=$(ls "$A1"/audit-*.jsonl | wc -l)
if [ "$n1" -ge 3 ]; then pass "unit 1's log rotated ($n1 files)"; else fail "unit 1's log did not rotate: $n1 files"; fi
first2=$(ls "$A1"/audit-*.jsonl | sed -n 2p)
expect_eq "a new file begins with its file line, linked to the old file's last line" \
	"$(head -n 1 "$first2" | jq -r '.event + " " + .prev')" \
	"file $(tail -n 1 "$(ls "$A1"/audit-*.jsonl | sed -n 1p)" | tr -d '\n' | openssl dgst -sha256 -r | cut -c1-64)"

# ---- verify, on the running units and after a stop ------------------------------------------
wait_checkpoint "$A1"
wait_checkpoint "$A2"
expect_ok "verify the running instance" "$KYOK" audit verify
"$KYOK" down >/dev/null 2>&1
out=$("$KYOK" audit verify 2>&1) && rc=0 || rc=$?
expect_eq "verify after a stop: exit 0" "$rc" 0
expect_match "... both units, ending with a clean stop" \
	"crypto unit 1 .*ok: .*ends with a clean stop" "$out"
expect_match "... unit 2" "crypto unit 2 .*ok: .*ends with a clean stop" "$out"
big=$(for f in "$A1"/audit-*.jsonl; do stat -c %s "$f"; done | sort -n | tail -n 1)
if [ "$big" -le 4096 ]; then pass "no file over audit_max_bytes ($big)"; else fail "a file of $big bytes"; fi
expect_eq "stop, then a checkpoint, at the end" \
	"$(lines "$A1" | tail -n 2 | jq -r .event | tr '\n' ' ')" "stop checkpoint "

# ---- formats.md section 10's openssl commands, as they stand there ----------------------------
DOC=$(dirname "$0")/../../docs/formats.md
awk '/^### Checking a line with openssl$/{f=1} f && /^```sh$/{b=1; next} b && /^```$/{exit} b{print}' \
	"$DOC" >"$T_DIR/doc-check.sh"
O="$T_DIR/oc"
mkdir -p "$O"
F=$(ls "$A1"/audit-*.jsonl | tail -n 1)
C=$(grep -n '"event":"checkpoint"' "$F" | tail -n 1 | cut -d: -f1)
out=$(cd "$O" && F=$F C=$C L=2 bash -e "$T_DIR/doc-check.sh" 2>&1) || fail "formats.md commands: $out"
expect_eq "formats.md: the pin, 'Verified OK', and no broken link" "$out" \
	"$(awk -v u="$(unit_id 1)" '$2 == u {print $3}' "$KYOK_TKE_FILES/known_units")
Verified OK"
E=$(awk 'NR >= 2 && !/"event":"checkpoint"/ {print NR; exit}' "$F") # a line to edit, E < C
sed "${E}s/\"time\":\"[^\"]*\"/\"time\":\"2020-01-01T00:00:00.000Z\"/" "$F" >"$O/edited.jsonl"
out=$(cd "$O" && F=$O/edited.jsonl C=$C L=2 bash -e "$T_DIR/doc-check.sh" 2>&1) || true
expect_match "formats.md commands name an edited line" "line $E is not the line the chain holds" "$out"

# ---- tampering: each kind of change fails verify, naming the line ------------------------------
X="$T_DIR/x"
mkdir -p "$X"
cp "$A1"/audit-*.jsonl "$X"/
# F1: the first file with admin commands in it; k: its first admin command line, sk its seq.
for f in "$X"/audit-*.jsonl; do
	[ "$(grep -c '"event":"admin-command"' "$f")" -ge 2 ] && { F1=$f; break; }
done
B="$X/b.jsonl" # a copy of F1 to damage
expect_ok "verify one file alone ($(basename "$F1"))" "$KYOK" audit verify "$F1"
nl=$(wc -l <"$F1")
k=$(grep -n '"event":"admin-command"' "$F1" | head -n 1 | cut -d: -f1)
sk=$(sed -n "${k}p" "$F1" | jq .seq)
sed "${k}d" "$F1" >"$B"
verify_fails "a line removed" "b.jsonl:$k: seq $((sk + 1)) follows seq $((sk - 1))" "$B"
awk -v k="$k" 'NR==k{h=$0; next} {print} NR==k+1{print h}' "$F1" >"$B"
verify_fails "two lines swapped" "b.jsonl:$k: seq $((sk + 1)) follows seq $((sk - 1))" "$B"
# A forged line with the right seq and prev for its place: the next line gives it away.
prevh=$(sed -n "${k}p" "$F1" | tr -d '\n' | openssl dgst -sha256 -r | cut -c1-64)
forged="{\"seq\":$((sk + 1)),\"prev\":\"$prevh\",\"time\":\"2026-01-01T00:00:00.000Z\",\"event\":\"key-api\",\"phase\":\"done\",\"method\":\"DELETE\",\"route\":\"keys/{id}\",\"apikey\":\"x\",\"status\":200,\"code\":\"ok\"}"
awk -v k="$k" -v f="$forged" '{print} NR==k{print f}' "$F1" >"$B"
verify_fails "a forged line inserted" "b.jsonl:$((k + 2)): seq $((sk + 1)) follows seq $((sk + 1))" "$B"
sed "${k}s/\"from\":\"127.0.0.1\"/\"from\":\"10.0.0.9\"/" "$F1" >"$B"
verify_fails "a field edited" "b.jsonl:$((k + 1)): prev is not the hash of the line before \(.*b.jsonl:$k, seq $sk" "$B"
# The same edit, with every later prev recomputed: the next checkpoint's signature fails.
cp "$B" "$B.tmp"
h=""
: >"$B"
while IFS= read -r line; do
	[ -n "$h" ] && line=$(sed "s/^\({\"seq\":[0-9]*,\"prev\":\"\)[0-9a-f]*/\1$h/" <<<"$line")
	printf '%s\n' "$line" >>"$B"
	h=$(printf '%s' "$line" | openssl dgst -sha256 -r | cut -c1-64)
done <"$B.tmp"
c=$(awk -v k="$k" 'NR>k && /"event":"checkpoint"/{print NR; exit}' "$B")
verify_fails "an edit with the chain recomputed" "b.jsonl:$c: checkpoint signature does not verify" "$B"
c=$(grep -n '"event":"checkpoint"' "$F1" | head -n 1 | cut -d: -f1)
sed "${c}s/\"sig\":\"MI/\"sig\":\"MJ/" "$F1" >"$B"
verify_fails "a checkpoint's signature altered" "b.jsonl:$c: checkpoint signature does not verify" "$B"
head -n $((nl - 1)) "$F1" >"$B"
verify_fails "the last checkpoint cut off" "audit-unsigned|no signed checkpoint follows" "$B"
mv "$(ls "$X"/audit-*.jsonl | sed -n 2p)" "$X/gone"
verify_fails "a file left out" "audit-00000003.jsonl:1: seq [0-9]+ follows seq" "$X"/audit-*.jsonl
rm -rf "$X"

# A log whose unit is not pinned, and a certificate given instead.
F=$(ls "$A1"/audit-*.jsonl | tail -n 1)
expect_fail "a log of a unit not pinned" "not pinned in .*known_units" \
	env KYOK_TKE_FILES="$T_DIR/other-ws" "$KYOK" audit verify "$F"
head -n 1 "$(ls "$A2"/audit-*.jsonl | head -n 1)" | jq -r .cert | base64 -d |
	openssl x509 -inform DER -out "$T_DIR/unit2.pem"
expect_fail "unit 1's log against unit 2's certificate" "not the one given" \
	"$KYOK" audit verify --cert "$T_DIR/unit2.pem" "$F"
head -n 1 "$F" | jq -r .cert | base64 -d | openssl x509 -inform DER -out "$T_DIR/unit1.pem"
expect_ok "unit 1's log with its certificate (--cert), no pin" \
	env KYOK_TKE_FILES="$T_DIR/other-ws" "$KYOK" audit verify --cert "$T_DIR/unit1.pem" "$F"

# ---- a log that cannot be written: refused, nothing changed ------------------------------------
"$KYOK" up >/dev/null 2>&1
W=$(token_of "$AK/k-Writer.apikey")
last=$(ls "$A1"/audit-*.jsonl | tail -n 1 | sed 's/.*audit-0*\([0-9]*\)\.jsonl/\1/')
blocker=$(printf '%s/audit-%08d.jsonl' "$A1" $((last + 1)))
mkdir "$blocker" # the next file cannot be created
got=
for i in $(seq 1 60); do
	call $(auth "$W") $(json_body "{\"ciphertext\":\"$CT\"}") -X POST "/api/v2/keys/$K1/actions/unwrap"
	[ "$status" = 200 ] || { got=$status; break; }
done
expect_eq "unwrap once the log is full and no new file can be made: 503" "$got" 503
expect_eq "... AUDIT_UNAVAILABLE_ERR, no plaintext" \
	"$(jq -r '.resources[0].reasons[0].code + " " + (has("plaintext") | tostring)' "$T_DIR/body")" \
	"AUDIT_UNAVAILABLE_ERR false"
# A creation's first line (its intent, the shortest line there is) may still fit in what
# the last file has left: such a creation is carried out, its intent on record. Creations
# are sent until one is refused; the refused one changed nothing.
for i in $(seq 1 20); do
	before=$(digest)
	call $(auth "$W") $(json_body "$(create_json "during-outage-$i")") -X POST /api/v2/keys
	[ "$status" = 201 ] || break
done
expect_eq "key creation refused: 503 AUDIT_UNAVAILABLE_ERR" \
	"$status $(jq -r '.resources[0].reasons[0].code' "$T_DIR/body")" "503 AUDIT_UNAVAILABLE_ERR"
expect_eq "... key storage unchanged" "$(digest)" "$before"
for i in $(seq 1 20); do # a token line is shorter than an unwrap's: the same
	status=$(jq -j .apikey "$AK/k-Writer.apikey" | curl -sS -o "$T_DIR/body" -w '%{http_code}' \
		--data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' --data-urlencode "apikey@-" \
		"$(url)/identity/token")
	[ "$status" = 200 ] || break
done
expect_eq "token refused: 503 audit-unavailable" "$status $(jq -r .kyokCode "$T_DIR/body")" "503 audit-unavailable"
cmd_json 1 thresholds-set '{"signature": 1, "revocation": 1}' >"$T_DIR/cmd.json"
sign_cmd "$T_DIR/cmd.json" "$T_DIR/cmd.der" ann
expect_refused "admin command refused while the log cannot be written" audit-unavailable 1 "$T_DIR/cmd.der"
rmdir "$blocker"
call $(auth "$W") $(json_body "{\"ciphertext\":\"$CT\"}") -X POST "/api/v2/keys/$K1/actions/unwrap"
expect_eq "writable again: unwrap 200" "$status" 200
expect_accepted "writable again: the same admin command runs" 1 "$T_DIR/cmd.der"
# ---- a unit killed: the reserved zero tail, and a line cut short, are cut off at restart ------
pid=$(cat "$KYOK_INSTANCE/unit-1/pid")
kill -9 "$pid"
wait_gone "$pid"
last=$(ls "$A1"/audit-*.jsonl | tail -n 1)
if [ "$(tail -c 1 "$last" | od -An -tx1 | tr -d ' ')" = 00 ]; then
	pass "a killed unit's file ends in reserved zeros"
else
	fail "a killed unit's file does not end in zeros"
fi
lines_before=$(tr -d '\0' <"$last" | wc -l)
printf '%s' "$(tr -d '\0' <"$last")" >"$last.tmp" # lines, then a line cut short, then zeros
printf '\n{"seq":123,"prev":"00' >>"$last.tmp"
head -c 5000 /dev/zero >>"$last.tmp"
mv "$last.tmp" "$last"
"$KYOK" up >/dev/null 2>&1
expect_eq "restarted: the old file cut back to its whole lines" \
	"$(wc -l <"$last") $(tail -c 1 "$last" | od -An -c | tr -d ' ')" "$lines_before \\n"
expect_eq "... the start line says how long the cut line was" \
	"$(lines "$A1" | jq -r 'select(.event=="start") | .cut_partial_line // empty' | tail -n 1)" 21
wait_checkpoint "$A1"
expect_ok "verify after the kill and restart (the killed run's last lines covered now)" \
	"$KYOK" audit verify
"$KYOK" down >/dev/null 2>&1
expect_ok "verify after the outage, a kill and a stop" "$KYOK" audit verify

finish
