/* Integrity of API key rows.
 *
 * Key storage keeps API keys in clear columns (id, name, role, hash of the secret, dates):
 * they are looked up by hash on every token request. What makes them trustworthy is a tag
 * HMAC-SHA256 under the instance's API key integrity key, a system secret sealed under the
 * master key like any record. Whoever can write the database but holds no master key can
 * neither change a role nor add a key of their own: the tag does not match.
 *
 * Tagged message (every length big-endian):
 *   "kyok-apikey-v1" 0x00
 *   u16 len || instance, u16 len || id, u16 len || name, u16 len || role
 *   hash (32 bytes), created (i64), revoked (i64)
 */
#include <openssl/crypto.h>
#include <string.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/kms.h"

_Static_assert(KY_APIKEY_MAC_LEN == KY_HMAC_SHA256_LEN, "the API key tag is an HMAC-SHA256");

#define APIKEY_LABEL "kyok-apikey-v1"
#define APIKEY_MSG_MAX                                                                     \
	(sizeof(APIKEY_LABEL) + 4 * 2 + KY_ID_MAX + KY_ID_MAX + KY_STORE_APIKEY_NAME_MAX + \
	 KY_APIKEY_ROLE_MAX + KY_APIKEY_HASH_LEN + 2 * 8)

static size_t apikey_put_str(uint8_t *p, const char *s, size_t max)
{
	size_t n = strnlen(s, max);

	p[0] = (uint8_t)(n >> 8);
	p[1] = (uint8_t)n;
	memcpy(p + 2, s, n);
	return n + 2;
}

static size_t apikey_put_i64(uint8_t *p, int64_t v)
{
	uint64_t u = (uint64_t)v;

	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)u;
		u >>= 8;
	}
	return 8;
}

int ky_kms_apikey_mac(const uint8_t key[KY_APIKEY_MAC_KEY_LEN], const char *instance,
                      const struct ky_store_apikey *k, uint8_t out[KY_APIKEY_MAC_LEN])
{
	uint8_t msg[APIKEY_MSG_MAX];
	size_t n = 0;
	int r;

	if (instance == NULL || instance[0] == '\0')
		return KY_ERR_USAGE;
	memcpy(msg, APIKEY_LABEL, sizeof(APIKEY_LABEL)); /* with its NUL */
	n = sizeof(APIKEY_LABEL);
	n += apikey_put_str(msg + n, instance, KY_ID_MAX);
	n += apikey_put_str(msg + n, k->id, KY_ID_MAX);
	n += apikey_put_str(msg + n, k->name, KY_STORE_APIKEY_NAME_MAX);
	n += apikey_put_str(msg + n, k->role, KY_APIKEY_ROLE_MAX);
	memcpy(msg + n, k->hash, KY_APIKEY_HASH_LEN);
	n += KY_APIKEY_HASH_LEN;
	n += apikey_put_i64(msg + n, k->created);
	n += apikey_put_i64(msg + n, k->revoked);
	r = ky_hmac_sha256(key, KY_APIKEY_MAC_KEY_LEN, msg, n, out);
	OPENSSL_cleanse(msg, sizeof(msg));
	return r;
}

int ky_kms_apikey_check(const uint8_t key[KY_APIKEY_MAC_KEY_LEN], const char *instance,
                        const struct ky_store_apikey *k)
{
	uint8_t want[KY_APIKEY_MAC_LEN];
	int r;

	if (!k->has_mac)
		return KY_ERR_RECORD_TAMPERED;
	if ((r = ky_kms_apikey_mac(key, instance, k, want)) != 0)
		return r;
	r = CRYPTO_memcmp(want, k->mac, KY_APIKEY_MAC_LEN) == 0 ? 0 : KY_ERR_RECORD_TAMPERED;
	/* Tagged by kyok, but not the row the storage digest holds: an older copy. */
	if (r == 0 && k->stale)
		r = KY_ERR_RECORD_STALE;
	OPENSSL_cleanse(want, sizeof(want));
	return r;
}
