/* The hash an API key is stored and looked up by. */
#include <openssl/evp.h>
#include <string.h>

#include "kyok/err.h"
#include "kyok/kms.h"

int ky_apikey_hash(const char *secret, uint8_t out[KY_APIKEY_HASH_LEN])
{
	unsigned int n = 0;
	int r = KY_ERR_INTERNAL;

	if (secret == NULL) {
		r = KY_ERR_USAGE;
		goto out;
	}
	if (EVP_Digest(secret, strlen(secret), out, &n, EVP_sha256(), NULL) != 1 ||
	    n != KY_APIKEY_HASH_LEN) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	r = 0;
out:
	if (r != 0)
		memset(out, 0, KY_APIKEY_HASH_LEN);
	return r;
}
