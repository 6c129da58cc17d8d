#!/usr/bin/env bash
# make bench, the PostgreSQL part: key storage in PostgreSQL against SQLite, over HTTP.
#
#   bench/pg.sh [BUILD_DIR]        (default: build; 'make bench' runs it after bench/run.sh)
#   BENCH_THREADS=N bench/pg.sh    the same with 'threads = N' in both units' unit.conf
#
# Two instances of one unit each, made and initialised alike ('kyok up', 'kyok tke auto-init'):
# one keeps its keys in keys.db (SQLite), the other in a throw-away PostgreSQL cluster
# (tests/pg.sh: a Unix socket in a temp dir; here with fsync on, so that a creation is
# persisted as on a real server, on the same disk as keys.db). Then wrk (2 threads, 64
# keep-alive connections, a 1 s warm-up each):
#   - POST .../actions/unwrap on each, in 5 alternating rounds of 1 s (load from elsewhere
#     weighs on both alike); target: PostgreSQL >= 0.8 x SQLite (median of the rounds'
#     ratios); with each unit's key cache hits and misses meanwhile (kyok_key_cache_*);
#   - on PostgreSQL, unwrap alone and unwrap while 4 more connections create keys, 5
#     alternating rounds of 1 s, with the key cache's hits and misses meanwhile (a creation
#     must not close the key being unwrapped);
#   - POST /api/v2/keys (persisted creations) on each, 5 alternating rounds of 1 s; target:
#     PostgreSQL >= 1,000/s.
# Before each part it prints the load average and how busy the CPUs were during one idle
# second (work that is not the benchmark's).
#
# Without PostgreSQL's server programs (Debian package postgresql; 'scripts/deps.sh bench'
# installs it) it says so and exits 0: this part is optional. The exit status says whether the
# benchmark ran, not whether the targets were met. Everything it starts is stopped at exit;
# passwords, API keys and tokens live in a temp dir (0700) removed at exit, and reach curl and
# wrk through files, never through argv.
set -euo pipefail

BUILD=${1:-build}
SRC=$(cd "$(dirname "$0")/.." && pwd)
KYOK="$BUILD/cli/kyok"
export KYOK_UNITD="$BUILD/unitd/kyok-unitd"

WRK_THREADS=2
WRK_CONNS=64
WRK_WARMUP=1s
ROUNDS=5
SLICE=1s

. "$SRC/tests/pg.sh"
. "$SRC/bench/instance.sh"
if ! pg_available; then
	echo "PostgreSQL part skipped: PostgreSQL's server programs are not installed" \
		"('scripts/deps.sh bench' installs the Debian package postgresql)"
	exit 0
fi
for f in "$KYOK" "$KYOK_UNITD"; do
	if [ ! -x "$f" ]; then
		echo "error: $f is missing: build first ('make bench' does)" >&2
		exit 1
	fi
done
for t in wrk curl jq awk; do
	if ! command -v "$t" >/dev/null 2>&1; then
		echo "error: $t is missing: 'scripts/deps.sh bench' installs it" >&2
		exit 1
	fi
done
KYOK=$(realpath "$KYOK")
KYOK_UNITD=$(realpath "$KYOK_UNITD")

T=$(mktemp -d "${TMPDIR:-/tmp}/kyok-bench-pg.XXXXXX")
chmod 700 "$T"
cleanup() {
	local rc=$? d
	trap - EXIT INT TERM
	for d in "$T"/sqlite "$T"/pg; do
		if [ -f "$d/inst/instance.json" ]; then
			KYOK_INSTANCE="$d/inst" HOME="$d/home" "$KYOK" down >/dev/null 2>&1 || true
		fi
		for p in "$d"/inst/unit-*/pid; do
			[ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
		done
	done
	pg_stop
	if [ $rc -ne 0 ]; then
		for d in "$T"/sqlite "$T"/pg; do
			[ -f "$d/setup.log" ] || continue
			echo "---- setup log of $(basename "$d") ----" >&2
			tail -n 30 "$d/setup.log" >&2 || true
			tail -n 20 "$d"/inst/unit-*/unit.log >&2 2>/dev/null || true
		done
	fi
	rm -rf "$T"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# cpu_busy: percent of the machine's CPU time not idle during the next second.
cpu_busy() {
	local a b
	a=$(head -n 1 /proc/stat)
	sleep 1
	b=$(head -n 1 /proc/stat)
	printf '%s\n%s\n' "$a" "$b" | awk '{
		t = 0; for (i = 2; i <= NF; i++) t += $i
		idle = $5 + $6
		if (NR == 1) { t0 = t; i0 = idle } else printf "%.0f", 100 * (1 - (idle - i0) / (t - t0))
	}'
}
# note_load PART: prints and records the load average, and the CPU use of others, before PART.
note_load() {
	local l busy
	l=$(cut -d' ' -f1-3 /proc/loadavg)
	busy=$(cpu_busy)
	echo "before $1: load average $l, $busy% CPU busy with other work ($(nproc) CPUs)"
	echo "$1 $l $busy" >>"$T/loads"
}

echo "kyok bench, PostgreSQL part: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "         $("$PG_BINDIR/postgres" --version), SQLite $(sqlite3 --version 2>/dev/null | cut -d' ' -f1 || echo '?')"
PG_FSYNC=on pg_start >"$T/pg-start.log" 2>&1 || {
	cat "$T/pg-start.log" >&2
	exit 1
}

# setup NAME [STORE]: instance NAME (dir $T/NAME) of one unit, initialised, an API key of
# role Writer, a root key, one wrapped data key, and wrk scripts for unwrap and creation.
setup() {
	local name=$1 store=${2:-} d="$T/$1" url inst kid ct body conf
	# Room for the keys the creation runs make, and for two runs' connections at once.
	conf=$(printf 'key_limit = 10000000\nmax_connections_per_client = %d\n' $((2 * WRK_CONNS)))
	[ -z "${BENCH_THREADS:-}" ] || conf="$conf"$'\n'"threads = $BENCH_THREADS"
	bench_instance "$d" "$conf"$'\n' "$store"
	url=$BENCH_URL
	inst=$BENCH_INSTANCE
	kid=$(curl -fsS -H "@$d/http/headers" -H "Content-Type: $CT_KEY" \
		--data-binary "$CREATE_BODY" "$url/api/v2/keys" | jq -r '.resources[0].id')
	ct=$(curl -fsS -H "@$d/http/headers" -H "Content-Type: $CT_ACTION" --data-binary '{}' \
		"$url/api/v2/keys/$kid/actions/wrap" | jq -r .ciphertext)
	body=$(jq -cn --arg c "$ct" '{ciphertext: $c}')
	if ! curl -fsS -o /dev/null -H "@$d/http/headers" -H "Content-Type: $CT_ACTION" \
		--data-binary "$body" "$url/api/v2/keys/$kid/actions/unwrap"; then
		echo "error: $name: the unwrap request fails" >&2
		exit 1
	fi
	echo "$url" >"$d/url"
	echo "/api/v2/keys/$kid/actions/unwrap" >"$d/unwrap_path"
	lua_post "$d/unwrap.lua" "$body" "$CT_ACTION" "$d" "$inst"
	lua_post "$d/create.lua" "$CREATE_BODY" "$CT_KEY" "$d" "$inst"
	echo "$name: unit at $url, root key $kid"
}
CT_KEY='application/vnd.ibm.kms.key+json'
CT_ACTION='application/vnd.ibm.kms.key_action+json'
CREATE_BODY='{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"type":"application/vnd.ibm.kms.key+json","name":"bench-key","extractable":false}]}'
# lua_post FILE BODY CONTENT-TYPE DIR INSTANCE: a wrk script that posts BODY and prints one
# line for run_wrk.
lua_post() {
	{
		echo 'wrk.method = "POST"'
		printf 'wrk.body = %s\n' "$(jq -Rn --arg b "$2" '$b')"
		printf 'wrk.headers["Authorization"] = "Bearer %s"\n' "$(cat "$4/http/token")"
		printf 'wrk.headers["Bluemix-Instance"] = "%s"\n' "$5"
		printf 'wrk.headers["Content-Type"] = "%s"\n' "$3"
		cat <<'EOF'
done = function(summary, latency, requests)
	local e = summary.errors
	io.write(string.format("WRK requests=%d duration_us=%d status_errors=%d socket_errors=%d p50_us=%d p99_us=%d\n",
		summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
		latency:percentile(50), latency:percentile(99)))
end
EOF
	} >"$1"
}
# run_wrk NAME KIND SECS: one measured run of KIND (unwrap, create) on instance NAME; appends
#   NAME-KIND rate(2xx/s) ok errors p50_ms p99_ms
# to $T/runs.res and prints it.
run_wrk() {
	local d="$T/$1" lua=create path=/api/v2/keys
	if [ "${2#unwrap}" != "$2" ]; then
		lua=unwrap
		path=$(cat "$d/unwrap_path")
	fi
	wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$3" -s "$d/$lua.lua" "$(cat "$d/url")$path" >"$T/wrk.out"
	grep '^WRK ' "$T/wrk.out" | awk -v name="$1-$2" '{
		for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
		secs = v["duration_us"] / 1e6; ok = v["requests"] - v["status_errors"]
		printf "%s %.1f %d %d %.2f %.2f\n", name, ok / secs, ok,
			v["status_errors"] + v["socket_errors"], v["p50_us"] / 1000, v["p99_us"] / 1000
	}' | tee -a "$T/runs.res" | awk '{
		printf "  %-14s %9.0f/s  p50 %6.2f ms  p99 %7.2f ms%s\n", $1, $2, $5, $6,
			($4 > 0 ? "  ERRORS: " $4 : "")
	}'
}
warm_up() { # warm_up NAME KIND
	local d="$T/$1" path
	path=$([ "$2" = unwrap ] && cat "$d/unwrap_path" || echo /api/v2/keys)
	wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_WARMUP" -s "$d/$2.lua" "$(cat "$d/url")$path" \
		>/dev/null
}
# cache NAME: "hits misses" of the unit's key cache so far.
cache() {
	curl -fsS "$(cat "$T/$1/url")/metrics" | awk '
		$1 == "kyok_key_cache_hits_total" { h = $2 }
		$1 == "kyok_key_cache_misses_total" { m = $2 }
		END { printf "%d %d\n", h, m }'
}

echo "setting up: two instances of one unit (kyok up, kyok tke auto-init, kyok tke apikey-create)"
setup sqlite
setup pg "$KYOK_PG_URI"
echo

echo "== unwrap over HTTP: SQLite and PostgreSQL in $ROUNDS alternating rounds of $SLICE =="
note_load unwrap
warm_up sqlite unwrap
warm_up pg unwrap
read -r sq_h0 sq_m0 < <(cache sqlite)
read -r pg_h0 pg_m0 < <(cache pg)
for ((i = 1; i <= ROUNDS; i++)); do
	run_wrk sqlite unwrap "$SLICE"
	run_wrk pg unwrap "$SLICE"
done
read -r sq_h1 sq_m1 < <(cache sqlite)
read -r pg_h1 pg_m1 < <(cache pg)
echo "cache $((sq_h1 - sq_h0)) $((sq_m1 - sq_m0)) $((pg_h1 - pg_h0)) $((pg_m1 - pg_m0))" >>"$T/runs.res"
echo "  key cache during the rounds: SQLite $((sq_h1 - sq_h0)) hits, $((sq_m1 - sq_m0)) misses;" \
	"PostgreSQL $((pg_h1 - pg_h0)) hits, $((pg_m1 - pg_m0)) misses"
echo

echo "== unwrap on PostgreSQL alone, and while 4 more connections create keys, $ROUNDS alternating rounds of $SLICE =="
note_load unwrap-busy
read -r pg_h0 pg_m0 < <(cache pg)
for ((i = 1; i <= ROUNDS; i++)); do
	run_wrk pg unwrap_alone "$SLICE"
	wrk -t1 -c4 -d"$((${SLICE%s} + 1))s" -s "$T/pg/create.lua" "$(cat "$T/pg/url")/api/v2/keys" \
		>"$T/wrk-busy.out" &
	busy_pid=$!
	run_wrk pg unwrap_busy "$SLICE"
	wait "$busy_pid"
done
read -r pg_h1 pg_m1 < <(cache pg)
echo "busycache $((pg_h1 - pg_h0)) $((pg_m1 - pg_m0))" >>"$T/runs.res"
echo "  key cache during these rounds: $((pg_h1 - pg_h0)) hits, $((pg_m1 - pg_m0)) misses"
echo

echo "== key creation over HTTP (persisted): SQLite and PostgreSQL in $ROUNDS alternating rounds of $SLICE =="
note_load create
warm_up sqlite create
warm_up pg create
for ((i = 1; i <= ROUNDS; i++)); do
	run_wrk sqlite create "$SLICE"
	run_wrk pg create "$SLICE"
done
echo

# Per kind: rate = median over rounds; PostgreSQL against SQLite: median of the rounds' ratios.
awk '
$1 == "cache" { ch = $2; cm = $3; ph = $4; pm = $5; next }
$1 == "busycache" { bh = $2; bm = $3; next }
{ n[$1]++; r[$1, n[$1]] = $2; err[$1] += $4; p50[$1, n[$1]] = $5 }
function med(k, a,   m, i, j, t, v) {
	m = n[k]; for (i = 1; i <= m; i++) v[i] = a[k, i]
	for (i = 2; i <= m; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
	return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
}
function ratio(a, b,   m, i, q) {
	m = n[a]; for (i = 1; i <= m; i++) q[a, i] = r[a, i] / r[b, i]
	return med(a, q)
}
function verdict(ok, errs) { return errs > 0 ? "INVALID (" errs " errors)" : (ok ? "met" : "NOT MET") }
function row(m, v, t, q, vd) { printf "%-40s %-13s %-34s %-7s %s\n", m, v, t, q, vd }
END {
	row("MEASURE", "VALUE", "TARGET / BASELINE", "RATIO", "VERDICT")
	uq = ratio("pg-unwrap", "sqlite-unwrap")
	row("HTTP unwrap, SQLite", sprintf("%.0f/s", med("sqlite-unwrap", r)),
	    sprintf("p50 %.2f ms", med("sqlite-unwrap", p50)), "-", "-")
	row("HTTP unwrap, PostgreSQL", sprintf("%.0f/s", med("pg-unwrap", r)),
	    ">= 0.8 x SQLite (same rounds)", sprintf("%.2f", uq),
	    verdict(uq >= 0.8, err["pg-unwrap"] + err["sqlite-unwrap"]))
	row("  key cache hits / misses, SQLite", ch " / " cm, "-", "-", "-")
	row("  key cache hits / misses, PostgreSQL", ph " / " pm, "-", "-", "-")
	bq = ratio("pg-unwrap_busy", "pg-unwrap_alone")
	row("HTTP unwrap, PostgreSQL, 4 creating", sprintf("%.0f/s", med("pg-unwrap_busy", r)),
	    sprintf("(info) x unwrap alone %.0f/s", med("pg-unwrap_alone", r)), sprintf("%.2f", bq),
	    "-")
	row("  key cache hits / misses meanwhile", bh " / " bm, "-", "-", "-")
	row("HTTP key creation, SQLite", sprintf("%.0f/s", med("sqlite-create", r)), "-", "-",
	    err["sqlite-create"] > 0 ? verdict(1, err["sqlite-create"]) : "-")
	cq = med("pg-create", r)
	row("HTTP key creation, PostgreSQL", sprintf("%.0f/s", cq), ">= 1,000/s, 64 connections",
	    sprintf("%.2f", cq / 1000), verdict(cq >= 1000, err["pg-create"]))
}' "$T/runs.res"
echo "before each part: load average (1, 5, 15 min), CPU busy with other work:"
awk '{ printf "  %-8s %-16s %s%%\n", $1, $2 " " $3 " " $4, $5 }' "$T/loads"
