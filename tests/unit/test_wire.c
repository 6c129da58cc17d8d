/* Unit tests of lib/wire: reply signatures, imprint claims. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the four headers above first */
#include <cmocka.h>

#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/imprint.h"
#include "kyok/wire.h"

static EVP_PKEY *identity, *other;

static const char nonce[] = "0123456789abcdef0123456789abcdef";
static const char body[] = "{\"ok\":true,\"result\":{}}";

static int group_setup(void **state)
{
	(void)state;
	if (ky_crypto_init() != 0 || ky_ec_generate(&identity) != 0 || ky_ec_generate(&other) != 0)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(identity);
	EVP_PKEY_free(other);
	return 0;
}

static void test_reply_roundtrip(void **state)
{
	char *sig = NULL;

	(void)state;
	assert_int_equal(
	    ky_reply_sign(identity, "POST", "/v1/admin/command", nonce, body, strlen(body), &sig),
	    0);
	assert_int_equal(
	    ky_reply_verify(identity, "POST", "/v1/admin/command", nonce, body, strlen(body), sig),
	    0);
	free(sig);

	/* No nonce is the empty nonce; empty body. */
	assert_int_equal(ky_reply_sign(identity, "GET", "/v1/admin/state", NULL, NULL, 0, &sig), 0);
	assert_int_equal(ky_reply_verify(identity, "GET", "/v1/admin/state", "", "", 0, sig), 0);
	assert_int_equal(ky_reply_verify(identity, "GET", "/v1/admin/state", nonce, "", 0, sig),
	                 KY_ERR_BAD_REPLY);
	free(sig);
}

/* The signature is plain ECDSA-SHA512 over the documented bytes. */
static void test_reply_message_layout(void **state)
{
	char *sig = NULL;
	struct ky_buf raw = {0};
	static const char msg[] = "kyok-reply-v1\nPOST /v1/admin/command\n"
	                          "0123456789abcdef0123456789abcdef\n"
	                          "{\"ok\":true,\"result\":{}}";

	(void)state;
	assert_int_equal(
	    ky_reply_sign(identity, "POST", "/v1/admin/command", nonce, body, strlen(body), &sig),
	    0);
	assert_int_equal(ky_b64_decode(sig, &raw), 0);
	assert_int_equal(ky_verify(identity, msg, strlen(msg), raw.data, raw.len), 0);
	assert_int_equal(ky_verify(identity, msg, strlen(msg) - 1, raw.data, raw.len),
	                 KY_ERR_BAD_SIGNATURE);
	ky_buf_free(&raw);
	free(sig);
}

static void test_reply_refusals(void **state)
{
	char *sig = NULL, *bad = NULL;
	const char *path = "/v1/admin/command";
	size_t n = strlen(body);

	(void)state;
	assert_int_equal(ky_reply_sign(identity, "POST", path, nonce, body, n, &sig), 0);
	/* Another nonce, path, method, body, key. */
	assert_int_equal(ky_reply_verify(identity, "POST", path, "0123456789abcdef0123456789abcdee",
	                                 body, n, sig),
	                 KY_ERR_BAD_REPLY);
	assert_int_equal(ky_reply_verify(identity, "POST", "/v1/admin/state", nonce, body, n, sig),
	                 KY_ERR_BAD_REPLY);
	assert_int_equal(ky_reply_verify(identity, "GET", path, nonce, body, n, sig),
	                 KY_ERR_BAD_REPLY);
	assert_int_equal(ky_reply_verify(identity, "POST", path, nonce, "{\"ok\":false}", 12, sig),
	                 KY_ERR_BAD_REPLY);
	assert_int_equal(ky_reply_verify(identity, "POST", path, nonce, body, n - 1, sig),
	                 KY_ERR_BAD_REPLY);
	assert_int_equal(ky_reply_verify(other, "POST", path, nonce, body, n, sig),
	                 KY_ERR_BAD_REPLY);
	/* Damaged signature: one base64 character, not base64, empty, absent. */
	bad = strdup(sig);
	bad[10] = bad[10] == 'A' ? 'B' : 'A';
	assert_int_equal(ky_reply_verify(identity, "POST", path, nonce, body, n, bad),
	                 KY_ERR_BAD_REPLY);
	assert_int_equal(ky_reply_verify(identity, "POST", path, nonce, body, n, "!!!!"),
	                 KY_ERR_BAD_REPLY);
	assert_int_equal(ky_reply_verify(identity, "POST", path, nonce, body, n, ""),
	                 KY_ERR_BAD_REPLY);
	assert_int_equal(ky_reply_verify(identity, "POST", path, nonce, body, n, NULL),
	                 KY_ERR_BAD_REPLY);
	assert_int_equal(ky_reply_verify(NULL, "POST", path, nonce, body, n, sig),
	                 KY_ERR_BAD_REPLY);
	/* Moving a separator between fields must not keep the signature valid. */
	assert_int_equal(
	    ky_reply_verify(identity, "POST /v1/admin/command", "", nonce, body, n, sig),
	    KY_ERR_BAD_REPLY);
	assert_int_equal(
	    ky_reply_verify(identity, "POST", "/v1/admin/command\n0123", "", body, n, sig),
	    KY_ERR_BAD_REPLY);
	free(bad);
	free(sig);
	sig = NULL;

	/* Fields that would make the message ambiguous are refused when signing. */
	assert_int_equal(ky_reply_sign(identity, "PO ST", path, nonce, body, n, &sig),
	                 KY_ERR_USAGE);
	assert_int_equal(ky_reply_sign(identity, "", path, nonce, body, n, &sig), KY_ERR_USAGE);
	assert_int_equal(ky_reply_sign(identity, "POST", "/a\nb", nonce, body, n, &sig),
	                 KY_ERR_USAGE);
	assert_int_equal(ky_reply_sign(identity, "POST", path, "ab\ncd", body, n, &sig),
	                 KY_ERR_USAGE);
	assert_null(sig);
	assert_int_equal(ERR_peek_error(), 0);
}

/* ---- imprint claims ---- */

static EVP_PKEY *imprint_cred(uint8_t pub[KY_IMPRINT_PUB_LEN])
{
	struct ky_buf pem = {0};
	EVP_PKEY *k = NULL;

	assert_int_equal(ky_imprint_credential_new(&pem, pub), 0);
	assert_non_null(memmem(pem.data, pem.len, "-----BEGIN PRIVATE KEY-----", 27));
	assert_int_equal(ky_imprint_credential_parse(pem.data, pem.len, &k), 0);
	ky_buf_free(&pem);
	return k;
}

static void test_imprint_claim(void **state)
{
	const uint8_t cmd[] = "0\x82 a DER SignedData, as far as the claim cares";
	const uint8_t other_cmd[] = "0\x82 a DER SignedData, as far as the claim caret";
	uint8_t pub[KY_IMPRINT_PUB_LEN], pub2[KY_IMPRINT_PUB_LEN], p[KY_IMPRINT_PUB_LEN];
	EVP_PKEY *cred, *cred2;
	char *claim = NULL, *claim2 = NULL, *bad;

	(void)state;
	cred = imprint_cred(pub);
	cred2 = imprint_cred(pub2);
	assert_memory_not_equal(pub, pub2, sizeof(pub));
	assert_int_equal(ky_imprint_public(cred, p), 0);
	assert_memory_equal(p, pub, sizeof(pub));

	assert_int_equal(ky_imprint_claim(cred, cmd, sizeof(cmd), &claim), 0);
	assert_int_equal(strlen(claim), 88); /* base64 of 64 bytes */
	assert_int_equal(ky_imprint_claim_verify(pub, claim, cmd, sizeof(cmd)), 0);
	/* another command, another credential, a changed claim, garbage: refused */
	assert_int_equal(ky_imprint_claim_verify(pub, claim, other_cmd, sizeof(other_cmd)),
	                 KY_ERR_IMPRINT_CLAIM_INVALID);
	assert_int_equal(ky_imprint_claim_verify(pub2, claim, cmd, sizeof(cmd)),
	                 KY_ERR_IMPRINT_CLAIM_INVALID);
	assert_int_equal(ky_imprint_claim(cred2, cmd, sizeof(cmd), &claim2), 0);
	assert_int_equal(ky_imprint_claim_verify(pub, claim2, cmd, sizeof(cmd)),
	                 KY_ERR_IMPRINT_CLAIM_INVALID);
	bad = strdup(claim);
	bad[5] = bad[5] == 'A' ? 'B' : 'A';
	assert_int_equal(ky_imprint_claim_verify(pub, bad, cmd, sizeof(cmd)),
	                 KY_ERR_IMPRINT_CLAIM_INVALID);
	assert_int_equal(ky_imprint_claim_verify(pub, "bm90IGEgc2lnbmF0dXJl", cmd, sizeof(cmd)),
	                 KY_ERR_IMPRINT_CLAIM_INVALID);
	assert_int_equal(ky_imprint_claim_verify(pub, "!!!!", cmd, sizeof(cmd)),
	                 KY_ERR_IMPRINT_CLAIM_INVALID);
	assert_int_equal(ky_imprint_claim_verify(pub, "", cmd, sizeof(cmd)),
	                 KY_ERR_IMPRINT_CLAIM_INVALID);
	assert_int_equal(ky_imprint_claim_verify(pub, NULL, cmd, sizeof(cmd)),
	                 KY_ERR_IMPRINT_CLAIM_INVALID);
	assert_int_equal(ky_imprint_claim_verify(pub, claim, cmd, 0), KY_ERR_IMPRINT_CLAIM_INVALID);
	/* the claim covers the context string: a bare signature over the body is not one */
	{
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		uint8_t sig[64];
		size_t siglen = sizeof(sig);
		char *b64 = NULL;
		assert_int_equal(EVP_DigestSignInit(ctx, NULL, NULL, NULL, cred), 1);
		assert_int_equal(EVP_DigestSign(ctx, sig, &siglen, cmd, sizeof(cmd)), 1);
		assert_int_equal(ky_b64_encode(sig, siglen, &b64), 0);
		assert_int_equal(ky_imprint_claim_verify(pub, b64, cmd, sizeof(cmd)),
		                 KY_ERR_IMPRINT_CLAIM_INVALID);
		free(b64);
		EVP_MD_CTX_free(ctx);
	}
	free(bad);
	free(claim);
	free(claim2);
	EVP_PKEY_free(cred);
	EVP_PKEY_free(cred2);
	assert_int_equal(ERR_peek_error(), 0);
}

static void test_imprint_credential_parse(void **state)
{
	EVP_PKEY *k = NULL;
	BIO *bio;
	char *p = NULL;
	long len;
	uint8_t pub[KY_IMPRINT_PUB_LEN];
	const char garbage[] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";

	(void)state;
	/* a P-521 key (the signature keys' kind) is not a credential */
	bio = BIO_new(BIO_s_mem());
	assert_int_equal(PEM_write_bio_PrivateKey(bio, identity, NULL, NULL, 0, NULL, NULL), 1);
	len = BIO_get_mem_data(bio, &p);
	assert_int_equal(ky_imprint_credential_parse((const uint8_t *)p, (size_t)len, &k),
	                 KY_ERR_MALFORMED);
	assert_null(k);
	BIO_free(bio);
	/* an encrypted one is not read (nothing asks for a passphrase) */
	k = imprint_cred(pub);
	bio = BIO_new(BIO_s_mem());
	assert_int_equal(
	    PEM_write_bio_PKCS8PrivateKey(bio, k, EVP_aes_256_cbc(), "passphrase", 10, NULL, NULL),
	    1);
	EVP_PKEY_free(k);
	k = NULL;
	len = BIO_get_mem_data(bio, &p);
	assert_int_equal(ky_imprint_credential_parse((const uint8_t *)p, (size_t)len, &k),
	                 KY_ERR_MALFORMED);
	assert_null(k);
	BIO_free(bio);
	assert_int_equal(ky_imprint_credential_parse((const uint8_t *)garbage, strlen(garbage), &k),
	                 KY_ERR_MALFORMED);
	assert_int_equal(ky_imprint_credential_parse((const uint8_t *)"", 0, &k), KY_ERR_MALFORMED);
	assert_int_equal(ky_imprint_public(identity, pub), KY_ERR_CRYPTO);
	assert_null(k);
	assert_int_equal(ERR_peek_error(), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reply_roundtrip),
	    cmocka_unit_test(test_reply_message_layout),
	    cmocka_unit_test(test_reply_refusals),
	    cmocka_unit_test(test_imprint_claim),
	    cmocka_unit_test(test_imprint_credential_parse),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
