/* AES-256-GCM with a random 96-bit nonce: nonce || ciphertext || tag. */
#include <limits.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "kyok/crypto.h"
#include "kyok/err.h"

#define AEAD_NONCE_LEN 12
#define AEAD_TAG_LEN   16
#define AEAD_CHUNK     (64 * 1024)

/* Runs the cipher over in (n bytes) in chunks, appending to out. */
static int aead_update(EVP_CIPHER_CTX *ctx, const uint8_t *in, size_t n, struct ky_buf *out)
{
	int r = KY_ERR_INTERNAL;
	uint8_t buf[AEAD_CHUNK];
	int got = 0;

	while (n > 0) {
		int chunk = n > AEAD_CHUNK ? AEAD_CHUNK : (int)n;
		if (EVP_CipherUpdate(ctx, buf, &got, in, chunk) != 1) {
			r = KY_ERR_CRYPTO;
			goto out;
		}
		if ((r = ky_buf_append(out, buf, (size_t)got)) != 0)
			goto out;
		in += chunk;
		n -= (size_t)chunk;
	}
	r = 0;
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	return r;
}

static int aead_aad(EVP_CIPHER_CTX *ctx, const uint8_t *aad, size_t n)
{
	int got = 0;

	while (n > 0) {
		int chunk = n > INT_MAX ? INT_MAX : (int)n;
		if (EVP_CipherUpdate(ctx, NULL, &got, aad, chunk) != 1)
			return KY_ERR_CRYPTO;
		aad += chunk;
		n -= (size_t)chunk;
	}
	return 0;
}

int ky_aead_seal(const uint8_t key[32], const void *aad, size_t aadlen, const void *pt, size_t n,
                 struct ky_buf *out)
{
	int r = KY_ERR_INTERNAL;
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	uint8_t nonce[AEAD_NONCE_LEN], tag[AEAD_TAG_LEN];
	struct ky_buf ct = {0};
	int got = 0;

	if (ctx == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ky_random(nonce, sizeof(nonce))) != 0)
		goto out;
	if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = aead_aad(ctx, aad, aadlen)) != 0 ||
	    (r = ky_buf_append(&ct, nonce, sizeof(nonce))) != 0 ||
	    (r = aead_update(ctx, pt, n, &ct)) != 0)
		goto out;
	if (EVP_EncryptFinal_ex(ctx, tag, &got) != 1 || got != 0 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, AEAD_TAG_LEN, tag) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ky_buf_append(&ct, tag, sizeof(tag))) != 0 ||
	    (r = ky_buf_append(out, ct.data, ct.len)) != 0)
		goto out;
	r = 0;
out:
	ky_buf_free(&ct);
	EVP_CIPHER_CTX_free(ctx);
	if (r != 0)
		ERR_clear_error();
	return r;
}

int ky_aead_open(const uint8_t key[32], const void *aad, size_t aadlen, const uint8_t *in, size_t n,
                 struct ky_buf *out)
{
	int r = KY_ERR_INTERNAL;
	EVP_CIPHER_CTX *ctx = NULL;
	struct ky_buf pt = {0};
	uint8_t final[AEAD_TAG_LEN];
	int got = 0;

	if (in == NULL || n < AEAD_NONCE_LEN + AEAD_TAG_LEN) {
		r = KY_ERR_TAMPERED;
		goto out;
	}
	if ((ctx = EVP_CIPHER_CTX_new()) == NULL ||
	    EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, in) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = aead_aad(ctx, aad, aadlen)) != 0 ||
	    (r = aead_update(ctx, in + AEAD_NONCE_LEN, n - AEAD_NONCE_LEN - AEAD_TAG_LEN, &pt)) !=
	        0)
		goto out;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, AEAD_TAG_LEN,
	                        (void *)(in + n - AEAD_TAG_LEN)) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (EVP_DecryptFinal_ex(ctx, final, &got) != 1 || got != 0) {
		r = KY_ERR_TAMPERED;
		goto out;
	}
	if ((r = ky_buf_append(out, pt.data, pt.len)) != 0)
		goto out;
	r = 0;
out:
	ky_buf_free(&pt);
	EVP_CIPHER_CTX_free(ctx);
	if (r != 0)
		ERR_clear_error();
	return r;
}
