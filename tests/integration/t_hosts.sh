#!/usr/bin/env bash
# Crypto units of one instance on two hosts (kyok host invite / join-request / join-accept /
# join-finish), each host a network namespace of its own, PostgreSQL in a third, joined by veth
# pairs to the test's own namespace, which routes between them and plays the administrators'
# workstation. Every connection is TLS: the units' key API and admin endpoint over https with
# the instance's CA, PostgreSQL with ssl = on and sslmode=verify-full. Through it: the join's
# refusals, an auto-init ceremony, key create / wrap / unwrap, a master key rotation; then host
# A loses its link and host B's unit serves the key API alone. Skipped (exit 77) when not root,
# without ip or network namespaces, or without PostgreSQL.
. "$(dirname "$0")/helpers.sh"

skip() {
	echo "skip t_hosts: $*"
	exit 77
}
[ "$(id -u)" -eq 0 ] || skip "needs root for network namespaces"
command -v ip >/dev/null || skip "needs ip (iproute2)"
. "$(dirname "$0")/../pg.sh"
pg_available || skip "needs the PostgreSQL server binaries (Debian package postgresql)"

setup

# ---- three hosts: a, b (one unit each) and pg ---------------------------------------------
N="kh$$"
NS_MADE=()
hosts_cleanup() {
	local d
	for d in "$T_DIR"/inst-*; do
		[ -f "$d/instance.json" ] && "$KYOK" down --dir "$d" >/dev/null 2>&1 || true
	done
	pg_stop
	for ns in "${NS_MADE[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap 'rc=$?; hosts_cleanup; (exit $rc); cleanup' EXIT

# host NAME NET: namespace $N-NAME at 10.91.NET.2/24, its link $N-NAME0 here at 10.91.NET.1.
host() {
	local ns="$N-$1" net=$2
	ip netns add "$ns" 2>/dev/null || skip "cannot make a network namespace (ip netns add)"
	NS_MADE+=("$ns")
	ip link add "$ns"0 type veth peer name "$ns"1 2>/dev/null || skip "no veth links"
	ip link set "$ns"1 netns "$ns"
	ip addr add "10.91.$net.1/24" dev "$ns"0
	ip link set "$ns"0 up
	ip netns exec "$ns" ip link set lo up
	ip netns exec "$ns" ip addr add "10.91.$net.2/24" dev "$ns"1
	ip netns exec "$ns" ip link set "$ns"1 up
	ip netns exec "$ns" ip route add default via "10.91.$net.1"
}
host a 1
host b 2
host pg 3
echo 1 >/proc/sys/net/ipv4/ip_forward
A_IP=10.91.1.2 B_IP=10.91.2.2 PG_IP=10.91.3.2
on() {
	local ns="$N-$1"
	shift
	ip netns exec "$ns" "$@"
}

# ---- PostgreSQL over TLS, its certificate made here ----------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-subj "/CN=test pg CA" -keyout "$T_DIR/pgca.key" -out "$T_DIR/pgca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$PG_IP" \
	-keyout "$T_DIR/pg.key" -out "$T_DIR/pg.csr" 2>/dev/null
openssl x509 -req -in "$T_DIR/pg.csr" -CA "$T_DIR/pgca.crt" -CAkey "$T_DIR/pgca.key" \
	-CAcreateserial -days 2 -extfile <(printf 'subjectAltName=IP:%s\n' "$PG_IP") \
	-out "$T_DIR/pg.crt" 2>/dev/null
chmod 644 "$T_DIR/pgca.crt"
chmod 755 "$T_DIR"
PG_NETNS="$N-pg" PG_LISTEN=$PG_IP PG_SSL_CERT="$T_DIR/pg.crt" PG_SSL_KEY="$T_DIR/pg.key" pg_start
STORE="$KYOK_PG_TCP_URI?sslmode=verify-full&sslrootcert=$T_DIR/pgca.crt"
unset KYOK_STORE
expect_eq "PostgreSQL takes TLS only over TCP" \
	"$(psql "$KYOK_PG_TCP_URI?sslmode=disable" -qAt -c 'select 1' 2>&1 | grep -c 'no pg_hba.conf entry')" 1
expect_eq "... and TLS with the test's CA" \
	"$(psql "$STORE" -qAt -c 'select ssl from pg_stat_ssl where pid = pg_backend_pid()')" t

A="$T_DIR/inst-a" B="$T_DIR/inst-b"
export KYOK_INSTANCE=$A

# ---- kyok up --listen, --tls-cert / --tls-key (the operator's certificate) -------------------
# A CA and a certificate for 127.0.0.1 made here; one for another address; a key of another pair.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=op CA" \
	-keyout "$T_DIR/opca.key" -out "$T_DIR/opca.crt" 2>/dev/null
op_cert() { # NAME IP
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
		-keyout "$T_DIR/$1.key" -out "$T_DIR/$1.csr" 2>/dev/null
	openssl x509 -req -in "$T_DIR/$1.csr" -CA "$T_DIR/opca.crt" -CAkey "$T_DIR/opca.key" \
		-CAcreateserial -days 2 -extfile <(printf 'subjectAltName=IP:%s\n' "$2") \
		-out "$T_DIR/$1.crt" 2>/dev/null
}
op_cert op 127.0.0.1
op_cert other 10.9.9.9
O="$T_DIR/inst-op"
expect_fail "up --listen 0.0.0.0: refused" "no address a client can reach" \
	"$KYOK" up --dir "$O" --units 1 --tls --listen 0.0.0.0
expect_fail "up --tls-cert without --tls-key: refused" "give both --tls-cert FILE and --tls-key" \
	"$KYOK" up --dir "$O" --units 1 --tls-cert "$T_DIR/op.crt"
expect_fail "up --tls-cert whose key is another: refused" "its key is not the one in" \
	"$KYOK" up --dir "$O" --units 1 --tls-cert "$T_DIR/op.crt" --tls-key "$T_DIR/other.key"
expect_fail "up --tls-cert that does not name the address: refused" "does not name 127.0.0.1" \
	"$KYOK" up --dir "$O" --units 1 --tls-cert "$T_DIR/other.crt" --tls-key "$T_DIR/other.key"
cp "$T_DIR/op.key" "$T_DIR/op-loose.key"
chmod 644 "$T_DIR/op-loose.key"
expect_fail "up --tls-key that others may read: refused" "tls-key.*chmod 600" \
	"$KYOK" up --dir "$O" --units 1 --tls-cert "$T_DIR/op.crt" --tls-key "$T_DIR/op-loose.key"
expect_fail "up --store with a password, its name percent-encoded: refused" 'storage URI holds a password' \
	"$KYOK" up --dir "$O" --units 1 --store "postgresql://kyok@db.invalid/kyok?%70assword=x"
expect_eq "... nothing made" "$(ls -A "$T_DIR" | grep -c '^inst-op$')" 0
# The certificate and its key in one file: tls.crt gets the certificate only.
cat "$T_DIR/op.crt" "$T_DIR/op.key" >"$T_DIR/op-both.pem"
expect_ok "up --tls-cert --tls-key (the operator's certificate)" \
	"$KYOK" up --dir "$O" --units 1 --tls-cert "$T_DIR/op-both.pem" --tls-key "$T_DIR/op.key" \
	--cacert "$T_DIR/opca.crt"
expect_eq "... tls.crt (0644) holds the certificate, not the key given with it" \
	"$(grep -cE -- '-----BEGIN [A-Z ]*PRIVATE KEY-----' "$O/unit-1/tls.crt") $(openssl x509 -in "$O/unit-1/tls.crt" -noout -fingerprint)" \
	"0 $(openssl x509 -in "$T_DIR/op.crt" -noout -fingerprint)"
expect_eq "... the unit serves it over https" \
	"$(curl -fsS --cacert "$T_DIR/opca.crt" "$(jq -r '.units[0].url' "$O/instance.json")/health")" \
	'{"status":"ok"}'
expect_fail "up --listen on an instance that exists: refused" "keep the address" \
	"$KYOK" up --dir "$O" --listen 127.0.0.2
"$KYOK" down --dir "$O" >/dev/null 2>&1

# ---- host A: the instance, its anchor and TLS CA ----------------------------------------------
expect_fail "up --listen outside loopback without TLS: refused" 'serves HTTPS only.*10.91.1.2' \
	on a "$KYOK" up --dir "$A" --units 1 --listen "$A_IP" --store "$STORE"
expect_eq "... nothing made" "$(ls -A "$T_DIR" | grep -c '^inst-a$')" 0
expect_ok "host A: kyok up --tls --listen --store (PostgreSQL, verify-full)" \
	on a "$KYOK" up --dir "$A" --units 1 --tls --listen "$A_IP" --store "$STORE"
expect_eq "unit 1's URL is https on host A's address" \
	"$(jq -r '.units[0].url' "$A/instance.json")" "https://$A_IP:$(cat "$A/unit-1/port")"
expect_ok "host A: invite" on a "$KYOK" host invite --out "$T_DIR/invite.json"
expect_eq "the invitation holds no private key" "$(grep -cE -- '-----BEGIN [A-Z ]*PRIVATE KEY-----' "$T_DIR/invite.json")" 0
FP=$(on a "$KYOK" host invite --out "$T_DIR/invite.json" --output json | jq -r .sha256)
expect_eq "its fingerprint: SHA-256 of its JSON, compact with sorted members" "$FP" \
	"$(jq -jcS . "$T_DIR/invite.json" | sha256sum | cut -d' ' -f1)"

# ---- host B: join -------------------------------------------------------------------------------
expect_fail "join-request on a loopback address: refused" 'other hosts reach.*127.0.0.1' \
	on b "$KYOK" host join-request --dir "$B" --invite "$T_DIR/invite.json" --invite-sha256 "$FP" \
	--listen 127.0.0.1 --store "$STORE"
expect_fail "join-request without the invitation's fingerprint: refused" 'invite-sha256.*required' \
	on b "$KYOK" host join-request --dir "$B" --invite "$T_DIR/invite.json" --listen "$B_IP" \
	--store "$STORE"
# An invitation changed on the way: a CA of the attacker's added, or the imprint key swapped.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
	-subj "/CN=evil CA" -keyout "$T_DIR/evil.key" -out "$T_DIR/evil.crt" 2>/dev/null
jq --rawfile c "$T_DIR/evil.crt" '.tls_ca_cert += $c' "$T_DIR/invite.json" >"$T_DIR/inv-ca.json"
expect_fail "join-request from an invitation with a CA added: refused" \
	'not the one the anchor.s host made.*fingerprint is [0-9a-f]{64}, not' \
	on b "$KYOK" host join-request --dir "$B" --invite "$T_DIR/inv-ca.json" --invite-sha256 "$FP" \
	--listen "$B_IP" --store "$STORE"
jq '.imprint_verifier = ("ab" * 32)' "$T_DIR/invite.json" >"$T_DIR/inv-imp.json"
expect_fail "join-request from an invitation with another imprint key: refused" \
	'not the one the anchor.s host made' \
	on b "$KYOK" host join-request --dir "$B" --invite "$T_DIR/inv-imp.json" --invite-sha256 "$FP" \
	--listen "$B_IP" --store "$STORE"
# ... and with a fingerprint to match (the file and its fingerprint both from the attacker):
# one certificate each, or refused.
expect_fail "join-request from an invitation with two CA certificates: refused" \
	'must each be one PEM certificate' \
	on b "$KYOK" host join-request --dir "$B" --invite "$T_DIR/inv-ca.json" \
	--invite-sha256 "$(jq -jcS . "$T_DIR/inv-ca.json" | sha256sum | cut -d' ' -f1)" \
	--listen "$B_IP" --store "$STORE"
mkdir -m 777 "$T_DIR/loose"
expect_fail "join-request into a directory others may write in: refused" 'others may write in it' \
	on b "$KYOK" host join-request --dir "$T_DIR/loose" --invite "$T_DIR/invite.json" \
	--invite-sha256 "$FP" --listen "$B_IP" --store "$STORE"
expect_eq "... nothing made" "$(ls -A "$T_DIR" | grep -c '^inst-b$') $(ls -A "$T_DIR/loose" | wc -l)" "0 0"
expect_ok "host B: join-request" on b "$KYOK" host join-request --dir "$B" \
	--invite "$T_DIR/invite.json" --invite-sha256 "$FP" --listen "$B_IP" --store "$STORE" \
	--zones zone-b
REQ="$B/join-request.json"
expect_eq "the request holds no private key" "$(grep -cE -- '-----BEGIN [A-Z ]*PRIVATE KEY-----' "$REQ")" 0
expect_eq "... the unit's keys stay on host B" "$(ls "$B"/join-*/tls.key "$B"/join-*/data/identity.pending | wc -l)" 2

# Refusals of join-accept: each changes nothing.
cp "$A/instance.json" "$T_DIR/inst-a.before"
jq '.instance = "another-instance"' "$REQ" >"$T_DIR/req-other.json"
expect_fail "join-accept of a request for another instance: refused" 'for another instance.*is for instance .another-instance.' \
	on a "$KYOK" host join-accept --request "$T_DIR/req-other.json" --out "$T_DIR/ans-x.json"
jq --arg id "$(jq -r '.units[0].id' "$A/instance.json")" '.units[0].id = $id' "$REQ" >"$T_DIR/req-dup.json"
expect_fail "join-accept of a unit id already in the instance: refused" 'in the instance already.*is crypto unit 1' \
	on a "$KYOK" host join-accept --request "$T_DIR/req-dup.json" --out "$T_DIR/ans-x.json"
jq '.address = "127.0.0.1"' "$REQ" >"$T_DIR/req-lo.json"
expect_fail "join-accept of a loopback address: refused" 'other hosts reach.*127.0.0.1' \
	on a "$KYOK" host join-accept --request "$T_DIR/req-lo.json" --out "$T_DIR/ans-x.json"
jq '.invite_sha256 = ("0" * 64)' "$REQ" >"$T_DIR/req-inv.json"
expect_fail "join-accept of a request made from another invitation: refused" \
	'not the one the anchor.s host made.*invitation whose fingerprint is 0{64}' \
	on a "$KYOK" host join-accept --request "$T_DIR/req-inv.json" --out "$T_DIR/ans-x.json"
jq --arg a "$A_IP" '.address = $a' "$REQ" >"$T_DIR/req-addr.json"
expect_fail "join-accept of a request for host A's own address: refused" \
	"address of crypto units of the instance already.*$A_IP is the address of crypto unit 1, on this host" \
	on a "$KYOK" host join-accept --request "$T_DIR/req-addr.json" --out "$T_DIR/ans-x.json"
expect_fail "... even with --same-host" "$A_IP is the address of crypto unit 1, on this host" \
	on a "$KYOK" host join-accept --request "$T_DIR/req-addr.json" --out "$T_DIR/ans-x.json" \
	--same-host
# Another join-accept running (its lock held here by flock, until the refusal is seen).
exec 9>"$A/join.lock"
flock -x 9
expect_fail "join-accept while another one runs: refused, not waited for" \
	"join.lock: .*another 'kyok host join-accept' of this instance is running" \
	on a "$KYOK" host join-accept --request "$REQ" --out "$T_DIR/ans-x.json"
exec 9>&-
: >"$T_DIR/ans-exists.json"
expect_fail "join-accept onto an existing answer file: refused" 'exists: give a new file' \
	on a "$KYOK" host join-accept --request "$REQ" --out "$T_DIR/ans-exists.json"
jq '.address = "255.255.255.255"' "$REQ" >"$T_DIR/req-bc.json"
expect_fail "join-accept of the broadcast address: refused" 'other hosts reach.*255.255.255.255' \
	on a "$KYOK" host join-accept --request "$T_DIR/req-bc.json" --out "$T_DIR/ans-x.json"
jq '.units[0].identity_csr = .units[0].tls_csr' "$REQ" >"$T_DIR/req-csr.json"
expect_fail "join-accept of a request whose identity request is not the unit's: refused" \
	'P-521 certificate request' \
	on a "$KYOK" host join-accept --request "$T_DIR/req-csr.json" --out "$T_DIR/ans-x.json"
expect_ok "... instance.json unchanged, no answer written" \
	cmp "$A/instance.json" "$T_DIR/inst-a.before"
[ -e "$T_DIR/ans-x.json" ] && fail "a refused join-accept wrote an answer" || pass "no answer written"

expect_ok "host A: join-accept" on a "$KYOK" host join-accept --request "$REQ" \
	--out "$T_DIR/answer.json"
expect_eq "instance.json lists host B's unit as unit 2, remote, https" \
	"$(jq -r '.units[1] | "\(.number) \(.remote) \(.url)"' "$A/instance.json")" \
	"2 true https://$B_IP:$(jq -r '.units[0].port' "$REQ")"
expect_fail "unit-add --replace of host B's unit on host A: refused" 'runs on another host' \
	on a "$KYOK" unit-add --replace 2 --yes
expect_fail "the same request again: host B's address is taken now" \
	"$B_IP is the address of crypto unit 2, on another host: .*--same-host" \
	on a "$KYOK" host join-accept --request "$REQ" --out "$T_DIR/ans-x.json"
expect_fail "... and with --same-host, its unit is in the instance already" \
	'in the instance already.*is crypto unit 2' \
	on a "$KYOK" host join-accept --request "$REQ" --out "$T_DIR/ans-x.json" --same-host
jq '.units[0].id |= ascii_upcase' "$REQ" >"$T_DIR/req-case.json"
expect_fail "... its unit id in capitals: the same unit" 'in the instance already.*is crypto unit 2' \
	on a "$KYOK" host join-accept --request "$T_DIR/req-case.json" --out "$T_DIR/ans-x.json" \
	--same-host

# Tampered answers: refused, nothing installed.
jq '.units[0].tls_cert = .units[0].identity_cert' "$T_DIR/answer.json" >"$T_DIR/ans-tls.json"
expect_fail "join-finish of an answer with another TLS certificate: refused" 'does not verify.*TLS certificate is not the instance CA' \
	on b "$KYOK" host join-finish --dir "$B" --answer "$T_DIR/ans-tls.json"
# An identity certificate of the right shape for host B's unit, from another anchor.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:secp521r1 -nodes -days 2 \
	-subj "/CN=x" -keyout "$T_DIR/x.key" -out "$T_DIR/x.crt" 2>/dev/null
jq --rawfile c "$T_DIR/x.crt" '.units[0].identity_cert = $c' "$T_DIR/answer.json" >"$T_DIR/ans-id.json"
expect_fail "join-finish of an answer with a foreign identity certificate: refused" \
	'does not verify.*identity certificate is not the anchor' \
	on b "$KYOK" host join-finish --dir "$B" --answer "$T_DIR/ans-id.json"
jq '.units[0].number += 5' "$T_DIR/answer.json" >"$T_DIR/ans-num.json"
expect_fail "join-finish of an answer with a unit renumbered: refused" 'is not signed by the instance.s unit trust anchor' \
	on b "$KYOK" host join-finish --dir "$B" --answer "$T_DIR/ans-num.json"
jq 'del(.units[0].number_sig)' "$T_DIR/answer.json" >"$T_DIR/ans-nosig.json"
expect_fail "join-finish of an answer without the number's signature: refused" 'is not signed by the instance.s unit trust anchor' \
	on b "$KYOK" host join-finish --dir "$B" --answer "$T_DIR/ans-nosig.json"
jq '.request_sha256 = ("0" * 64)' "$T_DIR/answer.json" >"$T_DIR/ans-req.json"
expect_fail "join-finish of the answer to another request: refused" 'does not verify.*answers another request' \
	on b "$KYOK" host join-finish --dir "$B" --answer "$T_DIR/ans-req.json"
cp "$REQ" "$T_DIR/req.saved"
jq '.units[0].zone = null' "$T_DIR/req.saved" >"$REQ"
jq --arg h "$(sha256sum "$REQ" | cut -d' ' -f1)" '.request_sha256 = $h' "$T_DIR/answer.json" >"$T_DIR/ans-dmg.json"
expect_fail "join-finish with a damaged request (and an answer made to match it): refused" \
	'join-request.json is damaged' \
	on b "$KYOK" host join-finish --dir "$B" --answer "$T_DIR/ans-dmg.json"
cp "$T_DIR/req.saved" "$REQ"
expect_eq "... nothing installed on host B" "$(ls "$B" | grep -c -e '^unit-' -e '^instance.json$')" 0
expect_ok "host B: join-finish" on b "$KYOK" host join-finish --dir "$B" --answer "$T_DIR/answer.json"
expect_eq "host B's unit runs as unit 2" "$(jq -r '.units[0].number' "$B/instance.json")" 2
expect_fail "join-finish again: no pending request" 'no pending join request' \
	on b "$KYOK" host join-finish --dir "$B" --answer "$T_DIR/answer.json"

# ---- the administrators' workstation: instance.json, ca.crt, anchor.crt of host A ----------------
W="$T_DIR/inst-ws"
mkdir -p "$W"
cp "$A/instance.json" "$A/ca.crt" "$A/anchor.crt" "$W/"
export KYOK_INSTANCE=$W
out=$("$KYOK" tke cryptounit-add --units 1,2 2>&1) || fail "cryptounit-add --units 1,2: $out"
pa=$(newpw ann)
pb=$(newpw ben)
expect_ok "auto-init across both hosts" "$KYOK" tke auto-init --signature 1 --revocation 1 \
	--new-admins ann,ben --password-file "$pa" --password-file "$pb" \
	--imprint-credential "$A/imprint-credential.pem"
"$KYOK" tke sigkey-sel --sigkeys 1,2 >/dev/null 2>&1 # two key parts: two signatures
expect_eq "both units serve keys" "$("$KYOK" status --output json | jq -r '[.units[].state.ready.ready] | join(",")')" true,true
AK="$KYOK_TKE_FILES/apikeys"
"$KYOK" tke apikey-create --name w --role Writer --password-file "$pa" --password-file "$pb" \
	>/dev/null 2>&1 ||
	fail "apikey-create"
kp() { "$KYOK" kp "$@" --apikey-file "$AK/w.apikey"; }
kid=$(kp key-create --name k1 --output json 2>/dev/null | jq -r '.id // .resources[0].id')
[ -n "$kid" ] && [ "$kid" != null ] && pass "key-create ($kid)" || fail "key-create"
kp wrap "$kid" --dek-out "$T_DIR/dek.bin" >"$T_DIR/ct.txt" 2>"$T_DIR/err" || fail "wrap: $(cat "$T_DIR/err")"
expect_ok "unwrap through unit 2 (host B)" kp unwrap "$kid" --ciphertext-file "$T_DIR/ct.txt" \
	--out "$T_DIR/dek2.bin" --unit 2
expect_ok "... the same data key" cmp "$T_DIR/dek.bin" "$T_DIR/dek2.bin"

# ---- a master key rotation on both hosts --------------------------------------------------------
"$KYOK" tke mk-add --random --description p1 --password-file "$(newpw p1)" >/dev/null 2>&1
"$KYOK" tke mk-add --random --description p2 --password-file "$(newpw p2)" >/dev/null 2>&1
expect_ok "new master key loaded on both units" "$KYOK" tke cryptounit-mk-load --parts 1,2 \
	--password-file "$T_DIR/pw/p1" --password-file "$T_DIR/pw/p2" --password-file "$pa" \
	--password-file "$pb"
expect_ok "... committed" "$KYOK" tke cryptounit-mk-commit --password-file "$pa" --password-file "$pb"
expect_ok "cryptounit-mk-rotate" "$KYOK" tke cryptounit-mk-rotate --yes --password-file "$pa" \
	--password-file "$pb"
vps=$("$KYOK" status --output json | jq -r '[.units[].state.current_mk.vp] | unique | length')
expect_eq "both units have the same current master key" "$vps" 1
expect_ok "the old ciphertext unwraps after the rotation" kp unwrap "$kid" \
	--ciphertext-file "$T_DIR/ct.txt" --out "$T_DIR/dek3.bin"
expect_ok "... the same data key" cmp "$T_DIR/dek.bin" "$T_DIR/dek3.bin"

# ---- host A loses its link -----------------------------------------------------------------------
ip link set "$N-a0" down
expect_fail "unit 1 (host A) cannot be reached" '.' \
	curl -fsS --max-time 3 --cacert "$A/ca.crt" "https://$A_IP:$(cat "$A/unit-1/port")/health"
out=$(kp unwrap "$kid" --ciphertext-file "$T_DIR/ct.txt" --out "$T_DIR/dek4.bin" --verbose --timeout 3 2>&1) &&
	grep -q 'served by crypto unit 2' <<<"$out" && pass "kp fails over to unit 2 (host B)" ||
	fail "kp unwrap with host A down: $out"
expect_ok "... the same data key" cmp "$T_DIR/dek.bin" "$T_DIR/dek4.bin"
expect_ok "key-create with host A down" kp key-create --name k2 --timeout 3
B_URL=$(jq -r '.units[1].url' "$W/instance.json")
expect_eq "curl straight to host B's unit over https: health" \
	"$(curl -fsS --cacert "$A/ca.crt" "$B_URL/health")" '{"status":"ok"}'
jq -j .apikey "$AK/w.apikey" >"$T_DIR/ak.raw"
token=$(curl -sS --cacert "$A/ca.crt" --data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' \
	--data-urlencode "apikey@$T_DIR/ak.raw" "$B_URL/identity/token" | jq -r '.access_token // empty')
if [ -n "$token" ]; then
	n=$(curl -fsS --cacert "$A/ca.crt" -H "Authorization: Bearer $token" \
		-H "Bluemix-Instance: $(jq -r .instance "$W/instance.json")" "$B_URL/api/v2/keys" |
		jq -r '.metadata.collectionTotal')
	expect_eq "curl straight to host B's unit: the key API lists both keys" "$n" 2
else
	fail "no access token from host B's unit"
fi
ip link set "$N-a0" up

# ---- host A restarts: its remote unit stays in instance.json, untouched -------------------------
cp "$A/instance.json" "$T_DIR/inst-a.before"
on a "$KYOK" down --dir "$A" >/dev/null 2>&1
expect_rc_out=$(on a "$KYOK" up --dir "$A" 2>&1) && grep -qE '^2 .* remote' <<<"$expect_rc_out" &&
	pass "host A's kyok up again: unit 2 shown remote" || fail "kyok up on host A: $expect_rc_out"
expect_ok "... instance.json unchanged" cmp "$A/instance.json" "$T_DIR/inst-a.before"

finish
