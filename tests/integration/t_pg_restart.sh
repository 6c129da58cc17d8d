#!/usr/bin/env bash
# PostgreSQL restarted under load: 2 units on one PostgreSQL key storage, 3 clients creating
# keys, wrapping and unwrapping through both units, each writing down every request and its
# answer. Meanwhile PostgreSQL is stopped fast and started again, then killed (an immediate
# shutdown: a crash, recovered from its WAL) and started again. While it is down the units'
# GET /ready reports the storage fault; afterwards it answers 200. Then: every create that
# was acknowledged is there through both units, every acknowledged wrap unwraps to its
# plaintext through both, no answer was a wrong success, every error was a 5xx with a Key
# Protect error body while PostgreSQL was down, and every client went on succeeding after.
# Skipped (exit 77) without PostgreSQL's server.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/../pg.sh"
if ! pg_available; then
	echo "skip t_pg_restart: needs the PostgreSQL server binaries (Debian package postgresql)"
	exit 77
fi
export KYOK_TEST_STORE=pg
# Acknowledged commits reach the disk: the crash below is a real one for the server.
export PG_FSYNC=on
setup

CLIENTS=3
KT="application/vnd.ibm.kms.key+json"
UUID_RE='^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
# the same for awk (mawk has no intervals)
AWK_UUID='function uuid(s) { return length(s) == 36 && s ~ /^[0-9a-f]+-[0-9a-f]+-[0-9a-f]+-[0-9a-f]+-[0-9a-f]+$/ }
'

# ---- an initialised instance of 2 units on PostgreSQL, an API key, a token ------------------
"$KYOK" up --units 2 >/dev/null 2>&1
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null 2>&1
pa=$(newpw ann)
expect_ok "auto-init (one administrator)" "$KYOK" tke auto-init --signature 1 --revocation 1 \
	--new-admins ann --password-file "$pa"
"$KYOK" tke sigkey-sel --sigkeys 1 >/dev/null 2>&1
expect_ok "apikey-create (Writer)" "$KYOK" tke apikey-create --name w --role Writer \
	--password-file "$pa"
TOK=$(token_of "$KYOK_TKE_FILES/apikeys/w.apikey")
[ -n "$TOK" ] || { fail "no token: $(cat "$T_DIR/tok")"; finish; }
IID=$(instance_id)
U1=$(unit_url 1)
U2=$(unit_url 2)
ready_is "PostgreSQL up" 1 200
ready_is "PostgreSQL up" 2 200

# ---- the clients ------------------------------------------------------------------------------
# req N METHOD PATH [BODY]: one request to unit N; sets st (000: no answer) and rb (the body).
req() {
	local url=$U1 bf="$T_DIR/c$C.body"
	[ "$1" = 2 ] && url=$U2
	: >"$bf"
	st=$(curl -sS --max-time 20 -o "$bf" -w '%{http_code}' -X "$2" \
		-H "Authorization: Bearer $TOK" -H "Bluemix-Instance: $IID" \
		-H 'Content-Type: application/json' ${4:+--data-binary "$4"} "$url$3" 2>/dev/null) || true
	rb=$(<"$bf")
}
# field NAME: the first string member NAME of the body $rb ("-" when none).
field() {
	if [[ $rb =~ \"$1\":\"([^\"]*)\" ]]; then echo "${BASH_REMATCH[1]}"; else echo -; fi
}
# note OP N STATUS T0 KEYID SENT GOT EXPECT: one line of the client's log: the request, its
# answer, the Key Protect reason code of an error, when it was sent and answered.
note() {
	local code=-
	[[ $3 == 2* ]] || code=$(field code)
	echo "$1 $2 $3 $4 $EPOCHREALTIME $5 $6 $7 $8 $code" >>"$T_DIR/client-$C.log"
}
# client C: until $T_DIR/stop exists, create a key, wrap a plaintext of its own under the
# newest key it saw created, unwrap that through the other unit, and unwrap an older
# ciphertext of its own.
client() {
	C=$1
	local i=0 n m t0 id kid="" pt ct got old=() pool=()
	mapfile -t pool < <(head -c 120000 /dev/urandom | base64 -w 32)
	while [ ! -e "$T_DIR/stop" ]; do
		i=$((i + 1))
		n=$(((C + i) % 2 + 1))
		m=$((3 - n))
		t0=$EPOCHREALTIME
		req "$n" POST /api/v2/keys "$(printf '{"metadata":{"collectionType":"%s","collectionTotal":1},"resources":[{"type":"%s","name":"c%s-%s","extractable":false}]}' "$KT" "$KT" "$C" "$i")"
		id=$(field id)
		note create "$n" "$st" "$t0" "$id" - - -
		[ "$st" = 201 ] && [[ $id =~ $UUID_RE ]] && kid=$id
		[ -n "$kid" ] || continue
		pt=${pool[i % ${#pool[@]}]}
		t0=$EPOCHREALTIME
		req "$n" POST "/api/v2/keys/$kid/actions/wrap" "{\"plaintext\":\"$pt\"}"
		ct=$(field ciphertext)
		note wrap "$n" "$st" "$t0" "$kid" "$pt" "$ct" -
		if [ "$st" = 200 ] && [ "$ct" != - ]; then
			old+=("$kid $ct $pt")
			t0=$EPOCHREALTIME
			req "$m" POST "/api/v2/keys/$kid/actions/unwrap" "{\"ciphertext\":\"$ct\"}"
			note unwrap "$m" "$st" "$t0" "$kid" "$ct" "$(field plaintext)" "$pt"
		fi
		if [ ${#old[@]} -gt 0 ]; then
			read -r id ct got <<<"${old[SRANDOM % ${#old[@]}]}"
			t0=$EPOCHREALTIME
			req "$n" POST "/api/v2/keys/$id/actions/unwrap" "{\"ciphertext\":\"$ct\"}"
			note unwrap "$n" "$st" "$t0" "$id" "$ct" "$(field plaintext)" "$got"
		fi
	done
}

# ok_since C T: the number of answers 2xx client C had to requests sent after time T.
ok_since() { awk -v t="$2" '$4 > t && $3 ~ /^2/' "$T_DIR/client-$1.log" | wc -l; }
# wait_clients DESC T K: every client has K answers 2xx to requests sent after T (bounded).
wait_clients() {
	local desc=$1 t=$2 k=$3 c i all=0
	for i in $(seq 1 600); do
		all=1
		for c in $(seq 1 $CLIENTS); do
			[ "$(ok_since "$c" "$t")" -ge "$k" ] || { all=0; break; }
		done
		[ $all -eq 1 ] && break
		sleep 0.1
	done
	if [ $all -eq 1 ]; then pass "$desc"; else fail "$desc: a client has fewer than $k answers 2xx since"; fi
}
# wait_errors DESC T: some client had an error answer to a request sent after T (bounded).
wait_errors() {
	local i
	for i in $(seq 1 300); do
		[ "$(cat "$T_DIR"/client-*.log | awk -v t="$2" '$4 > t && $3 !~ /^2/' | wc -l)" -gt 0 ] &&
			{ pass "$1"; return; }
		sleep 0.1
	done
	fail "$1: no client had an error answer"
}

# pg_ctl_do ARGS...: pg_ctl on the test's cluster, as its owner.
pg_ctl_do() { pg_as "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -w -t 120 "$@" >/dev/null; }
pg_up() {
	pg_ctl_do -l "$PG_DIR/server.log" \
		-o "-c listen_addresses='' -k $PG_DIR -c fsync=on -c max_connections=200" start
}

# outage MODE: PostgreSQL stopped with shutdown mode MODE; the units report it (/ready) and
# the clients have errors; PostgreSQL started again; the units ready and every client
# succeeding again. The window of the outage goes to $T_DIR/outages.
outage() {
	local mode=$1 t0 t1
	t0=$EPOCHREALTIME
	expect_ok "PostgreSQL stopped (-m $mode)" pg_ctl_do -m "$mode" stop
	ready_is "PostgreSQL down (-m $mode)" 1 503 storage-unreachable
	ready_is "PostgreSQL down (-m $mode)" 2 503 storage-unreachable
	wait_errors "PostgreSQL down (-m $mode): the clients get errors" "$t0"
	expect_ok "PostgreSQL started again after -m $mode" pg_up
	ready_is "PostgreSQL back after -m $mode" 1 200
	ready_is "PostgreSQL back after -m $mode" 2 200
	t1=$EPOCHREALTIME
	echo "$t0 $t1" >>"$T_DIR/outages"
	wait_clients "after -m $mode: every client succeeds again" "$t1" 6
}

START=$EPOCHREALTIME
pids=()
for c in $(seq 1 $CLIENTS); do
	: >"$T_DIR/client-$c.log"
	client "$c" &
	pids+=($!)
done
wait_clients "load: every client has answers 2xx" "$START" 10
: >"$T_DIR/outages"
outage fast
outage immediate
touch "$T_DIR/stop"
for p in "${pids[@]}"; do wait "$p" || fail "a client ended with status $?"; done
LOAD_S=$(awk -v a="$START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
cat "$T_DIR"/client-*.log >"$T_DIR/all.log"
echo "load: $LOAD_S s, $(wc -l <"$T_DIR/all.log") requests: $(awk '{ n[$1 " " $3]++ } END { for (k in n) printf "%s %s, ", k, n[k] }' "$T_DIR/all.log")"

# ---- what the clients were answered -----------------------------------------------------------
# bad PROGRAM: the number of lines of the clients' log the awk PROGRAM prints ("awk failed"
# when it fails: a check that cannot pass by mistake).
bad() {
	local o
	o=$(awk "$AWK_UUID$1" "$T_DIR/all.log") || { echo "awk failed"; return 0; }
	if [ -z "$o" ]; then echo 0; else wc -l <<<"$o"; fi
}
expect_eq "every request had an answer (no 000)" "$(bad '$3 == "000"')" 0
expect_eq "no wrong success: every 2xx create is a 201 with a key id" \
	"$(bad '$1 == "create" && $3 ~ /^2/ && ($3 != 201 || !uuid($6))')" 0
expect_eq "no wrong success: every 2xx wrap is a 200 with a ciphertext" \
	"$(bad '$1 == "wrap" && $3 ~ /^2/ && ($3 != 200 || $8 == "-")')" 0
expect_eq "no wrong success: every 2xx unwrap is a 200 giving back the plaintext wrapped" \
	"$(bad '$1 == "unwrap" && $3 ~ /^2/ && ($3 != 200 || $8 != $9)')" 0
nerr=$(bad '$3 !~ /^2/')
if [ "$nerr" -gt 0 ]; then
	pass "the clients had $nerr error answers ($(awk '$3 !~ /^2/ { n[$3 " " $10]++ } END { for (k in n) printf "%s: %s; ", k, n[k] }' "$T_DIR/all.log"))"
else
	fail "no client had an error answer: PostgreSQL was not down under load"
fi
expect_eq "every error is a 5xx with a Key Protect reason code" \
	"$(bad '$3 !~ /^2/ && ($3 !~ /^5/ || $10 == "-")')" 0
# An error to a request that began and ended while PostgreSQL was up (outside every outage
# window: from the stop to both units ready again) is one a client should never have had.
expect_eq "no error while PostgreSQL was up" \
	"$(awk 'NR == FNR { a[NR] = $1; b[NR] = $2; n = NR; next }
		$3 !~ /^2/ { in_w = 0; for (k = 1; k <= n; k++) if ($5 >= a[k] && $4 <= b[k]) in_w = 1
			if (!in_w) print }' "$T_DIR/outages" "$T_DIR/all.log" | tee "$T_DIR/err_up" | wc -l)" 0
[ -s "$T_DIR/err_up" ] && head -5 "$T_DIR/err_up" >&2

# ---- nothing acknowledged was lost --------------------------------------------------------
# batch N FILE: "METHOD PATH BODY" lines of FILE (BODY "-" for none) to unit N over one
# connection; "STATUS BODY" lines in FILE.out, in order.
batch() {
	local url=$U1
	[ "$1" = 2 ] && url=$U2
	awk -v url="$url" -v tok="$TOK" -v iid="$IID" '{
		body = $3; gsub(/"/, "\\\"", body)
		if (NR > 1) print "next"
		printf "url = \"%s%s\"\nrequest = \"%s\"\n", url, $2, $1
		printf "header = \"Authorization: Bearer %s\"\nheader = \"Bluemix-Instance: %s\"\n", tok, iid
		print "header = \"Content-Type: application/json\""
		if (body != "-") printf "data-binary = \"%s\"\n", body
		print "write-out = \"\\n=>%{http_code}\\n\""
	}' "$2" >"$2.conf"
	curl -sS --max-time 300 -K "$2.conf" 2>/dev/null |
		awk '/^=>/ { print substr($0, 3), (b == "" ? "-" : b); b = ""; next } $0 != "" { b = $0 }' >"$2.out" || true
}
awk "$AWK_UUID"'$1 == "create" && $3 == 201 && uuid($6) { print $6 }' "$T_DIR/all.log" | sort -u >"$T_DIR/acked"
nacked=$(wc -l <"$T_DIR/acked")
[ "$nacked" -gt 0 ] || fail "no create was acknowledged"
awk '{ printf "GET /api/v2/keys/%s -\n", $1 }' "$T_DIR/acked" >"$T_DIR/get.in"
# wrapped: "KEYID CIPHERTEXT PLAINTEXT" of every wrap acknowledged
awk '$1 == "wrap" && $3 == 200 && $8 != "-" { print $6, $8, $7 }' "$T_DIR/all.log" >"$T_DIR/wrapped"
nwrapped=$(wc -l <"$T_DIR/wrapped")
awk '{ printf "POST /api/v2/keys/%s/actions/unwrap {\"ciphertext\":\"%s\"}\n", $1, $2 }' "$T_DIR/wrapped" >"$T_DIR/unwrap.in"
for n in 1 2; do
	cp "$T_DIR/get.in" "$T_DIR/get$n.in"
	batch "$n" "$T_DIR/get$n.in"
	expect_eq "all $nacked acknowledged creates are there through unit $n (GET: 200, same id)" \
		"$(cut -d' ' -f2- "$T_DIR/get$n.in.out" | jq -r '.resources[0].id // "none"' 2>/dev/null |
			paste -d' ' <(cut -d' ' -f1 "$T_DIR/get$n.in.out") - | paste -d' ' - "$T_DIR/acked" |
			awk '$1 == 200 && $2 == $3' | wc -l)" "$nacked"
	cp "$T_DIR/unwrap.in" "$T_DIR/unwrap$n.in"
	batch "$n" "$T_DIR/unwrap$n.in"
	expect_eq "all $nwrapped acknowledged wraps unwrap to their plaintext through unit $n" \
		"$(cut -d' ' -f2- "$T_DIR/unwrap$n.in.out" | jq -r '.plaintext // "none"' 2>/dev/null |
			paste -d' ' <(cut -d' ' -f1 "$T_DIR/unwrap$n.in.out") - |
			paste -d' ' - <(cut -d' ' -f3 "$T_DIR/wrapped") | awk '$1 == 200 && $2 == $3' | wc -l)" \
		"$nwrapped"
done
expect_eq "key storage holds every acknowledged key" \
	"$(store_query "SELECT id FROM keys" | sort | comm -23 "$T_DIR/acked" - | wc -l)" 0

# ---- clients recover: new work on both units after the restarts ----------------------------
C=0
rb="" st=""
for n in 1 2; do
	m=$((3 - n))
	req "$n" POST /api/v2/keys "$(printf '{"metadata":{"collectionType":"%s","collectionTotal":1},"resources":[{"type":"%s","name":"after-%s","extractable":false}]}' "$KT" "$KT" "$n")"
	id=$(field id)
	if [ "$st" = 201 ] && [[ $id =~ $UUID_RE ]]; then pass "after the restarts: unit $n creates a key"; else fail "after the restarts: create on unit $n: $st $rb"; continue; fi
	pt=$(head -c 24 /dev/urandom | base64)
	req "$n" POST "/api/v2/keys/$id/actions/wrap" "{\"plaintext\":\"$pt\"}"
	ct=$(field ciphertext)
	expect_eq "after the restarts: unit $n wraps" "$st" 200
	for k in $n $m; do
		req "$k" POST "/api/v2/keys/$id/actions/unwrap" "{\"ciphertext\":\"$ct\"}"
		expect_eq "after the restarts: unit $k unwraps what unit $n wrapped" "$st $(field plaintext)" "200 $pt"
	done
done
ready_is "after the restarts" 1 200
ready_is "after the restarts" 2 200
echo "time: $SECONDS s in all"
finish
