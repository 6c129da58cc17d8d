#!/usr/bin/env bash
# kyok tke with EP11 smart cards, through the whole card stack (a private pcscd, vpcd
# readers, kyok-cards, libpcsclite, lib/card):
#   sigkey-add --card generates the administrator's key on the EP11 card in reader 1: the file
#     names the card's zone and device and the key's SKI (the one 'scup show' reports), holds
#     no key, and its certificate is signed by the card's key; sigkeys lists it
#   the JSON answer names the file, the card's zone and device
#   refusals that write nothing: a wrong PIN (tries shown), a card that has a key already, a CA
#     card in reader 1, --card with --token-module
#   signing with the cards: the command signed by alice's then bob's card, each asked for on
#     stderr (naming the card in the reader and the one wanted) and swapped in on that prompt
#     (once while the CLI is stopped: a swap it did not see happen);
#     each card's PIN verified once for all its signatures (the APDU log: one VERIFY, a SIGN
#     per unit), a bundle of two commands signed with one PIN, a --card-pin-file no card asked
#     for named; the bundle signed by the other card too (a swap on the prompt) and submitted
#     (signature threshold 2); a card taken out and put back asks its PIN again
#   refusals where nothing is sent and no unit changes: the wrong card in reader 1 (at once
#     with --card-wait 0, or inserted on the prompt), no card within --card-wait, a wrong PIN
#     (tries shown, no SIGN), a blocked card (how to unblock it)
#   card-copy: bob's card (his key and a key part) copied card to card (COPY BEGIN, EXPORT,
#     IMPORT once each) to a third card of the zone, which then holds both and signs for bob
#     (said to be a copy); copied again with --yes (the JSON answer); a
#     card of another zone refused before any PIN or COPY; a target holding a key needs --yes
#   auto-init of a second instance signed by a card key (the copy of bob's card)
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/pcsc.sh"
pcsc_namespace "$@"
setup
pcsc_start || { fail "pcscd did not start"; exit 1; }

newpin() {
	local f="$T_DIR/pw/$1"
	printf '%08d' $((RANDOM * 32768 + RANDOM)) >"$f"
	chmod 600 "$f"
	echo "$f"
}
ca_1=$(newpin ca-1)
ca_2=$(newpin ca-2)
ep_a=$(newpin ep-a)
ep_b=$(newpin ep-b)
ep_c=$(newpin ep-c)
ep_x=$(newpin ep-x)
# The wrong PIN has 7 digits: the card takes it (6 to 16 characters), and newpin's PINs have 8
# or more, so it is never one of them by chance.
wrong="$T_DIR/pw/wrong"
printf '%07d' $(((RANDOM * 32768 + RANDOM) % 10000000)) >"$wrong"
chmod 600 "$wrong"
put() {
	if [ -f "$PCSC_DIR/card-$1.pid" ]; then
		card_remove "$1" || fail "kyok-card in reader $1 did not end cleanly"
		pcsc_wait_card "$1" absent
	fi
	card_insert "$1" "$2"
	pcsc_wait_card "$1" present
}
nfiles() { find "$KYOK_TKE_FILES/sigkeys" -type f 2>/dev/null | wc -l; }

# ---- a zone: its CA card enrols two EP11 cards -------------------------------------------------
put 1 ca
expect_ok "a CA card" "$KYOK" scup ca-init --pin-file "$ca_1" --pin-file "$ca_2"
put 2 epa
expect_ok "EP11 card a" "$KYOK" scup ep11-init --pin-file "$ca_1" --pin-file "$ca_2" --pin-file "$ep_a"
put 2 epb
expect_ok "EP11 card b" "$KYOK" scup ep11-init --pin-file "$ca_1" --pin-file "$ca_2" --pin-file "$ep_b"
card_remove 2 || fail "kyok-card in reader 2 did not end cleanly" # each card in one reader at most
pcsc_wait_card 2 absent

# ---- refusals before any key ------------------------------------------------------------------
run_rc "$KYOK" tke sigkey-add --name alice --card --card-pin-file "$ep_a"
expect_eq "sigkey-add --card with a CA card in reader 1: exit 3" "$rc" 3
grep -q "reader 1 .*not the kind of card.*a signature key is made on an EP11 card in reader 1" <<<"$out" &&
	pass "... names the reader and what it needs" || fail "... said: $out"
run_rc "$KYOK" tke sigkey-add --name alice --card --token-module /usr/lib/x.so --token-label x
expect_eq "--card with --token-module: exit 2" "$rc" 2
grep -q "a key is on a card or in a token" <<<"$out" && pass "... says why" || fail "... said: $out"

put 1 epa
run_rc "$KYOK" tke sigkey-add --name alice --card --card-pin-file "$wrong"
expect_eq "sigkey-add --card with a wrong PIN: exit 4" "$rc" 4
grep -q "EP11 card PIN wrong: 2 tries left" <<<"$out" && pass "... shows the tries left" ||
	fail "... said: $out"
expect_eq "no sigkey file after the refusals" "$(nfiles)" 0
expect_eq "no key made on the card" "$("$KYOK" scup show --reader 1 | sed -n 's/^signature key: *//p')" "none"

# ---- the key made on the card ------------------------------------------------------------------
expect_ok "sigkey-add --card: alice's key on EP11 card a" \
	"$KYOK" tke sigkey-add --name alice --card --card-pin-file "$ep_a"
grep -q "key generated on the EP11 card in reader 1" <<<"$out" && pass "... says where the key is" ||
	fail "... said: $out"
f=$(find "$KYOK_TKE_FILES/sigkeys" -type f -name 'alice-*.sigkey')
expect_eq "one sigkey file" "$(nfiles)" 1
expect_eq "... it holds no private key" "$(grep -c 'PRIVATE KEY' "$f")" 0
show=$("$KYOK" scup show --reader 1)
ski=$(sed -n 's/^signature key: SKI //p' <<<"$show")
zone=$(sed -n 's/^zone: *//p' <<<"$show" | tr -d ' ')
expect_eq "... names the key by the SKI the card reports" \
	"$(sed -n 's/^kyok-card-key-ski: //p' "$f")" "$ski"
grep -qi "$(sed -n 's/^kyok-card-zone: //p' "$f")" <<<"$zone" && pass "... and the card's zone" ||
	fail "zone in file $(sed -n 's/^kyok-card-zone: //p' "$f"), card: $zone"
grep -qE "^kyok-card-device: [0-9a-f]{64}$" "$f" && pass "... and a device id" || fail "$(cat "$f")"
openssl x509 -in "$f" -noout -pubkey >"$T_DIR/alice.pub"
expect_ok "the certificate verifies under its own key (the card signed it)" \
	openssl verify -CAfile "$f" -check_ss_sig -partial_chain "$f"
expect_eq "its key is P-521" "$(openssl x509 -in "$f" -noout -text | grep -c 'NIST CURVE: P-521')" 1
sk=$("$KYOK" tke sigkeys --output json)
expect_eq "sigkeys lists alice's card key with the card's SKI" \
	"$(jq -r '.sigkeys[] | select(.name == "alice") | .ski' <<<"$sk")" "$ski"

run_rc "$KYOK" tke sigkey-add --name bob --card --card-pin-file "$ep_a"
expect_eq "a second key on the same card: exit 4" "$rc" 4
grep -q "holds a signature key already: one key per card" <<<"$out" && pass "... says so" ||
	fail "... said: $out"
expect_eq "... no file written" "$(nfiles)" 1

put 1 epb
expect_ok "bob's key on EP11 card b" "$KYOK" tke sigkey-add --name bob --card --card-pin-file "$ep_b" \
	--output json
fb=$(find "$KYOK_TKE_FILES/sigkeys" -type f -name 'bob-*.sigkey')
expect_eq "two card sigkey files" "$(nfiles)" 2
expect_eq "... the JSON answer names bob's file, card zone and device as the file does" \
	"$(jq -r '[.name, .file, .card.zone, .card.device] | join(" ")' <<<"$out")" \
	"bob $fb $(sed -n 's/^kyok-card-zone: //p' "$fb") $(sed -n 's/^kyok-card-device: //p' "$fb")"
expect_eq "... both cards of one zone" "$(sed -n 's/^kyok-card-zone: //p' "$f")" \
	"$(sed -n 's/^kyok-card-zone: //p' "$fb")"
[ "$(sed -n 's/^kyok-card-device: //p' "$f")" != "$(sed -n 's/^kyok-card-device: //p' "$fb")" ] &&
	pass "... whose device ids differ" || fail "alice's and bob's cards have one device id"

# ---- signing with the cards ------------------------------------------------------------------
expect_ok "kyok up: 2 units" "$KYOK" up
expect_ok "select units 1,2" "$KYOK" tke cryptounit-add --units 1,2
for n in 1 2; do
	expect_ok "admin-add card key $n (imprint mode: the certificate alone)" \
		"$KYOK" tke cryptounit-admin-add --sigkey "$n"
done
expect_eq "both units list alice and bob" \
	"$(unit_state 1 | jq -r '[.admins[].name] | sort | join(",")') $(unit_state 2 | jq -r '[.admins[].name] | sort | join(",")')" \
	"alice,bob alice,bob"
dev_a=$(sed -n 's/^kyok-card-device: //p' "$f" | cut -c1-16)
dev_b=$(sed -n 's/^kyok-card-device: //p' "$fb" | cut -c1-16)
# APDUs of the kind given (VERIFY of PIN 1 with a PIN, SIGN) sent since the mark.
mark() { MARK=$(pcsc_apdus | wc -l); }
sent() { pcsc_apdus | tail -n +$((MARK + 1)) | grep -c "^> $1" || true; }
VERIFY='00200001..' # VERIFY of PIN 1 with a PIN (not the bare status check)
# signed: the SIGNs since the mark the card answered with a signature (9000); the first
# SIGN after the card was powered on is answered 6982 (PIN not verified) and the PIN follows.
signed() {
	pcsc_apdus | tail -n +$((MARK + 1)) |
		awk '/^> / {s = ($2 ~ /^80340000/)} /^< / && s {n += ($2 ~ /9000$/); s = 0} END {print n + 0}'
}
states() { unit_state 1; unit_state 2; }
# bg CMD...: runs CMD in the background, its stderr in $T_DIR/bg.err; waitfor TEXT: until
# that stderr holds TEXT (the CLI's prompt), failing when CMD ended first or after a bound.
bg() {
	: >"$T_DIR/bg.err"
	"$@" >"$T_DIR/bg.out" 2>"$T_DIR/bg.err" &
	BG=$!
}
waitfor() {
	local i
	for ((i = 0; i < 2400; i++)); do
		grep -qF -- "$1" "$T_DIR/bg.err" && return 0
		kill -0 "$BG" 2>/dev/null || break
		sleep 0.05
	done
	grep -qF -- "$1" "$T_DIR/bg.err"
}
bgwait() {
	rc=0
	wait "$BG" || rc=$?
	out=$(cat "$T_DIR/bg.out" "$T_DIR/bg.err")
}

# Bob's card is in reader 1; the command is signed by alice then bob: a swap on each prompt.
expect_ok "select alice, bob" "$KYOK" tke sigkey-sel --sigkeys 1,2
mark
bg "$KYOK" tke cryptounit-thrhld-set --signature 2 --revocation 2 --card-pin-file "$ep_a" \
	--card-pin-file "$ep_b"
if waitfor "remove the card in reader 1 (device $dev_b) and insert the EP11 card of administrator 'alice' (device $dev_a) into reader 1"; then
	pass "thrhld-set asks for alice's card, naming it and the card in the reader"
	put 1 epa
else
	fail "no prompt for alice's card: $(cat "$T_DIR/bg.err")"
fi
if waitfor "insert the EP11 card of administrator 'bob' (device $dev_b) into reader 1"; then
	pass "... then for bob's"
	put 1 epb
else
	fail "no prompt for bob's card: $(cat "$T_DIR/bg.err")"
fi
bgwait
expect_eq "thrhld-set 2/2 signed by both cards: exit 0" "$rc" 0
for n in 1 2; do
	expect_eq "unit $n: secure mode, 2/2" \
		"$(unit_state "$n" | jq -r '[.imprint, .signature_threshold, .revocation_threshold] | join(" ")')" \
		"false 2 2"
done
expect_eq "... 4 SIGNs (2 cards, 2 units), one PIN VERIFY per card" "$(signed) $(sent $VERIFY)" "4 2"

# A command bundle of two commands (one per unit), then signed by bob's card: one PIN.
expect_ok "prepare thresholds 2/1" "$KYOK" tke cryptounit-thrhld-set --signature 2 \
	--revocation 1 --prepare "$T_DIR/thr.bundle"
cp "$T_DIR/thr.bundle" "$T_DIR/thr2.bundle"
expect_ok "select bob" "$KYOK" tke sigkey-sel --sigkeys 2
put 1 epb # taken out and put back: the card forgot its PIN
mark
expect_ok "cmd-sign of two commands with bob's card" "$KYOK" tke cmd-sign "$T_DIR/thr.bundle" \
	--card-pin-file "$ep_b" --card-pin-file "$wrong"
expect_eq "... two SIGNs, the PIN verified once" "$(signed) $(sent $VERIFY)" "2 1"
grep -q "note: --card-pin-file '$wrong' not read: no card asked for its PIN" <<<"$out" &&
	pass "... the PIN file no card asked for is named, not read" || fail "... said: $out"
expect_eq "... both commands signed by bob" \
	"$("$KYOK" tke cmd-show "$T_DIR/thr.bundle" --output json | jq -r '[.commands[].signers[].name] | join(",")')" \
	"bob,bob"
expect_ok "openssl verifies the card-made signature of the first block" \
	openssl cms -verify -noverify -inform PEM -in "$T_DIR/thr.bundle" -out /dev/null
# alice adds hers (bob's card in the reader: a swap on the prompt), then the units take it.
expect_ok "select alice" "$KYOK" tke sigkey-sel --sigkeys 1
# The CLI is stopped while the cards are swapped: when it goes on, pcscd's removal event
# is long past and the card in the reader is already the one it asked for.
bg "$KYOK" tke cmd-sign "$T_DIR/thr.bundle" --card-pin-file "$ep_a" --card-wait 120
if waitfor "insert the EP11 card of administrator 'alice' (device $dev_a) into reader 1"; then
	kill -STOP "$BG"
	put 1 epa
	kill -CONT "$BG"
else
	fail "no prompt for alice's card: $(cat "$T_DIR/bg.err")"
fi
bgwait
expect_eq "cmd-sign with alice's card: exit 0" "$rc" 0
expect_ok "cmd-submit of the bundle signed by both cards (threshold 2)" "$KYOK" tke cmd-submit \
	"$T_DIR/thr.bundle"
expect_eq "both units now 2/1" \
	"$(states | jq -r '"\(.signature_threshold)/\(.revocation_threshold)"' | sort -u)" "2/1"

expect_ok "select bob" "$KYOK" tke sigkey-sel --sigkeys 2
put 1 epb
mark
expect_ok "reinserted: cmd-sign of the other bundle asks the PIN again (from --card-pin-fd)" \
	"$KYOK" tke cmd-sign "$T_DIR/thr2.bundle" --card-pin-fd 3 3<"$ep_b"
expect_eq "... one VERIFY, two SIGNs" "$(signed) $(sent $VERIFY)" "2 1"

# ---- refusals: nothing signed, nothing sent ----------------------------------------------------
run_rc "$KYOK" tke cmd-sign "$T_DIR/thr2.bundle" --card-wait 1h
expect_eq "--card-wait 1h: exit 2" "$rc" 2
grep -q "\-\-card-wait takes a whole number of seconds from 0 to 86400, not '1h'" <<<"$out" &&
	pass "... says what it takes" || fail "... said: $out"
expect_ok "select alice, bob" "$KYOK" tke sigkey-sel --sigkeys 1,2
before=$(states)
mark
run_rc "$KYOK" tke cryptounit-thrhld-set --signature 2 --revocation 2 --card-wait 0 \
	--card-pin-file "$ep_a" --card-pin-file "$ep_b"
expect_eq "bob's card in reader 1 where alice's signs, --card-wait 0: exit 5" "$rc" 5
grep -q "reader 1 .*not the one the signature key names.*it holds the EP11 card (device $dev_b), not the EP11 card of administrator 'alice' (device $dev_a)" <<<"$out" &&
	pass "... names both cards" || fail "... said: $out"
expect_eq "... nothing signed, no unit changed" "$(signed) $(states)" "0 $before"

card_remove 1 || fail "kyok-card in reader 1 did not end cleanly"
pcsc_wait_card 1 absent
run_rc "$KYOK" tke cryptounit-thrhld-set --signature 2 --revocation 2 --card-wait 0
expect_eq "reader 1 empty, --card-wait 0: exit 5" "$rc" 5
grep -q "the EP11 card of administrator 'alice' was not inserted within the --card-wait bound (0 s): nothing was sent" <<<"$out" &&
	pass "... says which card it waited for" || fail "... said: $out"
expect_eq "... no unit changed" "$(states)" "$before"

put 1 epa
bg "$KYOK" tke cryptounit-thrhld-set --signature 2 --revocation 2 --card-pin-file "$ep_a"
if waitfor "insert the EP11 card of administrator 'bob' (device $dev_b) into reader 1"; then
	put 1 epa
else
	fail "no prompt for bob's card: $(cat "$T_DIR/bg.err")"
fi
bgwait
expect_eq "alice's card put back where bob's was asked for: exit 5" "$rc" 5
grep -q "not the one the signature key names.*it holds the EP11 card (device $dev_a), not the EP11 card of administrator 'bob' (device $dev_b)" <<<"$out" &&
	pass "... names both cards" || fail "... said: $out"
expect_eq "... no unit changed (alice's signature made, never sent)" "$(states)" "$before"

mark
expect_ok "select alice" "$KYOK" tke sigkey-sel --sigkeys 1
sum=$(sha256sum <"$T_DIR/thr2.bundle")
put 1 epa
run_rc "$KYOK" tke cmd-sign "$T_DIR/thr2.bundle" --card-pin-file "$wrong"
expect_eq "cmd-sign with alice's PIN wrong: exit 4" "$rc" 4
grep -q "EP11 card PIN wrong: 2 tries left before the card blocks; nothing was sent" <<<"$out" &&
	pass "... shows the tries left" || fail "... said: $out"
expect_eq "... no SIGN, the bundle unchanged" "$(signed) $(sha256sum <"$T_DIR/thr2.bundle")" "0 $sum"
for i in 1 2; do
	run_rc "$KYOK" scup pin-verify --reader 1 --pin-file "$wrong"
done
grep -q "blocked" <<<"$out" && pass "alice's card blocked by wrong PINs" || fail "scup said: $out"
put 1 epa
run_rc "$KYOK" tke cmd-sign "$T_DIR/thr2.bundle" --card-pin-file "$ep_a"
expect_eq "cmd-sign with alice's card blocked: exit 4" "$rc" 4
grep -q "is blocked and signs nothing: unblock it with a CA card of its zone ('kyok scup ep11-unblock')" <<<"$out" &&
	pass "... says how to unblock it" || fail "... said: $out"
expect_eq "... no SIGN, the bundle unchanged" "$(signed) $(sha256sum <"$T_DIR/thr2.bundle")" "0 $sum"

# ---- card-copy: bob's card copied to a third card of the zone, which then signs -------------
put 1 ca
put 2 epc
expect_ok "EP11 card c of the zone" "$KYOK" scup ep11-init --pin-file "$ca_1" --pin-file "$ca_2" \
	--pin-file "$ep_c"
put 1 ca2
expect_ok "a CA card of another zone" "$KYOK" scup ca-init --pin-file "$ca_1" --pin-file "$ca_2"
put 2 epx
expect_ok "an EP11 card of that other zone" "$KYOK" scup ep11-init --pin-file "$ca_1" \
	--pin-file "$ca_2" --pin-file "$ep_x"
put 1 epb
mark
run_rc "$KYOK" tke card-copy --card-pin-file "$ep_b" --card-pin-file "$ep_x"
expect_eq "card-copy to an EP11 card of another zone: exit 4" "$rc" 4
grep -q "reader 2 .*of another zone than the card in reader 1: a card is copied only within its zone" <<<"$out" &&
	pass "... says so" || fail "... said: $out"
expect_eq "... no PIN verified, no COPY command sent" \
	"$(sent $VERIFY) $(sent '801[8ACac]0000')" "0 0"
expect_eq "... the other zone's card still has no key" \
	"$("$KYOK" scup show --reader 2 | sed -n 's/^signature key: *//p')" "none"

# A key part on bob's card, made with the applet's own commands (card_probe, through lib/card):
# the instance's anchor registered first (a part is bound to it), then GENERATE KEY PART.
made=$(printf 'open\nselect\nverify %s\napdu 80460000%s\napdu 80400000%s\n' "$ep_b" \
	"$(openssl x509 -in "$KYOK_INSTANCE/anchor.crt" -outform DER | xxd -p | tr -d '\n')" \
	"$(printf 'backup part' | xxd -p | tr -d '\n')" | "$CARD_PROBE" session 1 2>&1 || true)
grep -qi "^ok 9000 [0-9a-f]\{66\}$" <<<"$(sed -n 5p <<<"$made")" && pass "a key part made on bob's card" ||
	fail "card_probe: $made"
parts_b=$("$KYOK" scup show --reader 1 | grep -E '^ *1  VP ')
put 2 epc
mark
expect_ok "card-copy of bob's card (reader 1) to card c (reader 2)" "$KYOK" tke card-copy \
	--card-pin-file "$ep_b" --card-pin-file "$ep_c"
grep -q "copied the EP11 card in reader 1 (device $dev_b) to the EP11 card in reader 2 (device [0-9a-f]\{16\}): its signature key and 1 key part$" <<<"$out" &&
	pass "... says what it copied" || fail "... said: $out"
expect_eq "... COPY BEGIN, EXPORT and IMPORT sent once each" \
	"$(sent 80180000) $(sent 801A0000) $(sent 801C0000)" "1 1 1"
expect_eq "card c now holds bob's key (the SKI of bob's file)" \
	"$("$KYOK" scup show --reader 2 | sed -n 's/^signature key: SKI //p')" \
	"$(sed -n 's/^kyok-card-key-ski: //p' "$fb")"
expect_eq "... and his key part (VP and description)" \
	"$("$KYOK" scup show --reader 2 | grep -E '^ *1  VP ')" "$parts_b"
mark
expect_ok "card-copy again with --yes: the target's contents replaced" "$KYOK" tke card-copy \
	--yes --output json --card-pin-file "$ep_b" --card-pin-file "$ep_c"
expect_eq "... its JSON answer: zone, devices, what was copied" \
	"$(jq -r '[.zone, (.source | .[0:16]), (.signature_key | tostring), .key_parts] | join(" ")' <<<"$out")" \
	"$(sed -n 's/^kyok-card-zone: //p' "$fb") $dev_b true 1"
expect_eq "... one COPY IMPORT" "$(sent 801C0000)" "1"
run_rc "$KYOK" tke card-copy --card-pin-file "$ep_b" --card-pin-file "$ep_c" </dev/null
expect_eq "card-copy onto a card holding a key, no --yes and no terminal: exit 2" "$rc" 2
grep -q "cancelled: no terminal to ask for confirmation: use --yes" <<<"$out" &&
	pass "... asks to confirm the replacement" || fail "... said: $out"
grep -q "note: --card-pin-file '$ep_b' not read" <<<"$out" && pass "... before any PIN" ||
	fail "... said: $out"

card_remove 2 || fail "kyok-card in reader 2 did not end cleanly"
pcsc_wait_card 2 absent
put 1 epc
expect_ok "prepare thresholds 2/2" "$KYOK" tke cryptounit-thrhld-set --signature 2 \
	--revocation 2 --prepare "$T_DIR/thr3.bundle"
expect_ok "select bob" "$KYOK" tke sigkey-sel --sigkeys 2
expect_ok "cmd-sign for bob with the copy of his card" "$KYOK" tke cmd-sign "$T_DIR/thr3.bundle" \
	--card-pin-file "$ep_c"
grep -q "note: the EP11 card in reader 1 (device [0-9a-f]\{16\}) is a copy of administrator 'bob''s card (device $dev_b): it holds the same signature key" <<<"$out" &&
	pass "... says the card is a copy of bob's" || fail "... said: $out"
expect_eq "... both commands signed by bob" \
	"$("$KYOK" tke cmd-show "$T_DIR/thr3.bundle" --output json | jq -r '[.commands[].signers[].name] | join(",")')" \
	"bob,bob"

# ---- auto-init of a second instance, signed by bob's key on the copy of his card ------------
(
	export KYOK_INSTANCE="$T_DIR/inst2"
	expect_ok "instance 2: kyok up" "$KYOK" up
	expect_ok "instance 2: select units 1,2" "$KYOK" tke cryptounit-add --units 1,2
	mark
	expect_ok "instance 2: auto-init with bob's card key" "$KYOK" tke auto-init --signature 1 \
		--revocation 1 --sigkeys 2 --card-pin-file "$ep_c"
	for n in 1 2; do
		expect_eq "instance 2, unit $n: admin bob, 1/1, a current master key" \
			"$(unit_state "$n" | jq -r '[([.admins[].name] | join(",")), .signature_threshold, .revocation_threshold, .current_mk.state] | join(" ")')" \
			"bob 1 1 VALID"
	done
	[ "$(signed)" -ge 2 ] && pass "... the card signed ($(signed) SIGNs)" || fail "no SIGN by the card"
	[ "$T_FAILS" -eq 0 ] || exit 1
) || fail "auto-init of instance 2 with a card key"

finish
