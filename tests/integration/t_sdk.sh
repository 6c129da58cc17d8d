#!/usr/bin/env bash
# The official Key Protect Node.js SDK (tests/sdk, pinned in its package-lock.json) against a
# real 2-unit instance: auto-init, API keys made with signed apikey-create commands, then
# tests/sdk/kp_sdk_test.js with the unit URLs and the API keys in its environment (never on
# a command line). Skipped (exit 77) when node or npm is missing. It keeps the machine's
# network: npm may fetch the SDK from its registry.
KYOK_T_SHARED_NET=1
. "$(dirname "$0")/helpers.sh"
SDK_SRC=$(cd "$(dirname "$0")/../sdk" && pwd)
NPM_CACHE=${npm_config_cache:-${HOME:-/root}/.npm}
setup

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	echo "t_sdk: node and npm are needed: skipped"
	exit 77
fi

"$KYOK" up >/dev/null
"$KYOK" tke cryptounit-add --units 1,2 >/dev/null
"$KYOK" tke auto-init --signature 1 --revocation 1 --new-admins ann \
	--password-file "$(newpw ann)" >/dev/null

# apikey_make ROLE: an API key of ROLE registered on both units; prints the secret's file.
apikey_make() {
	local role=$1 id secret hash f="$T_DIR/pw/apikey-$1" n reply
	id="sdk-$(echo "$role" | tr 'A-Z' 'a-z')"
	secret="kyok_$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
	printf '%s' "$secret" >"$f"
	hash=$(printf '%s' "$secret" | openssl dgst -sha256 -r | cut -d' ' -f1)
	for n in 1 2; do
		cmd_json $n apikey-create \
			"{\"apikey_id\":\"$id\",\"name\":\"sdk test $role\",\"role\":\"$role\",\"hash\":\"$hash\"}" \
			>"$T_DIR/apikey.json"
		sign_cmd "$T_DIR/apikey.json" "$T_DIR/apikey.der" ann
		reply=$(post_cmd $n "$T_DIR/apikey.der")
		[ "$(jq -r .ok <<<"$reply")" = true ] || { fail "apikey-create $role on unit $n: $reply"; return 1; }
	done
	echo "$f"
}
km=$(apikey_make Manager)
kw=$(apikey_make Writer)
kr=$(apikey_make Reader)
expect_eq "API keys listed by the unit" \
	"$(curl -fsS "$(unit_url 2)/v1/admin/apikeys" | jq -r '[.apikeys[].role] | sort | join(",")')" \
	"Manager,Reader,Writer"

# The SDK: tests/sdk/node_modules when a developer installed it there, else a fresh copy.
sdk=$SDK_SRC
if [ ! -d "$SDK_SRC/node_modules/@ibm-cloud/ibm-key-protect" ]; then
	sdk="$T_DIR/sdk"
	mkdir -p "$sdk"
	cp "$SDK_SRC/package.json" "$SDK_SRC/package-lock.json" "$SDK_SRC/kp_sdk_test.js" "$sdk/"
	if ! (cd "$sdk" && npm ci --no-audit --no-fund --cache "$NPM_CACHE" >"$T_DIR/npm.log" 2>&1); then
		cat "$T_DIR/npm.log" >&2
		fail "npm ci of tests/sdk"
		finish
	fi
fi

out=$(KYOK_URL=$(unit_url 1) KYOK_URL_2=$(unit_url 2) KYOK_INSTANCE_ID=$(instance_id) \
	KYOK_APIKEY_MANAGER=$(cat "$km") KYOK_APIKEY_WRITER=$(cat "$kw") \
	KYOK_APIKEY_READER=$(cat "$kr") node "$sdk/kp_sdk_test.js" 2>&1) || true
echo "$out"
if grep -qE '^[0-9]+ passed, 0 failed$' <<<"$out"; then
	pass "Key Protect SDK against kyok"
else
	fail "Key Protect SDK against kyok"
fi
finish
