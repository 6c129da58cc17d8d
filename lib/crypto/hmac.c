/* HMAC-SHA256 in one call. */
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "kyok/crypto.h"
#include "kyok/err.h"

int ky_hmac_sha256(const uint8_t *key, size_t keylen, const void *data, size_t n,
                   uint8_t out[KY_HMAC_SHA256_LEN])
{
	int r = KY_ERR_INTERNAL;
	EVP_MAC *mac = NULL;
	EVP_MAC_CTX *ctx = NULL;
	OSSL_PARAM params[2];
	size_t outlen = 0;

	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if ((mac = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((ctx = EVP_MAC_CTX_new(mac)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (EVP_MAC_init(ctx, key, keylen, params) != 1 ||
	    EVP_MAC_update(ctx, (const unsigned char *)data, n) != 1 ||
	    EVP_MAC_final(ctx, out, &outlen, KY_HMAC_SHA256_LEN) != 1 ||
	    outlen != KY_HMAC_SHA256_LEN) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	r = 0;
out:
	EVP_MAC_CTX_free(ctx); /* the provider cleanses the key */
	EVP_MAC_free(mac);
	return r;
}
