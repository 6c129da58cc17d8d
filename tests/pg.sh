# A throw-away PostgreSQL cluster for tests, from Debian's postgresql package. Source it:
#
#   . tests/pg.sh
#   pg_start            # sets KYOK_PG_URI (postgresql:///kyok?host=<socket dir>&user=kyok)
#   ...
#   pg_stop             # also registered by the caller's trap: pg_stop is idempotent
#
# The cluster listens on a Unix socket in its own temp dir only (listen_addresses = ''), with
# trust authentication for its one role, kyok: nothing outside the machine can reach it, and
# the directory is readable by its owner only. fsync is off (tests need no durability) unless
# PG_FSYNC=on (bench/pg.sh: creations persisted as on a real server). initdb refuses to run as
# root: as root the cluster belongs to 'nobody' (the temp dir is made for it), and root
# connects through the socket all the same.
#
# Set before pg_start, for a test that reaches the cluster over the network (unset, as every
# other caller leaves them: the Unix socket only, as above):
#   PG_LISTEN=ADDR            also listen on TCP ADDR:${PG_PORT:-5432}, trusting every client
#                             address (a test network only); sets KYOK_PG_TCP_URI
#                             (postgresql://kyok@ADDR:PORT/kyok)
#   PG_SSL_CERT, PG_SSL_KEY   ssl = on with this server certificate and key (PEM, copied into
#                             the cluster's directory); TCP clients are then taken over TLS only
#   PG_NETNS=NAME             run the server in the network namespace NAME (ip netns exec)

PG_BINDIR=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
PG_DIR=""

pg_available() {
	[ -n "$PG_BINDIR" ] && [ -x "$PG_BINDIR/initdb" ] && [ -x "$PG_BINDIR/pg_ctl" ]
}

pg_as() {
	local ns=()
	[ -n "${PG_NETNS:-}" ] && ns=(ip netns exec "$PG_NETNS")
	if [ "$(id -u)" -eq 0 ]; then
		"${ns[@]}" runuser -u nobody -- "$@"
	else
		"${ns[@]}" "$@"
	fi
}

pg_start() {
	pg_available || { echo "error: PostgreSQL server binaries not found (install the Debian package postgresql)" >&2; return 1; }
	PG_DIR=$(mktemp -d /tmp/kyok-pg-XXXXXX) || return 1
	if [ "$(id -u)" -eq 0 ]; then
		chown nobody "$PG_DIR" || return 1
	fi
	chmod 700 "$PG_DIR"
	if ! pg_as "$PG_BINDIR/initdb" -D "$PG_DIR/data" -U kyok --auth=trust -E UTF8 \
		--locale=C.UTF-8 -N >"$PG_DIR/initdb.log" 2>&1; then
		echo "error: initdb failed:" >&2
		cat "$PG_DIR/initdb.log" >&2
		return 1
	fi
	local listen="''" net=""
	if [ -n "${PG_LISTEN:-}" ]; then
		listen="'$PG_LISTEN' -p ${PG_PORT:-5432}"
		if [ -n "${PG_SSL_CERT:-}" ]; then
			cp "$PG_SSL_CERT" "$PG_DIR/server.crt" && cp "$PG_SSL_KEY" "$PG_DIR/server.key" || return 1
			chmod 600 "$PG_DIR/server.key"
			[ "$(id -u)" -eq 0 ] && chown nobody "$PG_DIR/server.crt" "$PG_DIR/server.key"
			net="-c ssl=on -c ssl_cert_file=$PG_DIR/server.crt -c ssl_key_file=$PG_DIR/server.key"
			echo "hostssl all kyok 0.0.0.0/0 trust" >>"$PG_DIR/data/pg_hba.conf"
		else
			echo "host all kyok 0.0.0.0/0 trust" >>"$PG_DIR/data/pg_hba.conf"
		fi
	fi
	# -w: pg_ctl returns once the server accepts connections.
	if ! pg_as "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 120 \
		-o "-c listen_addresses=$listen -k $PG_DIR -c fsync=${PG_FSYNC:-off} -c max_connections=200 $net ${PG_EXTRA_OPTS:-}" \
		start >/dev/null; then
		echo "error: the test PostgreSQL server did not start:" >&2
		cat "$PG_DIR/server.log" >&2
		return 1
	fi
	"$PG_BINDIR/createdb" -h "$PG_DIR" -p "${PG_PORT:-5432}" -U kyok kyok || return 1
	KYOK_PG_URI="postgresql:///kyok?host=$PG_DIR&user=kyok"
	[ -n "${PG_PORT:-}" ] && KYOK_PG_URI="$KYOK_PG_URI&port=$PG_PORT"
	export KYOK_PG_URI
	if [ -n "${PG_LISTEN:-}" ]; then
		KYOK_PG_TCP_URI="postgresql://kyok@$PG_LISTEN:${PG_PORT:-5432}/kyok"
		export KYOK_PG_TCP_URI
	fi
}

pg_stop() {
	[ -n "$PG_DIR" ] || return 0
	if [ -f "$PG_DIR/data/postmaster.pid" ]; then
		pg_as "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1
	fi
	rm -rf "$PG_DIR"
	PG_DIR=""
}
