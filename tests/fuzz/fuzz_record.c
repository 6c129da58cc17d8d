/* A key record as stored, after the storage AEAD opened it (every field is still checked:
 * a record written by an older or damaged unit must never crash one). */
#include "kyok/kms.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ky_key *k = NULL;

	for (int flags = 0; flags <= KY_KMS_METADATA_ONLY; flags++) {
		if (ky_kms_record_decode(data, size, flags, &k) == 0) {
			FUZZ_IGNORE(ky_key_state_at(k, 1700000000));
			ky_key_free(k);
			k = NULL;
		}
	}
	return 0;
}
