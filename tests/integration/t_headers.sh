#!/usr/bin/env bash
# A request's headers must arrive whole within header_timeout seconds of the connection's
# accept, or of the end of the previous request on a kept-alive connection.
#  - A client that sends a request line and then one header byte a second (well inside
#    idle_timeout) has its connection closed by the unit, which logs one line naming the
#    client and the bound; another client's requests are answered meanwhile.
#  - The same on a kept-alive connection after a whole request was answered.
#  - Many connections cut at once: at most 20 lines a second name one; a line counts the rest.
#  - header_timeout out of range is refused at start with a message naming the key.
#  - A unit started without key storage ('store' left out) is not ready: GET /ready answers
#    503 naming no-key-storage.
. "$(dirname "$0")/helpers.sh"
setup

HOLD="$KYOK_BUILD/tests/conn_hold"

"$KYOK" up >/dev/null
"$KYOK" down >/dev/null
# Silence alone never closes the trickling connections: only the header timeout can.
for f in "$KYOK_INSTANCE"/unit-*/unit.conf; do
	printf 'idle_timeout = 30\nheader_timeout = 2\n' >>"$f"
done
"$KYOK" up >/dev/null
URL=$(unit_url 1)
PORT=${URL##*:}
LOG="$KYOK_INSTANCE/unit-1/unit.log"
C=$T_DIR/c
mkdir -p "$C"

# trickle FIRST NAME: runs the trickling client in the background, its output in $C/NAME.
trickle() {
	"$HOLD" trickle 127.0.0.1 "$PORT" /health "$1" >"$C/$2" 2>&1 &
}

# ---- a new connection whose headers trickle in ----------------------------------------------
trickle 0 fresh
fresh_pid=$!
# Another client meanwhile: whole requests, answered.
ok=0
for i in $(seq 1 20); do
	code=$(curl -sS -o /dev/null -w '%{http_code}' "$URL/v1/health") || code=none
	[ "$code" = 200 ] && ok=$((ok + 1))
done
expect_eq "another client's 20 requests while headers trickle in" "$ok" 20
if wait "$fresh_pid"; then
	pass "a new connection whose headers trickle in is closed by the unit ($(cat "$C/fresh"))"
else
	fail "a new connection whose headers trickle in was not closed: $(cat "$C/fresh")"
fi

# ---- a kept-alive connection, after a whole request ----------------------------------------
trickle 1 kept
if wait $!; then
	pass "a kept-alive connection whose next headers trickle in is closed ($(cat "$C/kept"))"
else
	fail "a kept-alive connection whose next headers trickle in was not closed: $(cat "$C/kept")"
fi

# One line per new connection cut, not one per byte; a kept-alive one is closed quietly (an
# idle pool's connection looks the same).
n=$(grep -c "http: connection from 127.0.0.1 closed: headers not complete after 2 s (header_timeout)" \
	"$LOG" || true)
expect_eq "the unit logged one line for the new connection, none for the kept-alive one" "$n" 1
expect_ok "the unit still answers the CLI" "$KYOK" status

# ---- many connections cut at once: at most 20 lines a second name one, one line counts the rest
before=$(wc -l <"$LOG")
if "$HOLD" hold 127.0.0.1 "$PORT" 127.0.0.1 60 0 >"$C/many" 2>&1 </dev/null; then
	pass "60 connections that send nothing are all closed ($(head -n 1 "$C/many"))"
else
	fail "60 connections that send nothing were not all closed: $(cat "$C/many")"
fi
# cut_counts: "NAMED UNNAMED" for the lines logged since $before.
cut_counts() {
	tail -n "+$((before + 1))" "$LOG" | awk '
		/closed: headers not complete after 2 s \(header_timeout\)$/ { named++ }
		/more connections closed: headers not complete/ {
			for (i = 1; i <= NF; i++) if ($i == "more") unnamed += $(i - 1) }
		END { printf "%d %d\n", named, unnamed }'
}
# The count of the rest is logged by the sweeper's next round in a later second.
for i in $(seq 1 100); do
	read -r named unnamed <<<"$(cut_counts)"
	[ $((named + unnamed)) -ge 60 ] && break
	sleep 0.1
done
if [ $((named + unnamed)) -eq 60 ] && [ "$named" -lt 60 ] && [ "$unnamed" -gt 0 ]; then
	pass "60 cuts: $named lines name a connection, $unnamed are counted in a line of their own"
else
	fail "60 cuts: $named lines name a connection, $unnamed counted (want fewer than 60 named," \
		"the rest counted, 60 in all)"
fi

# ---- unit.conf values are checked ------------------------------------------------------------
for v in 0 3601 -1 2s; do
	cp "$KYOK_INSTANCE/unit-2/unit.conf" "$C/bad.conf"
	sed -i '/^header_timeout/d' "$C/bad.conf"
	printf 'header_timeout = %s\n' "$v" >>"$C/bad.conf"
	expect_fail "header_timeout = $v is refused at start" \
		"bad value for 'header_timeout'.*1 to 3600" "$UNITD" --config "$C/bad.conf"
done

"$KYOK" down >/dev/null 2>&1 || true

# ---- GET /ready of a unit without key storage -----------------------------------------------
# Unit 2 alone, its unit.conf without 'store': not ready, and says so.
grep -vE '^(store|port_file) ' "$KYOK_INSTANCE/unit-2/unit.conf" >"$C/nostore.conf"
printf 'port_file = %s\n' "$C/nostore.port" >>"$C/nostore.conf"
"$UNITD" --config "$C/nostore.conf" >/dev/null 2>&1 &
NS=$!
for i in $(seq 1 300); do
	[ -s "$C/nostore.port" ] && break
	kill -0 "$NS" 2>/dev/null || break
	sleep 0.1
done
got=$(curl -sS -o "$C/ready.json" -w '%{http_code}' "http://127.0.0.1:$(cat "$C/nostore.port" 2>/dev/null)/ready" || true)
expect_eq "unit without key storage: GET /ready" \
	"$got $(jq -r '[.reasons[].code] | join(" ")' "$C/ready.json" 2>/dev/null || true)" \
	"503 imprint-mode no-key-storage"
kill "$NS" 2>/dev/null || true
wait "$NS" || true

# Units stopped cleanly: a sanitizer build reports what it found in their logs.
if grep -hE -m3 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$KYOK_INSTANCE"/unit-*/unit.log; then
	fail "a unit's log has a sanitizer report"
else
	pass "units stopped, no sanitizer report in their logs"
fi
finish
