/* Key API query values and headers: limit/offset, booleans, state lists, dates, Prefer,
 * key ids. The input is one value. */
#include <stdlib.h>

#include "tests/fuzz/fuzz.h"
#include "unitd/api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *v = fuzz_cstr(data, size);
	bool present = false, b = false;
	uint64_t u = 0;
	unsigned mask = 0;
	int64_t t = 0;

	FUZZ_IGNORE(kp_query_uint(v, KP_LIST_MAX, &present, &u));
	FUZZ_IGNORE(kp_query_bool(v, &present, &b));
	FUZZ_IGNORE(kp_query_states(v, &present, &mask));
	FUZZ_IGNORE(kp_date_parse(v, &t));
	(void)kp_prefer_parse(v);
	(void)kp_uuid_ok(v);
	free(v);
	return 0;
}
