/* SQLite key storage backend.
 *
 * Size: one backend of the store function table (include/kyok/store.h) in one file, on
 * purpose: its statements, transactions, group commit, change detection and storage digest
 * share one connection model and one write lock, and a reader checks them side by side.
 *
 * One file shared by the crypto units of an instance on one host: WAL journal (readers never
 * block the writer), synchronous=FULL (a committed write survives power loss), busy_timeout
 * (a writer of another process is waited for), BEGIN IMMEDIATE for every write transaction
 * (the write lock is taken up front, so two writers never deadlock upgrading a read lock).
 *
 * Threads: every thread gets its own connection (a pthread key per store) with its own cache
 * of prepared statements. Writers of one process queue on a mutex rather than polling the
 * file lock. Concurrent inserts share one commit (group commit): a thread that finds no
 * commit in progress becomes the leader and inserts every queued row in one transaction,
 * each with its own result.
 *
 * Schema version 2 (meta.schema = '2'; a store of version 1 is brought to 2 on open: it only
 * lacks key_aliases, and none of its keys has an alias):
 *   meta(k, v)               schema version, instance id
 *   counters(k, n)           'keys' = row count of keys, 'vp:<HEX>' = rows of keys under
 *                            that VP (both kept by triggers: O(1) limit check), 'state:<N>' =
 *                            rows of keys in stored state N (triggers: counts by state
 *                            without a scan, lib/store/count.h)
 *   keys(id PK, seq, rev, name, state, extractable, created, updated, deleted, version,
 *        vp, blob, expires)           WITHOUT ROWID: lookup by id is one B-tree search;
 *                            keys_seq (listing order), keys_vp (vp, id) (re-encipherment),
 *                            keys_expiring (expires, state) WHERE state = 1 AND expires > 0
 *                            (Active keys with an expiration date, by date: counts as of a
 *                            date; state makes it a covering index for SQ_EXPIRED)
 *   secrets(name PK, seq, rev, created, updated, vp, blob), secrets_vp (vp, name)
 *   api_keys(id PK, name, role, hash UNIQUE, created, revoked, mac)
 *                            (name, mac, the 'vp:' and 'state:' counters and keys_expiring
 *                            came after the first stores were made: added on open when
 *                            missing, sq_upgrade)
 *   requests(apikey, id, hash, status, created, vp, body)  the replies of state changes by
 *                            request id (Idempotency-Key); made on open when missing
 *   key_aliases(alias PK, id), key_aliases_id (id)   the alias index: which key has an alias
 *                            (the sealed record holds the aliases; this table finds it, and its
 *                            primary key keeps an alias to one key). Written with the key row
 *                            in its transaction, under the write lock, by the rules of
 *                            lib/store/alias.h (every backend's).
 *   changes(seq AUTOINCREMENT, rec, id)  the change log: one row per record written (rec 0
 *                            key, 1 secret, 2 API key), added by triggers on keys, secrets and
 *                            api_keys in the writing transaction (so writes by any program
 *                            are logged), the oldest pruned past 16,384; made on open when
 *                            missing
 *
 * Change detection (ky_store_changed, for caches above the store): every commit made through
 * this backend, by any thread of any process, bumps a 64-bit counter in a small shared file
 * next to the database (<path>-kyokgen, mmapped): checking it costs no system call. As a
 * safety net (a writer that died between its commit and the bump, a write by another
 * program) PRAGMA data_version is also checked at least every SQ_DV_INTERVAL_MS. What changed
 * is then read from the change log (ky_store_changes): the rows after the caller's position,
 * which must still hold the row it was taken at (its fingerprint) and follow it without a
 * gap up to sqlite_sequence's last number; anything else is "everything changed".
 * A group commit changes no row of keys, secrets or api_keys that existed (it inserts key
 * rows, and what goes with them: alias index, counters, log, digest), so the handle notes the
 * counter value its bump made (quiet[], by value modulo SQ_QUIET_SLOTS) and its own threads
 * need not be told of it: a unit creating keys does not make every request read the log
 * after each commit. A reader that loads the counter before the note is stored, or finds any
 * value in between not noted (another handle's or process's commit, a slot reused), is
 * told. So that the log read at last (told of another write, or by the data_version net)
 * never spans more than it can tell (KY_STORE_CHANGES_MAX), a handle stops noting once
 * KY_STORE_QUIET_ROWS rows were inserted quietly since its last ky_store_changes. The
 * counter file is the units' own: one edited or reset by another program is a write by
 * another program (seen through data_version).
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kyok/err.h"
#include "kyok/store.h"
#include "lib/store/alias.h"
#include "lib/store/changelog.h"
#include "lib/store/count.h"
#include "lib/store/groupcommit.h"
#include "lib/store/ledger.h"

enum sq_stmt {
	SQ_BEGIN,
	SQ_COMMIT,
	SQ_ROLLBACK,
	SQ_KEY_TOTAL,
	SQ_KEY_UNDER,
	SQ_KEY_INSERT,
	SQ_KEY_UPDATE,
	SQ_KEY_REV,
	SQ_KEY_GET,
	SQ_KEY_DELETE,
	SQ_KEY_LIST,
	SQ_KEY_COUNT,
	SQ_KEY_BY_STATE,
	SQ_SECRET_INSERT,
	SQ_SECRET_UPDATE,
	SQ_SECRET_REV,
	SQ_SECRET_GET,
	SQ_SECRET_DELETE,
	SQ_VP_COUNT_KEYS,
	SQ_VP_COUNT_SECRETS,
	SQ_VP_FETCH_KEYS,
	SQ_VP_FETCH_SECRETS,
	SQ_VP_SWAP_KEYS,
	SQ_VP_SWAP_SECRETS,
	SQ_APIKEY_INSERT,
	SQ_APIKEY_GET,
	SQ_APIKEY_FIND,
	SQ_APIKEY_LIST,
	SQ_APIKEY_PURGE,
	SQ_APIKEY_UPDATE,
	SQ_DATA_VERSION,
	SQ_LEDGER_GET,
	SQ_LEDGER_PUT,
	SQ_LEDGER_LOG,
	SQ_LEDGER_PRUNE,
	SQ_LEDGER_GENS,
	SQ_LEDGER_CHANGED,
	SQ_CHANGES_LAST,
	SQ_CHANGES_FROM,
	SQ_ALIAS_FIND,
	SQ_ALIAS_INSERT,
	SQ_ALIAS_DROP,
	SQ__COUNT
};

/* Pages each connection keeps (negative: KiB): lookups in a large store stay off the file. */
#define SQ_CACHE_KIB      -32768
#define SQ_STR_(x)        #x
#define SQ_STR(x)         SQ_STR_(x)
#define SQ_GEN_SUFFIX     "-kyokgen"
#define SQ_GEN_SIZE       4096
#define SQ_DV_INTERVAL_MS 250
#define SQ_QUIET_SLOTS    1024 /* group commits noted as only inserting (sq_changed) */

/* The counter is shared through a mapping with other processes: its atomics must not be
 * emulated with a lock of this process's. */
_Static_assert(ATOMIC_LONG_LOCK_FREE == 2 && ATOMIC_LLONG_LOCK_FREE == 2,
               "the shared commit counter needs lock-free 64-bit atomics");

#define SQ_KEY_COLS                                                                              \
	"id, seq, rev, name, state, extractable, created, updated, deleted, version, vp, blob, " \
	"expires"
#define SQ_APIKEY_COLS  "id, role, hash, created, revoked, name, mac"
#define SQ_SECRET_COLS  "name, seq, rev, created, updated, vp, blob"
#define SQ_KEY_NCOLS    13
#define SQ_SECRET_NCOLS 7
#define SQ_APIKEY_NCOLS 7
/* The digest's generation, as one more column of a read: the row and the generation come
 * from one snapshot. NULL when the store has no digest. */
#define SQ_GEN_COL ", (SELECT gen FROM ledger WHERE k = 1)"
/* Generations of ledger_log kept: a process that fell further behind reads every record. */
#define SQ_LOG_KEEP 4096
/* ?7 > 0: states as of that date (an Active key past its expiration date is Deactivated). */
#define SQ_FILTER                                                                              \
	"(?1 = 0 OR ((1 << (CASE WHEN ?7 > 0 AND state = 1 AND expires > 0 AND expires <= ?7 " \
	"THEN 3 ELSE state END)) & ?1) != 0) AND (?2 < 0 OR extractable = ?2) AND "            \
	"(?5 IS NULL OR vp = ?5 OR vp = ?6) AND seq > ?8"

/* Active keys whose expiration date ?3 has reached: Deactivated as of ?3. Only the partial
 * index keys_expiring is read. */
#define SQ_EXPIRED "SELECT count(*) FROM keys WHERE state = 1 AND expires > 0 AND expires <= ?3"

static const char *const sq_sql[SQ__COUNT] = {
    [SQ_BEGIN] = "BEGIN IMMEDIATE",
    [SQ_COMMIT] = "COMMIT",
    [SQ_ROLLBACK] = "ROLLBACK",
    [SQ_KEY_TOTAL] = "SELECT n FROM counters WHERE k = 'keys'",
    /* Rows under ?1 or ?2 (?2 may be NULL), from the per-VP counters. */
    [SQ_KEY_UNDER] = "SELECT coalesce(sum(n), 0) FROM counters WHERE k = 'vp:' || hex(?1) OR "
                     "(?2 IS NOT NULL AND ?2 != ?1 AND k = 'vp:' || hex(?2))",
    [SQ_KEY_INSERT] = "INSERT INTO keys (" SQ_KEY_COLS ") VALUES (?1, "
                      "(SELECT coalesce(max(seq), 0) + 1 FROM keys), 1, ?2, ?3, ?4, ?5, ?6, ?7, "
                      "?8, ?9, ?10, ?11) RETURNING seq",
    [SQ_KEY_UPDATE] = "UPDATE keys SET rev = rev + 1, name = ?2, state = ?3, extractable = ?4, "
                      "created = ?5, updated = ?6, deleted = ?7, version = ?8, vp = ?9, "
                      "blob = ?10, expires = ?12 WHERE id = ?1 AND rev = ?11 RETURNING seq, rev",
    [SQ_KEY_REV] = "SELECT rev FROM keys WHERE id = ?1",
    [SQ_KEY_GET] = "SELECT " SQ_KEY_COLS SQ_GEN_COL " FROM (SELECT 1) LEFT JOIN keys ON id = ?1",
    [SQ_KEY_DELETE] = "DELETE FROM keys WHERE id = ?1 AND rev = ?2",
    [SQ_KEY_LIST] = "SELECT " SQ_KEY_COLS SQ_GEN_COL " FROM keys WHERE " SQ_FILTER
                    " ORDER BY seq LIMIT ?3 OFFSET ?4",
    [SQ_KEY_COUNT] = "SELECT count(*) FROM keys WHERE " SQ_FILTER,
    /* SQ_KEY_COUNT of a filter by states only, without a scan: the 'state:' counters of the
     * states in ?1, plus ?2 (-1, 0 or 1) times the Active keys expired at ?3 (keys_expiring).
     * One statement: one snapshot. */
    [SQ_KEY_BY_STATE] = "SELECT (SELECT coalesce(sum(n), 0) FROM counters WHERE k >= 'state:' "
                        "AND k < 'state;' AND ((1 << CAST(substr(k, 7) AS INTEGER)) & ?1) != 0) "
                        "+ CASE WHEN ?2 = 0 THEN 0 ELSE ?2 * (" SQ_EXPIRED ") END",
    [SQ_SECRET_INSERT] = "INSERT INTO secrets (name, seq, rev, created, updated, vp, blob) "
                         "VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM secrets), 1, ?2, "
                         "?3, ?4, ?5) RETURNING seq, rev",
    [SQ_SECRET_UPDATE] = "UPDATE secrets SET rev = rev + 1, updated = ?3, vp = ?4, blob = ?5 "
                         "WHERE name = ?1 AND rev = ?6 RETURNING seq, rev",
    [SQ_SECRET_REV] = "SELECT rev FROM secrets WHERE name = ?1",
    [SQ_SECRET_GET] =
        "SELECT " SQ_SECRET_COLS SQ_GEN_COL " FROM (SELECT 1) LEFT JOIN secrets ON name = ?1",
    [SQ_SECRET_DELETE] = "DELETE FROM secrets WHERE name = ?1",
    [SQ_VP_COUNT_KEYS] = "SELECT count(*) FROM keys WHERE vp = ?1",
    [SQ_VP_COUNT_SECRETS] = "SELECT count(*) FROM secrets WHERE vp = ?1",
    /* Primary key order: a batch touches neighbouring leaf pages, not one page per row. */
    [SQ_VP_FETCH_KEYS] = "SELECT id, seq, rev, version, blob, " SQ_KEY_COLS SQ_GEN_COL
                         " FROM keys WHERE vp = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    [SQ_VP_FETCH_SECRETS] = "SELECT name, seq, rev, 0, blob, " SQ_SECRET_COLS SQ_GEN_COL
                            " FROM secrets WHERE vp = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
    [SQ_VP_SWAP_KEYS] = "UPDATE keys SET vp = ?2, blob = ?3, rev = rev + 1 "
                        "WHERE id = ?1 AND vp = ?4 AND rev = ?5",
    [SQ_VP_SWAP_SECRETS] = "UPDATE secrets SET vp = ?2, blob = ?3, rev = rev + 1 "
                           "WHERE name = ?1 AND vp = ?4 AND rev = ?5",
    [SQ_APIKEY_INSERT] = "INSERT INTO api_keys (" SQ_APIKEY_COLS ") "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [SQ_APIKEY_GET] =
        "SELECT " SQ_APIKEY_COLS SQ_GEN_COL " FROM (SELECT 1) LEFT JOIN api_keys ON id = ?1",
    [SQ_APIKEY_FIND] =
        "SELECT " SQ_APIKEY_COLS SQ_GEN_COL " FROM (SELECT 1) LEFT JOIN api_keys ON hash = ?1",
    [SQ_APIKEY_LIST] = "SELECT " SQ_APIKEY_COLS SQ_GEN_COL " FROM api_keys ORDER BY created, id",
    [SQ_APIKEY_PURGE] = "DELETE FROM api_keys",
    [SQ_APIKEY_UPDATE] = "UPDATE api_keys SET role = ?2, created = ?4, revoked = ?5, name = ?6, "
                         "mac = ?7 WHERE id = ?1 AND hash = ?3 AND "
                         "(mac IS ?8 OR (?8 IS NULL AND length(mac) IS NOT 32))",
    [SQ_DATA_VERSION] = "PRAGMA data_version",
    [SQ_LEDGER_GET] = "SELECT gen, epoch, n, sum, mac FROM ledger WHERE k = 1",
    [SQ_LEDGER_PUT] = "INSERT INTO ledger (k, gen, epoch, n, sum, mac) VALUES (1, ?1, ?2, ?3, ?4, "
                      "?5) ON CONFLICT (k) DO UPDATE SET gen = ?1, epoch = ?2, n = ?3, sum = ?4, "
                      "mac = ?5",
    [SQ_LEDGER_LOG] = "INSERT OR REPLACE INTO ledger_log (gen, t, id, tag) VALUES (?1, ?2, ?3, ?4)",
    [SQ_LEDGER_PRUNE] = "DELETE FROM ledger_log WHERE gen <= ?1",
    [SQ_LEDGER_GENS] = "SELECT count(DISTINCT gen) FROM ledger_log WHERE gen > ?1 AND gen <= ?2",
    [SQ_CHANGES_LAST] = "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = "
                        "'changes'), 0)",
    [SQ_CHANGES_FROM] = "SELECT seq, rec, id FROM changes WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
    [SQ_ALIAS_FIND] = "SELECT id FROM key_aliases WHERE alias = ?1",
    [SQ_ALIAS_INSERT] = "INSERT INTO key_aliases (alias, id) VALUES (?1, ?2)",
    [SQ_ALIAS_DROP] = "DELETE FROM key_aliases WHERE id = ?1",
    [SQ_LEDGER_CHANGED] = "SELECT gen, t, id, tag FROM ledger_log WHERE gen > ?1 AND gen <= ?2 "
                          "ORDER BY gen",
};

/* Rows of keys per VP: the key limit counts only what a unit's registers open (records under
 * a crypto-shredded master key are nobody's keys). */
#define SQ_VP_TRIGGERS                                                          \
	"CREATE TRIGGER IF NOT EXISTS keys_vp_ins AFTER INSERT ON keys BEGIN"   \
	" INSERT INTO counters (k, n) VALUES ('vp:' || hex(NEW.vp), 1)"         \
	" ON CONFLICT (k) DO UPDATE SET n = n + 1; END;"                        \
	"CREATE TRIGGER IF NOT EXISTS keys_vp_del AFTER DELETE ON keys BEGIN"   \
	" UPDATE counters SET n = n - 1 WHERE k = 'vp:' || hex(OLD.vp);"        \
	" DELETE FROM counters WHERE k = 'vp:' || hex(OLD.vp) AND n <= 0; END;" \
	"CREATE TRIGGER IF NOT EXISTS keys_vp_upd AFTER UPDATE OF vp ON keys"   \
	" WHEN OLD.vp IS NOT NEW.vp BEGIN"                                      \
	" UPDATE counters SET n = n - 1 WHERE k = 'vp:' || hex(OLD.vp);"        \
	" DELETE FROM counters WHERE k = 'vp:' || hex(OLD.vp) AND n <= 0;"      \
	" INSERT INTO counters (k, n) VALUES ('vp:' || hex(NEW.vp), 1)"         \
	" ON CONFLICT (k) DO UPDATE SET n = n + 1; END;"

/* Rows of keys per stored state ('state:<N>'): a count by state reads these, not the table
 * (sq_key_count). A counter that drops to 0 stays. */
#define SQ_STATE_TRIGGERS                                                           \
	"CREATE TRIGGER IF NOT EXISTS keys_state_ins AFTER INSERT ON keys BEGIN"    \
	" INSERT INTO counters (k, n) VALUES ('state:' || NEW.state, 1)"            \
	" ON CONFLICT (k) DO UPDATE SET n = n + 1; END;"                            \
	"CREATE TRIGGER IF NOT EXISTS keys_state_del AFTER DELETE ON keys BEGIN"    \
	" UPDATE counters SET n = n - 1 WHERE k = 'state:' || OLD.state; END;"      \
	"CREATE TRIGGER IF NOT EXISTS keys_state_upd AFTER UPDATE OF state ON keys" \
	" WHEN OLD.state IS NOT NEW.state BEGIN"                                    \
	" UPDATE counters SET n = n - 1 WHERE k = 'state:' || OLD.state;"           \
	" INSERT INTO counters (k, n) VALUES ('state:' || NEW.state, 1)"            \
	" ON CONFLICT (k) DO UPDATE SET n = n + 1; END;"
/* The Active keys with an expiration date, by date: SQ_EXPIRED reads only these. With state
 * in the index, SQ_EXPIRED reads the index alone (SQLite does not take a column the index's
 * WHERE fixes as covered: with (expires) alone it looked up every row in keys, 100 times
 * slower for 20,000 expired keys). Made by sq_upgrade, once keys has its column expires. */
#define SQ_EXPIRING_INDEX                                                                        \
	"CREATE INDEX IF NOT EXISTS keys_expiring ON keys (expires, state) WHERE state = 1 AND " \
	"expires > 0"

/* The change log (ky_store_changes): triggers log every record change, by any program, in
 * its transaction; AUTOINCREMENT keeps seq rising even when every row is pruned; each insert
 * prunes what is older than SQ_CHANGES_KEEP changes. rec: enum ky_store_record. */
#define SQ_CHANGES_KEEP 16384
#define SQ_CHANGE_TRIGGERS(tab, rec, col)                                            \
	"CREATE TRIGGER IF NOT EXISTS " tab "_chg_ins AFTER INSERT ON " tab " BEGIN" \
	" INSERT INTO changes (rec, id) VALUES (" rec ", NEW." col "); END;"         \
	"CREATE TRIGGER IF NOT EXISTS " tab "_chg_upd AFTER UPDATE ON " tab " BEGIN" \
	" INSERT INTO changes (rec, id) VALUES (" rec ", OLD." col ");"              \
	" INSERT INTO changes (rec, id) SELECT " rec ", NEW." col " WHERE NEW." col  \
	" IS NOT OLD." col "; END;"                                                  \
	"CREATE TRIGGER IF NOT EXISTS " tab "_chg_del AFTER DELETE ON " tab " BEGIN" \
	" INSERT INTO changes (rec, id) VALUES (" rec ", OLD." col "); END;"
#define SQ_CHANGES_SCHEMA                                                            \
	"CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT," \
	" rec INTEGER NOT NULL, id TEXT NOT NULL);"                                  \
	"CREATE TRIGGER IF NOT EXISTS changes_prune AFTER INSERT ON changes BEGIN"   \
	" DELETE FROM changes WHERE seq <= NEW.seq - " SQ_STR(                       \
	    SQ_CHANGES_KEEP) "; END;" SQ_CHANGE_TRIGGERS("keys", "0", "id")          \
	    SQ_CHANGE_TRIGGERS("secrets", "1", "name") SQ_CHANGE_TRIGGERS("api_keys", "2", "id")

static const char sq_schema[] =
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY NOT NULL, v TEXT NOT NULL) "
    "WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS counters (k TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL) "
    "WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS keys ("
    " id TEXT PRIMARY KEY NOT NULL, seq INTEGER NOT NULL, rev INTEGER NOT NULL,"
    " name TEXT NOT NULL, state INTEGER NOT NULL, extractable INTEGER NOT NULL,"
    " created INTEGER NOT NULL, updated INTEGER NOT NULL, deleted INTEGER NOT NULL,"
    " version INTEGER NOT NULL, vp BLOB NOT NULL, blob BLOB NOT NULL,"
    " expires INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
    "CREATE UNIQUE INDEX IF NOT EXISTS keys_seq ON keys (seq);"
    "CREATE INDEX IF NOT EXISTS keys_vp ON keys (vp, id);"
    "CREATE TABLE IF NOT EXISTS secrets ("
    " name TEXT PRIMARY KEY NOT NULL, seq INTEGER NOT NULL, rev INTEGER NOT NULL,"
    " created INTEGER NOT NULL, updated INTEGER NOT NULL, vp BLOB NOT NULL,"
    " blob BLOB NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS secrets_vp ON secrets (vp, name);"
    "CREATE TABLE IF NOT EXISTS api_keys ("
    " id TEXT PRIMARY KEY NOT NULL, role TEXT NOT NULL, hash BLOB NOT NULL UNIQUE,"
    " created INTEGER NOT NULL, revoked INTEGER NOT NULL, name TEXT NOT NULL DEFAULT '',"
    " mac BLOB) WITHOUT ROWID;"
    "CREATE TRIGGER IF NOT EXISTS keys_count_ins AFTER INSERT ON keys BEGIN"
    " UPDATE counters SET n = n + 1 WHERE k = 'keys'; END;"
    "CREATE TRIGGER IF NOT EXISTS keys_count_del AFTER DELETE ON keys BEGIN"
    " UPDATE counters SET n = n - 1 WHERE k = 'keys'; END;" SQ_VP_TRIGGERS SQ_STATE_TRIGGERS
    "CREATE TABLE IF NOT EXISTS ledger (k INTEGER PRIMARY KEY CHECK (k = 1),"
    " gen INTEGER NOT NULL, epoch INTEGER NOT NULL, n INTEGER NOT NULL, sum BLOB NOT NULL,"
    " mac BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS ledger_log (gen INTEGER NOT NULL, t INTEGER NOT NULL,"
    " id TEXT NOT NULL, tag BLOB, PRIMARY KEY (gen, t, id)) WITHOUT ROWID;"
    "INSERT OR IGNORE INTO counters (k, n) VALUES ('keys', 0);"
    "CREATE TABLE IF NOT EXISTS key_aliases (alias TEXT PRIMARY KEY NOT NULL,"
    " id TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS key_aliases_id ON key_aliases (id);"
    "INSERT OR IGNORE INTO meta (k, v) VALUES ('schema', '2');" SQ_CHANGES_SCHEMA;

struct sq_store;

#define SQ_LID_MAX 64 /* key ids, secret names and API key ids are shorter */

/* A record written in the open transaction. */
struct sq_touch {
	uint8_t t; /* enum ky_ledger_table */
	char id[SQ_LID_MAX + 1];
};

/* A record as a read saw it, to check against the index. */
struct sq_seen {
	uint8_t t;
	bool present;
	bool stale; /* set by sq_ledger_check */
	bool skip;  /* a row a listing could not read: withheld, not checked */
	char id[SQ_LID_MAX + 1];
	uint8_t tag[KY_LEDGER_TAG_LEN];
};

/* The digest row. */
struct sq_ledger_meta {
	uint64_t gen, epoch, n;
	uint8_t sum[KY_LEDGER_TAG_LEN];
	uint8_t mac[KY_LEDGER_TAG_LEN];
};

/* The storage digest of this handle (see store.h and the head of this file). */
struct sq_ledger {
	pthread_mutex_t mu; /* everything below but gen; taken after wlock, never before */
	bool on;            /* attached: reads are checked, writes update the digest */
	bool broken;        /* the last check failed: the next one reads every record */
	struct ky_ledger_mac mac;
	struct ky_ledger_index ix; /* tags as of gen */
	_Atomic uint64_t gen;
	uint64_t epoch;
};

struct sq_conn {
	sqlite3 *db;
	sqlite3_stmt *st[SQ__COUNT];
	struct sq_store *s;
	struct sq_conn *prev, *next;
	int in_txn;           /* inside ky_store_begin: holds s->wlock */
	int dv_known;         /* data_version read at least once */
	int64_t data_version; /* as last read by ky_store_changed */
	int64_t dv_checked;   /* when, in monotonic ms */
	int gen_known;
	uint64_t gen_seen;        /* the shared commit counter, as last seen */
	struct sq_touch *touched; /* records written by the open write transaction */
	size_t ntouched, ctouched;
	/* SQLite opened the file read-only because it could not be written (a read-only mount,
	 * chattr +i, its mode): writes fail with ro_errno, and sq_conn opens the file again, so
	 * that they work once the cause is removed. */
	int readonly;
	int ro_errno;
	bool quiet; /* the open write transaction is a group commit (sq_changed) */
};

struct sq_store {
	char *path;
	struct ky_store_opts o;
	pthread_key_t tls;
	pthread_mutex_t lock;  /* conns list */
	pthread_mutex_t wlock; /* one writer at a time in this process */
	struct sq_conn *conns;
	struct ky_gc gc;       /* inserts waiting for a group commit */
	bool made;             /* opened: the file is WAL and has its schema */
	_Atomic uint64_t *gen; /* shared commit counter (mmapped), NULL when unavailable */
	/* quiet[v % SQ_QUIET_SLOTS] == v: the bump to v was a group commit of this handle */
	_Atomic uint64_t quiet[SQ_QUIET_SLOTS]; /* slot i starts at i + 1: no value of its */
	_Atomic uint64_t quiet_rows;            /* inserted quietly since the last sq_changes */
	int64_t dv_interval_ms;
	struct sq_ledger L;
};

/* ---- errors ---- */

/* The last SQLite failure on this thread, for ky_store_failure: SQLite's extended result
 * code and the errno of the system call that failed, if one did. */
static _Thread_local struct {
	int rc;
	int sys_errno;
} sq_last;

static int sq_err(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return KY_ERR_STORE_BUSY;
	case SQLITE_CONSTRAINT:
		return KY_ERR_EXISTS;
	case SQLITE_NOMEM:
		return KY_ERR_NOMEM;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return KY_ERR_STORE_DAMAGED;
	case SQLITE_FULL:
		return KY_ERR_STORE_FULL;
	case SQLITE_CANTOPEN:
	case SQLITE_PERM:
	case SQLITE_READONLY:
	case SQLITE_IOERR:
		return KY_ERR_IO;
	default:
		return KY_ERR_STORE;
	}
}

/* A failed SQLite call: remembered for ky_store_failure, never 0. */
static int sq_fail(int rc)
{
	int r = sq_err(rc);

	sq_last.rc = rc;
	sq_last.sys_errno = 0;
	return r != 0 ? r : KY_ERR_STORE;
}

/* ---- connections ---- */

static void sq_conn_close(struct sq_conn *c)
{
	if (c == NULL)
		return;
	for (int i = 0; i < SQ__COUNT; i++)
		sqlite3_finalize(c->st[i]);
	sqlite3_close(c->db);
	free(c->touched);
	free(c);
}

static void sq_unlink(struct sq_store *s, struct sq_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

/* Thread exit: the thread's connection goes with it. */
static void sq_conn_destructor(void *p)
{
	struct sq_conn *c = p;
	struct sq_store *s = c->s;

	if (c->in_txn) {
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
		c->in_txn = 0;
		pthread_mutex_unlock(&s->wlock);
	}
	pthread_mutex_lock(&s->lock);
	sq_unlink(s, c);
	pthread_mutex_unlock(&s->lock);
	sq_conn_close(c);
}

static int sq_conn_open(struct sq_store *s, struct sq_conn **out)
{
	int r = KY_ERR_INTERNAL;
	struct sq_conn *c = NULL;
	sqlite3_stmt *st = NULL;
	int rc;

	*out = NULL;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return KY_ERR_NOMEM;
	c->s = s;
	rc = sqlite3_open_v2(s->path, &c->db,
	                     SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_PRIVATECACHE,
	                     NULL);
	if (rc != SQLITE_OK) {
		r = sq_fail(rc);
		goto out;
	}
	sqlite3_extended_result_codes(c->db, 1);
	if (sqlite3_db_readonly(c->db, "main") == 1) {
		c->readonly = 1;
		c->ro_errno = access(s->path, W_OK) != 0 ? errno : 0;
	}
	sqlite3_busy_timeout(c->db, s->o.busy_timeout_ms);
	/* No writable_schema, no file-level tricks through SQL. */
	sqlite3_db_config(c->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
	sqlite3_db_config(c->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
	/* Setting WAL writes the file when it is not WAL yet: only while the store is being
	 * opened. A connection opened later (a request thread's first) only checks it: on a file
	 * emptied or replaced under the running unit it must refuse, not make a new database
	 * (nor wait for the locks that would take). */
	rc = sqlite3_exec(c->db,
	                  s->made ? "PRAGMA synchronous = FULL;"
	                            "PRAGMA secure_delete = ON; PRAGMA foreign_keys = OFF;"
	                            "PRAGMA cache_size = " SQ_STR(SQ_CACHE_KIB) ";"
	                          : "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
	                            "PRAGMA secure_delete = ON; PRAGMA foreign_keys = OFF;"
	                            "PRAGMA cache_size = " SQ_STR(SQ_CACHE_KIB) ";",
	                  NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		r = sq_fail(rc);
		goto out;
	}
	/* journal_mode answers the mode in force: refuse anything but WAL. */
	if ((rc = sqlite3_prepare_v2(c->db, "PRAGMA journal_mode", -1, &st, NULL)) != SQLITE_OK ||
	    (rc = sqlite3_step(st)) != SQLITE_ROW) {
		r = sq_fail(rc);
		goto out;
	}
	if (sqlite3_stricmp((const char *)sqlite3_column_text(st, 0), "wal") != 0) {
		struct stat sb;
		/* Emptied under the running unit (no header left): not a database any more. */
		r = s->made && stat(s->path, &sb) == 0 && sb.st_size < 100 ? sq_fail(SQLITE_NOTADB)
		                                                           : KY_ERR_STORE;
		goto out;
	}
	*out = c;
	c = NULL; /* transferred */
	r = 0;
out:
	sqlite3_finalize(st);
	sq_conn_close(c);
	return r;
}

/* True when no statement of c is in the middle of a read. */
static bool sq_conn_idle(struct sq_conn *c)
{
	for (sqlite3_stmt *st = sqlite3_next_stmt(c->db, NULL); st != NULL;
	     st = sqlite3_next_stmt(c->db, st))
		if (sqlite3_stmt_busy(st))
			return false;
	return true;
}

/* The calling thread's connection, opened on first use. */
static int sq_conn(struct sq_store *s, struct sq_conn **out)
{
	struct sq_conn *c = pthread_getspecific(s->tls);
	int r;

	if (c != NULL && (!c->readonly || c->in_txn || !sq_conn_idle(c))) {
		*out = c;
		return 0;
	}
	if (c != NULL) {
		/* Opened read-only: the file may be writable again. */
		(void)pthread_setspecific(s->tls, NULL);
		pthread_mutex_lock(&s->lock);
		sq_unlink(s, c);
		pthread_mutex_unlock(&s->lock);
		sq_conn_close(c);
		c = NULL;
	}
	if ((r = sq_conn_open(s, &c)) != 0)
		return r;
	if (pthread_setspecific(s->tls, c) != 0) {
		sq_conn_close(c);
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

/* Prepared statement i of c, reset and with no bindings. */
static int sq_stmt(struct sq_conn *c, enum sq_stmt i, sqlite3_stmt **out)
{
	int rc;

	if (c->st[i] == NULL) {
		rc = sqlite3_prepare_v3(c->db, sq_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &c->st[i],
		                        NULL);
		if (rc != SQLITE_OK)
			return sq_fail(rc);
	}
	*out = c->st[i];
	return 0;
}

static void sq_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* Runs a statement that returns no row. */
static int sq_exec(struct sq_conn *c, enum sq_stmt i)
{
	sqlite3_stmt *st;
	int r, rc;

	if ((r = sq_stmt(c, i, &st)) != 0)
		return r;
	if ((rc = sqlite3_step(st)) == SQLITE_DONE) {
		sq_done(st);
		return 0;
	}
	r = sq_fail(rc);
	sq_last.sys_errno = sqlite3_system_errno(c->db); /* before the reset clears it */
	sq_done(st);
	return r;
}

/* ---- write transactions ---- */

static int sq_run(struct sq_conn *c, const char *q);
static int sq_ledger_sync(struct sq_conn *c);
static int sq_ledger_prepare(struct sq_conn *c, struct sq_seen **tags, size_t *ntags,
                             struct sq_ledger_meta *m);
static void sq_ledger_apply(struct sq_conn *c, const struct sq_seen *v, size_t n,
                            const struct sq_ledger_meta *m);
static int sq_ledger_unattached_write(struct sq_conn *c);

/* Opens a write transaction unless the thread is inside ky_store_begin already. An attached
 * handle brings its digest index up to date inside it. */
static int sq_wbegin(struct sq_conn *c, int *opened)
{
	struct sq_ledger *L = &c->s->L;
	int r;

	*opened = 0;
	if (c->in_txn)
		return 0;
	if (c->readonly) {
		sq_last.rc = SQLITE_READONLY;
		sq_last.sys_errno = c->ro_errno;
		return KY_ERR_IO;
	}
	pthread_mutex_lock(&c->s->wlock);
	if ((r = sq_exec(c, SQ_BEGIN)) != 0) {
		pthread_mutex_unlock(&c->s->wlock);
		return r;
	}
	c->ntouched = 0;
	if (L->on) {
		pthread_mutex_lock(&L->mu);
		r = sq_ledger_sync(c);
		pthread_mutex_unlock(&L->mu);
		if (r != 0) {
			(void)sq_exec(c, SQ_ROLLBACK);
			pthread_mutex_unlock(&c->s->wlock);
			return r;
		}
	}
	*opened = 1;
	return 0;
}

/* Ends what sq_wbegin opened: commit when r is 0, else roll back. Returns the final result. */
static int sq_wend(struct sq_conn *c, int opened, int r)
{
	struct sq_seen *tags = NULL;
	size_t ntags = 0;
	struct sq_ledger_meta m;
	bool ledger = false;

	if (!opened)
		return r;
	if (r == 0 && c->ntouched > 0) {
		if (!c->s->L.on) {
			r = sq_ledger_unattached_write(c);
		} else if ((r = sq_ledger_prepare(c, &tags, &ntags, &m)) == 0) {
			ledger = true;
		}
	}
	if (r == 0 && (r = sq_exec(c, SQ_COMMIT)) == 0) {
		if (ledger)
			sq_ledger_apply(c, tags, ntags, &m);
		if (c->s->gen != NULL) {
			uint64_t v =
			    atomic_fetch_add_explicit(c->s->gen, 1, memory_order_acq_rel) + 1;

			if (c->quiet)
				atomic_store_explicit(&c->s->quiet[v % SQ_QUIET_SLOTS], v,
				                      memory_order_release);
		}
		goto out;
	}
	if (!sqlite3_get_autocommit(c->db))
		(void)sq_exec(c, SQ_ROLLBACK);
out:
	c->ntouched = 0;
	c->quiet = false;
	free(tags);
	pthread_mutex_unlock(&c->s->wlock);
	return r;
}

static int sq_begin(void *be)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	int r, opened;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if (c->in_txn)
		return KY_ERR_USAGE;
	if ((r = sq_wbegin(c, &opened)) != 0)
		return r;
	c->in_txn = 1;
	return 0;
}

static int sq_commit(void *be)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	int r;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if (!c->in_txn)
		return KY_ERR_USAGE;
	c->in_txn = 0;
	return sq_wend(c, 1, 0);
}

static int sq_rollback(void *be)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	int r;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if (!c->in_txn)
		return 0;
	c->in_txn = 0;
	return sq_wend(c, 1, KY_ERR_CANCELLED) == KY_ERR_CANCELLED ? 0 : KY_ERR_STORE;
}

/* ---- column helpers ---- */

static int sq_col_text(sqlite3_stmt *st, int i, char *out, size_t cap, int exact)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	int n = sqlite3_column_bytes(st, i);

	if (t == NULL || n < 0 || (size_t)n >= cap || (exact && (size_t)n != cap - 1))
		return KY_ERR_RECORD_TAMPERED;
	memcpy(out, t, (size_t)n);
	out[n] = '\0';
	return 0;
}

static int sq_col_fixed(sqlite3_stmt *st, int i, uint8_t *out, size_t n)
{
	const void *p = sqlite3_column_blob(st, i);

	if (p == NULL || (size_t)sqlite3_column_bytes(st, i) != n)
		return KY_ERR_RECORD_TAMPERED;
	memcpy(out, p, n);
	return 0;
}

static int sq_col_blob(sqlite3_stmt *st, int i, uint8_t **out, size_t *n)
{
	const void *p = sqlite3_column_blob(st, i);
	int len = sqlite3_column_bytes(st, i);

	*out = NULL;
	*n = 0;
	if (p == NULL || len <= 0)
		return KY_ERR_RECORD_TAMPERED;
	if ((*out = malloc((size_t)len)) == NULL)
		return KY_ERR_NOMEM;
	memcpy(*out, p, (size_t)len);
	*n = (size_t)len;
	return 0;
}

static int sq_bind_text(sqlite3_stmt *st, int i, const char *s)
{
	return sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

/* ---- storage digest ----
 *
 * Reads: every read statement returns the digest's generation as its last column, from the
 * same snapshot as the rows. The rows' tags are checked against the index when the index is
 * at that generation; when the store is ahead the index is brought up to date first (sync);
 * when the index moved on meanwhile (another thread synced or committed) the read is made
 * again (SQ_AGAIN); a generation below what the index had before the read began is a rollback.
 * Rows this thread's open transaction wrote are not checked (they are not committed yet).
 *
 * Writes: sq_wbegin syncs the index inside the write transaction (the write lock keeps every
 * other writer out until commit); each write records which records it touched; sq_wend, before
 * COMMIT, reads those rows back, tags them, writes the new digest (generation + 1) and one
 * ledger_log row per record, and after COMMIT applies the new tags to the index unless a sync
 * already took the index past it.
 *
 * Sync: the digest row is read and its MAC checked; the records that ledger_log names for the
 * generations in between are read and tagged again; count and sum must then equal the
 * digest's. When the log does not cover every generation in between, or the sum does not
 * match, every record is read (rescan): a mismatch then is KY_ERR_LEDGER_MISMATCH. */

#define SQ_AGAIN (-1)
#define SQ_TRIES 16

static const char *const sq_ledger_scan[] = {
    [KY_LEDGER_KEYS] = "SELECT " SQ_KEY_COLS " FROM keys",
    [KY_LEDGER_SECRETS] = "SELECT " SQ_SECRET_COLS " FROM secrets WHERE name != ?1",
    [KY_LEDGER_APIKEYS] = "SELECT " SQ_APIKEY_COLS " FROM api_keys",
};
static const int sq_ledger_ncols[] = {
    [KY_LEDGER_KEYS] = SQ_KEY_NCOLS,
    [KY_LEDGER_SECRETS] = SQ_SECRET_NCOLS,
    [KY_LEDGER_APIKEYS] = SQ_APIKEY_NCOLS,
};
static const enum sq_stmt sq_ledger_get[] = {
    [KY_LEDGER_KEYS] = SQ_KEY_GET,
    [KY_LEDGER_SECRETS] = SQ_SECRET_GET,
    [KY_LEDGER_APIKEYS] = SQ_APIKEY_GET,
};

static bool sq_ledger_exempt(uint8_t t, const char *id)
{
	return t == KY_LEDGER_SECRETS && strcmp(id, KY_STORE_LEDGER_SECRET) == 0;
}

/* The tag of the row at the cursor, columns first .. first + ncols - 1 (column first is the
 * record's id). *present = 0 when the id column is NULL (a LEFT JOIN that found nothing). */
static int sq_ledger_row(const struct sq_ledger *L, sqlite3_stmt *st, uint8_t t, int first,
                         struct sq_seen *out)
{
	struct ky_ledger_field f[SQ_KEY_NCOLS];
	int n = sq_ledger_ncols[t];
	const unsigned char *id = sqlite3_column_text(st, first);

	out->t = t;
	out->present = false;
	out->skip = false;
	if (id == NULL)
		return 0;
	if ((size_t)sqlite3_column_bytes(st, first) > SQ_LID_MAX)
		return KY_ERR_RECORD_STALE;
	snprintf(out->id, sizeof(out->id), "%s", (const char *)id);
	out->present = true;
	for (int i = 0; i < n; i++) {
		int col = first + i;
		f[i].kind = sqlite3_column_type(st, col);
		f[i].i = 0;
		f[i].p = NULL;
		f[i].len = 0;
		if (f[i].kind == SQLITE_INTEGER) {
			f[i].i = sqlite3_column_int64(st, col);
		} else if (f[i].kind == SQLITE_TEXT) {
			f[i].p = sqlite3_column_text(st, col);
			f[i].len = (size_t)sqlite3_column_bytes(st, col);
		} else if (f[i].kind == SQLITE_BLOB) {
			f[i].p = sqlite3_column_blob(st, col);
			f[i].len = (size_t)sqlite3_column_bytes(st, col);
		} else if (f[i].kind == SQLITE_FLOAT) {
			return KY_ERR_RECORD_STALE; /* never written by kyok */
		}
	}
	return ky_ledger_tag(&L->mac, t, out->id, f, (size_t)n, out->tag);
}

/* Reads record (t, id) now and tags it. */
static int sq_ledger_read(struct sq_conn *c, uint8_t t, const char *id, struct sq_seen *out)
{
	sqlite3_stmt *st;
	int r, rc;

	if ((r = sq_stmt(c, sq_ledger_get[t], &st)) != 0)
		return r;
	sq_bind_text(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		r = sq_ledger_row(&c->s->L, st, t, 0, out);
	else
		r = sq_fail(rc);
	sq_done(st);
	return r;
}

/* The digest row: KY_ERR_NOT_FOUND when there is none; its MAC is not checked here. */
static int sq_ledger_meta_read(struct sq_conn *c, struct sq_ledger_meta *m)
{
	sqlite3_stmt *st;
	int r, rc;

	if ((r = sq_stmt(c, SQ_LEDGER_GET, &st)) != 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		m->gen = (uint64_t)sqlite3_column_int64(st, 0);
		m->epoch = (uint64_t)sqlite3_column_int64(st, 1);
		m->n = (uint64_t)sqlite3_column_int64(st, 2);
		r = sq_col_fixed(st, 3, m->sum, KY_LEDGER_TAG_LEN) == 0 &&
		            sq_col_fixed(st, 4, m->mac, KY_LEDGER_TAG_LEN) == 0
		        ? 0
		        : KY_ERR_LEDGER_TAMPERED;
	} else {
		r = rc == SQLITE_DONE ? KY_ERR_NOT_FOUND : sq_fail(rc);
	}
	sq_done(st);
	return r;
}

static int sq_ledger_meta_check(struct sq_conn *c, const struct sq_ledger_meta *m)
{
	uint8_t want[KY_LEDGER_TAG_LEN];
	int r;

	if ((r = ky_ledger_meta_mac(&c->s->L.mac, c->s->o.instance, m->gen, m->epoch, m->n, m->sum,
	                            want)) != 0)
		return r;
	return CRYPTO_memcmp(want, m->mac, KY_LEDGER_TAG_LEN) == 0 ? 0 : KY_ERR_LEDGER_TAMPERED;
}

static int sq_ledger_meta_write(struct sq_conn *c, struct sq_ledger_meta *m)
{
	sqlite3_stmt *st;
	int r, rc;

	if ((r = ky_ledger_meta_mac(&c->s->L.mac, c->s->o.instance, m->gen, m->epoch, m->n, m->sum,
	                            m->mac)) != 0)
		return r;
	if ((r = sq_stmt(c, SQ_LEDGER_PUT, &st)) != 0)
		return r;
	sqlite3_bind_int64(st, 1, (int64_t)m->gen);
	sqlite3_bind_int64(st, 2, (int64_t)m->epoch);
	sqlite3_bind_int64(st, 3, (int64_t)m->n);
	sqlite3_bind_blob(st, 4, m->sum, KY_LEDGER_TAG_LEN, SQLITE_STATIC);
	sqlite3_bind_blob(st, 5, m->mac, KY_LEDGER_TAG_LEN, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sq_done(st);
	return rc == SQLITE_DONE ? 0 : sq_fail(rc);
}

/* Every record, tagged, into ix (initialised here), as of generation gen. */
static int sq_ledger_rescan(struct sq_conn *c, struct ky_ledger_index *ix, uint64_t gen)
{
	int r = KY_ERR_INTERNAL, rc = SQLITE_OK;
	sqlite3_stmt *st = NULL;
	struct sq_seen seen;

	if ((r = ky_ledger_index_init(ix)) != 0)
		return r;
	for (uint8_t t = KY_LEDGER_KEYS; t <= KY_LEDGER_APIKEYS; t++) {
		if ((rc = sqlite3_prepare_v2(c->db, sq_ledger_scan[t], -1, &st, NULL)) !=
		    SQLITE_OK) {
			r = sq_fail(rc);
			goto out;
		}
		if (t == KY_LEDGER_SECRETS)
			sq_bind_text(st, 1, KY_STORE_LEDGER_SECRET);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			if ((r = sq_ledger_row(&c->s->L, st, t, 0, &seen)) != 0 ||
			    (r = ky_ledger_index_set(ix, t, seen.id, seen.tag, gen)) != 0)
				goto out;
		}
		if (rc != SQLITE_DONE) {
			r = sq_fail(rc);
			goto out;
		}
		sqlite3_finalize(st);
		st = NULL;
	}
	r = 0;
out:
	sqlite3_finalize(st);
	if (r != 0)
		ky_ledger_index_release(ix);
	return r;
}

static bool sq_ledger_matches(const struct ky_ledger_index *ix, const struct sq_ledger_meta *m)
{
	return ix->n == m->n && CRYPTO_memcmp(ix->sum, m->sum, KY_LEDGER_TAG_LEN) == 0;
}

/* Brings the index to the digest's generation through ledger_log (the tags as their writers
 * gave them, not the rows as they are now: a row altered since is then found stale when read);
 * 1 in *ok when count and sum then match. Caller holds L->mu and a read snapshot. */
static int sq_ledger_apply_log(struct sq_conn *c, const struct sq_ledger_meta *m, int *ok)
{
	struct sq_ledger *L = &c->s->L;
	uint64_t from = atomic_load(&L->gen);
	sqlite3_stmt *st;
	uint8_t pad[KY_LEDGER_TAG_LEN], tag[KY_LEDGER_TAG_LEN];
	int r, rc;
	int64_t gens = -1;

	*ok = 0;
	if ((r = sq_stmt(c, SQ_LEDGER_GENS, &st)) != 0)
		return r;
	sqlite3_bind_int64(st, 1, (int64_t)from);
	sqlite3_bind_int64(st, 2, (int64_t)m->gen);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW)
		gens = sqlite3_column_int64(st, 0);
	sq_done(st);
	if (gens < 0)
		return sq_fail(rc);
	if ((uint64_t)gens != m->gen - from)
		return 0; /* not every generation is logged: rescan */
	if ((r = sq_stmt(c, SQ_LEDGER_CHANGED, &st)) != 0)
		return r;
	sqlite3_bind_int64(st, 1, (int64_t)from);
	sqlite3_bind_int64(st, 2, (int64_t)m->gen);
	L->broken = true; /* until the whole log is applied */
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		uint64_t g = (uint64_t)sqlite3_column_int64(st, 0);
		int t = sqlite3_column_int(st, 1);
		const unsigned char *id = sqlite3_column_text(st, 2);
		bool deleted = sqlite3_column_type(st, 3) == SQLITE_NULL;

		if (id == NULL || t < KY_LEDGER_KEYS || t > KY_LEDGER_APIKEYS ||
		    sqlite3_column_bytes(st, 2) > SQ_LID_MAX ||
		    (!deleted && sq_col_fixed(st, 3, tag, KY_LEDGER_TAG_LEN) != 0)) {
			sq_done(st);
			return 0; /* a log row kyok did not write: rescan */
		}
		if (!deleted) {
			if ((r = ky_ledger_log_pad(&L->mac, g, (uint8_t)t, (const char *)id,
			                           pad)) != 0) {
				sq_done(st);
				return r;
			}
			for (size_t i = 0; i < KY_LEDGER_TAG_LEN; i++)
				tag[i] ^= pad[i];
		}
		if ((r = ky_ledger_index_set(&L->ix, (uint8_t)t, (const char *)id,
		                             deleted ? NULL : tag, g)) != 0) {
			sq_done(st);
			return r;
		}
	}
	sq_done(st);
	if (rc != SQLITE_DONE)
		return sq_fail(rc);
	L->broken = false;
	*ok = sq_ledger_matches(&L->ix, m);
	return 0;
}

/* Brings the index up to the digest, checking it. Caller holds L->mu. Inside a write
 * transaction it reads in it, else in a read transaction of its own. */
static int sq_ledger_sync(struct sq_conn *c)
{
	struct sq_ledger *L = &c->s->L;
	struct sq_ledger_meta m;
	struct ky_ledger_index fresh = {0};
	int r = KY_ERR_INTERNAL, own = sqlite3_get_autocommit(c->db), ok = 0;

	if (own && (r = sq_run(c, "BEGIN")) != 0)
		return r;
	if ((r = sq_ledger_meta_read(c, &m)) != 0) {
		r = r == KY_ERR_NOT_FOUND ? KY_ERR_STORAGE_MISSING : r;
		goto out;
	}
	if ((r = sq_ledger_meta_check(c, &m)) != 0)
		goto out;
	if (m.epoch != L->epoch || m.gen < atomic_load(&L->gen)) {
		r = KY_ERR_STORAGE_ROLLBACK;
		goto out;
	}
	if (m.gen == atomic_load(&L->gen) && !L->broken) {
		r = 0;
		goto out;
	}
	if (!L->broken && (r = sq_ledger_apply_log(c, &m, &ok)) != 0)
		goto out;
	if (!ok) {
		if ((r = sq_ledger_rescan(c, &fresh, m.gen)) != 0)
			goto out;
		if (!sq_ledger_matches(&fresh, &m)) {
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
		(void)sq_run(c, "COMMIT"); /* read only */
	ky_ledger_index_release(&fresh);
	return r;
}

static bool sq_touched(const struct sq_conn *c, uint8_t t, const char *id)
{
	for (size_t i = 0; i < c->ntouched; i++)
		if (c->touched[i].t == t && strcmp(c->touched[i].id, id) == 0)
			return true;
	return false;
}

/* Checks rows read at generation gen (gen_null: no digest row) by a read that began when the
 * index was at g0: rows[i].stale is set for a row that is not what the digest holds. 0,
 * SQ_AGAIN (read again) or the refusal. The statement must be reset. */
static int sq_ledger_check(struct sq_conn *c, uint64_t g0, bool gen_null, uint64_t gen,
                           struct sq_seen *rows, size_t n)
{
	struct sq_ledger *L = &c->s->L;
	int r = KY_ERR_INTERNAL;

	if (!L->on)
		return 0;
	if (gen_null)
		return KY_ERR_STORAGE_MISSING;
	if (gen < g0)
		return KY_ERR_STORAGE_ROLLBACK;
	pthread_mutex_lock(&L->mu);
	if (gen > atomic_load(&L->gen) || L->broken) {
		if ((r = sq_ledger_sync(c)) != 0)
			goto out;
	}
	/* The index moved past the read's snapshot (a commit since): a record it has not seen
	 * change since that snapshot is checked all the same, any other is read again. */
	if (gen > atomic_load(&L->gen)) {
		r = SQ_AGAIN;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const struct ky_ledger_entry *e;
		if (rows[i].skip || sq_ledger_exempt(rows[i].t, rows[i].id) ||
		    (c->ntouched > 0 && sq_touched(c, rows[i].t, rows[i].id)))
			continue;
		e = ky_ledger_index_find(&L->ix, rows[i].t, rows[i].id);
		if (gen != atomic_load(&L->gen) && (e != NULL ? e->gen > gen : rows[i].present)) {
			r = SQ_AGAIN;
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

/* Notes that the open write transaction wrote record (t, id). */
static int sq_touch(struct sq_conn *c, uint8_t t, const char *id)
{
	struct sq_touch *nv;

	if (sq_ledger_exempt(t, id))
		return 0;
	if (strlen(id) > SQ_LID_MAX)
		return KY_ERR_USAGE;
	if (c->ntouched == c->ctouched) {
		size_t cap = c->ctouched ? 2 * c->ctouched : 8;
		if ((nv = realloc(c->touched, cap * sizeof(*nv))) == NULL)
			return KY_ERR_NOMEM;
		c->touched = nv;
		c->ctouched = cap;
	}
	c->touched[c->ntouched].t = t;
	snprintf(c->touched[c->ntouched].id, sizeof(c->touched[c->ntouched].id), "%s", id);
	c->ntouched++;
	return 0;
}

static int sq_touch_cmp(const void *a, const void *b)
{
	const struct sq_touch *x = a, *y = b;

	if (x->t != y->t)
		return x->t < y->t ? -1 : 1;
	return strcmp(x->id, y->id);
}

/* Before COMMIT: the new digest and log rows, in the transaction. The new tags go to *tags
 * (one per distinct touched record, in c->touched order after sorting; present = 0 for a
 * deleted record) and *m is the new digest. */
static int sq_ledger_prepare(struct sq_conn *c, struct sq_seen **tags, size_t *ntags,
                             struct sq_ledger_meta *m)
{
	struct sq_ledger *L = &c->s->L;
	struct sq_seen *v = NULL;
	struct sq_ledger_meta cur;
	size_t n = 0;
	sqlite3_stmt *st;
	int r = KY_ERR_INTERNAL, rc;

	*tags = NULL;
	*ntags = 0;
	qsort(c->touched, c->ntouched, sizeof(*c->touched), sq_touch_cmp);
	if ((v = calloc(c->ntouched, sizeof(*v))) == NULL)
		return KY_ERR_NOMEM;
	pthread_mutex_lock(&L->mu);
	if ((r = sq_ledger_meta_read(c, &cur)) != 0) {
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
		if (i > 0 && sq_touch_cmp(&c->touched[i - 1], &c->touched[i]) == 0)
			continue;
		if ((r = sq_ledger_read(c, c->touched[i].t, c->touched[i].id, &v[n])) != 0)
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
	if ((r = sq_ledger_meta_write(c, m)) != 0)
		goto out;
	if ((r = sq_stmt(c, SQ_LEDGER_LOG, &st)) != 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		uint8_t hidden[KY_LEDGER_TAG_LEN];
		if (v[i].present) {
			if ((r = ky_ledger_log_pad(&L->mac, m->gen, v[i].t, v[i].id, hidden)) != 0)
				goto out;
			for (size_t j = 0; j < KY_LEDGER_TAG_LEN; j++)
				hidden[j] ^= v[i].tag[j];
		}
		sqlite3_bind_int64(st, 1, (int64_t)m->gen);
		sqlite3_bind_int(st, 2, v[i].t);
		sq_bind_text(st, 3, v[i].id);
		if (v[i].present)
			sqlite3_bind_blob(st, 4, hidden, KY_LEDGER_TAG_LEN, SQLITE_TRANSIENT);
		else
			sqlite3_bind_null(st, 4);
		rc = sqlite3_step(st);
		sq_done(st);
		if (rc != SQLITE_DONE) {
			r = sq_fail(rc);
			goto out;
		}
	}
	if (m->gen > SQ_LOG_KEEP) {
		if ((r = sq_stmt(c, SQ_LEDGER_PRUNE, &st)) != 0)
			goto out;
		sqlite3_bind_int64(st, 1, (int64_t)(m->gen - SQ_LOG_KEEP));
		rc = sqlite3_step(st);
		sq_done(st);
		if (rc != SQLITE_DONE) {
			r = sq_fail(rc);
			goto out;
		}
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

/* After COMMIT: the index takes the new tags, unless a sync already took it further. */
static void sq_ledger_apply(struct sq_conn *c, const struct sq_seen *v, size_t n,
                            const struct sq_ledger_meta *m)
{
	struct sq_ledger *L = &c->s->L;
	int r = 0;

	pthread_mutex_lock(&L->mu);
	if (atomic_load(&L->gen) + 1 == m->gen) {
		for (size_t i = 0; r == 0 && i < n; i++)
			r = ky_ledger_index_set(&L->ix, v[i].t, v[i].id,
			                        v[i].present ? v[i].tag : NULL, m->gen);
		if (r != 0)
			L->broken = true; /* out of memory: the next check reads everything */
		atomic_store(&L->gen, m->gen);
	}
	pthread_mutex_unlock(&L->mu);
}

/* A write to a store that has a digest, by a handle that is not attached. */
static int sq_ledger_unattached_write(struct sq_conn *c)
{
	struct sq_ledger_meta m;
	int r = sq_ledger_meta_read(c, &m);

	if (r == KY_ERR_NOT_FOUND)
		return 0;
	return r == 0 ? KY_ERR_LEDGER_KEY : r;
}

/* Row of SQ_KEY_COLS at the cursor. */
static int sq_read_key(sqlite3_stmt *st, struct ky_store_row *row)
{
	int r;

	memset(row, 0, sizeof(*row));
	if ((r = sq_col_text(st, 0, row->id, sizeof(row->id), 1)) != 0 ||
	    (r = sq_col_text(st, 3, row->name, sizeof(row->name), 0)) != 0 ||
	    (r = sq_col_fixed(st, 10, row->vp, KY_VP_LEN)) != 0)
		return r;
	row->seq = sqlite3_column_int64(st, 1);
	row->rev = sqlite3_column_int64(st, 2);
	row->state = sqlite3_column_int(st, 4);
	row->extractable = sqlite3_column_int(st, 5);
	row->created = sqlite3_column_int64(st, 6);
	row->updated = sqlite3_column_int64(st, 7);
	row->deleted = sqlite3_column_int64(st, 8);
	row->version = (uint32_t)sqlite3_column_int64(st, 9);
	row->expires = sqlite3_column_int64(st, 12);
	return sq_col_blob(st, 11, &row->blob, &row->bloblen);
}

/* A listing's row that sq_read_key refused or whose digest tag cannot be made (fault): the
 * row keeps only its id column, for the log, cut to fit with "..." when longer. */
static void sq_key_fault(sqlite3_stmt *st, struct ky_store_row *row, int fault)
{
	const unsigned char *id = sqlite3_column_text(st, 0);
	size_t n = id != NULL ? (size_t)sqlite3_column_bytes(st, 0) : 0;

	ky_store_row_release(row);
	memset(row, 0, sizeof(*row));
	row->fault = fault;
	if (id == NULL)
		snprintf(row->id, sizeof(row->id), "?");
	else if (n < sizeof(row->id))
		memcpy(row->id, id, n + 1);
	else
		snprintf(row->id, sizeof(row->id), "%.*s...", (int)sizeof(row->id) - 4,
		         (const char *)id);
}

/* ---- keys ---- */

/* The alias index in SQL (lib/store/alias.h has its rules). conn: a struct sq_conn. */
static int sq_alias_owner(void *conn, const char *alias, char id[KY_UUID_LEN + 1])
{
	struct sq_conn *c = conn;
	sqlite3_stmt *st;
	int r, rc;

	if ((r = sq_stmt(c, SQ_ALIAS_FIND, &st)) != 0)
		return r;
	sq_bind_text(st, 1, alias);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		r = sq_col_text(st, 0, id, KY_UUID_LEN + 1, 1);
	else
		r = rc == SQLITE_DONE ? KY_ERR_NOT_FOUND : sq_fail(rc);
	sq_done(st);
	return r;
}

static int sq_alias_drop(void *conn, const char *id)
{
	struct sq_conn *c = conn;
	sqlite3_stmt *st;
	int r, rc;

	if ((r = sq_stmt(c, SQ_ALIAS_DROP, &st)) != 0)
		return r;
	sq_bind_text(st, 1, id);
	rc = sqlite3_step(st);
	sq_done(st);
	return rc == SQLITE_DONE ? 0 : sq_fail(rc);
}

static int sq_alias_insert(void *conn, const char *alias, const char *id)
{
	struct sq_conn *c = conn;
	sqlite3_stmt *st;
	int r, rc;

	if ((r = sq_stmt(c, SQ_ALIAS_INSERT, &st)) != 0)
		return r;
	sq_bind_text(st, 1, alias);
	sq_bind_text(st, 2, id);
	rc = sqlite3_step(st);
	sq_done(st);
	if ((rc & 0xff) == SQLITE_CONSTRAINT)
		return KY_ERR_EXISTS;
	return rc == SQLITE_DONE ? 0 : sq_fail(rc);
}

static const struct ky_alias_index_ops sq_alias_ops = {
    .owner = sq_alias_owner, .drop = sq_alias_drop, .insert = sq_alias_insert};

static int sq_alias_find(void *be, const char *alias, char id[KY_UUID_LEN + 1])
{
	struct sq_conn *c;
	int r;

	if ((r = sq_conn(be, &c)) != 0)
		return r;
	return sq_alias_owner(c, alias, id);
}

/* Limit check (records under the row's VP and limit_vp) and insert, inside the caller's write
 * transaction. */
static int sq_key_insert_one(struct sq_conn *c, struct ky_store_row *row)
{
	sqlite3_stmt *st;
	int r, rc;
	int64_t total;

	if ((r = sq_stmt(c, SQ_KEY_UNDER, &st)) != 0)
		return r;
	sqlite3_bind_blob(st, 1, row->vp, KY_VP_LEN, SQLITE_STATIC);
	if (row->limit_vp != NULL)
		sqlite3_bind_blob(st, 2, row->limit_vp, KY_VP_LEN, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 2);
	rc = sqlite3_step(st);
	total = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	sq_done(st);
	if (total < 0)
		return rc == SQLITE_ROW || rc == SQLITE_DONE ? KY_ERR_STORE : sq_fail(rc);
	if ((uint64_t)total >= c->s->o.key_limit)
		return KY_ERR_KEY_LIMIT;
	if ((r = ky_alias_index_check(&sq_alias_ops, c, row)) != 0)
		return r;

	if ((r = sq_stmt(c, SQ_KEY_INSERT, &st)) != 0)
		return r;
	sq_bind_text(st, 1, row->id);
	sq_bind_text(st, 2, row->name);
	sqlite3_bind_int(st, 3, row->state);
	sqlite3_bind_int(st, 4, row->extractable ? 1 : 0);
	sqlite3_bind_int64(st, 5, row->created);
	sqlite3_bind_int64(st, 6, row->updated);
	sqlite3_bind_int64(st, 7, row->deleted);
	sqlite3_bind_int64(st, 8, row->version);
	sqlite3_bind_blob(st, 9, row->vp, KY_VP_LEN, SQLITE_STATIC);
	sqlite3_bind_blob(st, 10, row->blob, (int)row->bloblen, SQLITE_STATIC);
	sqlite3_bind_int64(st, 11, row->expires);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		row->seq = sqlite3_column_int64(st, 0);
		row->rev = 1;
		rc = sqlite3_step(st);
	}
	sq_done(st);
	if (rc != SQLITE_DONE)
		return sq_fail(rc);
	if (row->naliases > 0 && (r = ky_alias_index_write(&sq_alias_ops, c, row->id, row)) != 0)
		return r;
	return sq_touch(c, KY_LEDGER_KEYS, row->id);
}

/* A group commit (ky_gc_lead_fn, on the committer's thread): all queued rows in one
 * transaction. A failure's SQLite result and errno go to each row's note, for its thread's
 * ky_store_failure. */
static void sq_key_insert_batch(void *ctx, struct ky_gc_req *batch)
{
	struct sq_store *s = ctx;
	struct sq_conn *c;
	struct ky_gc_req *q;
	uint64_t rows = 0;
	int r, opened;

	/* The committer's own connection: its page cache outlives each batch (another thread's
	 * connection finds its cache stale after every commit and reads the pages again). */
	if ((r = sq_conn(ctx, &c)) != 0 || (r = sq_wbegin(c, &opened)) != 0)
		goto fail;
	for (q = batch; q != NULL; q = q->next) {
		q->r = sq_key_insert_one(c, q->row);
		if (q->r != 0 && !ky_gc_row_refused(q->r)) {
			r = q->r;
			(void)sq_wend(c, opened, r);
			goto fail;
		}
		rows += q->r == 0;
	}
	/* only key rows that did not exist: see sq_changed */
	c->quiet = opened && atomic_fetch_add(&s->quiet_rows, rows) + rows <= KY_STORE_QUIET_ROWS;
	if ((r = sq_wend(c, opened, 0)) != 0)
		goto fail;
	return; /* a refused row (id or alias taken, key limit) has no failure to tell of */
fail:
	for (q = batch; q != NULL; q = q->next) {
		q->r = r;
		q->note[0] = sq_last.rc;
		q->note[1] = sq_last.sys_errno;
	}
}

static int sq_key_insert(void *be, struct ky_store_row *row)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	int r, opened, note[2];

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if (c->in_txn || s->o.no_group_commit) {
		if ((r = sq_wbegin(c, &opened)) != 0)
			return r;
		r = sq_key_insert_one(c, row);
		return sq_wend(c, opened, r);
	}
	/* On the committer's thread: a failure's details come back in note. */
	if ((r = ky_gc_insert(&s->gc, row, sq_key_insert_batch, s, note)) != 0) {
		sq_last.rc = note[0];
		sq_last.sys_errno = note[1];
	}
	return r;
}

/* After a CAS statement changed nothing: was the row changed or is it gone? */
static int sq_miss(struct sq_conn *c, enum sq_stmt i, const char *name)
{
	sqlite3_stmt *st;
	int r, rc;

	if ((r = sq_stmt(c, i, &st)) != 0)
		return r;
	sq_bind_text(st, 1, name);
	rc = sqlite3_step(st);
	sq_done(st);
	if (rc == SQLITE_ROW)
		return KY_ERR_CONFLICT;
	if (rc == SQLITE_DONE)
		return KY_ERR_NOT_FOUND;
	return sq_fail(rc);
}

static int sq_key_update(void *be, struct ky_store_row *row)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st;
	int r, rc, opened = 0, hit = 0;
	int64_t seq = 0, rev = 0;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if ((r = sq_wbegin(c, &opened)) != 0)
		return r;
	if ((r = ky_alias_index_check(&sq_alias_ops, c, row)) != 0)
		goto out;
	if ((r = sq_stmt(c, SQ_KEY_UPDATE, &st)) != 0)
		goto out;
	sq_bind_text(st, 1, row->id);
	sq_bind_text(st, 2, row->name);
	sqlite3_bind_int(st, 3, row->state);
	sqlite3_bind_int(st, 4, row->extractable ? 1 : 0);
	sqlite3_bind_int64(st, 5, row->created);
	sqlite3_bind_int64(st, 6, row->updated);
	sqlite3_bind_int64(st, 7, row->deleted);
	sqlite3_bind_int64(st, 8, row->version);
	sqlite3_bind_blob(st, 9, row->vp, KY_VP_LEN, SQLITE_STATIC);
	sqlite3_bind_blob(st, 10, row->blob, (int)row->bloblen, SQLITE_STATIC);
	sqlite3_bind_int64(st, 11, row->rev);
	sqlite3_bind_int64(st, 12, row->expires);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		hit = 1;
		seq = sqlite3_column_int64(st, 0);
		rev = sqlite3_column_int64(st, 1);
		rc = sqlite3_step(st);
	}
	sq_done(st);
	if (rc != SQLITE_DONE) {
		r = sq_fail(rc);
		goto out;
	}
	if (!hit) {
		r = sq_miss(c, SQ_KEY_REV, row->id);
		goto out;
	}
	if ((r = ky_alias_index_write(&sq_alias_ops, c, row->id, row)) != 0)
		goto out;
	r = sq_touch(c, KY_LEDGER_KEYS, row->id);
out:
	r = sq_wend(c, opened, r);
	if (r == 0) {
		row->seq = seq;
		row->rev = rev;
	}
	return r;
}

static int sq_key_get(void *be, const char *id, struct ky_store_row *row)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st;
	int r, rc;

	if ((r = sq_conn(s, &c)) != 0 || (r = sq_stmt(c, SQ_KEY_GET, &st)) != 0)
		return r;
	for (int tries = 0;; tries++) {
		uint64_t g0 = atomic_load(&s->L.gen), gen = 0;
		bool gen_null = true;
		struct sq_seen seen = {0};

		memset(row, 0, sizeof(*row));
		snprintf(seen.id, sizeof(seen.id), "%s", id);
		sq_bind_text(st, 1, id);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			gen_null = sqlite3_column_type(st, SQ_KEY_NCOLS) == SQLITE_NULL;
			gen = (uint64_t)sqlite3_column_int64(st, SQ_KEY_NCOLS);
			if (s->L.on)
				r = sq_ledger_row(&s->L, st, KY_LEDGER_KEYS, 0, &seen);
			if (r == 0)
				r = sqlite3_column_type(st, 0) == SQLITE_NULL
				        ? KY_ERR_NOT_FOUND
				        : sq_read_key(st, row);
		} else {
			r = sq_fail(rc);
		}
		sq_done(st);
		if (rc == SQLITE_ROW && (r == 0 || r == KY_ERR_NOT_FOUND)) {
			int k = sq_ledger_check(c, g0, gen_null, gen, &seen, 1);
			if (k == SQ_AGAIN && tries < SQ_TRIES) {
				ky_store_row_release(row);
				r = 0;
				continue;
			}
			r = k == SQ_AGAIN ? KY_ERR_STORE_BUSY : (k != 0 ? k : r);
			row->stale = seen.stale;
		}
		break;
	}
	if (r != 0)
		ky_store_row_release(row);
	return r;
}

static int sq_key_delete(void *be, const char *id, int64_t rev)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st;
	int r, rc, opened = 0;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if ((r = sq_wbegin(c, &opened)) != 0)
		return r;
	if ((r = sq_stmt(c, SQ_KEY_DELETE, &st)) != 0)
		goto out;
	sq_bind_text(st, 1, id);
	sqlite3_bind_int64(st, 2, rev);
	rc = sqlite3_step(st);
	sq_done(st);
	if (rc != SQLITE_DONE)
		r = sq_fail(rc);
	else if (sqlite3_changes(c->db) != 1)
		r = sq_miss(c, SQ_KEY_REV, id);
	else if ((r = ky_alias_index_write(&sq_alias_ops, c, id, NULL)) == 0)
		r = sq_touch(c, KY_LEDGER_KEYS, id);
out:
	return sq_wend(c, opened, r);
}

static void sq_bind_filter(sqlite3_stmt *st, const struct ky_store_filter *f)
{
	sqlite3_bind_int64(st, 1, f ? (int64_t)f->states : 0);
	sqlite3_bind_int(st, 2, f == NULL || f->extractable < 0 ? -1 : (f->extractable ? 1 : 0));
	if (f != NULL && f->vp_a != NULL) {
		sqlite3_bind_blob(st, 5, f->vp_a, KY_VP_LEN, SQLITE_STATIC);
		sqlite3_bind_blob(st, 6, f->vp_b != NULL ? f->vp_b : f->vp_a, KY_VP_LEN,
		                  SQLITE_STATIC);
	} else {
		sqlite3_bind_null(st, 5);
		sqlite3_bind_null(st, 6);
	}
	sqlite3_bind_int64(st, 7, f != NULL && f->now > 0 ? f->now : 0);
	sqlite3_bind_int64(st, 8, f != NULL && f->after_seq > 0 ? f->after_seq : 0);
}

static int sq_key_list(void *be, const struct ky_store_filter *f, uint32_t limit, uint64_t offset,
                       struct ky_store_row **rows, size_t *n)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st;
	struct ky_store_row *v = NULL, *nv;
	struct sq_seen *seen = NULL, *ns;
	size_t len = 0, cap = 0;
	int r, rc, tries = 0;
	uint64_t g0, gen = 0;
	bool gen_null = false;

	if ((r = sq_conn(s, &c)) != 0 || (r = sq_stmt(c, SQ_KEY_LIST, &st)) != 0)
		return r;
	if (offset > INT64_MAX)
		return KY_ERR_USAGE;
again:
	g0 = atomic_load(&s->L.gen);
	sq_bind_filter(st, f);
	sqlite3_bind_int64(st, 3, limit ? (int64_t)limit : -1);
	sqlite3_bind_int64(st, 4, (int64_t)offset);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (len == cap) {
			cap = cap ? cap * 2 : 16;
			if ((nv = realloc(v, cap * sizeof(*v))) == NULL ||
			    (v = nv, (ns = realloc(seen, cap * sizeof(*seen))) == NULL)) {
				r = KY_ERR_NOMEM;
				goto out;
			}
			seen = ns;
		}
		/* A row kyok could not have written is withheld by the caller, not the listing. */
		if ((r = sq_read_key(st, &v[len])) == KY_ERR_RECORD_TAMPERED) {
			sq_key_fault(st, &v[len], r);
			r = 0;
		}
		if (r != 0) {
			ky_store_row_release(&v[len]);
			goto out;
		}
		gen = (uint64_t)sqlite3_column_int64(st, SQ_KEY_NCOLS);
		gen_null = sqlite3_column_type(st, SQ_KEY_NCOLS) == SQLITE_NULL;
		memset(&seen[len], 0, sizeof(seen[len]));
		len++;
		if (s->L.on && v[len - 1].fault == 0 &&
		    (r = sq_ledger_row(&s->L, st, KY_LEDGER_KEYS, 0, &seen[len - 1])) != 0) {
			if (r != KY_ERR_RECORD_STALE)
				goto out;
			sq_key_fault(st, &v[len - 1], r);
			r = 0;
		}
		seen[len - 1].skip = v[len - 1].fault != 0;
	}
	if (rc != SQLITE_DONE) {
		r = sq_fail(rc);
		goto out;
	}
	sq_done(st);
	/* An empty answer carries no generation: it is checked by the next read. */
	if (len > 0 && (r = sq_ledger_check(c, g0, gen_null, gen, seen, len)) != 0) {
		if (r != SQ_AGAIN || ++tries > SQ_TRIES) {
			r = r == SQ_AGAIN ? KY_ERR_STORE_BUSY : r;
			goto out;
		}
		ky_store_rows_free(v, len);
		v = NULL;
		len = cap = 0;
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
	sq_done(st);
	free(seen);
	ky_store_rows_free(v, len);
	return r;
}

/* Steps a statement that answers one count, and finishes it: *n (never below 0). */
static int sq_count_step(sqlite3_stmt *st, uint64_t *n)
{
	int rc = sqlite3_step(st), r = 0;

	if (rc == SQLITE_ROW) {
		int64_t v = sqlite3_column_int64(st, 0);
		*n = v < 0 ? 0 : (uint64_t)v;
	} else {
		r = sq_fail(rc);
	}
	sq_done(st);
	return r;
}

static int sq_count(struct sq_conn *c, enum sq_stmt i, const struct ky_store_filter *f,
                    const uint8_t *vp, uint64_t *n)
{
	sqlite3_stmt *st;
	int r;

	if ((r = sq_stmt(c, i, &st)) != 0)
		return r;
	if (vp != NULL)
		sqlite3_bind_blob(st, 1, vp, KY_VP_LEN, SQLITE_STATIC);
	else if (i == SQ_KEY_COUNT)
		sq_bind_filter(st, f);
	return sq_count_step(st, n);
}

/* Rows under vp_a or vp_b (may be NULL): constant time, from the per-VP counters. */
static int sq_count_under(struct sq_conn *c, const uint8_t *vp_a, const uint8_t *vp_b, uint64_t *n)
{
	sqlite3_stmt *st;
	int r;

	if ((r = sq_stmt(c, SQ_KEY_UNDER, &st)) != 0)
		return r;
	sqlite3_bind_blob(st, 1, vp_a, KY_VP_LEN, SQLITE_STATIC);
	if (vp_b != NULL)
		sqlite3_bind_blob(st, 2, vp_b, KY_VP_LEN, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 2);
	return sq_count_step(st, n);
}

/* Rows in the states of f->states as of f->now, from the 'state:' counters and keys_expiring
 * (lib/store/count.h): SQ_KEY_COUNT's answer without reading the table. */
static int sq_count_by_state(struct sq_conn *c, const struct ky_store_filter *f, uint64_t *n)
{
	sqlite3_stmt *st;
	int r;

	if ((r = sq_stmt(c, SQ_KEY_BY_STATE, &st)) != 0)
		return r;
	sqlite3_bind_int64(st, 1, (int64_t)f->states);
	sqlite3_bind_int(st, 2, ky_count_expired_sign(f));
	sqlite3_bind_int64(st, 3, f->now > 0 ? f->now : 0);
	return sq_count_step(st, n);
}

static int sq_key_count(void *be, const struct ky_store_filter *f, uint64_t *n)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	int r;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if (f == NULL ||
	    (f->states == 0 && f->extractable < 0 && f->vp_a == NULL && f->after_seq <= 0))
		return sq_count(c, SQ_KEY_TOTAL, NULL, NULL, n);
	if (f->states == 0 && f->extractable < 0 && f->after_seq <= 0)
		return sq_count_under(c, f->vp_a, f->vp_b, n);
	if (ky_count_by_states(f))
		return sq_count_by_state(c, f, n);
	return sq_count(c, SQ_KEY_COUNT, f, NULL, n);
}

/* ---- secrets ---- */

static int sq_secret_put(void *be, struct ky_store_secret *sec, int64_t expect_rev)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st;
	int r, rc, opened = 0, hit = 0;
	int64_t seq = 0, rev = 0;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if ((r = sq_wbegin(c, &opened)) != 0)
		return r;
	if ((r = sq_stmt(c, expect_rev ? SQ_SECRET_UPDATE : SQ_SECRET_INSERT, &st)) != 0)
		goto out;
	sq_bind_text(st, 1, sec->name);
	sqlite3_bind_int64(st, 2, sec->created);
	sqlite3_bind_int64(st, 3, sec->updated);
	sqlite3_bind_blob(st, 4, sec->vp, KY_VP_LEN, SQLITE_STATIC);
	sqlite3_bind_blob(st, 5, sec->blob, (int)sec->bloblen, SQLITE_STATIC);
	if (expect_rev)
		sqlite3_bind_int64(st, 6, expect_rev);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		hit = 1;
		seq = sqlite3_column_int64(st, 0);
		rev = sqlite3_column_int64(st, 1);
		rc = sqlite3_step(st);
	}
	sq_done(st);
	if (rc != SQLITE_DONE) {
		r = sq_fail(rc);
		goto out;
	}
	if (!hit) {
		r = sq_miss(c, SQ_SECRET_REV, sec->name);
		goto out;
	}
	r = sq_touch(c, KY_LEDGER_SECRETS, sec->name);
out:
	r = sq_wend(c, opened, r);
	if (r == 0) {
		sec->seq = seq;
		sec->rev = rev;
	}
	return r;
}

static int sq_secret_get(void *be, const char *name, struct ky_store_secret *sec)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st;
	int r, rc;

	if ((r = sq_conn(s, &c)) != 0 || (r = sq_stmt(c, SQ_SECRET_GET, &st)) != 0)
		return r;
	for (int tries = 0;; tries++) {
		uint64_t g0 = atomic_load(&s->L.gen), gen = 0;
		bool gen_null = true;
		struct sq_seen seen = {0};

		sec->blob = NULL;
		snprintf(seen.id, sizeof(seen.id), "%s", name);
		sq_bind_text(st, 1, name);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			gen_null = sqlite3_column_type(st, SQ_SECRET_NCOLS) == SQLITE_NULL;
			gen = (uint64_t)sqlite3_column_int64(st, SQ_SECRET_NCOLS);
			r = s->L.on ? sq_ledger_row(&s->L, st, KY_LEDGER_SECRETS, 0, &seen) : 0;
			if (r == 0 && sqlite3_column_type(st, 0) == SQLITE_NULL)
				r = KY_ERR_NOT_FOUND;
			if (r == 0 &&
			    (r = sq_col_text(st, 0, sec->name, sizeof(sec->name), 0)) == 0 &&
			    (r = sq_col_fixed(st, 5, sec->vp, KY_VP_LEN)) == 0) {
				sec->seq = sqlite3_column_int64(st, 1);
				sec->rev = sqlite3_column_int64(st, 2);
				sec->created = sqlite3_column_int64(st, 3);
				sec->updated = sqlite3_column_int64(st, 4);
				r = sq_col_blob(st, 6, &sec->blob, &sec->bloblen);
			}
		} else {
			r = sq_fail(rc);
		}
		sq_done(st);
		/* The integrity key's own row is outside the digest: it is read to check it. */
		if (rc == SQLITE_ROW && (r == 0 || r == KY_ERR_NOT_FOUND) &&
		    !sq_ledger_exempt(KY_LEDGER_SECRETS, name)) {
			int k = sq_ledger_check(c, g0, gen_null, gen, &seen, 1);
			if (k == SQ_AGAIN && tries < SQ_TRIES) {
				ky_store_secret_release(sec);
				r = 0;
				continue;
			}
			r = k == SQ_AGAIN ? KY_ERR_STORE_BUSY : (k != 0 ? k : r);
			sec->stale = seen.stale;
		}
		break;
	}
	if (r != 0)
		ky_store_secret_release(sec);
	return r;
}

static int sq_secret_delete(void *be, const char *name)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st;
	int r, rc, opened = 0;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if ((r = sq_wbegin(c, &opened)) != 0)
		return r;
	if ((r = sq_stmt(c, SQ_SECRET_DELETE, &st)) != 0)
		goto out;
	sq_bind_text(st, 1, name);
	rc = sqlite3_step(st);
	sq_done(st);
	if (rc != SQLITE_DONE)
		r = sq_fail(rc);
	else if (sqlite3_changes(c->db) != 1)
		r = KY_ERR_NOT_FOUND;
	else
		r = sq_touch(c, KY_LEDGER_SECRETS, name);
out:
	return sq_wend(c, opened, r);
}

/* ---- re-encipherment ---- */

static int sq_vp_count(void *be, enum ky_store_table t, const uint8_t vp[KY_VP_LEN], uint64_t *n)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	int r;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	return sq_count(c, t == KY_STORE_KEYS ? SQ_VP_COUNT_KEYS : SQ_VP_COUNT_SECRETS, NULL, vp,
	                n);
}

static int sq_vp_fetch(void *be, enum ky_store_table t, const uint8_t vp[KY_VP_LEN],
                       const char *after, size_t max, struct ky_store_vprow **rows, size_t *n)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st;
	struct ky_store_vprow *v = NULL;
	struct sq_seen *seen = NULL;
	size_t len = 0;
	int r, rc = SQLITE_DONE, tries = 0;
	uint64_t g0, gen = 0;
	bool gen_null = false;
	uint8_t lt = t == KY_STORE_KEYS ? KY_LEDGER_KEYS : KY_LEDGER_SECRETS;
	int ncols = t == KY_STORE_KEYS ? SQ_KEY_NCOLS : SQ_SECRET_NCOLS;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if ((r = sq_stmt(c, t == KY_STORE_KEYS ? SQ_VP_FETCH_KEYS : SQ_VP_FETCH_SECRETS, &st)) != 0)
		return r;
	if (max > 100000)
		max = 100000;
	if ((v = calloc(max, sizeof(*v))) == NULL || (seen = calloc(max, sizeof(*seen))) == NULL) {
		free(v);
		return KY_ERR_NOMEM;
	}
again:
	g0 = atomic_load(&s->L.gen);
	sqlite3_bind_blob(st, 1, vp, KY_VP_LEN, SQLITE_STATIC);
	sq_bind_text(st, 2, after ? after : "");
	sqlite3_bind_int64(st, 3, (int64_t)max);
	while (len < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct ky_store_vprow *w = &v[len];
		if ((r = sq_col_text(st, 0, w->name, sizeof(w->name), 0)) != 0)
			goto out;
		w->seq = sqlite3_column_int64(st, 1);
		w->rev = sqlite3_column_int64(st, 2);
		w->version = (uint32_t)sqlite3_column_int64(st, 3);
		len++;
		if ((r = sq_col_blob(st, 4, &w->blob, &w->bloblen)) != 0)
			goto out;
		gen = (uint64_t)sqlite3_column_int64(st, 5 + ncols);
		gen_null = sqlite3_column_type(st, 5 + ncols) == SQLITE_NULL;
		if (s->L.on && (r = sq_ledger_row(&s->L, st, lt, 5, &seen[len - 1])) != 0)
			goto out;
	}
	if (len < max && rc != SQLITE_DONE) {
		r = sq_fail(rc);
		goto out;
	}
	sq_done(st);
	if (len > 0 && (r = sq_ledger_check(c, g0, gen_null, gen, seen, len)) != 0) {
		if (r != SQ_AGAIN || ++tries > SQ_TRIES) {
			r = r == SQ_AGAIN ? KY_ERR_STORE_BUSY : r;
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
	sq_done(st);
	free(seen);
	ky_store_vprows_free(v, len);
	return r;
}

static int sq_vp_swap(void *be, enum ky_store_table t, const uint8_t old_vp[KY_VP_LEN],
                      const uint8_t new_vp[KY_VP_LEN], const struct ky_store_vprow *rows, size_t n,
                      size_t *swapped)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st;
	size_t done = 0;
	int r, rc, opened = 0;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if ((r = sq_wbegin(c, &opened)) != 0)
		return r;
	if ((r = sq_stmt(c, t == KY_STORE_KEYS ? SQ_VP_SWAP_KEYS : SQ_VP_SWAP_SECRETS, &st)) != 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		sq_bind_text(st, 1, rows[i].name);
		sqlite3_bind_blob(st, 2, new_vp, KY_VP_LEN, SQLITE_STATIC);
		sqlite3_bind_blob(st, 3, rows[i].blob, (int)rows[i].bloblen, SQLITE_STATIC);
		sqlite3_bind_blob(st, 4, old_vp, KY_VP_LEN, SQLITE_STATIC);
		sqlite3_bind_int64(st, 5, rows[i].rev);
		rc = sqlite3_step(st);
		sq_done(st);
		if (rc != SQLITE_DONE) {
			r = sq_fail(rc);
			goto out;
		}
		if (sqlite3_changes(c->db) == 1) {
			done++;
			if ((r = sq_touch(c,
			                  t == KY_STORE_KEYS ? KY_LEDGER_KEYS : KY_LEDGER_SECRETS,
			                  rows[i].name)) != 0)
				goto out;
		}
	}
	r = 0;
out:
	if ((r = sq_wend(c, opened, r)) == 0)
		*swapped = done;
	return r;
}

/* ---- api keys ---- */

static int sq_apikey_insert(void *be, const struct ky_store_apikey *k)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st;
	int r, rc, opened = 0;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if ((r = sq_wbegin(c, &opened)) != 0)
		return r;
	if ((r = sq_stmt(c, SQ_APIKEY_INSERT, &st)) != 0)
		goto out;
	sq_bind_text(st, 1, k->id);
	sq_bind_text(st, 2, k->role);
	sqlite3_bind_blob(st, 3, k->hash, KY_APIKEY_HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, k->created);
	sqlite3_bind_int64(st, 5, k->revoked);
	sq_bind_text(st, 6, k->name);
	if (k->has_mac)
		sqlite3_bind_blob(st, 7, k->mac, KY_APIKEY_MAC_LEN, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 7);
	rc = sqlite3_step(st);
	sq_done(st);
	r = rc == SQLITE_DONE ? sq_touch(c, KY_LEDGER_APIKEYS, k->id) : sq_fail(rc);
out:
	return sq_wend(c, opened, r);
}

/* Row of SQ_APIKEY_COLS at the cursor. A mac of the wrong size is kept as none. */
static int sq_read_apikey(sqlite3_stmt *st, struct ky_store_apikey *k)
{
	int r;

	memset(k, 0, sizeof(*k));
	if ((r = sq_col_text(st, 0, k->id, sizeof(k->id), 0)) != 0 ||
	    (r = sq_col_text(st, 1, k->role, sizeof(k->role), 0)) != 0 ||
	    (r = sq_col_fixed(st, 2, k->hash, KY_APIKEY_HASH_LEN)) != 0 ||
	    (r = sq_col_text(st, 5, k->name, sizeof(k->name), 0)) != 0)
		return r;
	k->created = sqlite3_column_int64(st, 3);
	k->revoked = sqlite3_column_int64(st, 4);
	k->has_mac = sq_col_fixed(st, 6, k->mac, KY_APIKEY_MAC_LEN) == 0;
	return 0;
}

static int sq_apikey_read(struct sq_conn *c, enum sq_stmt i, const void *key, size_t keylen,
                          struct ky_store_apikey *k)
{
	sqlite3_stmt *st;
	int r, rc;

	if ((r = sq_stmt(c, i, &st)) != 0)
		return r;
	for (int tries = 0;; tries++) {
		uint64_t g0 = atomic_load(&c->s->L.gen), gen = 0;
		bool gen_null = true;
		struct sq_seen seen = {0};

		if (keylen == 0) {
			snprintf(seen.id, sizeof(seen.id), "%s", (const char *)key);
			sq_bind_text(st, 1, key);
		} else {
			sqlite3_bind_blob(st, 1, key, (int)keylen, SQLITE_STATIC);
		}
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			gen_null = sqlite3_column_type(st, SQ_APIKEY_NCOLS) == SQLITE_NULL;
			gen = (uint64_t)sqlite3_column_int64(st, SQ_APIKEY_NCOLS);
			r = c->s->L.on ? sq_ledger_row(&c->s->L, st, KY_LEDGER_APIKEYS, 0, &seen)
			               : 0;
			if (r == 0)
				r = sqlite3_column_type(st, 0) == SQLITE_NULL
				        ? KY_ERR_NOT_FOUND
				        : sq_read_apikey(st, k);
		} else {
			r = sq_fail(rc);
		}
		sq_done(st);
		/* By hash, a missing row names no record: only the digest is checked. */
		if (rc == SQLITE_ROW && (r == 0 || r == KY_ERR_NOT_FOUND)) {
			int x = sq_ledger_check(c, g0, gen_null, gen, &seen,
			                        seen.present || keylen == 0 ? 1 : 0);
			if (x == SQ_AGAIN && tries < SQ_TRIES) {
				r = 0;
				continue;
			}
			r = x == SQ_AGAIN ? KY_ERR_STORE_BUSY : (x != 0 ? x : r);
			k->stale = seen.stale;
		}
		break;
	}
	return r;
}

static int sq_apikey_get(void *be, const char *id, struct ky_store_apikey *k)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	int r;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	return sq_apikey_read(c, SQ_APIKEY_GET, id, 0, k);
}

static int sq_apikey_find(void *be, const uint8_t hash[KY_APIKEY_HASH_LEN],
                          struct ky_store_apikey *k)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	int r;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	return sq_apikey_read(c, SQ_APIKEY_FIND, hash, KY_APIKEY_HASH_LEN, k);
}

static int sq_apikey_list(void *be, struct ky_store_apikey **out, size_t *n)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st;
	struct ky_store_apikey *v = NULL, *nv;
	struct sq_seen *seen = NULL, *ns;
	size_t cnt = 0, cap = 0;
	int r, rc, tries = 0;
	uint64_t g0, gen = 0;
	bool gen_null = false;

	*out = NULL;
	*n = 0;
	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if ((r = sq_stmt(c, SQ_APIKEY_LIST, &st)) != 0)
		return r;
again:
	g0 = atomic_load(&s->L.gen);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (cnt == cap) {
			cap = cap ? 2 * cap : 16;
			if ((nv = realloc(v, cap * sizeof(*v))) == NULL) {
				r = KY_ERR_NOMEM;
				goto out;
			}
			v = nv;
			if ((ns = realloc(seen, cap * sizeof(*seen))) == NULL) {
				r = KY_ERR_NOMEM;
				goto out;
			}
			seen = ns;
		}
		if ((r = sq_read_apikey(st, &v[cnt])) != 0)
			goto out;
		gen = (uint64_t)sqlite3_column_int64(st, SQ_APIKEY_NCOLS);
		gen_null = sqlite3_column_type(st, SQ_APIKEY_NCOLS) == SQLITE_NULL;
		if (s->L.on &&
		    (r = sq_ledger_row(&s->L, st, KY_LEDGER_APIKEYS, 0, &seen[cnt])) != 0)
			goto out;
		cnt++;
	}
	if (rc != SQLITE_DONE) {
		r = sq_fail(rc);
		goto out;
	}
	sq_done(st);
	if (cnt > 0 && (r = sq_ledger_check(c, g0, gen_null, gen, seen, cnt)) != 0) {
		if (r != SQ_AGAIN || ++tries > SQ_TRIES) {
			r = r == SQ_AGAIN ? KY_ERR_STORE_BUSY : r;
			goto out;
		}
		cnt = 0;
		goto again;
	}
	for (size_t i = 0; s->L.on && i < cnt; i++)
		v[i].stale = seen[i].stale;
	*out = v;
	*n = cnt;
	v = NULL; /* transferred */
	r = 0;
out:
	sq_done(st);
	free(seen);
	free(v);
	return r;
}

static int sq_apikey_update(void *be, const struct ky_store_apikey *k, const uint8_t *old_mac)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st;
	struct ky_store_apikey have;
	int r, rc, opened = 0;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if ((r = sq_wbegin(c, &opened)) != 0)
		return r;
	if ((r = sq_stmt(c, SQ_APIKEY_UPDATE, &st)) != 0)
		goto out;
	sq_bind_text(st, 1, k->id);
	sq_bind_text(st, 2, k->role);
	sqlite3_bind_blob(st, 3, k->hash, KY_APIKEY_HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, k->created);
	sqlite3_bind_int64(st, 5, k->revoked);
	sq_bind_text(st, 6, k->name);
	sqlite3_bind_blob(st, 7, k->mac, KY_APIKEY_MAC_LEN, SQLITE_STATIC);
	if (old_mac != NULL)
		sqlite3_bind_blob(st, 8, old_mac, KY_APIKEY_MAC_LEN, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 8);
	rc = sqlite3_step(st);
	sq_done(st);
	if (rc != SQLITE_DONE)
		r = sq_fail(rc);
	else if (sqlite3_changes(c->db) == 1)
		r = sq_touch(c, KY_LEDGER_APIKEYS, k->id);
	else if ((r = sq_apikey_read(c, SQ_APIKEY_GET, k->id, 0, &have)) == 0)
		r = KY_ERR_CONFLICT;
out:
	return sq_wend(c, opened, r);
}

/* Every API key row, as written by the open transaction (before a purge). */
static int sq_apikey_touch_all(struct sq_conn *c)
{
	sqlite3_stmt *st = NULL;
	int r = 0, rc;

	if ((rc = sqlite3_prepare_v2(c->db, "SELECT id FROM api_keys", -1, &st, NULL)) != SQLITE_OK)
		return sq_fail(rc);
	while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *id = sqlite3_column_text(st, 0);
		r = id != NULL ? sq_touch(c, KY_LEDGER_APIKEYS, (const char *)id) : 0;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = sq_fail(rc);
	sqlite3_finalize(st);
	return r;
}

static int sq_apikey_purge(void *be, uint64_t *n)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st;
	int r, rc, opened = 0;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if ((r = sq_wbegin(c, &opened)) != 0)
		return r;
	if ((r = sq_apikey_touch_all(c)) != 0)
		goto out;
	if ((r = sq_stmt(c, SQ_APIKEY_PURGE, &st)) != 0)
		goto out;
	rc = sqlite3_step(st);
	sq_done(st);
	if (rc == SQLITE_DONE)
		*n = (uint64_t)sqlite3_changes(c->db);
	else
		r = sq_fail(rc);
out:
	return sq_wend(c, opened, r);
}

/* ---- request ids ----
 * requests(apikey, id, hash, status, created, vp, body), primary key (apikey, id), index on
 * created (expiry). Its own table, made on open when missing (sq_upgrade). The statements are
 * prepared per call: they run once per state change, not on the hot path. */

#define SQ_REQUESTS_SCHEMA                                                                \
	"CREATE TABLE IF NOT EXISTS requests (apikey TEXT NOT NULL, id TEXT NOT NULL,"    \
	" hash BLOB NOT NULL, status INTEGER NOT NULL, created INTEGER NOT NULL,"         \
	" vp BLOB NOT NULL, body BLOB NOT NULL, PRIMARY KEY (apikey, id)) WITHOUT ROWID;" \
	"CREATE INDEX IF NOT EXISTS requests_created ON requests (created);"

static int sq_prepare(struct sq_conn *c, const char *q, sqlite3_stmt **st)
{
	int rc = sqlite3_prepare_v2(c->db, q, -1, st, NULL);

	return rc == SQLITE_OK ? 0 : sq_fail(rc);
}

static int sq_request_get(void *be, const char *apikey, const char *id,
                          struct ky_store_request *req)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st = NULL;
	int r, rc;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if ((r = sq_prepare(c,
	                    "SELECT apikey, id, hash, status, created, vp, body FROM requests "
	                    "WHERE apikey = ?1 AND id = ?2",
	                    &st)) != 0)
		return r;
	if (sq_bind_text(st, 1, apikey) != SQLITE_OK || sq_bind_text(st, 2, id) != SQLITE_OK) {
		r = KY_ERR_STORE;
		goto out;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		r = KY_ERR_NOT_FOUND;
		goto out;
	}
	if (rc != SQLITE_ROW) {
		r = sq_fail(rc);
		goto out;
	}
	if ((r = sq_col_text(st, 0, req->apikey, sizeof(req->apikey), 0)) != 0 ||
	    (r = sq_col_text(st, 1, req->id, sizeof(req->id), 0)) != 0 ||
	    (r = sq_col_fixed(st, 2, req->hash, KY_REQUEST_HASH_LEN)) != 0 ||
	    (r = sq_col_fixed(st, 5, req->vp, KY_VP_LEN)) != 0 ||
	    (r = sq_col_blob(st, 6, &req->body, &req->bodylen)) != 0)
		goto out;
	req->status = sqlite3_column_int(st, 3);
	req->created = sqlite3_column_int64(st, 4);
	r = 0;
out:
	sqlite3_finalize(st);
	return r;
}

static int sq_request_put(void *be, const struct ky_store_request *req)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st = NULL;
	int r, rc, opened = 0;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if ((r = sq_wbegin(c, &opened)) != 0)
		return r;
	if ((r = sq_prepare(c,
	                    "INSERT INTO requests (apikey, id, hash, status, created, vp, body) "
	                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	                    &st)) != 0)
		goto out;
	if (sq_bind_text(st, 1, req->apikey) != SQLITE_OK ||
	    sq_bind_text(st, 2, req->id) != SQLITE_OK ||
	    sqlite3_bind_blob(st, 3, req->hash, KY_REQUEST_HASH_LEN, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_int(st, 4, req->status) != SQLITE_OK ||
	    sqlite3_bind_int64(st, 5, req->created) != SQLITE_OK ||
	    sqlite3_bind_blob(st, 6, req->vp, KY_VP_LEN, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_blob(st, 7, req->body, (int)req->bodylen, SQLITE_STATIC) != SQLITE_OK) {
		r = KY_ERR_STORE;
		goto out;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_CONSTRAINT)
		r = KY_ERR_EXISTS;
	else if (rc != SQLITE_DONE)
		r = sq_fail(rc);
	else
		r = 0;
out:
	sqlite3_finalize(st);
	return sq_wend(c, opened, r);
}

static int sq_request_expire(void *be, int64_t before, uint64_t *n)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st = NULL;
	int r, rc, opened = 0;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if ((r = sq_wbegin(c, &opened)) != 0)
		return r;
	if ((r = sq_prepare(c, "DELETE FROM requests WHERE created < ?1", &st)) != 0)
		goto out;
	if (sqlite3_bind_int64(st, 1, before) != SQLITE_OK) {
		r = KY_ERR_STORE;
		goto out;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		*n = (uint64_t)sqlite3_changes(c->db);
		r = 0;
	} else {
		r = sq_fail(rc);
	}
out:
	sqlite3_finalize(st);
	return sq_wend(c, opened, r);
}

/* ---- change detection ---- */

static int64_t sq_now_ms(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether every bump of the shared counter after from up to to was a group commit of this
 * handle. */
static bool sq_quiet_since(struct sq_store *s, uint64_t from, uint64_t to)
{
	if (to - from > SQ_QUIET_SLOTS)
		return false;
	for (uint64_t i = 1; i <= to - from; i++) /* by offset: the counter may wrap */
		if (atomic_load_explicit(&s->quiet[(from + i) % SQ_QUIET_SLOTS],
		                         memory_order_acquire) != from + i)
			return false;
	return true;
}

static int sq_changed(void *be, int *changed)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st;
	int64_t v, now = sq_now_ms();
	int r, rc, moved = 0;

	*changed = 1;
	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if (s->gen != NULL) {
		uint64_t g = atomic_load_explicit(s->gen, memory_order_acquire);

		moved = !c->gen_known || (g != c->gen_seen && !sq_quiet_since(s, c->gen_seen, g));
		c->gen_seen = g;
		c->gen_known = 1;
		if (moved && c->dv_known)
			return 0;
		if (!moved && c->dv_known && now - c->dv_checked < s->dv_interval_ms) {
			*changed = 0;
			return 0;
		}
	}
	if ((r = sq_stmt(c, SQ_DATA_VERSION, &st)) != 0)
		return r;
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sq_done(st);
		return sq_fail(rc);
	}
	v = sqlite3_column_int64(st, 0);
	sq_done(st);
	*changed = moved || !c->dv_known || v != c->data_version;
	c->dv_known = 1;
	c->data_version = v;
	c->dv_checked = now;
	return 0;
}

/* The fingerprint of the change at seq in the log, 0 when there is none. */
static int sq_change_at(struct sq_conn *c, uint64_t seq, uint64_t *check)
{
	sqlite3_stmt *st;
	int r, rc;

	*check = 0;
	if ((r = sq_stmt(c, SQ_CHANGES_FROM, &st)) != 0)
		return r;
	sqlite3_bind_int64(st, 1, (int64_t)seq);
	sqlite3_bind_int64(st, 2, 1);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW && (uint64_t)sqlite3_column_int64(st, 0) == seq)
		*check = ky_changelog_check(seq, sqlite3_column_int64(st, 1),
		                            (const char *)sqlite3_column_text(st, 2),
		                            (size_t)sqlite3_column_bytes(st, 2));
	sq_done(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sq_fail(rc);
}

/* Reads the log from pos->seq on, in the caller's read transaction (changelog.h: what the
 * log must hold to tell). */
static int sq_changes_read(struct sq_conn *c, struct ky_store_change_pos *pos,
                           struct ky_store_change **out, size_t *n, int *all)
{
	struct ky_changelog L;
	struct ky_store_change_pos np;
	sqlite3_stmt *st;
	uint64_t last = 0;
	int r = KY_ERR_INTERNAL, rc = SQLITE_DONE;

	memset(&L, 0, sizeof(L));
	if ((r = sq_stmt(c, SQ_CHANGES_LAST, &st)) != 0)
		goto out;
	if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
		sq_done(st);
		r = sq_fail(rc);
		goto out;
	}
	last = (uint64_t)sqlite3_column_int64(st, 0);
	sq_done(st);
	if ((r = ky_changelog_begin(&L, pos, last)) != 0)
		goto out;
	if (ky_changelog_wants(&L)) {
		if ((r = sq_stmt(c, SQ_CHANGES_FROM, &st)) != 0)
			goto out;
		sqlite3_bind_int64(st, 1, (int64_t)pos->seq);
		sqlite3_bind_int64(st, 2, (int64_t)(last - pos->seq + 1));
		while (ky_changelog_wants(&L) && (rc = sqlite3_step(st)) == SQLITE_ROW)
			ky_changelog_row(&L, (uint64_t)sqlite3_column_int64(st, 0),
			                 sqlite3_column_int64(st, 1),
			                 (const char *)sqlite3_column_text(st, 2),
			                 (size_t)sqlite3_column_bytes(st, 2));
		sq_done(st);
		if (ky_changelog_wants(&L) && rc != SQLITE_DONE) {
			r = sq_fail(rc);
			goto out;
		}
	}
	ky_changelog_end(&L, &np, out, n, all);
	if (*all && (r = sq_change_at(c, last, &np.check)) != 0)
		goto out;
	*pos = np;
	r = 0;
out:
	ky_changelog_release(&L);
	return r;
}

static int sq_changes(void *be, struct ky_store_change_pos *pos, struct ky_store_change **out,
                      size_t *n, int *all)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	int r = KY_ERR_INTERNAL, own;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	own = sqlite3_get_autocommit(c->db);
	if (own && (r = sq_run(c, "BEGIN")) != 0)
		return r;
	atomic_store(&s->quiet_rows, 0); /* before the snapshot: what comes after is counted */
	r = sq_changes_read(c, pos, out, n, all);
	if (own)
		(void)sq_run(c, "COMMIT"); /* read only */
	return r;
}

/* Maps the shared commit counter; on any failure the store works without it. */
static void sq_gen_map(struct sq_store *s)
{
	char *path = NULL;
	struct stat sb;
	void *p;
	int fd;

	if (asprintf(&path, "%s%s", s->path, SQ_GEN_SUFFIX) < 0)
		return;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	free(path);
	if (fd < 0)
		return;
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) ||
	    (sb.st_size < SQ_GEN_SIZE && ftruncate(fd, SQ_GEN_SIZE) != 0)) {
		close(fd);
		return;
	}
	p = mmap(NULL, SQ_GEN_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p != MAP_FAILED)
		s->gen = p;
}

/* ---- diagnostics ---- */

static void sq_failure(void *be, char *out, size_t outlen)
{
	struct sq_store *s = be;
	struct sq_conn *c = pthread_getspecific(s->tls);
	int sys = sq_last.sys_errno;

	if (sq_last.rc == 0) {
		snprintf(out, outlen, "key storage '%s'", s->path);
		return;
	}
	/* The connection still knows the errno of an I/O failure (disk full, ...). */
	if (sys == 0 && c != NULL && sqlite3_extended_errcode(c->db) == sq_last.rc)
		sys = sqlite3_system_errno(c->db);
	if ((sq_last.rc & 0xff) == SQLITE_FULL && sys == 0)
		sys = ENOSPC; /* what SQLite's unix VFS answers SQLITE_FULL for */
	snprintf(out, outlen, "key storage '%s': SQLite: %s (result code %d)%s%s", s->path,
	         sqlite3_errstr(sq_last.rc), sq_last.rc, sys ? "; system: " : "",
	         sys ? strerror(sys) : "");
}

static void sq_failure_clear(void *be)
{
	(void)be;
	sq_last.rc = 0;
	sq_last.sys_errno = 0;
}

static int sq_plan(void *be, enum ky_store_plan what, char *out, size_t outlen)
{
	struct sq_store *s = be;
	struct sq_conn *c;
	sqlite3_stmt *st = NULL;
	char sql[512];
	enum sq_stmt i = SQ_KEY_GET;
	size_t len = 0;
	int r, rc;

	switch (what) {
	case KY_STORE_PLAN_GET:
		i = SQ_KEY_GET;
		break;
	case KY_STORE_PLAN_VP_FETCH:
		i = SQ_VP_FETCH_KEYS;
		break;
	case KY_STORE_PLAN_APIKEY:
		i = SQ_APIKEY_FIND;
		break;
	case KY_STORE_PLAN_STATE_COUNT:
		i = SQ_KEY_BY_STATE;
		break;
	}
	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if ((size_t)snprintf(sql, sizeof(sql), "EXPLAIN QUERY PLAN %s", sq_sql[i]) >= sizeof(sql))
		return KY_ERR_INTERNAL;
	if ((rc = sqlite3_prepare_v2(c->db, sql, -1, &st, NULL)) != SQLITE_OK)
		return sq_fail(rc);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *d = (const char *)sqlite3_column_text(st, 3);
		int k = snprintf(out + len, outlen - len, "%s%s", len ? "; " : "", d ? d : "");
		if (k < 0 || (size_t)k >= outlen - len) {
			r = KY_ERR_TOO_LARGE;
			goto out;
		}
		len += (size_t)k;
	}
	r = rc == SQLITE_DONE ? 0 : sq_err(rc);
out:
	sqlite3_finalize(st);
	return r;
}

/* ---- storage digest: attach ---- */

static int sq_ledger_attach(void *be, const uint8_t key[KY_STORE_LEDGER_KEY_LEN],
                            const struct ky_store_ledger_pos *floor, int adopt,
                            struct ky_store_ledger_pos *pos)
{
	struct sq_store *s = be;
	struct sq_ledger *L = &s->L;
	struct sq_conn *c;
	struct sq_ledger_meta m;
	struct ky_ledger_index ix = {0};
	int r = KY_ERR_INTERNAL, opened = 0, have;
	bool locked = false, authentic;

	if ((r = sq_conn(s, &c)) != 0)
		return r;
	if (c->in_txn)
		return KY_ERR_USAGE;
	pthread_mutex_lock(&L->mu);
	L->on = false; /* the write transaction below must not sync under the old key */
	pthread_mutex_unlock(&L->mu);
	if ((r = sq_wbegin(c, &opened)) != 0)
		return r;
	pthread_mutex_lock(&L->mu);
	locked = true;
	ky_ledger_mac_release(&L->mac);
	if ((r = ky_ledger_mac_init(&L->mac, key)) != 0)
		goto out;
	r = sq_ledger_meta_read(c, &m);
	if (r != 0 && r != KY_ERR_NOT_FOUND)
		goto out;
	have = r == 0;
	if (!have && floor->gen > 0 && !adopt) {
		r = KY_ERR_STORAGE_MISSING;
		goto out;
	}
	authentic = have && (r = sq_ledger_meta_check(c, &m)) == 0;
	if (have && !authentic && !adopt)
		goto out;
	if (have && !adopt && floor->gen > 0 && (m.epoch != floor->epoch || m.gen < floor->gen)) {
		r = KY_ERR_STORAGE_ROLLBACK;
		goto out;
	}
	/* as of the generation the digest will have (an upper bound: safe for the checks) */
	if ((r = sq_ledger_rescan(c, &ix, (have && m.gen > floor->gen ? m.gen : floor->gen) + 1)) !=
	    0)
		goto out;
	if (have && !adopt) {
		if (!sq_ledger_matches(&ix, &m)) {
			r = KY_ERR_LEDGER_MISMATCH;
			goto out;
		}
	} else {
		/* A new digest: the records as they are, past every position seen before. */
		uint64_t g = have && m.gen > floor->gen ? m.gen : floor->gen;
		uint64_t e = have && m.epoch > floor->epoch ? m.epoch : floor->epoch;
		m.gen = g + 1;
		/* A restore accepted starts an epoch past the one this handle knew (or joins the
		 * one another unit's accept started); a new integrity key (the old one went with
		 * its master key) does not: the history goes on. */
		m.epoch = e;
		if (adopt && authentic && m.epoch < floor->epoch + 1)
			m.epoch = floor->epoch + 1;
		m.n = ix.n;
		memcpy(m.sum, ix.sum, KY_LEDGER_TAG_LEN);
		if ((r = sq_ledger_meta_write(c, &m)) != 0)
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
	r = sq_wend(c, opened, r);
	pthread_mutex_lock(&L->mu);
	L->on = r == 0;
	if (r == 0) {
		pos->gen = atomic_load(&L->gen);
		pos->epoch = L->epoch;
	}
	pthread_mutex_unlock(&L->mu);
	return r;
}

static int sq_ledger_pos(void *be, struct ky_store_ledger_pos *pos)
{
	struct sq_store *s = be;
	int r;

	pthread_mutex_lock(&s->L.mu);
	r = s->L.on ? 0 : KY_ERR_USAGE;
	pos->gen = atomic_load(&s->L.gen);
	pos->epoch = s->L.epoch;
	pthread_mutex_unlock(&s->L.mu);
	return r;
}

/* ---- open and close ---- */

static int sq_meta_get(struct sq_conn *c, const char *k, char *out, size_t cap)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	rc = sqlite3_prepare_v2(c->db, "SELECT v FROM meta WHERE k = ?1", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return sq_fail(rc);
	sq_bind_text(st, 1, k);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		r = sq_col_text(st, 0, out, cap, 0) ? KY_ERR_STORE_SCHEMA : 0;
	else
		r = rc == SQLITE_DONE ? KY_ERR_NOT_FOUND : sq_fail(rc);
	sqlite3_finalize(st);
	return r;
}

static int sq_meta_set(struct sq_conn *c, const char *k, const char *v)
{
	sqlite3_stmt *st = NULL;
	int rc;

	rc = sqlite3_prepare_v2(c->db, "INSERT INTO meta (k, v) VALUES (?1, ?2)", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sq_bind_text(st, 1, k);
		sq_bind_text(st, 2, v);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : sq_fail(rc);
}

static int sq_has_meta(struct sq_conn *c, int *has)
{
	sqlite3_stmt *st = NULL;
	int rc;

	rc = sqlite3_prepare_v2(c->db,
	                        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
	                        "name = 'meta'",
	                        -1, &st, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
		*has = sqlite3_column_int(st, 0) > 0;
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : sq_fail(rc);
}

/* *has = the answer (a count) of query q is not 0. */
static int sq_exists(struct sq_conn *c, const char *q, int *has)
{
	sqlite3_stmt *st = NULL;
	int rc;

	*has = 0;
	rc = sqlite3_prepare_v2(c->db, q, -1, &st, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
		*has = sqlite3_column_int(st, 0) > 0;
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : sq_fail(rc);
}

static int sq_run(struct sq_conn *c, const char *q)
{
	int rc = sqlite3_exec(c->db, q, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : sq_fail(rc);
}

/* Stores made by earlier versions of schema 1 get what came later (same schema version: older
 * programs never read the new columns, and SQLite runs the triggers for them too):
 *   api_keys.name     a label, '' by default
 *   api_keys.mac      NULL by default: such a row is refused until it is made again
 *   keys.expires      0 by default (filters by state use the stored state for such a row
 *                    until it is written again)
 *   'vp:' counters    counted once from the keys table when their triggers are made
 *   'state:' counters the same (when any of their three triggers was missing)
 *   keys_expiring     made here, after keys.expires. */
static int sq_upgrade(struct sq_conn *c, int had_vp_triggers, int had_state_triggers)
{
	int r, has;

	if ((r = sq_exists(c,
	                   "SELECT count(*) FROM pragma_table_info('api_keys') WHERE name = 'name'",
	                   &has)) != 0 ||
	    (!has && (r = sq_run(c, "ALTER TABLE api_keys ADD COLUMN name TEXT NOT NULL "
	                            "DEFAULT ''")) != 0))
		return r;
	if ((r = sq_exists(c,
	                   "SELECT count(*) FROM pragma_table_info('api_keys') WHERE name = 'mac'",
	                   &has)) != 0 ||
	    (!has && (r = sq_run(c, "ALTER TABLE api_keys ADD COLUMN mac BLOB")) != 0))
		return r;
	if ((r = sq_exists(c,
	                   "SELECT count(*) FROM pragma_table_info('keys') WHERE name = 'expires'",
	                   &has)) != 0 ||
	    (!has && (r = sq_run(c, "ALTER TABLE keys ADD COLUMN expires INTEGER NOT NULL "
	                            "DEFAULT 0")) != 0))
		return r;
	if ((r = sq_run(c, SQ_REQUESTS_SCHEMA)) != 0)
		return r;
	if (!had_vp_triggers &&
	    (r = sq_run(c, "DELETE FROM counters WHERE k LIKE 'vp:%';"
	                   "INSERT INTO counters (k, n) SELECT 'vp:' || hex(vp), count(*) "
	                   "FROM keys GROUP BY vp;")) != 0)
		return r;
	if (!had_state_triggers &&
	    (r = sq_run(c, "DELETE FROM counters WHERE k >= 'state:' AND k < 'state;';"
	                   "INSERT INTO counters (k, n) SELECT 'state:' || state, count(*) "
	                   "FROM keys GROUP BY state;")) != 0)
		return r;
	return sq_run(c, SQ_EXPIRING_INDEX);
}

/* Creates the schema if missing, checks its version and the instance binding. */
static int sq_init_schema(struct sq_conn *c)
{
	char v[KY_ID_MAX + 1];
	int r, opened = 0, rc, has_meta = 0, had_vp_triggers = 0, had_state_triggers = 0;
	const char *instance = c->s->o.instance;

	if ((r = sq_wbegin(c, &opened)) != 0)
		return r;
	if ((r = sq_has_meta(c, &has_meta)) != 0)
		goto out;
	if (has_meta) {
		/* An existing store: refuse a schema this program does not know before touching
		 * anything. */
		r = sq_meta_get(c, "schema", v, sizeof(v));
		if (r == KY_ERR_NOT_FOUND || (r == 0 && strcmp(v, "1") != 0 && strcmp(v, "2") != 0))
			r = KY_ERR_STORE_SCHEMA;
		if (r != 0)
			goto out;
	}
	if ((r = sq_exists(c,
	                   "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND "
	                   "name = 'keys_vp_ins'",
	                   &had_vp_triggers)) != 0 ||
	    (r = sq_exists(c,
	                   "SELECT count(*) = 3 FROM sqlite_master WHERE type = 'trigger' AND "
	                   "name IN ('keys_state_ins', 'keys_state_del', 'keys_state_upd')",
	                   &had_state_triggers)) != 0)
		goto out;
	if ((rc = sqlite3_exec(c->db, sq_schema, NULL, NULL, NULL)) != SQLITE_OK) {
		r = sq_fail(rc);
		goto out;
	}
	if ((r = sq_upgrade(c, had_vp_triggers, had_state_triggers)) != 0)
		goto out;
	/* Schema 1 to 2: sq_schema made key_aliases. */
	if ((r = sq_run(c, "UPDATE meta SET v = '2' WHERE k = 'schema'")) != 0)
		goto out;
	if (instance != NULL) {
		r = sq_meta_get(c, "instance", v, sizeof(v));
		if (r == KY_ERR_NOT_FOUND)
			r = sq_meta_set(c, "instance", instance);
		else if (r == 0 && strcmp(v, instance) != 0)
			r = KY_ERR_WRONG_INSTANCE;
		if (r != 0)
			goto out;
	}
	r = 0;
out:
	return sq_wend(c, opened, r);
}

static void sq_close(void *be)
{
	struct sq_store *s = be;
	struct sq_conn *c;

	if (s == NULL)
		return;
	ky_gc_destroy(&s->gc); /* its committer first: it uses a connection closed below */
	c = pthread_getspecific(s->tls);
	if (c != NULL && c->in_txn) {
		(void)sq_exec(c, SQ_ROLLBACK);
		c->in_txn = 0;
		pthread_mutex_unlock(&s->wlock);
	}
	pthread_key_delete(s->tls); /* no destructor runs after this */
	/* Copy what the WAL holds into the database file before leaving, without waiting for
	 * other units: SQLite does it itself only when the last connection of all processes
	 * closes, and units that stop together can each see the other still open. A keys.db
	 * copied or moved alone after the units stop is then whole. */
	if (s->conns != NULL)
		(void)sqlite3_wal_checkpoint_v2(s->conns->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL,
		                                NULL);
	while ((c = s->conns) != NULL) {
		sq_unlink(s, c);
		sq_conn_close(c);
	}
	if (s->gen != NULL)
		munmap((void *)s->gen, SQ_GEN_SIZE);
	ky_ledger_mac_release(&s->L.mac);
	ky_ledger_index_release(&s->L.ix);
	pthread_mutex_destroy(&s->L.mu);
	pthread_mutex_destroy(&s->wlock);
	pthread_mutex_destroy(&s->lock);
	free((char *)s->o.instance);
	free(s->path);
	free(s);
}

#define SQ_OPEN_RETRY_MS 50 /* between tries of a store busy at open */

static int sq_open(const char *location, const struct ky_store_opts *opts, void **be)
{
	int r = KY_ERR_INTERNAL;
	struct sq_store *s = NULL;
	struct sq_conn *c;
	struct stat sb;
	int fd;

	*be = NULL;
	if (opts->instance != NULL &&
	    (opts->instance[0] == '\0' || strlen(opts->instance) > KY_ID_MAX))
		return KY_ERR_CONFIG;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return KY_ERR_NOMEM;
	for (uint64_t i = 0; i < SQ_QUIET_SLOTS; i++)
		atomic_init(&s->quiet[i], i + 1);
	s->o = *opts;
	s->dv_interval_ms = opts->data_version_ms > 0 ? opts->data_version_ms : SQ_DV_INTERVAL_MS;
	s->o.instance = NULL;
	/* The inserts' commits run on the store's own thread, at a lower priority. */
	if (ky_gc_init(&s->gc) != 0) {
		free(s);
		return KY_ERR_NOMEM;
	}
	if (ky_gc_committer(&s->gc, sq_key_insert_batch, s) != 0) {
		ky_gc_destroy(&s->gc);
		free(s);
		return KY_ERR_NOMEM;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->wlock, NULL);
	pthread_mutex_init(&s->L.mu, NULL);
	if (pthread_key_create(&s->tls, sq_conn_destructor) != 0) {
		pthread_mutex_destroy(&s->L.mu);
		ky_gc_destroy(&s->gc);
		pthread_mutex_destroy(&s->wlock);
		pthread_mutex_destroy(&s->lock);
		free(s);
		return KY_ERR_NOMEM;
	}
	if ((s->path = strdup(location)) == NULL ||
	    (opts->instance && (s->o.instance = strdup(opts->instance)) == NULL)) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	/* Storage the caller knows held records is never made anew. */
	if (opts->must_exist && (stat(location, &sb) != 0 || sb.st_size == 0)) {
		r = KY_ERR_STORAGE_MISSING;
		goto out;
	}
	/* Create the file owner-only; SQLite gives the -wal and -shm files the same mode. */
	if ((fd = open(location, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		r = KY_ERR_IO;
		goto out;
	}
	close(fd);
	sq_gen_map(s);
	/* Units started together race for the first write of a new file (WAL set-up, schema),
	 * where SQLite can answer busy without waiting: wait here too, at most busy_timeout_ms
	 * in all (measured: each try may itself wait in SQLite's busy handler), then say busy. */
	for (int64_t start = sq_now_ms();;) {
		if ((r = sq_conn(s, &c)) == 0)
			r = sq_init_schema(c);
		if (r != KY_ERR_STORE_BUSY || sq_now_ms() - start >= s->o.busy_timeout_ms)
			break;
		usleep(SQ_OPEN_RETRY_MS * 1000);
	}
	if (r != 0)
		goto out;
	s->made = true;
	*be = s;
	s = NULL; /* transferred */
	r = 0;
out:
	sq_close(s);
	return r;
}

const struct ky_store_ops ky_store_sqlite_ops = {
    .scheme = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .key_insert = sq_key_insert,
    .key_update = sq_key_update,
    .key_get = sq_key_get,
    .key_delete = sq_key_delete,
    .key_list = sq_key_list,
    .key_count = sq_key_count,
    .alias_find = sq_alias_find,
    .secret_put = sq_secret_put,
    .secret_get = sq_secret_get,
    .secret_delete = sq_secret_delete,
    .vp_count = sq_vp_count,
    .vp_fetch = sq_vp_fetch,
    .vp_swap = sq_vp_swap,
    .apikey_insert = sq_apikey_insert,
    .apikey_get = sq_apikey_get,
    .apikey_find = sq_apikey_find,
    .apikey_list = sq_apikey_list,
    .apikey_purge = sq_apikey_purge,
    .apikey_update = sq_apikey_update,
    .request_get = sq_request_get,
    .request_put = sq_request_put,
    .request_expire = sq_request_expire,
    .changed = sq_changed,
    .changes = sq_changes,
    .ledger_attach = sq_ledger_attach,
    .ledger_pos = sq_ledger_pos,
    .plan = sq_plan,
    .failure = sq_failure,
    .failure_clear = sq_failure_clear,
};
