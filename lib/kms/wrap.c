/* Wrap, unwrap and rewrap with root keys, and the AES-GCM helper every kms seal goes through.
 *
 * The hot path allocates nothing: each thread keeps a few keyed EVP_CIPHER_CTX (one per
 * direction) with a secure-heap copy of their key; a call whose key matches a cached one
 * (CRYPTO_memcmp) only sets a fresh IV. The AAD is built on the stack.
 */
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <string.h>

#include "kyok/err.h"
#include "kyok/kms.h"

#define GCM_SLOTS   4
#define GCM_KEY_MAX 32

struct gcm_slot {
	EVP_CIPHER_CTX *ctx[2]; /* 0 decrypt, 1 encrypt */
	unsigned ready;         /* bit d: ctx[d] holds the slot's key */
	size_t keylen;          /* 0 = empty */
	uint8_t *key;           /* secure heap, GCM_KEY_MAX bytes */
	uint64_t used;
};

/* Random nonces are drawn from the DRBG in blocks: one RAND_bytes call costs about as much
 * for 2 KiB as for 12 bytes. A fork child drops its copy (gcm_atfork_child), so parent and
 * child never use the same nonce. */
#define GCM_NONCE_POOL (KY_WRAP_NONCE_LEN * 170)

struct gcm_cache {
	struct gcm_slot slot[GCM_SLOTS];
	uint64_t tick;
	size_t nonce_off; /* next unused byte of nonce_pool; GCM_NONCE_POOL = empty */
	uint8_t nonce_pool[GCM_NONCE_POOL];
};

static __thread struct gcm_cache *gcm_tls;
static pthread_once_t gcm_once = PTHREAD_ONCE_INIT;
static pthread_key_t gcm_key;
static int gcm_key_ok;
static EVP_CIPHER *gcm_cipher[3]; /* AES-128/192/256-GCM, fetched once */

static void gcm_cache_free(struct gcm_cache *c)
{
	if (c == NULL)
		return;
	for (int i = 0; i < GCM_SLOTS; i++) {
		EVP_CIPHER_CTX_free(c->slot[i].ctx[0]);
		EVP_CIPHER_CTX_free(c->slot[i].ctx[1]);
		OPENSSL_secure_clear_free(c->slot[i].key, GCM_KEY_MAX);
	}
	OPENSSL_free(c);
}

static void gcm_destructor(void *p)
{
	gcm_cache_free(p);
}

/* In a fork child only the forking thread exists: its pool is the parent's. */
static void gcm_atfork_child(void)
{
	if (gcm_tls != NULL)
		gcm_tls->nonce_off = GCM_NONCE_POOL;
}

static void gcm_init_once(void)
{
	gcm_key_ok = pthread_key_create(&gcm_key, gcm_destructor) == 0 &&
	             pthread_atfork(NULL, NULL, gcm_atfork_child) == 0;
	gcm_cipher[0] = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
	gcm_cipher[1] = EVP_CIPHER_fetch(NULL, "AES-192-GCM", NULL);
	gcm_cipher[2] = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
}

void ky_kms_thread_release(void)
{
	struct gcm_cache *c = gcm_tls;

	if (c == NULL)
		return;
	gcm_tls = NULL;
	if (gcm_key_ok)
		pthread_setspecific(gcm_key, NULL);
	gcm_cache_free(c);
}

static struct gcm_cache *gcm_cache_get(void)
{
	struct gcm_cache *c = gcm_tls;

	if (c != NULL)
		return c;
	pthread_once(&gcm_once, gcm_init_once);
	if (!gcm_key_ok || gcm_cipher[0] == NULL || gcm_cipher[1] == NULL || gcm_cipher[2] == NULL)
		return NULL;
	if ((c = OPENSSL_zalloc(sizeof(*c))) == NULL)
		return NULL;
	c->nonce_off = GCM_NONCE_POOL;
	for (int i = 0; i < GCM_SLOTS; i++) {
		c->slot[i].ctx[0] = EVP_CIPHER_CTX_new();
		c->slot[i].ctx[1] = EVP_CIPHER_CTX_new();
		c->slot[i].key = OPENSSL_secure_zalloc(GCM_KEY_MAX);
		if (c->slot[i].ctx[0] == NULL || c->slot[i].ctx[1] == NULL ||
		    c->slot[i].key == NULL) {
			gcm_cache_free(c);
			return NULL;
		}
	}
	if (pthread_setspecific(gcm_key, c) != 0) {
		gcm_cache_free(c);
		return NULL;
	}
	gcm_tls = c;
	return c;
}

int ky_kms_nonce(uint8_t out[KY_WRAP_NONCE_LEN])
{
	struct gcm_cache *c = gcm_cache_get();

	if (c == NULL)
		return RAND_bytes(out, KY_WRAP_NONCE_LEN) == 1 ? 0 : KY_ERR_CRYPTO;
	if (c->nonce_off + KY_WRAP_NONCE_LEN > GCM_NONCE_POOL) {
		if (RAND_bytes(c->nonce_pool, GCM_NONCE_POOL) != 1)
			return KY_ERR_CRYPTO;
		c->nonce_off = 0;
	}
	memcpy(out, c->nonce_pool + c->nonce_off, KY_WRAP_NONCE_LEN);
	/* used once: wipe it from the pool */
	memset(c->nonce_pool + c->nonce_off, 0, KY_WRAP_NONCE_LEN);
	c->nonce_off += KY_WRAP_NONCE_LEN;
	return 0;
}

/* A context of direction enc keyed with key, IV still to be set. NULL on failure. */
static EVP_CIPHER_CTX *gcm_ctx(const uint8_t *key, size_t keylen, int enc)
{
	struct gcm_cache *c;
	struct gcm_slot *sl = NULL;
	int ci;

	switch (keylen) {
	case 16:
		ci = 0;
		break;
	case 24:
		ci = 1;
		break;
	case 32:
		ci = 2;
		break;
	default:
		return NULL;
	}
	if ((c = gcm_cache_get()) == NULL)
		return NULL;
	for (int i = 0; i < GCM_SLOTS; i++) {
		struct gcm_slot *s = &c->slot[i];
		if (s->keylen == keylen && CRYPTO_memcmp(s->key, key, keylen) == 0) {
			sl = s;
			break;
		}
	}
	if (sl == NULL) {
		/* Evict the least recently used slot. */
		sl = &c->slot[0];
		for (int i = 1; i < GCM_SLOTS; i++)
			if (c->slot[i].used < sl->used)
				sl = &c->slot[i];
		OPENSSL_cleanse(sl->key, GCM_KEY_MAX);
		memcpy(sl->key, key, keylen);
		sl->keylen = keylen;
		sl->ready = 0;
	}
	sl->used = ++c->tick;
	if (!(sl->ready & (1u << enc))) {
		if (EVP_CipherInit_ex(sl->ctx[enc], gcm_cipher[ci], NULL, sl->key, NULL, enc) !=
		    1) {
			sl->keylen = 0;
			return NULL;
		}
		sl->ready |= 1u << enc;
	}
	return sl->ctx[enc];
}

/* A failed operation may leave the context mid-way: drop the slot's keying. */
static void gcm_forget(const uint8_t *key, size_t keylen)
{
	struct gcm_cache *c = gcm_tls;

	if (c == NULL)
		return;
	for (int i = 0; i < GCM_SLOTS; i++)
		if (c->slot[i].keylen == keylen && CRYPTO_memcmp(c->slot[i].key, key, keylen) == 0)
			c->slot[i].ready = 0;
}

int ky_kms_gcm_seal(const uint8_t *key, size_t keylen, const uint8_t iv[KY_WRAP_NONCE_LEN],
                    const uint8_t *aad1, size_t n1, const uint8_t *aad2, size_t n2,
                    const uint8_t *pt, size_t n, uint8_t *ct, uint8_t tag[KY_WRAP_TAG_LEN])
{
	EVP_CIPHER_CTX *ctx;
	int l = 0, l2 = 0;

	if (n1 > INT_MAX || n2 > INT_MAX || n > INT_MAX)
		return KY_ERR_TOO_LARGE;
	if ((ctx = gcm_ctx(key, keylen, 1)) == NULL)
		return KY_ERR_CRYPTO;
	if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv) != 1 ||
	    (n1 && EVP_EncryptUpdate(ctx, NULL, &l, aad1, (int)n1) != 1) ||
	    (n2 && EVP_EncryptUpdate(ctx, NULL, &l, aad2, (int)n2) != 1) ||
	    (n && EVP_EncryptUpdate(ctx, ct, &l, pt, (int)n) != 1) ||
	    EVP_EncryptFinal_ex(ctx, ct + (n ? l : 0), &l2) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, KY_WRAP_TAG_LEN, tag) != 1) {
		gcm_forget(key, keylen);
		return KY_ERR_CRYPTO;
	}
	return 0;
}

int ky_kms_gcm_open(const uint8_t *key, size_t keylen, const uint8_t iv[KY_WRAP_NONCE_LEN],
                    const uint8_t *aad1, size_t n1, const uint8_t *aad2, size_t n2,
                    const uint8_t *ct, size_t n, const uint8_t tag[KY_WRAP_TAG_LEN], uint8_t *pt)
{
	EVP_CIPHER_CTX *ctx;
	int l = 0, l2 = 0;

	if (n1 > INT_MAX || n2 > INT_MAX || n > INT_MAX)
		return KY_ERR_TOO_LARGE;
	if ((ctx = gcm_ctx(key, keylen, 0)) == NULL)
		return KY_ERR_CRYPTO;
	if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, iv) != 1 ||
	    (n1 && EVP_DecryptUpdate(ctx, NULL, &l, aad1, (int)n1) != 1) ||
	    (n2 && EVP_DecryptUpdate(ctx, NULL, &l, aad2, (int)n2) != 1) ||
	    (n && EVP_DecryptUpdate(ctx, pt, &l, ct, (int)n) != 1) ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, KY_WRAP_TAG_LEN, (void *)tag) != 1) {
		gcm_forget(key, keylen);
		if (n)
			OPENSSL_cleanse(pt, n);
		return KY_ERR_CRYPTO;
	}
	if (EVP_DecryptFinal_ex(ctx, pt + (n ? l : 0), &l2) != 1) {
		if (n)
			OPENSSL_cleanse(pt, n);
		return KY_ERR_TAMPERED;
	}
	return 0;
}

/* ---- the wrapped key format ---- */

static void wrap_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* "KYW1" || lp(key id) || u32 version || u32 client aad length; the client aad follows. */
#define WRAP_HDR_MAX (4 + 2 + KY_UUID_LEN + 4 + 4)

static size_t wrap_aad(uint8_t out[WRAP_HDR_MAX], const char *id, uint32_t version, size_t aadlen)
{
	size_t n = strlen(id), off = 0;

	memcpy(out, KY_WRAP_MAGIC, 4);
	off = 4;
	out[off++] = (uint8_t)(n >> 8);
	out[off++] = (uint8_t)n;
	memcpy(out + off, id, n);
	off += n;
	wrap_be32(out + off, version);
	off += 4;
	wrap_be32(out + off, (uint32_t)aadlen);
	return off + 4;
}

static int wrap_check_key(const struct ky_key *k, int unwrap)
{
	if (k->extractable)
		return KY_ERR_KEY_NOT_ROOT;
	if (k->state == KY_KEY_DESTROYED)
		return KY_ERR_KEY_DESTROYED;
	if (k->state != KY_KEY_ACTIVE && !(unwrap && k->state == KY_KEY_DEACTIVATED))
		return KY_ERR_KEY_NOT_ACTIVE;
	if (k->nversions == 0 || k->versions == NULL || strlen(k->id) != KY_UUID_LEN)
		return KY_ERR_USAGE;
	return 0;
}

int ky_kms_wrap(const struct ky_key *k, const uint8_t *pt, size_t ptlen, const uint8_t *aad,
                size_t aadlen, uint8_t *out, size_t outcap, size_t *outlen)
{
	uint8_t hdr[WRAP_HDR_MAX];
	const struct ky_key_version *v;
	size_t hl;
	int r;

	*outlen = 0;
	if ((r = wrap_check_key(k, 0)) != 0)
		return r;
	if (ptlen == 0 || pt == NULL)
		return KY_ERR_MALFORMED;
	if (ptlen > KY_WRAP_PT_MAX || aadlen > KY_WRAP_AAD_MAX)
		return KY_ERR_TOO_LARGE;
	if (aadlen && aad == NULL)
		return KY_ERR_USAGE;
	if (outcap < ptlen + KY_WRAP_OVERHEAD)
		return KY_ERR_TOO_LARGE;
	v = &k->versions[k->nversions - 1];
	if (v->material == NULL)
		return KY_ERR_USAGE;
	memcpy(out, KY_WRAP_MAGIC, 4);
	wrap_be32(out + 4, v->n);
	if ((r = ky_kms_nonce(out + 8)) != 0)
		return r;
	hl = wrap_aad(hdr, k->id, v->n, aadlen);
	if ((r = ky_kms_gcm_seal(v->material, v->len, out + 8, hdr, hl, aad, aadlen, pt, ptlen,
	                         out + 8 + KY_WRAP_NONCE_LEN,
	                         out + 8 + KY_WRAP_NONCE_LEN + ptlen)) != 0)
		return r;
	*outlen = ptlen + KY_WRAP_OVERHEAD;
	return 0;
}

int ky_kms_wrap_dek(const struct ky_key *k, const uint8_t *aad, size_t aadlen,
                    uint8_t dek[KY_DEK_LEN], uint8_t *out, size_t outcap, size_t *outlen)
{
	int r;

	*outlen = 0;
	if ((r = wrap_check_key(k, 0)) != 0)
		return r;
	if (RAND_bytes(dek, KY_DEK_LEN) != 1)
		return KY_ERR_CRYPTO;
	if ((r = ky_kms_wrap(k, dek, KY_DEK_LEN, aad, aadlen, out, outcap, outlen)) != 0)
		OPENSSL_cleanse(dek, KY_DEK_LEN);
	return r;
}

int ky_kms_wrap_version(const uint8_t *ct, size_t ctlen, uint32_t *version)
{
	uint32_t v;

	if (ct == NULL || ctlen <= KY_WRAP_OVERHEAD || memcmp(ct, KY_WRAP_MAGIC, 4) != 0)
		return KY_ERR_WRAP_MALFORMED;
	v = (uint32_t)ct[4] << 24 | (uint32_t)ct[5] << 16 | (uint32_t)ct[6] << 8 | ct[7];
	if (v == 0)
		return KY_ERR_WRAP_MALFORMED;
	*version = v;
	return 0;
}

int ky_kms_unwrap(const struct ky_key *k, const uint8_t *ct, size_t ctlen, const uint8_t *aad,
                  size_t aadlen, uint8_t *out, size_t outcap, size_t *outlen, uint32_t *version)
{
	uint8_t hdr[WRAP_HDR_MAX];
	const struct ky_key_version *v;
	uint32_t n;
	size_t hl, ptlen;
	int r;

	*outlen = 0;
	if ((r = wrap_check_key(k, 1)) != 0)
		return r;
	if ((r = ky_kms_wrap_version(ct, ctlen, &n)) != 0)
		return r;
	ptlen = ctlen - KY_WRAP_OVERHEAD;
	if (ptlen > KY_WRAP_PT_MAX || aadlen > KY_WRAP_AAD_MAX)
		return KY_ERR_TOO_LARGE;
	if (aadlen && aad == NULL)
		return KY_ERR_USAGE;
	if (outcap < ptlen)
		return KY_ERR_TOO_LARGE;
	/* A version this key does not have: a ciphertext of another key. */
	if (n > k->nversions)
		return KY_ERR_UNWRAP;
	v = &k->versions[n - 1];
	if (v->n != n || v->material == NULL)
		return KY_ERR_USAGE;
	hl = wrap_aad(hdr, k->id, n, aadlen);
	r = ky_kms_gcm_open(v->material, v->len, ct + 8, hdr, hl, aad, aadlen,
	                    ct + 8 + KY_WRAP_NONCE_LEN, ptlen, ct + 8 + KY_WRAP_NONCE_LEN + ptlen,
	                    out);
	if (r == KY_ERR_TAMPERED)
		return KY_ERR_UNWRAP;
	if (r != 0)
		return r;
	*outlen = ptlen;
	if (version != NULL)
		*version = n;
	return 0;
}

int ky_kms_rewrap(const struct ky_key *k, const uint8_t *ct, size_t ctlen, const uint8_t *aad,
                  size_t aadlen, uint8_t *out, size_t outcap, size_t *outlen)
{
	uint8_t pt[KY_WRAP_PT_MAX];
	size_t ptlen = 0;
	int r = KY_ERR_INTERNAL;

	*outlen = 0;
	if ((r = wrap_check_key(k, 0)) != 0)
		return r;
	if ((r = ky_kms_unwrap(k, ct, ctlen, aad, aadlen, pt, sizeof(pt), &ptlen, NULL)) != 0)
		goto out;
	if ((r = ky_kms_wrap(k, pt, ptlen, aad, aadlen, out, outcap, outlen)) != 0)
		goto out;
	r = 0;
out:
	OPENSSL_cleanse(pt, ptlen);
	return r;
}
