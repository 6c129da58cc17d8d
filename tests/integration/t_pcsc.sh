#!/usr/bin/env bash
# The card stack, end to end: a private pcscd with two vpcd readers, kyok-card as the card,
# lib/card (through card_probe) on the workstation's side, libpcsclite between them:
#   the readers are listed; a card inserted in reader 1 is seen, the kyok applet selected,
#     a wrong PIN refused with the tries left, the right one verified
#   the card removed: the open session fails with card-removed; reinserted: a new session
#     finds the PIN not verified (the card forgot it at power off); so does the session after
#     one that ended (ending a session resets the card); a session ended leaving the card
#     powered keeps it verified for the next one
#   pcscd restarted under a verified session: kyok-card connects again by itself, the old
#     session fails with card-removed, the new one finds the PIN not verified
#   GET DEVICE's long answer comes through 61xx and GET RESPONSE, a 300-byte command through
#     command chaining
#   a second card in reader 2 answers too; a second session on it is refused (card-in-use);
#     five wrong PINs block it (card-blocked); reader 3 does not exist; a wait ends at its
#     bound; a card that asks for GET RESPONSE for ever is given up (card-protocol, or
#     too-large past 16384 bytes); a command past 16384 bytes is not sent; without
#     pcscd, pcsc-unavailable; the harness sees a pcscd that cannot open its readers' port
#   the APDUs crossed the readers: pcscd's --apdu log holds every SELECT answered, and the parser
#     finds a value that crossed and not one that did not
#   kyok-card refuses an EEPROM or chip key file others can read, an unreachable reader (after
#     its bound), a reader that breaks the vpcd protocol, and wrong usage
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/pcsc.sh"
pcsc_namespace "$@"
setup
pcsc_start || { fail "pcscd did not start"; exit 1; }

SELECT_HEX=00A4040006F06B796F6B0100 # with Le 00
selects=0 # SELECTs the card answered

# A session with card_probe, as a coprocess: ask CMD puts its one-line answer in $ans.
sess_open() {
	coproc SESS { "$CARD_PROBE" session "$1" 2>&1; }
	ask open
}
ask() {
	echo "$1" >&"${SESS[1]}"
	IFS= read -r -t 300 ans <&"${SESS[0]}" || ans="(no answer from card_probe)"
	if [ "$1" = select ] && [[ "$ans" == ok* ]]; then selects=$((selects + 1)); fi
}
# sess_close: ends the session; card_probe must exit 0 (a sanitizer's finding would not).
sess_close() {
	local pid=$SESS_PID rc=0
	eval "exec ${SESS[1]}>&-"
	wait "$pid" || rc=$?
	[ $rc -eq 0 ] || fail "card_probe session ended with exit $rc"
}
# expect_ans DESC CMD PATTERN: the session's answer to CMD matches PATTERN (grep -E).
expect_ans() {
	ask "$2"
	if grep -qE -- "$3" <<<"$ans"; then pass "$1: ${ans:0:300}"; else
		fail "$1: '${2:0:80}' answered '${ans:0:300}'"; fi
}

# PINs: generated, in files (never on argv), 6 to 16 characters as the card wants them.
newpin() {
	local f="$T_DIR/pw/$1"
	printf '%08d' $((RANDOM * 32768 + RANDOM)) >"$f"
	chmod 600 "$f"
	echo "$f"
}
pin_a1=$(newpin alice-1)
pin_a2=$(newpin alice-2)
pin_b1=$(newpin bob-1)
pin_b2=$(newpin bob-2)
# The wrong PIN has 7 digits: the card takes it (6 to 16 characters), and newpin's PINs have 8
# or more, so it is never one of them by chance.
wrong="$T_DIR/pw/wrong"
printf '%07d' $(((RANDOM * 32768 + RANDOM) % 10000000)) >"$wrong"
chmod 600 "$wrong"
hex() { xxd -p "$1" | tr -d '\n' | tr '[:lower:]' '[:upper:]'; }
# fields HEX...: the card's field list, each a 2-byte length then its bytes.
fields() {
	local h
	for h in "$@"; do printf '%04X%s' $((${#h} / 2)) "$h"; done
}
# make_ca PIN1 PIN2: CREATE ZONE on the blank card of the open session (a CA card).
make_ca() {
	expect_ans "a blank card becomes a CA card (CREATE ZONE)" \
		"apdu 80100000$(fields "$(hex "$1")" "$(hex "$2")")" '^ok 9000 $'
}

# ---- readers -------------------------------------------------------------------------------
readers=$("$CARD_PROBE" readers)
expect_eq "pcscd lists the two vpcd readers" "$(wc -l <<<"$readers")" 2
expect_ok "reader 1 is empty" pcsc_wait_card 1 absent
out=$(echo open | "$CARD_PROBE" session 1 2>&1 || true)
if grep -q "^err card-absent: " <<<"$out"; then pass "no session without a card: $out"; else
	fail "a session on an empty reader: $out"; fi

# ---- a card in reader 1: SELECT, VERIFY ------------------------------------------------------
card_insert 1 alice
expect_ok "card in reader 1 seen present" pcsc_wait_card 1 present
sess_open 1
if [[ "$ans" == ok* ]]; then pass "session opened: $ans"; else fail "open: $ans"; fi
expect_ans "the kyok applet answers SELECT: version 1, a blank card" select '^ok 0100'
make_ca "$pin_a1" "$pin_a2"
expect_ans "SELECT: now a CA card, 5 tries for each PIN" select '^ok 01010005050000'
expect_ans "PIN not verified at first" verified '^ok no$'
expect_ans "a wrong PIN is refused with the tries left" "verify $wrong" \
	'^err card-pin-wrong: .*4 tries left'
expect_ans "the right PIN is verified" "verify $pin_a1" '^ok$'
expect_ans "PIN verified in the session" verified '^ok yes$'
expect_ans "the reader has no PIN pad (the caller prompts)" pinpad '^ok no$'
expect_ans "so PIN entry on a PIN pad is refused" verify-pinpad \
	"^err usage: reader 'Virtual PCD 00 00' has no PIN pad: ask for the PIN"
expect_ans "PIN 2 verified (VERIFY P2 02)" "apdu 00200002$(hex "$pin_a2")" '^ok 9000 $'
# GET DEVICE answers more than 256 bytes: 61xx, then GET RESPONSE, put together.
ask "apdu 80160000"
if [[ "$ans" =~ ^ok\ 9000\ ([0-9A-F]+)$ ]] && [ $((${#BASH_REMATCH[1]} / 2)) -gt 256 ]; then
	pass "a long answer is read through GET RESPONSE ($((${#BASH_REMATCH[1]} / 2)) bytes)"
else
	fail "GET DEVICE: $ans"
fi
# (The log is read whole before grep: a grep -q ending early would fail the pipeline.)
apdus=$(pcsc_apdus)
if grep -qx "> 00C00000[0-9A-F]*" <<<"$apdus"; then pass "GET RESPONSE crossed the reader"
else fail "no GET RESPONSE in the APDU log"; fi
# A command of 300 bytes goes in two links, the first with CLA bit 0x10 (the card then
# refuses the data as no device key: 6A80).
long=$(head -c 300 /dev/zero | xxd -p | tr -d '\n')
expect_ans "a chained command reaches the card whole" "apdu 80120000$long" '^ok 6A80 $'
if grep -A1 -x "> 90120000FF0*" <<<"$(pcsc_apdus)" | grep -qx "< 9000"; then
	pass "its first link (CLA 90, 255 bytes) crossed and was taken"
else
	fail "no chained link in the APDU log"
fi

# ---- removal and reinsertion: the PIN state is gone -------------------------------------------
card_remove 1 || fail "kyok-card did not end cleanly on removal: $(tail -n 2 "$PCSC_DIR/card-1.log")"
expect_ok "card in reader 1 seen absent" pcsc_wait_card 1 absent
expect_ans "the open session sees the removal" verified '^err card-removed: '
expect_ans "and stays ended" select '^err card-removed: '
card_insert 1 alice
expect_ok "card reinserted, seen present" pcsc_wait_card 1 present
expect_ans "a new session" open '^ok'
expect_ans "SELECT again" select '^ok'
expect_ans "PIN not verified after reinsertion" verified '^ok no$'
expect_ans "PIN verified again" "verify $pin_a1" '^ok$'
expect_ans "the session ends (resetting the card) and a new one opens" open '^ok'
expect_ans "SELECT in the new session" select '^ok'
expect_ans "PIN not verified after a session's end" verified '^ok no$'
expect_ans "PIN verified once more" "verify $pin_a1" '^ok$'
expect_ans "the session ends leaving the card powered" leave '^ok$'
expect_ans "a session after it" open '^ok'
expect_ans "SELECT in that session" select '^ok'
expect_ans "PIN still verified after a session left the card powered" verified '^ok yes$'

# ---- pcscd restarted: the card stays, its PIN state does not ---------------------------------
if pcsc_restart; then pass "pcscd restarted on ports $PCSC_PORT, $((PCSC_PORT + 1))"; else
	fail "pcscd did not restart"; fi
expect_ok "the card is back in reader 1 by itself" pcsc_wait_card 1 present
expect_ans "the session from before the restart has ended" verified '^err card-removed: '
sess_close
sess_open 1
if [[ "$ans" == ok* ]]; then pass "new session after the restart"; else fail "open: $ans"; fi
expect_ans "SELECT after the restart" select '^ok'
expect_ans "PIN not verified after the restart" verified '^ok no$'
sess_close
if grep -q "closed the connection: card powered off, connecting again" "$PCSC_DIR/card-1.log"
then pass "kyok-card saw the reader go and came back"; else
	fail "kyok-card's log: $(tail -n 3 "$PCSC_DIR/card-1.log")"; fi

# ---- reader 2 ---------------------------------------------------------------------------------
card_insert 2 bob
expect_ok "card in reader 2 seen present" pcsc_wait_card 2 present
sess_open 2
expect_ans "reader 2: SELECT" select '^ok'
make_ca "$pin_b1" "$pin_b2"
expect_ans "reader 2: another card's PIN is refused" "verify $pin_a1" '^err card-pin-wrong: '
expect_ans "reader 2: its own PIN is verified" "verify $pin_b1" '^ok$'
out=$(echo open | "$CARD_PROBE" session 2 2>&1 || true)
if grep -q "^err card-in-use: " <<<"$out"; then pass "a second session on a held card: $out"
else fail "a second session on a held card: $out"; fi
: >"$T_DIR/pw/empty"
expect_ans "an empty PIN is refused before the card" "verify $T_DIR/pw/empty" \
	'^err usage: a card PIN has 6 to 16 characters'
printf '%017d' 0 >"$T_DIR/pw/long"
expect_ans "so is a PIN of 17 characters" "verify $T_DIR/pw/long" \
	'^err usage: a card PIN has 6 to 16 characters'
for i in 1 2 3 4; do ask "verify $wrong"; done
if [[ "$ans" == "err card-pin-wrong: "*"1 tries left" ]]; then pass "four wrong PINs: $ans"
else fail "the fourth wrong PIN: $ans"; fi
expect_ans "the fifth wrong PIN blocks the CA card" "verify $wrong" '^err card-blocked: '
expect_ans "and its right PIN no longer opens it" "verify $pin_b1" '^err card-blocked: '
sess_close
card_remove 1 || fail "kyok-card in reader 1 did not end cleanly: $(tail -n 2 "$PCSC_DIR/card-1.log")"

expect_fail "reader 3 does not exist" "card-reader-missing: card reader 3: .*\(2 connected\)" \
	"$CARD_PROBE" wait 3 present 1000
card_remove 2 || fail "kyok-card in reader 2 did not end cleanly"
expect_ok "reader 2 empty again" pcsc_wait_card 2 absent
expect_fail "waiting on an empty reader ends at its bound" "card-absent: .*still absent after 0 ms" \
	"$CARD_PROBE" wait 2 present 0

# Cards that never end their answer: one answers every command with 6100 (more data) and
# no data, one with 255 bytes and 6100 each time. The host stops at the first empty GET
# RESPONSE, and once the answer outgrows its buffer, instead of asking for ever.
endless_card() {
	perl -MIO::Socket::INET -e '
		my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $ARGV[0]) or die;
		my $data = $ARGV[1] eq "empty" ? "" : "\x5A" x 255;
		sub get { my ($n, $b) = @_; my $got = ""; while (length($got) < $n) {
			sysread($s, $b, $n - length($got)) or exit 0; $got .= $b } return $got }
		while (1) {
			my $msg = get(unpack("n", get(2)));
			my $out = $msg eq "\x04" ? "\x3B\x80\x80\x01\x01" :
				length($msg) > 1 ? $data . "\x61\x00" : undef;
			if (defined $out) { print $s pack("n", length($out)) . $out; $s->flush }
		}' $((PCSC_PORT + 1)) "$1" 2>>"$PCSC_DIR/card-2.log" &
	echo $! >"$PCSC_DIR/card-2.pid"
	expect_ok "a card that never ends its answer ($1), in reader 2" pcsc_wait_card 2 present
	sess_open 2
}
endless_card empty
expect_ans "the host gives up on it at the first empty GET RESPONSE" "apdu 80160000" \
	"^err card-protocol: .*GET RESPONSE gave nothing and asked for more"
sess_close
card_remove 2 || true # the perl card ends on SIGTERM with its signal's status
expect_ok "reader 2 empty again" pcsc_wait_card 2 absent
endless_card full
expect_ans "and on the other once the answer passes 16384 bytes" "apdu 80160000" \
	"^err too-large: .*an answer longer than 16384 bytes"
expect_ans "a command longer than 16384 bytes is refused before it is sent" \
	"apdu 80120000$(head -c 16385 /dev/zero | xxd -p | tr -d '\n')" \
	"^err too-large: a card command of 16385 bytes: at most 16384"
sess_close
card_remove 2 || true
expect_ok "reader 2 empty again" pcsc_wait_card 2 absent

# ---- the APDU log ------------------------------------------------------------------------------
apdus=$(pcsc_apdus)
n=$(grep -cx "> $SELECT_HEX" <<<"$apdus" || true)
expect_eq "pcscd's APDU log holds every SELECT sent ($selects)" "$n" "$selects"
if grep -qx "< 9000" <<<"$apdus"; then pass "and the answers (9000)"; else
	fail "no response 9000 in the APDU log"; fi
if pcsc_crossed "$(hex "$pin_b1")"; then pass "the log parser finds a value that crossed"; else
	fail "the PIN sent in a VERIFY is not found in the APDU log"; fi
never=$(head -c 16 /dev/urandom | xxd -p)
if pcsc_crossed "$never"; then fail "the log parser finds a value never sent: $never"; else
	pass "and not a value never sent"; fi

# ---- kyok-card's refusals ----------------------------------------------------------------------
port=$(pcsc_free_ports)
C="$T_DIR/cards"
chmod 644 "$C/alice.eeprom"
expect_fail "an EEPROM file others can read is refused" \
	"card EEPROM '.*alice.eeprom': readable by all users .*chmod 600" \
	"$KYOK_CARD" --eeprom "$C/alice.eeprom" --chip-key "$C/alice.chip" --port "$port" --wait 0
chmod 600 "$C/alice.eeprom"
chmod 640 "$C/alice.chip"
expect_fail "a chip key file its group can read is refused" \
	"card chip key '.*alice.chip': readable by its group" \
	"$KYOK_CARD" --eeprom "$C/alice.eeprom" --chip-key "$C/alice.chip" --port "$port" --wait 0
chmod 600 "$C/alice.chip"
rc=0
out=$("$KYOK_CARD" --eeprom "$C/dan.eeprom" --chip-key "$C/dan.chip" --port "$port" --wait 0 \
	2>&1) || rc=$?
if [ $rc -eq 6 ] && grep -q "did not accept the card within 0 s.*start pcscd" <<<"$out"; then
	pass "no reader on the port: exit 6, $out"
else
	fail "no reader on the port: exit $rc, $out"
fi
# A reader that breaks the protocol: a control code vpcd does not have, then an empty message.
for msg in '\x00\x01\x07' '\x00\x00'; do
	want=$([ "$msg" = '\x00\x00' ] && echo "empty message" || echo "control code 7")
	perl -MIO::Socket::INET -e '
		my $l = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $ARGV[0],
			Listen => 1, ReuseAddr => 1) or die "listen: $!";
		open(my $r, ">", $ARGV[1]) or die; close($r);
		my $c = $l->accept or die; print $c eval "\"$ARGV[2]\""; 1 while sysread($c, my $b, 64);
	' "$port" "$T_DIR/listening" "$msg" &
	fake=$!
	while [ ! -f "$T_DIR/listening" ] && kill -0 "$fake" 2>/dev/null; do sleep 0.05; done
	rm -f "$T_DIR/listening"
	rc=0
	out=$("$KYOK_CARD" --eeprom "$C/dan.eeprom" --chip-key "$C/dan.chip" --port "$port" \
		--wait 60 2>&1) || rc=$?
	wait "$fake" || true
	if [ $rc -eq 6 ] && grep -q "$want" <<<"$out"; then pass "a reader sending $msg: exit 6"
	else fail "a reader sending $msg: exit $rc, $out"; fi
done
expect_fail "--port is needed" "--port is missing" \
	"$KYOK_CARD" --eeprom "$C/dan.eeprom" --chip-key "$C/dan.chip"
expect_fail "a port out of range" "--port '70000': give a TCP port" \
	"$KYOK_CARD" --eeprom "$C/dan.eeprom" --chip-key "$C/dan.chip" --port 70000
expect_fail "an argument it does not take" "unexpected argument 'extra'" \
	"$KYOK_CARD" --eeprom "$C/dan.eeprom" --chip-key "$C/dan.chip" --port 1 extra
expect_fail "a --wait out of range" "--wait 'soon': give whole seconds" \
	"$KYOK_CARD" --eeprom "$C/dan.eeprom" --chip-key "$C/dan.chip" --port 1 --wait soon
expect_ok "--help" "$KYOK_CARD" --help
if "$KYOK_CARD" --help | grep -q "software card: it is as safe as the machine"; then
	pass "--help says what a kyok-card is"; else fail "--help: $("$KYOK_CARD" --help)"; fi
doc=$(awk '$0 == "## kyok-card" {f = 1; next} f && /^```$/ {if (b) exit; b = 1; next} b {print}' \
	"$(dirname "$0")/../../docs/commands.md")
expect_eq "docs/commands.md has kyok-card --help, verbatim" "$doc" "$("$KYOK_CARD" --help)"
# ---- no pcscd ----------------------------------------------------------------------------------
pcsc_stop
expect_fail "without pcscd: pcsc-unavailable" "pcsc-unavailable: connecting to pcscd" \
	"$CARD_PROBE" readers
# The harness: a pcscd that cannot listen on its readers' port is a failed start, not a wait.
perl -MIO::Socket::INET -e '
	my $l = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $ARGV[0], Listen => 1,
		ReuseAddr => 1) or die "listen: $!";
	open(my $r, ">", $ARGV[1]) or die; close($r);
	sleep 3600; # until killed below
' "$PCSC_PORT" "$T_DIR/listening" &
holder=$!
while [ ! -f "$T_DIR/listening" ] && kill -0 "$holder" 2>/dev/null; do sleep 0.05; done
if pcsc_run; then fail "pcscd started though its port was taken"; else
	pass "pcscd on a taken port is a failed start: $(grep "Open Port .* Failed" "$PCSC_DIR/pcscd.log" | tail -n 1)"; fi
kill "$holder" 2>/dev/null || true
wait "$holder" 2>/dev/null || true
finish
