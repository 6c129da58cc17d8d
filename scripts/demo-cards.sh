#!/usr/bin/env bash
# The key ceremony with smart cards only, end to end, on a private PC/SC stack: pcscd with
# two virtual readers (vsmartcard-vpcd) and kyok-cards (software cards), in a mount and
# network namespace of its own, so the machine's own pcscd is neither seen nor touched.
# Nine cards as the reference service recommends: a CA card and its backup; alice's
# signature card and its copy; bob's; two key part cards and their copies. Then a 2-unit
# instance initialised with them: administrators, thresholds 2/2, the master key from the
# part cards, an API key, a data key wrapped and unwrapped, a rotation.
# Usage: scripts/demo-cards.sh [BUILD_DIR]   (make demo-cards runs it)
# A kyok-card is a software card, as safe as the machine it runs on (docs/cards.md).
set -euo pipefail

BUILD=${1:-build}
KYOK_BUILD=$(cd "$BUILD" && pwd)
KYOK="$KYOK_BUILD/cli/kyok"
export KYOK_UNITD="$KYOK_BUILD/unitd/kyok-unitd"
DEMO=${KYOK_DEMO_CARDS_DIR:-$HOME/.kyok/demo-cards}
T_NAME=demo-cards
T_DIR=$DEMO
cleanup() {
	if [ -f "$DEMO/inst/instance.json" ]; then
		"$KYOK" down --instance "$DEMO/inst" >/dev/null 2>&1 || true
	fi
}
# shellcheck source=tests/integration/pcsc.sh
. "$(dirname "$0")/../tests/integration/pcsc.sh"
# Only a directory this script made (its mark inside) is replaced, and it says so.
if [ -z "${KYOK_T_PCSCNS:-}" ]; then
	if [ -e "$DEMO" ]; then
		if [ ! -f "$DEMO/.kyok-demo" ]; then
			echo "demo-cards: $DEMO exists and was not made by the demo: not deleting" \
				"it; set KYOK_DEMO_CARDS_DIR to a new directory (or remove it yourself)" >&2
			exit 1
		fi
		echo "demo-cards: replacing the previous demo in $DEMO (KYOK_DEMO_CARDS_DIR=DIR" \
			"puts it elsewhere)"
		rm -rf "$DEMO"
	else
		echo "demo-cards: working in $DEMO (KYOK_DEMO_CARDS_DIR=DIR puts it elsewhere)"
	fi
	mkdir -p "$DEMO/pw"
	chmod 700 "$DEMO" "$DEMO/pw"
	: >"$DEMO/.kyok-demo"
fi
pcsc_namespace "$BUILD"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() {
	printf '$ kyok' >&2
	printf ' %q' "$@" >&2
	printf '\n' >&2
	"$KYOK" "$@"
}
say() { printf '   (%s)\n' "$*" >&2; }
put() {
	say "card '$2' into reader $1"
	card_put "$@"
}
pull() {
	say "card out of reader $1"
	card_pull "$@"
}
# Each holder's PIN in a 0600 file, generated here (a person would type it, or use the
# reader's PIN pad).
pin() {
	local f="$DEMO/pw/$1"
	[ -f "$f" ] || { printf '%08d' $((RANDOM * 32768 + RANDOM)) >"$f"; chmod 600 "$f"; }
	echo "$f"
}
# with_cards CMD...: a kyok command during which the cards it asks for are inserted (as
# the holders would, on its request), with the signature cards' PINs on a descriptor.
declare -A CARD_OF_ADMIN CARD_OF_PART
with_cards() {
	local pid rc=0
	printf '$ kyok' >&2
	printf ' %q' "$@" >&2
	printf '\n' >&2
	: >"$DEMO/cmd.err"
	"$KYOK" "$@" --card-pin-fd 3 3<"$DEMO/pw/signers" 2>"$DEMO/cmd.err" &
	pid=$!
	card_serve "$DEMO/cmd.err" "$pid"
	wait "$pid" || rc=$?
	cat "$DEMO/cmd.err" >&2
	return "$rc"
}

export KYOK_INSTANCE="$DEMO/inst"
export KYOK_TKE_FILES="$DEMO/tke"
pcsc_start
echo "Note: a kyok-card is a software card: it is as safe as the machine it runs on. It makes"
echo "the whole path real (readers, PINs, zones, APDUs); a physical card running the applet,"
echo "or a hardware PKCS#11 token, is what keeps a key out of reach of the workstation."
echo "pcscd runs with two virtual readers:"
"$CARD_PROBE" readers | sed 's/^/   /'

step "The smart card zone: a CA card and its backup (kyok scup)"
put 1 ca
run scup ca-init --pin-file "$(pin ca-1)" --pin-file "$(pin ca-2)"
put 2 ca-backup
run scup ca-backup --pin-file "$(pin ca-1)" --pin-file "$(pin ca-2)" \
	--pin-file "$(pin ca-backup-1)" --pin-file "$(pin ca-backup-2)"

step "Seven EP11 cards enrolled into the zone (kyok scup ep11-init)"
for c in alice alice-copy bob part-1 part-1-copy part-2 part-2-copy; do
	put 2 "$c"
	run scup ep11-init --pin-file "$(pin ca-1)" --pin-file "$(pin ca-2)" --pin-file "$(pin "$c")"
done
pull 2

step "Administrators' signature keys generated on their cards; alice's card copied"
put 1 alice
run tke sigkey-add --name alice --card --card-pin-file "$(pin alice)"
put 1 alice
put 2 alice-copy
run tke card-copy --card-pin-file "$(pin alice)" --card-pin-file "$(pin alice-copy)"
pull 2
put 1 bob
run tke sigkey-add --name bob --card --card-pin-file "$(pin bob)"
pull 1
run tke sigkeys

step "A local instance: 2 crypto units (its unit trust anchor binds the key parts made for it)"
run up

step "Master key parts generated on their cards (reader 2), each copied to a backup card"
for n in 1 2; do
	put 2 "part-$n"
	run tke mk-add --card --description "part $n" --card-pin-file "$(pin "part-$n")"
	pull 2
	put 1 "part-$n"
	put 2 "part-$n-copy"
	run tke card-copy --card-pin-file "$(pin "part-$n")" --card-pin-file "$(pin "part-$n-copy")"
	pull 1
	pull 2
done
run tke mks
put 2 part-1
run scup show --reader 2
pull 2

step "The administrators installed"
run tke cryptounit-add --units 1,2
run tke cryptounit-admin-add --sigkey 1
run tke cryptounit-admin-add --sigkey 2
run tke sigkey-sel --sigkeys 1,2
for i in $(seq 1 20); do
	cat "$(pin alice)"
	echo
	cat "$(pin bob)"
	echo
done >"$DEMO/pw/signers"
chmod 600 "$DEMO/pw/signers"
CARD_OF_ADMIN=([alice]=alice [bob]=bob)
CARD_OF_PART=(["part 1"]=part-1 ["part 2"]=part-2)

step "Thresholds 2/2, signed by both administrators' cards in reader 1"
with_cards tke cryptounit-thrhld-set --signature 2 --revocation 2

step "The master key from the two part cards in reader 2, signed by both admins' cards"
part_no() { "$KYOK" tke mks --output json | jq -r --arg d "$1" '.keyparts[] | select(.description == $d) | .number'; }
with_cards tke cryptounit-mk-load --parts "$(part_no "part 1"),$(part_no "part 2")" \
	--card-pin-file "$(pin part-1)" --card-pin-file "$(pin part-2)"
with_cards tke cryptounit-mk-commit
with_cards tke cryptounit-mk-setimm --yes
run tke cryptounit-mk
vp1=$("$KYOK" status --output json | jq -r '[.units[].state.current_mk.vp] | unique | .[]')

step "An API key; a root key; a data key wrapped and unwrapped"
with_cards tke apikey-create --name demo-app --role Writer
export KYOK_APIKEY_FILE="$KYOK_TKE_FILES/apikeys/demo-app.apikey"
run kp key-create --name demo-root-key --description "made by the card demo"
key=$("$KYOK" kp keys --output json |
	jq -r '[.resources[] | select(.name == "demo-root-key")][0].id')
run kp wrap "$key" --dek-out "$DEMO/dek.bin" >"$DEMO/wrapped.txt"
run kp unwrap "$key" --ciphertext-file "$DEMO/wrapped.txt" --out "$DEMO/dek-1.bin"
cmp -s "$DEMO/dek.bin" "$DEMO/dek-1.bin" && unwrap1=same || unwrap1=DIFFERENT

step "Rotation: two new parts on the part cards (from their copies), load, commit, rotate"
for n in 1 2; do
	put 2 "part-$n-copy"
	run tke mk-add --card --description "part $n, rotation" --card-pin-file "$(pin "part-$n-copy")"
done
pull 2
CARD_OF_PART=(["part 1, rotation"]=part-1-copy ["part 2, rotation"]=part-2-copy)
with_cards tke cryptounit-mk-load \
	--parts "$(part_no "part 1, rotation"),$(part_no "part 2, rotation")" \
	--card-pin-file "$(pin part-1-copy)" --card-pin-file "$(pin part-2-copy)"
with_cards tke cryptounit-mk-commit
with_cards tke cryptounit-mk-rotate --yes
vp2=$("$KYOK" status --output json | jq -r '[.units[].state.current_mk.vp] | unique | .[]')
run kp unwrap "$key" --ciphertext-file "$DEMO/wrapped.txt" --out "$DEMO/dek-2.bin"
cmp -s "$DEMO/dek.bin" "$DEMO/dek-2.bin" && unwrap2=same || unwrap2=DIFFERENT
unset KYOK_APIKEY_FILE

step "What crossed the readers"
napdu=$(pcsc_apdus | grep -c '^>' || true)
secrets=0
crossed=0
for f in "$DEMO"/cards/*.eeprom; do
	while read -r kind hex; do
		secrets=$((secrets + 1))
		h=$((${#hex} / 2))
		if pcsc_crossed "${hex:0:h}" || pcsc_crossed "${hex:h}"; then
			crossed=$((crossed + 1))
			echo "   $kind of $(basename "$f" .eeprom) crossed a reader" >&2
		fi
	done < <("$KYOK_BUILD/tests/card_eeprom" secrets "$f" "${f%.eeprom}.chip")
done

step "What happened"
row() { printf '%-50s %s\n' "$1" "$2"; }
row "cards: CA, 2 admins, 2 parts, and their copies" "9 cards of one zone"
row "master key from the part cards" "VP ${vp1:0:16}... on both units"
row "data key wrapped, unwrapped" "$unwrap1"
row "master key rotated" "VP ${vp1:0:16}... -> ${vp2:0:16}..."
row "data key unwrapped after the rotation" "$unwrap2"
row "APDUs that crossed the readers (pcscd --apdu)" "$napdu"
row "cards' private keys and key parts among them" "$crossed of $secrets"
"$KYOK" down >/dev/null
[ "$unwrap1" = same ] && [ "$unwrap2" = same ] && [ -n "$vp1" ] && [ "$vp1" != "$vp2" ] &&
	[ "$crossed" -eq 0 ] && [ "$secrets" -gt 0 ] || {
	echo "demo-cards: something did not go as it should (see above)" >&2
	exit 1
}
printf '\nThe instance was stopped with the private pcscd; its files stay in %s\n' "$DEMO"
