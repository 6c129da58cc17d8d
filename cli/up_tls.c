/* kyok up --tls: a local instance CA and a TLS certificate per unit.
 *
 *   DIR/ca.key, DIR/ca.crt          the instance's TLS CA: EC P-256, self-signed, CA:TRUE
 *                                   pathlen 0 (it issues unit certificates only); its key
 *                                   0600, never printed. Commands that talk to units trust
 *                                   DIR/ca.crt by default (cli/http.c).
 *   unit-<n>/tls.key, tls.crt       the unit's HTTPS key (0600) and certificate: EC P-256,
 *                                   CN = unit id, subjectAltName IP of the address it
 *                                   listens on (127.0.0.1 by default), serverAuth
 *
 * A unit on another host (kyok host join-request) makes its key there and sends a request
 * (CSR); the CA's holder issues the certificate from it (up_tls_issue). An operator's own
 * certificate (kyok up --tls-cert) is checked and copied in place (up_tls_own).
 *
 * This CA is for HTTPS only: the unit trust anchor (anchor.c), which certifies unit
 * identities, is another key.
 */
#include <errno.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/bio.h>
#include <openssl/buffer.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/up_tls.h"
#include "kyok/crypto.h"

#define UP_TLS_CA_DAYS   3650
#define UP_TLS_UNIT_DAYS 825
#define UP_TLS_SERIAL    16

static int up_tls_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	int ok = e != NULL && X509_add_ext(x, e, -1) == 1;

	X509_EXTENSION_free(e);
	return ok ? 0 : KY_ERR_CRYPTO;
}

/* A certificate for key, named cn, signed by issuer_key (issuer NULL: self-signed). */
static int up_tls_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, int days,
                       const char *ip, X509 **out)
{
	char san[80];
	int r = KY_ERR_CRYPTO;
	uint8_t serial[UP_TLS_SERIAL];
	X509 *x = NULL;
	X509_NAME *name = NULL;
	BIGNUM *bn = NULL;
	X509V3_CTX v3;

	if ((r = ky_random(serial, sizeof(serial))) != 0)
		goto out;
	serial[0] = (uint8_t)((serial[0] & 0x7f) | 0x40); /* positive, full length */
	r = KY_ERR_CRYPTO;
	if ((x = X509_new()) == NULL || (name = X509_NAME_new()) == NULL ||
	    (bn = BN_bin2bn(serial, sizeof(serial), NULL)) == NULL ||
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
	                               0) != 1 ||
	    X509_set_version(x, X509_VERSION_3) != 1 ||
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL ||
	    X509_set_subject_name(x, name) != 1 ||
	    X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name) != 1 ||
	    X509_gmtime_adj(X509_getm_notBefore(x), 0) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), days, 0, NULL) == NULL ||
	    X509_set_pubkey(x, key) != 1)
		goto out;
	X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
	if ((r = up_tls_ext(x, &v3, NID_subject_key_identifier, "hash")) != 0 ||
	    (r = up_tls_ext(x, &v3, NID_authority_key_identifier, "keyid:always")) != 0)
		goto out;
	if (ip == NULL) {
		if ((r = up_tls_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE,pathlen:0")) !=
		        0 ||
		    (r = up_tls_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign")) != 0)
			goto out;
	} else {
		if ((r = up_tls_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE")) != 0 ||
		    (r = up_tls_ext(x, &v3, NID_key_usage, "critical,digitalSignature")) != 0 ||
		    (r = up_tls_ext(x, &v3, NID_ext_key_usage, "serverAuth")) != 0 ||
		    snprintf(san, sizeof(san), "IP:%s", ip) >= (int)sizeof(san) ||
		    (r = up_tls_ext(x, &v3, NID_subject_alt_name, san)) != 0) {
			r = KY_ERR_CRYPTO;
			goto out;
		}
	}
	r = KY_ERR_CRYPTO;
	if (X509_sign(x, issuer_key, EVP_sha256()) <= 0)
		goto out;
	*out = x;
	x = NULL; /* transferred */
	r = 0;
out:
	X509_free(x);
	X509_NAME_free(name);
	BN_free(bn);
	if (r != 0)
		ERR_clear_error();
	return r;
}

/* Writes key to keyp (PKCS#8 PEM, 0600, through secure memory). */
static int up_tls_write_key(EVP_PKEY *key, const char *keyp)
{
	int r = KY_ERR_CRYPTO;
	BIO *bio = NULL;
	char *data = NULL;
	long len;

	if ((bio = BIO_new(BIO_s_secmem())) == NULL ||
	    PEM_write_bio_PKCS8PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1 ||
	    (len = BIO_get_mem_data(bio, &data)) <= 0) {
		cli_fail(r, keyp, "cannot encode the TLS key");
		goto out;
	}
	if ((r = ky_file_write_atomic(keyp, data, (size_t)len, 0600)) != 0) {
		cli_fail(r, keyp, "%s", strerror(errno));
		goto out;
	}
	r = 0;
out:
	BIO_free(bio); /* secure memory BIO: cleansed on free */
	ERR_clear_error();
	return r;
}

/* Writes key (PKCS#8 PEM, 0600, through secure memory) and cert (PEM, 0644). */
static int up_tls_write(EVP_PKEY *key, const char *keyp, X509 *cert, const char *crtp)
{
	int r = KY_ERR_CRYPTO;
	char *pem = NULL;

	if ((r = up_tls_write_key(key, keyp)) != 0)
		goto out;
	if ((r = ky_cert_to_pem(cert, &pem)) != 0 ||
	    (r = ky_file_write_atomic(crtp, pem, strlen(pem), 0644)) != 0) {
		cli_fail(r, crtp, "cannot write the TLS certificate");
		goto out;
	}
	r = 0;
out:
	free(pem);
	return r;
}

static EVP_PKEY *up_tls_keygen(void)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

	if (k == NULL)
		ERR_clear_error();
	return k;
}

/* Loads DIR/ca.key and DIR/ca.crt. */
static int up_tls_ca_load(const char *dir, EVP_PKEY **key, X509 **cert)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf kb = {0}, cb = {0};
	BIO *kbio = NULL, *cbio = NULL;
	char keyp[PATH_MAX], crtp[PATH_MAX];

	snprintf(keyp, sizeof(keyp), "%s/ca.key", dir);
	snprintf(crtp, sizeof(crtp), "%s/ca.crt", dir);
	if ((r = ky_file_read(keyp, 64 * 1024, &kb)) != 0 ||
	    (r = ky_file_read(crtp, 64 * 1024, &cb)) != 0) {
		cli_fail(r, dir, "cannot read the instance's TLS CA (ca.key, ca.crt)");
		goto out;
	}
	r = KY_ERR_MALFORMED;
	if ((kbio = BIO_new_mem_buf(kb.data, (int)kb.len)) == NULL ||
	    (cbio = BIO_new_mem_buf(cb.data, (int)cb.len)) == NULL ||
	    (*key = PEM_read_bio_PrivateKey(kbio, NULL, NULL, NULL)) == NULL ||
	    (*cert = PEM_read_bio_X509(cbio, NULL, NULL, NULL)) == NULL ||
	    X509_check_private_key(*cert, *key) != 1) {
		cli_fail(r, dir, "ca.key and ca.crt are not a matching PEM key and certificate");
		EVP_PKEY_free(*key);
		*key = NULL;
		goto out;
	}
	r = 0;
out:
	BIO_free(kbio);
	BIO_free(cbio);
	if (kb.data != NULL)
		OPENSSL_cleanse(kb.data, kb.len);
	ky_buf_free(&kb);
	ky_buf_free(&cb);
	ERR_clear_error();
	return r;
}

int up_tls_unit(const char *dir, const char *unit_dir, const char *unit_id, const char *ip)
{
	int r = KY_ERR_INTERNAL;
	EVP_PKEY *ca_key = NULL, *key = NULL;
	X509 *ca = NULL, *cert = NULL;
	char keyp[PATH_MAX], crtp[PATH_MAX];

	if ((r = up_tls_ca_load(dir, &ca_key, &ca)) != 0)
		goto out;
	snprintf(keyp, sizeof(keyp), "%s/tls.key", unit_dir);
	snprintf(crtp, sizeof(crtp), "%s/tls.crt", unit_dir);
	if ((key = up_tls_keygen()) == NULL ||
	    (r = up_tls_cert(key, unit_id, ca, ca_key, UP_TLS_UNIT_DAYS, ip, &cert)) != 0) {
		r = KY_ERR_CRYPTO;
		cli_fail(r, unit_dir, "cannot make the unit's TLS certificate");
		goto out;
	}
	if ((r = up_tls_write(key, keyp, cert, crtp)) != 0)
		goto out;
	r = 0;
out:
	EVP_PKEY_free(key);
	X509_free(cert);
	EVP_PKEY_free(ca_key);
	X509_free(ca);
	return r;
}

int up_tls_ca_create(const char *dir, const char *instance)
{
	int r = KY_ERR_INTERNAL;
	EVP_PKEY *ca_key = NULL;
	X509 *ca = NULL;
	char keyp[PATH_MAX], crtp[PATH_MAX], cn[128];

	snprintf(cn, sizeof(cn), "kyok TLS CA of instance %s", instance);
	snprintf(keyp, sizeof(keyp), "%s/ca.key", dir);
	snprintf(crtp, sizeof(crtp), "%s/ca.crt", dir);
	if ((ca_key = up_tls_keygen()) == NULL ||
	    (r = up_tls_cert(ca_key, cn, NULL, ca_key, UP_TLS_CA_DAYS, NULL, &ca)) != 0) {
		r = KY_ERR_CRYPTO;
		cli_fail(r, dir, "cannot make the instance's TLS CA");
		goto out;
	}
	if ((r = up_tls_write(ca_key, keyp, ca, crtp)) != 0)
		goto out;
	r = 0;
out:
	EVP_PKEY_free(ca_key);
	X509_free(ca);
	return r;
}

int up_tls_request(const char *unit_dir, const char *unit_id, char **csr_pem)
{
	int r = KY_ERR_INTERNAL;
	EVP_PKEY *key = NULL;
	X509_REQ *req = NULL;
	X509_NAME *name = NULL;
	BIO *bio = NULL;
	char keyp[PATH_MAX], *data = NULL;
	long len;

	*csr_pem = NULL;
	snprintf(keyp, sizeof(keyp), "%s/tls.key", unit_dir);
	r = KY_ERR_CRYPTO;
	if ((key = up_tls_keygen()) == NULL || (req = X509_REQ_new()) == NULL ||
	    (name = X509_NAME_new()) == NULL ||
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)unit_id,
	                               -1, -1, 0) != 1 ||
	    X509_REQ_set_subject_name(req, name) != 1 || X509_REQ_set_pubkey(req, key) != 1 ||
	    X509_REQ_sign(req, key, EVP_sha256()) <= 0 || (bio = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_X509_REQ(bio, req) != 1 || (len = BIO_get_mem_data(bio, &data)) <= 0) {
		cli_fail(r, unit_dir, "cannot make the unit's TLS key and request");
		goto out;
	}
	if ((*csr_pem = strndup(data, (size_t)len)) == NULL) {
		r = KY_ERR_NOMEM;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	if ((r = up_tls_write_key(key, keyp)) != 0)
		goto out;
	r = 0;
out:
	if (r != 0) {
		free(*csr_pem);
		*csr_pem = NULL;
	}
	BIO_free(bio);
	X509_NAME_free(name);
	X509_REQ_free(req);
	EVP_PKEY_free(key);
	ERR_clear_error();
	return r;
}

int up_tls_issue(const char *dir, const char *csr_pem, const char *unit_id, const char *ip,
                 char **cert_pem)
{
	int r = KY_ERR_INTERNAL;
	EVP_PKEY *ca_key = NULL, *pub = NULL;
	X509 *ca = NULL, *cert = NULL;
	X509_REQ *req = NULL;
	BIO *bio = NULL;
	char cn[KY_ID_MAX + 1] = "";

	*cert_pem = NULL;
	r = KY_ERR_MALFORMED;
	if ((bio = BIO_new_mem_buf(csr_pem, -1)) == NULL ||
	    (req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL)) == NULL ||
	    (pub = X509_REQ_get_pubkey(req)) == NULL || X509_REQ_verify(req, pub) != 1 ||
	    !EVP_PKEY_is_a(pub, "EC") ||
	    X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(req), NID_commonName, cn,
	                              sizeof(cn)) <= 0 ||
	    strcmp(cn, unit_id) != 0) {
		cli_fail(r, unit_id,
		         "the unit's TLS request is not a valid EC certificate request for CN '%s'",
		         unit_id);
		goto out;
	}
	if ((r = up_tls_ca_load(dir, &ca_key, &ca)) != 0)
		goto out;
	if ((r = up_tls_cert(pub, unit_id, ca, ca_key, UP_TLS_UNIT_DAYS, ip, &cert)) != 0 ||
	    (r = ky_cert_to_pem(cert, cert_pem)) != 0) {
		r = KY_ERR_CRYPTO;
		cli_fail(r, unit_id, "cannot issue the unit's TLS certificate");
		goto out;
	}
	r = 0;
out:
	BIO_free(bio);
	X509_REQ_free(req);
	EVP_PKEY_free(pub);
	EVP_PKEY_free(ca_key);
	X509_free(ca);
	X509_free(cert);
	ERR_clear_error();
	return r;
}

/* The private key in PEM file path (cleansed after reading). */
static int up_tls_read_key(const char *path, EVP_PKEY **key)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf b = {0};
	BIO *bio = NULL;

	if ((r = ky_file_read(path, 64 * 1024, &b)) != 0)
		goto out;
	r = KY_ERR_MALFORMED;
	if ((bio = BIO_new_mem_buf(b.data, (int)b.len)) == NULL ||
	    (*key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)) == NULL)
		goto out;
	r = 0;
out:
	BIO_free(bio);
	if (b.data != NULL)
		OPENSSL_cleanse(b.data, b.len);
	ky_buf_free(&b);
	ERR_clear_error();
	return r;
}

int up_tls_check(const char *ca_path, const char *cert_pem, const char *key_path, const char *ip)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf cb = {0};
	X509 *cert = NULL, *ca = NULL;
	X509_STORE *store = NULL;
	X509_STORE_CTX *ctx = NULL;
	EVP_PKEY *key = NULL;

	if ((r = ky_file_read(ca_path, 64 * 1024, &cb)) != 0 ||
	    (r = ky_buf_append(&cb, "", 1)) != 0 ||
	    (r = ky_cert_from_pem((const char *)cb.data, &ca)) != 0 ||
	    (r = ky_cert_from_pem(cert_pem, &cert)) != 0 ||
	    (r = up_tls_read_key(key_path, &key)) != 0) {
		r = KY_ERR_MALFORMED;
		goto out;
	}
	r = KY_ERR_CERT_MISMATCH;
	if ((store = X509_STORE_new()) == NULL || X509_STORE_add_cert(store, ca) != 1 ||
	    (ctx = X509_STORE_CTX_new()) == NULL ||
	    X509_STORE_CTX_init(ctx, store, cert, NULL) != 1 || X509_verify_cert(ctx) != 1 ||
	    X509_check_private_key(cert, key) != 1 || X509_check_ip_asc(cert, ip, 0) != 1)
		goto out;
	r = 0;
out:
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	X509_free(cert);
	X509_free(ca);
	EVP_PKEY_free(key);
	ky_buf_free(&cb);
	ERR_clear_error();
	return r;
}

/* Replaces the PEM text in b (NUL-terminated) with its certificates only, PEM again. */
static int up_tls_certs_only(struct ky_buf *b)
{
	int r = KY_ERR_CRYPTO, n = 0;
	BIO *in = NULL, *out = NULL;
	X509 *x = NULL;
	BUF_MEM *mem = NULL;
	struct ky_buf nb = {0};

	if ((in = BIO_new_mem_buf(b->data, (int)(b->len - 1))) == NULL ||
	    (out = BIO_new(BIO_s_mem())) == NULL)
		goto out;
	while ((x = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL) {
		if (PEM_write_bio_X509(out, x) != 1)
			goto out;
		X509_free(x);
		x = NULL;
		n++;
	}
	if (n == 0 || BIO_get_mem_ptr(out, &mem) != 1 || mem == NULL) {
		r = KY_ERR_MALFORMED;
		goto out;
	}
	if ((r = ky_buf_append(&nb, mem->data, mem->length)) != 0)
		goto out;
	ky_buf_free(b);
	*b = nb;
	nb = (struct ky_buf){0}; /* transferred */
	r = 0;
out:
	X509_free(x);
	BIO_free(in);
	BIO_free(out);
	ky_buf_free(&nb);
	ERR_clear_error();
	return r;
}

int up_tls_own(const char *cert_path, const char *key_path, const char *unit_dir, const char *ip)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf cb = {0};
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	char crtp[PATH_MAX], keyp[PATH_MAX];

	if ((r = ky_file_read(cert_path, 256 * 1024, &cb)) != 0 ||
	    (r = ky_buf_append(&cb, "", 1)) != 0 ||
	    ky_cert_from_pem((const char *)cb.data, &cert) != 0) {
		r = KY_ERR_MALFORMED;
		cli_fail(r, cert_path, "--tls-cert: not a PEM certificate");
		goto out;
	}
	/* The key of a server others trust: readable by its owner only, as every secret. */
	if ((r = cli_check_private("--tls-key", key_path)) != 0)
		goto out;
	if ((r = up_tls_read_key(key_path, &key)) != 0) {
		r = KY_ERR_MALFORMED;
		cli_fail(r, key_path, "--tls-key: not a PEM private key (without a passphrase)");
		goto out;
	}
	if (X509_check_private_key(cert, key) != 1) {
		r = KY_ERR_CERT_MISMATCH;
		cli_fail(r, cert_path, "--tls-cert: its key is not the one in '%s'", key_path);
		goto out;
	}
	if (X509_check_ip_asc(cert, ip, 0) != 1) {
		r = KY_ERR_CERT_MISMATCH;
		cli_fail(r, cert_path,
		         "--tls-cert: the certificate does not name %s (no subjectAltName IP "
		         "entry for it): clients could not check it",
		         ip);
		goto out;
	}
	if (unit_dir == NULL) {
		r = 0; /* checked only */
		goto out;
	}
	snprintf(crtp, sizeof(crtp), "%s/tls.crt", unit_dir);
	snprintf(keyp, sizeof(keyp), "%s/tls.key", unit_dir);
	if ((r = up_tls_write_key(key, keyp)) != 0)
		goto out;
	/* The certificates of the file only (its chain), written again: whatever else the file
	 * holds (a private key given in the same file) stays out of tls.crt, which is public. */
	if ((r = up_tls_certs_only(&cb)) != 0) {
		cli_fail(r, cert_path, "--tls-cert: cannot read its certificates");
		goto out;
	}
	if ((r = ky_file_write_atomic(crtp, cb.data, cb.len, 0644)) != 0) {
		cli_fail(r, crtp, "cannot write the TLS certificate");
		goto out;
	}
	r = 0;
out:
	X509_free(cert);
	EVP_PKEY_free(key);
	ky_buf_free(&cb);
	ERR_clear_error();
	return r;
}
