/* Import tokens (include/kyok/kms_import.h): the RSA key pair and nonce of secure import, their
 * serialised form, and the opening of what a client sealed with them. */
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/kms.h"
#include "kyok/kms_import.h"

#define IT_MAGIC   "KYIT"
#define IT_VERSION 1
/* magic, version, created, expires, max, left, nonce, used, used nonce, DER length */
#define IT_HEAD    (4 + 1 + 8 + 8 + 4 + 4 + KY_IMPORT_NONCE_LEN + 1 + KY_IMPORT_NONCE_LEN + 4)
#define IT_DER_MAX (16 * 1024)

void ky_import_token_free(struct ky_import_token *t)
{
	if (t == NULL)
		return;
	ky_secret_free(t->der, t->derlen);
	OPENSSL_cleanse(t, sizeof(*t));
	free(t);
}

int ky_import_token_new(int64_t now, uint32_t expiration, uint32_t max_retrievals,
                        struct ky_import_token **out)
{
	struct ky_import_token *t = NULL;
	EVP_PKEY *pk = NULL;
	struct ky_buf der = {0};
	int r = KY_ERR_INTERNAL;

	*out = NULL;
	if (expiration < KY_IMPORT_EXPIRATION_MIN || expiration > KY_IMPORT_EXPIRATION_MAX ||
	    max_retrievals < 1 || max_retrievals > KY_IMPORT_RETRIEVALS_MAX)
		return KY_ERR_USAGE;
	if ((t = calloc(1, sizeof(*t))) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)KY_IMPORT_TOKEN_BITS)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ky_pkey_to_der(pk, &der)) != 0)
		goto out;
	if ((t->der = ky_secret_alloc(der.len)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	memcpy(t->der, der.data, der.len);
	t->derlen = der.len;
	if ((r = ky_random(t->nonce, sizeof(t->nonce))) != 0)
		goto out;
	t->created = now;
	t->expires = now + expiration;
	t->max_retrievals = max_retrievals;
	t->remaining = max_retrievals;
	*out = t;
	t = NULL; /* transferred */
	r = 0;
out:
	ky_buf_free(&der);
	EVP_PKEY_free(pk);
	ky_import_token_free(t);
	return r;
}

static void it_put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void it_put_i64(uint8_t *p, int64_t v)
{
	it_put_u32(p, (uint32_t)((uint64_t)v >> 32));
	it_put_u32(p + 4, (uint32_t)(uint64_t)v);
}

static uint32_t it_get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t it_get_i64(const uint8_t *p)
{
	return (int64_t)((uint64_t)it_get_u32(p) << 32 | it_get_u32(p + 4));
}

int ky_import_token_encode(const struct ky_import_token *t, uint8_t **out, size_t *n)
{
	size_t len = IT_HEAD + t->derlen;
	uint8_t *p, *b;

	*out = NULL;
	*n = 0;
	if (t->der == NULL || t->derlen == 0 || t->derlen > IT_DER_MAX)
		return KY_ERR_USAGE;
	if ((b = ky_secret_alloc(len)) == NULL)
		return KY_ERR_NOMEM;
	p = b;
	memcpy(p, IT_MAGIC, 4);
	p += 4;
	*p++ = IT_VERSION;
	it_put_i64(p, t->created);
	p += 8;
	it_put_i64(p, t->expires);
	p += 8;
	it_put_u32(p, t->max_retrievals);
	p += 4;
	it_put_u32(p, t->remaining);
	p += 4;
	memcpy(p, t->nonce, KY_IMPORT_NONCE_LEN);
	p += KY_IMPORT_NONCE_LEN;
	*p++ = t->used ? 1 : 0;
	memcpy(p, t->used_nonce, KY_IMPORT_NONCE_LEN);
	p += KY_IMPORT_NONCE_LEN;
	it_put_u32(p, (uint32_t)t->derlen);
	p += 4;
	memcpy(p, t->der, t->derlen);
	*out = b;
	*n = len;
	return 0;
}

int ky_import_token_decode(const uint8_t *p, size_t n, struct ky_import_token **out)
{
	struct ky_import_token *t = NULL;
	const uint8_t *q = p;
	uint32_t derlen;
	int r = KY_ERR_INTERNAL;

	*out = NULL;
	if (p == NULL || n < IT_HEAD || memcmp(p, IT_MAGIC, 4) != 0 || p[4] != IT_VERSION)
		return KY_ERR_MALFORMED;
	derlen = it_get_u32(p + IT_HEAD - 4);
	if (derlen == 0 || derlen > IT_DER_MAX || n != IT_HEAD + (size_t)derlen)
		return KY_ERR_MALFORMED;
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return KY_ERR_NOMEM;
	q += 5;
	t->created = it_get_i64(q);
	q += 8;
	t->expires = it_get_i64(q);
	q += 8;
	t->max_retrievals = it_get_u32(q);
	q += 4;
	t->remaining = it_get_u32(q);
	q += 4;
	memcpy(t->nonce, q, KY_IMPORT_NONCE_LEN);
	q += KY_IMPORT_NONCE_LEN;
	if (*q > 1) {
		r = KY_ERR_MALFORMED;
		goto out;
	}
	t->used = *q++;
	memcpy(t->used_nonce, q, KY_IMPORT_NONCE_LEN);
	q += KY_IMPORT_NONCE_LEN + 4;
	if (t->max_retrievals < 1 || t->max_retrievals > KY_IMPORT_RETRIEVALS_MAX ||
	    t->remaining > t->max_retrievals || t->expires <= t->created) {
		r = KY_ERR_MALFORMED;
		goto out;
	}
	if ((t->der = ky_secret_alloc(derlen)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	memcpy(t->der, q, derlen);
	t->derlen = derlen;
	*out = t;
	t = NULL; /* transferred */
	r = 0;
out:
	ky_import_token_free(t);
	return r;
}

/* The RSA private key of t (KY_ERR_MALFORMED when its DER is not an RSA key of the size). */
static int it_pkey(const struct ky_import_token *t, EVP_PKEY **out)
{
	EVP_PKEY *pk = NULL;
	int r = KY_ERR_INTERNAL;

	*out = NULL;
	if ((r = ky_pkey_from_der(t->der, t->derlen, &pk)) != 0)
		return r;
	if (EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA ||
	    EVP_PKEY_get_bits(pk) != KY_IMPORT_TOKEN_BITS) {
		EVP_PKEY_free(pk);
		return KY_ERR_MALFORMED;
	}
	*out = pk;
	return 0;
}

int ky_import_token_public_b64(const struct ky_import_token *t, char **out)
{
	EVP_PKEY *pk = NULL;
	BIO *bio = NULL;
	char *pem = NULL;
	long len;
	int r = KY_ERR_INTERNAL;

	*out = NULL;
	if ((r = it_pkey(t, &pk)) != 0)
		goto out;
	if ((bio = BIO_new(BIO_s_mem())) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (PEM_write_bio_PUBKEY(bio, pk) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((len = BIO_get_mem_data(bio, &pem)) <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ky_b64_encode((const uint8_t *)pem, (size_t)len, out)) != 0)
		goto out;
	r = 0;
out:
	BIO_free(bio);
	EVP_PKEY_free(pk);
	return r;
}

int ky_import_token_retrieve(struct ky_import_token *t, int64_t now)
{
	if (now >= t->expires)
		return KY_ERR_IMPORT_TOKEN_EXPIRED;
	if (t->remaining == 0)
		return KY_ERR_IMPORT_TOKEN_USED_UP;
	t->remaining--;
	return 0;
}

/* RSAES-OAEP decryption of ct with pk (MGF1 with the same digest, no label) into out. */
static int it_oaep_decrypt(EVP_PKEY *pk, int sha1, const uint8_t *ct, size_t ctlen, uint8_t *out,
                           size_t cap, size_t *outlen)
{
	EVP_PKEY_CTX *ctx = NULL;
	const char *md = sha1 ? "SHA1" : "SHA256";
	size_t n = cap;
	int r = KY_ERR_INTERNAL;

	*outlen = 0;
	if ((ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (EVP_PKEY_decrypt_init(ctx) != 1 ||
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
	    EVP_PKEY_CTX_set_rsa_oaep_md_name(ctx, md, NULL) != 1 ||
	    EVP_PKEY_CTX_set_rsa_mgf1_md_name(ctx, md, NULL) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (EVP_PKEY_decrypt(ctx, out, &n, ct, ctlen) != 1) {
		r = KY_ERR_IMPORT_PAYLOAD;
		goto out;
	}
	*outlen = n;
	r = 0;
out:
	EVP_PKEY_CTX_free(ctx);
	return r;
}

/* AES-GCM decryption of the encrypted nonce (ciphertext || tag, no associated data). */
static int it_nonce_decrypt(const uint8_t *key, size_t keylen, const struct ky_import_sealed *s,
                            uint8_t nonce[KY_IMPORT_NONCE_LEN])
{
	EVP_CIPHER_CTX *ctx = NULL;
	const EVP_CIPHER *c = keylen == 16   ? EVP_aes_128_gcm()
	                      : keylen == 24 ? EVP_aes_192_gcm()
	                                     : EVP_aes_256_gcm();
	uint8_t tag[KY_IMPORT_TAG_LEN];
	int len = 0, fin = 0;
	int r = KY_ERR_INTERNAL;

	if (s->iv_len != KY_IMPORT_IV_LEN ||
	    s->enc_nonce_len != KY_IMPORT_NONCE_LEN + KY_IMPORT_TAG_LEN)
		return KY_ERR_INCORRECT_NONCE_IV;
	memcpy(tag, s->enc_nonce + KY_IMPORT_NONCE_LEN, sizeof(tag));
	if ((ctx = EVP_CIPHER_CTX_new()) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (EVP_DecryptInit_ex2(ctx, c, NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, KY_IMPORT_IV_LEN, NULL) != 1 ||
	    EVP_DecryptInit_ex2(ctx, NULL, key, s->iv, NULL) != 1 ||
	    EVP_DecryptUpdate(ctx, nonce, &len, s->enc_nonce, KY_IMPORT_NONCE_LEN) != 1 ||
	    len != KY_IMPORT_NONCE_LEN ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, KY_IMPORT_TAG_LEN, tag) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (EVP_DecryptFinal_ex(ctx, nonce + len, &fin) != 1) {
		r = KY_ERR_INCORRECT_NONCE_IV;
		goto out;
	}
	r = 0;
out:
	if (r != 0)
		OPENSSL_cleanse(nonce, KY_IMPORT_NONCE_LEN);
	EVP_CIPHER_CTX_free(ctx);
	return r;
}

int ky_import_token_open(struct ky_import_token *t, int64_t now, const struct ky_import_sealed *s,
                         uint8_t *key, size_t cap, size_t *keylen, int *reused)
{
	EVP_PKEY *pk = NULL;
	uint8_t *buf = NULL, nonce[KY_IMPORT_NONCE_LEN], fresh[KY_IMPORT_NONCE_LEN];
	size_t bufcap = KY_IMPORT_CIPHERTEXT_MAX, n = 0;
	int r = KY_ERR_INTERNAL;

	*keylen = 0;
	*reused = 0;
	if (now >= t->expires)
		return KY_ERR_IMPORT_TOKEN_EXPIRED;
	if (s->payload == NULL || s->payload_len == 0 || s->payload_len > KY_IMPORT_CIPHERTEXT_MAX)
		return KY_ERR_IMPORT_PAYLOAD;
	if ((r = it_pkey(t, &pk)) != 0)
		goto out;
	if ((buf = ky_secret_alloc(bufcap)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((r = it_oaep_decrypt(pk, s->oaep_sha1, s->payload, s->payload_len, buf, bufcap, &n)) !=
	    0)
		goto out;
	if ((n != 16 && n != 24 && n != 32) || n > cap) {
		r = KY_ERR_KEY_MATERIAL;
		goto out;
	}
	if ((r = it_nonce_decrypt(buf, n, s, nonce)) != 0)
		goto out;
	if (CRYPTO_memcmp(nonce, t->nonce, KY_IMPORT_NONCE_LEN) != 0) {
		*reused = t->used && CRYPTO_memcmp(nonce, t->used_nonce, KY_IMPORT_NONCE_LEN) == 0;
		r = KY_ERR_INCORRECT_NONCE;
		goto out;
	}
	if ((r = ky_random(fresh, sizeof(fresh))) != 0)
		goto out;
	memcpy(t->used_nonce, t->nonce, KY_IMPORT_NONCE_LEN);
	t->used = 1;
	memcpy(t->nonce, fresh, KY_IMPORT_NONCE_LEN);
	memcpy(key, buf, n);
	*keylen = n;
	r = 0;
out:
	OPENSSL_cleanse(nonce, sizeof(nonce));
	OPENSSL_cleanse(fresh, sizeof(fresh));
	ky_secret_free(buf, bufcap);
	EVP_PKEY_free(pk);
	return r;
}
