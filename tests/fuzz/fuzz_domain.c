/* A unit's state as read back after unsealing (the seal authenticates it; the parser is
 * still strict, as a damaged or older file must never crash a unit). */
#include <jansson.h>
#include <stdlib.h>

#include "kyok/ceremony.h"
#include "kyok/crypto.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (ky_crypto_init() != 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ky_domain *d = NULL;
	json_t *pub = NULL;

	if (ky_domain_parse(data, size, &d) == 0)
		pub = ky_domain_public_json(d);
	json_decref(pub);
	ky_domain_free(d);
	return 0;
}
