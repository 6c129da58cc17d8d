/* The storage digest (ledger), the backend-independent part: the index of record tags, the
 * multiset sum and the MACs. A backend keeps one struct ky_ledger per open store and calls
 * these under its own rules (see the head of sqlite.c).
 *
 *   tag(record) = HMAC-SHA256(K, "kyok-ledger-tag-v1" 0x00 || u8 table || u16 len || id ||
 *                             fields)
 *     fields: every stored column of the row, in the order of the backend's column list,
 *     each as u8 kind (1 integer, 3 text, 4 blob, 5 null) then an i64 (integer) or a u32
 *     length and the bytes (text, blob); all big-endian
 *   sum   = the tags of every record, as 256-bit big-endian numbers, added mod 2^256
 *   mac   = HMAC-SHA256(K, "kyok-ledger-v1" 0x00 || u16 len || instance || u64 generation ||
 *                       u64 epoch || u64 count || sum)
 *   log   the tag each write gave a record, hidden (tags are never stored in the clear: whoever
 *         saw them could look for old rows that add up to the sum): tag XOR
 *         HMAC-SHA256(K, "kyok-ledger-log-v1" 0x00 || u64 generation || u8 table || u16 len ||
 *         id)
 * K is the storage integrity key (32 bytes, a system secret under the master key).
 */
#ifndef KYOK_STORE_LEDGER_H
#define KYOK_STORE_LEDGER_H

#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kyok/store.h"

#define KY_LEDGER_TAG_LEN 32

enum ky_ledger_table {
	KY_LEDGER_KEYS = 1,
	KY_LEDGER_SECRETS = 2,
	KY_LEDGER_APIKEYS = 3,
};

struct ky_ledger_entry {
	struct ky_ledger_entry *next;
	uint8_t table;
	uint64_t gen; /* generation of its last change (0: found by a full read) */
	uint8_t tag[KY_LEDGER_TAG_LEN];
	char id[]; /* NUL-terminated */
};

/* One tagged record index with its sum and count. */
struct ky_ledger_index {
	struct ky_ledger_entry **b;
	size_t nb; /* buckets, a power of two */
	uint64_t n;
	uint8_t sum[KY_LEDGER_TAG_LEN];
};

/* A field of a row, for the tag. */
struct ky_ledger_field {
	int kind; /* 1 integer, 3 text, 4 blob, 5 null (SQLite's type codes) */
	int64_t i;
	const void *p;
	size_t len;
};

/* Holds the storage integrity key and computes tags and MACs. */
struct ky_ledger_mac {
	EVP_MAC_CTX *tmpl; /* keyed HMAC-SHA256, duplicated for each use */
};

int ky_ledger_mac_init(struct ky_ledger_mac *m, const uint8_t key[KY_STORE_LEDGER_KEY_LEN]) KY_WUR;
void ky_ledger_mac_release(struct ky_ledger_mac *m);
int ky_ledger_tag(const struct ky_ledger_mac *m, uint8_t table, const char *id,
                  const struct ky_ledger_field *f, size_t nf,
                  uint8_t out[KY_LEDGER_TAG_LEN]) KY_WUR;
int ky_ledger_meta_mac(const struct ky_ledger_mac *m, const char *instance, uint64_t gen,
                       uint64_t epoch, uint64_t n, const uint8_t sum[KY_LEDGER_TAG_LEN],
                       uint8_t out[KY_LEDGER_TAG_LEN]) KY_WUR;

int ky_ledger_index_init(struct ky_ledger_index *ix) KY_WUR;
void ky_ledger_index_release(struct ky_ledger_index *ix);
/* The entry of (table, id), NULL when none. */
struct ky_ledger_entry *ky_ledger_index_find(const struct ky_ledger_index *ix, uint8_t table,
                                             const char *id);
/* Sets (tag non-NULL) or removes (tag NULL) the entry of (table, id), keeping sum and n; gen:
 * the generation that changed it. */
int ky_ledger_index_set(struct ky_ledger_index *ix, uint8_t table, const char *id,
                        const uint8_t *tag, uint64_t gen) KY_WUR;
/* Moves src into dst (dst released first); src is left empty. */
void ky_ledger_index_move(struct ky_ledger_index *dst, struct ky_ledger_index *src);

/* The pad that hides the tag of (table, id) written at generation gen in the log. */
int ky_ledger_log_pad(const struct ky_ledger_mac *m, uint64_t gen, uint8_t table, const char *id,
                      uint8_t out[KY_LEDGER_TAG_LEN]) KY_WUR;

/* a := a + b, a := a - b (mod 2^256, big-endian). */
void ky_ledger_sum_add(uint8_t a[KY_LEDGER_TAG_LEN], const uint8_t b[KY_LEDGER_TAG_LEN]);
void ky_ledger_sum_sub(uint8_t a[KY_LEDGER_TAG_LEN], const uint8_t b[KY_LEDGER_TAG_LEN]);

#endif
