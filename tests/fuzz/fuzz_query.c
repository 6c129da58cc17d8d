/* Key API query values and headers: limit/offset, booleans, state lists, dates, Prefer,
 * key ids, the filter, sort and search of key listings. The input is one value. */
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
	struct kp_filter f;
	struct kp_sort o;
	struct kp_search q;
	char detail[256];

	FUZZ_IGNORE(kp_query_uint(v, KP_LIST_MAX, &present, &u));
	FUZZ_IGNORE(kp_query_bool(v, &present, &b));
	FUZZ_IGNORE(kp_query_states(v, &present, &mask));
	FUZZ_IGNORE(kp_date_parse(v, &t));
	(void)kp_prefer_parse(v);
	(void)ky_uuid_valid(v);
	FUZZ_IGNORE(kp_filter_parse(v, &f, detail, sizeof(detail)));
	FUZZ_IGNORE(kp_sort_parse(v, &o, detail, sizeof(detail)));
	FUZZ_IGNORE(kp_search_parse(v, &q, detail, sizeof(detail)));
	free(v);
	return 0;
}
