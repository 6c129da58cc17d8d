/* The imprint claim (include/kyok/imprint.h): Ed25519 by the instance's imprint credential
 * over "kyok-imprint-claim-v1\n" || the command request body. */
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/imprint.h"

#define IMPRINT_CONTEXT "kyok-imprint-claim-v1\n"
#define IMPRINT_SIG_LEN 64

static int imprint_message(const uint8_t *body, size_t n, struct ky_buf *msg)
{
	int r = KY_ERR_INTERNAL;

	if (body == NULL || n == 0)
		return KY_ERR_USAGE;
	if ((r = ky_buf_append_str(msg, IMPRINT_CONTEXT)) != 0 ||
	    (r = ky_buf_append(msg, body, n)) != 0)
		return r;
	return 0;
}

/* Never asks for a passphrase: an encrypted key is not a credential this program reads. */
static int imprint_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

int ky_imprint_public(EVP_PKEY *cred, uint8_t pub[KY_IMPRINT_PUB_LEN])
{
	size_t len = KY_IMPRINT_PUB_LEN;

	if (cred == NULL || !EVP_PKEY_is_a(cred, "ED25519") ||
	    EVP_PKEY_get_raw_public_key(cred, pub, &len) != 1 || len != KY_IMPRINT_PUB_LEN) {
		ERR_clear_error();
		return KY_ERR_CRYPTO;
	}
	return 0;
}

int ky_imprint_credential_new(struct ky_buf *pem, uint8_t pub[KY_IMPRINT_PUB_LEN])
{
	int r = KY_ERR_CRYPTO;
	EVP_PKEY *k = NULL;
	BIO *bio = NULL;
	char *p = NULL;
	long len;

	if ((k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")) == NULL)
		goto out;
	if ((bio = BIO_new(BIO_s_secmem())) == NULL ||
	    PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL) != 1 ||
	    (len = BIO_get_mem_data(bio, &p)) <= 0)
		goto out;
	if ((r = ky_imprint_public(k, pub)) != 0)
		goto out;
	if ((r = ky_buf_append(pem, p, (size_t)len)) != 0)
		goto out;
	r = 0;
out:
	if (r != 0)
		ERR_clear_error();
	BIO_free(bio); /* a secure-heap BIO cleanses its buffer */
	EVP_PKEY_free(k);
	return r;
}

int ky_imprint_credential_parse(const uint8_t *pem, size_t n, EVP_PKEY **out)
{
	int r = KY_ERR_MALFORMED;
	BIO *bio = NULL;
	EVP_PKEY *k = NULL;

	*out = NULL;
	if (pem == NULL || n == 0 || n > KY_IMPRINT_CREDENTIAL_MAX)
		goto out;
	if ((bio = BIO_new_mem_buf(pem, (int)n)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((k = PEM_read_bio_PrivateKey(bio, NULL, imprint_no_passphrase, NULL)) == NULL ||
	    !EVP_PKEY_is_a(k, "ED25519"))
		goto out;
	*out = k;
	k = NULL; /* transferred */
	r = 0;
out:
	ERR_clear_error();
	EVP_PKEY_free(k);
	BIO_free(bio);
	return r;
}

int ky_imprint_claim(EVP_PKEY *cred, const uint8_t *body, size_t n, char **claim_b64)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf msg = {0};
	EVP_MD_CTX *ctx = NULL;
	uint8_t sig[IMPRINT_SIG_LEN];
	size_t siglen = sizeof(sig);

	*claim_b64 = NULL;
	if ((r = imprint_message(body, n, &msg)) != 0)
		goto out;
	r = KY_ERR_CRYPTO;
	if (cred == NULL || !EVP_PKEY_is_a(cred, "ED25519") || (ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestSignInit(ctx, NULL, NULL, NULL, cred) != 1 ||
	    EVP_DigestSign(ctx, sig, &siglen, msg.data, msg.len) != 1 || siglen != sizeof(sig))
		goto out;
	if ((r = ky_b64_encode(sig, siglen, claim_b64)) != 0)
		goto out;
	r = 0;
out:
	if (r != 0)
		ERR_clear_error();
	EVP_MD_CTX_free(ctx);
	ky_buf_free(&msg);
	return r;
}

int ky_imprint_claim_verify(const uint8_t pub[KY_IMPRINT_PUB_LEN], const char *claim_b64,
                            const uint8_t *body, size_t n)
{
	int r = KY_ERR_IMPRINT_CLAIM_INVALID;
	struct ky_buf msg = {0}, sig = {0};
	EVP_PKEY *k = NULL;
	EVP_MD_CTX *ctx = NULL;

	if (claim_b64 == NULL || ky_b64_decode(claim_b64, &sig) != 0 || sig.len != IMPRINT_SIG_LEN)
		goto out;
	if ((r = imprint_message(body, n, &msg)) != 0) {
		r = KY_ERR_IMPRINT_CLAIM_INVALID;
		goto out;
	}
	r = KY_ERR_CRYPTO;
	if ((k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, KY_IMPRINT_PUB_LEN)) ==
	        NULL ||
	    (ctx = EVP_MD_CTX_new()) == NULL || EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, k) != 1)
		goto out;
	if (EVP_DigestVerify(ctx, sig.data, sig.len, msg.data, msg.len) != 1) {
		r = KY_ERR_IMPRINT_CLAIM_INVALID;
		goto out;
	}
	r = 0;
out:
	if (r != 0)
		ERR_clear_error();
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(k);
	ky_buf_free(&msg);
	ky_buf_free(&sig);
	return r;
}
