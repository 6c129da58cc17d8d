/* Key storage: one function table, one backend per URI scheme.
 *
 * The store keeps rows; it never sees a secret in the clear. Each row of the keys and secrets
 * tables carries a few clear columns (for queries and listings), the verification pattern
 * (VP) of the master key its blob is sealed under, and the blob itself. lib/kms seals and
 * opens blobs and checks that the clear columns agree with the authenticated copy.
 *
 *   ky_store_open("sqlite:/var/lib/kyok/keys.db", &opts, &store)
 *
 * A store handle may be used by many threads at once: each thread gets its own backend
 * connection. ky_store_begin / _commit / _rollback apply to the calling thread's connection.
 * Several processes (the crypto units of an instance on one host) may open the same file.
 *
 * Every write bumps the row's rev; updates and re-encipherment swaps are compare-and-swap on
 * (rev, vp), so a concurrent writer is never silently overwritten: the loser gets
 * KY_ERR_CONFLICT (updates) or is left out of the swapped count (swaps).
 */
#ifndef KYOK_STORE_H
#define KYOK_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kyok/common.h"

#define KY_STORE_SCHEMA_VERSION    2
#define KY_STORE_KEY_LIMIT_DEFAULT 5000
#define KY_STORE_BUSY_MS_DEFAULT   10000
#define KY_STORE_WRITE_NICE        10  /* storage writes' nice: groupcommit.h, unitd/nice.h */
#define KY_KEY_NAME_MAX            90  /* Key Protect: 2 to 90 characters */
#define KY_KEY_ALIAS_MAX           90  /* a key alias: 2 to 90 characters (ky_key_alias_valid) */
#define KY_KEY_ALIASES_MAX         5   /* aliases of one key */
#define KY_KEY_RING_MAX            100 /* a key ring id: 2 to 100 characters (ky_key_ring_valid) */
#define KY_KEY_RING_DEFAULT        "default"
#define KY_SECRET_NAME_MAX         64
#define KY_APIKEY_ROLE_MAX         48 /* a role list (KY_ROLE_MAX) */
#define KY_APIKEY_HASH_LEN         32
#define KY_APIKEY_MAC_LEN          32
#define KY_STORE_APIKEY_NAME_MAX   64
#define KY_STORE_LEDGER_KEY_LEN    32
/* The secrets row that holds the storage integrity key: the one record the digest leaves out
 * (it is needed to check the digest; it never changes but for re-encipherment). */
#define KY_STORE_LEDGER_SECRET "storage-integrity-key"

struct ky_store; /* opaque */

struct ky_store_opts {
	uint32_t key_limit;   /* keys in the instance (all states until purged); 0 = 5,000 */
	int busy_timeout_ms;  /* wait for another process's write lock; 0 = 10 s */
	int no_group_commit;  /* 1: each insert commits alone (default: concurrent inserts
				       share one commit) */
	const char *instance; /* binds the store to this instance on first open and refuses
				       another one later (KY_ERR_WRONG_INSTANCE); NULL = no check */
	int must_exist;       /* 1: refuse (KY_ERR_STORAGE_MISSING) a store that does not exist
				       or is empty, instead of making a new one */
	int check_window_us;  /* PostgreSQL, ky_store_changed: 0 = KY_STORE_CHECK_WINDOW_US; < 0
				       = none (a read per call). Every handle on one store must
				       use the same: only tests set it */
	int data_version_ms;  /* SQLite, ky_store_changed: how often the safety net (PRAGMA
				       data_version) is read; 0 = 250 ms. Only tests set it */
};

/* PostgreSQL (ky_store_changed): a read of the commit counter answers the calls made within
 * this many microseconds after it was sent, and every commit returns only that long (and a
 * margin for clock rates) after the server confirmed it. */
#define KY_STORE_CHECK_WINDOW_US 2000

enum ky_store_table {
	KY_STORE_KEYS,
	KY_STORE_SECRETS,
};

/* One row of the keys table. blob is malloc'd and owned by the row. */
struct ky_store_row {
	char id[KY_UUID_LEN + 1];
	int64_t seq; /* creation order, assigned by insert */
	int64_t rev; /* write counter, assigned by insert/update: the CAS token */
	char name[KY_KEY_NAME_MAX + 1];
	int state;
	int extractable;
	int64_t created;
	int64_t updated;
	int64_t deleted;  /* deletion date, 0 = not deleted */
	uint32_t version; /* latest key version: bound in the blob's associated data */
	int64_t expires;  /* expiration date, 0 = none (listings by state as of a date) */
	uint8_t vp[KY_VP_LEN];
	uint8_t *blob;
	size_t bloblen;
	/* insert only: records under this VP count toward the key limit too (the other master
	 * key register during a rotation); NULL = only those under vp. */
	const uint8_t *limit_vp;
	/* insert and update only: the key's aliases (the sealed record holds them; the store
	 * keeps them in its alias index, unique in the store: KY_ERR_KEY_ALIAS_EXISTS when
	 * another key has one). They point into the caller's key, which outlives the call. */
	const char *aliases[KY_KEY_ALIASES_MAX];
	size_t naliases;
	bool stale; /* read only: not the record the storage digest holds (see below) */
	/* listings only: this row could not be read (KY_ERR_RECORD_TAMPERED: a column of a
	 * length or kind kyok never writes; KY_ERR_RECORD_STALE: a value its digest cannot
	 * cover). Only id is set, from the row's id column, shortened with "..." when longer:
	 * the listing withholds this row and goes on with the others. 0 = read. */
	int fault;
};

/* One row of the secrets table (system secrets such as a token signing key). */
struct ky_store_secret {
	char name[KY_SECRET_NAME_MAX + 1];
	int64_t seq;
	int64_t rev;
	int64_t created;
	int64_t updated;
	uint8_t vp[KY_VP_LEN];
	uint8_t *blob;
	size_t bloblen;
	bool stale; /* read only: not the record the storage digest holds (see below) */
};

/* A row as re-encipherment sees it, for either table. */
struct ky_store_vprow {
	char name[KY_SECRET_NAME_MAX + 1]; /* key id or secret name */
	int64_t seq;
	int64_t rev;
	uint32_t version; /* keys: latest version; secrets: 0 */
	uint8_t *blob;
	size_t bloblen;
};

struct ky_store_filter {
	unsigned states; /* bit (1u << state) for each state wanted; 0 = every state */
	int extractable; /* -1 = both, 0 = root keys only, 1 = standard keys only */
	/* > 0: states are matched as of this date (an Active key whose expiration date has
	 * passed is Deactivated); 0: the stored state. */
	int64_t now;
	/* NULL: records under any master key; else only records under vp_a or vp_b (vp_b may
	 * be NULL): those the unit's registers can open. */
	const uint8_t *vp_a, *vp_b;
	/* > 0: only records whose seq is above it. A walk over every key resumes after the last
	 * row of its previous page this way: no page costs more than its own rows (an offset
	 * would read again every row before it). */
	int64_t after_seq;
};

/* API keys: only a hash of the key is kept. The store keeps mac as it is given: computing
 * and checking it is the caller's (ky_kms_apikey_mac). */
struct ky_store_apikey {
	char id[KY_ID_MAX + 1];
	char name[KY_STORE_APIKEY_NAME_MAX + 1]; /* label for listings, "" when none */
	char role[KY_APIKEY_ROLE_MAX + 1];
	uint8_t hash[KY_APIKEY_HASH_LEN];
	int64_t created;
	int64_t revoked; /* 0 = valid */
	bool has_mac;    /* false: a row without one (made by hand, or by an older program) */
	uint8_t mac[KY_APIKEY_MAC_LEN];
	bool stale; /* read only: not the record the storage digest holds (see below) */
};

/* A request that changed something, remembered under the id its client gave it (header
 * Idempotency-Key), so that the same request sent again (to this unit or another) gets the
 * same reply instead of a second change. The row is written in the transaction of the change
 * itself. body is the reply body sealed by lib/kms (ky_kms_request_seal) under the master
 * key whose VP is vp; the store never sees it in the clear. */
#define KY_REQUEST_ID_MAX   128
#define KY_REQUEST_HASH_LEN 32
struct ky_store_request {
	char apikey[KY_ID_MAX + 1];        /* the caller's API key id: ids are per caller */
	char id[KY_REQUEST_ID_MAX + 1];    /* the client's request id */
	uint8_t hash[KY_REQUEST_HASH_LEN]; /* SHA-256 of method, path and body */
	int status;                        /* HTTP status of the reply */
	int64_t created;
	uint8_t vp[KY_VP_LEN];
	uint8_t *body; /* sealed reply body, malloc'd */
	size_t bodylen;
};

enum ky_store_plan {
	KY_STORE_PLAN_GET,         /* key lookup by id */
	KY_STORE_PLAN_VP_FETCH,    /* re-encipherment batch fetch */
	KY_STORE_PLAN_APIKEY,      /* api key lookup by hash */
	KY_STORE_PLAN_STATE_COUNT, /* count by states as of a date (counters, keys_expiring) */
};

/* A position in the storage's history: generation (bumped by every write transaction) and
 * epoch (bumped when the administrators accept storage that went back in time). */
struct ky_store_ledger_pos {
	uint64_t gen;
	uint64_t epoch;
};

/* A record written (inserted, updated or deleted) by a committed transaction. */
enum ky_store_record {
	KY_STORE_REC_KEY,    /* id is a key id */
	KY_STORE_REC_SECRET, /* id is a secret name */
	KY_STORE_REC_APIKEY, /* id is an API key id */
};
#define KY_STORE_CHANGE_ID_MAX 64 /* key ids, secret names and API key ids are shorter */
struct ky_store_change {
	enum ky_store_record rec;
	char id[KY_STORE_CHANGE_ID_MAX + 1];
};
/* A position in the change log: seq counts the record changes ever logged; check is the
 * backend's fingerprint of the change at seq (0 when seq is 0), so that a log that is not the
 * one the position was taken from (a file replaced, rows removed) is noticed. */
struct ky_store_change_pos {
	uint64_t seq;
	uint64_t check;
};
#define KY_STORE_CHANGES_MAX 4096 /* longer answers are "everything changed" */
/* SQLite: rows a handle's group commits insert without telling its threads (ky_store_changed)
 * between two of its ky_store_changes; past it, its commits are told again, so the log read
 * next stays well within KY_STORE_CHANGES_MAX. */
#define KY_STORE_QUIET_ROWS 512

/* The backend function table. be is the backend's handle from open. */
struct ky_store_ops {
	const char *scheme; /* "sqlite" in "sqlite:/path" */
	int (*open)(const char *location, const struct ky_store_opts *opts, void **be);
	void (*close)(void *be);
	int (*begin)(void *be); /* write transaction on this thread's connection */
	int (*commit)(void *be);
	int (*rollback)(void *be);
	int (*key_insert)(void *be, struct ky_store_row *row);
	int (*key_update)(void *be, struct ky_store_row *row);
	int (*key_get)(void *be, const char *id, struct ky_store_row *row);
	int (*key_delete)(void *be, const char *id, int64_t rev);
	int (*key_list)(void *be, const struct ky_store_filter *f, uint32_t limit, uint64_t offset,
	                struct ky_store_row **rows, size_t *n);
	int (*key_count)(void *be, const struct ky_store_filter *f, uint64_t *n);
	int (*alias_find)(void *be, const char *alias, char id[KY_UUID_LEN + 1]);
	int (*secret_put)(void *be, struct ky_store_secret *s, int64_t expect_rev);
	int (*secret_get)(void *be, const char *name, struct ky_store_secret *s);
	int (*secret_delete)(void *be, const char *name);
	int (*vp_count)(void *be, enum ky_store_table t, const uint8_t vp[KY_VP_LEN], uint64_t *n);
	int (*vp_fetch)(void *be, enum ky_store_table t, const uint8_t vp[KY_VP_LEN],
	                const char *after, size_t max, struct ky_store_vprow **rows, size_t *n);
	int (*vp_swap)(void *be, enum ky_store_table t, const uint8_t old_vp[KY_VP_LEN],
	               const uint8_t new_vp[KY_VP_LEN], const struct ky_store_vprow *rows, size_t n,
	               size_t *swapped);
	int (*apikey_insert)(void *be, const struct ky_store_apikey *k);
	int (*apikey_get)(void *be, const char *id, struct ky_store_apikey *k);
	int (*apikey_find)(void *be, const uint8_t hash[KY_APIKEY_HASH_LEN],
	                   struct ky_store_apikey *k);
	int (*apikey_list)(void *be, struct ky_store_apikey **keys, size_t *n);
	int (*apikey_purge)(void *be, uint64_t *n);
	int (*apikey_update)(void *be, const struct ky_store_apikey *k, const uint8_t *old_mac);
	int (*request_get)(void *be, const char *apikey, const char *id,
	                   struct ky_store_request *req);
	int (*request_put)(void *be, const struct ky_store_request *req);
	int (*request_expire)(void *be, int64_t before, uint64_t *n);
	int (*changed)(void *be, int *changed);
	int (*changes)(void *be, struct ky_store_change_pos *pos, struct ky_store_change **out,
	               size_t *n, int *all);
	int (*ledger_attach)(void *be, const uint8_t key[KY_STORE_LEDGER_KEY_LEN],
	                     const struct ky_store_ledger_pos *floor, int adopt,
	                     struct ky_store_ledger_pos *pos);
	int (*ledger_pos)(void *be, struct ky_store_ledger_pos *pos);
	int (*plan)(void *be, enum ky_store_plan what, char *out, size_t outlen);
	void (*failure)(void *be, char *out, size_t outlen);
	void (*failure_clear)(void *be);
	/* What the last open that failed on this thread knew of the cause; NULL = nothing. */
	void (*open_failure)(char *out, size_t outlen);
};

extern const struct ky_store_ops ky_store_sqlite_ops;
/* "postgresql://..." and "postgres://...": libpq's URI (lib/store/pg.c) */
extern const struct ky_store_ops ky_store_pg_ops;
extern const struct ky_store_ops ky_store_pg_short_ops;

/* ---- opening ---- */

/* uri = "<scheme>:<location>". KY_ERR_CONFIG for an unknown scheme, KY_ERR_STORE_SCHEMA for
 * a schema newer than this program, KY_ERR_WRONG_INSTANCE (opts->instance differs from the
 * one the store was created for). opts may be NULL (defaults). */
int ky_store_open(const char *uri, const struct ky_store_opts *opts, struct ky_store **out) KY_WUR;
void ky_store_close(struct ky_store *s); /* NULL ok; no other thread may still use s */

/* ---- transactions (calling thread) ---- */

/* BEGIN IMMEDIATE: takes the write lock now (KY_ERR_STORE_BUSY after the busy timeout).
 * Nested begin is KY_ERR_USAGE. Inserts inside a transaction do not use group commit. */
int ky_store_begin(struct ky_store *s) KY_WUR;
int ky_store_commit(struct ky_store *s) KY_WUR;
int ky_store_rollback(struct ky_store *s); /* no-op outside a transaction */

/* ---- keys ---- */

/* Inserts a new row: the key limit is checked in the same transaction (KY_ERR_KEY_LIMIT);
 * KY_ERR_EXISTS for a duplicate id, KY_ERR_KEY_ALIAS_EXISTS when another key has one of
 * row->aliases. Sets row->seq and row->rev. */
int ky_store_key_insert(struct ky_store *s, struct ky_store_row *row) KY_WUR;
/* Replaces every column of row->id iff its rev is still row->rev (else KY_ERR_CONFLICT;
 * KY_ERR_NOT_FOUND if gone), and its aliases in the alias index by row->aliases
 * (KY_ERR_KEY_ALIAS_EXISTS when another key has one). Sets row->rev to the new rev. */
int ky_store_key_update(struct ky_store *s, struct ky_store_row *row) KY_WUR;
/* KY_ERR_NOT_FOUND. row is overwritten (release it before reuse). */
int ky_store_key_get(struct ky_store *s, const char *id, struct ky_store_row *row) KY_WUR;
/* Deletes (purges) row id iff its rev is rev (KY_ERR_CONFLICT / KY_ERR_NOT_FOUND), and its
 * aliases. */
int ky_store_key_delete(struct ky_store *s, const char *id, int64_t rev) KY_WUR;
/* Rows in creation order, filtered; limit 0 = no limit. *rows is an array of *n rows. */
int ky_store_key_list(struct ky_store *s, const struct ky_store_filter *f, uint32_t limit,
                      uint64_t offset, struct ky_store_row **rows, size_t *n) KY_WUR;
/* Rows matching f. Constant time for NULL (all) and a filter by VPs alone; a filter by states
 * alone (and a date) reads per-state counters and, with a date, the Active keys expired by
 * then (lib/store/count.h); any other filter reads the table. */
int ky_store_key_count(struct ky_store *s, const struct ky_store_filter *f, uint64_t *n) KY_WUR;
/* The key id the alias index names for alias (KY_ERR_NOT_FOUND: none). The index is not
 * authenticated: it only finds the record, whose sealed copy must then list the alias
 * (ky_kms_alias_resolve checks it). */
int ky_store_alias_find(struct ky_store *s, const char *alias, char id[KY_UUID_LEN + 1]) KY_WUR;
void ky_store_row_release(struct ky_store_row *row); /* frees the blob, keeps the struct */
void ky_store_rows_free(struct ky_store_row *rows, size_t n);

/* ---- secrets ---- */

/* expect_rev: 0 = create (KY_ERR_EXISTS if present), otherwise CAS on rev (KY_ERR_CONFLICT).
 * Sets s->seq, s->rev. */
int ky_store_secret_put(struct ky_store *s, struct ky_store_secret *sec, int64_t expect_rev) KY_WUR;
int ky_store_secret_get(struct ky_store *s, const char *name, struct ky_store_secret *sec) KY_WUR;
int ky_store_secret_delete(struct ky_store *s, const char *name) KY_WUR;
void ky_store_secret_release(struct ky_store_secret *sec);

/* ---- re-encipherment ---- */

/* Rows of table t whose blob is under vp. */
int ky_store_vp_count(struct ky_store *s, enum ky_store_table t, const uint8_t vp[KY_VP_LEN],
                      uint64_t *n) KY_WUR;
/* Up to max rows under vp whose key id / secret name sorts after after ("" or NULL = from
 * the start), in that order (storage order: a batch touches neighbouring pages). */
int ky_store_vp_fetch(struct ky_store *s, enum ky_store_table t, const uint8_t vp[KY_VP_LEN],
                      const char *after, size_t max, struct ky_store_vprow **rows,
                      size_t *n) KY_WUR;
/* In ONE transaction, for each row: blob := rows[i].blob, vp := new_vp, rev += 1 where the
 * stored row still has vp = old_vp and rev = rows[i].rev. *swapped counts rows replaced; a row
 * changed meanwhile is left as the concurrent writer left it. */
int ky_store_vp_swap(struct ky_store *s, enum ky_store_table t, const uint8_t old_vp[KY_VP_LEN],
                     const uint8_t new_vp[KY_VP_LEN], const struct ky_store_vprow *rows, size_t n,
                     size_t *swapped) KY_WUR;
void ky_store_vprows_free(struct ky_store_vprow *rows, size_t n);

/* ---- API keys (hashes only) ---- */

int ky_store_apikey_insert(struct ky_store *s, const struct ky_store_apikey *k) KY_WUR;
int ky_store_apikey_get(struct ky_store *s, const char *id, struct ky_store_apikey *k) KY_WUR;
/* Lookup by hash (the caller compares nothing itself: the index does). KY_ERR_NOT_FOUND. */
int ky_store_apikey_find(struct ky_store *s, const uint8_t hash[KY_APIKEY_HASH_LEN],
                         struct ky_store_apikey *k) KY_WUR;
/* Every API key (revoked ones too), oldest first; *keys is malloc'd (free()). */
int ky_store_apikey_list(struct ky_store *s, struct ky_store_apikey **keys, size_t *n) KY_WUR;
/* Replaces name, role, created, revoked and mac of row k->id iff its hash is still k->hash and
 * its mac is still old_mac (NULL: the row has none, or one of the wrong size). KY_ERR_CONFLICT when the row changed,
 * KY_ERR_NOT_FOUND when there is none. */
int ky_store_apikey_update(struct ky_store *s, const struct ky_store_apikey *k,
                           const uint8_t *old_mac) KY_WUR;
/* Deletes every API key (their integrity key was crypto-shredded); *n = how many. */
int ky_store_apikey_purge(struct ky_store *s, uint64_t *n) KY_WUR;

/* ---- request ids (Idempotency-Key) ---- */

/* The row of (apikey, id): KY_ERR_NOT_FOUND when there is none. req is overwritten (release
 * it before reuse). */
int ky_store_request_get(struct ky_store *s, const char *apikey, const char *id,
                         struct ky_store_request *req) KY_WUR;
/* Inserts a row (KY_ERR_EXISTS when (apikey, id) has one). Meant for inside the write
 * transaction (ky_store_begin) of the change the row records. */
int ky_store_request_put(struct ky_store *s, const struct ky_store_request *req) KY_WUR;
/* Deletes the rows created before before; *n = how many. */
int ky_store_request_expire(struct ky_store *s, int64_t before, uint64_t *n) KY_WUR;
void ky_store_request_release(struct ky_store_request *req); /* frees body, keeps the struct */

/* ---- change detection ---- */

/* *changed = 1 when anything may have been committed to the store since the calling thread
 * last asked (by any thread or process; the thread's own writes may be reported too), and on
 * a thread's first call; else 0. A commit made through kyok is seen by every call made after
 * the write returned; writes by other programs within a fraction of a second. On SQLite, a
 * commit by this handle's group commit need not be reported to the handle's threads: it
 * changes no key, secret or API key row that existed (it inserts key rows: no cache above can
 * hold a record before it exists); the handle's other writes and every write by another
 * handle, process or program are reported. Cheap: on
 * SQLite usually no system call; on PostgreSQL one read of the server shared by the calls
 * made within KY_STORE_CHECK_WINDOW_US of when it was sent (a write through kyok returns
 * only once that window has passed since its commit, so no call after it takes an older
 * answer). Meant to be called once per request by caches above the store. */
int ky_store_changed(struct ky_store *s, int *changed) KY_WUR;

/* What changed since *pos, for caches above the store that drop only what changed.
 *
 * The backend logs every record change (keys, secrets, API keys) in the transaction that makes
 * it, whoever writes (any thread, process or host, and programs other than kyok: both
 * backends log with triggers), numbered in commit order without a gap, and keeps at least the
 * last KY_STORE_CHANGES_MAX changes (lib/store/changelog.h: when the log can tell).
 * In: *pos, where the caller last was ({0, 0}: the start of the log). Out: *pos = where the
 * log is now, and either
 *   *all = 0, *out = the records changed after the old position up to the new one (*n of
 *          them, a record possibly more than once, in commit order; malloc'd, free()), or
 *   *all = 1, *out = NULL: the log cannot tell (pruned past the old position, behind it, not
 *          the log the position was taken from, more than KY_STORE_CHANGES_MAX changes, a
 *          gap): the caller must take every record as changed.
 * The answer comes from one snapshot. A caller that acts on it before reading any record
 * it caches never keeps a record older than that snapshot. On an error *pos is unchanged
 * and *all = 1. Meant to be called when ky_store_changed says 1 (a few index reads). */
int ky_store_changes(struct ky_store *s, struct ky_store_change_pos *pos,
                     struct ky_store_change **out, size_t *n, int *all) KY_WUR;

/* ---- storage digest (rollback detection) ----
 *
 * Once attached with the storage integrity key, the store keeps a digest of every record
 * (keys, secrets but KY_STORE_LEDGER_SECRET, API keys): a generation, an epoch, the count and
 * the sum mod 2^256 of one HMAC tag per record, MAC'd under the key, updated in the same
 * transaction as every write. The handle keeps an index record -> tag, checked against the
 * digest when attached and brought up to date through the generation when another process
 * wrote. Every row read is checked against it before it is returned:
 *   stale = true             the row is not the one last written (an older copy, altered or
 *                            made by hand): returned so that the caller checks its own seal
 *                            or tag first (KY_ERR_RECORD_TAMPERED when that fails, else
 *                            KY_ERR_RECORD_STALE) and may write the record anew; it must
 *                            never serve it. Re-encipherment fetches fail instead
 *                            (KY_ERR_RECORD_STALE).
 *   KY_ERR_RECORD_MISSING    a record the digest holds is gone (deleted by hand)
 *   KY_ERR_STORAGE_ROLLBACK  the digest is older than one this handle saw (or than floor)
 *   KY_ERR_STORAGE_MISSING   the digest is gone (storage emptied or replaced by a new file)
 *   KY_ERR_LEDGER_TAMPERED   the digest does not authenticate
 *   KY_ERR_LEDGER_MISMATCH   the records do not add up to the digest
 * Before attach nothing is checked, and a write to a store that has a digest is refused
 * (KY_ERR_LEDGER_KEY) but for the KY_STORE_LEDGER_SECRET row.
 *
 * Attach: floor is the highest position the caller saw before (0/0: none; then the stored
 * digest is taken as it is, or made when there is none). With floor->gen > 0 a store without
 * a digest is KY_ERR_STORAGE_MISSING, an older generation or another epoch
 * KY_ERR_STORAGE_ROLLBACK. adopt = 1 (a restore the administrators accepted, or a new
 * integrity key): the records are taken as they are and a new digest is written at
 * generation max(stored, floor) + 1, epoch max(stored, floor + 1) when the stored digest
 * authenticated under key (a restore: the first unit to accept it starts a new epoch, the
 * others join it), else max(stored, floor) (a new key: the digest's history goes on).
 * *pos = where the store is.
 * May be called again (a new key, or after a refusal). */
int ky_store_ledger_attach(struct ky_store *s, const uint8_t key[KY_STORE_LEDGER_KEY_LEN],
                           const struct ky_store_ledger_pos *floor, int adopt,
                           struct ky_store_ledger_pos *pos) KY_WUR;
/* The highest position checked by this handle; KY_ERR_USAGE when not attached. */
int ky_store_ledger_pos(struct ky_store *s, struct ky_store_ledger_pos *pos) KY_WUR;

/* ---- diagnostics ---- */

/* What the last failure on this thread was, as the backend knows it, for a log line: where
 * the storage is and the backend's own message, e.g. "key storage '/srv/keys.db': SQLite:
 * database or disk is full (result code 13); system: No space left on device". Without a
 * failure since ky_store_failure_clear, only where the storage is. Never holds record data. */
void ky_store_failure(struct ky_store *s, char *out, size_t outlen);
void ky_store_failure_clear(struct ky_store *s);
/* The cause of the last ky_store_open that failed on this thread, as its backend knew it
 * (e.g. "key storage 'postgresql://kyok@db1:5432/kyok': PostgreSQL: connection refused"),
 * "" when it knew nothing more than the error code. Never holds a password. */
void ky_store_open_failure(char *out, size_t outlen);

/* The backend's query plan for a hot query, as text (tests check that indexes are used). */
int ky_store_plan(struct ky_store *s, enum ky_store_plan what, char *out, size_t outlen) KY_WUR;
/* Effective key limit. */
uint32_t ky_store_key_limit(const struct ky_store *s);

#endif
