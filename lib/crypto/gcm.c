/* AES-GCM on the hot path (every wrap, unwrap and key record seal of lib/kms goes through it).
 *
 * It allocates nothing once warm: each thread keeps a few keyed EVP_CIPHER_CTX (one per
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
#include "kyok/crypto.h"

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
#define GCM_NONCE_POOL (KY_GCM_IV_LEN * 170)

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

void ky_gcm_thread_release(void)
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

int ky_gcm_nonce(uint8_t out[KY_GCM_IV_LEN])
{
	struct gcm_cache *c = gcm_cache_get();

	if (c == NULL)
		return RAND_bytes(out, KY_GCM_IV_LEN) == 1 ? 0 : KY_ERR_CRYPTO;
	if (c->nonce_off + KY_GCM_IV_LEN > GCM_NONCE_POOL) {
		if (RAND_bytes(c->nonce_pool, GCM_NONCE_POOL) != 1)
			return KY_ERR_CRYPTO;
		c->nonce_off = 0;
	}
	memcpy(out, c->nonce_pool + c->nonce_off, KY_GCM_IV_LEN);
	/* used once: wipe it from the pool */
	memset(c->nonce_pool + c->nonce_off, 0, KY_GCM_IV_LEN);
	c->nonce_off += KY_GCM_IV_LEN;
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

int ky_gcm_seal(const uint8_t *key, size_t keylen, const uint8_t iv[KY_GCM_IV_LEN],
                const uint8_t *aad1, size_t n1, const uint8_t *aad2, size_t n2, const uint8_t *pt,
                size_t n, uint8_t *ct, uint8_t tag[KY_GCM_TAG_LEN])
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
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, KY_GCM_TAG_LEN, tag) != 1) {
		gcm_forget(key, keylen);
		return KY_ERR_CRYPTO;
	}
	return 0;
}

int ky_gcm_open(const uint8_t *key, size_t keylen, const uint8_t iv[KY_GCM_IV_LEN],
                const uint8_t *aad1, size_t n1, const uint8_t *aad2, size_t n2, const uint8_t *ct,
                size_t n, const uint8_t tag[KY_GCM_TAG_LEN], uint8_t *pt)
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
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, KY_GCM_TAG_LEN, (void *)tag) != 1) {
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
