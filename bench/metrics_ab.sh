#!/usr/bin/env bash
# What request counting for GET /metrics costs an unwrap: an A/B in one run.
#
#   bench/metrics_ab.sh [BUILD_DIR]        (default: build)
#
# One local instance of 2 units on one key storage, the same binary: unit 1 counts requests
# ('metrics = 1', the default), unit 2 does not ('metrics = 0'). wrk (2 threads, 64
# keep-alive connections) unwraps the same ciphertext on each, in alternating rounds (A B B A
# ...; 2 s each after a warm-up of both), so that load from elsewhere weighs on both alike.
# Printed per side: unwraps a second, and the unit's CPU time per unwrap (user + system, from
# /proc: less sensitive to other work than the rate); then the ratios A/B. AB_SWAP=1 gives
# unit 2 the counting and unit 1 none (a difference between the units themselves then shows
# as the opposite ratio).
#
# Everything it starts is stopped at exit; the password, API key and token live in a temp dir
# (0700) removed at exit and reach curl and wrk through files, never through argv.
set -euo pipefail
. "$(dirname "$0")/instance.sh"

BUILD=${1:-build}
ROUNDS=${AB_ROUNDS:-10} # each round: one slice per side
SLICE=${AB_SLICE:-2s}
WRK_THREADS=2
WRK_CONNS=64

for t in wrk curl jq awk; do
	command -v "$t" >/dev/null 2>&1 || {
		echo "error: $t is missing: 'scripts/deps.sh bench' installs it" >&2
		exit 1
	}
done
KYOK=$(realpath "$BUILD/cli/kyok")
export KYOK_UNITD
KYOK_UNITD=$(realpath "$BUILD/unitd/kyok-unitd")

T=$(mktemp -d "${TMPDIR:-/tmp}/kyok-ab.XXXXXX")
chmod 700 "$T"
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[ -f "$T/inst/instance.json" ] && "$KYOK" down --instance "$T/inst" >/dev/null 2>&1 || true
	if [ $rc -ne 0 ] && [ -f "$T/setup.log" ]; then
		tail -n 30 "$T/setup.log" >&2 || true
	fi
	rm -rf "$T"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
export HOME="$T/home" KYOK_TKE_FILES="$T/ws" KYOK_INSTANCE="$T/inst"
mkdir -p "$HOME" "$T/pw" "$T/http"
chmod 700 "$T/pw" "$T/http"

{
	head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$T/pw/admin"
	chmod 600 "$T/pw/admin"
	"$KYOK" up --units 2
	"$KYOK" down
	on=1 off=2
	[ "${AB_SWAP:-0}" = 1 ] && on=2 off=1
	printf 'metrics = 1\nmax_connections_per_client = %d\n' $((2 * WRK_CONNS)) \
		>>"$KYOK_INSTANCE/unit-$on/unit.conf"
	printf 'metrics = 0\nmax_connections_per_client = %d\n' $((2 * WRK_CONNS)) \
		>>"$KYOK_INSTANCE/unit-$off/unit.conf"
	"$KYOK" up
	"$KYOK" tke cryptounit-add --units 1,2
	"$KYOK" tke auto-init --signature 1 --revocation 1 --new-admins bench-admin \
		--password-file "$T/pw/admin"
	"$KYOK" tke sigkey-sel --sigkeys 1
	"$KYOK" tke apikey-create --name bench --role Writer --password-file "$T/pw/admin" \
		--out "$T/http/bench.apikey"
} >"$T/setup.log" 2>&1
URL1=$(jq -r '.units[0].url' "$KYOK_INSTANCE/instance.json")
URL2=$(jq -r '.units[1].url' "$KYOK_INSTANCE/instance.json")
INSTANCE=$(jq -r .instance "$KYOK_INSTANCE/instance.json")
PID1=$(cat "$KYOK_INSTANCE/unit-1/pid")
PID2=$(cat "$KYOK_INSTANCE/unit-2/pid")
AU=1
if [ "${AB_SWAP:-0}" = 1 ]; then # A is always the side that counts
	t=$URL1 URL1=$URL2 URL2=$t t=$PID1 PID1=$PID2 PID2=$t AU=2
fi

bench_token "$T/http" "$URL1" "$INSTANCE"
CT_KEY='application/vnd.ibm.kms.key+json'
CT_ACTION='application/vnd.ibm.kms.key_action+json'
CREATE='{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"type":"application/vnd.ibm.kms.key+json","name":"ab-key","extractable":false}]}'
KID=$(curl -fsS -X POST -H "@$T/http/headers" -H "Content-Type: $CT_KEY" --data-binary "$CREATE" \
	"$URL1/api/v2/keys" | jq -r '.resources[0].id')
CT=$(curl -fsS -X POST -H "@$T/http/headers" -H "Content-Type: $CT_ACTION" --data-binary '{}' \
	"$URL1/api/v2/keys/$KID/actions/wrap" | jq -r .ciphertext)
BODY=$(jq -cn --arg c "$CT" '{ciphertext: $c}')
for u in "$URL1" "$URL2"; do
	curl -fsS -o /dev/null -X POST -H "@$T/http/headers" -H "Content-Type: $CT_ACTION" \
		--data-binary "$BODY" "$u/api/v2/keys/$KID/actions/unwrap" || {
		echo "error: unwrap on $u fails" >&2
		exit 1
	}
done
if curl -fsS "$URL2/metrics" | grep -q '^kyok_http_requests_total'; then
	echo "error: side B counts requests although its unit.conf says metrics = 0" >&2
	exit 1
fi
curl -fsS "$URL1/metrics" | grep -q '^kyok_http_requests_total' || {
	echo "error: side A does not count requests" >&2
	exit 1
}
{
	echo 'wrk.method = "POST"'
	printf 'wrk.body = %s\n' "$(jq -Rn --arg b "$BODY" '$b')"
	printf 'wrk.headers["Authorization"] = "Bearer %s"\n' "$(cat "$T/http/token")"
	printf 'wrk.headers["Bluemix-Instance"] = "%s"\n' "$INSTANCE"
	printf 'wrk.headers["Content-Type"] = "%s"\n' "$CT_ACTION"
	cat <<'EOF'
done = function(summary, latency, requests)
	io.write(string.format("WRK %d %d %d\n", summary.requests, summary.duration,
		summary.errors.status + summary.errors.connect + summary.errors.read +
		summary.errors.write + summary.errors.timeout))
end
EOF
} >"$T/http/unwrap.lua"
P="/api/v2/keys/$KID/actions/unwrap"

proc_cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# slice SIDE URL PID: one measured run; appends "SIDE requests duration_us errors cpu_ticks".
slice() {
	local c0 c1
	c0=$(proc_cpu "$3")
	wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$SLICE" -s "$T/http/unwrap.lua" "$2$P" >"$T/wrk.out"
	c1=$(proc_cpu "$3")
	echo "$1 $(grep '^WRK ' "$T/wrk.out" | cut -d' ' -f2-4) $((c1 - c0))" >>"$T/runs"
}
echo "kyok metrics A/B: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "A: unit $AU (metrics = 1) at $URL1; B: unit $((3 - AU)) (metrics = 0) at $URL2; unwrap, $ROUNDS rounds of $SLICE a side"
wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d1s -s "$T/http/unwrap.lua" "$URL1$P" >/dev/null
wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d1s -s "$T/http/unwrap.lua" "$URL2$P" >/dev/null
: >"$T/runs"
for r in $(seq 1 "$ROUNDS"); do
	if [ $((r % 2)) -eq 1 ]; then
		slice A "$URL1" "$PID1"
		slice B "$URL2" "$PID2"
	else
		slice B "$URL2" "$PID2"
		slice A "$URL1" "$PID1"
	fi
done
TICK=$(getconf CLK_TCK)
awk -v tick="$TICK" '
	{ n[$1] += $2; us[$1] += $3; err[$1] += $4; cpu[$1] += $5; rate[$1, ++k[$1]] = $2 * 1e6 / $3 }
	END {
		for (s = 0; s < 2; s++) {
			side = s == 0 ? "A" : "B"
			r = n[side] * 1e6 / us[side]
			c = cpu[side] * 1e6 / tick / n[side]
			line = ""
			for (i = 1; i <= k[side]; i++) line = line sprintf(" %.0f", rate[side, i])
			printf "%s (%s): %.0f unwraps/s (slices:%s), %.1f us CPU/unwrap, %d errors\n",
				side, side == "A" ? "metrics on" : "metrics off", r, line, c, err[side]
			R[side] = r; C[side] = c
		}
		printf "ratio A/B: throughput %.3f, CPU per unwrap %.3f\n", R["A"] / R["B"], C["A"] / C["B"]
	}' "$T/runs"
