/* The daemon's pure pieces of the key API: access tokens (JWT HS256), the token request form,
 * Key Protect bodies and query values, replies, and the unit configuration keys of the key
 * API. Every check has a case that trips it. Keys are generated here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/ceremony.h"
#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/imprint.h"
#include "kyok/kms.h"
#include "kyok/kms_import.h"
#include "unitd/api.h"
#include "unitd/config.h"
#include "unitd/imprint.h"
#include "unitd/token.h"
#include "unitd/unitd.h"

#define NOW  ((int64_t)1800000000)
#define INST "inst-0001"

static void key_random(uint8_t key[TOKEN_KEY_LEN])
{
	assert_int_equal(RAND_bytes(key, TOKEN_KEY_LEN), 1);
}

static struct token_claims claims_ok(void)
{
	struct token_claims c;

	memset(&c, 0, sizeof(c));
	strcpy(c.sub, "ak-writer");
	strcpy(c.instance, INST);
	strcpy(c.role, "Writer");
	c.iat = NOW;
	c.exp = NOW + 3600;
	strcpy(c.jti, "00112233445566778899aabbccddeeff");
	return c;
}

/* A token with arbitrary claims text, signed with key (to reach the checks after the MAC). */
static void token_forge(const uint8_t key[TOKEN_KEY_LEN], const char *claims, char *out, size_t cap)
{
	size_t off, maclen = 0;
	uint8_t mac[32];
	OSSL_PARAM params[2];
	EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(m);

	off = (size_t)snprintf(out, cap, "%s.", TOKEN_HEADER_B64);
	assert_int_equal(
	    token_b64url_encode((const uint8_t *)claims, strlen(claims), out + off, cap - off), 0);
	off += strlen(out + off);
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	assert_int_equal(EVP_MAC_init(ctx, key, TOKEN_KEY_LEN, params), 1);
	assert_int_equal(EVP_MAC_update(ctx, (const unsigned char *)out, off), 1);
	assert_int_equal(EVP_MAC_final(ctx, mac, &maclen, sizeof(mac)), 1);
	out[off++] = '.';
	assert_int_equal(token_b64url_encode(mac, maclen, out + off, cap - off), 0);
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(m);
}

/* ---- base64url ---- */

static void test_b64url(void **state)
{
	uint8_t in[40], out[64];
	char enc[80];
	size_t n;

	(void)state;
	assert_int_equal(RAND_bytes(in, sizeof(in)), 1);
	for (size_t len = 0; len <= sizeof(in); len++) {
		assert_int_equal(token_b64url_encode(in, len, enc, sizeof(enc)), 0);
		assert_null(strchr(enc, '='));
		assert_null(strchr(enc, '+'));
		assert_null(strchr(enc, '/'));
		assert_int_equal(token_b64url_decode(enc, strlen(enc), out, sizeof(out), &n), 0);
		assert_int_equal(n, len);
		assert_memory_equal(out, in, len);
	}
	/* The header constant is what it says. */
	{
		const char *h = "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"kyok-1\"}";
		assert_int_equal(
		    token_b64url_encode((const uint8_t *)h, strlen(h), enc, sizeof(enc)), 0);
		assert_string_equal(enc, TOKEN_HEADER_B64);
	}
	assert_int_equal(token_b64url_decode("ab+c", 4, out, sizeof(out), &n), KY_ERR_MALFORMED);
	assert_int_equal(token_b64url_decode("ab=c", 4, out, sizeof(out), &n), KY_ERR_MALFORMED);
	assert_int_equal(token_b64url_decode("abcde", 5, out, sizeof(out), &n), KY_ERR_MALFORMED);
	/* "QR" leaves non-zero bits: a second spelling of "A" is refused. */
	assert_int_equal(token_b64url_decode("QR", 2, out, sizeof(out), &n), KY_ERR_MALFORMED);
	assert_int_equal(token_b64url_decode("QQ", 2, out, sizeof(out), &n), 0);
	assert_int_equal(token_b64url_decode("QUFB", 4, out, 2, &n), KY_ERR_TOO_LARGE);
	assert_int_equal(token_b64url_encode(in, 30, enc, 40), KY_ERR_TOO_LARGE);
}

/* ---- tokens ---- */

static void test_token_roundtrip(void **state)
{
	uint8_t key[TOKEN_KEY_LEN];
	struct token_claims c = claims_ok(), got;
	char tok[TOKEN_MAX_LEN + 1], d[256];

	(void)state;
	key_random(key);
	assert_int_equal(token_issue(key, &c, tok, sizeof(tok)), 0);
	assert_int_equal(strncmp(tok, TOKEN_HEADER_B64 ".", strlen(TOKEN_HEADER_B64) + 1), 0);
	assert_int_equal(token_verify(key, tok, strlen(tok), NOW + 10, INST, &got, d, sizeof(d)),
	                 0);
	assert_string_equal(got.sub, "ak-writer");
	assert_string_equal(got.role, "Writer");
	assert_int_equal(got.exp, NOW + 3600);
	assert_int_equal(token_issue(key, &c, tok, 40), KY_ERR_TOO_LARGE);
}

static void test_token_refusals(void **state)
{
	uint8_t key[TOKEN_KEY_LEN], other[TOKEN_KEY_LEN];
	struct token_claims c = claims_ok(), got;
	char tok[TOKEN_MAX_LEN + 1], bad[TOKEN_MAX_LEN + 1], d[256];
	size_t n;

	(void)state;
	key_random(key);
	key_random(other);
	assert_int_equal(token_issue(key, &c, tok, sizeof(tok)), 0);
	n = strlen(tok);
	/* another key */
	assert_int_equal(token_verify(other, tok, n, NOW, INST, &got, d, sizeof(d)),
	                 KY_ERR_UNAUTHORIZED);
	assert_non_null(strstr(d, "signature"));
	assert_string_equal(got.sub, "");
	/* a changed claim */
	strcpy(bad, tok);
	bad[strlen(TOKEN_HEADER_B64) + 5] ^= 1;
	assert_int_equal(token_verify(key, bad, n, NOW, INST, &got, d, sizeof(d)),
	                 KY_ERR_UNAUTHORIZED);
	/* a changed signature */
	strcpy(bad, tok);
	bad[n - 3] = bad[n - 3] == 'A' ? 'B' : 'A';
	assert_int_equal(token_verify(key, bad, n, NOW, INST, &got, d, sizeof(d)),
	                 KY_ERR_UNAUTHORIZED);
	/* a truncated signature, no signature, another header */
	assert_int_equal(token_verify(key, tok, n - 1, NOW, INST, &got, d, sizeof(d)),
	                 KY_ERR_UNAUTHORIZED);
	assert_int_equal(
	    token_verify(key, tok, strlen(TOKEN_HEADER_B64) + 1, NOW, INST, &got, d, sizeof(d)),
	    KY_ERR_UNAUTHORIZED);
	strcpy(bad, tok);
	bad[3] = 'X';
	assert_int_equal(token_verify(key, bad, n, NOW, INST, &got, d, sizeof(d)),
	                 KY_ERR_UNAUTHORIZED);
	/* expired, not yet issued, other instance */
	assert_int_equal(token_verify(key, tok, n, NOW + 3600, INST, &got, d, sizeof(d)),
	                 KY_ERR_UNAUTHORIZED);
	assert_non_null(strstr(d, "expired"));
	assert_int_equal(
	    token_verify(key, tok, n, NOW - TOKEN_CLOCK_SKEW - 1, INST, &got, d, sizeof(d)),
	    KY_ERR_UNAUTHORIZED);
	assert_int_equal(token_verify(key, tok, n, NOW, "inst-0002", &got, d, sizeof(d)),
	                 KY_ERR_UNAUTHORIZED);
	assert_non_null(strstr(d, "another service instance"));
	/* too long */
	memset(bad, 'a', sizeof(bad) - 1);
	bad[sizeof(bad) - 1] = '\0';
	assert_int_equal(token_verify(key, bad, TOKEN_MAX_LEN + 1, NOW, INST, &got, d, sizeof(d)),
	                 KY_ERR_UNAUTHORIZED);
	/* Authentic but wrong claims: each one refused. */
	{
		static const char *const forged[] = {
		    "{\"iss\":\"other\",\"sub\":\"a\",\"instance\":\"" INST
		    "\",\"role\":\"Reader\","
		    "\"iat\":1800000000,\"exp\":1800003600,\"jti\":\"x\"}",
		    "{\"iss\":\"kyok\",\"instance\":\"" INST "\",\"role\":\"Reader\","
		    "\"iat\":1800000000,\"exp\":1800003600,\"jti\":\"x\"}",
		    "{\"iss\":\"kyok\",\"sub\":\"a b\",\"instance\":\"" INST
		    "\",\"role\":\"Reader\","
		    "\"iat\":1800000000,\"exp\":1800003600,\"jti\":\"x\"}",
		    "{\"iss\":\"kyok\",\"sub\":\"a\",\"instance\":\"" INST "\",\"role\":\"Reader\","
		    "\"iat\":\"1800000000\",\"exp\":1800003600,\"jti\":\"x\"}",
		    "{\"iss\":\"kyok\",\"sub\":\"a\",\"instance\":\"" INST "\",\"role\":\"Reader\","
		    "\"iat\":1800000000,\"exp\":1800000000,\"jti\":\"x\"}",
		    "{\"iss\":\"kyok\",\"sub\":\"a\",\"sub\":\"b\",\"instance\":\"" INST
		    "\",\"role\":\"Reader\",\"iat\":1800000000,\"exp\":1800003600,\"jti\":\"x\"}",
		    "[1,2,3]",
		};
		for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
			token_forge(key, forged[i], bad, sizeof(bad));
			assert_int_equal(
			    token_verify(key, bad, strlen(bad), NOW, INST, &got, d, sizeof(d)),
			    KY_ERR_UNAUTHORIZED);
		}
		token_forge(
		    key,
		    "{\"iss\":\"kyok\",\"sub\":\"a\",\"instance\":\"" INST
		    "\",\"role\":\"Reader\",\"iat\":1800000000,\"exp\":1800003600,\"jti\":\"x\"}",
		    bad, sizeof(bad));
		assert_int_equal(token_verify(key, bad, strlen(bad), NOW, INST, &got, d, sizeof(d)),
		                 0);
	}
}

static void test_token_bearer(void **state)
{
	const char *t;
	size_t n;

	(void)state;
	assert_int_equal(token_bearer("Bearer abc.def ", &t, &n), 0);
	assert_int_equal(n, 7);
	assert_int_equal(strncmp(t, "abc.def", n), 0);
	assert_int_equal(token_bearer("bearer x", &t, &n), 0);
	assert_int_equal(token_bearer(NULL, &t, &n), KY_ERR_UNAUTHORIZED);
	assert_int_equal(token_bearer("Basic abc", &t, &n), KY_ERR_UNAUTHORIZED);
	assert_int_equal(token_bearer("Bearer    ", &t, &n), KY_ERR_UNAUTHORIZED);
}

static void test_token_form(void **state)
{
	char key[TOKEN_APIKEY_MAX + 1], d[256];
	const char *ok = "grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&"
	                 "apikey=kyok_a%2Bb+c&response_type=cloud_iam";

	(void)state;
	assert_int_equal(token_form_parse(ok, strlen(ok), key, sizeof(key), d, sizeof(d)), 0);
	assert_string_equal(key, "kyok_a+b c");
	/* Order and empty fields do not matter; response_type is optional. */
	{
		const char *f = "apikey=k1&&grant_type=" TOKEN_GRANT;
		assert_int_equal(token_form_parse(f, strlen(f), key, sizeof(key), d, sizeof(d)), 0);
		assert_string_equal(key, "k1");
	}
	/* Any other field is refused, named. */
	{
		const char *f = "scope=x&apikey=k1&grant_type=" TOKEN_GRANT;
		d[0] = '\0';
		assert_int_equal(token_form_parse(f, strlen(f), key, sizeof(key), d, sizeof(d)),
		                 KY_ERR_BODY_MEMBER);
		assert_non_null(strstr(d, "'scope'"));
		assert_string_equal(key, "");
	}
	static const struct {
		const char *form;
		int err;
	} bad[] = {
	    {"apikey=k1", KY_ERR_MALFORMED},
	    {"grant_type=" TOKEN_GRANT, KY_ERR_MALFORMED},
	    {"grant_type=password&apikey=k1", KY_ERR_UNSUPPORTED},
	    {"grant_type=" TOKEN_GRANT "&apikey=", KY_ERR_MALFORMED},
	    {"grant_type=" TOKEN_GRANT "&apikey=a&apikey=b", KY_ERR_MALFORMED},
	    {"grant_type=" TOKEN_GRANT "&grant_type=" TOKEN_GRANT "&apikey=a", KY_ERR_MALFORMED},
	    {"grant_type=" TOKEN_GRANT "&apikey=a%2", KY_ERR_MALFORMED},
	    {"grant_type=" TOKEN_GRANT "&apikey=a%zz", KY_ERR_MALFORMED},
	    {"grant_type=" TOKEN_GRANT "&apikey=a%0ab", KY_ERR_MALFORMED},
	    {"grant_type=" TOKEN_GRANT "&apikey", KY_ERR_MALFORMED},
	    {"grant_type=" TOKEN_GRANT "&apikey=a&response_type=uaa", KY_ERR_UNSUPPORTED},
	    {"grant_type=" TOKEN_GRANT "&apikey=a&response_type=", KY_ERR_UNSUPPORTED},
	    {"grant_type=" TOKEN_GRANT "&apikey=a&response_type=cloud_iam&response_type=cloud_iam",
	     KY_ERR_MALFORMED},
	    {"grant_type=" TOKEN_GRANT "&apikey=a&receiver_client_ids=x", KY_ERR_BODY_MEMBER},
	    {"grant_type=" TOKEN_GRANT "&apikey=a&a_field_name_longer_than_the_buffer=1",
	     KY_ERR_BODY_MEMBER},
	    {"grant_type=" TOKEN_GRANT "&apikey=a&%01=1", KY_ERR_BODY_MEMBER},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(token_form_parse(bad[i].form, strlen(bad[i].form), key,
		                                  sizeof(key), d, sizeof(d)),
		                 bad[i].err);
		assert_string_equal(key, "");
	}
	/* An API key longer than the buffer. */
	{
		char big[600];
		int o = snprintf(big, sizeof(big), "grant_type=%s&apikey=", TOKEN_GRANT);
		memset(big + o, 'k', sizeof(big) - (size_t)o - 1);
		big[sizeof(big) - 1] = '\0';
		assert_int_equal(token_form_parse(big, strlen(big), key, sizeof(key), d, sizeof(d)),
		                 KY_ERR_MALFORMED);
	}
	/* A NUL inside the body. */
	assert_int_equal(token_form_parse("apikey=a\0b", 10, key, sizeof(key), d, sizeof(d)),
	                 KY_ERR_MALFORMED);
}

/* ---- query values, dates, ids ---- */

static void test_query(void **state)
{
	bool present, b;
	uint64_t v = 7;
	unsigned m = 0;

	(void)state;
	assert_int_equal(kp_query_uint("", 10, &present, &v), 0);
	assert_false(present);
	assert_int_equal(v, 7);
	assert_int_equal(kp_query_uint(NULL, 10, &present, &v), 0);
	assert_false(present);
	assert_int_equal(kp_query_uint("10", 10, &present, &v), 0);
	assert_true(present);
	assert_int_equal(v, 10);
	assert_int_equal(kp_query_uint("11", 10, &present, &v), KY_ERR_MALFORMED);
	assert_int_equal(kp_query_uint("-1", 10, &present, &v), KY_ERR_MALFORMED);
	assert_int_equal(kp_query_uint("1x", 10, &present, &v), KY_ERR_MALFORMED);
	assert_int_equal(kp_query_uint("99999999999999999999", UINT64_MAX, &present, &v),
	                 KY_ERR_MALFORMED);

	assert_int_equal(kp_query_bool("true", &present, &b), 0);
	assert_true(present && b);
	assert_int_equal(kp_query_bool("false", &present, &b), 0);
	assert_true(present && !b);
	assert_int_equal(kp_query_bool("", &present, &b), 0);
	assert_false(present);
	assert_int_equal(kp_query_bool("TRUE", &present, &b), KY_ERR_MALFORMED);
	assert_int_equal(kp_query_bool("1", &present, &b), KY_ERR_MALFORMED);

	assert_int_equal(kp_query_states("1,2,5", &present, &m), 0);
	assert_true(present);
	assert_int_equal(m, (1u << 1) | (1u << 2) | (1u << 5));
	assert_int_equal(kp_query_states("3", &present, &m), 0);
	assert_int_equal(m, 1u << 3);
	assert_int_equal(kp_query_states("", &present, &m), 0);
	assert_false(present);
	static const char *const bad[] = {"6", "1,", ",1", "1,,2", "1, 2", "12", "a", "1;2"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(kp_query_states(bad[i], &present, &m), KY_ERR_MALFORMED);

	assert_int_equal(kp_prefer_parse("return=minimal"), KP_PREFER_MINIMAL);
	assert_int_equal(kp_prefer_parse("return=representation"), KP_PREFER_REPRESENTATION);
	assert_int_equal(kp_prefer_parse(" return=representation; x"), KP_PREFER_REPRESENTATION);
	assert_int_equal(kp_prefer_parse("return=representations"), KP_PREFER_NONE);
	assert_int_equal(kp_prefer_parse(NULL), KP_PREFER_NONE);
}

static void test_dates_ids(void **state)
{
	char d[KP_DATE_LEN + 1];
	int64_t t;

	(void)state;
	kp_date(NOW, d);
	assert_string_equal(d, "2027-01-15T08:00:00Z");
	assert_int_equal(kp_date_parse(d, &t), 0);
	assert_int_equal(t, NOW);
	assert_int_equal(kp_date_parse("2027-01-15T09:30:00.123+01:30", &t), 0);
	assert_int_equal(t, NOW);
	assert_int_equal(kp_date_parse("2027-01-15t06:00:00-02:00", &t), 0);
	assert_int_equal(t, NOW);
	static const char *const bad[] = {
	    "2027-01-15",
	    "2027-01-15T08:00:00",
	    "2027-02-30T00:00:00Z",
	    "2027-13-01T00:00:00Z",
	    "2027-01-15T24:00:00Z",
	    "2027-01-15T08:00:00+0100",
	    "2027-01-15T08:00:00.Z",
	    "2027-01-15T08:00:00Zx",
	    "1969-12-31T23:59:59Z",
	    "2027-01-15 08:00:00Z",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(kp_date_parse(bad[i], &t), KY_ERR_MALFORMED);
	assert_int_equal(kp_date_parse(NULL, &t), KY_ERR_MALFORMED);

	assert_true(ky_uuid_valid("3f1a2b4c-0000-4000-8000-00000000abcd"));
	assert_true(ky_uuid_valid("3F1A2B4C-0000-4000-8000-00000000ABCD"));
	assert_false(ky_uuid_valid("3f1a2b4c-0000-4000-8000-00000000abc"));
	assert_false(ky_uuid_valid("3f1a2b4c00000-4000-8000-00000000abcd"));
	assert_false(ky_uuid_valid("3f1a2b4c-0000-4000-8000-00000000abcg"));
	assert_false(ky_uuid_valid(NULL));
}

/* ---- bodies ---- */

#define BODY(s) (const uint8_t *)(s), strlen(s)
/* body with the metadata Key Protect requires added (collectionType t, collectionTotal the
 * number of its resources), for tests of other rules. A static buffer. */
static const char *with_md(const char *t, const char *body)
{
	static char out[8192];
	json_t *j = json_loads(body, 0, NULL);
	char *s;

	assert_non_null(j);
	assert_int_equal(
	    json_object_set_new(
	        j, "metadata",
	        json_pack("{s:s, s:I}", "collectionType", t, "collectionTotal",
	                  (json_int_t)json_array_size(json_object_get(j, "resources")))),
	    0);
	s = json_dumps(j, JSON_COMPACT);
	assert_non_null(s);
	assert_true(strlen(s) < sizeof(out));
	memcpy(out, s, strlen(s) + 1);
	free(s);
	json_decref(j);
	return out;
}

/* The metadata Key Protect requires of a collection body: type t, n resources. */
#define KMD(t, n) "\"metadata\":{\"collectionType\":\"" t "\",\"collectionTotal\":" #n "},"

static void test_parse_create(void **state)
{
	struct kp_create c;
	char d[256];

	(void)state;
	assert_int_equal(kp_parse_create(BODY("{\"metadata\":{\"collectionType\":\"" KP_TYPE_KEY
	                                      "\",\"collectionTotal\":1},\"resources\":[{\"type\":"
	                                      "\"" KP_TYPE_KEY "\",\"name\":\"root-1\","
	                                      "\"description\":\"d\",\"extractable\":false,"
	                                      "\"expirationDate\":\"2030-01-01T00:00:00Z\"}]}"),
	                                 &c, d, sizeof(d)),
	                 0);
	assert_string_equal(c.name, "root-1");
	assert_string_equal(c.description, "d");
	assert_int_equal(c.extractable, 0);
	assert_false(c.has_payload);
	assert_true(c.expires > 0);
	kp_create_release(&c);
	assert_int_equal(
	    kp_parse_create(
	        BODY("{" KMD(KP_TYPE_KEY, 1) "\"resources\":[{\"name\":\"std\",\"extractable\":"
	                                     "true,\"payload\":\"c2VjcmV0\"}]}"),
	        &c, d, sizeof(d)),
	    0);
	assert_int_equal(c.extractable, 1);
	assert_true(c.has_payload);
	assert_int_equal(c.payload.len, 6);
	assert_memory_equal(c.payload.data, "secret", 6);
	kp_create_release(&c);

	static const struct {
		const char *body;
		int err;
	} bad[] = {
	    {"", KY_ERR_MALFORMED},
	    {"{", KY_ERR_MALFORMED},
	    {"[]", KY_ERR_MALFORMED},
	    {"{\"resources\":{}}", KY_ERR_MALFORMED},
	    {"{\"resources\":[]}", KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"name\":\"a1\"},{\"name\":\"a2\"}]}", KY_ERR_MALFORMED},
	    {"{\"resources\":[\"x\"]}", KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"name\":\"a\"}]}", KY_ERR_KEY_NAME},
	    {"{\"resources\":[{}]}", KY_ERR_KEY_NAME},
	    {"{\"resources\":[{\"name\":\"ab\\ncd\"}]}", KY_ERR_KEY_NAME},
	    {"{\"resources\":[{\"name\":\"a\\u0000b\"}]}", KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"name\":42}]}", KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"name\":\"ok\",\"type\":\"x\"}]}", KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"name\":\"ok\",\"extractable\":\"yes\"}]}", KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"name\":\"ok\",\"payload\":\"!!\"}]}", KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"name\":\"ok\",\"payload\":\"\"}]}", KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"name\":\"ok\",\"expirationDate\":\"tomorrow\"}]}",
	     KY_ERR_MALFORMED},
	    /* a secure import needs payload, encryptedNonce and iv together */
	    {"{\"resources\":[{\"name\":\"ok\",\"encryptedNonce\":\"abc\"}]}", KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"name\":\"ok\",\"name\":\"ok2\"}]}", KY_ERR_MALFORMED},
	    /* every member is implemented or refused by name */
	    {"{\"resources\":[{\"name\":\"ok\",\"tags\":[\"x\"]}]}", KY_ERR_BODY_MEMBER},
	    {"{\"resources\":[{\"name\":\"ok\",\"aliases\":[\"a\"]}]}", KY_ERR_KEY_ALIAS_INVALID},
	    {"{\"resources\":[{\"name\":\"ok\",\"aliases\":[\"ok-1\",2]}]}",
	     KY_ERR_KEY_ALIAS_INVALID},
	    {"{\"resources\":[{\"name\":\"ok\",\"aliases\":\"ok-1\"}]}", KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"name\":\"ok\",\"aliases\":[\"a1\",\"a2\",\"a3\",\"a4\",\"a5\","
	     "\"a6\"]}]}",
	     KY_ERR_KEY_ALIAS_QUOTA},
	    {"{\"resources\":[{\"name\":\"ok\",\"encryptionAlgorithm\":\"RSAES_OAEP_SHA_256\"}]}",
	     KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"name\":\"ok\"}],\"extra\":1}", KY_ERR_BODY_MEMBER},
	    {"{\"metadata\":{\"collectionTotal\":1,\"tags\":1},\"resources\":[{\"name\":\"ok\"}]}",
	     KY_ERR_BODY_MEMBER},
	    {"{\"metadata\":[],\"resources\":[{\"name\":\"ok\"}]}", KY_ERR_MALFORMED},
	    {"{\"metadata\":{\"collectionTotal\":2},\"resources\":[{\"name\":\"ok\"}]}",
	     KY_ERR_MALFORMED},
	    {"{\"metadata\":{\"collectionTotal\":\"1\"},\"resources\":[{\"name\":\"ok\"}]}",
	     KY_ERR_MALFORMED},
	    {"{\"metadata\":{\"collectionType\":\"" KP_TYPE_POLICY
	     "\"},\"resources\":[{\"name\":\"ok\"}]}",
	     KY_ERR_MALFORMED},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		d[0] = '\0';
		assert_int_equal(kp_parse_create(BODY(bad[i].body), &c, d, sizeof(d)), bad[i].err);
		assert_true(d[0] != '\0');
		if (strstr(bad[i].body, "\"tags\":[") != NULL)
			assert_non_null(strstr(d, "'resources[0].tags'"));
		if (strstr(bad[i].body, "\"tags\":1") != NULL)
			assert_non_null(strstr(d, "'metadata.tags'"));
		if (strstr(bad[i].body, "\"extra\"") != NULL)
			assert_non_null(strstr(d, "'extra'"));
		if (strstr(bad[i].body, "aliases") != NULL)
			assert_non_null(strstr(d, "'resources[0].aliases"));
		assert_false(c.has_payload);
	}
	/* Name and description lengths. */
	{
		char body[1200], name[92];
		memset(name, 'n', 91);
		name[91] = '\0';
		snprintf(body, sizeof(body), "{\"resources\":[{\"name\":\"%s\"}]}", name);
		assert_int_equal(kp_parse_create(BODY(body), &c, d, sizeof(d)), KY_ERR_KEY_NAME);
		name[90] = '\0';
		snprintf(body, sizeof(body),
		         "{" KMD(KP_TYPE_KEY, 1) "\"resources\":[{\"name\":\"%s\"}]}", name);
		assert_int_equal(kp_parse_create(BODY(body), &c, d, sizeof(d)), 0);
		kp_create_release(&c);
	}
	/* An oversized body. */
	{
		uint8_t *big = calloc(1, KP_BODY_MAX + 1);
		assert_non_null(big);
		memset(big, ' ', KP_BODY_MAX + 1);
		assert_int_equal(kp_parse_create(big, KP_BODY_MAX + 1, &c, d, sizeof(d)),
		                 KY_ERR_TOO_LARGE);
		free(big);
	}
}

/* kp_parse_action with every action member allowed. */
#define ALL         "plaintext ciphertext aad payload"
#define ALL_BODY(s) BODY(s), "wrap", ALL

static void test_parse_action(void **state)
{
	struct kp_action_body a;
	char d[256];

	(void)state;
	assert_int_equal(kp_parse_action(NULL, 0, "wrap", ALL, &a, d, sizeof(d)), 0);
	assert_false(a.has_plaintext || a.has_ciphertext || a.has_aad || a.has_payload);
	kp_action_release(&a);
	assert_int_equal(
	    kp_parse_action(ALL_BODY("{\"plaintext\":\"aGVsbG8=\",\"aad\":[\"ab\",\"\"]}"), &a, d,
	                    sizeof(d)),
	    0);
	assert_true(a.has_plaintext);
	assert_memory_equal(a.plaintext.data, "hello", 5);
	/* aad: each string as u32 length then bytes, so ["ab",""] != ["a","b"]. */
	assert_int_equal(a.aad.len, 4 + 2 + 4);
	assert_memory_equal(a.aad.data, "\0\0\0\2ab\0\0\0\0", 10);
	kp_action_release(&a);
	assert_int_equal(
	    kp_parse_action(ALL_BODY("{" KMD(KP_TYPE_ACTION,
	                                     1) "\"resources\":[{\"ciphertext\":\"S1lXMQ==\"}]}"),
	                    &a, d, sizeof(d)),
	    0);
	assert_true(a.has_ciphertext);
	assert_int_equal(a.ciphertext.len, 4);
	kp_action_release(&a);

	static const char *const bad[] = {
	    "{\"plaintext\":1}",
	    "{\"plaintext\":\"***\"}",
	    "{\"ciphertext\":true}",
	    "{\"aad\":\"x\"}",
	    "{\"aad\":[1]}",
	    "{\"aad\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\","
	    "\"m\","
	    "\"n\",\"o\",\"p\",\"q\",\"r\",\"s\",\"t\",\"u\",\"v\",\"w\",\"x\",\"y\",\"z\",\"1\","
	    "\"2\","
	    "\"3\",\"4\",\"5\",\"6\",\"7\"]}",
	    "{\"resources\":[]}",
	    "[\"x\"]",
	    "{\"payload\":{}}",
	    "not json",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(kp_parse_action(ALL_BODY(bad[i]), &a, d, sizeof(d)),
		                 KY_ERR_MALFORMED);
		assert_false(a.has_plaintext);
	}
	/* Unknown members are named with their path, in either form. */
	static const struct {
		const char *body, *name;
	} unknown[] = {
	    {"{\"plaintext\":\"aGVsbG8=\",\"color\":1}", "'color'"},
	    {"{\"resources\":[{\"plaintext\":\"aGVsbG8=\",\"color\":1}]}", "'resources[0].color'"},
	    {"{\"resources\":[{\"plaintext\":\"aGVsbG8=\"}],\"color\":1}", "'color'"},
	    {"{\"metadata\":{\"color\":1},\"resources\":[{\"plaintext\":\"aGVsbG8=\"}]}",
	     "'metadata.color'"},
	};
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
		d[0] = '\0';
		assert_int_equal(kp_parse_action(ALL_BODY(unknown[i].body), &a, d, sizeof(d)),
		                 KY_ERR_BODY_MEMBER);
		assert_non_null(strstr(d, unknown[i].name));
		assert_false(a.has_plaintext);
	}
	/* Secure import members: refused by name where an action does not take them. */
	d[0] = '\0';
	assert_int_equal(
	    kp_parse_action(ALL_BODY("{\"resources\":[{\"iv\":\"AA==\"}]}"), &a, d, sizeof(d)),
	    KY_ERR_BODY_MEMBER);
	assert_non_null(strstr(d, "'resources[0].iv'"));
	assert_int_equal(
	    kp_parse_action(ALL_BODY("{\"encryptionAlgorithm\":\"RSAES_OAEP_SHA_256\"}"), &a, d,
	                    sizeof(d)),
	    KY_ERR_BODY_MEMBER);
	assert_non_null(strstr(d, "'encryptionAlgorithm'"));
	/* A known member an action does not take. */
	assert_int_equal(kp_parse_action(BODY("{\"ciphertext\":\"S1lXMQ==\"}"), "wrap",
	                                 "plaintext aad", &a, d, sizeof(d)),
	                 KY_ERR_BODY_MEMBER);
	assert_non_null(strstr(d, "member 'ciphertext': wrap takes only plaintext aad"));
	assert_false(a.has_ciphertext);
	assert_int_equal(kp_parse_action(BODY("{\"resources\":[{\"payload\":\"AA==\"}]}"),
	                                 "restore", "", &a, d, sizeof(d)),
	                 KY_ERR_BODY_MEMBER);
	assert_non_null(strstr(d, "member 'resources[0].payload': restore takes no member"));
	assert_int_equal(kp_parse_action(BODY("{}"), "restore", "", &a, d, sizeof(d)), 0);
	kp_action_release(&a);
	/* A plaintext over the wrap limit. */
	{
		size_t n = KY_WRAP_PT_MAX + 3, o;
		uint8_t *pt = calloc(1, n);
		char *b64 = NULL, *body;
		assert_non_null(pt);
		assert_int_equal(ky_b64_encode(pt, n, &b64), 0);
		body = malloc(strlen(b64) + 32);
		assert_non_null(body);
		o = (size_t)sprintf(body, "{\"plaintext\":\"%s\"}", b64);
		assert_int_equal(
		    kp_parse_action((const uint8_t *)body, o, "wrap", ALL, &a, d, sizeof(d)),
		    KY_ERR_MALFORMED);
		free(body);
		free(b64);
		free(pt);
	}
}

static void test_parse_key_policies(void **state)
{
	struct kp_key_policy p;
	char d[256];

	(void)state;
	assert_int_equal(
	    kp_parse_key_policies(
	        BODY("{" KMD(KP_TYPE_POLICY, 1) "\"resources\":[{\"type\":\"" KP_TYPE_POLICY
	                                        "\",\"rotation\":{\"interval_month\":3}}]}"),
	        NULL, &p, d, sizeof(d)),
	    0);
	assert_int_equal(p.rotation_months, 3);
	assert_int_equal(p.dual_auth, -1);
	assert_int_equal(
	    kp_parse_key_policies(
	        BODY("{" KMD(KP_TYPE_POLICY, 2) "\"resources\":[{\"rotation\":{\"enabled\":"
	                                        "false}},{\"dualAuthDelete\":{\"enabled\":"
	                                        "true}}]}"),
	        NULL, &p, d, sizeof(d)),
	    0);
	assert_int_equal(p.rotation_months, 0);
	assert_int_equal(p.dual_auth, 1);
	assert_int_equal(kp_parse_key_policies(
	                     BODY("{" KMD(KP_TYPE_POLICY, 1) "\"resources\":[{\"dualAuthDelete\":{"
	                                                     "\"enabled\":false}}]}"),
	                     "dualAuthDelete", &p, d, sizeof(d)),
	                 0);
	assert_int_equal(p.dual_auth, 0);

	static const char *const bad[] = {
	    "{\"resources\":[]}",
	    "{\"resources\":[{}]}",
	    "{\"resources\":[{\"rotation\":{\"interval_month\":3},\"dualAuthDelete\":{\"enabled\":"
	    "true}}]}",
	    "{\"resources\":[{\"rotation\":{\"interval_month\":13}}]}",
	    "{\"resources\":[{\"rotation\":{\"interval_month\":0}}]}",
	    "{\"resources\":[{\"rotation\":{\"interval_month\":\"3\"}}]}",
	    "{\"resources\":[{\"rotation\":{}}]}",
	    "{\"resources\":[{\"rotation\":{\"interval_month\":1}},{\"rotation\":{"
	    "\"interval_month\":2}}]}",
	    "{\"resources\":[{\"dualAuthDelete\":{}}]}",
	    "{\"resources\":[{\"rotation\":{\"enabled\":false,\"interval_month\":3}}]}",
	    "{\"resources\":[{\"dualAuthDelete\":{\"enabled\":1}}]}",
	    "{\"resources\":[{\"type\":\"x\",\"dualAuthDelete\":{\"enabled\":true}}]}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(kp_parse_key_policies(BODY(bad[i]), NULL, &p, d, sizeof(d)),
		                 KY_ERR_MALFORMED);
	/* An unknown member at any level is refused naming its path. */
	static const struct {
		const char *body, *name;
	} unknown[] = {
	    {"{\"resources\":[{\"dualAuthDelete\":{\"enabled\":true}}],\"color\":1}", "'color'"},
	    {"{\"metadata\":{\"collectionTotal\":1,\"color\":1},\"resources\":[{"
	     "\"dualAuthDelete\":{\"enabled\":true}}]}",
	     "'metadata.color'"},
	    {"{\"resources\":[{\"dualAuthDelete\":{\"enabled\":true},\"color\":1}]}",
	     "'resources[0].color'"},
	    {"{\"resources\":[{\"dualAuthDelete\":{\"enabled\":true}},{\"rotation\":{"
	     "\"interval_month\":3,\"color\":1}}]}",
	     "'resources[1].rotation.color'"},
	    {"{\"resources\":[{\"dualAuthDelete\":{\"enabled\":true,\"color\":1}}]}",
	     "'resources[0].dualAuthDelete.color'"},
	    {"{\"resources\":[{\"id\":\"x\",\"dualAuthDelete\":{\"enabled\":true}}]}",
	     "'resources[0].id'"},
	};
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
		d[0] = '\0';
		assert_int_equal(
		    kp_parse_key_policies(BODY(unknown[i].body), NULL, &p, d, sizeof(d)),
		    KY_ERR_BODY_MEMBER);
		assert_non_null(strstr(d, unknown[i].name));
	}
	assert_int_equal(
	    kp_parse_key_policies(BODY("{\"metadata\":{\"collectionType\":\"" KP_TYPE_POLICY
	                               "\",\"collectionTotal\":2},\"resources\":[{"
	                               "\"dualAuthDelete\":{\"enabled\":true}}]}"),
	                          NULL, &p, d, sizeof(d)),
	    KY_ERR_MALFORMED);
	/* The query names one policy: the other is refused, an unknown one too. */
	assert_int_equal(kp_parse_key_policies(BODY("{\"resources\":[{\"rotation\":{"
	                                            "\"interval_month\":3}}]}"),
	                                       "dualAuthDelete", &p, d, sizeof(d)),
	                 KY_ERR_MALFORMED);
	assert_int_equal(kp_parse_key_policies(BODY("{\"resources\":[{\"rotation\":{"
	                                            "\"interval_month\":3}}]}"),
	                                       "allowedIP", &p, d, sizeof(d)),
	                 KY_ERR_MALFORMED);
}

static void test_instance_policies(void **state)
{
	struct kp_instance_policies p, q;
	struct ky_buf enc = {0};
	char d[256];
	json_t *j;

	(void)state;
	kp_instance_policies_init(&p);
	assert_int_equal(kp_instance_policies_allow(&p, 1, true, d, sizeof(d)), 0);
	assert_int_equal(
	    kp_parse_instance_policies(
	        BODY(with_md(
	            KP_TYPE_POLICY,
	            "{\"resources\":[{\"policy_type\":\"dualAuthDelete\",\"policy_data\":{"
	            "\"enabled\":true}},{\"policy_type\":\"keyCreateImportAccess\",\"policy_data\":"
	            "{\"enabled\":true,\"attributes\":{\"create_standard_key\":false,"
	            "\"import_root_key\":false}}},{\"policy_type\":\"rotation\",\"policy_data\":{"
	            "\"enabled\":true,\"attributes\":{\"interval_month\":6}}}]}")),
	        NULL, "ak-manager", NOW, &p, d, sizeof(d)),
	    0);
	assert_true(p.dual_auth && p.kcia && p.rotation);
	assert_int_equal(p.rotation_months, 6);
	assert_string_equal(p.dual_meta.created_by, "ak-manager");
	assert_int_equal(kp_instance_policies_allow(&p, 0, false, d, sizeof(d)), 0);
	assert_int_equal(kp_instance_policies_allow(&p, 1, false, d, sizeof(d)), KY_ERR_FORBIDDEN);
	assert_int_equal(kp_instance_policies_allow(&p, 0, true, d, sizeof(d)), KY_ERR_FORBIDDEN);
	assert_int_equal(kp_instance_policies_allow(&p, 1, true, d, sizeof(d)), 0);

	/* Stored form round trip. */
	assert_int_equal(kp_instance_policies_encode(&p, &enc), 0);
	assert_int_equal(kp_instance_policies_decode(enc.data, enc.len, &q), 0);
	assert_true(q.dual_auth && q.kcia && !q.create_standard && !q.import_root && q.create_root);
	assert_int_equal(q.rotation_months, 6);
	assert_string_equal(q.kcia_meta.updated_by, "ak-manager");
	ky_buf_free(&enc);
	assert_int_equal(kp_instance_policies_decode(BODY("{}"), &q), KY_ERR_MALFORMED);
	assert_int_equal(kp_instance_policies_decode(BODY("x"), &q), KY_ERR_MALFORMED);

	j = kp_instance_policies_json(&p, "rotation");
	assert_non_null(j);
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(j, "metadata"), "collectionTotal")),
	    1);
	json_decref(j);

	/* enforce_token: imports in the clear refused, imports through the token allowed. */
	assert_int_equal(kp_parse_instance_policies(
	                     BODY(with_md(KP_TYPE_POLICY,
	                                  "{\"resources\":[{\"policy_type\":"
	                                  "\"keyCreateImportAccess\",\"policy_data\":{\"enabled\":"
	                                  "true,\"attributes\":{\"enforce_token\":true}}}]}")),
	                     NULL, "m", NOW, &p, d, sizeof(d)),
	                 0);
	assert_int_equal(kp_instance_policies_allow(&p, 1, KP_IMPORTED, d, sizeof(d)),
	                 KY_ERR_FORBIDDEN);
	assert_non_null(strstr(d, "enforce_token"));
	assert_int_equal(kp_instance_policies_allow(&p, 0, KP_IMPORTED, d, sizeof(d)),
	                 KY_ERR_FORBIDDEN);
	assert_int_equal(kp_instance_policies_allow(&p, 0, KP_IMPORTED_TOKEN, d, sizeof(d)), 0);
	assert_int_equal(kp_instance_policies_allow(&p, 1, KP_GENERATED, d, sizeof(d)), 0);

	q = p;
	static const struct {
		const char *body;
		int err;
	} bad[] = {
	    {"{\"resources\":[{\"policy_type\":\"allowedIP\",\"policy_data\":{\"enabled\":true}}]}",
	     KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"policy_type\":\"bogus\",\"policy_data\":{\"enabled\":true}}]}",
	     KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"policy_data\":{\"enabled\":true}}]}", KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"policy_type\":\"dualAuthDelete\"}]}", KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"policy_type\":\"dualAuthDelete\",\"policy_data\":{}}]}",
	     KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"policy_type\":\"rotation\",\"policy_data\":{\"enabled\":true}}]}",
	     KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"policy_type\":\"rotation\",\"policy_data\":{\"enabled\":false,"
	     "\"attributes\":{\"interval_month\":1}}}]}",
	     KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"policy_type\":\"keyCreateImportAccess\",\"policy_data\":{"
	     "\"enabled\":true,\"attributes\":{\"create_root_key\":\"no\"}}}]}",
	     KY_ERR_MALFORMED},
	    {"{\"resources\":[]}", KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"policy_type\":\"dualAuthDelete\",\"policy_data\":{\"enabled\":"
	     "true}},{\"policy_type\":\"dualAuthDelete\",\"policy_data\":{\"enabled\":false}}]}",
	     KY_ERR_MALFORMED},
	    /* unknown members, at each level */
	    {"{\"resources\":[{\"policy_type\":\"dualAuthDelete\",\"policy_data\":{\"enabled\":"
	     "false}}],\"color\":1}",
	     KY_ERR_BODY_MEMBER},
	    {"{\"metadata\":{\"color\":1},\"resources\":[{\"policy_type\":\"dualAuthDelete\","
	     "\"policy_data\":{\"enabled\":false}}]}",
	     KY_ERR_BODY_MEMBER},
	    {"{\"resources\":[{\"policy_type\":\"dualAuthDelete\",\"color\":1,\"policy_data\":{"
	     "\"enabled\":false}}]}",
	     KY_ERR_BODY_MEMBER},
	    {"{\"resources\":[{\"policy_type\":\"dualAuthDelete\",\"policy_data\":{\"enabled\":"
	     "false,\"color\":1}}]}",
	     KY_ERR_BODY_MEMBER},
	    {"{\"resources\":[{\"policy_type\":\"dualAuthDelete\",\"policy_data\":{\"enabled\":"
	     "true,\"attributes\":{\"color\":1}}}]}",
	     KY_ERR_BODY_MEMBER},
	    {"{\"resources\":[{\"policy_type\":\"rotation\",\"policy_data\":{\"enabled\":"
	     "true,\"attributes\":{\"interval_month\":2,\"color\":1}}}]}",
	     KY_ERR_BODY_MEMBER},
	    {"{\"resources\":[{\"policy_type\":\"keyCreateImportAccess\",\"policy_data\":{"
	     "\"enabled\":true,\"attributes\":{\"create_root_key\":true,\"color\":1}}}]}",
	     KY_ERR_BODY_MEMBER},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		d[0] = '\0';
		assert_int_equal(kp_parse_instance_policies(BODY(bad[i].body), NULL, "m", NOW + 1,
		                                            &p, d, sizeof(d)),
		                 bad[i].err);
		/* A refused body changes nothing. */
		assert_memory_equal(&p, &q, sizeof(p));
		if (bad[i].err == KY_ERR_BODY_MEMBER)
			assert_non_null(strstr(d, "color'"));
	}
	assert_int_equal(
	    kp_parse_instance_policies(BODY("{\"resources\":[{\"policy_type\":\"dualAuthDelete\","
	                                    "\"policy_data\":{\"enabled\":false}}]}"),
	                               "rotation", "m", NOW, &p, d, sizeof(d)),
	    KY_ERR_MALFORMED);
	/* An attribute given as null is refused by name, not taken as left out. */
	static const char *const kcia_attrs[] = {"create_root_key", "create_standard_key",
	                                         "import_root_key", "import_standard_key",
	                                         "enforce_token"};
	for (size_t i = 0; i < sizeof(kcia_attrs) / sizeof(kcia_attrs[0]); i++) {
		char body[256], want[96];
		snprintf(body, sizeof(body),
		         "{\"resources\":[{\"policy_type\":\"keyCreateImportAccess\","
		         "\"policy_data\":{\"enabled\":true,\"attributes\":{\"%s\":null}}}]}",
		         kcia_attrs[i]);
		snprintf(want, sizeof(want), "member 'attributes.%s' is null", kcia_attrs[i]);
		d[0] = '\0';
		assert_int_equal(kp_parse_instance_policies((const uint8_t *)body, strlen(body),
		                                            NULL, "m", NOW + 1, &p, d, sizeof(d)),
		                 KY_ERR_MALFORMED);
		assert_non_null(strstr(d, want));
		assert_memory_equal(&p, &q, sizeof(p));
	}
	/* The types ?policy= may name, and the message that lists them. */
	assert_true(kp_instance_policy_known("dualAuthDelete"));
	assert_true(kp_instance_policy_known("rotation"));
	assert_true(kp_instance_policy_known("keyCreateImportAccess"));
	assert_true(kp_instance_policy_known("allowedNetwork"));
	assert_true(kp_instance_policy_known("allowedIP"));
	assert_true(kp_instance_policy_known("metrics"));
	assert_false(kp_instance_policy_known("bogus"));
	assert_false(kp_instance_policy_known("allowedip"));
	assert_false(kp_instance_policy_known(""));
	d[0] = '\0';
	assert_int_equal(kp_parse_instance_policies(
	                     BODY("{\"resources\":[{\"policy_type\":\"bogus\",\"policy_data\":{"
	                          "\"enabled\":true}}]}"),
	                     NULL, "m", NOW + 1, &p, d, sizeof(d)),
	                 KY_ERR_MALFORMED);
	assert_non_null(strstr(d, "unknown policy_type 'bogus' (" KP_IPOLICY_TYPES ")"));
}

/* allowedNetwork, allowedIP, metrics: parsed, stored, listed; allowedIP's ranges. */
static void test_instance_net_policies(void **state)
{
	struct kp_instance_policies p, q;
	struct ky_buf enc = {0};
	struct kp_cidr c, a;
	struct sockaddr_in in4 = {.sin_family = AF_INET};
	struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
	char d[256], t[KP_CIDR_TEXT_MAX + 1];
	json_t *j, *o;

	(void)state;
	kp_instance_policies_init(&p);
	assert_int_equal(
	    kp_parse_instance_policies(
	        BODY(with_md(
	            KP_TYPE_POLICY,
	            "{\"resources\":[{\"policy_type\":\"allowedNetwork\",\"policy_data\":{"
	            "\"enabled\":true,\"attributes\":{\"allowed_network\":\"private-only\"}}},"
	            "{\"policy_type\":\"allowedIP\",\"policy_data\":{\"enabled\":true,"
	            "\"attributes\":{\"allowed_ip\":[\"10.0.0.0/8\",\"2001:DB8::/32\","
	            "\"192.0.2.7/32\"]}}},{\"policy_type\":\"metrics\",\"policy_data\":{"
	            "\"enabled\":true}}]}")),
	        NULL, "ak-manager", NOW, &p, d, sizeof(d)),
	    0);
	assert_true(p.allowed_network && p.private_only && p.allowed_ip && p.metrics);
	assert_int_equal(p.nranges, 3);
	assert_string_equal(p.ip_meta.created_by, "ak-manager");
	assert_false(p.dual_meta.set);

	/* Stored and read back; a stored form without the new members (an older unit's) reads
	 * as never set. */
	assert_int_equal(kp_instance_policies_encode(&p, &enc), 0);
	assert_int_equal(kp_instance_policies_decode(enc.data, enc.len, &q), 0);
	assert_true(q.allowed_network && q.private_only && q.allowed_ip && q.metrics);
	assert_int_equal(q.nranges, 3);
	assert_memory_equal(q.ranges, p.ranges, 3 * sizeof(p.ranges[0]));
	o = json_loadb((const char *)enc.data, enc.len, 0, NULL);
	assert_non_null(o);
	json_object_del(o, "allowedNetwork");
	json_object_del(o, "allowedIP");
	json_object_del(o, "metrics");
	ky_buf_free(&enc);
	assert_int_equal(kp_json_dump(o, &enc), 0);
	json_decref(o);
	assert_int_equal(kp_instance_policies_decode(enc.data, enc.len, &q), 0);
	assert_false(q.net_meta.set || q.ip_meta.set || q.metrics_meta.set || q.allowed_ip);
	ky_buf_free(&enc);

	/* Listed as Key Protect lists them; ranges in their canonical text. */
	j = kp_instance_policies_json(&p, "allowedIP");
	assert_non_null(j);
	o = json_array_get(json_object_get(j, "resources"), 0);
	assert_string_equal(json_string_value(json_object_get(o, "policy_type")), "allowedIP");
	o = json_object_get(json_object_get(json_object_get(o, "policy_data"), "attributes"),
	                    "allowed_ip");
	assert_int_equal(json_array_size(o), 3);
	assert_string_equal(json_string_value(json_array_get(o, 1)), "2001:db8::/32");
	json_decref(j);
	j = kp_instance_policies_json(&p, NULL);
	assert_int_equal(json_array_size(json_object_get(j, "resources")), 3);
	json_decref(j);

	/* The caller's address against the ranges. */
	assert_int_equal(inet_pton(AF_INET, "10.200.3.4", &in4.sin_addr), 1);
	assert_int_equal(kp_addr_of((struct sockaddr *)&in4, &a), 0);
	assert_int_equal(kp_allowed_ip_check(&p, &a, d, sizeof(d)), 0);
	assert_int_equal(inet_pton(AF_INET, "11.0.0.1", &in4.sin_addr), 1);
	assert_int_equal(kp_addr_of((struct sockaddr *)&in4, &a), 0);
	assert_int_equal(kp_allowed_ip_check(&p, &a, d, sizeof(d)), KY_ERR_IP_NOT_ALLOWED);
	assert_non_null(strstr(d, "address 11.0.0.1 "));
	assert_int_equal(inet_pton(AF_INET6, "::ffff:192.0.2.7", &in6.sin6_addr), 1);
	assert_int_equal(kp_addr_of((struct sockaddr *)&in6, &a), 0);
	assert_int_equal(kp_allowed_ip_check(&p, &a, d, sizeof(d)), 0);
	assert_int_equal(inet_pton(AF_INET6, "::ffff:192.0.2.8", &in6.sin6_addr), 1);
	assert_int_equal(kp_addr_of((struct sockaddr *)&in6, &a), 0);
	assert_int_equal(kp_allowed_ip_check(&p, &a, d, sizeof(d)), KY_ERR_IP_NOT_ALLOWED);
	assert_int_equal(inet_pton(AF_INET6, "2001:db8:ffff::1", &in6.sin6_addr), 1);
	assert_int_equal(kp_addr_of((struct sockaddr *)&in6, &a), 0);
	assert_int_equal(kp_allowed_ip_check(&p, &a, d, sizeof(d)), 0);
	assert_int_equal(inet_pton(AF_INET6, "2001:db9::1", &in6.sin6_addr), 1);
	assert_int_equal(kp_addr_of((struct sockaddr *)&in6, &a), 0);
	assert_int_equal(kp_allowed_ip_check(&p, &a, d, sizeof(d)), KY_ERR_IP_NOT_ALLOWED);
	/* Prefixes that end inside a byte; /0; the other family never matches. */
	assert_int_equal(kp_cidr_parse("192.0.2.64/26", &c, d, sizeof(d)), 0);
	assert_int_equal(kp_cidr_parse("192.0.2.127/32", &a, d, sizeof(d)), 0);
	assert_true(kp_cidr_match(&c, &a));
	assert_int_equal(kp_cidr_parse("192.0.2.128/32", &a, d, sizeof(d)), 0);
	assert_false(kp_cidr_match(&c, &a));
	assert_int_equal(kp_cidr_parse("192.0.2.63/32", &a, d, sizeof(d)), 0);
	assert_false(kp_cidr_match(&c, &a));
	assert_int_equal(kp_cidr_parse("0.0.0.0/0", &c, d, sizeof(d)), 0);
	assert_true(kp_cidr_match(&c, &a));
	assert_int_equal(kp_cidr_parse("::/0", &c, d, sizeof(d)), 0);
	assert_false(kp_cidr_match(&c, &a));
	/* Next to the mapped range, not in it: taken. */
	assert_int_equal(kp_cidr_parse("::fffe:0:0/96", &c, d, sizeof(d)), 0);
	assert_int_equal(kp_cidr_parse("::ffff:0:0/96", &c, d, sizeof(d)), KY_ERR_MALFORMED);
	assert_int_equal(c.family, 0);
	assert_int_equal(kp_cidr_parse("::/0", &c, d, sizeof(d)), 0);
	kp_cidr_format(&c, t, sizeof(t));
	assert_string_equal(t, "::/0");
	/* Turned off: nothing is enforced, and the listing says so. */
	assert_int_equal(
	    kp_parse_instance_policies(
	        BODY(with_md(KP_TYPE_POLICY,
	                     "{\"resources\":[{\"policy_type\":\"allowedIP\",\"policy_data\":{"
	                     "\"enabled\":false}}]}")),
	        "allowedIP", "m", NOW, &p, d, sizeof(d)),
	    0);
	assert_int_equal(kp_allowed_ip_check(&p, &a, d, sizeof(d)), 0);
	j = kp_instance_policies_json(&p, "allowedIP");
	o = json_object_get(json_array_get(json_object_get(j, "resources"), 0), "policy_data");
	assert_true(json_is_false(json_object_get(o, "enabled")));
	assert_null(json_object_get(o, "attributes"));
	json_decref(j);

	q = p;
	static const struct {
		const char *ips, *why;
	} badip[] = {
	    {"[]", "array of 1 to"},
	    {"\"10.0.0.0/8\"", "array of 1 to"},
	    {"[\"10.0.0.1\"]", "'10.0.0.1' is not an address range"},
	    {"[\"10.1.2.3/8\"]", "write '10.0.0.0/8'"},
	    {"[\"2001:db8::1/32\"]", "write '2001:db8::/32'"},
	    {"[\"10.0.0.0/33\"]", "prefix must be 0 to 32"},
	    {"[\"::/129\"]", "prefix must be 0 to 128"},
	    {"[\"10.0.0.0/08\"]", "prefix must be 0 to 32"},
	    {"[\"10.0.0.0/\"]", "prefix must be 0 to 32"},
	    {"[\"10.0.0.0/8x\"]", "prefix must be 0 to 32"},
	    {"[\"10.0.0.0/-8\"]", "prefix must be 0 to 32"},
	    {"[\"ten/8\"]", "'ten' is not an IPv4 or IPv6 address"},
	    {"[\"/8\"]", "not an address range"},
	    {"[8]", "allowed_ip[0] must be a string"},
	    {"[\"10.0.0.0/8\",\"10.0.0.0/8\"]", "lists '10.0.0.0/8' twice"},
	    /* IPv4-mapped ranges never match (callers are matched as IPv4): the IPv4 range */
	    {"[\"::ffff:127.0.0.1/128\"]", "IPv4-mapped IPv6 range, which never matches: "
	                                   "callers are matched by their IPv4 address: write the "
	                                   "IPv4 range '127.0.0.1/32'"},
	    {"[\"::ffff:0:0/96\"]", "write the IPv4 range '0.0.0.0/0'"},
	    {"[\"::ffff:10.1.0.0/112\"]", "write the IPv4 range '10.1.0.0/16'"},
	    {"[\"::ffff:10.1.2.3/112\"]", "write the IPv4 range '10.1.0.0/16'"},
	    {"[\"::ffff:0:0/80\"]", "write '::/80'"},
	};
	for (size_t i = 0; i < sizeof(badip) / sizeof(badip[0]); i++) {
		char body[512];
		snprintf(body, sizeof(body),
		         "{\"resources\":[{\"policy_type\":\"allowedIP\",\"policy_data\":{"
		         "\"enabled\":true,\"attributes\":{\"allowed_ip\":%s}}}]}",
		         badip[i].ips);
		d[0] = '\0';
		assert_int_equal(kp_parse_instance_policies((const uint8_t *)body, strlen(body),
		                                            NULL, "m", NOW, &p, d, sizeof(d)),
		                 KY_ERR_MALFORMED);
		if (strstr(d, badip[i].why) == NULL)
			fail_msg("allowed_ip %s: detail '%s' lacks '%s'", badip[i].ips, d,
			         badip[i].why);
		assert_memory_equal(&p, &q, sizeof(p));
	}
	static const struct {
		const char *body;
		int err;
	} bad[] = {
	    {"{\"resources\":[{\"policy_type\":\"allowedNetwork\",\"policy_data\":{\"enabled\":"
	     "true}}]}",
	     KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"policy_type\":\"allowedNetwork\",\"policy_data\":{\"enabled\":"
	     "true,\"attributes\":{\"allowed_network\":\"everywhere\"}}}]}",
	     KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"policy_type\":\"allowedNetwork\",\"policy_data\":{\"enabled\":"
	     "true,\"attributes\":{\"allowed_network\":\"private-only\",\"color\":1}}}]}",
	     KY_ERR_BODY_MEMBER},
	    {"{\"resources\":[{\"policy_type\":\"allowedIP\",\"policy_data\":{\"enabled\":"
	     "true,\"attributes\":{\"allowed_ip\":[\"10.0.0.0/8\"],\"color\":1}}}]}",
	     KY_ERR_BODY_MEMBER},
	    {"{\"resources\":[{\"policy_type\":\"metrics\",\"policy_data\":{\"enabled\":"
	     "true,\"attributes\":{\"color\":1}}}]}",
	     KY_ERR_BODY_MEMBER},
	    {"{\"resources\":[{\"policy_type\":\"metrics\",\"policy_data\":{}}]}",
	     KY_ERR_MALFORMED},
	    {"{\"resources\":[{\"policy_type\":\"metrics\",\"policy_data\":{\"enabled\":true}},"
	     "{\"policy_type\":\"metrics\",\"policy_data\":{\"enabled\":false}}]}",
	     KY_ERR_MALFORMED},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(
		    kp_parse_instance_policies(BODY(bad[i].body), NULL, "m", NOW, &p, d, sizeof(d)),
		    bad[i].err);
		assert_memory_equal(&p, &q, sizeof(p));
	}
	/* A stored form that does not parse is refused as a whole. */
	assert_int_equal(
	    kp_instance_policies_decode(
	        BODY("{\"dualAuthDelete\":{\"meta\":{\"set\":false,\"created\":0,\"updated\":0,"
	             "\"created_by\":\"\",\"updated_by\":\"\"},\"enabled\":false},\"rotation\":{"
	             "\"meta\":{\"set\":false,\"created\":0,\"updated\":0,\"created_by\":\"\","
	             "\"updated_by\":\"\"},\"enabled\":false,\"interval_month\":0},"
	             "\"keyCreateImportAccess\":{\"meta\":{\"set\":false,\"created\":0,"
	             "\"updated\":0,\"created_by\":\"\",\"updated_by\":\"\"},\"enabled\":false,"
	             "\"create_root_key\":true,\"create_standard_key\":true,\"import_root_key\":"
	             "true,"
	             "\"import_standard_key\":true,\"enforce_token\":false},\"allowedIP\":{"
	             "\"meta\":{"
	             "\"set\":true,\"created\":0,\"updated\":0,\"created_by\":\"\",\"updated_by\":"
	             "\"\"},\"enabled\":true,\"allowed_ip\":[\"10.1.0.0/8\"]}}"),
	        &q),
	    KY_ERR_MALFORMED);
}

/* ---- replies ---- */

static void test_error_json(void **state)
{
	json_t *j, *reason;

	(void)state;
	j = kp_error_json(KY_ERR_KEY_NOT_ACTIVE, "key x is suspended");
	assert_non_null(j);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(j, "metadata"), "collectionType")),
	    KP_TYPE_ERROR);
	reason = json_array_get(
	    json_object_get(json_array_get(json_object_get(j, "resources"), 0), "reasons"), 0);
	assert_string_equal(json_string_value(json_object_get(reason, "code")),
	                    "KEY_NOT_ACTIVE_ERR");
	assert_int_equal(json_integer_value(json_object_get(reason, "status")), 409);
	assert_non_null(
	    strstr(json_string_value(json_object_get(reason, "message")), "key x is suspended"));
	assert_string_equal(json_string_value(json_object_get(
	                        json_array_get(json_object_get(j, "resources"), 0), "errorMsg")),
	                    "Conflict: key is not active");
	json_decref(j);
	assert_string_equal(kp_status_text(413), "Payload Too Large");
	assert_string_equal(kp_status_text(599), "Internal Server Error");
}

static void test_key_json(void **state)
{
	struct ky_key *k = NULL;
	struct ky_key_spec sp = {.name = "std-1",
	                         .extractable = 1,
	                         .payload = (const uint8_t *)"abc",
	                         .len = 3,
	                         .actor = "ak-writer"};
	struct ky_key_act del = {.action = KY_KEY_DELETE, .actor = "ak-manager"};
	json_t *j;

	(void)state;
	assert_int_equal(ky_key_new(&sp, NOW, &k), 0);
	j = kp_key_json(k, INST, true, NOW);
	assert_string_equal(json_string_value(json_object_get(j, "payload")), "YWJj");
	assert_string_equal(json_string_value(json_object_get(j, "createdBy")), "ak-writer");
	assert_true(json_is_false(json_object_get(j, "deleted")));
	assert_non_null(strstr(json_string_value(json_object_get(j, "crn")), k->id));
	json_decref(j);
	j = kp_key_json(k, INST, false, NOW);
	assert_null(json_object_get(j, "payload"));
	json_decref(j);
	/* Destroyed: no payload whatever is asked, deletion dates shown. */
	assert_int_equal(ky_key_apply(k, &del, NOW + 5), 0);
	j = kp_key_json(k, INST, true, NOW + 10);
	assert_null(json_object_get(j, "payload"));
	assert_int_equal(json_integer_value(json_object_get(j, "state")), 5);
	assert_string_equal(json_string_value(json_object_get(j, "deletedBy")), "ak-manager");
	assert_true(json_is_true(json_object_get(j, "restoreAllowed")));
	json_decref(j);
	ky_key_free(k);

	/* Root keys never show a payload. */
	sp.extractable = 0;
	sp.payload = NULL;
	assert_int_equal(ky_key_new(&sp, NOW, &k), 0);
	j = kp_key_json(k, INST, true, NOW);
	assert_null(json_object_get(j, "payload"));
	json_decref(j);
	j = kp_versions_json(k, 0, 10);
	assert_int_equal(json_array_size(json_object_get(j, "resources")), 1);
	json_decref(j);
	j = kp_versions_json(k, 1, 10);
	assert_int_equal(json_array_size(json_object_get(j, "resources")), 0);
	json_decref(j);
	ky_key_free(k);
}

/* ---- unit configuration: the key API's keys ---- */

static int conf(const char *extra, struct unitd_config *cfg, char *err, size_t errlen)
{
	char text[1024];

	snprintf(text, sizeof(text), "instance = i1\nunit = u1\nzone = z1\ndata_dir = data\n%s",
	         extra);
	return unitd_config_parse("unit.conf", "/etc/kyok", text, strlen(text), cfg, err, errlen);
}

static void test_config(void **state)
{
	struct unitd_config cfg;
	char err[UNITD_ERR_MAX];

	(void)state;
	assert_int_equal(conf("", &cfg, err, sizeof(err)), 0);
	assert_null(cfg.store);
	assert_int_equal(cfg.token_ttl, UNITD_TOKEN_TTL_DEFAULT);
	assert_int_equal(cfg.reencipher_batch, UNITD_REENC_BATCH_DEFAULT);
	assert_int_equal(cfg.reencipher_pause_ms, 0);
	assert_int_equal(cfg.header_timeout, UNITD_HEADER_TIMEOUT_DEFAULT);
	assert_int_equal(cfg.metrics, 1);
	assert_int_equal(cfg.store_lock_wait_ms, UNITD_STORE_WAIT_DEFAULT);
	unitd_config_release(&cfg);
	assert_int_equal(conf("metrics = 0\n", &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.metrics, 0);
	unitd_config_release(&cfg);
	/* The policy pass: every hour by default, its clock the system's. */
	assert_int_equal(conf("", &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.policy_pass_interval, 3600);
	assert_int_equal(cfg.policy_pass_days_ahead, 0);
	unitd_config_release(&cfg);
	assert_int_equal(
	    conf("policy_pass_interval = 1\npolicy_pass_days_ahead = 91\n", &cfg, err, sizeof(err)),
	    0);
	assert_int_equal(cfg.policy_pass_interval, 1);
	assert_int_equal(cfg.policy_pass_days_ahead, 91);
	unitd_config_release(&cfg);
	assert_int_equal(conf("policy_pass_interval = 0\n", &cfg, err, sizeof(err)), KY_ERR_CONFIG);
	assert_int_equal(conf("policy_pass_interval = 86401\n", &cfg, err, sizeof(err)),
	                 KY_ERR_CONFIG);
	assert_int_equal(conf("policy_pass_days_ahead = 36501\n", &cfg, err, sizeof(err)),
	                 KY_ERR_CONFIG);
	assert_int_equal(conf("policy_pass_days_ahead = -1\n", &cfg, err, sizeof(err)),
	                 KY_ERR_CONFIG);
	assert_int_equal(conf("listen = 0.0.0.0:443\napi_tls_cert = c.pem\napi_tls_key = k.pem\n",
	                      &cfg, err, sizeof(err)),
	                 0);
	unitd_config_release(&cfg);
	assert_int_equal(conf("listen = 127.0.0.2:0\n", &cfg, err, sizeof(err)), 0);
	unitd_config_release(&cfg);
	assert_int_equal(conf("listen = [::1]:0\n", &cfg, err, sizeof(err)), 0);
	unitd_config_release(&cfg);
	assert_int_equal(conf("store_lock_wait_ms = 100\n", &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.store_lock_wait_ms, 100);
	unitd_config_release(&cfg);
	assert_int_equal(conf("header_timeout = 1\n", &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.header_timeout, 1);
	unitd_config_release(&cfg);
	assert_int_equal(conf("header_timeout = 3600\n", &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.header_timeout, 3600);
	unitd_config_release(&cfg);
	assert_int_equal(conf("store = sqlite:keys.db\nkey_limit = 10\nkey_cache = 4000000\n"
	                      "token_ttl = 1\n"
	                      "api_tls_cert = c.pem\napi_tls_key = /k.pem\n"
	                      "reencipher_batch = 7\nreencipher_pause_ms = 0\n",
	                      &cfg, err, sizeof(err)),
	                 0);
	assert_string_equal(cfg.store, "sqlite:/etc/kyok/keys.db");
	assert_int_equal(cfg.key_limit, 10);
	assert_int_equal(cfg.key_cache, 4000000);
	assert_int_equal(cfg.token_ttl, 1);
	assert_int_equal(cfg.reencipher_batch, 7);
	assert_int_equal(cfg.reencipher_pause_ms, 0);
	assert_string_equal(cfg.tls_cert, "/etc/kyok/c.pem");
	assert_string_equal(cfg.tls_key, "/k.pem");
	unitd_config_release(&cfg);
	assert_int_equal(conf("reencipher_pause_ms = 60000\n", &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.reencipher_pause_ms, 60000);
	unitd_config_release(&cfg);
	assert_int_equal(conf("store = /var/k.db\n", &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.store, "sqlite:/var/k.db");
	unitd_config_release(&cfg);
	/* PostgreSQL: libpq's URI kept as it is (the backend checks it when it opens) */
	assert_int_equal(conf("store = postgresql://kyok@db1:5432/kyok?sslmode=verify-full\n", &cfg,
	                      err, sizeof(err)),
	                 0);
	assert_string_equal(cfg.store, "postgresql://kyok@db1:5432/kyok?sslmode=verify-full");
	unitd_config_release(&cfg);
	assert_int_equal(conf("store = postgres:///kyok?host=/run/pg\n", &cfg, err, sizeof(err)),
	                 0);
	assert_string_equal(cfg.store, "postgres:///kyok?host=/run/pg");
	unitd_config_release(&cfg);

	static const struct {
		const char *text;
		const char *msg;
	} bad[] = {
	    {"store = pg:host=x\n", "unknown key storage"},
	    {"store = sqlite:\n", "expected sqlite:PATH"},
	    {"key_limit = 0\n", "1 to 10000000"},
	    {"key_limit = 10000001\n", "whole number"},
	    {"key_limit = 012\n", "whole number"},
	    {"key_limit = -1\n", "whole number"},
	    {"key_cache = 0\n", "1 to 4000000"},
	    {"key_cache = 4000001\n", "1 to 4000000"},
	    {"token_ttl = 0\n", "1 to 86400"},
	    {"token_ttl = 86401\n", "1 to 86400"},
	    {"reencipher_batch = 0\n", "1 to 100000"},
	    {"reencipher_batch = 100001\n", "1 to 100000"},
	    {"reencipher_pause_ms = 60001\n", "0 to 60000"},
	    {"reencipher_pause_ms = 5ms\n", "whole number"},
	    {"token_ttl = 1h\n", "whole number"},
	    {"header_timeout = 0\n",
	     "bad value for 'header_timeout': expected a whole number from 1 "
	     "to 3600"},
	    {"header_timeout = 3601\n", "1 to 3600"},
	    {"store_lock_wait_ms = 99\n", "from 100 to 600000"},
	    {"listen = 0.0.0.0:443\n",
	     "listen address 0.0.0.0 is not a loopback address: it needs TLS"},
	    {"listen = [::]:443\n", "not a loopback address"},
	    {"listen = 10.1.2.3:443\n", "set api_tls_cert and api_tls_key"},
	    {"store_lock_wait_ms = 600001\n", "from 100 to 600000"},
	    {"metrics = 2\n", "bad value for 'metrics': expected a whole number from 0 to 1"},
	    {"metrics = on\n", "whole number"},
	    {"header_timeout = 10s\n", "whole number"},
	    {"header_timout = 10\n", "unknown key 'header_timout'"},
	    {"api_tls_cert = c.pem\n", "set both or neither"},
	    {"api_tls_key = k.pem\n", "set both or neither"},
	    {"store = a.db\nstore = b.db\n", "duplicate key"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(conf(bad[i].text, &cfg, err, sizeof(err)), KY_ERR_CONFIG);
		if (strstr(err, bad[i].msg) == NULL)
			fail_msg("'%s': error '%s' lacks '%s'", bad[i].text, err, bad[i].msg);
		assert_null(cfg.store);
	}
}

/* ---- unit configuration and rule: the imprint claim ---- */

static void test_config_imprint(void **state)
{
	struct unitd_config cfg;
	char err[UNITD_ERR_MAX];
	const char hex[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
	char line[200];

	(void)state;
	assert_int_equal(conf("", &cfg, err, sizeof(err)), 0);
	assert_false(cfg.imprint.configured);
	unitd_config_release(&cfg);
	snprintf(line, sizeof(line), "imprint_verifier = %s\n", hex);
	assert_int_equal(conf(line, &cfg, err, sizeof(err)), 0);
	assert_true(cfg.imprint.configured);
	assert_int_equal(cfg.imprint.pub[1], 0x11);
	assert_int_equal(cfg.imprint.pub[31], 0xff);
	unitd_config_release(&cfg);
	static const char *const bad[] = {
	    "imprint_verifier = 0011\n",
	    "imprint_verifier = "
	    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00\n",
	    "imprint_verifier = zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
	    "imprint_verifier = /etc/kyok/imprint-credential.pem\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(conf(bad[i], &cfg, err, sizeof(err)), KY_ERR_CONFIG);
		if (strstr(err, "64 hex digits of the Ed25519 public key") == NULL)
			fail_msg("'%s': error '%s'", bad[i], err);
		assert_false(cfg.imprint.configured);
	}
}

static void test_imprint_rule(void **state)
{
	struct ky_domain *d = NULL;
	struct ky_buf pem = {0};
	EVP_PKEY *cred = NULL, *other = NULL;
	struct unitd_imprint im = {0}, none = {0}, wrong = {0};
	const uint8_t body[] = "the DER SignedData of a command";
	const uint8_t body2[] = "the DER SignedData of another one";
	char *claim = NULL, *claim_other = NULL, *claim_body2 = NULL, detail[512];

	(void)state;
	assert_int_equal(ky_domain_new("inst", "unit-1", "zone-1", &d), 0);
	assert_int_equal(ky_imprint_credential_new(&pem, im.pub), 0);
	im.configured = true;
	assert_int_equal(ky_imprint_credential_parse(pem.data, pem.len, &cred), 0);
	ky_buf_free(&pem);
	assert_int_equal(ky_imprint_credential_new(&pem, wrong.pub), 0);
	wrong.configured = true;
	assert_int_equal(ky_imprint_credential_parse(pem.data, pem.len, &other), 0);
	ky_buf_free(&pem);
	assert_int_equal(ky_imprint_claim(cred, body, sizeof(body), &claim), 0);
	assert_int_equal(ky_imprint_claim(other, body, sizeof(body), &claim_other), 0);
	assert_int_equal(ky_imprint_claim(cred, body2, sizeof(body2), &claim_body2), 0);

	/* imprint mode: only with a claim by the configured credential over this body */
	assert_int_equal(d->sig_threshold, 0);
	assert_int_equal(
	    unitd_imprint_check(&im, d, claim, body, sizeof(body), detail, sizeof(detail)), 0);
	assert_int_equal(
	    unitd_imprint_check(&im, d, NULL, body, sizeof(body), detail, sizeof(detail)),
	    KY_ERR_IMPRINT_CLAIM_REQUIRED);
	assert_non_null(strstr(detail, "without a Kyok-Imprint-Claim header"));
	assert_int_equal(
	    unitd_imprint_check(&im, d, claim_other, body, sizeof(body), detail, sizeof(detail)),
	    KY_ERR_IMPRINT_CLAIM_INVALID);
	assert_non_null(strstr(detail, "does not verify"));
	assert_int_equal(
	    unitd_imprint_check(&im, d, claim_body2, body, sizeof(body), detail, sizeof(detail)),
	    KY_ERR_IMPRINT_CLAIM_INVALID);
	assert_int_equal(
	    unitd_imprint_check(&wrong, d, claim, body, sizeof(body), detail, sizeof(detail)),
	    KY_ERR_IMPRINT_CLAIM_INVALID);
	/* no verifier configured: nothing runs in imprint mode, claim or not */
	assert_int_equal(
	    unitd_imprint_check(&none, d, claim, body, sizeof(body), detail, sizeof(detail)),
	    KY_ERR_IMPRINT_CLAIM_REQUIRED);
	assert_non_null(strstr(detail, "no imprint_verifier"));
	assert_int_equal(
	    unitd_imprint_check(&none, d, NULL, body, sizeof(body), detail, sizeof(detail)),
	    KY_ERR_IMPRINT_CLAIM_REQUIRED);

	/* out of imprint mode: not needed; when sent, it must verify */
	d->sig_threshold = 1;
	d->rev_threshold = 1;
	assert_int_equal(
	    unitd_imprint_check(&im, d, NULL, body, sizeof(body), detail, sizeof(detail)), 0);
	assert_int_equal(
	    unitd_imprint_check(&none, d, NULL, body, sizeof(body), detail, sizeof(detail)), 0);
	assert_int_equal(
	    unitd_imprint_check(&im, d, claim, body, sizeof(body), detail, sizeof(detail)), 0);
	assert_int_equal(
	    unitd_imprint_check(&im, d, claim_other, body, sizeof(body), detail, sizeof(detail)),
	    KY_ERR_IMPRINT_CLAIM_INVALID);
	assert_int_equal(
	    unitd_imprint_check(&none, d, claim, body, sizeof(body), detail, sizeof(detail)),
	    KY_ERR_IMPRINT_CLAIM_INVALID);

	/* back to imprint mode (zeroize): required again */
	d->sig_threshold = 0;
	d->rev_threshold = 0;
	assert_int_equal(
	    unitd_imprint_check(&im, d, NULL, body, sizeof(body), detail, sizeof(detail)),
	    KY_ERR_IMPRINT_CLAIM_REQUIRED);

	free(claim);
	free(claim_other);
	free(claim_body2);
	EVP_PKEY_free(cred);
	EVP_PKEY_free(other);
	ky_domain_free(d);
}

/* ---- unit configuration: the sealing keys ---- */

static void test_config_seal(void **state)
{
	struct unitd_config cfg;
	char err[UNITD_ERR_MAX];

	(void)state;
	assert_int_equal(conf("", &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.seal, UNITD_SEAL_FILE);
	unitd_config_release(&cfg);
	assert_int_equal(conf("seal = file\n", &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.seal, UNITD_SEAL_FILE);
	unitd_config_release(&cfg);
	assert_int_equal(conf("seal = tpm2\n", &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.seal, UNITD_SEAL_TPM2);
	assert_null(cfg.tpm2_tcti);
	unitd_config_release(&cfg);
	assert_int_equal(conf("seal = tpm2\ntpm2_tcti = swtpm:host=127.0.0.1,port=2321\n", &cfg,
	                      err, sizeof(err)),
	                 0);
	assert_string_equal(cfg.tpm2_tcti, "swtpm:host=127.0.0.1,port=2321");
	unitd_config_release(&cfg);
	assert_int_equal(conf("seal = pkcs11\npkcs11_module = /usr/lib/m.so\npkcs11_token = kyok\n"
	                      "pkcs11_pin_file = pin\n",
	                      &cfg, err, sizeof(err)),
	                 0);
	assert_int_equal(cfg.seal, UNITD_SEAL_PKCS11);
	assert_string_equal(cfg.pkcs11_module, "/usr/lib/m.so");
	assert_string_equal(cfg.pkcs11_token, "kyok");
	assert_string_equal(cfg.pkcs11_key_label, UNITD_PKCS11_KEY_LABEL);
	assert_string_equal(cfg.pkcs11_pin_file, "/etc/kyok/pin");
	unitd_config_release(&cfg);
	assert_int_equal(conf("seal = pkcs11\npkcs11_module = /m.so\npkcs11_token = kyok\n"
	                      "pkcs11_pin_file = /pin\npkcs11_key_label = unit-1-seal\n",
	                      &cfg, err, sizeof(err)),
	                 0);
	assert_string_equal(cfg.pkcs11_key_label, "unit-1-seal");
	unitd_config_release(&cfg);

	static const struct {
		const char *text;
		const char *msg;
	} bad[] = {
	    {"seal = hsm\n", "unknown sealing backend 'hsm' (use file, tpm2 or pkcs11)"},
	    {"seal = file\nseal = tpm2\n", "duplicate key 'seal'"},
	    {"tpm2_tcti = device:/dev/tpmrm0\n",
	     "'tpm2_tcti' is a setting of seal = tpm2, but seal is file"},
	    {"seal = pkcs11\npkcs11_module = /m.so\npkcs11_token = t\npkcs11_pin_file = /p\n"
	     "tpm2_tcti = tabrmd\n",
	     "'tpm2_tcti' is a setting of seal = tpm2, but seal is pkcs11"},
	    {"seal = tpm2\npkcs11_token = t\n",
	     "'pkcs11_token' is a setting of seal = pkcs11, but seal is tpm2"},
	    {"seal = pkcs11\npkcs11_token = t\npkcs11_pin_file = /p\n",
	     "seal = pkcs11 needs 'pkcs11_module'"},
	    {"seal = pkcs11\npkcs11_module = /m.so\npkcs11_pin_file = /p\n",
	     "seal = pkcs11 needs 'pkcs11_token'"},
	    {"seal = pkcs11\npkcs11_module = /m.so\npkcs11_token = t\n",
	     "seal = pkcs11 needs 'pkcs11_pin_file'"},
	    {"seal = pkcs11\npkcs11_module = /m.so\npkcs11_pin_file = /p\n"
	     "pkcs11_token = 123456789012345678901234567890123\n",
	     "'pkcs11_token': at most 32 characters"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(conf(bad[i].text, &cfg, err, sizeof(err)), KY_ERR_CONFIG);
		if (strstr(err, bad[i].msg) == NULL)
			fail_msg("'%s': error '%s' lacks '%s'", bad[i].text, err, bad[i].msg);
		assert_null(cfg.pkcs11_module);
		assert_null(cfg.tpm2_tcti);
	}
}

/* ---- filter, sort, search of GET /keys (api_query.c) ---- */

static struct ky_key *qkey(const char *name, int extractable, int state, int64_t created)
{
	struct ky_key_spec sp = {.name = name, .extractable = extractable};
	struct ky_key *k = NULL;

	assert_int_equal(ky_key_new(&sp, created, &k), 0);
	k->state = state;
	k->seq = created;
	return k;
}

static void test_list_filter(void **state)
{
	struct kp_filter f;
	char d[300];
	struct ky_key *a = qkey("payments-root", 0, KY_KEY_ACTIVE, 1700000000);
	struct ky_key *b = qkey("db-password", 1, KY_KEY_SUSPENDED, 1800000000);

	(void)state;
	b->deleted = 0;
	a->expires = 1900000000;
	assert_int_equal(kp_filter_parse(NULL, &f, d, sizeof(d)), 0);
	assert_false(f.present);
	assert_true(kp_filter_match(&f, a));
	assert_int_equal(kp_filter_parse("extractable=TRUE", &f, d, sizeof(d)), 0);
	assert_false(kp_filter_match(&f, a));
	assert_true(kp_filter_match(&f, b));
	assert_int_equal(kp_filter_parse("state=1,5", &f, d, sizeof(d)), 0);
	assert_true(kp_filter_match(&f, a));
	assert_false(kp_filter_match(&f, b));
	assert_int_equal(
	    kp_filter_parse("creationDate=gte:\"2023-11-14T22:13:20Z\" creationDate=lt:\"2027-01-"
	                    "01T00:00:00Z\"",
	                    &f, d, sizeof(d)),
	    0);
	assert_true(kp_filter_match(&f, a));
	assert_false(kp_filter_match(&f, b)); /* 2027-01-15 */
	assert_int_equal(kp_filter_parse("creationDate=\"2023-11-14T22:13:20Z\"", &f, d, sizeof(d)),
	                 0);
	assert_true(kp_filter_match(&f, a));
	assert_int_equal(kp_filter_parse("expirationDate=none", &f, d, sizeof(d)), 0);
	assert_false(kp_filter_match(&f, a));
	assert_true(kp_filter_match(&f, b));
	assert_int_equal(kp_filter_parse("lastRotateDate=NONE deletionDate=none", &f, d, sizeof(d)),
	                 0);
	assert_true(kp_filter_match(&f, a));
	assert_int_equal(kp_filter_parse("extractable=true extractable=false", &f, d, sizeof(d)),
	                 0);
	assert_false(kp_filter_match(&f, b)); /* contradictory: nothing */
	static const char *const bad[] = {
	    "name=x",
	    "extractable=yes",
	    "state=",
	    "state=9",
	    "creationDate=2023-11-14T22:13:20Z", /* no quotes */
	    "creationDate=eq:\"2023-11-14T22:13:20Z\"",
	    "creationDate=gt:\"yesterday\"",
	    "creationDate=gt:none",
	    "creationDate",
	    "creationDate=none creationDate=none creationDate=none creationDate=none",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		d[0] = '\0';
		assert_int_equal(kp_filter_parse(bad[i], &f, d, sizeof(d)), KY_ERR_MALFORMED);
		assert_non_null(strstr(d, "query filter"));
	}
	ky_key_free(a);
	ky_key_free(b);
}

static void test_list_sort_search(void **state)
{
	struct kp_sort o;
	struct kp_search q;
	char d[300];
	struct ky_key *a = qkey("payments-root", 0, KY_KEY_ACTIVE, 1700000000);
	struct ky_key *b = qkey("db-password", 1, KY_KEY_SUSPENDED, 1800000000);

	(void)state;
	assert_int_equal(kp_sort_parse(NULL, &o, d, sizeof(d)), 0);
	assert_int_equal(o.n, 0);
	assert_true(kp_sort_cmp(&o, a, b) < 0); /* creation order */
	assert_int_equal(kp_sort_parse("-creationDate", &o, d, sizeof(d)), 0);
	assert_true(kp_sort_cmp(&o, a, b) > 0);
	assert_int_equal(kp_sort_parse("extractable,-state", &o, d, sizeof(d)), 0);
	assert_int_equal(o.n, 2);
	assert_true(kp_sort_cmp(&o, a, b) < 0);
	assert_int_equal(kp_sort_parse("-state", &o, d, sizeof(d)), 0);
	assert_true(kp_sort_cmp(&o, a, b) > 0);
	assert_int_equal(kp_sort_parse("id", &o, d, sizeof(d)), 0);
	assert_int_equal(kp_sort_cmp(&o, a, a), 0);
	assert_int_equal(kp_sort_parse("name", &o, d, sizeof(d)), KY_ERR_MALFORMED);
	assert_non_null(strstr(d, "'name'"));
	assert_int_equal(kp_sort_parse("state,", &o, d, sizeof(d)), KY_ERR_MALFORMED);
	assert_int_equal(kp_sort_parse("--state", &o, d, sizeof(d)), KY_ERR_MALFORMED);

	assert_int_equal(kp_search_parse(NULL, &q, d, sizeof(d)), 0);
	assert_true(kp_search_match(&q, a));
	assert_int_equal(kp_search_parse("PAY", &q, d, sizeof(d)), 0);
	assert_true(kp_search_match(&q, a));
	assert_false(kp_search_match(&q, b));
	assert_int_equal(kp_search_parse("not:pay", &q, d, sizeof(d)), 0);
	assert_false(kp_search_match(&q, a));
	assert_true(kp_search_match(&q, b));
	assert_int_equal(kp_search_parse("exact:payments", &q, d, sizeof(d)), 0);
	assert_false(kp_search_match(&q, a));
	assert_int_equal(kp_search_parse("exact:payments-root", &q, d, sizeof(d)), 0);
	assert_true(kp_search_match(&q, a));
	assert_int_equal(kp_search_parse(b->id, &q, d, sizeof(d)), 0); /* an id: exact */
	assert_true(kp_search_match(&q, b));
	assert_false(kp_search_match(&q, a));
	assert_int_equal(kp_search_parse("name:pay", &q, d, sizeof(d)), 0);
	assert_true(kp_search_match(&q, a));
	assert_int_equal(kp_search_parse("alias:pay", &q, d, sizeof(d)), 0);
	assert_false(kp_search_match(&q, a)); /* no aliases */
	/* aliases: alias: looks at them only, the default scope too, exact: in their case */
	snprintf(b->aliases[0].name, sizeof(b->aliases[0].name), "Billing-Key");
	b->naliases = 1;
	assert_int_equal(kp_search_parse("alias:bill", &q, d, sizeof(d)), 0);
	assert_true(kp_search_match(&q, b));
	assert_false(kp_search_match(&q, a));
	assert_int_equal(kp_search_parse("bill", &q, d, sizeof(d)), 0);
	assert_true(kp_search_match(&q, b));
	assert_int_equal(kp_search_parse("name:bill", &q, d, sizeof(d)), 0);
	assert_false(kp_search_match(&q, b));
	assert_int_equal(kp_search_parse("exact:Billing-Key", &q, d, sizeof(d)), 0);
	assert_true(kp_search_match(&q, b));
	assert_int_equal(kp_search_parse("exact:billing-key", &q, d, sizeof(d)), 0);
	assert_false(kp_search_match(&q, b));
	assert_int_equal(kp_search_parse("not:alias:Billing", &q, d, sizeof(d)), 0);
	assert_false(kp_search_match(&q, b));
	assert_true(kp_search_match(&q, a));
	b->naliases = 0;
	assert_int_equal(kp_search_parse("escape:not:", &q, d, sizeof(d)), 0);
	assert_string_equal(q.text, "not:");
	assert_false(q.negate);
	assert_int_equal(kp_search_parse("not:", &q, d, sizeof(d)), KY_ERR_MALFORMED);
	assert_int_equal(kp_search_parse("", &q, d, sizeof(d)), KY_ERR_MALFORMED);
	ky_key_free(a);
	ky_key_free(b);
}

/* Import tokens and secure import (unitd/api_importtok.c): the bodies. */
static void test_import_token_bodies(void **state)
{
	struct kp_create c;
	struct kp_action_body a;
	struct kp_secure sec;
	uint32_t e, m;
	json_t *j;
	char d[256];
	/* a 12-byte nonce + 16-byte tag, and a 12-byte IV */
	const char *ok_res = "{\"resources\":[{\"name\":\"imp\",\"payload\":\"AAAA\","
	                     "\"encryptedNonce\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\","
	                     "\"iv\":\"AAAAAAAAAAAAAAAA\"}]}";

	(void)state;
	/* POST /import_token */
	assert_int_equal(kp_parse_import_token(NULL, 0, &e, &m, d, sizeof(d)), 0);
	assert_int_equal(e, KY_IMPORT_EXPIRATION_DEFAULT);
	assert_int_equal(m, KY_IMPORT_RETRIEVALS_DEFAULT);
	assert_int_equal(kp_parse_import_token(BODY("{}"), &e, &m, d, sizeof(d)), 0);
	assert_int_equal(
	    kp_parse_import_token(BODY("{\"expiration\":80000,\"maxAllowedRetrievals\":30}"), &e,
	                          &m, d, sizeof(d)),
	    0);
	assert_int_equal(e, 80000);
	assert_int_equal(m, 30);
	static const struct {
		const char *body;
		int err;
		const char *says;
	} bad[] = {
	    {"{\"expiration\":299}", KY_ERR_MALFORMED, "'expiration'"},
	    {"{\"expiration\":86401}", KY_ERR_MALFORMED, "'expiration'"},
	    {"{\"expiration\":\"600\"}", KY_ERR_MALFORMED, "'expiration'"},
	    {"{\"expiration\":600.5}", KY_ERR_MALFORMED, "'expiration'"},
	    {"{\"maxAllowedRetrievals\":0}", KY_ERR_MALFORMED, "'maxAllowedRetrievals'"},
	    {"{\"maxAllowedRetrievals\":501}", KY_ERR_MALFORMED, "'maxAllowedRetrievals'"},
	    {"{\"maxAllowedRetrievals\":true}", KY_ERR_MALFORMED, "'maxAllowedRetrievals'"},
	    {"{\"expiration\":600,\"expiration\":700}", KY_ERR_MALFORMED, "not valid JSON"},
	    {"{\"color\":1}", KY_ERR_BODY_MEMBER, "'color'"},
	    {"[1]", KY_ERR_MALFORMED, "JSON object"},
	    {"{", KY_ERR_MALFORMED, "not valid JSON"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		d[0] = '\0';
		assert_int_equal(kp_parse_import_token(BODY(bad[i].body), &e, &m, d, sizeof(d)),
		                 bad[i].err);
		if (strstr(d, bad[i].says) == NULL)
			fail_msg("%s: '%s' does not say %s", bad[i].body, d, bad[i].says);
	}

	/* POST /keys with an import token */
	assert_int_equal(kp_parse_create(BODY(with_md(KP_TYPE_KEY, ok_res)), &c, d, sizeof(d)), 0);
	assert_true(c.secure.present);
	assert_int_equal(c.secure.enc_nonce.len, 28);
	assert_int_equal(c.secure.iv.len, 12);
	assert_int_equal(c.secure.oaep_sha1, 0);
	kp_create_release(&c);
	assert_int_equal(
	    kp_parse_create(
	        BODY(with_md(KP_TYPE_KEY, "{\"resources\":[{\"name\":\"imp\",\"payload\":\"AAAA\","
	                                  "\"encryptedNonce\":\"AAAA\",\"iv\":\"AAAA\","
	                                  "\"encryptionAlgorithm\":\"RSAES_OAEP_SHA_1\"}]}")),
	        &c, d, sizeof(d)),
	    0);
	assert_int_equal(c.secure.oaep_sha1, 1);
	kp_create_release(&c);
	static const struct {
		const char *body;
		const char *says;
	} bad_create[] = {
	    {"{\"resources\":[{\"name\":\"imp\",\"encryptedNonce\":\"AAAA\",\"iv\":\"AAAA\"}]}",
	     "payload is missing"},
	    {"{\"resources\":[{\"name\":\"imp\",\"payload\":\"AAAA\",\"iv\":\"AAAA\"}]}",
	     "encryptedNonce is missing"},
	    {"{\"resources\":[{\"name\":\"imp\",\"payload\":\"AAAA\",\"encryptedNonce\":"
	     "\"AAAA\"}]}",
	     "iv is missing"},
	    {"{\"resources\":[{\"name\":\"imp\",\"payload\":\"AAAA\",\"encryptedNonce\":"
	     "\"AAAA\",\"iv\":\"AAAA\",\"encryptionAlgorithm\":\"RSA_PKCS1\"}]}",
	     "'resources[0].encryptionAlgorithm'"},
	    {"{\"resources\":[{\"name\":\"imp\",\"payload\":\"AAAA\",\"encryptedNonce\":"
	     "\"!!\",\"iv\":\"AAAA\"}]}",
	     "'resources[0].encryptedNonce' must be base64"},
	    {"{\"resources\":[{\"name\":\"imp\",\"payload\":\"AAAA\",\"encryptedNonce\":"
	     "\"AAAA\",\"iv\":\"\"}]}",
	     "'resources[0].iv' must be base64"},
	    {"{\"resources\":[{\"name\":\"imp\",\"payload\":\"AAAA\",\"encryptedNonce\":"
	     "\"AAAA\",\"iv\":\"AAAAAAAAAAAAAAAAAAAA\"}]}",
	     "'resources[0].iv' must be base64 of 1 to 12 bytes"},
	    {"{\"resources\":[{\"name\":\"imp\",\"extractable\":true,\"payload\":\"AAAA\","
	     "\"encryptedNonce\":\"AAAA\",\"iv\":\"AAAA\"}]}",
	     "root keys only"},
	};
	for (size_t i = 0; i < sizeof(bad_create) / sizeof(bad_create[0]); i++) {
		d[0] = '\0';
		assert_int_equal(kp_parse_create(BODY(bad_create[i].body), &c, d, sizeof(d)),
		                 KY_ERR_MALFORMED);
		if (strstr(d, bad_create[i].says) == NULL)
			fail_msg("%s: '%s' does not say %s", bad_create[i].body, d,
			         bad_create[i].says);
		assert_false(c.secure.present);
		assert_null(c.secure.enc_nonce.data);
	}

	/* rotate takes them; another action refuses them by name */
	assert_int_equal(kp_parse_action(BODY("{\"payload\":\"AAAA\",\"encryptedNonce\":\"AAAA\","
	                                      "\"iv\":\"AAAA\"}"),
	                                 "rotate", "payload encryptedNonce iv encryptionAlgorithm",
	                                 &a, d, sizeof(d)),
	                 0);
	assert_true(a.secure.present);
	kp_action_release(&a);
	assert_false(a.secure.present);
	assert_int_equal(kp_parse_action(BODY("{\"encryptedNonce\":\"AAAA\",\"iv\":\"AAAA\"}"),
	                                 "rotate", "payload encryptedNonce iv encryptionAlgorithm",
	                                 &a, d, sizeof(d)),
	                 KY_ERR_MALFORMED);
	assert_non_null(strstr(d, "payload is missing"));
	assert_int_equal(
	    kp_parse_action(BODY("{\"encryptedNonce\":\"AAAA\"}"), "restore", "", &a, d, sizeof(d)),
	    KY_ERR_BODY_MEMBER);
	assert_non_null(strstr(d, "'encryptedNonce': restore takes no member"));

	/* kp_secure_parse on its own: nothing given is no secure import */
	j = json_pack("{s:s}", "payload", "AAAA");
	assert_int_equal(kp_secure_parse(j, "", true, &sec, d, sizeof(d)), 0);
	assert_false(sec.present);
	json_decref(j);

	/* replies */
	{
		struct ky_import_token t = {
		    .created = NOW, .expires = NOW + 600, .max_retrievals = 30, .remaining = 29};
		j = kp_import_token_json(&t, NULL, NULL);
		assert_non_null(j);
		assert_int_equal(json_integer_value(json_object_get(j, "maxAllowedRetrievals")),
		                 30);
		assert_int_equal(json_integer_value(json_object_get(j, "remainingRetrievals")), 29);
		assert_non_null(json_string_value(json_object_get(j, "expirationDate")));
		assert_null(json_object_get(j, "payload"));
		json_decref(j);
		j = kp_import_token_json(&t, "UEVN", "bm9uY2U=");
		assert_string_equal(json_string_value(json_object_get(j, "payload")), "UEVN");
		assert_string_equal(json_string_value(json_object_get(j, "nonce")), "bm9uY2U=");
		json_decref(j);
	}
	j = kp_registrations_json(true);
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(j, "metadata"), "collectionTotal")),
	    0);
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(j, "metadata"), "totalCount")), 0);
	assert_int_equal(json_array_size(json_object_get(j, "resources")), 0);
	json_decref(j);

	/* sync: an hour after the key's last change */
	d[0] = '\0';
	assert_int_equal(kp_sync_check("k1", NOW - 3599, NOW, d, sizeof(d)), KY_ERR_SYNC_TOO_EARLY);
	assert_non_null(strstr(d, "key k1 was changed at 2027-01-15T07:00:01Z: a sync can be asked "
	                          "from 2027-01-15T08:00:01Z"));
	assert_int_equal(kp_sync_check("k1", NOW - 3600, NOW, d, sizeof(d)), 0);
	assert_int_equal(kp_sync_check("k1", NOW - 86400, NOW, d, sizeof(d)), 0);

	/* Key Protect's one code for two refusals */
	j = kp_error_json(KY_ERR_PURGE_TOO_EARLY, NULL);
	{
		json_t *rs = json_array_get(
		    json_object_get(json_array_get(json_object_get(j, "resources"), 0), "reasons"),
		    0);
		assert_string_equal(json_string_value(json_object_get(rs, "code")),
		                    "REQ_TOO_EARLY_ERR");
		assert_string_equal(json_string_value(json_object_get(rs, "moreInfo")),
		                    "purge-too-early");
	}
	json_decref(j);
	j = kp_error_json(KY_ERR_SYNC_TOO_EARLY, NULL);
	assert_string_equal(
	    json_string_value(json_object_get(
	        json_array_get(
	            json_object_get(json_array_get(json_object_get(j, "resources"), 0), "reasons"),
	            0),
	        "code")),
	    "REQ_TOO_EARLY_ERR");
	json_decref(j);
	j = kp_error_json(KY_ERR_INCORRECT_NONCE_IV, NULL);
	assert_string_equal(
	    json_string_value(json_object_get(
	        json_array_get(
	            json_object_get(json_array_get(json_object_get(j, "resources"), 0), "reasons"),
	            0),
	        "code")),
	    "INCORRECT_NONCE_IV_ERR");
	json_decref(j);
}

/* kp_query_param_check: the names a route takes, each once, each with a value. */
static void test_query_params(void **state)
{
	const char *keys = "limit offset state extractable search sort filter";
	uint32_t seen = 0;
	char d[300];

	(void)state;
	assert_int_equal(
	    kp_query_param_check(keys, "GET /api/v2/keys", "limit", "1", &seen, d, sizeof(d)), 0);
	assert_int_equal(
	    kp_query_param_check(keys, "GET /api/v2/keys", "state", "1,2", &seen, d, sizeof(d)), 0);
	/* the same name again, with another value or the same */
	assert_int_equal(
	    kp_query_param_check(keys, "GET /api/v2/keys", "limit", "2", &seen, d, sizeof(d)),
	    KY_ERR_QUERY_PARAM_REPEATED);
	assert_non_null(strstr(d, "'limit'"));
	assert_int_equal(
	    kp_query_param_check(keys, "GET /api/v2/keys", "state", "1,2", &seen, d, sizeof(d)),
	    KY_ERR_QUERY_PARAM_REPEATED);
	assert_non_null(strstr(d, "'state'"));
	/* the last name of the list counts too */
	assert_int_equal(kp_query_param_check(keys, "GET /api/v2/keys", "filter", "state=1", &seen,
	                                      d, sizeof(d)),
	                 0);
	assert_int_equal(kp_query_param_check(keys, "GET /api/v2/keys", "filter", "state=2", &seen,
	                                      d, sizeof(d)),
	                 KY_ERR_QUERY_PARAM_REPEATED);
	/* no value: "?offset=" and "?offset" */
	seen = 0;
	assert_int_equal(
	    kp_query_param_check(keys, "GET /api/v2/keys", "offset", "", &seen, d, sizeof(d)),
	    KY_ERR_QUERY_PARAM_EMPTY);
	assert_non_null(strstr(d, "'offset'"));
	seen = 0;
	assert_int_equal(
	    kp_query_param_check(keys, "GET /api/v2/keys", "offset", NULL, &seen, d, sizeof(d)),
	    KY_ERR_QUERY_PARAM_EMPTY);
	/* a name the route does not take: a prefix, a longer name, any case but its own */
	seen = 0;
	assert_int_equal(
	    kp_query_param_check(keys, "GET /api/v2/keys", "lim", "1", &seen, d, sizeof(d)),
	    KY_ERR_QUERY_PARAM);
	assert_non_null(strstr(d, "'lim': GET /api/v2/keys takes limit offset"));
	assert_int_equal(
	    kp_query_param_check(keys, "GET /api/v2/keys", "limits", "1", &seen, d, sizeof(d)),
	    KY_ERR_QUERY_PARAM);
	assert_int_equal(
	    kp_query_param_check(keys, "GET /api/v2/keys", "Limit", "1", &seen, d, sizeof(d)),
	    KY_ERR_QUERY_PARAM);
	assert_int_equal(
	    kp_query_param_check(keys, "GET /api/v2/keys", "", "1", &seen, d, sizeof(d)),
	    KY_ERR_QUERY_PARAM);
	assert_int_equal(seen, 0);
	/* a route that takes none */
	assert_int_equal(
	    kp_query_param_check("", "GET /api/v2/keys/x", "limit", "1", &seen, d, sizeof(d)),
	    KY_ERR_QUERY_PARAM);
	assert_non_null(strstr(d, "takes none"));
}

/* The metadata of a collection body: when sent, the call's collectionType and the number of
 * resources, both present; a wrong or missing one is refused naming it. */
static void test_body_metadata(void **state)
{
	struct kp_action_body a;
	struct kp_create c;
	char ring[KY_KEY_RING_MAX + 1];
	char d[256];
#define MD(type, total) \
	"{\"metadata\":{\"collectionType\":\"" type "\",\"collectionTotal\":" total "}"
#define WRAP_RES ",\"resources\":[{\"plaintext\":\"aGVsbG8=\"}]}"
#define BODY(s)  (const uint8_t *)(s), strlen(s)

	(void)state;
	/* actions: key_action+json */
	assert_int_equal(kp_parse_action(BODY(MD(KP_TYPE_ACTION, "1") WRAP_RES), "wrap",
	                                 "plaintext aad", &a, d, sizeof(d)),
	                 0);
	kp_action_release(&a);
	assert_int_equal(kp_parse_action(BODY("{\"resources\":[{\"plaintext\":\"aGVsbG8=\"}]}"),
	                                 "wrap", "plaintext aad", &a, d, sizeof(d)),
	                 KY_ERR_MALFORMED);
	assert_non_null(strstr(d, "member 'metadata' is required"));
	assert_int_equal(kp_parse_action(BODY(MD(KP_TYPE_KEY, "1") WRAP_RES), "wrap",
	                                 "plaintext aad", &a, d, sizeof(d)),
	                 KY_ERR_MALFORMED);
	assert_non_null(strstr(d, "'metadata.collectionType' must be " KP_TYPE_ACTION));
	assert_int_equal(kp_parse_action(BODY(MD(KP_TYPE_ACTION, "2") WRAP_RES), "wrap",
	                                 "plaintext aad", &a, d, sizeof(d)),
	                 KY_ERR_MALFORMED);
	assert_non_null(strstr(d, "'metadata.collectionTotal'"));
	assert_int_equal(kp_parse_action(BODY("{\"metadata\":{\"collectionTotal\":1}" WRAP_RES),
	                                 "wrap", "plaintext aad", &a, d, sizeof(d)),
	                 KY_ERR_MALFORMED);
	assert_non_null(strstr(d, "collectionType' must be " KP_TYPE_ACTION " (it is missing)"));
	assert_int_equal(kp_parse_action(BODY("{\"metadata\":{\"collectionType\":\"" KP_TYPE_ACTION
	                                      "\"}" WRAP_RES),
	                                 "wrap", "plaintext aad", &a, d, sizeof(d)),
	                 KY_ERR_MALFORMED);
	assert_non_null(
	    strstr(d, "collectionTotal' must be the number of resources, 1 (it is missing)"));
	/* restore: key+json */
	assert_int_equal(kp_parse_action(BODY(MD(KP_TYPE_KEY, "1") ",\"resources\":[{}]}"),
	                                 "restore", "", &a, d, sizeof(d)),
	                 0);
	kp_action_release(&a);
	assert_int_equal(kp_parse_action(BODY(MD(KP_TYPE_ACTION, "1") ",\"resources\":[{}]}"),
	                                 "restore", "", &a, d, sizeof(d)),
	                 KY_ERR_MALFORMED);
	/* create: key+json */
	assert_int_equal(
	    kp_parse_create(BODY(MD(KP_TYPE_POLICY, "1") ",\"resources\":[{\"name\":\"k1\"}]}"), &c,
	                    d, sizeof(d)),
	    KY_ERR_MALFORMED);
	assert_non_null(strstr(d, KP_TYPE_KEY));
	assert_int_equal(
	    kp_parse_create(BODY(MD(KP_TYPE_KEY, "0") ",\"resources\":[{\"name\":\"k1\"}]}"), &c, d,
	                    sizeof(d)),
	    KY_ERR_MALFORMED);
	assert_int_equal(
	    kp_parse_create(BODY(MD(KP_TYPE_KEY, "1") ",\"resources\":[{\"name\":\"k1\"}]}"), &c, d,
	                    sizeof(d)),
	    0);
	kp_create_release(&c);
	/* PATCH as a collection: key+json */
	assert_int_equal(
	    kp_parse_patch(BODY(MD(KP_TYPE_KEY, "1") ",\"resources\":[{\"keyRingID\":\"r1\"}]}"),
	                   ring, d, sizeof(d)),
	    0);
	assert_int_equal(
	    kp_parse_patch(BODY(MD(KP_TYPE_RING, "1") ",\"resources\":[{\"keyRingID\":\"r1\"}]}"),
	                   ring, d, sizeof(d)),
	    KY_ERR_MALFORMED);
	assert_non_null(strstr(d, "'metadata.collectionType'"));
#undef MD
#undef WRAP_RES
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_b64url),
	    cmocka_unit_test(test_token_roundtrip),
	    cmocka_unit_test(test_token_refusals),
	    cmocka_unit_test(test_token_bearer),
	    cmocka_unit_test(test_token_form),
	    cmocka_unit_test(test_query),
	    cmocka_unit_test(test_dates_ids),
	    cmocka_unit_test(test_parse_create),
	    cmocka_unit_test(test_parse_action),
	    cmocka_unit_test(test_parse_key_policies),
	    cmocka_unit_test(test_instance_policies),
	    cmocka_unit_test(test_instance_net_policies),
	    cmocka_unit_test(test_error_json),
	    cmocka_unit_test(test_key_json),
	    cmocka_unit_test(test_config),
	    cmocka_unit_test(test_config_seal),
	    cmocka_unit_test(test_list_filter),
	    cmocka_unit_test(test_list_sort_search),
	    cmocka_unit_test(test_config_imprint),
	    cmocka_unit_test(test_imprint_rule),
	    cmocka_unit_test(test_import_token_bodies),
	    cmocka_unit_test(test_query_params),
	    cmocka_unit_test(test_body_metadata),
	};

	if (ky_crypto_init() != 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
