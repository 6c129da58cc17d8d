# Shared by the integration tests: real units on loopback, the real CLI.
# Each test sources this, then calls 'setup'. Everything lives in a temp dir removed at exit.
set -euo pipefail

: "${KYOK_BUILD:?KYOK_BUILD must name the build directory}"
KYOK="$KYOK_BUILD/cli/kyok"
UNITD="$KYOK_BUILD/unitd/kyok-unitd"
export KYOK_UNITD="$UNITD"

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
		rm -rf "$T_DIR"
	fi
	exit $rc
}

setup() {
	T_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kyok-$T_NAME.XXXXXX")
	trap cleanup EXIT
	export HOME="$T_DIR/home"
	mkdir -p "$HOME"
	export KYOK_TKE_FILES="$T_DIR/ws"
	export KYOK_INSTANCE="$T_DIR/inst"
	# Passwords are generated here, never fixed in the tree.
	mkdir -p "$T_DIR/pw"
	chmod 700 "$T_DIR/pw"
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
