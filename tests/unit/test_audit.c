/* Unit tests of lib/audit: line encoding, checkpoint signatures and the chain check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the four headers above first */
#include <cmocka.h>

#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/audit.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

static EVP_PKEY *key, *other;
static X509 *cert, *other_cert;
static char *cert_b64, *other_b64;

#define MAXL 32

/* A log built in memory, as the unit writes it. */
struct log {
	size_t n;
	char *line[MAXL];
	uint64_t seq;
	uint8_t hash[KY_AUDIT_HASH_LEN];
};

static void log_put(struct log *lg, struct ky_audit_line *l)
{
	assert_true(lg->n < MAXL);
	assert_int_equal(ky_audit_hash(l->s, l->len, lg->hash), 0);
	lg->line[lg->n++] = strdup(l->s);
	lg->seq++;
}

static void log_event(struct log *lg, const char *event, const char *k, const char *v)
{
	struct ky_audit_line l;

	ky_audit_begin(&l, lg->seq + 1, lg->hash, "2026-12-05T08:00:00.000Z", event);
	if (k != NULL)
		ky_audit_add_str(&l, k, v);
	assert_int_equal(ky_audit_end(&l), 0);
	log_put(lg, &l);
}

static void log_file(struct log *lg, const char *b64, const char *unit)
{
	struct ky_audit_line l;

	ky_audit_begin(&l, lg->seq + 1, lg->hash, "2026-12-05T08:00:00.000Z", "file");
	ky_audit_add_str(&l, "instance", "inst-1");
	ky_audit_add_str(&l, "unit", unit);
	ky_audit_add_str(&l, "file", "audit-00000001.jsonl");
	ky_audit_add_str(&l, "cert", b64);
	assert_int_equal(ky_audit_end(&l), 0);
	log_put(lg, &l);
}

static void log_ckpt_as(struct log *lg, EVP_PKEY *k, const char *unit)
{
	struct ky_audit_line l;

	ky_audit_begin(&l, lg->seq + 1, lg->hash, "2026-12-05T08:00:01.000Z", "checkpoint");
	ky_audit_add_str(&l, "instance", "inst-1");
	ky_audit_add_str(&l, "unit", unit);
	assert_int_equal(ky_audit_end(&l), 0);
	assert_int_equal(ky_audit_sign(&l, k), 0);
	log_put(lg, &l);
}

static void log_ckpt(struct log *lg)
{
	log_ckpt_as(lg, key, "unit-1");
}

static void log_free(struct log *lg)
{
	for (size_t i = 0; i < lg->n; i++)
		free(lg->line[i]);
	memset(lg, 0, sizeof(*lg));
}

/* file, start, 3 key-api lines, checkpoint, seal, stop, checkpoint. */
static void log_standard(struct log *lg)
{
	memset(lg, 0, sizeof(*lg));
	log_file(lg, cert_b64, "unit-1");
	log_event(lg, "start", "unit", "unit-1");
	log_event(lg, "key-api", "route", "keys");
	log_event(lg, "key-api", "route", "keys/{id}/actions/{action}");
	log_event(lg, "key-api", "route", "keys/{id}");
	log_ckpt(lg);
	log_event(lg, "seal", "new_mk", "EMPTY");
	log_event(lg, "stop", "unit", "unit-1");
	log_ckpt(lg);
}

static int trust_result = 0;
static int trust_calls = 0;

static int trust(void *arg, const char *instance, const char *unit, X509 *c, char *why,
                 size_t whylen)
{
	(void)arg;
	(void)c;
	trust_calls++;
	if (trust_result != 0)
		snprintf(why, whylen, "not pinned: %s/%s", instance, unit);
	return trust_result;
}

/* Feeds lines (each its own "file" when files is set); returns the first error. */
static int run(char **lines, size_t n, EVP_PKEY *pub, bool from_start, char *why, size_t whylen,
               struct ky_audit_summary *sum)
{
	struct ky_audit_verifier *v = NULL;
	char where[32];
	int r = 0;

	assert_int_equal(ky_audit_verifier_new(pub, trust, NULL, from_start, &v), 0);
	for (size_t i = 0; i < n && r == 0; i++) {
		snprintf(where, sizeof(where), "f:%zu", i + 1);
		r = ky_audit_verify_line(v, where, i == 0, lines[i], strlen(lines[i]), why, whylen);
	}
	if (r == 0)
		r = ky_audit_verify_finish(v, why, whylen);
	if (sum != NULL)
		ky_audit_verifier_summary(v, sum);
	ky_audit_verifier_free(v);
	return r;
}

static int group_setup(void **state)
{
	unsigned char *der = NULL;
	int n;

	(void)state;
	if (ky_crypto_init() != 0 || ky_ec_generate(&key) != 0 || ky_ec_generate(&other) != 0 ||
	    ky_cert_self_signed_issuer(key, "unit-1", "inst-1", 30, &cert) != 0 ||
	    ky_cert_self_signed_issuer(other, "unit-2", "inst-1", 30, &other_cert) != 0)
		return -1;
	if ((n = i2d_X509(cert, &der)) <= 0 || ky_b64_encode(der, (size_t)n, &cert_b64) != 0)
		return -1;
	OPENSSL_free(der);
	der = NULL;
	if ((n = i2d_X509(other_cert, &der)) <= 0 || ky_b64_encode(der, (size_t)n, &other_b64) != 0)
		return -1;
	OPENSSL_free(der);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(key);
	EVP_PKEY_free(other);
	X509_free(cert);
	X509_free(other_cert);
	free(cert_b64);
	free(other_b64);
	return 0;
}

/* ---- encoding ---- */

static void test_line_encoding(void **state)
{
	struct ky_audit_line l, m;
	uint8_t zero[KY_AUDIT_HASH_LEN] = {0};

	(void)state;
	ky_audit_begin(&l, 7, zero, "T", "key-api");
	ky_audit_add_str(&l, "s", "a\"b\\c\n\x01\xc3\xa9z");
	ky_audit_add_uint(&l, "n", 18446744073709551615ull);
	ky_audit_add_bool(&l, "b", false);
	ky_audit_add_json(&l, "j", "[]");
	ky_audit_members(&m);
	ky_audit_add_str(&m, "x", NULL);
	ky_audit_add_members(&l, m.s, m.len);
	assert_int_equal(ky_audit_end(&l), 0);
	assert_string_equal(l.s,
	                    "{\"seq\":7,\"prev\":\"00000000000000000000000000000000000000000000"
	                    "00000000000000000000\",\"time\":\"T\",\"event\":\"key-api\",\"s\":"
	                    "\"a\\\"b\\\\c\\u000a\\u0001??z\",\"n\":18446744073709551615,\"b\":"
	                    "false,\"j\":[],\"x\":\"\"}");
	assert_int_equal(l.len, strlen(l.s));
}

/* A line made in two parts (head, then body: the unit makes the body outside its lock) is
 * the same bytes as one made whole, and hashes the same with a kept context. */
static void test_head_and_body(void **state)
{
	struct ky_audit_line whole, body;
	uint8_t prev[KY_AUDIT_HASH_LEN], h1[KY_AUDIT_HASH_LEN], h2[KY_AUDIT_HASH_LEN];
	char head[KY_AUDIT_HEAD_MAX], joined[KY_AUDIT_LINE_MAX + 2];
	size_t hl;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	(void)state;
	assert_non_null(ctx);
	for (size_t i = 0; i < sizeof(prev); i++)
		prev[i] = (uint8_t)(0xf0 + i);
	ky_audit_begin(&whole, 18446744073709551615ull, prev, "2026-12-05T08:00:00.000Z",
	               "key-api");
	ky_audit_add_str(&whole, "phase", "done");
	assert_int_equal(ky_audit_end(&whole), 0);
	hl = ky_audit_head(head, 18446744073709551615ull, prev);
	assert_true(hl > 0 && hl < KY_AUDIT_HEAD_MAX);
	ky_audit_body(&body, "2026-12-05T08:00:00.000Z", "key-api");
	ky_audit_add_str(&body, "phase", "done");
	assert_int_equal(ky_audit_end(&body), 0);
	assert_int_equal(hl + body.len, whole.len);
	memcpy(joined, head, hl);
	memcpy(joined + hl, body.s, body.len);
	assert_memory_equal(joined, whole.s, whole.len);
	assert_int_equal(ky_audit_hash(whole.s, whole.len, h1), 0);
	for (int round = 0; round < 2; round++) { /* the context serves line after line */
		memset(h2, 0, sizeof(h2));
		assert_int_equal(ky_audit_hash_in(ctx, joined, whole.len, h2), 0);
		assert_memory_equal(h1, h2, sizeof(h1));
	}
	EVP_MD_CTX_free(ctx);
}

static void test_line_too_long(void **state)
{
	struct ky_audit_line l;
	uint8_t zero[KY_AUDIT_HASH_LEN] = {0};
	char *big = malloc(KY_AUDIT_LINE_MAX);

	(void)state;
	assert_non_null(big);
	memset(big, 'a', KY_AUDIT_LINE_MAX - 1);
	big[KY_AUDIT_LINE_MAX - 1] = '\0';
	ky_audit_begin(&l, 1, zero, "T", "x");
	ky_audit_add_str(&l, "big", big);
	ky_audit_add_str(&l, "small", "fits, but comes after one that did not");
	assert_int_equal(ky_audit_end(&l), KY_ERR_TOO_LARGE);
	assert_int_equal(ky_audit_sign(&l, key), KY_ERR_INTERNAL);
	free(big);
}

static void test_time(void **state)
{
	char t[40];

	(void)state;
	ky_audit_time(0, 5000000, t, sizeof(t));
	assert_string_equal(t, "1970-01-01T00:00:00.005Z");
	ky_audit_time(1764921600, 999999999, t, sizeof(t));
	assert_string_equal(t, "2025-12-05T08:00:00.999Z");
}

/* The signature is over the line without its sig member, as formats.md says. */
static void test_checkpoint_signature_layout(void **state)
{
	struct ky_audit_line l;
	uint8_t zero[KY_AUDIT_HASH_LEN] = {0};
	char unsigned_line[KY_AUDIT_LINE_MAX + 2];
	const char *sigm, *b64;
	struct ky_buf sig = {0};
	char *b = NULL;

	(void)state;
	ky_audit_begin(&l, 3, zero, "T", "checkpoint");
	ky_audit_add_str(&l, "unit", "unit-1");
	assert_int_equal(ky_audit_end(&l), 0);
	snprintf(unsigned_line, sizeof(unsigned_line), "%s", l.s);
	assert_int_equal(ky_audit_sign(&l, key), 0);
	sigm = strstr(l.s, KY_AUDIT_SIG_MEMBER);
	assert_non_null(sigm);
	assert_int_equal(strncmp(l.s, unsigned_line, strlen(unsigned_line) - 1), 0);
	assert_int_equal((size_t)(sigm - l.s), strlen(unsigned_line) - 1);
	assert_string_equal(l.s + l.len - 2, "\"}");
	b64 = sigm + strlen(KY_AUDIT_SIG_MEMBER);
	b = strndup(b64, strlen(b64) - 2);
	assert_int_equal(ky_b64_decode(b, &sig), 0);
	assert_int_equal(ky_verify(key, unsigned_line, strlen(unsigned_line), sig.data, sig.len),
	                 0);
	assert_int_equal(ky_verify(other, unsigned_line, strlen(unsigned_line), sig.data, sig.len),
	                 KY_ERR_BAD_SIGNATURE);
	free(b);
	ky_buf_free(&sig);
}

/* ---- the check ---- */

static void test_good_log(void **state)
{
	struct log lg;
	struct ky_audit_summary s;
	char why[512];

	(void)state;
	log_standard(&lg);
	trust_calls = 0;
	assert_int_equal(run(lg.line, lg.n, NULL, true, why, sizeof(why), &s), 0);
	assert_int_equal(trust_calls, 1);
	assert_int_equal(s.lines, 9);
	assert_int_equal(s.checkpoints, 2);
	assert_int_equal(s.first_seq, 1);
	assert_int_equal(s.last_seq, 9);
	assert_true(s.clean_stop);
	/* With the key given instead of trusted. */
	trust_calls = 0;
	assert_int_equal(run(lg.line, lg.n, key, true, why, sizeof(why), NULL), 0);
	assert_int_equal(trust_calls, 0);
	log_free(&lg);
}

static void test_removed_line(void **state)
{
	struct log lg;
	char why[512], *l[MAXL];

	(void)state;
	log_standard(&lg);
	memcpy(l, lg.line, sizeof(l));
	memmove(&l[3], &l[4], (lg.n - 4) * sizeof(char *)); /* seq 4 gone */
	assert_int_equal(run(l, lg.n - 1, NULL, true, why, sizeof(why), NULL), KY_ERR_AUDIT_CHAIN);
	assert_non_null(strstr(why, "f:4: seq 5 follows seq 3 (f:3)"));
	log_free(&lg);
}

static void test_reordered_lines(void **state)
{
	struct log lg;
	char why[512], *t;

	(void)state;
	log_standard(&lg);
	t = lg.line[2];
	lg.line[2] = lg.line[3];
	lg.line[3] = t;
	assert_int_equal(run(lg.line, lg.n, NULL, true, why, sizeof(why), NULL),
	                 KY_ERR_AUDIT_CHAIN);
	assert_non_null(strstr(why, "f:3: seq 4 follows seq 2"));
	log_free(&lg);
}

static void test_inserted_line(void **state)
{
	struct log lg, forged;
	char why[512], *l[MAXL];

	(void)state;
	log_standard(&lg);
	/* A forger who copies the chain up to seq 3 and adds a line of its own after it. */
	memset(&forged, 0, sizeof(forged));
	forged.seq = 3;
	assert_int_equal(ky_audit_hash(lg.line[2], strlen(lg.line[2]), forged.hash), 0);
	log_event(&forged, "key-api", "route", "keys/{id}/purge");
	memcpy(l, lg.line, 3 * sizeof(char *));
	l[3] = forged.line[0];
	memcpy(&l[4], &lg.line[3], (lg.n - 3) * sizeof(char *));
	assert_int_equal(run(l, lg.n + 1, NULL, true, why, sizeof(why), NULL), KY_ERR_AUDIT_CHAIN);
	assert_non_null(strstr(why, "f:5: seq 4 follows seq 4 (f:4)"));
	log_free(&forged);
	log_free(&lg);
}

static void test_edited_line(void **state)
{
	struct log lg;
	char why[512], *p;

	(void)state;
	log_standard(&lg);
	p = strstr(lg.line[3], "keys/");
	assert_non_null(p);
	p[0] = 'K';
	assert_int_equal(run(lg.line, lg.n, NULL, true, why, sizeof(why), NULL),
	                 KY_ERR_AUDIT_CHAIN);
	assert_non_null(strstr(why, "f:5: prev is not the hash of the line before (f:4, seq 4)"));
	log_free(&lg);
}

/* An edit with every later prev recomputed: only the checkpoint's signature catches it. */
static void test_rechained_edit(void **state)
{
	struct log lg, re;
	char why[512];

	(void)state;
	log_standard(&lg);
	memset(&re, 0, sizeof(re));
	log_file(&re, cert_b64, "unit-1");
	log_event(&re, "start", "unit", "unit-1");
	log_event(&re, "key-api", "route", "keys-EDITED");
	for (size_t i = 3; i < 6; i++) {
		/* Copy lines 4..6 with new prev: begin a line with their members. */
		struct ky_audit_line l;
		const char *members = strstr(lg.line[i], ",\"event\":\"");
		const char *ev = members + strlen(",\"event\":\"");
		char event[32];
		size_t el = strcspn(ev, "\"");
		const char *rest = ev + el + 1;
		snprintf(event, sizeof(event), "%.*s", (int)el, ev);
		ky_audit_begin(&l, re.seq + 1, re.hash, "2026-12-05T08:00:00.000Z", event);
		ky_audit_add_members(&l, rest, strlen(rest) - 1);
		assert_int_equal(ky_audit_end(&l), 0);
		log_put(&re, &l);
	}
	assert_int_equal(run(re.line, re.n, NULL, true, why, sizeof(why), NULL),
	                 KY_ERR_AUDIT_SIGNATURE);
	assert_non_null(strstr(why, "f:6: checkpoint signature does not verify"));
	log_free(&re);
	log_free(&lg);
}

static void test_unsigned_tail(void **state)
{
	struct log lg;
	char why[512];

	(void)state;
	log_standard(&lg);
	assert_int_equal(run(lg.line, lg.n - 1, NULL, true, why, sizeof(why), NULL),
	                 KY_ERR_AUDIT_UNSIGNED);
	assert_non_null(strstr(why, "f:7 to f:8 (seq 7 to 8)"));
	assert_int_equal(run(lg.line, 0, NULL, true, why, sizeof(why), NULL), KY_ERR_AUDIT_LINE);
	log_free(&lg);
}

static void test_malformed_lines(void **state)
{
	static const char *const bad[] = {
	    "not json",
	    "[1,2]",
	    "{\"seq\":1,\"time\":\"T\",\"event\":\"x\"}",
	    "{\"seq\":0,\"prev\":"
	    "\"0000000000000000000000000000000000000000000000000000000000000000\","
	    "\"time\":\"T\",\"event\":\"x\"}",
	    "{\"seq\":1,\"prev\":"
	    "\"000000000000000000000000000000000000000000000000000000000000000G\","
	    "\"time\":\"T\",\"event\":\"x\"}",
	    "{\"seq\":1,\"prev\":"
	    "\"0000000000000000000000000000000000000000000000000000000000000000\","
	    "\"time\":\"T\"}",
	    "{\"seq\":1,\"seq\":1,\"prev\":"
	    "\"000000000000000000000000000000000000000000000000000000000"
	    "0000000\",\"time\":\"T\",\"event\":\"x\"}",
	};
	char why[512];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *l[1] = {(char *)bad[i]};
		assert_int_equal(run(l, 1, NULL, false, why, sizeof(why), NULL), KY_ERR_AUDIT_LINE);
	}
}

static void test_chain_start(void **state)
{
	struct log lg;
	char why[512];
	struct ky_audit_summary s;
	char *p;

	(void)state;
	log_standard(&lg);
	/* From seq 3 on: a stretch of the chain, fine unless the whole log is asked for. */
	assert_int_equal(run(lg.line + 2, lg.n - 2, key, false, why, sizeof(why), &s), 0);
	assert_int_equal(s.first_seq, 3);
	assert_int_equal(run(lg.line + 2, lg.n - 2, key, true, why, sizeof(why), NULL),
	                 KY_ERR_AUDIT_CHAIN);
	assert_non_null(strstr(why, "begins at seq 3, not 1"));
	/* Without a certificate before the checkpoint. */
	assert_int_equal(run(lg.line + 2, lg.n - 2, NULL, false, why, sizeof(why), NULL),
	                 KY_ERR_AUDIT_SIGNATURE);
	/* seq 1 must link to zeros. */
	p = strstr(lg.line[0], "\"prev\":\"0");
	p[8] = '1';
	assert_int_equal(run(lg.line, lg.n, NULL, true, why, sizeof(why), NULL),
	                 KY_ERR_AUDIT_CHAIN);
	log_free(&lg);
}

static void test_file_line_misplaced(void **state)
{
	struct log lg;
	char why[512];

	(void)state;
	memset(&lg, 0, sizeof(lg));
	log_file(&lg, cert_b64, "unit-1");
	log_file(&lg, cert_b64, "unit-1");
	assert_int_equal(run(lg.line, lg.n, NULL, true, why, sizeof(why), NULL),
	                 KY_ERR_AUDIT_CHAIN);
	assert_non_null(strstr(why, "f:2: a file line in the middle of a file"));
	log_free(&lg);
}

static void test_identity_refusals(void **state)
{
	struct log lg;
	char why[512];

	(void)state;
	log_standard(&lg);
	/* The trust callback says no. */
	trust_result = KY_ERR_NOT_FOUND;
	assert_int_equal(run(lg.line, lg.n, NULL, true, why, sizeof(why), NULL), KY_ERR_NOT_FOUND);
	assert_non_null(strstr(why, "not pinned: inst-1/unit-1"));
	trust_result = 0;
	/* A given key the log's certificate does not hold. */
	assert_int_equal(run(lg.line, lg.n, other, true, why, sizeof(why), NULL),
	                 KY_ERR_AUDIT_SIGNATURE);
	assert_non_null(strstr(why, "not the one given"));
	log_free(&lg);

	/* Checkpoints signed by another key than the file's certificate. */
	memset(&lg, 0, sizeof(lg));
	log_file(&lg, cert_b64, "unit-1");
	log_event(&lg, "start", "unit", "unit-1");
	log_ckpt_as(&lg, other, "unit-1");
	assert_int_equal(run(lg.line, lg.n, NULL, true, why, sizeof(why), NULL),
	                 KY_ERR_AUDIT_SIGNATURE);
	log_free(&lg);

	/* A checkpoint naming another unit than the file line. */
	memset(&lg, 0, sizeof(lg));
	log_file(&lg, cert_b64, "unit-1");
	log_ckpt_as(&lg, key, "unit-2");
	assert_int_equal(run(lg.line, lg.n, NULL, true, why, sizeof(why), NULL),
	                 KY_ERR_AUDIT_CHAIN);
	log_free(&lg);

	/* A file line whose cert is not a certificate. */
	memset(&lg, 0, sizeof(lg));
	log_file(&lg, "QUJD", "unit-1");
	assert_int_equal(run(lg.line, lg.n, NULL, true, why, sizeof(why), NULL), KY_ERR_AUDIT_LINE);
	log_free(&lg);
}

static void test_checkpoint_sig_damaged(void **state)
{
	struct log lg;
	char why[512], *p;

	(void)state;
	log_standard(&lg);
	p = strstr(lg.line[5], KY_AUDIT_SIG_MEMBER);
	p[strlen(KY_AUDIT_SIG_MEMBER) + 10] ^= 1; /* one base64 character */
	assert_int_not_equal(run(lg.line, lg.n, NULL, true, why, sizeof(why), NULL), 0);
	log_free(&lg);
	/* A checkpoint whose sig is not the last member. */
	log_standard(&lg);
	p = strstr(lg.line[5], KY_AUDIT_SIG_MEMBER);
	p[1] = 'S';
	assert_int_equal(run(lg.line, lg.n, NULL, true, why, sizeof(why), NULL), KY_ERR_AUDIT_LINE);
	log_free(&lg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_line_encoding),
	    cmocka_unit_test(test_head_and_body),
	    cmocka_unit_test(test_line_too_long),
	    cmocka_unit_test(test_time),
	    cmocka_unit_test(test_checkpoint_signature_layout),
	    cmocka_unit_test(test_good_log),
	    cmocka_unit_test(test_removed_line),
	    cmocka_unit_test(test_reordered_lines),
	    cmocka_unit_test(test_inserted_line),
	    cmocka_unit_test(test_edited_line),
	    cmocka_unit_test(test_rechained_edit),
	    cmocka_unit_test(test_unsigned_tail),
	    cmocka_unit_test(test_malformed_lines),
	    cmocka_unit_test(test_chain_start),
	    cmocka_unit_test(test_file_line_misplaced),
	    cmocka_unit_test(test_identity_refusals),
	    cmocka_unit_test(test_checkpoint_sig_damaged),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
