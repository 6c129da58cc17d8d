/* instance.json, as the CLI reads it to find the units, and the unit-failures file next to
 * it (read against a two-unit instance). */
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "cli/failover.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cli_instance inst = {0};
	char why[256];
	char *s = fuzz_cstr(data, size);

	struct cli_instance two = {.nunits = 2};
	int64_t at[2];

	FUZZ_IGNORE(cli_instance_parse(s, size, &inst, why, sizeof(why)));
	snprintf(two.units[0].id, sizeof(two.units[0].id), "unit-a");
	snprintf(two.units[1].id, sizeof(two.units[1].id), "unit-b");
	FUZZ_IGNORE(cli_failures_parse(s, size, &two, at));
	free(s);
	return 0;
}
