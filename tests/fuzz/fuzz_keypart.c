/* Key part files: the readable header and the CMS that follows (no password: the KDF runs
 * only after the header and its parameters were accepted). */
#include <unistd.h>

#include "kyok/crypto.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ky_keypart_info info;
	char path[64];
	int fd = fuzz_memfile(data, size, path, sizeof(path));

	if (fd < 0)
		return 0;
	FUZZ_IGNORE(ky_keypart_read_info(path, &info));
	close(fd);
	return 0;
}
