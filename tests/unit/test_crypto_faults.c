/* Fault injection for lib/crypto: every wrapper of include/kyok/crypto.h is run again and
 * again with its Nth OpenSSL allocation failing, N = 1, 2, ... until a run makes fewer than N
 * allocations. A run under a fault must either fail with an error code, leaving its outputs
 * empty (AddressSanitizer reports what it leaked), or succeed with a right output: what it
 * sealed opens, what it signed verifies, what it computed equals the result of a run without
 * faults. A failure path that loses its error code (a bare 'goto out' after r was reset to 0)
 * returns 0 with an empty or wrong output, and the check of that output fails here.
 *
 * OpenSSL's allocator hook (CRYPTO_set_mem_functions) is set first thing in main, before any
 * OpenSSL call: it sees every allocation OpenSSL and lib/crypto make through OPENSSL_malloc.
 * The secure heap is not initialised in this test (ky_crypto_init is not called), so secret
 * buffers go through the hook as well. ky_random and the base64 helpers make no OpenSSL
 * allocation and are not swept; their refusals are tested in test_crypto.c. Neither are
 * ky_sigkey_open and ky_keypart_open: each run costs a password KDF (scrypt), and a sweep of
 * hundreds of runs would take minutes. Nor are ky_envelope_seal and ky_envelope_open: under
 * some failed allocations OpenSSL 3.0 itself dereferences NULL in the ECDH key derivation of
 * CMS (EVP_KDF_CTX_new), and the process dies there. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the four headers above first */
#include <cmocka.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kyok/crypto.h"
#include "kyok/err.h"

/* ---- the allocator hook ---- */

static long fault_at;     /* the allocation that fails, 0: none */
static bool fault_sparse; /* sweeps sample allocations past the 256th (KYOK_FAULT_SPARSE) */
static long fault_count;  /* allocations made since fault_arm */

static bool fault_hit(void)
{
	return fault_at > 0 && ++fault_count == fault_at;
}

static void *fault_malloc(size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return fault_hit() ? NULL : malloc(n);
}

static void *fault_realloc(void *p, size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return fault_hit() ? NULL : realloc(p, n);
}

static void fault_free(void *p, const char *file, int line)
{
	(void)file;
	(void)line;
	free(p);
}

static void fault_arm(long n)
{
	fault_count = 0;
	fault_at = n;
}

/* Disarms; true when the run reached the allocation that was to fail. */
static bool fault_disarm(void)
{
	bool reached = fault_count >= fault_at;

	fault_at = 0;
	ERR_clear_error();
	return reached;
}

/* One case: runs the call under a failure at allocation n, disarms, checks what it returned
 * (0 and a right output, or an error code and an empty output), frees. Returns whether
 * allocation n was reached; *failed counts the runs that returned an error. */
typedef bool (*fault_case)(long n, long *failed);

static void fault_sweep(const char *name, fault_case c)
{
	long n, failed = 0, dummy = 0;

	/* A run without faults first: it must succeed, and it makes OpenSSL's one-time setup
	 * (providers, algorithm tables) so that the runs under faults test the wrapper. */
	(void)c(0, &dummy);
	assert_int_equal(dummy, 0);
	/* KYOK_FAULT_SPARSE=1 (the sanitized build of make check, several times slower): every
	 * allocation up to the 256th, then fewer and fewer (a step growing by 1 every 32). */
	for (n = 1; c(n, &failed); n += fault_sparse && n > 256 ? 1 + (n - 256) / 32 : 1)
		;
	/* Every wrapper here allocates: a sweep that never reached an allocation tested nothing. */
	assert_true(n > 1);
	print_message("%-24s %4ld allocations, %4ld failed runs returned an error\n", name, n - 1,
	              failed);
}

#define FAULT_CALL(n, call) (fault_arm(n), (call))

/* Checks r from a run under a fault: 0 (the run recovered) or a kyok error code. */
static void fault_result(int r, long *failed)
{
	if (r != 0) {
		assert_true(r > 0);
		assert_string_not_equal(ky_err_slug(r), "ok");
		(*failed)++;
	}
}

/* ---- fixtures, made without faults ---- */

static EVP_PKEY *key_a, *key_b;
static X509 *cert_a, *cert_b; /* self-signed admin certificates ("alice", "bob") */
static X509 *anchor, *identity, *importer;
static EVP_PKEY *anchor_key, *identity_key, *importer_key;
static char tmpdir[256];
static char sigkey_path[300];
static uint8_t mk[KY_MK_LEN], mk_vp[KY_VP_LEN];

#define PW_SIGKEY "sigkey password"

static int group_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "%s/kyok-test-faults-XXXXXX",
	         getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	snprintf(sigkey_path, sizeof(sigkey_path), "%s/alice.sigkey", tmpdir);
	if (ky_ec_generate(&key_a) != 0 || ky_ec_generate(&key_b) != 0 ||
	    ky_cert_self_signed(key_a, "alice", "kyok administration", 30, &cert_a) != 0 ||
	    ky_cert_self_signed(key_b, "bob", "kyok administration", 30, &cert_b) != 0)
		return -1;
	if (ky_ec_generate(&anchor_key) != 0 || ky_ec_generate(&identity_key) != 0 ||
	    ky_ec_generate(&importer_key) != 0 ||
	    ky_cert_anchor_self_signed(anchor_key, "anchor", "inst-1", 30, &anchor) != 0 ||
	    ky_cert_issue_identity(identity_key, "unit-1", "inst-1", anchor, anchor_key, 30,
	                           &identity) != 0 ||
	    ky_cert_issue(importer_key, "unit-1 importer", "inst-1", identity, identity_key, 30,
	                  &importer) != 0)
		return -1;
	if (ky_random(mk, sizeof(mk)) != 0 || ky_vp(mk, mk_vp) != 0)
		return -1;
	if (ky_sigkey_create(sigkey_path, "alice", PW_SIGKEY) != 0)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(key_a);
	EVP_PKEY_free(key_b);
	EVP_PKEY_free(anchor_key);
	EVP_PKEY_free(identity_key);
	EVP_PKEY_free(importer_key);
	X509_free(cert_a);
	X509_free(cert_b);
	X509_free(anchor);
	X509_free(identity);
	X509_free(importer);
	(void)unlink(sigkey_path);
	(void)rmdir(tmpdir);
	return 0;
}

/* ---- hashes, AEAD, signatures, base64 ---- */

static bool case_vp(long n, long *failed)
{
	uint8_t vp[KY_VP_LEN] = {0};
	int r = FAULT_CALL(n, ky_vp(mk, vp));
	bool reached = fault_disarm();

	fault_result(r, failed);
	if (r == 0)
		assert_memory_equal(vp, mk_vp, KY_VP_LEN);
	return reached;
}

static bool case_hmac(long n, long *failed)
{
	static const char msg[] = "api key record";
	uint8_t mac[KY_HMAC_SHA256_LEN] = {0}, want[KY_HMAC_SHA256_LEN];
	int r;
	bool reached;

	assert_int_equal(ky_hmac_sha256(mk, sizeof(mk), msg, strlen(msg), want), 0);
	r = FAULT_CALL(n, ky_hmac_sha256(mk, sizeof(mk), msg, strlen(msg), mac));
	reached = fault_disarm();
	fault_result(r, failed);
	if (r == 0)
		assert_memory_equal(mac, want, sizeof(mac));
	return reached;
}

static bool case_aead_seal(long n, long *failed)
{
	static const char aad[] = "inst-1/key-7/v1", pt[] = "thirty-two bytes of key material";
	struct ky_buf sealed = {0}, opened = {0};
	int r = FAULT_CALL(n, ky_aead_seal(mk, aad, strlen(aad), pt, strlen(pt), &sealed));
	bool reached = fault_disarm();

	fault_result(r, failed);
	if (r == 0) {
		assert_int_equal(
		    ky_aead_open(mk, aad, strlen(aad), sealed.data, sealed.len, &opened), 0);
		assert_int_equal(opened.len, strlen(pt));
		assert_memory_equal(opened.data, pt, opened.len);
	} else {
		assert_int_equal(sealed.len, 0);
	}
	ky_buf_free(&sealed);
	ky_buf_free(&opened);
	return reached;
}

static bool case_aead_open(long n, long *failed)
{
	static const char aad[] = "inst-1/key-7/v1", pt[] = "thirty-two bytes of key material";
	struct ky_buf sealed = {0}, opened = {0};
	int r;
	bool reached;

	assert_int_equal(ky_aead_seal(mk, aad, strlen(aad), pt, strlen(pt), &sealed), 0);
	r = FAULT_CALL(n, ky_aead_open(mk, aad, strlen(aad), sealed.data, sealed.len, &opened));
	reached = fault_disarm();
	fault_result(r, failed);
	if (r == 0) {
		assert_int_equal(opened.len, strlen(pt));
		assert_memory_equal(opened.data, pt, opened.len);
	} else {
		assert_int_equal(opened.len, 0);
	}
	ky_buf_free(&sealed);
	ky_buf_free(&opened);
	return reached;
}

/* The cached GCM of gcm.c: each run starts with the thread's cache released, so that the run
 * makes the cache again (its contexts and key copies) under the fault. */
static const char gcm_aad1[] = "KYW1 header", gcm_aad2[] = "client aad",
                  gcm_pt[] = "thirty-two bytes of key material";
static const uint8_t gcm_iv[KY_GCM_IV_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

static bool case_gcm_seal(long n, long *failed)
{
	uint8_t ct[sizeof(gcm_pt)] = {0}, tag[KY_GCM_TAG_LEN] = {0}, back[sizeof(gcm_pt)];
	int r;
	bool reached;

	ky_gcm_thread_release();
	r = FAULT_CALL(n, ky_gcm_seal(mk, sizeof(mk), gcm_iv, (const uint8_t *)gcm_aad1,
	                              strlen(gcm_aad1), (const uint8_t *)gcm_aad2, strlen(gcm_aad2),
	                              (const uint8_t *)gcm_pt, sizeof(gcm_pt), ct, tag));
	reached = fault_disarm();
	fault_result(r, failed);
	if (r == 0) {
		ky_gcm_thread_release();
		assert_int_equal(ky_gcm_open(mk, sizeof(mk), gcm_iv, (const uint8_t *)gcm_aad1,
		                             strlen(gcm_aad1), (const uint8_t *)gcm_aad2,
		                             strlen(gcm_aad2), ct, sizeof(ct), tag, back),
		                 0);
		assert_memory_equal(back, gcm_pt, sizeof(gcm_pt));
	}
	return reached;
}

static bool case_gcm_open(long n, long *failed)
{
	uint8_t ct[sizeof(gcm_pt)], tag[KY_GCM_TAG_LEN], back[sizeof(gcm_pt)];
	int r;
	bool reached;

	assert_int_equal(ky_gcm_seal(mk, sizeof(mk), gcm_iv, (const uint8_t *)gcm_aad1,
	                             strlen(gcm_aad1), (const uint8_t *)gcm_aad2, strlen(gcm_aad2),
	                             (const uint8_t *)gcm_pt, sizeof(gcm_pt), ct, tag),
	                 0);
	ky_gcm_thread_release();
	memset(back, 0xA5, sizeof(back));
	r = FAULT_CALL(n, ky_gcm_open(mk, sizeof(mk), gcm_iv, (const uint8_t *)gcm_aad1,
	                              strlen(gcm_aad1), (const uint8_t *)gcm_aad2, strlen(gcm_aad2),
	                              ct, sizeof(ct), tag, back));
	reached = fault_disarm();
	fault_result(r, failed);
	if (r == 0) {
		assert_memory_equal(back, gcm_pt, sizeof(gcm_pt));
	} else {
		/* a failed open leaves no plaintext behind */
		for (size_t i = 0; i < sizeof(back); i++)
			assert_true(back[i] == 0 || back[i] == 0xA5);
		assert_int_equal(r, KY_ERR_CRYPTO);
	}
	return reached;
}

static bool case_sign(long n, long *failed)
{
	static const char msg[] = "reply body";
	struct ky_buf sig = {0};
	int r = FAULT_CALL(n, ky_sign(key_a, msg, strlen(msg), &sig));
	bool reached = fault_disarm();

	fault_result(r, failed);
	if (r == 0)
		assert_int_equal(ky_verify(key_a, msg, strlen(msg), sig.data, sig.len), 0);
	else
		assert_int_equal(sig.len, 0);
	ky_buf_free(&sig);
	return reached;
}

static bool case_verify(long n, long *failed)
{
	static const char msg[] = "reply body";
	struct ky_buf sig = {0};
	int r, bad;
	bool reached;

	assert_int_equal(ky_sign(key_a, msg, strlen(msg), &sig), 0);
	r = FAULT_CALL(n, ky_verify(key_a, msg, strlen(msg), sig.data, sig.len));
	reached = fault_disarm();
	fault_result(r, failed);
	/* A wrong signature must never pass, fault or not. */
	bad = FAULT_CALL(n, ky_verify(key_b, msg, strlen(msg), sig.data, sig.len));
	(void)fault_disarm();
	assert_int_not_equal(bad, 0);
	ky_buf_free(&sig);
	return reached;
}

/* ---- keys and certificates ---- */

static bool case_ec_generate(long n, long *failed)
{
	EVP_PKEY *pk = NULL;
	int r = FAULT_CALL(n, ky_ec_generate(&pk));
	bool reached = fault_disarm();

	fault_result(r, failed);
	if (r == 0)
		assert_true(ky_pkey_is_p521(pk));
	else
		assert_null(pk);
	EVP_PKEY_free(pk);
	return reached;
}

static bool case_ski(long n, long *failed)
{
	uint8_t ski[KY_SKI_LEN] = {0}, want[KY_SKI_LEN];
	int r;
	bool reached;

	assert_int_equal(ky_cert_ski(cert_a, want), 0);
	r = FAULT_CALL(n, ky_ski(key_a, ski));
	reached = fault_disarm();
	fault_result(r, failed);
	if (r == 0)
		assert_memory_equal(ski, want, KY_SKI_LEN);
	return reached;
}

static bool case_cert_cn(long n, long *failed)
{
	char cn[64] = "";
	int r = FAULT_CALL(n, ky_cert_cn(cert_a, cn, sizeof(cn)));
	bool reached = fault_disarm();

	fault_result(r, failed);
	if (r == 0)
		assert_string_equal(cn, "alice");
	return reached;
}

static bool case_cert_self_signed(long n, long *failed)
{
	X509 *x = NULL;
	char cn[64] = "";
	int r = FAULT_CALL(n, ky_cert_self_signed(key_a, "alice", "kyok administration", 30, &x));
	bool reached = fault_disarm();

	fault_result(r, failed);
	if (r == 0) {
		assert_int_equal(ky_admin_cert_check(x), 0);
		assert_int_equal(ky_cert_cn(x, cn, sizeof(cn)), 0);
		assert_string_equal(cn, "alice");
	} else {
		assert_null(x);
	}
	X509_free(x);
	return reached;
}

static bool case_cert_issue(long n, long *failed)
{
	X509 *x = NULL;
	int r = FAULT_CALL(
	    n, ky_cert_issue(key_b, "unit-1 importer", "inst-1", identity, identity_key, 30, &x));
	bool reached = fault_disarm();

	fault_result(r, failed);
	if (r == 0) {
		assert_int_equal(ky_cert_verify_by(x, identity_key), 0);
		assert_int_equal(ky_cert_chain_verify(x, identity, anchor), 0);
	} else {
		assert_null(x);
	}
	X509_free(x);
	return reached;
}

static bool case_cert_issue_identity(long n, long *failed)
{
	X509 *x = NULL;
	int r = FAULT_CALL(
	    n, ky_cert_issue_identity(key_b, "unit-2", "inst-1", anchor, anchor_key, 30, &x));
	bool reached = fault_disarm();

	fault_result(r, failed);
	if (r == 0)
		assert_int_equal(ky_cert_chain_verify(x, NULL, anchor), 0);
	else
		assert_null(x);
	X509_free(x);
	return reached;
}

static bool case_admin_cert_check(long n, long *failed)
{
	int r = FAULT_CALL(n, ky_admin_cert_check(cert_a));
	bool reached = fault_disarm();

	fault_result(r, failed);
	return reached;
}

static bool case_cert_verify_by(long n, long *failed)
{
	int r = FAULT_CALL(n, ky_cert_verify_by(cert_a, key_a));
	bool reached = fault_disarm();
	int bad;

	fault_result(r, failed);
	bad = FAULT_CALL(n, ky_cert_verify_by(cert_a, key_b));
	(void)fault_disarm();
	assert_int_not_equal(bad, 0);
	return reached;
}

static bool case_chain_verify(long n, long *failed)
{
	int r = FAULT_CALL(n, ky_cert_chain_verify(importer, identity, anchor));
	bool reached = fault_disarm();
	int bad;

	fault_result(r, failed);
	/* An importer certificate that does not chain to the anchor never passes. */
	bad = FAULT_CALL(n, ky_cert_chain_verify(cert_a, identity, anchor));
	(void)fault_disarm();
	assert_int_not_equal(bad, 0);
	return reached;
}

static bool case_fingerprint(long n, long *failed)
{
	char fp[65] = "", want[65];
	int r;
	bool reached;

	assert_int_equal(ky_pubkey_fingerprint(key_a, want), 0);
	r = FAULT_CALL(n, ky_pubkey_fingerprint(key_a, fp));
	reached = fault_disarm();
	fault_result(r, failed);
	if (r == 0)
		assert_string_equal(fp, want);
	return reached;
}

static bool case_cert_pem(long n, long *failed)
{
	char *pem = NULL;
	X509 *back = NULL;
	int r = FAULT_CALL(n, ky_cert_to_pem(cert_a, &pem));
	bool reached = fault_disarm();

	fault_result(r, failed);
	if (r == 0) {
		assert_int_equal(ky_cert_from_pem(pem, &back), 0);
		assert_int_equal(X509_cmp(back, cert_a), 0);
		X509_free(back);
		back = NULL;
		r = FAULT_CALL(n, ky_cert_from_pem(pem, &back));
		(void)fault_disarm();
		fault_result(r, failed);
		if (r == 0)
			assert_int_equal(X509_cmp(back, cert_a), 0);
		else
			assert_null(back);
	} else {
		assert_null(pem);
	}
	X509_free(back);
	free(pem);
	return reached;
}

static bool case_pkey_der(long n, long *failed)
{
	struct ky_buf der = {0};
	EVP_PKEY *back = NULL;
	int r = FAULT_CALL(n, ky_pkey_to_der(key_a, &der));
	bool reached = fault_disarm();

	fault_result(r, failed);
	if (r == 0) {
		r = FAULT_CALL(n, ky_pkey_from_der(der.data, der.len, &back));
		(void)fault_disarm();
		fault_result(r, failed);
		if (r == 0)
			assert_int_equal(EVP_PKEY_eq(back, key_a), 1);
		else
			assert_null(back);
	} else {
		assert_int_equal(der.len, 0);
	}
	EVP_PKEY_free(back);
	ky_buf_free(&der);
	return reached;
}

static bool case_csr(long n, long *failed)
{
	char *pem = NULL, cn[KY_ID_MAX + 1] = "", ou[KY_ID_MAX + 1] = "";
	EVP_PKEY *pub = NULL;
	int r = FAULT_CALL(n, ky_csr_create(key_b, "unit-2", "inst-1", &pem));
	bool reached = fault_disarm();

	fault_result(r, failed);
	if (r == 0) {
		r = FAULT_CALL(n, ky_csr_read(pem, &pub, cn, ou));
		(void)fault_disarm();
		fault_result(r, failed);
		if (r == 0) {
			assert_int_equal(EVP_PKEY_eq(pub, key_b), 1);
			assert_string_equal(cn, "unit-2");
			assert_string_equal(ou, "inst-1");
		} else {
			assert_null(pub);
		}
	} else {
		assert_null(pem);
	}
	EVP_PKEY_free(pub);
	free(pem);
	return reached;
}

/* ---- signature key files ---- */

static bool case_sigkey_read_cert(long n, long *failed)
{
	X509 *x = NULL;
	char cn[64] = "";
	int r = FAULT_CALL(n, ky_sigkey_read_cert(sigkey_path, &x));
	bool reached = fault_disarm();

	fault_result(r, failed);
	if (r == 0) {
		assert_int_equal(ky_cert_cn(x, cn, sizeof(cn)), 0);
		assert_string_equal(cn, "alice");
	} else {
		assert_null(x);
	}
	X509_free(x);
	return reached;
}

/* ---- CMS: signed commands; token parts ---- */

static const char cmd_content[] = "{\"op\":\"mk-load\",\"unit\":\"unit-1\"}";

static bool cms_signed_ok(const struct ky_buf *der, size_t nsigners)
{
	struct ky_cms_signed *sd = NULL;
	const uint8_t *c;
	size_t len;
	bool ok;

	if (ky_cms_signed_parse(der->data, der->len, &sd) != 0)
		return false;
	c = ky_cms_signed_content(sd, &len);
	/* SignerInfos are a DER SET OF: their order is that of their encodings, not of signing. */
	ok = len == strlen(cmd_content) && memcmp(c, cmd_content, len) == 0 &&
	     ky_cms_signed_nsigners(sd) == nsigners &&
	     (nsigners == 1 ? ky_cms_signed_verify(sd, 0, key_a) == 0
	                    : (ky_cms_signed_verify(sd, 0, key_a) == 0 &&
	                       ky_cms_signed_verify(sd, 1, key_b) == 0) ||
	                          (ky_cms_signed_verify(sd, 0, key_b) == 0 &&
	                           ky_cms_signed_verify(sd, 1, key_a) == 0));
	ky_cms_signed_free(sd);
	return ok;
}

static bool case_cms_unsigned(long n, long *failed)
{
	struct ky_buf der = {0}, content = {0};
	struct ky_cms_signer *signers = NULL;
	size_t nsigners = 1;
	int r = FAULT_CALL(n, ky_cms_unsigned(cmd_content, strlen(cmd_content), &der));
	bool reached = fault_disarm();

	fault_result(r, failed);
	if (r == 0) {
		assert_int_equal(ky_cms_parse(der.data, der.len, &content, &signers, &nsigners), 0);
		assert_int_equal(nsigners, 0);
		assert_int_equal(content.len, strlen(cmd_content));
		assert_memory_equal(content.data, cmd_content, content.len);
	} else {
		assert_int_equal(der.len, 0);
	}
	free(signers);
	ky_buf_free(&content);
	ky_buf_free(&der);
	return reached;
}

static bool case_cms_add_signer(long n, long *failed)
{
	struct ky_buf der = {0}, before = {0};
	int r;
	bool reached;

	assert_int_equal(ky_cms_unsigned(cmd_content, strlen(cmd_content), &der), 0);
	assert_int_equal(ky_cms_add_signer(&der, cert_a, key_a), 0);
	assert_int_equal(ky_buf_append(&before, der.data, der.len), 0);
	r = FAULT_CALL(n, ky_cms_add_signer(&der, cert_b, key_b));
	reached = fault_disarm();
	fault_result(r, failed);
	if (r == 0) {
		assert_true(cms_signed_ok(&der, 2));
	} else {
		/* A failed add leaves the command as it was. */
		assert_int_equal(der.len, before.len);
		assert_memory_equal(der.data, before.data, der.len);
	}
	ky_buf_free(&der);
	ky_buf_free(&before);
	return reached;
}

static int ext_sign(void *arg, const uint8_t *md, size_t mdlen, struct ky_buf *sig)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new((EVP_PKEY *)arg, NULL);
	uint8_t buf[256];
	size_t len = sizeof(buf);
	int r = KY_ERR_INTERNAL;

	if (ctx == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (EVP_PKEY_sign_init(ctx) != 1 || EVP_PKEY_sign(ctx, buf, &len, md, mdlen) != 1 ||
	    len > sizeof(buf)) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ky_buf_append(sig, buf, len)) != 0)
		goto out;
	r = 0;
out:
	EVP_PKEY_CTX_free(ctx);
	return r;
}

static bool case_cms_add_signer_ext(long n, long *failed)
{
	struct ky_ext_signer s = {.pub = key_a, .sign = ext_sign, .arg = key_a};
	struct ky_buf der = {0};
	int r;
	bool reached;

	assert_int_equal(ky_cms_unsigned(cmd_content, strlen(cmd_content), &der), 0);
	r = FAULT_CALL(n, ky_cms_add_signer_ext(&der, cert_a, &s));
	reached = fault_disarm();
	fault_result(r, failed);
	if (r == 0)
		assert_true(cms_signed_ok(&der, 1));
	ky_buf_free(&der);
	return reached;
}

static bool case_cms_verify(long n, long *failed)
{
	struct ky_buf der = {0};
	struct ky_cms_signed *sd = NULL;
	int r, v = 0, bad = 0;
	bool reached;

	assert_int_equal(ky_cms_unsigned(cmd_content, strlen(cmd_content), &der), 0);
	assert_int_equal(ky_cms_add_signer(&der, cert_a, key_a), 0);
	fault_arm(n);
	r = ky_cms_signed_parse(der.data, der.len, &sd);
	if (r == 0) {
		v = ky_cms_signed_verify(sd, 0, key_a);
		/* The wrong key never verifies, fault or not. */
		bad = ky_cms_signed_verify(sd, 0, key_b);
	}
	reached = fault_disarm();
	fault_result(r, failed);
	if (r == 0) {
		fault_result(v, failed);
		assert_int_not_equal(bad, 0);
	} else {
		assert_null(sd);
	}
	ky_cms_signed_free(sd);
	ky_buf_free(&der);
	return reached;
}

static bool case_token_part_seal(long n, long *failed)
{
	struct ky_buf der = {0};
	uint8_t out[KY_MK_LEN] = {0};
	int r = FAULT_CALL(n, ky_token_part_seal(mk, importer, &der));
	bool reached = fault_disarm();

	fault_result(r, failed);
	if (r == 0) {
		assert_true(ky_token_part_is(der.data, der.len));
		assert_int_equal(ky_token_part_open(der.data, der.len, importer_key, importer, out),
		                 0);
		assert_memory_equal(out, mk, KY_MK_LEN);
	} else {
		assert_int_equal(der.len, 0);
	}
	ky_buf_free(&der);
	return reached;
}

static bool case_token_part_open(long n, long *failed)
{
	struct ky_buf der = {0};
	uint8_t out[KY_MK_LEN] = {0};
	int r;
	bool reached;

	assert_int_equal(ky_token_part_seal(mk, importer, &der), 0);
	r = FAULT_CALL(n, ky_token_part_open(der.data, der.len, importer_key, importer, out));
	reached = fault_disarm();
	fault_result(r, failed);
	if (r == 0)
		assert_memory_equal(out, mk, KY_MK_LEN);
	ky_buf_free(&der);
	return reached;
}

/* ---- the sweeps ---- */

#define SWEEP(name)                              \
	static void test_##name(void **state)    \
	{                                        \
		(void)state;                     \
		fault_sweep(#name, case_##name); \
	}
SWEEP(vp)
SWEEP(hmac)
SWEEP(aead_seal)
SWEEP(aead_open)
SWEEP(gcm_seal)
SWEEP(gcm_open)
SWEEP(sign)
SWEEP(verify)
SWEEP(ec_generate)
SWEEP(ski)
SWEEP(cert_cn)
SWEEP(cert_self_signed)
SWEEP(cert_issue)
SWEEP(cert_issue_identity)
SWEEP(admin_cert_check)
SWEEP(cert_verify_by)
SWEEP(chain_verify)
SWEEP(fingerprint)
SWEEP(cert_pem)
SWEEP(pkey_der)
SWEEP(csr)
SWEEP(sigkey_read_cert)
SWEEP(cms_unsigned)
SWEEP(cms_add_signer)
SWEEP(cms_add_signer_ext)
SWEEP(cms_verify)
SWEEP(token_part_seal)
SWEEP(token_part_open)

int main(void)
{
	/* Before any OpenSSL call: the hook can only be set while nothing was allocated yet. */
	if (CRYPTO_set_mem_functions(fault_malloc, fault_realloc, fault_free) != 1) {
		fprintf(stderr, "cannot set OpenSSL's allocator\n");
		return 1;
	}
	fault_sparse =
	    getenv("KYOK_FAULT_SPARSE") != NULL && strcmp(getenv("KYOK_FAULT_SPARSE"), "1") == 0;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_vp),
	    cmocka_unit_test(test_hmac),
	    cmocka_unit_test(test_aead_seal),
	    cmocka_unit_test(test_aead_open),
	    cmocka_unit_test(test_gcm_seal),
	    cmocka_unit_test(test_gcm_open),
	    cmocka_unit_test(test_sign),
	    cmocka_unit_test(test_verify),
	    cmocka_unit_test(test_ec_generate),
	    cmocka_unit_test(test_ski),
	    cmocka_unit_test(test_cert_cn),
	    cmocka_unit_test(test_cert_self_signed),
	    cmocka_unit_test(test_cert_issue),
	    cmocka_unit_test(test_cert_issue_identity),
	    cmocka_unit_test(test_admin_cert_check),
	    cmocka_unit_test(test_cert_verify_by),
	    cmocka_unit_test(test_chain_verify),
	    cmocka_unit_test(test_fingerprint),
	    cmocka_unit_test(test_cert_pem),
	    cmocka_unit_test(test_pkey_der),
	    cmocka_unit_test(test_csr),
	    cmocka_unit_test(test_sigkey_read_cert),
	    cmocka_unit_test(test_cms_unsigned),
	    cmocka_unit_test(test_cms_add_signer),
	    cmocka_unit_test(test_cms_add_signer_ext),
	    cmocka_unit_test(test_cms_verify),
	    cmocka_unit_test(test_token_part_seal),
	    cmocka_unit_test(test_token_part_open),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
