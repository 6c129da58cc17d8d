#!/usr/bin/env bash
# What one client can cost a crypto unit is bounded.
#  - Connections: a client holding 2,000 idle connections gets at most max_connections_per_client
#    (64) of them; the others are closed at once, and another client's requests all succeed
#    meanwhile (its p99 latency is printed, never asserted).
#  - A request body that trickles in is cut off body_timeout seconds after its headers.
#  - Signed command bombs built with openssl and posted with curl (1,000 certificates, 9,500
#    SignerInfos, one valid signature copied 3,000 times, 20,000 digest algorithms, a
#    signature twice) are each refused with their own error before any signature is checked,
#    and change nothing (the time each took is printed, never asserted).
. "$(dirname "$0")/helpers.sh"
setup

HOLD="$KYOK_BUILD/tests/conn_hold"
SPLICE="$(dirname "$0")/cms_splice.pl"
PER_CLIENT=64

"$KYOK" up >/dev/null
"$KYOK" down >/dev/null
# Idle connections stay open for the whole test: whatever closes the holder's connections is
# the limit per client, not the idle timeout. Bodies get 2 seconds.
for n in 1 2; do
	printf 'idle_timeout = 3600\nbody_timeout = 2\n' >>"$KYOK_INSTANCE/unit-$n/unit.conf"
done
"$KYOK" up >/dev/null
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null
"$KYOK" tke sigkey-add --name alice --password-file "$(newpw alice)" >/dev/null
"$KYOK" tke cryptounit-admin-add --sigkey 1 >/dev/null
URL=$(unit_url 1)
PORT=${URL##*:}
C=$T_DIR/c
mkdir -p "$C"

# p99 of the numbers on stdin (seconds) in milliseconds.
p99_ms() { sort -n | awk '{v[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.1f", v[i]*1000}'; }

# ---- 2,000 idle connections from one client ----------------------------------------------
# The holder connects from 127.0.0.2; the other client (curl, the CLI) from 127.0.0.1.
coproc HOLDER { "$HOLD" hold 127.0.0.1 "$PORT" 127.0.0.2 2000 "$PER_CLIENT"; }
HOLDER_IN=${HOLDER[1]}
HOLDER_OUT=${HOLDER[0]}
hold_pid=$HOLDER_PID
read -r line <&"$HOLDER_OUT" || line="holder ended without a word"
case $line in
ready*)
	open=$(sed 's/.*open=\([0-9]*\).*/\1/' <<<"$line")
	pass "2,000 idle connections from one client: $line"
	expect_eq "the holder keeps at most $PER_CLIENT connections" \
		"$([ "$open" -le "$PER_CLIENT" ] && echo yes || echo "no ($open)")" yes
	;;
*) fail "2,000 idle connections from one client: the extra ones were not closed: $line" ;;
esac

ok=0
: >"$C/times"
for i in $(seq 1 200); do
	if r=$(curl -sS -o /dev/null -w '%{http_code} %{time_total}' "$URL/v1/health"); then
		[ "${r%% *}" = 200 ] && ok=$((ok + 1))
		echo "${r#* }" >>"$C/times"
	fi
done
expect_eq "another client's 200 requests while the connections are held" "$ok" 200
echo "info: the other client's p99 latency while 2,000 connections were tried and $PER_CLIENT held: $(p99_ms <"$C/times") ms"
expect_ok "the CLI reaches the unit while the connections are held" "$KYOK" tke cryptounits
echo >&"$HOLDER_IN"
read -r line <&"$HOLDER_OUT" || line="holder ended without a word"
open=${line#open=}
expect_eq "after the other client's requests the holder still has at most $PER_CLIENT" \
	"$([ "$open" -le "$PER_CLIENT" ] 2>/dev/null && echo yes || echo "no ($line)")" yes
eval "exec $HOLDER_IN>&-"
wait "$hold_pid" || fail "the holder failed"
n=$(grep -c "http: .*connection limit" "$KYOK_INSTANCE/unit-1/unit.log" || true)
expect_eq "the unit logged refused connections, at most 20 lines a second ($n lines)" \
	"$([ "$n" -ge 1 ] && [ "$n" -lt 1936 ] && echo yes || echo no)" yes

# ---- a body that trickles in ---------------------------------------------------------------
if out=$("$HOLD" drip 127.0.0.1 "$PORT" /v1/admin/command); then
	pass "a command body sent one byte at a time is cut off ($out)"
else
	fail "a command body sent one byte at a time was not cut off: $out"
fi
grep -q "http: connection from 127.0.0.1 closed: request body not complete 2 s after its headers" \
	"$KYOK_INSTANCE/unit-1/unit.log" &&
	pass "the unit logged the slow body" || fail "no word in the unit log about the slow body"

# ---- signed command bombs ------------------------------------------------------------------
cmd_json 1 thresholds-set '{"signature": 1, "revocation": 1}' >"$C/t.json"
sign_cmd "$C/t.json" "$C/t.der" alice
k=$(plain_key alice)
# The same command signed without signed attributes: a smaller SignerInfo, so that 3,000
# copies of it fit in a body.
openssl cms -sign -binary -nodetach -md sha512 -keyid -noattr -nocerts -in "$C/t.json" \
	-signer "${k%.key}.crt" -inkey "$k" -outform DER -out "$C/noattr.der"
openssl cms -verify -noverify -binary -inform DER -in "$C/noattr.der" -certfile "${k%.key}.crt" \
	-out /dev/null 2>/dev/null || fail "the signature to copy does not verify"

bomb() { # bomb DESC SLUG BASE WHAT N
	local desc=$1 slug=$2 base=$3 what=$4 n=$5 f t
	f="$C/bomb-$what.der"
	perl "$SPLICE" "$base" "$f" "$what" "$n"
	t=$(curl -sS -o /dev/null -w '%{time_total}' -X POST -H 'Content-Type: application/octet-stream' \
		--data-binary "@$f" "$URL/v1/admin/command")
	echo "info: $desc ($(stat -c %s "$f") bytes): answered in $(awk -v t="$t" 'BEGIN{printf "%.1f", t*1000}') ms"
	expect_refused "$desc" "$slug" 1 "$f"
}
bomb "1,000 certificates" too-many-certificates "$C/t.der" certs 1000
bomb "9,500 SignerInfos" too-many-signatures "$C/t.der" signers 9500
bomb "one valid signature copied 3,000 times" too-many-signatures "$C/noattr.der" copies 3000
bomb "20,000 digest algorithms" too-many-digest-algorithms "$C/t.der" digests 20000
bomb "a valid signature twice" duplicate-signature "$C/t.der" copies 2
bomb "nine SignerInfos" too-many-signatures "$C/t.der" signers 9

# Four bombs at once: the unit's load balancer health stays prompt (printed, not asserted).
for w in certs signers copies digests; do
	curl -sS -o /dev/null -X POST -H 'Content-Type: application/octet-stream' \
		--data-binary "@$C/bomb-$w.der" "$URL/v1/admin/command" &
done
t=$(curl -sS -o /dev/null -w '%{time_total}' "$URL/health")
wait
echo "info: /health answered in $(awk -v t="$t" 'BEGIN{printf "%.1f", t*1000}') ms with four bombs posted at once"

# The limits are bounds, not a block: the same command, signed once, runs.
expect_accepted "the command itself, signed once, runs" 1 "$C/t.der"
expect_eq "unit 1 out of imprint mode" "$(unit_state 1 | jq -r .imprint)" false

# ---- unit.conf values are checked -------------------------------------------------------------
cp "$KYOK_INSTANCE/unit-2/unit.conf" "$C/bad.conf"
printf 'max_connections_per_client = -1\n' >>"$C/bad.conf"
expect_fail "a negative max_connections_per_client is refused" \
	"bad value for 'max_connections_per_client'" "$UNITD" --config "$C/bad.conf"
cp "$KYOK_INSTANCE/unit-2/unit.conf" "$C/bad.conf"
printf 'max_connections = 0\n' >>"$C/bad.conf"
expect_fail "max_connections 0 is refused" "bad value for 'max_connections'" \
	"$UNITD" --config "$C/bad.conf"
for v in 0 257; do
	cp "$KYOK_INSTANCE/unit-2/unit.conf" "$C/bad.conf"
	printf 'threads = %s\n' "$v" >>"$C/bad.conf"
	expect_fail "threads = $v is refused (1 to 256)" "bad value for 'threads'" \
		"$UNITD" --config "$C/bad.conf"
done

# Units stopped cleanly: a sanitizer build reports what it found in their logs.
"$KYOK" down >/dev/null 2>&1 || true
if grep -hE -m3 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$KYOK_INSTANCE"/unit-*/unit.log; then
	fail "a unit's log has a sanitizer report"
else
	pass "units stopped, no sanitizer report in their logs"
fi
finish
