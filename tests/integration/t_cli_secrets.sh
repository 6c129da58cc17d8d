#!/usr/bin/env bash
# The CLI keeps its secrets to itself.
#  - Secret files open to other users are refused, as ssh refuses such a private key, with
#    the chmod that fixes them: a signature key file, a key part file, a password file, an
#    API key file, and the workspace directory. Nothing is sent to any unit.
#  - A CLI holding a decrypted key part (waiting at its second key part password, in a real
#    terminal under 'ulimit -c unlimited') runs with core dumps off (RLIMIT_CORE 0) and is not
#    dumpable: killed with SIGABRT it leaves no core file, even with its core limit raised
#    back from outside, where a process that does not protect itself leaves one.
. "$(dirname "$0")/helpers.sh"
setup

# expect_private_refusal DESC PATH CHMOD CMD...: refused, the message names PATH and the fix.
expect_private_refusal() {
	local desc=$1 path=$2 mode=$3
	shift 3
	run_rc "$@"
	if [ $rc -eq 0 ]; then
		fail "$desc: succeeded: $out"
	elif ! grep -qF -- "'$path': open to other users" <<<"$out" ||
		! grep -qF -- "run 'chmod $mode $path'" <<<"$out"; then
		fail "$desc: exit $rc, message without the path or the fix: $out"
	else
		pass "$desc: $(grep -m1 '^error:' <<<"$out")"
	fi
}

"$KYOK" up >/dev/null
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null
"$KYOK" tke sigkey-add --name alice --password-file "$(newpw alice)" >/dev/null
"$KYOK" tke sigkey-add --name bob --password-file "$(newpw bob)" >/dev/null
"$KYOK" tke cryptounit-admin-add --sigkey 1 >/dev/null
"$KYOK" tke cryptounit-admin-add --sigkey 2 >/dev/null
"$KYOK" tke sigkey-sel --sigkeys 1 >/dev/null
SK=$(sigkey_file alice)
state_before=$(unit_state 1)

# ---- secret files open to others ----------------------------------------------------------------
chmod 644 "$SK"
expect_private_refusal "a signature key file of mode 0644" "$SK" 600 \
	"$KYOK" tke cryptounit-thrhld-set --signature 1 --revocation 1 --password-file "$T_DIR/pw/alice"
chmod 640 "$SK"
expect_private_refusal "a signature key file readable by its group" "$SK" 600 \
	"$KYOK" tke cryptounit-thrhld-set --signature 1 --revocation 1 --password-file "$T_DIR/pw/alice"
chmod 600 "$SK"
chmod 644 "$T_DIR/pw/alice"
expect_private_refusal "a password file of mode 0644" "$T_DIR/pw/alice" 600 \
	"$KYOK" tke cryptounit-thrhld-set --signature 1 --revocation 1 --password-file "$T_DIR/pw/alice"
chmod 600 "$T_DIR/pw/alice"
expect_eq "nothing reached the unit" "$(unit_state 1)" "$state_before"
chmod 755 "$KYOK_TKE_FILES"
expect_private_refusal "a workspace directory of mode 0755" "$KYOK_TKE_FILES" 700 \
	"$KYOK" tke sigkeys
expect_private_refusal "... also for a command that signs" "$KYOK_TKE_FILES" 700 \
	"$KYOK" tke cryptounit-thrhld-set --signature 1 --revocation 1 --password-file "$T_DIR/pw/alice"
chmod 700 "$KYOK_TKE_FILES"
expect_ok "private again, the command runs" \
	"$KYOK" tke cryptounit-thrhld-set --signature 1 --revocation 1 --password-file "$T_DIR/pw/alice"

"$KYOK" tke mk-add --random --description "part one" --password-file "$(newpw p1)" >/dev/null
"$KYOK" tke mk-add --random --description "part two" --password-file "$(newpw p2)" >/dev/null
"$KYOK" tke sigkey-sel --sigkeys 1,2 >/dev/null
P1=$("$KYOK" tke mks --output json | jq -r '.keyparts[] | select(.number == 1) | .file')
chmod 604 "$P1"
before=$(unit_state 1)
expect_private_refusal "a key part file readable by all users" "$P1" 600 \
	"$KYOK" tke cryptounit-mk-load --parts 1,2 --password-file "$T_DIR/pw/p1" \
	--password-file "$T_DIR/pw/p2" --password-file "$T_DIR/pw/alice" --password-file "$T_DIR/pw/bob"
expect_eq "no key part reached the unit" "$(unit_state 1)" "$before"
chmod 600 "$P1"

printf '{"apikey":"%s"}\n' "$(head -c 32 /dev/urandom | xxd -p -c 64)" >"$T_DIR/some.apikey"
chmod 644 "$T_DIR/some.apikey"
expect_private_refusal "an API key file of mode 0644" "$T_DIR/some.apikey" 600 \
	"$KYOK" kp keys --apikey-file "$T_DIR/some.apikey"
# A password given through a pipe is no file others can open later: accepted.
expect_ok "a password through a pipe (--password-file <(...))" \
	"$KYOK" tke cryptounit-thrhld-set --signature 1 --revocation 1 \
	--password-file <(cat "$T_DIR/pw/alice") --password-file "$T_DIR/pw/bob"

# ---- no core dump of a CLI holding a key part ----------------------------------------------------
if ! command -v tmux >/dev/null; then
	echo "skip $T_NAME: tmux not installed, core dumps not tested" >&2
	finish
	exit 0
fi
D=$T_DIR/dumps
mkdir -p "$D/control" "$D/kyok"
# Control: a process that does not protect itself, killed the same way in the same kind of
# directory, shows whether core_pattern writes a core file there.
(cd "$D/control" && ulimit -c unlimited && exec sleep 600) &
ctl=$!
while [ "$(awk '{print $1}' "/proc/$ctl/comm" 2>/dev/null)" != sleep ]; do sleep 0.05; done
kill -ABRT "$ctl"
wait "$ctl" 2>/dev/null || true
control_core=$(find "$D/control" -type f | head -n 1)

. "$(dirname "$0")/tty.sh"
TTY_WAIT=600
tty_start KYOK_TKE_FILES="$KYOK_TKE_FILES" KYOK_INSTANCE="$KYOK_INSTANCE" || {
	finish
	exit 0
}
type_line "cd $D/kyok && ulimit -c unlimited && exec $KYOK tke cryptounit-mk-load --parts 1,2"
wait_n 1 "^password for key part" && type_file "$T_DIR/pw/p1"
if wait_n 2 "^password for key part"; then
	pid=$(tty_pid)
	expect_eq "the CLI at its second key part password is kyok" "$(cat "/proc/$pid/comm")" kyok
	expect_eq "its core file size limit is 0, though started under 'ulimit -c unlimited'" \
		"$(awk '/^Max core file size/ {print $5, $6}' "/proc/$pid/limits")" "0 0"
	if [ "$(id -u)" -ne 0 ]; then
		# The kernel gives the /proc files of a process that is not dumpable to root.
		expect_eq "it is not dumpable (its /proc files belong to root)" \
			"$(stat -c %u "/proc/$pid/status")" 0
	else
		echo "info: run as root, the dumpable flag of another process cannot be seen from outside (test_buf checks it in-process)"
	fi
	# Its core limit raised back from outside: only the dumpable flag can stop a core now.
	raised=no
	if prlimit --pid "$pid" --core=unlimited:unlimited 2>/dev/null; then
		raised=yes
		expect_eq "its core limit raised back from outside" \
			"$(awk '/^Max core file size/ {print $5, $6}' "/proc/$pid/limits")" "unlimited unlimited"
	fi
	kill -ABRT "$pid"
	wait_gone "$pid"
	if [ -n "$control_core" ]; then
		expect_eq "killed with SIGABRT (core limit raised back: $raised), the CLI left no core file where the control process left $(basename "$control_core")" \
			"$(find "$D/kyok" -type f | wc -l)" 0
	else
		expect_eq "killed with SIGABRT, the CLI left no core file (core_pattern '$(cat /proc/sys/kernel/core_pattern)' writes none here for the control either)" \
			"$(find "$D/kyok" -type f | wc -l)" 0
	fi
fi

finish
