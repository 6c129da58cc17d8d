/* Key objects of the key-management API: root and standard keys, their versions, states and
 * policies; the authoritative record sealed under the master key; wrap/unwrap/rewrap.
 *
 * Record (one per key, in the store's blob column):
 *   blob = nonce (12) || AES-256-GCM(master key, record) || tag (16)
 *   AAD  = lp("kyok-record-v1") || lp(instance) || lp(key id) || u32 latest version || lp(vp)
 *          (lp = u16 big-endian length, then the bytes)
 * The record holds every field of struct ky_key and every version's material. On open the
 * clear columns of the row must equal the authenticated copy, else KY_ERR_RECORD_TAMPERED.
 * A record is opened only under the master key whose VP it names: current or committed new
 * register, else KY_ERR_MK_MISMATCH. New and updated records go under the committed new key
 * when there is one (rotation in progress), else under the current key.
 *
 * Wrapped key (what clients get, base64 in the API):
 *   "KYW1" || u32 BE key version || nonce (12) || AES-GCM(version material, plaintext) || tag
 *   AAD = "KYW1" || lp(key id) || u32 version || u32 BE client aad length || client aad
 * The cipher is AES-256-GCM for 32-byte root keys (AES-128/192-GCM for imported 16/24-byte
 * root keys).
 */
#ifndef KYOK_KMS_H
#define KYOK_KMS_H

#include <stddef.h>
#include <stdint.h>

#include "kyok/common.h"
#include "kyok/crypto.h"
#include "kyok/store.h"

#define KY_KEY_DESC_MAX     240
#define KY_KEY_ACTOR_MAX    128
#define KY_KEY_PAYLOAD_MAX  7500 /* imported standard key payload */
#define KY_KEY_VERSIONS_MAX 10000
/* The largest sealed record a unit writes or opens (a root key of about 84 bytes a version
 * reaches it after some 12,000 versions, more than KY_KEY_VERSIONS_MAX). A larger stored
 * one is refused as tampered before any memory is set aside for it. */
#define KY_KMS_RECORD_MAX (1024 * 1024)
/* The secure heap a process that opens key records sets up: 24 records of
 * KY_KMS_RECORD_MAX at once besides the unit's key cache (a power of two). */
#define KY_KMS_SECURE_HEAP     (32 * 1024 * 1024)
#define KY_DEK_LEN             32
#define KY_WRAP_MAGIC          "KYW1"
#define KY_WRAP_NONCE_LEN      KY_GCM_IV_LEN
#define KY_WRAP_TAG_LEN        KY_GCM_TAG_LEN
#define KY_WRAP_OVERHEAD       (4 + 4 + KY_WRAP_NONCE_LEN + KY_WRAP_TAG_LEN)
#define KY_WRAP_PT_MAX         7500
#define KY_WRAP_AAD_MAX        65536
#define KY_KMS_DAY             86400
#define KY_KMS_RESTORE_WINDOW  (30 * KY_KMS_DAY) /* destroyed -> restorable */
#define KY_KMS_PURGE_DELAY     (4 * 3600)        /* destroyed -> purge allowed */
#define KY_KMS_DUAL_AUTH_VALID (7 * KY_KMS_DAY)  /* set for deletion -> expires */
#define KY_KMS_BATCH_DEFAULT   500

enum ky_key_state {
	KY_KEY_PREACTIVE = 0, /* on paper only: never stored */
	KY_KEY_ACTIVE = 1,
	KY_KEY_SUSPENDED = 2,
	KY_KEY_DEACTIVATED = 3, /* expiration date passed */
	KY_KEY_DESTROYED = 5,
};

/* ---- master keys ---- */

/* A master key register's content. Allocated in the secure heap by ky_mk_new. */
struct ky_mk {
	uint8_t key[KY_MK_LEN];
	uint8_t vp[KY_VP_LEN];
};

int ky_mk_new(const uint8_t key[KY_MK_LEN], struct ky_mk **out) KY_WUR; /* computes the VP */
void ky_mk_free(struct ky_mk *mk);

/* What a crypto unit hands to every kms call: its store and its registers. */
struct ky_kms {
	struct ky_store *store;
	const char *instance;
	const struct ky_mk *current; /* current register, NULL when empty */
	const struct ky_mk *next;    /* new register when committed, else NULL */
};

/* ---- key objects ---- */

struct ky_key_version {
	uint32_t n; /* 1, 2, ... */
	char id[KY_UUID_LEN + 1];
	int64_t created;
	size_t len;
	uint8_t *material; /* secure heap; NULL when loaded with KY_KMS_METADATA_ONLY */
};

/* A key alias: another name a key is addressed by, unique in the instance. */
struct ky_key_alias {
	char name[KY_KEY_ALIAS_MAX + 1];
	char created_by[KY_KEY_ACTOR_MAX + 1];
	int64_t created;
};

/* The fields every key request reads come first, the long texts last: a key the unit keeps
 * opened in its cache is read from a few cache lines (unitd/keystore.c). */
struct ky_key {
	char id[KY_UUID_LEN + 1];
	int extractable; /* 1 = standard key, 0 = root key */
	int imported;    /* material came from the client */
	int state;       /* enum ky_key_state */
	uint32_t nversions;
	struct ky_key_version *versions; /* ascending; versions[nversions - 1] is the newest */
	int64_t created;
	int64_t updated;
	int64_t expires;          /* 0 = never */
	int64_t deleted;          /* deletion date, 0 = not deleted */
	uint32_t rotation_months; /* rotation policy, 0 = none */
	int dual_auth;            /* dual-authorization delete policy */
	int64_t deletion_set_at;
	uint32_t naliases;              /* 0..KY_KEY_ALIASES_MAX, in the order they were made */
	char ring[KY_KEY_RING_MAX + 1]; /* its key ring, KY_KEY_RING_DEFAULT unless moved */
	/* storage bookkeeping, filled by ky_kms_record_open / _key_create */
	int64_t seq;
	int64_t rev;
	uint8_t vp[KY_VP_LEN];
	char name[KY_KEY_NAME_MAX + 1];
	char description[KY_KEY_DESC_MAX + 1];
	char created_by[KY_KEY_ACTOR_MAX + 1];
	char deleted_by[KY_KEY_ACTOR_MAX + 1];
	char deletion_set_by[KY_KEY_ACTOR_MAX + 1]; /* "" = not set for deletion */
	struct ky_key_alias aliases[KY_KEY_ALIASES_MAX];
};

struct ky_key_spec {
	const char *name;
	const char *description; /* NULL = "" */
	int extractable;
	const uint8_t *payload;     /* imported material; NULL = generate 32 bytes */
	size_t len;                 /* root: 16, 24 or 32; standard: 1..KY_KEY_PAYLOAD_MAX */
	int64_t expires;            /* 0 = never */
	const char *actor;          /* created_by; NULL = "" */
	const char *const *aliases; /* naliases of them (KY_ERR_KEY_ALIAS_INVALID, _QUOTA,
	                               _EXISTS for one given twice) */
	size_t naliases;
	const char *ring; /* NULL = KY_KEY_RING_DEFAULT: ky_kms_key_create_in checks it exists */
};

enum ky_key_action {
	KY_KEY_ENABLE,
	KY_KEY_DISABLE,
	KY_KEY_ROTATE,
	KY_KEY_SET_DELETION,
	KY_KEY_UNSET_DELETION,
	KY_KEY_DELETE,
	KY_KEY_RESTORE,
	KY_KEY_PURGE,
	KY_KEY_SET_POLICY,
	KY_KEY_ALIAS_ADD,    /* alias: KY_ERR_KEY_ALIAS_INVALID, _EXISTS (this key), _QUOTA */
	KY_KEY_ALIAS_DELETE, /* alias: KY_ERR_KEY_ALIAS_NOT_FOUND */
	KY_KEY_SET_RING,     /* ring (ky_kms_key_move checks that it exists) */
};

struct ky_key_act {
	enum ky_key_action action;
	const char *actor;      /* who asks (dual authorization, deleted_by) */
	const uint8_t *payload; /* KY_KEY_ROTATE of an imported key */
	size_t len;
	int rotation_months; /* KY_KEY_SET_POLICY: -1 unchanged, 0 off, 1..12 */
	int dual_auth;       /* KY_KEY_SET_POLICY: -1 unchanged, 0 off, 1 on */
	const char *alias;   /* KY_KEY_ALIAS_ADD, KY_KEY_ALIAS_DELETE */
	const char *ring;    /* KY_KEY_SET_RING */
};

/* What a key alias may be (Key Protect's rule): 2 to KY_KEY_ALIAS_MAX characters of
 * A-Z a-z 0-9 '-' '_', not a UUID (in either case: it would read as a key id), and not
 * "registrations" (GET /keys/registrations is another request). */
bool ky_key_alias_valid(const char *alias);

/* New key in memory (id and material generated unless imported). KY_ERR_KEY_NAME,
 * KY_ERR_KEY_MATERIAL. */
int ky_key_new(const struct ky_key_spec *spec, int64_t now, struct ky_key **out) KY_WUR;
void ky_key_free(struct ky_key *k); /* cleanses material; NULL ok */
void ky_keys_free(struct ky_key **keys, size_t n);
/* The state as of now: an Active key past its expiration date is Deactivated. */
int ky_key_state_at(const struct ky_key *k, int64_t now);
/* The rules: 0 when a may be applied to k now, else the refusal (KY_ERR_KEY_STATE,
 * KY_ERR_KEY_NOT_ACTIVE, KY_ERR_KEY_DESTROYED, KY_ERR_KEY_NOT_DESTROYED, KY_ERR_KEY_NOT_ROOT,
 * KY_ERR_ROTATE_MATERIAL, KY_ERR_KEY_MATERIAL, KY_ERR_DUAL_AUTH_*, KY_ERR_RESTORE_EXPIRED,
 * KY_ERR_PURGE_TOO_EARLY). */
int ky_key_check(const struct ky_key *k, const struct ky_key_act *a, int64_t now) KY_WUR;
/* ky_key_check, then the change in memory (KY_KEY_PURGE changes nothing: the caller
 * deletes the record). */
int ky_key_apply(struct ky_key *k, const struct ky_key_act *a, int64_t now) KY_WUR;

/* ---- the authoritative record ---- */

#define KY_KMS_METADATA_ONLY 1 /* open/decode without key material (listings) */

/* Serialises k (secure heap; free with ky_kms_buf_free). */
int ky_kms_record_encode(const struct ky_key *k, uint8_t **out, size_t *len) KY_WUR;
/* Parses a record (KY_ERR_MALFORMED). flags: KY_KMS_METADATA_ONLY. */
int ky_kms_record_decode(const uint8_t *p, size_t n, int flags, struct ky_key **out) KY_WUR;
void ky_kms_buf_free(uint8_t *p, size_t n); /* cleanses */
/* Fills row (clear columns, vp, malloc'd blob) with k sealed under kms->next if set, else
 * kms->current. row->rev is left to the caller (CAS token of the row it replaces). */
int ky_kms_record_seal(const struct ky_kms *kms, const struct ky_key *k,
                       struct ky_store_row *row) KY_WUR;
/* KY_ERR_MK_MISMATCH, KY_ERR_RECORD_TAMPERED, KY_ERR_RECORD_STALE (row->stale: it opens, but
 * the storage digest holds another copy). */
int ky_kms_record_open(const struct ky_kms *kms, const struct ky_store_row *row, int flags,
                       struct ky_key **out) KY_WUR;

/* ---- keys in the store ---- */

/* The key that has alias: its id in id. KY_ERR_NOT_FOUND when no key has it;
 * KY_ERR_RECORD_TAMPERED when the store's alias index names a key whose sealed record does not
 * list the alias (the index was altered); the errors of ky_kms_key_get. */
int ky_kms_alias_resolve(const struct ky_kms *kms, const char *alias, int64_t now,
                         char id[KY_UUID_LEN + 1]) KY_WUR;

/* A new key with aliases, and KY_KEY_ALIAS_ADD (ky_kms_key_act), read every sealed record the
 * unit opens first: an alias that one of another key lists is KY_ERR_KEY_ALIAS_EXISTS when the
 * store's alias index names that key, KY_ERR_RECORD_TAMPERED when it does not (a row of the
 * index was deleted by hand: the alias is not given to a second key). */
int ky_kms_key_create(const struct ky_kms *kms, const struct ky_key_spec *spec, int64_t now,
                      struct ky_key **out) KY_WUR;
/* state is the state as of now (ky_key_state_at). */
int ky_kms_key_get(const struct ky_kms *kms, const char *id, int flags, int64_t now,
                   struct ky_key **out) KY_WUR;
/* Records a listing leaves out because they fail their own checks (KY_ERR_RECORD_TAMPERED,
 * KY_ERR_RECORD_STALE): how many, and the ids and errors of the first KY_KMS_WITHHELD_IDS. */
#define KY_KMS_WITHHELD_IDS 8
struct ky_kms_withheld {
	size_t n;
	char ids[KY_KMS_WITHHELD_IDS][KY_UUID_LEN + 1];
	int errs[KY_KMS_WITHHELD_IDS];
};

/* Metadata of the keys matching f (NULL = all), in creation order; total = all matches. With
 * wh NULL one record that fails its checks fails the listing; otherwise it is left out and
 * counted in *wh, and the others are listed. */
int ky_kms_key_list(const struct ky_kms *kms, const struct ky_store_filter *f, uint32_t limit,
                    uint64_t offset, int64_t now, struct ky_key ***keys, size_t *n, uint64_t *total,
                    struct ky_kms_withheld *wh) KY_WUR;
/* Load, ky_key_apply, store with compare-and-swap (retried on a concurrent change); purge
 * deletes the row. out (may be NULL) receives the key as stored (NULL after a purge). */
int ky_kms_key_act(const struct ky_kms *kms, const char *id, const struct ky_key_act *a,
                   int64_t now, struct ky_key **out) KY_WUR;

/* ---- key rings (lib/kms/ring.c) ---- */

#define KY_KEY_RINGS_MAX    50          /* key rings of an instance besides 'default' */
#define KY_KMS_SECRET_RINGS "key-rings" /* the system secret that lists them */

struct ky_key_ring {
	char id[KY_KEY_RING_MAX + 1];
	char created_by[KY_KEY_ACTOR_MAX + 1];
	int64_t created;
};
/* The rings an instance made ('default' is never in the list: every instance has it). */
struct ky_key_rings {
	size_t n;
	struct ky_key_ring rings[KY_KEY_RINGS_MAX];
};

/* What a key ring id may be (Key Protect's rule): 2 to KY_KEY_RING_MAX characters of
 * A-Z a-z 0-9 '-'. */
bool ky_key_ring_valid(const char *id);
/* Parses the stored list (KY_ERR_MALFORMED). Pure. */
int ky_kms_rings_decode(const uint8_t *p, size_t n, struct ky_key_rings *out) KY_WUR;
/* The stored list (empty when no ring was ever made). */
int ky_kms_rings_get(const struct ky_kms *kms, struct ky_key_rings *out) KY_WUR;
/* 0 when ring id exists ('default' always does), else KY_ERR_KEY_RING_NOT_FOUND. */
int ky_kms_ring_check(const struct ky_kms *kms, const char *id) KY_WUR;
/* KY_ERR_KEY_RING_INVALID, KY_ERR_KEY_RING_EXISTS ('default' too), KY_ERR_KEY_RING_QUOTA. */
int ky_kms_ring_create(const struct ky_kms *kms, const char *id, const char *actor,
                       int64_t now) KY_WUR;
/* KY_ERR_KEY_RING_DEFAULT, KY_ERR_KEY_RING_NOT_FOUND, KY_ERR_KEY_RING_NOT_EMPTY (*holding =
 * how many keys are in it: in any state until purged; with force, those not deleted). force
 * (Key Protect's force=true): the deleted keys in it are moved to 'default' first. */
int ky_kms_ring_delete(const struct ky_kms *kms, const char *id, bool force, int64_t now,
                       size_t *holding) KY_WUR;
/* ky_kms_key_create in the ring spec->ring, which must exist (KY_ERR_KEY_RING_NOT_FOUND), in
 * one write transaction with the check (or the caller's). */
int ky_kms_key_create_in(const struct ky_kms *kms, const struct ky_key_spec *spec, int64_t now,
                         struct ky_key **out) KY_WUR;
/* Moves key id to ring (KY_ERR_KEY_RING_INVALID, KY_ERR_KEY_RING_NOT_FOUND), in one write
 * transaction with the check (or the caller's). */
int ky_kms_key_move(const struct ky_kms *kms, const char *id, const char *ring, const char *actor,
                    int64_t now, struct ky_key **out) KY_WUR;

/* ---- system secrets (same sealing; AAD label "kyok-secret-v1", version 0) ---- */

int ky_kms_secret_put(const struct ky_kms *kms, const char *name, const uint8_t *p, size_t n,
                      int64_t now) KY_WUR;
/* Creates the secret only if absent: KY_ERR_EXISTS when some unit made it first (read it). */
int ky_kms_secret_create(const struct ky_kms *kms, const char *name, const uint8_t *p, size_t n,
                         int64_t now) KY_WUR;
/* *p in the secure heap: ky_kms_buf_free(*p, *n). */
int ky_kms_secret_get(const struct ky_kms *kms, const char *name, uint8_t **p, size_t *n) KY_WUR;
/* ky_kms_secret_get, and *rev the rev the record is stored at (0 when it is not read). */
int ky_kms_secret_get_rev(const struct ky_kms *kms, const char *name, uint8_t **p, size_t *n,
                          int64_t *rev) KY_WUR;
/* Compare-and-swap: writes the secret only if it is still at expect_rev (from
 * ky_kms_secret_get_rev; 0 = only if absent), else KY_ERR_CONFLICT and nothing is written,
 * never retried here. For a read-modify-write: on KY_ERR_CONFLICT read again and re-apply the
 * change to what is stored now. ky_kms_secret_put, by contrast, replaces whatever is stored
 * (last writer wins): only for a whole value that depends on nothing stored. */
int ky_kms_secret_put_rev(const struct ky_kms *kms, const char *name, const uint8_t *p, size_t n,
                          int64_t now, int64_t expect_rev) KY_WUR;

/* ---- replies kept by request id (lib/kms/request.c) ---- */

/* SHA-256 over method, path (with its query) and body, each length-prefixed: what a request
 * id is bound to. */
int ky_kms_request_hash(const char *method, const char *path, const uint8_t *body, size_t n,
                        uint8_t out[KY_REQUEST_HASH_LEN]) KY_WUR;
/* Seals body (n may be 0) into req->body under the master key new records go under, and sets
 * req->vp; req's apikey, id, hash and status must be set (they are bound as associated
 * data). KY_ERR_NO_MASTER_KEY without one. */
int ky_kms_request_seal(const struct ky_kms *kms, struct ky_store_request *req, const uint8_t *body,
                        size_t n) KY_WUR;
/* Opens req->body: *body in the secure heap (free with ky_kms_buf_free(*body, *n)).
 * KY_ERR_MK_MISMATCH when neither register holds req->vp, KY_ERR_RECORD_TAMPERED. */
int ky_kms_request_open(const struct ky_kms *kms, const struct ky_store_request *req,
                        uint8_t **body, size_t *n) KY_WUR;

/* ---- integrity of API key rows ---- */

/* The hash an API key's secret is stored and looked up by: SHA-256 of its text (without the
 * NUL). The CLI computes it when it makes a key (apikey-create carries only the hash), the unit
 * when a client trades the secret for a token; both must agree byte for byte, so this is the
 * one place that says how. A plain hash is enough: the secret is 32 random bytes, not a
 * password. 0, KY_ERR_USAGE (NULL) or KY_ERR_CRYPTO (out zeroed). */
int ky_apikey_hash(const char *secret, uint8_t out[KY_APIKEY_HASH_LEN]) KY_WUR;

#define KY_APIKEY_MAC_KEY_LEN 32 /* the integrity key: a system secret */

/* HMAC-SHA256 over every column of k but mac, and the instance id. */
int ky_kms_apikey_mac(const uint8_t key[KY_APIKEY_MAC_KEY_LEN], const char *instance,
                      const struct ky_store_apikey *k, uint8_t out[KY_APIKEY_MAC_LEN]) KY_WUR;
/* 0 when k->mac is the tag of k; KY_ERR_RECORD_TAMPERED otherwise (no tag included);
 * KY_ERR_RECORD_STALE when the tag checks but the row is stale (an older copy). */
int ky_kms_apikey_check(const uint8_t key[KY_APIKEY_MAC_KEY_LEN], const char *instance,
                        const struct ky_store_apikey *k) KY_WUR;

/* ---- policies acted on over time (lib/kms/schedule.c) ---- */

#define KY_KMS_AUTO_PURGE (90 * KY_KMS_DAY) /* destroyed -> purged by the pass */

enum ky_kms_due { KY_KMS_DUE_NONE, KY_KMS_DUE_ROTATE, KY_KMS_DUE_PURGE };

/* The date k's rotation policy rotates it: its newest version's creation plus
 * rotation_months calendar months (UTC; the day clamped to the month's last); 0 = no
 * policy. */
int64_t ky_kms_rotation_due(const struct ky_key *k);
/* What is due on k at now: rotation (a generated root key, Active as of now, whose rotation
 * date has come), purge (destroyed KY_KMS_AUTO_PURGE or more before now), or nothing. */
enum ky_kms_due ky_kms_due(const struct ky_key *k, int64_t now);
/* Does what is due on the key of row (as read from the store) at now, with one
 * compare-and-swap on row->rev, never retried: KY_ERR_CONFLICT (or KY_ERR_NOT_FOUND) when
 * another writer changed the row since it was read. *done: what was done (NONE: nothing was
 * due); out (may be NULL): the key as written (NULL after a purge). */
int ky_kms_due_apply(const struct ky_kms *kms, const struct ky_store_row *row, int64_t now,
                     enum ky_kms_due *done, struct ky_key **out) KY_WUR;

struct ky_kms_sched {
	uint64_t keys;    /* Active and destroyed keys looked at */
	uint64_t rotated; /* rotated by their rotation policy */
	uint64_t purged;  /* purged KY_KMS_AUTO_PURGE after their deletion */
	uint64_t raced;   /* due, but changed by another writer first: left alone */
	uint64_t failed;  /* records that did not open or could not be changed: left alone */
};
/* Told of each key acted on or that failed: before (metadata; NULL when it did not open),
 * after (as written; NULL after a purge or a failure), what was (or was to be) done, err. */
typedef void (*ky_kms_sched_fn)(const char *id, const struct ky_key *before,
                                const struct ky_key *after, enum ky_kms_due what, int err,
                                void *arg);
/* Asked before a due key is acted on (k: its metadata; due: what is to be done): 0 to go
 * ahead, or an error that ends the pass with nothing more done (the caller's audit log
 * refusing the intent line, say). */
typedef int (*ky_kms_sched_gate_fn)(const char *id, const struct ky_key *k, enum ky_kms_due due,
                                    void *arg);
/* One pass over the keys this unit's registers open: each due key is acted on with
 * ky_kms_due_apply, once gate (may be NULL) let it. A key that fails is counted and left; the
 * pass goes on. 0, the store's error when it cannot list, or the error gate gave (the key it
 * refused, and all after it, left alone). */
int ky_kms_schedule_pass(const struct ky_kms *kms, int64_t now, ky_kms_sched_gate_fn gate,
                         ky_kms_sched_fn fn, void *arg, struct ky_kms_sched *st) KY_WUR;

/* ---- master key rotation ---- */

struct ky_kms_reenc {
	uint64_t done;      /* rows moved to the new key */
	uint64_t raced;     /* rows changed by a concurrent writer during their batch */
	uint64_t failed;    /* rows that did not open under the old key (tampered) */
	uint64_t remaining; /* rows still under the old key (estimate during the run) */
	uint32_t batches;
	char failed_name[KY_SECRET_NAME_MAX + 1]; /* first row that failed */
};

/* Called after each committed batch; non-zero stops the run (KY_ERR_CANCELLED). */
typedef int (*ky_kms_progress_fn)(const struct ky_kms_reenc *st, void *arg);

/* Moves every record (keys and secrets) from old to new_mk in transactional batches of
 * batch rows (0 = KY_KMS_BATCH_DEFAULT). Resumable: works on whatever is still under old.
 * Safe with concurrent writers (each swap is CAS on vp and rev). 0 when nothing is left
 * under old; KY_ERR_RECORD_TAMPERED when some rows could not be opened (st->failed). */
int ky_kms_reencipher(struct ky_store *s, const char *instance, const struct ky_mk *old,
                      const struct ky_mk *new_mk, size_t batch, ky_kms_progress_fn fn, void *arg,
                      struct ky_kms_reenc *st) KY_WUR;
/* Records (keys + secrets) under vp: set-immediate must see 0 under the old key. */
int ky_kms_count_under(struct ky_store *s, const uint8_t vp[KY_VP_LEN], uint64_t *n) KY_WUR;

/* ---- wrap, unwrap, rewrap (root keys; allocation-free) ---- */

/* out receives ptlen + KY_WRAP_OVERHEAD bytes (KY_ERR_TOO_LARGE if outcap is smaller).
 * The key must be an Active root key loaded with material. */
int ky_kms_wrap(const struct ky_key *k, const uint8_t *pt, size_t ptlen, const uint8_t *aad,
                size_t aadlen, uint8_t *out, size_t outcap, size_t *outlen) KY_WUR;
/* Wrap without plaintext: generates a KY_DEK_LEN-byte data key into dek. */
int ky_kms_wrap_dek(const struct ky_key *k, const uint8_t *aad, size_t aadlen,
                    uint8_t dek[KY_DEK_LEN], uint8_t *out, size_t outcap, size_t *outlen) KY_WUR;
/* KY_ERR_WRAP_MALFORMED (not our format), KY_ERR_UNWRAP (wrong key, version, aad or
 * tampered). Active or Deactivated keys unwrap. version (may be NULL) = version used. */
int ky_kms_unwrap(const struct ky_key *k, const uint8_t *ct, size_t ctlen, const uint8_t *aad,
                  size_t aadlen, uint8_t *out, size_t outcap, size_t *outlen,
                  uint32_t *version) KY_WUR;
/* Unwrap, then wrap under the newest version. */
int ky_kms_rewrap(const struct ky_key *k, const uint8_t *ct, size_t ctlen, const uint8_t *aad,
                  size_t aadlen, uint8_t *out, size_t outcap, size_t *outlen) KY_WUR;
/* The version a ciphertext names, without any key (KY_ERR_WRAP_MALFORMED). */
int ky_kms_wrap_version(const uint8_t *ct, size_t ctlen, uint32_t *version) KY_WUR;

#endif
