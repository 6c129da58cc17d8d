/* Key parts to a unit: CMS AuthEnvelopedData (AES-256-GCM content) with one ECDH key
 * agreement recipient (dhSinglePass-stdDH-sha256kdf-scheme, id-aes256-wrap) to the unit's
 * importer certificate. The signed command that carries it authenticates it once more. */
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <string.h>

#include "kyok/crypto.h"
#include "kyok/err.h"

#define ENVELOPE_MAX_BYTES (64 * 1024)

int ky_envelope_seal(const uint8_t *secret, size_t n, X509 *recip_cert, struct ky_buf *der)
{
	int r = KY_ERR_INTERNAL;
	CMS_ContentInfo *cms = NULL;
	CMS_RecipientInfo *ri;
	EVP_PKEY_CTX *pctx;
	BIO *in = NULL;
	unsigned char *p = NULL;
	int len;

	if (secret == NULL || n == 0 || n > ENVELOPE_MAX_BYTES || recip_cert == NULL)
		return KY_ERR_USAGE;
	if ((in = BIO_new_mem_buf(secret, (int)n)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((cms = CMS_encrypt(NULL, NULL, EVP_aes_256_gcm(), CMS_BINARY | CMS_PARTIAL)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	/* The ciphertext must travel inside: OpenSSL 3.0's CMS_encrypt ignores a failure to make
	 * the content attached (out of memory) and returns an envelope that no one can open. */
	if (CMS_get0_content(cms) == NULL || *CMS_get0_content(cms) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	/* CMS_KEY_PARAM leaves the key agreement context open to set the KDF digest. */
	if ((ri = CMS_add1_recipient_cert(cms, recip_cert, CMS_KEY_PARAM)) == NULL ||
	    CMS_RecipientInfo_type(ri) != CMS_RECIPINFO_AGREE) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((pctx = CMS_RecipientInfo_get0_pkey_ctx(ri)) == NULL ||
	    EVP_PKEY_CTX_set_ecdh_kdf_md(pctx, EVP_sha256()) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (CMS_final(cms, in, NULL, CMS_BINARY) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((len = i2d_CMS_ContentInfo(cms, &p)) <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ky_buf_append(der, p, (size_t)len)) != 0)
		goto out;
	r = 0;
out:
	OPENSSL_free(p);
	CMS_ContentInfo_free(cms);
	BIO_free(in);
	if (r != 0)
		ERR_clear_error();
	return r;
}

int ky_envelope_open(const uint8_t *der, size_t derlen, EVP_PKEY *key, X509 *cert, uint8_t *out,
                     size_t n)
{
	int r = KY_ERR_INTERNAL;
	const unsigned char *p = der;
	CMS_ContentInfo *cms = NULL;
	BIO *plain = NULL;
	char *data = NULL;
	long len;

	if (der == NULL || derlen == 0 || derlen > ENVELOPE_MAX_BYTES || key == NULL ||
	    cert == NULL) {
		r = KY_ERR_BAD_COMMAND;
		goto out;
	}
	cms = d2i_CMS_ContentInfo(NULL, &p, (long)derlen);
	if (cms == NULL || p != der + derlen ||
	    OBJ_obj2nid(CMS_get0_type(cms)) != NID_id_smime_ct_authEnvelopedData) {
		r = KY_ERR_BAD_COMMAND;
		goto out;
	}
	if ((plain = BIO_new(BIO_s_secmem())) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (CMS_decrypt(cms, key, cert, NULL, plain, CMS_BINARY) != 1) {
		r = KY_ERR_BAD_COMMAND;
		goto out;
	}
	len = BIO_get_mem_data(plain, &data);
	if (len < 0 || (size_t)len != n) {
		r = KY_ERR_BAD_COMMAND;
		goto out;
	}
	memcpy(out, data, n);
	r = 0;
out:
	BIO_free(plain); /* secure memory BIO: clear-freed */
	CMS_ContentInfo_free(cms);
	ERR_clear_error();
	return r;
}
