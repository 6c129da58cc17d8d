#!/usr/bin/env bash
# bench/big.sh: the unit's CPU per lookup and per unwrap, over HTTP, with 50 keys in storage
# and with 1,000,000 (BENCH_KEYS), measured in one run.
#
#   bench/big.sh [BUILD_DIR]        (default: build; 'BENCH_1M=1 make bench' runs it last)
#
# Two instances of one unit each, made by 'kyok up' and initialised with 'kyok tke
# auto-init', each with one Writer API key: 'small' with 50 keys and 'big' with BENCH_KEYS,
# key_limit = 10,000,000 and key_cache = BENCH_KEYS plus a tenth (what an operator sets for an
# instance of that size: docs/performance.md says what a cached key costs).
# 1. The keys are created (64 connections for the big one) and every key is wrapped once (2
#    connections, in order, so that each reply is known to be the key's): its first use, which
#    opens it into the unit's key cache as any first use does.
# 2. ROUNDS rounds, the two instances alternating (load from elsewhere weighs on both alike),
#    wrk with 2 threads and 64 keep-alive connections, each request for a key drawn at random
#    from a list of the same length for both (the small one's 50 keys repeated), so that wrk
#    does the same work for both:
#      lookup  GET /api/v2/keys/ID
#      unwrap  POST /api/v2/keys/ID/actions/unwrap (of that key's ciphertext from step 1)
# Figure: the unit's CPU time (user + system, /proc/PID/stat) over the requests of a round,
# the median of the rounds; ratio = big / small, target <= 1.3. CPU per request is what other
# work on the machine leaves mostly alone, not the rate (printed too).
# Takes 10-20 minutes for 1,000,000 keys (the creations); needs wrk, curl, jq. Everything it
# starts is stopped at exit; passwords, API keys and tokens stay in a temporary directory
# (0700), never in argv.
set -euo pipefail
. "$(dirname "$0")/instance.sh"

BUILD=${1:-build}
NKEYS=${BENCH_KEYS:-1000000}
SMALL=50
ROUNDS=9 # one run's median moved by about ±0.2 with 5
SLICE=3s
WRK_THREADS=2
WRK_CONNS=64
KYOK=$(realpath "$BUILD/cli/kyok")
export KYOK_UNITD
KYOK_UNITD=$(realpath "$BUILD/unitd/kyok-unitd")
for t in wrk curl jq awk; do
	if ! command -v "$t" >/dev/null 2>&1; then
		echo "error: $t is missing: 'scripts/deps.sh bench' installs it" >&2
		exit 1
	fi
done
if ! [ "$NKEYS" -gt "$SMALL" ] 2>/dev/null; then
	echo "error: BENCH_KEYS must be a number above $SMALL (got '$NKEYS')" >&2
	exit 1
fi
OUT_FILE="$(realpath "$BUILD")/bench-big-last.txt"

T=$(mktemp -d "${TMPDIR:-/tmp}/kyok-big.XXXXXX")
chmod 700 "$T"
wpid= # the wrk wrapping keys, while it runs
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[ -n "$wpid" ] && kill "$wpid" 2>/dev/null
	for i in "$T"/*/inst; do
		[ -f "$i/instance.json" ] && "$KYOK" down --instance "$i" >/dev/null 2>&1
	done
	if [ $rc -ne 0 ]; then
		tail -n 30 "$T"/*/setup.log >&2 2>/dev/null || true
		tail -n 20 "$T"/*/inst/unit-*/unit.log >&2 2>/dev/null || true
	fi
	rm -rf "$T"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
CREATE_BODY='{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"type":"application/vnd.ibm.kms.key+json","name":"bench-key","extractable":false}]}'

# make_instance NAME KEY_CACHE: an instance of one unit in $T/NAME, initialised, with a Writer
# API key, its token, and the wrk scripts (the token written into them: they stay in $T/NAME,
# 0700). NAME.env holds URL and PID.
make_instance() {
	local d="$T/$1" url instance
	bench_instance "$d" "$(printf 'key_limit = 10000000\nkey_cache = %d\nmax_connections_per_client = %d\n' \
		"$2" $((2 * WRK_CONNS)))"$'\n'
	url=$BENCH_URL
	instance=$BENCH_INSTANCE
	mkdir -p "$d/ids"
	printf 'URL=%s\nPID=%s\n' "$url" "$(cat "$d/inst/unit-1/pid")" >"$d.env"
	# Every script sets the same headers. setup() numbers the threads; a thread reads its
	# share (line number modulo the threads) of the files it needs.
	{
		printf 'wrk.headers["Authorization"] = "Bearer %s"\n' "$(cat "$d/http/token")"
		printf 'wrk.headers["Bluemix-Instance"] = "%s"\n' "$instance"
		printf 'local dir = "%s"\n' "$d/ids"
		cat <<'EOF'
local nthreads = 0
function setup(thread) -- in wrk's own Lua state: tid becomes a global of the thread's
	thread:set("tid", nthreads)
	nthreads = nthreads + 1
end
local function share(file)
	local out, i = {}, 0
	for line in io.lines(file) do
		if i % NTHREADS == tid then out[#out + 1] = line end
		i = i + 1
	end
	return out
end
done = function(summary, latency, requests)
	local e = summary.errors
	io.write(string.format("WRK requests=%d duration_us=%d status_errors=%d socket_errors=%d\n",
		summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout))
end
EOF
	} | sed "s/NTHREADS/$WRK_THREADS/" >"$d/http/common.lua"
	{
		cat "$d/http/common.lua"
		printf 'local body = %s\n' "$(jq -Rn --arg b "$CREATE_BODY" '$b')"
		cat <<'EOF'
wrk.headers["Content-Type"] = "application/vnd.ibm.kms.key+json"
local out
init = function(args)
	out = io.open(dir .. "/created-" .. tid, "a")
	out:setvbuf("line")
end
-- BIG_QUOTA: creations a thread sends at most in this run (the instance must not get more
-- keys than its key cache holds)
local quota, sent = tonumber(os.getenv("BIG_QUOTA")), 0
request = function()
	sent = sent + 1
	if sent > quota then wrk.thread:stop() end
	return wrk.format("POST", "/api/v2/keys", nil, body)
end
response = function(status, headers, b)
	if status == 201 then
		local id = b:match('"id":"([0-9a-f-]+)"')
		if id then out:write(id, "\n") end
	end
end
EOF
	} >"$d/http/create.lua"
	{
		cat "$d/http/common.lua"
		cat <<'EOF'
wrk.headers["Content-Type"] = "application/vnd.ibm.kms.key_action+json"
local ids, next_i, out = nil, 1, nil
init = function(args)
	ids = share(dir .. "/all")
	out = io.open(dir .. "/wrapped-" .. tid, "w")
	out:setvbuf("line")
end
-- request() does not move on: wrk calls it once more in thread 0, before sending anything, to
-- look at the request; response() comes before the next request() on the connection.
request = function()
	if ids[next_i] == nil then wrk.thread:stop() end
	return wrk.format("POST", "/api/v2/keys/" .. (ids[next_i] or ids[1]) .. "/actions/wrap",
		nil, "{}")
end
response = function(status, headers, b)
	local ct = b:match('"ciphertext":"([^"]+)"')
	if status == 200 and ct and ids[next_i] then out:write(ids[next_i], " ", ct, "\n") end
	next_i = next_i + 1
end
EOF
	} >"$d/http/wrap.lua"
	# lookup and unwrap draw a record at random from ids/draw (make_draw): lines of one width
	# ("ID CIPHERTEXT"), as many for 'small' as for 'big' (its 50 keys repeated), read whole
	# into one string. So what a request costs wrk is the same for both instances: wrk shares
	# the CPUs with the unit, and a unit that wrk keeps less busy spends more CPU on each
	# request (more wakeups), which would be counted against the size. (Tables of a million
	# strings, as these scripts had, made Lua's garbage collector walk them all the time, and
	# the big runs measured wrk.)
	{
		cat "$d/http/common.lua"
		cat <<'EOF'
local recs, width, count
init = function(args)
	local f = assert(io.open(dir .. "/draw", "rb"))
	recs = f:read("*a")
	f:close()
	width = (recs:find("\n", 1, true))
	count = math.floor(#recs / width)
	math.randomseed(1 + tid) -- each thread its own draws
end
-- the id of record i (0-based), and its ciphertext
local function id_of(i) return recs:sub(i * width + 1, i * width + 36) end
local function ct_of(i) return recs:sub(i * width + 38, (i + 1) * width - 1) end
EOF
	} >"$d/http/draw.lua"
	{
		cat "$d/http/draw.lua"
		cat <<'EOF'
request = function()
	return wrk.format("GET", "/api/v2/keys/" .. id_of(math.random(count) - 1))
end
EOF
	} >"$d/http/lookup.lua"
	{
		cat "$d/http/draw.lua"
		cat <<'EOF'
wrk.headers["Content-Type"] = "application/vnd.ibm.kms.key_action+json"
request = function()
	local i = math.random(count) - 1
	return wrk.format("POST", "/api/v2/keys/" .. id_of(i) .. "/actions/unwrap", nil,
		'{"ciphertext":"' .. ct_of(i) .. '"}')
end
EOF
	} >"$d/http/unwrap.lua"
}

# key_total NAME: keys in the instance's storage.
key_total() {
	curl -fsS -o /dev/null -D - -I -H "@$T/$1/http/headers" "$(. "$T/$1.env" && echo "$URL")/api/v2/keys" |
		awk -F': ' 'tolower($1) == "key-total" { gsub(/\r/, "", $2); print $2 }'
}

# create_until NAME N: creates keys (64 connections, at most 20 s at a time) until N are
# stored; the ids of the replies accumulate in $T/NAME/ids/all. A creation under way when wrk
# stops may be stored with its reply unread: up to 64 keys a run are not in the list.
create_until() {
	local d="$T/$1" total secs runs=0 URL PID
	. "$d.env"
	total=$(key_total "$1")
	while [ "$total" -lt "$2" ]; do
		if [ $(($2 - total)) -lt 200 ]; then # the last few one at a time: no overshoot
			for ((i = total; i < $2; i++)); do
				curl -fsS -X POST -H "@$d/http/headers" \
					-H 'Content-Type: application/vnd.ibm.kms.key+json' \
					--data-binary "$CREATE_BODY" "$URL/api/v2/keys" |
					jq -r '.resources[0].id' >>"$d/ids/created-x"
			done
		else # about 20 s at most, less when fewer keys are missing
			secs=$((($2 - total) / 3000))
			BIG_QUOTA=$((($2 - total) / WRK_THREADS)) \
				wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d$((secs < 1 ? 1 : secs > 20 ? 20 : secs))s \
				-s "$d/http/create.lua" "$URL/api/v2/keys" >/dev/null
			runs=$((runs + 1))
		fi
		total=$(key_total "$1")
		[ "$2" -gt 1000 ] && printf '  %s: %d keys stored\n' "$(date -u +%H:%M:%S)" "$total"
	done
	cat "$d"/ids/created-* >"$d/ids/all"
	if [ "$(wc -l <"$d/ids/all")" -lt $((total - runs * WRK_CONNS)) ]; then
		echo "error: $(wc -l <"$d/ids/all") key ids read from the replies, $total keys stored" >&2
		exit 1
	fi
}

# wrap_all NAME: every key of $T/NAME/ids/all wrapped once, in order; "ID CIPHERTEXT" lines in
# $T/NAME/ids/wrapped. wrk runs for its whole duration even once its threads have stopped: it
# is interrupted when every key has its line (or when it has ended, an hour at most).
wrap_all() {
	local d="$T/$1" want have=0 URL PID
	. "$d.env"
	want=$(wc -l <"$d/ids/all")
	rm -f "$d"/ids/wrapped*
	wrk -t"$WRK_THREADS" -c"$WRK_THREADS" -d3600s -s "$d/http/wrap.lua" "$URL" >/dev/null &
	wpid=$!
	while kill -0 "$wpid" 2>/dev/null; do
		have=$(cat "$d"/ids/wrapped-* 2>/dev/null | wc -l) || have=0
		[ "$have" -ge "$want" ] && break
		sleep 1
	done
	kill -INT "$wpid" 2>/dev/null || true
	wait "$wpid" || true
	wpid=
	cat "$d"/ids/wrapped-* >"$d/ids/wrapped"
	if [ "$(wc -l <"$d/ids/wrapped")" -ne "$want" ]; then
		echo "error: $(wc -l <"$d/ids/wrapped") keys wrapped of $want" >&2
		exit 1
	fi
	if [ "$(awk '{ print length($0) }' "$d/ids/wrapped" | sort -u | wc -l)" -ne 1 ] ||
		[ "$(head -c 36 "$d/ids/wrapped" | tr -d '0-9a-f-' | wc -c)" -ne 0 ]; then
		echo "error: the lines of $d/ids/wrapped are not all 'ID CIPHERTEXT' of one width" >&2
		exit 1
	fi
}

# make_draw NAME LINES: $T/NAME/ids/draw, the lines of ids/wrapped repeated (in order) up to
# LINES lines.
make_draw() {
	awk -v n="$2" '{ l[NR] = $0 } END { for (i = 0; i < n; i++) print l[i % NR + 1] }' \
		"$T/$1/ids/wrapped" >"$T/$1/ids/draw"
}

# cache_misses URL: the unit's key cache misses so far (GET /metrics).
cache_misses() {
	curl -fsS "$1/metrics" | awk '$1 == "kyok_key_cache_misses_total" { print $2 }'
}

# measure NAME SIZE KIND: one round; appends "SIZE KIND rate us_cpu errors 0" to $T/runs.
measure() {
	local d="$T/$1" c0 c1 out URL PID
	. "$d.env"
	c0=$(awk '{ print $14 + $15 }' "/proc/$PID/stat")
	out=$(wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$SLICE" -s "$d/http/$3.lua" "$URL")
	c1=$(awk '{ print $14 + $15 }' "/proc/$PID/stat")
	echo "$out" | awk -v size="$2" -v kind="$3" -v cpu=$((c1 - c0)) \
		-v hz="$(getconf CLK_TCK)" '/^WRK / {
		for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
		ok = v["requests"] - v["status_errors"]
		printf "%s %s %.0f %.2f %d 0\n", size, kind, ok / (v["duration_us"] / 1e6),
			1e6 * cpu / hz / v["requests"], v["status_errors"] + v["socket_errors"]
	}' | tee -a "$T/runs" | awk '{
		printf "  %7d keys  %-6s %8d/s  server CPU %6.2f us/request%s\n", $1, $2, $3, $4,
			($5 > 0 ? "  ERRORS: " $5 : "")
	}'
}

# misses_line NAME SIZE BEFORE: after the rounds, a line "SIZE lookup 0 0 0 MISSES" (and the
# same for unwrap: the rounds' misses cannot be told apart by kind) for the table. Read once
# before and once after the rounds, not around each: GET /metrics counts the keys by state
# in storage, which with 1,000,000 keys takes tens of seconds.
misses_line() {
	local m URL PID
	. "$T/$1.env"
	m=$(($(cache_misses "$URL") - $3))
	[ "$m" -gt 0 ] && echo "  $2 keys: $m key cache misses during the rounds (keys read from storage)"
	printf '%s lookup 0 0 0 %d\n%s unwrap 0 0 0 %d\n' "$2" "$m" "$2" "$m" >>"$T/misses"
}

echo "kyok big-store bench: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, $SMALL and $NKEYS keys"
echo "setting up: two instances of 1 unit (kyok up, kyok tke auto-init): 'small'" \
	"(key_cache $SMALL) and 'big' (key_cache $((NKEYS + NKEYS / 10)))"
make_instance small "$SMALL"
make_instance big $((NKEYS + NKEYS / 10))
create_until small "$SMALL"
wrap_all small
echo "big: creating keys (64 connections) until $NKEYS are stored"
t0=$(date +%s)
create_until big "$NKEYS"
echo "  created in $(($(date +%s) - t0)) s; wrapping each key once (2 connections, in order)"
t0=$(date +%s)
wrap_all big
echo "  wrapped in $(($(date +%s) - t0)) s; the big unit: $(awk '/^VmRSS/ { print $2, $3 }' \
	"/proc/$(. "$T/big.env" && echo "$PID")/status") resident;" \
	"keys.db $(du -m "$T/big/inst/keys.db" | cut -f1) MiB"
lines=$(wc -l <"$T/big/ids/wrapped")
make_draw big "$lines"
make_draw small "$lines"
misses_small=$(. "$T/small.env" && cache_misses "$URL")
misses_big=$(. "$T/big.env" && cache_misses "$URL")
echo "rounds: $ROUNDS of each kind, $SLICE each, the two instances alternating"
for ((r = 1; r <= ROUNDS; r++)); do # which instance goes first alternates too
	for kind in lookup unwrap; do
		if [ $((r % 2)) = 1 ]; then
			measure small "$SMALL" "$kind"
			measure big "$NKEYS" "$kind"
		else
			measure big "$NKEYS" "$kind"
			measure small "$SMALL" "$kind"
		fi
	done
done

misses_line small "$SMALL" "$misses_small"
misses_line big "$NKEYS" "$misses_big"

awk -v small="$SMALL" -v big="$NKEYS" '
FILENAME ~ /misses$/ { miss[$1, $2] += $6; next }
{ n[$1, $2]++; c[$1, $2, n[$1, $2]] = $4; rate[$1, $2] += $3; err[$1, $2] += $5 }
function med(s, k,   m, i, j, t, v) {
	m = n[s, k]; for (i = 1; i <= m; i++) v[i] = c[s, k, i]
	for (i = 2; i <= m; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
	return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
}
function verdict(e, m, ok) {
	if (e > 0) return "INVALID (" e " errors)"
	if (m > 0) return "INVALID (" m " key cache misses)"
	return ok ? "met (<= 1.3)" : "NOT MET (<= 1.3)"
}
END {
	printf "\n%-34s %-22s %-22s %-7s %s\n", "MEASURE (server CPU per request)", small " keys", big " keys", "RATIO", "VERDICT"
	split("lookup unwrap", kinds, " ")
	for (i = 1; i <= 2; i++) {
		k = kinds[i]; a = med(small, k); b = med(big, k); e = err[small, k] + err[big, k]
		m = miss[small, k] + miss[big, k]
		printf "%-34s %-22s %-22s %-7s %s\n", "HTTP " k ", key drawn at random",
			sprintf("%.2f us (%.0f/s)", a, rate[small, k] / n[small, k]),
			sprintf("%.2f us (%.0f/s)", b, rate[big, k] / n[big, k]), sprintf("%.2f", b / a),
			verdict(e, m, b <= 1.3 * a)
	}
}' "$T/misses" "$T/runs" | tee "$T/table"
cp "$T/table" "$OUT_FILE" 2>/dev/null && echo "(table also in $OUT_FILE)"
