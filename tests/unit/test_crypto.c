/* Unit tests of lib/crypto: every refusal is tripped by a real negative case. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the four headers above first */
#include <cmocka.h>

#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kyok/crypto.h"
#include "kyok/err.h"

#define PW_ALICE "alice password"
#define PW_BOB   "bob password"
#define PW_PART  "part password 1"

/* Shared across the tests: made once, since scrypt makes every key file cost. */
static char tmpdir[256];
static char alice_path[300], bob_path[300];
static X509 *alice_cert, *bob_cert;
static EVP_PKEY *alice_key, *bob_key;

static void path_in_tmp(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", tmpdir, name);
}

static void file_put(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, n, f), n);
	assert_int_equal(fclose(f), 0);
}

static void file_get(const char *path, struct ky_buf *b)
{
	*b = (struct ky_buf){0};
	assert_int_equal(ky_file_read(path, 1 << 20, b), 0);
}

static int group_setup(void **state)
{
	(void)state;
	if (ky_crypto_init() != 0)
		return -1;
	snprintf(tmpdir, sizeof(tmpdir), "%s/kyok-test-crypto-XXXXXX",
	         getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	path_in_tmp(alice_path, sizeof(alice_path), "alice.sigkey");
	path_in_tmp(bob_path, sizeof(bob_path), "bob.sigkey");
	if (ky_sigkey_create(alice_path, "alice", PW_ALICE) != 0 ||
	    ky_sigkey_create(bob_path, "bob", PW_BOB) != 0)
		return -1;
	if (ky_sigkey_open(alice_path, PW_ALICE, &alice_cert, &alice_key) != 0 ||
	    ky_sigkey_open(bob_path, PW_BOB, &bob_cert, &bob_key) != 0)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	char cmd[400];

	(void)state;
	X509_free(alice_cert);
	X509_free(bob_cert);
	EVP_PKEY_free(alice_key);
	EVP_PKEY_free(bob_key);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- primitives ---- */

static void test_random_and_secrets(void **state)
{
	uint8_t a[32] = {0}, b[32] = {0}, zero[32] = {0};
	uint8_t *s;

	(void)state;
	assert_int_equal(ky_random(a, sizeof(a)), 0);
	assert_int_equal(ky_random(b, sizeof(b)), 0);
	assert_memory_not_equal(a, zero, sizeof(a));
	assert_memory_not_equal(a, b, sizeof(a));
	assert_int_equal(ky_random(a, 0), 0);

	s = ky_secret_alloc(64);
	assert_non_null(s);
	assert_memory_equal(s, zero, 32); /* zeroed */
	memset(s, 0xaa, 64);
	ky_secret_free(s, 64);
	ky_secret_free(NULL, 64);
}

static void test_vp(void **state)
{
	/* SHA-256(0x01 || 00 01 .. 1f), as computed by `openssl dgst -sha256`. */
	static const char want[] =
	    "491176b0f443c65a7c7d72df47d6cbc0d04e111fb5a619f60d3e77677ab6f919";
	uint8_t key[KY_MK_LEN], vp[KY_VP_LEN], vp2[KY_VP_LEN];
	char hex[2 * KY_VP_LEN + 1];

	(void)state;
	for (int i = 0; i < KY_MK_LEN; i++)
		key[i] = (uint8_t)i;
	assert_int_equal(ky_vp(key, vp), 0);
	ky_hex_encode(vp, sizeof(vp), hex);
	assert_string_equal(hex, want);
	key[31] ^= 1;
	assert_int_equal(ky_vp(key, vp2), 0);
	assert_memory_not_equal(vp, vp2, KY_VP_LEN);
}

static void test_hmac_sha256(void **state)
{
	/* RFC 4231, test case 2. */
	static const char key[] = "Jefe", msg[] = "what do ya want for nothing?";
	static const char want[] =
	    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
	uint8_t mac[KY_HMAC_SHA256_LEN], mac2[KY_HMAC_SHA256_LEN];
	char hex[2 * KY_HMAC_SHA256_LEN + 1];

	(void)state;
	assert_int_equal(ky_hmac_sha256((const uint8_t *)key, strlen(key), msg, strlen(msg), mac),
	                 0);
	ky_hex_encode(mac, sizeof(mac), hex);
	assert_string_equal(hex, want);
	assert_int_equal(
	    ky_hmac_sha256((const uint8_t *)key, strlen(key), msg, strlen(msg) - 1, mac2), 0);
	assert_memory_not_equal(mac, mac2, sizeof(mac));
}

static void test_ec_ski(void **state)
{
	EVP_PKEY *pk = NULL, *p256 = NULL;
	uint8_t ski[KY_SKI_LEN], want[KY_SKI_LEN], point[200];
	size_t len = 0;

	(void)state;
	assert_int_equal(ky_ec_generate(&pk), 0);
	assert_true(EVP_PKEY_is_a(pk, "EC"));
	assert_int_equal(EVP_PKEY_get_bits(pk), 521);
	assert_int_equal(ky_ski(pk, ski), 0);
	/* Independently: SHA-256 of the encoded (uncompressed) public point. */
	assert_int_equal(EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY,
	                                                 point, sizeof(point), &len),
	                 1);
	assert_int_equal(len, 133);
	assert_int_equal(point[0], 0x04);
	assert_int_equal(EVP_Digest(point, len, want, NULL, EVP_sha256(), NULL), 1);
	assert_memory_equal(ski, want, KY_SKI_LEN);

	/* Negative: not a P-521 key. */
	p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	assert_non_null(p256);
	assert_int_not_equal(ky_ski(p256, ski), 0);
	EVP_PKEY_free(p256);
	EVP_PKEY_free(pk);
}

static void test_cert_self_signed(void **state)
{
	EVP_PKEY *pk = NULL;
	X509 *cert = NULL;
	uint8_t ski[KY_SKI_LEN], want[KY_SKI_LEN];
	char cn[32];

	(void)state;
	assert_int_equal(ky_ec_generate(&pk), 0);
	assert_int_equal(ky_cert_self_signed(pk, "carol", "kyok administration", 3650, &cert), 0);
	assert_int_equal(ky_cert_cn(cert, cn, sizeof(cn)), 0);
	assert_string_equal(cn, "carol");
	assert_int_equal(ky_cert_ski(cert, ski), 0);
	assert_int_equal(ky_ski(pk, want), 0);
	assert_memory_equal(ski, want, KY_SKI_LEN);
	assert_int_equal(ky_admin_cert_check(cert), 0);
	assert_int_equal(X509_get_version(cert), X509_VERSION_3);
	assert_int_equal(ASN1_STRING_length(X509_get0_serialNumber(cert)), 16);
	/* CN buffer too small for "carol". */
	assert_int_equal(ky_cert_cn(cert, cn, 5), KY_ERR_BAD_CERT);
	assert_int_equal(ky_cert_verify_by(cert, pk), 0);
	X509_free(cert);
	cert = NULL;

	/* Refusals: bad admin names. */
	assert_int_equal(
	    ky_cert_self_signed(pk, "abcdefghijabcdefghijabcdefghijX", "ou", 10, &cert), 0);
	assert_int_equal(ky_admin_cert_check(cert), KY_ERR_ADMIN_NAME);
	X509_free(cert);
	assert_int_equal(ky_cert_self_signed(pk, "tab\tname", "ou", 10, &cert), 0);
	assert_int_equal(ky_admin_cert_check(cert), KY_ERR_ADMIN_NAME);
	X509_free(cert);
	cert = NULL;
	assert_int_not_equal(ky_cert_self_signed(pk, "", "ou", 10, &cert), 0);
	assert_null(cert);
	EVP_PKEY_free(pk);
}

/* Edits a certificate's DER: replaces the first occurrence of from by to (same length). */
static X509 *cert_patched(X509 *cert, const char *from, const char *to)
{
	unsigned char *der = NULL, *hit;
	const unsigned char *p;
	int len = i2d_X509(cert, &der);
	X509 *x;

	assert_true(len > 0);
	hit = memmem(der, (size_t)len, from, strlen(from));
	assert_non_null(hit);
	memcpy(hit, to, strlen(to));
	p = der;
	x = d2i_X509(NULL, &p, len);
	assert_non_null(x);
	OPENSSL_free(der);
	return x;
}

static void test_admin_cert_refusals(void **state)
{
	EVP_PKEY *pk = NULL, *other = NULL, *p256 = NULL;
	X509 *cert = NULL, *x = NULL;
	uint8_t ski[KY_SKI_LEN];
	X509_NAME *name;
	char cn[64];
	ASN1_OCTET_STRING *os;

	(void)state;
	assert_int_equal(ky_ec_generate(&pk), 0);
	assert_int_equal(ky_ec_generate(&other), 0);
	assert_int_equal(ky_cert_self_signed(pk, "dave", "kyok administration", 30, &cert), 0);

	/* Edited subject: the self-signature no longer verifies. */
	x = cert_patched(cert, "dave", "davf");
	assert_int_equal(ky_admin_cert_check(x), KY_ERR_BAD_CERT);
	X509_free(x);

	/* Issued by another key: not self-signed. */
	assert_int_equal(
	    ky_cert_issue(pk, "dave", "kyok administration", alice_cert, alice_key, 30, &x), 0);
	assert_int_equal(ky_admin_cert_check(x), KY_ERR_BAD_CERT);
	assert_int_equal(ky_cert_verify_by(x, X509_get0_pubkey(alice_cert)), 0);
	assert_int_equal(ky_cert_verify_by(x, pk), KY_ERR_BAD_SIGNATURE);
	X509_free(x);

	/* Self-signed, right key, but the SKI names another key. */
	x = X509_dup(cert);
	assert_non_null(x);
	X509_EXTENSION_free(
	    X509_delete_ext(x, X509_get_ext_by_NID(x, NID_subject_key_identifier, -1)));
	assert_int_equal(ky_ski(other, ski), 0);
	os = ASN1_OCTET_STRING_new();
	assert_int_equal(ASN1_OCTET_STRING_set(os, ski, sizeof(ski)), 1);
	assert_int_equal(X509_add1_ext_i2d(x, NID_subject_key_identifier, os, 0, 0), 1);
	ASN1_OCTET_STRING_free(os);
	assert_true(X509_sign(x, pk, EVP_sha512()) > 0);
	assert_int_equal(ky_admin_cert_check(x), KY_ERR_BAD_CERT);
	X509_free(x);

	/* No SKI at all, and no CN at all. */
	x = X509_new();
	assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
	name = X509_NAME_new();
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
	                                            (const unsigned char *)"org", -1, -1, 0),
	                 1);
	assert_int_equal(X509_set_subject_name(x, name), 1);
	assert_int_equal(X509_set_issuer_name(x, name), 1);
	X509_NAME_free(name);
	assert_int_equal(X509_set_pubkey(x, pk), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 60);
	assert_true(X509_sign(x, pk, EVP_sha512()) > 0);
	assert_int_equal(ky_cert_ski(x, ski), KY_ERR_BAD_CERT);
	assert_int_equal(ky_cert_cn(x, cn, sizeof(cn)), KY_ERR_BAD_CERT);
	assert_int_equal(ky_admin_cert_check(x), KY_ERR_BAD_CERT);

	/* A P-256 key, self-signed, with a 32-byte SKI: refused for the curve. */
	p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	assert_non_null(p256);
	assert_int_equal(X509_set_pubkey(x, p256), 1);
	os = ASN1_OCTET_STRING_new();
	assert_int_equal(ASN1_OCTET_STRING_set(os, ski, sizeof(ski)), 1);
	assert_int_equal(X509_add1_ext_i2d(x, NID_subject_key_identifier, os, 0, 0), 1);
	ASN1_OCTET_STRING_free(os);
	assert_true(X509_sign(x, p256, EVP_sha512()) > 0);
	assert_int_equal(ky_cert_ski(x, ski), 0);
	assert_int_equal(ky_admin_cert_check(x), KY_ERR_BAD_CERT);
	X509_free(x);

	/* Issuing with a key that is not the issuer certificate's key. */
	x = NULL;
	assert_int_equal(ky_cert_issue(pk, "e", "ou", alice_cert, bob_key, 30, &x),
	                 KY_ERR_BAD_CERT);
	assert_null(x);

	EVP_PKEY_free(p256);
	X509_free(cert);
	EVP_PKEY_free(pk);
	EVP_PKEY_free(other);
}

static void test_pem_der(void **state)
{
	char *pem = NULL;
	X509 *x = NULL;
	EVP_PKEY *pk = NULL;
	struct ky_buf der = {0};
	char fp1[65], fp2[65];

	(void)state;
	assert_int_equal(ky_cert_to_pem(alice_cert, &pem), 0);
	assert_non_null(strstr(pem, "-----BEGIN CERTIFICATE-----"));
	assert_int_equal(ky_cert_from_pem(pem, &x), 0);
	assert_int_equal(X509_cmp(x, alice_cert), 0);
	X509_free(x);
	x = NULL;
	assert_int_equal(ky_cert_from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n", &x),
	                 KY_ERR_MALFORMED);
	assert_int_equal(ky_cert_from_pem("not pem", &x), KY_ERR_MALFORMED);
	assert_null(x);
	free(pem);

	assert_int_equal(ky_pkey_to_der(alice_key, &der), 0);
	assert_int_equal(ky_pkey_from_der(der.data, der.len, &pk), 0);
	assert_int_equal(EVP_PKEY_eq(pk, alice_key), 1);
	EVP_PKEY_free(pk);
	pk = NULL;
	/* Trailing byte, truncation, garbage. */
	assert_int_equal(ky_buf_append(&der, "", 1), 0);
	assert_int_equal(ky_pkey_from_der(der.data, der.len, &pk), KY_ERR_MALFORMED);
	assert_int_equal(ky_pkey_from_der(der.data, der.len - 10, &pk), KY_ERR_MALFORMED);
	assert_int_equal(ky_pkey_from_der((const uint8_t *)"garbage", 7, &pk), KY_ERR_MALFORMED);
	assert_int_equal(ky_pkey_from_der(der.data, 0, &pk), KY_ERR_MALFORMED);
	assert_null(pk);
	ky_buf_free(&der);

	/* Fingerprint: same for the key and its certificate, different for another key. */
	assert_int_equal(ky_pubkey_fingerprint(alice_key, fp1), 0);
	assert_int_equal(ky_pubkey_fingerprint(X509_get0_pubkey(alice_cert), fp2), 0);
	assert_string_equal(fp1, fp2);
	assert_int_equal(strlen(fp1), 64);
	assert_int_equal(ky_pubkey_fingerprint(bob_key, fp2), 0);
	assert_string_not_equal(fp1, fp2);
}

static void test_sign_verify(void **state)
{
	static const char msg[] = "message to sign";
	struct ky_buf sig = {0};
	EVP_PKEY *pub = X509_get0_pubkey(alice_cert);

	(void)state;
	assert_int_equal(ky_sign(alice_key, msg, sizeof(msg), &sig), 0);
	assert_int_equal(ky_verify(pub, msg, sizeof(msg), sig.data, sig.len), 0);
	/* Other message, other key, damaged signature, empty signature. */
	assert_int_equal(ky_verify(pub, msg, sizeof(msg) - 1, sig.data, sig.len),
	                 KY_ERR_BAD_SIGNATURE);
	assert_int_equal(ky_verify(X509_get0_pubkey(bob_cert), msg, sizeof(msg), sig.data, sig.len),
	                 KY_ERR_BAD_SIGNATURE);
	sig.data[sig.len / 2] ^= 0x01;
	assert_int_equal(ky_verify(pub, msg, sizeof(msg), sig.data, sig.len), KY_ERR_BAD_SIGNATURE);
	assert_int_equal(ky_verify(pub, msg, sizeof(msg), sig.data, 0), KY_ERR_BAD_SIGNATURE);
	ky_buf_free(&sig);
	/* Errors are translated, not left queued. */
	assert_int_equal(ERR_peek_error(), 0);
}

static void test_b64(void **state)
{
	static const struct {
		const char *plain, *b64;
	} v[] = {{"", ""},
	         {"f", "Zg=="},
	         {"fo", "Zm8="},
	         {"foo", "Zm9v"},
	         {"foob", "Zm9vYg=="},
	         {"fooba", "Zm9vYmE="},
	         {"foobar", "Zm9vYmFy"}};
	static const char *bad[] = {"Zm9",  "Zm 9v",    "Zm9v\n", "Z===", "=Zm9",
	                            "Zm=v", "Zm9v====", "Zg=\n",  "Zm9*", "Zm9v Zm9v"};
	char *s = NULL;
	struct ky_buf b = {0};

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		assert_int_equal(ky_b64_encode((const uint8_t *)v[i].plain, strlen(v[i].plain), &s),
		                 0);
		assert_string_equal(s, v[i].b64);
		free(s);
		assert_int_equal(ky_b64_decode(v[i].b64, &b), 0);
		assert_int_equal(b.len, strlen(v[i].plain));
		if (b.len)
			assert_memory_equal(b.data, v[i].plain, b.len);
		ky_buf_free(&b);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(ky_b64_decode(bad[i], &b), KY_ERR_MALFORMED);
		assert_int_equal(b.len, 0);
	}
	assert_int_equal(ky_b64_decode(NULL, &b), KY_ERR_MALFORMED);
}

/* ---- signature key files ---- */

static void test_sigkey_create_refusals(void **state)
{
	char path[300];

	(void)state;
	path_in_tmp(path, sizeof(path), "refused.sigkey");
	assert_int_equal(ky_sigkey_create(path, "erin", "short"), KY_ERR_WEAK_PASSWORD);
	assert_int_equal(ky_sigkey_create(path, "erin", "1234567"), KY_ERR_WEAK_PASSWORD);
	assert_int_equal(ky_sigkey_create(path, "", PW_ALICE), KY_ERR_ADMIN_NAME);
	assert_int_equal(ky_sigkey_create(path, "abcdefghijabcdefghijabcdefghijX", PW_ALICE),
	                 KY_ERR_ADMIN_NAME);
	assert_int_equal(ky_sigkey_create(path, "new\nline", PW_ALICE), KY_ERR_ADMIN_NAME);
	assert_int_equal(access(path, F_OK), -1); /* nothing written */
	assert_int_equal(ky_sigkey_create(alice_path, "alice", PW_ALICE), KY_ERR_EXISTS);
}

static void test_sigkey_files(void **state)
{
	struct stat st;
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	char cn[32];
	BIO *bio;
	EVP_PKEY *pk;

	(void)state;
	assert_int_equal(stat(alice_path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);

	/* Independent reading with OpenSSL: the certificate, then the scrypt PKCS#8 key. */
	bio = BIO_new_file(alice_path, "r");
	assert_non_null(bio);
	cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	assert_non_null(cert);
	pk = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)PW_ALICE);
	assert_non_null(pk);
	assert_int_equal(EVP_PKEY_eq(pk, alice_key), 1);
	EVP_PKEY_free(pk);
	BIO_free(bio);
	assert_int_equal(X509_cmp(cert, alice_cert), 0);
	X509_free(cert);
	cert = NULL;

	assert_int_equal(ky_sigkey_read_cert(alice_path, &cert), 0);
	assert_int_equal(ky_cert_cn(cert, cn, sizeof(cn)), 0);
	assert_string_equal(cn, "alice");
	X509_free(cert);
	cert = NULL;
	assert_int_equal(EVP_PKEY_eq(alice_key, X509_get0_pubkey(alice_cert)), 1);

	assert_int_equal(ky_sigkey_open(alice_path, PW_BOB, &cert, &key), KY_ERR_WRONG_PASSWORD);
	assert_int_equal(ky_sigkey_open(alice_path, "", &cert, &key), KY_ERR_WRONG_PASSWORD);
	assert_null(cert);
	assert_null(key);
	assert_int_equal(ERR_peek_error(), 0);
}

/* Removes the first line starting with prefix from the file text in b (in place). */
static void text_drop_line(struct ky_buf *b, const char *prefix)
{
	char *at = memmem(b->data, b->len, prefix, strlen(prefix));
	char *nl;

	assert_non_null(at);
	nl = memchr(at, '\n', b->len - (size_t)((uint8_t *)at - b->data));
	assert_non_null(nl);
	memmove(at, nl + 1, b->len - (size_t)((uint8_t *)nl + 1 - b->data));
	b->len -= (size_t)(nl + 1 - at);
}

/* A damaged encrypted key block is told apart from a wrong password by the checksum line;
 * files without the line (older ones, or made with openssl alone) still open. */
static void test_sigkey_damaged_block(void **state)
{
	char path[300];
	struct ky_buf f = {0}, g = {0};
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	char *end, *line;
	int r;

	(void)state;
	path_in_tmp(path, sizeof(path), "damaged.sigkey");
	file_get(alice_path, &f);
	assert_non_null(memmem(f.data, f.len, "\nkyok-key-block-sha256: ", 24));
	/* one base64 digit changed, two lines above the end of the key block */
	end = memmem(f.data, f.len, "-----END ENCRYPTED PRIVATE KEY-----", 35);
	assert_non_null(end);
	line = end - 2;
	while (*line != '\n')
		line--;
	line--;
	while (*line != '\n')
		line--;
	line += 11;
	*line = *line == 'A' ? 'B' : 'A';
	file_put(path, f.data, f.len);
	assert_int_equal(ky_sigkey_open(path, PW_ALICE, &cert, &key), KY_ERR_KEY_BLOCK_DAMAGED);
	assert_int_equal(ky_sigkey_open(path, PW_BOB, &cert, &key), KY_ERR_KEY_BLOCK_DAMAGED);
	assert_null(key);
	/* without the checksum line, the damage cannot be named */
	text_drop_line(&f, "kyok-key-block-sha256: ");
	file_put(path, f.data, f.len);
	r = ky_sigkey_open(path, PW_ALICE, &cert, &key);
	assert_int_not_equal(r, 0);
	assert_int_not_equal(r, KY_ERR_KEY_BLOCK_DAMAGED);
	ky_buf_free(&f);

	/* an intact file without the line opens, and says wrong password when it is */
	file_get(alice_path, &g);
	text_drop_line(&g, "kyok-key-block-sha256: ");
	file_put(path, g.data, g.len);
	assert_int_equal(ky_sigkey_open(path, PW_BOB, &cert, &key), KY_ERR_WRONG_PASSWORD);
	assert_int_equal(ky_sigkey_open(path, PW_ALICE, &cert, &key), 0);
	assert_int_equal(EVP_PKEY_eq(key, alice_key), 1);
	EVP_PKEY_free(key);
	X509_free(cert);
	key = NULL;
	cert = NULL;
	ky_buf_free(&g);

	/* the line twice, or not 64 hex digits: not a signature key file */
	file_get(alice_path, &g);
	line = memmem(g.data, g.len, "kyok-key-block-sha256: ", 23);
	assert_non_null(line);
	line[23] = 'x';
	file_put(path, g.data, g.len);
	assert_int_equal(ky_sigkey_read_cert(path, &cert), KY_ERR_NOT_SIGKEY);
	ky_buf_free(&g);
	assert_null(cert);
	assert_int_equal(ERR_peek_error(), 0);
}

/* Writes alice's certificate with her key re-encrypted under the given PBES2 parameters. */
static void sigkey_write_with(const char *path, X509_ALGOR *pbe)
{
	PKCS8_PRIV_KEY_INFO *inf = EVP_PKEY2PKCS8(alice_key);
	X509_SIG *p8;
	BIO *bio = BIO_new_file(path, "w");

	assert_non_null(inf);
	assert_non_null(pbe);
	assert_non_null(bio);
	p8 = PKCS8_set0_pbe(PW_ALICE, (int)strlen(PW_ALICE), inf, pbe);
	assert_non_null(p8);
	assert_int_equal(PEM_write_bio_X509(bio, alice_cert), 1);
	assert_int_equal(PEM_write_bio_PKCS8(bio, p8), 1);
	BIO_free(bio);
	X509_SIG_free(p8);
	PKCS8_PRIV_KEY_INFO_free(inf);
}

static void test_sigkey_weak_kdf(void **state)
{
	char path[300];
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;

	(void)state;
	path_in_tmp(path, sizeof(path), "weak.sigkey");
	/* PBKDF2 at OpenSSL's default 2,048 iterations: refused even with the right password. */
	sigkey_write_with(
	    path, PKCS5_pbe2_set_iv(EVP_aes_256_cbc(), 2048, NULL, 0, NULL, NID_hmacWithSHA256));
	assert_int_equal(ky_sigkey_open(path, PW_ALICE, &cert, &key), KY_ERR_WEAK_KEY_FILE);
	assert_null(key);
	unlink(path);
	/* scrypt with p = 1: a fifth of the work the format asks. */
	sigkey_write_with(path, PKCS5_pbe2_set_scrypt(EVP_aes_256_cbc(), NULL, 0, NULL,
	                                              KY_SIGKEY_SCRYPT_N, 8, 1));
	assert_int_equal(ky_sigkey_open(path, PW_ALICE, &cert, &key), KY_ERR_WEAK_KEY_FILE);
	unlink(path);
	/* A 128-bit cipher. */
	sigkey_write_with(path, PKCS5_pbe2_set_scrypt(EVP_aes_128_cbc(), NULL, 0, NULL,
	                                              KY_SIGKEY_SCRYPT_N, 8, 5));
	assert_int_equal(ky_sigkey_open(path, PW_ALICE, &cert, &key), KY_ERR_WEAK_KEY_FILE);
	unlink(path);
	/* PBKDF2-HMAC-SHA1 even with many iterations. */
	sigkey_write_with(
	    path, PKCS5_pbe2_set_iv(EVP_aes_256_cbc(), 600000, NULL, 0, NULL, NID_hmacWithSHA1));
	assert_int_equal(ky_sigkey_open(path, PW_ALICE, &cert, &key), KY_ERR_WEAK_KEY_FILE);
	unlink(path);
	/* PBKDF2-HMAC-SHA256 at 600,000 iterations is as strong as the format asks. */
	sigkey_write_with(
	    path, PKCS5_pbe2_set_iv(EVP_aes_256_cbc(), 600000, NULL, 0, NULL, NID_hmacWithSHA256));
	assert_int_equal(ky_sigkey_open(path, PW_ALICE, &cert, &key), 0);
	assert_int_equal(EVP_PKEY_eq(key, alice_key), 1);
	X509_free(cert);
	EVP_PKEY_free(key);
	unlink(path);
}

static void test_sigkey_not_sigkey(void **state)
{
	char path[300], tampered[300];
	struct ky_buf a = {0}, b = {0}, mix = {0};
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	uint8_t *split_a, *split_b;

	(void)state;
	path_in_tmp(path, sizeof(path), "not-a-sigkey");
	path_in_tmp(tampered, sizeof(tampered), "tampered.sigkey");

	assert_int_equal(ky_sigkey_read_cert(path, &cert), KY_ERR_NOT_FOUND);
	file_put(path, "hello\n", 6);
	assert_int_equal(ky_sigkey_read_cert(path, &cert), KY_ERR_NOT_SIGKEY);
	assert_int_equal(ky_sigkey_open(path, PW_ALICE, &cert, &key), KY_ERR_NOT_SIGKEY);

	file_get(alice_path, &a);
	file_get(bob_path, &b);
	split_a = memmem(a.data, a.len, "-----BEGIN ENCRYPTED", 20);
	split_b = memmem(b.data, b.len, "-----BEGIN ENCRYPTED", 20);
	assert_non_null(split_a);
	assert_non_null(split_b);

	/* Certificate only. */
	file_put(path, a.data, (size_t)(split_a - a.data));
	assert_int_equal(ky_sigkey_read_cert(path, &cert), KY_ERR_NOT_SIGKEY);
	/* Key only. */
	file_put(path, split_a, a.len - (size_t)(split_a - a.data));
	assert_int_equal(ky_sigkey_open(path, PW_ALICE, &cert, &key), KY_ERR_NOT_SIGKEY);
	/* Blocks swapped. */
	assert_int_equal(ky_buf_append(&mix, split_a, a.len - (size_t)(split_a - a.data)), 0);
	assert_int_equal(ky_buf_append(&mix, a.data, (size_t)(split_a - a.data)), 0);
	file_put(path, mix.data, mix.len);
	assert_int_equal(ky_sigkey_read_cert(path, &cert), KY_ERR_NOT_SIGKEY);
	ky_buf_free(&mix);

	/* Alice's certificate with Bob's key (re-encrypted under Alice's password would need the
	 * key: use Bob's block and Bob's password): the key does not match the certificate. */
	{
		uint8_t *sum_a = memmem(a.data, a.len, "kyok-key-block-sha256", 21);
		uint8_t *sum_b = memmem(b.data, b.len, "kyok-key-block-sha256", 21);
		assert_non_null(sum_a);
		assert_non_null(sum_b);
		assert_int_equal(ky_buf_append(&mix, a.data, (size_t)(sum_a - a.data)), 0);
		assert_int_equal(ky_buf_append(&mix, sum_b, b.len - (size_t)(sum_b - b.data)), 0);
		file_put(tampered, mix.data, mix.len);
		assert_int_equal(ky_sigkey_open(tampered, PW_BOB, &cert, &key), KY_ERR_TAMPERED);
		ky_buf_free(&mix);
		/* Bob's key block under Alice's checksum line: the block is not the one named. */
		assert_int_equal(ky_buf_append(&mix, a.data, (size_t)(split_a - a.data)), 0);
		assert_int_equal(ky_buf_append(&mix, split_b, b.len - (size_t)(split_b - b.data)),
		                 0);
		file_put(tampered, mix.data, mix.len);
		assert_int_equal(ky_sigkey_open(tampered, PW_BOB, &cert, &key),
		                 KY_ERR_KEY_BLOCK_DAMAGED);
		ky_buf_free(&mix);
	}

	/* An edited certificate (name changed in the DER, re-encoded): tampered. */
	{
		char *pem = NULL;
		X509 *x = cert_patched(alice_cert, "alice", "alicf");
		assert_int_equal(ky_cert_to_pem(x, &pem), 0);
		assert_int_equal(ky_buf_append_str(&mix, pem), 0);
		assert_int_equal(ky_buf_append(&mix, split_a, a.len - (size_t)(split_a - a.data)),
		                 0);
		file_put(tampered, mix.data, mix.len);
		assert_int_equal(ky_sigkey_read_cert(tampered, &cert), KY_ERR_TAMPERED);
		assert_int_equal(ky_sigkey_open(tampered, PW_ALICE, &cert, &key), KY_ERR_TAMPERED);
		free(pem);
		X509_free(x);
		ky_buf_free(&mix);
	}
	assert_null(cert);
	assert_null(key);
	ky_buf_free(&a);
	ky_buf_free(&b);
}

/* ---- key part files ---- */

static const uint8_t part_value[KY_MK_LEN] = {
    0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
    0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87, 0x78, 0x69, 0x5a, 0x4b, 0x3c, 0x2d, 0x1e, 0x0f};

static char part_path[300];

/* Writes the shared key part once. */
static void keypart_ensure(void)
{
	if (part_path[0] != '\0')
		return;
	path_in_tmp(part_path, sizeof(part_path), "ops-part-1.keypart");
	assert_int_equal(ky_keypart_write(part_path, part_value, "ops part 1", PW_PART), 0);
}

static void test_keypart_write_refusals(void **state)
{
	char path[300], longdesc[200];

	(void)state;
	keypart_ensure();
	path_in_tmp(path, sizeof(path), "refused.keypart");
	assert_int_equal(ky_keypart_write(path, part_value, "d", "short"), KY_ERR_WEAK_PASSWORD);
	assert_int_equal(ky_keypart_write(path, part_value, "", PW_PART), KY_ERR_USAGE);
	assert_int_equal(ky_keypart_write(path, part_value, "two\nlines", PW_PART), KY_ERR_USAGE);
	memset(longdesc, 'x', 128);
	longdesc[128] = '\0';
	assert_int_equal(ky_keypart_write(path, part_value, longdesc, PW_PART), KY_ERR_USAGE);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(ky_keypart_write(part_path, part_value, "again", PW_PART), KY_ERR_EXISTS);
}

static void test_keypart_read_and_open(void **state)
{
	struct ky_keypart_info info, info2;
	uint8_t part[KY_MK_LEN], vp[KY_VP_LEN];
	struct stat st;
	struct ky_buf f = {0};

	(void)state;
	keypart_ensure();
	assert_int_equal(stat(part_path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	file_get(part_path, &f);
	assert_true(f.len > 100);
	assert_memory_equal(f.data, "kyok-key-part: 1\ndescription: ops part 1\nvp: ", 45);
	ky_buf_free(&f);

	assert_int_equal(ky_keypart_read_info(part_path, &info), 0);
	assert_string_equal(info.description, "ops part 1");
	assert_int_equal(ky_vp(part_value, vp), 0);
	assert_memory_equal(info.vp, vp, KY_VP_LEN);

	memset(part, 0, sizeof(part));
	assert_int_equal(ky_keypart_open(part_path, PW_PART, &info2, part), 0);
	assert_memory_equal(part, part_value, KY_MK_LEN);
	assert_string_equal(info2.description, "ops part 1");
	assert_memory_equal(info2.vp, vp, KY_VP_LEN);

	assert_int_equal(ky_keypart_open(part_path, "wrong password", &info2, part),
	                 KY_ERR_WRONG_PASSWORD);
	assert_int_equal(ERR_peek_error(), 0);
}

/* Writes a copy of the key part file with the first from replaced by to (same length). */
static void keypart_patched(const char *path, const char *from, const char *to)
{
	struct ky_buf f = {0};
	uint8_t *hit;

	file_get(part_path, &f);
	hit = memmem(f.data, f.len, from, strlen(from));
	assert_non_null(hit);
	memcpy(hit, to, strlen(to));
	file_put(path, f.data, f.len);
	ky_buf_free(&f);
}

static void test_keypart_metadata_altered(void **state)
{
	char path[300], vpline[80];
	struct ky_keypart_info info;
	uint8_t part[KY_MK_LEN], other[KY_MK_LEN], vp[KY_VP_LEN];

	(void)state;
	keypart_ensure();
	path_in_tmp(path, sizeof(path), "altered.keypart");

	/* One byte of the description: readable, and refused once decrypted. */
	keypart_patched(path, "description: ops part 1", "description: ops part 2");
	assert_int_equal(ky_keypart_read_info(path, &info), 0);
	assert_string_equal(info.description, "ops part 2");
	assert_int_equal(ky_keypart_open(path, PW_PART, &info, part), KY_ERR_METADATA_ALTERED);

	/* The VP of another part. */
	memcpy(other, part_value, sizeof(other));
	other[0] ^= 0xff;
	assert_int_equal(ky_vp(other, vp), 0);
	strcpy(vpline, "vp: ");
	ky_hex_encode(vp, KY_VP_LEN, vpline + 4);
	{
		char from[80];
		uint8_t real[KY_VP_LEN];
		assert_int_equal(ky_vp(part_value, real), 0);
		strcpy(from, "vp: ");
		ky_hex_encode(real, KY_VP_LEN, from + 4);
		keypart_patched(path, from, vpline);
	}
	assert_int_equal(ky_keypart_open(path, PW_PART, &info, part), KY_ERR_METADATA_ALTERED);
	unlink(path);
}

/* The CMS of the shared key part as DER, and its header text. */
static void keypart_split(struct ky_buf *header, uint8_t **der, long *derlen)
{
	struct ky_buf f = {0};
	uint8_t *pem;
	BIO *bio;
	char *name = NULL, *hdr = NULL;

	file_get(part_path, &f);
	pem = memmem(f.data, f.len, "-----BEGIN CMS-----", 19);
	assert_non_null(pem);
	*header = (struct ky_buf){0};
	assert_int_equal(ky_buf_append(header, f.data, (size_t)(pem - f.data)), 0);
	bio = BIO_new_mem_buf(pem, (int)(f.len - (size_t)(pem - f.data)));
	assert_int_equal(PEM_read_bio(bio, &name, &hdr, der, derlen), 1);
	assert_string_equal(name, "CMS");
	OPENSSL_free(name);
	OPENSSL_free(hdr);
	BIO_free(bio);
	ky_buf_free(&f);
}

/* Writes header + PEM(der) to path. */
static void keypart_rebuild(const char *path, const struct ky_buf *header, const uint8_t *der,
                            long derlen)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *pem = NULL;
	long len;
	struct ky_buf f = {0};

	assert_true(PEM_write_bio(bio, "CMS", "", der, derlen) > 0);
	len = BIO_get_mem_data(bio, &pem);
	assert_int_equal(ky_buf_append(&f, header->data, header->len), 0);
	assert_int_equal(ky_buf_append(&f, pem, (size_t)len), 0);
	file_put(path, f.data, f.len);
	ky_buf_free(&f);
	BIO_free(bio);
}

/* Offset of the first occurrence of pattern in der. */
static size_t der_find(const uint8_t *der, long len, const uint8_t *pat, size_t n)
{
	uint8_t *hit = memmem(der, (size_t)len, pat, n);
	assert_non_null(hit);
	return (size_t)(hit - der);
}

static void test_keypart_tampered(void **state)
{
	char path[300];
	struct ky_buf header = {0};
	uint8_t *der = NULL, part[KY_MK_LEN];
	long derlen = 0;
	size_t ct, wrapped;
	struct ky_keypart_info info;
	uint8_t pat[3];

	(void)state;
	keypart_ensure();
	path_in_tmp(path, sizeof(path), "tampered.keypart");
	keypart_split(&header, &der, &derlen);

	/* encryptedContent [0] IMPLICIT, as long as header + part: flip one byte of it. It
	 * ends where the MAC (OCTET STRING of 16 bytes, the end of the structure) begins: its
	 * place comes from that layout, and its tag and length are checked there. (A search
	 * for them could stop inside the random bytes before: the wrapped key, the nonce.) */
	assert_true(header.len + KY_MK_LEN >= 128 && header.len + KY_MK_LEN < 256);
	assert_true((size_t)derlen > 18 + 3 + header.len + KY_MK_LEN);
	assert_int_equal(der[derlen - 18], 0x04);
	assert_int_equal(der[derlen - 17], 16);
	ct = (size_t)derlen - 18 - (header.len + KY_MK_LEN);
	assert_int_equal(der[ct - 3], 0x80);
	assert_int_equal(der[ct - 2], 0x81);
	assert_int_equal(der[ct - 1], header.len + KY_MK_LEN);
	der[ct + 20] ^= 0x01;
	keypart_rebuild(path, &header, der, derlen);
	assert_int_equal(ky_keypart_open(path, PW_PART, &info, part), KY_ERR_TAMPERED);
	der[ct + 20] ^= 0x01;

	/* The GCM tag: last 16 bytes of the structure. */
	der[derlen - 3] ^= 0x80;
	keypart_rebuild(path, &header, der, derlen);
	assert_int_equal(ky_keypart_open(path, PW_PART, &info, part), KY_ERR_TAMPERED);
	der[derlen - 3] ^= 0x80;

	/* The wrapped content key (OCTET STRING of 40 bytes): the unwrap fails, which reads
	 * as a wrong password. */
	pat[0] = 0x04;
	pat[1] = 0x28;
	wrapped = der_find(der, derlen, pat, 2) + 2;
	der[wrapped + 5] ^= 0x01;
	keypart_rebuild(path, &header, der, derlen);
	assert_int_equal(ky_keypart_open(path, PW_PART, &info, part), KY_ERR_WRONG_PASSWORD);
	der[wrapped + 5] ^= 0x01;

	/* Another recipient id: not the structure kyok writes. No KDF run. */
	pat[0] = 'k';
	pat[1] = 'y';
	pat[2] = 'o';
	der[der_find(der, derlen, pat, 3)] = 'K';
	keypart_rebuild(path, &header, der, derlen);
	assert_int_equal(ky_keypart_open(path, PW_PART, &info, part), KY_ERR_TAMPERED);

	/* Truncated DER: no KDF run either. */
	keypart_rebuild(path, &header, der, derlen - 20);
	assert_int_equal(ky_keypart_open(path, PW_PART, &info, part), KY_ERR_TAMPERED);

	OPENSSL_free(der);
	ky_buf_free(&header);
	unlink(path);
}

static void test_keypart_salt_edit(void **state)
{
	char path[300];
	struct ky_buf f = {0};
	uint8_t *salt;
	struct ky_keypart_info info;
	uint8_t part[KY_MK_LEN];

	(void)state;
	keypart_ensure();
	path_in_tmp(path, sizeof(path), "salt.keypart");
	file_get(part_path, &f);
	salt = memmem(f.data, f.len, "kdf-salt: ", 10);
	assert_non_null(salt);
	salt[10] = salt[10] == '0' ? '1' : '0';
	file_put(path, f.data, f.len);
	/* Another salt derives another KEK: indistinguishable from a wrong password. */
	assert_int_equal(ky_keypart_open(path, PW_PART, &info, part), KY_ERR_WRONG_PASSWORD);
	ky_buf_free(&f);
	unlink(path);
}

static void test_keypart_not_key_part(void **state)
{
	/* The kdf-n line as written (KY_KEYPART_SCRYPT_N: lower in the sanitized test build),
	 * half of it with a leading zero, one more (not a power of two), an eighth. */
	char n_is[32], n_half0[32], n_odd[32], n_nl[32], n_eighth[32];
	snprintf(n_is, sizeof(n_is), "kdf-n: %u", KY_KEYPART_SCRYPT_N);
	snprintf(n_half0, sizeof(n_half0), "kdf-n: 0%u", KY_KEYPART_SCRYPT_N / 2);
	snprintf(n_odd, sizeof(n_odd), "kdf-n: %u", KY_KEYPART_SCRYPT_N + 1);
	snprintf(n_nl, sizeof(n_nl), "kdf-n: %u\n", KY_KEYPART_SCRYPT_N);
	snprintf(n_eighth, sizeof(n_eighth), "kdf-n: %u\n\n", KY_KEYPART_SCRYPT_N / 8);
	const char *edits[][2] = {
	    {"kyok-key-part: 1", "kyok-key-part: 2"},
	    {"kdf: scrypt", "kdf: SCRYPT"},
	    {n_is, n_half0},
	    {n_is, n_odd},
	    {n_nl, n_eighth},
	    {"kdf-r: 8", "kdf-r: 7"},
	    {"kdf-r: 8", "kdf-r: 9"}, /* within bounds: that one is accepted */
	    {"kdf-p: 1", "kdf-p: 0"},
	    {"kdf-p: 1", "kdf-p: 9"},
	    {"kdf-p: 1\n", "kdf-p:  1"},
	    {"description: ", "description :"},
	    {"\nvp: ", "\nVP: "},
	    {"-----BEGIN CMS-----", "-----BEGIN PEM-----"},
	    {"kdf-p: 1\n-", "kdf-p: 1\r\n"},
	};
	char path[300];
	struct ky_buf f = {0};
	struct ky_keypart_info info;
	uint8_t part[KY_MK_LEN];

	(void)state;
	keypart_ensure();
	path_in_tmp(path, sizeof(path), "not.keypart");
	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		size_t from = strlen(edits[i][0]), to = strlen(edits[i][1]);
		struct ky_buf g = {0};
		uint8_t *hit;
		file_get(part_path, &f);
		hit = memmem(f.data, f.len, edits[i][0], from);
		assert_non_null(hit);
		assert_int_equal(ky_buf_append(&g, f.data, (size_t)(hit - f.data)), 0);
		assert_int_equal(ky_buf_append(&g, edits[i][1], to), 0);
		assert_int_equal(
		    ky_buf_append(&g, hit + from, f.len - (size_t)(hit - f.data) - from), 0);
		file_put(path, g.data, g.len);
		if (i == 6) {
			assert_int_equal(ky_keypart_read_info(path, &info), 0);
		} else {
			assert_int_equal(ky_keypart_read_info(path, &info), KY_ERR_NOT_KEY_PART);
			assert_int_equal(ky_keypart_open(path, PW_PART, &info, part),
			                 KY_ERR_NOT_KEY_PART);
		}
		ky_buf_free(&g);
		ky_buf_free(&f);
	}
	/* Uppercase hex in the VP. */
	file_get(part_path, &f);
	{
		uint8_t *vp = memmem(f.data, f.len, "\nvp: ", 5);
		for (size_t k = 5; k < 69; k++)
			if (vp[k] >= 'a' && vp[k] <= 'f')
				vp[k] = (uint8_t)(vp[k] - 'a' + 'A');
	}
	file_put(path, f.data, f.len);
	assert_int_equal(ky_keypart_read_info(path, &info), KY_ERR_NOT_KEY_PART);
	ky_buf_free(&f);

	/* Other files: a sigkey, text, empty, missing. */
	assert_int_equal(ky_keypart_read_info(alice_path, &info), KY_ERR_NOT_KEY_PART);
	assert_int_equal(ky_keypart_open(alice_path, PW_ALICE, &info, part), KY_ERR_NOT_KEY_PART);
	file_put(path, "hello\n", 6);
	assert_int_equal(ky_keypart_read_info(path, &info), KY_ERR_NOT_KEY_PART);
	file_put(path, "", 0);
	assert_int_equal(ky_keypart_read_info(path, &info), KY_ERR_EMPTY_FILE);
	unlink(path);
	assert_int_equal(ky_keypart_read_info(path, &info), KY_ERR_NOT_FOUND);
	/* A key part file is not a sigkey either. */
	{
		X509 *cert = NULL;
		assert_int_equal(ky_sigkey_read_cert(part_path, &cert), KY_ERR_NOT_SIGKEY);
	}
}

/* ---- signed commands ---- */

static const char command[] = "{\"op\":\"admin-add\",\"counter\":7}";

/* Decodes der once and verifies signer i against pub, as a unit does. */
static int cms_verify_one(const uint8_t *der, size_t n, size_t i, EVP_PKEY *pub)
{
	struct ky_cms_signed *sd = NULL;
	int r = ky_cms_signed_parse(der, n, &sd);

	if (r == 0)
		r = ky_cms_signed_verify(sd, i, pub);
	ky_cms_signed_free(sd);
	return r;
}

static void cms_signed_by_both(struct ky_buf *der)
{
	*der = (struct ky_buf){0};
	assert_int_equal(ky_cms_unsigned(command, strlen(command), der), 0);
	assert_int_equal(ky_cms_add_signer(der, alice_cert, alice_key), 0);
	assert_int_equal(ky_cms_add_signer(der, bob_cert, bob_key), 0);
}

/* Index of the signer whose SKI is that of cert. */
static size_t cms_index_of(const struct ky_cms_signer *s, size_t n, X509 *cert)
{
	uint8_t ski[KY_SKI_LEN];

	assert_int_equal(ky_cert_ski(cert, ski), 0);
	for (size_t i = 0; i < n; i++)
		if (memcmp(s[i].ski, ski, KY_SKI_LEN) == 0)
			return i;
	fail_msg("signer not found");
	return 0;
}

static void test_cms_unsigned_and_signers(void **state)
{
	struct ky_buf der = {0}, content = {0};
	struct ky_cms_signer *s = NULL;
	size_t n = 99, ia, ib;
	EVP_PKEY *apub = X509_get0_pubkey(alice_cert), *bpub = X509_get0_pubkey(bob_cert);

	(void)state;
	assert_int_equal(ky_cms_unsigned(command, strlen(command), &der), 0);
	assert_int_equal(ky_cms_parse(der.data, der.len, &content, &s, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(content.len, strlen(command));
	assert_memory_equal(content.data, command, content.len);
	assert_int_equal(cms_verify_one(der.data, der.len, 0, apub), KY_ERR_BAD_SIGNATURE);
	free(s);
	ky_buf_free(&content);

	assert_int_equal(ky_cms_add_signer(&der, alice_cert, alice_key), 0);
	assert_int_equal(ky_cms_parse(der.data, der.len, &content, &s, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(s[0].name, "alice");
	assert_memory_equal(content.data, command, content.len);
	assert_int_equal(cms_verify_one(der.data, der.len, 0, apub), 0);
	assert_int_equal(cms_verify_one(der.data, der.len, 0, bpub), KY_ERR_BAD_SIGNATURE);
	assert_int_equal(cms_verify_one(der.data, der.len, 1, apub), KY_ERR_BAD_SIGNATURE);
	free(s);
	ky_buf_free(&content);

	assert_int_equal(ky_cms_add_signer(&der, bob_cert, bob_key), 0);
	assert_int_equal(ky_cms_parse(der.data, der.len, &content, &s, &n), 0);
	assert_int_equal(n, 2);
	ia = cms_index_of(s, n, alice_cert);
	ib = cms_index_of(s, n, bob_cert);
	assert_int_not_equal(ia, ib);
	assert_string_equal(s[ia].name, "alice");
	assert_string_equal(s[ib].name, "bob");
	/* Both signatures valid: adding Bob kept Alice's. Each only under its own key. */
	assert_int_equal(cms_verify_one(der.data, der.len, ia, apub), 0);
	assert_int_equal(cms_verify_one(der.data, der.len, ib, bpub), 0);
	assert_int_equal(cms_verify_one(der.data, der.len, ia, bpub), KY_ERR_BAD_SIGNATURE);
	assert_int_equal(cms_verify_one(der.data, der.len, ib, apub), KY_ERR_BAD_SIGNATURE);
	/* The same checks on one decoded structure, in any order, repeated: a wrong key given
	 * to a signer before leaves nothing behind. */
	{
		struct ky_cms_signed *sd = NULL;
		const uint8_t *body;
		size_t blen = 0;

		assert_int_equal(ky_cms_signed_parse(der.data, der.len, &sd), 0);
		assert_int_equal(ky_cms_signed_nsigners(sd), 2);
		body = ky_cms_signed_content(sd, &blen);
		assert_int_equal(blen, content.len);
		assert_memory_equal(body, content.data, blen);
		assert_memory_equal(ky_cms_signed_signer(sd, ia)->ski, s[ia].ski, KY_SKI_LEN);
		assert_string_equal(ky_cms_signed_signer(sd, ib)->name, "bob");
		assert_null(ky_cms_signed_signer(sd, 2));
		assert_int_equal(ky_cms_signed_verify(sd, ia, bpub), KY_ERR_BAD_SIGNATURE);
		assert_int_equal(ky_cms_signed_verify(sd, ia, apub), 0);
		assert_int_equal(ky_cms_signed_verify(sd, ib, apub), KY_ERR_BAD_SIGNATURE);
		assert_int_equal(ky_cms_signed_verify(sd, ib, bpub), 0);
		assert_int_equal(ky_cms_signed_verify(sd, ia, apub), 0);
		assert_int_equal(ky_cms_signed_verify(sd, 2, apub), KY_ERR_BAD_SIGNATURE);
		ky_cms_signed_free(sd);
		ky_cms_signed_free(NULL);
	}
	free(s);
	ky_buf_free(&content);

	/* OpenSSL's own verification (signatures only, certificates not chained) agrees. */
	{
		const unsigned char *p = der.data;
		CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)der.len);
		BIO *out = BIO_new(BIO_s_mem());
		assert_non_null(cms);
		assert_int_equal(CMS_verify(cms, NULL, NULL, NULL, out, CMS_NO_SIGNER_CERT_VERIFY),
		                 1);
		BIO_free(out);
		CMS_ContentInfo_free(cms);
	}

	/* The same key again: a third SignerInfo (the unit counts it once). */
	assert_int_equal(ky_cms_add_signer(&der, alice_cert, alice_key), 0);
	assert_int_equal(ky_cms_parse(der.data, der.len, &content, &s, &n), 0);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(cms_verify_one(der.data, der.len, i,
		                                strcmp(s[i].name, "bob") == 0 ? bpub : apub),
		                 0);
	free(s);
	ky_buf_free(&content);
	ky_buf_free(&der);
}

static void test_cms_tampered(void **state)
{
	struct ky_buf der = {0}, content = {0};
	struct ky_cms_signer *s = NULL;
	size_t n = 0, ia, ib;
	uint8_t *hit;
	EVP_PKEY *apub = X509_get0_pubkey(alice_cert), *bpub = X509_get0_pubkey(bob_cert);

	(void)state;
	cms_signed_by_both(&der);
	assert_int_equal(ky_cms_parse(der.data, der.len, &content, &s, &n), 0);
	ia = cms_index_of(s, n, alice_cert);
	ib = cms_index_of(s, n, bob_cert);
	free(s);
	ky_buf_free(&content);

	/* Content changed (counter 7 -> 8): parses, but no signature verifies. */
	hit = memmem(der.data, der.len, "\"counter\":7", 11);
	assert_non_null(hit);
	hit[10] = '8';
	assert_int_equal(ky_cms_parse(der.data, der.len, &content, &s, &n), 0);
	assert_non_null(memmem(content.data, content.len, "\"counter\":8", 11));
	free(s);
	ky_buf_free(&content);
	assert_int_equal(cms_verify_one(der.data, der.len, ia, apub), KY_ERR_BAD_SIGNATURE);
	assert_int_equal(cms_verify_one(der.data, der.len, ib, bpub), KY_ERR_BAD_SIGNATURE);
	/* Nor can a third signer be added to it: that signature would reuse the digest of
	 * the original content, which the signer never saw. */
	{
		X509 *ccert = NULL;
		EVP_PKEY *ckey = NULL;
		size_t len = der.len;
		assert_int_equal(ky_ec_generate(&ckey), 0);
		assert_int_equal(
		    ky_cert_self_signed(ckey, "carol", "kyok administration", 30, &ccert), 0);
		assert_int_equal(ky_cms_add_signer(&der, ccert, ckey), KY_ERR_BAD_SIGNATURE);
		assert_int_equal(der.len, len);
		hit[10] = '7';
		assert_int_equal(ky_cms_add_signer(&der, ccert, ckey), 0);
		X509_free(ccert);
		EVP_PKEY_free(ckey);
		hit = memmem(der.data, der.len, "\"counter\":7", 11);
		assert_non_null(hit);
	}
	/* Three signers now, in DER order: find Alice and Bob again. */
	assert_int_equal(ky_cms_parse(der.data, der.len, &content, &s, &n), 0);
	assert_int_equal(n, 3);
	ia = cms_index_of(s, n, alice_cert);
	ib = cms_index_of(s, n, bob_cert);
	free(s);
	ky_buf_free(&content);
	assert_int_equal(cms_verify_one(der.data, der.len, ia, apub), 0);

	/* Signature bytes of Alice's SignerInfo changed: hers fails, Bob's still verifies. */
	{
		const unsigned char *p = der.data;
		CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)der.len);
		CMS_SignerInfo *si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms), (int)ia);
		ASN1_OCTET_STRING *sig = CMS_SignerInfo_get0_signature(si);
		uint8_t *where = memmem(der.data, der.len, ASN1_STRING_get0_data(sig),
		                        (size_t)ASN1_STRING_length(sig));
		assert_non_null(where);
		where[ASN1_STRING_length(sig) - 5] ^= 0x04;
		assert_int_equal(cms_verify_one(der.data, der.len, ia, apub), KY_ERR_BAD_SIGNATURE);
		assert_int_equal(cms_verify_one(der.data, der.len, ib, bpub), 0);
		where[ASN1_STRING_length(sig) - 5] ^= 0x04;
		CMS_ContentInfo_free(cms);
	}

	/* A signed attribute of Alice's changed (her signing time's last digit): the
	 * attributes are what the signature covers. Her signing time is the last UTCTime
	 * (tag 0x17, 13 bytes, ending in 'Z') before her signature value. */
	{
		const unsigned char *p = der.data;
		CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)der.len);
		CMS_SignerInfo *si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms), (int)ia);
		ASN1_OCTET_STRING *sig = CMS_SignerInfo_get0_signature(si);
		uint8_t *end = memmem(der.data, der.len, ASN1_STRING_get0_data(sig),
		                      (size_t)ASN1_STRING_length(sig));
		uint8_t *t = NULL;
		assert_non_null(end);
		for (uint8_t *k = der.data; k + 15 <= end; k++)
			if (k[0] == 0x17 && k[1] == 13 && k[14] == 'Z')
				t = k;
		assert_non_null(t);
		t[13] ^= 0x01; /* another digit */
		assert_int_equal(cms_verify_one(der.data, der.len, ia, apub), KY_ERR_BAD_SIGNATURE);
		assert_int_equal(cms_verify_one(der.data, der.len, ib, bpub), 0);
		t[13] ^= 0x01;
		CMS_ContentInfo_free(cms);
	}
	assert_int_equal(cms_verify_one(der.data, der.len, ia, apub), 0);
	assert_int_equal(cms_verify_one(der.data, der.len, ib, bpub), 0);
	/* Out of range index, NULL key. */
	assert_int_equal(cms_verify_one(der.data, der.len, 3, apub), KY_ERR_BAD_SIGNATURE);
	assert_int_equal(cms_verify_one(der.data, der.len, 0, NULL), KY_ERR_BAD_SIGNATURE);
	ky_buf_free(&der);
}

/* A SignedData made with OpenSSL directly, for shapes kyok never writes. */
static void cms_made_by_openssl(unsigned int flags, const EVP_MD *md, struct ky_buf *der)
{
	BIO *in = BIO_new_mem_buf(command, (int)strlen(command));
	CMS_ContentInfo *cms = CMS_sign(NULL, NULL, NULL, NULL, CMS_BINARY | CMS_PARTIAL | flags);
	unsigned char *p = NULL;
	int len;

	assert_non_null(cms);
	assert_non_null(CMS_add1_signer(cms, alice_cert, alice_key, md, CMS_BINARY | flags));
	assert_int_equal(CMS_final(cms, in, NULL, CMS_BINARY | flags), 1);
	len = i2d_CMS_ContentInfo(cms, &p);
	assert_true(len > 0);
	*der = (struct ky_buf){0};
	assert_int_equal(ky_buf_append(der, p, (size_t)len), 0);
	OPENSSL_free(p);
	CMS_ContentInfo_free(cms);
	BIO_free(in);
}

static void test_cms_refusals(void **state)
{
	struct ky_buf der = {0}, content = {0};
	struct ky_cms_signer *s = NULL;
	size_t n = 0;
	EVP_PKEY *apub = X509_get0_pubkey(alice_cert);

	(void)state;
	/* Not CMS at all, truncated, trailing bytes. */
	assert_int_equal(ky_cms_parse((const uint8_t *)"garbage", 7, &content, &s, &n),
	                 KY_ERR_NOT_COMMAND);
	cms_signed_by_both(&der);
	assert_int_equal(ky_cms_parse(der.data, der.len - 1, &content, &s, &n), KY_ERR_NOT_COMMAND);
	assert_int_equal(ky_buf_append(&der, "\0", 1), 0);
	assert_int_equal(ky_cms_parse(der.data, der.len, &content, &s, &n), KY_ERR_NOT_COMMAND);
	assert_int_equal(cms_verify_one(der.data, der.len, 0, apub), KY_ERR_NOT_COMMAND);
	assert_int_equal(ky_cms_add_signer(&der, alice_cert, alice_key), KY_ERR_NOT_COMMAND);
	ky_buf_free(&der);

	/* An envelope is CMS but not SignedData. */
	{
		uint8_t secret[KY_MK_LEN] = {1};
		assert_int_equal(ky_envelope_seal(secret, sizeof(secret), bob_cert, &der), 0);
		assert_int_equal(ky_cms_parse(der.data, der.len, &content, &s, &n),
		                 KY_ERR_NOT_COMMAND);
		ky_buf_free(&der);
	}

	/* Detached content. */
	cms_made_by_openssl(CMS_DETACHED | CMS_USE_KEYID, EVP_sha512(), &der);
	assert_int_equal(ky_cms_parse(der.data, der.len, &content, &s, &n), KY_ERR_NOT_COMMAND);
	assert_int_equal(cms_verify_one(der.data, der.len, 0, apub), KY_ERR_NOT_COMMAND);
	assert_int_equal(ky_cms_add_signer(&der, bob_cert, bob_key), KY_ERR_NOT_COMMAND);
	ky_buf_free(&der);

	/* Signer named by issuer and serial instead of SKI. */
	cms_made_by_openssl(0, EVP_sha512(), &der);
	assert_int_equal(ky_cms_parse(der.data, der.len, &content, &s, &n), KY_ERR_BAD_COMMAND);
	assert_int_equal(cms_verify_one(der.data, der.len, 0, apub), KY_ERR_BAD_COMMAND);
	ky_buf_free(&der);

	/* SHA-256 instead of SHA-512: valid CMS, refused by kyok. */
	cms_made_by_openssl(CMS_USE_KEYID, EVP_sha256(), &der);
	assert_int_equal(ky_cms_parse(der.data, der.len, &content, &s, &n), 0);
	assert_int_equal(n, 1);
	free(s);
	ky_buf_free(&content);
	assert_int_equal(cms_verify_one(der.data, der.len, 0, apub), KY_ERR_WRONG_DIGEST);
	ky_buf_free(&der);

	/* No signed attributes: the signature would cover the content directly. */
	cms_made_by_openssl(CMS_USE_KEYID | CMS_NOATTR, EVP_sha512(), &der);
	assert_int_equal(cms_verify_one(der.data, der.len, 0, apub), KY_ERR_BAD_SIGNATURE);
	assert_int_equal(ky_cms_add_signer(&der, bob_cert, bob_key), KY_ERR_BAD_SIGNATURE);
	ky_buf_free(&der);

	/* Made by OpenSSL the kyok way (SKI, SHA-512, attributes): accepted, and kyok can
	 * add a signer to it. */
	cms_made_by_openssl(CMS_USE_KEYID, EVP_sha512(), &der);
	assert_int_equal(cms_verify_one(der.data, der.len, 0, apub), 0);
	assert_int_equal(ky_cms_add_signer(&der, bob_cert, bob_key), 0);
	assert_int_equal(ky_cms_parse(der.data, der.len, &content, &s, &n), 0);
	assert_int_equal(n, 2);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(
		    cms_verify_one(
		        der.data, der.len, i,
		        X509_get0_pubkey(strcmp(s[i].name, "bob") == 0 ? bob_cert : alice_cert)),
		    0);
	free(s);
	ky_buf_free(&content);

	/* A certificate that does not go with the key. */
	assert_int_not_equal(ky_cms_add_signer(&der, alice_cert, bob_key), 0);
	ky_buf_free(&der);
	assert_int_equal(ERR_peek_error(), 0);
}

/* DER of cms with the SignerInfos from index keep on left out (they stay in cms). */
static void cms_der_keeping(CMS_ContentInfo *cms, int keep, struct ky_buf *der)
{
	STACK_OF(CMS_SignerInfo) *sis = CMS_get0_SignerInfos(cms);
	CMS_SignerInfo *held[16];
	int nheld = 0, len;
	unsigned char *p = NULL;

	while (sk_CMS_SignerInfo_num(sis) > keep && nheld < 16)
		held[nheld++] = sk_CMS_SignerInfo_pop(sis);
	len = i2d_CMS_ContentInfo(cms, &p);
	assert_true(len > 0);
	*der = (struct ky_buf){0};
	assert_int_equal(ky_buf_append(der, p, (size_t)len), 0);
	OPENSSL_free(p);
	while (nheld > 0)
		assert_true(sk_CMS_SignerInfo_push(sis, held[--nheld]) > 0);
}

/* One DER header at *p: returns the content length, moves *p past the header. */
static size_t der_header(const uint8_t **p, uint8_t want_tag)
{
	const uint8_t *q = *p;
	size_t n = 0;

	assert_int_equal(q[0], want_tag);
	q++;
	if (*q < 0x80) {
		n = *q++;
	} else {
		for (int k = *q++ & 0x7f; k > 0; k--)
			n = (n << 8) | *q++;
	}
	*p = q;
	return n;
}

static void der_put_header(struct ky_buf *b, uint8_t tag, size_t n)
{
	uint8_t h[6] = {tag};
	size_t hl;

	if (n < 0x80) {
		h[1] = (uint8_t)n;
		hl = 2;
	} else if (n < 0x10000) {
		h[1] = 0x82;
		h[2] = (uint8_t)(n >> 8);
		h[3] = (uint8_t)n;
		hl = 4;
	} else {
		h[1] = 0x83;
		h[2] = (uint8_t)(n >> 16);
		h[3] = (uint8_t)(n >> 8);
		h[4] = (uint8_t)n;
		hl = 5;
	}
	assert_int_equal(ky_buf_append(b, h, hl), 0);
}

/* Replaces SignedData.digestAlgorithms of a DER ContentInfo by count SHA-512 entries. */
static void der_with_digest_algs(struct ky_buf *der, int count)
{
	static const uint8_t sha512[] = {0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48,
	                                 0x01, 0x65, 0x03, 0x04, 0x02, 0x03};
	const uint8_t *p = der->data, *oid, *ver, *rest, *end;
	struct ky_buf set = {0}, sd = {0}, a0 = {0}, ci = {0};
	size_t len, n;

	der_header(&p, 0x30);
	oid = p;
	len = der_header(&p, 0x06);
	p += len;
	len = (size_t)(p - oid);
	der_header(&p, 0xa0);
	n = der_header(&p, 0x30);
	end = p + n;
	ver = p;
	n = der_header(&p, 0x02);
	p += n;
	assert_int_equal(ky_buf_append(&sd, ver, (size_t)(p - ver)), 0);
	n = der_header(&p, 0x31);
	rest = p + n;
	der_put_header(&sd, 0x31, (size_t)count * sizeof(sha512));
	for (int i = 0; i < count; i++)
		assert_int_equal(ky_buf_append(&sd, sha512, sizeof(sha512)), 0);
	assert_int_equal(ky_buf_append(&sd, rest, (size_t)(end - rest)), 0);
	der_put_header(&a0, 0x30, sd.len);
	assert_int_equal(ky_buf_append(&a0, sd.data, sd.len), 0);
	assert_int_equal(ky_buf_append(&set, oid, len), 0);
	der_put_header(&set, 0xa0, a0.len);
	assert_int_equal(ky_buf_append(&set, a0.data, a0.len), 0);
	der_put_header(&ci, 0x30, set.len);
	assert_int_equal(ky_buf_append(&ci, set.data, set.len), 0);
	ky_buf_free(der);
	*der = ci;
	ky_buf_free(&set);
	ky_buf_free(&sd);
	ky_buf_free(&a0);
}

/* Every function reading a SignedData refuses one over its bounds, before verifying it. */
static void cms_expect_refused(const struct ky_buf *der, int err)
{
	struct ky_buf content = {0}, copy = {0};
	struct ky_cms_signer *s = NULL;
	size_t n = 0;

	assert_int_equal(ky_cms_parse(der->data, der->len, &content, &s, &n), err);
	assert_null(s);
	assert_int_equal(content.len, 0);
	{
		struct ky_cms_signed *sd = NULL;
		assert_int_equal(ky_cms_signed_parse(der->data, der->len, &sd), err);
		assert_null(sd);
	}
	assert_int_equal(ky_buf_append(&copy, der->data, der->len), 0);
	assert_int_equal(ky_cms_add_signer(&copy, bob_cert, bob_key), err);
	assert_int_equal(copy.len, der->len);
	ky_buf_free(&copy);
	assert_int_equal(ERR_peek_error(), 0);
}

static void test_cms_bounds(void **state)
{
	struct ky_buf der = {0}, content = {0};
	struct ky_cms_signer *s = NULL;
	size_t n = 0;
	BIO *in;
	CMS_ContentInfo *cms;
	X509 *certs[KY_MAX_ADMINS + 1] = {NULL};

	(void)state;
	/* Eight signatures (the most administrators there can be) parse; a ninth is refused,
	 * also by ky_cms_add_signer. */
	assert_int_equal(ky_cms_unsigned(command, strlen(command), &der), 0);
	for (int i = 0; i < KY_MAX_ADMINS; i++)
		assert_int_equal(ky_cms_add_signer(&der, i % 2 ? bob_cert : alice_cert,
		                                   i % 2 ? bob_key : alice_key),
		                 0);
	assert_int_equal(ky_cms_parse(der.data, der.len, &content, &s, &n), 0);
	assert_int_equal(n, KY_MAX_ADMINS);
	free(s);
	s = NULL;
	ky_buf_free(&content);
	assert_int_equal(ky_cms_add_signer(&der, alice_cert, alice_key),
	                 KY_ERR_TOO_MANY_SIGNATURES);
	ky_buf_free(&der);

	/* Nine SignerInfos made with OpenSSL. */
	in = BIO_new_mem_buf(command, (int)strlen(command));
	cms = CMS_sign(NULL, NULL, NULL, NULL, CMS_BINARY | CMS_PARTIAL);
	assert_non_null(cms);
	for (int i = 0; i <= KY_MAX_ADMINS; i++)
		assert_non_null(CMS_add1_signer(cms, alice_cert, alice_key, EVP_sha512(),
		                                CMS_BINARY | CMS_USE_KEYID | CMS_NOCERTS));
	assert_int_equal(CMS_final(cms, in, NULL, CMS_BINARY), 1);
	cms_der_keeping(cms, KY_MAX_ADMINS + 1, &der);
	cms_expect_refused(&der, KY_ERR_TOO_MANY_SIGNATURES);
	ky_buf_free(&der);
	/* The same, one copy of a valid signature: refused as a copy, not verified twice. */
	{
		STACK_OF(CMS_SignerInfo) *sis = CMS_get0_SignerInfos(cms);
		CMS_SignerInfo *held[KY_MAX_ADMINS + 1];
		int nheld = 0;
		while (sk_CMS_SignerInfo_num(sis) > 1)
			held[nheld++] = sk_CMS_SignerInfo_pop(sis);
		assert_true(sk_CMS_SignerInfo_push(sis, sk_CMS_SignerInfo_value(sis, 0)) > 0);
		cms_der_keeping(cms, 2, &der);
		(void)sk_CMS_SignerInfo_pop(sis); /* the second pointer to the same SignerInfo */
		while (nheld > 0)
			assert_true(sk_CMS_SignerInfo_push(sis, held[--nheld]) > 0);
	}
	cms_expect_refused(&der, KY_ERR_DUPLICATE_SIGNATURE);
	ky_buf_free(&der);
	CMS_ContentInfo_free(cms);
	BIO_free(in);

	/* Nine certificates, one signature. */
	in = BIO_new_mem_buf(command, (int)strlen(command));
	cms = CMS_sign(NULL, NULL, NULL, NULL, CMS_BINARY | CMS_PARTIAL);
	assert_non_null(cms);
	for (int i = 0; i <= KY_MAX_ADMINS; i++) {
		char cn[16];
		snprintf(cn, sizeof(cn), "cert%d", i);
		assert_int_equal(ky_cert_self_signed(alice_key, cn, "test", 1, &certs[i]), 0);
		assert_int_equal(CMS_add1_cert(cms, certs[i]), 1);
	}
	assert_non_null(CMS_add1_signer(cms, alice_cert, alice_key, EVP_sha512(),
	                                CMS_BINARY | CMS_USE_KEYID | CMS_NOCERTS));
	assert_int_equal(CMS_final(cms, in, NULL, CMS_BINARY), 1);
	cms_der_keeping(cms, 1, &der);
	cms_expect_refused(&der, KY_ERR_TOO_MANY_CERTIFICATES);
	ky_buf_free(&der);
	CMS_ContentInfo_free(cms);
	BIO_free(in);
	for (int i = 0; i <= KY_MAX_ADMINS; i++)
		X509_free(certs[i]);

	/* Nine digest algorithms named (SHA-512 each time), one signature: each named algorithm
	 * would cost a pass over the content. OpenSSL cannot make it: spliced into the DER. */
	cms_made_by_openssl(CMS_USE_KEYID, EVP_sha512(), &der);
	der_with_digest_algs(&der, KY_MAX_ADMINS);
	assert_int_equal(ky_cms_parse(der.data, der.len, &content, &s, &n), 0);
	assert_int_equal(n, 1);
	free(s);
	ky_buf_free(&content);
	{
		struct ky_cms_signed *sd = NULL;
		assert_int_equal(ky_cms_signed_parse(der.data, der.len, &sd), 0);
		assert_int_equal(ky_cms_signed_verify(sd, 0, X509_get0_pubkey(alice_cert)), 0);
		ky_cms_signed_free(sd);
	}
	ky_buf_free(&der);
	cms_made_by_openssl(CMS_USE_KEYID, EVP_sha512(), &der);
	der_with_digest_algs(&der, KY_MAX_ADMINS + 1);
	cms_expect_refused(&der, KY_ERR_TOO_MANY_DIGESTS);
	ky_buf_free(&der);
}

/* ---- envelopes ---- */

/* An empty file (truncated, or a failed copy) says so, for both secret file kinds. */
static void test_empty_files(void **state)
{
	char path[300];
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	struct ky_keypart_info info;
	uint8_t part[KY_MK_LEN];

	(void)state;
	path_in_tmp(path, sizeof(path), "empty");
	file_put(path, "", 0);
	assert_int_equal(ky_sigkey_read_cert(path, &cert), KY_ERR_EMPTY_FILE);
	assert_int_equal(ky_sigkey_open(path, PW_ALICE, &cert, &key), KY_ERR_EMPTY_FILE);
	assert_null(cert);
	assert_null(key);
	assert_int_equal(ky_keypart_read_info(path, &info), KY_ERR_EMPTY_FILE);
	assert_int_equal(ky_keypart_open(path, PW_ALICE, &info, part), KY_ERR_EMPTY_FILE);
	assert_string_equal(ky_err_slug(KY_ERR_EMPTY_FILE), "empty-file");
}

/* Key parts in the form a PKCS#11 token makes: an ECDH-derived KEK and an AES key wrap. */
static void test_token_part(void **state)
{
	EVP_PKEY *ukey = NULL, *okey = NULL, *p256 = NULL;
	X509 *ucert = NULL, *ocert = NULL;
	uint8_t part[KY_MK_LEN], out[KY_MK_LEN], id[KY_TOKEN_PART_ID_LEN], wrapped[40];
	struct ky_buf der = {0}, der2 = {0}, other = {0};
	X509_PUBKEY *spki = NULL;
	unsigned char *spkider = NULL;
	int spkilen;

	(void)state;
	assert_int_equal(ky_random(part, sizeof(part)), 0);
	assert_int_equal(ky_ec_generate(&ukey), 0);
	assert_int_equal(ky_ec_generate(&okey), 0);
	assert_int_equal(
	    ky_cert_issue(ukey, "unit-1 importer", "kyok unit", alice_cert, alice_key, 30, &ucert),
	    0);
	assert_int_equal(
	    ky_cert_issue(okey, "unit-2 importer", "kyok unit", alice_cert, alice_key, 30, &ocert),
	    0);

	assert_int_equal(ky_token_part_seal(part, ucert, &der), 0);
	assert_true(ky_token_part_is(der.data, der.len));
	assert_null(memmem(der.data, der.len, part, sizeof(part)));
	memset(out, 0, sizeof(out));
	assert_int_equal(ky_token_part_open(der.data, der.len, ukey, ucert, out), 0);
	assert_memory_equal(out, part, KY_MK_LEN);
	/* Two seals of one part differ (a fresh ephemeral key each time) and both open. */
	assert_int_equal(ky_token_part_seal(part, ucert, &der2), 0);
	assert_false(der2.len == der.len && memcmp(der2.data, der.data, der.len) == 0);
	assert_int_equal(ky_token_part_open(der2.data, der2.len, ukey, ucert, out), 0);
	assert_memory_equal(out, part, KY_MK_LEN);
	ky_buf_free(&der2);

	/* Made for another unit: its recipient is not this importer certificate. */
	assert_int_equal(ky_token_part_open(der.data, der.len, okey, ocert, out),
	                 KY_ERR_TOKEN_PART_OTHER_UNIT);
	/* The right recipient, the wrong key: the wrap does not open. */
	assert_int_equal(ky_token_part_open(der.data, der.len, okey, ucert, out),
	                 KY_ERR_TOKEN_PART_UNWRAP);
	/* Altered wrap: its last byte is the last byte of the structure. */
	der.data[der.len - 1] ^= 0x01;
	assert_int_equal(ky_token_part_open(der.data, der.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_UNWRAP);
	der.data[der.len - 1] ^= 0x01;
	/* Truncated, trailing bytes, garbage. */
	assert_int_equal(ky_token_part_open(der.data, der.len - 1, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_MALFORMED);
	assert_true(ky_token_part_is(der.data, der.len - 1)); /* the form, not its validity */
	assert_int_equal(ky_buf_append(&der2, der.data, der.len), 0);
	assert_int_equal(ky_buf_append(&der2, (const uint8_t *)"\0", 1), 0);
	assert_int_equal(ky_token_part_open(der2.data, der2.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_MALFORMED);
	ky_buf_free(&der2);
	assert_int_equal(ky_token_part_open((const uint8_t *)"xx", 2, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_MALFORMED);
	/* Version 2: the INTEGER right after the SEQUENCE header (long form, one length byte). */
	assert_int_equal(der.data[1], 0x81);
	assert_memory_equal(der.data + 3, "\x02\x01\x01", 3);
	der.data[5] = 0x02;
	assert_int_equal(ky_token_part_open(der.data, der.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_VERSION);
	der.data[5] = 0x01;
	assert_int_equal(ky_token_part_open(der.data, der.len, ukey, ucert, out), 0);

	/* An originator key on another curve (P-256). */
	assert_int_equal(ky_token_part_recipient(ucert, id), 0);
	assert_int_equal(ky_random(wrapped, sizeof(wrapped)), 0);
	assert_non_null(p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"));
	assert_int_equal(ky_token_part_encode(id, p256, wrapped, sizeof(wrapped), &other), 0);
	assert_true(ky_token_part_is(other.data, other.len));
	assert_int_equal(ky_token_part_open(other.data, other.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_CURVE);
	ky_buf_free(&other);
	/* A P-521 originator with a wrapped part of the wrong size. */
	assert_int_equal(ky_token_part_encode(id, okey, wrapped, 32, &other), 0);
	assert_int_equal(ky_token_part_open(other.data, other.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_MALFORMED);
	ky_buf_free(&other);
	/* A recipient of 31 or 33 bytes is malformed (SIZE (32)), not another unit's: the same
	 * originator and wrapped part, this unit's id cut or lengthened. */
	assert_non_null(spki = X509_PUBKEY_new());
	assert_int_equal(X509_PUBKEY_set(&spki, okey), 1);
	assert_true((spkilen = i2d_X509_PUBKEY(spki, &spkider)) > 0);
	for (int d = -1; d <= 1; d += 2) {
		uint8_t longid[KY_TOKEN_PART_ID_LEN + 1];

		memcpy(longid, id, KY_TOKEN_PART_ID_LEN);
		longid[KY_TOKEN_PART_ID_LEN] = 0;
		assert_int_equal(ky_buf_append(&other, (const uint8_t *)"\x02\x01\x01\x04", 4), 0);
		assert_int_equal(
		    ky_buf_append(&other, (const uint8_t[]){(uint8_t)(KY_TOKEN_PART_ID_LEN + d)},
		                  1),
		    0);
		assert_int_equal(ky_buf_append(&other, longid, (size_t)(KY_TOKEN_PART_ID_LEN + d)),
		                 0);
		assert_int_equal(ky_buf_append(&other, spkider, (size_t)spkilen), 0);
		assert_int_equal(ky_buf_append(&other, (const uint8_t *)"\x04\x28", 2), 0);
		assert_int_equal(ky_buf_append(&other, wrapped, sizeof(wrapped)), 0);
		assert_true(other.len < 0x100);
		assert_int_equal(
		    ky_buf_append(&der2, (const uint8_t[]){0x30, 0x81, (uint8_t)other.len}, 3), 0);
		assert_int_equal(ky_buf_append(&der2, other.data, other.len), 0);
		assert_int_equal(ky_token_part_open(der2.data, der2.len, ukey, ucert, out),
		                 KY_ERR_TOKEN_PART_MALFORMED);
		ky_buf_free(&other);
		ky_buf_free(&der2);
	}
	OPENSSL_free(spkider);
	X509_PUBKEY_free(spki);
	/* The structure is checked before the originator: a wrong size with a P-256 key too. */
	assert_int_equal(ky_token_part_encode(id, p256, wrapped, 32, &other), 0);
	assert_int_equal(ky_token_part_open(other.data, other.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_MALFORMED);
	ky_buf_free(&other);
	/* A random wrapped part of the right size does not pass the integrity check. */
	assert_int_equal(ky_token_part_encode(id, okey, wrapped, sizeof(wrapped), &other), 0);
	assert_int_equal(ky_token_part_open(other.data, other.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_UNWRAP);
	ky_buf_free(&other);

	/* A CMS envelope is not the token form, and the token form is no CMS envelope. */
	assert_int_equal(ky_envelope_seal(part, sizeof(part), ucert, &other), 0);
	assert_false(ky_token_part_is(other.data, other.len));
	assert_int_equal(ky_token_part_open(other.data, other.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_MALFORMED);
	assert_int_equal(ky_envelope_open(der.data, der.len, ukey, ucert, out, KY_MK_LEN),
	                 KY_ERR_BAD_COMMAND);
	ky_buf_free(&other);
	assert_int_equal(ky_token_part_seal(part, NULL, &other), KY_ERR_USAGE);

	OPENSSL_cleanse(out, sizeof(out));
	ky_buf_free(&der);
	EVP_PKEY_free(p256);
	EVP_PKEY_free(ukey);
	EVP_PKEY_free(okey);
	X509_free(ucert);
	X509_free(ocert);
}

static void test_envelope(void **state)
{
	EVP_PKEY *ukey = NULL, *okey = NULL;
	X509 *ucert = NULL, *ocert = NULL;
	uint8_t secret[KY_MK_LEN], out[KY_MK_LEN + 1];
	struct ky_buf der = {0};

	(void)state;
	assert_int_equal(ky_random(secret, sizeof(secret)), 0);
	assert_int_equal(ky_ec_generate(&ukey), 0);
	assert_int_equal(ky_ec_generate(&okey), 0);
	assert_int_equal(
	    ky_cert_issue(ukey, "unit-1 importer", "kyok unit", alice_cert, alice_key, 30, &ucert),
	    0);
	assert_int_equal(
	    ky_cert_issue(okey, "unit-2 importer", "kyok unit", alice_cert, alice_key, 30, &ocert),
	    0);

	assert_int_equal(ky_envelope_seal(secret, sizeof(secret), ucert, &der), 0);
	assert_null(memmem(der.data, der.len, secret, sizeof(secret)));
	memset(out, 0, sizeof(out));
	assert_int_equal(ky_envelope_open(der.data, der.len, ukey, ucert, out, KY_MK_LEN), 0);
	assert_memory_equal(out, secret, KY_MK_LEN);

	/* Another unit's key and certificate; the right certificate with a wrong key. */
	assert_int_equal(ky_envelope_open(der.data, der.len, okey, ocert, out, KY_MK_LEN),
	                 KY_ERR_BAD_COMMAND);
	assert_int_equal(ky_envelope_open(der.data, der.len, okey, ucert, out, KY_MK_LEN),
	                 KY_ERR_BAD_COMMAND);
	/* Wrong expected length, either way. */
	assert_int_equal(ky_envelope_open(der.data, der.len, ukey, ucert, out, KY_MK_LEN - 1),
	                 KY_ERR_BAD_COMMAND);
	assert_int_equal(ky_envelope_open(der.data, der.len, ukey, ucert, out, KY_MK_LEN + 1),
	                 KY_ERR_BAD_COMMAND);
	/* Damaged tag (last bytes of the structure), truncated, garbage. */
	der.data[der.len - 2] ^= 0x01;
	assert_int_equal(ky_envelope_open(der.data, der.len, ukey, ucert, out, KY_MK_LEN),
	                 KY_ERR_BAD_COMMAND);
	der.data[der.len - 2] ^= 0x01;
	assert_int_equal(ky_envelope_open(der.data, der.len - 1, ukey, ucert, out, KY_MK_LEN),
	                 KY_ERR_BAD_COMMAND);
	assert_int_equal(ky_envelope_open((const uint8_t *)"xx", 2, ukey, ucert, out, KY_MK_LEN),
	                 KY_ERR_BAD_COMMAND);
	assert_int_equal(ky_envelope_open(der.data, der.len, ukey, ucert, out, KY_MK_LEN), 0);
	ky_buf_free(&der);

	/* A signed command is not an envelope. */
	cms_signed_by_both(&der);
	assert_int_equal(ky_envelope_open(der.data, der.len, ukey, ucert, out, KY_MK_LEN),
	                 KY_ERR_BAD_COMMAND);
	ky_buf_free(&der);
	assert_int_equal(ky_envelope_seal(secret, 0, ucert, &der), KY_ERR_USAGE);

	X509_free(ucert);
	X509_free(ocert);
	EVP_PKEY_free(ukey);
	EVP_PKEY_free(okey);
	assert_int_equal(ERR_peek_error(), 0);
}

/* ---- AEAD ---- */

static void test_aead(void **state)
{
	uint8_t key[32], key2[32];
	static const char aad[] = "instance-1/key-7/v1";
	static const char pt[] = "root key material, 32 bytes long";
	struct ky_buf sealed = {0}, opened = {0};
	size_t positions[4];

	(void)state;
	assert_int_equal(ky_random(key, sizeof(key)), 0);
	memcpy(key2, key, sizeof(key));
	key2[0] ^= 1;
	assert_int_equal(ky_aead_seal(key, aad, strlen(aad), pt, strlen(pt), &sealed), 0);
	assert_int_equal(sealed.len, strlen(pt) + 28);
	assert_int_equal(ky_aead_open(key, aad, strlen(aad), sealed.data, sealed.len, &opened), 0);
	assert_int_equal(opened.len, strlen(pt));
	assert_memory_equal(opened.data, pt, opened.len);
	ky_buf_free(&opened);

	/* Each region of the output: nonce, ciphertext, tag. */
	positions[0] = 0;
	positions[1] = 11;
	positions[2] = 12 + 5;
	positions[3] = sealed.len - 1;
	for (size_t i = 0; i < 4; i++) {
		sealed.data[positions[i]] ^= 0x20;
		assert_int_equal(
		    ky_aead_open(key, aad, strlen(aad), sealed.data, sealed.len, &opened),
		    KY_ERR_TAMPERED);
		assert_int_equal(opened.len, 0);
		sealed.data[positions[i]] ^= 0x20;
	}
	/* Other associated data, no associated data, another key, truncated, too short. */
	assert_int_equal(
	    ky_aead_open(key, "instance-1/key-7/v2", strlen(aad), sealed.data, sealed.len, &opened),
	    KY_ERR_TAMPERED);
	assert_int_equal(ky_aead_open(key, NULL, 0, sealed.data, sealed.len, &opened),
	                 KY_ERR_TAMPERED);
	assert_int_equal(ky_aead_open(key2, aad, strlen(aad), sealed.data, sealed.len, &opened),
	                 KY_ERR_TAMPERED);
	assert_int_equal(ky_aead_open(key, aad, strlen(aad), sealed.data, sealed.len - 1, &opened),
	                 KY_ERR_TAMPERED);
	assert_int_equal(ky_aead_open(key, aad, strlen(aad), sealed.data, 27, &opened),
	                 KY_ERR_TAMPERED);
	assert_int_equal(opened.len, 0);
	ky_buf_free(&sealed);

	/* Empty plaintext, no AAD; two seals of the same input differ (random nonce). */
	{
		struct ky_buf a = {0}, b = {0};
		assert_int_equal(ky_aead_seal(key, NULL, 0, "", 0, &a), 0);
		assert_int_equal(a.len, 28);
		assert_int_equal(ky_aead_open(key, NULL, 0, a.data, a.len, &opened), 0);
		assert_int_equal(opened.len, 0);
		assert_int_equal(ky_aead_seal(key, NULL, 0, "", 0, &b), 0);
		assert_memory_not_equal(a.data, b.data, 12);
		ky_buf_free(&a);
		ky_buf_free(&b);
	}
	assert_int_equal(ERR_peek_error(), 0);
}

/* The anchor's side: identity requests, identity certificates, chain validation. */
static void test_anchor_chain(void **state)
{
	(void)state;
	EVP_PKEY *ak = NULL, *ik = NULL, *mk = NULL, *pub = NULL, *p256 = NULL, *ok2 = NULL;
	X509 *anchor = NULL, *id = NULL, *imp = NULL, *other = NULL, *self_id = NULL;
	char *pem = NULL, cn[KY_ID_MAX + 1], ou[KY_ID_MAX + 1];

	assert_int_equal(ky_ec_generate(&ak), 0);
	assert_int_equal(ky_cert_anchor_self_signed(ak, "kyok unit anchor", "inst", 30, &anchor),
	                 0);
	assert_int_equal(ky_cert_ou(anchor, ou, sizeof(ou)), 0);
	assert_string_equal(ou, "inst");
	assert_int_equal(ky_cert_ou(anchor, ou, 4), KY_ERR_BAD_CERT); /* does not fit */

	/* a request names the unit and carries the key; the anchor issues from it */
	assert_int_equal(ky_ec_generate(&ik), 0);
	assert_int_equal(ky_csr_create(ik, "unit-1", "inst", &pem), 0);
	assert_int_equal(ky_csr_read(pem, &pub, cn, ou), 0);
	assert_string_equal(cn, "unit-1");
	assert_string_equal(ou, "inst");
	assert_int_equal(EVP_PKEY_eq(pub, ik), 1);
	/* a request whose signature is broken does not read */
	char *bad = strdup(pem);
	char *mid = strstr(bad, "\n") + 40;
	*mid = *mid == 'A' ? 'B' : 'A';
	EVP_PKEY *bpub = NULL;
	assert_int_not_equal(ky_csr_read(bad, &bpub, cn, ou), 0);
	assert_null(bpub);
	free(bad);
	free(pem);
	pem = NULL;
	assert_int_equal(ky_csr_read("not a request", &bpub, cn, ou), KY_ERR_MALFORMED);
	/* only P-521 */
	p256 = EVP_EC_gen("P-256");
	assert_non_null(p256);
	assert_int_equal(ky_csr_create(p256, "unit-1", "inst", &pem), 0);
	assert_int_equal(ky_csr_read(pem, &bpub, cn, ou), KY_ERR_BAD_CERT);
	free(pem);
	pem = NULL;

	assert_int_equal(ky_cert_issue_identity(pub, "unit-1", "inst", anchor, ak, 30, &id), 0);
	assert_int_equal(ky_ec_generate(&mk), 0);
	assert_int_equal(ky_cert_issue(mk, "unit-1 importer", "inst", id, ik, 30, &imp), 0);
	assert_int_equal(ky_cert_chain_verify(id, NULL, anchor), 0);
	assert_int_equal(ky_cert_chain_verify(imp, id, anchor), 0);
	/* the importer alone does not reach the anchor; nor does the anchor issue importers */
	assert_int_equal(ky_cert_chain_verify(imp, NULL, anchor), KY_ERR_BAD_SIGNATURE);
	assert_int_equal(ky_cert_chain_verify(imp, anchor, anchor), KY_ERR_BAD_SIGNATURE);
	/* another anchor */
	assert_int_equal(ky_ec_generate(&ok2), 0);
	assert_int_equal(ky_cert_anchor_self_signed(ok2, "kyok unit anchor", "inst", 30, &other),
	                 0);
	assert_int_equal(ky_cert_chain_verify(imp, id, other), KY_ERR_BAD_SIGNATURE);
	assert_int_equal(ky_cert_chain_verify(id, NULL, other), KY_ERR_BAD_SIGNATURE);
	/* an identity that certified itself is not the anchor's */
	assert_int_equal(ky_cert_self_signed_issuer(ik, "unit-1", "inst", 30, &self_id), 0);
	assert_int_equal(ky_cert_chain_verify(imp, self_id, anchor), KY_ERR_BAD_SIGNATURE);
	/* the anchor key must match the anchor certificate */
	X509 *x = NULL;
	assert_int_equal(ky_cert_issue_identity(pub, "unit-1", "inst", anchor, ok2, 30, &x),
	                 KY_ERR_BAD_CERT);
	assert_null(x);

	EVP_PKEY_free(ak);
	EVP_PKEY_free(ik);
	EVP_PKEY_free(mk);
	EVP_PKEY_free(pub);
	EVP_PKEY_free(p256);
	EVP_PKEY_free(ok2);
	X509_free(anchor);
	X509_free(id);
	X509_free(imp);
	X509_free(other);
	X509_free(self_id);
}

/* The form is decided by the first element (INTEGER: TokenKeyPart; OID: CMS), and the version
 * is read before the rest, so that another version gets its own refusal whatever follows. */
static void test_token_part_form(void **state)
{
	EVP_PKEY *ukey = NULL;
	X509 *ucert = NULL;
	uint8_t out[KY_MK_LEN];
	struct ky_buf der = {0}, env = {0};
	static const struct {
		const char *what;
		const char *der;
		size_t len;
		bool is;
		int err;
	} cases[] = {
	    {"version 2, another structure", "\x30\x08\x02\x01\x02\x04\x03xyz", 10, true,
	     KY_ERR_TOKEN_PART_VERSION},
	    {"version 0", "\x30\x08\x02\x01\x00\x04\x03xyz", 10, true, KY_ERR_TOKEN_PART_VERSION},
	    {"version -1", "\x30\x03\x02\x01\xff", 5, true, KY_ERR_TOKEN_PART_VERSION},
	    {"version 2, long form length", "\x30\x81\x03\x02\x01\x02", 6, true,
	     KY_ERR_TOKEN_PART_VERSION},
	    {"version 1 and nothing else", "\x30\x03\x02\x01\x01", 5, true,
	     KY_ERR_TOKEN_PART_MALFORMED},
	    {"an INTEGER cut short", "\x30\x03\x02\x02\x01", 5, true, KY_ERR_TOKEN_PART_MALFORMED},
	    {"an INTEGER with a wrong length", "\x30\x03\x02\x09\x01", 5, true,
	     KY_ERR_TOKEN_PART_MALFORMED},
	    {"an OID first (CMS)", "\x30\x05\x06\x03\x2a\x03\x04", 7, false,
	     KY_ERR_TOKEN_PART_MALFORMED},
	    {"a SET, not a SEQUENCE", "\x31\x03\x02\x01\x01", 5, false,
	     KY_ERR_TOKEN_PART_MALFORMED},
	    {"a SEQUENCE header alone", "\x30\x03", 2, false, KY_ERR_TOKEN_PART_MALFORMED},
	    {"a length of 5 bytes", "\x30\x85\x00\x00\x00\x00\x03\x02\x01\x01", 10, false,
	     KY_ERR_TOKEN_PART_MALFORMED},
	    {"garbage", "xx", 2, false, KY_ERR_TOKEN_PART_MALFORMED},
	};

	(void)state;
	assert_int_equal(ky_ec_generate(&ukey), 0);
	assert_int_equal(
	    ky_cert_issue(ukey, "unit-1 importer", "kyok unit", alice_cert, alice_key, 30, &ucert),
	    0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		print_message("%s\n", cases[i].what);
		assert_int_equal(ky_token_part_is((const uint8_t *)cases[i].der, cases[i].len),
		                 cases[i].is);
		assert_int_equal(ky_token_part_open((const uint8_t *)cases[i].der, cases[i].len,
		                                    ukey, ucert, out),
		                 cases[i].err);
	}
	assert_false(ky_token_part_is(NULL, 0));

	/* Any cut of a real part is still the token form, and malformed; so is a cut envelope
	 * never the token form. */
	assert_int_equal(ky_token_part_seal(part_value, ucert, &der), 0);
	assert_int_equal(ky_envelope_seal(part_value, KY_MK_LEN, ucert, &env), 0);
	for (size_t n = 6; n < der.len; n += 7) {
		assert_true(ky_token_part_is(der.data, n));
		assert_int_equal(ky_token_part_open(der.data, n, ukey, ucert, out),
		                 KY_ERR_TOKEN_PART_MALFORMED);
	}
	for (size_t n = 3; n < env.len; n += 11)
		assert_false(ky_token_part_is(env.data, n));
	assert_int_equal(ky_token_part_open(der.data, der.len, ukey, ucert, out), 0);
	assert_memory_equal(out, part_value, KY_MK_LEN);

	OPENSSL_cleanse(out, sizeof(out));
	ky_buf_free(&der);
	ky_buf_free(&env);
	EVP_PKEY_free(ukey);
	X509_free(ucert);
}

/* DER only: the same structure in BER (indefinite or non-minimal lengths) is refused. */
static void test_token_part_der_only(void **state)
{
	EVP_PKEY *ukey = NULL;
	X509 *ucert = NULL;
	uint8_t out[KY_MK_LEN];
	struct ky_buf der = {0}, ber = {0};
	size_t body;

	(void)state;
	assert_int_equal(ky_ec_generate(&ukey), 0);
	assert_int_equal(
	    ky_cert_issue(ukey, "unit-1 importer", "kyok unit", alice_cert, alice_key, 30, &ucert),
	    0);
	assert_int_equal(ky_token_part_seal(part_value, ucert, &der), 0);
	/* 30 81 LEN, then version (02 01 01), then recipient (04 20 ...). */
	assert_memory_equal(der.data, "\x30\x81", 2);
	body = der.data[2];
	assert_int_equal(der.len, 3 + body);
	assert_memory_equal(der.data + 3, "\x02\x01\x01\x04\x20", 5);
	assert_int_equal(ky_token_part_open(der.data, der.len, ukey, ucert, out), 0);

	/* The outer length in 2 bytes where 1 does. */
	assert_int_equal(ky_buf_append(&ber, (const uint8_t[]){0x30, 0x82, 0x00, (uint8_t)body}, 4),
	                 0);
	assert_int_equal(ky_buf_append(&ber, der.data + 3, body), 0);
	assert_true(ky_token_part_is(ber.data, ber.len));
	assert_int_equal(ky_token_part_open(ber.data, ber.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_MALFORMED);

	/* The outer SEQUENCE of indefinite length, closed by end-of-contents. */
	ber.len = 0;
	assert_int_equal(ky_buf_append(&ber, (const uint8_t *)"\x30\x80", 2), 0);
	assert_int_equal(ky_buf_append(&ber, der.data + 3, body), 0);
	assert_int_equal(ky_buf_append(&ber, (const uint8_t *)"\x00\x00", 2), 0);
	assert_true(ky_token_part_is(ber.data, ber.len));
	assert_int_equal(ky_token_part_open(ber.data, ber.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_MALFORMED);

	/* The recipient's length in long form (04 81 20). */
	ber.len = 0;
	assert_int_equal(ky_buf_append(&ber, (const uint8_t[]){0x30, 0x81, (uint8_t)(body + 1)}, 3),
	                 0);
	assert_int_equal(ky_buf_append(&ber, (const uint8_t *)"\x02\x01\x01\x04\x81\x20", 6), 0);
	assert_int_equal(ky_buf_append(&ber, der.data + 8, body - 5), 0);
	assert_int_equal(ky_token_part_open(ber.data, ber.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_MALFORMED);

	/* The version with a leading zero byte (02 02 00 01). */
	ber.len = 0;
	assert_int_equal(ky_buf_append(&ber, (const uint8_t[]){0x30, 0x81, (uint8_t)(body + 1)}, 3),
	                 0);
	assert_int_equal(ky_buf_append(&ber, (const uint8_t *)"\x02\x02\x00\x01", 4), 0);
	assert_int_equal(ky_buf_append(&ber, der.data + 6, body - 3), 0);
	assert_int_equal(ky_token_part_open(ber.data, ber.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_MALFORMED);

	OPENSSL_cleanse(out, sizeof(out));
	ky_buf_free(&der);
	ky_buf_free(&ber);
	EVP_PKEY_free(ukey);
	X509_free(ucert);
}

/* A DER length in front of n bytes of content, appended to b. */
static void der_append_len(struct ky_buf *b, size_t n)
{
	uint8_t l[3] = {0x82, (uint8_t)(n >> 8), (uint8_t)n};

	assert_true(n < 0x10000);
	if (n < 0x80)
		assert_int_equal(ky_buf_append(b, l + 2, 1), 0);
	else if (n < 0x100)
		assert_int_equal(ky_buf_append(b, (const uint8_t[]){0x81, (uint8_t)n}, 2), 0);
	else
		assert_int_equal(ky_buf_append(b, l, 3), 0);
}

/* A TokenKeyPart assembled by hand: version 1, recipient id, the SubjectPublicKeyInfo spki as
 * given, wrapped part w. */
static void token_part_assemble(const uint8_t id[KY_TOKEN_PART_ID_LEN], const uint8_t *spki,
                                size_t spkilen, const uint8_t *w, size_t wlen, struct ky_buf *out)
{
	struct ky_buf body = {0};

	assert_int_equal(ky_buf_append(&body, (const uint8_t *)"\x02\x01\x01\x04\x20", 5), 0);
	assert_int_equal(ky_buf_append(&body, id, KY_TOKEN_PART_ID_LEN), 0);
	assert_int_equal(ky_buf_append(&body, spki, spkilen), 0);
	assert_int_equal(ky_buf_append(&body, (const uint8_t *)"\x04", 1), 0);
	der_append_len(&body, wlen);
	assert_int_equal(ky_buf_append(&body, w, wlen), 0);
	out->len = 0;
	assert_int_equal(ky_buf_append(out, (const uint8_t *)"\x30", 1), 0);
	der_append_len(out, body.len);
	assert_int_equal(ky_buf_append(out, body.data, body.len), 0);
	ky_buf_free(&body);
}

/* The DER SubjectPublicKeyInfo of an id-ecPublicKey with the named curve nid and the point
 * bytes pt as given (any encoding, valid or not). */
static void spki_ec_raw(int nid, const uint8_t *pt, size_t ptlen, struct ky_buf *out)
{
	X509_PUBKEY *pub = X509_PUBKEY_new();
	unsigned char *penc = OPENSSL_memdup(pt, ptlen), *der = NULL;
	int len;

	assert_non_null(pub);
	assert_non_null(penc);
	assert_int_equal(X509_PUBKEY_set0_param(pub, OBJ_nid2obj(NID_X9_62_id_ecPublicKey),
	                                        V_ASN1_OBJECT, OBJ_nid2obj(nid), penc, (int)ptlen),
	                 1);
	assert_true((len = i2d_X509_PUBKEY(pub, &der)) > 0);
	out->len = 0;
	assert_int_equal(ky_buf_append(out, der, (size_t)len), 0);
	OPENSSL_free(der);
	X509_PUBKEY_free(pub);
}

/* The originator must be the canonical P-521 key (named curve, uncompressed point); any other
 * encoding, and any key that does not derive, is token-part-curve, never a crypto failure. */
static void test_token_part_originator(void **state)
{
	EVP_PKEY *ukey = NULL, *okey = NULL, *explicit = NULL, *dec = NULL, *p256 = NULL;
	X509 *ucert = NULL;
	uint8_t id[KY_TOKEN_PART_ID_LEN], wrapped[40], pt[133], bad[133], out[KY_MK_LEN];
	size_t ptlen = 0;
	struct ky_buf spki = {0}, tp = {0}, sealed = {0};
	unsigned char *der = NULL;
	const unsigned char *q;
	int len;

	(void)state;
	assert_int_equal(ky_ec_generate(&ukey), 0);
	assert_int_equal(ky_ec_generate(&okey), 0);
	assert_int_equal(
	    ky_cert_issue(ukey, "unit-1 importer", "kyok unit", alice_cert, alice_key, 30, &ucert),
	    0);
	assert_int_equal(ky_token_part_recipient(ucert, id), 0);
	assert_int_equal(ky_random(wrapped, sizeof(wrapped)), 0);
	assert_int_equal(
	    EVP_PKEY_get_octet_string_param(okey, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &ptlen),
	    1);
	assert_int_equal(ptlen, sizeof(pt));
	assert_int_equal(pt[0], 0x04);

	/* The canonical encoding built by the same helpers gets as far as the unwrap. */
	spki_ec_raw(NID_secp521r1, pt, sizeof(pt), &spki);
	token_part_assemble(id, spki.data, spki.len, wrapped, sizeof(wrapped), &tp);
	assert_int_equal(ky_token_part_open(tp.data, tp.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_UNWRAP);

	/* Hybrid (0x06/0x07 || X || Y): OpenSSL decodes it, the unit refuses it. */
	memcpy(bad, pt, sizeof(pt));
	bad[0] = (uint8_t)(0x06 | (pt[132] & 1));
	spki_ec_raw(NID_secp521r1, bad, sizeof(bad), &spki);
	q = spki.data;
	assert_non_null(dec = d2i_PUBKEY(NULL, &q, (long)spki.len));
	EVP_PKEY_free(dec);
	token_part_assemble(id, spki.data, spki.len, wrapped, sizeof(wrapped), &tp);
	assert_int_equal(ky_token_part_open(tp.data, tp.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_CURVE);

	/* Compressed (0x02/0x03 || X): decodes too, refused. */
	bad[0] = (uint8_t)(0x02 | (pt[132] & 1));
	spki_ec_raw(NID_secp521r1, bad, 67, &spki);
	q = spki.data;
	assert_non_null(dec = d2i_PUBKEY(NULL, &q, (long)spki.len));
	EVP_PKEY_free(dec);
	token_part_assemble(id, spki.data, spki.len, wrapped, sizeof(wrapped), &tp);
	assert_int_equal(ky_token_part_open(tp.data, tp.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_CURVE);

	/* The point at infinity (a single 0x00). */
	spki_ec_raw(NID_secp521r1, (const uint8_t *)"\x00", 1, &spki);
	token_part_assemble(id, spki.data, spki.len, wrapped, sizeof(wrapped), &tp);
	assert_int_equal(ky_token_part_open(tp.data, tp.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_CURVE);

	/* 133 bytes starting 0x04 that are not a point of the curve. */
	memcpy(bad, pt, sizeof(pt));
	bad[132] ^= 0x01;
	spki_ec_raw(NID_secp521r1, bad, sizeof(bad), &spki);
	token_part_assemble(id, spki.data, spki.len, wrapped, sizeof(wrapped), &tp);
	assert_int_equal(ky_token_part_open(tp.data, tp.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_CURVE);

	/* The P-521 point under another curve's name. */
	spki_ec_raw(NID_secp384r1, pt, sizeof(pt), &spki);
	token_part_assemble(id, spki.data, spki.len, wrapped, sizeof(wrapped), &tp);
	assert_int_equal(ky_token_part_open(tp.data, tp.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_CURVE);

	/* Explicit curve parameters equal to P-521's, the same point: decodes as a P-521 key,
	 * refused (only the namedCurve secp521r1). */
	assert_non_null(explicit = EVP_PKEY_dup(okey));
	assert_int_equal(EVP_PKEY_set_utf8_string_param(explicit, OSSL_PKEY_PARAM_EC_ENCODING,
	                                                OSSL_PKEY_EC_ENCODING_EXPLICIT),
	                 1);
	assert_true((len = i2d_PUBKEY(explicit, &der)) > 200);
	q = der;
	assert_non_null(dec = d2i_PUBKEY(NULL, &q, len));
	assert_true(ky_pkey_is_p521(dec));
	EVP_PKEY_free(dec);
	token_part_assemble(id, der, (size_t)len, wrapped, sizeof(wrapped), &tp);
	assert_int_equal(ky_token_part_open(tp.data, tp.len, ukey, ucert, out),
	                 KY_ERR_TOKEN_PART_CURVE);
	OPENSSL_free(der);

	/* A derivation that fails (here the importer key given is on P-256, so the P-521
	 * originator does not derive with it) is the same refusal, not a crypto failure. */
	assert_int_equal(ky_token_part_seal(part_value, ucert, &sealed), 0);
	assert_non_null(p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"));
	assert_int_equal(ky_token_part_open(sealed.data, sealed.len, p256, ucert, out),
	                 KY_ERR_TOKEN_PART_CURVE);
	assert_int_equal(ky_token_part_open(sealed.data, sealed.len, ukey, ucert, out), 0);
	assert_memory_equal(out, part_value, KY_MK_LEN);

	OPENSSL_cleanse(out, sizeof(out));
	ky_buf_free(&sealed);
	ky_buf_free(&spki);
	ky_buf_free(&tp);
	EVP_PKEY_free(p256);
	EVP_PKEY_free(explicit);
	EVP_PKEY_free(ukey);
	EVP_PKEY_free(okey);
	X509_free(ucert);
}

/* The curves of administrator keys: P-521 and P-384 (tokens without P-521), nothing else;
 * a P-384 administrator's signed command verifies as a unit verifies it. */
static void test_admin_curves(void **state)
{
	EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	EVP_PKEY *p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *c384 = NULL, *c256 = NULL;
	struct ky_buf der = {0};
	struct ky_cms_signed *sd = NULL;

	(void)state;
	assert_non_null(p384);
	assert_non_null(p256);
	assert_true(ky_pkey_is_admin_curve(alice_key));
	assert_true(ky_pkey_is_admin_curve(p384));
	assert_false(ky_pkey_is_admin_curve(p256));
	assert_false(ky_pkey_is_p521(p384));
	assert_int_equal(ky_cert_self_signed(p384, "percy", "kyok administration", 30, &c384), 0);
	assert_int_equal(ky_admin_cert_check(c384), 0);
	/* kyok makes no certificate for a P-256 key (its SKI is not defined); an OpenSSL-made
	 * one is refused by test_admin_cert_refusals and by units in t_refusals. */
	assert_int_equal(ky_cert_self_signed(p256, "paula", "kyok administration", 30, &c256),
	                 KY_ERR_BAD_CERT);
	assert_null(c256);

	assert_int_equal(ky_cms_unsigned(command, strlen(command), &der), 0);
	assert_int_equal(ky_cms_add_signer(&der, c384, p384), 0);
	assert_int_equal(ky_cms_signed_parse(der.data, der.len, &sd), 0);
	assert_int_equal(ky_cms_signed_verify(sd, 0, X509_get0_pubkey(c384)), 0);
	assert_int_equal(ky_cms_signed_verify(sd, 0, X509_get0_pubkey(alice_cert)),
	                 KY_ERR_BAD_SIGNATURE);
	ky_cms_signed_free(sd);
	ky_buf_free(&der);
	X509_free(c384);
	X509_free(c256);
	EVP_PKEY_free(p384);
	EVP_PKEY_free(p256);
}

/* ---- external signers (keys in tokens), played by a software key ---- */

/* struct ky_ext_signer's sign with arg an EVP_PKEY: a DER ECDSA signature over the digest. */
static int soft_sign(void *arg, const uint8_t *md, size_t mdlen, struct ky_buf *sig)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(arg, NULL);
	uint8_t out[256];
	size_t outlen = sizeof(out);
	int ok = ctx != NULL && EVP_PKEY_sign_init(ctx) == 1 &&
	         EVP_PKEY_sign(ctx, out, &outlen, md, mdlen) == 1;

	EVP_PKEY_CTX_free(ctx);
	return ok ? ky_buf_append(sig, out, outlen) : KY_ERR_CRYPTO;
}

/* Verifies, as a unit does, the signer of der whose SKI is cert's. */
static int cms_verify_signer(const struct ky_buf *der, X509 *cert)
{
	struct ky_cms_signed *sd = NULL;
	uint8_t ski[KY_SKI_LEN];
	int r = ky_cms_signed_parse(der->data, der->len, &sd);

	assert_int_equal(ky_cert_ski(cert, ski), 0);
	for (size_t i = 0; r == 0 && i < ky_cms_signed_nsigners(sd); i++)
		if (memcmp(ky_cms_signed_signer(sd, i)->ski, ski, KY_SKI_LEN) == 0) {
			r = ky_cms_signed_verify(sd, i, X509_get0_pubkey(cert));
			ky_cms_signed_free(sd);
			return r;
		}
	ky_cms_signed_free(sd);
	return r == 0 ? KY_ERR_NOT_FOUND : r;
}

static void test_ext_signer_cert(void **state)
{
	struct ky_ext_signer ext = {X509_get0_pubkey(alice_cert), soft_sign, alice_key};
	struct ky_ext_signer liar = {X509_get0_pubkey(alice_cert), soft_sign, bob_key};
	X509 *c = NULL;

	(void)state;
	assert_int_equal(ky_cert_self_signed_ext(&ext, "tess", "kyok administration", 30, &c), 0);
	assert_int_equal(ky_admin_cert_check(c), 0);
	assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(c), alice_key), 1);
	X509_free(c);
	c = NULL;
	/* A signer whose signatures are not by the key it names makes no certificate. */
	assert_int_equal(ky_cert_self_signed_ext(&liar, "tess", "kyok administration", 30, &c),
	                 KY_ERR_BAD_SIGNATURE);
	assert_null(c);
}

static void test_ext_signer_cms(void **state)
{
	struct ky_ext_signer ext = {X509_get0_pubkey(alice_cert), soft_sign, alice_key};
	struct ky_ext_signer liar = {X509_get0_pubkey(alice_cert), soft_sign, bob_key};
	struct ky_ext_signer other = {X509_get0_pubkey(bob_cert), soft_sign, bob_key};
	struct ky_buf der = {0}, before = {0};
	struct ky_cms_signed *sd = NULL;

	(void)state;
	/* First signer through the external signer, second from a key file, and the reverse. */
	assert_int_equal(ky_cms_unsigned(command, strlen(command), &der), 0);
	assert_int_equal(ky_cms_add_signer_ext(&der, alice_cert, &ext), 0);
	assert_int_equal(ky_cms_add_signer(&der, bob_cert, bob_key), 0);
	assert_int_equal(cms_verify_signer(&der, alice_cert), 0);
	assert_int_equal(cms_verify_signer(&der, bob_cert), 0);
	ky_buf_free(&der);
	assert_int_equal(ky_cms_unsigned(command, strlen(command), &der), 0);
	assert_int_equal(ky_cms_add_signer(&der, bob_cert, bob_key), 0);
	assert_int_equal(ky_cms_add_signer_ext(&der, alice_cert, &ext), 0);
	assert_int_equal(cms_verify_signer(&der, alice_cert), 0);
	assert_int_equal(cms_verify_signer(&der, bob_cert), 0);
	ky_buf_free(&der);

	/* Refused, der left as it was: a signature by another key, a key not the certificate's. */
	assert_int_equal(ky_cms_unsigned(command, strlen(command), &der), 0);
	assert_int_equal(ky_buf_append(&before, der.data, der.len), 0);
	assert_int_equal(ky_cms_add_signer_ext(&der, alice_cert, &liar), KY_ERR_TOKEN_SIGNATURE);
	assert_int_equal(ky_cms_add_signer_ext(&der, alice_cert, &other), KY_ERR_TAMPERED);
	assert_int_equal(der.len, before.len);
	assert_memory_equal(der.data, before.data, der.len);
	assert_int_equal(ky_cms_signed_parse(der.data, der.len, &sd), 0);
	assert_int_equal(ky_cms_signed_nsigners(sd), 0);
	ky_cms_signed_free(sd);
	ky_buf_free(&der);
	ky_buf_free(&before);
}

static void test_sigkey_token_files(void **state)
{
	struct ky_ext_signer ext = {X509_get0_pubkey(alice_cert), soft_sign, alice_key};
	struct ky_sigkey_token tok = {.module = "/usr/lib/p11/module.so",
	                              .label = "kyok-tess",
	                              .serial = "0123abcd"},
	                       got;
	struct ky_buf file = {0};
	char path[300], bad[300], *text;
	bool in_token = true;
	X509 *c = NULL;
	static const struct {
		const char *from, *to;
	} edits[] = {
	    {"kyok-token-module: /usr", "kyok-token-module: usr"},  /* not absolute */
	    {"kyok-token-label: kyok-tess\n", ""},                  /* a line missing */
	    {"kyok-token-serial: 0123abcd", "kyok-token-serial: "}, /* empty */
	    {"kyok-token-key-id: 00", "kyok-token-key-id: 0"},      /* 31 hex digits */
	    {"kyok-token-key-id: 00", "kyok-token-key-id: zz"},     /* not hex */
	    {"kyok-token-label: kyok-tess", "kyok-token-label: 0123456789abcdef0123456789abcdefX"},
	    {"-----END CERTIFICATE-----\n", "-----END CERTIFICATE-----\nx: y\n"}, /* a stray line */
	};

	(void)state;
	memset(tok.id, 0, sizeof(tok.id));
	tok.id[15] = 7;
	path_in_tmp(path, sizeof(path), "tess.sigkey");
	assert_int_equal(ky_sigkey_token_create(path, "tess", &ext, &tok), 0);
	assert_int_equal(ky_sigkey_token_create(path, "tess", &ext, &tok), KY_ERR_EXISTS);
	assert_int_equal(ky_sigkey_read(path, &c, &got, &in_token), 0);
	assert_true(in_token);
	assert_string_equal(got.module, tok.module);
	assert_string_equal(got.label, tok.label);
	assert_string_equal(got.serial, tok.serial);
	assert_memory_equal(got.id, tok.id, KY_TOKEN_ID_LEN);
	assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(c), alice_key), 1);
	X509_free(c);
	c = NULL;
	/* The certificate alone is read like any other sigkey file's; no password opens it. */
	assert_int_equal(ky_sigkey_read_cert(path, &c), 0);
	X509_free(c);
	c = NULL;
	assert_int_equal(ky_sigkey_read(alice_path, &c, &got, &in_token), 0);
	assert_false(in_token);
	X509_free(c);
	c = NULL;

	file_get(path, &file);
	assert_int_equal(ky_buf_append(&file, "", 1), 0);
	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		const char *at = strstr((const char *)file.data, edits[i].from);
		size_t head;

		assert_non_null(at);
		head = (size_t)(at - (const char *)file.data);
		text = malloc(file.len + 64);
		assert_non_null(text);
		memcpy(text, file.data, head);
		snprintf(text + head, file.len + 64 - head, "%s%s", edits[i].to,
		         at + strlen(edits[i].from));
		snprintf(bad, sizeof(bad), "%s/tess-bad-%zu.sigkey", tmpdir, i);
		file_put(bad, text, strlen(text));
		free(text);
		assert_int_equal(ky_sigkey_read(bad, &c, &got, &in_token), KY_ERR_NOT_SIGKEY);
		assert_null(c);
	}
	ky_buf_free(&file);
}

/* The card form of sigkey files: written, read back, every malformed variant refused, its
 * SKI bound to the certificate's key, and refused where a key file or token is read. */
static void test_sigkey_card_files(void **state)
{
	struct ky_ext_signer ext = {X509_get0_pubkey(alice_cert), soft_sign, alice_key};
	struct ky_sigkey_card card, got;
	struct ky_sigkey_token tok;
	struct ky_buf file = {0};
	char path[300], bad[300], *text;
	bool in_token = true;
	X509 *c = NULL;
	static const struct {
		const char *from, *to;
		int r;
	} edits[] = {
	    {"kyok-card-device: ", "", KY_ERR_NOT_SIGKEY},                  /* a line missing */
	    {"kyok-card-zone: 11", "kyok-card-zone: 1", KY_ERR_NOT_SIGKEY}, /* 63 hex digits */
	    {"kyok-card-device: 22", "kyok-card-device: zz", KY_ERR_NOT_SIGKEY}, /* not hex */
	    {"kyok-card-zone: ", "kyok-card-zone:  ", KY_ERR_NOT_SIGKEY}, /* a blank too many */
	    {"-----END CERTIFICATE-----\n", "-----END CERTIFICATE-----\nx: y\n", KY_ERR_NOT_SIGKEY},
	    {"kyok-card-key-ski: ", "kyok-card-key-ski: 00", KY_ERR_NOT_SIGKEY}, /* 66 digits */
	};

	(void)state;
	memset(card.zone_id, 0x11, sizeof(card.zone_id));
	memset(card.device_id, 0x22, sizeof(card.device_id));
	assert_int_equal(ky_sigkey_card_ski(alice_key, card.ski), 0);
	path_in_tmp(path, sizeof(path), "carol.sigkey");
	/* A SKI that is not the signer's key's writes nothing. */
	card.ski[0] ^= 1;
	assert_int_equal(ky_sigkey_card_create(path, "carol", &ext, &card), KY_ERR_USAGE);
	card.ski[0] ^= 1;
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(ky_sigkey_card_create(path, "carol", &ext, &card), 0);
	assert_int_equal(ky_sigkey_card_create(path, "carol", &ext, &card), KY_ERR_EXISTS);
	assert_int_equal(ky_sigkey_read_card(path, &c, &got), 0);
	assert_memory_equal(&got, &card, sizeof(card));
	assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(c), alice_key), 1);
	X509_free(c);
	c = NULL;
	/* The certificate alone is read like any other sigkey file's. */
	assert_int_equal(ky_sigkey_read_cert(path, &c), 0);
	X509_free(c);
	c = NULL;
	/* Where only key files and tokens sign, the card form is named and refused. */
	assert_int_equal(ky_sigkey_read(path, &c, &tok, &in_token), KY_ERR_SIGKEY_IN_CARD);
	assert_null(c);
	/* A key file is not a card sigkey file. */
	assert_int_equal(ky_sigkey_read_card(alice_path, &c, &got), KY_ERR_NOT_SIGKEY);
	assert_null(c);

	file_get(path, &file);
	assert_int_equal(ky_buf_append(&file, "", 1), 0);
	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		const char *at = strstr((const char *)file.data, edits[i].from);
		size_t head;

		assert_non_null(at);
		head = (size_t)(at - (const char *)file.data);
		text = malloc(file.len + 64);
		assert_non_null(text);
		memcpy(text, file.data, head);
		snprintf(text + head, file.len + 64 - head, "%s%s", edits[i].to,
		         at + strlen(edits[i].from));
		snprintf(bad, sizeof(bad), "%s/carol-bad-%zu.sigkey", tmpdir, i);
		file_put(bad, text, strlen(text));
		free(text);
		assert_int_equal(ky_sigkey_read_card(bad, &c, &got), edits[i].r);
		assert_null(c);
	}
	/* Another key's SKI, well formed: the file was edited. */
	{
		char hex[2 * KY_SIGKEY_CARD_ID_LEN + 1];
		const char *at = strstr((const char *)file.data, "kyok-card-key-ski: ");
		size_t head;

		assert_non_null(at);
		head = (size_t)(at - (const char *)file.data) + strlen("kyok-card-key-ski: ");
		card.ski[31] ^= 0x80;
		ky_hex_encode(card.ski, KY_SIGKEY_CARD_ID_LEN, hex);
		text = malloc(file.len + 1);
		assert_non_null(text);
		memcpy(text, file.data, file.len);
		memcpy(text + head, hex, strlen(hex));
		snprintf(bad, sizeof(bad), "%s/carol-other-ski.sigkey", tmpdir);
		file_put(bad, text, file.len - 1);
		free(text);
		assert_int_equal(ky_sigkey_read_card(bad, &c, &got), KY_ERR_TAMPERED);
		assert_null(c);
	}
	ky_buf_free(&file);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_random_and_secrets),
	    cmocka_unit_test(test_vp),
	    cmocka_unit_test(test_hmac_sha256),
	    cmocka_unit_test(test_ec_ski),
	    cmocka_unit_test(test_cert_self_signed),
	    cmocka_unit_test(test_admin_cert_refusals),
	    cmocka_unit_test(test_pem_der),
	    cmocka_unit_test(test_sign_verify),
	    cmocka_unit_test(test_b64),
	    cmocka_unit_test(test_sigkey_create_refusals),
	    cmocka_unit_test(test_sigkey_files),
	    cmocka_unit_test(test_sigkey_not_sigkey),
	    cmocka_unit_test(test_sigkey_damaged_block),
	    cmocka_unit_test(test_sigkey_weak_kdf),
	    cmocka_unit_test(test_keypart_write_refusals),
	    cmocka_unit_test(test_keypart_read_and_open),
	    cmocka_unit_test(test_keypart_metadata_altered),
	    cmocka_unit_test(test_keypart_tampered),
	    cmocka_unit_test(test_keypart_salt_edit),
	    cmocka_unit_test(test_keypart_not_key_part),
	    cmocka_unit_test(test_cms_unsigned_and_signers),
	    cmocka_unit_test(test_cms_tampered),
	    cmocka_unit_test(test_cms_refusals),
	    cmocka_unit_test(test_cms_bounds),
	    cmocka_unit_test(test_empty_files),
	    cmocka_unit_test(test_envelope),
	    cmocka_unit_test(test_token_part),
	    cmocka_unit_test(test_token_part_originator),
	    cmocka_unit_test(test_token_part_form),
	    cmocka_unit_test(test_token_part_der_only),
	    cmocka_unit_test(test_aead),
	    cmocka_unit_test(test_anchor_chain),
	    cmocka_unit_test(test_admin_curves),
	    cmocka_unit_test(test_ext_signer_cert),
	    cmocka_unit_test(test_ext_signer_cms),
	    cmocka_unit_test(test_sigkey_token_files),
	    cmocka_unit_test(test_sigkey_card_files),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
