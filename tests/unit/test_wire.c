/* Unit tests of lib/wire: reply signatures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the four headers above first */
#include <cmocka.h>

#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reply_roundtrip),
	    cmocka_unit_test(test_reply_message_layout),
	    cmocka_unit_test(test_reply_refusals),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
