#!/usr/bin/env bash
# kyok up / status / down on the embedded default, and a unit's start-up checks: the same
# units come back with their state, a re-created unit is refused by its pinned identity, a
# damaged sealed state or a readable seal key stops a unit from starting (and the file is
# left as it is), configuration errors name file and line, the daemon cannot dump core and
# refuses oversized requests.
. "$(dirname "$0")/helpers.sh"
setup

expect_match() {
	if grep -qE -- "$2" <<<"$3"; then pass "$1"; else fail "$1: /$2/ not in: $3"; fi
}
run_rc() {
	rc=0
	out=$("$@" 2>&1) || rc=$?
}
# wait_gone PID: waits up to 5 s for the process to end.
wait_gone() {
	local _
	for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
	return 1
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
	expect_match "$n --version prints the version" "^$n [0-9]+\.[0-9]+\.[0-9]+$" "$out"
done

# ---- docs/commands.md is the real --help text ------------------------------------------------------
# Each command's block there is its --help output, the common options left out; every command
# the group helps list has its block. When a help text changes, regenerate docs/commands.md.
DOC=$(dirname "$0")/../../docs/commands.md
trim_blank() { sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'; }
# doc_block LINE: the first code block after the line LINE.
doc_block() {
	awk -v h="$1" '$0 == h {f = 1; next} f && /^```$/ {if (b) exit; b = 1; next} b {print}' "$DOC"
}
# help_text CMD...: CMD --help without its common options.
help_text() { "$@" --help | sed '/^common options:$/,$d' | trim_blank; }
doc_bad=
for group in "" tke scup kp audit; do
	# shellcheck disable=SC2086
	for c in $("$KYOK" $group --help | awk '/^  [a-z]/{print $1}'); do
		[ -z "$group" ] && { [ "$c" = tke ] || [ "$c" = scup ] || [ "$c" = kp ] || [ "$c" = audit ]; } && continue
		name="kyok${group:+ $group} $c"
		# shellcheck disable=SC2086
		if [ "$(doc_block "### \`$name\`")" != "$(help_text "$KYOK" $group "$c")" ]; then
			doc_bad+=" '$name'"
		fi
	done
done
# The command lists of kyok and of each group: each is one of the doc's code blocks, exactly.
doc_blocks() { awk '/^```$/ {if (b) {printf "\036"; b = 0} else b = 1; next} b {print}' "$DOC"; }
for group in "" tke scup kp audit; do
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

# ---- down, status fails, up brings the same units back -------------------------------------------
run_rc "$KYOK" down
expect_eq "down: exit 0" "$rc" 0
expect_match "... stopped unit 1" "stopped crypto unit 1 \(pid $pid1\)" "$out"
expect_match "... stopped unit 2" "stopped crypto unit 2 \(pid $pid2\)" "$out"
if wait_gone "$pid1" && wait_gone "$pid2"; then pass "... both processes ended"; else fail "a unit still runs after down"; fi
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
run_rc "$KYOK" status --output json
expect_eq "... status exit 0 (pinned identities unchanged)" "$rc" 0
expect_eq "... alice still installed on both" \
	"$(jq -r '[.units[].state.admins[].name] | join(",")' <<<"$out")" "alice,alice"

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
size=$(stat -c %s "$S")
b=$(od -An -tu1 -j $((size - 40)) -N1 "$S" | tr -d ' ')
printf '%b' "\\$(printf '%03o' $(((b + 1) % 256)))" | dd of="$S" bs=1 seek=$((size - 40)) conv=notrunc status=none
sum=$(sha256sum <"$S")
# data_dir_listing: name, size, mode and time of the data dir and everything in it.
data_dir_listing() { find "$I/unit-2/data" -printf '%P %s %m %T@\n' | sort; }
ls_before=$(data_dir_listing)
run_rc "$KYOK" up
if [ $rc -ne 0 ]; then pass "up with a damaged state.sealed: exit $rc"; else fail "up succeeded with a damaged state.sealed"; fi
expect_match "... up names unit 2 and its exit" "crypto unit 2 exited at start" "$out"
expect_match "... up shows the log line" \
	"sealed state '$S' cannot be opened: wrong seal key or damaged file; refusing to start and leaving it as it is" "$out"
expect_match "... the unit's log says why" \
	"error: sealed state '$S' cannot be opened: wrong seal key or damaged file; refusing to start" \
	"$(tail -n 2 "$I/unit-2/unit.log")"
expect_eq "... state.sealed left untouched" "$(sha256sum <"$S")" "$sum"
expect_eq "... nothing else changed in the data dir" "$(data_dir_listing)" "$ls_before"
run_rc "$KYOK" status
expect_eq "... status: exit 6" "$rc" 6
cp -p "$T_DIR/state.saved" "$S"

# ---- seal key readable by others -----------------------------------------------------------------
"$KYOK" down >/dev/null 2>&1 || true
K=$I/unit-1/data/seal.key
chmod 644 "$K"
run_rc "$KYOK" up
if [ $rc -ne 0 ]; then pass "up with seal.key 0644: exit $rc"; else fail "up succeeded with seal.key 0644"; fi
expect_match "... refused at start, mode named" \
	"seal key '$K' has mode 0644, wider than 0600; refusing to start" "$out"
expect_eq "... mode left as it was" "$(stat -c %a "$K")" 644
chmod 600 "$K"
expect_ok "seal.key 0600 and state restored: up" "$KYOK" up
expect_eq "... alice still installed on both" \
	"$("$KYOK" status --output json | jq -r '[.units[].state.admins[].name] | join(",")')" "alice,alice"

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
