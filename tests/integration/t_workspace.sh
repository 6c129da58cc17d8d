#!/usr/bin/env bash
# The workspace commands (no crypto unit needed): signature keys and key parts, their
# listings, the checks on names, passwords and key part values, deletion, and the
# interactive prompts driven through a real terminal (tmux): passwords and key part values
# are never echoed, never in the process list, never in a file other than the key files.
. "$(dirname "$0")/helpers.sh"
setup
. "$(dirname "$0")/tty.sh"

expect_match() {
	if grep -qE -- "$2" <<<"$3"; then pass "$1"; else fail "$1: /$2/ not in: $3"; fi
}
expect_nomatch() {
	if grep -qF -- "$2" <<<"$3"; then fail "$1: '$2' found"; else pass "$1"; fi
}
nfiles() { find "$KYOK_TKE_FILES/$1" -type f 2>/dev/null | wc -l; }
# expect_refused_ws DESC PATTERN EXIT CMD...: refused with PATTERN and EXIT, no file created.
expect_refused_ws() {
	local desc=$1 pat=$2 want=$3 before
	shift 3
	before=$(find "$KYOK_TKE_FILES" -type f 2>/dev/null | sort)
	run_rc "$@"
	if [ $rc -ne "$want" ]; then
		fail "$desc: exit $rc, want $want: $out"
	elif ! grep -qE -- "$pat" <<<"$out"; then
		fail "$desc: output does not match /$pat/: $out"
	elif [ "$before" != "$(find "$KYOK_TKE_FILES" -type f 2>/dev/null | sort)" ]; then
		fail "$desc: refused but the workspace changed"
	else
		pass "$desc (exit $rc, no file written)"
	fi
}

# ---- empty workspace ----------------------------------------------------------------------------
run_rc "$KYOK" tke sigkeys
expect_eq "sigkeys on an empty workspace: exit 0" "$rc" 0
expect_match "... says how to create one" "no signature keys yet: 'kyok tke sigkey-add'" "$out"
expect_eq "sigkeys json: empty list" "$("$KYOK" tke sigkeys --output json)" '{"sigkeys":[]}'
expect_eq "mks json: empty list" "$("$KYOK" tke mks --output json)" '{"keyparts":[]}'

# ---- signature keys -------------------------------------------------------------------------------
PA=$(newpw alice)
PB=$(newpw bob)
expect_ok "sigkey-add alice" "$KYOK" tke sigkey-add --name alice --password-file "$PA"
expect_ok "sigkey-add bob" "$KYOK" tke sigkey-add --name bob --password-file "$PB"
expect_ok "sigkey-add a 30-character name" "$KYOK" tke sigkey-add \
	--name "$(printf 'n%.0s' $(seq 30))" --password-file "$PA"
expect_refused_ws "sigkey-add: 31-character name" "administrator name must be 1 to 30 printable characters" 3 \
	"$KYOK" tke sigkey-add --name "$(printf 'n%.0s' $(seq 31))" --password-file "$PA"
expect_refused_ws "sigkey-add: empty name" "administrator name must be 1 to 30" 3 \
	"$KYOK" tke sigkey-add --name "" --password-file "$PA"
expect_refused_ws "sigkey-add: name with a tab" "administrator name must be 1 to 30" 3 \
	"$KYOK" tke sigkey-add --name "$(printf 'a\tb')" --password-file "$PA"
printf 'seven77\n' >"$T_DIR/pw/short"
expect_refused_ws "sigkey-add: 7-character password" "password too short: use at least 8 characters" 3 \
	"$KYOK" tke sigkey-add --name carol --password-file "$T_DIR/pw/short"
expect_refused_ws "sigkey-add: a second key for alice" "already exists: .*one key per administrator" 3 \
	"$KYOK" tke sigkey-add --name alice --password-file "$PA"
expect_refused_ws "sigkey-add: no terminal and no password source" "no terminal to ask for password .*use --password-file or --password-fd" 2 \
	"$KYOK" tke sigkey-add --name carol </dev/null
expect_refused_ws "sigkey-add: no terminal and no name" "no terminal to ask for administrator name: use --name" 2 \
	"$KYOK" tke sigkey-add --password-file "$PA" </dev/null
expect_ok "sigkey-add carol, password from a descriptor" \
	"$KYOK" tke sigkey-add --name carol --password-fd 7 7<"$(newpw carol)"

run_rc "$KYOK" tke sigkeys
expect_match "sigkeys table header" "^NUMBER +SELECTED +ADMIN NAME +SKI +FILE$" "$out"
expect_match "sigkeys: alice is number 1, not selected" "^1 +no +alice +[0-9a-f]{16} +alice-[0-9a-f]{8}\.sigkey$" "$out"
expect_match "sigkeys: carol is number 4" "^4 +no +carol " "$out"
js=$("$KYOK" tke sigkeys --output json)
expect_eq "sigkeys json: names in creation order" "$(jq -r '[.sigkeys[].name] | join(",")' <<<"$js")" \
	"alice,bob,$(printf 'n%.0s' $(seq 30)),carol"
expect_eq "sigkeys json: numbers 1-4, none selected" \
	"$(jq -r '[.sigkeys[] | "\(.number):\(.selected)"] | join(" ")' <<<"$js")" "1:false 2:false 3:false 4:false"
expect_eq "sigkeys json: full 64-hex SKIs" "$(jq -r '[.sigkeys[].ski | test("^[0-9a-f]{64}$")] | all' <<<"$js")" true
FA=$(jq -r '.sigkeys[0].file' <<<"$js")
expect_eq "alice's key file mode 0600" "$(stat -c %a "$FA")" 600
expect_eq "sigkeys dir mode 0700" "$(stat -c %a "$KYOK_TKE_FILES/sigkeys")" 700
expect_ok "alice's key opens with her password (openssl)" openssl pkey -in "$FA" -passin "file:$PA" -noout

expect_ok "select alice, bob" "$KYOK" tke sigkey-sel --sigkeys 1,2
expect_eq "sigkeys json: 1,2 selected" \
	"$("$KYOK" tke sigkeys --output json | jq -r '[.sigkeys[] | select(.selected) | .name] | join(",")')" "alice,bob"
expect_refused_ws "sigkey-sel: number 9" "^error: --sigkeys: wrong usage: number 9 out of range: use 1 to 4" 2 "$KYOK" tke sigkey-sel --sigkeys 9
expect_refused_ws "sigkey-sel: 1,1" "^error: --sigkeys: wrong usage: number 1 given twice" 2 "$KYOK" tke sigkey-sel --sigkeys 1,1

# ---- key parts -----------------------------------------------------------------------------------
VAL=$(openssl rand -hex 32)
printf '%s\n' "$VAL" >"$T_DIR/pw/value"
chmod 600 "$T_DIR/pw/value"
PK=$(newpw part)
run_rc "$KYOK" tke mk-add --value --value-file "$T_DIR/pw/value" --description "known value" --password-file "$PK"
expect_eq "mk-add --value --value-file: exit 0" "$rc" 0
VP_VAL=$({ printf '\001'; xxd -r -p <<<"$VAL"; } | openssl dgst -sha256 -r | cut -c1-64)
expect_match "... prints VP = SHA-256(0x01 || value)" "VP +$VP_VAL" "$out"
expect_ok "mk-add --random" "$KYOK" tke mk-add --random --description "random part" --password-file "$PK"
openssl rand -hex 32 | cut -c1-63 >"$T_DIR/pw/v63"
expect_refused_ws "mk-add --value: 63 hex digits" "expected exactly 64 hex digits .*got 63 characters" 3 \
	"$KYOK" tke mk-add --value --value-file "$T_DIR/pw/v63" --description x --password-file "$PK"
{ openssl rand -hex 31; } | sed 's/$/0g/' >"$T_DIR/pw/vg"
expect_refused_ws "mk-add --value: a non-hex digit" "expected exactly 64 hex digits .*other characters" 3 \
	"$KYOK" tke mk-add --value --value-file "$T_DIR/pw/vg" --description x --password-file "$PK"
openssl rand -hex 33 >"$T_DIR/pw/v66"
expect_refused_ws "mk-add --value: 66 hex digits" "expected exactly 64 hex digits" 3 \
	"$KYOK" tke mk-add --value --value-file "$T_DIR/pw/v66" --description x --password-file "$PK"
expect_refused_ws "mk-add: both --random and --value" "give one of --random, --value, --card and --token-module" 2 \
	"$KYOK" tke mk-add --random --value --description x --password-file "$PK"
expect_refused_ws "mk-add: neither --random nor --value" "give one of --random, --value, --card and --token-module" 2 \
	"$KYOK" tke mk-add --description x --password-file "$PK"
expect_refused_ws "mk-add: short password" "password too short" 3 \
	"$KYOK" tke mk-add --random --description x --password-file "$T_DIR/pw/short"
expect_refused_ws "mk-add: 128-character description" "1 to 127 printable" 2 \
	"$KYOK" tke mk-add --random --description "$(printf 'd%.0s' $(seq 128))" --password-file "$PK"
expect_refused_ws "mk-add --value: no terminal, no file" "no terminal to ask for key part value" 2 \
	"$KYOK" tke mk-add --value --description x --password-file "$PK" </dev/null

run_rc "$KYOK" tke mks
expect_match "mks table header" "^NUMBER +DESCRIPTION +VP +HELD IN +FILE$" "$out"
expect_match "mks: known value is number 1 with its VP" "^1 +known value +${VP_VAL:0:16} +file +[0-9a-f]{8}\.keypart$" "$out"
js=$("$KYOK" tke mks --output json)
expect_eq "mks json: 2 parts in creation order" "$(jq -r '[.keyparts[] | "\(.number):\(.description)"] | join(",")' <<<"$js")" \
	"1:known value,2:random part"
expect_eq "mks json: full VP" "$(jq -r '.keyparts[0].vp' <<<"$js")" "$VP_VAL"
P1=$(jq -r '.keyparts[0].file' <<<"$js")
expect_eq "key part file mode 0600" "$(stat -c %a "$P1")" 600
expect_eq "key part header vp" "$(sed -n 's/^vp: //p' "$P1")" "$VP_VAL"

# ---- deletion ------------------------------------------------------------------------------------
FB=$(jq -r '.sigkeys[1].file' <<<"$("$KYOK" tke sigkeys --output json)")
expect_refused_ws "sigkey-rm without --yes, no terminal: cancelled" "cancelled" 2 \
	"$KYOK" tke sigkey-rm --sigkey 2 </dev/null
expect_ok "sigkey-rm --sigkey 2 --yes" "$KYOK" tke sigkey-rm --sigkey 2 --yes
if [ -e "$FB" ]; then fail "bob's key file still there"; else pass "bob's key file deleted"; fi
js=$("$KYOK" tke sigkeys --output json)
expect_eq "sigkeys after rm: 3 left, bob gone" "$(jq -r '[.sigkeys[].name] | join(",")' <<<"$js")" \
	"alice,$(printf 'n%.0s' $(seq 30)),carol"
expect_eq "... selection keeps alice only" "$(jq -r '[.sigkeys[] | select(.selected) | .name] | join(",")' <<<"$js")" "alice"
expect_refused_ws "sigkey-rm: number 7" "^error: --sigkey: wrong usage: number 7 out of range: use 1 to 3" 2 "$KYOK" tke sigkey-rm --sigkey 7 --yes
expect_refused_ws "mk-rm without --yes, no terminal: cancelled" "cancelled" 2 \
	"$KYOK" tke mk-rm --mk 2 </dev/null
P2=$(jq -r '.keyparts[1].file' <<<"$("$KYOK" tke mks --output json)")
expect_ok "mk-rm --mk 2 --yes" "$KYOK" tke mk-rm --mk 2 --yes
if [ -e "$P2" ]; then fail "key part 2 file still there"; else pass "key part 2 file deleted"; fi
expect_eq "mks after rm: 1 left" "$("$KYOK" tke mks --output json | jq -r '[.keyparts[].description] | join(",")')" \
	"known value"

# ---- passwords never in the process list -----------------------------------------------------------
# ps is sampled while commands that hold passwords run.
PS_LOG=$T_DIR/ps.log
: >"$PS_LOG"
sample_ps() {
	while kill -0 "$1" 2>/dev/null; do
		ps -eo args >>"$PS_LOG" 2>/dev/null
		sleep 0.02
	done
}
"$KYOK" tke sigkey-add --name dave --password-file "$(newpw dave)" >/dev/null 2>&1 &
sample_ps $!
wait $! || fail "sigkey-add dave failed"
"$KYOK" tke mk-add --random --description "ps check" --password-fd 5 5<"$PK" >/dev/null 2>&1 &
sample_ps $!
wait $! || fail "mk-add with --password-fd failed"

# ---- interactive prompts in a real terminal ----------------------------------------------------------
if tty_start KYOK_TKE_FILES="$KYOK_TKE_FILES"; then
	PE=$(newpw erin)
	PEV=$(cat "$PE")
	fresh_screen
	type_line "$KYOK tke sigkey-add"
	PWQ="^password for the new signature key of 'erin': ?$"
	wait_n 1 "^administrator name: ?$" && type_line erin
	wait_n 1 "$PWQ" && type_line "$PEV"
	wait_n 1 "^repeat password for the new signature key of 'erin': ?$"
	ps -eo args >>"$PS_LOG"
	# Two different entries: asked again.
	type_line "${PEV}x"
	wait_n 1 "^the two entries differ, try again$"
	wait_n 2 "$PWQ" && type_line "$PEV"
	wait_n 2 "^repeat password" && type_line "$PEV"
	wait_n 1 "^created signature key [0-9]+ for administrator 'erin'" &&
		pass "interactive sigkey-add created erin's key"
	FE=$(jq -r '.sigkeys[] | select(.name == "erin") | .file' <<<"$("$KYOK" tke sigkeys --output json)")
	expect_ok "erin's key opens with the typed password (openssl)" \
		openssl pkey -in "$FE" -passin "file:$PE" -noout

	# A key part value typed at the prompt, then its password.
	V2=$(openssl rand -hex 32)
	printf '%s\n' "$V2" >"$T_DIR/pw/value2"
	PF=$(newpw frank)
	PFV=$(cat "$PF")
	fresh_screen
	type_line "$KYOK tke mk-add --value --description 'typed value'"
	wait_n 1 "^key part value \(64 hex digits, not shown\): ?$" && type_line "$V2"
	wait_n 1 "^password for the new key part 'typed value': ?$" && type_line "$PFV"
	wait_n 1 "^repeat password" && type_line "$PFV"
	wait_n 1 "^created key part [0-9]+ 'typed value'" && pass "interactive mk-add --value created the part"
	expect_match "... with the VP of the typed value" \
		"$({ printf '\001'; xxd -r -p <<<"$V2"; } | openssl dgst -sha256 -r | cut -c1-64)" "$(screen)"

	# Ctrl-C at a password prompt: nothing written, the terminal echoes again.
	before=$(find "$KYOK_TKE_FILES" -type f | sort)
	fresh_screen
	type_line "$KYOK tke sigkey-add --name gina"
	wait_n 1 "^password for the new signature key of 'gina': ?$"
	"${TM[@]}" send-keys -t t C-c
	type_line 'echo "rc=$?"; stty -a | grep -oE "(^| )-?echo( |$)"'
	wait_n 1 "^rc=[0-9]+$" && wait_n 1 "^ ?-?echo ?$"
	expect_match "Ctrl-C at a password prompt: exit 130" "^rc=130$" "$(screen)"
	expect_match "... echo is on again" "^ ?echo ?$" "$(screen)"
	expect_eq "... nothing written" "$(find "$KYOK_TKE_FILES" -type f | sort)" "$before"

	# A confirmation answered 'n' keeps the file.
	fresh_screen
	type_line "$KYOK tke mk-rm --mk 1"
	wait_n 1 "\[y/N\]: ?$" && type_line n
	wait_n 1 "cancelled"
	if [ -e "$P1" ]; then pass "mk-rm answered 'n': file kept"; else fail "mk-rm answered 'n' deleted the file"; fi

	fresh_screen
	expect_nomatch "terminal never showed erin's password" "$PEV" "$SEEN"
	expect_nomatch "terminal never showed the key part value" "$V2" "$SEEN"
	expect_nomatch "terminal never showed frank's password" "$PFV" "$SEEN"
	expect_match "(the check sees the terminal: it holds the commands typed)" "sigkey-add --name gina" "$SEEN"
fi

# ---- a key file is named after its administrator -------------------------------------------------------
expect_ok "sigkey-add '.ops lead/2'" \
	"$KYOK" tke sigkey-add --name ".ops lead/2" --password-file "$(newpw ops)"
expect_match "... its file: the name with every character but A-Z a-z 0-9 - _ (or a first .) made _" \
	"^[0-9]+ +no +\.ops lead/2 +[0-9a-f]{16} +_ops_lead_2-[0-9a-f]{8}\.sigkey$" "$("$KYOK" tke sigkeys)"

# ---- no secret outside the key files ------------------------------------------------------------------
for name in alice bob carol dave part erin frank; do
	f=$T_DIR/pw/$name
	[ -f "$f" ] || continue
	v=$(cat "$f")
	hits=$(grep -rlF --exclude-dir=pw -- "$v" "$T_DIR" 2>/dev/null || true)
	expect_eq "password of $name in no file outside the password dir" "$hits" ""
	expect_nomatch "password of $name never in the process list" "$v" "$(cat "$PS_LOG")"
done
for v in "$VAL" "${V2:-}"; do
	[ -n "$v" ] || continue
	hits=$(grep -rliF --exclude-dir=pw -- "$v" "$T_DIR" 2>/dev/null || true)
	expect_eq "key part value ${v:0:8}... in no file" "$hits" ""
done
expect_match "(ps was sampled while the commands ran)" "tke sigkey-add --name dave --password-file" "$(cat "$PS_LOG")"
expect_match "(... and while a prompt waited)" "tke sigkey-add$" "$(cat "$PS_LOG")"

finish
