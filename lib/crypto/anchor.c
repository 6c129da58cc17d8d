/* The unit trust anchor's side of certificates: identity requests (CSR) and chain checks.
 *
 * An instance's anchor (self-signed, CA) certifies each unit's identity key; the identity key
 * certifies the unit's importer key. ky_cert_chain_verify is X.509 path validation with the
 * anchor as the only trusted certificate, so `openssl verify -CAfile anchor.crt -untrusted
 * identity.crt importer.crt` gives the same answer.
 */
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/crypto.h"
#include "kyok/err.h"

static int anchor_name_entry(const X509_NAME *name, int nid, char *out, size_t outlen)
{
	int i = X509_NAME_get_index_by_NID(name, nid, -1);
	const ASN1_STRING *s;
	int len;

	if (i < 0 || (s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i))) == NULL)
		return KY_ERR_BAD_CERT;
	len = ASN1_STRING_length(s);
	if (len <= 0 || (size_t)len >= outlen ||
	    memchr(ASN1_STRING_get0_data(s), '\0', (size_t)len) != NULL)
		return KY_ERR_BAD_CERT;
	memcpy(out, ASN1_STRING_get0_data(s), (size_t)len);
	out[len] = '\0';
	return 0;
}

int ky_cert_ou(const X509 *cert, char *out, size_t outlen)
{
	if (cert == NULL)
		return KY_ERR_BAD_CERT;
	return anchor_name_entry(X509_get_subject_name(cert), NID_organizationalUnitName, out,
	                         outlen);
}

int ky_csr_create(EVP_PKEY *key, const char *cn, const char *ou, char **pem)
{
	int r = KY_ERR_INTERNAL;
	X509_REQ *req = NULL;
	X509_NAME *name = NULL;
	BIO *bio = NULL;
	char *data = NULL, *s;
	long len;

	*pem = NULL;
	if ((req = X509_REQ_new()) == NULL || (name = X509_NAME_new()) == NULL ||
	    (bio = BIO_new(BIO_s_mem())) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_UTF8, (const unsigned char *)ou, -1, -1,
	                               0) != 1 ||
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
	                               0) != 1 ||
	    X509_REQ_set_version(req, 0) != 1 || X509_REQ_set_subject_name(req, name) != 1 ||
	    X509_REQ_set_pubkey(req, key) != 1 || X509_REQ_sign(req, key, EVP_sha512()) <= 0 ||
	    PEM_write_bio_X509_REQ(bio, req) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((len = BIO_get_mem_data(bio, &data)) <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((s = malloc((size_t)len + 1)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	memcpy(s, data, (size_t)len);
	s[len] = '\0';
	*pem = s;
	r = 0;
out:
	BIO_free(bio);
	X509_NAME_free(name);
	X509_REQ_free(req);
	if (r != 0)
		ERR_clear_error();
	return r;
}

int ky_csr_read(const char *pem, EVP_PKEY **pub, char cn[KY_ID_MAX + 1], char ou[KY_ID_MAX + 1])
{
	int r = KY_ERR_INTERNAL;
	BIO *bio = BIO_new_mem_buf(pem, -1);
	X509_REQ *req = NULL;
	EVP_PKEY *pk = NULL;

	*pub = NULL;
	if (bio == NULL || (req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL)) == NULL) {
		r = KY_ERR_MALFORMED;
		goto out;
	}
	if ((pk = X509_REQ_get_pubkey(req)) == NULL || !ky_pkey_is_p521(pk) ||
	    X509_REQ_verify(req, pk) != 1) {
		r = KY_ERR_BAD_CERT;
		goto out;
	}
	if ((r = anchor_name_entry(X509_REQ_get_subject_name(req), NID_commonName, cn,
	                           KY_ID_MAX + 1)) != 0 ||
	    (r = anchor_name_entry(X509_REQ_get_subject_name(req), NID_organizationalUnitName, ou,
	                           KY_ID_MAX + 1)) != 0)
		goto out;
	*pub = pk;
	pk = NULL; /* transferred */
	r = 0;
out:
	EVP_PKEY_free(pk);
	X509_REQ_free(req);
	BIO_free(bio);
	if (r != 0)
		ERR_clear_error();
	return r;
}

int ky_cert_chain_verify(X509 *cert, X509 *identity, X509 *anchor)
{
	int r = KY_ERR_INTERNAL;
	X509_STORE *store = NULL;
	X509_STORE_CTX *ctx = NULL;
	STACK_OF(X509) *untrusted = NULL;

	if (cert == NULL || anchor == NULL) {
		r = KY_ERR_BAD_SIGNATURE;
		goto out;
	}
	if ((store = X509_STORE_new()) == NULL || (ctx = X509_STORE_CTX_new()) == NULL ||
	    (untrusted = sk_X509_new_null()) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (X509_STORE_add_cert(store, anchor) != 1 ||
	    (identity != NULL && sk_X509_push(untrusted, identity) <= 0)) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (X509_STORE_CTX_init(ctx, store, cert, untrusted) != 1) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (X509_verify_cert(ctx) != 1) {
		r = KY_ERR_BAD_SIGNATURE;
		goto out;
	}
	/* The path found must end at the anchor itself, through the identity when given. */
	STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
	int n = sk_X509_num(chain);
	if (n != (identity != NULL ? 3 : 2) || X509_cmp(sk_X509_value(chain, n - 1), anchor) != 0 ||
	    (identity != NULL && X509_cmp(sk_X509_value(chain, 1), identity) != 0)) {
		r = KY_ERR_BAD_SIGNATURE;
		goto out;
	}
	r = 0;
out:
	sk_X509_free(untrusted); /* the certificates stay the caller's */
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	ERR_clear_error();
	return r;
}
