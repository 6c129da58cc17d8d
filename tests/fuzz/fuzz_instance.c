/* instance.json, as the CLI reads it to find the units. */
#include <stdlib.h>

#include "cli/cli.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cli_instance inst = {0};
	char why[256];
	char *s = fuzz_cstr(data, size);

	FUZZ_IGNORE(cli_instance_parse(s, size, &inst, why, sizeof(why)));
	free(s);
	return 0;
}
