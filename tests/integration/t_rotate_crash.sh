#!/usr/bin/env bash
# Master key rotation killed with SIGKILL at many points, on a 2-unit instance holding a few
# thousand keys: each round makes a fresh new master key (mk-add --random x2, mk-load,
# mk-commit) and runs 'kyok tke cryptounit-mk-rotate --yes' while killing
#  - the unit that re-enciphers, mid re-encipherment (its state showed it running and
#    partial, the other unit then still counts records under both keys),
#  - the CLI, at random moments and right after the first set-immediate,
#  - the other unit, while the first re-enciphers;
# each kill is followed by 'kyok up' (restarts dead units) and a re-run of the rotation. After
# each round every ciphertext made before the first rotation unwraps to its plaintext, and no
# key is lost. The units run with small re-encipherment batches and a pause between them
# (reencipher_batch, reencipher_pause_ms in unit.conf) so that a rotation lasts long enough
# to be killed inside. Rounds: KYOK_CRASH_ROUNDS (default 25) x 10 / 25, at least 2.
. "$(dirname "$0")/helpers.sh"
setup

NKEYS=${KYOK_CRASH_KEYS:-3000}
ROUNDS=$((${KYOK_CRASH_ROUNDS:-25} * 10 / 25))
[ "$ROUNDS" -ge 2 ] || ROUNDS=2
PAR=4 # client connections for the bulk requests
START=$SECONDS

pwf() {
	local n
	for n in "$@"; do printf -- '--password-file\n%s\n' "$T_DIR/pw/$n"; done
}
rnd() { echo $(($1 + RANDOM % ($2 - $1 + 1))); } # rnd LO HI
msleep() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }
AK="$KYOK_TKE_FILES/apikeys"
IID=""
TOK=""

# ---- bulk requests: one curl per connection, keep-alive ------------------------------------

# reqs_conf N METHOD: "PATH BODY" lines (BODY without spaces) on stdin -> a curl config
# sending them to unit N; each reply is followed by a line "=>STATUS".
reqs_conf() {
	awk -v url="$(unit_url "$1")" -v m="$2" -v tok="$TOK" -v iid="$IID" '{
		body = $2; gsub(/"/, "\\\"", body)
		if (NR > 1) print "next"
		printf "url = \"%s%s\"\nrequest = \"%s\"\n", url, $1, m
		printf "header = \"Authorization: Bearer %s\"\nheader = \"Bluemix-Instance: %s\"\n", tok, iid
		print "header = \"Content-Type: application/json\""
		print "header = \"Prefer: return=representation\""
		printf "data-binary = \"%s\"\nwrite-out = \"=>%%{http_code}\\n\"\n", body
	}'
}
# reqs N METHOD IN OUT: the requests of file IN to unit N over $PAR connections; OUT gets
# "STATUS BODY" per request, in IN's order.
reqs() {
	local n=$1 m=$2 in=$3 out=$4 f pids=()
	rm -f "$in".p.*
	split -n "l/$PAR" -d "$in" "$in.p."
	for f in "$in".p.*; do
		reqs_conf "$n" "$m" <"$f" >"$f.conf"
		curl -sS --max-time 120 -K "$f.conf" >"$f.out" 2>/dev/null &
		pids+=($!)
	done
	wait "${pids[@]}" || true
	for f in "$in".p.??; do
		awk '/^=>/ {print substr($0, 3), (b == "" ? "-" : b); b = ""; next} {b = $0}' "$f.out"
	done >"$out"
	rm -f "$in".p.*
}
# creates N PREFIX: "PATH BODY" lines creating root keys PREFIX-1 .. PREFIX-N.
creates() {
	awk -v n="$1" -v p="$2" 'BEGIN {
		for (i = 1; i <= n; i++)
			printf "/api/v2/keys {\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.key+json\",\"collectionTotal\":1},\"resources\":[{\"type\":\"application/vnd.ibm.kms.key+json\",\"name\":\"%s-%d\",\"extractable\":false}]}\n", p, i
	}'
}
# unwrap_check N: every saved ciphertext through unit N; prints how many did not give back
# their plaintext.
unwrap_check() {
	awk '{printf "/api/v2/keys/%s/actions/unwrap {\"ciphertext\":\"%s\"}\n", $1, $2}' \
		"$T_DIR/wrapped" >"$T_DIR/unwrap.in"
	reqs "$1" POST "$T_DIR/unwrap.in" "$T_DIR/unwrap.out"
	cut -d' ' -f2- "$T_DIR/unwrap.out" | jq -r '.plaintext // "failed"' >"$T_DIR/unwrapped" 2>/dev/null
	awk '{print $3}' "$T_DIR/wrapped" | diff - "$T_DIR/unwrapped" | grep -c '^[<>]' || true
}
key_total() {
	curl -sS -I -H "Authorization: Bearer $TOK" -H "Bluemix-Instance: $IID" \
		"$(unit_url "$1")/api/v2/keys" | tr -d '\r' | awk -F': ' 'tolower($1) == "key-total" {print $2}'
}

# ---- units -----------------------------------------------------------------------------------

# st N: unit N's state, "" when it does not answer.
st() { curl -sS --max-time 3 "$(unit_url "$1")/v1/admin/state" 2>/dev/null || true; }
# view N: "running done total under_current under_new cur_vp new_state" of unit N ("down").
view() {
	local s
	s=$(st "$1")
	[ -n "$s" ] || { echo down; return; }
	jq -r '[.storage.reencipher.running, .storage.reencipher.done, .storage.reencipher.total,
		.storage.records_under_current, .storage.records_under_new, (.current_mk.vp // "-"),
		(.new_mk.state | gsub(" "; "_"))] | join(" ")' <<<"$s"
}
unit_pid() { cat "$KYOK_INSTANCE/unit-$1/pid"; }
kill_unit() {
	local p
	p=$(unit_pid "$1")
	kill -9 "$p" 2>/dev/null || true
	wait_gone "$p"
}
restart() {
	run_rc "$KYOK" up
	[ $rc -eq 0 ] || fail "kyok up after a kill: exit $rc: $out"
}
CLI=""
cli_start() { # a new run of the rotation; its output in cli.log
	"$KYOK" tke cryptounit-mk-rotate --yes $(pwf ann) >"$T_DIR/cli.log" 2>&1 &
	CLI=$!
}
# cli_wait: waits for the CLI (at most 60 s); its exit status in $cli_rc.
cli_wait() {
	for _ in $(seq 600); do
		kill -0 "$CLI" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$CLI" 2>/dev/null && { fail "the rotation CLI hangs"; kill -9 "$CLI"; }
	cli_rc=0
	wait "$CLI" 2>/dev/null || cli_rc=$?
}
cli_kill() {
	kill -9 "$CLI" 2>/dev/null || true
	wait "$CLI" 2>/dev/null || true
}
# rotating: sets R to the number of a unit that is re-enciphering (partly done), else 0, and
# rv to its view.
rotating() {
	local n run ndone total cur
	R=0
	for n in 1 2; do
		rv=$(view $n)
		read -r run ndone total cur _ <<<"$rv"
		if [ "$run" = true ] && [ "$cur" -gt 0 ] && [ "$ndone" -lt "$total" ]; then
			R=$n
			return
		fi
	done
}
# wait_rotating MIN_MOVED: waits (at most 20 s) for a unit re-enciphering while at least
# MIN_MOVED records of key storage are under the new key; its number in $R, its view in $rv
# ($R = 0: none came).
wait_rotating() {
	local cur
	R=0
	for _ in $(seq 2000); do
		rotating
		if [ "$R" != 0 ]; then
			cur=$(cut -d' ' -f4 <<<"$rv")
			[ $((RECORDS - cur)) -ge "$1" ] && return
		fi
		kill -0 "$CLI" 2>/dev/null || return 0
		sleep 0.01
	done
	R=0
}

# Where a killed CLI stopped, from what the units show now.
phase() {
	local v1 v2
	v1=$(view 1)
	v2=$(view 2)
	if [ "$(cut -d' ' -f1 <<<"$v1")" = true ] || [ "$(cut -d' ' -f1 <<<"$v2")" = true ]; then
		echo "re-encipherment running"
	elif [ "$(cut -d' ' -f6 <<<"$v1")" = "$TARGET" ] && [ "$(cut -d' ' -f6 <<<"$v2")" = "$TARGET" ]; then
		echo "after both set-immediates"
	elif [ "$(cut -d' ' -f6 <<<"$v1")" = "$TARGET" ] || [ "$(cut -d' ' -f6 <<<"$v2")" = "$TARGET" ]; then
		echo "between the set-immediates of unit 1 and unit 2"
	elif [ "$(cut -d' ' -f4 <<<"$v1")" = 0 ]; then
		echo "re-enciphered, before set-immediate"
	else
		echo "before re-encipherment started"
	fi
}
declare -A KILLS=()
count() { KILLS[$1]=$((${KILLS[$1]:-0} + 1)); }

# ---- kill points -----------------------------------------------------------------------------

moved() { echo $((RECORDS - $(view "$1" | cut -d' ' -f4))); } # under the new key, seen by unit N

# The unit that re-enciphers, once MIN records are under the new key. How the CLI running it
# fares: cli-first = the CLI is killed just before the unit (nothing takes over); failover =
# the CLI moves the re-encipherment to the other unit, finishes it there and fails to make
# the key current on the dead unit.
kill_rotating_unit() {
	local min=$1 how=$2 s run ndone total cur new
	if [ "$how" != cli-first ]; then
		# The CLI must be past its start (a unit it cannot read at the start ends it).
		for _ in $(seq 1000); do
			grep -qE '^step 1 of 2|already re-enciphering' "$T_DIR/cli.log" && break
			kill -0 "$CLI" 2>/dev/null || break
			sleep 0.01
		done
	fi
	wait_rotating "$min"
	if [ "$R" = 0 ]; then
		# Re-encipherment ended before this point (a slow machine): no kill this time.
		count "missed: no unit was re-enciphering"
		return 0
	fi
	if [ "$how" = cli-first ]; then
		cli_kill
		count_cli
		msleep "$(rnd 0 100)"
		rotating
		[ "$R" != 0 ] || { count "missed: no unit was re-enciphering"; return 0; }
	fi
	read -r run ndone total _ <<<"$rv"
	kill_unit "$R"
	s=$((3 - R))
	# $rv was read before the kill: the unit may have finished meanwhile (a loaded machine
	# runs this script slowly). Key storage, read through unit s, says where the kill landed.
	read -r _ _ _ cur new _ <<<"$(view "$s")"
	if [ "$cur" = 0 ] && [ "$new" = "$RECORDS" ]; then
		count "missed: re-encipherment finished before the kill"
		verbose "unit $R killed after it finished re-enciphering (it showed $ndone/$total before)"
		[ "$how" = cli-first ] || cli_wait
		restart
		return 0
	elif [ "$cur" -gt 0 ] && [ "$new" -gt 0 ] && [ $((cur + new)) = "$RECORDS" ]; then
		count unit
		verbose "unit $R killed with $ndone/$total re-enciphered; unit $s sees $cur records under the old key, $new under the new"
	else
		fail "round $round: unit $R killed (it showed $ndone/$total) but unit $s sees $cur under the old key, $new under the new, of $RECORDS"
	fi
	if [ "$how" = failover ] || [ "$how" = failover-killed ]; then
		# The CLI notices, has unit s take the work over and follows it there (or ends: the
		# check below says which); 60 s is only a guard against a CLI that hangs.
		for _ in $(seq 6000); do
			grep -q 'took the re-encipherment over' "$T_DIR/cli.log" && break
			kill -0 "$CLI" 2>/dev/null || break
			sleep 0.01
		done
		grep -q 'took the re-encipherment over' "$T_DIR/cli.log" ||
			fail "round $round: the CLI did not move the re-encipherment to unit $s: $(tail -3 "$T_DIR/cli.log")"
	fi
	if [ "$how" = failover-killed ]; then
		# ... and unit s dies too, mid-way: both down, nothing can go on.
		kill_second "$s" $(($(moved "$s") + RECORDS * $(rnd 3 15) / 100))
	fi
	if [ "$how" = failover ]; then
		cli_wait
		[ "$cli_rc" -ne 0 ] || fail "round $round: the rotation succeeded with unit $R down: $(tail -n 12 "$T_DIR/cli.log")"
	elif [ "$how" = failover-killed ]; then
		# kill_second restarted both units, on their own ports: the CLI, still polling,
		# may reach them again and finish (the round's checks below hold either way).
		cli_wait
	fi
	restart
}
# kill_second S MIN: unit S (the only one up) once MIN records are under the new key, while
# it re-enciphers; checked partial once both are back (a restarted unit does not resume by
# itself; the CLI may send it again).
kill_second() {
	local s=$1 run ndone total cur new
	for _ in $(seq 2000); do
		read -r run ndone total cur _ <<<"$(view "$s")"
		[ "$run" = true ] && [ $((RECORDS - cur)) -ge "$2" ] && break
		[ "$run" = true ] || kill -0 "$CLI" 2>/dev/null || break
		sleep 0.01
	done
	if [ "$run" != true ] || [ "$cur" = 0 ]; then
		count "missed: no unit was re-enciphering"
		return 0
	fi
	kill_unit "$s"
	restart
	read -r run _ _ cur new _ <<<"$(view "$s")"
	if [ "$run" = false ] && [ "$cur" = 0 ] && [ "$new" = "$RECORDS" ]; then
		# It finished between the view above and the kill (see kill_rotating_unit).
		count "missed: re-encipherment finished before the kill"
	elif [ "$cur" -gt 0 ] && [ "$new" -gt 0 ] && [ $((cur + new)) = "$RECORDS" ]; then
		# (running again only if the CLI, still polling, reached it on its port and sent
		# the re-encipherment again)
		count unit
		verbose "unit $s (after taking over) killed with $ndone/$total re-enciphered; restarted it shows $cur records under the old key, $new under the new"
	else
		fail "round $round: unit $s killed at $ndone/$total, restarted it shows running=$run, $cur under the old key, $new under the new"
	fi
}
# The CLI, after LO..HI ms.
kill_cli_random() {
	msleep "$(rnd "$1" "$2")"
	cli_kill
	count_cli
}
# A new CLI, killed as soon as a unit logs a set-immediate (tail -F: no polling delay).
kill_cli_setimm() {
	local line
	coproc LOGS { exec tail -n0 -q -F "$KYOK_INSTANCE/unit-1/unit.log" "$KYOK_INSTANCE/unit-2/unit.log" 2>/dev/null; }
	sleep 0.1
	cli_start
	while kill -0 "$CLI" 2>/dev/null; do
		if read -r -t 0.2 line <&"${LOGS[0]}" && [[ $line == *op=mk-setimm*outcome=ok* ]]; then
			break
		fi
	done
	cli_kill
	kill "$LOGS_PID" 2>/dev/null || true
	wait "$LOGS_PID" 2>/dev/null || true
	count_cli
}
count_cli() {
	local p
	p=$(phase)
	count cli
	count "cli: $p"
	verbose "CLI killed: $p"
}
# The unit that does not re-encipher, once MIN records are under the new key.
kill_other_unit() {
	local o
	wait_rotating "$1"
	if [ "$R" = 0 ]; then
		count "missed: no unit was re-enciphering"
		return 0
	fi
	o=$((3 - R))
	kill_unit "$o"
	count other
	verbose "unit $o killed while unit $R re-enciphers ($(cut -d' ' -f2,3 <<<"$rv" | tr ' ' /))"
}
verbose() {
	if [ -n "${KYOK_CRASH_VERBOSE:-}" ]; then echo "round $round ($((SECONDS - START)) s): $*" >&2; fi
	return 0
}

# ---- an initialised instance with a few thousand keys --------------------------------------
"$KYOK" up --units 2 >/dev/null 2>&1
"$KYOK" down >/dev/null 2>&1
for n in 1 2; do
	printf 'reencipher_batch = 50\nreencipher_pause_ms = 50\n' >>"$KYOK_INSTANCE/unit-$n/unit.conf"
done
"$KYOK" up >/dev/null 2>&1
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null 2>&1
newpw ann >/dev/null
newpw ben >/dev/null
expect_ok "auto-init (2 administrators, signature threshold 1)" "$KYOK" tke auto-init \
	--signature 1 --revocation 1 --new-admins ann,ben $(pwf ann ben)
"$KYOK" tke sigkey-sel --sigkeys 1 >/dev/null 2>&1
expect_ok "apikey-create (Writer)" "$KYOK" tke apikey-create --name w --role Writer $(pwf ann)
IID=$(instance_id)
jq -j .apikey "$AK/w.apikey" >"$T_DIR/w.raw"
TOK=$(curl -fsS --data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' \
	--data-urlencode "apikey@$T_DIR/w.raw" "$(unit_url 1)/identity/token" | jq -r .access_token)

t=$SECONDS
creates "$NKEYS" crash >"$T_DIR/create.in"
reqs 1 POST "$T_DIR/create.in" "$T_DIR/create.out"
awk '$1 == 201' "$T_DIR/create.out" | cut -d' ' -f2- | jq -r '.resources[0].id' >"$T_DIR/ids"
expect_eq "$NKEYS keys created" "$(grep -cE '^[0-9a-f-]{36}$' "$T_DIR/ids")" "$NKEYS"
awk '{printf "/api/v2/keys/%s/actions/wrap {}\n", $1}' "$T_DIR/ids" >"$T_DIR/wrap.in"
reqs 2 POST "$T_DIR/wrap.in" "$T_DIR/wrap.out"
cut -d' ' -f2- "$T_DIR/wrap.out" | jq -r '"\(.ciphertext) \(.plaintext)"' | paste -d' ' "$T_DIR/ids" - >"$T_DIR/wrapped"
expect_eq "a data key wrapped under each" \
	"$(grep -cE '^[0-9a-f-]{36} [A-Za-z0-9+/=]{40,} [A-Za-z0-9+/=]{44}$' "$T_DIR/wrapped")" "$NKEYS"
expect_eq "every ciphertext unwraps before any rotation" "$(unwrap_check 1)" 0
RECORDS=$(view 1 | cut -d' ' -f4)
pass "$RECORDS records in key storage, keys created and wrapped in $((SECONDS - t)) s"

# ---- rounds ----------------------------------------------------------------------------------
part=0
for round in $(seq "$ROUNDS"); do
	: >"$T_DIR/cli.log"
	# A fresh new master key: two random key parts, loaded and committed on both units.
	a=$((part + 1))
	b=$((part + 2))
	if ! out=$({
		"$KYOK" tke mk-add --random --description "round $round a" --password-file "$(newpw "p$a")" &&
			"$KYOK" tke mk-add --random --description "round $round b" --password-file "$(newpw "p$b")" &&
			"$KYOK" tke sigkey-sel --sigkeys 1,2 &&
			"$KYOK" tke cryptounit-mk-load --parts "$a,$b" $(pwf "p$a" "p$b" ann ben) &&
			"$KYOK" tke sigkey-sel --sigkeys 1 &&
			"$KYOK" tke cryptounit-mk-commit $(pwf ann)
	} 2>&1); then
		fail "round $round: new master key: $out"
		break
	fi
	part=$((part + 2))
	OLD=$(view 1 | cut -d' ' -f6)
	TARGET=$(st 1 | jq -r .new_mk.vp)

	if [ $((round % 2)) -eq 1 ]; then
		# the CLI, then at once the unit re-enciphering for it
		cli_start
		kill_rotating_unit $((RECORDS * $(rnd 5 30) / 100)) cli-first
		# the other unit while the first re-enciphers, then the CLI at a random moment
		cli_start
		kill_other_unit $(($(moved 1) + RECORDS * $(rnd 10 25) / 100))
		kill_cli_random 0 800
		restart
		# the CLI right after the first set-immediate
		kill_cli_setimm
	else
		# the CLI at a random moment (starting, sending, following)
		cli_start
		kill_cli_random 100 900
		# the unit re-enciphering; the CLI moves the work to the other unit, which finishes
		# it or is killed too
		cli_start
		if [ $((round % 4)) -eq 2 ]; then
			kill_rotating_unit $((RECORDS * $(rnd 40 80) / 100)) failover
		else
			kill_rotating_unit $((RECORDS * $(rnd 30 60) / 100)) failover-killed
		fi
	fi
	# Whatever is left: one more run finishes the rotation.
	v1=$(view 1)
	v2=$(view 2)
	if [ "$(cut -d' ' -f6 <<<"$v1")" != "$TARGET" ] || [ "$(cut -d' ' -f6 <<<"$v2")" != "$TARGET" ]; then
		run_rc "$KYOK" tke cryptounit-mk-rotate --yes $(pwf ann)
		if [ $rc -ne 0 ] || ! grep -q 'is current on 2 of 2 crypto units' <<<"$out"; then
			fail "round $round: the re-run did not finish the rotation (exit $rc): $out"
			break
		fi
	fi
	bad=""
	for n in 1 2; do
		read -r run _ _ cur new vp nst <<<"$(view $n)"
		[ "$vp" = "$TARGET" ] && [ "$nst" = EMPTY ] || bad+=" unit $n: current $vp new $nst;"
		[ "$cur" = "$RECORDS" ] || bad+=" unit $n: $cur records under the current key, want $RECORDS;"
	done
	[ "$(key_total $((round % 2 + 1)))" = "$NKEYS" ] || bad+=" key total $(key_total 1), want $NKEYS;"
	lost=$(unwrap_check $((round % 2 + 1)))
	[ "$lost" = 0 ] || bad+=" $lost ciphertexts do not unwrap;"
	if [ -z "$bad" ]; then
		pass "round $round: rotated ${OLD:0:8}.. -> ${TARGET:0:8}.., $NKEYS keys, every ciphertext unwraps on unit $((round % 2 + 1)) ($((SECONDS - START)) s)"
	else
		fail "round $round:$bad"
		break
	fi
done

expect_eq "after the last round: every ciphertext unwraps on unit 1" "$(unwrap_check 1)" 0
expect_eq "... and on unit 2" "$(unwrap_check 2)" 0
mid=${KILLS[unit]:-0}
pass "$mid kills of the rotating unit mid re-encipherment, ${KILLS[cli]:-0} kills of the CLI, ${KILLS[other]:-0} kills of the other unit during rotation ($ROUNDS rounds, $((SECONDS - START)) s)"
for k in "${!KILLS[@]}"; do
	case $k in
	cli:*) echo "     ${KILLS[$k]} CLI kills: ${k#cli: }" ;;
	missed:*) echo "     ${KILLS[$k]} kill points missed (${k#missed: })" ;;
	esac
done | sort -k5
# A re-encipherment that stopped by itself (not cancelled by a stop or a kill) is a failure.
stops=$(grep -h 'reencipher: stopped' "$T_DIR"/inst/unit-*/unit.log | grep -v 'stopped: cancelled' || true)
expect_eq "no re-encipherment stopped on an error (unit logs)" "$stops" ""
# Units stopped cleanly: a sanitizer build reports what it found in their logs.
for d in "$T_DIR"/inst*; do "$KYOK" down --instance "$d" >/dev/null 2>&1 || true; done
if grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$T_DIR"/inst*/unit-*/unit.log >/dev/null 2>&1; then
	fail "a unit's log has a sanitizer report: $(grep -hE -m3 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$T_DIR"/inst*/unit-*/unit.log)"
else
	pass "units stopped, no sanitizer report in their logs"
fi
finish
