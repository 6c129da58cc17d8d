#!/usr/bin/env bash
# kyok up / status / down on the embedded default, and a unit's start-up checks: the same
# units come back with their state, a re-created unit is refused by its pinned identity, a
# damaged sealed state or a readable seal key stops a unit from starting (and the file is
# left as it is) while the other units start, ports stay across restarts and a taken one is
# named, configuration errors name file and line, the daemon cannot dump core and
# refuses oversized requests.
. "$(dirname "$0")/helpers.sh"
setup

expect_match() {
	if grep -qE -- "$2" <<<"$3"; then pass "$1"; else fail "$1: /$2/ not in: $3"; fi
}
I=$KYOK_INSTANCE

# ---- help and version ------------------------------------------------------------------------
for b in "$KYOK" "$UNITD"; do
	n=$(basename "$b")
	run_rc "$b" --help
	expect_eq "$n --help exits 0" "$rc" 0
	expect_match "$n --help prints usage" "^usage: $n" "$out"
	run_rc "$b" --version
	expect_eq "$n --version exits 0" "$rc" 0
	if [ "${KYOK_TEST_KDF:-0}" = 1 ] && [ "$n" = kyok ]; then
		# The sanitized test build (meson option test_kdf) says what it is.
		expect_match "$n --version prints the version and that it is a test build" \
			"^$n [0-9]+\.[0-9]+\.[0-9]+ \(test build: password KDF at a sixteenth of its cost, not for use\)$" "$out"
	else
		expect_match "$n --version prints the version" "^$n [0-9]+\.[0-9]+\.[0-9]+$" "$out"
	fi
done

# ---- the build: test_kdf only with a sanitizer ---------------------------------------------------
# meson.build refuses -Dtest_kdf without a sanitizer; with one the same setup succeeds (so the
# refusal is the option's, not a broken setup). Setup only, nothing is built.
if ! command -v meson >/dev/null; then
	fail "meson not found on PATH: cannot check that the build refuses test_kdf without a sanitizer"
else
	: "${KYOK_SRC:?KYOK_SRC must name the source directory}"
	run_rc meson setup "$T_DIR/meson-plain" "$KYOK_SRC" -Dtest_kdf=true
	rm -rf "$T_DIR/meson-plain"
	if [ "$rc" -eq 0 ]; then
		fail "meson setup -Dtest_kdf=true without a sanitizer succeeded: $out"
	else
		expect_match "meson setup refuses test_kdf without a sanitizer" \
			"ERROR: .*test_kdf lowers the password KDF cost: it is for the sanitized test build only" "$out"
	fi
	run_rc meson setup "$T_DIR/meson-asan" "$KYOK_SRC" -Db_sanitize=address,undefined -Dtest_kdf=true
	rm -rf "$T_DIR/meson-asan"
	if [ "$rc" -eq 0 ]; then
		pass "meson setup takes test_kdf with -Db_sanitize=address,undefined"
	else
		fail "meson setup -Db_sanitize=address,undefined -Dtest_kdf=true failed (exit $rc): $out"
	fi
fi

# ---- docs/commands.md is the real --help text ------------------------------------------------------
# Each command's block there is its --help output, the common options left out; every command
# the group helps list has its block. When a help text changes, regenerate docs/commands.md.
DOC=$(dirname "$0")/../../docs/commands.md
trim_blank() { sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'; }
# doc_block LINE: the first code block after the line LINE.
doc_block() {
	awk -v h="$1" '$0 == h {f = 1; next} f && /^```$/ {if (b) exit; b = 1; next} b {print}' "$DOC"
}
# help_text CMD...: CMD --help without its common options (and without blank lines at its end).
help_text() {
	local out
	out=$("$@" --help)
	case $out in *$'\n'"common options:"$'\n'*) out=${out%%$'\n'"common options:"$'\n'*} ;; esac
	while [[ $out == *$'\n' ]]; do out=${out%$'\n'}; done
	printf '%s' "$out"
}
# Every heading's first code block, read once: DOC_BLOCK["### `kyok up`"] (one awk run, not
# one per command: the sanitized run starts every process at several times the cost).
declare -A DOC_BLOCK
while IFS= read -r -d $'\036' rec; do
	DOC_BLOCK[${rec%%$'\037'*}]=${rec#*$'\037'}
done < <(awk '/^```$/ {
		if (inb) { inb = 0; if (cap) { printf "%s\037%s\036", h, t; cap = 0; f = 0 } }
		else { inb = 1; if (f) { cap = 1; t = ""; n = 0 } }
		next }
	inb { if (cap) t = n++ ? t "\n" $0 : $0; next }
	/^#+ / { h = $0; f = 1 }' "$DOC")
doc_bad=
for group in "" tke scup kp audit host; do
	# shellcheck disable=SC2086
	for c in $("$KYOK" $group --help | awk '/^  [a-z]/{print $1}'); do
		[ -z "$group" ] && { [ "$c" = tke ] || [ "$c" = scup ] || [ "$c" = kp ] || [ "$c" = audit ] || [ "$c" = host ]; } && continue
		name="kyok${group:+ $group} $c"
		got=${DOC_BLOCK["### \`$name\`"]:-}
		while [[ $got == *$'\n' ]]; do got=${got%$'\n'}; done
		# shellcheck disable=SC2086
		if [ "$got" != "$(help_text "$KYOK" $group "$c")" ]; then
			doc_bad+=" '$name'"
		fi
	done
done
# The command lists of kyok and of each group: each is one of the doc's code blocks, exactly.
doc_blocks() { awk '/^```$/ {if (b) {printf "\036"; b = 0} else b = 1; next} b {print}' "$DOC"; }
for group in "" tke scup kp audit host; do
	# shellcheck disable=SC2086
	want=$(help_text "$KYOK" $group)
	found=
	while IFS= read -r -d $'\036' blk; do
		[ "$(trim_blank <<<"$blk")" = "$want" ] && found=1
	done < <(doc_blocks)
	[ -n "$found" ] || doc_bad+=" 'kyok${group:+ $group}' (its command list)"
done
if [ -z "$doc_bad" ]; then
	pass "docs/commands.md has every command's --help, verbatim"
else
	fail "docs/commands.md is out of date for$doc_bad: paste each one's --help output (without its common options) under its heading there"
fi
# Its error table has a row for every error code of include/kyok/err.h.
err_missing=$(comm -23 \
	<(sed -n 's/^[[:space:]]*X([A-Z0-9_]*, "\([a-z0-9-]*\)".*/\1/p' \
		"$(dirname "$0")/../../include/kyok/err.h" | grep -vx ok | sort -u) \
	<(sed -n 's/^| [0-9] | `\([a-z0-9-]*\)` | .*/\1/p' "$DOC" | sort -u) | tr '\n' ' ')
expect_eq "docs/commands.md lists every error code of include/kyok/err.h (a row per code missing: exit, code, HTTP status, message as err.h has them)" "${err_missing:-none}" none
expect_eq "docs/commands.md has kyok-unitd --help, verbatim" "$(doc_block "## kyok-unitd")" \
	"$("$UNITD" --help)"

# ---- no instance yet ---------------------------------------------------------------------------
run_rc "$KYOK" status
expect_eq "status without an instance: exit 6" "$rc" 6
expect_match "... says so and how to start one" \
	"instance is not running: no instance.json there: start one with 'kyok up'" "$out"

# ---- up, status ------------------------------------------------------------------------------
run_rc "$KYOK" up --units 2 --zones east,west
expect_eq "up 2 units in 2 zones: exit 0" "$rc" 0
expect_match "... unit 1 started in east" "^1 +[0-9a-f-]{36} +east +http://127\.0\.0\.1:[0-9]+ +[0-9]+ +started$" "$out"
expect_match "... unit 2 started in west" "^2 +[0-9a-f-]{36} +west +http://127\.0\.0\.1:[0-9]+ +[0-9]+ +started$" "$out"
expect_eq "instance dir mode 0700" "$(stat -c %a "$I")" 700
ids_before=$(jq -c '[.instance, [.units[] | [.number, .id, .zone]]]' "$I/instance.json")
urls_before=$(jq -c '[.units[].url]' "$I/instance.json")
port1=$(jq -r '.units[0].url' "$I/instance.json" | sed 's/.*://')
port2=$(jq -r '.units[1].url' "$I/instance.json" | sed 's/.*://')
expect_match "unit 1's port is fixed in its unit.conf" "^listen = 127\.0\.0\.1:$port1$" "$(cat "$I/unit-1/unit.conf")"
pid1=$(cat "$I/unit-1/pid")
pid2=$(cat "$I/unit-2/pid")

run_rc "$KYOK" status
expect_eq "status: exit 0" "$rc" 0
expect_match "status table header" "^UNIT +ZONE +REACHABLE +MODE +ADMINS +SIG/REV +NEW MK +CURRENT MK$" "$out"
expect_match "status: unit 1 east, reachable, imprint" "^1 +east +yes +imprint +0 +0/0 +EMPTY +EMPTY$" "$out"
expect_match "status: unit 2 west, reachable, imprint" "^2 +west +yes +imprint +0 +0/0 +EMPTY +EMPTY$" "$out"
expect_match "first contact pins the identities" "pinned identity of crypto unit 1 .*sha256 [0-9a-f]{64}" "$out"
expect_eq "known_units holds both units" "$(wc -l <"$KYOK_TKE_FILES/known_units")" 2
run_rc "$KYOK" status --output json
expect_eq "status json: exit 0" "$rc" 0
expect_eq "status json: both reachable, zones, imprint" \
	"$(jq -r '[.units[] | "\(.number):\(.zone):\(.reachable):\(.state.imprint):\(.state.zone)"] | join(" ")' <<<"$out")" \
	"1:east:true:true:east 2:west:true:true:west"
expect_eq "status json: same unit ids as instance.json" \
	"$(jq -c '[.units[].id]' <<<"$out")" "$(jq -c '[.units[].id]' "$I/instance.json")"

run_rc "$KYOK" up
expect_eq "up while running: exit 0" "$rc" 0
expect_eq "... says 'already running' for both" "$(grep -c 'already running$' <<<"$out")" 2
expect_eq "... same pids" "$(cat "$I/unit-1/pid") $(cat "$I/unit-2/pid")" "$pid1 $pid2"
run_rc "$KYOK" up --units 3
expect_eq "up --units 3 on a 2-unit instance: exit 2" "$rc" 2
expect_match "... says why" "has 2 crypto units, not 3" "$out"

# Some state to find again after a restart.
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null
"$KYOK" tke sigkey-add --name alice --password-file "$(newpw alice)" >/dev/null
expect_ok "alice installed" "$KYOK" tke cryptounit-admin-add --sigkey 1

# ---- the daemon: no core dumps, bounded requests -------------------------------------------------
expect_match "unit 1: core dumps disabled (RLIMIT_CORE 0 0)" "^Max core file size +0 +0 " \
	"$(cat "/proc/$pid1/limits")"
if [ "$(id -u)" -ne 0 ]; then
	# A non-dumpable process's /proc files belong to root.
	expect_eq "unit 1 is not dumpable (/proc/PID/environ owned by root)" \
		"$(stat -c %u "/proc/$pid1/environ")" 0
fi
head -c $((2 * 1024 * 1024)) /dev/zero >"$T_DIR/big"
before=$(unit_state 1)
code=$(curl -sS -o "$T_DIR/big.reply" -w '%{http_code}' -H 'Content-Type: application/octet-stream' \
	--data-binary "@$T_DIR/big" "$(unit_url 1)/v1/admin/command" || true)
expect_eq "2 MiB POST: 413" "$code" 413
expect_eq "... error code too-large" "$(jq -r .error.code "$T_DIR/big.reply")" "too-large"
expect_eq "... state unchanged" "$(unit_state 1)" "$before"
expect_ok "... unit still answers" "$KYOK" status

# ---- down: its stop timeout ---------------------------------------------------------------------
run_rc env KYOK_TIMEOUT=abc "$KYOK" down
expect_eq "down with KYOK_TIMEOUT=abc: exit 2" "$rc" 2
expect_match "... names the variable" "KYOK_TIMEOUT must be a whole number of seconds" "$out"
expect_ok "... nothing stopped" "$KYOK" status

# ---- down, status fails, up brings the same units back -------------------------------------------
run_rc "$KYOK" down
expect_eq "down: exit 0" "$rc" 0
expect_match "... stopped unit 1" "stopped crypto unit 1 \(pid $pid1\)" "$out"
expect_match "... stopped unit 2" "stopped crypto unit 2 \(pid $pid2\)" "$out"
wait_gone "$pid1" && wait_gone "$pid2" && pass "... both processes ended"
run_rc "$KYOK" status
expect_eq "status with units down: exit 6" "$rc" 6
expect_match "... unit 1 unreachable" "error: crypto unit 1 \(east\): crypto unit cannot be reached" "$out"
expect_match "... unit 2 unreachable" "error: crypto unit 2 \(west\): crypto unit cannot be reached" "$out"
expect_match "... table row says no" "^1 +east +no " "$out"
rc=0
js=$("$KYOK" status --output json 2>/dev/null) || rc=$?
expect_eq "status json with units down: exit 6" "$rc" 6
expect_eq "... both unreachable, error code" \
	"$(jq -r '[.units[] | "\(.reachable):\(.error)"] | join(" ")' <<<"$js")" \
	"false:unit-unreachable false:unit-unreachable"
run_rc "$KYOK" tke cryptounit-admins
expect_eq "a listing with units down: exit 6" "$rc" 6

run_rc "$KYOK" up
expect_eq "up after down: exit 0" "$rc" 0
expect_eq "... both started" "$(grep -c ' started$' <<<"$out")" 2
expect_eq "... same instance, unit ids and zones" \
	"$(jq -c '[.instance, [.units[] | [.number, .id, .zone]]]' "$I/instance.json")" "$ids_before"
expect_eq "... same URLs (ports fixed when the units were made)" \
	"$(jq -c '[.units[].url]' "$I/instance.json")" "$urls_before"
run_rc "$KYOK" status --output json
expect_eq "... status exit 0 (pinned identities unchanged)" "$rc" 0
expect_eq "... alice still installed on both" \
	"$(jq -r '[.units[].state.admins[].name] | join(",")' <<<"$out")" "alice,alice"

# ---- ports: kept across kill -9, a taken port is named ------------------------------------------
pid1=$(cat "$I/unit-1/pid")
kill -9 "$pid1"
wait_gone "$pid1"
run_rc "$KYOK" up
expect_eq "up after kill -9 of unit 1: exit 0" "$rc" 0
expect_match "... unit 1 started on its port again" "^1 .* http://127\.0\.0\.1:$port1 +[0-9]+ +started$" "$out"
expect_eq "... same URLs" "$(jq -c '[.units[].url]' "$I/instance.json")" "$urls_before"
# A unit that does not stop (stopped by SIGSTOP here) is killed after --timeout seconds.
pid1=$(cat "$I/unit-1/pid")
kill -STOP "$pid1"
run_rc "$KYOK" down --timeout 1
expect_eq "down of a unit that does not stop: exit 0" "$rc" 0
expect_match "... killed after --timeout" "warning: pid $pid1 did not stop in 1 seconds: killing it" "$out"
wait_gone "$pid1" && pass "... the process ended"
run_rc "$KYOK" up
expect_eq "... up again: exit 0" "$rc" 0
"$KYOK" down >/dev/null
# hold_port PORT: another program listens on PORT (pid in $holder) until killed.
hold_port() {
	rm -f "$T_DIR/holder.ready"
	python3 -c 'import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
open(sys.argv[2], "w").close()
time.sleep(120)' "$1" "$T_DIR/holder.ready" &
	holder=$!
	local _
	for _ in $(seq 100); do [ -e "$T_DIR/holder.ready" ] && return 0; sleep 0.1; done
	fail "the port holder did not start"
}
hold_port "$port2"
run_rc "$KYOK" up
expect_eq "up with unit 2's port taken: exit 0 (unit 1 serves)" "$rc" 0
expect_match "... names the port, the program holding it and the fix" \
	"cannot listen on 127\.0\.0\.1:$port2: the port is in use by pid $holder \(python3\): stop that program, or give this unit another port \('listen' in its unit.conf\)" "$out"
expect_eq "... instance.json keeps the URLs" "$(jq -c '[.units[].url]' "$I/instance.json")" "$urls_before"
kill "$holder"
wait "$holder" 2>/dev/null || true
expect_ok "port free again: up" "$KYOK" up
expect_eq "... same URLs" "$(jq -c '[.units[].url]' "$I/instance.json")" "$urls_before"
run_rc "$KYOK" up --port 20000
expect_eq "up --port on an existing instance: exit 2" "$rc" 2
expect_match "... says the ports stay" "its units keep the ports they were made with" "$out"

# ---- a unit re-created under the same id: identity changed --------------------------------------
pid2=$(cat "$I/unit-2/pid")
kill "$pid2"
wait_gone "$pid2"
mv "$I/unit-2/data" "$T_DIR/unit-2-data"
run_rc "$KYOK" up
expect_eq "up with unit 2's data gone: starts a fresh unit 2" "$rc" 0
expect_match "... unit log says new state" "created new unit state" "$(tail -n 3 "$I/unit-2/unit.log")"
run_rc "$KYOK" status
expect_eq "status refuses the re-created unit: exit 6" "$rc" 6
uid2=$(unit_id 2)
expect_match "... identity-changed error naming unit 2 and known_units" \
	"error: crypto unit 2 \(west\): crypto unit identity differs from the one pinned on first contact: unit $uid2 at .* now presents key sha256 [0-9a-f]{64}, pinned sha256 [0-9a-f]{64}: .*delete its line from $KYOK_TKE_FILES/known_units" \
	"$out"
expect_match "... unit 1 still shown" "^1 +east +yes " "$out"
run_rc "$KYOK" tke cryptounit-admin-add --sigkey 1
expect_eq "a command to the re-created unit: exit 6" "$rc" 6
expect_match "... refused with identity changed" "crypto unit 2 .*identity differs" "$out"
expect_eq "... not installed in the new unit 2" "$(unit_state 2 | jq '.admins | length')" 0
pid2=$(cat "$I/unit-2/pid")
kill "$pid2"
wait_gone "$pid2"
rm -rf "$I/unit-2/data"
mv "$T_DIR/unit-2-data" "$I/unit-2/data"
expect_ok "original data back: up" "$KYOK" up
expect_ok "... status accepts unit 2 again" "$KYOK" status

# ---- damaged sealed state ------------------------------------------------------------------------
expect_ok "down" "$KYOK" down
S=$I/unit-2/data/state.sealed
cp -p "$S" "$T_DIR/state.saved"
flip_byte "$S" -40
sum=$(sha256sum <"$S")
# data_dir_listing: name, size, mode and time of the data dir and everything in it.
data_dir_listing() { find "$I/unit-2/data" -printf '%P %s %m %T@\n' | sort; }
ls_before=$(data_dir_listing)
run_rc "$KYOK" up
expect_eq "up with unit 2's state.sealed damaged: exit 0 (unit 1 serves)" "$rc" 0
expect_match "... warns, naming unit 2 and its exit" "^warning: $I/unit-2: crypto unit 2 exited at start" "$out"
expect_match "... shows the log line" \
	"sealed state '$S' cannot be opened: wrong seal key or damaged file; refusing to start and leaving it as it is" "$out"
expect_match "... says which serve" "warning: 1 of 2 crypto units do not serve \(see above\); serving: crypto unit 1$" "$out"
expect_match "... unit 1 started" "^1 .* +[0-9]+ +started$" "$out"
expect_match "... unit 2 failed" "^2 .* +- +failed$" "$out"
expect_match "... the unit's log says why" \
	"error: sealed state '$S' cannot be opened: wrong seal key or damaged file; refusing to start" \
	"$(tail -n 2 "$I/unit-2/unit.log")"
expect_eq "... state.sealed left untouched" "$(sha256sum <"$S")" "$sum"
expect_eq "... nothing else changed in the data dir" "$(data_dir_listing)" "$ls_before"
expect_eq "... instance.json keeps both URLs" "$(jq -c '[.units[].url]' "$I/instance.json")" "$urls_before"
run_rc "$KYOK" status
expect_eq "... status: exit 6 (unit 2 down)" "$rc" 6
expect_match "... status: unit 1 answers" "^1 +east +yes " "$out"

# ---- both units broken: seal key readable by others on unit 1 as well -------------------------------
"$KYOK" down >/dev/null 2>&1 || true
K=$I/unit-1/data/seal.key
chmod 644 "$K"
run_rc "$KYOK" up
expect_eq "up with no unit able to start: exit 6" "$rc" 6
expect_match "... unit 1 refused at start, mode named" \
	"seal key '$K' has mode 0644, wider than 0600; refusing to start" "$out"
expect_match "... unit 2 named as an error" "^error: $I/unit-2: crypto unit cannot be reached: crypto unit 2 exited at start" "$out"
expect_match "... says none serves" "no crypto unit of the instance serves" "$out"
expect_eq "... mode left as it was" "$(stat -c %a "$K")" 644
chmod 600 "$K"
cp -p "$T_DIR/state.saved" "$S"
expect_ok "seal.key 0600 and state restored: up" "$KYOK" up
expect_eq "... alice still installed on both" \
	"$("$KYOK" status --output json | jq -r '[.units[].state.admins[].name] | join(",")')" "alice,alice"

# ---- key storage locked by another writer at start -------------------------------------------------
# The sqlite3 shell holds the write lock (BEGIN IMMEDIATE) through a fifo until told to commit.
expect_ok "down" "$KYOK" down
hold_store_lock "$I/keys.db"
"$KYOK" up >"$T_DIR/up.out" 2>&1 &
up_pid=$!
for _ in $(seq 200); do
	[ "$(cat "$I"/unit-*/unit.log | grep -c "is locked by another writer, pid $sqlpid (sqlite3): waiting up to 10000 ms")" -ge 2 ] && break
	sleep 0.1
done
expect_eq "units starting on locked key storage wait, each logs it naming the holder" \
	"$(cat "$I"/unit-*/unit.log | grep -c "is locked by another writer, pid $sqlpid (sqlite3): waiting up to 10000 ms")" 2
echo "COMMIT;" >&7
exec 7>&-
wait "$sqlpid" || true
rc=0
wait "$up_pid" || rc=$?
expect_eq "... lock released: up exits 0" "$rc" 0
expect_eq "... both units started" "$(grep -c ' started$' "$T_DIR/up.out")" 2
expect_ok "down" "$KYOK" down
sed -i 's/^zone = .*/&\nstore_lock_wait_ms = 500/' "$I"/unit-*/unit.conf
hold_store_lock "$I/keys.db"
run_rc "$KYOK" up
echo "ROLLBACK;" >&7
exec 7>&-
wait "$sqlpid" || true
expect_eq "lock held past store_lock_wait_ms: up exits 6" "$rc" 6
expect_match "... names the storage, the holder, the wait and the fix" \
	"error: key storage 'sqlite:$I/keys.db' stayed locked by another writer \(pid $sqlpid \(sqlite3\)\) for 500 ms: not started; end that program's write transaction, or raise store_lock_wait_ms in the unit.conf" "$out"
expect_match "... and that no unit serves" "no crypto unit of the instance serves" "$out"
sed -i '/^store_lock_wait_ms = /d' "$I"/unit-*/unit.conf
expect_ok "lock free: up" "$KYOK" up

# ---- units on https: the operator's certificates ----------------------------------------------------
# A test CA (EC P-256) and a certificate for 127.0.0.1 from it, another CA that did not issue it,
# and a certificate for another name from the right CA.
expect_ok "down" "$KYOK" down
X=$T_DIR/tls
mkdir -p "$X"
ec() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$X/$1.key" "${@:2}" 2>/dev/null; }
ec ca -x509 -out "$X/ca.crt" -subj /CN=test-ca -days 2
ec other -x509 -out "$X/other.crt" -subj /CN=other-ca -days 2
issue() { # NAME SAN
	ec "$1" -out "$X/$1.csr" -subj "/CN=$1"
	openssl x509 -req -in "$X/$1.csr" -CA "$X/ca.crt" -CAkey "$X/ca.key" -CAcreateserial -days 2 \
		-out "$X/$1.crt" -extfile <(printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\n' "$2") 2>/dev/null
}
issue unit IP:127.0.0.1
issue elsewhere DNS:unit.example
for c in "$I"/unit-*/unit.conf; do printf 'api_tls_cert = %s\napi_tls_key = %s\n' "$X/unit.crt" "$X/unit.key" >>"$c"; done
run_rc env KYOK_CA_FILE="$X/ca.crt" "$KYOK" up
expect_eq "up with api_tls_cert/api_tls_key in unit.conf: exit 0" "$rc" 0
expect_eq "... instance.json has https URLs, same ports" "$(jq -c '[.units[].url]' "$I/instance.json")" \
	"$(jq -c '[.[] | sub("^http:"; "https:")]' <<<"$urls_before")"
expect_match "... the table shows them" "^1 .* https://127\.0\.0\.1:$port1 +[0-9]+ +started$" "$out"
expect_ok "status --cacert CA: over https" "$KYOK" status --cacert "$X/ca.crt"
expect_ok "status with KYOK_CA_FILE" env KYOK_CA_FILE="$X/ca.crt" "$KYOK" status
expect_ok "a ceremony query with --cacert" "$KYOK" tke cryptounit-admins --cacert "$X/ca.crt"
run_rc "$KYOK" status --cacert "$X/other.crt"
expect_eq "status with a CA that did not issue the units' certificate: exit 6" "$rc" 6
expect_match "... says the TLS connection failed, why, the URL and the CA file" \
	"crypto unit 1 \(east\): the TLS connection to the crypto unit failed: .*: https://127\.0\.0\.1:$port1/v1/admin/identity: .*SSL certificate problem: unable to get local issuer certificate\); CA certificates from '$X/other.crt'" "$out"
run_rc "$KYOK" status
expect_match "without a CA: the system's store is named, and how to give one" \
	"the TLS connection to the crypto unit failed: .*; CA certificates: the system's \(give the instance's with --cacert FILE or KYOK_CA_FILE\)" "$out"
run_rc env KYOK_APIKEY=not-a-key "$KYOK" kp keys --cacert "$X/other.crt"
expect_eq "kp with the wrong CA: exit 6" "$rc" 6
expect_match "... names the TLS failure, not 'is it running'" \
	"the TLS connection to the crypto unit failed: .*https://127\.0\.0\.1:[0-9]+/.*unable to get local issuer certificate" "$out"
if grep -q "is it running" <<<"$out"; then fail "... kp still asks whether the instance runs"; else pass "... and does not ask whether it runs"; fi
cp "$X/ca.crt" "$I/ca.crt"
expect_ok "the instance directory's ca.crt is used by default" "$KYOK" status
expect_ok "down" "$KYOK" down
sed -i "s|^api_tls_cert = .*|api_tls_cert = $X/elsewhere.crt|; s|^api_tls_key = .*|api_tls_key = $X/elsewhere.key|" "$I"/unit-*/unit.conf
expect_ok "units with a certificate for another name: up" "$KYOK" up
run_rc "$KYOK" status
expect_match "status: the name mismatch is named" \
	"the TLS connection to the crypto unit failed: .*https://127\.0\.0\.1:$port1/v1/admin/identity: .*(does not match|no alternative certificate subject name matches)" "$out"

# ---- kyok up --tls: the instance's own TLS CA ------------------------------------------------------
J=$T_DIR/inst-tls
run_rc "$KYOK" up --instance "$J" --units 1 --tls
expect_eq "up --tls: exit 0" "$rc" 0
expect_match "... unit 1 on https" "^1 .* https://127\.0\.0\.1:[0-9]+ +[0-9]+ +started$" "$out"
expect_eq "... instance.json has the https URL" "$(jq -r '.units[0].url' "$J/instance.json" | cut -c1-8)" "https://"
expect_eq "... CA key 0600, unit TLS key 0600" "$(stat -c %a "$J/ca.key") $(stat -c %a "$J/unit-1/tls.key")" "600 600"
if grep -q "PRIVATE KEY" <<<"$out"; then fail "... printed a private key"; else pass "... prints no private key"; fi
expect_ok "... the unit's certificate chains to ca.crt, for 127.0.0.1" \
	openssl verify -CAfile "$J/ca.crt" -verify_ip 127.0.0.1 -purpose sslserver "$J/unit-1/tls.crt"
expect_ok "... status trusts the instance's ca.crt by default" "$KYOK" status --instance "$J"
expect_ok "... a ceremony command over https (select the unit, pinning its identity)" \
	env KYOK_TKE_FILES="$T_DIR/ws-tls" "$KYOK" tke cryptounit-add --units 1 --instance "$J"
expect_ok "... a ceremony query over https" \
	env KYOK_TKE_FILES="$T_DIR/ws-tls" "$KYOK" tke cryptounit-admins --instance "$J"
run_rc env KYOK_APIKEY=not-a-key "$KYOK" kp keys --instance "$J"
expect_match "... the key API answers over https (the unit has no master key yet)" \
	"this crypto unit has no master key" "$out"
if grep -q "tls-failure\|TLS connection" <<<"$out"; then fail "... kp failed on TLS: $out"; else pass "... no TLS failure"; fi
run_rc "$KYOK" status --instance "$J" --cacert "$X/ca.crt"
expect_match "... --cacert overrides the instance's ca.crt" "the TLS connection to the crypto unit failed" "$out"
run_rc "$KYOK" up --instance "$J" --tls
expect_eq "up --tls on an existing instance: exit 2" "$rc" 2
expect_match "... says why" "--tls makes a TLS CA only for a new instance" "$out"

# ---- kyok-unitd configuration errors -----------------------------------------------------------------
C=$T_DIR/conf
mkdir -p "$C"
cat >"$C/good.conf" <<EOF
# a unit
instance = inst-1
unit = unit-1
zone = zone-1
listen = 127.0.0.1:0
data_dir = data
EOF
sed 's/^zone = zone-1$/zone = zone-1\ncolour = blue/' "$C/good.conf" >"$C/unknown.conf"
grep -v '^unit = ' "$C/good.conf" >"$C/missing.conf"
sed 's/^listen = .*/listen = 127.0.0.1:99999/' "$C/good.conf" >"$C/port.conf"
sed 's/^listen = .*/listen = localhost/' "$C/good.conf" >"$C/listen.conf"
for t in "unknown:$C/unknown.conf:5: unknown key 'colour'" \
	"missing:$C/missing.conf: missing required key 'unit'" \
	"port:$C/port.conf:5: bad value for 'listen'" \
	"listen:$C/listen.conf:5: bad value for 'listen'"; do
	name=${t%%:*}
	want=${t#*:}
	run_rc timeout 10 "$UNITD" --config "$C/$name.conf"
	expect_eq "kyok-unitd config $name: exit 2" "$rc" 2
	expect_eq "... message" "$(head -n 1 <<<"$out" | cut -c1-$((${#want} + 7)))" "error: $want"
done
if [ -e "$C/data" ]; then
	fail "a refused configuration created its data dir"
else
	pass "no data dir made on a refused configuration"
fi
mkdir -p "$C/any"
sed 's/^listen = .*/listen = 0.0.0.0:0/' "$C/good.conf" >"$C/any/plain.conf"
run_rc timeout 10 "$UNITD" --config "$C/any/plain.conf"
expect_eq "kyok-unitd on 0.0.0.0 without TLS: exit 2" "$rc" 2
expect_match "... refused at its configuration, naming the settings" \
	"error: $C/any/plain.conf:5: listen address 0\\.0\\.0\\.0 is not a loopback address: it needs TLS \\(set api_tls_cert and api_tls_key\\)" "$out"
if [ -e "$C/any/data" ]; then fail "... yet made its data dir"; else pass "... before making anything"; fi
run_rc "$UNITD"
expect_eq "kyok-unitd without --config: exit 2" "$rc" 2
expect_match "... says --config is missing" "missing --config" "$out"

# --store takes a PostgreSQL URI only, never one holding a password (the units refuse one too,
# test_store); a refused instance leaves no directory behind.
run_rc "$KYOK" up --dir "$T_DIR/inst-store" --store "sqlite:$T_DIR/k.db"
expect_eq "up --store sqlite:...: exit 2" "$rc" 2
expect_match "... asks for a PostgreSQL URI" "give a PostgreSQL URI" "$out"
run_rc "$KYOK" up --dir "$T_DIR/inst-store" --store "postgresql://kyok:Pw-$RANDOM@db1/kyok"
expect_eq "up --store with a password in the URI: exit 2" "$rc" 2
expect_match "... says to use a password file" "password file" "$out"
run_rc env KYOK_STORE="postgres:///kyok?password=x&host=/run" "$KYOK" up --dir "$T_DIR/inst-store"
expect_eq "\$KYOK_STORE with a password: exit 2" "$rc" 2
if [ -e "$T_DIR/inst-store" ]; then fail "a refused --store left $T_DIR/inst-store"; else pass "... no instance directory made"; fi

finish
