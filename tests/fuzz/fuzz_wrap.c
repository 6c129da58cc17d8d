/* Wrapped keys as clients send them back to unwrap and rewrap. The first byte chooses how
 * many of the following bytes are the client's associated data. */
#include <stdlib.h>
#include <string.h>

#include "kyok/crypto.h"
#include "tests/fuzz/fuzz.h"

static struct ky_key *wrap_key;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (ky_crypto_init() != 0 || fuzz_root_key(&wrap_key) != 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t pt[KY_WRAP_PT_MAX];
	size_t ptlen = 0, aadlen;
	uint32_t version = 0;

	if (size < 1)
		return 0;
	aadlen = data[0];
	if (aadlen > size - 1)
		aadlen = size - 1;
	FUZZ_IGNORE(ky_kms_wrap_version(data + 1 + aadlen, size - 1 - aadlen, &version));
	FUZZ_IGNORE(ky_kms_unwrap(wrap_key, data + 1 + aadlen, size - 1 - aadlen, data + 1, aadlen,
	                          pt, sizeof(pt), &ptlen, &version));
	OPENSSL_cleanse(pt, sizeof(pt));
	return 0;
}
