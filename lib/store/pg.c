/* PostgreSQL key storage backend.
 *
 * Size: like sqlite.c, one backend of the store function table in one file, on purpose: the
 * locking argument below covers every write path in it.
 *
 *   store = postgresql://kyok@db1.example:5432/kyok?sslmode=verify-full
 *
 * The URI is libpq's own (postgresql:// or postgres://, every libpq parameter); the password
 * comes from PGPASSFILE / ~/.pgpass or a client certificate, never from the URI in argv. No
 * message or log line holds the URI as written: only user, host, port and database
 * (pg_display), and libpq's messages, which never repeat a password.
 *
 * Units on several hosts share one database. High availability is PostgreSQL's (a primary
 * with streaming replicas and a failover manager); this backend only reconnects (a connection
 * found broken outside a transaction is reset before the next statement; one broken inside a
 * transaction fails it: KY_ERR_STORE_UNREACHABLE, and a COMMIT whose answer was lost is
 * reported the same way, never retried: the caller cannot prove it did not happen).
 *
 * Concurrency. The SQLite backend relies on SQLite's single write lock: one write
 * transaction at a time, and its reads see every commit before it. The digest (storage
 * ledger) needs exactly that: every write transaction reads the digest row, adds its records'
 * tags and writes generation + 1, and a unit syncing its index reads the log of generations in
 * order. PostgreSQL gives the same with one transaction-level advisory lock per schema
 * (pg_advisory_xact_lock(1803120491, hashtext(current_schema()))) taken as the first
 * statement of every write transaction, which runs at READ COMMITTED: each of its later
 * statements takes a new snapshot, so it sees every commit of the writers before it (at
 * REPEATABLE READ the snapshot would be taken before the lock was granted and miss them).
 * Compare-and-swap (rev, vp) is then the UPDATE's own WHERE clause, the key limit is read and
 * checked under the lock, and seq = max(seq) + 1 cannot collide. Writers never hit
 * serialization failures; a writer waits for the lock at most busy_timeout_ms (lock_timeout:
 * KY_ERR_STORE_BUSY). Reads outside a transaction are single statements: one snapshot each,
 * and each carries the digest's generation as its last column from that snapshot (as in
 * sqlite.c). A sync of the index reads in a REPEATABLE READ READ ONLY transaction of its own.
 * A program that writes without the lock (by hand) is what the digest is there to catch.
 *
 * Threads: every thread gets its own connection (a pthread key per store) with its statements
 * prepared on first use; writers of one process queue on a mutex. Concurrent inserts share
 * one commit (lib/store/groupcommit.h), as in sqlite.c: a commit is a WAL flush and several
 * round trips under the advisory lock, so without it creations would run one commit at a time.
 *
 * Schema version 2 (meta.schema = '2'; version 1 is brought to 2 on open: it only lacks
 * key_aliases), in the connection's current schema (choose another
 * with options=-csearch_path=NAME): the tables and columns of sqlite.c, with int8 for every
 * integer, bytea for every blob and text COLLATE "C" for ids (byte order, as SQLite's):
 *   meta(k, v), counters(k, n): 'keys', 'vp:<hex>', 'state:<N>' (PL/pgSQL row triggers on
 *   keys), 'commits' (row and TRUNCATE triggers on every table of records: bumped by any row
 *   written, kyok's or another program's) and 'changes' (the change log's last seq), keys
 *   (with the partial index keys_expiring: Active keys by expiration date), secrets,
 *   api_keys, requests, ledger, ledger_log, changes(seq, rec, id) (the change log; made on
 *   open when missing: see PG_CHANGES_SCHEMA). The 'state:' counters, their trigger and
 *   keys_expiring came later too: made on open when missing, the counters counted then.
 *
 * Change detection (ky_store_changed): one statement reading counters 'commits' and the
 * digest's generation and epoch (a whole schema restored from a backup, or a failover to a
 * replica that had not received the last commits, takes them back: also a change). One read
 * answers the calls made within the check window after it was sent (KY_STORE_CHECK_WINDOW_US,
 * 2 ms), and every write returns only once that window (and a margin) has passed since its
 * COMMIT was confirmed, so a call made after a write returned never takes an answer older than
 * that write (pg_changed gives the argument). Under load a unit then sends a few hundred reads
 * a second instead of one per request, and its requests seldom wait for one; a write costs
 * the window in latency, not in throughput (the wait holds no lock). Writes by other programs
 * (by hand) are seen within the window. A notification channel (LISTEN/NOTIFY) alone would not
 * do: it arrives after the writer's COMMIT has returned, with no bound on how long after.
 * What changed is then read from the change log (ky_store_changes): one statement, one
 * snapshot, giving the counter 'changes' and the rows after the caller's position, checked as
 * lib/store/changelog.h says.
 *
 * Storage digest: as sqlite.c (see its comment "storage digest"), with lib/store/ledger.c.
 * A field's kind in a tag comes from the column's type: int8 = integer, text = text, bytea =
 * blob, NULL = null.
 */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kyok/err.h"
#include "kyok/store.h"
#include "lib/store/alias.h"
#include "lib/store/changelog.h"
#include "lib/store/count.h"
#include "lib/store/groupcommit.h"
#include "lib/store/ledger.h"

/* PostgreSQL type oids (catalog/pg_type_d.h, stable) */
#define PG_OID_BYTEA 17
#define PG_OID_INT8  20
#define PG_OID_TEXT  25

enum pg_stmt {
	PG_KEY_TOTAL,
	PG_KEY_UNDER,
	PG_KEY_INSERT,
	PG_KEY_UPDATE,
	PG_KEY_REV,
	PG_KEY_GET,
	PG_KEY_DELETE,
	PG_KEY_LIST,
	PG_KEY_COUNT,
	PG_KEY_BY_STATE,
	PG_SECRET_INSERT,
	PG_SECRET_UPDATE,
	PG_SECRET_REV,
	PG_SECRET_GET,
	PG_SECRET_DELETE,
	PG_VP_COUNT_KEYS,
	PG_VP_COUNT_SECRETS,
	PG_VP_FETCH_KEYS,
	PG_VP_FETCH_SECRETS,
	PG_VP_SWAP_KEYS,
	PG_VP_SWAP_SECRETS,
	PG_APIKEY_INSERT,
	PG_APIKEY_GET,
	PG_APIKEY_FIND,
	PG_APIKEY_LIST,
	PG_APIKEY_PURGE,
	PG_APIKEY_IDS,
	PG_APIKEY_UPDATE,
	PG_COMMITS,
	PG_CHANGES_READ,
	PG_LEDGER_GET,
	PG_LEDGER_PUT,
	PG_LEDGER_LOG,
	PG_LEDGER_PRUNE,
	PG_LEDGER_GENS,
	PG_LEDGER_CHANGED,
	PG_SCAN_KEYS,
	PG_SCAN_SECRETS,
	PG_SCAN_APIKEYS,
	PG_REQUEST_GET,
	PG_REQUEST_PUT,
	PG_REQUEST_EXPIRE,
	PG_ALIAS_FIND,
	PG_ALIAS_INSERT,
	PG_ALIAS_DROP,
	PG__COUNT
};

#define PG_KEY_COLS                                                                              \
	"id, seq, rev, name, state, extractable, created, updated, deleted, version, vp, blob, " \
	"expires"
#define PG_APIKEY_COLS  "id, role, hash, created, revoked, name, mac"
#define PG_SECRET_COLS  "name, seq, rev, created, updated, vp, blob"
#define PG_KEY_NCOLS    13
#define PG_SECRET_NCOLS 7
#define PG_APIKEY_NCOLS 7
#define PG_GEN_COL      ", (SELECT gen FROM ledger WHERE ledger.k = 1)"
#define PG_LOG_KEEP     4096
#define PG_STR_(x)      #x
#define PG_STR(x)       PG_STR_(x)
#define PG_FILTER                                                                      \
	"($1 = 0 OR ((1::int8 << (CASE WHEN $7 > 0 AND state = 1 AND expires > 0 AND " \
	"expires <= $7 THEN 3 ELSE state END)::int4) & $1) != 0) AND ($2 < 0 OR "      \
	"extractable = $2) AND ($5::bytea IS NULL OR vp = $5 OR vp = $6) AND seq > $8"

/* A statement and the types of its parameters: t text, i int8, b bytea. */
static const struct {
	const char *sql;
	const char *types;
} pg_sql[PG__COUNT] = {
    [PG_KEY_TOTAL] = {"SELECT n FROM counters WHERE k = 'keys'", ""},
    [PG_KEY_UNDER] = {"SELECT coalesce(sum(n), 0)::int8 FROM counters WHERE k = 'vp:' || "
                      "encode($1, 'hex') OR ($2::bytea IS NOT NULL AND $2 != $1 AND "
                      "k = 'vp:' || encode($2, 'hex'))",
                      "bb"},
    [PG_KEY_INSERT] = {"INSERT INTO keys (" PG_KEY_COLS ") VALUES ($1, "
                       "(SELECT coalesce(max(seq), 0) + 1 FROM keys), 1, $2, $3, $4, $5, $6, "
                       "$7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING RETURNING " PG_KEY_COLS,
                       "ttiiiiiibbi"},
    [PG_KEY_UPDATE] = {"UPDATE keys SET rev = rev + 1, name = $2, state = $3, "
                       "extractable = $4, created = $5, updated = $6, deleted = $7, "
                       "version = $8, vp = $9, blob = $10, expires = $12 WHERE id = $1 AND "
                       "rev = $11 RETURNING seq, rev",
                       "ttiiiiiibbii"},
    [PG_KEY_REV] = {"SELECT rev FROM keys WHERE id = $1", "t"},
    [PG_KEY_GET] = {"SELECT " PG_KEY_COLS PG_GEN_COL
                    " FROM (SELECT 1) AS one LEFT JOIN keys ON id = $1",
                    "t"},
    [PG_KEY_DELETE] = {"DELETE FROM keys WHERE id = $1 AND rev = $2", "ti"},
    [PG_KEY_LIST] = {"SELECT " PG_KEY_COLS PG_GEN_COL " FROM keys WHERE " PG_FILTER
                     " ORDER BY seq LIMIT $3 OFFSET $4",
                     "iiiibbii"},
    [PG_KEY_COUNT] = {"SELECT count(*) FROM keys WHERE " PG_FILTER, "iiiibbii"},
    /* PG_KEY_COUNT of a filter by states only, without a scan (lib/store/count.h): the
     * 'state:' counters of the states in $1, plus $2 (-1, 0 or 1) times the Active keys
     * expired at $3 (keys_expiring). One statement: one snapshot. */
    [PG_KEY_BY_STATE] = {"SELECT (SELECT coalesce(sum(n), 0) FROM counters WHERE k IN (SELECT "
                         "'state:' || b FROM generate_series(0, 63) AS b WHERE ($1 >> b) & 1 = "
                         "1))::int8 + CASE WHEN $2 = 0 THEN 0 ELSE $2 * (SELECT count(*) FROM "
                         "keys WHERE state = 1 AND expires > 0 AND expires <= $3) END",
                         "iii"},
    [PG_SECRET_INSERT] = {"INSERT INTO secrets (" PG_SECRET_COLS ") VALUES ($1, "
                          "(SELECT coalesce(max(seq), 0) + 1 FROM secrets), 1, $2, $3, $4, "
                          "$5) RETURNING seq, rev",
                          "tiibb"},
    [PG_SECRET_UPDATE] = {"UPDATE secrets SET rev = rev + 1, updated = $3, vp = $4, "
                          "blob = $5 WHERE name = $1 AND rev = $6 "
                          "RETURNING seq, rev",
                          "tiibbi"},
    [PG_SECRET_REV] = {"SELECT rev FROM secrets WHERE name = $1", "t"},
    [PG_SECRET_GET] = {"SELECT " PG_SECRET_COLS PG_GEN_COL
                       " FROM (SELECT 1) AS one LEFT JOIN secrets ON name = $1",
                       "t"},
    [PG_SECRET_DELETE] = {"DELETE FROM secrets WHERE name = $1", "t"},
    [PG_VP_COUNT_KEYS] = {"SELECT count(*) FROM keys WHERE vp = $1", "b"},
    [PG_VP_COUNT_SECRETS] = {"SELECT count(*) FROM secrets WHERE vp = $1", "b"},
    [PG_VP_FETCH_KEYS] = {"SELECT id, seq, rev, version, blob, " PG_KEY_COLS PG_GEN_COL
                          " FROM keys WHERE vp = $1 AND id > $2 ORDER BY id LIMIT $3",
                          "bti"},
    [PG_VP_FETCH_SECRETS] = {"SELECT name, seq, rev, 0::int8, blob, " PG_SECRET_COLS PG_GEN_COL
                             " FROM secrets WHERE vp = $1 AND name > $2 ORDER BY name "
                             "LIMIT $3",
                             "bti"},
    [PG_VP_SWAP_KEYS] = {"UPDATE keys SET vp = $2, blob = $3, rev = rev + 1 WHERE id = $1 AND "
                         "vp = $4 AND rev = $5",
                         "tbbbi"},
    [PG_VP_SWAP_SECRETS] = {"UPDATE secrets SET vp = $2, blob = $3, rev = rev + 1 WHERE "
                            "name = $1 AND vp = $4 AND rev = $5",
                            "tbbbi"},
    [PG_APIKEY_INSERT] = {"INSERT INTO api_keys (" PG_APIKEY_COLS ") VALUES ($1, $2, $3, $4, "
                          "$5, $6, $7)",
                          "ttbiitb"},
    [PG_APIKEY_GET] = {"SELECT " PG_APIKEY_COLS PG_GEN_COL
                       " FROM (SELECT 1) AS one LEFT JOIN api_keys ON id = $1",
                       "t"},
    [PG_APIKEY_FIND] = {"SELECT " PG_APIKEY_COLS PG_GEN_COL
                        " FROM (SELECT 1) AS one LEFT JOIN api_keys ON hash = $1",
                        "b"},
    [PG_APIKEY_LIST] = {"SELECT " PG_APIKEY_COLS PG_GEN_COL " FROM api_keys ORDER BY created, id",
                        ""},
    [PG_APIKEY_PURGE] = {"DELETE FROM api_keys", ""},
    [PG_APIKEY_IDS] = {"SELECT id FROM api_keys", ""},
    [PG_APIKEY_UPDATE] = {"UPDATE api_keys SET role = $2, created = $4, revoked = $5, "
                          "name = $6, mac = $7 WHERE id = $1 AND hash = $3 AND "
                          "(mac IS NOT DISTINCT FROM $8 OR ($8::bytea IS NULL AND "
                          "(mac IS NULL OR length(mac) != 32)))",
                          "ttbiitbb"},
    [PG_COMMITS] = {"SELECT n, (SELECT gen FROM ledger WHERE ledger.k = 1), (SELECT epoch FROM "
                    "ledger WHERE ledger.k = 1) FROM counters WHERE k = 'commits'",
                    ""},
    /* One snapshot: the log's last seq (its counter), the row at it (its fingerprint), and
       the rows from $1 to it when there are at most KY_STORE_CHANGES_MAX after $1. */
    [PG_CHANGES_READ] = {"SELECT c.n, l.rec, l.id, ch.seq, ch.rec, ch.id FROM counters AS c "
                         "LEFT JOIN changes AS l ON l.seq = c.n LEFT JOIN changes AS ch ON "
                         "c.n >= $1 AND c.n - $1 <= " PG_STR(
                             KY_STORE_CHANGES_MAX) " AND "
                                                   "ch.seq >= $1 AND ch.seq <= c.n WHERE c.k = "
                                                   "'changes' ORDER BY ch.seq",
                         "i"},
    [PG_LEDGER_GET] = {"SELECT gen, epoch, n, sum, mac FROM ledger WHERE k = 1", ""},
    [PG_LEDGER_PUT] = {"INSERT INTO ledger (k, gen, epoch, n, sum, mac) VALUES (1, $1, $2, $3, "
                       "$4, $5) ON CONFLICT (k) DO UPDATE SET gen = $1, epoch = $2, n = $3, "
                       "sum = $4, mac = $5",
                       "iiibb"},
    [PG_LEDGER_LOG] = {"INSERT INTO ledger_log (gen, t, id, tag) VALUES ($1, $2, $3, $4) "
                       "ON CONFLICT (gen, t, id) DO UPDATE SET tag = $4",
                       "iitb"},
    [PG_LEDGER_PRUNE] = {"DELETE FROM ledger_log WHERE gen <= $1", "i"},
    [PG_LEDGER_GENS] = {"SELECT count(DISTINCT gen) FROM ledger_log WHERE gen > $1 AND "
                        "gen <= $2",
                        "ii"},
    [PG_LEDGER_CHANGED] = {"SELECT gen, t, id, tag FROM ledger_log WHERE gen > $1 AND "
                           "gen <= $2 ORDER BY gen",
                           "ii"},
    [PG_SCAN_KEYS] = {"SELECT " PG_KEY_COLS " FROM keys", ""},
    [PG_SCAN_SECRETS] = {"SELECT " PG_SECRET_COLS " FROM secrets WHERE name != $1", "t"},
    [PG_SCAN_APIKEYS] = {"SELECT " PG_APIKEY_COLS " FROM api_keys", ""},
    [PG_REQUEST_GET] = {"SELECT apikey, id, hash, status, created, vp, body FROM requests "
                        "WHERE apikey = $1 AND id = $2",
                        "tt"},
    [PG_REQUEST_PUT] = {"INSERT INTO requests (apikey, id, hash, status, created, vp, body) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        "ttbiibb"},
    [PG_REQUEST_EXPIRE] = {"DELETE FROM requests WHERE created < $1", "i"},
    [PG_ALIAS_FIND] = {"SELECT id FROM key_aliases WHERE alias = $1", "t"},
    [PG_ALIAS_INSERT] = {"INSERT INTO key_aliases (alias, id) VALUES ($1, $2)", "tt"},
    [PG_ALIAS_DROP] = {"DELETE FROM key_aliases WHERE id = $1", "t"},
};

#define PG_ID "text COLLATE \"C\" NOT NULL"
#define PG_COUNT_TRIGGERS                                                                        \
	"CREATE OR REPLACE FUNCTION kyok_keys_counters() RETURNS trigger LANGUAGE plpgsql AS $$" \
	" BEGIN"                                                                                 \
	"  IF TG_OP IN ('DELETE', 'UPDATE') THEN"                                                \
	"   UPDATE counters SET n = n - 1 WHERE k = 'vp:' || encode(OLD.vp, 'hex');"             \
	"   DELETE FROM counters WHERE k = 'vp:' || encode(OLD.vp, 'hex') AND n <= 0;"           \
	"  END IF;"                                                                              \
	"  IF TG_OP IN ('INSERT', 'UPDATE') THEN"                                                \
	"   INSERT INTO counters (k, n) VALUES ('vp:' || encode(NEW.vp, 'hex'), 1)"              \
	"    ON CONFLICT (k) DO UPDATE SET n = counters.n + 1;"                                  \
	"  END IF;"                                                                              \
	"  IF TG_OP = 'INSERT' THEN UPDATE counters SET n = n + 1 WHERE k = 'keys'; END IF;"     \
	"  IF TG_OP = 'DELETE' THEN UPDATE counters SET n = n - 1 WHERE k = 'keys'; END IF;"     \
	"  RETURN NULL;"                                                                         \
	" END $$;"                                                                               \
	"CREATE OR REPLACE FUNCTION kyok_commits() RETURNS trigger LANGUAGE plpgsql AS $$"       \
	" BEGIN UPDATE counters SET n = n + 1 WHERE k = 'commits'; RETURN NULL; END $$;"         \
	"CREATE TRIGGER keys_counters AFTER INSERT OR DELETE OR UPDATE OF vp ON keys"            \
	" FOR EACH ROW EXECUTE FUNCTION kyok_keys_counters();"

/* Rows of keys per stored state ('state:<N>'), for counts by state without a scan
 * (pg_key_count); a counter that drops to 0 stays. An update that leaves the state as it was
 * changes nothing. Made on open when missing, and counted then from the table. */
#define PG_STATE_COUNTERS                                                                        \
	"CREATE OR REPLACE FUNCTION kyok_keys_state_counters() RETURNS trigger LANGUAGE plpgsql" \
	" AS $$"                                                                                 \
	" BEGIN"                                                                                 \
	"  IF TG_OP = 'UPDATE' AND NEW.state = OLD.state THEN RETURN NULL; END IF;"              \
	"  IF TG_OP IN ('DELETE', 'UPDATE') THEN"                                                \
	"   UPDATE counters SET n = n - 1 WHERE k = 'state:' || OLD.state;"                      \
	"  END IF;"                                                                              \
	"  IF TG_OP IN ('INSERT', 'UPDATE') THEN"                                                \
	"   INSERT INTO counters (k, n) VALUES ('state:' || NEW.state, 1)"                       \
	"    ON CONFLICT (k) DO UPDATE SET n = counters.n + 1;"                                  \
	"  END IF;"                                                                              \
	"  RETURN NULL;"                                                                         \
	" END $$;"                                                                               \
	"DROP TRIGGER IF EXISTS keys_state_counters ON keys;"                                    \
	"CREATE TRIGGER keys_state_counters AFTER INSERT OR DELETE OR UPDATE OF state ON keys"   \
	" FOR EACH ROW EXECUTE FUNCTION kyok_keys_state_counters();"
/* The Active keys with an expiration date, by date: what PG_KEY_BY_STATE reads of keys (the
 * index of sqlite.c, where state makes it a covering index). */
#define PG_EXPIRING_INDEX                                                                        \
	"CREATE INDEX IF NOT EXISTS keys_expiring ON keys (expires, state) WHERE state = 1 AND " \
	"expires > 0;"

/* Per row (a statement that changes no row is no change), and per TRUNCATE. */
#define PG_COMMITS_TRIGGER(t)                                                 \
	"CREATE TRIGGER " t "_commits AFTER INSERT OR UPDATE OR DELETE ON " t \
	" FOR EACH ROW EXECUTE FUNCTION kyok_commits();"                      \
	"CREATE TRIGGER " t "_truncated AFTER TRUNCATE ON " t                 \
	" FOR EACH STATEMENT EXECUTE FUNCTION kyok_commits();"

/* The change log (ky_store_changes; docs/formats.md section 13): row triggers on keys,
 * secrets and api_keys log each record written (rec: enum ky_store_record; TRUNCATE logs rec
 * -1, "every record", which no reader takes for a record), in the writing transaction, by
 * any program. seq is 1 + the larger of counter 'changes' and the log's highest seq (as
 * SQLite's AUTOINCREMENT: a counter put back by hand never numbers a change twice), given by
 * the BEFORE INSERT trigger of changes, which writes it back to the counter: the counter's row
 * lock, held until commit, hands out numbers one transaction at a time in commit order and
 * without a gap (a rollback gives its numbers back), so a reader that sees seq n committed
 * sees every change before it. Each insert prunes what is older than
 * PG_CHANGES_KEEP changes. Made on open when missing (a store made before the log). */
#define PG_CHANGES_KEEP 16384
#define PG_CHANGE_TRIGGER(t, rec, col)                                                             \
	"CREATE OR REPLACE FUNCTION kyok_" t "_changes() RETURNS trigger LANGUAGE plpgsql AS $$"   \
	" BEGIN"                                                                                   \
	"  IF TG_OP = 'TRUNCATE' THEN INSERT INTO changes (rec, id) VALUES (-1, ''); RETURN NULL;" \
	"  END IF;"                                                                                \
	"  IF TG_OP IN ('UPDATE', 'DELETE') THEN"                                                  \
	"   INSERT INTO changes (rec, id) VALUES (" rec ", OLD." col ");"                          \
	"  END IF;"                                                                                \
	"  IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW." col " IS DISTINCT FROM OLD." col     \
	") THEN"                                                                                   \
	"   INSERT INTO changes (rec, id) VALUES (" rec ", NEW." col ");"                          \
	"  END IF;"                                                                                \
	"  RETURN NULL;"                                                                           \
	" END $$;"                                                                                 \
	"DROP TRIGGER IF EXISTS " t "_changes ON " t ";"                                           \
	"CREATE TRIGGER " t "_changes AFTER INSERT OR UPDATE OR DELETE ON " t                      \
	" FOR EACH ROW EXECUTE FUNCTION kyok_" t "_changes();"                                     \
	"DROP TRIGGER IF EXISTS " t "_changes_truncated ON " t ";"                                 \
	"CREATE TRIGGER " t "_changes_truncated AFTER TRUNCATE ON " t                              \
	" FOR EACH STATEMENT EXECUTE FUNCTION kyok_" t "_changes();"
#define PG_CHANGES_SCHEMA                                                                        \
	"CREATE TABLE IF NOT EXISTS changes (seq int8 PRIMARY KEY, rec int8 NOT NULL, id " PG_ID \
	");"                                                                                     \
	"INSERT INTO counters (k, n) VALUES ('changes', 0) ON CONFLICT (k) DO NOTHING;"          \
	"CREATE OR REPLACE FUNCTION kyok_changes_seq() RETURNS trigger LANGUAGE plpgsql AS $$"   \
	" BEGIN"                                                                                 \
	"  UPDATE counters SET n = greatest(n, (SELECT coalesce(max(seq), 0) FROM changes)) + 1" \
	"   WHERE k = 'changes' RETURNING n INTO NEW.seq;"                                       \
	"  IF NEW.seq IS NULL THEN RAISE EXCEPTION 'kyok: the change counter row is missing';"   \
	"  END IF;"                                                                              \
	"  DELETE FROM changes WHERE seq <= NEW.seq - " PG_STR(                                  \
	    PG_CHANGES_KEEP) ";"                                                                 \
	                     "  RETURN NEW;"                                                     \
	                     " END $$;"                                                          \
	                     "DROP TRIGGER IF EXISTS changes_seq ON changes;"                    \
	                     "CREATE TRIGGER changes_seq BEFORE INSERT ON changes"               \
	                     " FOR EACH ROW EXECUTE FUNCTION "                                   \
	                     "kyok_changes_seq();" PG_CHANGE_TRIGGER("keys", "0", "id")          \
	                         PG_CHANGE_TRIGGER("secrets", "1", "name")                       \
	                             PG_CHANGE_TRIGGER("api_keys", "2", "id")

/* Schema 2: the alias index (sqlite.c's key_aliases). */
#define PG_ALIASES_SCHEMA                                                                     \
	"CREATE TABLE IF NOT EXISTS key_aliases (alias " PG_ID " PRIMARY KEY, id " PG_ID ");" \
	"CREATE INDEX IF NOT EXISTS key_aliases_id ON key_aliases (id);"

static const char pg_schema[] =
    "CREATE TABLE meta (k " PG_ID " PRIMARY KEY, v text NOT NULL);"
    "CREATE TABLE counters (k " PG_ID " PRIMARY KEY, n int8 NOT NULL);"
    "CREATE TABLE keys (id " PG_ID " PRIMARY KEY, seq int8 NOT NULL, rev int8 NOT NULL,"
    " name text NOT NULL, state int8 NOT NULL, extractable int8 NOT NULL,"
    " created int8 NOT NULL, updated int8 NOT NULL, deleted int8 NOT NULL,"
    " version int8 NOT NULL, vp bytea NOT NULL, blob bytea NOT NULL,"
    " expires int8 NOT NULL DEFAULT 0);"
    "CREATE UNIQUE INDEX keys_seq ON keys (seq);"
    "CREATE INDEX keys_vp ON keys (vp, id);"
    "CREATE TABLE secrets (name " PG_ID " PRIMARY KEY, seq int8 NOT NULL, rev int8 NOT NULL,"
    " created int8 NOT NULL, updated int8 NOT NULL, vp bytea NOT NULL, blob bytea NOT NULL);"
    "CREATE INDEX secrets_vp ON secrets (vp, name);"
    "CREATE TABLE api_keys (id " PG_ID " PRIMARY KEY, role text NOT NULL,"
    " hash bytea NOT NULL UNIQUE, created int8 NOT NULL, revoked int8 NOT NULL,"
    " name text NOT NULL DEFAULT '', mac bytea);"
    "CREATE TABLE ledger (k int8 PRIMARY KEY CHECK (k = 1), gen int8 NOT NULL,"
    " epoch int8 NOT NULL, n int8 NOT NULL, sum bytea NOT NULL, mac bytea NOT NULL);"
    "CREATE TABLE ledger_log (gen int8 NOT NULL, t int8 NOT NULL, id " PG_ID ", tag bytea,"
    " PRIMARY KEY (gen, t, id));"
    "CREATE TABLE requests (apikey " PG_ID ", id " PG_ID ", hash bytea NOT NULL,"
    " status int8 NOT NULL, created int8 NOT NULL, vp bytea NOT NULL, body bytea NOT NULL,"
    " PRIMARY KEY (apikey, id));"
    "CREATE INDEX requests_created ON requests (created);" PG_COUNT_TRIGGERS PG_STATE_COUNTERS
        PG_EXPIRING_INDEX PG_COMMITS_TRIGGER("keys") PG_COMMITS_TRIGGER("secrets")
            PG_COMMITS_TRIGGER("api_keys")
                PG_COMMITS_TRIGGER("ledger") "INSERT INTO counters (k, n) VALUES ('keys', 0), "
                                             "('commits', 0);" PG_ALIASES_SCHEMA PG_CHANGES_SCHEMA
                                             "INSERT INTO meta (k, v) VALUES ('schema', '2');";

struct pg_store;

#define PG_LID_MAX 64

struct pg_touch {
	uint8_t t;
	char id[PG_LID_MAX + 1];
	PGresult *res; /* the record as written (RETURNING), or NULL: read it before COMMIT */
};

struct pg_seen {
	uint8_t t;
	bool present;
	bool stale;
	bool skip;
	char id[PG_LID_MAX + 1];
	uint8_t tag[KY_LEDGER_TAG_LEN];
};

struct pg_ledger_meta {
	uint64_t gen, epoch, n;
	uint8_t sum[KY_LEDGER_TAG_LEN];
	uint8_t mac[KY_LEDGER_TAG_LEN];
};

struct pg_ledger {
	pthread_mutex_t mu; /* everything below but gen; taken after wlock, never before */
	bool on;
	bool broken;
	struct ky_ledger_mac mac;
	struct ky_ledger_index ix;
	_Atomic uint64_t gen;
	uint64_t epoch;
};

struct pg_conn {
	PGconn *db;
	bool prepared[PG__COUNT];
	struct pg_store *s;
	struct pg_conn *prev, *next;
	int in_txn;      /* inside ky_store_begin: holds s->wlock */
	int in_read;     /* inside a read transaction of pg_ledger_sync */
	bool gc_leading; /* leading a group commit: each inserter waits (pg_commit_wait) */
	/* While leading a group commit: the count PG_KEY_UNDER gave for (vp, limit_vp) and the
	 * rows inserted under vp since, so that it is read once per batch, not once per row. */
	bool under_ok, under_lvp_set;
	uint8_t under_vp[KY_VP_LEN], under_lvp[KY_VP_LEN];
	int64_t under_total;
	int commits_known;
	int64_t commits_seen; /* with the digest's position: storage restored from a backup */
	int64_t gen_seen, epoch_seen;
	struct pg_touch *touched;
	size_t ntouched, ctouched;
};

/* A failure as the backend knew it (pg_last, below). */
struct pg_failure_note {
	int set;
	char sqlstate[6];
	char msg[256];
};

/* The commit counter read shared by the calls within its window (pg_changed). Times are
 * CLOCK_MONOTONIC nanoseconds. */
struct pg_check {
	pthread_mutex_t mu;
	pthread_cond_t cv;   /* a read was answered */
	pthread_cond_t wake; /* for the refresher: want or stop was set */
	pthread_t refresher;
	bool refresher_on; /* started (on the first call that wants it) */
	bool want;         /* a refresh is wanted */
	bool stop;         /* the store is closing */
	bool running;      /* a read is under way */
	bool have;         /* a read was answered: the fields below are its */
	int64_t sent;      /* when the last answered read was sent */
	int r;             /* its result */
	int64_t commits, gen, epoch;
	struct pg_failure_note note;
};

struct pg_store {
	char *conninfo; /* as given: holds the password if the URI does; never printed */
	char *display;  /* user@host:port/dbname, for messages */
	struct ky_store_opts o;
	pthread_key_t tls;
	pthread_mutex_t lock;  /* conns list */
	pthread_mutex_t wlock; /* one writer at a time in this process */
	struct pg_conn *conns;
	struct pg_ledger L;
	struct pg_check check;
	int64_t window_ns;         /* the check window (KY_STORE_CHECK_WINDOW_US), 0 = none */
	_Atomic int64_t ack_after; /* a write returns no earlier (pg_commit_wait) */
	struct ky_gc gc;           /* inserts waiting for a group commit */
};

/* ---- errors ---- */

/* The last failure on this thread, for ky_store_failure. */
static _Thread_local struct pg_failure_note pg_last;

static void pg_note(const char *sqlstate, const char *msg)
{
	size_t n;

	pg_last.set = 1;
	snprintf(pg_last.sqlstate, sizeof(pg_last.sqlstate), "%s", sqlstate ? sqlstate : "");
	snprintf(pg_last.msg, sizeof(pg_last.msg), "%s", msg ? msg : "");
	n = strlen(pg_last.msg);
	while (n > 0 && (pg_last.msg[n - 1] == '\n' || pg_last.msg[n - 1] == ' '))
		pg_last.msg[--n] = '\0';
}

/* A failed command: remembered, mapped to a kyok error (never 0). */
static int pg_fail(struct pg_conn *c, PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;

	if (msg == NULL)
		msg = PQerrorMessage(c->db);
	pg_note(state, msg);
	if (PQstatus(c->db) == CONNECTION_BAD || state == NULL || strncmp(state, "08", 2) == 0 ||
	    strcmp(state, "57P01") == 0 || strcmp(state, "57P02") == 0 ||
	    strcmp(state, "57P03") == 0)
		return KY_ERR_STORE_UNREACHABLE;
	if (strcmp(state, "23505") == 0)
		return KY_ERR_EXISTS;
	if (strcmp(state, "55P03") == 0 || strcmp(state, "40001") == 0 ||
	    strcmp(state, "40P01") == 0 || strcmp(state, "57014") == 0)
		return KY_ERR_STORE_BUSY;
	if (strcmp(state, "53100") == 0)
		return KY_ERR_STORE_FULL;
	if (strcmp(state, "53200") == 0)
		return KY_ERR_NOMEM;
	if (strcmp(state, "25006") == 0) /* read-only transaction: a standby */
		return KY_ERR_STORE_UNREACHABLE;
	if (strncmp(state, "XX", 2) == 0)
		return KY_ERR_STORE_DAMAGED;
	return KY_ERR_STORE;
}

/* ---- parameters and columns ---- */

#define PG_MAX_PARAMS 12

struct pg_params {
	const char *v[PG_MAX_PARAMS];
	int len[PG_MAX_PARAMS];
	int fmt[PG_MAX_PARAMS];
	uint64_t ibuf[PG_MAX_PARAMS];
	int n;
};

static void pg_p_init(struct pg_params *p)
{
	memset(p, 0, sizeof(*p));
}

static void pg_p_text(struct pg_params *p, const char *s)
{
	p->v[p->n] = s;
	p->len[p->n] = (int)strlen(s);
	p->fmt[p->n] = 1;
	p->n++;
}

static void pg_p_int(struct pg_params *p, int64_t i)
{
	p->ibuf[p->n] = htobe64((uint64_t)i);
	p->v[p->n] = (const char *)&p->ibuf[p->n];
	p->len[p->n] = 8;
	p->fmt[p->n] = 1;
	p->n++;
}

static void pg_p_blob(struct pg_params *p, const void *b, size_t n)
{
	p->v[p->n] = b;
	p->len[p->n] = (int)n;
	p->fmt[p->n] = 1;
	p->n++;
}

static void pg_p_null(struct pg_params *p)
{
	p->v[p->n] = NULL;
	p->len[p->n] = 0;
	p->fmt[p->n] = 1;
	p->n++;
}

static bool pg_null(const PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) != 0;
}

static int64_t pg_int(const PGresult *res, int row, int col)
{
	uint64_t v;

	if (PQgetisnull(res, row, col) || PQgetlength(res, row, col) != 8)
		return 0;
	memcpy(&v, PQgetvalue(res, row, col), 8);
	return (int64_t)be64toh(v);
}

static int pg_col_text(const PGresult *res, int row, int col, char *out, size_t cap, int exact)
{
	int n = PQgetlength(res, row, col);

	if (PQgetisnull(res, row, col) || n < 0 || (size_t)n >= cap ||
	    (exact && (size_t)n != cap - 1) || memchr(PQgetvalue(res, row, col), 0, (size_t)n))
		return KY_ERR_RECORD_TAMPERED;
	memcpy(out, PQgetvalue(res, row, col), (size_t)n);
	out[n] = '\0';
	return 0;
}

static int pg_col_fixed(const PGresult *res, int row, int col, uint8_t *out, size_t n)
{
	if (PQgetisnull(res, row, col) || (size_t)PQgetlength(res, row, col) != n)
		return KY_ERR_RECORD_TAMPERED;
	memcpy(out, PQgetvalue(res, row, col), n);
	return 0;
}

static int pg_col_blob(const PGresult *res, int row, int col, uint8_t **out, size_t *n)
{
	int len = PQgetlength(res, row, col);

	*out = NULL;
	*n = 0;
	if (PQgetisnull(res, row, col) || len <= 0)
		return KY_ERR_RECORD_TAMPERED;
	if ((*out = malloc((size_t)len)) == NULL)
		return KY_ERR_NOMEM;
	memcpy(*out, PQgetvalue(res, row, col), (size_t)len);
	*n = (size_t)len;
	return 0;
}

/* ---- connections ---- */

static void pg_conn_close(struct pg_conn *c)
{
	if (c == NULL)
		return;
	PQfinish(c->db);
	for (size_t i = 0; i < c->ntouched; i++)
		PQclear(c->touched[i].res);
	free(c->touched);
	free(c);
}

static void pg_unlink(struct pg_store *s, struct pg_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

static void pg_conn_destructor(void *p)
{
	struct pg_conn *c = p;
	struct pg_store *s = c->s;

	if (c->in_txn) {
		PQclear(PQexec(c->db, "ROLLBACK"));
		c->in_txn = 0;
		pthread_mutex_unlock(&s->wlock);
	}
	pthread_mutex_lock(&s->lock);
	pg_unlink(s, c);
	pthread_mutex_unlock(&s->lock);
	pg_conn_close(c);
}

static void pg_quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg; /* notices (e.g. of CREATE) are not errors: nothing to log */
}

/* Session settings of a new or reset connection. */
static int pg_session(struct pg_conn *c)
{
	char q[160];
	PGresult *res;
	int r;

	memset(c->prepared, 0, sizeof(c->prepared));
	snprintf(q, sizeof(q),
	         "SET lock_timeout = %d; SET default_transaction_isolation = 'read committed';"
	         "SET client_min_messages = warning",
	         c->s->o.busy_timeout_ms);
	res = PQexec(c->db, q);
	r = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : pg_fail(c, res);
	PQclear(res);
	return r;
}

/* Defaults a URI may override (later keywords win, and the URI comes last): a server that
 * does not answer is given up on instead of holding a unit's thread for minutes (TCP only;
 * a Unix socket ignores them). */
static const char *const pg_kw[] = {"connect_timeout",
                                    "keepalives_idle",
                                    "keepalives_interval",
                                    "keepalives_count",
                                    "tcp_user_timeout",
                                    "dbname",
                                    NULL};
#define PG_CONNECT_DEFAULTS "10", "10", "5", "3", "30000"

static int pg_conn_open(struct pg_store *s, struct pg_conn **out)
{
	int r = KY_ERR_INTERNAL;
	struct pg_conn *c = NULL;

	*out = NULL;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return KY_ERR_NOMEM;
	c->s = s;
	c->db = PQconnectdbParams(pg_kw,
	                          (const char *const[]){PG_CONNECT_DEFAULTS, s->conninfo, NULL}, 1);
	if (c->db == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (PQstatus(c->db) != CONNECTION_OK) {
		pg_note("", PQerrorMessage(c->db));
		r = KY_ERR_STORE_UNREACHABLE;
		goto out;
	}
	PQsetNoticeProcessor(c->db, pg_quiet, NULL);
	if ((r = pg_session(c)) != 0)
		goto out;
	*out = c;
	c = NULL; /* transferred */
	r = 0;
out:
	pg_conn_close(c);
	return r;
}

/* The calling thread's connection, opened on first use, reset when found broken outside a
 * transaction (a restart or failover of the server). */
static int pg_conn(struct pg_store *s, struct pg_conn **out)
{
	struct pg_conn *c = pthread_getspecific(s->tls);
	int r;

	if (c != NULL) {
		if (PQstatus(c->db) == CONNECTION_BAD && !c->in_txn) {
			PQreset(c->db);
			if (PQstatus(c->db) != CONNECTION_OK) {
				pg_note("", PQerrorMessage(c->db));
				return KY_ERR_STORE_UNREACHABLE;
			}
			if ((r = pg_session(c)) != 0)
				return r;
		}
		*out = c;
		return 0;
	}
	if ((r = pg_conn_open(s, &c)) != 0)
		return r;
	if (pthread_setspecific(s->tls, c) != 0) {
		pg_conn_close(c);
		return KY_ERR_NOMEM;
	}
	pthread_mutex_lock(&s->lock);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	pthread_mutex_unlock(&s->lock);
	*out = c;
	return 0;
}

/* After a statement failed: true when it may run again on a connection made anew. Only a
 * statement that began outside a transaction qualifies: every write of this backend runs
 * inside one, so such a statement is a read or a BEGIN, and nothing happened. One inside a
 * transaction fails with it (the caller cannot know what the server did before the
 * connection went). */
/* A statement outside a transaction that failed because the connection was lost is sent once
 * more on a new one: libpq marks the connection bad, or (a write to a socket the server had
 * closed) only says so in the error, with no SQLSTATE or one of class 08, or the server's
 * "terminating connection" (57P01, 57P02). Nothing was done by it: it is sent again. */
static bool pg_retry(struct pg_conn *c, bool was_idle, int *tries)
{
	const char *st = pg_last.set ? pg_last.sqlstate : "";
	bool lost = st[0] == '\0' || strncmp(st, "08", 2) == 0 || strcmp(st, "57P01") == 0 ||
	            strcmp(st, "57P02") == 0;

	if (!was_idle || c->in_txn || (*tries)++ > 0 ||
	    (PQstatus(c->db) != CONNECTION_BAD && !lost))
		return false;
	PQreset(c->db);
	if (PQstatus(c->db) != CONNECTION_OK) {
		pg_note("", PQerrorMessage(c->db));
		return false;
	}
	return pg_session(c) == 0;
}

static int pg_run_once(struct pg_conn *c, enum pg_stmt i, const struct pg_params *p,
                       PGresult **res);

/* Runs prepared statement i with params p; *res holds the result (rows or command). */
static int pg_run(struct pg_conn *c, enum pg_stmt i, const struct pg_params *p, PGresult **res)
{
	bool idle = PQtransactionStatus(c->db) == PQTRANS_IDLE;
	int r, tries = 0;

	while ((r = pg_run_once(c, i, p, res)) == KY_ERR_STORE_UNREACHABLE &&
	       pg_retry(c, idle, &tries))
		;
	return r;
}

/* Prepares statement i on this connection, once; name receives its name. */
static int pg_prepare(struct pg_conn *c, enum pg_stmt i, char name[16])
{
	Oid types[PG_MAX_PARAMS];
	int n = (int)strlen(pg_sql[i].types), r;
	PGresult *pr;

	snprintf(name, 16, "k%d", (int)i);
	if (c->prepared[i])
		return 0;
	for (int k = 0; k < n; k++)
		types[k] = pg_sql[i].types[k] == 't'   ? PG_OID_TEXT
		           : pg_sql[i].types[k] == 'i' ? PG_OID_INT8
		                                       : PG_OID_BYTEA;
	pr = PQprepare(c->db, name, pg_sql[i].sql, n, types);
	if (PQresultStatus(pr) != PGRES_COMMAND_OK) {
		r = pg_fail(c, pr);
		PQclear(pr);
		return r;
	}
	PQclear(pr);
	c->prepared[i] = true;
	return 0;
}

static int pg_run_once(struct pg_conn *c, enum pg_stmt i, const struct pg_params *p, PGresult **res)
{
	char name[16];
	ExecStatusType st;
	int r;

	*res = NULL;
	if ((r = pg_prepare(c, i, name)) != 0)
		return r;
	*res = PQexecPrepared(c->db, name, p ? p->n : 0, p ? p->v : NULL, p ? p->len : NULL,
	                      p ? p->fmt : NULL, 1);
	st = PQresultStatus(*res);
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
		return 0;
	r = pg_fail(c, *res);
	PQclear(*res);
	*res = NULL;
	return r;
}

/* Runs prepared statement i once per params ps[0..n-1] in one round trip (libpq's pipeline
 * mode), inside a transaction only: out[k] receives each result, or NULL once one failed
 * (then the transaction is aborted, and the first failure is returned). At most
 * PG_PIPELINE_MAX at a time, so that neither side's socket buffer fills while the other
 * waits. */
#define PG_PIPELINE_MAX 32

static int pg_run_many(struct pg_conn *c, enum pg_stmt i, const struct pg_params *ps, size_t n,
                       PGresult **out)
{
	char name[16];
	size_t sent = 0;
	int r;

	for (size_t k = 0; k < n; k++)
		out[k] = NULL;
	if (n == 0)
		return 0;
	if (n > PG_PIPELINE_MAX || PQtransactionStatus(c->db) != PQTRANS_INTRANS)
		return KY_ERR_USAGE;
	if ((r = pg_prepare(c, i, name)) != 0)
		return r;
	if (PQenterPipelineMode(c->db) != 1) {
		pg_note("", PQerrorMessage(c->db));
		return KY_ERR_STORE_UNREACHABLE;
	}
	for (; sent < n; sent++)
		if (PQsendQueryPrepared(c->db, name, ps[sent].n, ps[sent].v, ps[sent].len,
		                        ps[sent].fmt, 1) != 1)
			break;
	if (sent < n || PQpipelineSync(c->db) != 1) {
		pg_note("", PQerrorMessage(c->db));
		r = KY_ERR_STORE_UNREACHABLE;
		if (sent == 0 || PQpipelineSync(c->db) != 1)
			goto out; /* nothing to read back: the connection is gone */
	}
	for (size_t k = 0; k < sent; k++) {
		PGresult *res = PQgetResult(c->db), *end;
		ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;

		if (res == NULL) {
			pg_note("", PQerrorMessage(c->db));
			r = r != 0 ? r : KY_ERR_STORE_UNREACHABLE;
			goto out;
		}
		if ((st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) && r == 0) {
			out[k] = res;
		} else {
			if (r == 0)
				r = st == PGRES_PIPELINE_ABORTED ? KY_ERR_STORE : pg_fail(c, res);
			PQclear(res);
		}
		while ((end = PQgetResult(c->db)) != NULL) /* each query's results end with NULL */
			PQclear(end);
	}
	for (;;) { /* up to the sync point */
		PGresult *res = PQgetResult(c->db);
		ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
		PQclear(res);
		if (res == NULL || st == PGRES_PIPELINE_SYNC)
			break;
	}
out:
	if (PQexitPipelineMode(c->db) != 1 && r == 0) {
		pg_note("", PQerrorMessage(c->db));
		r = KY_ERR_STORE_UNREACHABLE;
	}
	if (r != 0)
		for (size_t k = 0; k < n; k++) {
			PQclear(out[k]);
			out[k] = NULL;
		}
	return r;
}

/* Runs a statement that returns nothing; *changes = rows affected (may be NULL). */
static int pg_exec(struct pg_conn *c, enum pg_stmt i, const struct pg_params *p, uint64_t *changes)
{
	PGresult *res;
	int r;

	if ((r = pg_run(c, i, p, &res)) != 0)
		return r;
	if (changes != NULL)
		*changes = strtoull(PQcmdTuples(res), NULL, 10);
	PQclear(res);
	return 0;
}

/* Runs plain SQL (transaction control, schema). */
static int pg_sql_run(struct pg_conn *c, const char *q)
{
	bool idle = PQtransactionStatus(c->db) == PQTRANS_IDLE;
	int r, tries = 0;

	do {
		PGresult *res = PQexec(c->db, q);
		ExecStatusType st = PQresultStatus(res);
		r = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : pg_fail(c, res);
		PQclear(res);
	} while (r == KY_ERR_STORE_UNREACHABLE && pg_retry(c, idle, &tries));
	return r;
}

/* ---- write transactions ---- */

static int pg_ledger_sync(struct pg_conn *c);
static int pg_ledger_prepare(struct pg_conn *c, struct pg_seen **tags, size_t *ntags,
                             struct pg_ledger_meta *m);
static void pg_ledger_apply(struct pg_conn *c, const struct pg_seen *v, size_t n,
                            const struct pg_ledger_meta *m);
static int pg_ledger_unattached_write(struct pg_conn *c);

/* Forgets the records touched in this transaction (and the copies kept of them). */
static void pg_touch_clear(struct pg_conn *c)
{
	for (size_t i = 0; i < c->ntouched; i++)
		PQclear(c->touched[i].res);
	c->ntouched = 0;
}

/* The wait of a write before it returns (pg_changed says why): the check window and a margin
 * for clocks that run at slightly different rates on two hosts. */
#define PG_WINDOW_MARGIN(w) ((w) / 4 + 100000)

static int64_t pg_now_ns(void);

/* After a COMMIT the server confirmed: no write returns before ack_after. */
static void pg_commit_note(struct pg_store *s)
{
	int64_t until, cur;

	if (s->window_ns <= 0)
		return;
	until = pg_now_ns() + s->window_ns + PG_WINDOW_MARGIN(s->window_ns);
	cur = atomic_load(&s->ack_after);
	while (cur < until && !atomic_compare_exchange_weak(&s->ack_after, &cur, until))
		;
}

/* Waits until ack_after, when the calls of pg_changed made from now on take a newer read. */
static void pg_commit_wait(struct pg_store *s)
{
	int64_t until = atomic_load(&s->ack_after);
	struct timespec ts = {until / 1000000000, until % 1000000000};

	if (s->window_ns <= 0 || until <= pg_now_ns())
		return;
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* 1803120491 = 0x6b796f6b, "kyok": the advisory lock's first key */
#define PG_BEGIN                                                                         \
	"BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE; SELECT pg_advisory_xact_lock(" \
	"1803120491, hashtext(current_schema()))"

static int pg_wbegin(struct pg_conn *c, int *opened)
{
	struct pg_ledger *L = &c->s->L;
	int r;

	*opened = 0;
	if (c->in_txn)
		return 0;
	pthread_mutex_lock(&c->s->wlock);
	if ((r = pg_sql_run(c, PG_BEGIN)) != 0) {
		if (PQtransactionStatus(c->db) != PQTRANS_IDLE)
			(void)pg_sql_run(c, "ROLLBACK");
		pthread_mutex_unlock(&c->s->wlock);
		return r;
	}
	pg_touch_clear(c);
	if (L->on) {
		pthread_mutex_lock(&L->mu);
		r = pg_ledger_sync(c);
		pthread_mutex_unlock(&L->mu);
		if (r != 0) {
			(void)pg_sql_run(c, "ROLLBACK");
			pthread_mutex_unlock(&c->s->wlock);
			return r;
		}
	}
	*opened = 1;
	return 0;
}

static int pg_wend(struct pg_conn *c, int opened, int r)
{
	struct pg_seen *tags = NULL;
	size_t ntags = 0;
	struct pg_ledger_meta m;
	bool ledger = false, committed = false;

	if (!opened)
		return r;
	if (r == 0 && c->ntouched > 0) {
		if (!c->s->L.on)
			r = pg_ledger_unattached_write(c);
		else if ((r = pg_ledger_prepare(c, &tags, &ntags, &m)) == 0)
			ledger = true;
	}
	if (r == 0) {
		PGresult *res = PQexec(c->db, "COMMIT");
		/* COMMIT of an aborted transaction answers COMMAND_OK with tag ROLLBACK. */
		if (PQresultStatus(res) == PGRES_COMMAND_OK &&
		    strcmp(PQcmdStatus(res), "COMMIT") == 0) {
			PQclear(res);
			committed = true;
			pg_commit_note(c->s);
			if (ledger)
				pg_ledger_apply(c, tags, ntags, &m);
			goto out;
		}
		r = PQresultStatus(res) == PGRES_COMMAND_OK ? KY_ERR_STORE : pg_fail(c, res);
		PQclear(res);
	}
	if (PQtransactionStatus(c->db) != PQTRANS_IDLE && PQstatus(c->db) == CONNECTION_OK)
		(void)pg_sql_run(c, "ROLLBACK");
out:
	pg_touch_clear(c);
	free(tags);
	pthread_mutex_unlock(&c->s->wlock);
	if (committed && !c->gc_leading)
		pg_commit_wait(c->s);
	return r;
}

static int pg_begin(void *be)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	int r, opened;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if (c->in_txn)
		return KY_ERR_USAGE;
	if ((r = pg_wbegin(c, &opened)) != 0)
		return r;
	c->in_txn = 1;
	return 0;
}

static int pg_commit(void *be)
{
	struct pg_store *s = be;
	struct pg_conn *c = pthread_getspecific(s->tls);

	if (c == NULL || !c->in_txn)
		return KY_ERR_USAGE;
	c->in_txn = 0;
	return pg_wend(c, 1, 0);
}

static int pg_rollback(void *be)
{
	struct pg_store *s = be;
	struct pg_conn *c = pthread_getspecific(s->tls);

	if (c == NULL || !c->in_txn)
		return 0;
	c->in_txn = 0;
	return pg_wend(c, 1, KY_ERR_CANCELLED) == KY_ERR_CANCELLED ? 0 : KY_ERR_STORE;
}

/* ---- storage digest (see sqlite.c: the same rules) ---- */

#define PG_AGAIN (-1)
#define PG_TRIES 16

static const enum pg_stmt pg_ledger_scan[] = {
    [KY_LEDGER_KEYS] = PG_SCAN_KEYS,
    [KY_LEDGER_SECRETS] = PG_SCAN_SECRETS,
    [KY_LEDGER_APIKEYS] = PG_SCAN_APIKEYS,
};
static const int pg_ledger_ncols[] = {
    [KY_LEDGER_KEYS] = PG_KEY_NCOLS,
    [KY_LEDGER_SECRETS] = PG_SECRET_NCOLS,
    [KY_LEDGER_APIKEYS] = PG_APIKEY_NCOLS,
};
static const enum pg_stmt pg_ledger_get[] = {
    [KY_LEDGER_KEYS] = PG_KEY_GET,
    [KY_LEDGER_SECRETS] = PG_SECRET_GET,
    [KY_LEDGER_APIKEYS] = PG_APIKEY_GET,
};

static bool pg_ledger_exempt(uint8_t t, const char *id)
{
	return t == KY_LEDGER_SECRETS && strcmp(id, KY_STORE_LEDGER_SECRET) == 0;
}

/* The tag of row `row`, columns first .. first + ncols - 1 (first: the record's id). */
static int pg_ledger_row(const struct pg_ledger *L, const PGresult *res, int row, uint8_t t,
                         int first, struct pg_seen *out)
{
	struct ky_ledger_field f[PG_KEY_NCOLS];
	int n = pg_ledger_ncols[t];

	out->t = t;
	out->present = false;
	out->skip = false;
	if (pg_null(res, row, first))
		return 0;
	if (PQgetlength(res, row, first) > PG_LID_MAX ||
	    memchr(PQgetvalue(res, row, first), 0, (size_t)PQgetlength(res, row, first)))
		return KY_ERR_RECORD_STALE;
	memcpy(out->id, PQgetvalue(res, row, first), (size_t)PQgetlength(res, row, first));
	out->id[PQgetlength(res, row, first)] = '\0';
	out->present = true;
	for (int i = 0; i < n; i++) {
		int col = first + i;
		f[i].i = 0;
		f[i].p = NULL;
		f[i].len = 0;
		if (pg_null(res, row, col)) {
			f[i].kind = 5;
			continue;
		}
		switch (PQftype(res, col)) {
		case PG_OID_INT8:
			f[i].kind = 1;
			f[i].i = pg_int(res, row, col);
			break;
		case PG_OID_TEXT:
			f[i].kind = 3;
			f[i].p = PQgetvalue(res, row, col);
			f[i].len = (size_t)PQgetlength(res, row, col);
			break;
		case PG_OID_BYTEA:
			f[i].kind = 4;
			f[i].p = PQgetvalue(res, row, col);
			f[i].len = (size_t)PQgetlength(res, row, col);
			break;
		default:
			return KY_ERR_RECORD_STALE; /* a column kyok never made */
		}
	}
	return ky_ledger_tag(&L->mac, t, out->id, f, (size_t)n, out->tag);
}

static int pg_ledger_read(struct pg_conn *c, uint8_t t, const char *id, struct pg_seen *out)
{
	struct pg_params p;
	PGresult *res;
	int r;

	pg_p_init(&p);
	pg_p_text(&p, id);
	if ((r = pg_run(c, pg_ledger_get[t], &p, &res)) != 0)
		return r;
	r = PQntuples(res) == 1 ? pg_ledger_row(&c->s->L, res, 0, t, 0, out) : KY_ERR_STORE;
	PQclear(res);
	return r;
}

static int pg_ledger_meta_read(struct pg_conn *c, struct pg_ledger_meta *m)
{
	PGresult *res;
	int r;

	if ((r = pg_run(c, PG_LEDGER_GET, NULL, &res)) != 0)
		return r;
	if (PQntuples(res) == 0) {
		r = KY_ERR_NOT_FOUND;
	} else {
		m->gen = (uint64_t)pg_int(res, 0, 0);
		m->epoch = (uint64_t)pg_int(res, 0, 1);
		m->n = (uint64_t)pg_int(res, 0, 2);
		r = pg_col_fixed(res, 0, 3, m->sum, KY_LEDGER_TAG_LEN) == 0 &&
		            pg_col_fixed(res, 0, 4, m->mac, KY_LEDGER_TAG_LEN) == 0
		        ? 0
		        : KY_ERR_LEDGER_TAMPERED;
	}
	PQclear(res);
	return r;
}

static int pg_ledger_meta_check(struct pg_conn *c, const struct pg_ledger_meta *m)
{
	uint8_t want[KY_LEDGER_TAG_LEN];
	int r;

	if ((r = ky_ledger_meta_mac(&c->s->L.mac, c->s->o.instance, m->gen, m->epoch, m->n, m->sum,
	                            want)) != 0)
		return r;
	return CRYPTO_memcmp(want, m->mac, KY_LEDGER_TAG_LEN) == 0 ? 0 : KY_ERR_LEDGER_TAMPERED;
}

static int pg_ledger_meta_write(struct pg_conn *c, struct pg_ledger_meta *m)
{
	struct pg_params p;
	int r;

	if ((r = ky_ledger_meta_mac(&c->s->L.mac, c->s->o.instance, m->gen, m->epoch, m->n, m->sum,
	                            m->mac)) != 0)
		return r;
	pg_p_init(&p);
	pg_p_int(&p, (int64_t)m->gen);
	pg_p_int(&p, (int64_t)m->epoch);
	pg_p_int(&p, (int64_t)m->n);
	pg_p_blob(&p, m->sum, KY_LEDGER_TAG_LEN);
	pg_p_blob(&p, m->mac, KY_LEDGER_TAG_LEN);
	return pg_exec(c, PG_LEDGER_PUT, &p, NULL);
}

static int pg_ledger_rescan(struct pg_conn *c, struct ky_ledger_index *ix, uint64_t gen)
{
	int r = KY_ERR_INTERNAL;
	PGresult *res = NULL;
	struct pg_seen seen;
	struct pg_params p;

	if ((r = ky_ledger_index_init(ix)) != 0)
		return r;
	for (uint8_t t = KY_LEDGER_KEYS; t <= KY_LEDGER_APIKEYS; t++) {
		pg_p_init(&p);
		if (t == KY_LEDGER_SECRETS)
			pg_p_text(&p, KY_STORE_LEDGER_SECRET);
		if ((r = pg_run(c, pg_ledger_scan[t], &p, &res)) != 0)
			goto out;
		for (int i = 0; i < PQntuples(res); i++) {
			if ((r = pg_ledger_row(&c->s->L, res, i, t, 0, &seen)) != 0 ||
			    (r = ky_ledger_index_set(ix, t, seen.id, seen.tag, gen)) != 0)
				goto out;
		}
		PQclear(res);
		res = NULL;
	}
	r = 0;
out:
	PQclear(res);
	if (r != 0)
		ky_ledger_index_release(ix);
	return r;
}

static bool pg_ledger_matches(const struct ky_ledger_index *ix, const struct pg_ledger_meta *m)
{
	return ix->n == m->n && CRYPTO_memcmp(ix->sum, m->sum, KY_LEDGER_TAG_LEN) == 0;
}

static int pg_ledger_apply_log(struct pg_conn *c, const struct pg_ledger_meta *m, int *ok)
{
	struct pg_ledger *L = &c->s->L;
	uint64_t from = atomic_load(&L->gen);
	struct pg_params p;
	PGresult *res;
	uint8_t pad[KY_LEDGER_TAG_LEN], tag[KY_LEDGER_TAG_LEN];
	int r;
	int64_t gens;

	*ok = 0;
	pg_p_init(&p);
	pg_p_int(&p, (int64_t)from);
	pg_p_int(&p, (int64_t)m->gen);
	if ((r = pg_run(c, PG_LEDGER_GENS, &p, &res)) != 0)
		return r;
	gens = PQntuples(res) == 1 ? pg_int(res, 0, 0) : -1;
	PQclear(res);
	if (gens < 0 || (uint64_t)gens != m->gen - from)
		return 0; /* not every generation is logged: rescan */
	if ((r = pg_run(c, PG_LEDGER_CHANGED, &p, &res)) != 0)
		return r;
	L->broken = true; /* until the whole log is applied */
	for (int i = 0; i < PQntuples(res); i++) {
		uint64_t g = (uint64_t)pg_int(res, i, 0);
		int64_t t = pg_int(res, i, 1);
		char id[PG_LID_MAX + 1];
		bool deleted = pg_null(res, i, 3);

		if (t < KY_LEDGER_KEYS || t > KY_LEDGER_APIKEYS ||
		    pg_col_text(res, i, 2, id, sizeof(id), 0) != 0 ||
		    (!deleted && pg_col_fixed(res, i, 3, tag, KY_LEDGER_TAG_LEN) != 0)) {
			PQclear(res);
			return 0; /* a log row kyok did not write: rescan */
		}
		if (!deleted) {
			if ((r = ky_ledger_log_pad(&L->mac, g, (uint8_t)t, id, pad)) != 0) {
				PQclear(res);
				return r;
			}
			for (size_t j = 0; j < KY_LEDGER_TAG_LEN; j++)
				tag[j] ^= pad[j];
		}
		if ((r = ky_ledger_index_set(&L->ix, (uint8_t)t, id, deleted ? NULL : tag, g)) !=
		    0) {
			PQclear(res);
			return r;
		}
	}
	PQclear(res);
	L->broken = false;
	*ok = pg_ledger_matches(&L->ix, m);
	return 0;
}

/* Brings the index up to the digest, checking it. Caller holds L->mu. Inside a write
 * transaction it reads in it (the lock keeps writers out), else in a read-only snapshot. */
static int pg_ledger_sync(struct pg_conn *c)
{
	struct pg_ledger *L = &c->s->L;
	struct pg_ledger_meta m;
	struct ky_ledger_index fresh = {0};
	int r = KY_ERR_INTERNAL, ok = 0;
	bool own = PQtransactionStatus(c->db) == PQTRANS_IDLE;

	if (own && (r = pg_sql_run(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")) != 0)
		return r;
	if ((r = pg_ledger_meta_read(c, &m)) != 0) {
		r = r == KY_ERR_NOT_FOUND ? KY_ERR_STORAGE_MISSING : r;
		goto out;
	}
	if ((r = pg_ledger_meta_check(c, &m)) != 0)
		goto out;
	if (m.epoch != L->epoch || m.gen < atomic_load(&L->gen)) {
		r = KY_ERR_STORAGE_ROLLBACK;
		goto out;
	}
	if (m.gen == atomic_load(&L->gen) && !L->broken) {
		r = 0;
		goto out;
	}
	if (!L->broken && (r = pg_ledger_apply_log(c, &m, &ok)) != 0)
		goto out;
	if (!ok) {
		if ((r = pg_ledger_rescan(c, &fresh, m.gen)) != 0)
			goto out;
		if (!pg_ledger_matches(&fresh, &m)) {
			L->broken = true;
			r = KY_ERR_LEDGER_MISMATCH;
			goto out;
		}
		ky_ledger_index_move(&L->ix, &fresh);
	}
	L->broken = false;
	atomic_store(&L->gen, m.gen);
	r = 0;
out:
	if (own)
		(void)pg_sql_run(c, "COMMIT"); /* read only */
	ky_ledger_index_release(&fresh);
	return r;
}

static bool pg_touched(const struct pg_conn *c, uint8_t t, const char *id)
{
	for (size_t i = 0; i < c->ntouched; i++)
		if (c->touched[i].t == t && strcmp(c->touched[i].id, id) == 0)
			return true;
	return false;
}

/* As sq_ledger_check in sqlite.c. */
static int pg_ledger_check(struct pg_conn *c, uint64_t g0, bool gen_null, uint64_t gen,
                           struct pg_seen *rows, size_t n)
{
	struct pg_ledger *L = &c->s->L;
	int r = KY_ERR_INTERNAL;

	if (!L->on)
		return 0;
	if (gen_null)
		return KY_ERR_STORAGE_MISSING;
	if (gen < g0)
		return KY_ERR_STORAGE_ROLLBACK;
	pthread_mutex_lock(&L->mu);
	if (gen > atomic_load(&L->gen) || L->broken) {
		if ((r = pg_ledger_sync(c)) != 0)
			goto out;
	}
	if (gen > atomic_load(&L->gen)) {
		r = PG_AGAIN;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const struct ky_ledger_entry *e;
		if (rows[i].skip || pg_ledger_exempt(rows[i].t, rows[i].id) ||
		    (c->ntouched > 0 && pg_touched(c, rows[i].t, rows[i].id)))
			continue;
		e = ky_ledger_index_find(&L->ix, rows[i].t, rows[i].id);
		if (gen != atomic_load(&L->gen) && (e != NULL ? e->gen > gen : rows[i].present)) {
			r = PG_AGAIN;
			goto out;
		}
		rows[i].stale =
		    rows[i].present &&
		    (e == NULL || CRYPTO_memcmp(e->tag, rows[i].tag, KY_LEDGER_TAG_LEN) != 0);
		if (!rows[i].present && e != NULL) {
			r = KY_ERR_RECORD_MISSING;
			goto out;
		}
	}
	r = 0;
out:
	pthread_mutex_unlock(&L->mu);
	return r;
}

/* Notes a record written in this transaction, for the digest (pg_ledger_prepare). res: the
 * record as written, in the columns of pg_ledger_get[t] (taken over: cleared in any case), or
 * NULL to read it back before COMMIT. */
static int pg_touch_res(struct pg_conn *c, uint8_t t, const char *id, PGresult *res)
{
	struct pg_touch *nv;

	if (pg_ledger_exempt(t, id) || strlen(id) > PG_LID_MAX) {
		PQclear(res);
		return pg_ledger_exempt(t, id) ? 0 : KY_ERR_USAGE;
	}
	if (c->ntouched == c->ctouched) {
		size_t cap = c->ctouched ? 2 * c->ctouched : 8;
		if ((nv = realloc(c->touched, cap * sizeof(*nv))) == NULL) {
			PQclear(res);
			return KY_ERR_NOMEM;
		}
		c->touched = nv;
		c->ctouched = cap;
	}
	c->touched[c->ntouched].t = t;
	snprintf(c->touched[c->ntouched].id, sizeof(c->touched[c->ntouched].id), "%s", id);
	c->touched[c->ntouched].res = res;
	c->ntouched++;
	return 0;
}

static int pg_touch(struct pg_conn *c, uint8_t t, const char *id)
{
	return pg_touch_res(c, t, id, NULL);
}

static int pg_touch_cmp(const void *a, const void *b)
{
	const struct pg_touch *x = a, *y = b;

	if (x->t != y->t)
		return x->t < y->t ? -1 : 1;
	return strcmp(x->id, y->id);
}

/* Before COMMIT: the new digest and log rows, in the transaction (as sqlite.c). */
static int pg_ledger_prepare(struct pg_conn *c, struct pg_seen **tags, size_t *ntags,
                             struct pg_ledger_meta *m)
{
	struct pg_ledger *L = &c->s->L;
	struct pg_seen *v = NULL;
	struct pg_ledger_meta cur;
	struct pg_params p;
	size_t n = 0;
	int r = KY_ERR_INTERNAL;

	*tags = NULL;
	*ntags = 0;
	qsort(c->touched, c->ntouched, sizeof(*c->touched), pg_touch_cmp);
	if ((v = calloc(c->ntouched, sizeof(*v))) == NULL)
		return KY_ERR_NOMEM;
	pthread_mutex_lock(&L->mu);
	if ((r = pg_ledger_meta_read(c, &cur)) != 0) {
		r = r == KY_ERR_NOT_FOUND ? KY_ERR_STORAGE_MISSING : r;
		goto out;
	}
	if (cur.gen != atomic_load(&L->gen)) { /* synced at begin: no other writer since */
		r = KY_ERR_STORAGE_ROLLBACK;
		goto out;
	}
	*m = cur;
	memcpy(m->sum, L->ix.sum, KY_LEDGER_TAG_LEN);
	m->n = L->ix.n;
	for (size_t i = 0; i < c->ntouched; i++) {
		const struct ky_ledger_entry *e;
		bool once;
		if (i > 0 && pg_touch_cmp(&c->touched[i - 1], &c->touched[i]) == 0)
			continue;
		/* A record written once in this transaction is as its write returned it. */
		once =
		    i + 1 == c->ntouched || pg_touch_cmp(&c->touched[i], &c->touched[i + 1]) != 0;
		if (once && c->touched[i].res != NULL)
			r = pg_ledger_row(L, c->touched[i].res, 0, c->touched[i].t, 0, &v[n]);
		else
			r = pg_ledger_read(c, c->touched[i].t, c->touched[i].id, &v[n]);
		if (r != 0)
			goto out;
		v[n].t = c->touched[i].t;
		snprintf(v[n].id, sizeof(v[n].id), "%s", c->touched[i].id);
		e = ky_ledger_index_find(&L->ix, v[n].t, v[n].id);
		if (e != NULL) {
			ky_ledger_sum_sub(m->sum, e->tag);
			m->n--;
		}
		if (v[n].present) {
			ky_ledger_sum_add(m->sum, v[n].tag);
			m->n++;
		}
		n++;
	}
	m->gen = cur.gen + 1;
	if ((r = pg_ledger_meta_write(c, m)) != 0)
		goto out;
	/* the log rows, PG_PIPELINE_MAX to a round trip */
	for (size_t i0 = 0; i0 < n; i0 += PG_PIPELINE_MAX) {
		size_t k = n - i0 < PG_PIPELINE_MAX ? n - i0 : PG_PIPELINE_MAX;
		struct pg_params ps[PG_PIPELINE_MAX];
		uint8_t hidden[PG_PIPELINE_MAX][KY_LEDGER_TAG_LEN];
		PGresult *res[PG_PIPELINE_MAX];
		for (size_t j = 0; j < k; j++) {
			const struct pg_seen *e = &v[i0 + j];
			pg_p_init(&ps[j]);
			pg_p_int(&ps[j], (int64_t)m->gen);
			pg_p_int(&ps[j], e->t);
			pg_p_text(&ps[j], e->id);
			if (!e->present) {
				pg_p_null(&ps[j]);
				continue;
			}
			if ((r = ky_ledger_log_pad(&L->mac, m->gen, e->t, e->id, hidden[j])) != 0)
				goto out;
			for (size_t b = 0; b < KY_LEDGER_TAG_LEN; b++)
				hidden[j][b] ^= e->tag[b];
			pg_p_blob(&ps[j], hidden[j], KY_LEDGER_TAG_LEN);
		}
		if ((r = pg_run_many(c, PG_LEDGER_LOG, ps, k, res)) != 0)
			goto out;
		for (size_t j = 0; j < k; j++)
			PQclear(res[j]);
	}
	if (m->gen > PG_LOG_KEEP) {
		pg_p_init(&p);
		pg_p_int(&p, (int64_t)(m->gen - PG_LOG_KEEP));
		if ((r = pg_exec(c, PG_LEDGER_PRUNE, &p, NULL)) != 0)
			goto out;
	}
	*tags = v;
	*ntags = n;
	v = NULL; /* transferred */
	r = 0;
out:
	pthread_mutex_unlock(&L->mu);
	free(v);
	return r;
}

static void pg_ledger_apply(struct pg_conn *c, const struct pg_seen *v, size_t n,
                            const struct pg_ledger_meta *m)
{
	struct pg_ledger *L = &c->s->L;
	int r = 0;

	pthread_mutex_lock(&L->mu);
	if (atomic_load(&L->gen) + 1 == m->gen) {
		for (size_t i = 0; r == 0 && i < n; i++)
			r = ky_ledger_index_set(&L->ix, v[i].t, v[i].id,
			                        v[i].present ? v[i].tag : NULL, m->gen);
		if (r != 0)
			L->broken = true;
		atomic_store(&L->gen, m->gen);
	}
	pthread_mutex_unlock(&L->mu);
}

static int pg_ledger_unattached_write(struct pg_conn *c)
{
	struct pg_ledger_meta m;
	int r = pg_ledger_meta_read(c, &m);

	if (r == KY_ERR_NOT_FOUND)
		return 0;
	return r == 0 ? KY_ERR_LEDGER_KEY : r;
}

/* ---- keys ---- */

static int pg_read_key(const PGresult *res, int i, struct ky_store_row *row)
{
	int r;

	memset(row, 0, sizeof(*row));
	if ((r = pg_col_text(res, i, 0, row->id, sizeof(row->id), 1)) != 0 ||
	    (r = pg_col_text(res, i, 3, row->name, sizeof(row->name), 0)) != 0 ||
	    (r = pg_col_fixed(res, i, 10, row->vp, KY_VP_LEN)) != 0)
		return r;
	row->seq = pg_int(res, i, 1);
	row->rev = pg_int(res, i, 2);
	row->state = (int)pg_int(res, i, 4);
	row->extractable = (int)pg_int(res, i, 5);
	row->created = pg_int(res, i, 6);
	row->updated = pg_int(res, i, 7);
	row->deleted = pg_int(res, i, 8);
	row->version = (uint32_t)pg_int(res, i, 9);
	row->expires = pg_int(res, i, 12);
	return pg_col_blob(res, i, 11, &row->blob, &row->bloblen);
}

static void pg_key_fault(const PGresult *res, int i, struct ky_store_row *row, int fault)
{
	size_t n = pg_null(res, i, 0) ? 0 : (size_t)PQgetlength(res, i, 0);
	const char *id = PQgetvalue(res, i, 0);

	ky_store_row_release(row);
	memset(row, 0, sizeof(*row));
	row->fault = fault;
	if (pg_null(res, i, 0))
		snprintf(row->id, sizeof(row->id), "?");
	else if (n < sizeof(row->id))
		snprintf(row->id, sizeof(row->id), "%.*s", (int)n, id);
	else
		snprintf(row->id, sizeof(row->id), "%.*s...", (int)sizeof(row->id) - 4, id);
}

/* The alias index in SQL (lib/store/alias.h has its rules). conn: a struct pg_conn. */
static int pg_alias_owner(void *conn, const char *alias, char id[KY_UUID_LEN + 1])
{
	struct pg_conn *c = conn;
	struct pg_params p;
	PGresult *res;
	int r;

	pg_p_init(&p);
	pg_p_text(&p, alias);
	if ((r = pg_run(c, PG_ALIAS_FIND, &p, &res)) != 0)
		return r;
	if (PQntuples(res) == 0)
		r = KY_ERR_NOT_FOUND;
	else
		r = pg_col_text(res, 0, 0, id, KY_UUID_LEN + 1, 1);
	PQclear(res);
	return r;
}

static int pg_alias_drop(void *conn, const char *id)
{
	struct pg_params p;

	pg_p_init(&p);
	pg_p_text(&p, id);
	return pg_exec(conn, PG_ALIAS_DROP, &p, NULL);
}

static int pg_alias_insert(void *conn, const char *alias, const char *id)
{
	struct pg_params p;

	pg_p_init(&p);
	pg_p_text(&p, alias);
	pg_p_text(&p, id);
	return pg_exec(conn, PG_ALIAS_INSERT, &p, NULL); /* KY_ERR_EXISTS: taken */
}

static const struct ky_alias_index_ops pg_alias_ops = {
    .owner = pg_alias_owner, .drop = pg_alias_drop, .insert = pg_alias_insert};

static int pg_alias_find(void *be, const char *alias, char id[KY_UUID_LEN + 1])
{
	struct pg_conn *c;
	int r;

	if ((r = pg_conn(be, &c)) != 0)
		return r;
	return pg_alias_owner(c, alias, id);
}

/* *total = the keys under row->vp and row->limit_vp (PG_KEY_UNDER), read once per batch while
 * leading a group commit (pg_conn's under_* fields). */
/* Whether a row under (vp, lvp) counts against the key limit as row does: the same VP and
 * the same limit VP (lvp NULL: none). VPs are public (kyok status shows them). */
static bool pg_same_count(const uint8_t *vp, const uint8_t *lvp, const struct ky_store_row *row)
{
	return memcmp(vp, row->vp, KY_VP_LEN) == 0 && (lvp == NULL) == (row->limit_vp == NULL) &&
	       (lvp == NULL || memcmp(lvp, row->limit_vp, KY_VP_LEN) == 0);
}

static int pg_key_under(struct pg_conn *c, const struct ky_store_row *row, int64_t *total)
{
	struct pg_params p;
	PGresult *res;
	int r;

	if (c->gc_leading && c->under_ok &&
	    pg_same_count(c->under_vp, c->under_lvp_set ? c->under_lvp : NULL, row)) {
		*total = c->under_total;
		return 0;
	}
	pg_p_init(&p);
	pg_p_blob(&p, row->vp, KY_VP_LEN);
	if (row->limit_vp != NULL)
		pg_p_blob(&p, row->limit_vp, KY_VP_LEN);
	else
		pg_p_null(&p);
	if ((r = pg_run(c, PG_KEY_UNDER, &p, &res)) != 0)
		return r;
	*total = PQntuples(res) == 1 ? pg_int(res, 0, 0) : -1;
	PQclear(res);
	if (*total < 0)
		return KY_ERR_STORE;
	c->under_ok = c->gc_leading;
	memcpy(c->under_vp, row->vp, KY_VP_LEN);
	c->under_lvp_set = row->limit_vp != NULL;
	if (row->limit_vp != NULL)
		memcpy(c->under_lvp, row->limit_vp, KY_VP_LEN);
	c->under_total = *total;
	return 0;
}

static void pg_key_params(struct pg_params *p, const struct ky_store_row *row)
{
	pg_p_init(p);
	pg_p_text(p, row->id);
	pg_p_text(p, row->name);
	pg_p_int(p, row->state);
	pg_p_int(p, row->extractable ? 1 : 0);
	pg_p_int(p, row->created);
	pg_p_int(p, row->updated);
	pg_p_int(p, row->deleted);
	pg_p_int(p, row->version);
	pg_p_blob(p, row->vp, KY_VP_LEN);
	pg_p_blob(p, row->blob, row->bloblen);
	pg_p_int(p, row->expires);
}

/* After PG_KEY_INSERT wrote row: res (its RETURNING, one row) is taken over. */
static int pg_key_inserted(struct pg_conn *c, struct ky_store_row *row, PGresult *res)
{
	row->seq = pg_int(res, 0, 1);
	row->rev = 1;
	c->under_total++;                                     /* a row more under row->vp */
	return pg_touch_res(c, KY_LEDGER_KEYS, row->id, res); /* res transferred */
}

static int pg_key_insert_one(struct pg_conn *c, struct ky_store_row *row)
{
	struct pg_params p;
	PGresult *res;
	int r;
	int64_t total;

	if ((r = pg_key_under(c, row, &total)) != 0)
		return r;
	if ((uint64_t)total >= c->s->o.key_limit)
		return KY_ERR_KEY_LIMIT;
	if ((r = ky_alias_index_check(&pg_alias_ops, c, row)) != 0)
		return r;

	pg_key_params(&p, row);
	/* A duplicate id must not end the transaction: the insert does nothing then (ON
	 * CONFLICT). The alias index is written under a savepoint, which keeps the transaction
	 * usable should that fail. */
	if (row->naliases > 0 && (r = pg_sql_run(c, "SAVEPOINT ins")) != 0)
		return r;
	if ((r = pg_run(c, PG_KEY_INSERT, &p, &res)) != 0)
		goto undo;
	if (PQntuples(res) != 1) {
		PQclear(res);
		r = KY_ERR_EXISTS;
		goto undo;
	}
	if (row->naliases > 0) {
		if ((r = ky_alias_index_write(&pg_alias_ops, c, row->id, row)) != 0) {
			PQclear(res);
			goto undo;
		}
		if ((r = pg_sql_run(c, "RELEASE SAVEPOINT ins")) != 0) {
			PQclear(res);
			return r;
		}
	}
	return pg_key_inserted(c, row, res);
undo:
	if (row->naliases > 0)
		(void)pg_sql_run(c, "ROLLBACK TO SAVEPOINT ins");
	return r;
}

/* The rows of a batch in one round trip (pg_run_many), when nothing can refuse one of them
 * but a duplicate id: none has aliases, all go under one (vp, limit_vp), and the key limit
 * has room for all. Sets *done when it inserted them (each row has its result); else the
 * caller inserts them one by one. An error: the transaction is aborted. */
static int pg_key_insert_many(struct pg_conn *c, struct ky_gc_req *batch, bool *done)
{
	struct pg_params *ps = NULL;
	PGresult *res[PG_PIPELINE_MAX];
	struct ky_gc_req *q;
	size_t n = 0, k;
	int64_t total;
	int r;

	*done = false;
	for (q = batch; q != NULL; q = q->next, n++) {
		if (n == PG_PIPELINE_MAX || q->row->naliases > 0 ||
		    !pg_same_count(batch->row->vp, batch->row->limit_vp, q->row))
			return 0;
	}
	if (n < 2)
		return 0;
	if ((r = pg_key_under(c, batch->row, &total)) != 0)
		return r;
	if ((uint64_t)total + n > c->s->o.key_limit)
		return 0;
	if ((ps = calloc(n, sizeof(*ps))) == NULL)
		return KY_ERR_NOMEM;
	for (q = batch, k = 0; q != NULL; q = q->next, k++)
		pg_key_params(&ps[k], q->row);
	r = pg_run_many(c, PG_KEY_INSERT, ps, n, res);
	free(ps);
	if (r != 0)
		return r;
	for (q = batch, k = 0; q != NULL; q = q->next, k++) {
		if (PQntuples(res[k]) != 1) {
			PQclear(res[k]);
			q->r = KY_ERR_EXISTS;
		} else if ((q->r = pg_key_inserted(c, q->row, res[k])) != 0) {
			r = q->r;
			while (++k < n)
				PQclear(res[k]);
			return r;
		}
	}
	*done = true;
	return 0;
}

/* The rows of a group commit in one transaction: 0 (each row has its result), or an error for
 * every row (none written). A refused row leaves the transaction usable for the others
 * (pg_key_insert_one). *own: the error is a statement of a row that the server refused
 * (KY_ERR_STORE), which ended the transaction before its COMMIT. */
static int pg_key_insert_lead(struct pg_conn *c, struct ky_gc_req *batch, bool *own)
{
	struct ky_gc_req *q;
	bool done;
	int r, opened;

	*own = false;
	if ((r = pg_wbegin(c, &opened)) != 0)
		return r;
	c->under_ok = false;
	if ((r = pg_key_insert_many(c, batch, &done)) != 0) {
		*own = r == KY_ERR_STORE;
		(void)pg_wend(c, opened, r);
		return r;
	}
	for (q = batch; !done && q != NULL; q = q->next) {
		q->r = pg_key_insert_one(c, q->row);
		if (q->r != 0 && !ky_gc_row_refused(q->r)) {
			r = q->r;
			*own = r == KY_ERR_STORE;
			(void)pg_wend(c, opened, r);
			return r;
		}
	}
	return pg_wend(c, opened, 0);
}

/* One row of a group commit in a transaction of its own (its key count read in it). */
static int pg_key_insert_alone(struct pg_conn *c, struct ky_store_row *row)
{
	int r, opened;

	if ((r = pg_wbegin(c, &opened)) != 0)
		return r;
	c->under_ok = false;
	r = pg_key_insert_one(c, row);
	return pg_wend(c, opened, r);
}

/* Leader of a group commit (ky_gc_lead_fn). Its thread does not wait after the COMMIT
 * (pg_commit_wait) while the next batch waits for it: each inserter waits in its own
 * (pg_key_insert). A row whose statement the server refused (its content: a name not valid
 * in the database's encoding) would end the transaction of the whole batch, which wrote
 * nothing then: the rows go again one transaction each, so that it costs only itself. */
static void pg_key_insert_batch(void *ctx, struct ky_gc_req *batch)
{
	struct pg_conn *c = ctx;
	struct ky_gc_req *q;
	bool own;
	int r;

	c->gc_leading = true;
	r = pg_key_insert_lead(c, batch, &own);
	if (r != 0 && own && batch->next != NULL) {
		for (q = batch; q != NULL; q = q->next)
			q->r = pg_key_insert_alone(c, q->row);
		r = 0;
	}
	c->gc_leading = false;
	if (r == 0)
		return;
	for (q = batch; q != NULL; q = q->next)
		q->r = r;
}

static int pg_key_insert(void *be, struct ky_store_row *row)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	int r, opened;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if (c->in_txn || s->o.no_group_commit) {
		if ((r = pg_wbegin(c, &opened)) != 0)
			return r;
		r = pg_key_insert_one(c, row);
		return pg_wend(c, opened, r);
	}
	r = ky_gc_insert(&s->gc, row, pg_key_insert_batch, c, NULL);
	if (r == 0)
		pg_commit_wait(s);
	return r;
}

static int pg_miss(struct pg_conn *c, enum pg_stmt i, const char *name)
{
	struct pg_params p;
	PGresult *res;
	int r;

	pg_p_init(&p);
	pg_p_text(&p, name);
	if ((r = pg_run(c, i, &p, &res)) != 0)
		return r;
	r = PQntuples(res) > 0 ? KY_ERR_CONFLICT : KY_ERR_NOT_FOUND;
	PQclear(res);
	return r;
}

static int pg_key_update(void *be, struct ky_store_row *row)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	PGresult *res = NULL;
	int r, opened = 0;
	int64_t seq = 0, rev = 0;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if ((r = pg_wbegin(c, &opened)) != 0)
		return r;
	if ((r = ky_alias_index_check(&pg_alias_ops, c, row)) != 0)
		goto out;
	pg_p_init(&p);
	pg_p_text(&p, row->id);
	pg_p_text(&p, row->name);
	pg_p_int(&p, row->state);
	pg_p_int(&p, row->extractable ? 1 : 0);
	pg_p_int(&p, row->created);
	pg_p_int(&p, row->updated);
	pg_p_int(&p, row->deleted);
	pg_p_int(&p, row->version);
	pg_p_blob(&p, row->vp, KY_VP_LEN);
	pg_p_blob(&p, row->blob, row->bloblen);
	pg_p_int(&p, row->rev);
	pg_p_int(&p, row->expires);
	if ((r = pg_run(c, PG_KEY_UPDATE, &p, &res)) != 0)
		goto out;
	if (PQntuples(res) != 1) {
		r = pg_miss(c, PG_KEY_REV, row->id);
		goto out;
	}
	seq = pg_int(res, 0, 0);
	rev = pg_int(res, 0, 1);
	if ((r = ky_alias_index_write(&pg_alias_ops, c, row->id, row)) != 0)
		goto out;
	r = pg_touch(c, KY_LEDGER_KEYS, row->id);
out:
	PQclear(res);
	r = pg_wend(c, opened, r);
	if (r == 0) {
		row->seq = seq;
		row->rev = rev;
	}
	return r;
}

static int pg_key_get(void *be, const char *id, struct ky_store_row *row)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	PGresult *res;
	int r;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	pg_p_init(&p);
	pg_p_text(&p, id);
	for (int tries = 0;; tries++) {
		uint64_t g0 = atomic_load(&s->L.gen), gen = 0;
		bool gen_null = true;
		struct pg_seen seen = {0};
		int k;

		memset(row, 0, sizeof(*row));
		snprintf(seen.id, sizeof(seen.id), "%s", id);
		if ((r = pg_run(c, PG_KEY_GET, &p, &res)) != 0)
			break;
		if (PQntuples(res) != 1) {
			PQclear(res);
			r = KY_ERR_STORE;
			break;
		}
		gen_null = pg_null(res, 0, PG_KEY_NCOLS);
		gen = (uint64_t)pg_int(res, 0, PG_KEY_NCOLS);
		r = 0;
		if (s->L.on)
			r = pg_ledger_row(&s->L, res, 0, KY_LEDGER_KEYS, 0, &seen);
		if (r == 0)
			r = pg_null(res, 0, 0) ? KY_ERR_NOT_FOUND : pg_read_key(res, 0, row);
		PQclear(res);
		if (r != 0 && r != KY_ERR_NOT_FOUND)
			break;
		k = pg_ledger_check(c, g0, gen_null, gen, &seen, 1);
		if (k == PG_AGAIN && tries < PG_TRIES) {
			ky_store_row_release(row);
			continue;
		}
		r = k == PG_AGAIN ? KY_ERR_STORE_BUSY : (k != 0 ? k : r);
		row->stale = seen.stale;
		break;
	}
	if (r != 0)
		ky_store_row_release(row);
	return r;
}

static int pg_key_delete(void *be, const char *id, int64_t rev)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	uint64_t changes = 0;
	int r, opened = 0;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if ((r = pg_wbegin(c, &opened)) != 0)
		return r;
	pg_p_init(&p);
	pg_p_text(&p, id);
	pg_p_int(&p, rev);
	if ((r = pg_exec(c, PG_KEY_DELETE, &p, &changes)) != 0)
		goto out;
	if (changes != 1)
		r = pg_miss(c, PG_KEY_REV, id);
	else if ((r = ky_alias_index_write(&pg_alias_ops, c, id, NULL)) == 0)
		r = pg_touch(c, KY_LEDGER_KEYS, id);
out:
	return pg_wend(c, opened, r);
}

static void pg_p_filter(struct pg_params *p, const struct ky_store_filter *f, uint32_t limit,
                        uint64_t offset)
{
	pg_p_init(p);
	pg_p_int(p, f ? (int64_t)f->states : 0);
	pg_p_int(p, f == NULL || f->extractable < 0 ? -1 : (f->extractable ? 1 : 0));
	if (limit > 0)
		pg_p_int(p, limit);
	else
		pg_p_null(p);
	pg_p_int(p, (int64_t)offset);
	if (f != NULL && f->vp_a != NULL) {
		pg_p_blob(p, f->vp_a, KY_VP_LEN);
		pg_p_blob(p, f->vp_b != NULL ? f->vp_b : f->vp_a, KY_VP_LEN);
	} else {
		pg_p_null(p);
		pg_p_null(p);
	}
	pg_p_int(p, f != NULL && f->now > 0 ? f->now : 0);
	pg_p_int(p, f != NULL && f->after_seq > 0 ? f->after_seq : 0);
}

static int pg_key_list(void *be, const struct ky_store_filter *f, uint32_t limit, uint64_t offset,
                       struct ky_store_row **rows, size_t *n)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	PGresult *res = NULL;
	struct ky_store_row *v = NULL;
	struct pg_seen *seen = NULL;
	size_t len = 0;
	int r, tries = 0;
	uint64_t g0, gen = 0;
	bool gen_null = false;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if (offset > INT64_MAX)
		return KY_ERR_USAGE;
	pg_p_filter(&p, f, limit, offset);
again:
	g0 = atomic_load(&s->L.gen);
	if ((r = pg_run(c, PG_KEY_LIST, &p, &res)) != 0)
		goto out;
	len = 0;
	if (PQntuples(res) > 0 &&
	    ((v = calloc((size_t)PQntuples(res), sizeof(*v))) == NULL ||
	     (seen = calloc((size_t)PQntuples(res), sizeof(*seen))) == NULL)) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	for (int i = 0; i < PQntuples(res); i++) {
		if ((r = pg_read_key(res, i, &v[len])) == KY_ERR_RECORD_TAMPERED) {
			pg_key_fault(res, i, &v[len], r);
			r = 0;
		}
		if (r != 0) {
			ky_store_row_release(&v[len]);
			goto out;
		}
		gen = (uint64_t)pg_int(res, i, PG_KEY_NCOLS);
		gen_null = pg_null(res, i, PG_KEY_NCOLS);
		len++;
		if (s->L.on && v[len - 1].fault == 0 &&
		    (r = pg_ledger_row(&s->L, res, i, KY_LEDGER_KEYS, 0, &seen[len - 1])) != 0) {
			if (r != KY_ERR_RECORD_STALE)
				goto out;
			pg_key_fault(res, i, &v[len - 1], r);
			r = 0;
		}
		seen[len - 1].skip = v[len - 1].fault != 0;
	}
	PQclear(res);
	res = NULL;
	if (len > 0 && (r = pg_ledger_check(c, g0, gen_null, gen, seen, len)) != 0) {
		if (r != PG_AGAIN || ++tries > PG_TRIES) {
			r = r == PG_AGAIN ? KY_ERR_STORE_BUSY : r;
			goto out;
		}
		ky_store_rows_free(v, len);
		v = NULL;
		free(seen);
		seen = NULL;
		len = 0;
		goto again;
	}
	for (size_t i = 0; s->L.on && i < len; i++)
		v[i].stale = seen[i].stale;
	*rows = v;
	*n = len;
	v = NULL; /* transferred */
	len = 0;
	r = 0;
out:
	PQclear(res);
	free(seen);
	ky_store_rows_free(v, len);
	return r;
}

static int pg_count(struct pg_conn *c, enum pg_stmt i, const struct pg_params *p, uint64_t *n)
{
	PGresult *res;
	int64_t v;
	int r;

	if ((r = pg_run(c, i, p, &res)) != 0)
		return r;
	v = PQntuples(res) == 1 ? pg_int(res, 0, 0) : 0;
	PQclear(res);
	*n = v < 0 ? 0 : (uint64_t)v;
	return 0;
}

static int pg_key_count(void *be, const struct ky_store_filter *f, uint64_t *n)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	int r;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if (f == NULL ||
	    (f->states == 0 && f->extractable < 0 && f->vp_a == NULL && f->after_seq <= 0))
		return pg_count(c, PG_KEY_TOTAL, NULL, n);
	if (f->states == 0 && f->extractable < 0 && f->after_seq <= 0) {
		pg_p_init(&p);
		pg_p_blob(&p, f->vp_a, KY_VP_LEN);
		if (f->vp_b != NULL)
			pg_p_blob(&p, f->vp_b, KY_VP_LEN);
		else
			pg_p_null(&p);
		return pg_count(c, PG_KEY_UNDER, &p, n);
	}
	if (ky_count_by_states(f)) {
		pg_p_init(&p);
		pg_p_int(&p, (int64_t)f->states);
		pg_p_int(&p, ky_count_expired_sign(f));
		pg_p_int(&p, f->now > 0 ? f->now : 0);
		return pg_count(c, PG_KEY_BY_STATE, &p, n);
	}
	pg_p_filter(&p, f, 0, 0);
	return pg_count(c, PG_KEY_COUNT, &p, n);
}

/* ---- secrets ---- */

static int pg_secret_put(void *be, struct ky_store_secret *sec, int64_t expect_rev)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	PGresult *res = NULL;
	int r, opened = 0;
	int64_t seq = 0, rev = 0;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if ((r = pg_wbegin(c, &opened)) != 0)
		return r;
	pg_p_init(&p);
	pg_p_text(&p, sec->name);
	pg_p_int(&p, sec->created);
	pg_p_int(&p, sec->updated);
	pg_p_blob(&p, sec->vp, KY_VP_LEN);
	pg_p_blob(&p, sec->blob, sec->bloblen);
	if (expect_rev)
		pg_p_int(&p, expect_rev);
	if ((r = pg_run(c, expect_rev ? PG_SECRET_UPDATE : PG_SECRET_INSERT, &p, &res)) != 0)
		goto out;
	if (PQntuples(res) != 1) {
		r = pg_miss(c, PG_SECRET_REV, sec->name);
		goto out;
	}
	seq = pg_int(res, 0, 0);
	rev = pg_int(res, 0, 1);
	r = pg_touch(c, KY_LEDGER_SECRETS, sec->name);
out:
	PQclear(res);
	r = pg_wend(c, opened, r);
	if (r == 0) {
		sec->seq = seq;
		sec->rev = rev;
	}
	return r;
}

static int pg_secret_get(void *be, const char *name, struct ky_store_secret *sec)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	PGresult *res;
	int r;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	pg_p_init(&p);
	pg_p_text(&p, name);
	for (int tries = 0;; tries++) {
		uint64_t g0 = atomic_load(&s->L.gen), gen = 0;
		bool gen_null = true;
		struct pg_seen seen = {0};
		int k;

		sec->blob = NULL;
		snprintf(seen.id, sizeof(seen.id), "%s", name);
		if ((r = pg_run(c, PG_SECRET_GET, &p, &res)) != 0)
			break;
		if (PQntuples(res) != 1) {
			PQclear(res);
			r = KY_ERR_STORE;
			break;
		}
		gen_null = pg_null(res, 0, PG_SECRET_NCOLS);
		gen = (uint64_t)pg_int(res, 0, PG_SECRET_NCOLS);
		r = s->L.on ? pg_ledger_row(&s->L, res, 0, KY_LEDGER_SECRETS, 0, &seen) : 0;
		if (r == 0 && pg_null(res, 0, 0))
			r = KY_ERR_NOT_FOUND;
		if (r == 0 && (r = pg_col_text(res, 0, 0, sec->name, sizeof(sec->name), 0)) == 0 &&
		    (r = pg_col_fixed(res, 0, 5, sec->vp, KY_VP_LEN)) == 0) {
			sec->seq = pg_int(res, 0, 1);
			sec->rev = pg_int(res, 0, 2);
			sec->created = pg_int(res, 0, 3);
			sec->updated = pg_int(res, 0, 4);
			r = pg_col_blob(res, 0, 6, &sec->blob, &sec->bloblen);
		}
		PQclear(res);
		if ((r != 0 && r != KY_ERR_NOT_FOUND) || pg_ledger_exempt(KY_LEDGER_SECRETS, name))
			break;
		k = pg_ledger_check(c, g0, gen_null, gen, &seen, 1);
		if (k == PG_AGAIN && tries < PG_TRIES) {
			ky_store_secret_release(sec);
			continue;
		}
		r = k == PG_AGAIN ? KY_ERR_STORE_BUSY : (k != 0 ? k : r);
		sec->stale = seen.stale;
		break;
	}
	if (r != 0)
		ky_store_secret_release(sec);
	return r;
}

static int pg_secret_delete(void *be, const char *name)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	uint64_t changes = 0;
	int r, opened = 0;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if ((r = pg_wbegin(c, &opened)) != 0)
		return r;
	pg_p_init(&p);
	pg_p_text(&p, name);
	if ((r = pg_exec(c, PG_SECRET_DELETE, &p, &changes)) != 0)
		goto out;
	r = changes != 1 ? KY_ERR_NOT_FOUND : pg_touch(c, KY_LEDGER_SECRETS, name);
out:
	return pg_wend(c, opened, r);
}

/* ---- re-encipherment ---- */

static int pg_vp_count(void *be, enum ky_store_table t, const uint8_t vp[KY_VP_LEN], uint64_t *n)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	int r;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	pg_p_init(&p);
	pg_p_blob(&p, vp, KY_VP_LEN);
	return pg_count(c, t == KY_STORE_KEYS ? PG_VP_COUNT_KEYS : PG_VP_COUNT_SECRETS, &p, n);
}

static int pg_vp_fetch(void *be, enum ky_store_table t, const uint8_t vp[KY_VP_LEN],
                       const char *after, size_t max, struct ky_store_vprow **rows, size_t *n)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	PGresult *res = NULL;
	struct ky_store_vprow *v = NULL;
	struct pg_seen *seen = NULL;
	size_t len = 0;
	int r, tries = 0;
	uint64_t g0, gen = 0;
	bool gen_null = false;
	uint8_t lt = t == KY_STORE_KEYS ? KY_LEDGER_KEYS : KY_LEDGER_SECRETS;
	int ncols = t == KY_STORE_KEYS ? PG_KEY_NCOLS : PG_SECRET_NCOLS;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if (max > 100000)
		max = 100000;
	if ((v = calloc(max, sizeof(*v))) == NULL || (seen = calloc(max, sizeof(*seen))) == NULL) {
		free(v);
		return KY_ERR_NOMEM;
	}
	pg_p_init(&p);
	pg_p_blob(&p, vp, KY_VP_LEN);
	pg_p_text(&p, after ? after : "");
	pg_p_int(&p, (int64_t)max);
again:
	g0 = atomic_load(&s->L.gen);
	if ((r = pg_run(c, t == KY_STORE_KEYS ? PG_VP_FETCH_KEYS : PG_VP_FETCH_SECRETS, &p,
	                &res)) != 0)
		goto out;
	for (int i = 0; i < PQntuples(res) && len < max; i++) {
		struct ky_store_vprow *w = &v[len];
		if ((r = pg_col_text(res, i, 0, w->name, sizeof(w->name), 0)) != 0)
			goto out;
		w->seq = pg_int(res, i, 1);
		w->rev = pg_int(res, i, 2);
		w->version = (uint32_t)pg_int(res, i, 3);
		len++;
		if ((r = pg_col_blob(res, i, 4, &w->blob, &w->bloblen)) != 0)
			goto out;
		gen = (uint64_t)pg_int(res, i, 5 + ncols);
		gen_null = pg_null(res, i, 5 + ncols);
		if (s->L.on && (r = pg_ledger_row(&s->L, res, i, lt, 5, &seen[len - 1])) != 0)
			goto out;
	}
	PQclear(res);
	res = NULL;
	if (len > 0 && (r = pg_ledger_check(c, g0, gen_null, gen, seen, len)) != 0) {
		if (r != PG_AGAIN || ++tries > PG_TRIES) {
			r = r == PG_AGAIN ? KY_ERR_STORE_BUSY : r;
			goto out;
		}
		ky_store_vprows_free(v, len);
		len = 0;
		if ((v = calloc(max, sizeof(*v))) == NULL) {
			r = KY_ERR_NOMEM;
			goto out;
		}
		goto again;
	}
	for (size_t i = 0; s->L.on && i < len; i++) {
		if (seen[i].stale) {
			r = KY_ERR_RECORD_STALE; /* never moved to the new key as if it were current */
			goto out;
		}
	}
	if (len == 0) {
		r = 0;
		goto out;
	}
	*rows = v;
	*n = len;
	v = NULL; /* transferred */
	len = 0;
	r = 0;
out:
	PQclear(res);
	free(seen);
	ky_store_vprows_free(v, len);
	return r;
}

static int pg_vp_swap(void *be, enum ky_store_table t, const uint8_t old_vp[KY_VP_LEN],
                      const uint8_t new_vp[KY_VP_LEN], const struct ky_store_vprow *rows, size_t n,
                      size_t *swapped)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	size_t done = 0;
	uint64_t changes;
	int r, opened = 0;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if ((r = pg_wbegin(c, &opened)) != 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		pg_p_init(&p);
		pg_p_text(&p, rows[i].name);
		pg_p_blob(&p, new_vp, KY_VP_LEN);
		pg_p_blob(&p, rows[i].blob, rows[i].bloblen);
		pg_p_blob(&p, old_vp, KY_VP_LEN);
		pg_p_int(&p, rows[i].rev);
		changes = 0;
		if ((r = pg_exec(c, t == KY_STORE_KEYS ? PG_VP_SWAP_KEYS : PG_VP_SWAP_SECRETS, &p,
		                 &changes)) != 0)
			goto out;
		if (changes == 1) {
			done++;
			if ((r = pg_touch(c,
			                  t == KY_STORE_KEYS ? KY_LEDGER_KEYS : KY_LEDGER_SECRETS,
			                  rows[i].name)) != 0)
				goto out;
		}
	}
	r = 0;
out:
	if ((r = pg_wend(c, opened, r)) == 0)
		*swapped = done;
	return r;
}

/* ---- api keys ---- */

static int pg_apikey_insert(void *be, const struct ky_store_apikey *k)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	int r, opened = 0;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if ((r = pg_wbegin(c, &opened)) != 0)
		return r;
	pg_p_init(&p);
	pg_p_text(&p, k->id);
	pg_p_text(&p, k->role);
	pg_p_blob(&p, k->hash, KY_APIKEY_HASH_LEN);
	pg_p_int(&p, k->created);
	pg_p_int(&p, k->revoked);
	pg_p_text(&p, k->name);
	if (k->has_mac)
		pg_p_blob(&p, k->mac, KY_APIKEY_MAC_LEN);
	else
		pg_p_null(&p);
	if ((r = pg_exec(c, PG_APIKEY_INSERT, &p, NULL)) == 0)
		r = pg_touch(c, KY_LEDGER_APIKEYS, k->id);
	return pg_wend(c, opened, r);
}

static int pg_read_apikey(const PGresult *res, int i, struct ky_store_apikey *k)
{
	int r;

	memset(k, 0, sizeof(*k));
	if ((r = pg_col_text(res, i, 0, k->id, sizeof(k->id), 0)) != 0 ||
	    (r = pg_col_text(res, i, 1, k->role, sizeof(k->role), 0)) != 0 ||
	    (r = pg_col_fixed(res, i, 2, k->hash, KY_APIKEY_HASH_LEN)) != 0 ||
	    (r = pg_col_text(res, i, 5, k->name, sizeof(k->name), 0)) != 0)
		return r;
	k->created = pg_int(res, i, 3);
	k->revoked = pg_int(res, i, 4);
	k->has_mac = pg_col_fixed(res, i, 6, k->mac, KY_APIKEY_MAC_LEN) == 0;
	return 0;
}

static int pg_apikey_read(struct pg_conn *c, enum pg_stmt i, const void *key, size_t keylen,
                          struct ky_store_apikey *k)
{
	struct pg_params p;
	PGresult *res;
	int r;

	pg_p_init(&p);
	if (keylen == 0)
		pg_p_text(&p, key);
	else
		pg_p_blob(&p, key, keylen);
	for (int tries = 0;; tries++) {
		uint64_t g0 = atomic_load(&c->s->L.gen), gen = 0;
		bool gen_null = true;
		struct pg_seen seen = {0};
		int x;

		if (keylen == 0)
			snprintf(seen.id, sizeof(seen.id), "%s", (const char *)key);
		if ((r = pg_run(c, i, &p, &res)) != 0)
			break;
		if (PQntuples(res) != 1) {
			PQclear(res);
			r = KY_ERR_STORE;
			break;
		}
		gen_null = pg_null(res, 0, PG_APIKEY_NCOLS);
		gen = (uint64_t)pg_int(res, 0, PG_APIKEY_NCOLS);
		r = c->s->L.on ? pg_ledger_row(&c->s->L, res, 0, KY_LEDGER_APIKEYS, 0, &seen) : 0;
		if (r == 0)
			r = pg_null(res, 0, 0) ? KY_ERR_NOT_FOUND : pg_read_apikey(res, 0, k);
		PQclear(res);
		if (r != 0 && r != KY_ERR_NOT_FOUND)
			break;
		/* By hash, a missing row names no record: only the digest is checked. */
		x = pg_ledger_check(c, g0, gen_null, gen, &seen,
		                    seen.present || keylen == 0 ? 1 : 0);
		if (x == PG_AGAIN && tries < PG_TRIES)
			continue;
		r = x == PG_AGAIN ? KY_ERR_STORE_BUSY : (x != 0 ? x : r);
		k->stale = seen.stale;
		break;
	}
	return r;
}

static int pg_apikey_get(void *be, const char *id, struct ky_store_apikey *k)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	int r;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	return pg_apikey_read(c, PG_APIKEY_GET, id, 0, k);
}

static int pg_apikey_find(void *be, const uint8_t hash[KY_APIKEY_HASH_LEN],
                          struct ky_store_apikey *k)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	int r;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	return pg_apikey_read(c, PG_APIKEY_FIND, hash, KY_APIKEY_HASH_LEN, k);
}

static int pg_apikey_list(void *be, struct ky_store_apikey **out, size_t *n)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	PGresult *res = NULL;
	struct ky_store_apikey *v = NULL;
	struct pg_seen *seen = NULL;
	size_t cnt = 0;
	int r, tries = 0;
	uint64_t g0, gen = 0;
	bool gen_null = false;

	*out = NULL;
	*n = 0;
	if ((r = pg_conn(s, &c)) != 0)
		return r;
again:
	g0 = atomic_load(&s->L.gen);
	if ((r = pg_run(c, PG_APIKEY_LIST, NULL, &res)) != 0)
		goto out;
	cnt = 0;
	free(v);
	free(seen);
	v = NULL;
	seen = NULL;
	if (PQntuples(res) > 0 &&
	    ((v = calloc((size_t)PQntuples(res), sizeof(*v))) == NULL ||
	     (seen = calloc((size_t)PQntuples(res), sizeof(*seen))) == NULL)) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	for (int i = 0; i < PQntuples(res); i++) {
		if ((r = pg_read_apikey(res, i, &v[cnt])) != 0)
			goto out;
		gen = (uint64_t)pg_int(res, i, PG_APIKEY_NCOLS);
		gen_null = pg_null(res, i, PG_APIKEY_NCOLS);
		if (s->L.on &&
		    (r = pg_ledger_row(&s->L, res, i, KY_LEDGER_APIKEYS, 0, &seen[cnt])) != 0)
			goto out;
		cnt++;
	}
	PQclear(res);
	res = NULL;
	if (cnt > 0 && (r = pg_ledger_check(c, g0, gen_null, gen, seen, cnt)) != 0) {
		if (r != PG_AGAIN || ++tries > PG_TRIES) {
			r = r == PG_AGAIN ? KY_ERR_STORE_BUSY : r;
			goto out;
		}
		goto again;
	}
	for (size_t i = 0; s->L.on && i < cnt; i++)
		v[i].stale = seen[i].stale;
	*out = v;
	*n = cnt;
	v = NULL; /* transferred */
	r = 0;
out:
	PQclear(res);
	free(seen);
	free(v);
	return r;
}

static int pg_apikey_update(void *be, const struct ky_store_apikey *k, const uint8_t *old_mac)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	struct ky_store_apikey have;
	uint64_t changes = 0;
	int r, opened = 0;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if ((r = pg_wbegin(c, &opened)) != 0)
		return r;
	pg_p_init(&p);
	pg_p_text(&p, k->id);
	pg_p_text(&p, k->role);
	pg_p_blob(&p, k->hash, KY_APIKEY_HASH_LEN);
	pg_p_int(&p, k->created);
	pg_p_int(&p, k->revoked);
	pg_p_text(&p, k->name);
	pg_p_blob(&p, k->mac, KY_APIKEY_MAC_LEN);
	if (old_mac != NULL)
		pg_p_blob(&p, old_mac, KY_APIKEY_MAC_LEN);
	else
		pg_p_null(&p);
	if ((r = pg_exec(c, PG_APIKEY_UPDATE, &p, &changes)) != 0)
		goto out;
	if (changes == 1)
		r = pg_touch(c, KY_LEDGER_APIKEYS, k->id);
	else if ((r = pg_apikey_read(c, PG_APIKEY_GET, k->id, 0, &have)) == 0)
		r = KY_ERR_CONFLICT;
out:
	return pg_wend(c, opened, r);
}

static int pg_apikey_purge(void *be, uint64_t *n)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	PGresult *res = NULL;
	int r, opened = 0;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if ((r = pg_wbegin(c, &opened)) != 0)
		return r;
	if ((r = pg_run(c, PG_APIKEY_IDS, NULL, &res)) != 0)
		goto out;
	for (int i = 0; i < PQntuples(res); i++) {
		char id[PG_LID_MAX + 1];
		if (pg_col_text(res, i, 0, id, sizeof(id), 0) == 0 &&
		    (r = pg_touch(c, KY_LEDGER_APIKEYS, id)) != 0)
			goto out;
	}
	r = pg_exec(c, PG_APIKEY_PURGE, NULL, n);
out:
	PQclear(res);
	return pg_wend(c, opened, r);
}

/* ---- request ids ---- */

static int pg_request_get(void *be, const char *apikey, const char *id,
                          struct ky_store_request *req)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	PGresult *res = NULL;
	int r;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	pg_p_init(&p);
	pg_p_text(&p, apikey);
	pg_p_text(&p, id);
	if ((r = pg_run(c, PG_REQUEST_GET, &p, &res)) != 0)
		return r;
	if (PQntuples(res) != 1) {
		r = KY_ERR_NOT_FOUND;
		goto out;
	}
	if ((r = pg_col_text(res, 0, 0, req->apikey, sizeof(req->apikey), 0)) != 0 ||
	    (r = pg_col_text(res, 0, 1, req->id, sizeof(req->id), 0)) != 0 ||
	    (r = pg_col_fixed(res, 0, 2, req->hash, KY_REQUEST_HASH_LEN)) != 0 ||
	    (r = pg_col_fixed(res, 0, 5, req->vp, KY_VP_LEN)) != 0 ||
	    (r = pg_col_blob(res, 0, 6, &req->body, &req->bodylen)) != 0)
		goto out;
	req->status = (int)pg_int(res, 0, 3);
	req->created = pg_int(res, 0, 4);
	r = 0;
out:
	PQclear(res);
	return r;
}

static int pg_request_put(void *be, const struct ky_store_request *req)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	int r, opened = 0;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if ((r = pg_wbegin(c, &opened)) != 0)
		return r;
	pg_p_init(&p);
	pg_p_text(&p, req->apikey);
	pg_p_text(&p, req->id);
	pg_p_blob(&p, req->hash, KY_REQUEST_HASH_LEN);
	pg_p_int(&p, req->status);
	pg_p_int(&p, req->created);
	pg_p_blob(&p, req->vp, KY_VP_LEN);
	pg_p_blob(&p, req->body, req->bodylen);
	r = pg_exec(c, PG_REQUEST_PUT, &p, NULL);
	return pg_wend(c, opened, r);
}

static int pg_request_expire(void *be, int64_t before, uint64_t *n)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	int r, opened = 0;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if ((r = pg_wbegin(c, &opened)) != 0)
		return r;
	pg_p_init(&p);
	pg_p_int(&p, before);
	r = pg_exec(c, PG_REQUEST_EXPIRE, &p, n);
	return pg_wend(c, opened, r);
}

/* ---- change detection ---- */

/* The commit counter and the digest's position, as of now (one statement). */
static int pg_commits_read(struct pg_conn *c, int64_t *v, int64_t *gen, int64_t *epoch)
{
	PGresult *res;
	int r;

	if ((r = pg_run(c, PG_COMMITS, NULL, &res)) != 0)
		return r;
	if (PQntuples(res) != 1) {
		PQclear(res);
		pg_note("", "the commit counter row is missing");
		return KY_ERR_STORE_DAMAGED;
	}
	*v = pg_int(res, 0, 0);
	*gen = pg_int(res, 0, 1);
	*epoch = pg_int(res, 0, 2);
	PQclear(res);
	return 0;
}

/* One read of the commit counter answers every call made within the window after it was
 * sent (s->window_ns; with none, only the calls made before it was sent and answered after:
 * each takes the answer of a read sent after it asked). Why that is enough: a write through
 * kyok returns only once the window has passed since the server confirmed its COMMIT
 * (pg_commit_wait), so a call made after the write returned is more than the window after that
 * COMMIT, and any read sent no earlier than the window before the call was sent after the
 * COMMIT and sees it. Clock rates on two hosts differ by far less than the margin
 * PG_WINDOW_MARGIN adds. A call that finds the last answer older than the window waits for a
 * read sent within it, or sends one; one that finds it older than half the window takes it and
 * asks the refresher thread (pg_refresher) for the next, so that under load calls seldom wait
 * and never send the read themselves. A thread inside a transaction reads on its own. */
static int64_t pg_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Sends one read for every caller (k->mu held on entry and on return). */
static void pg_check_read(struct pg_conn *c, struct pg_check *k)
{
	int64_t v = 0, gen = 0, epoch = 0, sent;
	int r;

	k->running = true;
	pthread_mutex_unlock(&k->mu);
	sent = pg_now_ns();
	r = pg_commits_read(c, &v, &gen, &epoch);
	pthread_mutex_lock(&k->mu);
	k->running = false;
	k->have = true;
	k->sent = sent;
	k->r = r;
	k->commits = v;
	k->gen = gen;
	k->epoch = epoch;
	if (r != 0)
		k->note = pg_last;
	pthread_cond_broadcast(&k->cv);
}

/* The refresher: one thread per store, started on the first call of pg_changed that wants it,
 * that reads the counter when asked, so that the request threads seldom wait for a read. It
 * has its own connection. */
static void *pg_refresher(void *arg)
{
	struct pg_store *s = arg;
	struct pg_check *k = &s->check;
	struct pg_conn *c = NULL;
	int r;

	pthread_mutex_lock(&k->mu);
	while (!k->stop) {
		if (!k->want || k->running) {
			pthread_cond_wait(&k->wake, &k->mu);
			continue;
		}
		k->want = false;
		/* Each time through pg_conn: a connection the server dropped is opened again. */
		pthread_mutex_unlock(&k->mu);
		r = pg_conn(s, &c);
		pthread_mutex_lock(&k->mu);
		if (r != 0 || k->running) /* the request threads read themselves meanwhile */
			continue;
		pg_check_read(c, k);
	}
	pthread_mutex_unlock(&k->mu);
	return NULL;
}

static int pg_changed(void *be, int *changed)
{
	struct pg_store *s = be;
	struct pg_check *k = &s->check;
	struct pg_conn *c;
	int64_t v = 0, gen = 0, epoch = 0, asked;
	int r;

	*changed = 1;
	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if (c->in_txn || c->in_read) {
		if ((r = pg_commits_read(c, &v, &gen, &epoch)) != 0)
			return r;
		goto answer;
	}
	asked = pg_now_ns();
	pthread_mutex_lock(&k->mu);
	for (;;) {
		/* an answer of a read sent after asked - window: taken (sent > asked when none) */
		if (k->have && k->sent + s->window_ns >= asked &&
		    (s->window_ns > 0 || k->sent > asked))
			break;
		if (k->running)
			pthread_cond_wait(&k->cv, &k->mu);
		else
			pg_check_read(c, k);
	}
	r = k->r;
	v = k->commits;
	gen = k->gen;
	epoch = k->epoch;
	if (r != 0)
		pg_last = k->note; /* the cause, for this thread's ky_store_failure */
	/* The answer is past half the window: the refresher reads the next one meanwhile. */
	if (s->window_ns > 0 && !k->running && !k->stop && r == 0 &&
	    pg_now_ns() - k->sent > s->window_ns / 2) {
		if (!k->refresher_on)
			k->refresher_on = pthread_create(&k->refresher, NULL, pg_refresher, s) == 0;
		k->want = true;
		pthread_cond_signal(&k->wake);
	}
	pthread_mutex_unlock(&k->mu);
	if (r != 0)
		return r;
answer:
	*changed = !c->commits_known || v != c->commits_seen || gen != c->gen_seen ||
	           epoch != c->epoch_seen;
	c->commits_known = 1;
	c->commits_seen = v;
	c->gen_seen = gen;
	c->epoch_seen = epoch;
	return 0;
}

/* What changed since *pos: one statement (PG_CHANGES_READ), one snapshot. */
static int pg_changes(void *be, struct ky_store_change_pos *pos, struct ky_store_change **out,
                      size_t *n, int *all)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	struct ky_changelog L;
	struct ky_store_change_pos np = *pos;
	PGresult *res = NULL;
	uint64_t last = 0, last_check = 0;
	int r = KY_ERR_INTERNAL, rows;

	memset(&L, 0, sizeof(L));
	if ((r = pg_conn(s, &c)) != 0)
		goto out;
	pg_p_init(&p);
	pg_p_int(&p, (int64_t)pos->seq);
	if ((r = pg_run(c, PG_CHANGES_READ, &p, &res)) != 0)
		goto out;
	if ((rows = PQntuples(res)) < 1 || pg_int(res, 0, 0) < 0) {
		pg_note("", "the change counter row is missing");
		r = KY_ERR_STORE_DAMAGED;
		goto out;
	}
	last = (uint64_t)pg_int(res, 0, 0);
	if (!pg_null(res, 0, 1))
		last_check = ky_changelog_check(last, pg_int(res, 0, 1), PQgetvalue(res, 0, 2),
		                                (size_t)PQgetlength(res, 0, 2));
	if ((r = ky_changelog_begin(&L, pos, last)) != 0)
		goto out;
	for (int i = 0; i < rows && ky_changelog_wants(&L); i++)
		if (!pg_null(res, i, 3))
			ky_changelog_row(&L, (uint64_t)pg_int(res, i, 3), pg_int(res, i, 4),
			                 pg_null(res, i, 5) ? NULL : PQgetvalue(res, i, 5),
			                 (size_t)PQgetlength(res, i, 5));
	ky_changelog_end(&L, &np, out, n, all);
	if (*all)
		np.check = last_check;
	*pos = np;
	r = 0;
out:
	ky_changelog_release(&L);
	PQclear(res);
	return r;
}

/* ---- diagnostics ---- */

static void pg_failure(void *be, char *out, size_t outlen)
{
	struct pg_store *s = be;

	if (!pg_last.set) {
		snprintf(out, outlen, "key storage '%s'", s->display);
		return;
	}
	snprintf(out, outlen, "key storage '%s': PostgreSQL: %s%s%s%s", s->display,
	         pg_last.msg[0] ? pg_last.msg : "connection failed",
	         pg_last.sqlstate[0] ? " (SQLSTATE " : "", pg_last.sqlstate,
	         pg_last.sqlstate[0] ? ")" : "");
}

static void pg_failure_clear(void *be)
{
	(void)be;
	pg_last.set = 0;
	pg_last.msg[0] = '\0';
	pg_last.sqlstate[0] = '\0';
}

static int pg_plan(void *be, enum ky_store_plan what, char *out, size_t outlen)
{
	struct pg_store *s = be;
	struct pg_conn *c;
	struct pg_params p;
	PGresult *res = NULL;
	char q[64];
	enum pg_stmt i = PG_KEY_GET;
	static const uint8_t zero[KY_VP_LEN];
	size_t len = 0;
	int r;

	pg_p_init(&p);
	switch (what) {
	case KY_STORE_PLAN_GET:
		i = PG_KEY_GET;
		pg_p_text(&p, "00000000-0000-0000-0000-000000000000");
		break;
	case KY_STORE_PLAN_VP_FETCH:
		i = PG_VP_FETCH_KEYS;
		pg_p_blob(&p, zero, sizeof(zero));
		pg_p_text(&p, "");
		pg_p_int(&p, 100);
		break;
	case KY_STORE_PLAN_APIKEY:
		i = PG_APIKEY_FIND;
		pg_p_blob(&p, zero, KY_APIKEY_HASH_LEN);
		break;
	case KY_STORE_PLAN_STATE_COUNT:
		i = PG_KEY_BY_STATE;
		pg_p_int(&p, 1 << 1);
		pg_p_int(&p, -1);
		pg_p_int(&p, 100);
		break;
	}
	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if (!c->prepared[i]) {
		/* prepare it through a harmless run */
		if ((r = pg_run(c, i, &p, &res)) != 0)
			return r;
		PQclear(res);
	}
	snprintf(q, sizeof(q), "EXPLAIN (COSTS OFF) EXECUTE k%d(", (int)i);
	{
		/* the parameters as literals of their types */
		char sql[256];
		size_t n = (size_t)snprintf(sql, sizeof(sql), "%s", q);
		for (int k = 0; k < p.n; k++) {
			const char *lit = pg_sql[i].types[k] == 't'   ? "''"
			                  : pg_sql[i].types[k] == 'i' ? "100"
			                                              : "'\\x00'::bytea";
			n += (size_t)snprintf(sql + n, sizeof(sql) - n, "%s%s", k ? ", " : "", lit);
		}
		snprintf(sql + n, sizeof(sql) - n, ")");
		res = PQexec(c->db, sql);
	}
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		r = pg_fail(c, res);
		goto out;
	}
	for (int k = 0; k < PQntuples(res); k++) {
		const char *d = PQgetvalue(res, k, 0);
		int w = snprintf(out + len, outlen - len, "%s%s", len ? "; " : "", d);
		if (w < 0 || (size_t)w >= outlen - len) {
			r = KY_ERR_TOO_LARGE;
			goto out;
		}
		len += (size_t)w;
	}
	r = 0;
out:
	PQclear(res);
	return r;
}

/* ---- storage digest: attach ---- */

static int pg_ledger_attach(void *be, const uint8_t key[KY_STORE_LEDGER_KEY_LEN],
                            const struct ky_store_ledger_pos *floor, int adopt,
                            struct ky_store_ledger_pos *pos)
{
	struct pg_store *s = be;
	struct pg_ledger *L = &s->L;
	struct pg_conn *c;
	struct pg_ledger_meta m;
	struct ky_ledger_index ix = {0};
	int r = KY_ERR_INTERNAL, opened = 0, have;
	bool locked = false, authentic;

	if ((r = pg_conn(s, &c)) != 0)
		return r;
	if (c->in_txn)
		return KY_ERR_USAGE;
	pthread_mutex_lock(&L->mu);
	L->on = false;
	pthread_mutex_unlock(&L->mu);
	if ((r = pg_wbegin(c, &opened)) != 0)
		return r;
	pthread_mutex_lock(&L->mu);
	locked = true;
	ky_ledger_mac_release(&L->mac);
	if ((r = ky_ledger_mac_init(&L->mac, key)) != 0)
		goto out;
	r = pg_ledger_meta_read(c, &m);
	if (r != 0 && r != KY_ERR_NOT_FOUND)
		goto out;
	have = r == 0;
	if (!have && floor->gen > 0 && !adopt) {
		r = KY_ERR_STORAGE_MISSING;
		goto out;
	}
	authentic = have && (r = pg_ledger_meta_check(c, &m)) == 0;
	if (have && !authentic && !adopt)
		goto out;
	if (have && !adopt && floor->gen > 0 && (m.epoch != floor->epoch || m.gen < floor->gen)) {
		r = KY_ERR_STORAGE_ROLLBACK;
		goto out;
	}
	if ((r = pg_ledger_rescan(c, &ix, (have && m.gen > floor->gen ? m.gen : floor->gen) + 1)) !=
	    0)
		goto out;
	if (have && !adopt) {
		if (!pg_ledger_matches(&ix, &m)) {
			r = KY_ERR_LEDGER_MISMATCH;
			goto out;
		}
	} else {
		uint64_t g = have && m.gen > floor->gen ? m.gen : floor->gen;
		uint64_t e = have && m.epoch > floor->epoch ? m.epoch : floor->epoch;
		m.gen = g + 1;
		m.epoch = e;
		if (adopt && authentic && m.epoch < floor->epoch + 1)
			m.epoch = floor->epoch + 1;
		m.n = ix.n;
		memcpy(m.sum, ix.sum, KY_LEDGER_TAG_LEN);
		if ((r = pg_ledger_meta_write(c, &m)) != 0)
			goto out;
	}
	ky_ledger_index_move(&L->ix, &ix);
	atomic_store(&L->gen, m.gen);
	L->epoch = m.epoch;
	L->broken = false;
	r = 0;
out:
	if (locked)
		pthread_mutex_unlock(&L->mu);
	ky_ledger_index_release(&ix);
	r = pg_wend(c, opened, r);
	pthread_mutex_lock(&L->mu);
	L->on = r == 0;
	if (r == 0) {
		pos->gen = atomic_load(&L->gen);
		pos->epoch = L->epoch;
	}
	pthread_mutex_unlock(&L->mu);
	return r;
}

static int pg_ledger_pos(void *be, struct ky_store_ledger_pos *pos)
{
	struct pg_store *s = be;
	int r;

	pthread_mutex_lock(&s->L.mu);
	r = s->L.on ? 0 : KY_ERR_USAGE;
	pos->gen = atomic_load(&s->L.gen);
	pos->epoch = s->L.epoch;
	pthread_mutex_unlock(&s->L.mu);
	return r;
}

/* ---- open and close ---- */

/* One-row text query: *out = its value, KY_ERR_NOT_FOUND for no row. */
static int pg_query_text(struct pg_conn *c, const char *q, const char *arg, char *out, size_t cap)
{
	const char *v[1] = {arg};
	PGresult *res = PQexecParams(c->db, q, arg ? 1 : 0, NULL, v, NULL, NULL, 0);
	int r;

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		r = pg_fail(c, res);
	else if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0))
		r = KY_ERR_NOT_FOUND;
	else if ((size_t)PQgetlength(res, 0, 0) >= cap)
		r = KY_ERR_STORE_SCHEMA;
	else {
		snprintf(out, cap, "%s", PQgetvalue(res, 0, 0));
		r = 0;
	}
	PQclear(res);
	return r;
}

/* What came after the first stores of schema 2 were made (still schema 2: older programs
 * never read it, and their writes run its triggers too), made on open when its probe
 * answers nothing: the change log; the 'state:' counters, counted from the table once, when
 * their trigger is missing; keys_expiring. */
static const struct {
	const char *probe, *make;
} pg_later[] = {
    {"SELECT to_regclass('changes')::text", PG_CHANGES_SCHEMA},
    {"SELECT tgname::text FROM pg_trigger WHERE tgrelid = to_regclass('keys') AND "
     "tgname = 'keys_state_counters'",
     PG_STATE_COUNTERS "DELETE FROM counters WHERE k LIKE 'state:%';"
                       "INSERT INTO counters (k, n) SELECT 'state:' || state, count(*) FROM "
                       "keys GROUP BY state;"},
    {"SELECT to_regclass('keys_expiring')::text", PG_EXPIRING_INDEX},
};

/* Runs make, in the caller's transaction, when probe (a query of one text value) answers
 * nothing: a part of the schema that a store made before it lacks (pg_later). */
static int pg_make_missing(struct pg_conn *c, const char *probe, const char *make)
{
	char v[KY_ID_MAX + 1];
	int r = pg_query_text(c, probe, NULL, v, sizeof(v));

	return r == KY_ERR_NOT_FOUND ? pg_sql_run(c, make) : r;
}

static int pg_init_schema(struct pg_conn *c)
{
	char v[KY_ID_MAX + 1];
	const char *instance = c->s->o.instance;
	int r, opened = 0;

	if ((r = pg_wbegin(c, &opened)) != 0)
		return r;
	r = pg_query_text(c, "SELECT to_regclass('meta')::text", NULL, v, sizeof(v));
	if (r == KY_ERR_NOT_FOUND) {
		/* Storage the caller knows held records is never made anew. */
		if (c->s->o.must_exist) {
			r = KY_ERR_STORAGE_MISSING;
			goto out;
		}
		if ((r = pg_sql_run(c, pg_schema)) != 0)
			goto out;
	} else if (r != 0) {
		goto out;
	}
	r = pg_query_text(c, "SELECT v FROM meta WHERE k = 'schema'", NULL, v, sizeof(v));
	if (r == KY_ERR_NOT_FOUND || (r == 0 && strcmp(v, "1") != 0 && strcmp(v, "2") != 0))
		r = KY_ERR_STORE_SCHEMA;
	if (r != 0)
		goto out;
	/* Schema 1 to 2, in this transaction: none of its keys has an alias. */
	if (strcmp(v, "1") == 0 &&
	    (r = pg_sql_run(c, PG_ALIASES_SCHEMA "UPDATE meta SET v = '2' WHERE k = 'schema';")) !=
	        0)
		goto out;
	for (size_t i = 0; i < sizeof(pg_later) / sizeof(pg_later[0]); i++)
		if ((r = pg_make_missing(c, pg_later[i].probe, pg_later[i].make)) != 0)
			goto out;
	if (instance != NULL) {
		r = pg_query_text(c, "SELECT v FROM meta WHERE k = 'instance'", NULL, v, sizeof(v));
		if (r == KY_ERR_NOT_FOUND) {
			const char *pv[1] = {instance};
			PGresult *res =
			    PQexecParams(c->db, "INSERT INTO meta (k, v) VALUES ('instance', $1)",
			                 1, NULL, pv, NULL, NULL, 0);
			r = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : pg_fail(c, res);
			PQclear(res);
		} else if (r == 0 && strcmp(v, instance) != 0) {
			r = KY_ERR_WRONG_INSTANCE;
		}
		if (r != 0)
			goto out;
	}
	r = 0;
out:
	return pg_wend(c, opened, r);
}

/* The storage of the last open that failed on this thread, for pg_open_failure. */
static _Thread_local char pg_open_display[256];

/* user@host:port/dbname of conninfo: never its password. KY_ERR_STORE_PASSWORD when the URI
 * holds one (it would be in the unit's configuration, its command lines and its messages). */
static int pg_display(const char *conninfo, char **out)
{
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL), *o;
	const char *user = "", *host = "", *port = "", *db = "";
	int n;

	*out = NULL;
	if (opts == NULL)
		return KY_ERR_CONFIG;
	for (o = opts; o->keyword != NULL; o++) {
		if (o->val == NULL)
			continue;
		if (strcmp(o->keyword, "password") == 0) {
			PQconninfoFree(opts);
			return KY_ERR_STORE_PASSWORD;
		}
		if (strcmp(o->keyword, "user") == 0)
			user = o->val;
		else if (strcmp(o->keyword, "host") == 0)
			host = o->val;
		else if (strcmp(o->keyword, "port") == 0)
			port = o->val;
		else if (strcmp(o->keyword, "dbname") == 0)
			db = o->val;
	}
	n = asprintf(out, "postgresql://%s%s%s%s%s/%s", user, *user ? "@" : "", host,
	             *port ? ":" : "", port, db);
	PQconninfoFree(opts);
	if (n < 0) {
		*out = NULL;
		return KY_ERR_NOMEM;
	}
	return 0;
}

static void pg_close(void *be)
{
	struct pg_store *s = be;
	struct pg_conn *c;

	if (s == NULL)
		return;
	pthread_mutex_lock(&s->check.mu);
	s->check.stop = true;
	pthread_cond_signal(&s->check.wake);
	pthread_mutex_unlock(&s->check.mu);
	if (s->check.refresher_on)
		pthread_join(s->check.refresher, NULL); /* its connection is closed as it ends */
	c = pthread_getspecific(s->tls);
	if (c != NULL && c->in_txn) {
		(void)pg_sql_run(c, "ROLLBACK");
		c->in_txn = 0;
		pthread_mutex_unlock(&s->wlock);
	}
	pthread_key_delete(s->tls);
	while ((c = s->conns) != NULL) {
		pg_unlink(s, c);
		pg_conn_close(c);
	}
	ky_ledger_mac_release(&s->L.mac);
	ky_ledger_index_release(&s->L.ix);
	pthread_mutex_destroy(&s->L.mu);
	pthread_cond_destroy(&s->check.cv);
	pthread_cond_destroy(&s->check.wake);
	pthread_mutex_destroy(&s->check.mu);
	ky_gc_destroy(&s->gc);
	pthread_mutex_destroy(&s->wlock);
	pthread_mutex_destroy(&s->lock);
	free((char *)s->o.instance);
	if (s->conninfo != NULL)
		OPENSSL_cleanse(s->conninfo, strlen(s->conninfo));
	free(s->conninfo);
	free(s->display);
	free(s);
}

static int pg_open_scheme(const char *scheme, const char *location,
                          const struct ky_store_opts *opts, void **be)
{
	int r = KY_ERR_INTERNAL;
	struct pg_store *s = NULL;
	struct pg_conn *c;

	*be = NULL;
	pg_open_display[0] = '\0';
	if (opts->instance != NULL &&
	    (opts->instance[0] == '\0' || strlen(opts->instance) > KY_ID_MAX))
		return KY_ERR_CONFIG;
	if (strncmp(location, "//", 2) != 0)
		return KY_ERR_CONFIG;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return KY_ERR_NOMEM;
	s->o = *opts;
	s->o.instance = NULL;
	s->window_ns = opts->check_window_us < 0   ? 0
	               : opts->check_window_us > 0 ? (int64_t)opts->check_window_us * 1000
	                                           : (int64_t)KY_STORE_CHECK_WINDOW_US * 1000;
	if (ky_gc_init(&s->gc) != 0) {
		free(s);
		return KY_ERR_NOMEM;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->wlock, NULL);
	pthread_mutex_init(&s->L.mu, NULL);
	pthread_mutex_init(&s->check.mu, NULL);
	pthread_cond_init(&s->check.cv, NULL);
	pthread_cond_init(&s->check.wake, NULL);
	if (pthread_key_create(&s->tls, pg_conn_destructor) != 0) {
		ky_gc_destroy(&s->gc);
		pthread_cond_destroy(&s->check.cv);
		pthread_cond_destroy(&s->check.wake);
		pthread_mutex_destroy(&s->check.mu);
		pthread_mutex_destroy(&s->L.mu);
		pthread_mutex_destroy(&s->wlock);
		pthread_mutex_destroy(&s->lock);
		free(s);
		return KY_ERR_NOMEM;
	}
	if (asprintf(&s->conninfo, "%s:%s", scheme, location) < 0) {
		s->conninfo = NULL;
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((r = pg_display(s->conninfo, &s->display)) != 0)
		goto out;
	snprintf(pg_open_display, sizeof(pg_open_display), "%s", s->display);
	pg_failure_clear(s);
	if (opts->instance && (s->o.instance = strdup(opts->instance)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((r = pg_conn(s, &c)) != 0 || (r = pg_init_schema(c)) != 0)
		goto out;
	*be = s;
	s = NULL; /* transferred */
	r = 0;
out:
	pg_close(s);
	return r;
}

static void pg_open_failure(char *out, size_t outlen)
{
	if (pg_open_display[0] == '\0')
		return;
	if (!pg_last.set) {
		snprintf(out, outlen, "key storage '%s'", pg_open_display);
		return;
	}
	snprintf(out, outlen, "key storage '%s': PostgreSQL: %s%s%s%s", pg_open_display,
	         pg_last.msg[0] ? pg_last.msg : "connection failed",
	         pg_last.sqlstate[0] ? " (SQLSTATE " : "", pg_last.sqlstate,
	         pg_last.sqlstate[0] ? ")" : "");
}

static int pg_open(const char *location, const struct ky_store_opts *opts, void **be)
{
	return pg_open_scheme("postgresql", location, opts, be);
}

static int pg_open_short(const char *location, const struct ky_store_opts *opts, void **be)
{
	return pg_open_scheme("postgres", location, opts, be);
}

#define PG_OPS_BODY                                                                            \
	.close = pg_close, .begin = pg_begin, .commit = pg_commit, .rollback = pg_rollback,    \
	.key_insert = pg_key_insert, .key_update = pg_key_update, .key_get = pg_key_get,       \
	.key_delete = pg_key_delete, .key_list = pg_key_list, .key_count = pg_key_count,       \
	.alias_find = pg_alias_find, .secret_put = pg_secret_put, .secret_get = pg_secret_get, \
	.secret_delete = pg_secret_delete, .vp_count = pg_vp_count, .vp_fetch = pg_vp_fetch,   \
	.vp_swap = pg_vp_swap, .apikey_insert = pg_apikey_insert, .apikey_get = pg_apikey_get, \
	.apikey_find = pg_apikey_find, .apikey_list = pg_apikey_list,                          \
	.apikey_purge = pg_apikey_purge, .apikey_update = pg_apikey_update,                    \
	.request_get = pg_request_get, .request_put = pg_request_put,                          \
	.request_expire = pg_request_expire, .changed = pg_changed, .changes = pg_changes,     \
	.ledger_attach = pg_ledger_attach, .ledger_pos = pg_ledger_pos, .plan = pg_plan,       \
	.failure = pg_failure, .failure_clear = pg_failure_clear, .open_failure = pg_open_failure

const struct ky_store_ops ky_store_pg_ops = {
    .scheme = "postgresql",
    .open = pg_open,
    PG_OPS_BODY,
};

const struct ky_store_ops ky_store_pg_short_ops = {
    .scheme = "postgres",
    .open = pg_open_short,
    PG_OPS_BODY,
};
