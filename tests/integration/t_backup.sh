#!/usr/bin/env bash
# kyok backup and kyok restore against two real units and the real SQLite file:
#   a backup taken while the units serve: the copy (0600) and its manifest (instance, SHA-256,
#     keys, the master key VP with its key part VPs, the storage digest position); an existing
#     file is not replaced
#   a master key rotation after the backup; 'kyok tke mk-rm' of a part of the backup's master
#     key names the backup (and asks: refused without --yes and without a terminal)
#   restore refused while the units run (naming them), for a manifest of another instance, a
#     file that does not match its manifest, a backup without manifest: nothing changes
#   restore with the units stopped: the storage in place kept aside; the units refuse the
#     older storage (storage-rolled-back); the printed way back (the backup's key parts into
#     the new register, commit, storage-accept, rotate) followed as printed: keys served again
#     and the data key wrapped before the backup unwraps
#   restore where no storage is in place: the units' master key to compare with, the way back
#   a backup with no unit running (no registers recorded), --output json of both commands
. "$(dirname "$0")/helpers.sh"
setup
IFS=$'\n' # $(auth ...) and $(json_body ...) expand to one curl argument a line

A="$KYOK_INSTANCE"
DB="$A/keys.db"
AK="$KYOK_TKE_FILES/apikeys"
KT="application/vnd.ibm.kms.key+json"
BK="$T_DIR/bk/keys.backup"
mkdir -p "$T_DIR/bk"
newpw ann >/dev/null
newpw ben >/dev/null
for p in a1 a2 b1 b2; do newpw "$p" >/dev/null; done
pwf() {
	local n
	for n in "$@"; do printf -- '--password-file\n%s\n' "$T_DIR/pw/$n"; done
}
# rotate_to N,N PWS...: a new master key from workspace parts N,N, made current by a rotation.
rotate_to() {
	local parts=$1 p1=$2 p2=$3
	expect_ok "mk-load --parts $parts" "$KYOK" tke cryptounit-mk-load --parts "$parts" \
		$(pwf "$p1" "$p2" ann ben)
	expect_ok "mk-commit" "$KYOK" tke cryptounit-mk-commit $(pwf ann ben)
	expect_ok "cryptounit-mk-rotate" "$KYOK" tke cryptounit-mk-rotate --yes $(pwf ann ben)
}
sha() { sha256sum "$1" | cut -c1-64; }

"$KYOK" up --units 2 >/dev/null 2>&1
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null 2>&1
expect_ok "auto-init (ann and ben, thresholds 1)" "$KYOK" tke auto-init --signature 1 \
	--revocation 1 --new-admins ann,ben $(pwf ann ben)
"$KYOK" tke sigkey-sel --sigkeys 1,2 >/dev/null 2>&1 # two key parts: two signatures
"$KYOK" tke apikey-create --name m --role Manager $(pwf ann ben) >/dev/null 2>&1 ||
	fail "apikey-create"
W=$(token_of "$AK/m.apikey")

# ---- master key A from key parts (auto-init's key has none) -----------------------------------
"$KYOK" tke mk-add --random --description "a one" $(pwf a1) >/dev/null 2>&1 || fail "mk-add a1"
"$KYOK" tke mk-add --random --description "a two" $(pwf a2) >/dev/null 2>&1 || fail "mk-add a2"
rotate_to 1,2 a1 a2
VPA=$(unit_state 1 | jq -r .current_mk.vp)
K1=$(mkkey before-backup)
call 1 $(auth "$W") $(json_body '{}') -X POST "/api/v2/keys/$K1/actions/wrap"
CT=$(jq -r .ciphertext "$T_DIR/body")
DK=$(jq -r .plaintext "$T_DIR/body")
UNWRAP=$(json_body "{\"ciphertext\":\"$CT\"}")

# ---- the backup, units running -----------------------------------------------------------------
expect_ok "kyok backup while the units run" "$KYOK" backup --out "$BK"
M="$BK.manifest.json"
expect_eq "backup and manifest are 0600" "$(stat -c %a "$BK") $(stat -c %a "$M")" "600 600"
expect_eq "manifest: format and instance" "$(jq -r '"\(.format) \(.instance)"' "$M")" \
	"kyok-backup-manifest-v1 $(instance_id)"
expect_eq "manifest: SHA-256 of the copy" "$(jq -r .sha256 "$M")" "$(sha "$BK")"
expect_eq "manifest: one key, under master key A, the current register" \
	"$(jq -r '"\(.keys) \(.master_keys | map(select(.keys > 0)) | .[0] | "\(.vp) \(.register)")"' "$M")" \
	"1 $VPA current"
expect_eq "manifest: the key part VPs of master key A" \
	"$(jq -r '.master_keys[] | select(.vp == "'"$VPA"'") | .part_vps | length' "$M")" 2
expect_eq "manifest: the storage digest generation is the copy's" \
	"$(jq -r .storage_digest.generation "$M")" "$(sqlite3 "$BK" 'SELECT gen FROM ledger')"
expect_eq "the copy is a whole SQLite file holding the key" \
	"$(sqlite3 "$BK" "PRAGMA quick_check; SELECT count(*) FROM keys WHERE id = '$K1'" | tr '\n' ' ')" "ok 1 "
expect_eq "the copy's rows by master key VP, as docs/formats.md reads them" \
	"$(sqlite3 "$BK" 'SELECT lower(hex(vp)), count(*) FROM keys GROUP BY vp')" "$VPA|1"
expect_eq "backups.json lists it" "$(jq -r '.backups[0].file' "$A/backups.json")" "$BK"
expect_fail "kyok backup onto an existing file" "never replaces" "$KYOK" backup --out "$BK"
expect_fail "kyok backup without --out" "--out FILE is needed" "$KYOK" backup

# ---- master key B by rotation; a key made after the backup -----------------------------------
"$KYOK" tke mk-add --random --description "b one" $(pwf b1) >/dev/null 2>&1 || fail "mk-add b1"
"$KYOK" tke mk-add --random --description "b two" $(pwf b2) >/dev/null 2>&1 || fail "mk-add b2"
rotate_to 3,4 b1 b2
VPB=$(unit_state 1 | jq -r .current_mk.vp)
[ "$VPA" != "$VPB" ] && pass "master key rotated: A $VPA -> B $VPB" || fail "no rotation"
K2=$(mkkey after-backup)
for n in 1 2; do # both units read the newest storage: each keeps how far it has seen it
	answers "key made after the backup served" "$n" 200 none $(auth "$W") "/api/v2/keys/$K2"
done

# mk-rm of a part of A: the backup named, the reminder printed; no terminal and no --yes: refused.
expect_fail "mk-rm of a part of master key A names the backup" \
	"backup $BK \(made .*\) is under master key VP ${VPA:0:16}.*made from this key part" \
	"$KYOK" tke mk-rm --mk 1
expect_eq "... and deleted nothing" "$("$KYOK" tke mks --output json | jq '.keyparts | length')" 4
expect_fail "mk-rm of a part of B: the reminder, no backup named" \
	"keep every key part of that master key.*none there needs this part" "$KYOK" tke mk-rm --mk 3

# ---- restore refused: units running, another instance, a changed file, no manifest -------------
before=$(sha "$DB")
expect_fail "restore while the units run: names them" \
	"units-running|crypto unit 1 \(pid [0-9]+\), 2 \(pid [0-9]+\): stop them with 'kyok down'" \
	"$KYOK" restore --from "$BK"
cp "$BK" "$T_DIR/bk/other"
jq '.instance = "another-instance"' "$M" >"$T_DIR/bk/other.manifest.json"
expect_fail "restore of another instance's backup" "backup of instance 'another-instance'" \
	"$KYOK" restore --from "$T_DIR/bk/other"
cp "$BK" "$T_DIR/bk/changed"
cp "$M" "$T_DIR/bk/changed.manifest.json"
printf 'x' >>"$T_DIR/bk/changed"
expect_fail "restore of a file changed after the backup" "does not match its manifest.*SHA-256" \
	"$KYOK" restore --from "$T_DIR/bk/changed"
cp "$BK" "$T_DIR/bk/alone"
expect_fail "restore of a backup without its manifest" "has no manifest beside it" \
	"$KYOK" restore --from "$T_DIR/bk/alone"
expect_eq "... keys.db unchanged by the refusals" "$(sha "$DB")" "$before"

# ---- restore, units stopped ---------------------------------------------------------------------
"$KYOK" down >/dev/null 2>&1
rc=0
out=$("$KYOK" restore --from "$BK" 2>&1) || rc=$?
echo "$out" >"$T_DIR/restore.out"
if [ $rc -eq 0 ] && grep -q "kyok tke storage-accept" <<<"$out" &&
	grep -q "sealed under master key VP $VPA" <<<"$out" && grep -q "under VP $VPB" <<<"$out" &&
	grep -q "master-key-mismatch" <<<"$out"; then
	pass "restore: says storage-accept, and the backup's VP against the storage's"
else
	fail "restore (exit $rc): $out"
fi
expect_eq "restore: keys.db is the backup" "$(sha "$DB")" "$(sha "$BK")"
aside=$(ls "$DB".before-restore-* 2>/dev/null | grep -v -- '-wal$\|-shm$' | head -1)
expect_eq "restore: the storage in place kept aside, with the key made after the backup" \
	"$(sqlite3 "$aside" "SELECT count(*) FROM keys WHERE id = '$K2'" 2>&1)" 1

"$KYOK" up >/dev/null 2>&1
for n in 1 2; do
	answers "restored storage under master key A, units on B" "$n" 503 MASTER_KEY_MISMATCH_ERR \
		$(auth "$W") "/api/v2/keys/$K1"
done

# The way back, as restore printed it.
mapfile -t steps < <(sed -n 's/^     \(kyok tke [^(]*\).*/\1/p' "$T_DIR/restore.out" | sed 's/ *$//')
expect_eq "restore printed four commands" "${#steps[*]}" 4
expect_eq "... the first loads the backup's key parts 1,2" "${steps[0]}" \
	"kyok tke cryptounit-mk-load --parts 1,2"
out=$("$KYOK" tke cryptounit-mk-load --parts 1,2 $(pwf a1 a2 ann ben) 2>&1) || fail "mk-load: $out"
grep -q "verification pattern: $VPA" <<<"$out" && pass "mk-load: the backup's master key VP" ||
	fail "mk-load: $out"
expect_ok "${steps[1]}" "$KYOK" tke cryptounit-mk-commit $(pwf ann ben)
for n in 1 2; do
	answers "master key A committed: the restored storage refused as older" "$n" 503 \
		STORAGE_ROLLED_BACK_ERR $(auth "$W") "/api/v2/keys/$K1"
done
expect_ok "${steps[2]}" "$KYOK" tke storage-accept $(pwf ann ben)
expect_ok "${steps[3]}" "$KYOK" tke cryptounit-mk-rotate --yes $(pwf ann ben)
expect_eq "master key A is current again" "$(unit_state 2 | jq -r .current_mk.vp)" "$VPA"
for n in 1 2; do
	answers "key made before the backup served" "$n" 200 none $(auth "$W") "/api/v2/keys/$K1"
	answers "key made after the backup is not in it" "$n" 404 NOT_FOUND_ERR $(auth "$W") \
		"/api/v2/keys/$K2"
done
call 2 $(auth "$W") $UNWRAP -X POST "/api/v2/keys/$K1/actions/unwrap"
expect_eq "the data key wrapped before the backup unwraps" "$status $(jq -r .plaintext "$T_DIR/body")" \
	"200 $DK"

# ---- restore where no storage is in place (the disk that held it lost) -------------------------
"$KYOK" down >/dev/null 2>&1
mkdir "$T_DIR/lost"
mv "$DB"* "$T_DIR/lost/"
expect_fail "kyok up without keys.db: refused (the units have seen storage)" "missing or empty" \
	"$KYOK" up
"$KYOK" down >/dev/null 2>&1 || true
out=$("$KYOK" restore --from "$BK" 2>&1) || fail "restore with no storage in place: $out"
grep -q "no storage was in place to compare" <<<"$out" && grep -q "cryptounit-mk-load --parts 1,2" <<<"$out" &&
	pass "restore with no storage in place: says to compare with the units' master key, and the way back" ||
	fail "restore with no storage in place: $out"
expect_eq "... keys.db is the backup" "$(sha "$DB")" "$(sha "$BK")"

# ---- with no unit running: a backup without registers; JSON output ------------------------------
out=$("$KYOK" backup --output json --out "$T_DIR/bk/quiet" 2>"$T_DIR/quiet.err") || fail "backup, units down: $out"
expect_eq "backup --output json prints the manifest; no unit answered: no register, no parts" \
	"$(jq -r '"\(.format) \(.registers_from_unit // "none") \(.master_keys[0].part_vps // "none")"' <<<"$out")" \
	"kyok-backup-manifest-v1 none none"
grep -q "no crypto unit answered" "$T_DIR/quiet.err" && pass "... and says so" ||
	fail "backup, units down: $(cat "$T_DIR/quiet.err")"
expect_eq "backups.json lists both backups" "$(jq -r '.backups | length' "$A/backups.json")" 2
out=$("$KYOK" restore --output json --from "$T_DIR/bk/quiet" 2>"$T_DIR/quiet.err") || fail "restore json: $out"
expect_eq "restore --output json: what was restored and kept" \
	"$(jq -r '"\(.restored) \(.kept != null) \(.keys)"' <<<"$out")" "$T_DIR/bk/quiet true 1"
grep -q "kyok tke storage-accept" "$T_DIR/quiet.err" && pass "... what follows on stderr" ||
	fail "restore json: $(cat "$T_DIR/quiet.err")"
expect_fail "mk-rm of any part names a backup whose key parts were not recorded" \
	"backup $T_DIR/bk/quiet \(made .*\) is under master key VP .*key parts were not recorded.*may need this part" \
	"$KYOK" tke mk-rm --mk 3
finish
