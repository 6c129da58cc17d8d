/* Key API request bodies. The first byte chooses the parser, the rest is the body. The
 * import token's body and stored form ride along with the instance policies'. */
#include <stdlib.h>
#include <string.h>

#include "kyok/kms.h"
#include "kyok/kms_import.h"
#include "tests/fuzz/fuzz.h"
#include "unitd/api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char detail[256];
	const uint8_t *body = data + 1;
	size_t n;

	if (size < 1)
		return 0;
	n = size - 1;
	switch (data[0] % 5) {
	case 0: {
		struct kp_create c = {0};
		FUZZ_IGNORE(kp_parse_create(body, n, &c, detail, sizeof(detail)));
		kp_create_release(&c);
		break;
	}
	case 1: {
		struct kp_action_body a = {0};
		FUZZ_IGNORE(kp_parse_action(body, n, "wrap",
		                            "plaintext ciphertext aad payload encryptedNonce iv "
		                            "encryptionAlgorithm",
		                            &a, detail, sizeof(detail)));
		kp_action_release(&a);
		break;
	}
	case 2: {
		struct kp_key_policy p;
		FUZZ_IGNORE(kp_parse_key_policies(body, n, NULL, &p, detail, sizeof(detail)));
		FUZZ_IGNORE(kp_parse_key_policies(body, n, "rotation", &p, detail, sizeof(detail)));
		break;
	}
	case 3: {
		struct kp_instance_policies p;
		uint32_t e, m;
		kp_instance_policies_init(&p);
		FUZZ_IGNORE(kp_parse_instance_policies(body, n, NULL, "fuzz", 1700000000, &p,
		                                       detail, sizeof(detail)));
		FUZZ_IGNORE(kp_parse_import_token(body, n, &e, &m, detail, sizeof(detail)));
		break;
	}
	default: {
		struct kp_instance_policies p;
		struct ky_import_token *t = NULL;
		if (ky_import_token_decode(body, n, &t) == 0) {
			uint8_t *again = NULL;
			size_t an = 0;
			if (ky_import_token_encode(t, &again, &an) != 0 || an != n ||
			    memcmp(again, body, n) != 0)
				abort();
			ky_kms_buf_free(again, an);
			ky_import_token_free(t);
		}
		kp_instance_policies_init(&p);
		if (kp_instance_policies_decode(body, n, &p) == 0) {
			struct ky_buf again = {0};
			if (kp_instance_policies_encode(&p, &again) != 0)
				abort();
			ky_buf_free(&again);
		}
		break;
	}
	}
	return 0;
}
