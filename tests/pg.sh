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

PG_BINDIR=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
PG_DIR=""

pg_available() {
	[ -n "$PG_BINDIR" ] && [ -x "$PG_BINDIR/initdb" ] && [ -x "$PG_BINDIR/pg_ctl" ]
}

pg_as() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u nobody -- "$@"
	else
		"$@"
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
	# -w: pg_ctl returns once the server accepts connections.
	if ! pg_as "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 120 \
		-o "-c listen_addresses='' -k $PG_DIR -c fsync=${PG_FSYNC:-off} -c max_connections=200" \
		start >/dev/null; then
		echo "error: the test PostgreSQL server did not start:" >&2
		cat "$PG_DIR/server.log" >&2
		return 1
	fi
	"$PG_BINDIR/createdb" -h "$PG_DIR" -U kyok kyok || return 1
	KYOK_PG_URI="postgresql:///kyok?host=$PG_DIR&user=kyok"
	export KYOK_PG_URI
}

pg_stop() {
	[ -n "$PG_DIR" ] || return 0
	if [ -f "$PG_DIR/data/postmaster.pid" ]; then
		pg_as "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1
	fi
	rm -rf "$PG_DIR"
	PG_DIR=""
}
