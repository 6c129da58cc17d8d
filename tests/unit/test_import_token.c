/* Import tokens (lib/kms/import_token.c): the serialised form, retrievals, and opening what a
 * client sealed with the token, the way a client seals it (OpenSSL here, as any client would:
 * RSAES-OAEP to the public key, AES-GCM of the nonce). One RSA-4096 token for the whole file:
 * making one takes a while. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/kms.h"
#include "kyok/kms_import.h"

#define NOW ((int64_t)1800000000)

static struct ky_import_token *token; /* made once */

/* The token's public key, read as a client reads it: base64 of PEM. */
static EVP_PKEY *client_pubkey(const struct ky_import_token *t)
{
	char *b64 = NULL;
	struct ky_buf pem = {0};
	BIO *bio;
	EVP_PKEY *pk;

	assert_int_equal(ky_import_token_public_b64(t, &b64), 0);
	assert_int_equal(ky_b64_decode(b64, &pem), 0);
	free(b64);
	assert_true(pem.len > 26);
	assert_memory_equal(pem.data, "-----BEGIN PUBLIC KEY-----", 26);
	bio = BIO_new_mem_buf(pem.data, (int)pem.len);
	assert_non_null(bio);
	pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	BIO_free(bio);
	ky_buf_free(&pem);
	assert_non_null(pk);
	assert_int_equal(EVP_PKEY_get_bits(pk), KY_IMPORT_TOKEN_BITS);
	return pk;
}

/* RSAES-OAEP of key to pk with md (MGF1 the same). */
static size_t client_oaep(EVP_PKEY *pk, const char *md, const uint8_t *key, size_t n,
                          uint8_t out[KY_IMPORT_CIPHERTEXT_MAX])
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
	size_t outlen = KY_IMPORT_CIPHERTEXT_MAX;

	assert_non_null(ctx);
	assert_int_equal(EVP_PKEY_encrypt_init(ctx), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_oaep_md_name(ctx, md, NULL), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_mgf1_md_name(ctx, md, NULL), 1);
	assert_int_equal(EVP_PKEY_encrypt(ctx, out, &outlen, key, n), 1);
	EVP_PKEY_CTX_free(ctx);
	return outlen;
}

/* AES-GCM of nonce under key with iv: ciphertext || tag. */
static void client_gcm(const uint8_t *key, size_t n, const uint8_t iv[KY_IMPORT_IV_LEN],
                       const uint8_t nonce[KY_IMPORT_NONCE_LEN],
                       uint8_t out[KY_IMPORT_NONCE_LEN + KY_IMPORT_TAG_LEN])
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	const EVP_CIPHER *c = n == 16   ? EVP_aes_128_gcm()
	                      : n == 24 ? EVP_aes_192_gcm()
	                                : EVP_aes_256_gcm();
	int len = 0;

	assert_non_null(ctx);
	assert_int_equal(EVP_EncryptInit_ex2(ctx, c, key, iv, NULL), 1);
	assert_int_equal(EVP_EncryptUpdate(ctx, out, &len, nonce, KY_IMPORT_NONCE_LEN), 1);
	assert_int_equal(EVP_EncryptFinal_ex(ctx, out + len, &len), 1);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, KY_IMPORT_TAG_LEN,
	                                     out + KY_IMPORT_NONCE_LEN),
	                 1);
	EVP_CIPHER_CTX_free(ctx);
}

struct sealed {
	uint8_t payload[KY_IMPORT_CIPHERTEXT_MAX];
	uint8_t enc_nonce[KY_IMPORT_NONCE_LEN + KY_IMPORT_TAG_LEN];
	uint8_t iv[KY_IMPORT_IV_LEN];
	struct ky_import_sealed s;
};

/* Seals key for t as a client does, with nonce (t's current one unless given). */
static void client_seal(const struct ky_import_token *t, const char *md, const uint8_t *key,
                        size_t n, const uint8_t *nonce, struct sealed *out)
{
	EVP_PKEY *pk = client_pubkey(t);

	memset(out, 0, sizeof(*out));
	assert_int_equal(ky_random(out->iv, sizeof(out->iv)), 0);
	out->s.payload_len = client_oaep(pk, md, key, n, out->payload);
	client_gcm(key, n, out->iv, nonce != NULL ? nonce : t->nonce, out->enc_nonce);
	out->s.payload = out->payload;
	out->s.enc_nonce = out->enc_nonce;
	out->s.enc_nonce_len = sizeof(out->enc_nonce);
	out->s.iv = out->iv;
	out->s.iv_len = sizeof(out->iv);
	out->s.oaep_sha1 = strcmp(md, "SHA1") == 0;
	EVP_PKEY_free(pk);
}

static int setup(void **state)
{
	(void)state;
	return ky_import_token_new(NOW, 600, 2, &token);
}

static int teardown(void **state)
{
	(void)state;
	ky_import_token_free(token);
	return 0;
}

/* A copy of the token through its serialised form. */
static struct ky_import_token *token_copy(void)
{
	uint8_t *p = NULL;
	size_t n = 0;
	struct ky_import_token *t = NULL;

	assert_int_equal(ky_import_token_encode(token, &p, &n), 0);
	assert_int_equal(ky_import_token_decode(p, n, &t), 0);
	ky_kms_buf_free(p, n);
	return t;
}

static void test_new_limits(void **state)
{
	struct ky_import_token *t = NULL;

	(void)state;
	assert_int_equal(ky_import_token_new(NOW, 299, 1, &t), KY_ERR_USAGE);
	assert_int_equal(ky_import_token_new(NOW, 86401, 1, &t), KY_ERR_USAGE);
	assert_int_equal(ky_import_token_new(NOW, 600, 0, &t), KY_ERR_USAGE);
	assert_int_equal(ky_import_token_new(NOW, 600, 501, &t), KY_ERR_USAGE);
	assert_null(t);
	assert_int_equal(token->expires, NOW + 600);
	assert_int_equal(token->max_retrievals, 2);
	assert_int_equal(token->remaining, 2);
	assert_false(token->used);
	ky_import_token_free(NULL);
}

static void test_encode_decode(void **state)
{
	struct ky_import_token *t = token_copy(), *u = NULL;
	uint8_t *p = NULL, *q;
	size_t n = 0;

	(void)state;
	assert_int_equal(t->created, token->created);
	assert_int_equal(t->expires, token->expires);
	assert_int_equal(t->remaining, token->remaining);
	assert_memory_equal(t->nonce, token->nonce, KY_IMPORT_NONCE_LEN);
	assert_int_equal(t->derlen, token->derlen);
	assert_memory_equal(t->der, token->der, t->derlen);
	ky_import_token_free(t);

	assert_int_equal(ky_import_token_encode(token, &p, &n), 0);
	q = malloc(n + 1);
	assert_non_null(q);
	/* every cut is refused */
	for (size_t k = 0; k < n; k += (k < 80 ? 1 : 97)) {
		memcpy(q, p, k);
		assert_int_equal(ky_import_token_decode(q, k, &u), KY_ERR_MALFORMED);
		assert_null(u);
	}
	/* one byte more */
	memcpy(q, p, n);
	q[n] = 0;
	assert_int_equal(ky_import_token_decode(q, n + 1, &u), KY_ERR_MALFORMED);
	/* magic, version, the used flag, retrievals above the maximum, expiry before creation */
	static const struct {
		size_t at;
		uint8_t v;
	} bad[] = {{0, 'X'}, {4, 2}, {4, 0}, {41, 2}, {28, 0xff}, {24, 0}, {5, 0x7f}};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(q, p, n);
		q[bad[i].at] = bad[i].v;
		if (ky_import_token_decode(q, n, &u) != KY_ERR_MALFORMED)
			fail_msg("byte %zu = %u decoded", bad[i].at, bad[i].v);
	}
	/* a DER that is no RSA-4096 key: decodes, but opens nothing */
	memcpy(q, p, n);
	q[58 + 1] ^= 0xff; /* the length of the DER's outer SEQUENCE */
	if (ky_import_token_decode(q, n, &u) == 0) {
		char *b64 = NULL;
		assert_int_not_equal(ky_import_token_public_b64(u, &b64), 0);
		assert_null(b64);
		ky_import_token_free(u);
	}
	free(q);
	ky_kms_buf_free(p, n);
}

static void test_retrieve(void **state)
{
	struct ky_import_token *t = token_copy();

	(void)state;
	assert_int_equal(ky_import_token_retrieve(t, NOW + 1), 0);
	assert_int_equal(t->remaining, 1);
	assert_int_equal(ky_import_token_retrieve(t, NOW + 599), 0);
	assert_int_equal(t->remaining, 0);
	assert_int_equal(ky_import_token_retrieve(t, NOW + 2), KY_ERR_IMPORT_TOKEN_USED_UP);
	assert_int_equal(t->remaining, 0);
	t->remaining = 1;
	assert_int_equal(ky_import_token_retrieve(t, NOW + 600), KY_ERR_IMPORT_TOKEN_EXPIRED);
	assert_int_equal(t->remaining, 1);
	ky_import_token_free(t);
}

static void test_open(void **state)
{
	struct ky_import_token *t = token_copy();
	struct sealed sd, sd2;
	uint8_t key[32], out[32], first[KY_IMPORT_NONCE_LEN];
	size_t n = 0;
	int reused = -1;

	(void)state;
	assert_int_equal(ky_random(key, sizeof(key)), 0);
	client_seal(t, "SHA256", key, 32, NULL, &sd);
	memcpy(first, t->nonce, sizeof(first));
	assert_int_equal(ky_import_token_open(t, NOW + 1, &sd.s, out, sizeof(out), &n, &reused), 0);
	assert_int_equal(n, 32);
	assert_memory_equal(out, key, 32);
	assert_int_equal(reused, 0);
	/* the nonce is used up: a fresh one, and the old one is refused as such */
	assert_true(t->used);
	assert_memory_equal(t->used_nonce, first, sizeof(first));
	assert_memory_not_equal(t->nonce, first, sizeof(first));
	assert_int_equal(ky_import_token_open(t, NOW + 1, &sd.s, out, sizeof(out), &n, &reused),
	                 KY_ERR_INCORRECT_NONCE);
	assert_int_equal(reused, 1);
	assert_int_equal(n, 0);
	/* a nonce the token never gave */
	{
		uint8_t other[KY_IMPORT_NONCE_LEN];
		assert_int_equal(ky_random(other, sizeof(other)), 0);
		client_seal(t, "SHA256", key, 32, other, &sd2);
		assert_int_equal(
		    ky_import_token_open(t, NOW + 1, &sd2.s, out, sizeof(out), &n, &reused),
		    KY_ERR_INCORRECT_NONCE);
		assert_int_equal(reused, 0);
	}
	/* the current nonce under another IV than sent, or damaged */
	client_seal(t, "SHA256", key, 32, NULL, &sd2);
	sd2.iv[0] ^= 1;
	assert_int_equal(ky_import_token_open(t, NOW + 1, &sd2.s, out, sizeof(out), &n, &reused),
	                 KY_ERR_INCORRECT_NONCE_IV);
	sd2.iv[0] ^= 1;
	sd2.enc_nonce[KY_IMPORT_NONCE_LEN + 3] ^= 1;
	assert_int_equal(ky_import_token_open(t, NOW + 1, &sd2.s, out, sizeof(out), &n, &reused),
	                 KY_ERR_INCORRECT_NONCE_IV);
	sd2.enc_nonce[KY_IMPORT_NONCE_LEN + 3] ^= 1;
	sd2.s.iv_len = 16;
	assert_int_equal(ky_import_token_open(t, NOW + 1, &sd2.s, out, sizeof(out), &n, &reused),
	                 KY_ERR_INCORRECT_NONCE_IV);
	sd2.s.iv_len = KY_IMPORT_IV_LEN;
	sd2.s.enc_nonce_len = KY_IMPORT_NONCE_LEN;
	assert_int_equal(ky_import_token_open(t, NOW + 1, &sd2.s, out, sizeof(out), &n, &reused),
	                 KY_ERR_INCORRECT_NONCE_IV);
	sd2.s.enc_nonce_len = KY_IMPORT_NONCE_LEN + KY_IMPORT_TAG_LEN;
	/* a payload the token's key does not open: damaged, other digest, empty, too long */
	sd2.payload[7] ^= 1;
	assert_int_equal(ky_import_token_open(t, NOW + 1, &sd2.s, out, sizeof(out), &n, &reused),
	                 KY_ERR_IMPORT_PAYLOAD);
	sd2.payload[7] ^= 1;
	sd2.s.oaep_sha1 = 1;
	assert_int_equal(ky_import_token_open(t, NOW + 1, &sd2.s, out, sizeof(out), &n, &reused),
	                 KY_ERR_IMPORT_PAYLOAD);
	sd2.s.oaep_sha1 = 0;
	sd2.s.payload_len = 0;
	assert_int_equal(ky_import_token_open(t, NOW + 1, &sd2.s, out, sizeof(out), &n, &reused),
	                 KY_ERR_IMPORT_PAYLOAD);
	sd2.s.payload_len = KY_IMPORT_CIPHERTEXT_MAX + 1;
	assert_int_equal(ky_import_token_open(t, NOW + 1, &sd2.s, out, sizeof(out), &n, &reused),
	                 KY_ERR_IMPORT_PAYLOAD);
	sd2.s.payload_len = KY_IMPORT_CIPHERTEXT_MAX;
	/* expired */
	assert_int_equal(ky_import_token_open(t, NOW + 600, &sd2.s, out, sizeof(out), &n, &reused),
	                 KY_ERR_IMPORT_TOKEN_EXPIRED);
	/* none of the refusals used the nonce up: the sealed import still goes through */
	assert_int_equal(ky_import_token_open(t, NOW + 2, &sd2.s, out, sizeof(out), &n, &reused),
	                 0);
	assert_memory_equal(out, key, 32);
	ky_import_token_free(t);
}

static void test_open_sizes(void **state)
{
	struct ky_import_token *t = token_copy();
	struct sealed sd;
	uint8_t key[40], out[32];
	size_t n = 0;
	int reused;

	(void)state;
	assert_int_equal(ky_random(key, sizeof(key)), 0);
	/* AES-128 and -192 keys, SHA-1 OAEP */
	client_seal(t, "SHA1", key, 16, NULL, &sd);
	assert_int_equal(ky_import_token_open(t, NOW, &sd.s, out, sizeof(out), &n, &reused), 0);
	assert_int_equal(n, 16);
	assert_memory_equal(out, key, 16);
	client_seal(t, "SHA256", key, 24, NULL, &sd);
	assert_int_equal(ky_import_token_open(t, NOW, &sd.s, out, sizeof(out), &n, &reused), 0);
	assert_int_equal(n, 24);
	/* no AES key length; a nonce sealed under the first 32 bytes does not matter */
	{
		EVP_PKEY *pk = client_pubkey(t);
		sd.s.payload_len = client_oaep(pk, "SHA256", key, 20, sd.payload);
		EVP_PKEY_free(pk);
	}
	assert_int_equal(ky_import_token_open(t, NOW, &sd.s, out, sizeof(out), &n, &reused),
	                 KY_ERR_KEY_MATERIAL);
	assert_int_equal(n, 0);
	/* room for the key */
	client_seal(t, "SHA256", key, 32, NULL, &sd);
	assert_int_equal(ky_import_token_open(t, NOW, &sd.s, out, 24, &n, &reused),
	                 KY_ERR_KEY_MATERIAL);
	ky_import_token_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_new_limits), cmocka_unit_test(test_encode_decode),
	    cmocka_unit_test(test_retrieve),   cmocka_unit_test(test_open),
	    cmocka_unit_test(test_open_sizes),
	};

	if (ky_crypto_init() != 0)
		return 1;
	return cmocka_run_group_tests(tests, setup, teardown);
}
