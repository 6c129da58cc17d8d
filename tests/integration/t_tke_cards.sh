#!/usr/bin/env bash
# kyok tke with EP11 smart cards, through the whole card stack (a private pcscd, vpcd
# readers, kyok-cards, libpcsclite, lib/card):
#   sigkey-add --card generates the administrator's key on the EP11 card in reader 1: the file
#     names the card's zone and device and the key's SKI (the one 'scup show' reports), holds
#     no key, and its certificate is signed by the card's key; sigkeys lists it
#   the JSON answer names the file, the card's zone and device
#   refusals that write nothing: a wrong PIN (tries shown), a card that has a key already, a CA
#     card in reader 1, --card with --token-module
#   a signed command refuses a card sigkey by name (signing with cards is not there yet)
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
wrong=$(newpin wrong)
put() {
	if [ -f "$PCSC_DIR/card-$1.pid" ]; then
		card_remove "$1" || fail "kyok-card in reader $1 did not end cleanly"
		pcsc_wait_card "$1" absent
	fi
	card_insert "$1" "$2"
	pcsc_wait_card "$1" present
}
run_rc() {
	rc=0
	out=$("$@" 2>&1) || rc=$?
}
nfiles() { find "$KYOK_TKE_FILES/sigkeys" -type f 2>/dev/null | wc -l; }

# ---- a zone: its CA card enrols two EP11 cards -------------------------------------------------
put 1 ca
expect_ok "a CA card" "$KYOK" scup ca-init --pin-file "$ca_1" --pin-file "$ca_2"
put 2 epa
expect_ok "EP11 card a" "$KYOK" scup ep11-init --pin-file "$ca_1" --pin-file "$ca_2" --pin-file "$ep_a"
put 2 epb
expect_ok "EP11 card b" "$KYOK" scup ep11-init --pin-file "$ca_1" --pin-file "$ca_2" --pin-file "$ep_b"

# ---- refusals before any key ------------------------------------------------------------------
run_rc "$KYOK" tke sigkey-add --name alice --card --password-file "$ep_a"
expect_eq "sigkey-add --card with a CA card in reader 1: exit 3" "$rc" 3
grep -q "reader 1 .*not the kind of card.*a signature key is made on an EP11 card in reader 1" <<<"$out" &&
	pass "... names the reader and what it needs" || fail "... said: $out"
run_rc "$KYOK" tke sigkey-add --name alice --card --token-module /usr/lib/x.so --token-label x
expect_eq "--card with --token-module: exit 2" "$rc" 2
grep -q "a key is on a card or in a token" <<<"$out" && pass "... says why" || fail "... said: $out"

put 1 epa
run_rc "$KYOK" tke sigkey-add --name alice --card --password-file "$wrong"
expect_eq "sigkey-add --card with a wrong PIN: exit 4" "$rc" 4
grep -q "EP11 card PIN wrong: 2 tries left" <<<"$out" && pass "... shows the tries left" ||
	fail "... said: $out"
expect_eq "no sigkey file after the refusals" "$(nfiles)" 0
expect_eq "no key made on the card" "$("$KYOK" scup show --reader 1 | sed -n 's/^signature key: *//p')" "none"

# ---- the key made on the card ------------------------------------------------------------------
expect_ok "sigkey-add --card: alice's key on EP11 card a" \
	"$KYOK" tke sigkey-add --name alice --card --password-file "$ep_a"
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

run_rc "$KYOK" tke sigkey-add --name bob --card --password-file "$ep_a"
expect_eq "a second key on the same card: exit 4" "$rc" 4
grep -q "holds a signature key already: one key per card" <<<"$out" && pass "... says so" ||
	fail "... said: $out"
expect_eq "... no file written" "$(nfiles)" 1

put 1 epb
expect_ok "bob's key on EP11 card b" "$KYOK" tke sigkey-add --name bob --card --password-file "$ep_b" \
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

# ---- the card admins on the units; signing with a card key refused by name ------------------
expect_ok "kyok up: 2 units" "$KYOK" up
expect_ok "select units 1,2" "$KYOK" tke cryptounit-add --units 1,2
for n in 1 2; do
	expect_ok "admin-add card key $n (imprint mode: the certificate alone)" \
		"$KYOK" tke cryptounit-admin-add --sigkey "$n"
done
expect_eq "both units list alice and bob" \
	"$(unit_state 1 | jq -r '[.admins[].name] | sort | join(",")') $(unit_state 2 | jq -r '[.admins[].name] | sort | join(",")')" \
	"alice,bob alice,bob"
expect_ok "select alice, bob" "$KYOK" tke sigkey-sel --sigkeys 1,2
before=$(unit_state 1; unit_state 2)
run_rc "$KYOK" tke cryptounit-thrhld-set --signature 2 --revocation 2 --password-file "$ep_a" \
	--password-file "$ep_b"
after=$(unit_state 1; unit_state 2)
if [ "$rc" -ne 0 ] && grep -q "held by an EP11 smart card" <<<"$out" && [ "$before" = "$after" ]; then
	pass "a signed command refuses a card key by name, the units unchanged (exit $rc)"
else
	fail "signing with a card key: exit $rc: $out"
fi

finish
