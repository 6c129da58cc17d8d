#!/usr/bin/env bash
# The embedded default, end to end: a local 2-unit instance, a full key ceremony by three
# administrators with three key parts, then auto-init of a second instance.
# Usage: scripts/demo.sh [BUILD_DIR]   (make demo runs it)
set -euo pipefail

BUILD=${1:-build}
KYOK="$BUILD/cli/kyok"
export KYOK_UNITD="$BUILD/unitd/kyok-unitd"
DEMO=${KYOK_DEMO_DIR:-$HOME/.kyok/demo}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() {
	printf '$ kyok' >&2; printf ' %q' "$@" >&2; printf '\n' >&2
	"$KYOK" "$@"
}

# A previous demo's instances are stopped and replaced, said so. Only a directory this script
# made (its mark inside) is deleted: KYOK_DEMO_DIR pointing elsewhere by mistake is refused.
if [ -e "$DEMO" ]; then
	if [ ! -f "$DEMO/.kyok-demo" ]; then
		echo "demo: $DEMO exists and was not made by the demo: not deleting it; set" \
			"KYOK_DEMO_DIR to a new directory (or remove it yourself)" >&2
		exit 1
	fi
	echo "demo: replacing the previous demo in $DEMO (its instances stopped, its files" \
		"deleted; KYOK_DEMO_DIR=DIR puts the demo elsewhere)"
	for i in "$DEMO"/inst1 "$DEMO"/inst2; do
		[ -f "$i/instance.json" ] && "$KYOK" down --instance "$i" >/dev/null 2>&1 || true
	done
	rm -rf "$DEMO"
else
	echo "demo: working in $DEMO (KYOK_DEMO_DIR=DIR puts it elsewhere)"
fi
mkdir -p "$DEMO/pw"
chmod 700 "$DEMO" "$DEMO/pw"
: >"$DEMO/.kyok-demo"

# Each person's password lives in their own 0600 file, generated here (an interactive user
# would type them at the prompts instead).
pw() {
	local f="$DEMO/pw/$1"
	[ -f "$f" ] || { head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$f"; chmod 600 "$f"; }
	echo "$f"
}

export KYOK_INSTANCE="$DEMO/inst1"
export KYOK_TKE_FILES="$DEMO/tke1"

step "Start a local instance: 2 crypto units in 2 zones"
run up
run tke cryptounits
run tke cryptounit-add --units 1,2

step "Three administrators create their signature keys"
for who in alice bob carol; do
	run tke sigkey-add --name "$who" --password-file "$(pw "$who")"
done
run tke sigkeys

step "Install the administrators (imprint mode: no signature needed yet)"
for n in 1 2 3; do
	run tke cryptounit-admin-add --sigkey "$n"
done
run tke cryptounit-admins

step "Set thresholds 2/2: leaves imprint mode, signed by alice and bob"
run tke sigkey-sel --sigkeys 1,2
run tke cryptounit-thrhld-set --signature 2 --revocation 2 \
	--password-file "$(pw alice)" --password-file "$(pw bob)"
run tke cryptounit-thrhlds

step "Three key part owners create their key parts"
owners=(dora eve frank)
for who in "${owners[@]}"; do
	run tke mk-add --random --description "part of $who" --password-file "$(pw "part-$who")"
done
run tke mks

step "Load the master key from the 3 parts (one signature per part), commit, activate"
run tke sigkey-sel --sigkeys 1,2,3
run tke cryptounit-mk-load --parts 1,2,3 \
	--password-file "$(pw part-dora)" --password-file "$(pw part-eve)" \
	--password-file "$(pw part-frank)" \
	--password-file "$(pw alice)" --password-file "$(pw bob)" --password-file "$(pw carol)"
run tke sigkey-sel --sigkeys 1,2
run tke cryptounit-mk-commit --password-file "$(pw alice)" --password-file "$(pw bob)"
run tke cryptounit-mk-setimm --yes --password-file "$(pw alice)" --password-file "$(pw bob)"
run tke cryptounit-mk

step "Both crypto units, side by side"
run tke cryptounit-compare
vp1=$("$KYOK" status --output json | jq -r '[.units[].state.current_mk.vp] | unique | .[]')

step "An application's API key (Manager role), made by the administrators"
run tke apikey-create --name demo-app --role Manager \
	--password-file "$(pw alice)" --password-file "$(pw bob)"
run tke apikeys
export KYOK_APIKEY_FILE="$KYOK_TKE_FILES/apikeys/demo-app.apikey"

step "A root key; a new data key wrapped under it, then unwrapped"
run kp key-create --name demo-root-key --description "made by the demo"
key=$("$KYOK" kp keys --output json |
	jq -r '[.resources[] | select(.name == "demo-root-key")][0].id')
run kp wrap "$key" --dek-out "$DEMO/dek.bin" >"$DEMO/wrapped.txt"
printf 'wrapped data key: %.60s...\n' "$(cat "$DEMO/wrapped.txt")"
run kp unwrap "$key" --ciphertext-file "$DEMO/wrapped.txt" --out "$DEMO/dek-1.bin"
cmp -s "$DEMO/dek.bin" "$DEMO/dek-1.bin" && unwrap1=same || unwrap1=DIFFERENT
echo "unwrapped data key is the one wrapped: $unwrap1"
run kp keys

step "Rotate the master key: two fresh key parts, load, commit, re-encipher, activate"
for who in dora eve; do
	run tke mk-add --random --description "rotation part of $who" \
		--password-file "$(pw "rot-$who")"
done
run tke mks
run tke cryptounit-mk-load --parts 4,5 \
	--password-file "$(pw rot-dora)" --password-file "$(pw rot-eve)" \
	--password-file "$(pw alice)" --password-file "$(pw bob)"
run tke cryptounit-mk-commit --password-file "$(pw alice)" --password-file "$(pw bob)"
run tke cryptounit-mk-rotate --yes --password-file "$(pw alice)" --password-file "$(pw bob)"
run tke cryptounit-mk
vp1r=$("$KYOK" status --output json | jq -r '[.units[].state.current_mk.vp] | unique | .[]')

step "The same wrapped data key still unwraps after the rotation"
run kp unwrap "$key" --ciphertext-file "$DEMO/wrapped.txt" --out "$DEMO/dek-2.bin"
cmp -s "$DEMO/dek.bin" "$DEMO/dek-2.bin" && unwrap2=same || unwrap2=DIFFERENT
echo "unwrapped data key after rotation is the one wrapped: $unwrap2"
unset KYOK_APIKEY_FILE

step "auto-init: a second instance initialised in one command"
export KYOK_INSTANCE="$DEMO/inst2"
export KYOK_TKE_FILES="$DEMO/tke2"
run up
run tke cryptounit-add --units 1,2
run tke auto-init --signature 2 --revocation 2 --new-admins grace,heidi,ivan \
	--password-file "$(pw grace)" --password-file "$(pw heidi)" --password-file "$(pw ivan)"
run tke cryptounit-compare
vp2=$("$KYOK" status --output json | jq -r '[.units[].state.current_mk.vp] | unique | .[]')

step "What happened"
row() { printf '%-48s %s\n' "$1" "$2"; }
row "instance 1: ceremony by 3 admins, 3 parts" "master key VP ${vp1:0:16}... on both units"
row "instance 1: root key created" "$key"
row "instance 1: data key wrapped, unwrapped" "$unwrap1"
row "instance 1: master key rotated" "VP ${vp1:0:16}... -> ${vp1r:0:16}..."
row "instance 1: data key unwrapped after rotation" "$unwrap2"
row "instance 2: auto-init" "master key VP ${vp2:0:16}... on both units"
[ "$unwrap1" = same ] && [ "$unwrap2" = same ] && [ "$vp1" != "$vp1r" ] && [ -n "$vp2" ] || {
	echo "demo: something did not go as it should (see above)" >&2
	exit 1
}
printf '\nInstances keep running: %s and %s\n' "$DEMO/inst1" "$DEMO/inst2"
printf 'Stop them with: %s down --instance %s/inst1; %s down --instance %s/inst2\n' \
	"$KYOK" "$DEMO" "$KYOK" "$DEMO"
