#!/usr/bin/env bash
# The tpm2 sealing backend on swtpm TPMs started here: a full ceremony on a unit whose seal
# key is sealed by a TPM, restart, key API use; the data directory copied next to another
# TPM refuses to start (a fresh one, and one whose handle holds another unit's parent);
# zeroize evicts the key's parent, so neither the state from before it nor that state with
# its old key blobs ever opens again.
. "$(dirname "$0")/helpers.sh"
setup

expect_match() {
	if grep -qE -- "$2" <<<"$3"; then pass "$1"; else fail "$1: no /$2/ in: $3"; fi
}

# start_swtpm NAME: a TPM 2.0 simulator with its state in $T_DIR/NAME, on a free port pair
# (server P, control P+1) of loopback; its TCTI string in $T_DIR/NAME.tcti. A port taken
# meanwhile makes swtpm exit: another pair is tried.
start_swtpm() {
	local d="$T_DIR/$1" p tries=0
	mkdir -p "$d"
	while :; do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
		if swtpm socket --tpm2 --server "type=tcp,port=$p,bindaddr=127.0.0.1" \
			--ctrl "type=tcp,port=$((p + 1)),bindaddr=127.0.0.1" --tpmstate "dir=$d" \
			--flags startup-clear --daemon --pid "file=$d.pid" 2>"$d.err"; then
			break
		fi
		tries=$((tries + 1))
		if [ $tries -ge 20 ]; then
			fail "swtpm $1 does not start: $(cat "$d.err")"
			finish
		fi
	done
	echo "swtpm:host=127.0.0.1,port=$p" >"$T_DIR/$1.tcti"
}
stop_swtpms() {
	local f
	for f in "$T_DIR"/*.pid; do
		[ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
	done
}
trap 'rc=$?; stop_swtpms; (exit $rc); cleanup' EXIT

start_swtpm tpm-a
start_swtpm tpm-b
TA=$(cat "$T_DIR/tpm-a.tcti")
TB=$(cat "$T_DIR/tpm-b.tcti")
printf 'seal = tpm2\ntpm2_tcti = %s\n' "$TA" >"$T_DIR/seal.conf"
# One unit per simulator: swtpm serves one connection at a time (a host's TPM is shared
# through the kernel's resource manager, /dev/tpmrm0).
expect_ok "up --seal-config (tpm2, a unit on TPM A)" "$KYOK" up --dir "$KYOK_INSTANCE" \
	--units 1 --seal-config "$T_DIR/seal.conf"

D="$KYOK_INSTANCE/unit-1/data"
S="$D/state.sealed"
expect_eq "data dir: seal.tpm2, no seal.key" "$(ls "$D" | grep '^seal' | tr '\n' ' ')" "seal.tpm2 "
expect_eq "seal.tpm2: blobs and a parent at the first kyok handle" \
	"$(sed 's/=.*//' "$D/seal.tpm2" | tr '\n' ' ')|$(sed -n 's/^handle=//p' "$D/seal.tpm2")" \
	"kyok-seal-tpm2-v1 handle parent public private |0x81000100"
ID=$(sed -n 5p "$S")
expect_match "state header names the backend and a key" "^seal=tpm2\|key=[0-9a-f]{32}\|$" \
	"$(sed -n '4p;5p' "$S" | tr '\n' '|')"

# ---- the ceremony, the key API, a restart ---------------------------------------------------
"$KYOK" tke cryptounit-add --units 1 >/dev/null 2>&1
pa=$(newpw ann)
expect_ok "auto-init" "$KYOK" tke auto-init --signature 1 --revocation 1 --new-admins ann \
	--password-file "$pa"
"$KYOK" tke sigkey-sel --sigkeys 1 >/dev/null 2>&1
expect_ok "apikey-create Writer" "$KYOK" tke apikey-create --name w --role Writer --password-file "$pa"
AKF="$KYOK_TKE_FILES/apikeys/w.apikey"
kid=$("$KYOK" kp key-create --apikey-file "$AKF" --name root-1 --output json 2>/dev/null |
	jq -r '.resources[0].id')
if [[ "$kid" =~ ^[0-9a-f-]{36}$ ]]; then pass "key-create ($kid)"; else fail "key-create: '$kid'"; fi
"$KYOK" kp wrap "$kid" --apikey-file "$AKF" --dek-out "$T_DIR/dek" >"$T_DIR/ct" ||
	fail "wrap"
expect_ok "down" "$KYOK" down
expect_ok "up again (the seal key unsealed by TPM A)" "$KYOK" up
expect_ok "unwrap after the restart" "$KYOK" kp unwrap "$kid" --apikey-file "$AKF" \
	--ciphertext-file "$T_DIR/ct" --out "$T_DIR/dek2"
expect_ok "... the same data key" cmp "$T_DIR/dek" "$T_DIR/dek2"

# ---- the data directory copied next to another TPM -----------------------------------------
# copy_conf DIR TCTI: unit.conf for a copy of unit 1's data directory in DIR.
copy_conf() {
	sed -e "s|^data_dir = .*|data_dir = $1/data|" -e "s|^port_file = .*|port_file = $1/port|" -e "s|^listen = .*|listen = 127.0.0.1:0|" \
		-e "s|^log_file = .*|log_file = $1/unit.log|" -e '/^store = /d' \
		-e "s|^tpm2_tcti = .*|tpm2_tcti = $2|" "$KYOK_INSTANCE/unit-1/unit.conf" >"$1/unit.conf"
}
C="$T_DIR/copy"
mkdir -p "$C"
cp -a "$D" "$C/data"
copy_conf "$C" "$TB"
listing() { find "$C/data" -printf '%P %s %m %T@\n' | sort; }
before=$(listing)
rc=0
"$UNITD" --config "$C/unit.conf" 2>"$C/err" || rc=$?
expect_eq "copy next to a fresh TPM B: refused (exit 5)" "$rc" 5
expect_match "... the cause is named" \
	"TPM $TB holds no seal key parent at 0x81000100 with the name this data directory records: the data directory was sealed by another TPM" \
	"$(cat "$C/err")"
expect_eq "... nothing in the copy changed" "$(listing)" "$before"

# Another unit on TPM B takes handle 0x81000100 for a parent of its own.
O="$T_DIR/other"
mkdir -p "$O"
sed -e "s|^data_dir = .*|data_dir = $O/data|" -e "s|^port_file = .*|port_file = $O/port|" -e "s|^listen = .*|listen = 127.0.0.1:0|" \
	-e "s|^log_file = .*|log_file = $O/unit.log|" -e '/^store = /d' -e 's/^unit = .*/unit = other/' \
	-e "s|^tpm2_tcti = .*|tpm2_tcti = $TB|" -e "s|^identity_cert = .*|identity_cert = $O/identity.crt|" \
	"$KYOK_INSTANCE/unit-1/unit.conf" >"$O/unit.conf"
certify_unit "$O/unit.conf" 2>"$O/err" || fail "other unit: identity request: $(cat "$O/err")"
"$UNITD" --config "$O/unit.conf" 2>"$O/err" &
opid=$!
while [ ! -s "$O/port" ] && kill -0 $opid 2>/dev/null; do sleep 0.1; done
kill $opid
wait $opid || true
expect_eq "another unit on TPM B: its parent at 0x81000100" \
	"$(sed -n 's/^handle=//p' "$O/data/seal.tpm2")" 0x81000100
rc=0
"$UNITD" --config "$C/unit.conf" 2>"$C/err" || rc=$?
expect_eq "copy next to TPM B with another parent at that handle: refused (exit 5)" "$rc" 5
expect_match "... the cause is named" "TPM $TB holds no seal key parent at 0x81000100 with the name this data directory records" \
	"$(cat "$C/err")"
expect_eq "... nothing in the copy changed" "$(listing)" "$before"

# ---- zeroize evicts the key's parent ----------------------------------------------------------
expect_ok "down" "$KYOK" down
cp -p "$S" "$T_DIR/state.before"
cp -p "$D/seal.tpm2" "$T_DIR/ref.before"
expect_ok "up" "$KYOK" up
expect_ok "zeroize" "$KYOK" tke cryptounit-zeroize --yes --password-file "$pa"
ID2=$(sed -n 5p "$S")
if [ "$ID2" != "$ID" ]; then pass "zeroize made a new seal key ($ID2)"; else fail "seal key unchanged by zeroize"; fi
expect_eq "... its parent at the next free handle" "$(sed -n 's/^handle=//p' "$D/seal.tpm2")" 0x81000101
expect_eq "... no .next reference left" "$(ls "$D" | grep -c next || true)" 0
expect_ok "down" "$KYOK" down
cp -p "$S" "$T_DIR/state.after"
cp -p "$D/seal.tpm2" "$T_DIR/ref.after"
cp -p "$T_DIR/state.before" "$S"
run_rc "$KYOK" up
if [ $rc -ne 0 ]; then pass "up on the state from before the zeroize: exit $rc"; else fail "the state from before the zeroize opened"; fi
expect_match "... the reason is named" \
	"sealed state '$S' is sealed under seal key ${ID#key=}, but this unit's seal key is ${ID2#key=}: the state is older than the unit's last zeroize" \
	"$out"
"$KYOK" down >/dev/null 2>&1 || true
cp -p "$T_DIR/ref.before" "$D/seal.tpm2"
run_rc "$KYOK" up
expect_match "state and key blobs from before the zeroize: the parent is gone from the TPM" \
	"TPM $TA holds no seal key parent at 0x81000100" "$out"
"$KYOK" down >/dev/null 2>&1 || true
cp -p "$T_DIR/ref.after" "$D/seal.tpm2"
cp -p "$T_DIR/state.after" "$S"
expect_ok "state after the zeroize back: up" "$KYOK" up
expect_eq "... unit 1 in imprint mode" "$(unit_state 1 | jq -r .imprint)" true

# ---- unit.conf ------------------------------------------------------------------------------------
sed 's/^seal = tpm2/seal = file/' "$KYOK_INSTANCE/unit-1/unit.conf" >"$T_DIR/mixed.conf"
expect_fail "tpm2_tcti with seal = file: refused" "'tpm2_tcti' is a setting of seal = tpm2, but seal is file" \
	"$UNITD" --config "$T_DIR/mixed.conf"
"$KYOK" down >/dev/null 2>&1 || true
sed 's/^seal = tpm2/seal = file/; /^tpm2_tcti/d' "$KYOK_INSTANCE/unit-1/unit.conf" >"$T_DIR/file.conf"
rc=0
"$UNITD" --config "$T_DIR/file.conf" 2>"$T_DIR/err" || rc=$?
expect_match "a tpm2 data directory started with seal = file: refused by name (exit $rc)" \
	"sealed by the 'tpm2' backend, but unit.conf says seal = file" "$(cat "$T_DIR/err")"

finish
