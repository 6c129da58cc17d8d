#!/usr/bin/env bash
# Rollback detection, against two real units and the real SQLite file (sqlite3 CLI):
#   a key row copied, the key deleted through the API, the old row written back: refused
#     (record-rolled-back) on GET and unwrap, by both units; an API key row rolled back to
#     before its revocation: refused by the token service of both units, then revoked again
#     by the signed apikey-revoke; a record deleted by hand (record-deleted); a record copied
#     under another id (record-tampered: its seal names the other id)
#   the whole storage replaced by an older copy of itself (sqlite3 .restore): refused on the
#     next read and when the units start again (storage-rolled-back) until a signed
#     storage-accept, then served; a storage-accept whose signatures do not count: refused
#   keys.db missing, or empty (0 bytes), when 'kyok up' starts the units: they do not start,
#     the error says what happened and what to do
#   a keys.db copied alone after 'kyok down' while another program holds it open: whole (the
#     units copy the WAL into it as they stop)
#   readiness (GET /ready, kyok status): not ready in imprint mode without a master key, ready
#     after the ceremony, not ready while storage is refused as rolled back, ready again after
#     storage-accept; GET /metrics: valid exposition format, counters that move by exactly the
#     requests made, histogram counts, no key id in it; other methods refused (405)
. "$(dirname "$0")/helpers.sh"
setup
IFS=$'\n' # $(auth ...) and $(json_body ...) expand to one curl argument a line

A="$KYOK_INSTANCE"
DB="$A/keys.db"
AK="$KYOK_TKE_FILES/apikeys"
KT="application/vnd.ibm.kms.key+json"
pa=$(newpw ann)
pb=$(newpw ben)

on_both() {
	local desc=$1
	shift
	answers "$desc" 1 "$@"
	answers "$desc" 2 "$@"
}
unit_log_has() { grep -qE -- "$2" "$A/unit-$1/unit.log"; }

"$KYOK" up --units 2 >/dev/null 2>&1
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null 2>&1
ready_is "imprint mode" 1 503 imprint-mode no-master-key
"$KYOK" status >"$T_DIR/st" 2>&1 || true
grep -q "^unit 2: not ready: imprint-mode, no-master-key$" "$T_DIR/st" &&
	pass "kyok status: unit 2 not ready, both reasons" || fail "kyok status: $(cat "$T_DIR/st")"
expect_ok "auto-init (threshold 2: ann and ben sign)" "$KYOK" tke auto-init --signature 2 \
	--revocation 1 --new-admins ann,ben --password-file "$pa" --password-file "$pb"
"$KYOK" tke sigkey-sel --sigkeys 1,2 >/dev/null 2>&1
ready_is "after the ceremony" 1 200
ready_is "after the ceremony" 2 200
"$KYOK" status >"$T_DIR/st" 2>&1 || true
grep -q "^unit 1: ready$" "$T_DIR/st" && pass "kyok status: unit 1 ready" ||
	fail "kyok status: $(cat "$T_DIR/st")"
for role in Writer Manager Reader; do
	"$KYOK" tke apikey-create --name "r-$role" --role "$role" --password-file "$pa" \
		--password-file "$pb" >/dev/null 2>&1 || fail "apikey-create $role"
done
W=$(token_of "$AK/r-Writer.apikey")
M=$(token_of "$AK/r-Manager.apikey")
K1=$(mkkey one)
K2=$(mkkey two)
K3=$(mkkey three)
call 1 $(auth "$W") $(json_body '{}') -X POST "/api/v2/keys/$K1/actions/wrap"
CT=$(jq -r .ciphertext "$T_DIR/body")
UNWRAP=$(json_body "{\"ciphertext\":\"$CT\"}")
expect_eq "key storage has a digest" "$(db "SELECT count(*) FROM ledger")" 1
for n in 1 2; do # both units have the key opened in their caches
	answers "control: unwrap" "$n" 200 none $(auth "$W") $UNWRAP -X POST "/api/v2/keys/$K1/actions/unwrap"
done

# ---- metrics ----------------------------------------------------------------------------------
metrics_of 1 "$T_DIR/m1"
expect_eq "metrics: 3 active keys" "$(metric "$T_DIR/m1" 'kyok_keys{state="active"}')" 3
expect_eq "metrics: current master key loaded" \
	"$(metric "$T_DIR/m1" 'kyok_master_key_loaded{register="current"}')" 1
expect_eq "metrics: ready" "$(metric "$T_DIR/m1" kyok_ready)" 1
for i in 1 2 3; do curl -sS -o /dev/null "$(unit_url 1)/health"; done
for i in 1 2 3 4; do
	call 1 $(auth "$W") $UNWRAP -X POST "/api/v2/keys/$K1/actions/unwrap"
	[ "$status" = 200 ] || fail "metrics: unwrap $i: $status"
done
for m in "POST /metrics" "DELETE /ready" "PUT /health"; do
	expect_eq "$m: refused" \
		"$(curl -sS -o /dev/null -w '%{http_code}' -X "${m% *}" "$(unit_url 1)${m#* }")" 405
done
metrics_of 1 "$T_DIR/m2"
moved() { echo $(($(metric "$T_DIR/m2" "$1") - $(metric "$T_DIR/m1" "$1"))); }
UW='method="POST",route="/api/v2/keys/{id}/actions/{action}"'
expect_eq "metrics: GET /health counted 3 times" \
	"$(moved 'kyok_http_requests_total{method="GET",route="/health",code="200"}')" 3
expect_eq "metrics: unwrap counted 4 times (200)" "$(moved "kyok_http_requests_total{$UW,code=\"200\"}")" 4
expect_eq "metrics: unwrap latency _count +4" "$(moved "kyok_http_request_duration_seconds_count{$UW}")" 4
expect_eq "metrics: unwrap latency le=+Inf +4" \
	"$(moved "kyok_http_request_duration_seconds_bucket{$UW,le=\"+Inf\"}")" 4
expect_eq "metrics: GET /metrics counted once (the first scrape)" \
	"$(moved 'kyok_http_requests_total{method="GET",route="/metrics",code="200"}')" 1
for r in /metrics /ready /health; do
	expect_eq "metrics: 405 of $r counted once" \
		"$(moved "kyok_http_requests_total{method=\"other\",route=\"$r\",code=\"405\"}")" 1
done
expect_eq "metrics: key cache hits + misses +4 (one lookup an unwrap)" \
	$(($(moved kyok_key_cache_hits_total) + $(moved kyok_key_cache_misses_total))) 4
[ "$(moved kyok_audit_lines_total)" -ge 4 ] && pass "metrics: audit lines +$(moved kyok_audit_lines_total)" ||
	fail "metrics: audit lines moved $(moved kyok_audit_lines_total), want at least 4"
if grep -qiE "$K1|$K2|$K3|$W" "$T_DIR/m2"; then
	fail "metrics: a key id or token in GET /metrics"
else
	pass "metrics: no key id or token in GET /metrics"
fi

# ---- one record rolled back, deleted, copied --------------------------------------------------
db "CREATE TABLE old_k AS SELECT * FROM keys WHERE id = '$K1'"
answers "Manager deletes key one" 1 204 none $(auth "$M") -X DELETE "/api/v2/keys/$K1"
db "DELETE FROM keys WHERE id = '$K1'; INSERT INTO keys SELECT * FROM old_k; DROP TABLE old_k"
expect_eq "the old row of key one is back (Active, state 1)" \
	"$(db "SELECT state FROM keys WHERE id = '$K1'")" 1
on_both "rolled-back key row: GET" 500 RECORD_ROLLED_BACK_ERR $(auth "$M") "/api/v2/keys/$K1"
on_both "rolled-back key row: unwrap" 500 RECORD_ROLLED_BACK_ERR $(auth "$W") $UNWRAP \
	-X POST "/api/v2/keys/$K1/actions/unwrap"
on_both "control: key two is served" 200 none $(auth "$M") "/api/v2/keys/$K2"

db "DELETE FROM keys WHERE id = '$K2'"
on_both "key row deleted by hand: GET" 500 RECORD_DELETED_ERR $(auth "$M") "/api/v2/keys/$K2"

# Another id: its first hex digit moved on by one (f to 0), so it never equals key three's.
K9=$(printf '%s' "${K3:0:1}" | tr '0-9a-f' '1-9a-f0')${K3:1}
db "INSERT INTO keys SELECT '$K9', seq + 1000, rev, name, state, extractable, created, updated, \
deleted, version, vp, blob, expires FROM keys WHERE id = '$K3'"
# Its seal names the other id: refused as tampered before the digest is asked.
on_both "key row copied under another id: GET" 500 RECORD_TAMPERED_ERR $(auth "$M") "/api/v2/keys/$K9"
on_both "control: key three is served" 200 none $(auth "$M") "/api/v2/keys/$K3"

# An API key revoked, its row from before the revocation written back.
RID=$(jq -r .id "$AK/r-Reader.apikey")
db "CREATE TABLE old_a AS SELECT * FROM api_keys WHERE id = '$RID'"
expect_ok "apikey-revoke (Reader)" "$KYOK" tke apikey-revoke --yes --id "$RID" --password-file "$pa" \
	--password-file "$pb"
db "DELETE FROM api_keys WHERE id = '$RID'; INSERT INTO api_keys SELECT * FROM old_a; DROP TABLE old_a"
for n in 1 2; do
	tok=$(token_of "$AK/r-Reader.apikey" "$n")
	if [ -z "$tok" ] && grep -q "record-rolled-back" "$T_DIR/tok"; then
		pass "rolled-back API key row: token service of unit $n refuses ($(jq -r .errorMessage "$T_DIR/tok"))"
	else
		fail "rolled-back API key row: token service of unit $n: $(head -c 300 "$T_DIR/tok")"
	fi
done
expect_ok "apikey-revoke writes the rolled-back row again" "$KYOK" tke apikey-revoke --yes --id "$RID" \
	--password-file "$pa" --password-file "$pb"
tok=$(token_of "$AK/r-Reader.apikey" 2)
if [ -z "$tok" ] && grep -qE "unknown|revoked" "$T_DIR/tok"; then
	pass "... the key is revoked again: $(jq -r .errorMessage "$T_DIR/tok")"
else
	fail "... after apikey-revoke: $(head -c 300 "$T_DIR/tok")"
fi

# Repair for what follows: the copied row out, key two's row is gone for good (a restore
# would bring it back): the administrators accept storage as it is.
db "DELETE FROM keys WHERE id IN ('$K9', '$K1')"
expect_ok "storage-accept after the rows were repaired by hand" "$KYOK" tke storage-accept \
	--password-file "$pa" --password-file "$pb"
on_both "after storage-accept: key three is served" 200 none $(auth "$M") "/api/v2/keys/$K3"
on_both "after storage-accept: key two is gone" 404 NOT_FOUND_ERR $(auth "$M") "/api/v2/keys/$K2"

# ---- the whole storage replaced by an older copy -----------------------------------------------
db ".backup '$T_DIR/old.db'"
K4=$(mkkey four)
on_both "control: key four made after the backup" 200 none $(auth "$M") "/api/v2/keys/$K4"
db ".restore '$T_DIR/old.db'"
on_both "older storage restored under running units: next read" 503 STORAGE_ROLLED_BACK_ERR \
	$(auth "$M") "/api/v2/keys/$K3"
ready_is "older storage restored" 1 503 storage-rolled-back
ready_is "older storage restored" 2 503 storage-rolled-back
"$KYOK" down >/dev/null 2>&1
"$KYOK" up >/dev/null 2>&1
on_both "older storage, units started again" 503 STORAGE_ROLLED_BACK_ERR $(auth "$M") "/api/v2/keys/$K3"
unit_log_has 1 "key storage refused .*older than" &&
	pass "unit log says why storage is refused" || fail "unit log does not say why storage is refused"

# A storage-accept with one signature where the threshold is 2: refused, nothing served.
"$KYOK" tke sigkey-sel --sigkeys 1 >/dev/null 2>&1
expect_fail "storage-accept with 1 signature of 2" "signature" "$KYOK" tke storage-accept \
	--password-file "$pa"
on_both "... still refused" 503 STORAGE_ROLLED_BACK_ERR $(auth "$M") "/api/v2/keys/$K3"
"$KYOK" tke sigkey-sel --sigkeys 1,2 >/dev/null 2>&1
expect_ok "storage-accept (ann and ben sign)" "$KYOK" tke storage-accept --password-file "$pa" \
	--password-file "$pb"
on_both "restored storage served after storage-accept" 200 none $(auth "$M") "/api/v2/keys/$K3"
ready_is "after storage-accept" 1 200
on_both "... key four, made after the backup, is not in it" 404 NOT_FOUND_ERR $(auth "$M") "/api/v2/keys/$K4"
on_both "... and the units write to it" 200 none $(auth "$W") $(json_body '{}') \
	-X POST "/api/v2/keys/$K3/actions/wrap"
unit_log_has 2 "storage-accept: key storage taken as it is" &&
	pass "unit log records the storage-accept" || fail "unit log lacks the storage-accept"

# ---- storage missing, empty, truncated ----------------------------------------------------------
"$KYOK" down >/dev/null 2>&1
# The WAL goes with the file (deleting it would lose committed writes: an older storage).
for f in "" -wal -shm; do
	if [ -e "$DB$f" ]; then mv "$DB$f" "$T_DIR/keep.db$f"; fi
done
expect_fail "kyok up with keys.db missing" "key storage .* is missing or empty, but this unit has seen it" \
	"$KYOK" up
expect_eq "... no new keys.db made" "$(test -e "$DB" && echo made || echo none)" none
: >"$DB"
expect_fail "kyok up with keys.db empty (0 bytes)" "key storage .* is missing or empty" "$KYOK" up
expect_eq "... still 0 bytes" "$(stat -c %s "$DB")" 0
"$KYOK" down >/dev/null 2>&1 || true
rm -f "$DB" "$DB-wal" "$DB-shm" # of the empty one
for f in "" -wal -shm; do
	if [ -e "$T_DIR/keep.db$f" ]; then mv "$T_DIR/keep.db$f" "$DB$f"; fi
done
expect_ok "kyok up with keys.db back" "$KYOK" up
on_both "keys served again" 200 none $(auth "$M") "/api/v2/keys/$K3"

# A unit that stops copies the WAL into keys.db, even while another program has it open (SQLite
# itself does so only when the last connection of all closes): keys.db copied alone is whole.
mkfifo "$T_DIR/sq.in"
sqlite3 "$DB" <"$T_DIR/sq.in" >/dev/null 2>&1 &
SQ=$!
exec 7>"$T_DIR/sq.in"
echo "SELECT count(*) FROM meta;" >&7
K5=$(mkkey five)
"$KYOK" down >/dev/null 2>&1
cp "$DB" "$T_DIR/alone.db"
exec 7>&-
wait "$SQ" || true
expect_eq "keys.db copied alone after 'kyok down' (another connection open) has the newest key" \
	"$(sqlite3 "$T_DIR/alone.db" "SELECT count(*) FROM keys WHERE id = '$K5'")" 1
"$KYOK" up >/dev/null 2>&1

# ---- zeroize: the storage mark follows the new seal key -----------------------------------------
# The mark is sealed under the unit's seal key, which a zeroize replaces: a unit killed right
# after a zeroize must start again, on a mark it can open.
[ -s "$A/unit-1/data/storage.mark" ] && pass "unit 1 keeps a storage mark" ||
	fail "unit 1 has no storage mark"
expect_ok "zeroize both units" "$KYOK" tke cryptounit-zeroize --yes --password-file "$pa" \
	--password-file "$pb"
for n in 1 2; do kill -9 "$(cat "$A/unit-$n/pid")" 2>/dev/null || true; done
for n in 1 2; do wait_gone "$(cat "$A/unit-$n/pid")"; done
expect_ok "kyok up after a zeroize and kill -9" "$KYOK" up
expect_eq "unit 1 in imprint mode after the zeroize" "$(unit_state 1 | jq -r .imprint)" true
"$KYOK" down >/dev/null 2>&1 || true

finish
