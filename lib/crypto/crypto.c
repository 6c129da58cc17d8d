/* Primitives: secure memory, randomness, VP, EC keys, certificates, ECDSA, base64. */
#include <limits.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/crypto.h"
#include "kyok/err.h"

#define SECURE_HEAP_SIZE (1024 * 1024)
#define SECURE_HEAP_MIN  32
#define SERIAL_LEN       16
#define EC_CURVE         "P-521"
#define EC_FIELD_BYTES   66 /* ceil(521 / 8) */

/* 1 once the secure heap is up; 0 when OpenSSL refused it (secrets then live in the normal
 * heap and are still cleansed on free). */
static int crypto_secure_heap;

int ky_crypto_init(void)
{
	return ky_crypto_init_heap(SECURE_HEAP_SIZE);
}

int ky_crypto_init_heap(size_t heap)
{
	if (!CRYPTO_secure_malloc_initialized())
		crypto_secure_heap = CRYPTO_secure_malloc_init(heap, SECURE_HEAP_MIN) != 0;
	else
		crypto_secure_heap = 1;
	if (OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL) != 1) {
		ERR_clear_error();
		return KY_ERR_CRYPTO;
	}
	ERR_clear_error();
	return 0;
}

int ky_random(void *p, size_t n)
{
	uint8_t *b = p;

	while (n > 0) {
		int chunk = n > 1u << 20 ? 1 << 20 : (int)n;
		if (RAND_bytes(b, chunk) != 1) {
			ERR_clear_error();
			return KY_ERR_CRYPTO;
		}
		b += chunk;
		n -= (size_t)chunk;
	}
	return 0;
}

void *ky_secret_alloc(size_t n)
{
	return OPENSSL_secure_zalloc(n);
}

void ky_secret_free(void *p, size_t n)
{
	if (p == NULL)
		return;
	OPENSSL_secure_clear_free(p, n);
}

int ky_vp(const uint8_t key[KY_MK_LEN], uint8_t vp[KY_VP_LEN])
{
	int r = KY_ERR_INTERNAL;
	static const uint8_t prefix = 0x01;
	unsigned int len = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	if (ctx == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, &prefix, 1) != 1 || EVP_DigestUpdate(ctx, key, KY_MK_LEN) != 1 ||
	    EVP_DigestFinal_ex(ctx, vp, &len) != 1 || len != KY_VP_LEN) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	r = 0;
out:
	EVP_MD_CTX_free(ctx);
	if (r != 0)
		ERR_clear_error();
	return r;
}

int ky_hmac_sha256(const uint8_t *key, size_t keylen, const void *msg, size_t n,
                   uint8_t mac[KY_HMAC_SHA256_LEN])
{
	int r = KY_ERR_INTERNAL;
	size_t len = 0;

	if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, keylen, msg, n, mac,
	              KY_HMAC_SHA256_LEN, &len) == NULL ||
	    len != KY_HMAC_SHA256_LEN) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	r = 0;
out:
	if (r != 0) {
		OPENSSL_cleanse(mac, KY_HMAC_SHA256_LEN);
		ERR_clear_error();
	}
	return r;
}

/* ---- keys and certificates ---- */

int ky_ec_generate(EVP_PKEY **out)
{
	EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", EC_CURVE);

	if (pk == NULL) {
		ERR_clear_error();
		return KY_ERR_CRYPTO;
	}
	*out = pk; /* transferred */
	return 0;
}

/* The curve of an EC key as OpenSSL names it; "" for anything else. */
static void pkey_group(const EVP_PKEY *pk, char group[64])
{
	size_t len = 0;

	group[0] = '\0';
	if (pk == NULL || !EVP_PKEY_is_a(pk, "EC"))
		return;
	if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, 64, &len) != 1) {
		ERR_clear_error();
		group[0] = '\0';
	}
}

bool ky_pkey_is_p521(const EVP_PKEY *pk)
{
	char group[64];

	pkey_group(pk, group);
	return strcmp(group, "P-521") == 0 || strcmp(group, "secp521r1") == 0;
}

bool ky_pkey_is_admin_curve(const EVP_PKEY *pk)
{
	char group[64];

	pkey_group(pk, group);
	return ky_pkey_is_p521(pk) || strcmp(group, "P-384") == 0 ||
	       strcmp(group, "secp384r1") == 0;
}

int ky_ski(const EVP_PKEY *pk, uint8_t ski[KY_SKI_LEN])
{
	int r = KY_ERR_INTERNAL;
	/* Uncompressed point: 0x04 || X || Y, coordinates padded to the field size. The point is
	 * rebuilt from its coordinates so that a key read in compressed form hashes the same. */
	uint8_t point[1 + 2 * EC_FIELD_BYTES];
	BIGNUM *x = NULL, *y = NULL;
	/* P-521, or P-384 for administrators whose token has no P-521 (48-byte coordinates). */
	int field = ky_pkey_is_p521(pk) ? EC_FIELD_BYTES : ky_pkey_is_admin_curve(pk) ? 48 : 0;

	if (field == 0) {
		r = KY_ERR_BAD_CERT;
		goto out;
	}
	if (EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1 ||
	    EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	point[0] = 0x04;
	if (BN_bn2binpad(x, point + 1, field) != field ||
	    BN_bn2binpad(y, point + 1 + field, field) != field) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (EVP_Digest(point, 1 + 2 * (size_t)field, ski, NULL, EVP_sha256(), NULL) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	r = 0;
out:
	BN_free(x);
	BN_free(y);
	if (r != 0)
		ERR_clear_error();
	return r;
}

int ky_cert_ski(const X509 *cert, uint8_t ski[KY_SKI_LEN])
{
	int r = KY_ERR_INTERNAL;
	int crit = 0;
	ASN1_OCTET_STRING *os = X509_get_ext_d2i(cert, NID_subject_key_identifier, &crit, NULL);

	/* crit is -2 when the extension occurs more than once: refused as ambiguous. */
	if (os == NULL || ASN1_STRING_length(os) != KY_SKI_LEN) {
		r = KY_ERR_BAD_CERT;
		goto out;
	}
	memcpy(ski, ASN1_STRING_get0_data(os), KY_SKI_LEN);
	r = 0;
out:
	ASN1_OCTET_STRING_free(os);
	if (r != 0)
		ERR_clear_error();
	return r;
}

int ky_cert_cn(const X509 *cert, char *out, size_t outlen)
{
	int r = KY_ERR_INTERNAL;
	const X509_NAME *name = X509_get_subject_name(cert);
	unsigned char *utf8 = NULL;
	int idx, len;

	if (name == NULL || outlen == 0) {
		r = KY_ERR_BAD_CERT;
		goto out;
	}
	idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	if (idx < 0 || X509_NAME_get_index_by_NID(name, NID_commonName, idx) >= 0) {
		r = KY_ERR_BAD_CERT; /* none, or more than one */
		goto out;
	}
	len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx)));
	if (len < 0 || (size_t)len >= outlen || memchr(utf8, '\0', (size_t)len) != NULL) {
		r = KY_ERR_BAD_CERT;
		goto out;
	}
	memcpy(out, utf8, (size_t)len);
	out[len] = '\0';
	r = 0;
out:
	OPENSSL_free(utf8);
	if (r != 0)
		ERR_clear_error();
	return r;
}

static int cert_add_ext_conf(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
	int ok = ext != NULL && X509_add_ext(x, ext, -1) == 1;

	X509_EXTENSION_free(ext);
	return ok ? 0 : KY_ERR_CRYPTO;
}

static int cert_add_key_ids(X509 *x, const uint8_t ski[KY_SKI_LEN],
                            const uint8_t issuer_ski[KY_SKI_LEN])
{
	int r = KY_ERR_INTERNAL;
	ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
	AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();

	if (os == NULL || akid == NULL || (akid->keyid = ASN1_OCTET_STRING_new()) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (ASN1_OCTET_STRING_set(os, ski, KY_SKI_LEN) != 1 ||
	    ASN1_OCTET_STRING_set(akid->keyid, issuer_ski, KY_SKI_LEN) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (X509_add1_ext_i2d(x, NID_subject_key_identifier, os, 0, X509V3_ADD_DEFAULT) != 1 ||
	    X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, 0, X509V3_ADD_DEFAULT) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	r = 0;
out:
	ASN1_OCTET_STRING_free(os);
	AUTHORITY_KEYID_free(akid);
	return r;
}

static int cert_name(const char *cn, const char *ou, X509_NAME **out)
{
	X509_NAME *name = X509_NAME_new();

	if (name == NULL)
		return KY_ERR_NOMEM;
	if ((ou != NULL && X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_UTF8,
	                                              (const unsigned char *)ou, -1, -1, 0) != 1) ||
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
	                               0) != 1) {
		X509_NAME_free(name);
		return KY_ERR_CRYPTO;
	}
	*out = name; /* transferred */
	return 0;
}

/* Builds and signs a v3 certificate for subject_key. issuer_name NULL: self-issued. */
static int cert_build(EVP_PKEY *subject_key, const char *cn, const char *ou,
                      const X509_NAME *issuer_name, const uint8_t issuer_ski[KY_SKI_LEN],
                      EVP_PKEY *signer, int days, const char *constraints, const char *key_usage,
                      X509 **out)
{
	int r = KY_ERR_INTERNAL;
	uint8_t ski[KY_SKI_LEN], serial[SERIAL_LEN];
	X509 *x = NULL;
	X509_NAME *subject = NULL;
	BIGNUM *bn = NULL;
	X509V3_CTX v3;

	if (cn == NULL || days <= 0) {
		r = KY_ERR_USAGE;
		goto out;
	}
	if ((r = ky_ski(subject_key, ski)) != 0)
		goto out;
	if ((r = cert_name(cn, ou, &subject)) != 0)
		goto out;
	if ((r = ky_random(serial, sizeof(serial))) != 0)
		goto out;
	serial[0] = (uint8_t)((serial[0] & 0x7f) | 0x40); /* positive, full 16 bytes */
	if ((x = X509_new()) == NULL || (bn = BN_bin2bn(serial, sizeof(serial), NULL)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (X509_set_version(x, X509_VERSION_3) != 1 ||
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL ||
	    X509_set_subject_name(x, subject) != 1 ||
	    X509_set_issuer_name(x, issuer_name != NULL ? issuer_name : subject) != 1 ||
	    X509_gmtime_adj(X509_getm_notBefore(x), 0) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), days, 0, NULL) == NULL ||
	    X509_set_pubkey(x, subject_key) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	if ((r = cert_add_ext_conf(x, &v3, NID_basic_constraints, constraints)) != 0 ||
	    (r = cert_add_ext_conf(x, &v3, NID_key_usage, key_usage)) != 0 ||
	    (r = cert_add_key_ids(x, ski, issuer_ski != NULL ? issuer_ski : ski)) != 0)
		goto out;
	if (X509_sign(x, signer, EVP_sha512()) <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	*out = x;
	x = NULL; /* transferred */
	r = 0;
out:
	X509_free(x);
	X509_NAME_free(subject);
	BN_free(bn);
	if (r != 0)
		ERR_clear_error();
	return r;
}

int ky_cert_self_signed(EVP_PKEY *key, const char *cn, const char *ou, int days, X509 **out)
{
	return cert_build(key, cn, ou, NULL, NULL, key, days, "critical,CA:FALSE",
	                  "critical,digitalSignature", out);
}

/* Replaces the signature of x (signed by a stand-in key, which set both signature algorithm
 * fields to ecdsa-with-SHA512) by one of s over the same to-be-signed part, and checks the
 * result against s->pub. */
static int cert_sign_ext(X509 *x, const struct ky_ext_signer *s, X509 **out)
{
	int r = KY_ERR_INTERNAL;
	unsigned char *tbs = NULL, *alg = NULL, *bits = NULL, *der = NULL, *p;
	const unsigned char *q;
	const ASN1_BIT_STRING *oldsig = NULL;
	const X509_ALGOR *palg = NULL;
	ASN1_BIT_STRING *bs = NULL;
	struct ky_buf sig = {0};
	uint8_t md[64];
	int tbslen, alglen, bitslen, total, derlen;
	X509 *x2 = NULL;

	X509_get0_signature(&oldsig, &palg, x);
	if (palg == NULL || OBJ_obj2nid(palg->algorithm) != NID_ecdsa_with_SHA512) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((tbslen = i2d_re_X509_tbs(x, &tbs)) <= 0 ||
	    (alglen = i2d_X509_ALGOR(palg, &alg)) <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (EVP_Digest(tbs, (size_t)tbslen, md, NULL, EVP_sha512(), NULL) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = s->sign(s->arg, md, sizeof(md), &sig)) != 0)
		goto out;
	if ((bs = ASN1_BIT_STRING_new()) == NULL || sig.len > INT_MAX ||
	    ASN1_BIT_STRING_set(bs, sig.data, (int)sig.len) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	/* Zero unused bits, said explicitly: otherwise trailing zero bits would be dropped. */
	bs->flags = (bs->flags & ~0x07L) | ASN1_STRING_FLAG_BITS_LEFT;
	if ((bitslen = i2d_ASN1_BIT_STRING(bs, &bits)) <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	total = tbslen + alglen + bitslen;
	if ((derlen = ASN1_object_size(1, total, V_ASN1_SEQUENCE)) <= 0 ||
	    (der = OPENSSL_malloc((size_t)derlen)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	p = der;
	ASN1_put_object(&p, 1, total, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
	memcpy(p, tbs, (size_t)tbslen);
	memcpy(p + tbslen, alg, (size_t)alglen);
	memcpy(p + tbslen + alglen, bits, (size_t)bitslen);
	q = der;
	if ((x2 = d2i_X509(NULL, &q, derlen)) == NULL || q != der + derlen) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (X509_verify(x2, s->pub) != 1) {
		r = KY_ERR_BAD_SIGNATURE;
		goto out;
	}
	*out = x2;
	x2 = NULL; /* transferred */
	r = 0;
out:
	X509_free(x2);
	ASN1_BIT_STRING_free(bs);
	ky_buf_free(&sig);
	OPENSSL_free(tbs);
	OPENSSL_free(alg);
	OPENSSL_free(bits);
	OPENSSL_free(der);
	if (r != 0)
		ERR_clear_error();
	return r;
}

int ky_cert_self_signed_ext(const struct ky_ext_signer *s, const char *cn, const char *ou, int days,
                            X509 **out)
{
	int r = KY_ERR_INTERNAL;
	EVP_PKEY *standin = NULL;
	X509 *x = NULL;

	/* OpenSSL signs only with a key it holds: a throwaway key signs first, which fills in
	 * every field; its signature is then replaced by the token's. */
	if ((r = ky_ec_generate(&standin)) != 0)
		goto out;
	if ((r = cert_build(s->pub, cn, ou, NULL, NULL, standin, days, "critical,CA:FALSE",
	                    "critical,digitalSignature", &x)) != 0)
		goto out;
	if ((r = cert_sign_ext(x, s, out)) != 0)
		goto out;
	r = 0;
out:
	X509_free(x);
	EVP_PKEY_free(standin);
	return r;
}

int ky_cert_self_signed_issuer(EVP_PKEY *key, const char *cn, const char *ou, int days, X509 **out)
{
	return cert_build(key, cn, ou, NULL, NULL, key, days, "critical,CA:TRUE,pathlen:0",
	                  "critical,digitalSignature,keyCertSign", out);
}

int ky_cert_anchor_self_signed(EVP_PKEY *key, const char *cn, const char *ou, int days, X509 **out)
{
	return cert_build(key, cn, ou, NULL, NULL, key, days, "critical,CA:TRUE,pathlen:1",
	                  "critical,keyCertSign,cRLSign", out);
}

int ky_cert_issue_identity(EVP_PKEY *subject_pub, const char *cn, const char *ou, X509 *anchor,
                           EVP_PKEY *anchor_key, int days, X509 **out)
{
	int r = KY_ERR_INTERNAL;
	uint8_t issuer_ski[KY_SKI_LEN];

	if (X509_check_private_key(anchor, anchor_key) != 1) {
		ERR_clear_error();
		return KY_ERR_BAD_CERT;
	}
	if ((r = ky_cert_ski(anchor, issuer_ski)) != 0)
		return r;
	return cert_build(subject_pub, cn, ou, X509_get_subject_name(anchor), issuer_ski,
	                  anchor_key, days, "critical,CA:TRUE,pathlen:0",
	                  "critical,digitalSignature,keyCertSign", out);
}

int ky_cert_issue(EVP_PKEY *subject_key, const char *cn, const char *ou, X509 *issuer,
                  EVP_PKEY *issuer_key, int days, X509 **out)
{
	int r = KY_ERR_INTERNAL;
	uint8_t issuer_ski[KY_SKI_LEN];

	if (X509_check_private_key(issuer, issuer_key) != 1) {
		ERR_clear_error();
		return KY_ERR_BAD_CERT;
	}
	if ((r = ky_cert_ski(issuer, issuer_ski)) != 0)
		return r;
	return cert_build(subject_key, cn, ou, X509_get_subject_name(issuer), issuer_ski,
	                  issuer_key, days, "critical,CA:FALSE", "critical,keyAgreement", out);
}

int ky_admin_cert_check(X509 *cert)
{
	int r = KY_ERR_INTERNAL;
	uint8_t want[KY_SKI_LEN], got[KY_SKI_LEN];
	char cn[128];
	size_t len;
	EVP_PKEY *pk = X509_get0_pubkey(cert);

	if (pk == NULL || !ky_pkey_is_admin_curve(pk)) {
		r = KY_ERR_BAD_CERT;
		goto out;
	}
	if (X509_NAME_cmp(X509_get_subject_name(cert), X509_get_issuer_name(cert)) != 0 ||
	    X509_verify(cert, pk) != 1) {
		r = KY_ERR_BAD_CERT;
		goto out;
	}
	if (ky_ski(pk, want) != 0 || ky_cert_ski(cert, got) != 0 ||
	    CRYPTO_memcmp(want, got, KY_SKI_LEN) != 0) {
		r = KY_ERR_BAD_CERT;
		goto out;
	}
	if (ky_cert_cn(cert, cn, sizeof(cn)) != 0) {
		r = KY_ERR_ADMIN_NAME;
		goto out;
	}
	len = strlen(cn);
	if (len < 1 || len > KY_ADMIN_NAME_MAX) {
		r = KY_ERR_ADMIN_NAME;
		goto out;
	}
	for (size_t i = 0; i < len; i++)
		if (cn[i] < 0x20 || cn[i] > 0x7e) {
			r = KY_ERR_ADMIN_NAME;
			goto out;
		}
	r = 0;
out:
	if (r != 0)
		ERR_clear_error();
	return r;
}

int ky_cert_verify_by(X509 *cert, EVP_PKEY *issuer_pub)
{
	if (cert == NULL || issuer_pub == NULL || X509_verify(cert, issuer_pub) != 1) {
		ERR_clear_error();
		return KY_ERR_BAD_SIGNATURE;
	}
	return 0;
}

int ky_pubkey_fingerprint(EVP_PKEY *pk, char out[65])
{
	int r = KY_ERR_INTERNAL;
	unsigned char *der = NULL;
	uint8_t md[32];
	int len = i2d_PUBKEY(pk, &der);

	if (len <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (EVP_Digest(der, (size_t)len, md, NULL, EVP_sha256(), NULL) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	ky_hex_encode(md, sizeof(md), out);
	r = 0;
out:
	OPENSSL_free(der);
	if (r != 0)
		ERR_clear_error();
	return r;
}

int ky_cert_to_pem(X509 *cert, char **out)
{
	int r = KY_ERR_INTERNAL;
	BIO *bio = BIO_new(BIO_s_mem());
	char *data = NULL, *s;
	long len;

	if (bio == NULL || PEM_write_bio_X509(bio, cert) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	len = BIO_get_mem_data(bio, &data);
	if (len <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((s = malloc((size_t)len + 1)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	memcpy(s, data, (size_t)len);
	s[len] = '\0';
	*out = s;
	r = 0;
out:
	BIO_free(bio);
	if (r != 0)
		ERR_clear_error();
	return r;
}

int ky_cert_from_pem(const char *pem, X509 **out)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);
	X509 *x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;

	BIO_free(bio);
	if (x == NULL) {
		ERR_clear_error();
		return KY_ERR_MALFORMED;
	}
	*out = x; /* transferred */
	return 0;
}

int ky_pkey_to_der(EVP_PKEY *pk, struct ky_buf *out)
{
	int r = KY_ERR_INTERNAL;
	PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(pk);
	unsigned char *der = NULL;
	int len = 0;

	if (p8 == NULL || (len = i2d_PKCS8_PRIV_KEY_INFO(p8, &der)) <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ky_buf_append(out, der, (size_t)len)) != 0)
		goto out;
	r = 0;
out:
	if (der != NULL)
		OPENSSL_clear_free(der, (size_t)len);
	PKCS8_PRIV_KEY_INFO_free(p8);
	if (r != 0)
		ERR_clear_error();
	return r;
}

int ky_pkey_from_der(const uint8_t *p, size_t n, EVP_PKEY **out)
{
	const unsigned char *q = p;
	EVP_PKEY *pk;

	if (n == 0 || n > 1 << 20)
		return KY_ERR_MALFORMED;
	pk = d2i_AutoPrivateKey(NULL, &q, (long)n);
	if (pk == NULL || q != p + n) {
		EVP_PKEY_free(pk);
		ERR_clear_error();
		return KY_ERR_MALFORMED;
	}
	*out = pk; /* transferred */
	return 0;
}

int ky_sign(EVP_PKEY *key, const void *msg, size_t n, struct ky_buf *sig)
{
	int r = KY_ERR_INTERNAL;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char *s = NULL;
	size_t len = 0, cap = 0;

	if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, EVP_sha512(), NULL, key) != 1 ||
	    EVP_DigestSign(ctx, NULL, &cap, msg, n) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((s = OPENSSL_malloc(cap)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	/* The length is checked, not trusted: OpenSSL 3.0's ECDSA reports success with a length
	 * of (unsigned int)-1 when encoding the signature runs out of memory. */
	len = cap;
	if (EVP_DigestSign(ctx, s, &len, msg, n) != 1 || len == 0 || len > cap) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ky_buf_append(sig, s, len)) != 0)
		goto out;
	r = 0;
out:
	OPENSSL_free(s);
	EVP_MD_CTX_free(ctx);
	if (r != 0)
		ERR_clear_error();
	return r;
}

int ky_verify(EVP_PKEY *pub, const void *msg, size_t n, const uint8_t *sig, size_t siglen)
{
	int r = KY_ERR_INTERNAL;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	if (ctx == NULL || pub == NULL || sig == NULL || siglen == 0) {
		r = KY_ERR_BAD_SIGNATURE;
		goto out;
	}
	if (EVP_DigestVerifyInit(ctx, NULL, EVP_sha512(), NULL, pub) != 1 ||
	    EVP_DigestVerify(ctx, sig, siglen, msg, n) != 1) {
		r = KY_ERR_BAD_SIGNATURE;
		goto out;
	}
	r = 0;
out:
	EVP_MD_CTX_free(ctx);
	if (r != 0)
		ERR_clear_error();
	return r;
}

/* ---- base64 ---- */

int ky_b64_encode(const uint8_t *p, size_t n, char **out)
{
	char *s;

	if (n > (size_t)3 * (1 << 28))
		return KY_ERR_TOO_LARGE;
	if ((s = malloc(4 * ((n + 2) / 3) + 1)) == NULL)
		return KY_ERR_NOMEM;
	EVP_EncodeBlock((unsigned char *)s, p, (int)n);
	*out = s;
	return 0;
}

static int b64_char_ok(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/';
}

int ky_b64_decode(const char *s, struct ky_buf *out)
{
	int r = KY_ERR_INTERNAL;
	size_t len, pad = 0;
	unsigned char *bin = NULL;
	int got;

	if (s == NULL)
		return KY_ERR_MALFORMED;
	len = strlen(s);
	if (len % 4 != 0 || len > (size_t)4 * (1 << 28))
		return KY_ERR_MALFORMED;
	if (len == 0)
		return 0;
	if (s[len - 1] == '=')
		pad = s[len - 2] == '=' ? 2 : 1;
	/* Strict alphabet: no whitespace, padding only at the end. */
	for (size_t i = 0; i < len - pad; i++)
		if (!b64_char_ok(s[i]))
			return KY_ERR_MALFORMED;
	if ((bin = malloc(len / 4 * 3)) == NULL)
		return KY_ERR_NOMEM;
	got = EVP_DecodeBlock(bin, (const unsigned char *)s, (int)len);
	if (got < 0 || (size_t)got != len / 4 * 3) {
		r = KY_ERR_MALFORMED;
		goto out;
	}
	if ((r = ky_buf_append(out, bin, (size_t)got - pad)) != 0)
		goto out;
	r = 0;
out:
	OPENSSL_cleanse(bin, len / 4 * 3);
	free(bin);
	ERR_clear_error();
	return r;
}
