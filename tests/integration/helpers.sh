# Shared by the integration tests: real units on loopback, the real CLI.
# Each test sources this, then calls 'setup'. Everything lives in a temp dir removed at exit.
set -euo pipefail

: "${KYOK_BUILD:?KYOK_BUILD must name the build directory}"
KYOK="$KYOK_BUILD/cli/kyok"
UNITD="$KYOK_BUILD/unitd/kyok-unitd"
export KYOK_UNITD="$UNITD"

# Each test runs in a network namespace of its own, with only a loopback, when it can (root,
# unshare and ip): a unit keeps the port it was made with, and a test that stops and restarts
# units must never find that port taken by a unit of another test running at the same time.
# A test that needs the outside network (npm) sets KYOK_T_SHARED_NET=1 before sourcing this.
if [ -z "${KYOK_T_NETNS:-}" ] && [ -z "${KYOK_T_SHARED_NET:-}" ] && [ "$(id -u)" -eq 0 ] &&
	command -v unshare >/dev/null && command -v ip >/dev/null && unshare --net true 2>/dev/null; then
	export KYOK_T_NETNS=1
	exec unshare --net bash -c 'ip link set lo up && exec bash "$@"' bash "$0" "$@"
fi

T_NAME=$(basename "$0" .sh)
T_FAILS=0

cleanup() {
	local rc=$?
	if [ -n "${T_DIR:-}" ] && [ -d "$T_DIR" ]; then
		for d in "$T_DIR"/inst*; do
			[ -f "$d/instance.json" ] && "$KYOK" down --instance "$d" >/dev/null 2>&1 || true
		done
		# Any unit still alive (a test that killed and restarted units by hand).
		for p in "$T_DIR"/inst*/unit-*/pid; do
			[ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
		done
		if [ $rc -ne 0 ]; then
			echo "---- unit logs ($T_NAME) ----" >&2
			tail -n 20 "$T_DIR"/inst*/unit-*/unit.log >&2 2>/dev/null || true
		fi
		[ -n "${KYOK_TEST_KEEP:-}" ] || rm -rf "$T_DIR"
	fi
	if store_is_pg; then
		pg_stop
	fi
	exit $rc
}

# KYOK_TEST_STORE=pg: the instances a test makes keep their key storage in PostgreSQL, a
# throw-away cluster of the test's own (tests/pg.sh), through 'kyok up' and $KYOK_STORE.
store_is_pg() { [ "${KYOK_TEST_STORE:-}" = pg ]; }

# store_query SQL: a read-only query on the key storage of $KYOK_INSTANCE (keys.db, or its
# PostgreSQL database), one row a line; for SQL both speak.
store_query() {
	if store_is_pg; then
		psql "$KYOK_PG_URI" -qAt -v ON_ERROR_STOP=1 -c "$1"
	else
		sqlite3 -readonly "$KYOK_INSTANCE/keys.db" "$1"
	fi
}

# sqlite_only WHAT: a part of a test that opens keys.db with sqlite3 itself, skipped (with
# why) when the key storage is PostgreSQL. Returns 1 then: 'sqlite_only "..." && ...'.
sqlite_only() {
	if store_is_pg; then
		printf 'skip %s: %s (opens keys.db with sqlite3; key storage is PostgreSQL)\n' \
			"$T_NAME" "$1"
		return 1
	fi
	return 0
}

setup() {
	# Files the tests write (passwords, values) are private, as kyok wants secret files.
	umask 077
	T_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kyok-$T_NAME.XXXXXX")
	trap cleanup EXIT
	export HOME="$T_DIR/home"
	mkdir -p "$HOME"
	export KYOK_TKE_FILES="$T_DIR/ws"
	export KYOK_INSTANCE="$T_DIR/inst"
	# Passwords are generated here, never fixed in the tree.
	mkdir -p "$T_DIR/pw"
	chmod 700 "$T_DIR/pw"
	if store_is_pg; then
		. "$(dirname "${BASH_SOURCE[0]}")/../pg.sh"
		pg_start
		export KYOK_STORE="$KYOK_PG_URI"
	else
		unset KYOK_STORE
	fi
}

# newpw NAME: creates $T_DIR/pw/NAME holding a fresh random password; prints its path.
newpw() {
	local f="$T_DIR/pw/$1"
	head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$f"
	chmod 600 "$f"
	echo "$f"
}

pass() { printf 'ok   %s: %s\n' "$T_NAME" "$*"; }
fail() {
	printf 'FAIL %s: %s\n' "$T_NAME" "$*" >&2
	T_FAILS=$((T_FAILS + 1))
}

# expect_ok DESC CMD...: the command must succeed.
expect_ok() {
	local desc=$1
	shift
	if out=$("$@" 2>&1); then
		pass "$desc"
	else
		fail "$desc (exit $?): $out"
	fi
}

# run_rc CMD...: runs the command; its exit status in rc, its output (stdout and stderr) in out.
run_rc() {
	rc=0
	out=$("$@" 2>&1) || rc=$?
}

# expect_rc DESC STATUS PATTERN CMD...: the command must exit with STATUS and its output match
# PATTERN (grep -E).
expect_rc() {
	local desc=$1 want=$2 pat=$3
	shift 3
	run_rc "$@"
	if [ "$rc" -ne "$want" ]; then
		fail "$desc: exit $rc, want $want: $out"
	elif ! grep -qE -- "$pat" <<<"$out"; then
		fail "$desc: output does not match /$pat/: $out"
	else
		pass "$desc"
	fi
}

# expect_fail DESC PATTERN CMD...: the command must fail and its output match PATTERN (grep -E).
expect_fail() {
	local desc=$1 pat=$2 rc=0
	shift 2
	out=$("$@" 2>&1) || rc=$?
	if [ $rc -eq 0 ]; then
		fail "$desc: succeeded but should have failed: $out"
	elif ! grep -qE -- "$pat" <<<"$out"; then
		fail "$desc: exit $rc but output does not match /$pat/: $out"
	else
		pass "$desc"
	fi
}

# expect_eq DESC GOT WANT
expect_eq() {
	if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: got '$2', want '$3'"; fi
}

# unit_state N: JSON state of selected-or-not unit N through the CLI.
state_json() { "$KYOK" status --output json; }

# json FILTER: jq over stdin, raw output.
json() { jq -r "$1"; }

finish() {
	if [ "$T_FAILS" -ne 0 ]; then
		echo "$T_NAME: $T_FAILS check(s) failed" >&2
		exit 1
	fi
	echo "$T_NAME: all checks passed"
}

# p11_tool LABEL PINFILE ARGS...: pkcs11-tool on the token labelled LABEL of $MODULE (the
# SoftHSM2 configuration $SOFTHSM2_CONF names), logged in, its output on stdout. The PIN is
# typed at its prompt through a terminal, never given on a command line. pkcs11-tool turns
# the terminal's echo off after it prints the prompt, and that drops whatever was typed
# before (TCSAFLUSH): the PIN goes in once the terminal says echo is off (waiting on that
# state, bounded), never merely after the prompt.
p11_tool() {
	local label=$1 pinfile=$2 f="$T_DIR/p11tool" chunk="" sp pid tty i prompted=0
	shift 2
	rm -rf "$f" && mkdir "$f" && mkfifo "$f/in" "$f/out"
	script -qfec "exec pkcs11-tool --module $MODULE --token-label $label --login $*" \
		/dev/null <"$f/in" >"$f/out" 2>&1 &
	sp=$!
	exec 7>"$f/in" 8<"$f/out"
	while read -r -d ':' -t 300 chunk <&8; do # up to "Please enter User PIN:"
		case $chunk in *PIN) prompted=1 && break ;; esac
	done
	for ((i = 1; i <= prompted * 1200; i++)); do
		[ -d "/proc/$sp" ] || break
		# script's child, through sh -c's exec, is pkcs11-tool; its standard input the terminal
		# (the file has no newline at its end: read's status would say end of file)
		pid=$(cat "/proc/$sp/task/$sp/children" 2>/dev/null) || pid=""
		pid=${pid%% *}
		if [ -n "$pid" ] && tty=$(readlink "/proc/$pid/fd/0" 2>/dev/null) &&
			[[ $(stty -F "$tty" -a 2>/dev/null) == *" -echo "* ]]; then
			break
		fi
		sleep 0.05
	done
	printf '%s\n' "$(cat "$pinfile")" >&7
	exec 7>&-
	tr -d '\r' <&8
	exec 8<&-
	wait "$sp"
}

# wait_gone PID [SECONDS]: waits until process PID has ended (no longer there, or a zombie
# not yet reaped), polling, at most SECONDS (default 10); past that the test fails, naming
# it, and the call returns 1. After a kill: the next step must not find the process alive.
wait_gone() {
	local st end=$((${EPOCHREALTIME/./} + ${2:-10} * 1000000))
	while kill -0 "$1" 2>/dev/null; do
		{ read -r st <"/proc/$1/stat"; } 2>/dev/null || return 0
		st=${st##*) }
		[ "${st:0:1}" = Z ] && return 0
		if [ "${EPOCHREALTIME/./}" -ge "$end" ]; then
			fail "process $1 still runs ${2:-10} s after it was told to end: $(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)"
			return 1
		fi
		sleep 0.01
	done
}

# ---- talking to units directly, the way a hostile or foreign client would ----------------

inst_file() { echo "$KYOK_INSTANCE/instance.json"; }

# inst_get KEY: "instance", "urlN" or "idN" of the instance description, from a copy in
# $T_DIR made by one jq run. The copy carries the time of change instance.json had before
# jq read it, and is made again when instance.json's time is not that one (newer, or older:
# a saved copy put back). The tests ask for these hundreds of times, and a process costs:
# a jq run each was a third of some tests' time.
inst_get() {
	local f="$KYOK_INSTANCE/instance.json" c t k v
	if [ -z "${T_DIR:-}" ]; then
		case $1 in
		instance) jq -r .instance "$f" ;;
		url*) jq -r ".units[] | select(.number==${1#url}) | .url" "$f" ;;
		id*) jq -r ".units[] | select(.number==${1#id}) | .id" "$f" ;;
		esac
		return
	fi
	c="$T_DIR/.inst${f//\//_}"
	if [ ! -f "$c" ] || [ "$f" -nt "$c" ] || [ "$f" -ot "$c" ]; then
		t="$c.$BASHPID" # here: $BASHPID in jq's redirection would be jq's own
		touch -r "$f" "$t.t" &&
			jq -r '"instance \(.instance)", (.units[] | "url\(.number) \(.url)", "id\(.number) \(.id)")' \
				"$f" >"$t" && touch -r "$t.t" "$t" && mv "$t" "$c" || { rm -f "$t" "$t.t"; return 1; }
		rm -f "$t.t"
	fi
	while IFS=' ' read -r k v; do # whatever IFS the test set (t_api_refusals: newline)
		[ "$k" = "$1" ] && { echo "$v"; return 0; }
	done <"$c"
	return 0
}
instance_id() { inst_get instance; }
unit_url() { inst_get "url$1"; }
unit_id() { inst_get "id$1"; }
unit_state() { curl -fsS "$(unit_url "$1")/v1/admin/state"; }
unit_counter() { unit_state "$1" | jq -r .next_counter; }
unit_incarnation() { unit_state "$1" | jq -r .incarnation; }

# sigkey_file NAME: the signature key file of administrator NAME in the workspace.
sigkey_file() {
	local f
	for f in "$KYOK_TKE_FILES"/sigkeys/"$1"-*.sigkey; do
		[ -f "$f" ] && { echo "$f"; return 0; }
	done
	echo "no signature key file for $1" >&2
	return 1
}

# cmd_json N OP [FIELDS_JSON [COUNTER [INCARNATION]]]: a command for unit N, at its next
# counter and present incarnation.
cmd_json() {
	local n=$1 op=$2 extra=${3:-'{}'} counter=${4:-} inc=${5:-}
	if [ -z "$counter" ] && [ -z "$inc" ]; then
		# The unit's counter and incarnation read by the same jq that writes the command.
		unit_state "$n" | jq -c --arg i "$(instance_id)" --arg u "$(unit_id "$n")" --arg op "$op" \
			--argjson x "$extra" '{kyok: "admin-command-v1", instance: $i, unit: $u,
			  incarnation: .incarnation, counter: .next_counter, op: $op} + $x'
		return
	fi
	[ -n "$counter" ] || counter=$(unit_counter "$n")
	[ -n "$inc" ] || inc=$(unit_incarnation "$n")
	jq -cn --arg i "$(instance_id)" --arg u "$(unit_id "$n")" --arg inc "$inc" \
		--argjson c "$counter" --arg op "$op" --argjson x "$extra" \
		'{kyok: "admin-command-v1", instance: $i, unit: $u, incarnation: $inc, counter: $c,
		  op: $op} + $x'
}

# plain_key NAME: administrator NAME's private key, decrypted once into the test's private
# directory (scrypt makes every decryption cost), for signing with plain openssl.
plain_key() {
	local k="$T_DIR/keys/$1.key" f
	f=$(sigkey_file "$1") || return 1
	if [ ! -f "$k" ] || [ "$k" -ot "$f" ]; then
		mkdir -p "$T_DIR/keys"
		chmod 700 "$T_DIR/keys"
		openssl pkey -in "$f" -passin "file:$T_DIR/pw/$1" -out "$k"
		openssl x509 -in "$f" -out "$T_DIR/keys/$1.crt"
	fi
	echo "$k"
}

# sign_cmd IN OUT NAME...: signs command JSON file IN with plain openssl, one SignerInfo per
# administrator NAME (passwords in $T_DIR/pw/NAME), DER SignedData in OUT.
sign_cmd() {
	local in=$1 out=$2 k first=1
	shift 2
	for name in "$@"; do
		k=$(plain_key "$name")
		if [ $first -eq 1 ]; then
			openssl cms -sign -binary -nodetach -md sha512 -keyid -in "$in" \
				-signer "${k%.key}.crt" -inkey "$k" -outform DER -out "$out"
			first=0
		else
			openssl cms -resign -binary -md sha512 -keyid -nocerts -inform DER -in "$out" \
				-signer "${k%.key}.crt" -inkey "$k" -outform DER -out "$out.tmp"
			mv "$out.tmp" "$out"
		fi
	done
}

# imprint_claim DER [CREDENTIAL]: the Kyok-Imprint-Claim value for a command, made with plain
# openssl: Ed25519 over "kyok-imprint-claim-v1\n" || DER (credential: the instance's).
imprint_claim() {
	local der=$1 cred=${2:-$KYOK_INSTANCE/imprint-credential.pem}
	{ printf 'kyok-imprint-claim-v1\n'; cat "$der"; } >"$der.claim-msg"
	openssl pkeyutl -sign -rawin -inkey "$cred" -in "$der.claim-msg" | base64 -w0
	rm -f "$der.claim-msg"
}

# post_cmd N DER: posts a DER command to unit N with an imprint claim made with the
# instance's credential (units in imprint mode demand it; the others check it), prints the
# reply body.
post_cmd() {
	curl -sS -X POST -H 'Content-Type: application/octet-stream' \
		-H "Kyok-Imprint-Claim: $(imprint_claim "$2")" --data-binary "@$2" \
		"$(unit_url "$1")/v1/admin/command"
}

# post_cmd_bare N DER [HEADER]: posts without a claim (or with HEADER as given), the way
# someone who only reaches the port would.
post_cmd_bare() {
	curl -sS -X POST -H 'Content-Type: application/octet-stream' ${3:+-H "$3"} \
		--data-binary "@$2" "$(unit_url "$1")/v1/admin/command"
}

# expect_refused DESC SLUG N DER [POSTER]: unit N must refuse with error code SLUG and change
# nothing. POSTER (default post_cmd) sends the command, e.g. post_cmd_bare.
expect_refused() {
	local desc=$1 slug=$2 n=$3 der=$4 poster=${5:-post_cmd} before after reply code detail
	before=$(unit_state "$n")
	reply=$("$poster" "$n" "$der")
	{ IFS= read -r code && IFS= read -r detail; } < <(jq -r '(.error.code // "none"), (.error.detail | tostring)' <<<"$reply" 2>/dev/null) || true
	[ -n "${code:-}" ] || code=none
	after=$(unit_state "$n")
	if [ "$code" != "$slug" ]; then
		fail "$desc: unit $n answered '$code', want '$slug': $reply"
	elif [ "$before" != "$after" ]; then
		fail "$desc: refused but the state of unit $n changed"
	else
		pass "$desc ($slug: $detail)"
	fi
}

# expect_accepted DESC N DER: unit N must run the command.
expect_accepted() {
	local reply
	reply=$(post_cmd "$2" "$3")
	if [ "$(jq -r .ok <<<"$reply")" = true ]; then
		pass "$1"
	else
		fail "$1: unit $2 refused: $reply"
	fi
}

# bundle_der FILE K OUT: the K-th (1-based) CMS block of a command bundle, as DER.
bundle_der() {
	awk -v k="$2" '/-----BEGIN CMS-----/{n++} n==k{print} /-----END CMS-----/{if(n==k) exit}' "$1" |
		openssl cms -cmsout -inform PEM -outform DER -out "$3"
}

# certify_unit CONF: the unit CONF describes makes its identity request, and the instance's
# anchor ($KYOK_INSTANCE/anchor.key) certifies it into the file CONF's identity_cert names,
# with openssl exactly as docs/formats.md shows: how an operator brings up a unit by hand.
certify_unit() {
	local conf=$1 dir crt ski
	dir=$(dirname "$conf")
	crt=$(sed -n 's/^identity_cert = //p' "$conf")
	"$UNITD" --config "$conf" --identity-request "$dir/unit.csr" || return 1
	ski=$(openssl req -in "$dir/unit.csr" -noout -pubkey | openssl pkey -pubin -outform DER |
		tail -c 133 | openssl dgst -sha256 -r | cut -c1-64 | sed 's/../&:/g; s/:$//')
	printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,digitalSignature,keyCertSign\nsubjectKeyIdentifier=%s\n' \
		"$ski" >"$dir/identity.ext"
	openssl x509 -req -in "$dir/unit.csr" -CA "$KYOK_INSTANCE/anchor.crt" \
		-CAkey "$KYOK_INSTANCE/anchor.key" -days 30 -extfile "$dir/identity.ext" -out "$crt" \
		2>/dev/null
}

# flip_byte FILE OFFSET: changes the byte at OFFSET (negative: from the end) to another value,
# whatever it was, so a tampering test always tampers.
flip_byte() {
	local off=$2 b
	[ "$off" -lt 0 ] && off=$(($(stat -c %s "$1") + off))
	b=$(od -An -tu1 -j "$off" -N1 "$1" 2>/dev/null | tr -d ' ')
	[ -n "$b" ] || { fail "flip_byte: $1 has no byte at $off"; return 1; }
	printf '%b' "\\$(printf '%03o' $(((b + 1) % 256)))" |
		dd of="$1" bs=1 seek="$off" conv=notrunc status=none
}

# ---- the key API over curl, as an application calls it --------------------------------------
# For a test that sets IFS=$'\n' (so that $(kp_auth ...) and $(json_body ...) expand to one
# curl argument a line), KT (the key content type) and, for db, DB (the keys.db path).

db() { sqlite3 "$DB" ".timeout 5000" "$@"; }
# hold_store_lock FILE: a sqlite3 shell (pid in $sqlpid) holds FILE's write lock (BEGIN
# IMMEDIATE) until told through fd 7: 'echo "COMMIT;" >&7; exec 7>&-; wait "$sqlpid"'.
hold_store_lock() {
	rm -f "$T_DIR/sql.fifo"
	mkfifo "$T_DIR/sql.fifo"
	sqlite3 "$1" <"$T_DIR/sql.fifo" >/dev/null 2>&1 &
	sqlpid=$!
	exec 7>"$T_DIR/sql.fifo"
	echo "BEGIN IMMEDIATE;" >&7
	local i
	for ((i = 0; i < 100; i++)); do
		sqlite3 -cmd ".timeout 0" "$1" "BEGIN IMMEDIATE; ROLLBACK;" >/dev/null 2>&1 || return 0
		sleep 0.1
	done
	fail "sqlite3 did not take the write lock of $1"
}
# token_of FILE [N]: an access token for the API key in FILE from unit N (default 1); the
# token service's answer in $T_DIR/tok.
token_of() {
	jq -j .apikey "$1" >"$T_DIR/ak.raw"
	curl -sS -o "$T_DIR/tok" --data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' \
		--data-urlencode "apikey@$T_DIR/ak.raw" "$(unit_url "${2:-1}")/identity/token" || true
	jq -r '.access_token // empty' "$T_DIR/tok" 2>/dev/null || true
}
# call N ARGS... PATH: curl to unit N; the body in $T_DIR/body, the headers in $T_DIR/hdr,
# the status in $status.
call() {
	local n=$1 path
	shift
	path=${*: -1}
	status=$(curl -sS -D "$T_DIR/hdr" -o "$T_DIR/body" -w '%{http_code}' "${@:1:$#-1}" \
		"$(unit_url "$n")$path")
}
auth() { printf -- '-H\nAuthorization: Bearer %s\n-H\nBluemix-Instance: %s\n' "$1" "$(instance_id)"; }
json_body() { printf -- '-H\nContent-Type: application/json\n--data-binary\n%s\n' "$1"; }
create_json() {
	printf '{"metadata":{"collectionType":"%s","collectionTotal":1},"resources":[{"type":"%s","name":"%s","extractable":false}]}' \
		"$KT" "$KT" "$1"
}
kp_code() {
	if [ ! -s "$T_DIR/body" ]; then echo none; else
		jq -r '.resources[0].reasons[0].code // "none"' "$T_DIR/body" 2>/dev/null || echo "not-json"
	fi
}
kp_message() { jq -r '.resources[0].reasons[0].message // empty' "$T_DIR/body" 2>/dev/null || true; }
# answers DESC N STATUS CODE ARGS...: unit N answers STATUS with Key Protect reason CODE. A write
# made by hand reaches a unit's caches within a fraction of a second: a few requests are made
# until the answer changes (waiting on the state, never on a time).
answers() {
	local desc=$1 n=$2 want=$3 code=$4 got="" i
	shift 4
	for ((i = 1; i <= 100; i++)); do
		call "$n" "$@"
		got="$status $(kp_code)"
		[ "$got" = "$want $code" ] && break
	done
	if [ "$got" = "$want $code" ]; then
		pass "$desc: unit $n: $got ($(kp_message))"
	else
		fail "$desc: unit $n: got $got, want $want $code: $(head -c 300 "$T_DIR/body")"
	fi
}
# mkkey NAME: a root key made through unit 1 with the token in $W; prints its id.
mkkey() {
	call 1 $(auth "$W") $(json_body "$(create_json "$1")") -X POST /api/v2/keys
	jq -r '.resources[0].id' "$T_DIR/body"
}
# metrics_of N FILE: GET /metrics of unit N into FILE, checked by prom_check.awk (a fault fails
# the test, named).
metrics_of() {
	curl -sS -o "$2" "$(unit_url "$1")/metrics"
	if ! awk -f "$(dirname "${BASH_SOURCE[0]}")/prom_check.awk" "$2" >"$T_DIR/prom.err"; then
		fail "GET /metrics of unit $1 is not valid exposition format: $(head -5 "$T_DIR/prom.err")"
	fi
	# Every route of the unit has its own slot (a full table says so in the unit's log).
	if grep -h "metrics: no slot left" "$KYOK_INSTANCE"/unit-*/unit.log 2>/dev/null | head -3 | grep .; then
		fail "the metrics route table of a unit is full: raise UNITD_METRICS_ROUTES_MAX"
	fi
}
# metric FILE 'name{labels}': its value in FILE, 0 when the sample is not there.
metric() {
	awk -v s="$2" 'index($0, s " ") == 1 { v = substr($0, length(s) + 2) } END { print v == "" ? 0 : v }' "$1"
}
# ready_is DESC N STATUS [REASON...]: GET /ready of unit N answers STATUS with exactly these
# reason codes, asked until it does (the storage check behind it runs at most once a second:
# waiting on the answer, bounded).
ready_is() {
	local desc=$1 n=$2 want=$3 got="" i IFS=' '
	shift 3
	local codes="$*"
	for ((i = 1; i <= 300; i++)); do
		got="$(curl -sS -o "$T_DIR/ready" -w '%{http_code}' "$(unit_url "$n")/ready") $(jq -r '[.reasons[].code] | join(" ")' "$T_DIR/ready" 2>/dev/null || echo not-json)"
		[ "$got" = "$want $codes" ] && break
		sleep 0.1
	done
	if [ "$got" = "$want $codes" ]; then
		pass "$desc: unit $n: GET /ready $got"
	else
		fail "$desc: unit $n: GET /ready: got '$got', want '$want $codes': $(head -c 300 "$T_DIR/ready")"
	fi
}
