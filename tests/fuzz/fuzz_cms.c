/* Signed admin commands: the CMS SignedData a unit receives from anyone on the network. */
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
	struct ky_buf content = {0};
	struct ky_cms_signer *signers = NULL;
	size_t nsigners = 0;

	if (ky_cms_parse(data, size, &content, &signers, &nsigners) == 0 && nsigners > 0)
		FUZZ_IGNORE(ky_cms_verify_signer(data, size, 0, cms_key));
	free(signers);
	ky_buf_free(&content);
	return 0;
}
