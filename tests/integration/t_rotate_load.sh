#!/usr/bin/env bash
# Clients wrapping, unwrapping, creating and rotating keys against both units of an instance
# while 'kyok tke cryptounit-mk-rotate --yes' re-enciphers key storage and changes the master
# key: every request answered 2xx, every unwrap gives back its plaintext, and afterwards every
# key created during the run is readable and every ciphertext (made before or during the
# rotation) unwraps, on both units. The units re-encipher in small batches with a pause
# (reencipher_batch, reencipher_pause_ms) so that the rotation lasts a few seconds.
. "$(dirname "$0")/helpers.sh"
setup

NBASE=${KYOK_LOAD_KEYS:-1500} # keys made before the rotation
CLIENTS=2                     # per unit
BATCH=60                      # requests a client sends over one connection
PAR=4

pwf() {
	local n
	for n in "$@"; do printf -- '--password-file\n%s\n' "$T_DIR/pw/$n"; done
}
AK="$KYOK_TKE_FILES/apikeys"
IID=""
TOK=""
KT="application/vnd.ibm.kms.key+json"

# reqs_conf N: "METHOD PATH BODY" lines (BODY without spaces, "-" for none) on stdin -> a curl
# config sending them to unit N over one connection; each reply followed by "=>STATUS".
reqs_conf() {
	awk -v url="$(unit_url "$1")" -v tok="$TOK" -v iid="$IID" '{
		body = $3; gsub(/"/, "\\\"", body)
		if (NR > 1) print "next"
		printf "url = \"%s%s\"\nrequest = \"%s\"\n", url, $2, $1
		printf "header = \"Authorization: Bearer %s\"\nheader = \"Bluemix-Instance: %s\"\n", tok, iid
		print "header = \"Content-Type: application/json\""
		print "header = \"Prefer: return=representation\""
		if (body != "-") printf "data-binary = \"%s\"\n", body
		print "write-out = \"=>%{http_code}\\n\""
	}'
}
# replies FILE: the curl output FILE as "STATUS BODY" lines ("-" for an empty body).
replies() { awk '/^=>/ {print substr($0, 3), (b == "" ? "-" : b); b = ""; next} {b = $0}' "$1"; }
# reqs N IN OUT: the requests of IN to unit N over $PAR connections; "STATUS BODY" in OUT, in
# IN's order.
reqs() {
	local n=$1 in=$2 out=$3 f pids=()
	rm -f "$in".p.*
	split -n "l/$PAR" -d "$in" "$in.p."
	for f in "$in".p.*; do
		reqs_conf "$n" <"$f" >"$f.conf"
		curl -sS --max-time 120 -K "$f.conf" >"$f.out" 2>/dev/null &
		pids+=($!)
	done
	wait "${pids[@]}" || true
	for f in "$in".p.??; do replies "$f.out"; done >"$out"
	rm -f "$in".p.*
}
create_line() {
	printf 'POST /api/v2/keys {"metadata":{"collectionType":"%s","collectionTotal":1},"resources":[{"type":"%s","name":"%s","extractable":false}]}\n' \
		"$KT" "$KT" "$1"
}
# unwrap_check N FILE: every "ID CIPHERTEXT PLAINTEXT" line of FILE through unit N; prints
# how many did not give back their plaintext.
unwrap_check() {
	awk '{printf "POST /api/v2/keys/%s/actions/unwrap {\"ciphertext\":\"%s\"}\n", $1, $2}' "$2" >"$T_DIR/uw.in"
	reqs "$1" "$T_DIR/uw.in" "$T_DIR/uw.out"
	cut -d' ' -f2- "$T_DIR/uw.out" | jq -r '.plaintext // "failed"' >"$T_DIR/uw.got" 2>/dev/null
	awk '{print $3}' "$2" | diff - "$T_DIR/uw.got" | grep -c '^[<>]' || true
}

# ---- the client ----------------------------------------------------------------------------

# client NAME N: until $T_DIR/stop exists, batches of random requests to unit N over one
# connection each: 40% unwrap of a ciphertext made before the rotation, 30% wrap (a new data
# key), 25% create, 5% rotate a root key. Keeps each batch ("METHOD PATH BODY OP KEY WANT")
# and curl's output in $T_DIR/c/NAME.B.batch and .out, for client_log.
client() {
	local name=$1 n=$2 b=0 seed f start
	while [ ! -f "$T_DIR/stop" ]; do
		b=$((b + 1))
		f="$T_DIR/c/$name.$b"
		seed=$((RANDOM * 32768 + RANDOM))
		awk -v seed="$seed" -v nreq="$BATCH" -v pfx="$name-$b" -v kt="$KT" '
			{id[NR] = $1; ct[NR] = $2; pt[NR] = $3; n = NR}
			END {
				srand(seed)
				for (i = 1; i <= nreq; i++) {
					r = rand(); k = 1 + int(rand() * n)
					if (r < 0.40)
						printf "POST /api/v2/keys/%s/actions/unwrap {\"ciphertext\":\"%s\"} unwrap %s %s\n", id[k], ct[k], id[k], pt[k]
					else if (r < 0.70)
						printf "POST /api/v2/keys/%s/actions/wrap {} wrap %s -\n", id[k], id[k]
					else if (r < 0.95)
						printf "POST /api/v2/keys {\"metadata\":{\"collectionType\":\"%s\",\"collectionTotal\":1},\"resources\":[{\"type\":\"%s\",\"name\":\"%s-%d\",\"extractable\":false}]} create %s-%d -\n", kt, kt, pfx, i, pfx, i
					else
						printf "POST /api/v2/keys/%s/actions/rotate {} rotate %s -\n", id[k], id[k]
				}
			}' "$T_DIR/wrapped" >"$f.batch"
		cut -d' ' -f1-3 "$f.batch" | reqs_conf "$n" >"$f.conf"
		start=$(date +%s.%N)
		curl -sS --max-time 60 -K "$f.conf" >"$f.out" 2>/dev/null || true
		echo "$start $(date +%s.%N)" >"$f.time"
	done
}
# client_log NAME: one line per request the client sent, "STATUS OP KEY CHECK START END BODY":
# CHECK is same / DIFFERENT for unwraps (the plaintext that came back), - otherwise; START and
# END the times its batch began and ended. A request without a reply has status 000.
client_log() {
	local f b=1
	while [ -f "$T_DIR/c/$1.$b.batch" ]; do
		f="$T_DIR/c/$1.$b"
		b=$((b + 1))
		[ -f "$f.time" ] || continue # cut short by the stop
		replies "$f.out" | awk -v se="$(cat "$f.time")" '
			NR == FNR {op[NR] = $4; key[NR] = $5; want[NR] = $6; n = NR; next}
			{
				st = $1; body = substr($0, length($1) + 2); chk = "-"
				if (op[FNR] == "unwrap") {
					got = ""
					if (match(body, /"plaintext":"[^"]*"/)) got = substr(body, RSTART + 13, RLENGTH - 14)
					chk = (got == want[FNR]) ? "same" : "DIFFERENT"
				}
				print st, op[FNR], key[FNR], chk, se, body
				seen = FNR
			}
			END {for (i = seen + 1; i <= n; i++) print "000", op[i], key[i], "-", se, "-"}' "$f.batch" -
	done
}

# ---- an initialised instance, keys and ciphertexts -----------------------------------------
"$KYOK" up --units 2 >/dev/null 2>&1
"$KYOK" down >/dev/null 2>&1
for n in 1 2; do
	printf 'reencipher_batch = 50\nreencipher_pause_ms = 80\nkey_limit = 1000000\n' >>"$KYOK_INSTANCE/unit-$n/unit.conf"
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

for i in $(seq "$NBASE"); do create_line "base-$i"; done >"$T_DIR/create.in"
reqs 1 "$T_DIR/create.in" "$T_DIR/create.out"
awk '$1 == 201' "$T_DIR/create.out" | cut -d' ' -f2- | jq -r '.resources[0].id' >"$T_DIR/ids"
awk '{printf "POST /api/v2/keys/%s/actions/wrap {}\n", $1}' "$T_DIR/ids" >"$T_DIR/wrap.in"
reqs 2 "$T_DIR/wrap.in" "$T_DIR/wrap.out"
cut -d' ' -f2- "$T_DIR/wrap.out" | jq -r '"\(.ciphertext) \(.plaintext)"' | paste -d' ' "$T_DIR/ids" - >"$T_DIR/wrapped"
expect_eq "$NBASE keys, a data key wrapped under each" \
	"$(grep -cE '^[0-9a-f-]{36} [A-Za-z0-9+/=]{40,} [A-Za-z0-9+/=]{44}$' "$T_DIR/wrapped")" "$NBASE"

# A new master key, committed on both units.
"$KYOK" tke mk-add --random --description a --password-file "$(newpw p1)" >/dev/null 2>&1
"$KYOK" tke mk-add --random --description b --password-file "$(newpw p2)" >/dev/null 2>&1
"$KYOK" tke sigkey-sel --sigkeys 1,2 >/dev/null 2>&1
expect_ok "mk-load" "$KYOK" tke cryptounit-mk-load --parts 1,2 $(pwf p1 p2 ann ben)
"$KYOK" tke sigkey-sel --sigkeys 1 >/dev/null 2>&1
expect_ok "mk-commit" "$KYOK" tke cryptounit-mk-commit $(pwf ann)
OLD=$(unit_state 1 | jq -r .current_mk.vp)
NEW=$(unit_state 1 | jq -r .new_mk.vp)
RECORDS=$(unit_state 1 | jq -r .storage.records_under_current)

# ---- the rotation under load ---------------------------------------------------------------
mkdir -p "$T_DIR/c"
names=()
pids=()
for n in 1 2; do
	for c in $(seq "$CLIENTS"); do
		names+=("u$n-c$c")
		client "u$n-c$c" "$n" &
		pids+=($!)
	done
done
sleep 1
t0=$(date +%s.%N)
rc=0
out=$("$KYOK" tke cryptounit-mk-rotate --yes $(pwf ann) 2>&1) || rc=$?
t1=$(date +%s.%N)
sleep 1
touch "$T_DIR/stop"
wait "${pids[@]}" || true
for c in "${names[@]}"; do client_log "$c" >"$T_DIR/$c.log"; done
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
if [ $rc -eq 0 ] && grep -q 'is current on 2 of 2 crypto units' <<<"$out"; then
	pass "cryptounit-mk-rotate under load: $RECORDS records re-enciphered, new key current on both units in $secs s"
else
	fail "cryptounit-mk-rotate under load: exit $rc: $out"
fi
for n in 1 2; do
	expect_eq "unit $n: the new key is current, new register EMPTY" \
		"$(unit_state "$n" | jq -r '"\(.current_mk.vp) \(.new_mk.state)"')" "$NEW EMPTY"
done

# ---- what the clients saw ------------------------------------------------------------------
cat "$T_DIR"/u*-c*.log >"$T_DIR/all.log"
total=$(wc -l <"$T_DIR/all.log")
# Requests in batches that overlap the rotation (a batch takes a fraction of a second).
during=$(awk -v a="$t0" -v b="$t1" '$5 <= b && $6 >= a' "$T_DIR/all.log" | wc -l)
bad=$(awk '$1 !~ /^2[0-9][0-9]$/' "$T_DIR/all.log" | wc -l)
# ops FILE...: "N op, N op, ..." of the client logs FILE.
ops() { cat "$@" | awk '{n[$2]++} END {s = ""; for (o in n) s = s sprintf("%s%d %s", s == "" ? "" : ", ", n[o], o); print s}'; }
if [ "$bad" -eq 0 ] && [ "$during" -gt 0 ]; then
	pass "$total requests ($(ops "$T_DIR/all.log"); $during of them while the rotation ran), every one answered 2xx"
else
	fail "$bad of $total requests not 2xx ($during during the rotation): $(awk '$1 !~ /^2/ {print $1, $2, $7, $8, $9, $10}' "$T_DIR/all.log" | cut -c1-200 | sort | uniq -c | head -5)"
fi
for n in 1 2; do echo "     unit $n: $(ops "$T_DIR"/u$n-c*.log)"; done
expect_eq "every unwrap during the run gave back its plaintext" \
	"$(awk '$2 == "unwrap" && $4 != "same"' "$T_DIR/all.log" | wc -l)" 0

# Keys created during the run: readable on both units.
awk '$2 == "create" && $1 == 201 {print $7}' "$T_DIR/all.log" | jq -r '.resources[0].id' >"$T_DIR/new-ids"
ncreated=$(wc -l <"$T_DIR/new-ids")
for n in 1 2; do
	awk '{printf "GET /api/v2/keys/%s -\n", $1}' "$T_DIR/new-ids" >"$T_DIR/get.in"
	reqs "$n" "$T_DIR/get.in" "$T_DIR/get.out"
	expect_eq "unit $n: all $ncreated keys created during the run are readable" \
		"$(awk '$1 == 200' "$T_DIR/get.out" | cut -d' ' -f2- | jq -r '.resources[0].id' | diff - "$T_DIR/new-ids" | grep -c '^[<>]' || true)" 0
done
expect_eq "key total: $NBASE + $ncreated" "$(curl -sS -I -H "Authorization: Bearer $TOK" \
	-H "Bluemix-Instance: $IID" "$(unit_url 2)/api/v2/keys" | tr -d '\r' |
	awk -F': ' 'tolower($1) == "key-total" {print $2}')" $((NBASE + ncreated))

# Every ciphertext: those made before and those wrapped during the rotation.
awk '$2 == "wrap" && $1 == 200 {print $3, $7}' "$T_DIR/all.log" | awk '{
	ct = pt = ""
	if (match($2, /"ciphertext":"[^"]*"/)) ct = substr($2, RSTART + 14, RLENGTH - 15)
	if (match($2, /"plaintext":"[^"]*"/)) pt = substr($2, RSTART + 13, RLENGTH - 14)
	print $1, ct, pt
}' >"$T_DIR/wrapped-during"
nwrapped=$(wc -l <"$T_DIR/wrapped-during")
cat "$T_DIR/wrapped" "$T_DIR/wrapped-during" >"$T_DIR/all-wrapped"
for n in 1 2; do
	expect_eq "unit $n: all $NBASE + $nwrapped ciphertexts unwrap to their plaintext" \
		"$(unwrap_check "$n" "$T_DIR/all-wrapped")" 0
done
expect_eq "no record left under the old master key" \
	"$(unit_state 1 | jq -r .storage.records_under_current)" \
	"$((RECORDS + ncreated))"
if [ "$OLD" != "$NEW" ]; then pass "vp changed"; else fail "vp did not change"; fi
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
