/* The JSON content of a signed command, parsed before any rule applies. */
#include "kyok/ceremony.h"
#include "kyok/crypto.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ky_command *c = NULL;
	struct ky_buf again = {0};

	if (ky_command_parse(data, size, &c) == 0) {
		/* What parses must encode again. */
		if (ky_command_encode(c, &again) != 0)
			__builtin_trap();
	}
	ky_buf_free(&again);
	ky_command_free(c);
	return 0;
}
