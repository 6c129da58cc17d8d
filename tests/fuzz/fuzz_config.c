/* unit.conf. */
#include <stdlib.h>

#include "tests/fuzz/fuzz.h"
#include "unitd/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct unitd_config cfg = {0};
	char err[512];
	char *text = fuzz_cstr(data, size);

	FUZZ_IGNORE(unitd_config_parse("unit.conf", "/nonexistent-fuzz-base", text, size, &cfg, err,
	                               sizeof(err)));
	unitd_config_release(&cfg);
	free(text);
	return 0;
}
