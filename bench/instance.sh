# bench/instance.sh: sourced by the benchmarks that make their own instances (bench/run.sh,
# bench/pg.sh, bench/big.sh, bench/metrics_ab.sh). Needs KYOK (the kyok program) set.
#
# bench_instance DIR CONF [STORE]: an instance of one unit in DIR, made by 'kyok up' (given
# --store STORE when STORE is set), CONF (unit.conf lines) added to its unit.conf, initialised
# by 'kyok tke auto-init', with one Writer API key. Sets BENCH_URL and BENCH_INSTANCE; the
# token is in DIR/http/token, the request headers (Authorization, Bluemix-Instance) in
# DIR/http/headers, the commands' output in DIR/setup.log. The password, the API key and the
# token stay in DIR (0700), never in argv.
bench_instance() {
	local d=$1 conf=$2 store=${3:-}
	mkdir -p "$d/home" "$d/pw" "$d/http"
	chmod 700 "$d" "$d/pw" "$d/http"
	head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$d/pw/admin"
	chmod 600 "$d/pw/admin"
	(
		export HOME="$d/home" KYOK_TKE_FILES="$d/ws" KYOK_INSTANCE="$d/inst"
		if [ -n "$store" ]; then
			"$KYOK" up --dir "$KYOK_INSTANCE" --units 1 --store "$store"
		else
			"$KYOK" up --dir "$KYOK_INSTANCE" --units 1
		fi
		"$KYOK" down
		printf '%s' "$conf" >>"$KYOK_INSTANCE/unit-1/unit.conf"
		"$KYOK" up
		"$KYOK" tke cryptounit-add --units 1
		"$KYOK" tke auto-init --signature 1 --revocation 1 --new-admins bench-admin \
			--password-file "$d/pw/admin"
		"$KYOK" tke sigkey-sel --sigkeys 1
		"$KYOK" tke apikey-create --name bench --role Writer --password-file "$d/pw/admin" \
			--out "$d/http/bench.apikey"
	) >"$d/setup.log" 2>&1
	BENCH_URL=$(jq -r '.units[0].url' "$d/inst/instance.json")
	BENCH_INSTANCE=$(jq -r .instance "$d/inst/instance.json")
	bench_token "$d/http" "$BENCH_URL" "$BENCH_INSTANCE"
}

# bench_token HTTPDIR URL INSTANCE: the token of the API key in HTTPDIR/bench.apikey from
# URL's /identity/token, as the SDKs get it, in HTTPDIR/token; the request headers in
# HTTPDIR/headers.
bench_token() {
	jq -j .apikey "$1/bench.apikey" >"$1/apikey.raw"
	curl -fsS --data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' \
		--data-urlencode "apikey@$1/apikey.raw" "$2/identity/token" |
		jq -j .access_token >"$1/token"
	{
		printf 'Authorization: Bearer %s\n' "$(cat "$1/token")"
		printf 'Bluemix-Instance: %s\n' "$3"
	} >"$1/headers"
}
