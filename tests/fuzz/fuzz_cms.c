/* Signed admin commands: the CMS SignedData a unit receives from anyone on the network,
 * decoded once and every signer checked on that structure, as a unit does. */
#include <stdlib.h>

#include "kyok/crypto.h"
#include "tests/fuzz/fuzz.h"

static EVP_PKEY *cms_key;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (ky_crypto_init() != 0 || ky_ec_generate(&cms_key) != 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ky_cms_signed *sd = NULL;
	size_t len = 0;

	if (ky_cms_signed_parse(data, size, &sd) == 0) {
		(void)ky_cms_signed_content(sd, &len);
		for (size_t i = 0; i < ky_cms_signed_nsigners(sd); i++)
			FUZZ_IGNORE(ky_cms_signed_verify(sd, i, cms_key));
	}
	ky_cms_signed_free(sd);
	return 0;
}
