/* keystore.c: the unit's view of key storage.
 *
 * The store, the master key registers taken from the live domain state (current when VALID,
 * new when FULL COMMITTED) and an in-memory cache of opened keys, API key records and the
 * token signing key. API requests hold the registers for reading between _enter and _leave;
 * a state swap replaces them (waiting for requests in flight). Every cache is dropped when
 * the registers change, when this unit writes the row, and when another connection (another
 * unit) committed anything since the calling thread last looked (ky_store_changed).
 */
#ifndef KYOK_UNITD_KEYSTORE_H
#define KYOK_UNITD_KEYSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kyok/common.h"
#include "kyok/kms.h"
#include "kyok/store.h"

struct ky_domain;
struct unitd_config;
struct unitd_datadir;

/* Records the daemon keeps in key storage's secrets, under the master key. */
#define UNITD_SECRET_TOKEN_KEY  "token-signing-key"
#define UNITD_SECRET_POLICIES   "instance-policies"
#define UNITD_SECRET_APIKEY_MAC "apikey-integrity-key"

struct unitd_keystore;
struct ky_kms;
struct ky_key;
struct ky_store;
struct ky_store_apikey;

/* dd: the unit's data directory (its storage mark); it must outlive the keystore. Storage the
 * mark says held records is refused when missing or empty (KY_ERR_STORAGE_MISSING). */
int unitd_keystore_open(const struct unitd_config *cfg, struct unitd_datadir *dd,
                        struct unitd_keystore **out, char *err, size_t errlen) KY_WUR;
void unitd_keystore_free(struct unitd_keystore *ks);
/* unitd_state_rekey (zeroize) with the storage mark kept in step: mark writes are held off,
 * the mark sealed under the old seal key is removed first, and written again under the new
 * one. A crash in between leaves no mark: the unit starts without a floor and takes the
 * storage's position again (it holds no master key after a zeroize anyway). */
int unitd_keystore_state_rekey(struct unitd_keystore *ks, struct unitd_datadir *dd,
                               const struct ky_domain *d) KY_WUR;
struct ky_store *unitd_keystore_store(struct unitd_keystore *ks);
/* Changes whenever the registers change (what was verified under the old ones is stale). */
uint64_t unitd_keystore_epoch(struct unitd_keystore *ks);
const char *unitd_keystore_instance(const struct unitd_keystore *ks);
/* Takes the registers of d; drops the caches when they differ from the ones held. */
int unitd_keystore_set_registers(struct unitd_keystore *ks, const struct ky_domain *d) KY_WUR;
/* Read hold on the registers, *kms filled. KY_ERR_NO_MASTER_KEY (hold not taken) when the
 * unit holds no master key; a store error when the change check fails. The first hold checks
 * the whole of key storage against its digest (see ky_store_ledger_attach, the storage
 * integrity key is a system secret made by the first unit that needs it) and fails with the
 * refusal until it passes; every read is then checked. */
int unitd_keystore_enter(struct unitd_keystore *ks, struct ky_kms *kms) KY_WUR;
void unitd_keystore_leave(struct unitd_keystore *ks);
/* Drops every cache (after this unit wrote something that is cached). */
void unitd_keystore_flush(struct unitd_keystore *ks);
/* Keys the unit keeps opened: key_cache, else key_limit (the store's default when unset) up
 * to UNITD_KEY_CACHE_DEFAULT. */
uint32_t unitd_key_cache(const struct unitd_config *cfg);
/* Bytes of secure heap: KY_KMS_SECURE_HEAP, or more when the key cache needs it (a power of
 * two, with 16 MiB beside the cache for the records being opened). */
size_t unitd_secure_heap_size(const struct unitd_config *cfg);

/* A cached, opened key (material in the secure heap), shared: release with _key_put. Inside
 * a hold. The key's stored state; callers apply ky_key_state_at for expiry. */
struct unitd_key_ref;
int unitd_keystore_key_get(struct unitd_keystore *ks, const struct ky_kms *kms, const char *id,
                           int64_t now, struct unitd_key_ref **ref) KY_WUR;
const struct ky_key *unitd_key_ref_key(const struct unitd_key_ref *ref);
void unitd_keystore_key_put(struct unitd_keystore *ks, struct unitd_key_ref *ref);
/* API key records, inside a hold. A row is trusted only when its tag checks under the
 * instance's API key integrity key (a secret under the master key, made on first need):
 * KY_ERR_RECORD_TAMPERED otherwise, KY_ERR_MK_MISMATCH when that key is under a master key
 * neither register holds. */
/* By id (verified rows are cached). KY_ERR_NOT_FOUND. */
int unitd_keystore_apikey(struct unitd_keystore *ks, const struct ky_kms *kms, const char *id,
                          int64_t now, struct ky_store_apikey *out) KY_WUR;
/* By hash of the secret. KY_ERR_NOT_FOUND. */
int unitd_keystore_apikey_find(struct unitd_keystore *ks, const struct ky_kms *kms,
                               const uint8_t hash[KY_APIKEY_HASH_LEN], int64_t now,
                               struct ky_store_apikey *out) KY_WUR;
/* Sets k->mac (and has_mac) for k as it is to be stored. */
int unitd_keystore_apikey_seal(struct unitd_keystore *ks, const struct ky_kms *kms, int64_t now,
                               struct ky_store_apikey *k) KY_WUR;
int unitd_keystore_apikey_check(struct unitd_keystore *ks, const struct ky_kms *kms, int64_t now,
                                const struct ky_store_apikey *k) KY_WUR;
/* The instance policies record, opened (*out malloc'd: free it), inside a hold. Kept until a
 * change of any secret is seen in the change log, or unitd_keystore_policies_drop (after this
 * unit wrote it). KY_ERR_NOT_FOUND: never set. */
int unitd_keystore_policies(struct unitd_keystore *ks, const struct ky_kms *kms, uint8_t **out,
                            size_t *n) KY_WUR;
void unitd_keystore_policies_drop(struct unitd_keystore *ks);
/* The token signing key (32 bytes), made by whichever unit needs it first. Inside a hold. */
#define UNITD_TOKEN_KEY_LEN 32
int unitd_keystore_token_key(struct unitd_keystore *ks, const struct ky_kms *kms, int64_t now,
                             uint8_t out[UNITD_TOKEN_KEY_LEN]) KY_WUR;
/* After a set-immediate gave this unit its first master key (a new unit, or one zeroized and
 * initialised again): the records the daemon keeps for the instance that are under a master
 * key neither register holds were crypto-shredded with it. The token signing key is
 * replaced, the instance policies removed (defaults apply), the API keys removed with their
 * integrity key (none can be verified any more). Nowhere else: a unit left behind
 * by a rotation finds them under the instance's newer master key and must leave them alone
 * (it answers master key mismatch). */
int unitd_keystore_first_mk(struct unitd_keystore *ks, int64_t now) KY_WUR;
/* storage-accept: takes key storage as it is (a restore the administrators accepted) and
 * writes a new digest past every position seen; *pos = the new position. */
int unitd_keystore_accept(struct unitd_keystore *ks, struct ky_store_ledger_pos *pos) KY_WUR;

#endif
