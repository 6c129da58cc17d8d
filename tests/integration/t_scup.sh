#!/usr/bin/env bash
# kyok scup, the smart card utility, through the whole card stack (a private pcscd, vpcd
# readers, kyok-cards, libpcsclite, lib/card):
#   a CA card is made and backed up to a blank card (same zone); two EP11 cards are enrolled,
#     one by the backup; show tells kind, zone, tries, contents (a signature key's SKI, a key
#     part's VP and description, the slots free) and that it is a software card
#   an EP11 card signs a SHA-512 digest (lib/card's SIGN) only with its PIN verified, the
#     signature verifies under the key GENERATE SIGNATURE KEY returned; a second key refused
#   three wrong EP11 PINs block the card (the tries left shown on the way); the CA card of
#     another zone is refused to unblock it, its own zone's CA card unblocks it with a new PIN
#   a PIN is changed by its holder (EP11 PIN, a CA card's PIN 2 alone), the old one gone; a
#     wrong PIN or a blocked card changes none
#   one CA PIN alone enrols nothing; five wrong CA PINs block a CA card for ever, scup says so
#   a card removed and reinserted asks its PIN again
#   refusals change nothing: a PIN file others can read, a PIN of the wrong length, a
#     --pin-file too many, the wrong kind of card in a reader, a blocked CA card
#   PINs typed at a terminal (a tmux pane) are not echoed; a new PIN typed twice differently
#     is refused and the card stays blank
#   docs/commands.md holds every scup --help verbatim
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/pcsc.sh"
pcsc_namespace "$@"
setup
pcsc_start || { fail "pcscd did not start"; exit 1; }

# PINs: generated, in private files (never on argv).
newpin() {
	local f="$T_DIR/pw/$1"
	printf '%08d' $((RANDOM * 32768 + RANDOM)) >"$f"
	chmod 600 "$f"
	echo "$f"
}
ca1_1=$(newpin ca1-1)
ca1_2=$(newpin ca1-2)
bk_1=$(newpin bk-1)
bk_2=$(newpin bk-2)
ca2_1=$(newpin ca2-1)
ca2_2=$(newpin ca2-2)
ep_a=$(newpin ep-a)
ep_a2=$(newpin ep-a2)
ep_b=$(newpin ep-b)
ep_b2=$(newpin ep-b2)
bk_2n=$(newpin bk-2n)
# The wrong PIN has 7 digits: the card takes it (6 to 16 characters), and newpin's PINs have 8
# or more, so it is never one of them by chance.
wrong="$T_DIR/pw/wrong"
printf '%07d' $(((RANDOM * 32768 + RANDOM) % 10000000)) >"$wrong"
chmod 600 "$wrong"
printf '12345' >"$T_DIR/pw/short"
short="$T_DIR/pw/short"

# put N NAME: the card NAME in reader N (whatever was there taken out first).
put() {
	if [ -f "$PCSC_DIR/card-$1.pid" ]; then
		card_remove "$1" || fail "kyok-card in reader $1 did not end cleanly"
		pcsc_wait_card "$1" absent
	fi
	card_insert "$1" "$2"
	pcsc_wait_card "$1" present
}
# scup ARGS: kyok scup; its stderr is also kept in scup.err, searched for sanitizer reports at
# the end (a refusal's exit status alone would not show one).
scup() {
	local rc=0
	"$KYOK" scup "$@" 2>"$T_DIR/scup.last" || rc=$?
	cat "$T_DIR/scup.last" >&2
	cat "$T_DIR/scup.last" >>"$T_DIR/scup.err"
	return $rc
}
# field N NAME: the value of 'NAME:' in the output of 'scup show --reader N'.
field() { scup show --reader "$1" | sed -n "s/^$2: *//p"; }

# ---- a CA card, its backup -------------------------------------------------------------------
put 1 ca1
expect_eq "a new card is blank" "$(field 1 card)" "blank card (kyok software card)"
expect_ok "ca-init makes the blank card in reader 1 a CA card" \
	scup ca-init --pin-file "$ca1_1" --pin-file "$ca1_2"
grep -q "a CA card of the new zone" <<<"$out" && grep -q "kyok software card" <<<"$out" &&
	pass "ca-init names the zone and says it is a software card" || fail "ca-init said: $out"
zone1=$(field 1 zone)
expect_eq "show: a CA card" "$(field 1 card)" "CA card (kyok software card)"
expect_eq "show: both PINs have 5 tries" "$(field 1 "PIN tries")" "PIN 1 5 left, PIN 2 5 left"
expect_fail "ca-init refuses a card that is not blank" "reader 1 .*not the kind of card.*it holds a CA card" \
	scup ca-init --pin-file "$ca1_1" --pin-file "$ca1_2"

put 2 ca1bk
expect_ok "ca-backup: the CA card in reader 1 to the blank card in reader 2" \
	scup ca-backup --pin-file "$ca1_1" --pin-file "$ca1_2" --pin-file "$bk_1" --pin-file "$bk_2"
expect_eq "the backup is a CA card" "$(field 2 card)" "CA card (kyok software card)"
expect_eq "of the same zone" "$(field 2 zone)" "$zone1"

# ---- EP11 cards: one enrolled by the CA card, one by its backup -------------------------------
put 2 epa
expect_ok "ep11-init enrols the blank card in reader 2" \
	scup ep11-init --pin-file "$ca1_1" --pin-file "$ca1_2" --pin-file "$ep_a"
expect_eq "the EP11 card is of the CA card's zone" "$(field 2 zone)" "$zone1"
put 1 ca1bk
put 2 epb
expect_ok "the backup CA card enrols a second EP11 card" \
	scup ep11-init --pin-file "$bk_1" --pin-file "$bk_2" --pin-file "$ep_b"
expect_eq "of the same zone" "$(field 2 zone)" "$zone1"
show=$(scup show --reader 2)
grep -qx "card: *EP11 card (kyok software card)" <<<"$show" &&
	grep -qx "PIN tries: *3 left" <<<"$show" && grep -qx "blocked: *no" <<<"$show" &&
	grep -qx "signature key: none" <<<"$show" &&
	grep -qx "key parts: *0 of 85 (85 free)" <<<"$show" &&
	grep -q "only as safe as the machine it runs on" <<<"$show" &&
	pass "show: an EP11 card, its tries, contents, and that it is a software card" ||
	fail "show of an EP11 card: $show"
expect_ok "the EP11 card's PIN verifies" scup pin-verify --reader 2 --pin-file "$ep_b"

# ---- PIN changes: by the holder, who knows the PIN ---------------------------------------------
expect_fail "a wrong PIN changes nothing" "wrong card PIN.*EP11 card PIN wrong: 2 tries left" \
	scup pin-change --reader 2 --pin-file "$wrong" --pin-file "$ep_b2"
expect_ok "the EP11 card's PIN is changed" \
	scup pin-change --reader 2 --pin-file "$ep_b" --pin-file "$ep_b2"
expect_eq "with full tries again" "$(field 2 "PIN tries")" "3 left"
expect_fail "the old EP11 PIN is gone" "wrong card PIN.*EP11 card PIN wrong: 2 tries left" \
	scup pin-verify --reader 2 --pin-file "$ep_b"
expect_ok "the new one verifies" scup pin-verify --reader 2 --pin-file "$ep_b2"
expect_fail "a CA card's PIN change names the PIN" "name the one to change with --pin 1 or --pin 2" \
	scup pin-change --pin-file "$bk_2" --pin-file "$bk_2n"
expect_fail "an EP11 card has no PIN 2" "an EP11 card has one PIN" \
	scup pin-change --reader 2 --pin 2 --pin-file "$ep_b2" --pin-file "$bk_2n"
expect_ok "the backup CA card's PIN 2 is changed by its holder alone" \
	scup pin-change --pin 2 --pin-file "$bk_2" --pin-file "$bk_2n"
expect_fail "its old PIN 2 is gone" "wrong card PIN.*CA card PIN 2 wrong: 4 tries left" \
	scup pin-verify --pin 2 --pin-file "$bk_2"
expect_ok "PIN 1 unchanged, the new PIN 2 verifies" \
	scup pin-verify --pin-file "$bk_1" --pin-file "$bk_2n"

# ---- show: an EP11 card's signature key and key parts ------------------------------------------
# Made on the card with the applet's own commands (card_probe, through lib/card), then shown.
desc="ops part 1"
digest=$(head -c 100 /dev/urandom | sha512sum | cut -d' ' -f1)
# A key part is bound to the unit trust anchor registered on the card: one made here first.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-521 -nodes -subj /CN=anchor \
	-days 30 -addext basicConstraints=critical,CA:TRUE -keyout "$T_DIR/anchor.key" \
	-outform DER -out "$T_DIR/anchor.der" 2>/dev/null || fail "openssl could not make an anchor"
made=$(printf 'open\nselect\nsign %s\nverify %s\ngensig\napdu 80400000%s\nsign %s\ngensig\napdu 80460000%s\napdu 80400000%s\n' \
	"$digest" "$ep_b2" "$(printf '%s' "$desc" | xxd -p | tr -d '\n')" "$digest" \
	"$(xxd -p "$T_DIR/anchor.der" | tr -d '\n')" "$(printf '%s' "$desc" | xxd -p | tr -d '\n')" |
	"$CARD_PROBE" session 2 2>&1 || true)
grep -q "^ok 6985" <<<"$(sed -n 6p <<<"$made")" &&
	pass "GENERATE KEY PART without an anchor registered: refused" ||
	fail "GENERATE KEY PART without an anchor: $made"
grep -q "^err card-pin-needed: .*SIGN answered 6982" <<<"$(sed -n 3p <<<"$made")" &&
	pass "SIGN without the PIN: pin-needed" || fail "SIGN before the PIN: $made"
spki=$(sed -n 5p <<<"$made" | sed -n 's/^ok //p')
sig=$(sed -n 7p <<<"$made" | sed -n 's/^ok //p')
grep -q "^err card-not-allowed: .*GENERATE SIGNATURE KEY answered 6985" <<<"$(sed -n 8p <<<"$made")" &&
	pass "a second signature key is refused" || fail "a second GENERATE SIGNATURE KEY: $made"
printf '%s' "$spki" | xxd -r -p >"$T_DIR/card-sig.spki"
printf '%s' "$digest" | xxd -r -p >"$T_DIR/card-sig.digest"
printf '%s' "$sig" | xxd -r -p >"$T_DIR/card-sig.sig"
expect_ok "SIGN: an ECDSA signature of the digest under the card's public key" \
	openssl pkeyutl -verify -pubin -keyform DER -inkey "$T_DIR/card-sig.spki" \
	-in "$T_DIR/card-sig.digest" -sigfile "$T_DIR/card-sig.sig"
flip_byte "$T_DIR/card-sig.digest" 5
expect_fail "that signature does not verify for another digest" "Verification Failure" \
	openssl pkeyutl -verify -pubin -keyform DER -inkey "$T_DIR/card-sig.spki" \
	-in "$T_DIR/card-sig.digest" -sigfile "$T_DIR/card-sig.sig"
part=$(sed -n 10p <<<"$made" | sed -n 's/^ok 9000 //p')
if [ -n "$spki" ] && [ ${#part} -eq 66 ]; then
	pass "a signature key and a key part made on the EP11 card"
else
	fail "card_probe: $made"
fi
# SKI: SHA-256 of the uncompressed point, the last 133 bytes of a P-521 SubjectPublicKeyInfo.
ski=$(printf '%s' "${spki: -266}" | xxd -r -p | sha256sum | cut -d' ' -f1)
vp=$(tr '[:upper:]' '[:lower:]' <<<"${part:2}")
show=$(scup show --reader 2)
grep -qx "signature key: SKI $ski" <<<"$show" && pass "show: the signature key's SKI" ||
	fail "show: no 'SKI $ski' in: $show"
grep -qx "key parts: *1 of 85 (84 free)" <<<"$show" &&
	grep -qx " *1  VP $vp  $desc" <<<"$show" &&
	pass "show: the key part, its VP and description, 84 slots free" ||
	fail "show: no key part 1 'VP $vp  $desc' in: $show"

# ---- refusals that change nothing ------------------------------------------------------------
put 2 blank1
chmod 644 "$ca1_1"
expect_fail "a PIN file others can read is refused, with the chmod hint" \
	"open to other users.*chmod 600" scup ep11-init --pin-file "$ca1_1" --pin-file "$ca1_2" \
	--pin-file "$ep_a"
chmod 600 "$ca1_1"
put 1 ca1
expect_fail "a new PIN of 5 characters is refused" "a card PIN has 6 to 16 characters" \
	scup ep11-init --pin-file "$ca1_1" --pin-file "$ca1_2" --pin-file "$short"
# (refused before any PIN is verified: the wrong PIN 1 in it spends no try, as checked below)
expect_fail "a --pin-file too many is refused" "asks 3 PINs, but 4 --pin-file" \
	scup ep11-init --pin-file "$wrong" --pin-file "$ca1_2" --pin-file "$ep_a" --pin-file "$ep_a"
expect_fail "one CA PIN alone enrols nothing (PIN 2 wrong)" "wrong card PIN.*CA card PIN 2 wrong: 4 tries left" \
	scup ep11-init --pin-file "$ca1_1" --pin-file "$wrong" --pin-file "$ep_a"
expect_eq "after these refusals the card in reader 2 is still blank" "$(field 2 card)" \
	"blank card (kyok software card)"
expect_eq "the CA card counted the wrong PIN 2 only" "$(field 1 "PIN tries")" \
	"PIN 1 5 left, PIN 2 4 left"
expect_ok "the right PINs verify (and reset the count)" scup pin-verify --pin-file "$ca1_1" \
	--pin-file "$ca1_2"
expect_eq "tries back to 5" "$(field 1 "PIN tries")" "PIN 1 5 left, PIN 2 5 left"
expect_fail "the wrong kind of card in reader 2" "reader 2 .*not the kind of card.*it holds a blank card" \
	scup ep11-unblock --pin-file "$ca1_1" --pin-file "$ca1_2" --pin-file "$ep_a"
expect_fail "a blank card has no PIN to verify" "reader 2 .*it holds a blank card: it has no PIN yet" \
	scup pin-verify --reader 2 --pin-file "$ep_a"
expect_fail "--reader is refused where the readers are fixed" "--reader is not an option" \
	scup ep11-init --reader 1

# ---- three wrong EP11 PINs block; unblock by the zone's CA card only ---------------------------
put 2 epa
expect_fail "a wrong EP11 PIN: 2 tries left" "wrong card PIN.*EP11 card PIN wrong: 2 tries left" \
	scup pin-verify --reader 2 --pin-file "$wrong"
expect_fail "again: 1 try left" "wrong card PIN.*EP11 card PIN wrong: 1 try left" \
	scup pin-verify --reader 2 --pin-file "$wrong"
expect_fail "the third blocks it, and scup says how to unblock it" \
	"unblock it with a CA card of its zone" \
	scup pin-verify --reader 2 --pin-file "$wrong"
expect_eq "show: blocked" "$(field 2 blocked)" \
	"yes: a CA card of its zone unblocks it ('kyok scup ep11-unblock')"
expect_fail "the right PIN does not open a blocked card" "blocked after too many wrong PINs" \
	scup pin-verify --reader 2 --pin-file "$ep_a"
expect_fail "a blocked card changes no PIN" "blocked after too many wrong PINs" \
	scup pin-change --reader 2 --pin-file "$ep_a" --pin-file "$ep_a2"

put 1 ca2
expect_ok "a second zone's CA card" scup ca-init --pin-file "$ca2_1" --pin-file "$ca2_2"
[ "$(field 1 zone)" != "$zone1" ] && pass "of another zone" || fail "the same zone twice"
expect_fail "the other zone's CA card does not unblock it" "reader 2 .*different smart card zones" \
	scup ep11-unblock --pin-file "$ca2_1" --pin-file "$ca2_2" --pin-file "$ep_a2"
expect_eq "it stays blocked" "$(field 2 blocked)" \
	"yes: a CA card of its zone unblocks it ('kyok scup ep11-unblock')"
expect_eq "the other zone's CA card spent no try" "$(field 1 "PIN tries")" \
	"PIN 1 5 left, PIN 2 5 left"

put 1 ca1
expect_ok "its own zone's CA card unblocks it, with a new PIN" \
	scup ep11-unblock --pin-file "$ca1_1" --pin-file "$ca1_2" --pin-file "$ep_a2"
expect_eq "show: not blocked, 3 tries" "$(field 2 blocked) $(field 2 "PIN tries")" "no 3 left"
expect_fail "the old PIN is gone" "wrong card PIN.*EP11 card PIN wrong: 2 tries left" \
	scup pin-verify --reader 2 --pin-file "$ep_a"
expect_ok "the new PIN verifies" scup pin-verify --reader 2 --pin-file "$ep_a2"

# ---- removed and reinserted: the PIN is asked again -------------------------------------------
put 2 epa
expect_fail "after reinsertion the card asks its PIN again (no terminal here to type it)" \
	"no terminal to ask for EP11 card PIN" scup pin-verify --reader 2 </dev/null

# ---- five wrong CA PINs block a CA card for ever ----------------------------------------------
put 1 ca2
for left in 4 3 2; do
	expect_fail "a wrong CA PIN 1: $left tries left" "wrong card PIN.*CA card PIN 1 wrong: $left tries left" \
		scup pin-verify --pin 1 --pin-file "$wrong"
done
expect_fail "a wrong CA PIN 1: 1 try left" "wrong card PIN.*CA card PIN 1 wrong: 1 try left" \
	scup pin-verify --pin 1 --pin-file "$wrong"
expect_fail "the fifth blocks the CA card, for ever, and scup says so" \
	"blocked for ever: nothing can unblock it" \
	scup pin-verify --pin 1 --pin-file "$wrong"
expect_eq "show: blocked for ever" "$(field 1 blocked)" \
	"yes, for ever: a CA card is never unblocked"
put 2 blank2
expect_fail "a blocked CA card enrols nothing" "blocked after too many wrong PINs" \
	scup ep11-init --pin-file "$ca2_1" --pin-file "$ca2_2" --pin-file "$ep_a"
expect_eq "the blank card stays blank" "$(field 2 card)" "blank card (kyok software card)"

# ---- PINs typed at a terminal: no echo, a new PIN asked twice ---------------------------------
# (reader 2 holds the blank card blank2.) The terminal is a tmux pane; the test waits on what
# the pane shows, and on the file the command's exit status is written to.
if command -v tmux >/dev/null; then
	. "$(dirname "$0")/tty.sh"
	TTY_EXIT=pcsc_exit TTY_WAIT=600
	tty_start
	# at_tty: 'kyok scup ca-init --reader 2' typed at a fresh screen; its output and exit
	# status in files.
	at_tty() {
		rm -f "$T_DIR/tty.rc"
		fresh_screen
		type_line "$KYOK scup ca-init --reader 2 >$T_DIR/tty.out 2>&1; echo \$? >$T_DIR/tty.rc"
	}
	at_tty
	wait_n 1 "^new CA card PIN 1" && type_file "$ca2_1"
	wait_n 1 "^repeat new CA card PIN 1" && type_file "$ca2_2"
	for _ in $(seq 600); do [ -s "$T_DIR/tty.rc" ] && break; sleep 0.1; done
	expect_eq "two different entries of a new PIN are refused" "$(cat "$T_DIR/tty.rc" 2>/dev/null)" 2
	grep -q "the two entries of the new PIN differ" "$T_DIR/tty.out" &&
		pass "and the refusal says so" || fail "mismatch refusal said: $(cat "$T_DIR/tty.out")"
	expect_eq "the card stays blank" "$(field 2 card)" "blank card (kyok software card)"

	at_tty
	wait_n 1 "^new CA card PIN 1" && type_file "$ca2_1"
	wait_n 1 "^repeat new CA card PIN 1" && type_file "$ca2_1"
	wait_n 1 "^new CA card PIN 2" && type_file "$ca2_2"
	wait_n 1 "^repeat new CA card PIN 2" && type_file "$ca2_2"
	for _ in $(seq 600); do [ -s "$T_DIR/tty.rc" ] && break; sleep 0.1; done
	expect_eq "PINs typed twice at the terminal make a CA card" \
		"$(cat "$T_DIR/tty.rc" 2>/dev/null) $(field 2 card)" "0 CA card (kyok software card)"
	if screen | grep -qF -e "$(cat "$ca2_1")" -e "$(cat "$ca2_2")"; then
		fail "a PIN was echoed at the terminal"
	else
		pass "no PIN was echoed at the terminal"
	fi
	expect_ok "the PINs typed are the card's" scup pin-verify --reader 2 --pin-file "$ca2_1" \
		--pin-file "$ca2_2"
else
	echo "skip $T_NAME: tmux not installed, PINs typed at a terminal not tested" >&2
fi

# ---- no sanitizer report from kyok scup (a sanitized build), refusals included ------------------
if grep -hE -m3 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$T_DIR/scup.err" \
	"$T_DIR"/tty.out 2>/dev/null; then
	fail "kyok scup had a sanitizer report (above)"
else
	pass "no sanitizer report from kyok scup"
fi

# ---- docs/commands.md holds every scup --help verbatim -----------------------------------------
DOC=$(dirname "$0")/../../docs/commands.md
doc_block() {
	awk -v h="$1" '$0 == h {f = 1; next} f && /^```$/ {if (b) exit; b = 1; next} b {print}' "$DOC"
}
doc_bad=
for c in $(scup --help | awk '/^  [a-z]/{print $1}'); do
	[ "$(doc_block "### \`kyok scup $c\`")" = "$(scup "$c" --help)" ] || doc_bad+=" $c"
done
expect_eq "docs/commands.md has every kyok scup --help verbatim" "$doc_bad" ""

finish
