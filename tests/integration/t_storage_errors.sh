#!/usr/bin/env bash
# Key storage failing under running units, against real units and the real SQLite file:
#   one key record altered by hand (sqlite3): its GET and unwrap are refused (record-tampered)
#     and logged with its key id; the key listing answers for the others and says how many
#     it withheld (header Kyok-Keys-Withheld), the log names the withheld key; the same for
#     rows kyok could not have written (a name too long, a fraction in a number column, a copy
#     under a longer id): they never make the whole listing fail
#   a creation waiting for key storage (sqlite3 holds its write lock): its thread runs at
#     nice 10 until answered, and a read is served meanwhile
#   keys.db truncated to 0 bytes while the units run: reads, creations and the token service
#     are refused with storage-damaged (not "locked by another writer"), the log names the
#     file and SQLite's own message; nothing is served until the file is back
#   keys.db made immutable (chattr +i) while the units run: creations are refused (io), the log
#     names the file, SQLite's and the system's message; once it is writable again,
#     creations work without a restart
#   the disk holding keys.db full (a 2 MiB tmpfs in a private mount namespace): a creation
#     is refused with storage-full, "no space left" is in the answer, the log names the file
#     and the system's message; nothing was written; with space again, creation works
#   the disk holding a unit's audit log full (a 1 MiB tmpfs): requests are refused with
#     audit-unavailable once the reserved room is used up, no file begins without its file
#     line, and with space again the unit goes on without a restart; the log verifies
. "$(dirname "$0")/helpers.sh"

# The disk-full part mounts a small tmpfs: the whole test runs in a mount namespace of its
# own (root: a plain one; otherwise a user namespace where the test is root), so nothing is
# mounted where the rest of the machine would see it.
if [ -z "${KYOK_T_MOUNTNS:-}" ]; then
	if [ "$(id -u)" -eq 0 ]; then ns=(unshare --mount --propagation private); else
		ns=(unshare --user --map-root-user --mount --propagation private); fi
	if "${ns[@]}" true 2>/dev/null; then
		KYOK_T_MOUNTNS=1 exec "${ns[@]}" bash "$0" "$@"
	fi
	echo "SKIP t_storage_errors: no private mount namespace here ('${ns[*]} true' fails);" \
		"run as root or allow unprivileged user namespaces" >&2
	exit 77
fi
setup
IFS=$'\n' # $(auth ...) and $(json_body ...) expand to one curl argument a line

A="$KYOK_INSTANCE"
DB="$A/keys.db"
AK="$KYOK_TKE_FILES/apikeys"
KT="application/vnd.ibm.kms.key+json"
pa=$(newpw ann)

# log_has N DESC REGEX: unit N's log has a line matching REGEX (extended).
log_has() {
	local line
	line=$(grep -E -- "$3" "$A/unit-$1/unit.log" | tail -n 1 || true)
	if [ -n "$line" ]; then pass "$2: ${line:0:400}"; else
		fail "$2: no line matching '$3' in unit $1's log: $(tail -n 3 "$A/unit-$1/unit.log")"
	fi
}
key_rows() { db "SELECT count(*) FROM keys"; }

"$KYOK" up --units 2 >/dev/null 2>&1
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null 2>&1
expect_ok "auto-init" "$KYOK" tke auto-init --signature 1 --revocation 1 --new-admins ann \
	--password-file "$pa"
"$KYOK" tke sigkey-sel --sigkeys 1 >/dev/null 2>&1
"$KYOK" tke apikey-create --name w --role Manager --password-file "$pa" >/dev/null 2>&1 ||
	fail "apikey-create"
W=$(token_of "$AK/w.apikey")
K1=$(mkkey one)
K2=$(mkkey two)
K3=$(mkkey three)
call 1 $(auth "$W") $(json_body '{}') -X POST "/api/v2/keys/$K2/actions/wrap"
UNWRAP=$(json_body "{\"ciphertext\":\"$(jq -r .ciphertext "$T_DIR/body")\"}")

# ---- one record altered: only that key is refused ------------------------------------------
db "UPDATE keys SET name = 'renamed' WHERE id = '$K2'"
for n in 1 2; do
	answers "altered key row: GET" "$n" 500 RECORD_TAMPERED_ERR $(auth "$W") "/api/v2/keys/$K2"
	answers "altered key row: unwrap" "$n" 500 RECORD_TAMPERED_ERR $(auth "$W") $UNWRAP \
		-X POST "/api/v2/keys/$K2/actions/unwrap"
	answers "control: key one is served" "$n" 200 none $(auth "$W") "/api/v2/keys/$K1"
	call "$n" $(auth "$W") /api/v2/keys
	ids=$(jq -r '[.resources[].id] | sort | join(",")' "$T_DIR/body" 2>/dev/null || echo "?")
	held=$(awk -F': ' 'tolower($1) == "kyok-keys-withheld" { gsub(/\r/, "", $2); print $2 }' \
		"$T_DIR/hdr")
	want=$(printf '%s\n%s\n' "$K1" "$K3" | sort | paste -sd, -)
	if [ "$status" = 200 ] && [ "$ids" = "$want" ] && [ "$held" = 1 ]; then
		pass "unit $n lists the two sound keys, Kyok-Keys-Withheld: $held"
	else
		fail "unit $n listing: status $status, ids $ids (want $want), withheld '$held'"
	fi
	log_has "$n" "unit $n logs the withheld key by id" \
		"api: GET /api/v2/keys: key $K2 withheld from the listing: record-tampered"
	log_has "$n" "unit $n logs the refused GET with the key id" \
		"api: GET /api/v2/keys/\{id\} key $K2 API key .*: record-tampered: .*key storage '$DB'"
done
db "UPDATE keys SET name = 'two' WHERE id = '$K2'"
for n in 1 2; do
	answers "the row as it was: served again" "$n" 200 none $(auth "$W") "/api/v2/keys/$K2"
done

# ---- rows kyok could not have written: withheld too, never the whole listing refused -------
# A name longer than any key's, a fraction in a number column, a copy under a longer id: each
# row is withheld and named; the sound key is listed.
db "UPDATE keys SET name = printf('%.300c', 'x') WHERE id = '$K2'"
db "UPDATE keys SET created = created + 0.5 WHERE id = '$K3'"
db "INSERT INTO keys SELECT id || '-copy', seq + 1000, rev, name, state, extractable, created,
	updated, deleted, version, vp, blob, expires FROM keys WHERE id = '$K1'"
for n in 1 2; do
	for i in $(seq 1 100); do
		call "$n" $(auth "$W") /api/v2/keys
		held=$(awk -F': ' 'tolower($1) == "kyok-keys-withheld" { gsub(/\r/, "", $2); print $2 }' \
			"$T_DIR/hdr")
		[ "$status $held" = "200 3" ] && break
	done
	ids=$(jq -r '[.resources[].id] | join(",")' "$T_DIR/body" 2>/dev/null || echo "?")
	if [ "$status" = 200 ] && [ "$ids" = "$K1" ] && [ "$held" = 3 ]; then
		pass "unit $n lists the sound key, Kyok-Keys-Withheld: $held (unreadable rows)"
	else
		fail "unit $n listing with unreadable rows: status $status, ids $ids, withheld '$held':" \
			"$(head -c 300 "$T_DIR/body")"
	fi
	log_has "$n" "unit $n names the row with a name no key has" \
		"key $K2 withheld from the listing: record-tampered"
	log_has "$n" "unit $n names the row with a fraction" \
		"key $K3 withheld from the listing: record-rolled-back"
	log_has "$n" "unit $n names the copy by its id, cut short" \
		"key ${K1:0:33}\.\.\. withheld from the listing: record-tampered"
done
db "UPDATE keys SET name = 'two' WHERE id = '$K2'"
db "UPDATE keys SET created = CAST(created AS INTEGER) WHERE id = '$K3'"
db "DELETE FROM keys WHERE id = '$K1-copy'"
for n in 1 2; do
	answers "the rows as they were: key three served again" "$n" 200 none $(auth "$W") \
		"/api/v2/keys/$K3"
done

# ---- a key creation runs at nice 10 while it works --------------------------------------------
# A creation waits for key storage while sqlite3 holds its write lock: its request thread is
# then at nice 10 (beside the group commit's thread, already there: keys were made), and goes
# back once answered. Seen in /proc (field 19 of a thread's stat is its nice value). A unit
# that cannot give a thread its priority back (no CAP_SYS_NICE, RLIMIT_NICE below 20) lowers
# nothing and says so at start: then only that is checked.
at_nice10() { cat /proc/"$(cat "$A/unit-1/pid")"/task/*/stat | awk '$19 == 10' | wc -l; }
# wait_nice10 N: polls until N threads of unit 1 are at nice 10 (20 s at most).
wait_nice10() {
	local i
	for ((i = 0; i < 200; i++)); do
		[ "$(at_nice10)" = "$1" ] && return 0
		sleep 0.1
	done
	return 1
}
if grep -q "key creations run at the priority of reads" "$A/unit-1/unit.log"; then
	log_has 1 "unit 1 cannot lower creations here, and says why" \
		"key creations run at the priority of reads: .*RLIMIT_NICE"
else
	log_has 1 "the unit says creations run at nice 10" \
		"key creations run at nice 10 while they work"
	low=$(at_nice10)
	hold_store_lock "$DB"
	curl -sS -o "$T_DIR/held.body" -w '%{http_code}' $(auth "$W") \
		$(json_body "$(create_json held)") -X POST "$(unit_url 1)/api/v2/keys" \
		>"$T_DIR/held.status" &
	cpid=$!
	if wait_nice10 $((low + 1)); then
		pass "a creation waiting for key storage: one more thread of unit 1 at nice 10"
	else
		fail "a creation waiting for key storage: $(at_nice10) threads of unit 1 at nice 10, want $((low + 1))"
	fi
	answers "... meanwhile a read is served" 1 200 none $(auth "$W") "/api/v2/keys/$K1"
	echo "COMMIT;" >&7
	exec 7>&-
	wait "$sqlpid" || true
	wait "$cpid" || true
	# (The creation waits for the lock up to key storage's busy timeout, 10 s: the checks
	# above take a fraction of that.)
	expect_eq "... the lock released, the creation is answered 201" \
		"$(cat "$T_DIR/held.status")" 201
	if wait_nice10 "$low"; then pass "... and its thread is back at the unit's priority"; else
		fail "... $(at_nice10) threads of unit 1 at nice 10 after the creation, want $low"
	fi
fi

# ---- keys.db truncated to 0 bytes while the units run ----------------------------------------
db "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null # every page in keys.db itself
rows=$(key_rows)
cp "$DB" "$T_DIR/keys.copy"
: >"$DB"
for n in 1 2; do
	answers "keys.db truncated: GET" "$n" 503 STORAGE_DAMAGED_ERR $(auth "$W") "/api/v2/keys/$K1"
	answers "keys.db truncated: create" "$n" 503 STORAGE_DAMAGED_ERR $(auth "$W") \
		$(json_body "$(create_json four)") -X POST /api/v2/keys
	answers "keys.db truncated: listing" "$n" 503 STORAGE_DAMAGED_ERR $(auth "$W") /api/v2/keys
	tok=$(token_of "$AK/w.apikey" "$n")
	if [ -z "$tok" ] && grep -q "storage-damaged" "$T_DIR/tok"; then
		pass "keys.db truncated: token service of unit $n: $(jq -r .errorMessage "$T_DIR/tok")"
	else
		fail "keys.db truncated: token service of unit $n: $(head -c 300 "$T_DIR/tok")"
	fi
	log_has "$n" "unit $n logs the file and SQLite's message" \
		"storage-damaged: .*key storage '$DB': SQLite: file is not a database"
	# (units starting together log their wait for the lock; the refusal is what must not be)
	if grep -q "locked by another writer: retry" "$A/unit-$n/unit.log"; then
		fail "unit $n still says 'locked by another writer'"
	else
		pass "unit $n never says 'locked by another writer'"
	fi
done
# Every request fails now, each with a log line: at most 20 a second, then one line counts
# the rest. 400 requests on one kept-alive connection.
url1=$(unit_url 1)
log_mark=$(wc -l <"$A/unit-1/unit.log")
mapfile -t urls < <(for i in $(seq 1 400); do echo "$url1/api/v2/keys/$K1"; done)
curl -sS -o /dev/null -o /dev/null $(auth "$W") "${urls[@]}" >/dev/null 2>&1 || true
# The count of the lines held back is written with the first failure of a later second.
for i in $(seq 1 100); do
	grep -q "more failed requests not logged" "$A/unit-1/unit.log" && break
	curl -sS -o /dev/null $(auth "$W") "$url1/api/v2/keys/$K1" || true
	sleep 0.1
done
"$KYOK" down >/dev/null 2>&1
# A line is stamped a little after the limiter counted it (a busy machine may push it into
# the next second), so the bound is on the whole burst: at most 20 for each second it
# spanned, and one more second for the boundary.
stamps=$(tail -n +$((log_mark + 1)) "$A/unit-1/unit.log" |
	{ grep "api: GET /api/v2/keys/{id} key $K1.*storage-damaged" || true; } | cut -c1-19)
lines=$(printf '%s\n' "$stamps" | grep -c . || true)
span=$(printf '%s\n' "$stamps" | grep . | while read -r t; do date -u -d "${t}Z" +%s; done |
	awk 'NR == 1 { lo = $1 } { hi = $1 } END { print (NR ? hi - lo + 1 : 0) }')
if [ "$lines" -gt 0 ] && [ "$lines" -le $((20 * (span + 1))) ] &&
	grep -q "api: [0-9]* more failed requests not logged (over 20 a second)" \
		"$A/unit-1/unit.log"; then
	pass "400 failing requests: $lines lines over $span s (at most 20 a second), the rest counted"
else
	fail "400 failing requests: $lines lines over $span s, or no line counting the rest"
fi
expect_eq "keys.db still 0 bytes: nothing was written into it" "$(stat -c %s "$DB")" 0
# What the message says: stop the units, restore the file.
cp "$T_DIR/keys.copy" "$DB"
expect_ok "kyok up with keys.db restored" "$KYOK" up
W=$(token_of "$AK/w.apikey")
for n in 1 2; do
	answers "keys.db back: key one is served" "$n" 200 none $(auth "$W") "/api/v2/keys/$K1"
done
expect_eq "keys.db back: $rows key rows, none made while it was truncated" "$(key_rows)" "$rows"

# ---- keys.db that cannot be written (chattr +i) while the units run --------------------------
# A unit's threads open key storage on first use; SQLite opens a file it cannot write
# read-only. Units restarted, keys.db made immutable, then used: creations are refused naming
# the system's reason; once the file can be written again, every creation works
# without a restart (no thread keeps a read-only connection).
"$KYOK" down >/dev/null 2>&1
expect_ok "kyok up" "$KYOK" up
if chattr +i "$DB" 2>/dev/null; then
	trap 'rc=$?; chattr -i "$DB" 2>/dev/null || true; (exit $rc); cleanup' EXIT
	before=$(key_rows)
	for n in 1 2; do
		refused=0
		for i in $(seq 1 20); do
			call "$n" $(auth "$W") "/api/v2/keys/$K1"
			call "$n" $(auth "$W") $(json_body "$(create_json "immutable$n-$i")") -X POST /api/v2/keys
			[ "$status $(kp_code)" = "500 IO_ERR" ] && refused=$((refused + 1))
		done
		if [ "$refused" -gt 0 ]; then
			pass "keys.db immutable: unit $n refused $refused of 20 creations with IO_ERR"
		else
			fail "keys.db immutable: unit $n refused no creation: $(head -c 300 "$T_DIR/body")"
		fi
		log_has "$n" "unit $n logs the file, SQLite's and the system's message" \
			"api: POST /api/v2/keys.*: io: .*key storage '$DB': SQLite: attempt to write a readonly database .*system: Operation not permitted"
	done
	made=$(($(key_rows) - before))
	chattr -i "$DB"
	trap cleanup EXIT
	for n in 1 2; do
		ok=0
		for i in $(seq 1 20); do
			call "$n" $(auth "$W") $(json_body "$(create_json "writable$n-$i")") -X POST /api/v2/keys
			[ "$status" = 201 ] && ok=$((ok + 1))
		done
		expect_eq "keys.db writable again: unit $n made 20 of 20 keys without a restart" "$ok" 20
	done
	expect_eq "every row is one that was answered 201" "$(key_rows)" $((before + made + 40))
else
	echo "skip t_storage_errors: chattr +i is not supported where keys.db is ($DB)" >&2
fi

# ---- the disk holding keys.db full ----------------------------------------------------------
"$KYOK" down >/dev/null 2>&1
mkdir -p "$T_DIR/small"
mount -t tmpfs -o size=2m kyok-test "$T_DIR/small"
trap 'rc=$?; umount "$T_DIR/small" 2>/dev/null || true; (exit $rc); cleanup' EXIT
for f in "$DB" "$DB-wal" "$DB-shm" "$DB-kyokgen"; do
	[ -e "$f" ] && mv "$f" "$T_DIR/small/"
done
DB="$T_DIR/small/keys.db"
sed -i "s|^store = .*|store = sqlite:$DB|" "$A"/unit-*/unit.conf
expect_ok "kyok up with keys.db on a 2 MiB file system" "$KYOK" up
answers "control: key one is served from the small file system" 1 200 none $(auth "$W") \
	"/api/v2/keys/$K1"
before=$(key_rows)
# Fill it: what is left is less than a page.
dd if=/dev/zero of="$T_DIR/small/filler" bs=4k 2>/dev/null || true
answers "disk full: create" 1 503 STORAGE_FULL_ERR $(auth "$W") $(json_body "$(create_json full)") \
	-X POST /api/v2/keys
kp_message | grep -q "no space left" && pass "the answer says 'no space left'" ||
	fail "the answer does not say 'no space left': $(kp_message)"
log_has 1 "the log names the file, SQLite's and the system's message" \
	"api: POST /api/v2/keys API key .*: storage-full: .*key storage '$DB': SQLite: database or disk is full .*system: No space left on device"
rm -f "$T_DIR/small/filler"
expect_eq "disk full: no key row was written" "$(key_rows)" "$before"
answers "space again: create" 1 201 none $(auth "$W") $(json_body "$(create_json five)") \
	-X POST /api/v2/keys
answers "space again: key one is served" 2 200 none $(auth "$W") "/api/v2/keys/$K1"

# ---- the disk holding unit 1's audit log full -----------------------------------------------
# Files of 64 KiB (their room is reserved whole); the disk filled: lines go on into the room
# already reserved, then the next file cannot hold its first line: the unit refuses, and
# starts no file without its file line; with space again, it goes on without a restart and
# the log verifies across.
"$KYOK" down >/dev/null 2>&1
AU="$A/unit-1/data/audit"
mv "$AU" "$AU.old"
mkdir -m 700 "$AU"
mount -t tmpfs -o size=1m,mode=0700 kyok-audit "$AU"
trap 'rc=$?; umount "$AU" 2>/dev/null || true; umount "$T_DIR/small" 2>/dev/null || true; (exit $rc); cleanup' EXIT
cp -a "$AU.old"/. "$AU"/
printf 'audit_max_bytes = 65536\n' >>"$A/unit-1/unit.conf"
expect_ok "kyok up with unit 1's audit log on a 1 MiB file system" "$KYOK" up
answers "control: unwrap on unit 1" 1 200 none $(auth "$W") $UNWRAP \
	-X POST "/api/v2/keys/$K2/actions/unwrap"
dd if=/dev/zero of="$AU/filler" bs=4k 2>/dev/null || true
files_before=$(ls "$AU"/audit-*.jsonl | wc -l)
last=$(basename "$(ls "$AU"/audit-*.jsonl | tail -n 1)" .jsonl)
next=$(printf 'audit-%08d.jsonl' $((10#${last#audit-} + 1)))
rows_before=$(key_rows)
for i in $(seq 1 600); do # about 180 lines fill the file's room, then it must be refused
	call 1 $(auth "$W") $UNWRAP -X POST "/api/v2/keys/$K2/actions/unwrap"
	[ "$status" = 200 ] || break
done
expect_eq "audit disk full: unwrap refused 503 AUDIT_UNAVAILABLE_ERR (after $i)" \
	"$status $(kp_code)" "503 AUDIT_UNAVAILABLE_ERR"
log_has 1 "the log says the next file's room cannot be reserved" \
	"cannot reserve room in audit log file $next in '$AU': No space left on device"
answers "still full: refused again" 1 503 AUDIT_UNAVAILABLE_ERR $(auth "$W") $UNWRAP \
	-X POST "/api/v2/keys/$K2/actions/unwrap"
answers "still full: a creation is refused" 1 503 AUDIT_UNAVAILABLE_ERR $(auth "$W") \
	$(json_body "$(create_json audit-full)") -X POST /api/v2/keys
expect_eq "... and made no key" "$(key_rows)" "$rows_before"
expect_eq "no file was begun without its file line" "$(ls "$AU"/audit-*.jsonl | wc -l)" \
	"$files_before"
rm -f "$AU/filler"
answers "space again: unwrap on unit 1, no restart" 1 200 none $(auth "$W") $UNWRAP \
	-X POST "/api/v2/keys/$K2/actions/unwrap"
expect_eq "the new file begins with its file line" "$(head -n 1 "$AU/$next" | jq -r .event)" file
answers "space again: a creation on unit 1" 1 201 none $(auth "$W") \
	$(json_body "$(create_json audit-back)") -X POST /api/v2/keys
expect_eq "... its intent line is in the file" \
	"$(tr -d '\0' <"$AU/$next" | jq -r 'select(.event == "key-api" and .phase == "intent" and .method == "POST") | .route' | tail -n 1)" \
	keys
"$KYOK" down >/dev/null 2>&1 || true
expect_ok "the audit log verifies across the outage" "$KYOK" audit verify
finish
