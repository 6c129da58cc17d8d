/* The token service's form body, the Authorization header and the JWT it carries. The
 * first byte chooses which. */
#include <openssl/crypto.h>
#include <stdlib.h>

#include "tests/fuzz/fuzz.h"
#include "unitd/token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char detail[256], apikey[TOKEN_APIKEY_MAX + 1];
	struct token_claims claims;
	const char *tok = NULL;
	size_t toklen = 0;
	char *s;

	if (size < 1)
		return 0;
	s = fuzz_cstr(data + 1, size - 1);
	switch (data[0] % 3) {
	case 0:
		FUZZ_IGNORE(
		    token_form_parse(s, size - 1, apikey, sizeof(apikey), detail, sizeof(detail)));
		OPENSSL_cleanse(apikey, sizeof(apikey));
		break;
	case 1:
		if (token_bearer(s, &tok, &toklen) == 0)
			FUZZ_IGNORE(token_verify(fuzz_token_key, tok, toklen, 1700000100,
			                         FUZZ_INSTANCE, &claims, detail, sizeof(detail)));
		break;
	default:
		FUZZ_IGNORE(token_verify(fuzz_token_key, s, size - 1, 1700000100, FUZZ_INSTANCE,
		                         &claims, detail, sizeof(detail)));
		break;
	}
	free(s);
	return 0;
}
